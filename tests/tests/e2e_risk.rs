//! Risk, sizing and position cases through the real `evaluator` and `position-sync` binaries
//! against the Binance-speaking loopback server: the MDD level scales the next entry, the
//! daily-loss halt blocks entries and lifts at the next day start, a manual position partly
//! closed by hand is tracked as MODIFIED and never traded, a liquidation is recorded with the
//! exchange's clearance fee and funding and its stale stop cancelled, a stop fill counts once in
//! the risk state however often the sync runs, two strategies holding opposite shares of one
//! symbol keep their own quantity stops, and contradicting risk limits stop the job.

use albra_core::domain::{
    AccountId, AccountState, ClientId, Intent, Notional, Position, PositionKey, PositionStatus,
    Price, Qty, Side, StrategyId, Symbol, Timeframe,
};
use albra_core::risk;
use albra_tests::harness::{self, signals, TestConfig, MAIN_KEY};
use rust_decimal::Decimal;

type Env = harness::JobEnv;

/// Risk scenarios also seed and read the account state.
trait AccountStateAccess {
    async fn seed(&self, st: AccountState);
    async fn state(&self) -> AccountState;
}

impl AccountStateAccess for Env {
    /// Store an account state for `main` before any job runs.
    async fn seed(&self, st: AccountState) {
        self.repo()
            .save_account_state(&AccountId::new("main"), &st, None)
            .await
            .expect("seed account state");
    }
    async fn state(&self) -> AccountState {
        self.repo()
            .account_state(&AccountId::new("main"))
            .await
            .unwrap()
            .expect("account state")
            .value
    }
}

fn main_id() -> AccountId {
    AccountId::new("main")
}

/// A server a few seconds after the `n`-th EMA_CROSS signal candle closes (0 = the first).
async fn env_at_signal(n: usize) -> Env {
    Env::at_signal(&TestConfig::default(), n).await
}

