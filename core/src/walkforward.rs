//! Walk-forward optimisation: choose a strategy's parameters on each in-sample window, apply the
//! winner to the out-of-sample window that follows, and stitch the out-of-sample results.
//!
//! Windows roll by `step`; each is `in_sample` fraction in-sample and the rest (one `step`)
//! out-of-sample: `--in-sample 0.7 --step 30d` scores 70 days, then trades the next 30 blind.
//!
//! How it stays fast without a second implementation of any rule: every parameter set is
//! backtested **once** over the whole file with the live jobs' code ([`backtest::run_series`]),
//! and each in-sample window is scored on its slice of that run (indicators warm, positions
//! carried across the window edge as they would be live). Each window's winner is then run
//! **fresh** over its out-of-sample window — flat at the start (warmed up on the candles before it,
//! as a live job would be), positions closed at the end — so no out-of-sample figure ever saw the
//! data that chose it. Runs are spread over worker threads (`jobs`, default: every core).

use crate::backtest::{
    self, BacktestError, BacktestOptions, Metrics, Progress, RunResult, RunSpec,
};
use crate::data::{self, CandleSeries};
use crate::domain::{Symbol, Timeframe, TradeRecord};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(thiserror::Error, Debug)]
pub enum WalkForwardError {
    #[error(transparent)]
    Backtest(#[from] BacktestError),
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error("{0}")]
    Setup(String),
}

/// What the optimiser maximises on each in-sample window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Objective {
    Sharpe,
    Sortino,
    Return,
    /// CAGR over max drawdown.
    Calmar,
    ProfitFactor,
}

impl Objective {
    pub const NAMES: [&'static str; 5] = ["sharpe", "sortino", "return", "calmar", "profit_factor"];

    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "sharpe" => Objective::Sharpe,
            "sortino" => Objective::Sortino,
            "return" => Objective::Return,
            "calmar" => Objective::Calmar,
            "profit_factor" => Objective::ProfitFactor,
            _ => {
                return Err(format!(
                    "unknown objective `{s}` (valid: {})",
                    Self::NAMES.join(", ")
                ))
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Objective::Sharpe => "sharpe",
            Objective::Sortino => "sortino",
            Objective::Return => "return",
            Objective::Calmar => "calmar",
            Objective::ProfitFactor => "profit_factor",
        }
    }

    /// The score of `m`; a window spent entirely flat scores below any that held a position,
    /// so an idle parameter set never wins by doing nothing.
    pub fn score(self, m: &Metrics) -> f64 {
        if m.trades == 0 && m.exposure == 0.0 {
            return f64::NEG_INFINITY;
        }
        let v = match self {
            Objective::Sharpe => m.sharpe,
            Objective::Sortino => m.sortino,
            Objective::Return => m.total_return,
            Objective::Calmar => {
                if m.max_drawdown > 0.0 {
                    m.cagr / m.max_drawdown
                } else {
                    m.cagr
                }
            }
            Objective::ProfitFactor => m.profit_factor,
        };
        if v.is_nan() {
            f64::NEG_INFINITY
        } else {
            v
        }
    }
}

/// One `--grid key=v1,v2,…` axis.
#[derive(Clone, Debug, PartialEq)]
pub struct GridAxis {
    pub key: String,
    pub values: Vec<toml::Value>,
}

impl GridAxis {
    /// Parse `key=v1,v2,…`; values are TOML scalars (integers, floats, booleans, else strings).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (key, vals) = s
            .split_once('=')
            .ok_or_else(|| format!("--grid {s}: expected key=v1,v2,…"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("--grid {s}: the parameter name is empty"));
        }
        let mut values = Vec::new();
        for v in vals.split(',') {
            let v = v.trim();
            if v.is_empty() {
                return Err(format!("--grid {s}: an empty value in the list"));
            }
            let parsed = if let Ok(i) = v.parse::<i64>() {
                toml::Value::Integer(i)
            } else if let Ok(f) = v.parse::<f64>() {
                toml::Value::Float(f)
            } else if let Ok(b) = v.parse::<bool>() {
                toml::Value::Boolean(b)
            } else {
                toml::Value::String(v.to_string())
            };
            if values.contains(&parsed) {
                return Err(format!("--grid {s}: `{v}` is listed twice"));
            }
            values.push(parsed);
        }
        Ok(GridAxis {
            key: key.to_string(),
            values,
        })
    }
}

