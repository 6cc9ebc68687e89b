//! Shared mode with many accounts: three `wxhub serve` processes on one
//! Redis of their own (started here, so no other client's commands are
//! counted), against the simulator in this process on a virtual clock that
//! stands still once every token is held.
//!
//! For each size: the time until every instance holds every token, then
//! Redis's commands per second at steady state from `INFO commandstats`
//! over a window, by command. Leasing is per partition, so this should not
//! grow with the number of accounts. Refreshing does, by nature: one run
//! also moves the clock past every refresh and counts the commands per
//! refreshed token, so the cost at a real pace can be stated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::scale::{Hub, VALID, sample, world};

const INSTANCES: usize = 3;

/// A Redis server of the bench's own, killed when dropped.
struct Redis {
    _child: tokio::process::Child,
    port: u16,
}

impl Redis {
    async fn start() -> anyhow::Result<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server (Debian: apt-get install redis-server)")?;
        let r = Redis {
            _child: child,
            port,
        };
        let started = Instant::now();
        while r.query(&["PING"]).await.is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("redis-server did not answer on port {port}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(r)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn query(&self, args: &[&str]) -> anyhow::Result<redis::Value> {
        let client = redis::Client::open(self.url())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        Ok(cmd.query_async(&mut conn).await?)
    }

    /// Calls per command so far (`INFO commandstats`).
    async fn commandstats(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let text: String = redis::from_redis_value(&self.query(&["INFO", "commandstats"]).await?)?;
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("cmdstat_") else {
                continue;
            };
            let Some((name, fields)) = rest.split_once(':') else {
                continue;
            };
            let calls = fields
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            out.insert(name.to_string(), calls);
        }
        Ok(out)
    }
}

fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// One size's figures.
struct Figures {
    n: usize,
    held_after: Duration,
    partitions: Vec<usize>,
    window: Duration,
    per_second: f64,
    by_command: BTreeMap<String, u64>,
    per_refresh: Option<f64>,
}

