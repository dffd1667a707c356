//! Backtests: the live jobs over recorded candles, with the paper exchange and a simulated clock:
//! a few seconds after every candle close, [`Engine::sync_positions`] records what the exchange
//! did during the candle (as the minute-by-minute sync would have), then [`Engine::evaluate`]
//! decides on the close. State is kept typed in process ([`TypedState`]). No rule is implemented
//! twice: decisions, sizing, orders, fills, stops and trade records are the same code the
//! scheduled jobs run. Each (data file, strategy) pair is its own account
//! with its own starting equity; positions still open after the last candle are closed at its
//! close (their trades' reason: `end_of_data`).
//!
//! Funding: where a funding file lies beside the candle file ([`data::funding_path_for`]), the
//! paper exchange charges its rates at each funding time a position is open, and the jobs
//! attribute them to the trades as live ([`RunResult::funding`] says what was charged). Without
//! one nothing is charged and the run is exactly what it was before funding existed.
//!
//! [`breakdown`] cuts a run's trades by month, symbol, exit reason or strategy.
//!
//! `--risk off` ([`BacktestOptions::risk_off`]) switches sizing rules and risk limits off: every
//! entry uses all equity (quantity = equity / fill price, fractional), there is no position
//! limit and no protective stop order (a strategy's own exits and take-profits still apply), and
//! the account's risk state (equity peak, MDD level, daily loss) is not kept between syncs.

use crate::config::{AccountConfig, Config, RiskOverrides, StrategyConfig};
use crate::data::FundingRate;
use crate::data::{self, CandleSeries};
use crate::domain::{AccountId, ExitReason, Notional, Symbol, Timeframe, TradeRecord};
use crate::fastpath::{typed_state::TypedState, FastPath};
use crate::jobs::{AccountRuntime, Engine, EngineTiming, Sizing, StrategyCache};
use crate::notify::DiscardNotifier;
use crate::paper::{
    MarketData, OrderJournal, PaperConfig, PaperExchange, RecordedMarket, SyncView,
    ORDERS_CSV_HEADER,
};
use crate::ports::{Clock, Exchange, MarginType, SimClock, SymbolFilters};
use crate::state::StateRepo;
use rust_decimal::Decimal;
use std::path::PathBuf;
use std::sync::Arc;

mod breakdown;
pub use breakdown::{breakdown, total, BreakdownRow, Dimension};

#[derive(thiserror::Error, Debug)]
pub enum BacktestError {
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error("{0}")]
    Setup(String),
    /// `--timerange` holds no candle of a file.
    #[error(transparent)]
    Range(#[from] crate::timerange::RangeError),
}

/// What to backtest and how.
#[derive(Clone, Debug)]
pub struct BacktestOptions {
    pub strategies: Vec<String>,
    pub data: Vec<PathBuf>,
    /// Evaluate at this timeframe (resampling finer data); default: the strategy's configured
    /// timeframe when a config is given, else the data's own.
    pub timeframe: Option<Timeframe>,
    pub fee: Decimal,
    pub slippage: Decimal,
    /// Starting equity of each (file, strategy) run.
    pub equity: Decimal,
    pub risk_off: bool,
    /// Strategy parameters, leverage and size from this config when it lists the strategy.
    pub config: Option<Config>,
    /// Where each run reports its candles done (`None`: nobody watches; no per-candle work).
    pub progress: Option<crate::progress::Reporter>,
    /// Trade and report only the candles opening in this range; the strategy still warms up on
    /// every candle before it, as in a run over the whole file.
    pub range: Option<crate::timerange::TimeRange>,
    /// Run the full evaluation job on every candle, never the quiet-candle shortcut
    /// ([`FastPath::evaluate_quiet`]): the same results, slower; for checking that claim.
    pub full_jobs: bool,
}

/// Performance figures of one equity curve and its trades.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Metrics {
    pub initial_equity: f64,
    pub final_equity: f64,
    pub total_return: f64,
    pub cagr: f64,
    pub sharpe: f64,
    pub sortino: f64,
    pub max_drawdown: f64,
    pub win_rate: f64,
    pub profit_factor: f64,
    pub avg_win: f64,
    pub avg_loss: f64,
    /// Fraction of evaluated candles with a position open.
    pub exposure: f64,
    pub trades: usize,
    pub fees: f64,
}

