//! `push`: pushes acknowledged per second by the hub's `/push/{appid}`
//! (signature checked, decrypted in safe mode, parsed, deduplicated and
//! written to SQLite before the answer, one subscriber fed meanwhile)
//! against a trivial handler that answers `success` to the same requests,
//! alternating rounds in one run; and the hub's p99 acknowledgement latency.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::{Cli, Round, durable, median, remove_store, start_hub};

const APPID: &str = "wx0123456789abcdef";
const TOKEN: &str = "benchpushtoken";
const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
/// The simulator's clock stands still at the world's start.
const NOW: i64 = 1_700_000_000;

/// A distinct message per request: MsgIds never repeat across rounds and
/// contenders, so every push the hub sees is new and is written.
static NEXT_MSG: AtomicU64 = AtomicU64::new(1);

fn sig(parts: &[&str]) -> String {
    wx_sim::push::crypto::signature(parts)
}

/// One push as the platform sends it: (path and query, body).
fn push(safe: bool, conn: usize) -> (String, String) {
    let id = NEXT_MSG.fetch_add(1, Ordering::Relaxed);
    // Sixteen people per connection: deliveries keep per-person order, so
    // one person would serialize the subscriber's side.
    let openid = format!("oBENCH{conn:04}x{:04}", id % 16);
    let xml = format!(
        "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{NOW}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[bench message {id}]]></Content><MsgId>{id}</MsgId></xml>"
    );
    let ts = NOW.to_string();
    let nonce = format!("{id}");
    let signature = sig(&[TOKEN, &ts, &nonce]);
    if !safe {
        return (
            format!(
                "/push/{APPID}?signature={signature}&timestamp={ts}&nonce={nonce}&openid={openid}"
            ),
            xml,
        );
    }
    let enc = wx_sim::push::crypto::encrypt(&xml, APPID, KEY).expect("encrypts");
    let msg_sig = sig(&[TOKEN, &ts, &nonce, &enc]);
    (
        format!(
            "/push/{APPID}?signature={signature}&timestamp={ts}&nonce={nonce}&openid={openid}&encrypt_type=aes&msg_signature={msg_sig}"
        ),
        format!(
            "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><Encrypt><![CDATA[{enc}]]></Encrypt></xml>"
        ),
    )
}

