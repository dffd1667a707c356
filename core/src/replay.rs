//! Replay: the live jobs over recorded candles. A simulated clock walks the data minute by minute;
//! `evaluate` runs a few seconds after every candle close of each configured timeframe and
//! `sync_with_history` (the sync, leaving an equity point per 15 minutes for `albra report`) every simulated 60 s, against the paper exchange and a fresh store the caller opens (the CLI: an SQLite file).
//! Nothing here decides anything: it only drives the same [`Engine`] the scheduled jobs run.

use crate::config::Config;
use crate::data::{self, CandleSeries};
use crate::domain::{AccountId, Notional, Symbol, Timeframe, TradeRecord};
use crate::jobs::{AccountRuntime, Engine, EngineTiming, JobReport, Sizing};
use crate::paper::{
    MarketData, OrderJournal, PaperConfig, PaperExchange, RecordedMarket, ORDERS_CSV_HEADER,
};
use crate::ports::{Clock, Exchange, Notifier, SimClock, StateStore};
use crate::state::StateRepo;
use rust_decimal::Decimal;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(thiserror::Error, Debug)]
pub enum ReplayError {
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error("{0}")]
    Setup(String),
    /// `--timerange` holds no candle of the file.
    #[error(transparent)]
    Range(#[from] crate::timerange::RangeError),
}

pub struct ReplayOptions {
    pub data: PathBuf,
    /// Symbol of the data; by default from the file name (`BTCUSDT-perp-15m.csv`).
    pub symbol: Option<Symbol>,
    pub config: Config,
    /// Run the jobs over the minutes of the candles opening in this range only. The jobs read
    /// their `history` from the candles before it, as a run over the whole file does at the
    /// same candle; positions start flat.
    pub range: Option<crate::timerange::TimeRange>,
    /// Where minutes and candles done are reported (`None`: nobody watches).
    pub progress: Option<crate::progress::Reporter>,
}

/// What a replay did.
#[derive(Debug, Clone)]
pub struct ReplaySummary {
    pub symbol: Symbol,
    pub timeframe: Timeframe,
    pub candles: usize,
    pub gaps: usize,
    pub evaluations: usize,
    pub syncs: usize,
    pub orders_placed: u32,
    pub errors: Vec<String>,
    pub trades: Vec<TradeRecord>,
    pub open_positions: usize,
    pub initial_equity: Notional,
    pub final_equity: Notional,
    /// Largest fall of equity from its running peak, as a fraction.
    pub max_drawdown: f64,
    pub fees: Notional,
    /// Every order each account's paper exchange was sent (`--orders-out`).
    pub orders: Vec<(AccountId, OrderJournal)>,
    /// Job time (ms) of the last minute replayed: the stored history ends there.
    pub end_time: i64,
}

impl ReplaySummary {
    /// Every order as CSV ([`ORDERS_CSV_HEADER`]), each labelled with its account.
    pub fn orders_csv(&self) -> String {
        let mut s = String::from(ORDERS_CSV_HEADER);
        for (id, j) in &self.orders {
            j.csv_rows(&id.0, &mut s);
        }
        s
    }
    pub fn win_rate(&self) -> f64 {
        if self.trades.is_empty() {
            return 0.0;
        }
        self.trades
            .iter()
            .filter(|t| t.pnl.get() > Decimal::ZERO)
            .count() as f64
            / self.trades.len() as f64
    }
    pub fn total_return(&self) -> f64 {
        if self.initial_equity.is_zero() {
            return 0.0;
        }
        (self.final_equity.to_f64() / self.initial_equity.to_f64()) - 1.0
    }
    /// The closing summary, one item per line.
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "replay {} {}: {} candles ({} gaps), {} evaluations, {} syncs, {} orders\n",
            self.symbol,
            self.timeframe,
            self.candles,
            self.gaps,
            self.evaluations,
            self.syncs,
            self.orders_placed
        ));
        s.push_str(&format!(
            "trades {}  win rate {:.1}%  return {:+.2}%  max drawdown {:.2}%  fees {} USDT\n",
            self.trades.len(),
            self.win_rate() * 100.0,
            self.total_return() * 100.0,
            self.max_drawdown * 100.0,
            self.fees.get().round_dp(2)
        ));
        s.push_str(&format!(
            "equity {} → {} USDT; {} position(s) still open",
            self.initial_equity.get().round_dp(2),
            self.final_equity.get().round_dp(2),
            self.open_positions
        ));
        if !self.errors.is_empty() {
            s.push_str(&format!(
                "\n{} job error(s); first: {}",
                self.errors.len(),
                self.errors[0]
            ));
        }
        s
    }
}