/// One (file, strategy) run.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub strategy: String,
    pub symbol: Symbol,
    pub data: PathBuf,
    pub timeframe: Timeframe,
    pub candles: usize,
    pub gaps: usize,
    pub trades: Vec<TradeRecord>,
    /// (time, equity): the initial equity at the first candle's open, then one point per candle
    /// close (the last one the equity after the final exit).
    pub equity: Vec<(i64, f64)>,
    /// Whether a position was open at each candle close (aligned with `equity[1..]`).
    pub exposed: Vec<bool>,
    pub metrics: Metrics,
    pub job_errors: Vec<String>,
    /// Candles decided on the quiet-candle shortcut ([`FastPath::evaluate_quiet`]).
    pub quiet_candles: usize,
    /// Every order the run's paper account was sent (`--orders-out`).
    pub orders: OrderJournal,
    /// The funding the paper account was charged, and from which file.
    pub funding: FundingCharged,
    /// The paper wallet after the final close: once every position is closed, the starting
    /// equity plus every trade's PnL (`core/tests/backtest_costs.rs` checks it to the unit).
    pub final_wallet: Decimal,
}

/// Recorded funding a run charges: the file beside the candles and its rates.
#[derive(Clone, Debug)]
pub struct FundingFile {
    pub path: PathBuf,
    pub rates: Arc<[FundingRate]>,
}

/// What funding a run's paper account was charged.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FundingCharged {
    /// The funding file charged from; `None`: no funding data, nothing charged.
    pub file: Option<PathBuf>,
    /// FUNDING_FEE payments booked (one per funding time a position was open).
    pub payments: usize,
    /// Their sum, USDT: + received, − paid. Equal to the trades' funding (every position is
    /// closed at the end).
    pub total: Decimal,
}

const EVAL_DELAY_MS: i64 = 3_000;

/// A money figure as f64, for statistics only.
pub(crate) fn f(d: Decimal) -> f64 {
    crate::domain::decimal_to_f64(d)
}

/// A paper account's view with its figures as f64, for marking equity at each close.
#[derive(Default)]
struct Marking {
    of: Option<SyncView>,
    wallet: f64,
    positions: Vec<(f64, f64)>,
}

/// The equity curve and exposure as the candles are marked, and the progress shown.
struct Curve {
    /// (time, equity): the initial equity at the first candle's open, then each candle's close.
    equity: Vec<(i64, f64)>,
    exposed: Vec<bool>,
    in_position: usize,
    /// Report progress every this many candles ([`crate::progress::stride`]).
    stride: usize,
}

impl Curve {
    /// Equity marked at `c`'s close.
    fn mark(&mut self, c: &crate::domain::Candle, tf: Timeframe, marking: &Marking) {
        let close = c.close.to_f64();
        let mut eq = marking.wallet;
        for (amount, entry) in &marking.positions {
            eq += amount * (close - entry);
        }
        let open = !marking.positions.is_empty();
        self.in_position += usize::from(open);
        self.exposed.push(open);
        self.equity.push((c.close_time(tf), eq));
    }

    /// Report candle `i` (0-based) of `total` done.
    fn progress(&self, progress: Option<&Progress>, i: usize, total: usize, tf: Timeframe) {
        use crate::progress::{due, Count, ProgressLine};
        match progress {
            Some(Progress::Report { label, to }) if due(i + 1, total, self.stride) => {
                to.show(&ProgressLine {
                    label: &format!("{label} {tf}"),
                    counts: &[Count {
                        what: "candles",
                        done: i + 1,
                        total,
                    }],
                    fraction: (i + 1) as f64 / total.max(1) as f64,
                });
            }
            Some(Progress::Tick(tick)) => tick(),
            _ => {}
        }
    }
}

impl Marking {
    /// Whether this marking is of the account as `v` shows it.
    fn is_of(&self, v: &SyncView) -> bool {
        self.of.as_ref().is_some_and(|m| m.taken_with(v) || m == v)
    }

    fn new(view: SyncView) -> Marking {
        Marking {
            wallet: f(view.wallet),
            positions: view
                .positions
                .iter()
                .map(|(_, amount, entry)| (f(*amount), f(*entry)))
                .collect(),
            of: Some(view),
        }
    }
}

