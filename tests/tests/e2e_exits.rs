//! Exchange-side exits through the real `evaluator` and `position-sync` binaries against the
//! Binance-speaking loopback server: a ZLHMA_EMA_CROSS entry leaves its protective STOP_MARKET, a
//! reduce-only TAKE_PROFIT_MARKET ladder and a TRAILING_STOP_MARKET on the exchange; a ladder step
//! filled on the exchange is recorded by the sync as a partial close with the exchange's realised
//! PnL and fees and the rest of the ladder stays; the trailing stop closing the rest is recorded
//! as the close and nothing is left open; a step cancelled by hand is re-placed and alerted; on a
//! symbol shared with another strategy a step fill resizes the quantity stop and the trail to the
//! share left.

use albra_core::domain::{AccountId, Candle, Position, Side};
use albra_core::strategy::{self, Action};
use albra_tests::harness::{self, JobEnv, Signal, MAIN_KEY};
use rust_decimal::Decimal;
use serde_json::Value;

/// ZLHMA_EMA_CROSS on 15m with short averages so the sample holds a signal; the ladder at
/// +0.4 / +0.8 / +1.2 % and the trail at +0.6 % with a 0.5 % callback keep the test's prices
/// close to the entry.
const PARAMS: &str = r#"
ema_fast = 20
ema_slow = 50
adx_threshold = 20.0
stop_loss_pct = 0.03
take_profit_levels = [0.004, 0.008, 0.012]
take_profit_fractions = [0.25, 0.35, 0.40]
trailing_activation_pct = 0.006
trailing_distance_pct = 0.005
"#;

const HISTORY: usize = 1000;

fn config() -> String {
    format!(
        r#"
[binance]
recv_window_ms = 5000
timeout_ms = 2000

[jobs]
close_delay_secs = 3
kline_wait_secs = 2
history = {HISTORY}
pending_timeout_secs = 120

[notifier]
console = true
telegram = false

[[strategies]]
name = "ZLHMA_EMA_CROSS"
timeframe = "15m"
symbols = ["BTCUSDT"]
leverage = 3
size_pct = 0.1
[strategies.params]
{PARAMS}
[[accounts]]
id = "main"
key_source = "env"
strategies = ["ZLHMA_EMA_CROSS"]
"#
    )
}

/// The first candle where the strategy opens, seen exactly as the evaluator sees it (the last
/// `HISTORY` closed candles ending there).
fn first_signal(candles: &[Candle]) -> Signal {
    let params: toml::Table = toml::from_str(PARAMS).unwrap();
    let build = || strategy::build("ZLHMA_EMA_CROSS", &params, "test").unwrap();
    let opens = |s: &dyn strategy::Strategy| match s.decide(&strategy::Context::flat(0)).action {
        Action::Open { side, .. } => Some(side),
        _ => None,
    };
    // Candidates from one pass, each confirmed on the evaluator's window.
    let mut pass = build();
    for (i, c) in candles.iter().enumerate() {
        pass.update(c);
        if i < HISTORY || opens(pass.as_ref()).is_none() {
            continue;
        }
        let mut s = build();
        for c in &candles[i + 1 - HISTORY..=i] {
            s.update(c);
        }
        if let Some(side) = opens(s.as_ref()) {
            return Signal {
                index: i,
                side,
                open_time: c.open_time,
            };
        }
    }
    panic!("no ZLHMA_EMA_CROSS signal in the sample");
}

async fn env() -> JobEnv {
    let candles = harness::btc_15m();
    let signal = first_signal(&candles);
    let server = harness::start_server(&candles, signal.eval_time()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("albra.toml"), config()).unwrap();
    JobEnv {
        server,
        dir,
        signal,
    }
}

async fn position(env: &JobEnv) -> Option<Position> {
    env.repo()
        .positions(&AccountId::new("main"))
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.value)
        .next()
}

