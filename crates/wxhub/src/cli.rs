//! The `wxhub` command line.

mod admin;

#[cfg(feature = "dev")]
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::clock::{Clock, SystemClock};
use crate::config::Config;

/// wxhub: one service that holds WeChat tokens, runs web authorization and
/// relays pushes for every business server.
#[derive(Debug, Parser)]
#[command(name = "wxhub", version, about)]
pub struct Cli {
    /// Log lines as text (the default) or as one JSON object per line, for
    /// log collectors (Loki, Elasticsearch, CloudWatch).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = crate::telemetry::LogFormat::Text,
        env = "WXHUB_LOG_FORMAT"
    )]
    pub log_format: crate::telemetry::LogFormat,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the hub.
    Serve {
        /// Configuration file (TOML); `WXHUB__SECTION__KEY` variables override it.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Follow the virtual clock of a simulator (its `/_sim/clock` URL)
        /// instead of the system clock: for tests and offline development
        /// against `wxhub sim`, never for production.
        #[cfg(feature = "dev")]
        #[arg(long, value_name = "URL")]
        sim_clock: Option<String>,
    },
    /// Run the simulator and the hub together on loopback with a demo account.
    #[cfg(feature = "dev")]
    Dev {
        /// Hub address.
        #[arg(long, default_value = "127.0.0.1:8780")]
        listen: SocketAddr,
        /// Simulator address.
        #[arg(long, default_value = "127.0.0.1:9780")]
        sim_listen: SocketAddr,
        /// Demo business page address.
        #[arg(long, default_value = "127.0.0.1:8781")]
        demo_listen: SocketAddr,
    },
    /// Run the WeChat platform simulator.
    #[cfg(feature = "dev")]
    Sim(SimArgs),
    /// Ask a running hub for an account's access token.
    Token {
        /// The AppID.
        #[arg(long = "app", value_name = "APPID")]
        app: String,
        /// The hub's URL.
        #[arg(long, default_value = "http://127.0.0.1:8780", env = "WXHUB_URL")]
        hub: String,
        /// Name of the environment variable holding the client key.
        #[arg(long, default_value = "WXHUB_CLIENT_KEY")]
        key_env: String,
    },
    /// Explain a WeChat errcode and what to do about it.
    Explain {
        /// The errcode, e.g. 40164.
        code: i64,
    },
    /// Validate a configuration file.
    Check {
        /// Configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Also ask the platform once per account (a non-forced stable token,
        /// which leaves the classic tokens a running hub serves untouched)
        /// and ping Redis.
        #[arg(long)]
        online: bool,
    },
    /// Generate a client key and the line for the configuration.
    Key {
        /// Generate a store encryption key (`store.encryption_key`)
        /// instead: 64 hex digits, printed once.
        #[arg(long)]
        encryption: bool,
    },
    /// Add, change, remove and list accounts on a running hub (admin API).
    Accounts {
        #[command(flatten)]
        target: admin::Target,
        #[command(subcommand)]
        command: admin::Accounts,
    },
    /// Create, revoke and list clients on a running hub (admin API).
    Clients {
        #[command(flatten)]
        target: admin::Target,
        #[command(subcommand)]
        command: admin::Clients,
    },
    /// The newest account and client changes (admin API).
    Audit {
        #[command(flatten)]
        target: admin::Target,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

/// `wxhub sim`.
#[cfg(feature = "dev")]
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// World file (TOML). Without it a demo world is generated and printed.
    #[arg(long, value_name = "FILE")]
    pub world: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9780")]
    pub listen: SocketAddr,
}

