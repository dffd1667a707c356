//! Exchange-side exits through the engine over the paper exchange and the repository's real
//! candles: after a ZLHMA_EMA_CROSS entry the take-profit ladder and the trailing stop rest on the
//! exchange; a ladder step fills inside a candle at its trigger and the sync records it once, as
//! a partial close with the exchange's own figures, leaving the rest of the ladder in place; when
//! the position closes, nothing of it stays open.

// The engine fixtures the core crate's own tests use (EMA_CROSS on the 15m file, paper exchange).
#[path = "../../tests/common/mod.rs"]
mod common;

use albra_adapters::store::sqlite::SqliteStore;
use albra_core::config::Config;
use albra_core::domain::{
    AccountId, Candle, ExitKind, OrderSide, Position, Side, Symbol, Timeframe,
};
use albra_core::jobs::{AccountRuntime, Engine, EngineTiming, Sizing};
use albra_core::notify::CollectingNotifier;
use albra_core::paper::{PaperConfig, PaperExchange};
use albra_core::ports::*;
use albra_core::state::StateRepo;
use albra_core::strategy::{self, Action};
use rust_decimal::Decimal;
use std::sync::Arc;

/// ZLHMA_EMA_CROSS on 15m with short averages and close take-profit levels, so the sample holds
/// a signal and a ladder step fills within hours; the stop is far enough not to fire first.
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

fn config() -> Config {
    let text = format!(
        r#"
[notifier]
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
    );
    Config::parse(&text, "test.toml").unwrap()
}

/// Open time and side of the first entry signal, as the evaluator sees it.
fn first_signal(candles: &[Candle]) -> (i64, Side) {
    let params: toml::Table = toml::from_str(PARAMS).unwrap();
    let mut s = strategy::build("ZLHMA_EMA_CROSS", &params, "t").unwrap();
    for (i, c) in candles.iter().enumerate() {
        s.update(c);
        // Leave the evaluator a full history window before the signal.
        if i < 1000 {
            continue;
        }
        if let Action::Open { side, .. } = s.decide(&strategy::Context::flat(0)).action {
            return (c.open_time, side);
        }
    }
    panic!("no signal in the sample");
}

struct Setup {
    engine: Engine,
    ex: Arc<PaperExchange>,
    clock: Arc<SimClock>,
    notes: Arc<CollectingNotifier>,
    candles: Vec<Candle>,
    signal: (i64, Side),
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let series = common::perp_15m();
    let candles = series.candles.clone();
    let signal = first_signal(&candles);
    let clock = Arc::new(SimClock::new(signal.0));
    let ex = Arc::new(common::paper_exchange(series, &clock));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config();
    let notes = Arc::new(CollectingNotifier::default());
    let engine = Engine {
        accounts: vec![AccountRuntime {
            config: cfg.accounts[0].clone(),
            exchange: ex.clone(),
        }],
        config: Arc::new(cfg),
        repo: StateRepo::new(Arc::new(
            SqliteStore::open_fast(dir.path().join("t.db")).unwrap(),
        )),
        notifier: notes.clone(),
        timing: EngineTiming::instant(),
        cache: Default::default(),
        sizing: Sizing::Risk,
    };
    Setup {
        engine,
        ex,
        clock,
        notes,
        candles,
        signal,
        _dir: dir,
    }
}

async fn position(s: &Setup) -> Option<Position> {
    s.engine
        .repo
        .positions(&AccountId::new("main"))
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.value)
        .next()
}

