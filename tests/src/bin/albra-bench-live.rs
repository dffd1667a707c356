//! `albra-bench-live`: what the live path costs in round trips, requests and weight (issue 21
//! point 10), printed from `albra_tests::bench_live`. Build the binaries first: `cargo build
//! --workspace --bins` (`make bench-live` does both).

use albra_tests::bench_live::{
    chain_depths, run_case, Case, Job, JobFigures, RoundTrips, ACCOUNTS, SYMBOLS,
};
use albra_tests::harness;
use std::process::ExitCode;
use std::time::Duration;

const HELP: &str = "\
albra-bench-live: the real evaluator and position-sync against the loopback Binance server with a
fixed latency added to every request, to see what the live path costs in round trips and weight

usage: albra-bench-live [--latency-ms 50] [--runs 3] [--symbols 1,4] [--accounts 1,3] [--journal]

Each run of a case starts a fresh server holding data/BTCUSDT-perp-15m.csv (ETHUSDT, SOLUSDT and
BNBUSDT reuse those candles under their own names, so every symbol signals on the same candle) and
a fresh state directory whose config runs EMA_CROSS 50/200 on 15m on those symbols for those
accounts (main, sub1, sub2, keys from BINANCE_*, SUB1_*, SUB2_*), then runs, as processes:
  1. evaluator --timeframe 15m on a trading close (the sample's first signal: every account
     enters every symbol and places its stop),
  2. evaluator --timeframe 15m on the quiet close after it (positions held, nothing to do),
  3. position-sync once with the positions open (a quiet sync).

Per job it prints the wall time (spawn to exit), the requests, their weight (the documented
IP weights the server counted) and, on the trading close, the sequential round trips before the
first entry order arrived, before its stop did and before the last stop did (every symbol and
account done), two ways: by time, (arrival - first request's
arrival) / latency rounded, which also counts the job's own work between requests; and by chain
[in brackets], the longest run of requests each sent after the one before it was answered.
Then a table of medians over the runs, the quiet sync's weight per account, and the wall-time
ratio of the largest case to the smallest.

  --latency-ms N   added to each request before it is answered (default 50; 0 leaves the
                   round trips by time out)
  --runs N         runs per case (default 3)
  --symbols LIST   symbol counts, each 1-4 (default 1,4)
  --accounts LIST  account counts, each 1-3 (default 1,3)
  --journal        also print every request of each job: ms after the job's first request,
                   chain depth, method, path, symbol, account key's owner and weight (where the
                   round trips go)

Debug binaries beside this one are what it runs; loopback only, nothing leaves the machine.
Exits 1 when a job fails or the trading close does not enter, 2 on bad arguments.";

struct Settings {
    latency: Duration,
    runs: usize,
    symbols: Vec<usize>,
    accounts: Vec<usize>,
    journal: bool,
}

fn counts(flag: &str, value: &str, max: usize) -> Result<Vec<usize>, String> {
    value
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    format!("{flag} takes counts 1-{max} separated by commas, got `{value}`")
                })
        })
        .collect()
}

