//! The command side: pause, resume, emergency stop, switch strategy and sync. Each command is
//! three steps a front end can stop between: [`gather`] a [`Snapshot`] (state and exchange),
//! `plan_*` it (pure: the plan is the dry run, listing what would be cancelled, closed or
//! written), then `apply_*` the plan through the ports.
//!
//! Applying keeps the jobs' safety rules: every order has a deterministic client id and goes
//! through the exactly-once submission of [`crate::orders`] (an unknown outcome is looked up
//! before anything is resent), strategy positions are closed by the engine's own exit (the
//! same order, trade record and notification as a strategy exit), every state write is
//! conditional, and a command that stopped half-way (a crash, a failed request) is finished by
//! running it again: the new plan is made from what the exchange and the store hold by then.

use super::{select_accounts, QueryError};
use crate::config::Config;
use crate::domain::{
    AccountId, AccountState, ClientId, ExitReason, Intent, OrderSide, Position, PositionKey,
    PositionStatus, Qty, Side, StrategyId, Symbol, Timeframe,
};
use crate::jobs::{AccountRuntime, Engine};
use crate::orders;
use crate::ports::{AlgoOrderInfo, Exchange, ExchangePosition, MarketOrder, OrderInfo};
use crate::state::{StateRepo, Versioned};
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::BTreeMap;

/// What a command reads of one account before planning: the stored state and positions, and
/// the exchange's positions and open conditional orders.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub account: AccountId,
    pub state: Option<Versioned<AccountState>>,
    pub positions: Vec<Versioned<Position>>,
    pub exchange_positions: Vec<ExchangePosition>,
    pub open_algos: Vec<AlgoOrderInfo>,
    /// Regular orders resting on the book (limit orders placed by hand).
    pub open_orders: Vec<OrderInfo>,
    /// The job time the snapshot was taken at (ms).
    pub now: i64,
}

/// Read one account's state and exchange view (the exchange reads at once).
pub async fn gather(
    repo: &StateRepo,
    acct: &AccountRuntime,
    now: i64,
) -> Result<Snapshot, QueryError> {
    let id = &acct.config.id;
    let ex = acct.exchange.as_ref();
    let (positions, algos, resting) = futures::join!(
        ex.positions(),
        ex.open_algo_orders(None),
        ex.open_orders(None)
    );
    Ok(Snapshot {
        account: id.clone(),
        state: repo.account_state(id).await?,
        positions: repo.positions(id).await?,
        exchange_positions: positions?,
        open_algos: algos?,
        open_orders: resting?,
        now,
    })
}

/// The engine's runtime of `account` (`None`: of every account the
/// engine trades), checked against the configuration.
pub fn runtimes<'a>(
    engine: &'a Engine,
    account: Option<&str>,
) -> Result<Vec<&'a AccountRuntime>, QueryError> {
    let wanted = select_accounts(&engine.config, account)?;
    Ok(engine
        .accounts
        .iter()
        .filter(|a| wanted.iter().any(|w| w.id == a.config.id))
        .collect())
}

// ---------------------------------------------------------------------------------------------
// pause / resume
// ---------------------------------------------------------------------------------------------

/// Pause or resume one account: a paused account's evaluations enter and exit nothing, while
/// the sync keeps every position's protective stop on the exchange.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PausePlan {
    pub account: AccountId,
    /// Whether the account is paused now.
    pub paused: bool,
    /// The value to write; `None` when the account already is as asked.
    pub write: Option<bool>,
    /// Open positions, which keep their stops either way.
    pub open_positions: usize,
}

/// Plan setting the account's pause flag to `pause` (pure).
pub fn plan_pause(snap: &Snapshot, pause: bool) -> PausePlan {
    let paused = snap.state.as_ref().is_some_and(|s| s.value.paused);
    PausePlan {
        account: snap.account.clone(),
        paused,
        write: (paused != pause).then_some(pause),
        open_positions: snap.positions.iter().filter(|p| p.value.is_open()).count(),
    }
}

