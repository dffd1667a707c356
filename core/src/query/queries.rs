//! The read side: typed answers a front end lays out and never recomputes. Each takes the
//! configuration, the state repo (and, for balance, the accounts' exchanges) and `now`.

use super::{select_accounts, QueryError};
use crate::config::{AccountConfig, Config};
use crate::domain::{
    AccountId, AccountState, Marks, Position, PositionStatus, Price, Qty, Side, StrategyId, Symbol,
    Timeframe, TradeRecord,
};
use crate::jobs::{AccountRuntime, SYNC_JOB, SYNC_RECORD_REFRESH_MS};
use crate::ports::AccountSnapshot;
use crate::report;
use crate::risk;
use crate::state::{RunStage, StateRepo};
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::BTreeMap;

const DAY_MS: i64 = 86_400_000;

/// `status`: every configured account's figures from the state store, as of `at`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatusReport {
    /// Where the state lives (`sqlite:./state/albra.db`, `dynamodb:TABLE`).
    pub state: String,
    /// When the answer was made (ms): the `now` job ages count from.
    pub at: i64,
    pub accounts: Vec<AccountStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AccountStatus {
    pub account: AccountId,
    pub enabled: bool,
    /// `None` until the sync job has written the account's state.
    pub figures: Option<AccountFigures>,
    pub open_positions: usize,
    pub closed_trades: usize,
    /// Sum of the closed trades' PnL (net of fees and funding).
    pub realized_pnl: Decimal,
    /// The open positions (strategy shares and the MANUAL one), each valued at the mark the
    /// last sync recorded (`figures.marks_at`).
    pub positions: Vec<PositionRow>,
    /// Sum of the open positions' unrealised PnL; `None` when one of them has no mark yet.
    pub unrealized_pnl: Option<Decimal>,
    /// The last run of each of the account's jobs ([`job_health`]).
    pub jobs: Vec<JobHealth>,
    /// `at` less the newest run of any of its jobs: how long since anything ran for the
    /// account; `None`: nothing ever ran.
    pub heartbeat_age_ms: Option<i64>,
}

/// The equity side of an account's state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AccountFigures {
    pub equity: Decimal,
    pub peak_equity: Decimal,
    /// Drawdown of equity from its peak in percent (25 = 25 %).
    pub drawdown_pct: Decimal,
    pub mdd_level: u8,
    pub paused: bool,
    /// Realised PnL of the trades closed during the current trading day.
    pub daily_pnl: Decimal,
    /// New entries are halted until then (ms): the daily loss limit was hit. `None` when no
    /// halt is in force at the answer's time.
    pub halted_until: Option<i64>,
    /// When the sync last recorded the marks positions are valued at (ms).
    pub marks_at: Option<i64>,
}

impl AccountFigures {
    fn of(st: &AccountState, now: i64) -> AccountFigures {
        AccountFigures {
            equity: st.equity.get(),
            peak_equity: st.peak_equity.get(),
            drawdown_pct: st.drawdown() * Decimal::ONE_HUNDRED,
            mdd_level: st.mdd_level,
            paused: st.paused,
            daily_pnl: st.daily_realized_pnl.get(),
            halted_until: st.daily_halt_until.filter(|t| *t > now),
            marks_at: st.marks_at,
        }
    }
}

/// Every account's status at `now`, in configuration order.
pub async fn status(repo: &StateRepo, cfg: &Config, now: i64) -> Result<StatusReport, QueryError> {
    let mut accounts = Vec::with_capacity(cfg.accounts.len());
    for a in &cfg.accounts {
        let st = repo.account_state(&a.id).await?.map(|v| v.value);
        let marks = st.as_ref().map(|s| &s.marks);
        let positions: Vec<PositionRow> = repo
            .positions(&a.id)
            .await?
            .iter()
            .filter(|p| p.value.is_open())
            .map(|p| PositionRow::of(&p.value, marks))
            .collect();
        let trades = repo.trades(&a.id).await?;
        let jobs = account_jobs(repo, cfg, a, now).await?;
        accounts.push(AccountStatus {
            account: a.id.clone(),
            enabled: a.enabled,
            figures: st.as_ref().map(|v| AccountFigures::of(v, now)),
            open_positions: positions.len(),
            closed_trades: trades.len(),
            realized_pnl: trades.iter().map(|t| t.pnl.get()).sum(),
            unrealized_pnl: positions.iter().map(|p| p.unrealized_pnl).sum(),
            heartbeat_age_ms: jobs.iter().filter_map(|j| j.age_ms).min(),
            positions,
            jobs,
        });
    }
    Ok(StatusReport {
        state: repo.describe(),
        at: now,
        accounts,
    })
}

