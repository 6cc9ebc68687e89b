//! `wxhub dev`: the simulator and the hub together on loopback, with a demo
//! account, a generated client key and a curl line that works.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use wx_api::{AppId, AppSecret};

use crate::auth::{hash_key, new_key};
use crate::clock::SimClock;
use crate::config::{
    AccountConfig, ClientConfig, Config, PushConfig, PushMode, RefreshSettings, StoreConfig,
    Subscriber, SubscriberSecret, TicketKind, TokenMode, Upstream,
};

/// A running dev environment.
#[derive(Debug)]
pub struct DevEnv {
    /// The simulator.
    pub sim: wx_sim::RunningSim,
    /// The hub.
    pub hub: crate::RunningHub,
    /// The demo account.
    pub appid: String,
    /// The demo third-party platform.
    pub platform: String,
    /// The account authorized to it at start.
    pub shop: String,
    /// The generated client key (shown once).
    pub client_key: String,
    /// The generated admin key (shown once).
    pub admin_key: String,
    /// The demo business page.
    pub demo_url: String,
    _demo: AbortOnDrop,
    _store: TempDir,
}

/// A directory of its own per dev environment, removed with it: two
/// environments in one process (tests) never share a store.
#[derive(Debug)]
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<TempDir> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wxhub-dev-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Stops the demo page's task with its owner.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the simulator with the demo world and a hub configured for it. The
/// hub reads the simulator's clock, so `POST /_sim/clock/advance` moves both.
///
/// # Errors
/// If a port cannot be bound or the store cannot be opened.
pub async fn start(
    hub_listen: SocketAddr,
    sim_listen: SocketAddr,
    demo_listen: SocketAddr,
) -> anyhow::Result<DevEnv> {
    let world = wx_sim::World::demo();
    let demo = world
        .accounts
        .iter()
        .find(|a| a.kind == wx_sim::world::AccountKind::Official)
        .context("demo world has an official account")?
        .clone();
    let platform = world
        .components
        .first()
        .context("demo world has a third-party platform")?
        .clone();
    let shop = world
        .accounts
        .iter()
        .filter(|a| a.kind == wx_sim::world::AccountKind::Official)
        .nth(1)
        .context("demo world has a second official account")?
        .appid
        .clone();
    let sim = wx_sim::Simulator::bind(world, sim_listen)
        .await
        .with_context(|| format!("--sim-listen: cannot bind {sim_listen}"))?;
    let demo_listener = tokio::net::TcpListener::bind(demo_listen)
        .await
        .with_context(|| format!("--demo-listen: cannot bind {demo_listen}"))?;
    let demo_url = format!("http://{}", demo_listener.local_addr()?);
    let client_key = new_key();
    let admin_key = new_key();
    let push_secret = new_key();
    let push = demo_push(&demo, &demo_url, &push_secret)?;
    // A fresh store each time: the demo world (and so every token) is new.
    let store_dir = TempDir::new()?;
    let store = store_dir.0.join("wxhub.db");
    let platform_config = crate::config::ComponentConfig {
        appid: AppId::parse(platform.appid.clone()).context("demo platform appid")?,
        secret: AppSecret::new(platform.secret.clone()),
        name: platform.name.clone(),
        token: wx_api::PushToken::new(platform.token.clone()),
        encoding_aes_key: wx_api::EncodingAesKey::new(platform.encoding_aes_key.clone()),
        previous_encoding_aes_key: None,
        previous_key_until: 0,
        return_origins: vec![demo_url.clone()],
        tickets: vec![TicketKind::Jsapi],
        jssdk_domains: vec!["127.0.0.1".into(), "localhost".into()],
        oauth_return_origins: vec![demo_url.clone()],
        push: None,
    };
    let mut config = Config {
        listen: hub_listen,
        admin_key_sha256: Some(hash_key(&admin_key)),
        store: StoreConfig::Sqlite { path: store },
        store_keys: crate::seal::StoreKeys::default(),
        upstream: Upstream {
            api_base: sim.base_url(),
            open_base: sim.base_url(),
            timeout: std::time::Duration::from_secs(5),
            mp_base: sim.base_url(),
        },
        refresh: RefreshSettings::default(),
        oauth: crate::config::OAuthSettings {
            public_url: None,
            state_secret: new_key().into_bytes(),
            // One process: an account added at run time may sign people in.
            state_secret_given: true,
            state_ttl_secs: 600,
            ticket_ttl_secs: 60,
            profile_max_age_secs: 86400,
            max_pending_states: 20_000,
        },
        http: Default::default(),
        limits: Default::default(),
        metrics: Default::default(),
        push: Default::default(),
        accounts: vec![AccountConfig {
            appid: AppId::parse(demo.appid.clone()).context("demo appid")?,
            secret: AppSecret::new(demo.secret.clone()),
            name: demo.name.clone(),
            token_mode: TokenMode::Stable,
            tickets: vec![TicketKind::Jsapi],
            jssdk_domains: vec!["127.0.0.1".into(), "localhost".into()],
            kind: crate::config::AccountKind::Official,
            oauth_return_origins: vec![demo_url.clone()],
            push: Some(push),
            via: crate::config::Via::Own,
            paused: false,
        }],
        clients: vec![ClientConfig {
            name: "dev".into(),
            key_sha256: hash_key(&client_key),
            apps: vec!["*".to_string()].into(),
            components: vec![platform.appid.clone()].into(),
            limits: Default::default(),
        }],
        components: vec![platform_config.clone()],
    };
    // A platform is an account of the hub too: its slot holds the
    // component token (as `Config` validation arranges for the file).
    config.accounts.push(platform_config.as_account());
    let clock = Arc::new(SimClock(sim.sim().clone()));
    let hub = crate::Application::build(config, clock).await?.spawn();
    // The simulated platform pushes this account's messages to the hub.
    reqwest::Client::new()
        .post(format!("{}/_sim/accounts/{}", sim.base_url(), demo.appid))
        .json(&serde_json::json!({"push_url": format!("{}/push/{}", hub.base_url(), demo.appid)}))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .context("pointing the simulator's push URL at the hub")?;
    connect_platform(
        &sim.base_url(),
        &hub.base_url(),
        &client_key,
        &platform.appid,
        &shop,
    )
    .await?;
    let demo_task = crate::demo::serve(
        demo_listener,
        hub.base_url(),
        sim.base_url(),
        demo.appid.clone(),
        client_key.clone(),
        push_secret,
    );
    Ok(DevEnv {
        sim,
        hub,
        appid: demo.appid,
        platform: platform.appid,
        shop,
        client_key,
        admin_key,
        demo_url,
        _demo: AbortOnDrop(demo_task),
        _store: store_dir,
    })
}

