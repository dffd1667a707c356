//! The engine's jobs in process, over the paper exchange and the real repository candles, with a
//! wrapper that injects what a real exchange sometimes does: not yet serving the just-closed
//! candle, and answers that do not parse. Checks that nothing is evaluated stale and nothing is
//! half-written.

// The engine fixtures the core crate's own tests use (EMA_CROSS on the 15m file, paper exchange).
#[path = "../../tests/common/mod.rs"]
mod common;

use albra_adapters::store::sqlite::SqliteStore;
use albra_core::config::Config;
use albra_core::domain::Position;
use albra_core::domain::{AccountId, Candle, Price, Side, StrategyId, Symbol, Timeframe};
use albra_core::jobs::{
    AccountRuntime, Engine, EngineError, EngineTiming, JobFailure, Line, Outcome, Sizing,
};
use albra_core::notify::CollectingNotifier;
use albra_core::paper::PaperExchange;
use albra_core::ports::*;
use albra_core::state::{Claim, RunKey, RunMarker, RunStage, StateRepo};
use albra_core::strategy::{self, Action};
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Delegates to the paper exchange, with switchable faults.
struct Faulty {
    inner: PaperExchange,
    hide_newest_kline: AtomicBool,
    garble_account: AtomicBool,
    garble_next_order: AtomicBool,
    orders_sent: AtomicUsize,
    /// The next this many algo orders are answered 429 with `Retry-After: storm_wait_ms`.
    algo_storm: AtomicUsize,
    /// The next this many market orders are answered 429 with `Retry-After: storm_wait_ms`.
    market_storm: AtomicUsize,
    storm_wait_ms: AtomicU64,
    /// The next protective stop is refused with -2021 (the market is past its level).
    stop_passed: AtomicBool,
    /// Every moved stop is refused with -2021.
    moved_stop_passed: AtomicBool,
    /// Another run takes the candle's claim over while this one reads the account (sizing): the
    /// repo, the run and that run's job time.
    takeover_on_account: tokio::sync::Mutex<Option<(StateRepo, RunKey, i64)>>,
}

fn garbled(endpoint: &str) -> ExchangeError {
    ExchangeError::Decode {
        endpoint: endpoint.into(),
        error: "expected value at line 1 column 1".into(),
        excerpt: "<html>502 Bad Gateway</html>".into(),
    }
}