/// Every combination of the axes laid over `base` (the configured parameters), in a stable order
/// (the last axis varies fastest).
pub fn grid_points(base: &toml::Table, axes: &[GridAxis]) -> Vec<toml::Table> {
    let mut points = vec![base.clone()];
    for axis in axes {
        points = points
            .into_iter()
            .flat_map(|p| {
                axis.values.iter().map(move |v| {
                    let mut q = p.clone();
                    q.insert(axis.key.clone(), v.clone());
                    q
                })
            })
            .collect();
    }
    points
}

/// `30d`, `12h`, `2w`, `90m` → milliseconds.
pub fn parse_span(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}`: add a unit (m, h, d or w), e.g. 30d"))?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| format!("`{s}`: expected a whole number then a unit, e.g. 30d"))?;
    let unit_ms = match unit {
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use m, h, d or w)")),
    };
    if n <= 0 {
        return Err(format!("`{s}`: the span must be positive"));
    }
    Ok(n * unit_ms)
}

#[derive(Clone, Debug)]
pub struct WalkForwardOptions {
    /// Fees, slippage, equity, risk switch, config and timeframe; its strategy and data lists are
    /// ignored in favour of `strategy` and `data`.
    pub backtest: BacktestOptions,
    pub strategy: String,
    pub data: PathBuf,
    /// Fraction of each window that is in-sample (0 < x < 1).
    pub in_sample: f64,
    /// Out-of-sample length and roll step, in ms.
    pub step_ms: i64,
    pub grid: Vec<GridAxis>,
    pub objective: Objective,
    /// Worker threads; 0 = every core.
    pub jobs: usize,
    /// Where parameter sets and windows done are reported (`None`: nobody watches).
    pub progress: Option<crate::progress::Reporter>,
}

/// One window's verdict.
#[derive(Clone, Debug)]
pub struct Window {
    pub index: usize,
    pub is_start: i64,
    pub is_end: i64,
    pub oos_start: i64,
    pub oos_end: i64,
    /// Index into [`WalkForwardResult::points`] of the winner.
    pub best: usize,
    pub is_score: f64,
    pub is_metrics: Metrics,
    pub oos_metrics: Metrics,
    pub oos_trades: Vec<TradeRecord>,
}

#[derive(Clone, Debug)]
pub struct WalkForwardResult {
    pub strategy: String,
    pub symbol: Symbol,
    pub timeframe: Timeframe,
    pub candles: usize,
    pub gaps: usize,
    /// The parameter sets tried (full parameter tables).
    pub points: Vec<toml::Table>,
    pub windows: Vec<Window>,
    /// Out-of-sample equity, each window's run chained onto the last: (time, equity).
    pub stitched: Vec<(i64, f64)>,
    pub oos_metrics: Metrics,
    pub threads: usize,
    pub job_errors: Vec<String>,
}

/// The windows over candles whose closes span `[t0, t1]`: (is_start, is_end, oos_end), with
/// the in-sample length rounded to whole candles of `tf_ms`.
pub fn windows(t0: i64, t1: i64, in_sample: f64, step: i64, tf_ms: i64) -> Vec<(i64, i64, i64)> {
    let candles = (step as f64 * in_sample / (1.0 - in_sample) / tf_ms as f64).round() as i64;
    let is_len = candles.max(1) * tf_ms;
    let mut out = Vec::new();
    let mut start = t0;
    while start + is_len < t1 {
        let is_end = start + is_len;
        out.push((start, is_end, (is_end + step).min(t1)));
        start += step;
    }
    out
}

/// The part of a run's equity curve in `[from, to]` (times are candle closes), its trades
/// (closed in `(from, to]`) and metrics.
fn slice_metrics(run: &RunResult, from: i64, to: i64) -> Metrics {
    // The curve's first point is the starting equity; `exposed[i]` goes with `equity[i + 1]`.
    let lo = run.equity.partition_point(|p| p.0 < from);
    let hi = run.equity.partition_point(|p| p.0 <= to);
    if hi <= lo {
        return Metrics::default();
    }
    let curve = &run.equity[lo..hi];
    let exposed = &run.exposed[lo.saturating_sub(1)..hi.saturating_sub(1).min(run.exposed.len())];
    let trades: Vec<TradeRecord> = run
        .trades
        .iter()
        .filter(|t| t.exit_time > from && t.exit_time <= to)
        .cloned()
        .collect();
    backtest::metrics(
        curve,
        &trades,
        run.timeframe,
        exposed.iter().filter(|x| **x).count(),
        exposed.len(),
    )
}

/// Run `f` over `items` on `threads` workers (each with its own single-thread runtime), keeping
/// the input order in the output.
fn parallel<T, R, F>(items: Vec<T>, threads: usize, f: F) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn(T) -> R + Sync,
{
    let n = items.len();
    let queue = Mutex::new(items.into_iter().enumerate().collect::<Vec<_>>());
    let out: Mutex<Vec<Option<R>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1).min(n.max(1)) {
            scope.spawn(|| loop {
                let next = queue.lock().expect("work queue").pop();
                let Some((i, item)) = next else { break };
                let r = f(item);
                out.lock().expect("results")[i] = Some(r);
            });
        }
    });
    out.into_inner()
        .expect("results")
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect()
}

fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a single-thread runtime")
        .block_on(fut)
}

/// What every worker adds its progress to: candles evaluated (for the percentage), parameter
/// sets backtested and windows run out of sample; reported as one line.
struct Tally {
    label: String,
    to: crate::progress::Reporter,
    candles: AtomicUsize,
    /// Candles of all runs together, and every how many of them to report.
    total: usize,
    stride: usize,
    sets: AtomicUsize,
    set_total: usize,
    windows: AtomicUsize,
    window_total: usize,
}

impl Tally {
    fn candle(&self) {
        let n = self.candles.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(self.stride) {
            self.report();
        }
    }

    fn set_done(&self) {
        self.sets.fetch_add(1, Ordering::Relaxed);
        self.report();
    }

    fn window_done(&self) {
        self.windows.fetch_add(1, Ordering::Relaxed);
        self.report();
    }

    fn report(&self) {
        use crate::progress::{Count, ProgressLine};
        let counts = [
            Count {
                what: "parameter sets",
                done: self.sets.load(Ordering::Relaxed),
                total: self.set_total,
            },
            Count {
                what: "windows",
                done: self.windows.load(Ordering::Relaxed),
                total: self.window_total,
            },
        ];
        self.to.show(&ProgressLine {
            label: &self.label,
            counts: &counts,
            fraction: self.candles.load(Ordering::Relaxed) as f64 / self.total.max(1) as f64,
        });
    }
}

pub fn run(opts: &WalkForwardOptions) -> Result<WalkForwardResult, WalkForwardError> {
    if !(opts.in_sample > 0.0 && opts.in_sample < 1.0) {
        return Err(WalkForwardError::Setup(format!(
            "--in-sample {}: must be a fraction strictly between 0 and 1 (e.g. 0.7)",
            opts.in_sample
        )));
    }
    let series = Arc::new(data::load_csv(&opts.data)?);
    let symbol = data::symbol_from_filename(&opts.data).ok_or_else(|| {
        WalkForwardError::Setup(format!(
            "cannot tell the symbol from the file name {}",
            opts.data.display()
        ))
    })?;
    let configured = opts
        .backtest
        .config
        .as_ref()
        .and_then(|c| c.strategy(&opts.strategy));
    let base = configured.map(|s| s.params.clone()).unwrap_or_default();
    for axis in &opts.grid {
        if opts.grid.iter().filter(|a| a.key == axis.key).count() > 1 {
            return Err(WalkForwardError::Setup(format!(
                "--grid {}: the parameter is given twice",
                axis.key
            )));
        }
    }
    let points = grid_points(&base, &opts.grid);
    // Every point must build before any time is spent: a typo fails now, naming the key.
    for p in &points {
        crate::strategy::build(&opts.strategy, p, "--grid").map_err(|e| {
            WalkForwardError::Setup(format!(
                "{} with {}: {e}",
                opts.strategy,
                show_params(p, &opts.grid)
            ))
        })?;
    }
    let tf = opts
        .backtest
        .timeframe
        .or(configured.map(|s| s.timeframe))
        .unwrap_or(series.timeframe);
    if tf < series.timeframe {
        return Err(WalkForwardError::Setup(format!(
            "{}: {} candles cannot be evaluated at the finer {tf}",
            opts.data.display(),
            series.timeframe
        )));
    }
    let eval = if tf == series.timeframe {
        series.candles.clone()
    } else {
        data::resample(&series.candles, series.timeframe, tf, true)
    };
    // With `--timerange`, windows roll over its candles only; the backtests still warm up on
    // the candles before it.
    let eval = match &opts.backtest.range {
        Some(range) => {
            let sel = range
                .select(&eval, None)
                .map_err(|e| BacktestError::from(e.in_file(&opts.data)))?;
            &eval[sel.start..sel.end]
        }
        None => &eval[..],
    };
    let eval_candles = eval.len();
    let (Some(first), Some(last)) = (eval.first(), eval.last()) else {
        return Err(WalkForwardError::Setup(format!(
            "{}: no candles",
            opts.data.display()
        )));
    };
    // Window edges fall on candle boundaries of the evaluated timeframe.
    let (t0, t1) = (first.open_time, last.open_time + tf.millis());
    if opts.step_ms % tf.millis() != 0 {
        return Err(WalkForwardError::Setup(format!(
            "--step: {} ms is not a whole number of {tf} candles",
            opts.step_ms
        )));
    }
    let wins = windows(t0, t1, opts.in_sample, opts.step_ms, tf.millis());
    if wins.is_empty() {
        return Err(WalkForwardError::Setup(format!(
            "{}: {:.1} days of candles hold no complete in-sample window of {:.1} days; shorten --step or --in-sample",
            opts.data.display(),
            (t1 - t0) as f64 / 86_400_000.0,
            opts.step_ms as f64 * opts.in_sample / (1.0 - opts.in_sample) / 86_400_000.0
        )));
    }
    let threads = if opts.jobs == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.jobs
    };
    let mut bt = opts.backtest.clone();
    bt.timeframe = Some(tf);
    bt.progress = None;

    let oos_candles: usize = wins
        .iter()
        .map(|(_, is_end, oos_end)| ((oos_end - is_end) / tf.millis()) as usize)
        .sum();
    let total = points.len() * eval_candles + oos_candles;
    let tally = opts.progress.as_ref().map(|to| {
        Arc::new(Tally {
            label: format!("walk-forward {} {symbol} {tf}", opts.strategy),
            to: to.clone(),
            candles: AtomicUsize::new(0),
            total,
            stride: crate::progress::stride(total),
            sets: AtomicUsize::new(0),
            set_total: points.len(),
            windows: AtomicUsize::new(0),
            window_total: wins.len(),
        })
    });
    let (windows, job_errors) = optimise(
        opts,
        &bt,
        &series,
        &symbol,
        &points,
        &wins,
        threads,
        tally.as_ref(),
    )?;

    // Chain the out-of-sample runs: each starts from where the last one ended.
    let start_equity = backtest::f(opts.backtest.equity);
    let mut stitched = vec![(wins[0].1, start_equity)];
    let mut all_trades = Vec::new();
    for (w, curve) in &windows {
        let scale = stitched.last().map_or(start_equity, |p| p.1) / start_equity;
        stitched.extend(curve.iter().skip(1).map(|&(t, e)| (t, e * scale)));
        all_trades.extend(w.oos_trades.iter().cloned());
    }
    let exposure_num: f64 = windows
        .iter()
        .map(|(w, c)| w.oos_metrics.exposure * (c.len().saturating_sub(1)) as f64)
        .sum();
    let samples: usize = windows.iter().map(|(_, c)| c.len().saturating_sub(1)).sum();
    let mut oos_metrics = backtest::metrics(&stitched, &all_trades, tf, 0, 0);
    oos_metrics.exposure = if samples == 0 {
        0.0
    } else {
        exposure_num / samples as f64
    };
    Ok(WalkForwardResult {
        strategy: opts.strategy.clone(),
        symbol,
        timeframe: tf,
        candles: eval_candles,
        gaps: series.gaps.len(),
        points,
        windows: windows.into_iter().map(|(w, _)| w).collect(),
        stitched,
        oos_metrics,
        threads,
        job_errors,
    })
}

type Scored = (Vec<(Window, Vec<(i64, f64)>)>, Vec<String>);

#[allow(clippy::too_many_arguments)]
fn optimise(
    opts: &WalkForwardOptions,
    bt: &BacktestOptions,
    series: &Arc<CandleSeries>,
    symbol: &Symbol,
    points: &[toml::Table],
    wins: &[(i64, i64, i64)],
    threads: usize,
    tally: Option<&Arc<Tally>>,
) -> Result<Scored, WalkForwardError> {
    let progress = tally.map(|t| {
        let t = t.clone();
        Progress::Tick(Arc::new(move || t.candle()))
    });
    // 1. Every parameter set once over the whole file.
    let full = parallel((0..points.len()).collect(), threads, |i| {
        let spec = RunSpec {
            params: Some(&points[i]),
            window: None,
            progress: progress.as_ref(),
            funding: None,
        };
        let r = block_on(backtest::run_series(
            bt,
            &opts.data,
            series,
            symbol,
            &opts.strategy,
            &spec,
        ));
        tally.inspect(|t| t.set_done());
        r
    })
    .into_iter()
    .collect::<Result<Vec<RunResult>, _>>()?;
    let mut job_errors: Vec<String> = full
        .iter()
        .flat_map(|r| r.job_errors.iter().cloned())
        .collect();

    // 2. Score each in-sample window; the first best wins ties (grid order).
    let picks: Vec<(usize, f64, Metrics)> = wins
        .iter()
        .map(|&(is_start, is_end, _)| {
            let mut best = (0usize, f64::NEG_INFINITY, Metrics::default());
            for (i, r) in full.iter().enumerate() {
                let m = slice_metrics(r, is_start, is_end);
                let s = opts.objective.score(&m);
                if i == 0 || s > best.1 {
                    best = (i, s, m);
                }
            }
            best
        })
        .collect();

    // 3. Each winner, fresh, over its out-of-sample window.
    let oos = parallel((0..wins.len()).collect(), threads, |k| {
        let (_, is_end, oos_end) = wins[k];
        // Windows are in close times and the run selects candles by open time: the candles
        // opening in [is_end, oos_end) are exactly those closing in (is_end, oos_end].
        let spec = RunSpec {
            params: Some(&points[picks[k].0]),
            window: Some((is_end, oos_end)),
            progress: progress.as_ref(),
            funding: None,
        };
        let r = block_on(backtest::run_series(
            bt,
            &opts.data,
            series,
            symbol,
            &opts.strategy,
            &spec,
        ));
        tally.inspect(|t| t.window_done());
        r
    })
    .into_iter()
    .collect::<Result<Vec<RunResult>, _>>()?;
    let mut out = Vec::with_capacity(wins.len());
    for (k, (run, (best, is_score, is_metrics))) in oos.into_iter().zip(picks).enumerate() {
        let (is_start, is_end, oos_end) = wins[k];
        job_errors.extend(run.job_errors.iter().cloned());
        out.push((
            Window {
                index: k,
                is_start,
                is_end,
                oos_start: is_end,
                oos_end,
                best,
                is_score,
                is_metrics,
                oos_metrics: run.metrics.clone(),
                oos_trades: run.trades.clone(),
            },
            run.equity,
        ));
    }
    Ok((out, job_errors))
}

/// `fast=12 slow=26` for the grid keys of `p`.
pub fn show_params(p: &toml::Table, axes: &[GridAxis]) -> String {
    axes.iter()
        .map(|a| {
            let v = p.get(&a.key).map_or("?".to_string(), |v| match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            format!("{}={v}", a.key)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The windows as CSV: one row per window with its dates, winner and in/out-of-sample figures.
pub fn windows_csv(r: &WalkForwardResult, axes: &[GridAxis]) -> String {
    let mut s = String::from("window,is_start,is_end,oos_start,oos_end");
    for a in axes {
        s.push(',');
        s.push_str(&a.key);
    }
    s.push_str(",is_score,is_return,is_sharpe,oos_return,oos_sharpe,oos_max_dd,oos_trades\n");
    for w in &r.windows {
        s.push_str(&format!(
            "{},{},{},{},{}",
            w.index + 1,
            day(w.is_start),
            day(w.is_end),
            day(w.oos_start),
            day(w.oos_end)
        ));
        for a in axes {
            let v = r.points[w.best]
                .get(&a.key)
                .map_or(String::new(), |v| match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
            s.push(',');
            s.push_str(&v);
        }
        s.push_str(&format!(
            ",{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{}\n",
            w.is_score,
            w.is_metrics.total_return,
            w.is_metrics.sharpe,
            w.oos_metrics.total_return,
            w.oos_metrics.sharpe,
            w.oos_metrics.max_drawdown,
            w.oos_metrics.trades
        ));
    }
    s
}

/// `YYYY-MM-DD HH:MM` (UTC).
pub fn day(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn spans_parse_with_units_and_reject_nonsense() {
        assert_eq!(parse_span("30d"), Ok(30 * DAY));
        assert_eq!(parse_span("12h"), Ok(12 * 3_600_000));
        assert_eq!(parse_span("2w"), Ok(14 * DAY));
        assert!(parse_span("30").unwrap_err().contains("add a unit"));
        assert!(parse_span("30y").unwrap_err().contains("unknown unit `y`"));
        assert!(parse_span("0d").unwrap_err().contains("positive"));
    }

    #[test]
    fn grid_values_are_typed_and_combined_last_axis_fastest() {
        let a = GridAxis::parse("fast=5,10").unwrap();
        let b = GridAxis::parse("mode=x, 0.5 ,true").unwrap();
        assert_eq!(
            b.values,
            vec![
                toml::Value::String("x".into()),
                toml::Value::Float(0.5),
                toml::Value::Boolean(true)
            ]
        );
        let mut base = toml::Table::new();
        base.insert("slow".into(), toml::Value::Integer(30));
        let pts = grid_points(&base, &[a.clone(), b.clone()]);
        assert_eq!(pts.len(), 6);
        assert_eq!(pts[0]["fast"], toml::Value::Integer(5));
        assert_eq!(pts[1]["mode"], toml::Value::Float(0.5));
        assert_eq!(pts[3]["fast"], toml::Value::Integer(10));
        assert!(pts.iter().all(|p| p["slow"] == toml::Value::Integer(30)));
        assert!(GridAxis::parse("fast").unwrap_err().contains("key=v1"));
        assert!(GridAxis::parse("fast=5,,6")
            .unwrap_err()
            .contains("empty value"));
        assert!(GridAxis::parse("fast=5,5")
            .unwrap_err()
            .contains("listed twice"));
    }

    #[test]
    fn windows_roll_by_the_step_and_the_last_one_is_cut_at_the_data_end() {
        // 100 days, 70/30 split of a 30-day step: in-sample 70 days.
        let w = windows(0, 100 * DAY, 0.7, 30 * DAY, 3_600_000);
        assert_eq!(w, vec![(0, 70 * DAY, 100 * DAY)]);
        let w = windows(0, 200 * DAY, 0.7, 30 * DAY, 3_600_000);
        assert_eq!(
            w,
            vec![
                (0, 70 * DAY, 100 * DAY),
                (30 * DAY, 100 * DAY, 130 * DAY),
                (60 * DAY, 130 * DAY, 160 * DAY),
                (90 * DAY, 160 * DAY, 190 * DAY),
                (120 * DAY, 190 * DAY, 200 * DAY),
            ]
        );
        // Out-of-sample windows tile the data after the first in-sample window, no overlap.
        for pair in w.windows(2) {
            assert_eq!(pair[0].2, pair[1].1);
        }
        assert!(windows(0, 60 * DAY, 0.7, 30 * DAY, 3_600_000).is_empty());
    }

    #[test]
    fn objectives_rank_and_an_idle_set_never_wins() {
        // A distinct value per figure, so an objective reading the wrong one fails.
        let m = Metrics {
            trades: 3,
            exposure: 0.5,
            sharpe: 1.5,
            sortino: 2.5,
            total_return: 0.35,
            profit_factor: 1.25,
            cagr: 0.2,
            max_drawdown: 0.1,
            ..Metrics::default()
        };
        assert_eq!(Objective::Sharpe.score(&m), 1.5);
        assert_eq!(Objective::Sortino.score(&m), 2.5);
        assert_eq!(Objective::Return.score(&m), 0.35);
        assert_eq!(Objective::ProfitFactor.score(&m), 1.25);
        assert!((Objective::Calmar.score(&m) - 2.0).abs() < 1e-12);
        // No drawdown: Calmar is the CAGR itself, not a division by zero.
        let smooth = Metrics {
            max_drawdown: 0.0,
            ..m.clone()
        };
        assert_eq!(Objective::Calmar.score(&smooth), 0.2);
        // An undefined figure ranks last rather than poisoning the comparison.
        let undefined = Metrics {
            sharpe: f64::NAN,
            ..m.clone()
        };
        assert_eq!(Objective::Sharpe.score(&undefined), f64::NEG_INFINITY);
        for name in Objective::NAMES {
            assert_eq!(Objective::parse(name).map(Objective::name), Ok(name));
        }
        let idle = Metrics::default();
        assert_eq!(Objective::Sharpe.score(&idle), f64::NEG_INFINITY);
        assert!(Objective::parse("sharp")
            .unwrap_err()
            .contains("sharpe, sortino"));
    }

    #[test]
    fn parallel_keeps_the_input_order() {
        let out = parallel((0..50).collect(), 3, |i: usize| i * 2);
        assert_eq!(out, (0..50).map(|i| i * 2).collect::<Vec<_>>());
    }
}