#[tokio::test]
async fn a_ladder_step_fills_intra_candle_at_its_trigger_and_is_recorded_once() {
    let s = setup();
    let main = AccountId::new("main");
    let now = s.signal.0 + Timeframe::M15.millis() + 3_000;
    s.clock.set(now);
    let r = s.engine.evaluate(Timeframe::M15, now).await;
    assert!(r.ok(), "{r:?}");
    let pos = position(&s).await.expect("entered");
    let side = pos.side;
    assert_eq!(side, s.signal.1);

    // Stop + three ladder steps + the trailing stop rest on the exchange.
    let open = s.ex.open_algo_orders(None).await.unwrap();
    assert_eq!(open.len(), 5, "{open:?}");
    assert_eq!(pos.exit_orders.len(), 4, "{:?}", pos.exit_orders);
    let entry = pos.entry_price.get();
    let mut ladder_qty = Decimal::ZERO;
    for (i, e) in pos.exit_orders.iter().enumerate() {
        let a = open
            .iter()
            .find(|a| a.client_algo_id == e.client_id)
            .expect("placed");
        assert!(a.reduce_only && !a.close_position);
        assert_eq!(a.side, side.exit_order_side());
        assert_eq!(a.qty, Some(e.qty));
        match e.kind {
            ExitKind::TakeProfit { stage } => {
                assert_eq!(usize::from(stage), i + 1);
                assert_eq!(a.kind, AlgoKind::TakeProfitMarket);
                let level = [Decimal::new(4, 3), Decimal::new(8, 3), Decimal::new(12, 3)][i];
                let want = entry * (Decimal::ONE + side.sign() * level);
                assert!(
                    (e.trigger_price.get() - want).abs() <= Decimal::new(1, 1),
                    "{e:?} vs {want}"
                );
                ladder_qty += e.qty.get();
            }
            ExitKind::Trailing { callback_rate } => {
                assert_eq!(callback_rate, Decimal::new(5, 1));
                assert_eq!(
                    a.kind,
                    AlgoKind::TrailingStopMarket {
                        callback_rate: Decimal::new(5, 1)
                    }
                );
                assert_eq!(e.qty, pos.qty);
            }
        }
    }
    assert_eq!(
        ladder_qty,
        pos.qty.get(),
        "the ladder closes exactly the share"
    );
    let tp1 = pos.exit_orders[0].clone();

    // Only the sync runs from here: the exchange does the exiting.
    let mut t = now;
    let mut after = None;
    for _ in 0..2000 {
        t += 60_000;
        s.clock.set(t);
        let r = s.engine.sync_positions(t).await;
        assert!(r.ok(), "{r:?}");
        let trades = s.engine.repo.trades(&main).await.unwrap();
        if !trades.is_empty() {
            after = Some((trades, position(&s).await));
            break;
        }
    }
    let (trades, left) = after.expect("a 0.4 % take-profit fills within days");
    // A candle that crossed several levels fills several steps at once: each is its own trade.
    let tr = trades
        .iter()
        .find(|x| x.id == format!("{}:tp1", pos.entry_client_id))
        .unwrap_or_else(|| panic!("{trades:?}"));
    assert_eq!(tr.reason, "partial_take_profit_1");
    assert_eq!(tr.qty, tp1.qty);

    // Filled inside the candle that crossed the trigger, at the trigger (less slippage), unless
    // that candle opened beyond it.
    let c = s
        .candles
        .iter()
        .find(|c| {
            c.open_time <= tr.exit_time && tr.exit_time < c.open_time + Timeframe::M15.millis()
        })
        .expect("fill candle");
    let slip = PaperConfig::default().slippage;
    let trig = tp1.trigger_price.get();
    let gapped = match side {
        Side::Long => c.open.get() >= trig,
        Side::Short => c.open.get() <= trig,
    };
    let base = if gapped { c.open.get() } else { trig };
    let want_px = match side.exit_order_side() {
        OrderSide::Sell => base * (Decimal::ONE - slip),
        OrderSide::Buy => base * (Decimal::ONE + slip),
    };
    assert_eq!(tr.exit_price.get(), want_px, "candle {c:?}");
    match side {
        Side::Long => assert!(c.high.get() >= trig),
        Side::Short => assert!(c.low.get() <= trig),
    }

    // The exchange's own figures: realised PnL and commission of that fill, less the entry
    // fee's share of the part closed.
    let order_id =
        s.ex.algo_by_client_id(&tp1.client_id)
            .await
            .unwrap()
            .unwrap()
            .actual_order_id
            .expect("triggered");
    let fills = s.ex.user_trades(&Symbol::new("BTCUSDT"), 0).await.unwrap();
    let exit_fill: Vec<_> = fills.iter().filter(|f| f.order_id == order_id).collect();
    assert_eq!(exit_fill.len(), 1, "{fills:?}");
    let fee_share = pos.entry_fee.get() * tr.qty.get() / pos.qty.get();
    assert_eq!(tr.fees.get(), exit_fill[0].commission.get() + fee_share);
    assert_eq!(
        tr.pnl.get(),
        exit_fill[0].realized_pnl.get() - exit_fill[0].commission.get() - fee_share
    );

    // The rest stays: a smaller share, the steps done counted, the other exit orders untouched
    // (same ids, still open).
    if let Some(left) = left {
        let done: Vec<u8> = (1..=3)
            .filter(|k| trades.iter().any(|x| x.id.ends_with(&format!(":tp{k}"))))
            .collect();
        let closed: Decimal = trades.iter().map(|x| x.qty.get()).sum();
        assert_eq!(left.qty.get(), pos.qty.get() - closed);
        assert_eq!(left.partial_exits_done, *done.last().unwrap());
        let want_left: Vec<_> = pos
            .exit_orders
            .iter()
            .filter(|e| !matches!(e.kind, ExitKind::TakeProfit { stage } if done.contains(&stage)))
            .cloned()
            .collect();
        assert_eq!(left.exit_orders, want_left);
        let open_ids: Vec<String> =
            s.ex.open_algo_orders(None)
                .await
                .unwrap()
                .into_iter()
                .map(|a| a.client_algo_id)
                .collect();
        for e in &left.exit_orders {
            assert!(open_ids.contains(&e.client_id), "{e:?} gone");
        }
    }
    assert!(s
        .notes
        .take()
        .iter()
        .any(|n| n.kind == "partial_exit" && n.text.contains("PARTIAL EXIT 1 on the exchange")));

    // Recorded once, however often the sync runs; then the exchange closes the rest and every
    // exit order of the position is gone from the exchange.
    let mut closed = position(&s).await.is_none();
    for _ in 0..6000 {
        if closed {
            break;
        }
        t += 60_000;
        s.clock.set(t);
        assert!(s.engine.sync_positions(t).await.ok());
        let trades = s.engine.repo.trades(&main).await.unwrap();
        assert_eq!(
            trades.iter().filter(|x| x.id.ends_with(":tp1")).count(),
            1,
            "{trades:?}"
        );
        closed = position(&s).await.is_none();
    }
    assert!(closed, "the stop, the trail or the last step closes it");
    let trades = s.engine.repo.trades(&main).await.unwrap();
    let total: Decimal = trades.iter().map(|x| x.qty.get()).sum();
    assert_eq!(total, pos.qty.get(), "{trades:?}");
    let last = trades.iter().find(|x| x.id.ends_with(":close")).unwrap();
    assert!(
        ["stop", "trailing_stop", "take_profit"].contains(&last.reason.as_str()),
        "{last:?}"
    );
    assert!(s.ex.open_algo_orders(None).await.unwrap().is_empty());
    assert_eq!(s.ex.positions().await.unwrap().len(), 0);
}

