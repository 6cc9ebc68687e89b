//! Building the hub is separate from serving it: [`Application::build`]
//! opens the store, loads credentials and binds the listener (port 0 works);
//! [`Application::run_until_stopped`] serves and refreshes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::auth::AuthedClient;
use crate::clock::Clock;
use crate::config::{ClientConfig, Config, StoreConfig};
use crate::credentials::Credentials;
use crate::error::ApiError;
use crate::limits::{ClientLimit, Limiter};
use crate::metrics::Metrics;
use crate::seal::Sealer;
use crate::shared::Shared;
use crate::store::{RedisStore, SqliteStore, Store};
use crate::supervise::Supervisor;

/// Shared state of a running hub; handlers get it as `State<Arc<App>>`.
#[derive(Debug)]
pub struct App {
    /// The configuration it was built from, but for its accounts, which
    /// moved into `creds` (and `push`).
    pub config: Config,
    /// Every account's credentials.
    pub creds: Arc<Credentials>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// The clock every decision reads.
    pub clock: Arc<dyn Clock>,
    /// The pooled HTTP client to the platform, shared by the proxy and the
    /// WeChat client below. Never follows redirects.
    pub upstream: crate::upstream::UpstreamClient,
    /// The hub's public base URL (web-authorization callbacks).
    pub public_url: String,
    /// The WeChat client (web authorization).
    pub wx: wx_api::Client,
    /// The store.
    pub store: Arc<Store>,
    /// Rate limits per client and per client IP.
    pub limiter: Limiter,
    /// The push gateway (`/push/{appid}`) and its delivery worker.
    pub push: Arc<crate::push::Gateway>,
    /// Accounts and clients changed at run time.
    pub directory: Arc<crate::directory::Directory>,
    /// The operator's console: its sessions and sign-in limit.
    pub console: crate::console::Console,
}

impl App {
    /// The clients in force: the file's, as changed at run time.
    pub fn clients(&self) -> Arc<[ClientConfig]> {
        self.directory.clients()
    }

    /// Charges one request to a client's bucket: 429 with `Retry-After`
    /// when it is over its rate.
    ///
    /// # Errors
    /// [`ApiError::rate_limited`].
    pub async fn charge(&self, client: &AuthedClient, limit: ClientLimit) -> Result<(), ApiError> {
        let rate = match limit {
            ClientLimit::Proxy => client.limits.proxy,
            ClientLimit::Invalidate => client.limits.invalidate,
            ClientLimit::ComponentStart => self.config.limits.anonymous,
        };
        self.limiter
            .client(&client.name, limit, rate)
            .await
            .map_err(|l| {
                let (label, what) = match limit {
                    ClientLimit::Proxy => ("proxy", "proxied calls"),
                    ClientLimit::Invalidate => ("invalidate", "invalidate reports"),
                    ClientLimit::ComponentStart => {
                        ("component_start", "authorization-page starts")
                    }
                };
                self.metrics.inc(
                    "wxhub_rate_limited_total",
                    &[("limit", label), ("client", &client.name)],
                );
                ApiError::rate_limited(
                    format!(
                        "client {} sends {what} faster than its limit (clients.limits); retry after {} s",
                        client.name,
                        l.retry_after_secs()
                    ),
                    l.retry_after_secs(),
                )
            })
    }
}

/// A hub that is bound but not yet serving.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    app: Arc<App>,
}

