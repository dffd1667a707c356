//! `evaluator --timeframe 15m|1h|4h`: evaluate the candle that just closed, for every enabled
//! account and strategy of that timeframe, then exit. Run by cron a few seconds after each close
//! (or by EventBridge Scheduler); it waits on the exchange clock until close + `jobs.close_delay_secs`.

use albra_core::app::{self, Mode};
use albra_core::config::{self, Config};
use albra_core::domain::Timeframe;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "evaluator",
    version,
    about = "Evaluate the candle that just closed and place at most one protected order per signal",
    long_about = "Evaluates the newest CLOSED candle of --timeframe for every enabled account and every enabled \
strategy of that timeframe. Each (account, strategy, symbol, candle) is claimed once in the state store: a second \
run for the same candle does nothing and says so. Orders go to Binance (ALBRA_BINANCE_URL overrides the URL) with \
each account's keys (env / .env or SSM, as config says).\n\nExit codes: 0 ok, 1 a job error (one-line reason on \
stderr), 2 bad config or arguments."
)]
struct Args {
    /// Candle interval to evaluate: 15m, 1h or 4h.
    #[arg(long)]
    timeframe: Timeframe,
    /// Config file.
    #[arg(long, env = "ALBRA_CONFIG", default_value_os_t = config::default_path())]
    config: PathBuf,
    /// State store: a local path (embedded SQLite, default ./state) or dynamodb:TABLE.
    #[arg(long, env = "ALBRA_STATE", default_value = "./state")]
    state: String,
    /// Do not wait for close + delay on the exchange clock (evaluate the last closed candle now).
    #[arg(long)]
    no_wait: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    albra_core::logging::init();
    let args = Args::parse();
    if !Timeframe::SCHEDULED.contains(&args.timeframe) {
        eprintln!(
            "error: --timeframe must be 15m, 1h or 4h (got {})",
            args.timeframe
        );
        return ExitCode::from(2);
    }
    let cfg = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let delay = cfg.jobs.close_delay_secs as i64 * 1000;
    let app = match app::build(cfg, &args.state, Mode::Live).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let mut now = app.exchange_now().await;
    let ready_at = args.timeframe.open_of(now) + delay;
    if !args.no_wait && now < ready_at {
        tokio::time::sleep(std::time::Duration::from_millis((ready_at - now) as u64)).await;
        now = app.exchange_now().await.max(ready_at);
    }
    let report = app.engine.evaluate(args.timeframe, now).await;
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
