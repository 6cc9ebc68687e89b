//! What both external tests share: the world, the simulator, loopback
//! servers standing in for a business server and a landing page, and the
//! rule that a missing external tool fails the test unless skipping was asked
//! for explicitly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::Uri;
use serde_json::{Value, json};

pub const APPID: &str = "wx5e1f0a7d2c9b4e31";
pub const SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
pub const ORIGINAL_ID: &str = "gh_0e1d2c3b4a59";
pub const PUSH_TOKEN: &str = "ExtPushToken2024";
/// wechatpy's own test key: its last character carries non-zero surplus bits.
pub const AES_KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
pub const START: i64 = 1_700_000_000;

/// Follows (and so is pushed about) and agrees at once.
pub const BOB: &str = "bob";
pub const BOB_NICKNAME: &str = "Bob 鲍勃";
/// Gets the consent page.
pub const ALICE: &str = "alice";
pub const ALICE_NICKNAME: &str = "Alice 爱丽丝";

const INSTALL_PYTHON: &str = "install it with `python3 -m venv .ci/venv && \
.ci/venv/bin/pip install -r .ci/requirements.txt` (`bash .ci/run` does it), or set \
WXHUB_SKIP_EXTERNAL=1 to skip the external-client tests explicitly";

const INSTALL_CHROMIUM: &str = "install them with `apt-get install chromium chromium-driver` \
(`bash .ci/run` does it), or set WXHUB_SKIP_EXTERNAL=1 to skip the external-client tests \
explicitly";

/// The workspace root, where `.ci/` lives.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// True, after saying so, when `WXHUB_SKIP_EXTERNAL=1`. Any other value, or
/// none, means the test runs and a missing tool is a failure.
pub fn skipped(test: &str) -> bool {
    let skip = std::env::var("WXHUB_SKIP_EXTERNAL").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("SKIPPED {test}: WXHUB_SKIP_EXTERNAL=1");
    }
    skip
}

/// `WXHUB_PYTHON`, or `.ci/venv/bin/python`; panics unless it runs and
/// imports wechatpy with a crypto backend.
pub fn python_with_wechatpy() -> PathBuf {
    let python = match std::env::var_os("WXHUB_PYTHON").filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => {
            let venv = repo_root().join(".ci/venv/bin/python");
            if !venv.exists() {
                panic!(
                    "no Python with wechatpy: WXHUB_PYTHON is unset and {} does not exist; {INSTALL_PYTHON}",
                    venv.display()
                );
            }
            venv
        }
    };
    let probe = std::process::Command::new(&python)
        .args([
            "-c",
            "import wechatpy, cryptography, wechatpy.crypto; print(wechatpy.__version__)",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}); {INSTALL_PYTHON}", python.display()));
    assert!(
        probe.status.success(),
        "{} cannot import wechatpy and cryptography: {}; {INSTALL_PYTHON}",
        python.display(),
        String::from_utf8_lossy(&probe.stderr).trim()
    );
    python
}

/// `WXHUB_CHROMIUM` and `WXHUB_CHROMEDRIVER`, or the Debian paths; panics
/// unless both are files.
pub fn chromium_and_driver() -> (PathBuf, PathBuf) {
    let find = |var: &str, default: &str| {
        let p = std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(default), PathBuf::from);
        assert!(
            p.is_file(),
            "{} not found ({var} {}); {INSTALL_CHROMIUM}",
            p.display(),
            if std::env::var_os(var).is_some() {
                "is set to it"
            } else {
                "is unset, so the default was tried"
            }
        );
        p
    };
    (
        find("WXHUB_CHROMIUM", "/usr/bin/chromium"),
        find("WXHUB_CHROMEDRIVER", "/usr/bin/chromedriver"),
    )
}

/// The world of the external tests: one verified official account in safe
/// mode, Bob (allow) and Alice (ask). Virtual time starts at [`START`].
pub fn world() -> String {
    format!(
        r#"
[clock]
start = {START}

[[accounts]]
appid = "{APPID}"
secret = "{SECRET}"
name = "External Clients Account"
original_id = "{ORIGINAL_ID}"
oauth_domains = ["127.0.0.1"]
push_token = "{PUSH_TOKEN}"
encoding_aes_key = "{AES_KEY}"
push_mode = "safe"

[[people]]
id = "{BOB}"
nickname = "{BOB_NICKNAME}"
headimgurl = "https://thirdwx.qlogo.cn/mmopen/bob/132"
unionid = "oUNION_bob_external_0000000"
consent = "allow"

[[people]]
id = "{ALICE}"
nickname = "{ALICE_NICKNAME}"
unionid = "oUNION_alice_external_00000"
consent = "ask"
"#
    )
}

