//! Several `wxhub serve` processes on one Redis, one in-process simulator
//! whose virtual clock every hub follows (`--sim-clock`), and the signals
//! (SIGKILL, SIGSTOP, SIGCONT) real deployments suffer.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const APPID: &str = "wx1111111111111111";
pub const SECRET: &str = "shared-secret-0123456789abcdef0123";
pub const START: i64 = 1_700_000_000;

pub fn redis_url() -> String {
    std::env::var("WXHUB_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "wxhub-{tag}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct Setup {
    pub mode: &'static str,
    pub lease_ms: u64,
    pub upstream_timeout_ms: u64,
    pub redis: String,
    pub instances: usize,
    pub tickets: &'static str,
    /// More accounts beside APPID (`extra_appid(n)`), for scale.
    pub extra_accounts: usize,
    /// `store.tls_ca_file`, for a `rediss://` URL.
    pub redis_tls_ca: Option<PathBuf>,
    /// The `[limits]` section; far out of reach unless a test sets it.
    pub limits: &'static str,
    /// Lines after the first account (`[accounts.push]`, then `[push]`).
    pub push: String,
    /// More keys of the simulator's first account (its push settings).
    pub sim_account: String,
    /// One SQLite file instead of Redis (for single-instance tests).
    pub sqlite: bool,
    /// More lines of the `[store]` section (Sentinel's).
    pub store_extra: String,
}

/// Limits these tests never reach unless they mean to.
pub const UNLIMITED: &str = r#"
[limits]
proxy = { per_second = 1000000, burst = 1000000 }
invalidate = { per_minute = 1000000, burst = 1000000 }
anonymous = { per_minute = 1000000, burst = 1000000 }
"#;

impl Default for Setup {
    fn default() -> Self {
        Setup {
            mode: "classic",
            lease_ms: 1000,
            upstream_timeout_ms: 2000,
            redis: redis_url(),
            instances: 3,
            tickets: "[]",
            extra_accounts: 0,
            redis_tls_ca: None,
            limits: UNLIMITED,
            push: String::new(),
            sim_account: String::new(),
            sqlite: false,
            store_extra: String::new(),
        }
    }
}

pub struct Hub {
    pub child: Child,
    pub base: String,
    pub pid: u32,
    pub log: PathBuf,
}

pub struct Cluster {
    pub sim: wx_sim::RunningSim,
    pub hubs: Vec<Option<Hub>>,
    pub key: String,
    pub admin: String,
    pub http: reqwest::Client,
    pub prefix: String,
    pub redis: String,
    dir: PathBuf,
    config: PathBuf,
    started: usize,
}

pub fn extra_appid(n: usize) -> String {
    format!("wx2{n:015}")
}

fn world(extra: usize, account: &str) -> String {
    let mut more = String::new();
    for n in 0..extra {
        more.push_str(&format!(
            "\n[[accounts]]\nappid = \"{}\"\nsecret = \"extra-secret-{n}\"\n",
            extra_appid(n)
        ));
    }
    more + &format!(
        r#"
[clock]
start = {START}

[[accounts]]
appid = "{APPID}"
secret = "{SECRET}"
name = "Shared"
oauth_domains = ["127.0.0.1"]
daily_limits = {{ "/cgi-bin/user/info" = 100000000 }}
{account}

[[people]]
id = "alice"
nickname = "Alice"
follows = ["{APPID}"]

[[people]]
id = "bob"
nickname = "Bob"
consent = "allow"
"#
    )
}

fn extra_config(extra: usize) -> String {
    (0..extra)
        .map(|n| {
            format!(
                "\n[[accounts]]\nappid = \"{}\"\nsecret = \"extra-secret-{n}\"\ntickets = []\n",
                extra_appid(n)
            )
        })
        .collect()
}

impl Cluster {
    pub async fn start(s: Setup) -> Cluster {
        let world =
            wx_sim::World::from_toml_str(&world(s.extra_accounts, &s.sim_account)).expect("world");
        let sim = wx_sim::Simulator::spawn(world).await.expect("sim");
        let key = wxhub::auth::new_key();
        let admin = wxhub::auth::new_key();
        let prefix = unique("t");
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("wxhub.toml");
        let text = format!(
            r#"
listen = "127.0.0.1:0"
admin_key_sha256 = "{admin_hash}"
{store}
[upstream]
api_base = "{base}"
open_base = "{base}"
timeout_ms = {timeout}
[refresh]
tick_ms = 20
background = true
wait_for_token_ms = 5000
backoff_initial_secs = 1

{limits}

[oauth]
state_secret = "shared-state-secret-0123456789abcdef"

[[accounts]]
appid = "{APPID}"
secret = "{SECRET}"
token_mode = "{mode}"
tickets = {tickets}
oauth_return_origins = ["http://127.0.0.1:9"]
{push}

{extra}
[[clients]]
name = "shop"
key_sha256 = "{key_hash}"
apps = ["*"]
"#,
            admin_hash = hex::encode(wxhub::auth::hash_key(&admin)),
            key_hash = hex::encode(wxhub::auth::hash_key(&key)),
            store = if s.sqlite {
                format!("[store]\npath = \"{}\"", dir.join("wxhub.db").display())
            } else {
                format!(
                    "[store]\nkind = \"redis\"\nurl = \"{}\"\nprefix = \"{prefix}\"\nlease_ms = {}\n{}\n{}",
                    s.redis,
                    s.lease_ms,
                    s.store_extra,
                    s.redis_tls_ca
                        .as_ref()
                        .map(|p| format!("tls_ca_file = \"{}\"", p.display()))
                        .unwrap_or_default()
                )
            },
            push = s.push,
            base = sim.base_url(),
            timeout = s.upstream_timeout_ms,
            mode = s.mode,
            tickets = s.tickets,
            extra = extra_config(s.extra_accounts),
            limits = s.limits,
        );
        std::fs::write(&config, text).unwrap();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let mut c = Cluster {
            sim,
            hubs: Vec::new(),
            key,
            admin,
            http,
            prefix,
            redis: s.redis,
            dir,
            config,
            started: 0,
        };
        for _ in 0..s.instances {
            let h = c.spawn_hub().await;
            c.hubs.push(Some(h));
        }
        c
    }

    /// Starts one more `wxhub serve` and waits for its address.
    pub async fn spawn_hub(&mut self) -> Hub {
        self.started += 1;
        let log = self.dir.join(format!("hub-{}.log", self.started));
        let mut child = Command::new(env!("CARGO_BIN_EXE_wxhub"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .arg("--sim-clock")
            .arg(format!("{}/_sim/clock", self.sim.base_url()))
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("wxhub binary starts");
        let pid = child.id().expect("pid");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("hub did not start; log: {}", tail(&log)))
            .unwrap()
            .unwrap_or_else(|| panic!("hub exited; log: {}", tail(&log)));
        let base = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        // Keep draining stdout so the hub never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Hub {
            child,
            base,
            pid,
            log,
        }
    }

    pub fn live(&self) -> Vec<usize> {
        (0..self.hubs.len())
            .filter(|i| self.hubs[*i].is_some())
            .collect()
    }

    pub fn hub(&self, i: usize) -> &Hub {
        self.hubs[i].as_ref().expect("hub alive")
    }

    pub fn now(&self) -> i64 {
        self.sim.sim().clock.now()
    }

    /// Advances the virtual clock and waits until every live hub follows.
    pub async fn advance(&self, secs: i64) -> i64 {
        let now = self.sim.sim().clock.advance(secs);
        self.settle(now).await;
        now
    }

    pub async fn settle(&self, target: i64) {
        for i in self.live() {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(v) = self.apps(i).await
                    && v["now"].as_i64().unwrap_or(0) >= target
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "hub {i} does not follow the clock"
                );
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }
    }

    /// `GET /v1/apps` with the admin key.
    pub async fn apps(&self, i: usize) -> Option<Value> {
        let r = self
            .http
            .get(format!("{}/v1/apps", self.hub(i).base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// `GET path` on hub `i` with the admin key, as JSON.
    pub async fn admin_get(&self, i: usize, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.hub(i).base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn account(&self, i: usize) -> Value {
        self.apps(i).await.expect("hub answers")["apps"][0].clone()
    }

    /// The live hub that holds the refresh lease, if exactly one does.
    pub async fn owner(&self) -> Option<usize> {
        let mut owners = Vec::new();
        for i in self.live() {
            if self.account(i).await["refresh_owner"] == json!(true) {
                owners.push(i);
            }
        }
        assert!(owners.len() <= 1, "two owners at once: {owners:?}");
        owners.first().copied()
    }

    /// Waits for a live owner; returns it and how long it took.
    pub async fn wait_owner(&self, within: Duration) -> (usize, Duration) {
        let t = Instant::now();
        loop {
            if let Some(o) = self.owner().await {
                return (o, t.elapsed());
            }
            assert!(
                t.elapsed() < within,
                "no instance took the lease within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn token_from(&self, i: usize) -> (u16, Value) {
        self.token_of(i, APPID).await
    }

    /// `appid`'s access token from hub `i`.
    pub async fn token_of(&self, i: usize, appid: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}/v1/apps/{appid}/access_token", self.hub(i).base))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("hub answers");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn invalidate_at(&self, i: usize, token: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!(
                "{}/v1/apps/{APPID}/access_token/invalidate",
                self.hub(i).base
            ))
            .bearer_auth(&self.key)
            .json(&json!({ "access_token": token }))
            .send()
            .await
            .expect("hub answers");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn readyz(&self, i: usize) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}/readyz", self.hub(i).base))
            .send()
            .await
            .expect("hub answers");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn metrics(&self, i: usize) -> String {
        self.http
            .get(format!("{}/metrics", self.hub(i).base))
            .send()
            .await
            .expect("hub answers")
            .text()
            .await
            .unwrap()
    }

    /// errcode of a token-checked platform call made with `token`.
    pub async fn use_token(&self, token: &str) -> i64 {
        let openid = self.openid("alice").await;
        let v: Value = self
            .http
            .get(format!(
                "{}/cgi-bin/user/info?access_token={token}&openid={openid}",
                self.sim.base_url()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["errcode"].as_i64().unwrap_or(0)
    }

    pub async fn openid(&self, person: &str) -> String {
        let v: Value = self
            .http
            .get(format!(
                "{}/_sim/openid?appid={APPID}&person={person}",
                self.sim.base_url()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["openid"].as_str().unwrap().to_string()
    }

    /// Calls of one platform path so far.
    pub fn calls(&self, path: &str) -> u64 {
        self.sim.sim().stats()["apps"][APPID]["calls"][path]
            .as_u64()
            .unwrap_or(0)
    }

    /// Upstream token fetches so far (classic and stable).
    /// Another system fetches a classic token for the account; 301 s later
    /// the platform rejects the one the hubs hold.
    pub async fn kill_token_elsewhere(&self) {
        let v: Value = self
            .http
            .get(format!(
                "{}/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret={SECRET}",
                self.sim.base_url()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(v["access_token"].is_string(), "{v}");
        self.advance(301).await;
    }

    pub fn fetches(&self) -> u64 {
        let calls = &self.sim.sim().stats()["apps"][APPID]["calls"];
        calls["/cgi-bin/token"].as_u64().unwrap_or(0)
            + calls["/cgi-bin/stable_token"].as_u64().unwrap_or(0)
    }

    pub async fn sim_get(&self, path: &str) -> Value {
        json_of(self.http.get(format!("{}{}", self.sim.base_url(), path))).await
    }

    pub async fn sim_post(&self, path: &str, body: Value) -> Value {
        json_of(
            self.http
                .post(format!("{}{}", self.sim.base_url(), path))
                .json(&body),
        )
        .await
    }

    pub fn kill(&mut self, i: usize) {
        let mut hub = self.hubs[i].take().expect("hub alive");
        hub.child.start_kill().expect("SIGKILL");
        std::mem::drop(hub);
    }

    pub fn signal(&self, i: usize, sig: &str) {
        let ok = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.hub(i).pid.to_string())
            .status()
            .expect("kill(1)")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    pub fn log(&self, i: usize) -> String {
        tail(&self.hub(i).log)
    }

    /// Whether hub `i` ever logged `needle` (the whole file: a line can
    /// scroll out of [`Cluster::log`]'s tail under later warnings).
    pub fn logged(&self, i: usize, needle: &str) -> bool {
        std::fs::read_to_string(&self.hub(i).log).is_ok_and(|t| t.contains(needle))
    }

    /// Every hub process still running (none crashed).
    pub fn all_running(&mut self) -> bool {
        self.hubs
            .iter_mut()
            .flatten()
            .all(|h| matches!(h.child.try_wait(), Ok(None)))
    }
}

fn tail(path: &PathBuf) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for h in self.hubs.iter_mut().flatten() {
            let _ = h.child.start_kill();
        }
        // The keys of this run; other runs use other prefixes.
        if let Ok(client) = redis::Client::open(self.redis.as_str())
            && let Ok(mut conn) = client.get_connection()
        {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}:*", self.prefix))
                .query(&mut conn)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
            }
        }
        if std::env::var_os("WXHUB_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A port free on loopback now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on `port` (at most 10 s; `what` names it).
pub fn wait_port(port: u16, what: &str) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{what} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `redis-server` (or `$WXHUB_REDIS_SERVER`) with `args`.
pub fn spawn_redis_server<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Child {
    let bin = std::env::var("WXHUB_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    std::process::Command::new(&bin)
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin}: {e} (install redis-server or set WXHUB_REDIS_SERVER)"))
}

/// The JSON answer to a request the test expects to succeed.
async fn json_of(req: reqwest::RequestBuilder) -> Value {
    req.send().await.unwrap().json().await.unwrap()
}