/// A snapshot of the store alone (pause and resume need no exchange read).
pub async fn gather_state(
    repo: &StateRepo,
    cfg: &Config,
    account: &str,
    now: i64,
) -> Result<Snapshot, QueryError> {
    let id = &select_accounts(cfg, Some(account))?[0].id;
    Ok(Snapshot {
        account: id.clone(),
        state: repo.account_state(id).await?,
        positions: repo.positions(id).await?,
        exchange_positions: Vec::new(),
        open_algos: Vec::new(),
        open_orders: Vec::new(),
        now,
    })
}

/// Write the plan's pause flag. Returns whether the account is paused afterwards.
pub async fn apply_pause(repo: &StateRepo, plan: &PausePlan, now: i64) -> Result<bool, QueryError> {
    match plan.write {
        Some(p) => set_paused(repo, &plan.account, p, now).await.map(|_| p),
        None => Ok(plan.paused),
    }
}

/// Set the pause flag with a conditional write, read again on a conflict (a job wrote the
/// state between the read and the write); the job's equity figures are kept as written.
/// Returns whether anything was written.
pub async fn set_paused(
    repo: &StateRepo,
    account: &AccountId,
    paused: bool,
    now: i64,
) -> Result<bool, QueryError> {
    let mut last = None;
    for _ in 0..5 {
        let cur = repo.account_state(account).await?;
        let (mut st, version) = match cur {
            Some(v) if v.value.paused == paused => return Ok(false),
            Some(v) => (v.value, Some(v.version)),
            None => (AccountState::default(), None),
        };
        st.paused = paused;
        st.updated_at = st.updated_at.max(now);
        match repo.save_account_state(account, &st, version).await {
            Ok(_) => return Ok(true),
            Err(e) if e.is_conflict() => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.expect("a conflict on every try").into())
}

// ---------------------------------------------------------------------------------------------
// emergency stop
// ---------------------------------------------------------------------------------------------

/// Emergency stop of one account: pause it, close every position (strategy and MANUAL) with
/// reduce-only market orders, cancel every open conditional order (ours and hand-made).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EmergencyPlan {
    pub account: AccountId,
    /// Write `paused = true` first, so no evaluation enters while the stop runs.
    pub pause: bool,
    /// Stored positions the exchange does not hold (a PENDING entry, or a close whose record a
    /// crash lost): the sync resolves and records them before anything is sent.
    pub sync_first: Vec<PositionKey>,
    /// Strategy positions closed by the engine's exit (order, trade record, notification).
    pub close: Vec<PlannedClose>,
    /// Every open conditional order of the account.
    pub cancel: Vec<PlannedCancel>,
    /// Every regular order resting on the book (placed by hand).
    pub cancel_resting: Vec<PlannedCancelResting>,
    /// What remains of a symbol's net once the strategy positions are closed (MANUAL shares,
    /// anything untracked): one reduce-only market order each.
    pub flatten: Vec<PlannedFlatten>,
}