fn dec(v: &Value, key: &str) -> Decimal {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {v}"))
        .parse()
        .unwrap()
}

fn of_type<'a>(open: &'a [Value], t: &str) -> Vec<&'a Value> {
    open.iter().filter(|a| a["orderType"] == t).collect()
}

/// `x` on the 0.1 tick, rounded away from `entry` (a long's targets up, a short's down).
fn away(x: Decimal, side: Side) -> Decimal {
    let tick = Decimal::new(1, 1);
    match side {
        Side::Long => (x / tick).ceil() * tick,
        Side::Short => (x / tick).floor() * tick,
    }
}

fn floor_lot(x: Decimal) -> Decimal {
    let step = Decimal::new(1, 3);
    (x / step).floor() * step
}

/// `pct` of profit away from `entry` for `side`.
fn at(entry: Decimal, side: Side, pct: Decimal) -> Decimal {
    entry * (Decimal::ONE + side.sign() * pct)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ladder_and_the_trail_rest_on_the_exchange_a_step_fill_is_a_partial_and_the_trail_closes(
) {
    let env = env().await;
    let r = env.evaluator().await;
    assert!(r.ok() && r.stdout.contains("entered"), "{r}");
    let pos = position(&env).await.expect("position");
    let side = pos.side;
    assert_eq!(side, env.signal.side);
    let (q, entry) = (pos.qty.get(), pos.entry_price.get());
    assert_eq!(env.server.position(MAIN_KEY, "BTCUSDT").abs(), q);

    // STOP_MARKET (closePosition) + 3 reduce-only TAKE_PROFIT_MARKET + TRAILING_STOP_MARKET.
    let open = env.server.open_algo_orders(MAIN_KEY);
    assert_eq!(open.len(), 5, "{open:#?}");
    let stops = of_type(&open, "STOP_MARKET");
    assert_eq!(stops.len(), 1);
    assert_eq!(stops[0]["closePosition"], true);
    let exit_side = side.exit_order_side().as_str();
    let q1 = floor_lot(q * Decimal::new(25, 2));
    let q2 = floor_lot((q - q1) * (Decimal::new(35, 2) / Decimal::new(75, 2)));
    let q3 = q - q1 - q2;
    let levels = [Decimal::new(4, 3), Decimal::new(8, 3), Decimal::new(12, 3)];
    let want: Vec<(Decimal, Decimal)> = [q1, q2, q3]
        .iter()
        .zip(levels)
        .map(|(q, l)| (away(at(entry, side, l), side), *q))
        .collect();
    let mut tps: Vec<(Decimal, Decimal)> = of_type(&open, "TAKE_PROFIT_MARKET")
        .iter()
        .map(|a| {
            assert_eq!(a["reduceOnly"], true, "{a}");
            assert_eq!(a["closePosition"], false, "{a}");
            assert_eq!(a["side"], exit_side, "{a}");
            (dec(a, "triggerPrice"), dec(a, "quantity"))
        })
        .collect();
    tps.sort_by_key(|(t, _)| side.sign() * *t);
    assert_eq!(tps, want, "entry {entry} qty {q}");
    assert_eq!(q1 + q2 + q3, q);
    let trails = of_type(&open, "TRAILING_STOP_MARKET");
    assert_eq!(trails.len(), 1);
    assert_eq!(trails[0]["reduceOnly"], true);
    assert_eq!(dec(trails[0], "quantity"), q);
    // What the exchange was asked for the trail: activation +0.6 %, callbackRate 0.5.
    let sent = env
        .server
        .requests()
        .into_iter()
        .find(|r| {
            r.path == "/fapi/v1/algoOrder"
                && r.params.get("type").map(String::as_str) == Some("TRAILING_STOP_MARKET")
        })
        .expect("trailing stop request");
    assert_eq!(sent.params["callbackRate"], "0.5");
    let activation: Decimal = sent.params["activatePrice"].parse().unwrap();
    assert_eq!(activation, away(at(entry, side, Decimal::new(6, 3)), side));
    let trail_id = trails[0]["clientAlgoId"].as_str().unwrap().to_string();

    // The mark moves through TP1: the exchange fills step 1 only.
    assert_eq!(env.server.trigger_algo_orders("BTCUSDT", want[0].0), 1);
    assert_eq!(env.server.position(MAIN_KEY, "BTCUSDT").abs(), q - q1);
    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert!(s.stdout.contains("PARTIAL EXIT 1 on the exchange"), "{s}");
    let trades = env.repo().trades(&AccountId::new("main")).await.unwrap();
    assert_eq!(trades.len(), 1, "{trades:?}");
    let tr = &trades[0];
    assert_eq!(tr.reason, "partial_take_profit_1");
    assert_eq!(tr.qty.get(), q1);
    // PnL and fees are the server's userTrades figures (the entry fee shared pro rata).
    let fills = env.server.user_trades(MAIN_KEY);
    assert_eq!(fills.len(), 2, "{fills:#?}");
    let (entry_fill, exit_fill) = (&fills[0], &fills[1]);
    let entry_fee = dec(entry_fill, "commission");
    let fee_share = entry_fee * q1 / q;
    assert_eq!(tr.exit_price.get(), dec(exit_fill, "price"));
    assert_eq!(tr.fees.get(), dec(exit_fill, "commission") + fee_share);
    assert_eq!(
        tr.pnl.get(),
        dec(exit_fill, "realizedPnl") - dec(exit_fill, "commission") - fee_share
    );
    let left = position(&env).await.expect("still open");
    assert_eq!(left.qty.get(), q - q1);
    assert_eq!(left.partial_exits_done, 1);
    // Steps 2 and 3, the trail and the stop are still the same orders.
    let open_after = env.server.open_algo_orders(MAIN_KEY);
    assert_eq!(open_after.len(), 4, "{open_after:#?}");
    let ids = |v: &[Value]| -> Vec<String> {
        let mut x: Vec<String> = v
            .iter()
            .map(|a| a["clientAlgoId"].as_str().unwrap().to_string())
            .collect();
        x.sort();
        x
    };
    let tp1_id = of_type(&open, "TAKE_PROFIT_MARKET")
        .into_iter()
        .find(|a| dec(a, "triggerPrice") == want[0].0)
        .unwrap()["clientAlgoId"]
        .clone();
    let before: Vec<String> = ids(&open)
        .into_iter()
        .filter(|id| tp1_id != id.as_str())
        .collect();
    assert_eq!(ids(&open_after), before);
    // A second sync records nothing twice and changes no order.
    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert_eq!(
        env.repo()
            .trades(&AccountId::new("main"))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(ids(&env.server.open_algo_orders(MAIN_KEY)), before);

    // The price runs to +0.7 % (the trail activates, below step 2) and gives back 0.6 %: the
    // trailing stop closes what is left.
    let peak = away(at(entry, side, Decimal::new(7, 3)), side);
    assert_eq!(env.server.trigger_algo_orders("BTCUSDT", peak), 0);
    let back = match side {
        Side::Long => (peak * Decimal::new(994, 3)).round_dp(1),
        Side::Short => (peak * Decimal::new(1006, 3)).round_dp(1),
    };
    assert_eq!(env.server.trigger_algo_orders("BTCUSDT", back), 1);
    assert_eq!(env.server.position(MAIN_KEY, "BTCUSDT"), Decimal::ZERO);
    let fired = env
        .server
        .algo_orders(MAIN_KEY)
        .into_iter()
        .find(|a| a["clientAlgoId"] == trail_id.as_str())
        .unwrap();
    assert_eq!(fired["algoStatus"], "FINISHED");
    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert!(
        s.stdout.contains("CLOSED by the exchange (trailing_stop)"),
        "{s}"
    );
    let trades = env.repo().trades(&AccountId::new("main")).await.unwrap();
    assert_eq!(trades.len(), 2, "{trades:?}");
    let close = trades.iter().find(|t| t.id.ends_with(":close")).unwrap();
    assert_eq!(close.reason, "trailing_stop");
    assert_eq!(close.qty.get(), q - q1);
    let fills = env.server.user_trades(MAIN_KEY);
    let last = fills.last().unwrap();
    assert_eq!(close.exit_price.get(), dec(last, "price"));
    assert_eq!(
        close.fees.get(),
        dec(last, "commission") + (entry_fee - fee_share)
    );
    // Stop, steps 2 and 3: all cancelled, nothing piles up; the record is gone.
    assert!(
        env.server.open_algo_orders(MAIN_KEY).is_empty(),
        "{:#?}",
        env.server.open_algo_orders(MAIN_KEY)
    );
    assert!(position(&env).await.is_none());
    // Every exit happened on the exchange: the entry is the only plain order ever sent.
    assert_eq!(env.orders_posted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_profit_step_cancelled_by_hand_is_re_placed_and_alerted() {
    let env = env().await;
    let r = env.evaluator().await;
    assert!(r.ok() && r.stdout.contains("entered"), "{r}");
    let open = env.server.open_algo_orders(MAIN_KEY);
    assert_eq!(open.len(), 5, "{open:#?}");
    let mut tps = of_type(&open, "TAKE_PROFIT_MARKET");
    tps.sort_by_key(|a| dec(a, "quantity"));
    let victim = tps
        .iter()
        .find(|a| a["clientAlgoId"].as_str().unwrap().contains("albTL"))
        .copied()
        .expect("a ladder step")
        .clone();
    let id = victim["clientAlgoId"].as_str().unwrap().to_string();
    env.server.cancel_algo_by_hand(MAIN_KEY, &id);
    assert_eq!(env.server.open_algo_orders(MAIN_KEY).len(), 4);

    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert!(
        s.stdout.contains("was missing (CANCELED); re-placed at"),
        "{s}"
    );
    let open = env.server.open_algo_orders(MAIN_KEY);
    assert_eq!(open.len(), 5, "{open:#?}");
    let again = of_type(&open, "TAKE_PROFIT_MARKET")
        .into_iter()
        .find(|a| {
            dec(a, "triggerPrice") == dec(&victim, "triggerPrice")
                && dec(a, "quantity") == dec(&victim, "quantity")
        })
        .expect("the step is back at the same trigger and quantity");
    assert_ne!(again["clientAlgoId"], id.as_str(), "a fresh client id");
    assert_eq!(again["reduceOnly"], true);
    let stored = position(&env).await.unwrap();
    assert!(stored
        .exit_orders
        .iter()
        .any(|e| e.client_id == again["clientAlgoId"].as_str().unwrap()));
    // Healed: the next sync neither re-places nor alerts.
    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert!(!s.stdout.contains("re-placed"), "{s}");
    assert_eq!(env.server.open_algo_orders(MAIN_KEY).len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_shared_symbol_a_step_fill_resizes_the_quantity_stop_and_the_trail_to_the_share_left()
{
    use albra_core::domain::{
        ClientId, Intent, Notional, PositionKey, PositionStatus, Price, Qty, StrategyId, Symbol,
    };
    let env = env().await;
    // TFPE (4h, not evaluated by this 15m run) also trades BTCUSDT on this account.
    let path = env.dir().join("albra.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(
            "[[accounts]]",
            "[[strategies]]\nname = \"TFPE\"\ntimeframe = \"4h\"\nsymbols = [\"BTCUSDT\"]\nleverage = 3\nsize_pct = 0.1\n\n[[accounts]]",
        )
        .replace(
            "strategies = [\"ZLHMA_EMA_CROSS\"]",
            "strategies = [\"ZLHMA_EMA_CROSS\", \"TFPE\"]",
        );
    std::fs::write(&path, text).unwrap();
    let r = env.evaluator().await;
    assert!(r.ok() && r.stdout.contains("entered"), "{r}");
    let zl = position(&env).await.unwrap();
    let (side, q, entry) = (zl.side, zl.qty.get(), zl.entry_price.get());

    // TFPE holds a share on the same side: its order on the exchange and its record.
    let tfpe_qty = Decimal::new(4, 3);
    env.server.manual_market_order(
        MAIN_KEY,
        "BTCUSDT",
        side.entry_order_side().as_str(),
        tfpe_qty,
    );
    let now = env.signal.eval_time();
    let main = AccountId::new("main");
    let (sid, sym) = (StrategyId::new("TFPE"), Symbol::new("BTCUSDT"));
    let open4h = albra_core::domain::Timeframe::H4.last_closed_open(now);
    let stop = away(at(entry, side, Decimal::new(-3, 2)), side.opposite());
    let tfpe = Position {
        key: PositionKey {
            account: main.clone(),
            strategy: sid.clone(),
            symbol: sym.clone(),
        },
        side,
        qty: Qty::new(tfpe_qty),
        entry_price: Price::new(entry),
        leverage: 3,
        status: PositionStatus::Active,
        is_manual: false,
        entry_client_id: ClientId::derive(&main, &sid, &sym, open4h, Intent::Entry, 0).0,
        signal_open_time: open4h,
        opened_at: now,
        stop_loss: Some(Price::new(stop)),
        take_profit: None,
        stop_client_id: None,
        stop_generation: 0,
        partial_exits_done: 0,
        pyramids_done: 0,
        best_price: None,
        entry_fee: Notional::ZERO,
        updated_at: now,
        exit_orders: Vec::new(),
        exit_generation: 0,
    };
    env.repo().save_position(&tfpe, None).await.unwrap();
    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert!(
        s.stdout.contains("stop re-placed as reduce-only quantity"),
        "{s}"
    );

    // Step 1 fills on the exchange: ZLHMA's quantity stop and its trail follow its share; the
    // ladder's later steps and TFPE's stop stay as they were.
    let open = env.server.open_algo_orders(MAIN_KEY);
    let tp1 = of_type(&open, "TAKE_PROFIT_MARKET")
        .into_iter()
        .min_by_key(|a| side.sign() * dec(a, "triggerPrice"))
        .unwrap()
        .clone();
    let q1 = dec(&tp1, "quantity");
    assert_eq!(
        env.server
            .trigger_algo_orders("BTCUSDT", dec(&tp1, "triggerPrice")),
        1
    );
    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert!(s.stdout.contains("PARTIAL EXIT 1 on the exchange"), "{s}");
    let open = env.server.open_algo_orders(MAIN_KEY);
    let mut stops: Vec<Decimal> = of_type(&open, "STOP_MARKET")
        .iter()
        .map(|a| {
            assert_eq!(a["reduceOnly"], true, "{a}");
            dec(a, "quantity")
        })
        .collect();
    stops.sort();
    let mut want = vec![tfpe_qty, q - q1];
    want.sort();
    assert_eq!(stops, want, "{open:#?}");
    let trails = of_type(&open, "TRAILING_STOP_MARKET");
    assert_eq!(trails.len(), 1);
    assert_eq!(dec(trails[0], "quantity"), q - q1, "the share, not the net");
    assert_eq!(of_type(&open, "TAKE_PROFIT_MARKET").len(), 2);
    // Σ shares = the exchange's net position.
    let stored = env.repo().positions(&main).await.unwrap();
    let sum: Decimal = stored
        .iter()
        .map(|v| v.value.side.sign() * v.value.qty.get())
        .sum();
    assert_eq!(sum, env.server.position(MAIN_KEY, "BTCUSDT"));
}
