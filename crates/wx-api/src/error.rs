//! Errors: [`WxError`] for everything an API call can return, and the platform's errcodes
//! ([`ErrCode`]) with the [`Action`] a caller should take for each.
//!
//! The retry policy lives here and nowhere else: callers ask [`WxError::action`] (or
//! [`ErrCode::is_token_invalid`] and friends) instead of matching on numbers.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

/// Everything that can go wrong building, sending or parsing a WeChat API call.
///
/// The variants are kept apart on purpose: the platform said no ([`WxError::Api`]), the
/// network failed ([`WxError::Transport`]), something answered with a non-success status and no
/// errcode ([`WxError::HttpStatus`]), the body was not what we expected ([`WxError::Decode`]),
/// or the caller passed something the platform would reject ([`WxError::InvalidInput`]).
///
/// # Security
///
/// No variant holds a request URL, a request body or a response body: URLs carry
/// `access_token=` / `secret=` in their query, and bodies carry tokens. The `Display` and
/// `Debug` output of every variant is safe to log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WxError {
    /// The platform answered with a non-zero `errcode`.
    #[error("WeChat errcode {code} from {endpoint}: {errmsg}")]
    Api {
        /// The errcode.
        code: ErrCode,
        /// The platform's message, verbatim (it never echoes credentials; it may hold the
        /// caller's IP for 40164).
        errmsg: String,
        /// The request id parsed out of `errmsg`, if present (see [`parse_rid`]).
        rid: Option<String>,
        /// The endpoint path (no host, no query), e.g. `/cgi-bin/token`.
        endpoint: &'static str,
    },
    /// The request did not complete: connection, TLS, timeout or body read failure.
    #[error("transport error calling {endpoint}: {kind}")]
    Transport {
        /// What kind of failure.
        kind: TransportKind,
        /// The endpoint path (no host, no query).
        endpoint: &'static str,
        /// The underlying error, with any URL already stripped.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A non-success HTTP status and a body without an `errcode` (a proxy, a redirect, an
    /// outage page).
    #[error("HTTP status {status} without an errcode from {endpoint}")]
    HttpStatus {
        /// The HTTP status code.
        status: u16,
        /// The endpoint path (no host, no query).
        endpoint: &'static str,
    },
    /// The body could not be decoded into the expected shape.
    ///
    /// Only the JSON path and the position are kept; the body is not, because it may hold a
    /// token.
    #[error(
        "cannot decode the response of {endpoint} at `{path}` ({kind} error at line {line}, column {column})"
    )]
    Decode {
        /// The endpoint path (no host, no query).
        endpoint: &'static str,
        /// The JSON path where decoding failed, e.g. `access_token` or `user_info_list[3].openid`
        /// (`.` for the document itself).
        path: String,
        /// What kind of decoding failure.
        kind: DecodeKind,
        /// 1-based line in the body (0 if unknown).
        line: usize,
        /// 1-based column in the body (0 if unknown).
        column: usize,
    },
    /// The caller passed a value that cannot be sent (e.g. 101 OpenIDs to a batch call).
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong, without echoing the value.
        reason: Cow<'static, str>,
    },
}

impl WxError {
    pub(crate) fn invalid_input(reason: impl Into<Cow<'static, str>>) -> Self {
        WxError::InvalidInput {
            reason: reason.into(),
        }
    }

    /// Builds an [`WxError::Api`] from an errcode and errmsg as the platform sent them,
    /// parsing the rid out of the message.
    pub fn api(code: ErrCode, errmsg: impl Into<String>, endpoint: &'static str) -> Self {
        let errmsg = errmsg.into();
        WxError::Api {
            code,
            rid: parse_rid(&errmsg),
            errmsg,
            endpoint,
        }
    }

    /// The errcode, for [`WxError::Api`].
    pub fn errcode(&self) -> Option<ErrCode> {
        match self {
            WxError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The rid, for [`WxError::Api`] errors whose errmsg carried one.
    pub fn rid(&self) -> Option<&str> {
        match self {
            WxError::Api { rid, .. } => rid.as_deref(),
            _ => None,
        }
    }

    /// Whether the error means "the token this call used is dead": refresh it and retry once.
    pub fn is_token_invalid(&self) -> bool {
        matches!(self.action(), Action::RefreshTokenAndRetryOnce)
    }

    /// What a caller should do about this error.
    ///
    /// For [`WxError::Api`] this is [`ErrCode::action_on`] with the endpoint and errmsg; a
    /// transport failure or a 5xx is worth a retry with back-off; anything else is a bug or a
    /// changed platform and retrying will not help.
    pub fn action(&self) -> Action {
        match self {
            WxError::Api {
                code,
                errmsg,
                endpoint,
                ..
            } => code.action_on(endpoint, errmsg),
            WxError::Transport { .. } => Action::RetryWithBackoff,
            WxError::HttpStatus { status, .. } if *status >= 500 || *status == 429 => {
                Action::RetryWithBackoff
            }
            WxError::HttpStatus { .. } | WxError::Decode { .. } | WxError::InvalidInput { .. } => {
                Action::GiveUp
            }
        }
    }
}

/// What kind of transport failure a [`WxError::Transport`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// Could not connect (DNS, TCP, TLS).
    Connect,
    /// The connect or total timeout elapsed.
    Timeout,
    /// The request could not be built or sent.
    Request,
    /// Reading the response body failed.
    Body,
    /// The response body was larger than the client accepts.
    BodyTooLarge,
    /// Anything else the HTTP client reported.
    Other,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Connect => "connect failed",
            TransportKind::Timeout => "timed out",
            TransportKind::Request => "request failed",
            TransportKind::Body => "reading the body failed",
            TransportKind::BodyTooLarge => "response body too large",
            TransportKind::Other => "HTTP client error",
        })
    }
}