#[async_trait]
impl Exchange for Faulty {
    async fn server_time(&self) -> Result<i64, ExchangeError> {
        self.inner.server_time().await
    }
    async fn closed_klines(
        &self,
        s: &Symbol,
        tf: Timeframe,
        limit: u32,
        now: i64,
    ) -> Result<Vec<Candle>, ExchangeError> {
        let mut c = self.inner.closed_klines(s, tf, limit, now).await?;
        if self.hide_newest_kline.load(Ordering::SeqCst) {
            c.pop();
        }
        Ok(c)
    }
    async fn symbol_filters(&self, s: &Symbol) -> Result<SymbolFilters, ExchangeError> {
        self.inner.symbol_filters(s).await
    }
    async fn last_price(&self, s: &Symbol) -> Result<Price, ExchangeError> {
        self.inner.last_price(s).await
    }
    async fn account(&self) -> Result<AccountSnapshot, ExchangeError> {
        if let Some((repo, run, at)) = self.takeover_on_account.lock().await.take() {
            let c = repo.claim_run(&run, at, 60_000).await.unwrap();
            assert!(
                matches!(
                    c,
                    Claim::Held {
                        took_over: Some(_),
                        ..
                    }
                ),
                "{c:?}"
            );
        }
        if self.garble_account.load(Ordering::SeqCst) {
            return Err(garbled("GET /fapi/v3/account"));
        }
        self.inner.account().await
    }
    async fn positions(&self) -> Result<Vec<ExchangePosition>, ExchangeError> {
        self.inner.positions().await
    }
    async fn symbol_config(&self, s: &Symbol) -> Result<SymbolConfig, ExchangeError> {
        self.inner.symbol_config(s).await
    }
    async fn set_leverage(&self, s: &Symbol, l: u32) -> Result<(), ExchangeError> {
        self.inner.set_leverage(s, l).await
    }
    async fn set_margin_type(&self, s: &Symbol, m: MarginType) -> Result<(), ExchangeError> {
        self.inner.set_margin_type(s, m).await
    }
    async fn place_market(&self, o: &MarketOrder) -> Result<OrderInfo, ExchangeError> {
        self.orders_sent.fetch_add(1, Ordering::SeqCst);
        let storm = self
            .market_storm
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if storm.is_ok() {
            return Err(ExchangeError::Retryable {
                endpoint: "POST /fapi/v1/order".into(),
                detail: "HTTP 429 code -1003 Too many requests".into(),
                retry_after: Some(std::time::Duration::from_millis(
                    self.storm_wait_ms.load(Ordering::SeqCst),
                )),
            });
        }
        let r = self.inner.place_market(o).await;
        if self.garble_next_order.swap(false, Ordering::SeqCst) {
            // Executed, but the answer is lost in a garbled body.
            r?;
            return Err(garbled("POST /fapi/v1/order"));
        }
        r
    }
    async fn order_by_client_id(
        &self,
        s: &Symbol,
        id: &str,
    ) -> Result<Option<OrderInfo>, ExchangeError> {
        self.inner.order_by_client_id(s, id).await
    }
    async fn place_algo(&self, o: &AlgoOrder) -> Result<AlgoOrderInfo, ExchangeError> {
        let storm = self
            .algo_storm
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if storm.is_ok() {
            let ms = self.storm_wait_ms.load(Ordering::SeqCst);
            return Err(ExchangeError::Retryable {
                endpoint: "POST /fapi/v1/algoOrder".into(),
                detail: "HTTP 429 code -1003 Too many requests".into(),
                retry_after: Some(std::time::Duration::from_millis(ms)),
            });
        }
        // A moved stop (one is already open on the symbol) whose level the market has passed.
        if o.kind == AlgoKind::StopMarket && self.moved_stop_passed.load(Ordering::SeqCst) {
            let open = self.inner.open_algo_orders(Some(&o.symbol)).await?;
            if open.iter().any(|a| a.kind == AlgoKind::StopMarket) {
                return Err(ExchangeError::Rejected {
                    endpoint: "POST /fapi/v1/algoOrder".into(),
                    reason: albra_core::ports::Refusal::WouldTriggerImmediately,
                    msg: "Order would immediately trigger.".into(),
                });
            }
        }
        if o.kind == AlgoKind::StopMarket && self.stop_passed.swap(false, Ordering::SeqCst) {
            return Err(ExchangeError::Rejected {
                endpoint: "POST /fapi/v1/algoOrder".into(),
                reason: albra_core::ports::Refusal::WouldTriggerImmediately,
                msg: "Order would immediately trigger.".into(),
            });
        }
        self.inner.place_algo(o).await
    }
    async fn algo_by_client_id(&self, id: &str) -> Result<Option<AlgoOrderInfo>, ExchangeError> {
        self.inner.algo_by_client_id(id).await
    }
    async fn cancel_algo(&self, s: &Symbol, id: &str) -> Result<(), ExchangeError> {
        self.inner.cancel_algo(s, id).await
    }
    async fn open_orders(&self, s: Option<&Symbol>) -> Result<Vec<OrderInfo>, ExchangeError> {
        self.inner.open_orders(s).await
    }
    async fn cancel_order(&self, s: &Symbol, id: &str) -> Result<(), ExchangeError> {
        self.inner.cancel_order(s, id).await
    }
    async fn open_algo_orders(
        &self,
        s: Option<&Symbol>,
    ) -> Result<Vec<AlgoOrderInfo>, ExchangeError> {
        self.inner.open_algo_orders(s).await
    }
    async fn user_trades(&self, s: &Symbol, t: i64) -> Result<Vec<UserTrade>, ExchangeError> {
        self.inner.user_trades(s, t).await
    }
    async fn all_orders(&self, s: &Symbol, t: i64) -> Result<Vec<OrderInfo>, ExchangeError> {
        self.inner.all_orders(s, t).await
    }
    async fn income(&self, t: i64) -> Result<Vec<Income>, ExchangeError> {
        self.inner.income(t).await
    }
}