async fn held_everywhere(
    hubs: &[Hub],
    http: &reqwest::Client,
    n: usize,
    limit: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let mut all = true;
        for h in hubs {
            if (sample(&h.metrics(http).await?, VALID) as usize) < n {
                all = false;
                break;
            }
        }
        if all {
            return Ok(());
        }
        if started.elapsed() > limit {
            bail!("{n} accounts: not every token held on every instance in {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn partitions(hubs: &[Hub], http: &reqwest::Client) -> anyhow::Result<Vec<usize>> {
    let mut out = Vec::new();
    for h in hubs {
        out.push(sample(&h.metrics(http).await?, "wxhub_lease_partitions_held ") as usize);
    }
    out.sort_unstable();
    Ok(out)
}

async fn measure(
    bin: &Path,
    n: usize,
    window: Duration,
    count_refreshes: bool,
) -> anyhow::Result<Figures> {
    let redis = Redis::start().await?;
    let sim = wx_sim::Simulator::spawn(world(n)?).await?;
    let base = sim.base_url();
    let http = reqwest::Client::new();
    let store = format!(
        "kind = \"redis\"\nurl = \"{}\"\nprefix = \"bench\"",
        redis.url()
    );
    let started = Instant::now();
    let mut hubs = Vec::new();
    for _ in 0..INSTANCES {
        hubs.push(Hub::start_on(bin, &base, n, Some(&store)).await?);
    }
    held_everywhere(&hubs, &http, n, Duration::from_secs(3600)).await?;
    let held_after = started.elapsed();
    // Balancing hands partitions over after a few lease rounds: wait until
    // the shares have settled before counting.
    let settle = Instant::now();
    let share = 64usize.div_ceil(INSTANCES);
    let parts = loop {
        let p = partitions(&hubs, &http).await?;
        if p.iter().sum::<usize>() == 64 && p.iter().all(|x| *x <= share) {
            break p;
        }
        if settle.elapsed() > Duration::from_secs(120) {
            bail!("{n} accounts: partitions never balanced: {p:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = redis.commandstats().await?;
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let after = redis.commandstats().await?;
    let window = t0.elapsed();
    let by_command = delta(&before, &after);
    let total: u64 = by_command.values().sum();
    let per_refresh = if count_refreshes {
        // Every token comes due: move the clock past the refresh window and
        // count what refreshing all of them cost.
        let before = redis.commandstats().await?;
        let fetched = |s: &serde_json::Value| -> u64 {
            s["apps"]
                .as_object()
                .map(|apps| {
                    apps.values()
                        .map(|a| a["calls"]["/cgi-bin/stable_token"].as_u64().unwrap_or(0))
                        .sum()
                })
                .unwrap_or(0)
        };
        let fetched_before = fetched(&sim.sim().stats());
        sim.sim().clock.advance(7200 - 200);
        let t = Instant::now();
        loop {
            let now = fetched(&sim.sim().stats());
            if now >= fetched_before + n as u64 {
                break;
            }
            if t.elapsed() > Duration::from_secs(600) {
                bail!("{n} accounts: not every token refreshed in 600 s");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        held_everywhere(&hubs, &http, n, Duration::from_secs(600)).await?;
        // Let the followers' reads land.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = redis.commandstats().await?;
        let elapsed = t.elapsed().as_secs_f64() + 3.0;
        let d: u64 = delta(&before, &after).values().sum();
        // Less what leasing cost meanwhile.
        let lease = total as f64 / window.as_secs_f64() * elapsed;
        Some((d as f64 - lease).max(0.0) / n as f64)
    } else {
        None
    };
    drop(hubs);
    Ok(Figures {
        n,
        held_after,
        partitions: parts,
        window,
        per_second: total as f64 / window.as_secs_f64(),
        by_command,
        per_refresh,
    })
}

/// Runs every size and returns the report section.
pub async fn bench_shared_scale(
    sizes: &[usize],
    window_secs: u64,
    bin: Option<PathBuf>,
) -> anyhow::Result<String> {
    let bin = crate::scale::hub_binary(bin)?;
    let mut rows = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        eprintln!("shared-scale: {n} accounts on {INSTANCES} instances");
        rows.push(measure(&bin, n, Duration::from_secs(window_secs), i == 0).await?);
    }
    Ok(report(&rows))
}

fn report(rows: &[Figures]) -> String {
    let mut s = format!(
        "## Shared mode with many accounts: Redis commands at steady state\n\n`cargo run --release -p wxhub-bench -- shared-scale` ({INSTANCES} `wxhub serve` processes, stable mode, no tickets, default lease (10 s) and 64 lease partitions, on a `redis-server` the bench starts for itself; the simulator in the bench's process on a virtual clock that stands still once every token is held, so the window counts leasing, heartbeats and everything else the hubs do at rest; commands from `INFO commandstats`).\n\n\
| accounts | every token held on all {INSTANCES} after | partitions held | Redis commands/s at steady state | by command (per second) |\n|---:|---:|---:|---:|---|\n"
    );
    for f in rows {
        let secs = f.window.as_secs_f64();
        let by = f
            .by_command
            .iter()
            .map(|(k, v)| format!("{k} {:.1}", *v as f64 / secs))
            .collect::<Vec<_>>()
            .join(", ");
        s.push_str(&format!(
            "| {} | {:.1} s | {} | {:.1} | {} |\n",
            f.n,
            f.held_after.as_secs_f64(),
            f.partitions
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" / "),
            f.per_second,
            by,
        ));
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last())
        && rows.len() > 1
    {
        let ratio = last.per_second / first.per_second;
        s.push_str(&format!(
            "\n**{} vs {} accounts: {:.2}×** the commands per second (target: within 2×: {}).\n",
            last.n,
            first.n,
            ratio,
            if ratio <= 2.0 { "met" } else { "MISSED" }
        ));
    }
    if let Some(per) = rows.first().and_then(|f| f.per_refresh) {
        s.push_str(&format!(
            "\nRefreshing costs what it must per token, on top: **{per:.1} commands per refreshed token** (measured with {} accounts by moving the clock past every refresh; the fetch mark, the fenced write, its note, and each other instance's read). At a real pace a stable token is refreshed once per 7,200 s, so 100,000 accounts add about {:.0} commands/s, spread over the lifetime.\n",
            rows[0].n,
            per * 100_000.0 / 7200.0
        ));
    }
    s.push_str("\nBefore partitioned leases every instance renewed or probed one lease per account every `lease_ms / 3`: about 900 scripts a second for 1,000 accounts on 3 instances, and 90,000 for 100,000 (docs/operations.md, earlier versions).\n");
    s
}