/// What kind of decoding failure a [`WxError::Decode`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DecodeKind {
    /// Not JSON at all.
    Syntax,
    /// Valid JSON of the wrong shape (missing field, wrong type, invalid identifier).
    Data,
    /// The body ended early (including an empty body).
    Eof,
}

impl fmt::Display for DecodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeKind::Syntax => "syntax",
            DecodeKind::Data => "data",
            DecodeKind::Eof => "unexpected end",
        })
    }
}

/// What a caller should do after an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// The token used is invalid, superseded or expired: get a fresh one (from the central
    /// server for a global token; via `refresh_token` for a user token) and retry **once**.
    RefreshTokenAndRetryOnce,
    /// A quota is exhausted: do not call this API again before the window ends.
    BackOff {
        /// When calling again makes sense.
        until: BackOffUntil,
    },
    /// A transient platform or network failure: retry with exponential back-off.
    RetryWithBackoff,
    /// The account's configuration is wrong; a human must fix it. Retrying burns quota.
    FixConfiguration(ConfigPart),
    /// The user's authorization is gone or unusable: send them through OAuth again.
    Reauthorize,
    /// Retrying will not help (a bug, a business condition, a banned API).
    GiveUp,
}

/// When a [`Action::BackOff`] ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackOffUntil {
    /// The start of the next minute (45011).
    NextMinute,
    /// The start of the next day, Beijing time (45009), unless `clear_quota` is used.
    NextDay,
}

impl BackOffUntil {
    /// The Unix time (seconds) at which calling again makes sense, given the current time.
    ///
    /// Days are counted in Beijing time (UTC+8), where the platform's daily counters reset.
    pub fn resume_at(self, now_unix: u64) -> u64 {
        const BEIJING_OFFSET: u64 = 8 * 3600;
        match self {
            BackOffUntil::NextMinute => (now_unix / 60 + 1) * 60,
            BackOffUntil::NextDay => {
                ((now_unix + BEIJING_OFFSET) / 86_400 + 1) * 86_400 - BEIJING_OFFSET
            }
        }
    }
}

/// The part of an account's configuration that a [`Action::FixConfiguration`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigPart {
    /// The AppID is wrong.
    AppId,
    /// The AppSecret is wrong or missing.
    AppSecret,
    /// The caller's IP is not in the API IP whitelist.
    IpWhitelist {
        /// The IP the platform saw, parsed from the errmsg when it names one.
        ip: Option<IpAddr>,
    },
    /// The AppSecret is frozen in the console.
    SecretFrozen,
    /// The platform wants an admin to confirm (or has rejected) calls from this IP.
    AdminConfirmation,
    /// A third-party platform's `component_verify_ticket` is expired or unknown (61005,
    /// 61006): the platform's pushes to the authorization-event URL are not arriving.
    VerifyTicket,
}

macro_rules! errcodes {
    ($( $variant:ident = $code:literal, $msg:literal, $zh:literal, $en:literal; )*) => {
        /// A platform errcode (`docs/platform.md` §4), with `Other` for codes this crate does not name.
        ///
        /// Build one with [`ErrCode::from_i64`] so that a known code never lands in `Other`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrCode {
            $(
                #[doc = concat!("`", stringify!($code), "` `", $msg, "`: ", $en)]
                $variant,
            )*
            /// A code not listed above.
            Other(i64),
        }

        impl ErrCode {
            /// Every named code, in table order.
            pub const ALL: &'static [ErrCode] = &[$(ErrCode::$variant),*];

            /// The code for a number; unknown numbers become [`ErrCode::Other`].
            pub fn from_i64(code: i64) -> Self {
                match code {
                    $($code => ErrCode::$variant,)*
                    other => ErrCode::Other(other),
                }
            }

            /// The number on the wire.
            pub fn as_i64(self) -> i64 {
                match self {
                    $(ErrCode::$variant => $code,)*
                    ErrCode::Other(code) => code,
                }
            }

            /// The usual `errmsg` text for this code (without the rid suffix), for display when
            /// the real message is not at hand.
            pub fn typical_errmsg(self) -> Option<&'static str> {
                match self {
                    $(ErrCode::$variant => Some($msg),)*
                    ErrCode::Other(_) => None,
                }
            }

            /// What the code means and what to do, in Chinese.
            pub fn explain_zh(self) -> &'static str {
                match self {
                    $(ErrCode::$variant => $zh,)*
                    ErrCode::Other(_) => "未收录的错误码：请查阅公众平台全局返回码说明，并结合 errmsg 与 rid 排查。",
                }
            }

            /// What the code means and what to do, in English.
            pub fn explain_en(self) -> &'static str {
                match self {
                    $(ErrCode::$variant => $en,)*
                    ErrCode::Other(_) => "A code this library does not know: look it up in the platform's global return-code list and use errmsg and rid to investigate.",
                }
            }
        }
    };
}

