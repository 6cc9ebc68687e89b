//! The client against the simulator over HTTP on 127.0.0.1: real requests, real parsing,
//! virtual time driven through the simulator's control API.

use std::sync::Arc;

use serde_json::{Value, json};
use std::sync::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use wx_api::client::{HttpConfig, ReqwestClient};
use wx_api::oauth::{AuthorizeUrl, OAuthState, RedirectUri, Scope};
use wx_api::push::{AesKey, KeyUsed, MessageKind, PushCrypto, PushQuery, Reply};
use wx_api::{
    AccessToken, Action, AppId, AppSecret, Client, ErrCode, Hosts, OAuthCode, OpenId, WxError,
};
use wx_api::{EncodingAesKey, PushToken};
use wx_sim::{RunningSim, Simulator, World};

const APPID: &str = "wx1234567890abcdef";
const SECRET: &str = "sim-secret-0123456789abcdef0123";

const WORLD: &str = r#"
[clock]
start = 1700000000

[quirks]
# Off so that a snsapi_base token gets 48001 deterministically.
base_userinfo_after_grant = false

[[accounts]]
appid = "wx1234567890abcdef"
secret = "sim-secret-0123456789abcdef0123"
name = "Demo"
original_id = "gh_0123456789ab"
oauth_domains = ["127.0.0.1"]
ip_whitelist = []
push_token = "pushtoken"
encoding_aes_key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
push_mode = "safe"

[[people]]
id = "alice"
nickname = "Alice"
headimgurl = "https://example.invalid/alice/132"
unionid = "uALICE0123456789"
follows = ["wx1234567890abcdef"]
consent = "allow"

[[people]]
id = "bob"
nickname = "Bob"
follows = []
consent = "allow"
"#;

/// A running simulator, a wx-api client pointed at it, and a plain HTTP client for the
/// control API and the authorize page.
struct Env {
    sim: RunningSim,
    push: Option<PushReceiver>,
    client: Client,
    http: reqwest::Client,
    appid: AppId,
    secret: AppSecret,
}

impl Env {
    async fn start() -> Env {
        Self::start_with(WORLD, None).await
    }