/// One tracked position (a strategy's share or a MANUAL one), any status.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PositionRow {
    pub account: AccountId,
    pub strategy: StrategyId,
    pub symbol: Symbol,
    pub side: Side,
    pub qty: Qty,
    pub entry_price: Price,
    pub stop_loss: Option<Price>,
    pub take_profit: Option<Price>,
    /// When it was opened (ms).
    pub opened_at: i64,
    /// The symbol's mark at the account's last sync (`None`: no sync saw the position yet).
    pub mark_price: Option<Price>,
    /// Unrealised PnL of this position at that mark (USDT).
    pub unrealized_pnl: Option<Decimal>,
    pub status: PositionStatus,
    pub is_manual: bool,
    /// An open strategy position whose stop is not on the exchange.
    pub unprotected: bool,
    /// The status as shown to a person: `ACTIVE`, `PENDING`, `ACTIVE UNPROTECTED`, …
    pub label: String,
}

/// Whether an open strategy position lacks its protective stop on the exchange (the evaluator
/// or sync that failed to place it exited non-zero; the next sync places it first).
pub fn unprotected(p: &Position) -> bool {
    p.is_open() && !p.is_manual && p.stop_loss.is_some() && p.stop_client_id.is_none()
}

/// A position's status as a person reads it.
pub fn position_label(p: &Position) -> String {
    let status = format!("{:?}", p.status).to_uppercase();
    if unprotected(p) {
        format!("{status} UNPROTECTED")
    } else {
        status
    }
}

impl PositionRow {
    /// `p` as a row, valued at its symbol's mark in `marks` (the account's last sync's).
    pub fn of(p: &Position, marks: Option<&Marks>) -> PositionRow {
        let mark = marks.and_then(|m| m.get(&p.key.symbol)).copied();
        PositionRow {
            account: p.key.account.clone(),
            strategy: p.key.strategy.clone(),
            symbol: p.key.symbol.clone(),
            side: p.side,
            qty: p.qty,
            entry_price: p.entry_price,
            stop_loss: p.stop_loss,
            take_profit: p.take_profit,
            opened_at: p.opened_at,
            mark_price: mark,
            unrealized_pnl: mark
                .filter(|_| p.is_open())
                .map(|m| p.unrealized_pnl(m).get()),
            status: p.status,
            is_manual: p.is_manual,
            unprotected: unprotected(p),
            label: position_label(p),
        }
    }
}

/// Every tracked position of every account (or of `account`), accounts in configuration order,
/// positions by strategy then symbol, each valued at its account's last sync's marks.
pub async fn positions(
    repo: &StateRepo,
    cfg: &Config,
    account: Option<&str>,
) -> Result<Vec<PositionRow>, QueryError> {
    let mut rows = Vec::new();
    for a in select_accounts(cfg, account)? {
        let st = repo.account_state(&a.id).await?.map(|v| v.value);
        let marks = st.as_ref().map(|s| &s.marks);
        for p in repo.positions(&a.id).await? {
            rows.push(PositionRow::of(&p.value, marks));
        }
    }
    Ok(rows)
}

/// `balance`: what the exchange says an account holds, beside the equity the state recorded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BalanceRow {
    pub account: AccountId,
    /// The exchange's figures (`None` when the read failed: see `error`).
    pub exchange: Option<AccountSnapshot>,
    pub error: Option<String>,
    /// Equity as the last job recorded it.
    pub state_equity: Option<Decimal>,
}

/// Balances of the given accounts (one signed read each, at once); a failed read is that row's
/// error, not the whole answer's.
pub async fn balance(
    repo: &StateRepo,
    accounts: &[AccountRuntime],
) -> Result<Vec<BalanceRow>, QueryError> {
    let reads = futures::future::join_all(accounts.iter().map(|a| a.exchange.account())).await;
    let mut rows = Vec::with_capacity(accounts.len());
    for (a, read) in accounts.iter().zip(reads) {
        let state_equity = repo
            .account_state(&a.config.id)
            .await?
            .map(|v| v.value.equity.get());
        let (exchange, error) = match read {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e.to_string())),
        };
        rows.push(BalanceRow {
            account: a.config.id.clone(),
            exchange,
            error,
            state_equity,
        });
    }
    Ok(rows)
}

