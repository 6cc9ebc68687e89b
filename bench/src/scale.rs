//! Many accounts on one instance: `wxhub serve` as its own process (so its
//! memory is its own), on SQLite, against the simulator in this process on
//! a virtual clock the hub follows (`--sim-clock`).
//!
//! For each size: the time until every token is held from a cold start
//! (nothing stored), the hub's RSS then and after a whole refresh cycle,
//! its idle CPU, the size of `/metrics`, its `GET access_token` rate against
//! a one-account hub run side by side, and the worst lateness when every
//! token comes due at once: all were fetched at the same virtual second,
//! then the virtual clock is moved to their refresh window and driven at
//! real pace (one virtual second per second), so the hub's pacing shows as
//! lateness in virtual seconds.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::AsyncBufReadExt;

use crate::{Round, load, median};

const START: i64 = 1_700_000_000;

/// One hub process.
pub(crate) struct Hub {
    // Killed when dropped.
    _child: tokio::process::Child,
    addr: std::net::SocketAddr,
    key: String,
    admin: String,
    pid: u32,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn appid(i: usize) -> String {
    format!("wx{i:016x}")
}

pub(crate) fn world(n: usize) -> anyhow::Result<wx_sim::World> {
    let mut text = format!("[clock]\nstart = {START}\n");
    for i in 0..n {
        let a = appid(i);
        text.push_str(&format!(
            "[[accounts]]\nappid = \"{a}\"\nsecret = \"secret-{a}\"\n"
        ));
    }
    Ok(wx_sim::World::from_toml_str(&text)?)
}

impl Hub {
    async fn start(bin: &Path, sim: &str, n: usize) -> anyhow::Result<Hub> {
        Hub::start_on(bin, sim, n, None).await
    }

