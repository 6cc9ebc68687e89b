use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Value, json};
use wxhub::config::Config;

pub const APPID: &str = "wx1111111111111111";
pub const SECRET: &str = "canary-secret-d41d8cd98f00b204e98";
pub const START: i64 = 1_700_000_000;
pub const WEB_APPID: &str = "wx3333333333333333";
pub const WEB_SECRET: &str = "web-secret-0000000000000000000000";
/// Where web authorization returns to; nothing listens there, tests read
/// the Location header.
pub const RETURN: &str = "http://127.0.0.1:9/done?x=1";

/// Every log line of the test process, for the canary test.
pub fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let subscriber = tracing_subscriber_for(writer);
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
}

#[derive(Clone)]
struct BufWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stderr().write_all(data)?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn tracing_subscriber_for(buf: Arc<Mutex<Vec<u8>>>) -> impl tracing::Subscriber + Send + Sync {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || BufWriter(buf.clone()))
        .finish()
}

pub fn world(extra_account: &str) -> String {
    format!(
        r#"
[clock]
start = {START}

[[accounts]]
appid = "{APPID}"
secret = "{SECRET}"
name = "Hub Test"
oauth_domains = ["127.0.0.1"]
daily_limits = {{ "/cgi-bin/user/info" = 100000000 }}
{extra_account}

[[accounts]]
appid = "{WEB_APPID}"
secret = "{WEB_SECRET}"
name = "Website"
kind = "website"
oauth_domains = ["127.0.0.1"]

[[people]]
id = "alice"
nickname = "Alice"
follows = ["{APPID}"]

[[people]]
id = "bob"
nickname = "Bob"
unionid = "oUNION_bob_0000000000000000"
consent = "allow"

[[people]]
id = "carol"
nickname = "Carol"
consent = "deny"

[[people]]
id = "dave"
nickname = "Dave"
consent = "ask"

[[people]]
id = "erin"
nickname = "Erin"
consent = "allow"
snapshot = true
"#
    )
}

pub struct Options {
    pub mode: &'static str,
    pub world: String,
    pub tickets: &'static str,
    pub timeout_ms: u64,
    /// Lines of `[refresh]`, or whole sections after it.
    pub extra: String,
    /// The `[limits]` section. Tests that are not about rate limits run
    /// with limits far out of reach; the rate-limit tests set their own.
    pub limits: String,
    /// More lines of `[oauth]`.
    pub oauth: String,
    /// Sections after the first account (`[accounts.push]`, subscribers).
    pub push: String,
    /// More lines of `[store]` (the encryption keys).
    pub store: String,
    /// The hub's listen address (a fixed port when the simulator must know
    /// it before the hub starts: a component's event URL).
    pub listen: String,
    /// `clients[shop].components`.
    pub shop_components: String,
    /// Sections after the clients (`[[components]]`).
    pub components: String,
}

/// Limits no test reaches unless it means to.
pub const UNLIMITED: &str = r#"
[limits]
proxy = { per_second = 1000000, burst = 1000000 }
invalidate = { per_minute = 1000000, burst = 1000000 }
anonymous = { per_minute = 1000000, burst = 1000000 }
"#;

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: "stable",
            world: world(""),
            tickets: "[\"jsapi\"]",
            timeout_ms: 2000,
            extra: String::new(),
            limits: UNLIMITED.to_string(),
            oauth: String::new(),
            push: String::new(),
            store: String::new(),
            listen: "127.0.0.1:0".into(),
            shop_components: "[]".into(),
            components: String::new(),
        }
    }
}

/// A loopback port free now, for a hub whose URL the simulator's world
/// names before the hub starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The in-process simulator's virtual clock. The library's own one comes
/// with the `dev` feature; this one lets these tests run without it.
#[derive(Debug)]
struct SimClock(Arc<wx_sim::Sim>);

impl wxhub::clock::Clock for SimClock {
    fn now(&self) -> i64 {
        self.0.clock.now()
    }
}

pub struct TestHub {
    pub sim: wx_sim::RunningSim,
    pub hub: Option<wxhub::RunningHub>,
    pub config_text: String,
    pub key: String,
    /// A second client, `good`, with buckets of its own.
    pub good_key: String,
    pub admin: String,
    pub http: reqwest::Client,
    pub store: PathBuf,
}

fn temp_store() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wxhub-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("wxhub.db")
}

impl TestHub {
    pub async fn start() -> TestHub {
        Self::with(Options::default()).await
    }

