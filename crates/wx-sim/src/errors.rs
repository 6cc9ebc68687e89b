//! The platform's error bodies: HTTP 200, `{"errcode":N,"errmsg":"... rid: ..."}`.
//!
//! § numbers refer to `docs/platform.md`.

use std::borrow::Cow;

/// A platform error: errcode plus the base text of errmsg (the rid is added
/// when the response is written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WxErr {
    /// The errcode.
    pub code: i64,
    /// errmsg without the rid suffix.
    pub msg: Cow<'static, str>,
}

impl WxErr {
    /// An error with a fixed message.
    pub const fn new(code: i64, msg: &'static str) -> WxErr {
        WxErr {
            code,
            msg: Cow::Borrowed(msg),
        }
    }

    /// An error with a computed message.
    pub fn owned(code: i64, msg: String) -> WxErr {
        WxErr {
            code,
            msg: Cow::Owned(msg),
        }
    }
}

// The hint the platform has appended to token errors since 2023 (§1.1).
const STABLE_HINT: &str = "could get access_token by getStableAccessToken, more details at https://mmbizurl.cn/s/JtxxFh33r";

pub const INVALID_CREDENTIAL: WxErr = WxErr::new(
    40001,
    "invalid credential, access_token is invalid or not latest, could get access_token by getStableAccessToken, more details at https://mmbizurl.cn/s/JtxxFh33r",
);
pub const INVALID_GRANT_TYPE: WxErr = WxErr::new(40002, "invalid grant_type");
pub const INVALID_OPENID: WxErr = WxErr::new(40003, "invalid openid");
pub const INVALID_APPID: WxErr = WxErr::new(40013, "invalid appid");
pub const INVALID_ACCESS_TOKEN: WxErr = WxErr::new(40014, "invalid access_token");
pub const INVALID_CODE: WxErr = WxErr::new(40029, "invalid code");
pub const INVALID_REFRESH_TOKEN: WxErr = WxErr::new(40030, "invalid refresh_token");
pub const INVALID_OPENID_LIST_SIZE: WxErr = WxErr::new(40032, "invalid openid list size");
pub const INVALID_MEDIA_ID: WxErr = WxErr::new(40007, "invalid media_id");
pub const INVALID_ARGS: WxErr = WxErr::new(40097, "invalid args");
pub const INVALID_APPSECRET: WxErr = WxErr::new(40125, "invalid appsecret");
pub const CODE_BEEN_USED: WxErr = WxErr::new(40163, "code been used");
pub const SECRET_FROZEN: WxErr = WxErr::new(40243, "AppSecret已被冻结，请登录MP解冻后再次调用");
pub const ACCESS_TOKEN_MISSING: WxErr = WxErr::new(41001, "access_token missing");
pub const APPID_MISSING: WxErr = WxErr::new(41002, "appid missing");
pub const REFRESH_TOKEN_MISSING: WxErr = WxErr::new(41003, "refresh_token missing");
pub const APPSECRET_MISSING: WxErr = WxErr::new(41004, "appsecret missing");
pub const CODE_MISSING: WxErr = WxErr::new(41008, "missing code");
pub const OPENID_MISSING: WxErr = WxErr::new(41009, "missing openid");
pub const ACCESS_TOKEN_EXPIRED: WxErr = WxErr::new(42001, "access_token expired");
pub const REFRESH_TOKEN_EXPIRED: WxErr = WxErr::new(42002, "refresh_token expired");
pub const CODE_EXPIRED: WxErr = WxErr::new(42003, "code expired");
pub const REQUIRE_GET: WxErr = WxErr::new(43001, "require GET method");
pub const REQUIRE_POST: WxErr = WxErr::new(43002, "require POST method");
pub const MINUTE_QUOTA: WxErr = WxErr::new(
    45011,
    "api minute-quota reach limit, must slower, retry next minute",
);
pub const DATA_FORMAT_ERROR: WxErr = WxErr::new(47001, "data format error");
pub const API_UNAUTHORIZED: WxErr = WxErr::new(48001, "api unauthorized");
pub const CLEAR_QUOTA_LIMIT: WxErr =
    WxErr::new(48006, "forbid to clear quota because of reaching the limit");
pub const USER_LIMITED: WxErr = WxErr::new(50002, "user limited");
pub const NOT_AUTHORIZED: WxErr = WxErr::new(61003, "component is not authorized by this account");
pub const TICKET_EXPIRED: WxErr = WxErr::new(61005, "component ticket is expired");
pub const TICKET_INVALID: WxErr = WxErr::new(61006, "component ticket is invalid");
pub const AUTH_CODE_INVALID: WxErr = WxErr::new(61009, "code is invalid");
pub const AUTH_CODE_EXPIRED: WxErr = WxErr::new(61010, "code is expired");
pub const INVALID_COMPONENT: WxErr = WxErr::new(61011, "invalid component");
pub const INVALID_OPTION_NAME: WxErr = WxErr::new(61012, "invalid option name");
pub const INVALID_OPTION_VALUE: WxErr = WxErr::new(61013, "invalid option value");
pub const INVALID_AUTHORIZER_REFRESH_TOKEN: WxErr = WxErr::new(61023, "refresh_token is invalid");
pub const COMPONENT_APPID_ON_TOKEN: WxErr = WxErr::new(
    61024,
    "must use api(api_component_token) to get token for component acct",
);
pub const INVALID_CGI_PATH: WxErr = WxErr::new(76003, "invalid cgi_path");
pub const CGI_PATH_NOT_FOUND: WxErr = WxErr::new(76001, "cgi_path not found");

/// 45009, with the stable_token hint on the token endpoints (§1.1).
pub fn daily_quota(token_endpoint: bool) -> WxErr {
    if token_endpoint {
        WxErr::owned(
            45009,
            format!("reach max api daily quota limit, {STABLE_HINT}"),
        )
    } else {
        WxErr::new(45009, "reach max api daily quota limit")
    }
}

/// 61004, naming the caller's IP the way the platform does (component-platform.md §1).
pub fn component_ip_not_registered(ip: std::net::IpAddr) -> WxErr {
    let ip = match ip {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
        v4 => v4,
    };
    WxErr::owned(
        61004,
        format!("access clientip is not registered requestIP: {ip}"),
    )
}

/// 40164, naming the caller's IP the way the platform does (§4).
pub fn ip_not_whitelisted(ip: std::net::IpAddr) -> WxErr {
    let v4 = match ip {
        std::net::IpAddr::V4(v4) => Some(v4),
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };
    let msg = match v4 {
        Some(v4) => format!("invalid ip {v4} ipv6 ::ffff:{v4}, not in whitelist"),
        None => format!("invalid ip {ip}, not in whitelist"),
    };
    WxErr::owned(40164, msg)
}