/// `performance`: closed-trade figures per account and strategy.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PerformanceReport {
    /// Trades closed at or after this time (ms) count; `None`: all.
    pub since: Option<i64>,
    /// One row per (account, strategy) with trades, then one per account with `strategy: None`.
    pub rows: Vec<PerformanceRow>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PerformanceRow {
    pub account: AccountId,
    /// `None`: the account's trades of every strategy.
    pub strategy: Option<StrategyId>,
    pub trades: usize,
    pub wins: usize,
    /// Winning trades as a fraction (0.5 = half); 0 without trades.
    pub win_rate: Decimal,
    pub total_pnl: Decimal,
    pub fees: Decimal,
    /// Gross profit over gross loss; `None` when nothing was lost.
    pub profit_factor: Option<Decimal>,
    /// Largest fall of the cumulative PnL from its running peak (USDT, ≥ 0), trades in
    /// closing order: an absolute figure, since closed trades carry no equity baseline.
    pub max_drawdown: Decimal,
}

impl PerformanceRow {
    /// The figures of `trades` (oldest first).
    pub fn of<'a>(
        account: &AccountId,
        strategy: Option<StrategyId>,
        trades: impl IntoIterator<Item = &'a TradeRecord>,
    ) -> PerformanceRow {
        let mut r = PerformanceRow {
            account: account.clone(),
            strategy,
            trades: 0,
            wins: 0,
            win_rate: Decimal::ZERO,
            total_pnl: Decimal::ZERO,
            fees: Decimal::ZERO,
            profit_factor: None,
            max_drawdown: Decimal::ZERO,
        };
        let (mut profit, mut loss, mut cum, mut peak) =
            (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
        for t in trades {
            r.trades += 1;
            r.fees += t.fees.get();
            if t.pnl.get() > Decimal::ZERO {
                r.wins += 1;
                profit += t.pnl.get();
            } else {
                loss -= t.pnl.get();
            }
            cum += t.pnl.get();
            peak = peak.max(cum);
            r.max_drawdown = r.max_drawdown.max(peak - cum);
        }
        r.total_pnl = profit - loss;
        if r.trades > 0 {
            r.win_rate = Decimal::from(r.wins) / Decimal::from(r.trades);
        }
        r.profit_factor = (loss > Decimal::ZERO).then(|| profit / loss);
        r
    }
}

/// Performance over the last `days` days (all trades when `None`) of every account, or one.
pub async fn performance(
    repo: &StateRepo,
    cfg: &Config,
    account: Option<&str>,
    days: Option<u32>,
    now: i64,
) -> Result<PerformanceReport, QueryError> {
    let since = days.map(|d| now - i64::from(d) * DAY_MS);
    let mut rows = Vec::new();
    let mut totals = Vec::new();
    for a in select_accounts(cfg, account)? {
        let trades: Vec<TradeRecord> = repo
            .trades(&a.id)
            .await?
            .into_iter()
            .filter(|t| since.is_none_or(|s| t.exit_time >= s))
            .collect();
        let mut by_strategy: BTreeMap<&StrategyId, Vec<&TradeRecord>> = BTreeMap::new();
        for t in &trades {
            by_strategy.entry(&t.strategy).or_default().push(t);
        }
        for (s, ts) in by_strategy {
            rows.push(PerformanceRow::of(&a.id, Some(s.clone()), ts));
        }
        totals.push(PerformanceRow::of(&a.id, None, &trades));
    }
    rows.extend(totals);
    Ok(PerformanceReport { since, rows })
}

