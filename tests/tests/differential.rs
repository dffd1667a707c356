//! Issue 21 point 5: the same candles through (a) `albra backtest`, (b) `albra replay` (job mode)
//! and (c) the `evaluator` and `position-sync` binaries started fresh for each close against the
//! loopback Binance server give the same decisions, orders and closed trades, for every
//! registered strategy, on slices of two real candle files (see `albra_tests::differential`).
//!
//! Compared exactly: every order's kind, decision (the intent and candle in its client id),
//! side, quantity, reduce-only and close-position flags, stop/take-profit trigger, trailing
//! callback, final status, fill price and the candle it was filled or cancelled in; every closed
//! trade's entry and exit candle, side, quantity and prices; and between the two job paths, each
//! evaluated candle's run-marker outcome (the decision with every condition's value, and what was
//! done, hold included). Fees are the server's 0.04 % on every path and slippage is 0, so fills
//! are priced alike. Two representation details are allowed, each where it is explained: a
//! conditional order's fill price as the server's query shape renders it (2 decimals; see
//! `differential::algo_price`) and a trade's PnL and fees within [`MONEY_TOLERANCE`].
//!
//! One design difference is taken out before comparing, and only it: the backtest closes what is
//! still open at the end of the data, the jobs keep it open (see `differential::backtest`).
//! Another is avoided by the config: a backtest feeds its strategies every candle since the file's
//! first, a job the last `jobs.history`; the history here is longer than the slice, so both see
//! every candle before each close (`a_warm_process_decides_as_a_cold_start_at_every_close`
//! checks the windowed jobs against themselves).

use albra_core::domain::Timeframe;
use albra_core::strategy;
use albra_tests::differential::{self, Outcome, Slice, TradeRow, RUNNERS};
use rust_decimal::Decimal;
use std::fmt::Debug;
use std::str::FromStr;
use std::time::Instant;

/// At least this many closed trades per strategy and slice on every path.
const MIN_TRADES: usize = 3;

/// Two files, two timeframes; short enough for the jobs path (two processes per close) to run
/// in about a minute in debug, long enough for every strategy to trade several times.
fn slices() -> [Slice; 2] {
    [
        Slice {
            file: "BTCUSDT-perp-15m.csv",
            from: 6_000,
            len: 260,
            tf: Timeframe::M15,
        },
        Slice {
            file: "BTCUSDT-spot-1h.csv",
            from: 40_000,
            len: 260,
            tf: Timeframe::H1,
        },
    ]
}

/// The first candle (index) any strategy can decide on: the jobs path starts there.
fn first_decision() -> usize {
    RUNNERS
        .iter()
        .map(|r| {
            let params: toml::Table = r.params.parse().expect("params");
            strategy::build(r.strategy, &params, "test")
                .expect("strategy")
                .warmup()
        })
        .min()
        .expect("strategies")
        .saturating_sub(2)
}

/// Realised PnL and fees may differ by this much (USDT), and nothing else may. The loopback
/// server, as Binance, reports each fill's commission and realised PnL rounded to 8 decimals,
/// and the jobs' trade record splits an entry's fees among partial closes from those figures;
/// the paper exchange keeps exact decimals. The last digit of a split can differ; every price
/// and quantity is compared exactly.
const MONEY_TOLERANCE: Decimal = Decimal::from_parts(1, 0, 0, false, 7);

fn same_trade(a: &TradeRow, b: &TradeRow) -> bool {
    let near = |x: &str, y: &str| {
        let (x, y) = (
            Decimal::from_str(x).unwrap_or_default(),
            Decimal::from_str(y).unwrap_or_default(),
        );
        (x - y).abs() <= MONEY_TOLERANCE
    };
    TradeRow {
        pnl: String::new(),
        fees: String::new(),
        ..a.clone()
    } == TradeRow {
        pnl: String::new(),
        fees: String::new(),
        ..b.clone()
    } && near(&a.pnl, &b.pnl)
        && near(&a.fees, &b.fees)
}

/// The first row where two paths differ, with the row of each (or the end of the shorter).
fn first_difference<T: Debug>(
    what: &str,
    (na, a): (&str, &[T]),
    (nb, b): (&str, &[T]),
    same: impl Fn(&T, &T) -> bool,
) -> Option<String> {
    let i = (0..a.len().max(b.len())).find(|&i| match (a.get(i), b.get(i)) {
        (Some(x), Some(y)) => !same(x, y),
        _ => true,
    })?;
    Some(format!(
        "{what}: first difference at row {i} of {} / {}\n  {na}: {:?}\n  {nb}: {:?}",
        a.len(),
        b.len(),
        a.get(i),
        b.get(i)
    ))
}

