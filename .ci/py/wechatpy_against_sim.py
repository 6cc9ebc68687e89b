"""Drive wxhub's WeChat simulator with wechatpy, a client nobody here wrote.

Run by crates/wx-sim/tests/external/wechatpy.rs, which starts the simulator,
captures one encrypted push and passes everything as one JSON argument:

    python wechatpy_against_sim.py '{"base_url": "http://127.0.0.1:PORT", ...}'

Keys: base_url, appid, secret, person, redirect_uri, state, expect
{openid, nickname, original_id}, push {token, encoding_aes_key, query{...},
body}, reply_content.

Every check fails loudly: a message on stderr and exit status 1. On success
one JSON object goes to stdout for the Rust test to assert on as well.
"""

import json
import sys
import traceback
import urllib.error
import urllib.parse
import urllib.request


def fail(message):
    sys.stderr.write("wechatpy_against_sim: FAIL: %s\n" % message)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def check_eq(actual, expected, what):
    if actual != expected:
        fail("%s: expected %r, got %r" % (what, expected, actual))


try:
    import wechatpy
    from wechatpy import WeChatClient, WeChatOAuth, parse_message
    from wechatpy.crypto import WeChatCrypto
    from wechatpy.replies import TextReply
    from wechatpy.exceptions import (
        InvalidAppIdException,
        InvalidSignatureException,
        WeChatOAuthException,
    )
    from wechatpy.utils import check_signature
except ImportError as e:  # pragma: no cover - environment problem
    fail(
        "cannot import wechatpy (%s): install it with "
        "`python3 -m venv .ci/venv && .ci/venv/bin/pip install -r .ci/requirements.txt` "
        "(bash .ci/run does it)" % e
    )


def sim_client_class(base_url):
    """WeChatClient pointed at the simulator.

    wechatpy builds every /cgi-bin/ call from the class attribute
    ``WeChatClient.API_BASE_URL`` ('https://api.weixin.qq.com/cgi-bin/'), so a
    subclass overrides it. ``WeChatClient.fetch_access_token`` hard-codes the
    full URL 'https://api.weixin.qq.com/cgi-bin/token' instead, so the subclass
    also overrides that method, calling wechatpy's own
    ``BaseWeChatClient._fetch_access_token(url, params)`` with the simulator's
    URL: the request, the error handling and the token caching stay wechatpy's.
    """

    class SimWeChatClient(WeChatClient):
        API_BASE_URL = base_url + "/cgi-bin/"

        def fetch_access_token(self):
            return self._fetch_access_token(
                url=self.API_BASE_URL + "token",
                params={
                    "grant_type": "client_credential",
                    "appid": self.appid,
                    "secret": self.secret,
                },
            )

    return SimWeChatClient


def sim_oauth_class(base_url):
    """WeChatOAuth pointed at the simulator.

    wechatpy reads two class attributes: ``WeChatOAuth.API_BASE_URL``
    ('https://api.weixin.qq.com/', used for sns/oauth2/access_token,
    sns/userinfo, sns/auth) and ``WeChatOAuth.OAUTH_BASE_URL``
    ('https://open.weixin.qq.com/connect/', used by ``authorize_url``).
    """

    class SimWeChatOAuth(WeChatOAuth):
        API_BASE_URL = base_url + "/"
        OAUTH_BASE_URL = base_url + "/connect/"

    return SimWeChatOAuth


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Stop at the 302: its Location is the (non-existent) redirect_uri."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def follow_authorize(url):
    """GETs the authorize URL as the person's browser would and returns the
    Location of the redirect without following it."""
    # Loopback only: no proxy from the environment.
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), _NoRedirect()
    )
    try:
        resp = opener.open(url, timeout=30)
    except urllib.error.HTTPError as e:
        if e.code in (301, 302, 303, 307, 308):
            location = e.headers.get("Location")
            check(location, "redirect from %s has no Location" % url)
            return location
        fail("authorize answered HTTP %d: %s" % (e.code, e.read()[:500]))
    body = resp.read().decode("utf-8", "replace")
    fail(
        "authorize did not redirect (HTTP %d, X-Wxsim-Error %r): %s"
        % (resp.status, resp.headers.get("X-Wxsim-Error"), body[:500])
    )


