//! Logging set-up, shared by the binary and the tests.

use tracing_subscriber::EnvFilter;

/// Installs a text subscriber writing to stderr, filtered by `RUST_LOG` or
/// `default_filter`. Safe to call more than once (later calls do nothing).
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
