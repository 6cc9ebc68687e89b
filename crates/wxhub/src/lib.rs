//! wxhub: the central control server (中控服务器) for WeChat Official
//! Accounts. It alone holds each account's AppSecret, keeps the access token
//! and tickets fresh, and serves them to business servers.
//!
//! # Layout
//! - [`config`]: the TOML configuration with `WXHUB__*` overrides.
//! - [`clock`]: injected time (the system's; with `dev`, the simulator's
//!   virtual clock).
//! - [`store`]: where state outlives a process: the embedded SQLite file or Redis.
//! - [`seal`]: secrets at rest: tokens, tickets, grants and AppSecrets
//!   sealed (XChaCha20-Poly1305) under `store.encryption_key`, key checks
//!   and rotation.
//! - [`shared`]: several instances on one Redis, one refresher per account;
//!   `shared::note` is the pub/sub note format.
//! - [`credentials`]: tokens and tickets: refresh ahead of expiry,
//!   single-flight fetches, compare-and-refresh, backoff; reports confirmed
//!   with the platform before anything is refreshed.
//! - [`directory`]: accounts and clients added, changed and removed at run
//!   time through the admin API, audited, and applied on every instance.
//! - [`budget`]: what callers' reports may make the hub fetch.
//! - [`limits`]: rate limits per client key and per client IP.
//! - [`app`]: building and running the server; [`supervise`] watches its
//!   background tasks; [`server`] is the HTTP accept loop (connection
//!   limits and timeouts); [`router`] assembles routes and the edge
//!   middleware; `routes/*` are the handlers; [`extract`] parses requests
//!   into clear 4xx errors; [`auth`] checks client keys; [`error`] is the
//!   API's error type; [`metrics`] the Prometheus registry.
//! - [`upstream`]: the pooled HTTP client to the platform, shared by the
//!   proxy and wx-api's calls.
//! - [`oauth`]: web authorization: signed states, grants, scope escalation,
//!   hand-over tickets.
//! - [`push`]: the push gateway: the account's message URL, verified,
//!   deduplicated, written before it is answered, fanned out to subscribers.
//! - [`cli`]: the `wxhub` command line.
//! - [`telemetry`]: logging set-up (text or JSON).
//!
//! The design is in docs/ARCHITECTURE.md, the credential lifecycle in
//! docs/lifecycle.md, the platform's behaviour in docs/platform.md.
//!
//! With the `dev` feature (on by default; production builds use
//! `--no-default-features` and carry no simulator):
//! - `dev`: `wxhub dev`, the simulator and the hub together on loopback
//!   with a demo account.
//! - `demo`: the demo business page `wxhub dev` serves.

pub mod app;
pub mod auth;
pub mod budget;
pub mod cli;
pub mod clock;
pub mod component;
pub mod config;
pub mod console;
pub mod credentials;
#[cfg(feature = "dev")]
pub mod demo;
#[cfg(feature = "dev")]
pub mod dev;
pub mod directory;
pub mod error;
pub mod extract;
pub mod history;
pub mod limits;
pub mod metrics;
pub mod oauth;
pub mod push;
pub mod router;
pub mod routes;
pub mod seal;
pub mod server;
pub mod shared;
pub mod store;
pub mod supervise;
pub mod telemetry;
pub mod upstream;

pub use app::{App, Application, RunningHub};