impl EmergencyPlan {
    /// Nothing to do: paused, flat, no open order, nothing for the sync.
    pub fn is_empty(&self) -> bool {
        !self.pause
            && self.sync_first.is_empty()
            && self.close.is_empty()
            && self.cancel.is_empty()
            && self.cancel_resting.is_empty()
            && self.flatten.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedClose {
    pub key: PositionKey,
    pub side: Side,
    pub qty: Qty,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedCancel {
    pub symbol: Symbol,
    pub client_algo_id: String,
    /// `STOP_MARKET`, `TAKE_PROFIT_MARKET`, `TRAILING_STOP_MARKET`.
    pub kind: String,
    /// One of Albra's client ids (else placed by hand).
    pub ours: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedCancelResting {
    pub symbol: Symbol,
    pub client_id: String,
    pub side: OrderSide,
    /// What is left of it to fill.
    pub open_qty: Qty,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedFlatten {
    pub symbol: Symbol,
    pub side: OrderSide,
    pub qty: Qty,
    pub client_id: ClientId,
}

/// The client id of the order that flattens what is left of `symbol`: the MANUAL share's
/// owner, so the sync gives the fill to that share, and the minute of `now`, so a rerun within
/// the minute finds the order instead of sending another (a later rerun plans from the
/// exchange's position, already flat).
pub fn flatten_client_id(account: &AccountId, symbol: &Symbol, now: i64) -> ClientId {
    ClientId::derive(
        account,
        &StrategyId::manual(),
        symbol,
        Timeframe::M1.last_closed_open(now),
        Intent::Exit,
        0,
    )
}

/// Signed exchange amount per symbol.
fn nets(snap: &Snapshot) -> BTreeMap<&Symbol, Decimal> {
    snap.exchange_positions
        .iter()
        .filter(|p| !p.amount.is_zero())
        .map(|p| (&p.symbol, p.amount))
        .collect()
}

/// Plan the emergency stop of one account (pure).
pub fn plan_emergency(snap: &Snapshot) -> EmergencyPlan {
    let nets = nets(snap);
    let mut rest: BTreeMap<&Symbol, Decimal> = nets.clone();
    let (mut sync_first, mut close) = (Vec::new(), Vec::new());
    for v in &snap.positions {
        let p = &v.value;
        let held = nets.contains_key(&p.key.symbol);
        if p.status == PositionStatus::Pending || (p.is_open() && !held) {
            sync_first.push(p.key.clone());
        } else if p.is_open() && !p.is_manual {
            *rest.get_mut(&p.key.symbol).expect("held") -= p.side.sign() * p.qty.get();
            close.push(PlannedClose {
                key: p.key.clone(),
                side: p.side,
                qty: p.qty,
            });
        }
    }
    let flatten = rest
        .into_iter()
        .filter(|(_, q)| !q.is_zero())
        .map(|(s, q)| PlannedFlatten {
            symbol: s.clone(),
            side: if q > Decimal::ZERO {
                OrderSide::Sell
            } else {
                OrderSide::Buy
            },
            qty: Qty::new(q.abs()),
            client_id: flatten_client_id(&snap.account, s, snap.now),
        })
        .collect();
    let cancel = snap
        .open_algos
        .iter()
        .filter(|a| a.status.is_open())
        .map(|a| PlannedCancel {
            symbol: a.symbol.clone(),
            client_algo_id: a.client_algo_id.clone(),
            kind: a.kind.binance_type().to_string(),
            ours: ClientId::is_ours(&a.client_algo_id),
        })
        .collect();
    let cancel_resting = snap
        .open_orders
        .iter()
        .filter(|o| !o.status.is_final())
        .map(|o| PlannedCancelResting {
            symbol: o.symbol.clone(),
            client_id: o.client_id.clone(),
            side: o.side,
            open_qty: o.orig_qty - o.executed_qty,
        })
        .collect();
    EmergencyPlan {
        account: snap.account.clone(),
        pause: !snap.state.as_ref().is_some_and(|s| s.value.paused),
        sync_first,
        close,
        cancel,
        cancel_resting,
        flatten,
    }
}

/// What an applied emergency stop left: read back from the exchange and the store.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EmergencyOutcome {
    pub account: AccountId,
    pub lines: Vec<crate::jobs::Line>,
    pub errors: Vec<String>,
    pub paused: bool,
    /// No position left on the exchange.
    pub flat: bool,
    /// Orders still open: conditional ones and regular ones resting on the book.
    pub open_orders: usize,
}

/// Apply an emergency stop plan: pause (first: a failure to pause stops here, nothing is sent),
/// let the sync resolve what the store holds and the exchange does not, close the strategy
/// positions through the engine's exit (their stops stay until each close has filled), cancel
/// every open conditional order, flatten what is left of each net, and sync again so the
/// MANUAL closes are recorded. The cancels and the flattening act on fresh reads, so orders
/// placed since the plan are caught too. Errors of single steps are collected; rerunning the
/// stop finishes it.
pub async fn apply_emergency(
    engine: &Engine,
    plan: &EmergencyPlan,
    now: i64,
) -> Result<EmergencyOutcome, QueryError> {
    let acct = runtimes(engine, Some(&plan.account.0))?
        .into_iter()
        .next()
        .ok_or_else(|| {
            QueryError::Refused(format!("{}: not traded by this engine", plan.account))
        })?;
    if plan.pause {
        set_paused(&engine.repo, &plan.account, true, now).await?;
    }
    let mut out = EmergencyOutcome {
        account: plan.account.clone(),
        lines: Vec::new(),
        errors: Vec::new(),
        paused: true,
        flat: false,
        open_orders: 0,
    };
    if !plan.sync_first.is_empty() {
        absorb(&mut out, engine.sync_one(&plan.account, now).await);
    }
    let ex = acct.exchange.as_ref();
    // Resting orders first: a limit order that filled after the closes would open exposure again.
    cancel_resting(ex, engine.timing.submit, &mut out).await;
    if !plan.close.is_empty() {
        let r = engine
            .close_positions(Some(&plan.account), ExitReason::EmergencyStop, now)
            .await;
        absorb(&mut out, r);
    }
    cancel_all(ex, engine.timing.submit, &mut out).await;
    flatten_all(ex, &plan.account, engine.timing.submit, now, &mut out).await;
    absorb(&mut out, engine.sync_one(&plan.account, now).await);
    read_back(engine, ex, &mut out).await?;
    Ok(out)
}

fn absorb(out: &mut EmergencyOutcome, r: crate::jobs::JobReport) {
    out.errors.extend(r.error_texts());
    out.lines.extend(r.lines);
}

/// Cancel every regular order resting on the book now, each exactly once.
async fn cancel_resting(
    ex: &dyn Exchange,
    policy: orders::SubmitPolicy,
    out: &mut EmergencyOutcome,
) {
    let open = match ex.open_orders(None).await {
        Ok(o) => o,
        Err(e) => return out.errors.push(format!("open orders unread: {e}")),
    };
    for o in open.iter().filter(|o| !o.status.is_final()) {
        match orders::cancel_order(ex, &o.symbol, &o.client_id, policy).await {
            Ok(()) => out
                .lines
                .push(format!("{}: cancelled {}", o.symbol, o.client_id).into()),
            Err(e) => out
                .errors
                .push(format!("{}: cancel {}: {e}", o.symbol, o.client_id)),
        }
    }
}

/// Cancel every conditional order open now, each exactly once.
async fn cancel_all(ex: &dyn Exchange, policy: orders::SubmitPolicy, out: &mut EmergencyOutcome) {
    let open = match ex.open_algo_orders(None).await {
        Ok(o) => o,
        Err(e) => {
            return out
                .errors
                .push(format!("open conditional orders unread: {e}"))
        }
    };
    for a in open.iter().filter(|a| a.status.is_open()) {
        match orders::cancel_algo(ex, &a.symbol, &a.client_algo_id, policy).await {
            Ok(()) => out
                .lines
                .push(format!("{}: cancelled {}", a.symbol, a.client_algo_id).into()),
            Err(e) => out
                .errors
                .push(format!("{}: cancel {}: {e}", a.symbol, a.client_algo_id)),
        }
    }
}

/// Close what is left of every net position now, reduce-only, each order exactly once.
async fn flatten_all(
    ex: &dyn Exchange,
    account: &AccountId,
    policy: orders::SubmitPolicy,
    now: i64,
    out: &mut EmergencyOutcome,
) {
    let held = match ex.positions().await {
        Ok(p) => p,
        Err(e) => return out.errors.push(format!("exchange positions unread: {e}")),
    };
    for p in held.iter().filter(|p| !p.amount.is_zero()) {
        let order = match ex.symbol_filters(&p.symbol).await {
            Ok(f) => MarketOrder {
                symbol: p.symbol.clone(),
                side: if p.amount > Decimal::ZERO {
                    OrderSide::Sell
                } else {
                    OrderSide::Buy
                },
                qty: orders::close_qty(&f, Qty::new(p.amount.abs())),
                reduce_only: true,
                client_id: flatten_client_id(account, &p.symbol, now),
            },
            Err(e) => {
                out.errors
                    .push(format!("{}: filters unread: {e}", p.symbol));
                continue;
            }
        };
        match orders::submit_market(ex, &order, policy).await {
            Ok(o) => out.lines.push(
                format!(
                    "{}: flattened {} {} ({})",
                    p.symbol,
                    order.side.as_str(),
                    o.executed_qty,
                    order.client_id
                )
                .into(),
            ),
            Err(e) => out
                .errors
                .push(format!("{}: flatten {}: {e}", p.symbol, order.client_id)),
        }
    }
}

/// Fill in what the stop left, as the exchange and the store now report it.
async fn read_back(
    engine: &Engine,
    ex: &dyn Exchange,
    out: &mut EmergencyOutcome,
) -> Result<(), QueryError> {
    out.flat = ex.positions().await?.iter().all(|p| p.amount.is_zero());
    let algos = ex.open_algo_orders(None).await?;
    let resting = ex.open_orders(None).await?;
    out.open_orders = algos.iter().filter(|a| a.status.is_open()).count()
        + resting.iter().filter(|o| !o.status.is_final()).count();
    out.paused = engine
        .repo
        .account_paused(&out.account)
        .await?
        .unwrap_or(false);
    Ok(())
}

/// Plan the emergency stop of one account or of every account the engine trades (`None`).
pub async fn plan_emergency_for(
    engine: &Engine,
    account: Option<&str>,
    now: i64,
) -> Result<Vec<EmergencyPlan>, QueryError> {
    let mut plans = Vec::new();
    for acct in runtimes(engine, account)? {
        plans.push(plan_emergency(&gather(&engine.repo, acct, now).await?));
    }
    Ok(plans)
}

// ---------------------------------------------------------------------------------------------
// close one symbol
// ---------------------------------------------------------------------------------------------

/// Close the open strategy positions of one symbol (of one strategy, or of every strategy) on
/// every account the engine trades, each through the engine's own exit: the same order, trade
/// record and notification as a strategy exit. MANUAL positions are not touched (the emergency
/// stop flattens those).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClosePlan {
    pub symbol: Symbol,
    /// `None`: every strategy's position of `symbol`.
    pub strategy: Option<String>,
    pub close: Vec<PlannedClose>,
}

/// Plan closing `symbol`'s strategy positions (of `strategy` only, when given) from the store.
pub async fn plan_close(
    engine: &Engine,
    symbol: &Symbol,
    strategy: Option<&str>,
) -> Result<ClosePlan, QueryError> {
    let mut close = Vec::new();
    for acct in runtimes(engine, None)? {
        for v in engine.repo.positions(&acct.config.id).await? {
            let p = &v.value;
            let strategy_ok = strategy.is_none_or(|s| p.key.strategy.0.eq_ignore_ascii_case(s));
            if p.is_open() && !p.is_manual && &p.key.symbol == symbol && strategy_ok {
                close.push(PlannedClose {
                    key: p.key.clone(),
                    side: p.side,
                    qty: p.qty,
                });
            }
        }
    }
    Ok(ClosePlan {
        symbol: symbol.clone(),
        strategy: strategy.map(str::to_string),
        close,
    })
}

/// What closing did: the engine's lines and errors, and how many planned positions are still
/// open in the store afterwards (0 when every close filled).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CloseOutcome {
    pub symbol: Symbol,
    pub lines: Vec<crate::jobs::Line>,
    pub errors: Vec<String>,
    pub closed: usize,
    pub still_open: usize,
}

/// Close the plan's positions (only those: a position opened since the plan waits for another
/// command), account by account.
pub async fn apply_close(
    engine: &Engine,
    plan: &ClosePlan,
    now: i64,
) -> Result<CloseOutcome, QueryError> {
    let mut out = CloseOutcome {
        symbol: plan.symbol.clone(),
        lines: Vec::new(),
        errors: Vec::new(),
        closed: 0,
        still_open: 0,
    };
    let accounts: std::collections::BTreeSet<&AccountId> =
        plan.close.iter().map(|c| &c.key.account).collect();
    for account in accounts {
        let wanted = |k: &PositionKey| plan.close.iter().any(|c| &c.key == k);
        let r = engine
            .close_positions_where(Some(account), ExitReason::Manual, now, wanted)
            .await;
        out.errors.extend(r.error_texts());
        out.lines.extend(r.lines);
        for v in engine.repo.positions(account).await? {
            if plan.close.iter().any(|c| c.key == v.value.key) && v.value.is_open() {
                out.still_open += 1;
            }
        }
    }
    out.closed = plan.close.len() - out.still_open;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// sync
// ---------------------------------------------------------------------------------------------

/// What the sync of one account would look at: where the store and the exchange differ.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SyncPlan {
    pub account: AccountId,
    /// Symbols whose stored shares do not add up to the exchange's net.
    pub drift: Vec<SymbolDrift>,
    /// Open strategy positions whose stop is not among the open conditional orders: placed
    /// first.
    pub unprotected: Vec<PositionKey>,
    /// PENDING entries: adopted when the exchange has the order, dropped when it never did.
    pub pending: Vec<PositionKey>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SymbolDrift {
    pub symbol: Symbol,
    /// Sum of the stored open shares (signed: > 0 long).
    pub stored: Decimal,
    /// The exchange's net (signed).
    pub exchange: Decimal,
}

/// Plan one account's sync (pure): the dry run of `sync ACCOUNT`.
pub fn plan_sync(snap: &Snapshot) -> SyncPlan {
    let mut stored: BTreeMap<&Symbol, Decimal> = BTreeMap::new();
    for p in snap
        .positions
        .iter()
        .map(|v| &v.value)
        .filter(|p| p.is_open())
    {
        *stored.entry(&p.key.symbol).or_default() += p.side.sign() * p.qty.get();
    }
    let nets = nets(snap);
    let mut symbols: Vec<&Symbol> = stored.keys().chain(nets.keys()).copied().collect();
    symbols.sort();
    symbols.dedup();
    let drift = symbols
        .into_iter()
        .map(|s| SymbolDrift {
            symbol: s.clone(),
            stored: stored.get(s).copied().unwrap_or_default(),
            exchange: nets.get(s).copied().unwrap_or_default(),
        })
        .filter(|d| d.stored != d.exchange)
        .collect();
    let open_ids: Vec<&str> = snap
        .open_algos
        .iter()
        .map(|a| a.client_algo_id.as_str())
        .collect();
    let strategy_open = snap
        .positions
        .iter()
        .map(|v| &v.value)
        .filter(|p| p.is_open() && !p.is_manual);
    SyncPlan {
        account: snap.account.clone(),
        drift,
        unprotected: strategy_open
            .filter(|p| p.stop_loss.is_some())
            .filter(|p| {
                p.stop_client_id
                    .as_deref()
                    .is_none_or(|id| !open_ids.contains(&id))
            })
            .map(|p| p.key.clone())
            .collect(),
        pending: snap
            .positions
            .iter()
            .filter(|v| v.value.status == PositionStatus::Pending)
            .map(|v| v.value.key.clone())
            .collect(),
    }
}

/// What the sync did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SyncOutcome {
    pub account: AccountId,
    pub lines: Vec<crate::jobs::Line>,
    pub errors: Vec<String>,
    pub orders_placed: u32,
}

/// Run the position-sync job for the plan's account (the job's own code, one account).
pub async fn apply_sync(engine: &Engine, plan: &SyncPlan, now: i64) -> SyncOutcome {
    let r = engine.sync_one(&plan.account, now).await;
    SyncOutcome {
        account: plan.account.clone(),
        errors: r.error_texts(),
        lines: r.lines,
        orders_placed: r.orders_placed,
    }
}

// ---------------------------------------------------------------------------------------------
// switch strategy
// ---------------------------------------------------------------------------------------------

/// Make `to` the account's one strategy. The allocation lives in the configuration file (every
/// job reads it when it starts), so applying the plan edits that file's text.
///
/// The safe rule: while the account holds an open or pending position of a strategy it would
/// stop running, the switch is refused (`blocked_by` lists them). A dropped strategy's position
/// would stay on the exchange with no strategy to exit it; close it first (its own exit, or an
/// emergency stop) and switch then. MANUAL positions and the new strategy's own do not block.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SwitchPlan {
    pub account: AccountId,
    pub from: Vec<String>,
    pub to: String,
    /// Open or pending positions of strategies that would be dropped.
    pub blocked_by: Vec<PositionKey>,
    /// Already the account's only strategy: nothing to write.
    pub unchanged: bool,
}

/// Plan a switch (pure): `to` must be registered and configured in `[[strategies]]`.
pub fn plan_switch(cfg: &Config, snap: &Snapshot, to: &str) -> Result<SwitchPlan, QueryError> {
    let registered = crate::strategy::names();
    if !registered.contains(&to) || cfg.strategy(to).is_none() {
        let configured: Vec<&str> = cfg.strategies.iter().map(|s| s.name.as_str()).collect();
        return Err(QueryError::UnknownStrategy {
            name: to.to_string(),
            known: format!(
                "registered: {}; configured: {}",
                registered.join(", "),
                configured.join(", ")
            ),
        });
    }
    let a = select_accounts(cfg, Some(&snap.account.0))?[0];
    let blocked_by = snap
        .positions
        .iter()
        .map(|v| &v.value)
        .filter(|p| !p.is_manual && p.key.strategy.0 != to)
        .filter(|p| p.is_open() || p.status == PositionStatus::Pending)
        .map(|p| p.key.clone())
        .collect();
    Ok(SwitchPlan {
        account: a.id.clone(),
        from: a.strategies.clone(),
        to: to.to_string(),
        blocked_by,
        unchanged: a.strategies == [to],
    })
}

/// Apply a switch to the configuration's text: the account's `strategies` becomes `[to]`, every
/// other byte (comments included) stays. The result is checked by loading it as the jobs will.
pub fn apply_switch(
    plan: &SwitchPlan,
    config_text: &str,
    file: &str,
) -> Result<String, QueryError> {
    if !plan.blocked_by.is_empty() {
        let keys: Vec<String> = plan.blocked_by.iter().map(|k| k.to_string()).collect();
        return Err(QueryError::Refused(format!(
            "{} holds position(s) of strategies it would drop: {}; close them first",
            plan.account,
            keys.join(", ")
        )));
    }
    let mut doc: toml_edit::DocumentMut = config_text
        .parse()
        .map_err(|e| QueryError::Config(format!("{file}: {e}")))?;
    let accounts = doc
        .get_mut("accounts")
        .and_then(|a| a.as_array_of_tables_mut())
        .ok_or_else(|| QueryError::Config(format!("{file}: no [[accounts]]")))?;
    let entry = accounts
        .iter_mut()
        .find(|t| t.get("id").and_then(|v| v.as_str()) == Some(plan.account.as_str()))
        .ok_or_else(|| {
            QueryError::Config(format!("{file}: no [[accounts]] id = \"{}\"", plan.account))
        })?;
    let mut list = toml_edit::Array::new();
    list.push(plan.to.as_str());
    entry["strategies"] = toml_edit::value(list);
    let text = doc.to_string();
    Config::parse(&text, file).map_err(|e| QueryError::Config(e.to_string()))?;
    Ok(text)
}
