//! The three paths over the same candles (issue 21 point 5): (a) `albra backtest`, (b) `albra
//! replay` (job mode: SQLite store, run markers, a sync every simulated minute) and (c) the real
//! `evaluator` and `position-sync` binaries, started fresh for each close, against the loopback
//! Binance server. Each path's decisions, orders and closed trades are read back in one shape
//! ([`Outcome`]) so `tests/tests/differential.rs` can compare them row by row.
//!
//! Every registered strategy runs on its own account (the backtest's shape: one account per
//! (file, strategy) pair), with fees of 0.04 % (the loopback server's taker rate) and no slippage,
//! so fills are priced alike on every path: the next candle's open for MARKET orders, and for
//! conditional orders the paper exchange's rule, which [`play_candle`] applies to the server's
//! orders (the server fires an order only when told; it has no market of its own).

use crate::binance_server::{load_candles_csv, BinanceTestServer, ServerOptions, TestAccount};
use crate::harness;
use albra_adapters::store::sqlite::SqliteStore;
use albra_core::domain::{AccountId, Candle, StrategyId, Symbol, Timeframe, TradeRecord};
use albra_core::state::{RunKey, StateRepo};
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

/// One registered strategy as the differential test runs it: its account, the environment
/// prefix of that account's keys, and parameters that make it trade often on a short slice
/// (tighter averages, nearer profit levels), so every exit kind it has shows up.
pub struct Runner {
    pub strategy: &'static str,
    pub account: &'static str,
    pub env: &'static str,
    pub params: &'static str,
}

pub const RUNNERS: [Runner; 4] = [
    Runner {
        strategy: "TFPE",
        account: "a-tfpe",
        env: "ACC1",
        params: "signal_threshold = 3\nmomentum_min_pct = 0.003\nadx_min = 15.0\nvolume_mult = 1.0\nstop_atr = 1.5\ntake_profit_atr = 3.0\n",
    },
    Runner {
        strategy: "ZLMACD_ICHIMOKU",
        account: "a-zlmacd",
        env: "ACC2",
        params: "trailing_activation_pct = 0.005\ntake_profit_levels = [0.004, 0.008, 0.012]\npyramid_levels = [0.003, 0.006, 0.009]\n",
    },
    Runner {
        strategy: "ZLHMA_EMA_CROSS",
        account: "a-zlhma",
        env: "ACC3",
        params: "ema_fast = 10\nema_slow = 30\nadx_threshold = 20.0\nstop_loss_pct = 0.01\ntrailing_activation_pct = 0.006\ntrailing_distance_pct = 0.003\ntake_profit_levels = [0.004, 0.008, 0.012]\n",
    },
    Runner {
        strategy: "EMA_CROSS",
        account: "a-ema",
        env: "ACC4",
        params: "fast = 10\nslow = 30\nstop_loss_pct = 0.008\n",
    },
];

impl Runner {
    pub fn api_key(&self) -> String {
        format!("diff-{}-key-0123456789", self.env)
    }
    pub fn api_secret(&self) -> String {
        format!("diff-{}-secret-abcdefghij", self.env)
    }
    pub fn of_account(account: &str) -> Option<&'static Runner> {
        RUNNERS.iter().find(|r| r.account == account)
    }
}

/// A slice of a file in `data/`: `len` candles from row `from` (0-based, header excluded),
/// evaluated at the file's own timeframe.
#[derive(Clone, Debug)]
pub struct Slice {
    pub file: &'static str,
    pub from: usize,
    pub len: usize,
    pub tf: Timeframe,
}