    async fn start_with(world: &str, push: Option<PushReceiver>) -> Env {
        let world = World::from_toml_str(world).expect("world parses");
        let sim = Simulator::spawn(world).await.expect("simulator starts");
        let hosts = Hosts::single(&sim.base_url()).unwrap();
        let transport = ReqwestClient::new(&HttpConfig::default()).unwrap();
        Env {
            client: Client::with_http(hosts, Arc::new(transport)),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            sim,
            push,
            appid: AppId::parse(APPID).unwrap(),
            secret: AppSecret::new(SECRET),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    async fn advance(&self, seconds: i64) {
        let r = self
            .http
            .post(self.url("/_sim/clock/advance"))
            .json(&json!({ "seconds": seconds }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "advance: {}", r.status());
    }

    async fn now(&self) -> i64 {
        let v: Value = self
            .http
            .get(self.url("/_sim/clock"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["now"].as_i64().expect("now")
    }

    async fn openid_of(&self, person: &str) -> OpenId {
        let v: Value = self
            .http
            .get(self.url("/_sim/openid"))
            .query(&[("appid", APPID), ("person", person)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        OpenId::parse(v["openid"].as_str().expect("openid")).unwrap()
    }

    /// Plays the authorize page for `person` and returns the code from the redirect.
    async fn authorize(&self, person: &str, scope: Scope) -> OAuthCode {
        let state = OAuthState::random(16);
        let url = AuthorizeUrl::new(
            self.appid.clone(),
            RedirectUri::parse("http://127.0.0.1/cb").unwrap(),
            scope,
        )
        .unwrap()
        .state(state.clone())
        .build(self.client.hosts());
        // The simulator picks the person from an extra parameter; it goes before the
        // fragment, which is never sent anyway.
        let (before, _) = url.split_once('#').unwrap();
        let r = self
            .http
            .get(format!("{before}&wxsim_person={person}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "authorize did not redirect");
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        let loc = url::Url::parse(&location).unwrap();
        assert_eq!(loc.host_str(), Some("127.0.0.1"));
        assert_eq!(loc.path(), "/cb");
        let pairs: Vec<(String, String)> = loc.query_pairs().into_owned().collect();
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("state").as_deref(), Some(state.as_str()));
        OAuthCode::new(get("code").expect("code in redirect"))
    }
}

#[tokio::test]
async fn token_fetch() {
    let env = Env::start().await;
    let t = env
        .client
        .fetch_access_token(&env.appid, &env.secret)
        .await
        .unwrap();
    assert!(!t.access_token.expose_secret().is_empty());
    assert_eq!(t.expires_in, 7200);

    let err = env
        .client
        .fetch_access_token(&env.appid, &AppSecret::new("wrong"))
        .await
        .unwrap_err();
    assert_eq!(err.errcode(), Some(ErrCode::InvalidAppSecret));
    assert!(matches!(err.action(), Action::FixConfiguration(_)));
    assert!(!format!("{err} {err:?}").contains("wrong"));
}

#[tokio::test]
async fn ip_whitelist_error_names_our_ip() {
    let world = WORLD.replace("ip_whitelist = []", "ip_whitelist = [\"10.9.8.7\"]");
    let env = Env::start_with(&world, None).await;
    let err = env
        .client
        .fetch_stable_access_token(&env.appid, &env.secret, false)
        .await
        .unwrap_err();
    assert_eq!(err.errcode(), Some(ErrCode::IpNotInWhitelist));
    assert_eq!(
        err.action(),
        Action::FixConfiguration(wx_api::ConfigPart::IpWhitelist {
            ip: Some("127.0.0.1".parse().unwrap())
        })
    );
}

#[tokio::test]
async fn stable_token_is_the_same_until_forced() {
    let env = Env::start().await;
    let a = env
        .client
        .fetch_stable_access_token(&env.appid, &env.secret, false)
        .await
        .unwrap();
    env.advance(100).await;
    let b = env
        .client
        .fetch_stable_access_token(&env.appid, &env.secret, false)
        .await
        .unwrap();
    assert!(a.access_token.ct_eq(&b.access_token), "same stable token");
    assert!(
        b.expires_in <= a.expires_in - 100,
        "{} vs {}",
        b.expires_in,
        a.expires_in
    );

    let c = env
        .client
        .fetch_stable_access_token(&env.appid, &env.secret, true)
        .await
        .unwrap();
    assert!(!c.access_token.ct_eq(&a.access_token), "forced refresh");
    // The old stable token dies at once after a forced refresh; the new one works.
    env.client.jsapi_ticket(&c.access_token).await.unwrap();
    let err = env.client.jsapi_ticket(&a.access_token).await.unwrap_err();
    assert!(err.is_token_invalid(), "{err:?}");
}

#[tokio::test]
async fn superseded_classic_token_gets_40001_after_the_grace() {
    let env = Env::start().await;
    let first = env
        .client
        .fetch_access_token(&env.appid, &env.secret)
        .await
        .unwrap();
    let second = env
        .client
        .fetch_access_token(&env.appid, &env.secret)
        .await
        .unwrap();
    assert!(!first.access_token.ct_eq(&second.access_token));
    // Within the 300 s overlap both work.
    env.client.jsapi_ticket(&first.access_token).await.unwrap();
    env.advance(301).await;

    let err = env
        .client
        .jsapi_ticket(&first.access_token)
        .await
        .unwrap_err();
    match &err {
        WxError::Api {
            code,
            rid,
            endpoint,
            ..
        } => {
            assert_eq!(*code, ErrCode::InvalidCredential);
            assert_eq!(*endpoint, "/cgi-bin/ticket/getticket");
            let rid = rid.as_deref().expect("the simulator sends a rid");
            // The rid's first group is the request time in hex.
            let now = env.now().await;
            let first_group = i64::from_str_radix(rid.split('-').next().unwrap(), 16).unwrap();
            assert!((first_group - now).abs() <= 1, "{rid} vs {now}");
        }
        other => panic!("expected an Api error, got {other:?}"),
    }
    assert_eq!(err.action(), Action::RefreshTokenAndRetryOnce);

    // Do what the action says: refresh, retry once.
    let fresh = env
        .client
        .fetch_access_token(&env.appid, &env.secret)
        .await
        .unwrap();
    env.client.jsapi_ticket(&fresh.access_token).await.unwrap();
}

#[tokio::test]
async fn getticket() {
    let env = Env::start().await;
    let token = env
        .client
        .fetch_access_token(&env.appid, &env.secret)
        .await
        .unwrap()
        .access_token;
    let a = env.client.jsapi_ticket(&token).await.unwrap();
    assert_eq!(a.expires_in, 7200);
    env.advance(60).await;
    let b = env.client.jsapi_ticket(&token).await.unwrap();
    assert!(a.ticket.ct_eq(&b.ticket), "same ticket while valid");
    assert_eq!(b.expires_in, 7200, "expires_in is always 7200");
    let card = env.client.card_ticket(&token).await.unwrap();
    assert!(!card.ticket.expose_secret().is_empty());

    let err = env
        .client
        .jsapi_ticket(&AccessToken::new("not-a-token"))
        .await
        .unwrap_err();
    assert!(err.is_token_invalid(), "{err:?}");
}

#[tokio::test]
async fn user_info_and_lists() {
    let env = Env::start().await;
    let token = env
        .client
        .fetch_access_token(&env.appid, &env.secret)
        .await
        .unwrap()
        .access_token;
    let alice = env.openid_of("alice").await;
    let bob = env.openid_of("bob").await;

    let u = env.client.user_info(&token, &alice).await.unwrap();
    assert!(u.subscribe);
    assert_eq!(u.openid, alice);
    assert_eq!(u.nickname, None, "user/info has no nickname since 2021");

    // Not following is a normal answer, not an error.
    let u = env.client.user_info(&token, &bob).await.unwrap();
    assert!(!u.subscribe);

    let batch = env
        .client
        .user_info_batch(&token, &[alice.clone(), bob.clone()])
        .await
        .unwrap();
    assert_eq!(batch.len(), 2);

    let page = env.client.user_list(&token, None).await.unwrap();
    assert!(page.openids().contains(&alice));
    assert!(!page.openids().contains(&bob));

    let quota = env
        .client
        .api_quota(&token, "/cgi-bin/token")
        .await
        .unwrap();
    assert!(quota.used >= 1);
    assert_eq!(quota.used + quota.remain, quota.daily_limit);
}

#[tokio::test]
async fn oauth_code_exchange_userinfo_and_refresh() {
    let env = Env::start().await;
    let code = env.authorize("alice", Scope::SnsapiUserinfo).await;
    let t = env
        .client
        .exchange_code(&env.appid, &env.secret, &code)
        .await
        .unwrap();
    assert!(t.grants(Scope::SnsapiUserinfo));
    assert_eq!(t.openid, env.openid_of("alice").await);
    assert!(!t.is_snapshotuser);
    assert_eq!(
        t.unionid.as_ref().map(|u| u.as_str()),
        Some("uALICE0123456789")
    );

    let profile = env
        .client
        .sns_user_info(&t.access_token, &t.openid)
        .await
        .unwrap();
    assert_eq!(profile.nickname, "Alice");
    assert_eq!(profile.sex.unwrap_or(0), 0);
    env.client
        .check_user_token(&t.access_token, &t.openid)
        .await
        .unwrap();

    // The code is single use.
    let err = env
        .client
        .exchange_code(&env.appid, &env.secret, &code)
        .await
        .unwrap_err();
    assert_eq!(err.errcode(), Some(ErrCode::CodeBeenUsed));
    assert_eq!(err.action(), Action::Reauthorize);

    // Past the user token's life, refresh_token gives a working one.
    env.advance(7201).await;
    let err = env
        .client
        .sns_user_info(&t.access_token, &t.openid)
        .await
        .unwrap_err();
    assert!(err.errcode().is_some(), "{err:?}");
    let refreshed = env
        .client
        .refresh_user_token(&env.appid, &t.refresh_token)
        .await
        .unwrap();
    assert_eq!(refreshed.openid, t.openid);
    let profile = env
        .client
        .sns_user_info(&refreshed.access_token, &refreshed.openid)
        .await
        .unwrap();
    assert_eq!(profile.nickname, "Alice");
}

#[tokio::test]
async fn base_scope_userinfo_is_48001_and_means_reauthorize() {
    let env = Env::start().await;
    let code = env.authorize("bob", Scope::SnsapiBase).await;
    let t = env
        .client
        .exchange_code(&env.appid, &env.secret, &code)
        .await
        .unwrap();
    assert!(t.grants(Scope::SnsapiBase));
    assert!(t.unionid.is_none(), "no unionid for snsapi_base");
    let err = env
        .client
        .sns_user_info(&t.access_token, &t.openid)
        .await
        .unwrap_err();
    assert_eq!(err.errcode(), Some(ErrCode::ApiUnauthorized));
    assert_eq!(err.action(), Action::Reauthorize);
}

/// What the push endpoint saw: each message and the key that opened it.
type ReceivedLog = Mutex<Vec<(MessageKind, Option<KeyUsed>)>>;

/// A business server's push endpoint on 127.0.0.1, built on wx-api's push module: it answers
/// the GET handshake and opens each POST, then replies with an encrypted echo.
struct PushReceiver {
    url: String,
    received: Arc<ReceivedLog>,
}

impl PushReceiver {
    async fn start(crypto: PushCrypto) -> PushReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/wx", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let crypto = Arc::new(crypto);
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (crypto, log) = (crypto.clone(), log.clone());
                tokio::spawn(async move {
                    let _ = serve_one(sock, &crypto, &log).await;
                });
            }
        });
        PushReceiver { url, received }
    }
}

/// One HTTP/1.1 exchange, just enough for the simulator's push client.
async fn serve_one(
    sock: tokio::net::TcpStream,
    crypto: &PushCrypto,
    log: &ReceivedLog,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(sock);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut content_length = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).await?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; content_length];
    reader.read_exact(&mut body).await?;
    let query = PushQuery::from_query_str(target.split_once('?').map_or("", |(_, q)| q));

    let (status, reply) = if method == "GET" {
        match crypto.verify_url(&query) {
            Ok(echo) => ("200 OK", echo.to_owned()),
            Err(_) => ("403 Forbidden", String::new()),
        }
    } else {
        match crypto.open(&query, &body) {
            Ok(opened) => {
                log.lock()
                    .unwrap()
                    .push((opened.message.kind.clone(), opened.key));
                let content = match &opened.message.kind {
                    MessageKind::Text { content } => format!("echo: {content} ]]> done"),
                    _ => "ok".to_owned(),
                };
                let xml =
                    Reply::text_to(&opened.message, opened.message.create_time, content).to_xml();
                let sealed = crypto
                    .seal_reply(
                        &xml,
                        1_700_000_001,
                        "replynonce",
                        opened.key.unwrap_or(KeyUsed::Current),
                    )
                    .unwrap();
                ("200 OK", sealed)
            }
            Err(_) => ("400 Bad Request", String::new()),
        }
    };
    let mut sock = reader.into_inner();
    sock.write_all(
        format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: text/xml\r\nConnection: close\r\n\r\n{reply}",
            reply.len()
        )
        .as_bytes(),
    )
    .await?;
    sock.shutdown().await
}

/// The simulator's push client (its own crypto) and wx-api's push module agree: handshake,
/// safe-mode decryption with a key mid-rotation, and an encrypted reply the simulator opens.
#[tokio::test]
async fn safe_mode_push_round_trip_during_key_rotation() {
    const SIM_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    // The business server already has a new key; the platform still uses the old one.
    let crypto = PushCrypto::new(
        PushToken::new("pushtoken"),
        AppId::parse(APPID).unwrap(),
        &AesKey::generate().to_encoding_aes_key(),
    )
    .unwrap()
    .with_previous_key(&EncodingAesKey::new(SIM_KEY))
    .unwrap();
    let receiver = PushReceiver::start(crypto).await;
    let world = WORLD.replace(
        "push_mode = \"safe\"",
        &format!("push_mode = \"safe\"\npush_url = \"{}\"", receiver.url),
    );
    let env = Env::start_with(&world, Some(receiver)).await;

    let v: Value = env
        .http
        .post(env.url("/_sim/push/verify"))
        .json(&json!({ "appid": APPID }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["ok"], true, "handshake: {v}");

    let v: Value = env
        .http
        .post(env.url("/_sim/people/alice/text"))
        .json(&json!({ "appid": APPID, "content": "hello <wx> & 你好", "wait": true }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let attempt = &v["delivery"]["attempts"][0];
    assert_eq!(attempt["reply_kind"], "encrypted_xml", "{v}");
    let plain = attempt["reply_plain"].as_str().expect("decrypted reply");
    assert!(
        plain.contains("<![CDATA[echo: hello <wx> & 你好 ]]]]><![CDATA[> done]]>"),
        "{plain}"
    );

    let received = env.push.as_ref().unwrap().received.lock().unwrap().clone();
    assert_eq!(
        received,
        vec![(
            MessageKind::Text {
                content: "hello <wx> & 你好".into()
            },
            Some(KeyUsed::Previous)
        )]
    );
}