/// Compute the metrics of an equity curve sampled once per `tf` and its trades.
pub fn metrics(
    equity: &[(i64, f64)],
    trades: &[TradeRecord],
    tf: Timeframe,
    in_position: usize,
    samples: usize,
) -> Metrics {
    let Some(&(t0, e0)) = equity.first() else {
        return Metrics::default();
    };
    let &(t1, e1) = equity.last().expect("non-empty");
    let years = ((t1 - t0) as f64 / (365.25 * 86_400_000.0)).max(1e-9);
    // The per-sample returns, computed again on each pass rather than collected: a run's curve
    // has one point per candle, and a fresh vector of them cost the whole process more in page
    // faults than the second pass costs in arithmetic.
    let rets = || {
        equity
            .windows(2)
            .filter(|w| w[0].1 > 0.0)
            .map(|w| w[1].1 / w[0].1 - 1.0)
    };
    // The first pass also follows the drawdown: its chain and the sum's are independent, so
    // they overlap in the processor (each is computed exactly as on its own).
    let (mut count, mut sum) = (0usize, -0.0f64);
    // The drawdown from the start: the first point's own is nil.
    let (mut peak, mut mdd) = (e0, 0.0f64);
    for w in equity.windows(2) {
        if w[0].1 > 0.0 {
            count += 1;
            sum += w[1].1 / w[0].1 - 1.0;
        }
        let e = w[1].1;
        peak = peak.max(e);
        if peak > 0.0 {
            mdd = mdd.max((peak - e) / peak);
        }
    }
    let n = count.max(1) as f64;
    let mean = sum / n;
    let (sq, down_sq) = rets().fold((-0.0f64, -0.0f64), |(a, d), r| {
        (a + (r - mean).powi(2), d + r.min(0.0).powi(2))
    });
    let var = sq / (n - 1.0).max(1.0);
    let down = (down_sq / n).sqrt();
    let per_year = 365.25 * 86_400_000.0 / tf.millis() as f64;
    let pnls: Vec<f64> = trades.iter().map(|t| f(t.pnl.get())).collect();
    let wins: Vec<f64> = pnls.iter().copied().filter(|p| *p > 0.0).collect();
    let losses: Vec<f64> = pnls.iter().copied().filter(|p| *p <= 0.0).collect();
    let gross_win: f64 = wins.iter().sum();
    let gross_loss: f64 = -losses.iter().sum::<f64>();
    Metrics {
        initial_equity: e0,
        final_equity: e1,
        total_return: e1 / e0 - 1.0,
        cagr: if e1 > 0.0 {
            (e1 / e0).powf(1.0 / years) - 1.0
        } else {
            -1.0
        },
        sharpe: if var > 0.0 {
            mean / var.sqrt() * per_year.sqrt()
        } else {
            0.0
        },
        sortino: if down > 0.0 {
            mean / down * per_year.sqrt()
        } else {
            0.0
        },
        max_drawdown: mdd,
        win_rate: if pnls.is_empty() {
            0.0
        } else {
            wins.len() as f64 / pnls.len() as f64
        },
        profit_factor: if gross_loss > 0.0 {
            gross_win / gross_loss
        } else if gross_win > 0.0 {
            f64::INFINITY
        } else {
            0.0
        },
        avg_win: if wins.is_empty() {
            0.0
        } else {
            gross_win / wins.len() as f64
        },
        avg_loss: if losses.is_empty() {
            0.0
        } else {
            -gross_loss / losses.len() as f64
        },
        exposure: if samples == 0 {
            0.0
        } else {
            in_position as f64 / samples as f64
        },
        trades: trades.len(),
        fees: trades.iter().map(|t| f(t.fees.get())).sum(),
    }
}

/// Filters for `--risk off`: fractional quantities, no minimum notional.
fn fractional_filters(symbol: &Symbol) -> SymbolFilters {
    let tiny = Decimal::new(1, 12);
    SymbolFilters {
        symbol: symbol.clone(),
        tick_size: tiny,
        min_price: Decimal::ZERO,
        max_price: Decimal::from(1_000_000_000i64),
        step_size: tiny,
        min_qty: tiny,
        max_qty: Decimal::from(1_000_000_000i64),
        market_step_size: tiny,
        market_min_qty: tiny,
        market_max_qty: Decimal::from(1_000_000_000i64),
        min_notional: Decimal::ZERO,
    }
}