def run(cfg):
    base = cfg["base_url"].rstrip("/")
    appid = cfg["appid"]
    secret = cfg["secret"]
    expect = cfg["expect"]
    out = {"wechatpy_version": wechatpy.__version__}

    # 1. Global access token and user info, through WeChatClient.
    client = sim_client_class(base)(appid, secret)
    client._http.trust_env = False  # loopback only: ignore proxy settings
    token = client.fetch_access_token()
    check(token.get("access_token"), "no access_token in %r" % token)
    check_eq(token.get("expires_in"), 7200, "cgi-bin/token expires_in")
    out["token_expires_in"] = token["expires_in"]

    info = client.user.get(expect["openid"])
    check_eq(info.get("openid"), expect["openid"], "user/info openid")
    check_eq(info.get("subscribe"), 1, "user/info subscribe (the person followed)")
    out["user_info"] = info

    # 2. Web authorization, through WeChatOAuth.
    oauth = sim_oauth_class(base)(
        appid,
        secret,
        cfg["redirect_uri"],
        scope="snsapi_userinfo",
        state=cfg["state"],
    )
    oauth._http.trust_env = False
    authorize_url = oauth.authorize_url
    check(
        authorize_url.startswith(base + "/connect/oauth2/authorize?"),
        "authorize_url %r does not use the simulator" % authorize_url,
    )
    # The fragment (#wechat_redirect) never reaches a server; the simulated
    # person is chosen by one more query parameter.
    url, _, fragment = authorize_url.partition("#")
    check_eq(fragment, "wechat_redirect", "authorize_url fragment")
    url += "&" + urllib.parse.urlencode({"wxsim_person": cfg["person"]})
    location = follow_authorize(url)
    check(
        location.startswith(cfg["redirect_uri"]),
        "redirect %r is not to %r" % (location, cfg["redirect_uri"]),
    )
    params = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    check_eq(params.get("state"), [cfg["state"]], "state on the redirect")
    check(params.get("code"), "no code on the redirect %r" % location)
    code = params["code"][0]

    grant = oauth.fetch_access_token(code)
    check_eq(grant.get("openid"), expect["openid"], "sns/oauth2/access_token openid")
    check_eq(grant.get("scope"), "snsapi_userinfo", "sns/oauth2/access_token scope")
    check_eq(oauth.open_id, expect["openid"], "WeChatOAuth.open_id")
    check(oauth.refresh_token, "no refresh_token")
    userinfo = oauth.get_user_info()
    check_eq(userinfo.get("openid"), expect["openid"], "sns/userinfo openid")
    check_eq(userinfo.get("nickname"), expect["nickname"], "sns/userinfo nickname")
    check(oauth.check_access_token(), "sns/auth rejected the fresh sns token")
    # A code is single use: wechatpy must see the platform's 40163.
    try:
        oauth.fetch_access_token(code)
        fail("the same code was exchanged twice")
    except WeChatOAuthException as e:
        check_eq(e.errcode, 40163, "errcode of a second exchange of one code")
    out["oauth"] = {
        "location": location,
        "code": code,
        "grant": grant,
        "userinfo": userinfo,
    }

    # 3. The push the simulator encrypted (safe mode), through WeChatCrypto.
    push = cfg["push"]
    q = push["query"]
    check_eq(q.get("encrypt_type"), "aes", "push encrypt_type")
    check_signature(push["token"], q["signature"], q["timestamp"], q["nonce"])
    crypto = WeChatCrypto(push["token"], push["encoding_aes_key"], appid)
    xml = crypto.decrypt_message(
        push["body"], q["msg_signature"], q["timestamp"], q["nonce"]
    )
    msg = parse_message(xml)
    check_eq(msg.type, "event", "decrypted push MsgType")
    check_eq(getattr(msg, "event", None), "subscribe", "decrypted push Event")
    check_eq(msg.source, expect["openid"], "decrypted push FromUserName")
    check_eq(msg.target, expect["original_id"], "decrypted push ToUserName")
    check_eq(q.get("openid"), expect["openid"], "openid on the push URL")
    check_eq(str(msg.time), q["timestamp"], "CreateTime vs the push timestamp")

    # wechatpy's checks are real: a wrong signature or appid is refused.
    try:
        check_signature(push["token"], "0" * 40, q["timestamp"], q["nonce"])
        fail("check_signature accepted a wrong signature")
    except InvalidSignatureException:
        pass
    try:
        crypto.decrypt_message(push["body"], "0" * 40, q["timestamp"], q["nonce"])
        fail("decrypt_message accepted a wrong msg_signature")
    except InvalidSignatureException:
        pass
    try:
        WeChatCrypto(
            push["token"], push["encoding_aes_key"], "wx0000000000000000"
        ).decrypt_message(push["body"], q["msg_signature"], q["timestamp"], q["nonce"])
        fail("decrypt_message accepted a push for another appid")
    except InvalidAppIdException:
        pass

    # 4. A passive reply, encrypted by wechatpy, for the simulator to judge
    # when the Rust test sends the next push.
    reply_plain = TextReply(
        content=cfg["reply_content"], message=msg, time=int(q["timestamp"])
    ).render()
    reply = crypto.encrypt_message(reply_plain, "424242", q["timestamp"])
    out["push"] = {
        "xml": xml,
        "type": msg.type,
        "event": msg.event,
        "source": msg.source,
        "target": msg.target,
        "create_time": msg.time,
    }
    out["reply_plain"] = reply_plain
    out["encrypted_reply"] = reply
    return out


def main():
    if len(sys.argv) != 2:
        fail("usage: %s '<json config>'" % sys.argv[0])
    try:
        cfg = json.loads(sys.argv[1])
    except ValueError as e:
        fail("argument is not JSON: %s" % e)
    try:
        out = run(cfg)
    except SystemExit:
        raise
    except Exception:  # any wechatpy exception is a failure, with its trace
        traceback.print_exc()
        fail("unexpected exception (trace above)")
    sys.stdout.write(json.dumps(out, ensure_ascii=False, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