errcodes! {
    SystemBusy = -1, "system error",
        "系统繁忙，请稍后重试（指数退避）。",
        "The platform is busy; retry with exponential back-off.";
    SystemError = -1000, "system error",
        "系统错误，请稍后重试；持续出现请告警。",
        "Platform system error; retry later and alert if it persists.";
    InvalidCredential = 40001, "invalid credential, access_token is invalid or not latest",
        "access_token 无效或不是最新的（通常是别处刷新了 token）。业务接口上：向中控请求刷新后重试一次；获取 token 时出现：AppSecret 错误。",
        "The access_token is invalid or not the latest (usually someone else refreshed it). On a business API: get a fresh token from the central server and retry once. On the token endpoint itself: the AppSecret is wrong.";
    InvalidGrantType = 40002, "invalid grant_type",
        "grant_type 参数错误，属于调用方缺陷，不要重试。",
        "Wrong grant_type; a bug in the caller, do not retry.";
    InvalidOpenId = 40003, "invalid openid",
        "openid 无效或不属于此公众号，不要重试。",
        "The OpenID is malformed or belongs to another account; do not retry.";
    InvalidAppId = 40013, "invalid appid",
        "AppID 错误，请检查配置（格式为 wx 加 16 位十六进制）。",
        "The AppID is wrong; check the configuration (the format is wx plus 16 hex digits).";
    InvalidAccessToken = 40014, "invalid access_token",
        "access_token 格式错误或未知，刷新一次后重试；再次出现按缺陷处理。",
        "The access_token is malformed or unknown; refresh once and retry, and treat a repeat as a bug.";
    InvalidCode = 40029, "invalid code",
        "OAuth code 无效、已过期或不属于此 AppID；重新发起授权，不要用同一个 code 重试。",
        "The OAuth code is invalid, expired or for another AppID; restart authorization and never retry the same code.";
    InvalidRefreshToken = 40030, "invalid refresh_token",
        "refresh_token 无效，需要用户重新授权。",
        "The refresh_token is invalid; the user must authorize again.";
    InvalidOpenIdListSize = 40032, "invalid openid list size",
        "openid 列表长度不合法（批量获取用户信息每次最多 100 个）。",
        "The OpenID list has an invalid size (batch user info takes at most 100).";
    InvalidArgs = 40097, "invalid args",
        "参数错误，属于调用方缺陷，不要重试。",
        "Invalid arguments; a bug in the caller, do not retry.";
    InvalidAppSecret = 40125, "invalid appsecret",
        "AppSecret 错误（重置后旧的立即失效）；请修正配置，不要循环重试以免消耗额度。",
        "The AppSecret is wrong (a reset kills the old one); fix the configuration and do not retry in a loop, which burns quota.";
    CodeBeenUsed = 40163, "code been used",
        "code 已被使用（重复提交、刷新页面或回调被请求两次）；若已用该 code 建立会话则沿用，否则重新授权。",
        "The OAuth code was already exchanged (double submit, page reload, callback hit twice); reuse the session made from it, or restart authorization.";
    IpNotInWhitelist = 40164, "invalid ip, not in whitelist",
        "调用方 IP 不在公众号的 API IP 白名单中；把 errmsg 中的 IP 加入白名单，不要重试。",
        "The caller's IP is not in the account's API IP whitelist; add the IP shown in errmsg, do not retry.";
    AppSecretFrozen = 40243, "AppSecret已被冻结",
        "AppSecret 已被冻结，需要管理员在公众平台解冻（约 10 分钟生效）。",
        "The AppSecret is frozen; an admin must unfreeze it in the console (takes about 10 minutes).";
    AccessTokenMissing = 41001, "access_token missing",
        "缺少 access_token 参数，属于调用方缺陷。",
        "The access_token parameter is missing; a bug in the caller.";
    AppIdMissing = 41002, "appid missing",
        "缺少 appid 参数；stable_token 以表单而不是 JSON 提交时也会返回此错误。",
        "The appid parameter is missing; stable_token also answers this to a non-JSON body.";
    RefreshTokenMissing = 41003, "refresh_token missing",
        "缺少 refresh_token 参数，属于调用方缺陷。",
        "The refresh_token parameter is missing; a bug in the caller.";
    AppSecretMissing = 41004, "appsecret missing",
        "缺少 AppSecret 参数，请检查配置。",
        "The AppSecret parameter is missing; check the configuration.";
    CodeMissing = 41008, "missing code",
        "缺少 code 参数，属于调用方缺陷。",
        "The code parameter is missing; a bug in the caller.";
    OpenIdMissing = 41009, "missing openid",
        "缺少 openid 参数，属于调用方缺陷。",
        "The openid parameter is missing; a bug in the caller.";
    AccessTokenExpired = 42001, "access_token expired",
        "access_token 已过期；（经中控）刷新后重试一次。",
        "The access_token has expired; refresh it (through the central server) and retry once.";
    RefreshTokenExpired = 42002, "refresh_token expired",
        "refresh_token 已超过 30 天有效期，需要用户重新授权。",
        "The refresh_token is older than 30 days; the user must authorize again.";
    CodeExpired = 42003, "code expired",
        "code 超过 5 分钟未使用已过期，请重新发起授权。",
        "The OAuth code was not used within 5 minutes; restart authorization.";
    UserTokensRevoked = 42007, "access_token and refresh_token exception",
        "用户修改了微信密码等，网页授权的 access_token 和 refresh_token 均已失效，需要重新授权。",
        "The user changed their WeChat password (or similar); their web-authorization tokens are void, so authorize again.";
    RequireGet = 43001, "require GET method",
        "需要 GET 请求，属于调用方缺陷。",
        "The API requires GET; a bug in the caller.";
    RequirePost = 43002, "require POST method",
        "需要 POST 请求，属于调用方缺陷。",
        "The API requires POST; a bug in the caller.";
    RequireHttps = 43003, "require https",
        "需要 HTTPS 请求，属于调用方缺陷。",
        "The API requires HTTPS; a bug in the caller.";
    RequireSubscribe = 43004, "require subscribe",
        "需要用户关注公众号；属于业务条件，不要重试。",
        "The user must follow the account; a business condition, do not retry.";
    EmptyPostData = 44002, "empty post data",
        "POST 请求体为空，属于调用方缺陷。",
        "The POST body is empty; a bug in the caller.";
    DailyQuotaReached = 45009, "reach max api daily quota limit",
        "接口当日调用额度已用完：次日（北京时间零点）前不要再调用，或使用 clear_quota 重置，并告警；切勿循环重试。",
        "The API's daily quota is used up: stop calling it until the next day (midnight Beijing time) or reset it with clear_quota, and alert; never retry in a loop.";
    MinuteQuotaReached = 45011, "api minute-quota reach limit, must slower, retry next minute",
        "接口每分钟调用频率超限，等到下一分钟再调用。",
        "The API's per-minute limit was hit; wait for the next minute.";
    DataFormatError = 47001, "data format error",
        "请求体 JSON/XML 格式错误（例如把 JSON 接口以表单提交），属于调用方缺陷。",
        "The JSON/XML body is malformed (for example a JSON API called with a form body); a bug in the caller.";
    ApiUnauthorized = 48001, "api unauthorized",
        "接口未授权：账号没有此接口权限（未认证、类型不符）；在 /sns/userinfo 上表示用了 snsapi_base 的 token，需要以 snsapi_userinfo 重新授权。",
        "API unauthorized: the account lacks this permission (unverified, wrong account type); on /sns/userinfo it means a snsapi_base token was used, so authorize again with snsapi_userinfo.";
    ApiForbidden = 48004, "api forbidden for irregularities",
        "接口因违规被封禁，请告警并查看公众平台通知。",
        "The API is banned for irregularities; alert and read the console notices.";
    ClearQuotaLimit = 48006, "forbid to clear quota because of reaching the limit",
        "本月的 clear_quota 次数（10 次）已用完，只能等待额度自然重置。",
        "clear_quota has been used 10 times this month; wait for the quota to reset on its own.";
    UserUnauthorized = 50001, "user unauthorized",
        "用户未授权该接口，需要重新授权。",
        "The user has not authorized this API; authorize again.";
    UserLimited = 50002, "user limited",
        "用户受限（被冻结、注销或封禁），不要重试，向用户展示提示。",
        "The user is restricted (frozen, cancelled or banned); do not retry, tell the user.";
    UserUnsubscribed = 50005, "user is unsubscribed",
        "用户未关注公众号；属于业务条件。",
        "The user does not follow the account; a business condition.";
    ClientIpNotRegistered = 61004, "access clientip is not registered, not in ip-white-list",
        "调用方 IP 未登记在 IP 白名单中，请检查白名单配置。",
        "The caller's IP is not registered in the IP whitelist; check the whitelist.";
    ComponentUnauthorized = 61003, "component is not authorized by this account",
        "该账号未授权给此第三方平台，或已取消授权：停止刷新，等待管理员重新授权（authorized 事件）。",
        "The account has not authorized this third-party platform, or revoked it: stop refreshing and wait for an administrator to authorize again (the authorized event).";
    ComponentTicketExpired = 61005, "component ticket is expired",
        "component_verify_ticket 已超过 12 小时：等待下一次推送，或调用 api_start_push_ticket 重启推送，并告警。",
        "The component_verify_ticket is older than 12 hours: wait for the next push or restart pushes with api_start_push_ticket, and alert.";
    ComponentTicketInvalid = 61006, "component ticket is invalid",
        "component_verify_ticket 无效（为空、未知或属于其他平台）：使用最近收到的票据，不要传 null。",
        "The component_verify_ticket is invalid (empty, unknown or another platform's): use the newest ticket received, never null.";
    ApiUnauthorizedToComponent = 61007, "api is unauthorized to component",
        "授权方未把该接口所属的权限集授权给第三方平台：请管理员重新授权并勾选该权限集。",
        "The authorizer did not grant the permission set this API belongs to: ask the administrator to authorize again with that set.";
    AuthCodeInvalid = 61009, "code is invalid",
        "授权码无效：请管理员重新授权。",
        "The authorization code is invalid: the administrator must authorize again.";
    AuthCodeExpired = 61010, "code is expired",
        "授权码已过期：请管理员重新授权（更新授权）。",
        "The authorization code has expired: the administrator must authorize again.";
    InvalidComponent = 61011, "invalid component",
        "第三方平台 AppID 错误或未通过审核，请检查配置。",
        "The component AppID is unknown or not approved; check the configuration.";
    ComponentTokenRequired = 61014, "must use component token for component api",
        "第三方平台接口必须使用 component_access_token，属于调用方缺陷。",
        "Component APIs take the component_access_token; a bug in the caller.";
    AuthorizerRefreshTokenInvalid = 61023, "refresh_token is invalid",
        "authorizer_refresh_token 无效：用 api_get_authorizer_list 找回最新的刷新令牌；仍然无效则请管理员重新授权。",
        "The authorizer_refresh_token is invalid: read the current one back with api_get_authorizer_list; if that fails too, the administrator must authorize again.";
    ComponentAccountTokenMisuse = 61024, "must use api(api_component_token) to get token for component acct",
        "第三方平台账号不能用 /cgi-bin/token 获取令牌，应使用 api_component_token，属于调用方缺陷。",
        "A component account cannot use /cgi-bin/token; use api_component_token. A bug in the caller.";
    InvalidCgiPath = 76003, "invalid cgi_path",
        "cgi_path 格式错误，应形如 /cgi-bin/token。",
        "The cgi_path has the wrong format; it should look like /cgi-bin/token.";
    AdminConfirmationWaiting = 89501, "此IP正在等待管理员确认,请联系管理员",
        "此 IP 的调用正在等待管理员确认；请联系管理员，至少 1 小时后再试。",
        "Calls from this IP are waiting for an admin's confirmation; contact the admin and retry no sooner than an hour.";
    AdminConfirmationRequired = 89503, "此次调用需要管理员确认,请耐心等候",
        "此次调用被判定为有风险，管理员已收到模板消息；管理员确认该 IP 后再重试。",
        "The call was judged risky and the admin got a template message; retry after the admin approves the IP.";
    IpRejectedTwice = 89506, "24小时内该IP被管理员拒绝调用两次,24小时内不可再使用该IP调用",
        "24 小时内该 IP 被管理员拒绝两次，24 小时内不能再用该 IP 调用。",
        "An admin rejected this IP twice within 24 hours; it cannot call for 24 hours.";
    IpRejectedOnce = 89507, "1小时内该IP被管理员拒绝调用一次,1小时内不可再使用该IP调用",
        "1 小时内该 IP 被管理员拒绝一次，1 小时内不能再用该 IP 调用。",
        "An admin rejected this IP within the last hour; it cannot call for an hour.";
}

