//! Logging set-up for the binary: one line per event on stderr, as text or
//! JSON, filtered by `RUST_LOG`. Tests leave logging off, or install their
//! own subscriber.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; coloured only on a terminal.
    Text,
    /// One JSON object per line, with the event's fields at the top level.
    Json,
}

/// Installs the subscriber, filtered by `RUST_LOG` or `default_filter`.
/// Colours only when stderr is a terminal and `NO_COLOR` is unset, so a log
/// file or a collector never gets escape codes. Safe to call more than once
/// (later calls do nothing).
pub fn init(default_filter: &str, format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(colour()).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