/// Runs a parsed command line to completion.
///
/// # Errors
/// Any failure, with the flag or key it is about.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            config,
            #[cfg(feature = "dev")]
            sim_clock,
        } => {
            #[cfg(feature = "dev")]
            let clock: Arc<dyn Clock> = match sim_clock {
                Some(url) => crate::clock::RemoteSimClock::follow(&url).await?,
                None => Arc::new(SystemClock),
            };
            #[cfg(not(feature = "dev"))]
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            serve(config, clock).await
        }
        #[cfg(feature = "dev")]
        Command::Dev {
            listen,
            sim_listen,
            demo_listen,
        } => crate::dev::run(listen, sim_listen, demo_listen).await,
        #[cfg(feature = "dev")]
        Command::Sim(args) => sim(args).await,
        Command::Token { app, hub, key_env } => token(&app, &hub, &key_env).await,
        Command::Explain { code } => {
            println!("{}", explain(code));
            Ok(())
        }
        Command::Check { config, online } => check(config, online).await,
        Command::Accounts { target, command } => admin::accounts(&target, command).await,
        Command::Clients { target, command } => admin::clients(&target, command).await,
        Command::Audit { target, limit } => admin::audit(&target, limit).await,
        Command::Key { encryption: true } => {
            let key = crate::seal::EncryptionKey::generate();
            println!(
                "store encryption key (id {}; keep it in a secret manager: without it the store's tokens and secrets cannot be read): {}\n\n[store]\nencryption_key_env = \"WXHUB_STORE_KEY\"  # or encryption_key_file",
                key.id(),
                &*key.expose_hex()
            );
            Ok(())
        }
        Command::Key { encryption: false } => {
            let key = crate::auth::new_key();
            println!(
                "client key (give it to the business server; it is not stored anywhere): {key}\n\n[[clients]]\nname = \"CHANGE-ME\"\nkey_sha256 = \"{}\"\napps = [\"*\"]",
                hex::encode(crate::auth::hash_key(&key))
            );
            Ok(())
        }
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))
}

async fn serve(path: PathBuf, clock: Arc<dyn Clock>) -> anyhow::Result<()> {
    let config = load(&path)?;
    let accounts = config.accounts.len();
    let store = match &config.store {
        crate::config::StoreConfig::Sqlite { .. } => "sqlite",
        crate::config::StoreConfig::Redis { .. } => "redis",
    };
    let app = crate::Application::build(config, clock).await?;
    // stdout carries the bound address (port 0 picks one) for scripts;
    // the log says it too, for whoever reads only the logs.
    println!("listening on http://{}", app.addr());
    tracing::info!(address = %app.addr(), accounts, store, "serving");
    app.run_until_stopped(shutdown_signal()).await
}

/// SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

#[cfg(feature = "dev")]
async fn sim(args: SimArgs) -> anyhow::Result<()> {
    let world = match &args.world {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--world: cannot read {}", path.display()))?;
            wx_sim::World::from_toml_str(&text)
                .with_context(|| format!("--world {}", path.display()))?
        }
        None => {
            let w = wx_sim::World::demo();
            // The demo world's secrets are generated now and exist nowhere
            // else: print them, or nobody can use the simulator.
            println!(
                "# No --world given: a demo world, generated now.\n{}",
                w.to_toml_string()
            );
            w
        }
    };
    let running = wx_sim::Simulator::bind(world, args.listen)
        .await
        .with_context(|| format!("--listen: cannot bind {}", args.listen))?;
    println!("wxsim listening on {}", running.base_url());
    shutdown_signal().await;
    running.shutdown().await;
    Ok(())
}

async fn token(app: &str, hub: &str, key_env: &str) -> anyhow::Result<()> {
    let key = std::env::var(key_env)
        .map_err(|_| anyhow::anyhow!("--key-env: set {key_env} to a client key"))?;
    let url = format!("{}/v1/apps/{app}/access_token", hub.trim_end_matches('/'));
    let resp = reqwest::Client::new()
        .get(&url)
        .bearer_auth(key)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("--hub: cannot reach {hub}: {}", e.without_url()))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.context("the hub's answer is not JSON")?;
    if !status.is_success() {
        bail!(
            "{status}: {}",
            body["error"]["message"].as_str().unwrap_or("no message")
        );
    }
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(())
}

/// The text `wxhub explain CODE` prints.
pub fn explain(code: i64) -> String {
    let c = wx_api::ErrCode::from_i64(code);
    let action = match c.action() {
        wx_api::Action::RefreshTokenAndRetryOnce => {
            "refresh the token (report it to wxhub) and retry once".to_string()
        }
        wx_api::Action::BackOff { .. } => {
            "stop calling this API until the window ends; never retry in a loop".to_string()
        }
        wx_api::Action::RetryWithBackoff => "retry with exponential backoff".to_string(),
        wx_api::Action::FixConfiguration(part) => format!(
            "fix the configuration: {}",
            match part {
                wx_api::ConfigPart::AppId => "the AppID",
                wx_api::ConfigPart::AppSecret => "the AppSecret",
                wx_api::ConfigPart::IpWhitelist { .. } =>
                    "the API IP whitelist (add the IP the errmsg names)",
                wx_api::ConfigPart::SecretFrozen => "unfreeze the AppSecret in the console",
                wx_api::ConfigPart::AdminConfirmation => "an admin must approve this IP",
                wx_api::ConfigPart::VerifyTicket =>
                    "the component's authorization-event URL: verify-ticket pushes are not arriving",
                _ => "see the explanation above",
            }
        ),
        wx_api::Action::Reauthorize => {
            "send the person through web authorization again".to_string()
        }
        _ => "do not retry: fix the call or handle the condition".to_string(),
    };
    format!(
        "{code}: {}\n{}\nWhat to do: {action}",
        c.explain_en(),
        c.explain_zh()
    )
}