/// Endpoints that fetch a global token; on them 40001 means a wrong AppSecret, not a stale
/// token.
const TOKEN_FETCH_PATHS: [&str; 2] = ["/cgi-bin/token", "/cgi-bin/stable_token"];

impl ErrCode {
    /// The action for this code without knowing the endpoint or errmsg. Prefer
    /// [`ErrCode::action_on`] (or [`WxError::action`]) when those are known.
    pub fn action(self) -> Action {
        self.action_on("", "")
    }

    /// The action for this code as returned by `endpoint` (a path such as `/sns/userinfo`)
    /// with `errmsg`.
    ///
    /// The endpoint matters for two codes: 40001 on a token fetch means a wrong AppSecret, and
    /// 48001 on `/sns/userinfo` means the user only granted `snsapi_base`. The errmsg matters
    /// for 40164, whose message names the IP to whitelist.
    pub fn action_on(self, endpoint: &str, errmsg: &str) -> Action {
        use ErrCode as C;
        match self {
            C::InvalidCredential if TOKEN_FETCH_PATHS.contains(&endpoint) => {
                Action::FixConfiguration(ConfigPart::AppSecret)
            }
            C::InvalidCredential | C::InvalidAccessToken | C::AccessTokenExpired => {
                Action::RefreshTokenAndRetryOnce
            }
            C::MinuteQuotaReached => Action::BackOff {
                until: BackOffUntil::NextMinute,
            },
            C::DailyQuotaReached => Action::BackOff {
                until: BackOffUntil::NextDay,
            },
            C::SystemBusy | C::SystemError => Action::RetryWithBackoff,
            C::InvalidAppId | C::InvalidComponent => Action::FixConfiguration(ConfigPart::AppId),
            C::ComponentTicketExpired | C::ComponentTicketInvalid => {
                Action::FixConfiguration(ConfigPart::VerifyTicket)
            }
            C::InvalidAppSecret | C::AppSecretMissing => {
                Action::FixConfiguration(ConfigPart::AppSecret)
            }
            C::IpNotInWhitelist | C::ClientIpNotRegistered => {
                Action::FixConfiguration(ConfigPart::IpWhitelist {
                    ip: parse_whitelist_ip(errmsg),
                })
            }
            C::AppSecretFrozen => Action::FixConfiguration(ConfigPart::SecretFrozen),
            C::AdminConfirmationWaiting
            | C::AdminConfirmationRequired
            | C::IpRejectedTwice
            | C::IpRejectedOnce => Action::FixConfiguration(ConfigPart::AdminConfirmation),
            C::ApiUnauthorized if endpoint == "/sns/userinfo" => Action::Reauthorize,
            C::InvalidCode
            | C::InvalidRefreshToken
            | C::CodeBeenUsed
            | C::RefreshTokenExpired
            | C::CodeExpired
            | C::UserTokensRevoked
            | C::UserUnauthorized
            | C::ComponentUnauthorized
            | C::ApiUnauthorizedToComponent
            | C::AuthCodeInvalid
            | C::AuthCodeExpired
            | C::AuthorizerRefreshTokenInvalid => Action::Reauthorize,
            C::InvalidGrantType
            | C::InvalidOpenId
            | C::InvalidOpenIdListSize
            | C::InvalidArgs
            | C::AccessTokenMissing
            | C::AppIdMissing
            | C::RefreshTokenMissing
            | C::CodeMissing
            | C::OpenIdMissing
            | C::RequireGet
            | C::RequirePost
            | C::RequireHttps
            | C::RequireSubscribe
            | C::EmptyPostData
            | C::DataFormatError
            | C::ApiUnauthorized
            | C::ApiForbidden
            | C::ClearQuotaLimit
            | C::UserLimited
            | C::UserUnsubscribed
            | C::InvalidCgiPath
            | C::ComponentTokenRequired
            | C::ComponentAccountTokenMisuse
            | C::Other(_) => Action::GiveUp,
        }
    }

