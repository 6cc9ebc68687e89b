use clap::Parser;

// See Cargo.toml: memory freed after start-up goes back to the system.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = wxhub::cli::Cli::parse();
    wxhub::telemetry::init("info", cli.log_format);
    match wxhub::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wxhub: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
