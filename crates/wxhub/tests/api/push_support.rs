//! For the push tests: a real subscriber (an HTTP server on 127.0.0.1 that
//! checks the hub's signature and records what it got), the hub and
//! simulator configured for pushes, and waiting helpers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::*;

pub const PUSH_TOKEN: &str = "pushtoken0123456789";
/// The official sample key (docs/platform.md §8.4).
pub const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
pub const AES_KEY_2: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
pub const SUB_SECRET: &str = "subscriber-secret-canary-7f3a9c";

/// What the subscriber answers.
#[derive(Clone, Debug)]
pub enum Mode {
    /// 200 `ok`.
    Up,
    /// This status, at once.
    Down(u16),
    /// 200 with this body, after this long.
    Slow(Duration, String),
}

#[derive(Clone, Debug)]
pub struct Received {
    pub delivery_id: String,
    pub body: Value,
    /// The status it answered: only 2xx count as delivered.
    pub status: u16,
}

struct SubState {
    mode: Mutex<Mode>,
    got: Mutex<Vec<Received>>,
    bad_signatures: Mutex<u32>,
}

/// A subscriber: a real HTTP server.
pub struct Subscriber {
    pub addr: SocketAddr,
    state: Arc<SubState>,
    _task: tokio::task::JoinHandle<()>,
}

fn verify(headers: &HeaderMap, body: &[u8]) -> bool {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SUB_SECRET.as_bytes()).unwrap();
    mac.update(h("x-wxhub-timestamp").as_bytes());
    mac.update(b".");
    mac.update(body);
    let want = format!("sha256={}", hex(&mac.finalize().into_bytes()));
    want == h("x-wxhub-signature")
}

async fn handle(
    State(s): State<Arc<SubState>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    if !verify(&headers, &body) {
        *s.bad_signatures.lock().unwrap() += 1;
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let mode = s.mode.lock().unwrap().clone();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let record = |status: u16| Received {
        delivery_id: headers
            .get("x-wxhub-delivery")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        body: v.clone(),
        status,
    };
    match mode {
        Mode::Up => {
            s.got.lock().unwrap().push(record(200));
            (StatusCode::OK, "ok".to_string()).into_response()
        }
        Mode::Down(code) => {
            s.got.lock().unwrap().push(record(code));
            (StatusCode::from_u16(code).unwrap(), "down".to_string()).into_response()
        }
        Mode::Slow(d, reply) => {
            tokio::time::sleep(d).await;
            s.got.lock().unwrap().push(record(200));
            (StatusCode::OK, reply).into_response()
        }
    }
}

impl Subscriber {
    pub async fn start(mode: Mode) -> Subscriber {
        let state = Arc::new(SubState {
            mode: Mutex::new(mode),
            got: Mutex::new(Vec::new()),
            bad_signatures: Mutex::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(handle))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Subscriber {
            addr,
            state,
            _task: task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn set(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Every request it answered, in arrival order.
    pub fn all(&self) -> Vec<Received> {
        self.state.got.lock().unwrap().clone()
    }

    /// The deliveries it accepted (answered 2xx), in arrival order.
    pub fn delivered(&self) -> Vec<Received> {
        self.all().into_iter().filter(|r| r.status < 300).collect()
    }

    pub fn bad_signatures(&self) -> u32 {
        *self.state.bad_signatures.lock().unwrap()
    }

    /// Waits (real time, at most 10 s) until `n` deliveries were accepted.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let t = Instant::now();
        loop {
            let d = self.delivered();
            if d.len() >= n {
                return d;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{} of {n} deliveries arrived: {:?}",
                d.len(),
                d.iter().map(|r| &r.body["msg_type"]).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// `[accounts.push]` for APPID with one subscriber per `(name, url, extra)`.
pub fn push_section(mode: &str, extra: &str, subs: &[(&str, String, &str)]) -> String {
    let key = if mode == "plain" {
        String::new()
    } else {
        format!("encoding_aes_key = \"{AES_KEY}\"\n")
    };
    let mut s =
        format!("[accounts.push]\ntoken = \"{PUSH_TOKEN}\"\nmode = \"{mode}\"\n{key}{extra}\n");
    for (name, url, more) in subs {
        s.push_str(&format!(
            "[[accounts.push.subscribers]]\nname = \"{name}\"\nurl = \"{url}\"\nsecret = \"{SUB_SECRET}\"\ntimeout_ms = 2000\n{more}\n"
        ));
    }
    s
}

/// The simulator's account, pushing to the hub in `mode` with `key`.
pub fn sim_account(mode: &str, key: &str, settings: &str) -> String {
    let w = world(&format!(
        "original_id = \"gh_0123456789ab\"\npush_token = \"{PUSH_TOKEN}\"\nencoding_aes_key = \"{key}\"\npush_mode = \"{mode}\"\n"
    ));
    format!("{settings}\n{w}")
}

/// Worker settings for tests: quick ticks, short backoff.
pub const FAST: &str = "\n[push]\ntick_ms = 20\nbackoff_initial_secs = 5\nbackoff_max_secs = 600\n";

impl TestHub {
    /// Points the simulator's push URL of APPID at this hub.
    pub async fn point_push_here(&self) {
        let v = self
            .sim_post(
                &format!("/_sim/accounts/{APPID}"),
                json!({"push_url": self.url(&format!("/push/{APPID}"))}),
            )
            .await;
        assert_eq!(v["ok"], true, "{v}");
    }

    /// A person's action through the simulator; waits for the platform's
    /// delivery (all attempts) and returns it.
    pub async fn act(&self, person: &str, action: &str, body: Value) -> Value {
        let mut body = body;
        body["appid"] = json!(APPID);
        body["wait"] = json!(true);
        let v = self
            .sim_post(&format!("/_sim/people/{person}/{action}"), body)
            .await;
        assert!(v["delivery"].is_object(), "{action}: {v}");
        v
    }

    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn admin_post(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub fn push_metric(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        self.hub().app().metrics.counter(name, labels)
    }

    /// Advances the virtual clock in steps, letting the worker run at each.
    pub async fn advance_slowly(&self, total: i64, step: i64) {
        let mut left = total;
        while left > 0 {
            let s = step.min(left);
            self.advance(s);
            left -= s;
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    }
}

/// The attempt the simulator recorded last for a delivery.
pub fn last_attempt(delivery: &Value) -> Value {
    delivery["delivery"]["attempts"]
        .as_array()
        .and_then(|a| a.last().cloned())
        .unwrap_or(Value::Null)
}
