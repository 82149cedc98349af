//! The `cohost` binary: `cohost [flags]` serves; `cohost mix ...` mixes files offline.

use clap::Parser;
use cohost::config::{Config, ServeArgs};
use tracing_subscriber::EnvFilter;

/// cohost: co-hosting media server (WebRTC SFU + MCU mixer + RTMP/HLS/WHEP output).
#[derive(Debug, Parser)]
#[command(name = "cohost", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Composite H.264 files (and WAV audio) into an FLV program offline, with the server's
    /// mixer: `cohost mix --input a.h264 --input b.h264 --layout grid -o program.flv`.
    Mix(cohost::mix_cmd::MixArgs),
}

async fn shutdown_signal() {
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
    tracing::info!("shutting down");
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Mix(args)) = &cli.command {
        tracing_subscriber::fmt()
            .with_env_filter(
                EnvFilter::try_from_env("COHOST_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
            )
            .with_writer(std::io::stderr)
            .init();
        return match cohost::mix_cmd::run(args) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cohost mix: {e}");
                std::process::ExitCode::from(2)
            }
        };
    }
    let config = match Config::from_args(&cli.serve) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cohost: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let filter = match EnvFilter::try_new(&config.log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cohost: --log {:?}: {e}", config.log);
            return std::process::ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cohost: cannot start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.bind).await?;
        cohost::run(listener, config, shutdown_signal()).await
    });
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cohost: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
