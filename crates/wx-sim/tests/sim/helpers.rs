use serde_json::{Value, json};

pub const APPID: &str = "wx1111111111111111";
pub const SECRET: &str = "s3cr3t0000000000aaaaaaaaaaaaaaaa";
pub const APPID2: &str = "wx2222222222222222";
pub const SECRET2: &str = "s3cr3t0000000000bbbbbbbbbbbbbbbb";
pub const WEB_APPID: &str = "wx3333333333333333";
pub const WEB_SECRET: &str = "s3cr3t0000000000cccccccccccccccc";
pub const START: i64 = 1_700_000_000;

/// The standard test world; `extra` is appended (more settings, quirks).
pub fn world(extra: &str) -> String {
    format!(
        r#"
[clock]
start = {START}

{extra}

[[accounts]]
appid = "{APPID}"
secret = "{SECRET}"
name = "Test Account"
original_id = "gh_000000000001"
oauth_domains = ["127.0.0.1", "app.example.com"]
push_token = "pushtoken1"
encoding_aes_key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"

[[accounts]]
appid = "{APPID2}"
secret = "{SECRET2}"
name = "Second Account"
original_id = "gh_000000000002"
oauth_domains = ["127.0.0.1"]

[[accounts]]
appid = "{WEB_APPID}"
secret = "{WEB_SECRET}"
name = "Website"
kind = "website"
oauth_domains = ["127.0.0.1"]

[[people]]
id = "alice"
nickname = "Alice"
headimgurl = "https://thirdwx.qlogo.cn/mmopen/alice/132"
unionid = "oUNION_alice_00000000000000"
follows = ["{APPID}"]
consent = "ask"

[[people]]
id = "bob"
nickname = "Bob"
unionid = "oUNION_bob_0000000000000000"
consent = "allow"

[[people]]
id = "carol"
nickname = "Carol"
consent = "deny"
follows = ["{APPID}"]

[[people]]
id = "dave"
nickname = "Dave"
consent = "allow"
snapshot = true
"#
    )
}

pub struct TestSim {
    #[expect(
        dead_code,
        reason = "held so the simulator keeps serving until the test ends"
    )]
    pub running: wx_sim::RunningSim,
    pub http: reqwest::Client,
    pub base: String,
}

impl TestSim {
    pub async fn start() -> TestSim {
        Self::with(&world("")).await
    }

    pub async fn with(world_toml: &str) -> TestSim {
        let world = wx_sim::World::from_toml_str(world_toml).expect("test world parses");
        let running = wx_sim::Simulator::spawn(world)
            .await
            .expect("simulator binds");
        let base = running.base_url();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        TestSim {
            running,
            http,
            base,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> Value {
        let resp = self.http.get(self.url(path)).send().await.expect("GET");
        resp.json().await.expect("JSON body")
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("POST");
        resp.json().await.expect("JSON body")
    }

    pub async fn advance(&self, seconds: i64) -> i64 {
        let v = self
            .post("/_sim/clock/advance", json!({ "seconds": seconds }))
            .await;
        v["now"].as_i64().expect("now")
    }

    pub async fn now(&self) -> i64 {
        self.get("/_sim/clock").await["now"].as_i64().expect("now")
    }

    pub async fn classic(&self, appid: &str, secret: &str) -> Value {
        self.get(&format!(
            "/cgi-bin/token?grant_type=client_credential&appid={appid}&secret={secret}"
        ))
        .await
    }

    pub async fn token(&self) -> String {
        let v = self.classic(APPID, SECRET).await;
        v["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("token in {v}"))
            .to_string()
    }

    pub async fn stable(&self, appid: &str, secret: &str, force: bool) -> Value {
        self.post(
            "/cgi-bin/stable_token",
            json!({"grant_type": "client_credential", "appid": appid, "secret": secret, "force_refresh": force}),
        )
        .await
    }

    /// errcode of a token-checked API call made with `token` (0 when it works).
    pub async fn use_token(&self, token: &str) -> i64 {
        let v = self
            .get(&format!("/cgi-bin/user/get?access_token={token}"))
            .await;
        v["errcode"].as_i64().unwrap_or(0)
    }

    pub async fn stats(&self, appid: &str) -> Value {
        self.get("/_sim/stats").await["apps"][appid].clone()
    }

    pub async fn patch_account(&self, appid: &str, body: Value) {
        let resp = self
            .http
            .post(self.url(&format!("/_sim/accounts/{appid}")))
            .json(&body)
            .send()
            .await
            .expect("patch");
        assert_eq!(
            resp.status(),
            200,
            "{}",
            resp.text().await.unwrap_or_default()
        );
    }

    pub async fn openid(&self, appid: &str, person: &str) -> String {
        let v = self
            .get(&format!("/_sim/openid?appid={appid}&person={person}"))
            .await;
        v["openid"].as_str().expect("openid").to_string()
    }

    /// Follows the authorize flow for `person`; returns the Location header.
    pub async fn authorize(
        &self,
        appid: &str,
        scope: &str,
        state: &str,
        person: &str,
    ) -> reqwest::Response {
        let redirect = "http://127.0.0.1/cb?x=1";
        let url = format!(
            "/connect/oauth2/authorize?appid={appid}&redirect_uri={}&response_type=code&scope={scope}&state={state}&wxsim_person={person}",
            url_encode(redirect)
        );
        self.http
            .get(self.url(&url))
            .send()
            .await
            .expect("authorize")
    }

    /// A code for a person whose consent is allow (or a silent scope).
    pub async fn code(&self, appid: &str, scope: &str, person: &str) -> String {
        let resp = self.authorize(appid, scope, "st", person).await;
        assert_eq!(resp.status(), 302, "{:?}", resp.headers());
        let loc = location(&resp);
        query_param(&loc, "code").unwrap_or_else(|| panic!("code in {loc}"))
    }

    pub async fn exchange(&self, appid: &str, secret: &str, code: &str) -> Value {
        self.get(&format!(
            "/sns/oauth2/access_token?appid={appid}&secret={secret}&code={code}&grant_type=authorization_code"
        ))
        .await
    }
}

pub fn errcode(v: &Value) -> i64 {
    v["errcode"].as_i64().unwrap_or(0)
}

pub fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub fn location(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

pub fn query_param(u: &str, key: &str) -> Option<String> {
    let parsed = url::Url::parse(u).ok()?;
    parsed
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}
