//! wxhub: the central control server (中控服务器) for WeChat Official
//! Accounts.
//!
//! # Layout
//! - [`cli`]: the command line (`wxhub sim`, and the server commands as they land).
//! - [`telemetry`]: logging set-up shared by the binary and the tests.

pub mod cli;
pub mod telemetry;