/// `report`: the `kind` report ([`crate::report`]) of every account, or one, for the period
/// before `now`: each account's equity points of the period (and the day before it) and its
/// closed trades, handed to the pure [`report::build`].
pub async fn report(
    repo: &StateRepo,
    cfg: &Config,
    account: Option<&str>,
    kind: report::ReportKind,
    now: i64,
) -> Result<report::Report, QueryError> {
    let w = report::Window::of(kind, now);
    let mut data = Vec::new();
    for a in select_accounts(cfg, account)? {
        data.push(report::AccountData {
            account: a.id.clone(),
            points: repo.equity_points(&a.id, w.points_from(), w.end).await?,
            trades: repo.trades(&a.id).await?,
        });
    }
    Ok(report::build(kind, now, &data))
}

/// Each account's (or the one named) equity curve over `[from, to)` with its drawdown, from the
/// sync's equity points: what the bot's `/chart` draws.
pub async fn equity_history(
    repo: &StateRepo,
    cfg: &Config,
    account: Option<&str>,
    from: i64,
    to: i64,
) -> Result<Vec<(AccountId, Vec<report::CurvePoint>)>, QueryError> {
    let mut out = Vec::new();
    for a in select_accounts(cfg, account)? {
        let points = repo.equity_points(&a.id, from, to).await?;
        out.push((a.id.clone(), report::equity_curve(&points)));
    }
    Ok(out)
}

/// A calendar period for [`pnl_by_period`]: trading days (from the configured day start) or
/// weeks of seven of them, starting on the trading day of a Monday.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Week,
}

/// The closed trades of one period, every account (or one) together.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PeriodPnl {
    /// When the period starts (ms).
    pub start: i64,
    pub trades: usize,
    pub pnl: Decimal,
    pub fees: Decimal,
}

/// The last `n` periods up to the one holding `now`, newest first, each with the PnL of the
/// trades that closed in it (the `/daily` and `/weekly` answers). Empty periods are listed.
pub async fn pnl_by_period(
    repo: &StateRepo,
    cfg: &Config,
    account: Option<&str>,
    period: Period,
    n: u32,
    now: i64,
) -> Result<Vec<PeriodPnl>, QueryError> {
    let start_hour = cfg.risk.day_start_hour_utc;
    let index = |t: i64| {
        let day = risk::trading_day(t, start_hour);
        match period {
            Period::Day => day,
            // 1970-01-01 was a Thursday: day 4 is the first Monday.
            Period::Week => (day - 4).div_euclid(7),
        }
    };
    let start_of = |i: i64| {
        let day = match period {
            Period::Day => i,
            Period::Week => i * 7 + 4,
        };
        day * DAY_MS + i64::from(start_hour) * 3_600_000
    };
    let last = index(now);
    let first = last - i64::from(n.max(1)) + 1;
    let mut rows: Vec<PeriodPnl> = (first..=last)
        .rev()
        .map(|i| PeriodPnl {
            start: start_of(i),
            trades: 0,
            pnl: Decimal::ZERO,
            fees: Decimal::ZERO,
        })
        .collect();
    for a in select_accounts(cfg, account)? {
        for t in repo.trades(&a.id).await? {
            let i = index(t.exit_time);
            if (first..=last).contains(&i) {
                let r = &mut rows[(last - i) as usize];
                r.trades += 1;
                r.pnl += t.pnl.get();
                r.fees += t.fees.get();
            }
        }
    }
    Ok(rows)
}

/// `risk-check`: an account's limits beside what it uses of them, and what needs attention.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RiskCheck {
    pub account: AccountId,
    pub enabled: bool,
    /// Whether the sync has written the account's state (the figures below are zero if not).
    pub state_known: bool,
    pub paused: bool,
    /// Today's loss from the day's starting equity (fraction) and the limit (fraction).
    pub daily_loss: Decimal,
    pub daily_loss_limit: Decimal,
    /// New entries are halted by the daily loss limit until this time (ms).
    pub halted_until: Option<i64>,
    pub mdd_level: u8,
    /// The size multiplier the MDD level (with its recovery) gives entries.
    pub size_multiplier: Decimal,
    /// Whether the MDD level forbids new entries (the emergency level, unless allowed).
    pub mdd_blocks_entries: bool,
    pub open_positions: usize,
    pub max_positions: u32,
    pub leverage: Vec<LeverageUse>,
    pub warnings: Vec<RiskWarning>,
}

/// A strategy's leverage as configured and as the account's cap lets it trade.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LeverageUse {
    pub strategy: String,
    pub configured: u32,
    pub cap: u32,
    pub effective: u32,
}

