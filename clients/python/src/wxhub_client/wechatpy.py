"""wechatpy with its token from wxhub.

::

    from wxhub_client import HubClient
    from wxhub_client.wechatpy import HubWeChatClient

    hub = HubClient("http://wxhub.internal:8780", os.environ["WXHUB_CLIENT_KEY"], "wx0123456789abcdef")
    client = HubWeChatClient(hub)
    client.user.get(openid)          # every wechatpy API works unchanged

What changes against a plain ``WeChatClient``:

- ``client.access_token`` is the hub's (cached by :class:`HubClient`); the
  AppSecret is not needed and the client never calls ``/cgi-bin/token``.
- On 40001, 40014 or 42001 the token that was used is reported to the hub
  (``POST …/access_token/invalidate``) and the call is made once more with the
  token the hub answers. A second token error raises wechatpy's
  ``WeChatClientException``: never a loop (wechatpy's own ``auto_retry``
  recursed without bound, wechatpy #629).
- ``client.jsapi.get_jsapi_ticket()`` and ``get_jsapi_card_ticket()`` come from
  the hub too.
"""

from __future__ import annotations

import threading
from typing import Any, Optional

from wechatpy import WeChatClient  # type: ignore[import-untyped]
from wechatpy.client.api import WeChatJSAPI  # type: ignore[import-untyped]

from ._client import TOKEN_ERRCODES, HubClient, _errcode


class _HubJSAPI(WeChatJSAPI):  # type: ignore[misc]
    """wechatpy's JS-SDK API, with tickets from the hub instead of ``getticket``."""

    def get_jsapi_ticket(self) -> str:
        return self._client.hub.jsapi_ticket()  # type: ignore[no-any-return]

    def get_jsapi_card_ticket(self) -> str:
        return self._client.hub.wx_card_ticket()  # type: ignore[no-any-return]


class HubWeChatClient(WeChatClient):  # type: ignore[misc]
    """A ``wechatpy.WeChatClient`` whose token comes from wxhub.

    ``api_base_url`` points the client at another API host (e.g. a wxhub
    simulator: ``http://127.0.0.1:9780``); the default is the platform.
    wechatpy API groups with their own absolute base URL (``wxa``, ``card``,
    ``datacube``, …) keep theirs.
    """

    jsapi = _HubJSAPI()

    def __init__(
        self,
        hub: HubClient,
        *,
        timeout: Optional[float] = None,
        api_base_url: Optional[str] = None,
    ) -> None:
        if not isinstance(hub, HubClient):
            raise TypeError("hub: must be a wxhub_client.HubClient")
        # auto_retry=False: wechatpy's own retry fetches a token with the
        # AppSecret; the retry below reports to the hub instead.
        super().__init__(hub.appid, None, timeout=timeout, auto_retry=False)
        self.hub = hub
        if api_base_url is not None:
            if not api_base_url.startswith(("http://", "https://")):
                raise ValueError("api_base_url: must be an http:// or https:// URL")
            self.API_BASE_URL = api_base_url.rstrip("/") + "/cgi-bin/"
        self._retrying = threading.local()

    @property
    def access_token(self) -> str:
        return self.hub.access_token()

    def fetch_access_token(self) -> Any:
        raise RuntimeError(
            "HubWeChatClient does not fetch tokens: wxhub does. Use client.hub.invalidate(token) "
            "to report a token the platform rejected."
        )

    def _handle_result(
        self, res: Any, method: Any = None, url: Any = None, result_processor: Any = None, **kwargs: Any
    ) -> Any:
        result = res if isinstance(res, dict) else self._decode_result(res)
        code = _errcode(result)
        params = kwargs.get("params")
        used = params.get("access_token") if isinstance(params, dict) else None
        if code in TOKEN_ERRCODES and used and not getattr(self._retrying, "active", False):
            params["access_token"] = self.hub.invalidate(used)  # type: ignore[index]
            self._retrying.active = True
            try:
                return self._request(
                    method=method, url_or_endpoint=url, result_processor=result_processor, **kwargs
                )
            finally:
                self._retrying.active = False
        # wechatpy raises its own exceptions from here, and they need the
        # response object; a decoded success needs no second decode.
        if isinstance(result, dict) and code == 0:
            res = result
        return super()._handle_result(res, method, url, result_processor, **kwargs)


__all__ = ["HubWeChatClient"]