/// A loopback client that ignores proxy settings and never follows redirects.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client")
}

/// The simulator, in-process on 127.0.0.1.
pub struct Sim {
    #[expect(
        dead_code,
        reason = "held so the simulator keeps serving until the test ends"
    )]
    pub running: wx_sim::RunningSim,
    pub base: String,
    pub http: reqwest::Client,
}

impl Sim {
    pub async fn start() -> Sim {
        let world = wx_sim::World::from_toml_str(&world()).expect("external test world parses");
        let running = wx_sim::Simulator::spawn(world)
            .await
            .expect("simulator binds 127.0.0.1:0");
        let base = running.base_url();
        Sim {
            running,
            base,
            http: http(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET, expecting 200 and JSON.
    pub async fn get(&self, path: &str) -> Value {
        let resp = self.http.get(self.url(path)).send().await.expect("GET");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        assert_eq!(status, 200, "GET {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
    }

    /// POST JSON, expecting 200 and JSON.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("POST");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        assert_eq!(status, 200, "POST {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {path}: {e}: {text}"))
    }

    /// The simulator's own answer for `person`'s openid under `appid`.
    pub async fn openid(&self, person: &str) -> String {
        let v = self
            .get(&format!("/_sim/openid?appid={APPID}&person={person}"))
            .await;
        v["openid"]
            .as_str()
            .unwrap_or_else(|| panic!("openid in {v}"))
            .to_string()
    }
}

/// What the business-server stand-in received.
#[derive(Default)]
pub struct Inbox {
    pub posts: Mutex<Vec<(HashMap<String, String>, String)>>,
    pub reply: Mutex<String>,
}

async fn on_push(
    State(inbox): State<Arc<Inbox>>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> String {
    inbox.posts.lock().expect("inbox").push((q, body));
    inbox.reply.lock().expect("inbox").clone()
}

/// A business server on 127.0.0.1:0 that records pushes and answers
/// `Inbox::reply` (empty at first: "nothing to say", valid in safe mode).
pub async fn push_receiver() -> (String, Arc<Inbox>) {
    let inbox = Arc::new(Inbox::default());
    let app = axum::Router::new()
        .route("/wx", axum::routing::post(on_push))
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind push receiver");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/wx"), inbox)
}

/// Requests the landing page received, as path and query.
pub type Landings = Arc<Mutex<Vec<String>>>;

async fn on_landing(State(seen): State<Landings>, uri: Uri) -> axum::response::Html<&'static str> {
    seen.lock().expect("landings").push(uri.to_string());
    axum::response::Html(
        "<!doctype html><html><head><title>landed</title></head><body><p id=\"landed\">landed</p></body></html>",
    )
}

/// The OAuth redirect_uri host: `/landing` on 127.0.0.1:0, recording every
/// request to it. Returns the base URL (`http://127.0.0.1:PORT`).
pub async fn landing_server() -> (String, Landings) {
    let seen: Landings = Arc::default();
    // Only /landing is recorded: the browser also asks for /favicon.ico.
    let app = axum::Router::new()
        .route("/landing", axum::routing::get(on_landing))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind landing server");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

/// A query parameter of a URL or of a `path?query`.
pub fn query_param(u: &str, key: &str) -> Option<String> {
    let parsed = url::Url::parse(u)
        .or_else(|_| url::Url::parse("http://x.invalid").and_then(|b| b.join(u)))
        .ok()?;
    parsed
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

pub fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Asserts the simulator issued a token for `person` from `code`.
pub async fn exchange_for_openid(sim: &Sim, code: &str) -> Value {
    let v = sim
        .get(&format!(
            "/sns/oauth2/access_token?appid={APPID}&secret={SECRET}&code={}&grant_type=authorization_code",
            url_encode(code)
        ))
        .await;
    assert!(v.get("errcode").is_none(), "code exchange failed: {v}");
    v
}

/// `{"k": v}` helper for JSON objects built from string pairs.
pub fn string_map(m: &HashMap<String, String>) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect::<serde_json::Map<_, _>>(),
    )
}