/// The config every path reads: the four strategies at `tf`, each on its own account with keys
/// from `ACCn_API_KEY`/`ACCn_API_SECRET`; a history longer than the slice, so a job fetches every
/// candle before its close as the backtest (fed from the first candle) has seen them.
pub fn config_text(tf: Timeframe, history: usize) -> String {
    let mut s = format!(
        r#"[binance]
recv_window_ms = 5000
timeout_ms = 5000

[jobs]
close_delay_secs = 3
kline_wait_secs = 2
history = {history}
pending_timeout_secs = 120

[notifier]
console = true
telegram = false

[paper]
initial_equity = 10000
commission = 0.0004
slippage = 0
"#
    );
    for r in &RUNNERS {
        s.push_str(&format!(
            "\n[[strategies]]\nname = \"{}\"\ntimeframe = \"{}\"\nsymbols = [\"BTCUSDT\"]\nleverage = 5\nsize_pct = 0.1\n[strategies.params]\n{}",
            r.strategy,
            tf.as_str(),
            r.params
        ));
    }
    for r in &RUNNERS {
        s.push_str(&format!(
            "\n[[accounts]]\nid = \"{}\"\nkey_source = \"env:{}\"\nstrategies = [\"{}\"]\n",
            r.account, r.env, r.strategy
        ));
    }
    s
}

/// One order as every path reports it. The owner hash of a client id (it hashes the account,
/// which the backtest names `backtest`) is dropped: the strategy column says whose it is; ids of
/// orders a conditional order triggered (numbered by each exchange) read `TRIGGERED`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OrderRow {
    pub strategy: String,
    pub kind: String,
    pub id: String,
    pub side: String,
    pub qty: String,
    pub reduce_only: bool,
    pub close_position: bool,
    pub trigger: String,
    pub callback: String,
    pub status: String,
    pub avg_price: String,
    /// Open time of the base candle of the order's last update; `None` while it waits (NEW).
    pub candle: Option<i64>,
}

/// One closed trade, times as the open of the base candle whose price filled.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TradeRow {
    pub strategy: String,
    pub exit_candle: i64,
    pub entry_candle: i64,
    pub side: String,
    pub qty: String,
    pub entry_price: String,
    pub exit_price: String,
    pub pnl: String,
    pub fees: String,
}

/// What one path did: orders in the order each account placed them (MARKET orders first, then
/// conditional ones, per strategy), trades sorted, and (for the job paths) every evaluated
/// candle's run-marker outcome: the decision and what was done, per strategy and candle.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub orders: Vec<OrderRow>,
    pub trades: Vec<TradeRow>,
    pub decisions: BTreeMap<(String, i64), String>,
}

impl Outcome {
    pub fn trades_of(&self, strategy: &str) -> usize {
        self.trades
            .iter()
            .filter(|t| t.strategy == strategy)
            .count()
    }
}

/// A decimal as text without trailing zeros (the paths print different precisions).
pub fn num(s: &str) -> String {
    if s.is_empty() {
        return String::new();
    }
    match Decimal::from_str(s) {
        Ok(d) if d.is_zero() => String::new(),
        Ok(d) => d.normalize().to_string(),
        Err(_) => s.to_string(),
    }
}

/// A conditional order's fill price as the server's query shape shows it: at BTCUSDT's price
/// precision (2 decimals). The paper exchange keeps a trailing stop's level (best × (1 −
/// callback)) unrounded; the fill itself is compared exactly in the trades (the server's
/// userTrades keep the price given).
pub fn algo_price(s: &str) -> String {
    match Decimal::from_str(s) {
        Ok(d) if !d.is_zero() => d.round_dp(2).normalize().to_string(),
        _ => String::new(),
    }
}

/// `albXX-<owner hash>-<minute>[-<n>]` without the owner hash; other ids read `TRIGGERED`.
pub fn strip_owner(id: &str) -> String {
    if albra_core::domain::ClientId::is_ours(id) {
        let mut parts = id.splitn(3, '-');
        let intent = parts.next().unwrap_or_default();
        let _owner = parts.next();
        format!("{intent}-{}", parts.next().unwrap_or_default())
    } else {
        "TRIGGERED".into()
    }
}

fn candle_of(time: i64, base: Timeframe) -> i64 {
    base.open_of(time)
}

