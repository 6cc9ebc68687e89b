//! Side-by-side throughput benchmarks. Each compares two servers measured
//! in the same run, alternating rounds, and reports the ratio: the machine
//! is shared and noisy, so absolute numbers mean little and ratios are what
//! the targets are stated in.
//!
//! `cargo run --release -p wxhub-bench -- sim` measures token-checked API
//! calls served by the simulator against a trivial axum handler and writes
//! its section of `docs/BENCHMARKS.md`; `hub`, `oauth` and `push` do the
//! same for the hub's token route and proxy, web authorization and the
//! push gateway.

mod console;
mod durable;
mod push;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};

// The `wxhub` binary's allocator: the hubs started here allocate as in
// production (glibc's malloc was a fifth of a push's CPU).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod scale;
mod shared_scale;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Parser)]
#[command(about = "wxhub side-by-side benchmarks")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
    /// Seconds per round.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Rounds per contender (alternating).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Where to write the report section.
    #[arg(long, default_value = "docs/BENCHMARKS.md")]
    out: PathBuf,
}

#[derive(Subcommand)]
enum Bench {
    /// Simulator token-checked calls vs a trivial axum handler.
    Sim,
    /// The hub's GET access_token vs a bare handler, and its proxy vs the
    /// simulator called directly.
    Hub,
    /// Completed base-scope web logins through the hub vs the simulator alone.
    Oauth,
    /// Many accounts on one `wxhub serve` process: time until every token
    /// is held, memory, `/metrics`, token rate, lateness when all are due.
    Scale {
        /// Account counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
        accounts: Vec<usize>,
        /// The `wxhub` binary (default: beside this one; build it with
        /// `cargo build --release -p wxhub`).
        #[arg(long)]
        hub_bin: Option<PathBuf>,
    },
    /// Three `wxhub serve` processes on one Redis with many accounts:
    /// Redis commands per second at steady state (`INFO commandstats`).
    SharedScale {
        /// Account counts, comma-separated (the first also measures the
        /// commands per refreshed token).
        #[arg(long, value_delimiter = ',', default_value = "1000,100000")]
        accounts: Vec<usize>,
        /// Seconds of steady state counted.
        #[arg(long, default_value_t = 30)]
        window: u64,
        /// The `wxhub` binary (default: beside this one).
        #[arg(long)]
        hub_bin: Option<PathBuf>,
    },
    /// The console's overview, first page, vs the JSON list of the same
    /// accounts, with many accounts; and a search for one.
    Console {
        /// Accounts.
        #[arg(long, default_value_t = 10_000)]
        accounts: usize,
    },
    /// Pushes acknowledged by the hub's /push/{appid} (durable write
    /// included) vs a handler that answers `success`.
    Push,
    /// A fixed number of requests to one contender, one at a time, for
    /// `valgrind --tool=callgrind`: instruction counts, unlike timings,
    /// repeat exactly on a shared machine. Run it for two counts and divide
    /// the difference by the difference of counts: the set-up cancels out.
    Count {
        /// `token`, `bare`, `proxy` or `forwarder`.
        contender: String,
        /// Requests after a warm-up of 200.
        #[arg(long, default_value_t = 2000)]
        requests: u64,
    },
}

/// One contender's result for one round.
#[derive(Debug, Clone, Copy)]
struct Round {
    rps: f64,
    p50_us: u64,
    p99_us: u64,
}

/// Drives `connections` keep-alive HTTP/1 connections against `addr` for
/// `duration`, each sending `GET path` back to back. Every answer is checked
/// by `ok`, so a contender that answers errors fast cannot win.
async fn load(
    addr: SocketAddr,
    path: Arc<str>,
    auth: Option<Arc<str>>,
    connections: usize,
    duration: Duration,
    ok: fn(u16, &[u8]) -> bool,
) -> anyhow::Result<Round> {
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let path = path.clone();
        let auth = auth.clone();
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut latencies = Vec::with_capacity(100_000);
            let mut bad = 0u64;
            while Instant::now() < deadline {
                let mut req = hyper::Request::get(&*path).header("host", addr.to_string());
                if let Some(a) = &auth {
                    req = req.header("authorization", &**a);
                }
                let req = req.body(Empty::<Bytes>::new())?;
                let started = Instant::now();
                let resp = sender.send_request(req).await?;
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await?.to_bytes();
                latencies.push(started.elapsed().as_micros() as u64);
                if !ok(status, &body) {
                    bad += 1;
                }
            }
            anyhow::Ok((latencies, bad))
        }));
    }
    let mut all = Vec::new();
    let mut bad = 0;
    for t in tasks {
        let (l, b) = t.await??;
        all.extend(l);
        bad += b;
    }
    if bad > 0 {
        bail!("{bad} of {} answers were wrong", all.len());
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Ok(Round {
        rps: all.len() as f64 / duration.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    })
}