    /// A hub on SQLite in its own directory, or on `store` (a `[store]`
    /// section's lines) when given.
    pub(crate) async fn start_on(
        bin: &Path,
        sim: &str,
        n: usize,
        store: Option<&str>,
    ) -> anyhow::Result<Hub> {
        let dir = std::env::temp_dir().join(format!(
            "wxhub-scale-{}-{n}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir)?;
        let dir = TempDir(dir);
        let key = wxhub::auth::new_key();
        let admin = wxhub::auth::new_key();
        let hex = |k: &str| {
            wxhub::auth::hash_key(k)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let mut config = format!(
            "listen = \"127.0.0.1:0\"\nadmin_key_sha256 = \"{}\"\n\
             [store]\n{}\n\
             [upstream]\napi_base = \"{sim}\"\nopen_base = \"{sim}\"\n\
             [refresh]\ntick_ms = 200\n\
             [limits]\nproxy = {{ per_second = 1000000, burst = 1000000 }}\n\
             [[clients]]\nname = \"bench\"\nkey_sha256 = \"{}\"\napps = [\"*\"]\n",
            hex(&admin),
            store.map_or_else(
                || format!("path = \"{}\"", dir.0.join("wxhub.db").display()),
                str::to_string
            ),
            hex(&key),
        );
        for i in 0..n {
            let a = appid(i);
            config.push_str(&format!(
                "[[accounts]]\nappid = \"{a}\"\nsecret = \"secret-{a}\"\ntickets = []\n"
            ));
        }
        let path = dir.0.join("wxhub.toml");
        std::fs::write(&path, config)?;
        let mut child = tokio::process::Command::new(bin)
            .args(["serve", "--config"])
            .arg(&path)
            .args(["--sim-clock", &format!("{sim}/_sim/clock")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("the hub's pid")?;
        let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
        let addr = loop {
            let line = tokio::time::timeout(Duration::from_secs(300), lines.next_line())
                .await
                .context("the hub did not start in 300 s")??
                .context("the hub exited before listening")?;
            if let Some(a) = line.strip_prefix("listening on http://") {
                break a.parse()?;
            }
        };
        Ok(Hub {
            _child: child,
            addr,
            key,
            admin,
            pid,
            _dir: dir,
        })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) async fn metrics(&self, http: &reqwest::Client) -> anyhow::Result<String> {
        Ok(http.get(self.url("/metrics")).send().await?.text().await?)
    }

    /// `VmRSS` in MB.
    fn rss_mb(&self) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .context("VmRSS")?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        Ok(kb / 1024.0)
    }

    /// User plus system CPU time so far, seconds.
    fn cpu_secs(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        let after = stat.rsplit_once(')').context("stat")?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        Ok(ticks / 100.0)
    }

    /// The planned refresh and the last refresh of every account's token,
    /// a page at a time.
    async fn plans(&self, http: &reqwest::Client) -> anyhow::Result<Vec<(i64, Option<i64>)>> {
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let v: serde_json::Value = http
                .get(self.url(&format!("/v1/apps?offset={offset}&limit=1000")))
                .bearer_auth(&self.admin)
                .send()
                .await?
                .json()
                .await?;
            for a in v["apps"].as_array().context("apps")? {
                let s = &a["slots"][0];
                out.push((
                    s["next_refresh_at"].as_i64().unwrap_or(0),
                    s["last_refresh_at"].as_i64(),
                ));
            }
            match v["next_offset"].as_u64() {
                Some(n) => offset = n as usize,
                None => return Ok(out),
            }
        }
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

/// A sample's value from the exposition text.
pub(crate) fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

pub(crate) const VALID: &str = "wxhub_credentials{kind=\"access_token\",state=\"valid\"}";
const EXPIRED: &str = "wxhub_credentials{kind=\"access_token\",state=\"expired\"}";
const SOON: &str = "wxhub_credential_seconds_left_bucket{kind=\"access_token\",le=\"900\"}";

/// One size's figures.
struct Figures {
    n: usize,
    held_after: Duration,
    rss_held: f64,
    rss_after: f64,
    idle_cpu: f64,
    metrics_bytes: usize,
    metrics_lines: usize,
    rate: Round,
    rate_one: Round,
    worst_late: i64,
    p99_late: i64,
    expired_seen: f64,
}

async fn measure(bin: &Path, n: usize, cli: &crate::Cli) -> anyhow::Result<Figures> {
    let sim = wx_sim::Simulator::spawn(world(n)?).await?;
    let base = sim.base_url();
    let http = reqwest::Client::new();
    let one = Hub::start(bin, &base, 1).await?;
    let started = Instant::now();
    let hub = Hub::start(bin, &base, n).await?;
    // Every token, from nothing stored, on a clock that stands still.
    loop {
        let m = hub.metrics(&http).await?;
        if sample(&m, VALID) as usize >= n {
            break;
        }
        if started.elapsed() > Duration::from_secs(3600) {
            bail!("{n} accounts: not every token held after an hour");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held_after = started.elapsed();
    let rss_held = hub.rss_mb()?;
    let cpu0 = hub.cpu_secs()?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_cpu = (hub.cpu_secs()? - cpu0) / 10.0;
    let text = hub.metrics(&http).await?;
    let (metrics_bytes, metrics_lines) = (text.len(), text.lines().count());
    let (rate, rate_one) = rates(&hub, &one, cli).await?;
    // Every token due in the same window: drive the clock through it.
    let before = hub.plans(&http).await?;
    let first = before.iter().map(|p| p.0).min().context("plans")?;
    let last = before.iter().map(|p| p.0).max().context("plans")?;
    sim.sim().clock.set(first - 1);
    let mut expired_seen: f64 = 0.0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = sim.sim().clock.advance(1);
        let m = hub.metrics(&http).await?;
        expired_seen = expired_seen.max(sample(&m, EXPIRED));
        // Refreshed tokens have close to 7200 s left, the rest under 300.
        let waiting = sample(&m, SOON);
        if waiting == 0.0 || now > last + 600 {
            let refreshed = hub.plans(&http).await?;
            let mut late: Vec<i64> = before
                .iter()
                .zip(&refreshed)
                .map(|(b, a)| a.1.map_or(i64::MAX, |t| t - b.0))
                .collect();
            late.sort_unstable();
            let rss_after = hub.rss_mb()?;
            return Ok(Figures {
                n,
                held_after,
                rss_held,
                rss_after,
                idle_cpu,
                metrics_bytes,
                metrics_lines,
                rate,
                rate_one,
                worst_late: *late.last().unwrap_or(&0),
                p99_late: late[(late.len() * 99 / 100).min(late.len() - 1)],
                expired_seen,
            });
        }
    }
}

/// `GET access_token` on the big hub and on the one-account hub, in
/// alternating rounds.
async fn rates(hub: &Hub, one: &Hub, cli: &crate::Cli) -> anyhow::Result<(Round, Round)> {
    let ok: fn(u16, &[u8]) -> bool = |s, _| s == 200;
    let round = Duration::from_secs(cli.seconds);
    let (mut big, mut small) = (Vec::new(), Vec::new());
    let path = |a: &str| -> Arc<str> { format!("/v1/apps/{a}/access_token").into() };
    let auth = |h: &Hub| -> Arc<str> { format!("Bearer {}", h.key).into() };
    for _ in 0..cli.rounds {
        big.push(
            load(
                hub.addr,
                path(&appid(7)),
                Some(auth(hub)),
                cli.connections,
                round,
                ok,
            )
            .await?,
        );
        small.push(
            load(
                one.addr,
                path(&appid(0)),
                Some(auth(one)),
                cli.connections,
                round,
                ok,
            )
            .await?,
        );
    }
    Ok((median(big), median(small)))
}

/// The `wxhub` binary to run: the one given, or the one beside the bench.
pub(crate) fn hub_binary(bin: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let bin = match bin {
        Some(b) => b,
        None => std::env::current_exe()?
            .parent()
            .context("the bench's directory")?
            .join("wxhub"),
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p wxhub)",
            bin.display()
        );
    }
    Ok(bin)
}

/// Runs every size and returns the report section.
pub async fn bench_scale(
    cli: &crate::Cli,
    sizes: &[usize],
    bin: Option<PathBuf>,
) -> anyhow::Result<String> {
    let bin = crate::scale::hub_binary(bin)?;
    let mut rows = Vec::new();
    for &n in sizes {
        eprintln!("scale: {n} accounts");
        rows.push(measure(&bin, n, cli).await?);
    }
    Ok(report(&rows, cli))
}

fn report(rows: &[Figures], cli: &crate::Cli) -> String {
    let mut s = format!(
        "## Many accounts on one instance\n\n`cargo run --release -p wxhub-bench -- scale` (`wxhub serve` in its own process on SQLite, stable mode, no tickets, default settings: `refresh.max_fetches_per_second = 500`; the simulator in the bench's process, on a virtual clock the hub follows; rates: {} alternating rounds of {} s, {} connections, against a one-account hub run beside it).\n\n\
| accounts | every token held after (cold start) | RSS held → after a refresh cycle | idle CPU | `/metrics` | GET access_token vs 1 account | worst / p99 lateness, all due at once | expired seen |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        cli.rounds, cli.seconds, cli.connections
    );
    for f in rows {
        s.push_str(&format!(
            "| {} | {:.1} s | {:.0} → {:.0} MB | {:.1} % | {} lines, {:.1} KB | {:.0} vs {:.0} req/s = {:.2}× | {} s / {} s | {} |\n",
            f.n,
            f.held_after.as_secs_f64(),
            f.rss_held,
            f.rss_after,
            f.idle_cpu * 100.0,
            f.metrics_lines,
            f.metrics_bytes as f64 / 1024.0,
            f.rate.rps,
            f.rate_one.rps,
            f.rate.rps / f.rate_one.rps,
            f.worst_late,
            f.p99_late,
            f.expired_seen,
        ));
    }
    s.push_str("\nLateness is the virtual seconds between a token's planned refresh and its fetch, with every token planned inside the same 30 s (all fetched at the same virtual second) and the virtual clock driven at one second per second; a stable token is planned 240–270 s before it expires, so any lateness under 240 s is a refresh before expiry. \"Expired seen\" is the most tokens `/metrics` counted as expired at any moment of that cycle.\n");
    s
}
