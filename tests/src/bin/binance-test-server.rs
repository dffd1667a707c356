//! Serves the loopback Binance USDⓈ-M test exchange from candle CSVs, for manual runs of the
//! client, the `evaluator` and `position-sync` against it (`ALBRA_BINANCE_URL=http://127.0.0.1:PORT`).
//!
//! ```text
//! binance-test-server --csv data/BTCUSDT-perp-15m.csv [--csv ETHUSDT=eth.csv] [--port 8765]
//!     [--tf 15m] [--time <ms|end>] [--api-key K --api-secret S] [--balance 10000]
//! ```
//! The symbol of a CSV is the part of its file name before the first `-` unless given as
//! `SYMBOL=path`. `--time end` (default) starts the clock 5 s after the last candle closed.

use albra_core::domain::Timeframe;
use albra_tests::binance_server::{
    load_candles_csv, BinanceTestServer, ServerOptions, TestAccount,
};
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

struct Args {
    csvs: Vec<(String, PathBuf)>,
    port: u16,
    tf: Timeframe,
    time: Option<i64>,
    api_key: String,
    api_secret: String,
    balance: Decimal,
}

fn usage() -> &'static str {
    "usage: binance-test-server --csv [SYMBOL=]FILE [--csv …] [--port N] [--tf 15m] \
     [--time MS|end] [--api-key K] [--api-secret S] [--balance USDT]"
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        csvs: Vec::new(),
        port: 8765,
        tf: Timeframe::M15,
        time: None,
        api_key: "test-api-key".into(),
        api_secret: "test-api-secret".into(),
        balance: Decimal::from(10_000),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(usage().into());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{}", usage()))?;
        match flag.as_str() {
            "--csv" => {
                let (symbol, path) = match value.split_once('=') {
                    Some((s, p)) => (s.to_ascii_uppercase(), PathBuf::from(p)),
                    None => {
                        let path = PathBuf::from(&value);
                        let stem = path
                            .file_name()
                            .and_then(|n| n.to_str())
                            .and_then(|n| n.split(['-', '.']).next())
                            .unwrap_or_default()
                            .to_ascii_uppercase();
                        (stem, path)
                    }
                };
                args.csvs.push((symbol, path));
            }
            "--port" => args.port = value.parse().map_err(|_| format!("bad --port `{value}`"))?,
            "--tf" => args.tf = Timeframe::from_str(&value)?,
            "--time" if value == "end" => args.time = None,
            "--time" => {
                args.time = Some(value.parse().map_err(|_| format!("bad --time `{value}`"))?)
            }
            "--api-key" => args.api_key = value,
            "--api-secret" => args.api_secret = value,
            "--balance" => {
                args.balance =
                    Decimal::from_str(&value).map_err(|_| format!("bad --balance `{value}`"))?
            }
            other => return Err(format!("unknown flag `{other}`\n{}", usage())),
        }
    }
    if args.csvs.is_empty() {
        return Err(format!("at least one --csv is required\n{}", usage()));
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut candles = HashMap::new();
    for (symbol, path) in &args.csvs {
        match load_candles_csv(path) {
            Ok(rows) => {
                candles.insert(symbol.clone(), rows);
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        }
    }
    let last_close = candles
        .values()
        .filter_map(|rows| rows.iter().map(|c| c.open_time).max())
        .max()
        .map(|t| t + args.tf.millis())
        .unwrap_or(0);
    let start = args.time.unwrap_or(last_close + 5_000);
    let opts = ServerOptions {
        candles,
        base_tf_ms: args.tf.millis(),
        accounts: vec![TestAccount {
            api_key: args.api_key.clone(),
            api_secret: args.api_secret,
            wallet_balance: args.balance,
        }],
        start_time_ms: start,
    };
    let server = match BinanceTestServer::start_on(opts, args.port).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot listen on 127.0.0.1:{}: {e}", args.port);
            return ExitCode::from(1);
        }
    };
    println!(
        "Binance USDⓈ-M test server on {} (api key `{}`, server time {start}); Ctrl-C stops it",
        server.url, args.api_key
    );
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("waiting for Ctrl-C failed: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
