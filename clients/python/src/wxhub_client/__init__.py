"""Drop-in client for business servers that get WeChat credentials from wxhub.

``HubClient`` asks the hub for the access token and JS-SDK tickets, caches
them until they are due, reports a value the platform rejected and retries
once. ``wxhub_client.wechatpy.HubWeChatClient`` makes wechatpy use it.
"""

from ._client import (
    TOKEN_ERRCODES,
    Credential,
    HubClient,
    HubError,
    HubUnreachable,
    JsSdkConfig,
    OAuthResult,
    TicketKind,
    WeChatError,
    retry_after_seconds,
)

__version__ = "0.1.0"

__all__ = [
    "TOKEN_ERRCODES",
    "Credential",
    "HubClient",
    "HubError",
    "HubUnreachable",
    "JsSdkConfig",
    "OAuthResult",
    "TicketKind",
    "WeChatError",
    "retry_after_seconds",
]
