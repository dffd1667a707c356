//! `position-sync`: reconcile every enabled account with the exchange once, then exit (run every
//! 60 s). Adopts our own interrupted entries, tracks MANUAL positions, records closes done by the
//! exchange with realised PnL, re-places missing protective stops, updates equity state.

use albra_core::app::{self, Mode};
use albra_core::config::{self, Config};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "position-sync",
    version,
    about = "Reconcile stored positions with the exchange once (run every 60 s)",
    long_about = "Reads each enabled account's exchange positions, open algo orders and equity; adopts an exchange \
position whose entry carries one of our client ids (a crash between the order and the state write is healed here); \
tracks anything else as MANUAL and never touches it; records positions closed by the exchange (stop filled) with \
the realised PnL from userTrades; re-places missing protective stops.\n\nExit codes: 0 ok, 1 a job error, 2 bad \
config or arguments."
)]
struct Args {
    /// Config file.
    #[arg(long, env = "ALBRA_CONFIG", default_value_os_t = config::default_path())]
    config: PathBuf,
    /// State store: a local path (embedded SQLite, default ./state) or dynamodb:TABLE.
    #[arg(long, env = "ALBRA_STATE", default_value = "./state")]
    state: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    albra_core::logging::init();
    let args = Args::parse();
    let cfg = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let app = match app::build(cfg, &args.state, Mode::Live).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let now = app.exchange_now().await;
    let report = app.engine.sync_positions(now).await;
    for l in &report.lines {
        println!("{l}");
    }
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
