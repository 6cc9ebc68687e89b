//! A stateful simulator of the WeChat Official Account platform.
//!
//! It reproduces the rules that break real integrations (`docs/platform.md`
//! §9): a new classic token kills the previous one after a grace, stable
//! tokens rotate only in their last 300 s, daily and per-minute quotas, the
//! IP whitelist, single-use OAuth codes, the 48001 scope rule and its quirk,
//! the consent page, and push delivery with retries. Time is virtual. Every
//! § number in this crate refers to `docs/platform.md`.
//!
//! # Layout
//! - [`world`]: the TOML world file (accounts, people, settings, quirks).
//! - [`clock`]: the virtual clock and the Beijing quota day.
//! - `state`: the platform's state and rules as synchronous methods.
//! - `api`: `/cgi-bin/*` and `/sns/*` handlers.
//! - `oauth`: `/connect/*` pages: authorize, qrconnect, consent.
//! - [`push`]: push delivery and the simulator's own message crypto.
//! - [`faults`]: fault injection.
//! - `control`: the `/_sim/*` control API.
//! - `component`: the third-party platform (第三方平台), its pushes and its
//!   control API (`component-platform.md`).
//!
//! This crate shares no wire types with `wx-api`, so one side's mistake
//! cannot hide the other's: wx-api's tests run its client against this
//! simulator, and both crates check their crypto against the published
//! vectors (`docs/platform.md` §8.4).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let sim = wx_sim::Simulator::spawn(wx_sim::World::demo()).await?;
//! println!("simulator at {}", sim.base_url());
//! sim.sim().clock.advance(7200);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

mod api;
pub mod clock;
mod component;
mod control;
mod errors;
pub mod faults;
mod ids;
mod oauth;
pub mod push;
mod state;
pub mod world;

pub use clock::Clock;
pub use state::{AppStats, SimState, TokenKind, TokensIssued};
pub use world::{World, WorldError};

/// The simulated platform: clock, state, faults, consent pages and pushes.
pub struct Sim {
    /// The virtual clock every rule reads.
    pub clock: Clock,
    state: Mutex<SimState>,
    pending: Mutex<HashMap<String, oauth::Pending>>,
    faults: Mutex<Vec<faults::Fault>>,
    // Read on every call without the lock, so an idle fault list costs nothing.
    fault_count: AtomicUsize,
    deliveries: Mutex<Vec<push::Delivery>>,
    next_id: AtomicU64,
    http: reqwest::Client,
    initial: World,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.clock.now())
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// A simulator for `world`, not yet serving.
    pub fn new(world: World) -> Arc<Sim> {
        let clock = Clock::new(&world.clock);
        let state = SimState::new(world.clone(), clock.now());
        Arc::new(Sim {
            clock,
            state: Mutex::new(state),
            pending: Mutex::new(HashMap::new()),
            faults: Mutex::new(Vec::new()),
            fault_count: AtomicUsize::new(0),
            deliveries: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            initial: world,
        })
    }

    /// The state lock. A poisoned lock is taken over: every mutation is a
    /// few map operations that leave the state consistent even if a handler
    /// panicked between them.
    pub(crate) fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Per-appid stats, as served by `GET /_sim/stats`.
    pub fn stats(&self) -> serde_json::Value {
        self.lock().stats()
    }

    /// Back to the world as loaded: state, faults, pages, push log; the clock
    /// returns to `[clock] start` when the world sets one.
    pub fn reset(&self) {
        if let Some(start) = self.initial.clock.start {
            self.clock.set(start);
        }
        *self.lock() = SimState::new(self.initial.clone(), self.clock.now());
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.fault_count
            .store(0, std::sync::atomic::Ordering::Relaxed);
        self.deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The full router: platform paths (with fault injection) and `/_sim/*`.
    pub fn router(self: &Arc<Self>) -> Router {
        let platform = api::routes()
            .merge(oauth::routes())
            .merge(component::api::routes())
            .merge(component::page::routes())
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                faults::platform_layer,
            ));
        platform
            .merge(control::routes())
            .route("/", axum::routing::get(index))
            .with_state(self.clone())
    }
}

async fn index() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("index.html"))
}

/// Starts simulators.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Serves `world` on `127.0.0.1:0`.
    ///
    /// # Errors
    /// If the port cannot be bound.
    pub async fn spawn(world: World) -> std::io::Result<RunningSim> {
        Self::bind(world, "127.0.0.1:0".parse().expect("literal address")).await
    }

    /// Serves `world` on `addr`.
    ///
    /// # Errors
    /// If the address cannot be bound.
    pub async fn bind(world: World, addr: SocketAddr) -> std::io::Result<RunningSim> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self::serve(Sim::new(world), listener))
    }

    /// Serves an existing simulator on a bound listener.
    pub fn serve(sim: Arc<Sim>, listener: TcpListener) -> RunningSim {
        let addr = listener
            .local_addr()
            .expect("bound listener has an address");
        let (tx, rx) = watch::channel(false);
        let router = sim.router();
        let pusher = tokio::spawn(component::pusher::run(sim.clone(), rx.clone()));
        let task = tokio::spawn(serve_loop(listener, router, rx));
        RunningSim {
            addr,
            sim,
            shutdown: tx,
            task,
            pusher,
        }
    }
}

/// A simulator serving over HTTP. Dropping it stops the server.
#[derive(Debug)]
pub struct RunningSim {
    addr: SocketAddr,
    sim: Arc<Sim>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// The components' regular verify-ticket pushes.
    pusher: tokio::task::JoinHandle<()>,
}

impl RunningSim {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: both the API host and the open host.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The simulator, for in-process control.
    pub fn sim(&self) -> &Arc<Sim> {
        &self.sim
    }

    /// Stops accepting connections and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let _ = (&mut self.task).await;
        let _ = (&mut self.pusher).await;
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.task.abort();
        self.pusher.abort();
    }
}

/// An error that makes hyper close the connection without a response: how
/// the `drop` fault looks to a client.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for Dropped {}

/// Our own accept loop rather than `axum::serve`: a handler must be able to
/// drop the connection without answering, and the peer address is needed
/// for the IP whitelist.
async fn serve_loop(listener: TcpListener, router: Router, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "wxsim accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let router = router.clone();
                async move {
                    let resp = router
                        .oneshot(req)
                        .await
                        .unwrap_or_else(|never| match never {});
                    if resp.extensions().get::<faults::DropConnection>().is_some() {
                        return Err(Dropped);
                    }
                    Ok(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