struct Setup {
    engine: Engine,
    ex: Arc<Faulty>,
    clock: Arc<SimClock>,
    notes: Arc<CollectingNotifier>,
    /// Open time of the first EMA_CROSS signal candle, and its side.
    signal: (i64, Side),
    _dir: tempfile::TempDir,
}

fn first_signal(candles: &[Candle]) -> (i64, Side) {
    let mut s = strategy::build("EMA_CROSS", &toml::Table::new(), "t").unwrap();
    for c in candles {
        s.update(c);
        if let Action::Open { side, .. } = s.decide(&strategy::Context::flat(0)).action {
            return (c.open_time, side);
        }
    }
    panic!("no signal in the sample");
}

fn setup() -> Setup {
    setup_with(&common::ema_cross_15m("0.003", ""))
}

fn setup_with(config: &str) -> Setup {
    let series = common::perp_15m();
    let signal = first_signal(&series.candles);
    let clock = Arc::new(SimClock::new(signal.0));
    let inner = common::paper_exchange(series, &clock);
    let ex = Arc::new(Faulty {
        inner,
        hide_newest_kline: AtomicBool::new(false),
        garble_account: AtomicBool::new(false),
        garble_next_order: AtomicBool::new(false),
        orders_sent: AtomicUsize::new(0),
        algo_storm: AtomicUsize::new(0),
        market_storm: AtomicUsize::new(0),
        storm_wait_ms: AtomicU64::new(0),
        stop_passed: AtomicBool::new(false),
        moved_stop_passed: AtomicBool::new(false),
        takeover_on_account: Default::default(),
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::parse(config, "test.toml").unwrap();
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
        signal,
        _dir: dir,
    }
}

fn eval_time(open_time: i64) -> i64 {
    open_time + Timeframe::M15.millis() + 3_000
}

fn run_key(open_time: i64) -> RunKey {
    RunKey {
        account: AccountId::new("main"),
        strategy: StrategyId::new("EMA_CROSS"),
        symbol: Symbol::new("BTCUSDT"),
        tf: Timeframe::M15,
        open_time,
    }
}

#[tokio::test]
async fn a_candle_the_exchange_has_not_served_is_skipped_never_evaluated_stale() {
    let s = setup();
    let now = eval_time(s.signal.0);
    s.clock.set(now);
    s.ex.hide_newest_kline.store(true, Ordering::SeqCst);
    let r = s.engine.evaluate(Timeframe::M15, now).await;
    assert!(r.ok(), "{r:?}");
    assert!(
        r.lines[0]
            .to_string()
            .contains("skipped: the exchange has not served the closed candle"),
        "{r:?}"
    );
    assert_eq!(
        s.ex.orders_sent.load(Ordering::SeqCst),
        0,
        "the previous candle was evaluated as if new"
    );
    assert!(s.notes.take().iter().any(|n| n.kind == "skipped"));
    let marker = s
        .engine
        .repo
        .run_marker(&run_key(s.signal.0))
        .await
        .unwrap()
        .unwrap();
    assert!(marker.outcome.starts_with("skipped"), "{marker:?}");
}

#[tokio::test]
async fn an_unparseable_answer_fails_the_job_with_endpoint_and_excerpt_and_writes_nothing() {
    let s = setup();
    let now = eval_time(s.signal.0);
    s.clock.set(now);
    s.ex.garble_account.store(true, Ordering::SeqCst);
    let r = s.engine.evaluate(Timeframe::M15, now).await;
    assert_eq!(r.errors.len(), 1, "{r:?}");
    assert!(
        r.errors[0].to_string().contains("GET /fapi/v3/account")
            && r.errors[0].to_string().contains("<html>502"),
        "{r:?}"
    );
    assert_eq!(s.ex.orders_sent.load(Ordering::SeqCst), 0);
    let main = AccountId::new("main");
    assert!(
        s.engine.repo.positions(&main).await.unwrap().is_empty(),
        "no half-written position"
    );
    assert!(
        s.engine
            .repo
            .run_marker(&run_key(s.signal.0))
            .await
            .unwrap()
            .is_none(),
        "candle released for a retry"
    );

    // The retry (e.g. the scheduler's next attempt) evaluates the same candle and enters once.
    s.ex.garble_account.store(false, Ordering::SeqCst);
    let r = s.engine.evaluate(Timeframe::M15, now).await;
    assert!(r.ok(), "{r:?}");
    assert_eq!(s.ex.orders_sent.load(Ordering::SeqCst), 1);
    let p = s.engine.repo.positions(&main).await.unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].value.side, s.signal.1);
}