/// Something in an account's risk a person should look at.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RiskWarning {
    /// Two or more enabled strategies of the account trade one symbol (they share its net).
    SameSymbol {
        symbol: Symbol,
        strategies: Vec<String>,
    },
    /// An open strategy position without its stop on the exchange.
    Unprotected {
        strategy: StrategyId,
        symbol: Symbol,
    },
    /// New entries are halted by the daily loss limit until `until` (ms).
    DailyLossHalt { until: i64 },
    /// Equity is down far enough from its peak for entry sizes to be cut.
    MddLevel { level: u8 },
    /// The account is paused: nothing is evaluated, its stops stay.
    Paused,
    /// A strategy holds as many positions as `risk.max_positions_per_account` allows: its
    /// entries are refused until one closes.
    PositionLimit {
        strategy: StrategyId,
        open: usize,
        max: u32,
    },
    /// A configured leverage above the account's cap (trades at the cap).
    LeverageCapped {
        strategy: String,
        configured: u32,
        cap: u32,
    },
}

/// How every front end words a warning.
impl std::fmt::Display for RiskWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RiskWarning::SameSymbol { symbol, strategies } => write!(
                f,
                "{} all trade {symbol} (they share its net position)",
                strategies.join(", ")
            ),
            RiskWarning::Unprotected { strategy, symbol } => write!(
                f,
                "{strategy}/{symbol} has no protective stop on the exchange; the next sync places it"
            ),
            RiskWarning::DailyLossHalt { until } => write!(
                f,
                "new entries halted by the daily loss limit until {}",
                crate::domain::utc_minute(*until)
            ),
            RiskWarning::MddLevel { level } => {
                write!(f, "drawdown at MDD level {level}: entry sizes are cut")
            }
            RiskWarning::Paused => write!(f, "paused: nothing is evaluated; stops stay"),
            RiskWarning::PositionLimit {
                strategy,
                open,
                max,
            } => write!(
                f,
                "{strategy} holds {open} of {max} allowed positions: its entries are refused"
            ),
            RiskWarning::LeverageCapped {
                strategy,
                configured,
                cap,
            } => write!(
                f,
                "{strategy} is configured for {configured}x, above the account cap: trades at {cap}x"
            ),
        }
    }
}

/// Enabled strategies of the account that share a symbol, per symbol (the config's check, which
/// config load and job start also warn of).
fn shared_symbols(cfg: &Config, a: &AccountConfig) -> Vec<RiskWarning> {
    cfg.shared_symbols(a)
        .into_iter()
        .map(|s| RiskWarning::SameSymbol {
            symbol: s.symbol,
            strategies: s.strategies,
        })
        .collect()
}

fn leverage_use(cfg: &Config, a: &AccountConfig) -> Vec<LeverageUse> {
    cfg.account_strategies(a)
        .map(|s| {
            let cap = a.risk.max_leverage.unwrap_or(cfg.risk.max_leverage);
            LeverageUse {
                strategy: s.name.clone(),
                configured: s.leverage,
                cap,
                effective: cfg.effective_sizing(a, s).0,
            }
        })
        .collect()
}

/// The risk check of every account (or one) at `now`.
pub async fn risk_check(
    repo: &StateRepo,
    cfg: &Config,
    account: Option<&str>,
    now: i64,
) -> Result<Vec<RiskCheck>, QueryError> {
    let mut out = Vec::new();
    for a in select_accounts(cfg, account)? {
        let st = repo.account_state(&a.id).await?.map(|v| v.value);
        let positions = repo.positions(&a.id).await?;
        out.push(risk_of(cfg, a, st.as_ref(), &positions, now));
    }
    Ok(out)
}