/// Run every (file, strategy) pair.
pub async fn run(opts: &BacktestOptions) -> Result<Vec<RunResult>, BacktestError> {
    let mut out = Vec::new();
    for path in &opts.data {
        let series = Arc::new(data::load_csv(path)?);
        let symbol = data::symbol_from_filename(path).ok_or_else(|| {
            BacktestError::Setup(format!(
                "cannot tell the symbol from the file name {}",
                path.display()
            ))
        })?;
        let funding = data::load_funding_for(path)
            .map_err(data::DataError::from)?
            .map(|(path, rates)| FundingFile {
                path,
                rates: rates.into(),
            });
        for name in &opts.strategies {
            let bar = opts.progress.as_ref().map(|to| Progress::Report {
                label: format!("{name} {symbol}"),
                to: to.clone(),
            });
            let spec = RunSpec {
                progress: bar.as_ref(),
                funding: funding.as_ref(),
                ..RunSpec::default()
            };
            let run = run_series(opts, path, &series, &symbol, name, &spec);
            out.push(run.await?);
        }
    }
    Ok(out)
}

/// How a run reports its progress.
pub enum Progress {
    /// Its own candles done, under `label` (the timeframe is added).
    Report {
        label: String,
        to: crate::progress::Reporter,
    },
    /// Called after every evaluated candle: parallel runs add up into one report (a
    /// walk-forward's).
    Tick(Arc<dyn Fn() + Send + Sync>),
}

/// Variations of one run (a walk-forward's grid point and window).
#[derive(Default)]
pub struct RunSpec<'a> {
    /// Replaces the strategy's configured parameters; unknown or invalid ones fail the run.
    pub params: Option<&'a toml::Table>,
    /// Evaluate only the candles opening in `[from, to)` (ms); earlier candles are still the
    /// history the strategy warms up on, as live. Positions open at the end are closed.
    pub window: Option<(i64, i64)>,
    pub progress: Option<&'a Progress>,
    /// Funding rates to charge ([`FundingFile`], the file beside the candles); `None` charges
    /// none (walk-forward's runs).
    pub funding: Option<&'a FundingFile>,
}