async fn check(path: PathBuf, online: bool) -> anyhow::Result<()> {
    let config = load(&path)?;
    println!(
        "{}: valid: {} accounts, {} clients, store {:?}",
        path.display(),
        config.accounts.len(),
        config.clients.len(),
        config.store
    );
    if !online {
        return Ok(());
    }
    if let crate::config::StoreConfig::Redis { .. } = &config.store {
        let redis = crate::app::connect_redis(&config.store).await?;
        let pong: String = redis::cmd("PING")
            .query_async(&mut redis.conn())
            .await
            .context("store.url: redis does not answer PING")?;
        println!("redis: {pong}");
    }
    let hosts = wx_api::Hosts::new(&config.upstream.api_base, &config.upstream.open_base)?;
    let client = wx_api::Client::new(hosts)?;
    let mut failed = 0;
    for a in &config.accounts {
        if a.kind == crate::config::AccountKind::Website {
            println!(
                "{}: website app, no global token to check",
                a.appid.as_str()
            );
            continue;
        }
        match &a.via {
            crate::config::Via::Component => {
                // Checks the AppID, the secret and the whitelist, and does
                // no harm: pushes that run stay as they are.
                match client.start_push_ticket(&a.appid, &a.secret).await {
                    Ok(()) => println!(
                        "{}: ok (third-party platform; credentials accepted)",
                        a.appid.as_str()
                    ),
                    Err(e) => {
                        failed += 1;
                        println!("{}: FAILED: {e}", a.appid.as_str());
                    }
                }
                continue;
            }
            crate::config::Via::Authorizer(_) | crate::config::Via::Revoked { .. } => {
                println!(
                    "{}: authorized to a third-party platform; its tokens come through the platform",
                    a.appid.as_str()
                );
                continue;
            }
            crate::config::Via::Own => {}
        }
        // A non-forced stable_token call checks the AppID, the secret and
        // the IP whitelist without touching classic tokens (the two are
        // isolated on the platform, docs/platform.md §2.2): a classic
        // /cgi-bin/token call here would kill the token a running hub serves.
        match client
            .fetch_stable_access_token(&a.appid, &a.secret, false)
            .await
        {
            Ok(_) => println!(
                "{}: ok (credentials and IP whitelist accepted; {} mode)",
                a.appid.as_str(),
                a.token_mode.as_str(),
            ),
            Err(e) => {
                failed += 1;
                println!("{}: FAILED: {e}", a.appid.as_str());
            }
        }
    }
    if failed > 0 {
        bail!("{failed} account(s) cannot fetch a token");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Production builds (`--no-default-features`) must not even offer the
    /// simulator: no subcommand, no flag, no word of it in the help.
    #[test]
    fn the_simulator_is_offered_only_with_the_dev_feature() {
        use clap::CommandFactory;
        let mut cli = super::Cli::command();
        let dev = cfg!(feature = "dev");
        assert_eq!(cli.find_subcommand("dev").is_some(), dev);
        assert_eq!(cli.find_subcommand("sim").is_some(), dev);
        let serve = cli.find_subcommand_mut("serve").expect("serve");
        assert_eq!(
            serve
                .get_arguments()
                .any(|a| a.get_long() == Some("sim-clock")),
            dev
        );
        let serve_help = serve.render_long_help().to_string();
        let help = cli.render_long_help().to_string();
        for text in [help, serve_help] {
            assert_eq!(text.to_lowercase().contains("sim"), dev, "{text}");
        }
    }

    #[test]
    fn explain_gives_both_languages_and_the_action() {
        let text = super::explain(40164);
        assert!(text.starts_with("40164: "));
        assert!(text.contains("白名单"), "{text}");
        assert!(
            text.contains("What to do: fix the configuration: the API IP whitelist"),
            "{text}"
        );
        assert!(super::explain(42001).contains("retry once"));
        assert!(
            super::explain(99999999).starts_with("99999999: "),
            "unknown codes still explain"
        );
    }
}