/// The risk check of one account from what the store holds (pure).
pub fn risk_of(
    cfg: &Config,
    a: &AccountConfig,
    st: Option<&AccountState>,
    positions: &[crate::state::Versioned<Position>],
    now: i64,
) -> RiskCheck {
    let known = st.is_some();
    let st = st.cloned().unwrap_or_default();
    let mdd = &cfg.risk.mdd;
    let open: Vec<&Position> = positions
        .iter()
        .map(|v| &v.value)
        .filter(|p| p.is_open())
        .collect();
    let mut check = RiskCheck {
        account: a.id.clone(),
        enabled: a.enabled,
        state_known: known,
        paused: st.paused,
        daily_loss: risk::daily_loss(&st),
        daily_loss_limit: cfg.daily_loss_pct(a),
        halted_until: st.daily_halt_until.filter(|t| *t > now),
        mdd_level: st.mdd_level,
        size_multiplier: risk::mdd_multiplier(mdd, st.mdd_level, st.consecutive_wins),
        mdd_blocks_entries: known
            && st.mdd_level >= risk::emergency_level(mdd)
            && !mdd.allow_entries_in_emergency,
        open_positions: open.len(),
        max_positions: cfg.account_risk(a).max_positions_per_account,
        leverage: leverage_use(cfg, a),
        warnings: Vec::new(),
    };
    check.warnings = warnings_of(cfg, a, &check, &open);
    check
}

/// What needs attention in a risk check's figures and the open positions.
fn warnings_of(
    cfg: &Config,
    a: &AccountConfig,
    c: &RiskCheck,
    open: &[&Position],
) -> Vec<RiskWarning> {
    let mut w = shared_symbols(cfg, a);
    w.extend(
        open.iter()
            .filter(|p| unprotected(p))
            .map(|p| RiskWarning::Unprotected {
                strategy: p.key.strategy.clone(),
                symbol: p.key.symbol.clone(),
            }),
    );
    if let Some(until) = c.halted_until {
        w.push(RiskWarning::DailyLossHalt { until });
    }
    if c.mdd_level > 0 {
        w.push(RiskWarning::MddLevel { level: c.mdd_level });
    }
    if c.paused {
        w.push(RiskWarning::Paused);
    }
    // The entry check counts each strategy's own positions (MANUAL ones are the trader's).
    let mut per_strategy: BTreeMap<&StrategyId, usize> = BTreeMap::new();
    for p in open.iter().filter(|p| !p.is_manual) {
        *per_strategy.entry(&p.key.strategy).or_default() += 1;
    }
    for (strategy, n) in per_strategy {
        if n >= c.max_positions as usize {
            w.push(RiskWarning::PositionLimit {
                strategy: strategy.clone(),
                open: n,
                max: c.max_positions,
            });
        }
    }
    w.extend(c.leverage.iter().filter(|l| l.configured > l.cap).map(|l| {
        RiskWarning::LeverageCapped {
            strategy: l.strategy.clone(),
            configured: l.configured,
            cap: l.cap,
        }
    }));
    w
}

/// `list-strategies`: one row per strategy this build knows, with how the configuration uses it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StrategyRow {
    pub name: String,
    /// Has a `[[strategies]]` entry in the configuration.
    pub configured: bool,
    pub enabled: bool,
    pub timeframe: Option<Timeframe>,
    pub symbols: Vec<Symbol>,
    pub leverage: Option<u32>,
    pub size_pct: Option<Decimal>,
    /// Enabled accounts that run it.
    pub accounts: Vec<AccountId>,
}

/// Every registered strategy, in registry order (pure).
pub fn strategies(cfg: &Config) -> Vec<StrategyRow> {
    crate::strategy::names()
        .into_iter()
        .map(|name| {
            let s = cfg.strategy(name);
            StrategyRow {
                name: name.to_string(),
                configured: s.is_some(),
                enabled: s.is_some_and(|s| s.enabled),
                timeframe: s.map(|s| s.timeframe),
                symbols: s.map(|s| s.symbols.clone()).unwrap_or_default(),
                leverage: s.map(|s| s.leverage),
                size_pct: s.map(|s| s.size_pct),
                accounts: cfg
                    .accounts
                    .iter()
                    .filter(|a| a.enabled && cfg.account_strategies(a).any(|x| x.name == name))
                    .map(|a| a.id.clone())
                    .collect(),
            }
        })
        .collect()
}

/// `health`: the last run of each job of each account.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobHealth {
    pub account: AccountId,
    /// `position-sync` or `evaluator-15m` / `-1h` / `-4h`.
    pub job: String,
    /// Job time of the last run (ms); `None`: no run recorded.
    pub last_run: Option<i64>,
    /// How that run ended (the run marker's or sync record's outcome).
    pub outcome: Option<String>,
    /// The last run finished (an evaluation still `evaluating`/`acting` has not).
    pub finished: bool,
    /// The last run finished without an error (a sync with errors, an evaluation failed).
    pub ok: bool,
    /// `now` less `last_run` (ms).
    pub age_ms: Option<i64>,
    /// No run for longer than the job's allowance: two of its periods for an evaluator, ten
    /// minutes for the sync (the spec allows 300 s between syncs when flat, and a sync without
    /// errors refreshes its record every [`SYNC_RECORD_REFRESH_MS`]).
    pub stale: bool,
    /// The verdict of the fields above ([`JobHealth::state`]), as every front end names it.
    pub state: JobState,
}