/// One backtest of `name` over `series`, as `spec` varies it (parameters, window, progress,
/// the funding charged).
pub async fn run_series(
    opts: &BacktestOptions,
    path: &std::path::Path,
    series: &Arc<CandleSeries>,
    symbol: &Symbol,
    name: &str,
    spec: &RunSpec<'_>,
) -> Result<RunResult, BacktestError> {
    let (progress, funding) = (spec.progress, spec.funding);
    let configured = opts.config.as_ref().and_then(|c| c.strategy(name)).cloned();
    let tf = opts
        .timeframe
        .or(configured.as_ref().map(|s| s.timeframe))
        .unwrap_or(series.timeframe);
    if tf < series.timeframe {
        return Err(BacktestError::Setup(format!(
            "{}: {} candles cannot be evaluated at the finer {tf}",
            path.display(),
            series.timeframe
        )));
    }
    let params = match spec.params {
        Some(p) => p.clone(),
        None => configured
            .as_ref()
            .map(|s| s.params.clone())
            .unwrap_or_default(),
    };
    let warmup = crate::strategy::build(name, &params, &format!("strategies.{name}.params"))
        .map_err(|e| BacktestError::Setup(e.to_string()))?
        .warmup();
    let mut config = opts
        .config
        .clone()
        .unwrap_or_else(|| Config::parse(MINIMAL, "(built-in)").expect("built-in config"));
    config.jobs.history = config.jobs.history.max(warmup as u32 + 2);
    config.paper.initial_equity = opts.equity;
    config.paper.commission = opts.fee;
    config.paper.slippage = opts.slippage;
    config.notifier.telegram = false;
    config.strategies = vec![StrategyConfig {
        name: name.to_string(),
        enabled: true,
        timeframe: tf,
        symbols: vec![symbol.clone()],
        leverage: configured.as_ref().map_or(10, |s| s.leverage),
        size_pct: configured
            .as_ref()
            .map_or(Decimal::new(1, 1), |s| s.size_pct),
        margin_type: configured
            .as_ref()
            .map_or(MarginType::Isolated, |s| s.margin_type),
        params,
    }];
    let account = AccountConfig {
        id: AccountId::new("backtest"),
        enabled: true,
        key_source: "env".into(),
        strategies: vec![name.to_string()],
        risk: RiskOverrides::default(),
        live: false,
        main: true,
        base_url: None,
        allocation: Default::default(),
    };
    config.accounts = vec![account.clone()];

    let base = series.timeframe;
    let resampled;
    let all: &[crate::domain::Candle] = if tf == base {
        &series.candles
    } else {
        resampled = data::resample(&series.candles, base, tf, true);
        &resampled
    };
    // Candles are in time order: the window is one slice.
    let eval = match (spec.window, &opts.range) {
        (Some((from, to)), _) => {
            let a = all.partition_point(|c| c.open_time < from);
            let b = all.partition_point(|c| c.open_time < to).max(a);
            &all[a..b]
        }
        (None, Some(range)) => {
            let sel = range.select(all, None).map_err(|e| e.in_file(path))?;
            // The first evaluation reads the whole file before the range: a research run feeds
            // its strategy from the file's first candle and never rebuilds it, so this one
            // decides each candle of the range as the run over the whole file does.
            config.jobs.history = config.jobs.history.max(sel.start as u32 + 1);
            &all[sel.start..sel.end]
        }
        (None, None) => all,
    };
    let first = eval
        .first()
        .map(|c| c.open_time)
        .ok_or_else(|| BacktestError::Setup(format!("{}: no candles", path.display())))?;
    let clock = Arc::new(SimClock::new(first));
    let market: Arc<dyn MarketData> =
        Arc::new(RecordedMarket::shared(symbol.clone(), series.clone()));
    let mut paper = PaperConfig {
        initial_balance: Notional::new(opts.equity),
        commission_rate: opts.fee,
        slippage: opts.slippage,
        ..PaperConfig::default()
    };
    if opts.risk_off {
        paper
            .filters
            .insert(symbol.clone(), fractional_filters(symbol));
    }
    if let Some(f) = funding {
        paper.funding.insert(symbol.clone(), f.rates.clone());
    }
    let ex = Arc::new(PaperExchange::new(
        market,
        clock.clone() as Arc<dyn Clock>,
        paper,
    ));
    // A backtest's state lives and dies with the run: kept decoded, never serialised.
    let state = Arc::new(TypedState::default());
    let engine = Engine {
        config: Arc::new(config),
        repo: StateRepo::over(state.clone()),
        accounts: vec![AccountRuntime {
            config: account,
            exchange: ex.clone(),
        }],
        notifier: Arc::new(DiscardNotifier),
        timing: EngineTiming::instant(),
        // Fed from the first candle on by the research runner, never rebuilt from a window.
        cache: StrategyCache::default(),
        sizing: if opts.risk_off {
            Sizing::AllEquity
        } else {
            Sizing::Risk
        },
    };
    // Every evaluation goes the research way; the quiet-candle memo unless `--full-jobs`.
    let fast = FastPath::new(&engine, (!opts.full_jobs).then_some(state));

    // The curve starts at the initial equity, before the first candle: one vector, never copied.
    let mut equity = Vec::with_capacity(eval.len() + 1);
    equity.push((first, f(opts.equity)));
    let mut curve = Curve {
        equity,
        exposed: Vec::with_capacity(eval.len()),
        in_position: 0,
        stride: crate::progress::stride(eval.len()),
    };
    // The account as the last sync saw it (`None`: sync at the next candle).
    let mut synced: Option<SyncView> = None;
    // What equity is marked with: wallet and (amount, entry) per position, as f64.
    let mut marking = Marking::default();
    let mut job_errors = Vec::new();
    let mut quiet_candles = 0usize;
    let total = eval.len();
    let setup = |e: crate::ports::ExchangeError| BacktestError::Setup(e.to_string());
    let mut i = 0;
    while i < total {
        let c = &eval[i];
        let now = c.close_time(tf) + EVAL_DELAY_MS;
        clock.set(now);
        // As live, where the sync runs every minute: what the exchange did during the candle (a
        // stop or a take-profit step filled, funding) is recorded before the close is
        // evaluated. The full sync runs only when the exchange changed since the last one;
        // otherwise only equity moved.
        let unchanged = match &synced {
            Some(v) => ex.sync_view_unchanged(v).await.map_err(setup)?,
            None => false,
        };
        // `--risk off` with no conditional order open: until the next decision that is not a
        // HOLD, the exchange has nothing to do and there is no risk state to fold, so each
        // candle below would only take the shortcut and be marked. The run does exactly that.
        let idle = synced
            .as_ref()
            .is_some_and(|v| unchanged && v.open_algos.is_empty() && marking.is_of(v));
        if opts.risk_off && !opts.full_jobs && idle {
            let stretch = before_funding(&eval[i..], tf, &marking, &ex);
            let held = fast.evaluate_quiet_run(tf, stretch, EVAL_DELAY_MS).await;
            if held > 0 {
                for (k, c) in eval[i..i + held].iter().enumerate() {
                    curve.mark(c, tf, &marking);
                    curve.progress(progress, i + k, total, tf);
                }
                quiet_candles += held;
                i += held;
                continue;
            }
        }
        if !unchanged {
            let r = engine.sync_positions(now).await;
            synced = if r.errors.is_empty() {
                Some(ex.sync_view().await.map_err(setup)?)
            } else {
                None
            };
            job_errors.extend(r.error_texts());
        } else if !opts.risk_off {
            // Fold equity into the risk state (peak, MDD level, daily loss), which `--risk off`
            // does not use.
            let r = engine.observe_equity(now).await;
            job_errors.extend(r.error_texts());
        }
        // A HOLD on unchanged state touches nothing on the exchange: the view synced above is
        // still the account's.
        let quiet = !opts.full_jobs && fast.evaluate_quiet(tf, now, c).await;
        quiet_candles += usize::from(quiet);
        match (&synced, quiet && unchanged) {
            (Some(v), true) if marking.is_of(v) => {}
            _ => {
                if !quiet {
                    let r = fast.evaluate(tf, now).await;
                    job_errors.extend(r.error_texts());
                }
                marking = Marking::new(ex.sync_view().await.map_err(setup)?);
            }
        }
        curve.mark(c, tf, &marking);
        curve.progress(progress, i, total, tf);
        i += 1;
    }
    let end = eval
        .last()
        .map(|c| c.open_time + tf.millis())
        .unwrap_or(first);
    clock.set(end);
    // Record what the last evaluation did before closing what is still open.
    if synced.as_ref() != Some(&ex.sync_view().await.map_err(setup)?) {
        let r = engine.sync_positions(end).await;
        job_errors.extend(r.error_texts());
    }
    let r = engine
        .close_positions(None, ExitReason::EndOfData, end)
        .await;
    job_errors.extend(r.error_texts());
    let account = ex.account().await;
    let final_eq = account
        .as_ref()
        .map(|a| f(a.equity.get()))
        .unwrap_or(f64::NAN);
    let final_wallet = account.map(|a| a.wallet_balance.get()).map_err(setup)?;
    // `eval` is never empty (checked above): the last point is a candle's, not the start.
    if let Some(last) = curve.equity.last_mut() {
        last.1 = final_eq;
    }
    let trades = engine
        .repo
        .trades(&AccountId::new("backtest"))
        .await
        .map_err(|e| BacktestError::Setup(e.to_string()))?;
    let funding = match funding {
        Some(f) => funding_charged(&ex, f).await.map_err(setup)?,
        None => FundingCharged::default(),
    };
    let samples = curve.equity.len() - 1;
    let equity = curve.equity;
    let metrics = metrics(&equity, &trades, tf, curve.in_position, samples);
    Ok(RunResult {
        strategy: name.to_string(),
        symbol: symbol.clone(),
        data: path.to_path_buf(),
        timeframe: tf,
        candles: total,
        gaps: series.gaps.len(),
        trades,
        equity,
        exposed: curve.exposed,
        metrics,
        job_errors,
        quiet_candles,
        orders: ex.journal(),
        funding,
        final_wallet,
    })
}