/// Seconds after a close at which the evaluator runs (as the scheduled job does).
const EVAL_DELAY_MS: i64 = 3_000;
/// Offset of the sync within each simulated minute: at its start, before the evaluations of a
/// close, as cron starts the minute's `position-sync` at the close while the evaluator waits out
/// its close delay. An evaluation then decides on what the exchange did up to the close (a stop
/// or take-profit that fired is recorded first), as `albra backtest` and the jobs do.
const SYNC_OFFSET_MS: i64 = 1_000;

/// A replay's progress: minutes walked and candles closed, reported every
/// [`crate::progress::stride`] minutes.
struct Minutes {
    to: crate::progress::Reporter,
    label: String,
    minutes: usize,
    total: usize,
    candles: usize,
    candle_total: usize,
    stride: usize,
}

impl Minutes {
    fn new(
        to: crate::progress::Reporter,
        symbol: &Symbol,
        tf: Timeframe,
        total: i64,
        candle_total: usize,
    ) -> Minutes {
        let total = total.max(0) as usize;
        Minutes {
            to,
            label: format!("replay {symbol} {tf}"),
            minutes: 0,
            total,
            candles: 0,
            candle_total,
            stride: crate::progress::stride(total),
        }
    }

    /// One more minute walked; `closes`: a candle of the data closed at it.
    fn minute(&mut self, closes: bool) {
        use crate::progress::{due, Count, ProgressLine};
        self.minutes += 1;
        self.candles += usize::from(closes);
        if due(self.minutes, self.total, self.stride) {
            self.to.show(&ProgressLine {
                label: &self.label,
                counts: &[
                    Count {
                        what: "minutes",
                        done: self.minutes,
                        total: self.total,
                    },
                    Count {
                        what: "candles",
                        done: self.candles,
                        total: self.candle_total,
                    },
                ],
                fraction: self.minutes as f64 / self.total.max(1) as f64,
            });
        }
    }
}