impl Application {
    /// Opens the store, loads stored credentials (fetching nothing) and binds
    /// `config.listen`.
    ///
    /// # Errors
    /// If the store cannot be opened or the address bound, with the step named.
    pub async fn build(mut config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Application> {
        let sealer = Arc::new(Sealer::new(&config.store_keys));
        let (store, shared) = match &config.store {
            StoreConfig::Sqlite { path } => (
                Arc::new(Store::Sqlite(
                    SqliteStore::open_sealed(path, sealer)
                        .with_context(|| format!("store.path: cannot open {}", path.display()))?,
                )),
                None,
            ),
            StoreConfig::Redis {
                lease, partitions, ..
            } => {
                let redis = connect_redis(&config.store).await?.with_sealer(sealer);
                redis
                    .prepare_keys()
                    .await
                    .context("store: checking the encryption key")?;
                let instance = format!(
                    "{}-{}",
                    std::process::id(),
                    hex::encode(rand::random::<[u8; 4]>())
                );
                let agreed = Shared::agree_partitions(&redis, *partitions)
                    .await
                    .context("store: agreeing on the lease partitions")?;
                if agreed != *partitions {
                    tracing::warn!(
                        configured = *partitions,
                        stored = agreed,
                        "store.lease_partitions differs from the count the first instance stored in redis; using the stored count (see docs/operations.md to change it)"
                    );
                }
                let shared = Shared::with_partitions(redis.clone(), instance, *lease, agreed);
                (Arc::new(Store::Redis(redis)), Some(Arc::new(shared)))
            }
        };
        let hosts = wx_api::Hosts::new(&config.upstream.api_base, &config.upstream.open_base)
            .context("upstream: invalid base URL")?;
        // One pool for the proxy and every WeChat call: hyper's client, without
        // reqwest's per-request layers, which cost more than the rest of a call.
        let timeout = config.upstream.timeout;
        let upstream = crate::upstream::client(timeout);
        let transport = crate::upstream::Transport::new(upstream.clone(), timeout, 4 * 1024 * 1024);
        let wx = wx_api::Client::with_http(hosts, Arc::new(transport));
        let metrics = Arc::new(Metrics::default());
        let directory = Arc::new(crate::directory::Directory::new(
            &config.accounts,
            &config.clients,
        ));
        // Moved, not copied: with 100,000 accounts a second copy is tens
        // of megabytes.
        let creds = Credentials::new(
            std::mem::take(&mut config.accounts),
            store.clone(),
            shared,
            clock.clone(),
            wx.clone(),
            metrics.clone(),
            config.refresh.clone(),
        )
        .await;
        let limiter = Limiter::new(store.redis().cloned());
        let console = match store.redis() {
            Some(redis) => {
                crate::console::Console::shared(redis.clone(), config.admin_key_sha256.as_ref())
            }
            None => crate::console::Console::default(),
        };
        let push = Arc::new(
            crate::push::Gateway::new(
                &config.push,
                store.clone(),
                clock.clone(),
                metrics.clone(),
                creds.clone(),
                wx.clone(),
                &config.components,
            )
            .context("accounts[].push")?,
        );
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listen: cannot bind {}", config.listen))?;
        let bound = listener.local_addr().context("reading the bound address")?;
        let public_url = config
            .oauth
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"));
        let app = Arc::new(App {
            config,
            creds,
            metrics,
            clock,
            upstream,
            public_url,
            wx,
            store,
            limiter,
            push,
            directory,
            console,
        });
        // What the admin API changed since the file was written.
        app.directory
            .load(&app)
            .await
            .context("reading the accounts and clients changed at run time")?;
        Ok(Application { listener, app })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The shared state.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Serves HTTP and runs the refresher until `shutdown` completes.
    ///
    /// # Errors
    /// If serving fails.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut tasks = Supervisor::default();
        let creds = &self.app.creds;
        if self.app.config.refresh.background {
            tasks.spawn("refresher", creds.clone().run_refresher(rx.clone()));
        }
        // Leases and notes run even without the background refresher: a
        // follower must keep up with the owner either way.
        if creds.shared().is_some() {
            tasks.spawn("lease loop", creds.clone().run_leases(rx.clone()));
            tasks.spawn("subscriber", creds.clone().run_subscriber(rx.clone()));
            if let Some(sh) = creds.shared() {
                let redis = sh.redis().clone();
                let rx = rx.clone();
                tasks.spawn("sentinel", async move { redis.follow_sentinel(rx).await });
            }
            tasks.spawn(
                "directory watcher",
                self.app
                    .directory
                    .clone()
                    .run_watcher(self.app.clone(), rx.clone()),
            );
        }
        // Always: an account given push settings at run time needs it.
        tasks.spawn(
            "push deliverer",
            self.app.push.clone().run_worker_thread(rx.clone()),
        );
        tasks.spawn(
            "revoker",
            crate::component::run_revoker(self.app.clone(), rx.clone()),
        );
        tasks.spawn("sweeper", sweep_expired(self.app.clone(), rx));
        let router = crate::router::router(self.app.clone());
        let config = self.app.config.http.clone();
        let served = tokio::select! {
            served = crate::server::serve(self.listener, router, config, shutdown) => {
                served.context("serving HTTP")
            }
            end = tasks.first_end() => {
                tracing::error!(task = %end, "a background task stopped: shutting down rather than serving without it");
                Err(anyhow::anyhow!("{end}; the hub stopped rather than serve stale credentials"))
            }
        };
        let _ = tx.send(true);
        tasks.stop(Duration::from_secs(10)).await;
        if let Some(sh) = creds.shared() {
            // Another instance takes over at once rather than after the
            // lease time.
            sh.release_all().await;
        }
        self.app.store.close().await;
        served
    }

    /// Serves in the background; the returned handle stops it when dropped.
    pub fn spawn(self) -> RunningHub {
        let addr = self.addr();
        let app = self.app.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = self
                .run_until_stopped(async {
                    let _ = rx.await;
                })
                .await;
        });
        RunningHub {
            addr,
            app,
            stop: Some(tx),
            task: Some(task),
        }
    }
}

