//! Headless Chromium over chromedriver: the few W3C WebDriver commands the
//! browser tests use. One file for every test binary that drives a browser
//! (wx-sim's external tests, wxhub's browser tests include it by path); the
//! tool lookup and the loopback client come from `support.rs` beside it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support;

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long a page may take to appear after a click.
const PAGE_WAIT: Duration = Duration::from_secs(20);

/// One browser at a time: two Chromiums on two cores only slow each other.
pub static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// chromedriver with one Chromium session in a fresh profile. Dropping it
/// deletes the session (closing Chromium), stops chromedriver and removes the
/// profile, also when a test panics half-way.
pub struct Browser {
    child: Child,
    base: String,
    session: Option<String>,
    http: reqwest::Client,
    dir: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a session.
    /// Panics when Chromium or chromedriver is missing.
    pub async fn start() -> Browser {
        let (chromium, chromedriver) = support::chromium_and_driver();
        let dir = std::env::temp_dir().join(format!(
            "wxhub-chromium-{}-{}",
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
        let child = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let mut browser = Browser {
            child,
            base: format!("http://127.0.0.1:{port}"),
            session: None,
            http: support::http(),
            dir,
        };
        browser.wait_ready().await;
        browser.new_session(&chromium).await;
        browser
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
            if let Ok(resp) = self.http.get(format!("{}/status", self.base)).send().await
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
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--no-first-run".into(),
            "--disable-quic".into(),
            "--no-proxy-server".into(),
            "--disable-dev-shm-usage".into(),
            // A phone-ish window, the size a WeChat webview would have.
            "--window-size=480,800".into(),
            format!("--user-data-dir={}", self.dir.join("profile").display()),
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

    /// One WebDriver command on the session; returns `value`, panics on a
    /// WebDriver error.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let path = match &self.session {
            Some(id) => format!("/session/{id}{path}"),
            None => path.to_string(),
        };
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
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

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    pub async fn current_url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Every element matching `css` on the current page, possibly none.
    pub async fn find_all(&self, css: &str) -> Vec<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_array()
            .unwrap_or_else(|| panic!("elements for {css}: {v}"))
            .iter()
            .map(|e| {
                e[ELEMENT]
                    .as_str()
                    .unwrap_or_else(|| panic!("no element reference for {css} in {e}"))
                    .to_string()
            })
            .collect()
    }

    /// Polls until exactly one element matches `css` (the browser may still
    /// be on the previous page or between redirects): real sleeps, bounded.
    pub async fn wait_for(&self, css: &str) -> String {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let mut found = self.find_all(css).await;
            assert!(found.len() <= 1, "{css} matches {} elements", found.len());
            if let Some(e) = found.pop() {
                return e;
            }
            if Instant::now() >= deadline {
                panic!(
                    "no {css} within {PAGE_WAIT:?}; the browser is at {}, showing:\n{}",
                    self.current_url().await,
                    self.source().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the browser's URL until it starts with `prefix`.
    pub async fn wait_for_url(&self, prefix: &str) -> String {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let now = self.current_url().await;
            if now.starts_with(prefix) {
                return now;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the browser did not reach {prefix} within {PAGE_WAIT:?}; it is at {now}, showing:\n{}",
                    self.source().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn text(&self, element: &str) -> String {
        self.call(
            reqwest::Method::GET,
            &format!("/element/{element}/text"),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    pub async fn click(&self, element: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Types `text` into a form field.
    pub async fn type_into(&self, element: &str, text: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Resizes the window (CSS pixels).
    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    /// Saves a PNG of the viewport as `$TMPDIR/wxhub-browser/{name}.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64_decode(v.as_str().expect("screenshot is a base64 string"));
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "screenshot is a PNG");
        let dir = std::env::temp_dir().join("wxhub-browser");
        std::fs::create_dir_all(&dir).expect("create the screenshot directory");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// Deletes the session, which makes chromedriver close Chromium.
    pub async fn quit(&mut self) {
        if let Some(id) = self.session.take() {
            let _ = self
                .http
                .delete(format!("{}/session/{id}", self.base))
                .send()
                .await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            // Drop may run on a runtime worker, where nothing may block on a
            // future: a thread with a runtime of its own sends the DELETE.
            let url = format!("{}/session/{id}", self.base);
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async {
                    support::http()
                        .delete(url)
                        .timeout(Duration::from_secs(15))
                        .send()
                        .await
                        .ok()
                })
            })
            .join();
        }
        // SIGTERM first, so chromedriver can close a browser it still holds;
        // then SIGKILL whatever is left. Only this child, by its pid.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && !matches!(self.child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Standard base64 with padding, as WebDriver sends screenshots.
fn base64_decode(s: &str) -> Vec<u8> {
    let sextet = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {:?}", c as char),
        }
    };
    let clean: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | (sextet(c) << (18 - 6 * i)));
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}