    /// 40001, 40014 or 42001: the token is dead, refresh it and retry once (exactly the set
    /// wechatpy retries).
    pub fn is_token_invalid(self) -> bool {
        matches!(
            self,
            ErrCode::InvalidCredential | ErrCode::InvalidAccessToken | ErrCode::AccessTokenExpired
        )
    }

    /// 45009 or 45011: a quota is exhausted; never retry in a loop.
    pub fn is_quota_exhausted(self) -> bool {
        matches!(
            self,
            ErrCode::DailyQuotaReached | ErrCode::MinuteQuotaReached
        )
    }

    /// -1 or -1000: a transient platform failure.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrCode::SystemBusy | ErrCode::SystemError)
    }

    /// A code that says the OAuth code, the user's tokens or the user's grant are unusable.
    pub fn needs_reauthorization(self) -> bool {
        matches!(
            self,
            ErrCode::InvalidCode
                | ErrCode::InvalidRefreshToken
                | ErrCode::CodeBeenUsed
                | ErrCode::RefreshTokenExpired
                | ErrCode::CodeExpired
                | ErrCode::UserTokensRevoked
                | ErrCode::UserUnauthorized
        )
    }
}

impl fmt::Display for ErrCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_i64())
    }
}

impl serde::Serialize for ErrCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.as_i64())
    }
}

