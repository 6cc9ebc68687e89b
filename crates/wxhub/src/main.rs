use clap::Parser;

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