/// An account state of `equity` with its peak at `peak`, for the trading day of `now`.
fn seeded(equity: Decimal, peak: Decimal, day_start: Decimal, now: i64) -> AccountState {
    AccountState {
        equity: Notional::new(equity),
        peak_equity: Notional::new(peak),
        day_start_equity: Notional::new(day_start),
        day: risk::trading_day(now, 0),
        updated_at: now,
        ..AccountState::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mdd_level_two_halves_the_next_entry_and_the_level_change_is_notified() {
    // The same signal twice: once at the equity peak, once 37 % below a stored peak.
    let base = env_at_signal(0).await;
    let r = base.evaluator().await;
    assert!(r.ok() && r.stdout.contains("entered"), "{r}");
    let full = base.server.position(MAIN_KEY, "BTCUSDT").abs();
    assert!(!r.stdout.contains("MDD level"), "{r}");

    let env = env_at_signal(0).await;
    let now = env.signal.eval_time();
    let peak = Decimal::from(10_000) / Decimal::new(63, 2); // 10 000 is 37 % below this peak
    env.seed(seeded(
        Decimal::from(10_000),
        peak,
        Decimal::from(10_000),
        now,
    ))
    .await;
    let r = env.evaluator().await;
    assert!(r.ok(), "{r}");
    assert!(r.stdout.contains("entered"), "{r}");
    let half = env.server.position(MAIN_KEY, "BTCUSDT").abs();
    // Both quantities are rounded down to the 0.001 step.
    let step = Decimal::new(1, 3);
    assert!(
        (half * Decimal::TWO - full).abs() <= step * Decimal::TWO && half < full,
        "level 2 should halve {full}, got {half}\n{r}"
    );
    // The reason is on the decision line and in a notification, and the level change is notified.
    assert!(r.stdout.contains("MDD level 2 (drawdown 37"), "{r}");
    assert!(r.stdout.contains("×0.5"), "{r}");
    assert!(r.stdout.contains("MDD level 0 → 2"), "{r}");
    let st = env.state().await;
    assert_eq!(st.mdd_level, 2);
    assert_eq!(st.peak_equity.get(), peak, "the peak never moves down");
    // The protective stop still sits on the exchange for the smaller position.
    assert_eq!(env.server.open_algo_orders(MAIN_KEY).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_loss_halt_blocks_entries_and_lifts_at_the_next_day_start() {
    let env = env_at_signal(0).await;
    let now = env.signal.eval_time();
    // The day started at 11 000; the wallet holds 10 000: a 9 % loss against a 5 % limit.
    let start = Decimal::from(11_000);
    env.seed(seeded(start, start, start, now)).await;
    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert!(s.stdout.contains("DAILY LOSS LIMIT hit: 9.09%"), "{s}");
    let until = risk::next_day_start(now, 0);
    assert_eq!(env.state().await.daily_halt_until, Some(until));

    let r = env.evaluator().await;
    assert!(r.ok(), "{r}");
    assert!(
        r.stdout.contains("blocked by risk: daily loss limit"),
        "{r}"
    );
    assert_eq!(env.orders_posted(), 0, "no entry while halted");
    assert!(env.server.open_algo_orders(MAIN_KEY).is_empty());

    // The next signal after the day start: the halt is lifted and the entry goes through.
    let candles = harness::btc_15m();
    let next = signals(&candles, 1000, env.signal.index + 1, 20)
        .into_iter()
        .find(|s| s.eval_time() > until)
        .expect("a signal after the halt");
    env.server.set_time(next.eval_time());
    let r = env.evaluator().await;
    assert!(r.ok(), "{r}");
    assert!(r.stdout.contains("daily loss halt lifted"), "{r}");
    assert!(r.stdout.contains("entered"), "{r}");
    assert_eq!(env.orders_posted(), 1);
    let st = env.state().await;
    assert_eq!(st.daily_halt_until, None);
    assert_eq!(st.day, risk::trading_day(next.eval_time(), 0));
    assert_eq!(st.day_start_equity.get(), Decimal::from(10_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_position_partly_closed_by_hand_is_modified_and_never_traded() {
    let env = env_at_signal(0).await;
    env.server
        .manual_market_order(MAIN_KEY, "BTCUSDT", "BUY", Decimal::new(5, 3));
    let s = env.sync().await;
    assert!(s.ok() && s.stdout.contains("MANUAL position found"), "{s}");
    env.server
        .manual_market_order(MAIN_KEY, "BTCUSDT", "SELL", Decimal::new(2, 3));
    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert!(
        s.stdout
            .contains("MANUAL BTCUSDT changed: LONG 0.005 → LONG 0.003"),
        "{s}"
    );
    let p = env.repo().positions(&main_id()).await.unwrap();
    assert_eq!(p.len(), 1);
    assert!(p[0].value.is_manual);
    assert_eq!(p[0].value.qty.get(), Decimal::new(3, 3));
    assert_eq!(p[0].value.status, PositionStatus::Modified);
    // Sync never trades or protects a manual position; the sum still matches the exchange.
    assert_eq!(env.orders_posted(), 0);
    assert!(env.server.open_algo_orders(MAIN_KEY).is_empty());
    assert_eq!(
        env.server.position(MAIN_KEY, "BTCUSDT"),
        p[0].value.qty.get(),
        "Σ shares + manual = exchange net"
    );
    // Closed by hand entirely: the record goes.
    env.server
        .manual_market_order(MAIN_KEY, "BTCUSDT", "SELL", Decimal::new(3, 3));
    let s = env.sync().await;
    assert!(s.ok() && s.stdout.contains("MANUAL LONG"), "{s}");
    assert!(env.repo().positions(&main_id()).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liquidation_is_recorded_with_the_exchange_fee_and_funding_and_its_stop_cancelled() {
    let env = env_at_signal(0).await;
    let r = env.evaluator().await;
    assert!(r.ok() && r.stdout.contains("entered"), "{r}");
    let amount = env.server.position(MAIN_KEY, "BTCUSDT");
    assert_eq!(env.server.open_algo_orders(MAIN_KEY).len(), 1);
    let entry_fee: Decimal = env
        .server
        .user_trades(MAIN_KEY)
        .iter()
        .map(|f| {
            f["commission"]
                .as_str()
                .unwrap()
                .parse::<Decimal>()
                .unwrap()
        })
        .sum();

    // Eight hours later: one funding payment, then the exchange liquidates the position 40 %
    // through the entry (the stop never fired: a gap).
    let t = env.signal.eval_time() + 8 * 3_600_000;
    env.server.set_time(t);
    env.server
        .funding(MAIN_KEY, "BTCUSDT", Decimal::new(-125, 2));
    let entry: Decimal = env.repo().positions(&main_id()).await.unwrap()[0]
        .value
        .entry_price
        .get();
    let px = if amount > Decimal::ZERO {
        (entry * Decimal::new(6, 1)).round_dp(1)
    } else {
        (entry * Decimal::new(14, 1)).round_dp(1)
    };
    env.server.set_mark_price("BTCUSDT", px);
    let liq_id = env.server.liquidate(MAIN_KEY, "BTCUSDT", px).unwrap();
    assert!(liq_id.starts_with("autoclose-"));
    assert_eq!(env.server.position(MAIN_KEY, "BTCUSDT"), Decimal::ZERO);

    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert!(
        s.stdout.contains("CLOSED by the exchange (liquidation)"),
        "{s}"
    );
    let trades = env.repo().trades(&main_id()).await.unwrap();
    assert_eq!(trades.len(), 1);
    let tr = &trades[0];
    assert_eq!(tr.reason, "liquidation");
    assert_eq!(tr.exit_price.get(), px);
    // Figures from the exchange: realised PnL and commissions from userTrades, the clearance fee
    // and funding from the income history.
    let fills = env.server.user_trades(MAIN_KEY);
    let realized: Decimal = fills
        .iter()
        .map(|f| {
            f["realizedPnl"]
                .as_str()
                .unwrap()
                .parse::<Decimal>()
                .unwrap()
        })
        .sum();
    let commissions: Decimal = fills
        .iter()
        .map(|f| {
            f["commission"]
                .as_str()
                .unwrap()
                .parse::<Decimal>()
                .unwrap()
        })
        .sum();
    let clearance = (amount.abs() * px * Decimal::new(5, 3)).round_dp(8);
    assert!(commissions > entry_fee);
    assert_eq!(tr.funding.get(), Decimal::new(-125, 2));
    assert_eq!(tr.fees.get(), commissions + clearance);
    assert_eq!(
        tr.pnl.get(),
        realized - commissions - clearance + tr.funding.get()
    );
    // No position left, and the stale stop is gone from the exchange.
    assert!(env.repo().positions(&main_id()).await.unwrap().is_empty());
    assert!(
        env.server.open_algo_orders(MAIN_KEY).is_empty(),
        "stale stop left"
    );
    // The loss counts once in the risk state, however often the sync runs.
    let st = env.state().await;
    assert_eq!(st.consecutive_losses, 1);
    assert!(st
        .counted_trade_keys
        .contains(&albra_core::domain::trade_key(&tr.id)));
    let s2 = env.sync().await;
    assert!(s2.ok(), "{s2}");
    let st2 = env.state().await;
    assert_eq!(st2.consecutive_losses, 1);
    assert_eq!(st2.daily_realized_pnl, st.daily_realized_pnl);
    assert_eq!(env.repo().trades(&main_id()).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_filled_between_syncs_counts_once_in_the_risk_state() {
    let env = env_at_signal(0).await;
    assert!(env.evaluator().await.ok());
    let algo = env.server.open_algo_orders(MAIN_KEY)[0].clone();
    let trigger: Decimal = algo["triggerPrice"].as_str().unwrap().parse().unwrap();
    assert_eq!(env.server.trigger_algo_orders("BTCUSDT", trigger), 1);
    for _ in 0..3 {
        let s = env.sync().await;
        assert!(s.ok(), "{s}");
    }
    let trades = env.repo().trades(&main_id()).await.unwrap();
    assert_eq!(trades.len(), 1);
    assert_eq!(trades[0].reason, "stop");
    let st = env.state().await;
    assert_eq!((st.consecutive_losses, st.consecutive_wins), (1, 0));
    assert_eq!(st.daily_realized_pnl, trades[0].pnl);
    assert_eq!(
        *st.counted_trade_keys,
        vec![albra_core::domain::trade_key(&trades[0].id)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contradicting_risk_limits_exit_2_naming_the_keys() {
    let env = env_at_signal(0).await;
    let path = env.dir().join("albra.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[[accounts]]",
        "[risk.strategies.EMA_CROSS]\nkelly_min_pct = 0.05\nkelly_max_pct = 0.6\n\n[[accounts]]",
    );
    std::fs::write(&path, text).unwrap();
    let r = env.evaluator().await;
    assert_eq!(r.code, Some(2), "{r}");
    assert!(
        r.stderr.contains("risk.strategies.EMA_CROSS.kelly_max_pct")
            && r.stderr.contains("risk.max_position_pct")
            && r.stderr.contains("line"),
        "{r}"
    );
    assert_eq!(env.server.requests().len(), 0, "nothing sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_strategies_long_and_short_on_one_symbol_keep_their_own_stops() {
    let env = env_at_signal(0).await;
    // A second strategy on the same symbol (4h, not evaluated by the 15m run).
    let path = env.dir().join("albra.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(
            "[[accounts]]",
            "[[strategies]]\nname = \"TFPE\"\ntimeframe = \"4h\"\nsymbols = [\"BTCUSDT\"]\nleverage = 3\nsize_pct = 0.1\n\n[[accounts]]",
        )
        .replace(
            "strategies = [\"EMA_CROSS\"]",
            "strategies = [\"EMA_CROSS\", \"TFPE\"]",
        );
    std::fs::write(&path, text).unwrap();

    let r = env.evaluator().await;
    assert!(r.ok() && r.stdout.contains("entered"), "{r}");
    let ema_side = env.signal.side;
    let ema_qty = env.server.position(MAIN_KEY, "BTCUSDT").abs();
    let ema = env.repo().positions(&main_id()).await.unwrap()[0]
        .value
        .clone();
    assert_eq!(
        env.server.open_algo_orders(MAIN_KEY)[0]["closePosition"],
        true
    );

    // TFPE holds the opposite side, a smaller share: its order and its record.
    let tfpe_side = ema_side.opposite();
    let tfpe_qty = Decimal::new(4, 3).min(ema_qty / Decimal::TWO).round_dp(3);
    env.server.manual_market_order(
        MAIN_KEY,
        "BTCUSDT",
        tfpe_side.entry_order_side().as_str(),
        tfpe_qty,
    );
    let now = env.signal.eval_time();
    let sid = StrategyId::new("TFPE");
    let px = ema.entry_price.get();
    let stop = match tfpe_side {
        Side::Long => (px * Decimal::new(98, 2)).round_dp(1),
        Side::Short => (px * Decimal::new(102, 2)).round_dp(1),
    };
    let tfpe = tfpe_position(tfpe_side, tfpe_qty, px, stop, now);
    env.repo().save_position(&tfpe, None).await.unwrap();

    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert!(!s.stdout.contains("MANUAL position found"), "{s}");
    assert!(s.stdout.contains("stop re-placed as quantity"), "{s}");
    let open = env.server.open_algo_orders(MAIN_KEY);
    assert_eq!(open.len(), 2, "{open:?}");
    for a in &open {
        assert_eq!(a["closePosition"], false, "{a}");
        assert_eq!(
            a["reduceOnly"], false,
            "opposite shares: plain quantity stops {a}"
        );
    }
    let mut qtys: Vec<Decimal> = open
        .iter()
        .map(|a| a["quantity"].as_str().unwrap().parse().unwrap())
        .collect();
    qtys.sort();
    let mut want = vec![tfpe_qty, ema_qty];
    want.sort();
    assert_eq!(qtys, want);
    let stored = env.repo().positions(&main_id()).await.unwrap();
    let sum: Decimal = stored
        .iter()
        .map(|v| v.value.side.sign() * v.value.qty.get())
        .sum();
    assert_eq!(
        sum,
        env.server.position(MAIN_KEY, "BTCUSDT"),
        "Σ shares = net"
    );

    // TFPE's stop fires: only its share closes; EMA_CROSS keeps its position and gets its
    // closePosition stop back once it holds the symbol alone.
    assert_eq!(env.server.trigger_algo_orders("BTCUSDT", stop), 1);
    assert_eq!(env.server.position(MAIN_KEY, "BTCUSDT").abs(), ema_qty);
    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert!(s.stdout.contains("CLOSED by the exchange (stop)"), "{s}");
    let trades = env.repo().trades(&main_id()).await.unwrap();
    assert_eq!(trades.len(), 1);
    assert_eq!(trades[0].strategy, sid);
    assert_eq!(trades[0].qty.get(), tfpe_qty);
    let stored = env.repo().positions(&main_id()).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].value.key.strategy.as_str(), "EMA_CROSS");
    let open = env.server.open_algo_orders(MAIN_KEY);
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["closePosition"], true, "{open:?}");
}

/// A TFPE share as the evaluator would have stored it after its entry (4h signal candle).
fn tfpe_position(side: Side, qty: Decimal, px: Decimal, stop: Decimal, now: i64) -> Position {
    let sid = StrategyId::new("TFPE");
    let sym = Symbol::new("BTCUSDT");
    let open4h = Timeframe::H4.last_closed_open(now);
    Position {
        key: PositionKey {
            account: main_id(),
            strategy: sid.clone(),
            symbol: sym.clone(),
        },
        side,
        qty: Qty::new(qty),
        entry_price: Price::new(px),
        leverage: 3,
        status: PositionStatus::Active,
        is_manual: false,
        entry_client_id: ClientId::derive(&main_id(), &sid, &sym, open4h, Intent::Entry, 0).0,
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
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_of_a_strategy_no_longer_enabled_is_paused_protected_and_resumed() {
    let env = env_at_signal(0).await;
    let now = env.signal.eval_time();
    // TFPE once opened a long share; the config no longer runs TFPE on this account.
    env.server
        .manual_market_order(MAIN_KEY, "BTCUSDT", "BUY", Decimal::new(3, 3));
    let mark: Decimal = env.server.position(MAIN_KEY, "BTCUSDT");
    assert_eq!(mark, Decimal::new(3, 3));
    let orders = env.server.orders(MAIN_KEY);
    let px: Decimal = orders[0]["avgPrice"].as_str().unwrap().parse().unwrap();
    let stop = (px * Decimal::new(97, 2)).round_dp(1);
    env.repo()
        .save_position(
            &tfpe_position(Side::Long, Decimal::new(3, 3), px, stop, now),
            None,
        )
        .await
        .unwrap();
    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert!(
        s.stdout.contains("PAUSED: strategy TFPE is not enabled"),
        "{s}"
    );
    assert!(!s.stdout.contains("MANUAL position found"), "{s}");
    let p = env.repo().positions(&main_id()).await.unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].value.status, PositionStatus::Paused);
    // Still protected on the exchange (its own stop; it holds the symbol alone).
    let open = env.server.open_algo_orders(MAIN_KEY);
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["closePosition"], true);
    // A second sync changes nothing; enabling TFPE again resumes it.
    let s = env.sync().await;
    assert!(s.ok() && !s.stdout.contains("PAUSED"), "{s}");
    let path = env.dir().join("albra.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(
            "[[accounts]]",
            "[[strategies]]\nname = \"TFPE\"\ntimeframe = \"4h\"\nsymbols = [\"BTCUSDT\"]\nleverage = 3\nsize_pct = 0.1\n\n[[accounts]]",
        )
        .replace(
            "strategies = [\"EMA_CROSS\"]",
            "strategies = [\"EMA_CROSS\", \"TFPE\"]",
        );
    std::fs::write(&path, text).unwrap();
    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert!(
        s.stdout.contains("resumed: strategy TFPE is enabled again"),
        "{s}"
    );
    let p = env.repo().positions(&main_id()).await.unwrap();
    assert_eq!(p[0].value.status, PositionStatus::Active);
    assert_eq!(env.orders_posted(), 0, "nothing traded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_exchange_filter_blocks_the_symbol_with_an_alert_never_a_guess() {
    let env = env_at_signal(0).await;
    env.server.hide_filter("BTCUSDT", "MIN_NOTIONAL");
    let r = env.evaluator().await;
    assert!(r.ok(), "{r}");
    assert!(
        r.stdout
            .contains("entry blocked: no trading filters for BTCUSDT")
            && r.stdout.contains("filter MIN_NOTIONAL is missing"),
        "{r}"
    );
    assert_eq!(env.orders_posted(), 0, "nothing sent on guessed rules");
    assert!(env.server.open_algo_orders(MAIN_KEY).is_empty());
    assert!(env.repo().positions(&main_id()).await.unwrap().is_empty());
}