/// Points the demo platform's authorization-event URL at the hub, has the
/// simulated platform push a verify ticket at once (the regular push comes
/// every ten minutes), and has the shop's administrator authorize the
/// platform, so the hub holds a component token and one authorizer token
/// within a second of starting.
async fn connect_platform(
    sim: &str,
    hub: &str,
    client_key: &str,
    platform: &str,
    shop: &str,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let post = |path: String, body: serde_json::Value| {
        let http = http.clone();
        async move {
            let v: serde_json::Value = http
                .post(format!("{sim}{path}"))
                .json(&body)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)?
                .json()
                .await?;
            Ok::<_, reqwest::Error>(v)
        }
    };
    post(
        format!("/_sim/components/{platform}"),
        serde_json::json!({"event_url": format!("{hub}/component/{platform}/events")}),
    )
    .await
    .context("pointing the demo platform's event URL at the hub")?;
    let pushed = post(
        format!("/_sim/components/{platform}/ticket"),
        serde_json::json!({}),
    )
    .await
    .context("pushing the demo platform's verify ticket")?;
    anyhow::ensure!(
        pushed["delivered"] == true,
        "the hub did not take the demo platform's verify ticket"
    );
    // The ticket's arrival starts the component token's fetch; the
    // authorization's code is exchanged with that token, so wait for it
    // rather than have the platform's retry come five seconds later.
    let since = std::time::Instant::now();
    loop {
        let held = http
            .get(format!("{hub}/v1/components/{platform}/token"))
            .bearer_auth(client_key)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if held {
            break;
        }
        anyhow::ensure!(
            since.elapsed() < std::time::Duration::from_secs(10),
            "the hub fetched no component token for the demo platform"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let authorized = post(
        format!("/_sim/components/{platform}/authorize"),
        serde_json::json!({"authorizer_appid": shop}),
    )
    .await
    .context("authorizing the demo platform")?;
    anyhow::ensure!(
        authorized["event_delivered"] == true,
        "the hub did not take the demo shop's authorization: {authorized}"
    );
    Ok(())
}

/// The demo account's push gateway: the simulator's token and key (safe
/// mode), and the demo page as the one subscriber, so a follow shows there.
fn demo_push(
    demo: &wx_sim::world::Account,
    demo_url: &str,
    secret: &str,
) -> anyhow::Result<PushConfig> {
    let token = demo
        .push_token
        .clone()
        .context("demo account has a push token")?;
    let key = demo
        .encoding_aes_key
        .clone()
        .context("demo account has an EncodingAESKey")?;
    Ok(PushConfig {
        token: wx_api::PushToken::new(token),
        mode: PushMode::Safe,
        encoding_aes_key: Some(wx_api::EncodingAesKey::new(key)),
        previous_encoding_aes_key: None,
        previous_key_until: 0,
        retry_window_secs: 86_400,
        max_backlog: 10_000,
        profile_cache_secs: 3_600,
        profile_fetches_per_minute: 60,
        reply_deadline: std::time::Duration::from_millis(4_000),
        max_clock_skew_secs: 600,
        subscribers: vec![Subscriber {
            name: "demo".into(),
            url: url::Url::parse(&format!("{demo_url}/push")).context("demo push URL")?,
            secret: SubscriberSecret::new(secret),
            message_types: Vec::new(),
            events: Vec::new(),
            timeout: std::time::Duration::from_secs(5),
            replier: false,
        }],
    })
}

/// Runs `wxhub dev` until Ctrl-C or SIGTERM.
///
/// # Errors
/// As [`start`].
pub async fn run(
    hub_listen: SocketAddr,
    sim_listen: SocketAddr,
    demo_listen: SocketAddr,
) -> anyhow::Result<()> {
    let env = start(hub_listen, sim_listen, demo_listen).await?;
    let hub = env.hub.base_url();
    let sim = env.sim.base_url();
    let key = &env.client_key;
    let appid = &env.appid;
    let lines = [
        "wxhub dev: the WeChat simulator and the hub, on loopback, with a demo account."
            .to_string(),
        String::new(),
        format!(
            "  hub         {hub}  (console {hub}/ in a browser: sign in with the admin key; /readyz, /metrics, /openapi.json)"
        ),
        format!("  simulator   {sim}  (control API under /_sim/, see docs/simulator.md)"),
        format!(
            "  demo page   {}  (web authorization: sign in as a simulated person)",
            env.demo_url
        ),
        format!("  account     {appid}"),
        format!(
            "  platform    {}  (a third-party platform; {} is authorized to it)",
            env.platform, env.shop
        ),
        format!("  client key  {key}"),
        format!("  admin key   {}", env.admin_key),
        String::new(),
        "Try:".to_string(),
        format!("  curl -s -H 'Authorization: Bearer {key}' {hub}/v1/apps/{appid}/access_token"),
        format!(
            "  curl -s -H 'Authorization: Bearer {key}' {hub}/v1/apps/{appid}/proxy/cgi-bin/user/get"
        ),
        format!(
            "  curl -s -H 'Authorization: Bearer {key}' {hub}/v1/apps/{}/access_token   (an authorizer token, through the platform)",
            env.shop
        ),
        format!(
            "  open {hub}/component/{}/authorize?return={}   (authorize another account, as its administrator would)",
            env.platform, env.demo_url
        ),
        format!(
            "  curl -s -X POST {sim}/_sim/clock/advance -H 'content-type: application/json' -d '{{\"seconds\":7000}}'"
        ),
        format!(
            "  curl -s -X POST {sim}/_sim/people/bob/follow -H 'content-type: application/json' -d '{{\"appid\":\"{appid}\"}}'   (then open {}/messages)",
            env.demo_url
        ),
        String::new(),
        format!("listening on {hub}"),
        "Press Ctrl-C to stop.".to_string(),
    ];
    println!("{}", lines.join("\n"));
    // SIGTERM too: a supervisor's stop must still remove the temporary store.
    crate::cli::shutdown_signal().await;
    let DevEnv { sim, hub, .. } = env;
    hub.shutdown().await;
    sim.shutdown().await;
    Ok(())
}