fn median(mut v: Vec<Round>) -> Round {
    v.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    v[v.len() / 2]
}

async fn trivial_server() -> anyhow::Result<SocketAddr> {
    let app = axum::Router::new().route(
        "/cgi-bin/user/info",
        axum::routing::get(|| async {
            (
                [("content-type", "application/json; encoding=utf-8")],
                "{\"subscribe\":1,\"openid\":\"o6_bmjrPTlm6_2sgVt7hMZOPfL2M\"}",
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

const BENCH_WORLD: &str = r#"
[clock]
start = 1700000000

[[accounts]]
appid = "wx0123456789abcdef"
secret = "benchsecret000000000000000000000"
daily_limits = { "/cgi-bin/user/info" = 1000000000 }

[[people]]
id = "alice"
follows = ["wx0123456789abcdef"]
"#;

async fn bench_sim(cli: &Cli) -> anyhow::Result<String> {
    let world = wx_sim::World::from_toml_str(BENCH_WORLD)?;
    let sim = wx_sim::Simulator::spawn(world).await?;
    let http_base = sim.base_url();
    let token = fetch_json(&format!(
        "{http_base}/cgi-bin/token?grant_type=client_credential&appid=wx0123456789abcdef&secret=benchsecret000000000000000000000"
    ))
    .await?["access_token"]
        .as_str()
        .context("no token from the simulator")?
        .to_string();
    let openid = fetch_json(&format!(
        "{http_base}/_sim/openid?appid=wx0123456789abcdef&person=alice"
    ))
    .await?["openid"]
        .as_str()
        .context("no openid")?
        .to_string();
    let sim_path: Arc<str> =
        format!("/cgi-bin/user/info?access_token={token}&openid={openid}&lang=zh_CN").into();
    let trivial = trivial_server().await?;
    let trivial_path: Arc<str> =
        format!("/cgi-bin/user/info?access_token={token}&openid={openid}&lang=zh_CN").into();
    let dur = Duration::from_secs(cli.seconds);
    fn ok(status: u16, body: &[u8]) -> bool {
        let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
        status == 200 && has(b"\"subscribe\":1") && !has(b"errcode")
    }
    // Warm both up so neither pays for first connections or allocations.
    load(
        trivial,
        trivial_path.clone(),
        None,
        cli.connections,
        Duration::from_millis(500),
        ok,
    )
    .await?;
    load(
        sim.addr(),
        sim_path.clone(),
        None,
        cli.connections,
        Duration::from_millis(500),
        ok,
    )
    .await?;
    let (mut base_rounds, mut sim_rounds) = (Vec::new(), Vec::new());
    for _ in 0..cli.rounds {
        base_rounds.push(
            load(
                trivial,
                trivial_path.clone(),
                None,
                cli.connections,
                dur,
                ok,
            )
            .await?,
        );
        sim_rounds.push(load(sim.addr(), sim_path.clone(), None, cli.connections, dur, ok).await?);
    }
    let b = median(base_rounds);
    let s = median(sim_rounds);
    let ratio = s.rps / b.rps;
    let verdict = if ratio >= 0.5 { "meets" } else { "MISSES" };
    Ok(format!(
        "## Simulator: token-checked calls vs a trivial handler\n\n\
`cargo run --release -p wxhub-bench -- sim` ({rounds} alternating rounds of {secs} s, {conns} keep-alive connections, \
load generator in the same process; median round shown).\n\n\
| server | requests/s | p50 | p99 |\n|---|---:|---:|---:|\n\
| trivial axum handler (constant JSON) | {:.0} | {} µs | {} µs |\n\
| wxsim `GET /cgi-bin/user/info` (token check, quota, stats, lookup) | {:.0} | {} µs | {} µs |\n\n\
**Ratio: {ratio:.2}×** the trivial handler's rate; the target is ≥ 0.5× — this run {verdict} it.\n",
        b.rps,
        b.p50_us,
        b.p99_us,
        s.rps,
        s.p50_us,
        s.p99_us,
        rounds = cli.rounds,
        secs = cli.seconds,
        conns = cli.connections,
    ))
}

/// A bare axum handler answering what the hub's token route answers.
async fn constant_token_server() -> anyhow::Result<SocketAddr> {
    let app = axum::Router::new().route(
        "/v1/apps/{appid}/access_token",
        axum::routing::get(|| async {
            axum::Json(serde_json::json!({
                "access_token": "81_constantconstantconstantconstantconstantconstantconstantconstantconstantconstantconstantconstantconstantconstantconstantconstant",
                "expires_at": 1700007200,
                "expires_in": 7000
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// The least a proxy can do: forward the request to `upstream` over a
/// pooled keep-alive client and hand the answer back, with no
/// authentication, no token, no inspection: the most any proxy can reach here.
async fn minimal_forwarder(upstream: SocketAddr) -> anyhow::Result<SocketAddr> {
    use axum::response::IntoResponse;
    type Client = hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<Bytes>,
    >;
    let client: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let client = client.clone();
        async move {
            let pq = req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            let fwd = http::Request::get(format!("http://{upstream}{pq}"))
                .body(http_body_util::Full::new(Bytes::new()))
                .expect("request");
            match client.request(fwd).await {
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    (status, body).into_response()
                }
                Err(_) => http::StatusCode::BAD_GATEWAY.into_response(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// `requests` GETs of `path` on one keep-alive connection, one at a time.
async fn sequential(
    addr: SocketAddr,
    path: &str,
    auth: Option<&str>,
    requests: u64,
    ok: fn(u16, &[u8]) -> bool,
) -> anyhow::Result<()> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    for _ in 0..requests {
        let mut req = hyper::Request::get(path).header("host", addr.to_string());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        sender.ready().await?;
        let resp = sender
            .send_request(req.body(Empty::<Bytes>::new())?)
            .await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::ensure!(ok(status, &body), "a wrong answer: {status}");
    }
    Ok(())
}

async fn bench_count(contender: &str, requests: u64) -> anyhow::Result<()> {
    let world = wx_sim::World::from_toml_str(BENCH_WORLD)?;
    let sim = wx_sim::Simulator::spawn(world).await?;
    let key = wxhub::auth::new_key();
    let (hub, store) = start_hub(&sim, &key, "").await?;
    let auth = format!("Bearer {key}");
    let openid = fetch_json(&format!(
        "{}/_sim/openid?appid=wx0123456789abcdef&person=alice",
        sim.base_url()
    ))
    .await?["openid"]
        .as_str()
        .context("no openid")?
        .to_string();
    let token = fetch_json(&format!(
        "{}/cgi-bin/token?grant_type=client_credential&appid=wx0123456789abcdef&secret=benchsecret000000000000000000000",
        sim.base_url()
    ))
    .await?["access_token"]
        .as_str()
        .context("no token")?
        .to_string();
    fn token_ok(status: u16, body: &[u8]) -> bool {
        status == 200 && body.starts_with(b"{\"access_token\":\"")
    }
    fn user_ok(status: u16, body: &[u8]) -> bool {
        status == 200 && body.windows(13).any(|w| w == b"\"subscribe\":1")
    }
    let token_path = "/v1/apps/wx0123456789abcdef/access_token".to_string();
    let direct = format!("/cgi-bin/user/info?access_token={token}&openid={openid}&lang=zh_CN");
    let proxied =
        format!("/v1/apps/wx0123456789abcdef/proxy/cgi-bin/user/info?openid={openid}&lang=zh_CN");
    type Check = fn(u16, &[u8]) -> bool;
    let (addr, path, auth, ok): (SocketAddr, String, Option<&str>, Check) = match contender {
        "token" => (hub.addr(), token_path, Some(auth.as_str()), token_ok),
        "bare" => (constant_token_server().await?, token_path, None, token_ok),
        "proxy" => (hub.addr(), proxied, Some(auth.as_str()), user_ok),
        "forwarder" => (minimal_forwarder(sim.addr()).await?, direct, None, user_ok),
        other => bail!("no contender {other:?}: token, bare, proxy or forwarder"),
    };
    sequential(addr, &path, auth, 200, ok).await?;
    sequential(addr, &path, auth, requests, ok).await?;
    drop(hub);
    remove_store(&store);
    Ok(())
}

async fn bench_hub(cli: &Cli) -> anyhow::Result<String> {
    let world = wx_sim::World::from_toml_str(BENCH_WORLD)?;
    let sim = wx_sim::Simulator::spawn(world).await?;
    let key = wxhub::auth::new_key();
    let (hub, store) = start_hub(&sim, &key, "").await?;
    let auth: Arc<str> = format!("Bearer {key}").into();
    let openid = fetch_json(&format!(
        "{}/_sim/openid?appid=wx0123456789abcdef&person=alice",
        sim.base_url()
    ))
    .await?["openid"]
        .as_str()
        .context("no openid")?
        .to_string();
    let token_path: Arc<str> = "/v1/apps/wx0123456789abcdef/access_token".into();
    let bare = constant_token_server().await?;
    fn token_ok(status: u16, body: &[u8]) -> bool {
        status == 200 && body.starts_with(b"{\"access_token\":\"")
    }
    fn user_ok(status: u16, body: &[u8]) -> bool {
        let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
        status == 200 && has(b"\"subscribe\":1") && !has(b"errcode")
    }
    let proxy_path: Arc<str> =
        format!("/v1/apps/wx0123456789abcdef/proxy/cgi-bin/user/info?openid={openid}&lang=zh_CN")
            .into();
    // The direct caller uses the token the hub holds, as a business server would.
    let direct_token = {
        let uri = format!("http://{}{}", hub.addr(), token_path);
        let host = hub.addr().to_string();
        let stream = TcpStream::connect(&host).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = hyper::Request::get(uri.as_str())
            .header("host", host)
            .header("authorization", &*auth)
            .body(Empty::<Bytes>::new())?;
        let body = sender
            .send_request(req)
            .await?
            .into_body()
            .collect()
            .await?
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        v["access_token"]
            .as_str()
            .context("hub gave no token")?
            .to_string()
    };
    let direct_path: Arc<str> =
        format!("/cgi-bin/user/info?access_token={direct_token}&openid={openid}&lang=zh_CN").into();
    let dur = Duration::from_secs(cli.seconds);
    let warm = Duration::from_millis(500);
    load(
        bare,
        token_path.clone(),
        None,
        cli.connections,
        warm,
        token_ok,
    )
    .await?;
    load(
        hub.addr(),
        token_path.clone(),
        Some(auth.clone()),
        cli.connections,
        warm,
        token_ok,
    )
    .await?;
    load(
        hub.addr(),
        proxy_path.clone(),
        Some(auth.clone()),
        cli.connections,
        warm,
        user_ok,
    )
    .await?;
    load(
        sim.addr(),
        direct_path.clone(),
        None,
        cli.connections,
        warm,
        user_ok,
    )
    .await?;
    let floor = minimal_forwarder(sim.addr()).await?;
    load(
        floor,
        direct_path.clone(),
        None,
        cli.connections,
        warm,
        user_ok,
    )
    .await?;
    let (mut bare_r, mut hub_r, mut proxy_r, mut direct_r, mut floor_r) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..cli.rounds {
        bare_r.push(
            load(
                bare,
                token_path.clone(),
                None,
                cli.connections,
                dur,
                token_ok,
            )
            .await?,
        );
        hub_r.push(
            load(
                hub.addr(),
                token_path.clone(),
                Some(auth.clone()),
                cli.connections,
                dur,
                token_ok,
            )
            .await?,
        );
        direct_r.push(
            load(
                sim.addr(),
                direct_path.clone(),
                None,
                cli.connections,
                dur,
                user_ok,
            )
            .await?,
        );
        proxy_r.push(
            load(
                hub.addr(),
                proxy_path.clone(),
                Some(auth.clone()),
                cli.connections,
                dur,
                user_ok,
            )
            .await?,
        );
        floor_r.push(
            load(
                floor,
                direct_path.clone(),
                None,
                cli.connections,
                dur,
                user_ok,
            )
            .await?,
        );
    }
    let (b, h, d, p, f) = (
        median(bare_r),
        median(hub_r),
        median(direct_r),
        median(proxy_r),
        median(floor_r),
    );
    let token_ratio = h.rps / b.rps;
    let proxy_ratio = p.rps / d.rps;
    let floor_ratio = f.rps / d.rps;
    let verdict = |r: f64, goal: f64| if r >= goal { "meets" } else { "MISSES" };
    drop(hub);
    remove_store(&store);
    Ok(format!(
        "## Hub: GET access_token and the proxy\n\n\
`cargo run --release -p wxhub-bench -- hub` ({rounds} alternating rounds of {secs} s, {conns} keep-alive connections, \
hub, simulator and load generator in one process; median round shown).\n\n\
| server | requests/s | p50 | p99 |\n|---|---:|---:|---:|\n\
| bare axum handler returning a constant token JSON | {:.0} | {} µs | {} µs |\n\
| wxhub `GET /v1/apps/{{appid}}/access_token` (client key check, request log, metrics, request timeout, JSON-error layer) | {:.0} | {} µs | {} µs |\n\
| simulator `GET /cgi-bin/user/info` called directly | {:.0} | {} µs | {} µs |\n\
| wxhub proxy to the same call (client key, rate limit, path rules, token injected, JSON errcode inspected) | {:.0} | {} µs | {} µs |\n\
| minimal forwarder to the same call (no auth, no token, no inspection: the best any proxy can do here) | {:.0} | {} µs | {} µs |\n\n\
**GET access_token: {token_ratio:.2}×** the bare handler (goal ≥ 0.8×: {}).  \n\
**Proxy: {:.2}×** the minimal forwarder (goal ≥ 0.9×: {}); against the simulator called directly the proxy \
reaches {proxy_ratio:.2}× and the forwarder {floor_ratio:.2}×.\n",
        b.rps,
        b.p50_us,
        b.p99_us,
        h.rps,
        h.p50_us,
        h.p99_us,
        d.rps,
        d.p50_us,
        d.p99_us,
        p.rps,
        p.p50_us,
        p.p99_us,
        f.rps,
        f.p50_us,
        f.p99_us,
        verdict(token_ratio, 0.8),
        p.rps / f.rps,
        verdict(p.rps / f.rps, 0.9),
        rounds = cli.rounds,
        secs = cli.seconds,
        conns = cli.connections,
    ))
}

fn location(r: &reqwest::Response) -> anyhow::Result<String> {
    Ok(r.headers()
        .get("location")
        .context("no Location")?
        .to_str()?
        .to_string())
}

fn query_param(u: &str, key: &str) -> Option<String> {
    url::Url::parse(u)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Runs `one` back to back on `workers` tasks for `duration`; counts completions.
async fn logins<F, Fut>(workers: usize, duration: Duration, one: F) -> anyhow::Result<f64>
where
    F: Fn() -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let one = one.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                one().await?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / duration.as_secs_f64())
}

/// The least a web-authorization gateway can do in the same five exchanges
/// as the hub: authorize answers a redirect to the simulator with a fixed
/// state, the callback exchanges the code over a pooled client and keeps the
/// result in memory under a random ticket, redeeming takes it out. No
/// signature, no storage, no checks: the best any gateway can do here.
async fn minimal_chain(sim: SocketAddr) -> anyhow::Result<SocketAddr> {
    use axum::extract::{Query, State};
    use axum::response::IntoResponse;
    use std::collections::HashMap;
    type Client = hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<Bytes>,
    >;
    #[derive(Clone)]
    struct Chain {
        sim: SocketAddr,
        me: Arc<std::sync::OnceLock<SocketAddr>>,
        client: Client,
        results: Arc<std::sync::Mutex<HashMap<String, Bytes>>>,
        next: Arc<std::sync::atomic::AtomicU64>,
    }
    let chain = Chain {
        sim,
        me: Arc::new(std::sync::OnceLock::new()),
        client: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http(),
        results: Arc::new(std::sync::Mutex::new(HashMap::new())),
        next: Arc::new(std::sync::atomic::AtomicU64::new(1)),
    };
    async fn authorize(State(c): State<Chain>) -> impl IntoResponse {
        let me = c.me.get().copied().expect("bound");
        let to = format!(
            "http://{}/connect/oauth2/authorize?appid=wx0123456789abcdef&redirect_uri=http%3A%2F%2F{me}%2Fcallback&response_type=code&scope=snsapi_base&state=s",
            c.sim
        );
        (http::StatusCode::FOUND, [(http::header::LOCATION, to)])
    }
    async fn callback(
        State(c): State<Chain>,
        Query(q): Query<HashMap<String, String>>,
    ) -> axum::response::Response {
        let code = q.get("code").cloned().unwrap_or_default();
        let uri = format!(
            "http://{}/sns/oauth2/access_token?appid=wx0123456789abcdef&secret=benchsecret000000000000000000000&code={code}&grant_type=authorization_code",
            c.sim
        );
        let req = http::Request::get(uri)
            .body(http_body_util::Full::new(Bytes::new()))
            .expect("request");
        let Ok(resp) = c.client.request(req).await else {
            return http::StatusCode::BAD_GATEWAY.into_response();
        };
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let ticket = format!(
            "t{}",
            c.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        c.results.lock().expect("lock").insert(ticket.clone(), body);
        (
            http::StatusCode::FOUND,
            [(
                http::header::LOCATION,
                format!("http://127.0.0.1:9/done?wxhub_ticket={ticket}"),
            )],
        )
            .into_response()
    }
    async fn redeem(
        State(c): State<Chain>,
        axum::Json(v): axum::Json<serde_json::Value>,
    ) -> axum::response::Response {
        let ticket = v["ticket"].as_str().unwrap_or_default();
        match c.results.lock().expect("lock").remove(ticket) {
            Some(body) => {
                ([(http::header::CONTENT_TYPE, "application/json")], body).into_response()
            }
            None => http::StatusCode::NOT_FOUND.into_response(),
        }
    }
    let app = axum::Router::new()
        .route(
            "/oauth/wx0123456789abcdef/authorize",
            axum::routing::get(authorize),
        )
        .route("/callback", axum::routing::get(callback))
        .route("/v1/oauth/tickets/redeem", axum::routing::post(redeem))
        .with_state(chain.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    chain.me.set(addr).ok();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// One login through a gateway at `base` (the hub or the minimal chain):
/// authorize, the simulator's authorize, the callback, the redemption.
async fn gateway_login(http: &reqwest::Client, base: &str, key: &str) -> anyhow::Result<()> {
    let start = format!(
        "{base}/oauth/wx0123456789abcdef/authorize?scope=base&return_to=http%3A%2F%2F127.0.0.1%3A9%2Fdone"
    );
    let r = http.get(&start).send().await?;
    let wechat = location(&r)?;
    let r = http
        .get(&wechat)
        .header("cookie", "wxsim_person=alice")
        .send()
        .await?;
    let callback = location(&r)?;
    let r = http.get(&callback).send().await?;
    let back = location(&r)?;
    anyhow::ensure!(
        back.starts_with("http://127.0.0.1:9/done"),
        "landed on {back}"
    );
    let ticket = query_param(&back, "wxhub_ticket").context("no ticket")?;
    let v: serde_json::Value = http
        .post(format!("{base}/v1/oauth/tickets/redeem"))
        .bearer_auth(key)
        .json(&serde_json::json!({"ticket": ticket}))
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(v["openid"].is_string(), "redeem: {v}");
    Ok(())
}

async fn bench_oauth(cli: &Cli) -> anyhow::Result<String> {
    let world = wx_sim::World::from_toml_str(
        // The platform's 50,000 a minute would stop a benchmark on a frozen clock.
        &BENCH_WORLD.replace(
            "daily_limits",
            "oauth_domains = [\"127.0.0.1\"]\nminute_limits = { \"/sns/oauth2/access_token\" = 1000000000 }\ndaily_limits",
        ),
    )?;
    let sim = wx_sim::Simulator::spawn(world).await?;
    let key = wxhub::auth::new_key();
    let (hub, store) = start_hub(
        &sim,
        &key,
        "oauth_return_origins = [\"http://127.0.0.1:9\"]",
    )
    .await?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let hub_base = hub.base_url();
    let sim_base = sim.base_url();

    let through_hub = {
        let (http, hub_base, key) = (http.clone(), hub_base.clone(), key.clone());
        move || {
            let (http, hub_base, key) = (http.clone(), hub_base.clone(), key.clone());
            async move { gateway_login(&http, &hub_base, &key).await }
        }
    };
    let chain_base = format!("http://{}", minimal_chain(sim.addr()).await?);
    let through_chain = {
        let (http, chain_base) = (http.clone(), chain_base.clone());
        move || {
            let (http, chain_base) = (http.clone(), chain_base.clone());
            async move { gateway_login(&http, &chain_base, "-").await }
        }
    };
    let sim_alone = {
        let (http, sim_base) = (http.clone(), sim_base.clone());
        move || {
            let (http, sim_base) = (http.clone(), sim_base.clone());
            async move {
                let start = format!(
                    "{sim_base}/connect/oauth2/authorize?appid=wx0123456789abcdef&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&response_type=code&scope=snsapi_base&state=s"
                );
                let r = http
                    .get(&start)
                    .header("cookie", "wxsim_person=alice")
                    .send()
                    .await?;
                let code = query_param(&location(&r)?, "code").context("no code")?;
                let v: serde_json::Value = http
                    .get(format!("{sim_base}/sns/oauth2/access_token?appid=wx0123456789abcdef&secret=benchsecret000000000000000000000&code={code}&grant_type=authorization_code"))
                    .send()
                    .await?
                    .json()
                    .await?;
                anyhow::ensure!(v["openid"].is_string(), "exchange: {v}");
                Ok(())
            }
        }
    };
    let dur = Duration::from_secs(cli.seconds);
    let workers = cli.connections;
    logins(workers, Duration::from_millis(500), through_hub.clone()).await?;
    logins(workers, Duration::from_millis(500), through_chain.clone()).await?;
    logins(workers, Duration::from_millis(500), sim_alone.clone()).await?;
    let (mut h, mut c, mut s) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..cli.rounds {
        s.push(logins(workers, dur, sim_alone.clone()).await?);
        c.push(logins(workers, dur, through_chain.clone()).await?);
        h.push(logins(workers, dur, through_hub.clone()).await?);
    }
    let mid = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (h, c, s) = (mid(h), mid(c), mid(s));
    let ratio = h / c;
    drop(hub);
    remove_store(&store);
    Ok(format!(
        "## Web authorization: base-scope logins\n\n\
`cargo run --release -p wxhub-bench -- oauth` ({rounds} alternating rounds of {secs} s, {workers} concurrent people, \
hub, simulator and load generator in one process, the store in the system temp dir; median round shown).\n\n\
| path | logins/s | what one login is |\n|---|---:|---|\n\
| simulator alone | {s:.0} | 2 requests: authorize → 302 with a code; code exchange |\n\
| minimal five-exchange chain | {c:.0} | the same 5 requests as through the hub, every answer from memory: authorize → 302 with a fixed state; simulator authorize; callback (code exchanged upstream over a pooled client, result kept in a map) → 302 with a ticket; redemption takes it out. No signature, no storage, no checks |\n\
| through wxhub | {h:.0} | 5 requests: hub authorize (return_to checked, signed state stored) → simulator authorize → hub callback (state verified and used, code exchanged upstream, grant, ticket and outcome stored) → ticket redeemed by the business server |\n\n\
**Ratio: {ratio:.2}×** the minimal five-exchange chain (goal ≥ 0.6×: {}); the simulator alone, two exchanges, does {:.2}× the chain.\n",
        if ratio >= 0.6 { "meets" } else { "MISSES" },
        s / c,
        rounds = cli.rounds,
        secs = cli.seconds,
    ))
}

/// A hub for the bench account, on a fresh store in the temp dir, reading the
/// simulator's clock. `account_extra` is appended to the account's table.
async fn start_hub(
    sim: &wx_sim::RunningSim,
    key: &str,
    account_extra: &str,
) -> anyhow::Result<(wxhub::RunningHub, std::path::PathBuf)> {
    let store = new_store_path();
    let config_text = format!(
        r#"
listen = "127.0.0.1:0"
[store]
path = "{store}"
[upstream]
api_base = "{base}"
open_base = "{base}"
[oauth]
state_secret = "bench-state-secret-0123456789abcdef-0123"
# The simulator's clock stands still here, so states never expire: the cap
# must be out of reach (it is still checked on every sign-in).
max_pending_states = 100000000
[[accounts]]
appid = "wx0123456789abcdef"
secret = "benchsecret000000000000000000000"
tickets = []
{account_extra}
# The limits are in place (every proxied call and every anonymous request
# is charged to its bucket), set far above what the benchmark sends.
[limits]
proxy = {{ per_second = 100000000, burst = 100000000 }}
invalidate = {{ per_second = 100000000, burst = 100000000 }}
anonymous = {{ per_second = 100000000, burst = 100000000 }}
[[clients]]
name = "bench"
key_sha256 = "{hash}"
apps = ["*"]
"#,
        store = store.display(),
        base = sim.base_url(),
        hash = wxhub::auth::hash_key(key)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    );
    let config = wxhub::config::Config::from_toml_with_env(&config_text, &[], &|_| None)?;
    let clock = Arc::new(wxhub::clock::SimClock(sim.sim().clone()));
    let hub = wxhub::Application::build(config, clock).await?.spawn();
    Ok((hub, store))
}

/// A fresh SQLite file in the system temp dir, none of its files left.
fn new_store_path() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let store = std::env::temp_dir().join(format!(
        "wxhub-bench-{}-{}.db",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    remove_store(&store);
    store
}

/// Removes a SQLite store and its WAL files.
fn remove_store(store: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = store.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

async fn fetch_json(url: &str) -> anyhow::Result<serde_json::Value> {
    let uri: hyper::Uri = url.parse()?;
    let host = uri.authority().context("url has a host")?.to_string();
    let stream = TcpStream::connect(&host).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let req = hyper::Request::get(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())?;
    let body = sender
        .send_request(req)
        .await?
        .into_body()
        .collect()
        .await?
        .to_bytes();
    Ok(serde_json::from_slice(&body)?)
}

/// Replaces (or appends) the section between `<!-- bench:NAME -->` markers.
fn write_section(path: &PathBuf, name: &str, section: &str) -> anyhow::Result<()> {
    let start = format!("<!-- bench:{name} -->");
    let end = format!("<!-- /bench:{name} -->");
    let mut doc = std::fs::read_to_string(path).unwrap_or_else(|_| {
        "# Benchmarks\n\nWritten by `bench/` (`cargo run --release -p wxhub-bench -- <name>`). \
Timings are compared as ratios measured side by side in one run: this machine is shared and \
noisy, so only the ratios are meaningful.\n"
            .to_string()
    });
    let block = format!("{start}\n{section}{end}\n");
    match (doc.find(&start), doc.find(&end)) {
        (Some(s), Some(e)) if e > s => doc.replace_range(s..e + end.len() + 1, &block),
        _ => {
            doc.push('\n');
            doc.push_str(&block);
        }
    }
    std::fs::write(path, doc).with_context(|| format!("writing {}", path.display()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (name, section) = match cli.bench {
        Bench::Sim => ("sim", bench_sim(&cli).await?),
        Bench::Hub => ("hub", bench_hub(&cli).await?),
        Bench::Oauth => ("oauth", bench_oauth(&cli).await?),
        Bench::Scale {
            ref accounts,
            ref hub_bin,
        } => (
            "scale",
            scale::bench_scale(&cli, accounts, hub_bin.clone()).await?,
        ),
        Bench::SharedScale {
            ref accounts,
            window,
            ref hub_bin,
        } => (
            "shared-scale",
            shared_scale::bench_shared_scale(accounts, window, hub_bin.clone()).await?,
        ),
        Bench::Push => ("push", push::bench_push(&cli).await?),
        Bench::Console { accounts } => ("console", console::bench_console(&cli, accounts).await?),
        Bench::Count {
            contender,
            requests,
        } => {
            bench_count(&contender, requests).await?;
            return Ok(());
        }
    };
    print!("{section}");
    write_section(&cli.out, name, &section)?;
    Ok(())
}