/// Every difference between two paths, per strategy.
fn differences(na: &str, a: &Outcome, nb: &str, b: &Outcome, decisions: bool) -> Vec<String> {
    let mut out = Vec::new();
    for r in &RUNNERS {
        let s = r.strategy;
        let orders = |o: &Outcome| {
            o.orders
                .iter()
                .filter(|x| x.strategy == s)
                .cloned()
                .collect::<Vec<_>>()
        };
        let trades = |o: &Outcome| {
            o.trades
                .iter()
                .filter(|x| x.strategy == s)
                .cloned()
                .collect::<Vec<_>>()
        };
        out.extend(first_difference(
            &format!("{s} orders"),
            (na, &orders(a)),
            (nb, &orders(b)),
            PartialEq::eq,
        ));
        out.extend(first_difference(
            &format!("{s} trades"),
            (na, &trades(a)),
            (nb, &trades(b)),
            same_trade,
        ));
        if decisions {
            let d = |o: &Outcome| {
                o.decisions
                    .iter()
                    .filter(|((x, _), _)| x == s)
                    .map(|((_, t), v)| (*t, v.clone()))
                    .collect::<Vec<_>>()
            };
            out.extend(first_difference(
                &format!("{s} run-marker decisions"),
                (na, &d(a)),
                (nb, &d(b)),
                PartialEq::eq,
            ));
        }
    }
    out
}

