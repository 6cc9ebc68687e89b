//! Headless Chromium, driven by chromedriver over the W3C WebDriver HTTP
//! protocol, clicks the simulator's consent page.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One browser at a time: two Chromiums on two cores only slow each other.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// chromedriver, its browser session and its profile directory. Dropping it
/// deletes the session, stops chromedriver and removes the profile, also
/// when a test panics half-way.
struct Driver {
    child: Child,
    addr: SocketAddr,
    base: String,
    session: Option<String>,
    http: reqwest::Client,
    dir: PathBuf,
}

impl Driver {
    async fn start(chromium: &Path, chromedriver: &Path) -> Driver {
        let dir = std::env::temp_dir().join(format!(
            "wxsim-chromium-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        std::fs::create_dir_all(dir.join("profile")).expect("create the profile directory");
        // A free loopback port: bind, read, release, hand to chromedriver.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = std::fs::File::create(dir.join("chromedriver.log")).expect("log file");
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut driver = Driver {
            child,
            addr,
            base: format!("http://{addr}"),
            session: None,
            http: http(),
            dir,
        };
        driver.wait_ready().await;
        driver.new_session(chromium).await;
        driver
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("chromedriver.log")).unwrap_or_default()
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("chromedriver exited with {status}:\n{}", self.log());
            }
            let status = self.http.get(format!("{}/status", self.base)).send();
            if let Ok(resp) = status.await
                && let Ok(v) = resp.json::<Value>().await
                && v["value"]["ready"] == true
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready within 30 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn new_session(&mut self, chromium: &Path) {
        let profile = self.dir.join("profile");
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--no-first-run".into(),
            "--disable-quic".into(),
            // Everything here is on loopback: never ask a proxy from the
            // environment, and do not depend on the size of /dev/shm.
            "--no-proxy-server".into(),
            "--disable-dev-shm-usage".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {"binary": chromium.display().to_string(), "args": args},
        }}});
        let v = self
            .call(reqwest::Method::POST, "/session", Some(caps))
            .await;
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {v}"))
            .to_string();
        self.session = Some(id);
    }

    /// One WebDriver command; returns `value`, panics on a WebDriver error.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()));
        let status = resp.status();
        let v: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON: {e}"));
        assert!(
            status.is_success(),
            "{method} {path}: HTTP {status}: {}\n{}",
            v["value"],
            self.log()
        );
        v["value"].clone()
    }

    fn session_path(&self, rest: &str) -> String {
        format!(
            "/session/{}{rest}",
            self.session.as_deref().expect("session")
        )
    }

    async fn goto(&self, url: &str) {
        self.call(
            reqwest::Method::POST,
            &self.session_path("/url"),
            Some(json!({ "url": url })),
        )
        .await;
    }

    async fn current_url(&self) -> String {
        self.call(reqwest::Method::GET, &self.session_path("/url"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                &self.session_path("/element"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element reference for {css} in {v}"))
            .to_string()
    }

    async fn text(&self, element: &str) -> String {
        self.call(
            reqwest::Method::GET,
            &self.session_path(&format!("/element/{element}/text")),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    async fn click(&self, element: &str) {
        self.call(
            reqwest::Method::POST,
            &self.session_path(&format!("/element/{element}/click")),
            Some(json!({})),
        )
        .await;
    }

    /// Polls the browser's URL until it starts with `prefix`: real sleeps,
    /// bounded, while the browser navigates (no virtual time passes).
    async fn wait_for_url(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.current_url().await;
            if now.starts_with(prefix) {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "the browser did not reach {prefix} within 20 s; it is at {now}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Deletes the session, which makes chromedriver close Chromium.
    async fn quit(&mut self) {
        if let Some(id) = self.session.take() {
            let _ = self
                .http
                .delete(format!("{}/session/{id}", self.base))
                .send()
                .await;
        }
    }

    /// The same as [`Driver::quit`] without a runtime, for `Drop`: a bare
    /// HTTP/1.1 request over a blocking socket, bounded by timeouts.
    fn quit_blocking(&mut self) {
        let Some(id) = self.session.take() else {
            return;
        };
        let Ok(mut s) = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)) else {
            return;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(15)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        let req = format!(
            "DELETE /session/{id} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        );
        if s.write_all(req.as_bytes()).is_err() {
            return;
        }
        // chromedriver answers once the browser is closed, but keeps the
        // connection open despite `Connection: close`: stop at the headers.
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n @ 1..) = s.read(&mut buf) {
            seen.extend_from_slice(&buf[..n]);
            if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.quit_blocking();
        // SIGTERM first, so chromedriver can close a browser it still holds;
        // then SIGKILL whatever is left. Only this child, by its pid.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Opens the consent page for Alice (consent "ask"), checks it, clicks
/// `button`, and returns the simulator, the browser's final URL and the
/// requests the landing page received.
async fn click_consent(button: &str, state: &str) -> (Sim, String, Vec<String>) {
    let (chromium, chromedriver) = chromium_and_driver();
    let _one = ONE_BROWSER.lock().await;
    let sim = Sim::start().await;
    let (landing, seen) = landing_server().await;
    let redirect_uri = format!("{landing}/landing");
    let authorize = sim.url(&format!(
        "/connect/oauth2/authorize?appid={APPID}&redirect_uri={}&response_type=code&scope=snsapi_userinfo&state={state}&wxsim_person={ALICE}#wechat_redirect",
        url_encode(&redirect_uri)
    ));

    let mut driver = Driver::start(&chromium, &chromedriver).await;
    driver.goto(&authorize).await;
    let page = driver.current_url().await;
    assert!(
        page.starts_with(&sim.url("/connect/oauth2/authorize")),
        "the consent page is shown, not a redirect: {page}"
    );
    let person = driver.find("#person").await;
    assert_eq!(driver.text(&person).await, ALICE_NICKNAME);
    let account = driver.find("#account").await;
    assert_eq!(driver.text(&account).await, "External Clients Account");
    assert!(
        seen.lock().expect("landings").is_empty(),
        "nothing lands before the click"
    );

    let target = driver.find(button).await;
    driver.click(&target).await;
    let landed = driver.wait_for_url(&redirect_uri).await;
    // The page has loaded, so the landing server has seen the request.
    let requests = seen.lock().expect("landings").clone();
    driver.quit().await;
    drop(driver);
    (sim, landed, requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_allow_on_the_consent_page_lands_with_a_code_for_alice() {
    if skipped("chromium_allow_on_the_consent_page_lands_with_a_code_for_alice") {
        return;
    }
    let state = "chromiumAllow1";
    let (sim, landed, requests) = click_consent("#allow", state).await;

    assert_eq!(requests.len(), 1, "one landing: {requests:?}");
    let request = &requests[0];
    assert!(request.starts_with("/landing?"), "{request}");
    assert_eq!(query_param(request, "state").as_deref(), Some(state));
    let code = query_param(request, "code").unwrap_or_else(|| panic!("code in {request}"));
    assert_eq!(query_param(&landed, "code").as_deref(), Some(code.as_str()));
    assert_eq!(query_param(&landed, "state").as_deref(), Some(state));

    let grant = exchange_for_openid(&sim, &code).await;
    assert_eq!(grant["openid"], sim.openid(ALICE).await.as_str(), "{grant}");
    assert_eq!(grant["scope"], "snsapi_userinfo", "{grant}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_deny_on_the_consent_page_lands_with_the_state_only() {
    if skipped("chromium_deny_on_the_consent_page_lands_with_the_state_only") {
        return;
    }
    let state = "chromiumDeny2";
    let (sim, landed, requests) = click_consent("#deny", state).await;

    assert_eq!(requests.len(), 1, "one landing: {requests:?}");
    let request = &requests[0];
    assert!(request.starts_with("/landing?"), "{request}");
    assert_eq!(query_param(request, "state").as_deref(), Some(state));
    assert_eq!(query_param(request, "code"), None, "{request}");
    assert_eq!(query_param(&landed, "state").as_deref(), Some(state));
    assert_eq!(query_param(&landed, "code"), None, "{landed}");
    let stats = sim.get("/_sim/stats").await;
    assert_eq!(stats["apps"][APPID]["codes_issued"], 0, "{stats}");
}