impl<'de> serde::Deserialize<'de> for ErrCode {
    /// Accepts a number or a string of digits: a few APIs send `"errcode":"40001"`.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::serde_util::lenient_i64(d).map(ErrCode::from_i64)
    }
}

macro_rules! page_codes {
    ($( $variant:ident = $code:literal, $zh:literal, $en:literal; )*) => {
        /// Error codes shown on the authorize *page* (open.weixin.qq.com), not JSON errcodes:
        /// the user sees them instead of being redirected.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum AuthorizePageCode {
            $(
                #[doc = concat!("`", stringify!($code), "`: ", $en)]
                $variant,
            )*
        }

        impl AuthorizePageCode {
            /// Every code, in order.
            pub const ALL: &'static [AuthorizePageCode] = &[$(AuthorizePageCode::$variant),*];

            /// The code for a number, if it is one of the page codes.
            pub fn from_i64(code: i64) -> Option<Self> {
                match code {
                    $($code => Some(AuthorizePageCode::$variant),)*
                    _ => None,
                }
            }

            /// The number shown on the page.
            pub fn as_i64(self) -> i64 {
                match self {
                    $(AuthorizePageCode::$variant => $code,)*
                }
            }

            /// The page's message and what to do, in Chinese.
            pub fn explain_zh(self) -> &'static str {
                match self {
                    $(AuthorizePageCode::$variant => $zh,)*
                }
            }

            /// The page's message and what to do, in English.
            pub fn explain_en(self) -> &'static str {
                match self {
                    $(AuthorizePageCode::$variant => $en,)*
                }
            }
        }
    };
}

page_codes! {
    RedirectDomainMismatch = 10003,
        "redirect_uri 域名与后台配置不一致：检查网页授权域名（需完全一致，不含协议）。",
        "The redirect_uri's domain differs from the configured web-authorization domain (it must match exactly, without the scheme).";
    AccountBanned = 10004,
        "此公众号被封禁。",
        "The official account is banned.";
    ScopeNotPermitted = 10005,
        "此公众号没有这些 scope 的权限。",
        "The account has no permission for the requested scope.";
    MustFollowTestAccount = 10006,
        "必须关注此测试号。",
        "The user must follow this test account.";
    TooFrequent = 10009,
        "操作太频繁了，请稍后重试。",
        "Too many attempts; try again later.";
    ScopeEmpty = 10010,
        "scope 不能为空。",
        "The scope is empty.";
    RedirectUriEmpty = 10011,
        "redirect_uri 不能为空。",
        "The redirect_uri is empty.";
    AppIdEmpty = 10012,
        "appid 不能为空。",
        "The appid is empty.";
    StateEmpty = 10013,
        "state 不能为空（与 state 可选的文档说法矛盾，建议总是传 state）。",
        "The state is empty (this contradicts the docs saying state is optional; always send one).";
    NotAuthorizedToThirdParty = 10015,
        "公众号未授权第三方平台，请检查授权情况。",
        "The account has not authorized the third-party platform.";
    OpenPlatformAppIdRejected = 10016,
        "不支持微信开放平台的 AppID，请使用公众号 AppID。",
        "An open-platform AppID is not accepted here; use the official account's AppID.";
}

