"""The hub client: tokens, tickets, the JS-SDK signature, OAuth tickets."""

from __future__ import annotations

import email.utils
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Literal, Mapping, Optional, TypedDict, Union
from urllib.parse import quote

import requests

#: The errcodes that mean "this access token is not (or no longer) good".
TOKEN_ERRCODES = frozenset({40001, 40014, 42001})

#: Ticket kinds the hub can keep (`accounts.tickets` in its configuration).
TicketKind = Literal["jsapi", "wx_card"]

_JSON = Dict[str, Any]


class HubError(Exception):
    """The hub answered with an error (``{"error": {"code", "message"}}``).

    ``retry_after`` is the hub's ``Retry-After`` in seconds (429 and 503), when
    it was longer than the client was allowed to wait or the attempts ran out.
    The message never holds a token or the client key: the hub promises that
    for its messages, and this class adds neither.
    """

    def __init__(
        self, status: int, code: str, message: str, retry_after: Optional[float] = None
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        text = "wxhub %d %s: %s" % (status, code, message)
        if retry_after is not None:
            text += " (retry after %g s)" % retry_after
        super().__init__(text)


class HubUnreachable(Exception):
    """The hub could not be reached, or did not answer JSON."""


class WeChatError(Exception):
    """The platform answered a non-zero errcode (after the one retry, for token errors)."""

    def __init__(self, errcode: int, errmsg: str) -> None:
        self.errcode = errcode
        self.errmsg = errmsg
        super().__init__("WeChat errcode %d: %s" % (errcode, errmsg))


class JsSdkConfig(TypedDict):
    """What ``wx.config`` needs, signed by the hub."""

    appId: str
    timestamp: int
    nonceStr: str
    signature: str


class _OAuthRequired(TypedDict):
    appid: str
    openid: str
    scope: str


class OAuthResult(_OAuthRequired, total=False):
    """A redeemed web-authorization ticket. ``profile`` for userinfo and login scopes."""

    unionid: str
    profile: Dict[str, Any]
    snapshot: bool
    profile_error: str


@dataclass(frozen=True)
class Credential:
    """A token or ticket and how long to use it.

    ``expires_at`` is the hub's (Unix seconds, the hub's clock); the client
    keeps using the value only until ``expires_in`` seconds after it received
    it, measured on a monotonic clock, so a client whose wall clock is off
    still stops in time.
    """

    value: str
    expires_at: int
    expires_in: int

    def __repr__(self) -> str:
        return "Credential(value=[redacted], expires_at=%d, expires_in=%d)" % (
            self.expires_at,
            self.expires_in,
        )


@dataclass
class _Cached:
    cred: Credential
    # time.monotonic() after which the value is no longer used
    use_until: float


def retry_after_seconds(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Parses ``Retry-After``: delta-seconds or an HTTP date. ``None`` if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _errcode(body: Any) -> int:
    if not isinstance(body, dict):
        return 0
    try:
        return int(body.get("errcode", 0) or 0)
    except (TypeError, ValueError):
        return 0


class HubClient:
    """A client for one account (AppID) on one wxhub.

    Thread-safe. Tokens and tickets are cached until ``margin`` seconds before
    they expire; concurrent callers in one process share one request to the
    hub. Answers 429 and 503 that carry a ``Retry-After`` of at most
    ``max_wait`` seconds are retried after that delay, ``max_attempts`` times
    in all; anything longer is raised as :class:`HubError` with
    ``retry_after`` set, so a web request is never held for minutes.
    """

    def __init__(
        self,
        hub_url: str,
        client_key: str,
        appid: str,
        *,
        timeout: float = 10.0,
        margin: float = 10.0,
        max_wait: float = 10.0,
        max_attempts: int = 3,
        session: Optional[requests.Session] = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not isinstance(hub_url, str) or not hub_url.startswith(("http://", "https://")):
            raise ValueError("hub_url: must be an http:// or https:// URL, e.g. http://127.0.0.1:8780")
        if not isinstance(client_key, str) or not client_key.strip():
            raise ValueError("client_key: empty; give the key `wxhub key` made for this client")
        if not isinstance(appid, str) or not appid or any(c in appid for c in "/?#% "):
            raise ValueError("appid: must be an AppID such as wx0123456789abcdef")
        if max_attempts < 1:
            raise ValueError("max_attempts: must be at least 1")
        if timeout <= 0 or margin < 0 or max_wait < 0:
            raise ValueError("timeout must be positive; margin and max_wait must not be negative")
        self.hub_url = hub_url.rstrip("/")
        self.appid = appid
        self.timeout = timeout
        self.margin = margin
        self.max_wait = max_wait
        self.max_attempts = max_attempts
        self._key = client_key.strip()
        self._http = session or requests.Session()
        self._sleep = sleep
        self._cache: Dict[str, _Cached] = {}
        self._locks: Dict[str, threading.Lock] = {
            "access_token": threading.Lock(),
            "jsapi_ticket": threading.Lock(),
            "wx_card_ticket": threading.Lock(),
        }

    def __repr__(self) -> str:
        return "HubClient(hub_url=%r, appid=%r, client_key=[redacted])" % (self.hub_url, self.appid)

    # -- transport -----------------------------------------------------------

    def _hub(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One request to the hub, with the bounded Retry-After policy; raises on >= 400."""
        headers = {"Authorization": "Bearer " + self._key, "Accept": "application/json"}
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = self._http.request(
                    method, url, headers=headers, timeout=self.timeout, allow_redirects=False, **kwargs
                )
            except requests.RequestException as e:
                # requests' message names the URL, which holds no secret: the key
                # travels in a header.
                raise HubUnreachable("wxhub at %s: %s" % (self.hub_url, e)) from None
            if resp.status_code in (429, 503):
                delay = retry_after_seconds(resp.headers.get("Retry-After"))
                if delay is not None and delay <= self.max_wait and attempt < self.max_attempts:
                    self._sleep(delay)
                    continue
                raise self._error(resp, delay)
            if resp.status_code >= 400:
                raise self._error(resp, None)
            return resp

    def _send(self, method: str, path: str, body: Optional[_JSON] = None) -> _JSON:
        resp = self._hub(method, self.hub_url + path, json=body)
        try:
            data = resp.json()
        except ValueError:
            raise HubUnreachable(
                "wxhub at %s answered %d without JSON" % (self.hub_url, resp.status_code)
            ) from None
        if not isinstance(data, dict):
            raise HubUnreachable("wxhub at %s answered JSON that is not an object" % self.hub_url)
        return data

    @staticmethod
    def _error(resp: requests.Response, retry_after: Optional[float]) -> HubError:
        try:
            err = resp.json().get("error", {})
            code, message = str(err.get("code", "")), str(err.get("message", ""))
        except (ValueError, AttributeError):
            code, message = "", resp.reason or ""
        return HubError(resp.status_code, code or "http_%d" % resp.status_code, message, retry_after)

    def _app(self, tail: str) -> str:
        return "/v1/apps/%s/%s" % (quote(self.appid, safe=""), tail)

    # -- cached credentials --------------------------------------------------

    def _remember(self, kind: str, body: _JSON) -> Credential:
        try:
            cred = Credential(str(body[kind]), int(body["expires_at"]), int(body["expires_in"]))
        except (KeyError, TypeError, ValueError):
            raise HubUnreachable("wxhub's answer has no %s with expires_at and expires_in" % kind) from None
        self._cache[kind] = _Cached(cred, time.monotonic() + cred.expires_in - self.margin)
        return cred

    def _fresh(self, kind: str) -> Optional[Credential]:
        c = self._cache.get(kind)
        if c is not None and time.monotonic() < c.use_until:
            return c.cred
        return None

    def _get(self, kind: str, path: str) -> Credential:
        cred = self._fresh(kind)
        if cred is not None:
            return cred
        with self._locks[kind]:
            # Whoever held the lock may have fetched it meanwhile.
            cred = self._fresh(kind)
            if cred is not None:
                return cred
            return self._remember(kind, self._send("GET", self._app(path)))

    def _invalidate(self, kind: str, path: str, field: str, failed: str) -> Credential:
        if not isinstance(failed, str) or not failed:
            raise ValueError("%s: the value the platform rejected is required" % field)
        with self._locks[kind]:
            # Another thread already reported this value and got a new one:
            # that one is the answer, and the hub need not hear it twice.
            cached = self._fresh(kind)
            if cached is not None and cached.value != failed:
                return cached
            self._cache.pop(kind, None)
            return self._remember(kind, self._send("POST", self._app(path), {field: failed}))

    def access_token_credential(self) -> Credential:
        """The access token with its expiry."""
        return self._get("access_token", "access_token")

    def access_token(self) -> str:
        """The access token: cached, asked from the hub when due."""
        return self.access_token_credential().value

    def invalidate(self, failed_token: str) -> str:
        """Reports a token the platform rejected (40001, 40014, 42001); returns the token to use now.

        The hub refreshes only if ``failed_token`` is still its current token,
        once however many callers report it, or confirms with the platform
        that the token still works and answers it again. Either way: use the
        answer, retry the call once, and never loop.
        """
        return self._invalidate(
            "access_token", "access_token/invalidate", "access_token", failed_token
        ).value

    def ticket_credential(self, kind: TicketKind) -> Credential:
        """A JS-SDK ticket (``jsapi`` or ``wx_card``) with its expiry."""
        if kind not in ("jsapi", "wx_card"):
            raise ValueError("kind: %r is not a ticket kind; use 'jsapi' or 'wx_card'" % (kind,))
        return self._get(kind + "_ticket", kind + "_ticket")

    def ticket(self, kind: TicketKind) -> str:
        """A JS-SDK ticket value."""
        return self.ticket_credential(kind).value

    def jsapi_ticket(self) -> str:
        """The ``jsapi_ticket``."""
        return self.ticket("jsapi")

    def wx_card_ticket(self) -> str:
        """The card ``api_ticket`` (the account must keep ``wx_card`` tickets)."""
        return self.ticket("wx_card")

    def invalidate_ticket(self, kind: TicketKind, failed_ticket: str) -> str:
        """Reports a ticket the platform rejected; returns the ticket to use now."""
        if kind not in ("jsapi", "wx_card"):
            raise ValueError("kind: %r is not a ticket kind; use 'jsapi' or 'wx_card'" % (kind,))
        name = kind + "_ticket"
        return self._invalidate(name, name + "/invalidate", "ticket", failed_ticket).value

    # -- uncached calls ------------------------------------------------------

    def jssdk_config(self, url: str) -> JsSdkConfig:
        """``{appId, timestamp, nonceStr, signature}`` for ``wx.config`` on the page at ``url``.

        The hub signs the URL without its fragment; its host must be one of the
        account's ``jssdk_domains`` (403 otherwise).
        """
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError("url: must be the page's absolute http(s) URL")
        body = self._send("POST", self._app("jssdk/config"), {"url": url})
        return JsSdkConfig(
            appId=str(body["appId"]),
            timestamp=int(body["timestamp"]),
            nonceStr=str(body["nonceStr"]),
            signature=str(body["signature"]),
        )

    def redeem_oauth_ticket(self, ticket: str) -> OAuthResult:
        """Redeems the ``wxhub_ticket`` a person came back with from ``/oauth/{appid}/authorize``.

        Single-use: a second redeem answers 404 (:class:`HubError`).
        """
        if not isinstance(ticket, str) or not ticket:
            raise ValueError("ticket: required: the wxhub_ticket query parameter of return_to")
        body = self._send("POST", "/v1/oauth/tickets/redeem", {"ticket": ticket})
        for field in ("appid", "openid", "scope"):
            if not isinstance(body.get(field), str):
                raise HubUnreachable("wxhub's redeem answer has no %s" % field)
        return body  # type: ignore[return-value]

    def user(self, openid: str) -> _JSON:
        """The stored profile of a person who granted ``snsapi_userinfo``."""
        if not isinstance(openid, str) or not openid:
            raise ValueError("openid: required")
        return self._send("GET", self._app("users/" + quote(openid, safe="")))

    # -- calling the platform ------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Optional[Mapping[str, Union[str, int]]] = None,
        json: Optional[Any] = None,
        api_base: str = "https://api.weixin.qq.com",
    ) -> _JSON:
        """Calls a platform API with the hub's token, retrying once after a token error.

        ``path`` is e.g. ``/cgi-bin/user/get``. On 40001, 40014 or 42001 the
        token used is reported through :meth:`invalidate` and the call is made
        once more with the token the hub answers; a second token error is
        raised as :class:`WeChatError`, like any other non-zero errcode.
        """
        if not path.startswith("/"):
            raise ValueError("path: must start with '/', e.g. /cgi-bin/user/get")
        url = api_base.rstrip("/") + path
        token = self.access_token()
        for attempt in (1, 2):
            query: Dict[str, Union[str, int]] = dict(params or {})
            query["access_token"] = token
            try:
                resp = self._http.request(method, url, params=query, json=json, timeout=self.timeout)
            except requests.RequestException as e:
                # Not str(e): requests puts the URL, access_token included, in it.
                raise HubUnreachable("%s %s: %s" % (method, path, type(e).__name__)) from None
            try:
                body = resp.json()
            except ValueError:
                raise WeChatError(-1, "HTTP %d without JSON from %s" % (resp.status_code, path)) from None
            code = _errcode(body)
            if code in TOKEN_ERRCODES and attempt == 1:
                token = self.invalidate(token)
                continue
            if code != 0:
                raise WeChatError(code, str(body.get("errmsg", "")))
            if not isinstance(body, dict):
                raise WeChatError(-1, "%s answered JSON that is not an object" % path)
            return body
        raise AssertionError("unreachable: the loop returns or raises")

    def proxy(
        self,
        method: str,
        path: str,
        *,
        params: Optional[Mapping[str, Union[str, int]]] = None,
        json: Optional[Any] = None,
    ) -> _JSON:
        """Calls a platform API through the hub's proxy, which injects the token and retries once itself.

        The platform's answer is returned as it is, errcode included.
        """
        if not path.startswith("/"):
            raise ValueError("path: must start with '/', e.g. /cgi-bin/user/get")
        resp = self._hub(method, self.hub_url + self._app("proxy" + path), params=params, json=json)
        try:
            body = resp.json()
        except ValueError:
            raise HubUnreachable("the proxy answered %d without JSON" % resp.status_code) from None
        if not isinstance(body, dict):
            raise HubUnreachable("the proxy answered JSON that is not an object")
        return body


__all__: List[str] = [
    "TOKEN_ERRCODES",
    "TicketKind",
    "HubClient",
    "HubError",
    "HubUnreachable",
    "WeChatError",
    "Credential",
    "JsSdkConfig",
    "OAuthResult",
    "retry_after_seconds",
]
