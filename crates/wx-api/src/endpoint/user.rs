//! User management reads with the global token: `user/info`, `user/info/batchget`, `user/get`.
//!
//! Since 2021 these no longer carry nickname, avatar, sex or region; real responses
//! sometimes still have the keys with empty values, which parse as absent here. A user who
//! does not follow the account comes back as `subscribe: 0` with little else, and that is not
//! an error.

use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{Endpoint, get, parse_json, post_json};
use crate::error::WxError;
use crate::hosts::Hosts;
use crate::ids::{Lang, OpenId, UnionId};
use crate::secret::AccessToken;
use crate::serde_util::{empty_as_none, flag, lenient_opt_i64, lenient_u64};

/// The most OpenIDs one `user/info/batchget` call takes.
pub const BATCH_LIMIT: usize = 100;

/// One user as `user/info` describes them.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct UserInfo {
    /// Whether the user follows the account; when `false` most other fields are absent.
    #[serde(default, deserialize_with = "flag")]
    pub subscribe: bool,
    /// The user's OpenID for this account.
    pub openid: OpenId,
    /// Present only when the account is bound to an open-platform account.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub unionid: Option<UnionId>,
    /// The last follow time (Unix seconds).
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub subscribe_time: Option<i64>,
    /// No longer provided by the platform; kept for old responses.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub language: Option<String>,
    /// The operator's remark.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub remark: Option<String>,
    /// The legacy group id.
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub groupid: Option<i64>,
    /// Tag ids.
    #[serde(default)]
    pub tagid_list: Vec<i64>,
    /// How the user came to follow, e.g. `ADD_SCENE_QR_CODE`.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub subscribe_scene: Option<String>,
    /// The numeric scene of the parametric QR code that led to the follow.
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub qr_scene: Option<i64>,
    /// The string scene of the parametric QR code that led to the follow.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub qr_scene_str: Option<String>,
    /// Not output since 2021-12-27; present only in old or odd responses.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub nickname: Option<String>,
    /// Not output since 2021-12-27; present only in old or odd responses.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub headimgurl: Option<String>,
}

/// `GET /cgi-bin/user/info?access_token=…&openid=…&lang=…`.
#[derive(Debug)]
pub struct GetUserInfo<'a> {
    access_token: &'a AccessToken,
    openid: &'a OpenId,
    lang: Option<Lang>,
}

impl<'a> GetUserInfo<'a> {
    /// The request for one user.
    pub fn new(access_token: &'a AccessToken, openid: &'a OpenId) -> Self {
        Self {
            access_token,
            openid,
            lang: None,
        }
    }

    /// Sets `lang`.
    pub fn lang(mut self, lang: Lang) -> Self {
        self.lang = Some(lang);
        self
    }
}

impl Endpoint for GetUserInfo<'_> {
    type Output = UserInfo;
    const PATH: &'static str = "/cgi-bin/user/info";

    fn build_request(&self, hosts: &Hosts) -> Result<http::Request<Vec<u8>>, WxError> {
        let mut query = vec![
            ("access_token", self.access_token.expose_secret()),
            ("openid", self.openid.as_str()),
        ];
        if let Some(lang) = self.lang {
            query.push(("lang", lang.as_str()));
        }
        get(hosts.api_url(Self::PATH, &query))
    }

    fn parse_body(&self, status: StatusCode, body: &[u8]) -> Result<UserInfo, WxError> {
        parse_json(Self::PATH, status, body)
    }
}

/// `POST /cgi-bin/user/info/batchget?access_token=…` with `{"user_list":[{openid,lang}]}`.
#[derive(Debug)]
pub struct BatchGetUserInfo<'a> {
    access_token: &'a AccessToken,
    users: Vec<(&'a OpenId, Option<Lang>)>,
}

#[derive(Serialize)]
struct BatchBody<'a> {
    user_list: Vec<BatchEntry<'a>>,
}

#[derive(Serialize)]
struct BatchEntry<'a> {
    openid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    lang: Option<Lang>,
}

#[derive(Deserialize)]
struct BatchResponse {
    #[serde(default)]
    user_info_list: Vec<UserInfo>,
}

