//! A subscriber for the push tests: a real HTTP server on 127.0.0.1 that
//! checks the hub's signature (`X-Wxhub-Signature`) and records what it got.
//! Shared by the API and the shared-mode tests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

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
    // Requests being answered: a test that kills a hub waits for none, so
    // an attempt sent before the kill is not answered under a later mode.
    answering: AtomicUsize,
}

/// Counts a request as being answered until it is dropped.
struct Answering<'a>(&'a AtomicUsize);

impl<'a> Answering<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Answering(n)
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
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
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    want == h("x-wxhub-signature")
}

async fn handle(
    State(s): State<Arc<SubState>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let _answering = Answering::new(&s.answering);
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
            answering: AtomicUsize::new(0),
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

    /// Waits (real time, at most 10 s) until at least `n` requests were
    /// answered, then until none is being answered and none arrived for
    /// `quiet`: with the virtual clock standing still, the hub has nothing
    /// more to send until it moves, so a hub killed now has no attempt on
    /// the wire whose answer it never saw.
    #[allow(
        dead_code,
        reason = "the shared-mode kill tests use it; the API tests kill no hub"
    )]
    pub async fn wait_quiet(&self, n: usize, quiet: Duration) {
        let t = Instant::now();
        let mut seen = (usize::MAX, Instant::now());
        loop {
            let answered = self.all().len();
            let busy = self.state.answering.load(Ordering::SeqCst) > 0;
            if answered != seen.0 || busy {
                seen = (answered, Instant::now());
            } else if answered >= n && seen.1.elapsed() >= quiet {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{answered} of at least {n} requests answered, busy: {busy}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits (real time, at most 10 s) until `n` deliveries were accepted.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        self.wait_for_within(n, Duration::from_secs(10)).await
    }

    /// Waits (real time, at most `limit`) until `n` deliveries were accepted.
    pub async fn wait_for_within(&self, n: usize, limit: Duration) -> Vec<Received> {
        let t = Instant::now();
        loop {
            let d = self.delivered();
            if d.len() >= n {
                return d;
            }
            assert!(
                t.elapsed() < limit,
                "{} of {n} deliveries arrived: {:?}",
                d.len(),
                d.iter().map(|r| &r.body["msg_type"]).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