#[tokio::test]
async fn a_garbled_order_answer_is_looked_up_not_resent() {
    let s = setup();
    let now = eval_time(s.signal.0);
    s.clock.set(now);
    s.ex.garble_next_order.store(true, Ordering::SeqCst);
    let r = s.engine.evaluate(Timeframe::M15, now).await;
    assert!(r.ok(), "{r:?}");
    assert_eq!(
        s.ex.orders_sent.load(Ordering::SeqCst),
        1,
        "sent once, found by its client id"
    );
    let p = s
        .engine
        .repo
        .positions(&AccountId::new("main"))
        .await
        .unwrap();
    assert_eq!(p.len(), 1);
    assert!(p[0].value.stop_client_id.is_some(), "protected");
    let open = s.ex.open_algo_orders(None).await.unwrap();
    assert_eq!(open.len(), 1);
}

#[tokio::test]
async fn sync_records_a_stop_fill_from_the_paper_exchange() {
    let s = setup();
    let now = eval_time(s.signal.0);
    s.clock.set(now);
    assert!(s.engine.evaluate(Timeframe::M15, now).await.ok());
    let main = AccountId::new("main");
    let pos = s.engine.repo.positions(&main).await.unwrap()[0]
        .value
        .clone();
    // Walk forward until the paper exchange fires the 3 % stop or the signal reverses.
    let mut t = now;
    let mut closed = false;
    for _ in 0..4000 {
        t += 60_000;
        s.clock.set(t);
        let r = s.engine.sync_positions(t).await;
        assert!(r.ok(), "{r:?}");
        if s.engine.repo.positions(&main).await.unwrap().is_empty() {
            closed = true;
            break;
        }
    }
    assert!(closed, "a 0.3 % stop on BTC fires within days");
    let trades = s.engine.repo.trades(&main).await.unwrap();
    assert_eq!(trades.len(), 1);
    assert_eq!(trades[0].reason, "stop");
    let stop = pos.stop_loss.unwrap();
    assert!(
        trades[0].pnl.get() < rust_decimal::Decimal::ZERO,
        "{:?}",
        trades[0]
    );
    // Filled at the trigger (or the open, when a candle gapped through it) less slippage.
    let off = (trades[0].exit_price.get() - stop.get()).abs() / stop.get();
    assert!(
        off < rust_decimal::Decimal::new(3, 3),
        "exit {} vs stop {}",
        trades[0].exit_price,
        stop
    );
    // The stop order was finished by the exchange, nothing left open, nothing recorded twice.
    assert!(s.ex.open_algo_orders(None).await.unwrap().is_empty());
    assert!(s.engine.sync_positions(t + 60_000).await.ok());
    assert_eq!(s.engine.repo.trades(&main).await.unwrap().len(), 1);
}

/// A notifier that throws notifications away, counting what it is still handed.
struct Discarding(AtomicUsize);

#[async_trait]
impl Notifier for Discarding {
    async fn notify(&self, _: &Notification) -> Result<(), albra_core::ports::NotifyError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn enabled(&self) -> bool {
        false
    }
}

/// With a notifier that discards (a backtest's), the jobs make no notification at all and do
/// exactly what they do with one that keeps them: the same entry, stop and outcome lines.
#[tokio::test]
async fn a_discarding_notifier_is_handed_nothing_and_changes_nothing() {
    let kept = setup();
    let mut quiet = setup();
    let discarding = Arc::new(Discarding(AtomicUsize::new(0)));
    quiet.engine.notifier = discarding.clone();
    let now = eval_time(kept.signal.0);
    let mut outcomes = Vec::new();
    for s in [&kept, &quiet] {
        s.clock.set(now);
        let r = s.engine.evaluate(Timeframe::M15, now).await;
        assert!(r.ok(), "{r:?}");
        let main = AccountId::new("main");
        let p = s.engine.repo.positions(&main).await.unwrap();
        assert_eq!(p.len(), 1);
        outcomes.push((r.lines, p[0].value.clone()));
    }
    assert_eq!(outcomes[0], outcomes[1]);
    assert!(kept.notes.take().iter().any(|n| n.kind == "entry"));
    assert_eq!(discarding.0.load(Ordering::SeqCst), 0);
}