/// Forgets expired web-authorization states and hand-over tickets once a
/// minute, so what anonymous visitors leave behind does not accumulate.
async fn sweep_expired(app: Arc<App>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = shutdown.changed() => return,
        }
        match app.store.sweep(app.clock.now()).await {
            Ok((0, 0)) => {}
            Ok((states, tickets)) => {
                tracing::debug!(states, tickets, "swept expired sign-in states and tickets");
            }
            Err(e) => tracing::warn!(error = %e, "cannot sweep expired sign-in states"),
        }
        let keep_from = app.clock.now() - app.config.refresh.history_days * 86400;
        match app.store.history_sweep(keep_from).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(
                entries = n,
                "forgot refresh history past refresh.history_days"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot sweep the refresh history"),
        }
        let live: Vec<(String, String)> = app
            .push
            .accounts()
            .iter()
            .flat_map(|a| {
                a.config
                    .subscribers
                    .iter()
                    .map(|s| (a.appid.as_str().to_string(), s.name.clone()))
            })
            .collect();
        match app
            .store
            .push_sweep(app.clock.now(), &live, app.config.push.keep_secs)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(
                records = n,
                "forgot push messages (SQLite) or gone subscribers' queues (Redis) past push.keep_secs"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot sweep push messages"),
        }
    }
}

/// A hub serving in the background.
#[derive(Debug)]
pub struct RunningHub {
    addr: SocketAddr,
    app: Arc<App>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningHub {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The shared state.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Stops serving and waits for in-flight requests and the refresher.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningHub {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Connects to the configured Redis: the URL's server, or the primary the
/// Sentinels name.
///
/// # Errors
/// If Redis cannot be reached, named by the configuration key to look at.
pub async fn connect_redis(store: &crate::config::StoreConfig) -> anyhow::Result<RedisStore> {
    let crate::config::StoreConfig::Redis {
        url,
        prefix,
        tls_ca,
        sentinel,
        ..
    } = store
    else {
        anyhow::bail!("store.kind: not a redis store");
    };
    Ok(match sentinel {
        None => RedisStore::connect_with(&url.0, prefix, tls_ca.as_ref().map(|p| p.0.as_slice()))
            .await
            .context("store.url: cannot connect to redis")?,
        Some(s) => RedisStore::connect_sentinel(&s.nodes, &s.master, &url.0, prefix)
            .await
            .context("store.sentinels: no sentinel names a reachable primary")?,
    })
}
