"""HubClient against a real wxhub dev: the hub's token, one report, one retry, Retry-After."""

from __future__ import annotations

import email.utils
import hashlib
import time
import urllib.parse

import pytest
import requests

from wxhub_client import HubClient, HubError, WeChatError, retry_after_seconds

from conftest import Dev


def client(dev: Dev, **kw: object) -> HubClient:
    return HubClient(dev.hub, dev.client_key, dev.appid, **kw)  # type: ignore[arg-type]


def test_the_token_comes_from_the_hub_and_is_cached(dev: Dev) -> None:
    hub = client(dev)
    first = hub.access_token_credential()
    assert hub.access_token() == first.value
    assert 7000 < first.expires_in <= 7200
    assert dev.requests_to("access_token") == 1, "the second read came from the cache"
    # One upstream fetch in all: the hub's own, at start.
    assert dev.tokens_issued() == 1


def test_a_rejected_token_is_reported_once_and_the_call_retried_once(dev: Dev) -> None:
    hub = client(dev)
    hub.access_token()
    before = dev.sim_stats()
    dev.arm_fault("/cgi-bin/user/get", 40001)
    followers = hub.call("GET", "/cgi-bin/user/get", api_base=dev.sim)
    assert followers["total"] >= 1
    after = dev.sim_stats()
    assert after["faults_fired"] - before["faults_fired"] == 1
    assert after["calls"]["/cgi-bin/user/get"] == 2
    assert dev.requests_to("access_token/invalidate") == 1
    # The hub refreshed at most once (a hub that first confirms the token
    # with the platform refreshes nothing and answers the same token).
    assert dev.tokens_issued() - 1 <= 1
    assert after["force_refreshes"] - before["force_refreshes"] <= 1


def test_a_second_token_error_is_raised_not_looped_on(dev: Dev) -> None:
    hub = client(dev)
    dev.arm_fault("/cgi-bin/user/get", 40001, count=5)
    with pytest.raises(WeChatError) as err:
        hub.call("GET", "/cgi-bin/user/get", api_base=dev.sim)
    assert err.value.errcode == 40001
    assert dev.sim_stats()["calls"]["/cgi-bin/user/get"] == 2, "one call and one retry, no more"
    assert dev.requests_to("access_token/invalidate") == 1


def test_a_token_killed_by_another_system_is_replaced_once(dev: Dev) -> None:
    hub = client(dev)
    dead = hub.access_token()
    dev.kill_token_elsewhere()
    followers = hub.call("GET", "/cgi-bin/user/get", api_base=dev.sim)
    assert followers["total"] >= 1
    assert hub.access_token() != dead
    assert dev.requests_to("access_token/invalidate") == 1
    # The dead token's call and the retry; the simulator's stats do not count
    # token-check errors per account, so the calls are what shows the 40001.
    assert dev.sim_stats()["calls"]["/cgi-bin/user/get"] == 2


def test_503_with_retry_after_is_waited_out(dev: Dev) -> None:
    """The platform is busy (-1) when the hub must replace a dead token: 503 + Retry-After, then the token."""
    hub = client(dev, max_wait=10, max_attempts=4)
    hub.access_token()
    dev.kill_token_elsewhere()
    dev.arm({"endpoint": "/cgi-bin/stable_token", "count": 1, "errcode": -1})
    started = time.monotonic()
    followers = hub.call("GET", "/cgi-bin/user/get", api_base=dev.sim)
    waited = time.monotonic() - started
    assert followers["total"] >= 1
    assert dev.requests_to("access_token/invalidate", "503") >= 1
    assert dev.requests_to("access_token/invalidate", "200") == 1
    assert waited >= 1.0, "Retry-After (at least 1 s) was honoured, not hammered"


def test_a_retry_after_longer_than_allowed_is_raised_at_once(dev: Dev) -> None:
    hub = client(dev, max_wait=0.5)
    hub.access_token()
    dev.kill_token_elsewhere()
    dev.arm({"endpoint": "/cgi-bin/stable_token", "count": 1, "errcode": -1})
    started = time.monotonic()
    with pytest.raises(HubError) as err:
        hub.call("GET", "/cgi-bin/user/get", api_base=dev.sim)
    assert time.monotonic() - started < 1.0, "no sleep beyond max_wait"
    assert err.value.status == 503
    assert err.value.retry_after is not None and err.value.retry_after >= 1
    assert dev.requests_to("access_token/invalidate") == 1
    assert dev.client_key not in str(err.value)