/// Extracts the request id from an errmsg.
///
/// Understands the current `… rid: 6513aa28-57d848c6-68a55827` (with or without a comma
/// before it) and the older `hint: [KJZfAa0644e575]` and `hints: [ req_id: njgy40368nsz5 ]`
/// forms. Returns `None` when there is none.
pub fn parse_rid(errmsg: &str) -> Option<String> {
    fn id_after(s: &str) -> Option<String> {
        let id: String = s
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        (!id.is_empty()).then_some(id)
    }
    if let Some(pos) = find_word(errmsg, "rid:") {
        return id_after(&errmsg[pos + "rid:".len()..]);
    }
    if let Some(pos) = find_word(errmsg, "req_id:") {
        return id_after(&errmsg[pos + "req_id:".len()..]);
    }
    for marker in ["hints: [", "hint: ["] {
        if let Some(pos) = find_word(errmsg, marker) {
            return id_after(&errmsg[pos + marker.len()..]);
        }
    }
    None
}

/// Finds `needle` where it starts a word (at the start or after a non-alphanumeric
/// character), so that `rid:` does not match inside `grid:`.
fn find_word(haystack: &str, needle: &str) -> Option<usize> {
    haystack.match_indices(needle).map(|(i, _)| i).find(|&i| {
        haystack[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_')
    })
}

/// Extracts the caller IP from a 40164 errmsg such as
/// `invalid ip 1.2.3.4 ipv6 ::ffff:1.2.3.4, not in whitelist rid: …`.
pub fn parse_whitelist_ip(errmsg: &str) -> Option<IpAddr> {
    let pos = find_word(errmsg, "invalid ip ")?;
    let rest = &errmsg[pos + "invalid ip ".len()..];
    let token = rest.split(|c: char| c.is_whitespace() || c == ',').next()?;
    token.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        for &code in ErrCode::ALL {
            assert_eq!(ErrCode::from_i64(code.as_i64()), code);
            assert!(!code.explain_zh().is_empty());
            assert!(!code.explain_en().is_empty());
            assert!(code.typical_errmsg().is_some());
        }
        assert_eq!(ErrCode::from_i64(12345), ErrCode::Other(12345));
        assert_eq!(ErrCode::Other(12345).as_i64(), 12345);
        assert_eq!(ErrCode::from_i64(0), ErrCode::Other(0));
    }

    #[test]
    fn all_spec_codes_are_named() {
        let spec = [
            -1, -1000, 40001, 40002, 40003, 40013, 40014, 40029, 40030, 40125, 40163, 40164, 40243,
            41001, 41002, 41003, 41004, 41008, 41009, 42001, 42002, 42003, 42007, 43001, 43002,
            43003, 43004, 44002, 45009, 45011, 47001, 48001, 48004, 48006, 50001, 50002, 50005,
            61004, 89503, 89501, 89506, 89507, 40032, 40097, 76003, 61003, 61005, 61006, 61007,
            61009, 61010, 61011, 61014, 61023, 61024,
        ];
        for n in spec {
            assert!(
                !matches!(ErrCode::from_i64(n), ErrCode::Other(_)),
                "{n} is not named"
            );
        }
        assert_eq!(ErrCode::ALL.len(), spec.len());
    }

    #[test]
    fn token_invalid_set_is_exact() {
        let set: Vec<i64> = ErrCode::ALL
            .iter()
            .filter(|c| c.is_token_invalid())
            .map(|c| c.as_i64())
            .collect();
        assert_eq!(set, vec![40001, 40014, 42001]);
        for &c in ErrCode::ALL {
            assert_eq!(
                c.is_token_invalid(),
                c.action_on("/cgi-bin/user/info", "") == Action::RefreshTokenAndRetryOnce,
                "{c}"
            );
        }
    }

    #[test]
    fn actions_per_spec() {
        use Action::*;
        let f = |n| ErrCode::from_i64(n).action();
        assert_eq!(
            f(45011),
            BackOff {
                until: BackOffUntil::NextMinute
            }
        );
        assert_eq!(
            f(45009),
            BackOff {
                until: BackOffUntil::NextDay
            }
        );
        assert_eq!(f(-1), RetryWithBackoff);
        assert_eq!(f(-1000), RetryWithBackoff);
        assert_eq!(f(40013), FixConfiguration(ConfigPart::AppId));
        assert_eq!(f(40125), FixConfiguration(ConfigPart::AppSecret));
        assert_eq!(f(40243), FixConfiguration(ConfigPart::SecretFrozen));
        assert_eq!(f(89503), FixConfiguration(ConfigPart::AdminConfirmation));
        for n in [40029, 40030, 40163, 42002, 42003, 42007, 50001] {
            assert_eq!(f(n), Reauthorize, "{n}");
        }
        assert_eq!(f(48001), GiveUp);
        assert_eq!(
            ErrCode::from_i64(48001).action_on("/sns/userinfo", "api unauthorized"),
            Reauthorize
        );
        assert_eq!(f(43004), GiveUp);
        assert_eq!(f(99999), GiveUp);
        // On the token endpoints 40001 is the legacy "wrong AppSecret", and refreshing the
        // token there would loop.
        assert_eq!(
            ErrCode::InvalidCredential.action_on("/cgi-bin/token", "invalid credential"),
            FixConfiguration(ConfigPart::AppSecret)
        );
        assert_eq!(
            ErrCode::InvalidCredential.action_on("/cgi-bin/user/info", ""),
            RefreshTokenAndRetryOnce
        );
    }

    #[test]
    fn whitelist_ip_from_errmsg() {
        let msg = "invalid ip 1.2.3.4 ipv6 ::ffff:1.2.3.4, not in whitelist rid: 6513aa28-57d848c6-68a55827";
        assert_eq!(
            ErrCode::IpNotInWhitelist.action_on("/cgi-bin/token", msg),
            Action::FixConfiguration(ConfigPart::IpWhitelist {
                ip: Some("1.2.3.4".parse().unwrap())
            })
        );
        assert_eq!(
            parse_whitelist_ip("invalid ip 61.172.68.219, not in whitelist hint: [KJZfAa0644e575]"),
            Some("61.172.68.219".parse().unwrap())
        );
        assert_eq!(parse_whitelist_ip("invalid ip , not in whitelist"), None);
        assert_eq!(parse_whitelist_ip("not in whitelist"), None);
    }

    #[test]
    fn rid_forms() {
        let cases = [
            (
                "access_token expired rid: 68aeabxx-21ea79xx-3a4424xx",
                Some("68aeabxx-21ea79xx-3a4424xx"),
            ),
            (
                "invalid appsecret, rid: 66b5fb8f-5e3c0071-3d7f539a",
                Some("66b5fb8f-5e3c0071-3d7f539a"),
            ),
            (
                "invalid credential, access_token is invalid or not latest, could get access_token by getStableAccessToken, more details at https://mmbizurl.cn/s/JtxxFh33r rid: 655d9278-7c157f97-69055077",
                Some("655d9278-7c157f97-69055077"),
            ),
            (
                "invalid ip 61.172.68.219, not in whitelist hint: [KJZfAa0644e575]",
                Some("KJZfAa0644e575"),
            ),
            (
                "code been used, hints: [ req_id: njgy40368nsz5 ]",
                Some("njgy40368nsz5"),
            ),
            (
                "api unauthorized hints: [ciEBe24ce-LzmPdA!]",
                Some("ciEBe24ce-LzmPdA"),
            ),
            ("invalid grid: 1", None),
            ("ok", None),
            ("rid: ", None),
        ];
        for (msg, want) in cases {
            assert_eq!(parse_rid(msg).as_deref(), want, "{msg}");
        }
    }

    #[test]
    fn back_off_resume_times() {
        // 2023-11-14 22:13:20 UTC = 2023-11-15 06:13:20 Beijing.
        let now = 1_700_000_000;
        assert_eq!(BackOffUntil::NextMinute.resume_at(now), 1_700_000_040);
        // Next Beijing midnight: 2023-11-16 00:00 +08:00 = 2023-11-15 16:00 UTC.
        assert_eq!(BackOffUntil::NextDay.resume_at(now), 1_700_064_000);
    }

    #[test]
    fn errcode_deserializes_from_number_or_string() {
        assert_eq!(
            serde_json::from_str::<ErrCode>("40001").unwrap(),
            ErrCode::InvalidCredential
        );
        assert_eq!(
            serde_json::from_str::<ErrCode>("\"42001\"").unwrap(),
            ErrCode::AccessTokenExpired
        );
        assert!(serde_json::from_str::<ErrCode>("\"abc\"").is_err());
        assert_eq!(serde_json::to_string(&ErrCode::SystemBusy).unwrap(), "-1");
    }

    #[test]
    fn page_codes_round_trip() {
        for &c in AuthorizePageCode::ALL {
            assert_eq!(AuthorizePageCode::from_i64(c.as_i64()), Some(c));
            assert!(!c.explain_zh().is_empty() && !c.explain_en().is_empty());
        }
        assert_eq!(AuthorizePageCode::from_i64(40001), None);
    }

    #[test]
    fn error_action_for_non_api_errors() {
        let t = WxError::Transport {
            kind: TransportKind::Timeout,
            endpoint: "/cgi-bin/token",
            source: None,
        };
        assert_eq!(t.action(), Action::RetryWithBackoff);
        let h = WxError::HttpStatus {
            status: 502,
            endpoint: "/cgi-bin/token",
        };
        assert_eq!(h.action(), Action::RetryWithBackoff);
        let h = WxError::HttpStatus {
            status: 302,
            endpoint: "/cgi-bin/token",
        };
        assert_eq!(h.action(), Action::GiveUp);
        let e = WxError::api(
            ErrCode::AccessTokenExpired,
            "access_token expired rid: a-b-c",
            "/cgi-bin/user/info",
        );
        assert!(e.is_token_invalid());
        assert_eq!(e.rid(), Some("a-b-c"));
    }
}
