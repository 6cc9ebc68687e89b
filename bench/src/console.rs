//! The console with many accounts: the overview's first page (HTML, time
//! lines and gauges of 50 accounts, the unhealthy first) against the JSON
//! list of the same 50 accounts (`GET /v1/apps?limit=50`), in the same run,
//! alternating rounds; and a search that must find one account.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::{Cli, Round, load, median};

/// Accounts given a wrong secret, so the overview has trouble to show.
const BROKEN: usize = 100;

fn appid(i: usize) -> String {
    format!("wx{i:016x}")
}

fn hex(k: &str) -> String {
    wxhub::auth::hash_key(k)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn get(addr: std::net::SocketAddr, path: &str, admin: &str) -> anyhow::Result<(u16, String)> {
    let r = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .bearer_auth(admin)
        .send()
        .await?;
    Ok((r.status().as_u16(), r.text().await?))
}

/// `cargo run --release -p wxhub-bench -- console --accounts 10000`.
pub async fn bench_console(cli: &Cli, n: usize) -> anyhow::Result<String> {
    let mut world = String::new();
    for i in 0..n {
        let a = appid(i);
        world.push_str(&format!(
            "[[accounts]]\nappid = \"{a}\"\nsecret = \"secret-{a}\"\n"
        ));
    }
    let sim = wx_sim::Simulator::spawn(wx_sim::World::from_toml_str(&world)?).await?;
    let admin = wxhub::auth::new_key();
    let store = std::env::temp_dir().join(format!("wxhub-bench-console-{}.db", std::process::id()));
    crate::remove_store(&store);
    let mut config = format!(
        "listen = \"127.0.0.1:0\"\nadmin_key_sha256 = \"{}\"\n\
         [store]\npath = \"{}\"\n\
         [upstream]\napi_base = \"{base}\"\nopen_base = \"{base}\"\n\
         [refresh]\ntick_ms = 200\n",
        hex(&admin),
        store.display(),
        base = sim.base_url(),
    );
    for i in 0..n {
        let a = appid(i);
        // The first BROKEN accounts get a wrong secret: 40125, unhealthy.
        let secret = if i < BROKEN {
            "wrong".to_string()
        } else {
            format!("secret-{a}")
        };
        config.push_str(&format!(
            "[[accounts]]\nappid = \"{a}\"\nsecret = \"{secret}\"\nname = \"Shop {i}\"\ntickets = []\n"
        ));
    }
    let config = wxhub::config::Config::from_toml_with_env(&config, &[], &|_| None)?;
    let clock = Arc::new(wxhub::clock::SimClock(sim.sim().clone()));
    let hub = wxhub::Application::build(config, clock).await?.spawn();
    let addr = hub.addr();

    // Every good account's token held, the broken ones failing.
    let began = Instant::now();
    loop {
        let (_, body) = get(addr, "/v1/apps?state=problem&limit=1", &admin).await?;
        let v: serde_json::Value = serde_json::from_str(&body)?;
        if v["total"].as_u64() == Some(BROKEN as u64) {
            break;
        }
        if began.elapsed() > Duration::from_secs(300) {
            bail!("not every token held after 300 s: {v}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let held_after = began.elapsed();

    // The first page shows the unhealthy first; a search finds one account.
    let (s, first) = get(addr, "/", &admin).await?;
    if s != 200
        || !first.contains(&format!("id=\"app-{}\"", appid(0)))
        || !first.contains("badge unhealthy\">unhealthy")
    {
        bail!("the overview's first page does not start with the unhealthy accounts");
    }
    let wanted = appid(n * 3 / 4);
    let search_started = Instant::now();
    let (s, found) = get(addr, &format!("/?q={wanted}"), &admin).await?;
    let search_ms = search_started.elapsed().as_secs_f64() * 1000.0;
    if s != 200
        || !found.contains(&format!("id=\"app-{wanted}\""))
        || !found.contains("1 accounts match")
    {
        bail!("search did not find {wanted}");
    }
    let by_name = format!("Shop {}", n / 2);
    let (_, named) = get(
        addr,
        &format!("/?q={}", by_name.replace(' ', "%20")),
        &admin,
    )
    .await?;
    if !named.contains(&format!("id=\"app-{}\"", appid(n / 2))) {
        bail!("search by name did not find {by_name}");
    }
    let page_bytes = first.len();
    let (_, json) = get(addr, "/v1/apps?limit=50", &admin).await?;
    let json_bytes = json.len();

    fn page_ok(status: u16, body: &[u8]) -> bool {
        let needle = b"class=\"card account\"";
        status == 200 && body.windows(needle.len()).any(|w| w == needle)
    }
    fn json_ok(status: u16, body: &[u8]) -> bool {
        status == 200 && body.starts_with(b"{\"apps\":[")
    }
    let auth: Arc<str> = format!("Bearer {admin}").into();
    let dur = Duration::from_secs(cli.seconds);
    let connections = cli.connections.min(4);
    let (mut pages, mut lists) = (Vec::new(), Vec::new());
    for _ in 0..cli.rounds {
        pages.push(
            load(
                addr,
                "/".into(),
                Some(auth.clone()),
                connections,
                dur,
                page_ok,
            )
            .await?,
        );
        lists.push(
            load(
                addr,
                "/v1/apps?limit=50".into(),
                Some(auth.clone()),
                connections,
                dur,
                json_ok,
            )
            .await?,
        );
    }
    let (page, list): (Round, Round) = (median(pages), median(lists));
    hub.shutdown().await;
    sim.shutdown().await;
    crate::remove_store(&store);
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(format!(
        "## The console with many accounts\n\n`cargo run --release -p wxhub-bench -- console --accounts {n}` (one in-process hub on SQLite with {n} accounts, {BROKEN} of them with a wrong secret so the first page is all trouble; every other token held, after {:.0} s; {} alternating rounds of {} s, {connections} connections, admin key).\n\n\
| | requests/s | p50 | p99 | body |\n|---|---:|---:|---:|---:|\n\
| overview, first page (`GET /`, 50 accounts, HTML + SVG) | {:.0} | {:.1} ms | {:.1} ms | {} KB |\n\
| JSON list, same 50 (`GET /v1/apps?limit=50`) | {:.0} | {:.1} ms | {:.1} ms | {} KB |\n\n\
The overview's first page takes **{:.2}×** the JSON list's median time (p50), in the same run. \
A search for one AppID among {n} (`GET /?q={wanted}`) found it, alone, in {search_ms:.0} ms; a search by name (`{by_name}`) found it too.\n\n",
        held_after.as_secs_f64(),
        cli.rounds,
        cli.seconds,
        page.rps,
        ms(page.p50_us),
        ms(page.p99_us),
        page_bytes / 1024,
        list.rps,
        ms(list.p50_us),
        ms(list.p99_us),
        json_bytes / 1024,
        page.p50_us as f64 / list.p50_us.max(1) as f64,
    ))
}