/// The name of the funding file a run looks for beside `data` (`BTCUSDT-funding.csv`).
pub fn funding_file_name(data: &std::path::Path) -> String {
    let path = data::funding_path_for(data);
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// The candles of a quiet stretch starting at `candles[0]` that are evaluated before the next
/// funding time while a position is open: a payment moves the wallet the curve is marked with, so
/// the stretch ends there and the next candle syncs (all of them without funding data or flat).
fn before_funding<'c>(
    candles: &'c [crate::domain::Candle],
    tf: Timeframe,
    marking: &Marking,
    ex: &PaperExchange,
) -> &'c [crate::domain::Candle] {
    if marking.positions.is_empty() {
        return candles;
    }
    match ex.next_funding_time() {
        Some(t) => {
            let n = candles.partition_point(|c| c.close_time(tf) + EVAL_DELAY_MS < t);
            &candles[..n]
        }
        None => candles,
    }
}

/// The funding payments `ex` booked from `file`.
async fn funding_charged(
    ex: &PaperExchange,
    file: &FundingFile,
) -> Result<FundingCharged, crate::ports::ExchangeError> {
    let rows = ex.income(0).await?;
    let paid: Vec<Decimal> = rows
        .iter()
        .filter(|i| i.income_type == "FUNDING_FEE")
        .map(|i| i.income.get())
        .collect();
    Ok(FundingCharged {
        file: Some(file.path.clone()),
        payments: paid.len(),
        total: paid.iter().sum(),
    })
}

