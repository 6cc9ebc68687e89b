//! The `wxhub` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// wxhub: one service that holds WeChat tokens, runs web authorization and
/// relays pushes for every business server.
#[derive(Debug, Parser)]
#[command(name = "wxhub", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the WeChat platform simulator.
    Sim(SimArgs),
}

/// `wxhub sim`.
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
/// Any start-up failure, with the step that failed.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Sim(args) => sim(args).await,
    }
}

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
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    running.shutdown().await;
    Ok(())
}