/// Drives `connections` keep-alive connections POSTing pushes for
/// `duration`. Every answer must be 200 with `success` (plain) or an empty
/// body (safe), so a contender that answers errors fast cannot win.
async fn load(
    addr: SocketAddr,
    safe: bool,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Round> {
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for conn in 0..connections {
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, c) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(c);
            let mut latencies = Vec::with_capacity(50_000);
            let mut bad = 0u64;
            while Instant::now() < deadline {
                let (path, body) = push(safe, conn);
                let req = hyper::Request::post(path)
                    .header("host", addr.to_string())
                    .header("content-type", "text/xml")
                    .body(Full::new(Bytes::from(body)))?;
                let started = Instant::now();
                let resp = sender.send_request(req).await?;
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await?.to_bytes();
                latencies.push(started.elapsed().as_micros() as u64);
                let want: &[u8] = if safe { b"" } else { b"success" };
                if status != 200 || body.as_ref() != want {
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

/// Answers every push `success` (plain) or empty (safe), reading the body:
/// the least any push endpoint can do.
async fn trivial(safe: bool) -> anyhow::Result<SocketAddr> {
    let app = axum::Router::new().route(
        "/push/{appid}",
        axum::routing::post(move |body: Bytes| async move {
            drop(body);
            if safe { "" } else { "success" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// A subscriber that takes every delivery.
async fn subscriber(count: Arc<AtomicU64>) -> anyhow::Result<SocketAddr> {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: Bytes| {
            let count = count.clone();
            async move {
                drop(body);
                count.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// Pushes a round had answered.
fn answered(r: &Round, d: Duration) -> u64 {
    (r.rps * d.as_secs_f64()).round() as u64
}

/// Waits until the subscriber has every push the hubs acknowledged so far,
/// so that no round runs beside the deliveries of an earlier one (they
/// would slow the trivial handler and flatter the ratio). Returns the
/// deliveries per second while it waited.
async fn drain(delivered: &AtomicU64, acked: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    let before = delivered.load(Ordering::Relaxed);
    while delivered.load(Ordering::Relaxed) < acked {
        if started.elapsed() > Duration::from_secs(300) {
            bail!(
                "the subscriber has {} of {acked} acknowledged pushes after 300 s",
                delivered.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed().as_secs_f64().max(0.001);
    Ok((delivered.load(Ordering::Relaxed) - before) as f64 / took)
}

fn row(name: &str, r: &Round) -> String {
    format!(
        "| {name} | {:.0} | {} µs | {} µs |\n",
        r.rps, r.p50_us, r.p99_us
    )
}

/// Runs the push bench and returns its report section.
pub(crate) async fn bench_push(cli: &Cli) -> anyhow::Result<String> {
    let world = wx_sim::World::from_toml_str(crate::BENCH_WORLD)?;
    let sim = wx_sim::Simulator::spawn(world).await?;
    let delivered = Arc::new(AtomicU64::new(0));
    let sub = subscriber(delivered.clone()).await?;
    let account = |mode: &str| {
        let key = if mode == "plain" {
            String::new()
        } else {
            format!("encoding_aes_key = \"{KEY}\"\n")
        };
        format!(
            "[accounts.push]\ntoken = \"{TOKEN}\"\nmode = \"{mode}\"\n{key}max_backlog = 1000000\n\
             [[accounts.push.subscribers]]\nname = \"sink\"\nurl = \"http://{sub}/hook\"\nsecret = \"bench-subscriber-secret\"\n"
        )
    };
    let key = wxhub::auth::new_key();
    let (plain_hub, plain_store) = start_hub(&sim, &key, &account("plain")).await?;
    let (safe_hub, safe_store) = start_hub(&sim, &key, &account("safe")).await?;
    let (plain_trivial, safe_trivial) = (trivial(false).await?, trivial(true).await?);
    let (plain_durable, plain_durable_store) = durable::minimal_durable(false).await?;
    let (safe_durable, safe_durable_store) = durable::minimal_durable(true).await?;
    // (address, safe mode, a hub whose deliveries are waited for), in the
    // order of each round.
    // Each hub right after its trivial handler, as before the durable
    // handler was added; the durable handler after the hub's deliveries
    // have drained, while the machine is quiet.
    let contenders = [
        (plain_trivial, false, false),
        (plain_hub.addr(), false, true),
        (plain_durable, false, false),
        (safe_trivial, true, false),
        (safe_hub.addr(), true, true),
        (safe_durable, true, false),
    ];
    let dur = Duration::from_secs(cli.seconds);
    let warm = Duration::from_millis(500);
    let mut acked = 0u64;
    let mut drains = Vec::new();
    for (addr, safe, hub) in contenders {
        let r = load(addr, safe, cli.connections, warm).await?;
        if hub {
            acked += answered(&r, warm);
            drain(&delivered, acked).await?;
        }
    }
    let mut rounds: [Vec<Round>; 6] = Default::default();
    for _ in 0..cli.rounds {
        for (i, (addr, safe, hub)) in contenders.into_iter().enumerate() {
            let r = load(addr, safe, cli.connections, dur).await?;
            rounds[i].push(r);
            if hub {
                acked += answered(&r, dur);
                drains.push(drain(&delivered, acked).await?);
            }
        }
    }
    drains.sort_by(f64::total_cmp);
    let drain_rate = drains.get(drains.len() / 2).copied().unwrap_or(0.0);
    let [t_plain, h_plain, d_plain, t_safe, h_safe, d_safe] = rounds.map(median);
    let got = delivered.load(Ordering::Relaxed);
    drop((plain_hub, safe_hub));
    for store in [
        &plain_store,
        &safe_store,
        &plain_durable_store,
        &safe_durable_store,
    ] {
        remove_store(store);
    }
    let (rp, rs) = (h_plain.rps / t_plain.rps, h_safe.rps / t_safe.rps);
    let (dp, ds) = (d_plain.rps / t_plain.rps, d_safe.rps / t_safe.rps);
    let verdict = |r: f64| if r >= 0.5 { "meets" } else { "MISSES" };
    Ok(format!(
        "## Push gateway: acknowledged pushes vs a handler that answers `success`\n\n\
`cargo run --release -p wxhub-bench -- push` ({rounds} alternating rounds of {secs} s, {conns} keep-alive connections, \
hub, subscriber and load generator in one process; median round shown). Every push is a new message (its own MsgId) from one of \
sixteen people per connection; the hub checks the signature (and in safe mode the msg_signature and AES), parses, \
commits the message (its insert is the duplicate check; the row names the subscribers it is queued for) to SQLite before it answers, while its worker delivers \
to one subscriber (a trivial handler) and moves that subscriber's cursor past what was delivered. The trivial handler reads the same bodies and answers at once. \
The minimal durable handler is the least an endpoint can do that has each push on disk before it answers: the body handed to one writer thread that \
commits what is queued as one SQLite transaction (one insert per push; the hub's file settings, batching and checkpointer), then the answer; \
no signature, no parse, no duplicate check, no subscriber.\n\n\
| server | pushes/s | p50 | p99 |\n|---|---:|---:|---:|\n{}{}{}{}{}{}\n\
**Plain mode: {rp:.2}×** the trivial handler's rate (target ≥ 0.5×: {}). **Safe mode: {rs:.2}×** ({}).  \n\
The minimal durable handler reaches **{dp:.2}×** (plain) and **{ds:.2}×** (safe) of the trivial handler in the same rounds: \
the hub does **{hdp:.2}×** and **{hds:.2}×** of what a durable write alone allows here.  \n\
**p99 acknowledgement: {:.1} ms** (plain) and **{:.1} ms** (safe) under this load, against the platform's 5 s.  \n\
After each hub round the bench waits until the subscriber has every push acknowledged so far, so no round runs beside \
an earlier round's deliveries; the backlog drained at **{drain_rate:.0} deliveries/s** (median; the hub alone on the machine, \
one signed JSON POST per push, in per-person order), and the subscriber got all {got} acknowledged pushes.\n",
        row("trivial handler answering `success` (plain)", &t_plain),
        row(
            "minimal durable handler: one insert per push, committed in batches, then `success`",
            &d_plain
        ),
        row("wxhub `POST /push/{appid}`, plain mode", &h_plain),
        row("trivial handler answering an empty body (safe)", &t_safe),
        row(
            "minimal durable handler, answering an empty body (safe)",
            &d_safe
        ),
        row("wxhub `POST /push/{appid}`, safe mode (AES)", &h_safe),
        verdict(rp),
        verdict(rs),
        h_plain.p99_us as f64 / 1000.0,
        h_safe.p99_us as f64 / 1000.0,
        hdp = h_plain.rps / d_plain.rps,
        hds = h_safe.rps / d_safe.rps,
        rounds = cli.rounds,
        secs = cli.seconds,
        conns = cli.connections,
    ))
}