/// The config a backtest starts from when none is given.
const MINIMAL: &str = r#"
[notifier]
telegram = false
console = false
[[strategies]]
name = "EMA_CROSS"
timeframe = "1h"
symbols = ["BTCUSDT"]
leverage = 10
size_pct = 0.1
[[accounts]]
id = "backtest"
key_source = "env"
strategies = ["EMA_CROSS"]
"#;

/// The header of [`trades_csv`]. An interface: columns are only ever appended.
pub const TRADES_CSV_HEADER: &str = "strategy,symbol,side,entry_time,exit_time,entry_price,exit_price,qty,pnl,fees,funding,exit_reason\n";

/// The trades as CSV ([`TRADES_CSV_HEADER`]) with times as the UTC open of the candle whose price
/// filled (ISO 8601); `pnl` is net of `fees` and `funding` (+ received, − paid), `exit_reason`
/// the trade's [`ExitReason`].
pub fn trades_csv(runs: &[RunResult]) -> String {
    let mut s = String::from(TRADES_CSV_HEADER);
    for r in runs {
        for t in &r.trades {
            s.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},{}\n",
                t.strategy,
                t.symbol,
                t.side,
                fill_time(t.entry_time, r.timeframe),
                fill_time(t.exit_time, r.timeframe),
                t.entry_price,
                t.exit_price,
                t.qty,
                t.pnl.get().round_dp(8).normalize(),
                t.fees.get().round_dp(8).normalize(),
                t.funding.get().round_dp(8).normalize(),
                t.reason
            ));
        }
    }
    s
}

/// Every order of every run as CSV ([`ORDERS_CSV_HEADER`]), each labelled with its strategy.
pub fn orders_csv(runs: &[RunResult]) -> String {
    let mut s = String::from(ORDERS_CSV_HEADER);
    for r in runs {
        r.orders.csv_rows(&r.strategy, &mut s);
    }
    s
}

/// The open time of the candle an order placed at `t` filled in (the evaluation runs a few
/// seconds after a close, inside the next candle).
pub fn fill_open_time(t: i64, tf: Timeframe) -> i64 {
    tf.open_of(t)
}

