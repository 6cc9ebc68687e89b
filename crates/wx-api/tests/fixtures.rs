//! The parsers against the JSON and XML examples of the platform (`docs/platform.md` §2, §4-§8), stored as
//! files under `tests/fixtures/`, through the public API only.

use std::path::PathBuf;

use http::StatusCode;
use wx_api::endpoint::Endpoint;
use wx_api::endpoint::quota::{ClearQuota, GetApiQuota};
use wx_api::endpoint::sns::{CheckUserToken, ExchangeCode, GetSnsUserInfo, RefreshUserToken};
use wx_api::endpoint::ticket::GetJsapiTicket;
use wx_api::endpoint::token::{GetAccessToken, GetStableAccessToken};
use wx_api::endpoint::user::{BatchGetUserInfo, GetUserInfo, GetUserList};
use wx_api::oauth::Scope;
use wx_api::push::{EncryptedEnvelope, Event, MessageKind, PushCrypto, PushMessage, PushQuery};
use wx_api::{
    AccessToken, Action, AppId, AppSecret, BackOffUntil, ConfigPart, EncodingAesKey, ErrCode,
    OAuthCode, OpenId, PushToken, RefreshToken, UserAccessToken, WxError,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn appid() -> AppId {
    AppId::parse("wx2c2769f8efd9abc2").unwrap()
}

#[test]
fn token_endpoints() {
    let (id, secret) = (appid(), AppSecret::new("S"));
    let classic = GetAccessToken::new(&id, &secret);
    let t = classic
        .parse_body(StatusCode::OK, &fixture("token.json"))
        .unwrap();
    assert_eq!(t.expires_in, 7200);
    assert!(t.access_token.expose_secret().starts_with("84_"));

    let stable = GetStableAccessToken::new(&id, &secret);
    let t = stable
        .parse_body(StatusCode::OK, &fixture("stable_token_remaining.json"))
        .unwrap();
    assert_eq!(t.expires_in, 345);
}

/// Each error fixture with its errcode, rid and action, on the endpoint it was seen on.
#[test]
fn error_fixtures() {
    let (id, secret) = (appid(), AppSecret::new("S"));
    let token = AccessToken::new("T");
    let o = OpenId::parse("o1").unwrap();
    let ut = UserAccessToken::new("U");
    let code = OAuthCode::new("C");
    let rt = RefreshToken::new("R");

    let on_token = |name: &str| {
        GetAccessToken::new(&id, &secret)
            .parse_body(StatusCode::OK, &fixture(name))
            .unwrap_err()
    };
    let e = on_token("error_40164.json");
    assert_eq!(e.errcode(), Some(ErrCode::IpNotInWhitelist));
    assert_eq!(e.rid(), Some("64e5d2d0-2fd4a1c3-41b0e4f2"));
    assert_eq!(
        e.action(),
        Action::FixConfiguration(ConfigPart::IpWhitelist {
            ip: Some("101.226.140.206".parse().unwrap())
        })
    );
    let e = on_token("error_40125_hints.json");
    assert_eq!(e.rid(), Some("ItMTDA0250ns71"));
    assert_eq!(e.action(), Action::FixConfiguration(ConfigPart::AppSecret));
    let e = on_token("error_45009.json");
    assert_eq!(e.rid(), Some("6513aa28-57d848c6-68a55827"));
    assert_eq!(
        e.action(),
        Action::BackOff {
            until: BackOffUntil::NextDay
        }
    );

    let on_user_info = |name: &str| {
        GetUserInfo::new(&token, &o)
            .parse_body(StatusCode::OK, &fixture(name))
            .unwrap_err()
    };
    for name in [
        "error_40001_stable_hint.json",
        "error_42001.json",
        "error_string_errcode.json",
    ] {
        let e = on_user_info(name);
        assert!(e.is_token_invalid(), "{name}");
        assert_eq!(e.action(), Action::RefreshTokenAndRetryOnce, "{name}");
    }
    assert_eq!(
        on_user_info("error_40001_stable_hint.json").rid(),
        Some("655d9278-7c157f97-69055077")
    );
    assert_eq!(
        on_user_info("error_45011.json").action(),
        Action::BackOff {
            until: BackOffUntil::NextMinute
        }
    );

    let e = ExchangeCode::new(&id, &secret, &code)
        .parse_body(StatusCode::OK, &fixture("error_40163.json"))
        .unwrap_err();
    assert_eq!(e.action(), Action::Reauthorize);
    let e = RefreshUserToken::new(&id, &rt)
        .parse_body(StatusCode::OK, &fixture("error_40030.json"))
        .unwrap_err();
    assert_eq!(e.action(), Action::Reauthorize);
    let e = GetSnsUserInfo::new(&ut, &o)
        .parse_body(StatusCode::OK, &fixture("error_48001.json"))
        .unwrap_err();
    assert_eq!(e.rid(), Some("ciEBe24ce-LzmPdA"));
    assert_eq!(e.action(), Action::Reauthorize);
    // The same 48001 elsewhere is a permission problem, not the user's.
    let e = GetUserInfo::new(&token, &o)
        .parse_body(StatusCode::OK, &fixture("error_48001.json"))
        .unwrap_err();
    assert_eq!(e.action(), Action::GiveUp);
}

#[test]
fn ticket_quota_and_acks() {
    let token = AccessToken::new("T");
    let t = GetJsapiTicket::new(&token)
        .parse_body(StatusCode::OK, &fixture("getticket.json"))
        .unwrap();
    assert_eq!(t.expires_in, 7200);
    let q = GetApiQuota::new(&token, "/cgi-bin/token")
        .unwrap()
        .parse_body(StatusCode::OK, &fixture("quota_get.json"))
        .unwrap();
    assert_eq!((q.daily_limit, q.used, q.remain), (2000, 17, 1983));
    let id = appid();
    ClearQuota::new(&token, &id)
        .parse_body(StatusCode::OK, &fixture("clear_quota.json"))
        .unwrap();
}

#[test]
fn sns_fixtures() {
    let (id, secret, code, rt) = (
        appid(),
        AppSecret::new("S"),
        OAuthCode::new("C"),
        RefreshToken::new("R"),
    );
    let t = ExchangeCode::new(&id, &secret, &code)
        .parse_body(StatusCode::OK, &fixture("sns_oauth2_access_token.json"))
        .unwrap();
    assert!(t.is_snapshotuser);
    assert_eq!(t.unionid.unwrap().as_str(), "UNIONID");

    let t = ExchangeCode::new(&id, &secret, &code)
        .parse_body(
            StatusCode::OK,
            &fixture("sns_oauth2_access_token_base.json"),
        )
        .unwrap();
    assert!(!t.is_snapshotuser);
    assert!(t.unionid.is_none());
    assert!(t.grants(Scope::SnsapiBase));

    let t = RefreshUserToken::new(&id, &rt)
        .parse_body(StatusCode::OK, &fixture("sns_oauth2_refresh_token.json"))
        .unwrap();
    assert_eq!(t.openid.as_str(), "OPENID");

    let ut = UserAccessToken::new("U");
    let o = OpenId::parse("OPENID").unwrap();
    CheckUserToken::new(&ut, &o)
        .parse_body(StatusCode::OK, &fixture("sns_auth_ok.json"))
        .unwrap();
    let e = CheckUserToken::new(&ut, &o)
        .parse_body(StatusCode::OK, &fixture("sns_auth_invalid_openid.json"))
        .unwrap_err();
    assert_eq!(e.errcode(), Some(ErrCode::InvalidOpenId));

    let u = GetSnsUserInfo::new(&ut, &o)
        .parse_body(StatusCode::OK, &fixture("sns_userinfo.json"))
        .unwrap();
    assert_eq!(u.nickname, "NICKNAME");
    assert_eq!(u.sex, Some(0));
    assert!(u.province.is_empty() && u.city.is_empty() && u.country.is_empty());
    assert!(u.headimgurl.ends_with("/46"));
}

#[test]
fn user_fixtures() {
    let token = AccessToken::new("T");
    let o = OpenId::parse("o1").unwrap();
    let u = GetUserInfo::new(&token, &o)
        .parse_body(StatusCode::OK, &fixture("user_info.json"))
        .unwrap();
    assert!(u.subscribe);
    assert_eq!(u.nickname, None);
    let u = GetUserInfo::new(&token, &o)
        .parse_body(StatusCode::OK, &fixture("user_info_unsubscribed.json"))
        .unwrap();
    assert!(!u.subscribe);
    assert!(u.unionid.is_none());

    let batch = BatchGetUserInfo::new(&token, [(&o, None)])
        .unwrap()
        .parse_body(StatusCode::OK, &fixture("user_info_batchget.json"))
        .unwrap();
    assert_eq!(batch.len(), 2);
    assert!(batch[0].subscribe && !batch[1].subscribe);

    let page = GetUserList::first(&token)
        .parse_body(StatusCode::OK, &fixture("user_get.json"))
        .unwrap();
    assert_eq!(page.openids().len(), 3);
    assert_eq!(page.next_openid.unwrap().as_str(), "OPENID10000");
    let last = GetUserList::first(&token)
        .parse_body(StatusCode::OK, &fixture("user_get_last.json"))
        .unwrap();
    assert!(last.next_openid.is_none() && last.openids().is_empty());
}

#[test]
fn push_fixtures() {
    let m = PushMessage::parse(&fixture("push_text.xml")).unwrap();
    assert_eq!(
        m.kind,
        MessageKind::Text {
            content: "this is a test".into()
        }
    );
    assert_eq!(m.msg_id, Some(1234567890123456));

    let m = PushMessage::parse(&fixture("push_subscribe_qr.xml")).unwrap();
    assert_eq!(
        m.kind,
        MessageKind::Event(Event::Subscribe {
            scene: Some("123123".into()),
            ticket: Some("TICKET".into())
        })
    );

    let body = fixture("push_safe_mode.xml");
    let env = EncryptedEnvelope::parse(&body).unwrap();
    assert_eq!(env.to_user_name.as_deref(), Some("gh_10f6c3c3ac5a"));
    let crypto = PushCrypto::new(
        PushToken::new("spamtest"),
        appid(),
        &EncodingAesKey::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"),
    )
    .unwrap();
    let q = PushQuery::from_query_str(
        "timestamp=1409735669&nonce=1320562132&encrypt_type=aes&msg_signature=5d197aaffba7e9b25a30732f161a50dee96bd5fa",
    );
    let opened = crypto.open(&q, &body).unwrap();
    assert_eq!(opened.message.to_user_name, "gh_10f6c3c3ac5a");
}

#[test]
fn non_json_bodies_are_decode_errors_without_the_body() {
    let (id, secret) = (appid(), AppSecret::new("S"));
    let ep = GetAccessToken::new(&id, &secret);
    let err = ep
        .parse_body(StatusCode::OK, b"<html>oops access_token=LEAK</html>")
        .unwrap_err();
    assert!(matches!(err, WxError::Decode { .. }));
    assert!(!format!("{err} {err:?}").contains("LEAK"));
    let err = ep
        .parse_body(StatusCode::OK, br#"{"access_token":"LEAK"}"#)
        .unwrap_err();
    match &err {
        WxError::Decode { path, .. } => assert_eq!(path, "."),
        other => panic!("{other:?}"),
    }
    let err = ep
        .parse_body(
            StatusCode::OK,
            br#"{"access_token":"LEAK","expires_in":"soon"}"#,
        )
        .unwrap_err();
    match &err {
        WxError::Decode { path, .. } => assert_eq!(path, "expires_in"),
        other => panic!("{other:?}"),
    }
    assert!(!format!("{err} {err:?}").contains("LEAK"));
}