    pub async fn with(o: Options) -> TestHub {
        logs();
        let world = wx_sim::World::from_toml_str(&o.world).expect("world");
        let sim = wx_sim::Simulator::spawn(world).await.expect("sim");
        let key = wxhub::auth::new_key();
        let good_key = wxhub::auth::new_key();
        let admin = wxhub::auth::new_key();
        let store = temp_store();
        let config_text = format!(
            r#"
listen = "{listen}"
admin_key_sha256 = "{admin_hash}"
[store]
path = "{store}"
{store_lines}
[upstream]
api_base = "{base}"
open_base = "{base}"
mp_base = "{base}"
timeout_ms = {timeout}
[refresh]
tick_ms = 3600000
background = false
wait_for_token_ms = 3000
{extra}
{limits}

[oauth]
state_secret = "test-state-secret-0123456789abcdef-0123"
{oauth}

[[accounts]]
appid = "{APPID}"
secret = "{SECRET}"
token_mode = "{mode}"
tickets = {tickets}
jssdk_domains = ["app.example.com"]
oauth_return_origins = ["http://127.0.0.1:9"]
{push}

[[accounts]]
appid = "{WEB_APPID}"
secret = "{WEB_SECRET}"
kind = "website"
tickets = []
oauth_return_origins = ["http://127.0.0.1:9"]

[[clients]]
name = "shop"
key_sha256 = "{key_hash}"
apps = ["{APPID}", "{WEB_APPID}"]
components = {shop_components}

[[clients]]
name = "good"
key_sha256 = "{good_hash}"
apps = ["{APPID}"]
{components}
"#,
            admin_hash = hex(&wxhub::auth::hash_key(&admin)),
            key_hash = hex(&wxhub::auth::hash_key(&key)),
            good_hash = hex(&wxhub::auth::hash_key(&good_key)),
            store = store.display(),
            store_lines = o.store,
            base = sim.base_url(),
            timeout = o.timeout_ms,
            extra = o.extra,
            limits = o.limits,
            oauth = o.oauth,
            push = o.push,
            mode = o.mode,
            tickets = o.tickets,
            listen = o.listen,
            shop_components = o.shop_components,
            components = o.components,
        );
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut t = TestHub {
            sim,
            hub: None,
            config_text,
            key,
            good_key,
            admin,
            http,
            store,
        };
        t.boot().await;
        t
    }

    pub fn config(&self) -> Config {
        Config::from_toml_with_env(&self.config_text, &[], &|_| None).expect("test config")
    }

    async fn boot(&mut self) {
        let clock = Arc::new(SimClock(self.sim.sim().clone()));
        let app = wxhub::Application::build(self.config(), clock)
            .await
            .expect("hub builds");
        self.hub = Some(app.spawn());
    }

    /// Stops the hub and starts a new one on the same store with `[store]`'s
    /// extra lines (the encryption keys) replaced by `lines`.
    pub async fn restart_with_store_lines(&mut self, old: &str, lines: &str) {
        let at = format!("path = \"{}\"\n", self.store.display());
        assert!(self.config_text.contains(&format!("{at}{old}\n")));
        self.config_text = self
            .config_text
            .replace(&format!("{at}{old}\n"), &format!("{at}{lines}\n"));
        self.restart().await;
    }

    /// Stops the hub, for a start-up that is expected to fail.
    pub async fn stop(&mut self) {
        if let Some(h) = self.hub.take() {
            h.shutdown().await;
        }
    }

    /// The bytes of the store file and its WAL, as an attacker with the
    /// disk would read them.
    pub fn store_contents(&self) -> Vec<u8> {
        let mut bytes = std::fs::read(&self.store).expect("the store file");
        let mut wal = self.store.as_os_str().to_owned();
        wal.push("-wal");
        if let Ok(more) = std::fs::read(&wal) {
            bytes.extend(more);
        }
        bytes
    }

    /// Stops the hub and starts a new one on the same store.
    pub async fn restart(&mut self) {
        if let Some(h) = self.hub.take() {
            h.shutdown().await;
        }
        self.boot().await;
    }

    /// Stops the hub, lets `f` change its SQLite file (a fault to inject),
    /// and starts a new one on it.
    pub async fn restart_with(&mut self, f: impl FnOnce(&rusqlite::Connection)) {
        if let Some(h) = self.hub.take() {
            h.shutdown().await;
        }
        let db = rusqlite::Connection::open(&self.store).expect("the hub's store");
        f(&db);
        drop(db);
        self.boot().await;
    }