/// Run a replay over `store`, which must be fresh (the caller picks it: the CLI hands an SQLite
/// file, so the jobs run on the embedded store as they do on EC2); `notifier` receives every
/// notification as it happens.
pub async fn run(
    opts: ReplayOptions,
    notifier: Arc<dyn Notifier>,
    store: Arc<dyn StateStore>,
) -> Result<ReplaySummary, ReplayError> {
    let series: CandleSeries = data::load_csv(&opts.data)?;
    let symbol = match opts.symbol.clone() {
        Some(s) => s,
        None => data::symbol_from_filename(&opts.data).ok_or_else(|| {
            ReplayError::Setup(format!(
                "cannot tell the symbol from the file name {}; pass --symbol",
                opts.data.display()
            ))
        })?,
    };
    let base = series.timeframe;
    // The candles replayed: the file's, or those of `--timerange` (the earlier ones stay in the
    // recorded market, where the jobs read their history).
    let replayed = match &opts.range {
        Some(range) => {
            let sel = range
                .select(&series.candles, None)
                .map_err(|e| e.in_file(&opts.data))?;
            &series.candles[sel.start..sel.end]
        }
        None => &series.candles[..],
    };
    let first = replayed
        .first()
        .map(|c| c.open_time)
        .ok_or_else(|| ReplayError::Setup("no candles".into()))?;
    let end = replayed
        .last()
        .map(|c| c.open_time + base.millis())
        .unwrap_or(first);
    let gaps: Vec<(i64, i64)> = series
        .gaps
        .iter()
        .map(|g| {
            (
                g.after_open_time + base.millis(),
                g.after_open_time + base.millis() * (g.missing_candles as i64 + 1),
            )
        })
        .collect();
    let (n_candles, n_gaps) = (replayed.len(), series.gaps.len());

    // Only the strategies that trade this symbol at a timeframe the data can serve.
    let mut config = opts.config.clone();
    for s in config.strategies.iter_mut() {
        if s.symbols.contains(&symbol) && s.timeframe >= base {
            s.symbols = vec![symbol.clone()];
        } else {
            s.enabled = false;
        }
    }
    let mut tfs: Vec<Timeframe> = config
        .accounts
        .iter()
        .filter(|a| a.enabled)
        .flat_map(|a| {
            config
                .account_strategies(a)
                .map(|s| s.timeframe)
                .collect::<Vec<_>>()
        })
        .collect();
    tfs.sort();
    tfs.dedup();
    if tfs.is_empty() {
        return Err(ReplayError::Setup(format!(
            "no enabled strategy of an enabled account trades {symbol} at {base} or coarser; check config strategies' symbols and timeframe"
        )));
    }

    let clock = Arc::new(SimClock::new(first));
    let market: Arc<dyn MarketData> = Arc::new(RecordedMarket::new(symbol.clone(), series));
    let paper_cfg = PaperConfig {
        initial_balance: Notional::new(config.paper.initial_equity),
        commission_rate: config.paper.commission,
        slippage: config.paper.slippage,
        ..PaperConfig::default()
    };
    let mut accounts = Vec::new();
    let mut exchanges: Vec<(AccountId, Arc<PaperExchange>)> = Vec::new();
    for a in config.accounts.iter().filter(|a| a.enabled) {
        let ex = Arc::new(PaperExchange::new(
            market.clone(),
            clock.clone() as Arc<dyn Clock>,
            paper_cfg.clone(),
        ));
        exchanges.push((a.id.clone(), ex.clone()));
        accounts.push(AccountRuntime {
            config: a.clone(),
            exchange: ex as Arc<dyn Exchange>,
        });
    }
    let engine = Engine {
        config: Arc::new(config),
        repo: StateRepo::new(store),
        accounts,
        notifier,
        timing: EngineTiming::instant(),
        cache: Default::default(),
        sizing: Sizing::Risk,
    };

    let in_gap = |t: i64| gaps.iter().any(|(a, b)| t >= *a && t < *b);
    let mut summary_errors = Vec::new();
    let (mut evaluations, mut syncs, mut orders) = (0usize, 0usize, 0u32);
    let initial: Decimal = Decimal::from(exchanges.len()) * engine.config.paper.initial_equity;
    let mut peak = initial.to_string().parse::<f64>().unwrap_or(0.0);
    let mut max_dd = 0.0f64;
    let mut absorb = |r: JobReport, errors: &mut Vec<String>| {
        orders += r.orders_placed;
        errors.extend(r.error_texts());
    };
    let mut progress = opts
        .progress
        .map(|to| Minutes::new(to, &symbol, base, (end - first) / 60_000, n_candles));
    let mut m = first + 60_000;
    while m <= end {
        if let Some(p) = progress.as_mut() {
            p.minute(m % base.millis() == 0);
        }
        if !in_gap(m - 1) {
            let now = m + SYNC_OFFSET_MS;
            clock.set(now);
            absorb(engine.sync_with_history(now).await, &mut summary_errors);
            syncs += 1;
            for tf in &tfs {
                // A close whose candle the data covers whole: the first, partial one is not
                // served by the recorded market, and evaluating it would only skip it.
                if m % tf.millis() == 0 && m - tf.millis() >= first {
                    let now = m + EVAL_DELAY_MS;
                    clock.set(now);
                    absorb(engine.evaluate(*tf, now).await, &mut summary_errors);
                    evaluations += 1;
                }
            }
            if m % base.millis() == 0 && m < end {
                let mut eq = 0.0;
                for (_, ex) in &exchanges {
                    if let Ok(a) = ex.account().await {
                        eq += a.equity.to_f64();
                    }
                }
                peak = peak.max(eq);
                if peak > 0.0 {
                    max_dd = max_dd.max((peak - eq) / peak);
                }
            }
        }
        m += 60_000;
    }

    let journals = exchanges
        .iter()
        .map(|(id, ex)| (id.clone(), ex.journal()))
        .collect();
    let mut trades = Vec::new();
    let mut open_positions = 0;
    let mut final_equity = Decimal::ZERO;
    for (id, ex) in &exchanges {
        trades.extend(
            engine
                .repo
                .trades(id)
                .await
                .map_err(|e| ReplayError::Setup(e.to_string()))?,
        );
        open_positions += engine
            .repo
            .positions(id)
            .await
            .map_err(|e| ReplayError::Setup(e.to_string()))?
            .iter()
            .filter(|p| p.value.is_open())
            .count();
        final_equity += ex
            .account()
            .await
            .map(|a| a.equity.get())
            .unwrap_or_default();
    }
    trades.sort_by_key(|t| (t.exit_time, t.id.clone()));
    let fees = trades.iter().map(|t| t.fees).sum();
    Ok(ReplaySummary {
        symbol,
        timeframe: base,
        candles: n_candles,
        gaps: n_gaps,
        evaluations,
        syncs,
        orders_placed: orders,
        errors: summary_errors,
        trades,
        open_positions,
        initial_equity: Notional::new(initial),
        final_equity: Notional::new(final_equity),
        max_drawdown: max_dd,
        fees,
        orders: journals,
        end_time: end,
    })
}