/// All three paths over one slice; returns a summary line and every difference found.
async fn run_slice(slice: Slice) -> (String, Vec<String>) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (data, candles) = differential::write_slice(&slice, dir.path());
    let history = candles.len() + 10;
    std::fs::write(
        dir.path().join("albra.toml"),
        differential::config_text(slice.tf, history),
    )
    .unwrap();
    let start = first_decision();
    let end = candles.last().unwrap().open_time + slice.tf.millis();
    let opens: Vec<i64> = candles[start..].iter().map(|c| c.open_time).collect();

    let a = differential::backtest(dir.path(), &data, slice.tf, end);
    let b = differential::replay(dir.path(), &data, slice.tf, slice.tf, &opens).await;
    let (c, counts) = differential::jobs(dir.path(), &candles, slice.tf, start, &opens).await;

    let mut diffs = Vec::new();
    for (name, o) in [("backtest", &a), ("replay", &b), ("jobs", &c)] {
        for r in &RUNNERS {
            let n = o.trades_of(r.strategy);
            if n < MIN_TRADES {
                diffs.push(format!(
                    "{}: {name} closed {n} {} trades, fewer than {MIN_TRADES}",
                    slice.file, r.strategy
                ));
            }
        }
    }
    // The job paths evaluated every candle from `start` on, and left a marker for each.
    for (name, o) in [("replay", &b), ("jobs", &c)] {
        let missing = o
            .decisions
            .values()
            .filter(|v| v.as_str() == "(no run marker)")
            .count();
        if missing > 0 {
            diffs.push(format!(
                "{}: {name} has no run marker for {missing} (strategy, candle) pairs",
                slice.file
            ));
        }
    }
    for d in differences("backtest", &a, "replay", &b, false)
        .into_iter()
        .chain(differences("replay", &b, "jobs", &c, true))
        .chain(differences("backtest", &a, "jobs", &c, false))
    {
        diffs.push(format!("{}: {d}", slice.file));
    }
    let per: Vec<String> = RUNNERS
        .iter()
        .map(|r| format!("{} {}", r.strategy, c.trades_of(r.strategy)))
        .collect();
    let summary = format!(
        "{} {} candles at {}: {} orders, {} trades ({}), {} evaluator and {} position-sync runs, {} conditional orders fired, {:.1} s",
        slice.file,
        candles.len(),
        slice.tf,
        c.orders.len(),
        c.trades.len(),
        per.join(", "),
        counts.evaluators,
        counts.syncs,
        counts.fired,
        started.elapsed().as_secs_f64()
    );
    (summary, diffs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backtest_replay_and_fresh_jobs_decide_order_and_trade_alike() {
    // Every registered strategy runs (a strategy added to the registry needs a runner here).
    let mut registered = strategy::names();
    let mut run: Vec<&str> = RUNNERS.iter().map(|r| r.strategy).collect();
    registered.sort_unstable();
    run.sort_unstable();
    assert_eq!(
        registered, run,
        "differential::RUNNERS must list every registered strategy"
    );
    let [first, second] = slices();
    let (x, y) = tokio::join!(run_slice(first), run_slice(second));
    let mut all = Vec::new();
    for (summary, diffs) in [x, y] {
        println!("{summary}");
        all.extend(diffs);
    }
    assert!(all.is_empty(), "the paths differ:\n{}", all.join("\n"));
}

/// One process evaluating close after close, as a warm Lambda container or `albra run` does,
/// against a fresh engine for every close, as a cold start: the paper exchange and a memory
/// store each (in process: the cache is the only thing that differs). Returns each (strategy,
/// candle)'s run-marker outcome and every order the accounts were sent, as one text per row.
async fn warm_or_cold(warm: bool, candles: &std::path::Path, history: usize) -> Vec<String> {
    use albra_core::config::Config;
    use albra_core::domain::{AccountId, StrategyId, Symbol};
    use albra_core::jobs::{AccountRuntime, Engine, EngineTiming, Sizing};
    use albra_core::notify::DiscardNotifier;
    use albra_core::paper::{MarketData, PaperConfig, PaperExchange, RecordedMarket};
    use albra_core::ports::{Clock, Exchange, SimClock};
    use albra_core::state::{RunKey, StateRepo};
    use albra_core::store::memory::MemoryStore;
    use std::sync::Arc;

    let tf = Timeframe::M15;
    let series = albra_core::data::load_csv(candles).expect("candles");
    let opens: Vec<i64> = series.candles.iter().map(|c| c.open_time).collect();
    let config = Arc::new(
        Config::parse(&differential::config_text(tf, history), "differential").expect("config"),
    );
    let clock = Arc::new(SimClock::new(opens[0]));
    let market: Arc<dyn MarketData> = Arc::new(RecordedMarket::new(Symbol::new("BTCUSDT"), series));
    let exchanges: Vec<Arc<PaperExchange>> = config
        .accounts
        .iter()
        .map(|_| {
            Arc::new(PaperExchange::new(
                market.clone(),
                clock.clone() as Arc<dyn Clock>,
                PaperConfig {
                    slippage: Decimal::ZERO,
                    ..PaperConfig::default()
                },
            ))
        })
        .collect();
    let accounts: Vec<AccountRuntime> = config
        .accounts
        .iter()
        .zip(&exchanges)
        .map(|(a, ex)| AccountRuntime {
            config: a.clone(),
            exchange: ex.clone() as Arc<dyn Exchange>,
        })
        .collect();
    let repo = StateRepo::new(Arc::new(MemoryStore::new()));
    let engine = || Engine {
        config: config.clone(),
        repo: repo.clone(),
        accounts: accounts.clone(),
        notifier: Arc::new(DiscardNotifier),
        timing: EngineTiming::instant(),
        cache: Default::default(),
        sizing: Sizing::Risk,
    };
    let kept = engine();
    for &open in &opens {
        let close = open + tf.millis();
        let fresh;
        let e = if warm {
            &kept
        } else {
            fresh = engine();
            &fresh
        };
        clock.set(close + 1_000);
        let r = e.sync_positions(close + 1_000).await;
        assert!(r.errors.is_empty(), "sync: {:?}", r.errors);
        clock.set(close + 3_000);
        let r = e.evaluate(tf, close + 3_000).await;
        assert!(r.errors.is_empty(), "evaluate: {:?}", r.errors);
    }
    let mut rows = Vec::new();
    for r in &RUNNERS {
        for &open_time in &opens {
            let key = RunKey {
                account: AccountId::new(r.account),
                strategy: StrategyId::new(r.strategy),
                symbol: Symbol::new("BTCUSDT"),
                tf,
                open_time,
            };
            let m = repo.run_marker(&key).await.expect("run marker");
            rows.push(format!(
                "{} {open_time}: {}",
                r.strategy,
                m.map_or("(no run marker)".into(), |m| m.outcome)
            ));
        }
    }
    for (r, ex) in RUNNERS.iter().zip(&exchanges) {
        let mut csv = String::new();
        ex.journal().csv_rows(r.strategy, &mut csv);
        rows.extend(csv.lines().map(str::to_string));
    }
    rows
}

/// A warm process decides exactly as a cold one at every close: 400 candles with a history of
/// 100, so the warm engine's strategies have been fed up to four times the window a cold start
/// builds them from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_process_decides_as_a_cold_start_at_every_close() {
    let dir = tempfile::tempdir().unwrap();
    let slice = Slice {
        file: "BTCUSDT-perp-15m.csv",
        from: 6_000,
        len: 400,
        tf: Timeframe::M15,
    };
    let (data, _) = differential::write_slice(&slice, dir.path());
    let warm = warm_or_cold(true, &data, 100).await;
    let cold = warm_or_cold(false, &data, 100).await;
    let entries = cold.iter().filter(|r| r.contains("entered")).count();
    assert!(entries >= 20, "too few entries to show anything: {entries}");
    let diff = first_difference(
        "warm / cold",
        ("warm", &warm),
        ("cold", &cold),
        PartialEq::eq,
    );
    assert!(diff.is_none(), "{}", diff.unwrap_or_default());
}