/// A job's state as every front end names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    NeverRun,
    /// No run for longer than the job's allowance.
    Stale,
    /// The last run has not finished.
    Running,
    Failed,
    Ok,
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JobState::NeverRun => "NEVER RUN",
            JobState::Stale => "STALE",
            JobState::Running => "RUNNING",
            JobState::Failed => "FAILED",
            JobState::Ok => "ok",
        })
    }
}

impl JobHealth {
    /// Never run first, then stale (whatever the last run said), running, failed, ok.
    pub fn state(&self) -> JobState {
        match (self.last_run, self.finished, self.ok, self.stale) {
            (None, ..) => JobState::NeverRun,
            (_, _, _, true) => JobState::Stale,
            (_, false, _, _) => JobState::Running,
            (_, true, false, _) => JobState::Failed,
            (_, true, true, false) => JobState::Ok,
        }
    }
}

/// How long a job may go without a run before it is stale.
fn allowance(job_tf: Option<Timeframe>) -> i64 {
    match job_tf {
        Some(tf) => 2 * tf.millis(),
        None => 300_000 + SYNC_RECORD_REFRESH_MS,
    }
}

fn health_row(
    account: &AccountId,
    job: String,
    tf: Option<Timeframe>,
    last: Option<(i64, String, bool, bool)>,
    now: i64,
) -> JobHealth {
    let age_ms = last.as_ref().map(|l| now - l.0);
    let (finished, ok) = last.as_ref().map_or((false, false), |l| (l.2, l.3));
    let mut h = JobHealth {
        account: account.clone(),
        job,
        last_run: last.as_ref().map(|l| l.0),
        outcome: last.map(|l| l.1),
        finished,
        ok,
        age_ms,
        stale: age_ms.is_none_or(|a| a > allowance(tf)),
        state: JobState::NeverRun,
    };
    h.state = h.state();
    h
}

/// The last run of the sync and of each evaluator timeframe the account trades, from the sync's
/// run records and the evaluator's run markers.
pub async fn job_health(
    repo: &StateRepo,
    cfg: &Config,
    account: Option<&str>,
    now: i64,
) -> Result<Vec<JobHealth>, QueryError> {
    let mut out = Vec::new();
    for a in select_accounts(cfg, account)? {
        out.extend(account_jobs(repo, cfg, a, now).await?);
    }
    Ok(out)
}

/// [`job_health`] of one account: the sync first, then its evaluator timeframes.
async fn account_jobs(
    repo: &StateRepo,
    cfg: &Config,
    a: &AccountConfig,
    now: i64,
) -> Result<Vec<JobHealth>, QueryError> {
    let mut out = Vec::new();
    let sync = repo.job_run(&a.id, SYNC_JOB).await?;
    let last = sync.map(|r| (r.at, r.outcome, true, r.ok));
    out.push(health_row(&a.id, SYNC_JOB.to_string(), None, last, now));
    let mut tfs: Vec<Timeframe> = cfg.account_strategies(a).map(|s| s.timeframe).collect();
    tfs.sort();
    tfs.dedup();
    let markers = repo.run_markers(&a.id).await?;
    for tf in tfs {
        let last = markers
            .iter()
            .filter(|(k, _)| k.tf == tf)
            .max_by_key(|(k, m)| (m.claimed_at, k.open_time))
            .map(|(_, m)| {
                // A failed evaluation gives its candle back (no marker) or, once it sent an
                // order, leaves it `acting`: a done marker is a run that ended as it meant to.
                let finished = m.stage == RunStage::Done;
                (m.claimed_at, m.outcome.clone(), finished, finished)
            });
        out.push(health_row(
            &a.id,
            format!("evaluator-{tf}"),
            Some(tf),
            last,
            now,
        ));
    }
    Ok(out)
}