impl<'a> BatchGetUserInfo<'a> {
    /// The request for 1 to [`BATCH_LIMIT`] users.
    ///
    /// # Errors
    ///
    /// [`WxError::InvalidInput`] for an empty list or more than 100 users: the platform would
    /// answer `40032`, and the call would still count against the quota.
    pub fn new(
        access_token: &'a AccessToken,
        users: impl IntoIterator<Item = (&'a OpenId, Option<Lang>)>,
    ) -> Result<Self, WxError> {
        let users: Vec<_> = users.into_iter().collect();
        if users.is_empty() {
            return Err(WxError::invalid_input("batchget needs at least one openid"));
        }
        if users.len() > BATCH_LIMIT {
            return Err(WxError::invalid_input(
                "batchget takes at most 100 openids per call",
            ));
        }
        Ok(Self {
            access_token,
            users,
        })
    }
}

impl Endpoint for BatchGetUserInfo<'_> {
    type Output = Vec<UserInfo>;
    const PATH: &'static str = "/cgi-bin/user/info/batchget";

    fn build_request(&self, hosts: &Hosts) -> Result<http::Request<Vec<u8>>, WxError> {
        post_json(
            hosts.api_url(
                Self::PATH,
                &[("access_token", self.access_token.expose_secret())],
            ),
            &BatchBody {
                user_list: self
                    .users
                    .iter()
                    .map(|(openid, lang)| BatchEntry {
                        openid: openid.as_str(),
                        lang: *lang,
                    })
                    .collect(),
            },
        )
    }

    fn parse_body(&self, status: StatusCode, body: &[u8]) -> Result<Vec<UserInfo>, WxError> {
        parse_json::<BatchResponse>(Self::PATH, status, body).map(|b| b.user_info_list)
    }
}

/// One page of followers.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct UserList {
    /// All followers of the account.
    #[serde(deserialize_with = "lenient_u64")]
    pub total: u64,
    /// OpenIDs on this page (at most 10 000).
    #[serde(deserialize_with = "lenient_u64")]
    pub count: u64,
    #[serde(default)]
    data: Option<UserListData>,
    /// Pass this to the next call; `None` (sent as `""`) on the final page.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub next_openid: Option<OpenId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
struct UserListData {
    #[serde(default)]
    openid: Vec<OpenId>,
}

impl UserList {
    /// The OpenIDs on this page (the platform may omit `data` on an empty page).
    pub fn openids(&self) -> &[OpenId] {
        self.data.as_ref().map_or(&[], |d| &d.openid)
    }

    /// Consumes the page and returns its OpenIDs.
    pub fn into_openids(self) -> Vec<OpenId> {
        self.data.map(|d| d.openid).unwrap_or_default()
    }
}

/// `GET /cgi-bin/user/get?access_token=…&next_openid=…`.
#[derive(Debug)]
pub struct GetUserList<'a> {
    access_token: &'a AccessToken,
    next_openid: Option<&'a OpenId>,
}

impl<'a> GetUserList<'a> {
    /// The first page.
    pub fn first(access_token: &'a AccessToken) -> Self {
        Self {
            access_token,
            next_openid: None,
        }
    }

    /// The page after `next_openid` (from the previous page).
    pub fn after(access_token: &'a AccessToken, next_openid: &'a OpenId) -> Self {
        Self {
            access_token,
            next_openid: Some(next_openid),
        }
    }
}