fn parse() -> Result<Settings, String> {
    let mut s = Settings {
        latency: Duration::from_millis(50),
        runs: 3,
        symbols: vec![1, 4],
        accounts: vec![1, 3],
        journal: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        if flag == "--journal" {
            s.journal = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag} takes a whole number, got `{value}`"))
        };
        match flag.as_str() {
            "--latency-ms" => s.latency = Duration::from_millis(number()?),
            "--runs" => s.runs = (number()? as usize).max(1),
            "--symbols" => s.symbols = counts(&flag, &value, SYMBOLS.len())?,
            "--accounts" => s.accounts = counts(&flag, &value, 3)?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(s)
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

fn rt(r: Option<RoundTrips>) -> String {
    match r {
        None => "-".into(),
        Some(r) => match r.by_time {
            Some(t) => format!("{t} [{}]", r.by_chain),
            None => format!("- [{}]", r.by_chain),
        },
    }
}

fn case_name(c: Case) -> String {
    format!("{} sym x {} acct", c.symbols, c.accounts)
}

/// Every request of one job, one line each.
fn print_journal(f: &JobFigures) {
    let first = f.log.iter().map(|r| r.time).min().unwrap_or(0);
    for (r, depth) in f.log.iter().zip(chain_depths(&f.log)) {
        let who = r.api_key.as_deref().map_or("-", |k| {
            ACCOUNTS
                .iter()
                .find(|a| a.api_key == k)
                .map_or("?", |a| a.id)
        });
        println!(
            "    {:>5} ms  depth {:>2}  {:<6} {:<26} {:<8} {:<5} weight {}",
            r.time - first,
            depth,
            r.method,
            r.path,
            r.params.get("symbol").map_or("", String::as_str),
            who,
            r.weight
        );
    }
}

/// The distinct values in order of first appearance, joined by `/`.
fn distinct(values: impl Iterator<Item = String>) -> String {
    let mut seen: Vec<String> = Vec::new();
    for v in values {
        if !seen.contains(&v) {
            seen.push(v);
        }
    }
    seen.join("/")
}

/// `a` when every value is `a`, else `min-max`.
fn spread<T: Ord + std::fmt::Display>(values: impl Iterator<Item = T>) -> String {
    let v: Vec<T> = values.collect();
    match (v.iter().min(), v.iter().max()) {
        (Some(lo), Some(hi)) if lo == hi => lo.to_string(),
        (Some(lo), Some(hi)) => format!("{lo}-{hi}"),
        _ => "-".into(),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> ExitCode {
    let s = match parse() {
        Ok(s) => s,
        Err(e) if e.is_empty() => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("albra-bench-live: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    for bin in ["evaluator", "position-sync"] {
        if !harness::bin_dir().join(bin).exists() {
            eprintln!(
                "albra-bench-live: {bin} is not built beside this binary ({}): run `cargo build \
                 --workspace --bins` first (make bench-live does)",
                harness::bin_dir().display()
            );
            return ExitCode::from(1);
        }
    }
    let cases: Vec<Case> = s
        .symbols
        .iter()
        .flat_map(|&symbols| {
            s.accounts
                .iter()
                .map(move |&accounts| Case { symbols, accounts })
        })
        .collect();
    println!(
        "evaluator and position-sync ({}) against the loopback Binance server, {} ms added per \
         request, {} run(s) per case",
        harness::bin_dir().display(),
        s.latency.as_millis(),
        s.runs
    );
    println!(
        "candles: data/BTCUSDT-perp-15m.csv; {} reuse the BTCUSDT candles under their own names",
        SYMBOLS[1..].join(", ")
    );
    println!("round trips: by time [by chain of waits], from the job's first request\n");
    let mut results: Vec<(Case, Vec<Vec<JobFigures>>)> = Vec::new();
    for &case in &cases {
        let mut runs = Vec::new();
        for run in 1..=s.runs {
            match run_case(case, s.latency).await {
                Ok(figures) => {
                    for f in &figures {
                        println!(
                            "run {run}/{}  {:<16} {:<26} {:>6} ms  {:>3} requests  weight {:>4}  \
                             entry {:<7} stop {:<7} last stop {}",
                            s.runs,
                            case_name(case),
                            f.job.label(),
                            ms(f.wall),
                            f.requests,
                            f.weight,
                            rt(f.to_entry),
                            rt(f.to_stop),
                            rt(f.to_last_stop)
                        );
                        if s.journal {
                            print_journal(f);
                        }
                    }
                    runs.push(figures);
                }
                Err(e) => {
                    eprintln!("albra-bench-live: {} run {run}: {e}", case_name(case));
                    return ExitCode::from(1);
                }
            }
        }
        results.push((case, runs));
    }
    println!(
        "\n{:<16} {:<26} {:>21} {:>8} {:>7} {:>16} {:>16} {:>16}",
        "case",
        "job",
        "wall ms med (min-max)",
        "requests",
        "weight",
        "rt>entry",
        "rt>stop",
        "rt>last stop"
    );
    for (case, runs) in &results {
        for (j, job) in Job::ALL.iter().enumerate() {
            let of_job: Vec<&JobFigures> = runs.iter().map(|r| &r[j]).collect();
            let walls: Vec<Duration> = of_job.iter().map(|f| f.wall).collect();
            let wall = format!(
                "{} ({})",
                ms(median(walls.clone())),
                spread(walls.iter().map(|w| ms(*w)))
            );
            let entry = distinct(of_job.iter().map(|f| rt(f.to_entry)));
            let stop = distinct(of_job.iter().map(|f| rt(f.to_stop)));
            let last = distinct(of_job.iter().map(|f| rt(f.to_last_stop)));
            println!(
                "{:<16} {:<26} {:>21} {:>8} {:>7} {:>16} {:>16} {:>16}",
                case_name(*case),
                job.label(),
                wall,
                spread(of_job.iter().map(|f| f.requests)),
                spread(of_job.iter().map(|f| f.weight)),
                entry,
                stop,
                last
            );
        }
    }
    println!("\nquiet sync weight per account (requests without a key: unsigned):");
    for (case, runs) in &results {
        let last = &runs[runs.len() - 1][2];
        let parts: Vec<String> = last
            .weight_by_account
            .iter()
            .map(|(who, w)| format!("{who} {w}"))
            .collect();
        println!("  {:<16} {}", case_name(*case), parts.join(", "));
    }
    if results.len() > 1 {
        let (small, big) = (&results[0], &results[results.len() - 1]);
        println!(
            "\nwall time of {} over {} (medians):",
            case_name(big.0),
            case_name(small.0)
        );
        for (j, job) in Job::ALL.iter().enumerate() {
            let med =
                |runs: &Vec<Vec<JobFigures>>| median(runs.iter().map(|r| r[j].wall).collect());
            let ratio = med(&big.1).as_secs_f64() / med(&small.1).as_secs_f64();
            println!("  {:<26} {ratio:.2}x", job.label());
        }
    }
    ExitCode::SUCCESS
}