/// Orders from an `--orders-out` CSV (`run` is a strategy for a backtest, an account for a replay).
pub fn orders_from_csv(text: &str, base: Timeframe) -> Vec<OrderRow> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    let (run, kind, id, side, qty) = (
        col("run"),
        col("kind"),
        col("client_id"),
        col("side"),
        col("qty"),
    );
    let (ro, cp, trig, cb, status, avg, time) = (
        col("reduce_only"),
        col("close_position"),
        col("trigger_price"),
        col("callback_rate"),
        col("status"),
        col("avg_price"),
        col("time"),
    );
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let strategy = Runner::of_account(f[run]).map_or(f[run], |r| r.strategy);
            let status = f[status].to_string();
            let algo = f[kind] != "MARKET";
            OrderRow {
                strategy: strategy.to_string(),
                kind: f[kind].to_string(),
                id: strip_owner(f[id]),
                side: f[side].to_string(),
                qty: num(f[qty]),
                reduce_only: f[ro] == "true",
                close_position: f[cp] == "true",
                trigger: num(f[trig]),
                callback: num(f[cb]),
                avg_price: if algo {
                    algo_price(f[avg])
                } else {
                    num(f[avg])
                },
                candle: (status != "NEW")
                    .then(|| candle_of(f[time].parse().expect("order time"), base)),
                status,
            }
        })
        .collect()
}

/// Trades from `albra backtest --trades-out`.
pub fn trades_from_csv(text: &str) -> Vec<TradeRow> {
    let ms = |iso: &str| {
        chrono::DateTime::parse_from_rfc3339(iso)
            .unwrap_or_else(|e| panic!("{iso}: {e}"))
            .timestamp_millis()
    };
    let mut out: Vec<TradeRow> = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            TradeRow {
                strategy: f[0].to_string(),
                side: f[2].to_string(),
                entry_candle: ms(f[3]),
                exit_candle: ms(f[4]),
                entry_price: num(f[5]),
                exit_price: num(f[6]),
                qty: num(f[7]),
                pnl: num(f[8]),
                fees: num(f[9]),
            }
        })
        .collect();
    out.sort();
    out
}

/// A stored trade in the `--trades-out` shape.
pub fn trade_row(t: &TradeRecord, base: Timeframe) -> TradeRow {
    TradeRow {
        strategy: t.strategy.0.clone(),
        side: t.side.to_string(),
        entry_candle: candle_of(t.entry_time, base),
        exit_candle: candle_of(t.exit_time, base),
        entry_price: num(&t.entry_price.get().to_string()),
        exit_price: num(&t.exit_price.get().to_string()),
        qty: num(&t.qty.get().to_string()),
        pnl: num(&t.pnl.get().round_dp(8).to_string()),
        fees: num(&t.fees.get().round_dp(8).to_string()),
    }
}

/// Trades and run markers a job path wrote to its SQLite state, for the candles `opens` at `tf`.
pub async fn from_store(
    db: &Path,
    tf: Timeframe,
    base: Timeframe,
    opens: &[i64],
) -> (Vec<TradeRow>, BTreeMap<(String, i64), String>) {
    let repo = StateRepo::new(Arc::new(
        SqliteStore::open(db).unwrap_or_else(|e| panic!("{}: {e}", db.display())),
    ));
    let mut trades = Vec::new();
    let mut decisions = BTreeMap::new();
    for r in &RUNNERS {
        let id = AccountId::new(r.account);
        for t in repo.trades(&id).await.expect("trades") {
            trades.push(trade_row(&t, base));
        }
        for &open_time in opens {
            let key = RunKey {
                account: id.clone(),
                strategy: StrategyId::new(r.strategy),
                symbol: Symbol::new("BTCUSDT"),
                tf,
                open_time,
            };
            let m = repo.run_marker(&key).await.expect("run marker");
            let text = m.map_or_else(|| "(no run marker)".to_string(), |m| m.outcome);
            decisions.insert((r.strategy.to_string(), open_time), text);
        }
    }
    trades.sort();
    (trades, decisions)
}

