//! Tests of the Redis side on a real Redis (`WXHUB_TEST_REDIS`, default
//! `redis://127.0.0.1:6379`), each under its own key prefix. Kept out of the
//! library's unit tests so `cargo test --lib` needs nothing running.

mod leases;
mod seal;
mod store;

/// The Redis the tests use.
pub fn url() -> String {
    std::env::var("WXHUB_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix no other test (or run) uses.
pub fn unique_prefix(what: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "wxhub-test-{what}-{}-{}-{}",
        std::process::id(),
        rand_suffix(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}
