//! Time, injected: every refresh decision reads a [`Clock`], so tests share
//! the simulator's virtual clock and jump hours in one call.

#[cfg(feature = "dev")]
use std::sync::Arc;

/// Unix seconds.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}

/// The virtual clock of an in-process simulator (`wxhub dev`, tests).
#[cfg(feature = "dev")]
#[derive(Debug, Clone)]
pub struct SimClock(pub Arc<wx_sim::Sim>);

#[cfg(feature = "dev")]
impl Clock for SimClock {
    fn now(&self) -> i64 {
        self.0.clock.now()
    }
}

/// The virtual clock of a simulator in another process, followed over HTTP
/// (`wxhub serve --sim-clock URL`): several hub processes and one simulator
/// then share one virtual time, as the shared-mode tests need.
// Needs no simulator to compile, but a hub that can be told to follow
// another clock has no place in production.
#[cfg(feature = "dev")]
#[derive(Debug)]
pub struct RemoteSimClock {
    now: std::sync::atomic::AtomicI64,
}

#[cfg(feature = "dev")]
impl RemoteSimClock {
    /// Reads `url` (the simulator's `/_sim/clock`) once, then every 10 ms in
    /// the background for as long as the clock is in use.
    ///
    /// # Errors
    /// If the first read fails.
    pub async fn follow(url: &str) -> anyhow::Result<Arc<RemoteSimClock>> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(2))
            .build()?;
        let read = |http: reqwest::Client, url: String| async move {
            let v: serde_json::Value = http.get(&url).send().await?.json().await?;
            v["now"].as_i64().ok_or_else(|| {
                anyhow::anyhow!("--sim-clock: {url} did not answer {{\"now\": ...}}")
            })
        };
        let first = read(http.clone(), url.to_string()).await?;
        let clock = Arc::new(RemoteSimClock {
            now: std::sync::atomic::AtomicI64::new(first),
        });
        let weak = Arc::downgrade(&clock);
        let url = url.to_string();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                let Some(clock) = weak.upgrade() else { return };
                if let Ok(now) = read(http.clone(), url.clone()).await {
                    // Virtual time never goes back under a running hub.
                    clock
                        .now
                        .fetch_max(now, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        Ok(clock)
    }
}

#[cfg(feature = "dev")]
impl Clock for RemoteSimClock {
    fn now(&self) -> i64 {
        self.now.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Beijing-time day number: the platform's quota day.
pub fn beijing_day(now: i64) -> i64 {
    (now + 8 * 3600).div_euclid(86400)
}