/// The one open position of `main`, if any.
async fn open_position(s: &Setup) -> Option<Position> {
    let main = AccountId::new("main");
    let mut p = s.engine.repo.positions(&main).await.unwrap();
    assert!(p.len() <= 1, "{p:?}");
    p.pop().map(|v| v.value)
}

#[tokio::test]
async fn a_run_killed_after_its_claim_is_taken_over_once_the_lease_has_passed() {
    let s = setup();
    let now = eval_time(s.signal.0);
    s.clock.set(now);
    // A run claimed the candle, wrote its PENDING entry and died before sending the order.
    let run = run_key(s.signal.0);
    let c = s.engine.repo.claim_run(&run, now, 60_000).await.unwrap();
    assert!(
        matches!(
            c,
            Claim::Held {
                took_over: None,
                ..
            }
        ),
        "{c:?}"
    );
    let r = s.engine.evaluate(Timeframe::M15, now + 1_000).await;
    assert_eq!(r.errors.len(), 1, "{r:?}");
    assert!(
        matches!(
            r.errors[0].error(),
            Some(EngineError::ClaimedElsewhere { .. })
        ) && r.errors[0]
            .to_string()
            .contains("claimed by another run until"),
        "{r:?}"
    );
    assert_eq!(r.orders_attempted, 0);

    // Past the lease (60 s by default) a rerun takes it over and enters exactly once.
    let later = now + 61_000;
    s.clock.set(later);
    let r = s.engine.evaluate(Timeframe::M15, later).await;
    assert!(r.ok(), "{r:?}");
    assert_eq!(s.ex.orders_sent.load(Ordering::SeqCst), 1);
    let p = open_position(&s).await.expect("entered");
    assert_eq!(p.side, s.signal.1);
    // The candle's line is typed: the entry's figures are the stored position's.
    let entered = r.lines.iter().find_map(|l| match l {
        Line::Candle {
            candle,
            outcome:
                Outcome::Entered {
                    side,
                    qty,
                    price,
                    stop,
                    stop_placed,
                    ..
                },
        } => Some((candle.clone(), *side, *qty, *price, *stop, *stop_placed)),
        _ => None,
    });
    assert_eq!(
        entered,
        Some((run.clone(), p.side, p.qty, p.entry_price, p.stop_loss, true)),
        "{r:?}"
    );
    let m = s.engine.repo.run_marker(&run).await.unwrap().unwrap();
    assert_eq!(m.stage, RunStage::Done, "{m:?}");
    let recorded = r
        .lines
        .iter()
        .find_map(Line::outcome)
        .map(|o| o.to_string());
    assert_eq!(
        Some(m.outcome),
        recorded,
        "the run marker records the outcome"
    );

    // Done: another rerun does nothing.
    let r = s.engine.evaluate(Timeframe::M15, later + 120_000).await;
    assert!(r.ok(), "{r:?}");
    assert!(
        r.lines[0].to_string().contains("already evaluated"),
        "{r:?}"
    );
    assert_eq!(s.ex.orders_sent.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_run_whose_claim_was_taken_over_sends_nothing() {
    let s = setup();
    let now = eval_time(s.signal.0);
    s.clock.set(now);
    let run = run_key(s.signal.0);
    // While this run sizes its entry, a rerun past the lease takes the claim over.
    *s.ex.takeover_on_account.lock().await =
        Some((s.engine.repo.clone(), run.clone(), now + 61_000));
    let r = s.engine.evaluate(Timeframe::M15, now).await;
    assert_eq!(r.errors.len(), 1, "{r:?}");
    assert!(
        matches!(r.errors[0].error(), Some(EngineError::TakenOver)),
        "{r:?}"
    );
    assert_eq!(
        s.ex.orders_sent.load(Ordering::SeqCst),
        0,
        "fenced: nothing sent"
    );
    // The marker is the rerun's, still Evaluating; the PENDING record this run wrote belongs to
    // the candle, and the rerun drops it and enters once.
    let m: RunMarker = s.engine.repo.run_marker(&run).await.unwrap().unwrap();
    assert_eq!(m.stage, RunStage::Evaluating);
    assert_eq!(m.claimed_at, now + 61_000);
    // That rerun died too; the next one, past its lease, takes over and finds the PENDING record.
    let r = s.engine.evaluate(Timeframe::M15, now + 123_000).await;
    assert!(r.ok(), "{r:?}");
    assert!(
        r.lines
            .iter()
            .any(|l| l.to_string().contains("dropped the pending entry")),
        "{r:?}"
    );
    assert_eq!(s.ex.orders_sent.load(Ordering::SeqCst), 1);
    assert_eq!(open_position(&s).await.unwrap().side, s.signal.1);
}

#[tokio::test]
/// An Acting claim past its lease with no unsent PENDING entry of its candle (an exit, or an
/// entry the sync already resolved) is left to the sync: nothing is sent again.
async fn an_acting_claim_without_an_unsent_entry_is_never_taken_over() {
    let s = setup();
    let now = eval_time(s.signal.0);
    s.clock.set(now);
    let run = run_key(s.signal.0);
    let Claim::Held { version, .. } = s.engine.repo.claim_run(&run, now, 60_000).await.unwrap()
    else {
        panic!("claimed")
    };
    s.engine
        .repo
        .mark_acting(&run, version, now, now + 60_000)
        .await
        .unwrap();
    let r = s.engine.evaluate(Timeframe::M15, now + 10 * 60_000).await;
    assert!(r.ok(), "{r:?}");
    assert!(
        r.lines[0]
            .to_string()
            .contains("another run acted on this candle"),
        "{r:?}"
    );
    assert_eq!(s.ex.orders_sent.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_rate_limit_storm_on_the_stop_is_waited_out() {
    let s = setup();
    let now = eval_time(s.signal.0);
    s.clock.set(now);
    // Three 429s in a row on the algo endpoint (Retry-After 20 ms here; seconds on Binance).
    s.ex.algo_storm.store(3, Ordering::SeqCst);
    s.ex.storm_wait_ms.store(20, Ordering::SeqCst);
    let r = s.engine.evaluate(Timeframe::M15, now).await;
    assert!(r.ok(), "{r:?}");
    let p = open_position(&s).await.unwrap();
    let id = p.stop_client_id.expect("stop placed after the storm");
    let a = s.ex.inner.algo_by_client_id(&id).await.unwrap().unwrap();
    assert!(a.status.is_open());
}

/// A rate-limit storm on the entry order that outlasts the submission's budget, after the claim
/// went Acting: the order was never executed (a lookup confirms it), so the candle is given back
/// and the rerun enters it, once. Before, the pending record was dropped while the claim stayed
/// Acting, and the signal was lost (found by the fault campaign, seed 20 scenario 458).
#[tokio::test]
async fn an_entry_refused_by_a_rate_limit_storm_is_given_back_and_entered_by_the_rerun() {
    let s = setup();
    let now = eval_time(s.signal.0);
    s.clock.set(now);
    s.ex.market_storm.store(usize::MAX, Ordering::SeqCst);
    s.ex.storm_wait_ms.store(40_000, Ordering::SeqCst);
    let r = s.engine.evaluate(Timeframe::M15, now).await;
    assert!(!r.ok(), "the job fails: {r:?}");
    assert!(open_position(&s).await.is_none(), "nothing entered");
    assert!(
        s.engine
            .repo
            .positions(&AccountId::new("main"))
            .await
            .unwrap()
            .is_empty(),
        "no pending record left"
    );
    // The storm is over: the rerun of the same candle enters, with its stop.
    s.ex.market_storm.store(0, Ordering::SeqCst);
    let r = s.engine.evaluate(Timeframe::M15, now + 5_000).await;
    assert!(r.ok(), "{r:?}");
    let p = open_position(&s)
        .await
        .expect("the rerun entered the signal");
    assert!(p.stop_client_id.is_some(), "{p:?}");
    // A third run finds the candle done and sends nothing.
    let sent = s.ex.orders_sent.load(Ordering::SeqCst);
    assert!(s.engine.evaluate(Timeframe::M15, now + 10_000).await.ok());
    assert_eq!(s.ex.orders_sent.load(Ordering::SeqCst), sent);
}

#[tokio::test]
async fn a_stop_that_cannot_be_placed_fails_the_job_and_the_next_sync_places_it_first() {
    let s = setup();
    let now = eval_time(s.signal.0);
    s.clock.set(now);
    // Retry-After 40 s: beyond what one stop may wait (PROTECT_BUDGET), so it is not placed.
    s.ex.algo_storm.store(1, Ordering::SeqCst);
    s.ex.storm_wait_ms.store(40_000, Ordering::SeqCst);
    let r = s.engine.evaluate(Timeframe::M15, now).await;
    assert!(!r.ok(), "an unprotected position must fail the job: {r:?}");
    assert!(
        r.errors
            .iter()
            .any(|e| matches!(e, JobFailure::Unprotected { .. })
                && e.to_string().contains("UNPROTECTED")),
        "{r:?}"
    );
    assert!(s
        .notes
        .take()
        .iter()
        .any(|n| n.kind == "stop_failed" && n.priority == Priority::Critical));
    let p = open_position(&s).await.unwrap();
    assert!(p.stop_client_id.is_none() && p.stop_loss.is_some(), "{p:?}");

    // The account read is rate-limited too: the sync still re-places the stop, then fails.
    s.ex.garble_account.store(true, Ordering::SeqCst);
    let r = s.engine.sync_positions(now + 60_000).await;
    assert!(!r.ok(), "the account read failed: {r:?}");
    let p = open_position(&s).await.unwrap();
    let id = p
        .stop_client_id
        .expect("re-placed although the account read failed");
    assert!(s
        .ex
        .inner
        .algo_by_client_id(&id)
        .await
        .unwrap()
        .unwrap()
        .status
        .is_open());
    s.ex.garble_account.store(false, Ordering::SeqCst);
    let r = s.engine.sync_positions(now + 120_000).await;
    assert!(r.ok(), "{r:?}");
}

#[tokio::test]
async fn an_initial_stop_the_market_has_already_passed_closes_at_market() {
    let s = setup();
    let now = eval_time(s.signal.0);
    s.clock.set(now);
    s.ex.stop_passed.store(true, Ordering::SeqCst);
    let r = s.engine.evaluate(Timeframe::M15, now).await;
    assert!(r.ok(), "{r:?}");
    assert!(
        r.lines[0]
            .to_string()
            .contains("already passed; closed at market"),
        "{r:?}"
    );
    // The typed outcome carries the figures the line prints: the entry, and the passed level.
    match r.lines[0].outcome() {
        Some(Outcome::EnteredPastStop {
            side, qty, level, ..
        }) => {
            assert_eq!(*side, s.signal.1);
            assert!(!qty.is_zero() && !level.is_zero(), "{r:?}");
        }
        other => panic!("expected EnteredPastStop, got {other:?}"),
    }
    assert!(open_position(&s).await.is_none());
    assert_eq!(
        s.ex.orders_sent.load(Ordering::SeqCst),
        2,
        "entry and close"
    );
    let main = AccountId::new("main");
    let trades = s.engine.repo.trades(&main).await.unwrap();
    assert_eq!(trades.len(), 1, "{trades:?}");
    // Flat on the exchange too.
    let held: Vec<_> = s.ex.inner.positions().await.unwrap();
    assert!(held.iter().all(|p| p.amount.is_zero()), "{held:?}");
}

#[tokio::test]
async fn an_entry_opposite_a_manual_position_is_not_sent() {
    let s = setup();
    let now = eval_time(s.signal.0);
    s.clock.set(now);
    // The person holds 0.010 BTC on the other side, made by hand; the sync tracks it as MANUAL.
    let by_hand = MarketOrder {
        symbol: Symbol::new("BTCUSDT"),
        side: s.signal.1.opposite().entry_order_side(),
        qty: albra_core::domain::Qty::new("0.010".parse().unwrap()),
        reduce_only: false,
        client_id: albra_core::domain::ClientId("web_by_hand_1".into()),
    };
    s.ex.inner.place_market(&by_hand).await.unwrap();
    let r = s.engine.sync_positions(now).await;
    assert!(r.ok(), "{r:?}");
    let main = AccountId::new("main");
    let stored = s.engine.repo.positions(&main).await.unwrap();
    assert!(stored.len() == 1 && stored[0].value.is_manual, "{stored:?}");

    let r = s.engine.evaluate(Timeframe::M15, now).await;
    assert!(r.ok(), "{r:?}");
    assert!(
        r.lines[0].to_string().contains("not sent: the MANUAL"),
        "{r:?}"
    );
    assert_eq!(s.ex.orders_sent.load(Ordering::SeqCst), 0);
    assert!(s
        .notes
        .take()
        .iter()
        .any(|n| n.kind == "blocked" && n.text.contains("entries_against_manual")));
    // The person's position is untouched, on the exchange and in the store.
    let held = s.ex.inner.positions().await.unwrap();
    assert_eq!(held.iter().filter(|p| !p.amount.is_zero()).count(), 1);
    let stored = s.engine.repo.positions(&main).await.unwrap();
    assert!(stored.len() == 1 && stored[0].value.is_manual, "{stored:?}");
}

#[tokio::test]
async fn a_stop_fired_before_a_hold_is_recorded_by_that_evaluation() {
    let s = setup();
    let now = eval_time(s.signal.0);
    s.clock.set(now);
    assert!(s.engine.evaluate(Timeframe::M15, now).await.ok());
    // Walk forward, with no sync, until the paper exchange has filled the 0.3 % stop.
    let mut t = now;
    loop {
        t += 60_000;
        assert!(t < now + 30 * 86_400_000, "the stop never fired");
        s.clock.set(t);
        let held = s.ex.inner.positions().await.unwrap();
        if held.iter().all(|p| p.amount.is_zero()) {
            break;
        }
    }
    // The next candle's evaluation (no sync in between) records the stop's close.
    let next = Timeframe::M15.open_of(t) + Timeframe::M15.millis() + 3_000;
    s.clock.set(next);
    let r = s.engine.evaluate(Timeframe::M15, next).await;
    assert!(r.ok(), "{r:?}");
    let main = AccountId::new("main");
    let open: Vec<_> = s.engine.repo.positions(&main).await.unwrap();
    assert!(open.is_empty(), "{r:?}\n{open:?}");
    let trades = s.engine.repo.trades(&main).await.unwrap();
    assert_eq!(trades.len(), 1);
    assert_eq!(trades[0].reason, "stop");
}

#[tokio::test]
async fn a_trailing_stop_the_price_has_passed_closes_at_market_and_the_run_goes_on() {
    let cfg = r#"
[notifier]
telegram = false
[[strategies]]
name = "ZLHMA_EMA_CROSS"
timeframe = "15m"
symbols = ["BTCUSDT"]
leverage = 3
size_pct = 0.1
[[accounts]]
id = "main"
key_source = "env"
strategies = ["ZLHMA_EMA_CROSS"]
"#;
    let s = setup_with(cfg);
    s.ex.moved_stop_passed.store(true, Ordering::SeqCst);
    let opens: Vec<i64> = common::perp_15m()
        .candles
        .iter()
        .map(|c| c.open_time)
        .collect();
    let mut closed_at_market = None;
    for open in opens {
        let now = open + Timeframe::M15.millis() + 3_000;
        s.clock.set(now);
        let r = s.engine.evaluate(Timeframe::M15, now).await;
        assert!(
            r.ok(),
            "a passed trailing stop must not fail the job: {r:?}"
        );
        if let Some(l) = r
            .lines
            .iter()
            .find(|l| l.to_string().contains("already passed; closed at market"))
        {
            closed_at_market = Some(l.clone());
            break;
        }
        assert!(s.engine.sync_positions(now + 1_000).await.ok());
    }
    let line = closed_at_market.expect("a trailing stop moved in six months of 15m candles");
    let main = AccountId::new("main");
    assert!(
        s.engine.repo.positions(&main).await.unwrap().is_empty(),
        "{line}"
    );
    let held = s.ex.inner.positions().await.unwrap();
    assert!(held.iter().all(|p| p.amount.is_zero()), "{held:?}");
    assert!(
        s.ex.inner.open_algo_orders(None).await.unwrap().is_empty(),
        "old stop cancelled"
    );
}