/// The slice as a candle file named like its source (the symbol comes from the name), in `dir`.
pub fn write_slice(slice: &Slice, dir: &Path) -> (PathBuf, Vec<Candle>) {
    let src = crate::moto::workspace_root().join("data").join(slice.file);
    let text = std::fs::read_to_string(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let mut lines = text.lines();
    let mut out = String::from(lines.next().expect("header"));
    out.push('\n');
    for l in lines.skip(slice.from).take(slice.len) {
        out.push_str(l);
        out.push('\n');
    }
    let path = dir.join(slice.file);
    std::fs::write(&path, out).expect("write slice");
    let candles = load_candles_csv(&path).expect("slice");
    assert_eq!(candles.len(), slice.len, "{} has too few rows", slice.file);
    (path, candles)
}

/// Run a command to completion; inside a multi-threaded runtime, without holding up its other
/// tasks (the loopback servers of other slices keep serving).
fn run_off_runtime(mut c: std::process::Command) -> std::process::Output {
    let mut run = move || c.output().expect("spawn a workspace binary");
    match tokio::runtime::Handle::try_current() {
        Ok(_) => tokio::task::block_in_place(run),
        Err(_) => run(),
    }
}

/// A command's output, or a panic showing it.
fn ok(what: &str, out: std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: exit {:?}\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// (a) `albra backtest` over the slice: orders and trades from `--orders-out` / `--trades-out`.
/// The backtest closes what is still open at the end of the data (at the last close, before
/// the jobs' last evaluation at that close + 3 s would be answered): those exits, and the
/// conditional orders they cancel, are taken out so the rest compares with the jobs, which keep
/// positions open.
pub fn backtest(dir: &Path, data: &Path, base: Timeframe, end: i64) -> Outcome {
    let (orders, trades) = (dir.join("a-orders.csv"), dir.join("a-trades.csv"));
    let names: Vec<&str> = RUNNERS.iter().map(|r| r.strategy).collect();
    let mut out = std::process::Command::new(harness::bin("albra"));
    out.current_dir(dir)
        .env("ALBRA_LOG", "warn")
        .args(["--config", "albra.toml", "backtest", "--strategy"])
        .arg(names.join(","))
        .arg("--data")
        .arg(data)
        .args(["--fee", "0.0004", "--slippage", "0", "--equity", "10000"])
        .arg("--orders-out")
        .arg(&orders)
        .arg("--trades-out")
        .arg(&trades);
    let out = run_off_runtime(out);
    ok("albra backtest", out);
    let end_candle = candle_of(end, base);
    let mut o = Outcome {
        orders: orders_from_csv(&std::fs::read_to_string(&orders).unwrap(), base),
        trades: trades_from_csv(&std::fs::read_to_string(&trades).unwrap()),
        decisions: BTreeMap::new(),
    };
    // The end-of-data close: MARKET exits filled at the end, their conditional orders cancelled
    // then (the jobs leave them NEW). An `end` stamp belongs to nothing else: the jobs act a few
    // seconds after a close and stops fill at a candle's last millisecond.
    let raw = std::fs::read_to_string(&orders).unwrap();
    let at_end: Vec<bool> = raw
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.rsplit(',').next() == Some(&end.to_string()))
        .collect();
    let mut kept = Vec::new();
    for (row, end_stamped) in o.orders.drain(..).zip(at_end) {
        match (end_stamped, row.kind.as_str(), row.status.as_str()) {
            (true, "MARKET", _) => {}
            (true, _, "CANCELED") => kept.push(OrderRow {
                status: "NEW".into(),
                candle: None,
                ..row
            }),
            _ => kept.push(row),
        }
    }
    o.orders = kept;
    o.trades.retain(|t| t.exit_candle < end_candle);
    o
}

/// (b) `albra replay --state` over the slice: orders from `--orders-out`, trades and run markers
/// from the replay's SQLite store.
pub async fn replay(
    dir: &Path,
    data: &Path,
    tf: Timeframe,
    base: Timeframe,
    opens: &[i64],
) -> Outcome {
    let orders = dir.join("b-orders.csv");
    let state = dir.join("b-state");
    let mut out = std::process::Command::new(harness::bin("albra"));
    out.current_dir(dir)
        .env("ALBRA_LOG", "warn")
        .args(["--config", "albra.toml", "--state"])
        .arg(&state)
        .args(["replay", "--quiet", "--data"])
        .arg(data)
        .arg("--orders-out")
        .arg(&orders);
    let out = run_off_runtime(out);
    ok("albra replay", out);
    let (trades, decisions) = from_store(&state.join("albra.db"), tf, base, opens).await;
    Outcome {
        orders: orders_from_csv(&std::fs::read_to_string(&orders).unwrap(), base),
        trades,
        decisions,
    }
}

/// The trailing state [`play_candle`] keeps for a server's trailing stop, as the paper exchange
/// keeps its own: activated, and the best price since.
#[derive(Clone, Copy, Debug, Default)]
pub struct Trail {
    activated: bool,
    best: Decimal,
}

fn dec(v: &serde_json::Value, key: &str) -> Option<Decimal> {
    v[key]
        .as_str()
        .and_then(|s| Decimal::from_str(s).ok())
        .filter(|d| !d.is_zero())
}

/// Play base candle `c` against every open conditional order on the server, by the paper
/// exchange's rule (core/src/paper.rs `on_candle`): per account, in algo id order, stops (and
/// trailing stops active before the candle) first, then take-profits, then trailing stops the
/// candle activates or moves, firing on the way back; a stop fires at its trigger, or at the open
/// when the candle opened beyond it; fills are stamped with the candle's last millisecond. An
/// order with nothing to reduce stays open, as on the paper exchange.
pub fn play_candle(
    server: &BinanceTestServer,
    c: &Candle,
    base: Timeframe,
    trails: &mut HashMap<String, Trail>,
) -> usize {
    let (o, h, l, cl) = (c.open.get(), c.high.get(), c.low.get(), c.close.get());
    let time = c.open_time + base.millis() - 1;
    let fires_down = |t: Decimal| (l <= t).then(|| if o <= t { o } else { t });
    let fires_up = |t: Decimal| (h >= t).then(|| if o >= t { o } else { t });
    let mut fired = 0;
    for r in &RUNNERS {
        let key = r.api_key();
        let mut open = server.open_algo_orders(&key);
        open.sort_by_key(|a| a["algoId"].as_i64().unwrap_or_default());
        for pass in 0..3 {
            for a in &open {
                let id = a["clientAlgoId"].as_str().unwrap_or_default().to_string();
                let sell = a["side"] == "SELL";
                let amount = server.position(&key, "BTCUSDT");
                let reduces = if sell {
                    amount > Decimal::ZERO
                } else {
                    amount < Decimal::ZERO
                };
                let price = match (a["orderType"].as_str().unwrap_or_default(), pass) {
                    ("STOP_MARKET", 0) => {
                        let t = dec(a, "triggerPrice").expect("stop trigger");
                        if sell {
                            fires_down(t)
                        } else {
                            fires_up(t)
                        }
                    }
                    ("TAKE_PROFIT_MARKET", 1) => {
                        let t = dec(a, "triggerPrice").expect("take-profit trigger");
                        if sell {
                            fires_up(t)
                        } else {
                            fires_down(t)
                        }
                    }
                    ("TRAILING_STOP_MARKET", 0 | 2) => {
                        let (activation, cb) =
                            server.trailing_params(&key, &id).expect("trailing stop");
                        let cb = cb.expect("callback rate") / Decimal::ONE_HUNDRED;
                        let level = |best: Decimal| {
                            if sell {
                                best * (Decimal::ONE - cb)
                            } else {
                                best * (Decimal::ONE + cb)
                            }
                        };
                        // First seen in the candle it was placed in: the paper exchange
                        // activates it at once when the price there (this open) is past its
                        // activation price, counting from that price.
                        let tr = trails.entry(id.clone()).or_insert_with(|| Trail {
                            activated: activation.is_none_or(|act| {
                                if sell {
                                    o >= act
                                } else {
                                    o <= act
                                }
                            }),
                            best: o,
                        });
                        if pass == 0 {
                            if !tr.activated {
                                None
                            } else if sell {
                                fires_down(level(tr.best))
                            } else {
                                fires_up(level(tr.best))
                            }
                        } else {
                            let reached = match activation {
                                _ if tr.activated => true,
                                Some(act) if sell && h >= act => {
                                    *tr = Trail {
                                        activated: true,
                                        best: act,
                                    };
                                    true
                                }
                                Some(act) if !sell && l <= act => {
                                    *tr = Trail {
                                        activated: true,
                                        best: act,
                                    };
                                    true
                                }
                                _ => false,
                            };
                            if reached {
                                tr.best = if sell { tr.best.max(h) } else { tr.best.min(l) };
                                let stop = level(tr.best);
                                let crossed = if sell { cl <= stop } else { cl >= stop };
                                crossed.then_some(stop)
                            } else {
                                None
                            }
                        }
                    }
                    _ => None,
                };
                let Some(price) = price else { continue };
                // The paper exchange leaves an order with nothing to reduce open.
                let reduce = a["reduceOnly"] == true || a["closePosition"] == true;
                if reduce && !reduces {
                    continue;
                }
                if server.fire_algo_order(&key, &id, price, time) {
                    fired += 1;
                }
            }
            // Orders fired or cancelled in this pass are not tried again.
            let still: Vec<String> = server
                .open_algo_orders(&key)
                .iter()
                .filter_map(|a| a["clientAlgoId"].as_str().map(str::to_string))
                .collect();
            open.retain(|a| {
                a["clientAlgoId"]
                    .as_str()
                    .is_some_and(|id| still.iter().any(|s| s == id))
            });
        }
    }
    fired
}

/// (c) The real binaries against the loopback server, started fresh for each close of `tf` from
/// candle `start` on, as cron would start them: the minute's `position-sync` at the close, the
/// `evaluator` after its close delay; then the next candle plays against the conditional orders.
/// One sync per close does what the replay's sync every minute does: on both exchanges nothing
/// happens inside a candle (conditional orders fire once it has closed), so the other syncs of
/// the candle find nothing new.
pub async fn jobs(
    dir: &Path,
    candles: &[Candle],
    tf: Timeframe,
    start: usize,
    opens: &[i64],
) -> (Outcome, JobCounts) {
    assert_eq!(
        tf.millis(),
        candles[1].open_time - candles[0].open_time,
        "the jobs path plays candles at the evaluated timeframe"
    );
    let base = tf;
    let mut map = HashMap::new();
    map.insert("BTCUSDT".to_string(), candles.to_vec());
    let server = BinanceTestServer::start(ServerOptions {
        candles: map,
        base_tf_ms: base.millis(),
        accounts: RUNNERS
            .iter()
            .map(|r| TestAccount {
                api_key: r.api_key(),
                api_secret: r.api_secret(),
                wallet_balance: Decimal::from(10_000),
            })
            .collect(),
        start_time_ms: candles[start].open_time,
    })
    .await;
    let env: Vec<(String, String)> = RUNNERS
        .iter()
        .flat_map(|r| {
            [
                (format!("{}_API_KEY", r.env), r.api_key()),
                (format!("{}_API_SECRET", r.env), r.api_secret()),
            ]
        })
        .collect();
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let eval_args = [
        "--timeframe",
        tf.as_str(),
        "--config",
        "albra.toml",
        "--state",
        "c-state",
    ];
    let sync_args = ["--config", "albra.toml", "--state", "c-state"];
    let mut trails = HashMap::new();
    let mut counts = JobCounts::default();
    for i in start..candles.len() {
        let close = candles[i].open_time + tf.millis();
        // As cron starts them: the minute's sync at the close, the evaluator after its close
        // delay (3 s).
        server.set_time(close + 1_000);
        let r = harness::run("position-sync", dir, &server.url, &sync_args, &env).await;
        assert!(r.ok(), "position-sync at candle {i}:\n{r}");
        counts.syncs += 1;
        server.set_time(close + 5_000);
        let r = harness::run("evaluator", dir, &server.url, &eval_args, &env).await;
        assert!(r.ok(), "evaluator at candle {i}:\n{r}");
        counts.evaluators += 1;
        if let Some(next) = candles.get(i + 1) {
            counts.fired += play_candle(&server, next, base, &mut trails);
        }
    }
    let mut orders = Vec::new();
    for r in &RUNNERS {
        let key = r.api_key();
        for o in server.orders(&key) {
            let status = o["status"].as_str().unwrap_or_default().to_string();
            orders.push(OrderRow {
                strategy: r.strategy.to_string(),
                kind: "MARKET".into(),
                // An order a conditional order triggered (its `origType` is that order's type)
                // carries the conditional order's id here, a number of its own on paper.
                id: if o["origType"] == "MARKET" {
                    strip_owner(o["clientOrderId"].as_str().unwrap_or_default())
                } else {
                    "TRIGGERED".into()
                },
                side: o["side"].as_str().unwrap_or_default().to_string(),
                qty: num(o["origQty"].as_str().unwrap_or_default()),
                reduce_only: o["reduceOnly"] == true,
                close_position: false,
                trigger: String::new(),
                callback: String::new(),
                avg_price: num(o["avgPrice"].as_str().unwrap_or_default()),
                candle: (status != "NEW")
                    .then(|| candle_of(o["updateTime"].as_i64().unwrap_or_default(), base)),
                status,
            });
        }
        for a in server.algo_orders(&key) {
            let status = a["algoStatus"].as_str().unwrap_or_default().to_string();
            let kind = a["orderType"].as_str().unwrap_or_default().to_string();
            let trailing = kind == "TRAILING_STOP_MARKET";
            let id = a["clientAlgoId"].as_str().unwrap_or_default();
            let (activation, callback) = server.trailing_params(&key, id).unwrap_or_default();
            let trigger = if trailing {
                activation.map(|d| d.to_string()).unwrap_or_default()
            } else {
                a["triggerPrice"].as_str().unwrap_or_default().to_string()
            };
            let filled = status == "FINISHED";
            orders.push(OrderRow {
                strategy: r.strategy.to_string(),
                id: strip_owner(id),
                side: a["side"].as_str().unwrap_or_default().to_string(),
                qty: num(a["quantity"].as_str().unwrap_or_default()),
                reduce_only: a["reduceOnly"] == true,
                close_position: a["closePosition"] == true,
                trigger: num(&trigger),
                callback: callback.map(|d| num(&d.to_string())).unwrap_or_default(),
                avg_price: if filled {
                    algo_price(a["actualPrice"].as_str().unwrap_or_default())
                } else {
                    String::new()
                },
                candle: (status != "NEW")
                    .then(|| candle_of(a["updateTime"].as_i64().unwrap_or_default(), base)),
                kind,
                status,
            });
        }
    }
    let (trades, decisions) = from_store(&dir.join("c-state/albra.db"), tf, base, opens).await;
    (
        Outcome {
            orders,
            trades,
            decisions,
        },
        counts,
    )
}

/// How much the jobs path ran.
#[derive(Clone, Copy, Debug, Default)]
pub struct JobCounts {
    pub evaluators: usize,
    pub syncs: usize,
    /// Conditional orders the candles fired.
    pub fired: usize,
}