    pub fn hub(&self) -> &wxhub::RunningHub {
        self.hub.as_ref().expect("hub running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.hub().base_url(), path)
    }

    /// A request to the hub as the client holding `key`, answered raw.
    pub async fn send_as(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let req = self.http.request(method, self.url(path)).bearer_auth(key);
        let req = match body {
            Some(b) => req.json(b),
            None => req,
        };
        req.send().await.unwrap()
    }

    /// `GET path` as the client holding `key`, answered raw.
    pub async fn get_as(&self, path: &str, key: &str) -> reqwest::Response {
        self.send_as(reqwest::Method::GET, path, key, None).await
    }

    /// `GET path` with no credentials (a browser, WeChat), answered raw.
    pub async fn get_raw(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn token(&self) -> String {
        let (s, v) = self.get(&format!("/v1/apps/{APPID}/access_token")).await;
        assert_eq!(s, 200, "{v}");
        v["access_token"].as_str().unwrap().to_string()
    }

    pub async fn invalidate(&self, token: &str) -> (u16, Value) {
        self.post(
            &format!("/v1/apps/{APPID}/access_token/invalidate"),
            json!({"access_token": token}),
        )
        .await
    }

    pub fn now(&self) -> i64 {
        self.sim.sim().clock.now()
    }

    pub fn advance(&self, secs: i64) -> i64 {
        self.sim.sim().clock.advance(secs)
    }

    /// Lets the refresher do whatever is due now, and waits for it.
    pub async fn run_due(&self) {
        self.hub().app().creds.run_due().await;
    }

    pub fn stats(&self) -> Value {
        self.sim.sim().stats()["apps"][APPID].clone()
    }

    pub fn issued(&self, kind: &str) -> u64 {
        self.stats()["tokens_issued"][kind].as_u64().unwrap()
    }

    pub fn calls(&self, path: &str) -> u64 {
        self.stats()["calls"][path].as_u64().unwrap_or(0)
    }

    pub async fn sim_post(&self, path: &str, body: Value) -> Value {
        let r = self.http.post(format!("{}{}", self.sim.base_url(), path));
        r.json(&body).send().await.unwrap().json().await.unwrap()
    }

    /// Arms a fault in the simulator (`/_sim/faults`).
    pub async fn fault(&self, fault: Value) -> Value {
        self.sim_post("/_sim/faults", fault).await
    }

    /// A proxied call to `path` on the platform, as the test's client.
    pub async fn proxy(&self, path: &str) -> (u16, Value) {
        self.get(&format!("/v1/apps/{APPID}/proxy/{path}")).await
    }

    pub async fn sim_get(&self, path: &str) -> Value {
        let r = self.http.get(format!("{}{}", self.sim.base_url(), path));
        r.send().await.unwrap().json().await.unwrap()
    }

    /// A person's openid under the test account.
    pub async fn openid(&self, person: &str) -> String {
        let v = self
            .sim_get(&format!("/_sim/openid?appid={APPID}&person={person}"))
            .await;
        v["openid"].as_str().unwrap().to_string()
    }

    /// Another system kills the hub's current token, as a second fetcher
    /// sharing the AppID would: in stable mode a forced refresh (the old
    /// token dies at once; then 31 s pass, longer than the confirm window),
    /// in classic mode a fetch and the 300 s overlap.
    pub async fn kill_token_elsewhere(&self, mode: &str) {
        if mode == "stable" {
            let v = self
                .sim_post(
                    "/cgi-bin/stable_token",
                    json!({"grant_type": "client_credential", "appid": APPID, "secret": SECRET, "force_refresh": true}),
                )
                .await;
            assert!(v["access_token"].is_string(), "{v}");
            // As if it happened a while ago: a force within 30 s of it
            // would get the same token back (docs/platform.md §2.2).
            self.advance(31);
        } else {
            let v = self
                .sim_get(&format!(
                    "/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret={SECRET}"
                ))
                .await;
            assert!(v["access_token"].is_string(), "{v}");
            self.advance(301);
        }
    }

    /// errcode of a token-checked call made directly to the simulator.
    pub async fn use_token(&self, token: &str) -> i64 {
        let openid = self
            .sim_get(&format!("/_sim/openid?appid={APPID}&person=alice"))
            .await["openid"]
            .as_str()
            .unwrap()
            .to_string();
        let v = self
            .sim_get(&format!(
                "/cgi-bin/user/info?access_token={token}&openid={openid}"
            ))
            .await;
        v["errcode"].as_i64().unwrap_or(0)
    }

    /// `GET /v1/apps` with the admin key.
    pub async fn apps(&self) -> Value {
        self.http
            .get(self.url("/v1/apps"))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Bytes of the store on disk: the SQLite file and its companions,
    /// after the WAL is copied into the file and emptied (through a
    /// connection of the test's own, which the running hub allows), so
    /// what was written is counted once whenever the hub's checkpointer
    /// last ran.
    pub fn store_bytes(&self) -> u64 {
        let db = rusqlite::Connection::open(&self.store).expect("the hub's store");
        db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        let busy = db
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            })
            .expect("the store checkpoints");
        assert_eq!(busy, 0, "the WAL could not be emptied");
        drop(db);
        ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| {
                let mut p = self.store.as_os_str().to_owned();
                p.push(suffix);
                std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
            })
            .sum()
    }

    pub async fn readyz(&self) -> (u16, Value) {
        let r = self.http.get(self.url("/readyz")).send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap())
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(dir) = self.store.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