#[tokio::test]
async fn a_step_filled_since_the_last_sync_is_recorded_by_the_evaluator_before_it_acts() {
    let s = setup();
    let main = AccountId::new("main");
    let tf = Timeframe::M15;
    let now = s.signal.0 + tf.millis() + 3_000;
    s.clock.set(now);
    assert!(s.engine.evaluate(tf, now).await.ok());
    let pos = position(&s).await.expect("entered");
    let held = |ps: Vec<ExchangePosition>| ps.iter().map(|p| p.amount.abs()).sum::<Decimal>();

    // Candle by candle, the evaluator alone (no sync): once the exchange has filled a step behind
    // its back, the next decision that would trade records that fill first, as the sync would,
    // instead of skipping the candle.
    let mut t = now;
    let mut acted = None;
    for _ in 0..2000 {
        t += tf.millis();
        s.clock.set(t);
        let on_exchange = held(s.ex.positions().await.unwrap());
        let r = s.engine.evaluate(tf, t).await;
        assert!(r.ok(), "{r:?}");
        assert!(
            !r.lines
                .iter()
                .any(|l| l.to_string().contains("differs from the stored shares")),
            "{r:?}"
        );
        if !s.engine.repo.trades(&main).await.unwrap().is_empty() {
            assert!(
                on_exchange < pos.qty.get(),
                "a trade recorded before the exchange filled anything: {r:?}"
            );
            acted = Some(r);
            break;
        }
    }
    let r = acted.expect("a decision to trade after the exchange filled a step");
    let trades = s.engine.repo.trades(&main).await.unwrap();
    let tp1 = trades
        .iter()
        .find(|x| x.id.ends_with(":tp1"))
        .unwrap_or_else(|| panic!("the step's fill recorded: {trades:?} {r:?}"));
    assert_eq!(tp1.reason, "partial_take_profit_1");
    // What is stored is what the exchange holds after the decision acted.
    let left = position(&s).await;
    assert_eq!(
        left.as_ref().map_or(Decimal::ZERO, |p| p.qty.get()),
        held(s.ex.positions().await.unwrap()),
        "{r:?}"
    );
    if let Some(left) = &left {
        assert!(left.partial_exits_done >= 1);
    }
    // The sync finds nothing left to record: nothing counted twice.
    assert!(s.engine.sync_positions(t).await.ok());
    assert!(s.engine.sync_positions(t + 1).await.ok());
    assert_eq!(
        s.engine.repo.trades(&main).await.unwrap().len(),
        trades.len()
    );
}