def test_tickets_and_the_jssdk_signature(dev: Dev) -> None:
    hub = client(dev)
    ticket = hub.jsapi_ticket()
    assert hub.ticket("jsapi") == ticket
    assert dev.requests_to("jsapi_ticket") == 1
    cfg = hub.jssdk_config("http://127.0.0.1/page?x=1#frag")
    assert cfg["appId"] == dev.appid
    signed = "jsapi_ticket=%s&noncestr=%s&timestamp=%d&url=http://127.0.0.1/page?x=1" % (
        ticket,
        cfg["nonceStr"],
        cfg["timestamp"],
    )
    assert cfg["signature"] == hashlib.sha1(signed.encode()).hexdigest()
    with pytest.raises(HubError) as err:
        hub.jssdk_config("https://evil.example/page")
    assert (err.value.status, err.value.code) == (403, "forbidden")
    # The demo account keeps jsapi tickets only.
    with pytest.raises(HubError) as err:
        hub.wx_card_ticket()
    assert err.value.status == 404
    # Reporting a value that is not current returns the current one, fetching nothing.
    issued = dev.sim_stats()["tickets_issued"]["jsapi"]
    assert hub.invalidate_ticket("jsapi", "not-the-current-ticket") == ticket
    assert dev.sim_stats()["tickets_issued"]["jsapi"] == issued


def test_an_oauth_ticket_is_redeemed_once(dev: Dev) -> None:
    hub = client(dev)
    return_to = dev.demo + "/welcome"
    url = "%s/oauth/%s/authorize?%s" % (
        dev.hub,
        dev.appid,
        urllib.parse.urlencode({"scope": "base", "return_to": return_to}),
    )
    http = requests.Session()
    ticket = None
    for _ in range(10):
        if url.startswith(dev.sim + "/connect/oauth2/authorize"):
            # The simulator takes the person from the query; the
            # #wechat_redirect fragment never reaches a server.
            parts = urllib.parse.urlsplit(url)
            url = urllib.parse.urlunsplit(parts._replace(query=parts.query + "&wxsim_person=bob", fragment=""))
        resp = http.get(url, allow_redirects=False, timeout=10)
        assert resp.status_code == 302, (resp.status_code, resp.text[:200])
        url = resp.headers["Location"]
        if url.startswith(return_to):
            ticket = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["wxhub_ticket"][0]
            break
    assert ticket, "the hub sent the person back with a wxhub_ticket"
    result = hub.redeem_oauth_ticket(ticket)
    assert result["appid"] == dev.appid
    assert result["openid"] == dev.openid("bob")
    assert result["scope"] == "snsapi_base"
    with pytest.raises(HubError) as err:
        hub.redeem_oauth_ticket(ticket)
    assert err.value.status == 404


def test_the_proxy_injects_the_token(dev: Dev) -> None:
    hub = client(dev)
    followers = hub.proxy("GET", "/cgi-bin/user/get")
    assert dev.openid("alice") in followers["data"]["openid"]
    assert dev.tokens_issued() == 1


def test_bad_input_gets_a_clear_error(dev: Dev) -> None:
    with pytest.raises(ValueError, match="hub_url"):
        HubClient("127.0.0.1:8780", dev.client_key, dev.appid)
    with pytest.raises(ValueError, match="client_key"):
        HubClient(dev.hub, " ", dev.appid)
    with pytest.raises(ValueError, match="appid"):
        HubClient(dev.hub, dev.client_key, "wx/../x")
    hub = client(dev)
    assert dev.client_key not in repr(hub)
    assert hub.access_token() not in repr(hub.access_token_credential())
    with pytest.raises(ValueError, match="path"):
        hub.call("GET", "cgi-bin/user/get")
    with pytest.raises(HubError) as err:
        HubClient(dev.hub, "wxh_not-a-key", dev.appid).access_token()
    assert (err.value.status, err.value.code) == (401, "unauthorized")
    with pytest.raises(HubError) as err:
        HubClient(dev.hub, dev.client_key, "wx0000000000000000").access_token()
    assert err.value.status == 404


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(" 0 ") == 0.0
    when = email.utils.formatdate(1_000_005, usegmt=True)
    assert retry_after_seconds(when, now=1_000_000) == pytest.approx(5.0)
    assert retry_after_seconds(email.utils.formatdate(999_000, usegmt=True), now=1_000_000) == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("-1") is None
    assert retry_after_seconds(None) is None