fn fill_time(t: i64, tf: Timeframe) -> String {
    chrono::DateTime::from_timestamp_millis(fill_open_time(t, tf))
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Price, Qty, Side, StrategyId};

    fn trade(pnl: i64, fees: i64) -> TradeRecord {
        TradeRecord {
            id: format!("t{pnl}"),
            account: AccountId::new("a"),
            strategy: StrategyId::new("s"),
            symbol: Symbol::new("BTCUSDT"),
            side: Side::Long,
            qty: Qty::new(Decimal::ONE),
            entry_price: Price::new(Decimal::from(100)),
            exit_price: Price::new(Decimal::from(100)),
            entry_time: 0,
            exit_time: 1,
            pnl: Notional::new(Decimal::from(pnl)),
            fees: Notional::new(Decimal::from(fees)),
            funding: Notional::new(Decimal::ZERO),
            reason: "signal".into(),
            stop_loss: None,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    /// Every figure from its definition on a curve small enough to follow by hand: 100 → 110 →
    /// 99 → 120 over exactly one year, marked hourly, and four trades.
    #[test]
    fn metrics_follow_their_definitions() {
        let year = 31_557_600_000i64; // 365.25 days
        let curve = [
            (0, 100.0),
            (year / 3, 110.0),
            (2 * year / 3, 99.0),
            (year, 120.0),
        ];
        let trades = [trade(10, 1), trade(-5, 1), trade(15, 1), trade(-5, 1)];
        let m = metrics(&curve, &trades, Timeframe::H1, 2, 3);

        // Returns per sample: +10 %, −10 %, +21/99.
        let r: [f64; 3] = [0.1, -0.1, 21.0 / 99.0];
        let mean = (r[0] + r[1] + r[2]) / 3.0;
        // Sample standard deviation (n − 1), downside deviation over all n samples.
        let sd = (r.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
        let down = (0.01f64 / 3.0).sqrt();
        let hours_a_year = 365.25 * 24.0;
        assert!(
            close(m.sharpe, mean / sd * f64::sqrt(hours_a_year)),
            "{m:?}"
        );
        assert!(
            close(m.sortino, mean / down * f64::sqrt(hours_a_year)),
            "{m:?}"
        );
        assert_eq!((m.initial_equity, m.final_equity), (100.0, 120.0));
        assert!(close(m.total_return, 0.2));
        // One year: CAGR is the total return.
        assert!(close(m.cagr, 0.2), "{m:?}");
        // Peak 110, trough 99.
        assert!(close(m.max_drawdown, 0.1), "{m:?}");
        assert_eq!(m.win_rate, 0.5);
        assert_eq!(m.profit_factor, 2.5);
        assert_eq!((m.avg_win, m.avg_loss), (12.5, -5.0));
        assert_eq!(m.exposure, 2.0 / 3.0);
        assert_eq!((m.trades, m.fees), (4, 4.0));
    }

    /// The passes over the curve give, bit for bit, the figures of each computed on its own
    /// (returns' mean, their deviations, the drawdown), on random curves that touch zero.
    #[test]
    fn metrics_passes_equal_each_figure_computed_alone() {
        let mut next = crate::test_rng(0x3e7_41c5);
        for len in 1..300usize {
            let curve: Vec<(i64, f64)> = (0..len)
                .map(|i| {
                    let r = next();
                    let e = if r.is_multiple_of(17) {
                        0.0
                    } else {
                        (r % 10_000) as f64 / 7.0
                    };
                    (i as i64 * 3_600_000, e)
                })
                .collect();
            let rets: Vec<f64> = curve
                .windows(2)
                .filter(|w| w[0].1 > 0.0)
                .map(|w| w[1].1 / w[0].1 - 1.0)
                .collect();
            let n = rets.len().max(1) as f64;
            let mean = rets.iter().fold(-0.0, |s, r| s + r) / n;
            let sq = rets.iter().fold(-0.0, |a, r| a + (r - mean).powi(2));
            let down = (rets.iter().fold(-0.0, |d, r| d + r.min(0.0).powi(2)) / n).sqrt();
            let (mut peak, mut mdd) = (curve[0].1, 0.0f64);
            for &(_, e) in &curve {
                peak = peak.max(e);
                if peak > 0.0 {
                    mdd = mdd.max((peak - e) / peak);
                }
            }
            let per_year = (365.25f64 * 24.0).sqrt();
            let var = sq / (n - 1.0).max(1.0);
            let m = metrics(&curve, &[], Timeframe::H1, 0, len - 1);
            let sharpe = if var > 0.0 {
                mean / var.sqrt() * per_year
            } else {
                0.0
            };
            let sortino = if down > 0.0 {
                mean / down * per_year
            } else {
                0.0
            };
            assert_eq!(m.max_drawdown.to_bits(), mdd.to_bits(), "{curve:?}");
            assert_eq!(m.sharpe.to_bits(), sharpe.to_bits(), "{curve:?}");
            assert_eq!(m.sortino.to_bits(), sortino.to_bits(), "{curve:?}");
        }
    }

    #[test]
    fn metrics_edge_cases_are_defined() {
        let h = Timeframe::H1.millis();
        assert_eq!(metrics(&[], &[], Timeframe::H1, 0, 0), Metrics::default());

        // Flat and never traded: no spread, so no Sharpe or Sortino, nothing to divide.
        let flat = [(0, 50.0), (h, 50.0), (2 * h, 50.0)];
        let m = metrics(&flat, &[], Timeframe::H1, 0, 2);
        assert_eq!((m.sharpe, m.sortino, m.max_drawdown), (0.0, 0.0, 0.0));
        assert_eq!(
            (m.win_rate, m.profit_factor, m.avg_win, m.avg_loss),
            (0.0, 0.0, 0.0, 0.0)
        );
        assert_eq!((m.total_return, m.cagr, m.exposure), (0.0, 0.0, 0.0));

        // Only winners: an unbounded profit factor, not a division by zero.
        let up = [(0, 50.0), (h, 55.0)];
        let m = metrics(&up, &[trade(5, 0)], Timeframe::H1, 1, 1);
        assert_eq!(m.profit_factor, f64::INFINITY);
        assert_eq!((m.win_rate, m.avg_loss), (1.0, 0.0));
        // One return only: no sample deviation, no losing return.
        assert_eq!((m.sharpe, m.sortino), (0.0, 0.0));

        // Wiped out: CAGR is −100 %, and a zero-equity point starts no return.
        let gone = [(0, 50.0), (h, 0.0), (2 * h, 0.0)];
        let m = metrics(&gone, &[trade(-50, 0)], Timeframe::H1, 1, 2);
        assert_eq!((m.cagr, m.max_drawdown, m.total_return), (-1.0, 1.0, -1.0));
        // One return of −1 over a downside deviation of 1.
        assert_eq!(m.sortino, -f64::sqrt(365.25 * 24.0));
    }
}