impl Endpoint for GetUserList<'_> {
    type Output = UserList;
    const PATH: &'static str = "/cgi-bin/user/get";

    fn build_request(&self, hosts: &Hosts) -> Result<http::Request<Vec<u8>>, WxError> {
        let mut query = vec![("access_token", self.access_token.expose_secret())];
        if let Some(next) = self.next_openid {
            query.push(("next_openid", next.as_str()));
        }
        get(hosts.api_url(Self::PATH, &query))
    }

    fn parse_body(&self, status: StatusCode, body: &[u8]) -> Result<UserList, WxError> {
        parse_json(Self::PATH, status, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrCode;

    fn oid(s: &str) -> OpenId {
        OpenId::parse(s).unwrap()
    }

    #[test]
    fn user_info_spec_example() {
        let t = AccessToken::new("TOK");
        let o = oid("o6_bmjrPTlm6_2sgVt7hMZOPfL2M");
        let ep = GetUserInfo::new(&t, &o).lang(Lang::ZhCn);
        assert_eq!(
            ep.build_request(&Hosts::default())
                .unwrap()
                .uri()
                .to_string(),
            "https://api.weixin.qq.com/cgi-bin/user/info?access_token=TOK&openid=o6_bmjrPTlm6_2sgVt7hMZOPfL2M&lang=zh_CN"
        );
        let u = ep
            .parse_body(
                StatusCode::OK,
                br#"{"subscribe":1,"openid":"o6_bmjrPTlm6_2sgVt7hMZOPfL2M","language":"zh_CN","subscribe_time":1382694957,
     "unionid":"o6_bmasdasdsad6_2sgVt7hMZOPfL","remark":"","groupid":0,"tagid_list":[128,2],
     "subscribe_scene":"ADD_SCENE_QR_CODE","qr_scene":98765,"qr_scene_str":""}"#,
            )
            .unwrap();
        assert!(u.subscribe);
        assert_eq!(u.unionid.unwrap().as_str(), "o6_bmasdasdsad6_2sgVt7hMZOPfL");
        assert_eq!(u.subscribe_time, Some(1382694957));
        assert_eq!(u.tagid_list, vec![128, 2]);
        assert_eq!(u.qr_scene, Some(98765));
        assert_eq!(u.qr_scene_str, None);
        assert_eq!(u.remark, None);
        assert_eq!(u.nickname, None);
    }

    #[test]
    fn not_following_is_not_an_error() {
        let t = AccessToken::new("TOK");
        let o = oid("oX");
        let ep = GetUserInfo::new(&t, &o);
        let u = ep
            .parse_body(
                StatusCode::OK,
                br#"{"subscribe":0,"openid":"oX","tagid_list":[]}"#,
            )
            .unwrap();
        assert!(!u.subscribe);
        let u = ep
            .parse_body(
                StatusCode::OK,
                br#"{"subscribe":0,"openid":"oX","nickname":"","sex":0,"headimgurl":"","unionid":"uX"}"#,
            )
            .unwrap();
        assert!(!u.subscribe);
        assert_eq!(u.nickname, None);
        assert_eq!(u.unionid.unwrap().as_str(), "uX");
        let err = ep
            .parse_body(
                StatusCode::OK,
                br#"{"errcode":40003,"errmsg":"invalid openid"}"#,
            )
            .unwrap_err();
        assert_eq!(err.errcode(), Some(ErrCode::InvalidOpenId));
    }

    #[test]
    fn batch_limits_and_body() {
        let t = AccessToken::new("TOK");
        let ids: Vec<OpenId> = (0..101).map(|i| oid(&format!("o{i}"))).collect();
        assert!(BatchGetUserInfo::new(&t, ids.iter().map(|o| (o, None))).is_err());
        assert!(BatchGetUserInfo::new(&t, std::iter::empty()).is_err());
        BatchGetUserInfo::new(&t, ids[..100].iter().map(|o| (o, None))).unwrap();

        let ep = BatchGetUserInfo::new(&t, [(&ids[0], Some(Lang::ZhCn)), (&ids[1], None)]).unwrap();
        let req = ep.build_request(&Hosts::default()).unwrap();
        assert_eq!(
            req.body(),
            br#"{"user_list":[{"openid":"o0","lang":"zh_CN"},{"openid":"o1"}]}"#
        );
        let list = ep
            .parse_body(
                StatusCode::OK,
                br#"{"user_info_list":[{"subscribe":1,"openid":"o0","tagid_list":[]},{"subscribe":0,"openid":"o1","unionid":"u1"}]}"#,
            )
            .unwrap();
        assert_eq!(list.len(), 2);
        assert!(!list[1].subscribe);
    }

    #[test]
    fn user_list_paging() {
        let t = AccessToken::new("TOK");
        let first = GetUserList::first(&t);
        assert_eq!(
            first
                .build_request(&Hosts::default())
                .unwrap()
                .uri()
                .to_string(),
            "https://api.weixin.qq.com/cgi-bin/user/get?access_token=TOK"
        );
        let page = first
            .parse_body(
                StatusCode::OK,
                br#"{"total":23000,"count":3,"data":{"openid":["OPENID1","OPENID2","OPENID3"]},"next_openid":"OPENID3"}"#,
            )
            .unwrap();
        assert_eq!(page.openids().len(), 3);
        let next = page.next_openid.clone().unwrap();
        let second = GetUserList::after(&t, &next);
        assert!(
            second
                .build_request(&Hosts::default())
                .unwrap()
                .uri()
                .to_string()
                .ends_with("&next_openid=OPENID3")
        );
        let last = second
            .parse_body(
                StatusCode::OK,
                br#"{"total":23000,"count":0,"next_openid":""}"#,
            )
            .unwrap();
        assert!(last.openids().is_empty());
        assert!(last.next_openid.is_none());
        assert!(last.into_openids().is_empty());
    }
}
