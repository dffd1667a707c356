//! The command line both executables parse: every subcommand, flag and `--help` text.

use albra_core::config;
use albra_core::domain::Timeframe;
use albra_core::timerange::TimeRange;
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "albra",
    version,
    about = "Albra operator CLI: replay, paper/live scheduler, status, positions, config validation",
    long_about = "Albra trades Binance USDⓈ-M perpetual futures with scheduled, stateless jobs.\n\n\
Start here:\n  albra validate                      check config/albra.toml and each account's keys\n  \
albra replay --data data/BTCUSDT-perp-15m.csv   run the live jobs over recorded candles (offline)\n  \
albra run --paper                   local scheduler: live market data, simulated fills\n  \
albra status / albra positions      what the state store holds\n\n\
Environment: ALBRA_CONFIG, ALBRA_STATE, ALBRA_BINANCE_URL (Binance REST base URL), AWS_ENDPOINT_URL (DynamoDB/SSM), \
ALBRA_LOG (log level), ALBRA_ENV_FILE (as --env-file). Keys come from the environment, from --env-file or else \
./.env (BINANCE_API_KEY, BINANCE_SECRET_KEY, SUB1_API_KEY, …; mode 0600), or from SSM.\n\n\
replay, run, status, positions and validate run in albra-ops, installed beside albra (make build builds both); \
the candle-file tools (indicators, backtest, walk-forward, signals) run in albra itself."
)]
pub struct Cli {
    /// Config file [default: config/albra.toml; when it is absent the candle-file tools run on
    /// the built-in defaults]. A file named here or in ALBRA_CONFIG must exist; `none` asks the
    /// tools for the built-in defaults.
    #[arg(long, global = true, env = "ALBRA_CONFIG")]
    pub config: Option<PathBuf>,
    /// State store: a local path (embedded SQLite; default ./state) or dynamodb:TABLE.
    #[arg(long, global = true, env = "ALBRA_STATE")]
    pub state: Option<String>,
    /// Keys file for run and validate (KEY=value lines, readable by its owner only). Without it,
    /// ./.env is read when present; never a parent folder's.
    #[arg(long, global = true, env = "ALBRA_ENV_FILE")]
    pub env_file: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: Command,
}

/// Where a command's config comes from ([`Cli::config_file`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigFile {
    /// Read this file: the one named, or the default one, which exists.
    Read(PathBuf),
    /// The built-in defaults: `--config none`, or (`Some`) the default file is absent.
    BuiltIn { missing_default: Option<PathBuf> },
}

/// `--config none`: the built-in defaults, asked for by name (no file is read).
pub const NO_CONFIG: &str = "none";

impl Cli {
    /// Where the config comes from: a file named with `--config` or `ALBRA_CONFIG` must exist (a
    /// typo never falls back to the defaults in silence); without one the default file is read
    /// when present, else the built-in defaults serve.
    pub fn config_file(&self) -> Result<ConfigFile, String> {
        choose_config(
            self.config.as_deref(),
            &config::default_path(),
            Path::exists,
        )
    }

    /// The config path as named, or the default one (for messages and commands that edit it).
    pub fn config_path(&self) -> PathBuf {
        self.config.clone().unwrap_or_else(config::default_path)
    }
}

/// [`Cli::config_file`] with the file system as `exists`.
pub fn choose_config(
    named: Option<&Path>,
    default: &Path,
    exists: impl Fn(&Path) -> bool,
) -> Result<ConfigFile, String> {
    match named {
        Some(p) if p == Path::new(NO_CONFIG) => Ok(ConfigFile::BuiltIn {
            missing_default: None,
        }),
        Some(p) if exists(p) => Ok(ConfigFile::Read(p.to_path_buf())),
        Some(p) => Err(format!(
            "--config {}: no such file (named by --config or ALBRA_CONFIG; `--config {NO_CONFIG}` runs on the built-in defaults)",
            p.display()
        )),
        None if exists(default) => Ok(ConfigFile::Read(default.to_path_buf())),
        None => Ok(ConfigFile::BuiltIn {
            missing_default: Some(default.to_path_buf()),
        }),
    }
}

/// `--timerange`, shared by the commands over candle files.
#[derive(Args, Clone, Copy, Debug, Default)]
pub struct Range {
    /// Only the candles of these UTC days: START-END as YYYYMMDD-YYYYMMDD, either side may be
    /// empty (20240101-, -20241231); END is inclusive. Earlier candles of the file are still
    /// the strategy's warm-up, so the first candle is decided as in a run over the whole file.
    #[arg(long, value_name = "START-END", allow_hyphen_values = true)]
    pub timerange: Option<TimeRange>,
}

/// How simulated runs (backtest, walk-forward) fill and size.
#[derive(Args)]
pub struct SimArgs {
    /// Commission per fill, as a fraction of notional.
    #[arg(long, default_value = "0.0004")]
    pub fee: rust_decimal::Decimal,
    /// Slippage per market fill, as a fraction of price (against the taker).
    #[arg(long, default_value = "0.0001")]
    pub slippage: rust_decimal::Decimal,
    /// Starting equity (USDT) of each run.
    #[arg(long, default_value = "10000")]
    pub equity: rust_decimal::Decimal,
    /// `off`: all equity per entry (quantity = equity / fill price), no position limit, no
    /// protective stop orders.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub risk: String,
    /// Run the whole evaluation job on every candle. By default a candle on which nothing the
    /// job reads has changed (no fill, no order, no state written) runs only the strategy's
    /// decision on what the previous candle read; the results are identical, this is slower and
    /// there to check that.
    #[arg(long)]
    pub full_jobs: bool,
}

/// How a read command prints its answer.
#[derive(Args, Clone, Copy, Debug, Default)]
pub struct Output {
    /// Print the answer as JSON (the query layer's types, as the dashboard and Telegram read
    /// them) instead of a table.
    #[arg(long)]
    pub json: bool,
}

const REPORT_HELP: &str = "\
Definitions: return = last equity point of the period over its first, minus one; max drawdown = \
largest fall from the running peak over the period, as a fraction of the peak; Sharpe = mean over \
sample standard deviation of the daily returns (each UTC day's last point over the previous one), \
risk-free rate 0, times sqrt(365), and n/a with fewer than two daily returns (so always in a daily \
report); funding = what the trades closed in the period carried (positions still open: not yet); \
API weight = X-MBX-USED-WEIGHT-1M as each equity point recorded it (peak and mean).

Examples:
  albra report --type daily                       yesterday (UTC), every account, as a table
  albra report --type weekly --json               the last seven days as JSON
  albra report --type weekly -o week.html         a page with equity and drawdown charts
  albra report --type daily --on 2025-12-31 --state state/replay   after `make run`";

#[derive(Subcommand)]
pub enum Command {
    /// Drive the evaluator at every candle close and the sync every simulated 60 s over a candle
    /// CSV, with the paper exchange and a fresh embedded store; print notifications and a summary.
    #[command(
        after_help = "Examples:\n  albra replay --data data/BTCUSDT-perp-15m.csv --quiet\n  \
albra replay --data data/BTCUSDT-perp-15m.csv --timerange 20251101-   from November on, the jobs' \
history read from the candles before\n\n\
On a terminal, with --quiet or stdout redirected, a replay longer than a second redraws one \
stderr line: minutes and candles done."
    )]
    Replay {
        /// Candle CSV (`open_time,open,high,low,close,volume`, open_time in ms).
        #[arg(long)]
        data: PathBuf,
        /// Symbol of the data (default: from the file name, e.g. BTCUSDT-perp-15m.csv → BTCUSDT).
        #[arg(long)]
        symbol: Option<String>,
        /// Print only the summary, not every notification.
        #[arg(long)]
        quiet: bool,
        /// Write every order each account's paper exchange was sent as CSV (the columns of
        /// `backtest --orders-out`, labelled by account).
        #[arg(long)]
        orders_out: Option<PathBuf>,
        #[command(flatten)]
        range: Range,
    },
    /// Long-running local scheduler: evaluators a few seconds after each 15m/1h/4h close and the
    /// sync every 60 s. Paper by default; --live trades real money with the accounts' keys.
    Run {
        /// Live public market data, simulated fills (the default).
        #[arg(long, conflicts_with = "live")]
        paper: bool,
        /// Real orders with each account's keys. Refuses to start without them.
        #[arg(long)]
        live: bool,
        /// Run only this account (it must be enabled and, with mode = "single", the main one).
        /// Without it: every enabled account (mode = "multi") or the main one (mode = "single").
        #[arg(long)]
        account: Option<String>,
    },
    /// Equity, drawdown and open positions per account, from the state store.
    Status {
        #[command(flatten)]
        out: Output,
    },
    /// Every tracked position (strategy and MANUAL), from the state store.
    Positions {
        /// Only this account.
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// What the exchange says each account holds (one signed read per account, with its keys),
    /// beside the equity the jobs last recorded.
    Balance {
        /// `all` (the default) or one account id.
        #[arg(default_value = "all")]
        account: String,
        #[command(flatten)]
        out: Output,
    },
    /// Closed-trade figures per account and strategy: trades, win rate, PnL, fees, profit
    /// factor, drawdown of the cumulative PnL.
    Performance {
        /// Only trades closed in the last N days (default: all).
        #[arg(long)]
        days: Option<u32>,
        /// Only this account.
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// A period's report per account and strategy: return, Sharpe, max drawdown (from the equity
    /// the position-sync records every 15 minutes), trades, win rate, PnL, fees, funding and the
    /// API weight used. A table on the terminal, JSON with --json, or a file with -o.
    #[command(after_help = REPORT_HELP)]
    Report {
        /// daily: the last complete UTC day; weekly: the seven complete UTC days before today.
        #[arg(long = "type", value_parser = ["daily", "weekly"])]
        kind: String,
        /// Report as if run on this UTC day (YYYY-MM-DD): the daily report is then the day
        /// before it. For stores that hold past data, e.g. after `make run`.
        #[arg(long)]
        on: Option<String>,
        /// Only this account.
        #[arg(long)]
        account: Option<String>,
        /// Write the report to FILE instead: .html (a self-contained page with equity and
        /// drawdown charts) or .json.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        #[command(flatten)]
        out: Output,
    },
    /// Each account's risk limits beside what it uses of them, and what needs attention.
    RiskCheck {
        /// Only this account.
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// The last run of every job of every account, its outcome and age; stale jobs flagged.
    Health {
        /// Only this account.
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// The strategies this build knows, and which accounts run each.
    ListStrategies {
        #[command(flatten)]
        out: Output,
    },
    /// Stop an account's new entries and exits by signal; the sync keeps every stop on the
    /// exchange. Undo with `resume`.
    Pause {
        /// The account id.
        account: String,
    },
    /// Let a paused account trade again.
    Resume {
        /// The account id.
        account: String,
    },
    /// Make STRATEGY the account's one strategy, in the config file (comments kept). Refused
    /// while the account holds a position of a strategy it would drop.
    SwitchStrategy {
        /// The account id.
        account: String,
        /// A configured strategy name (see list-strategies).
        strategy: String,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run the position sync now for one account or all: record fills, heal drift, place
    /// missing stops. Uses the accounts' keys.
    Sync {
        /// The account id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        account: Option<String>,
        /// Every enabled account.
        #[arg(long)]
        all: bool,
        /// Print where the store and the exchange differ, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Cancel every open order (stops and take-profits included), close every position
    /// reduce-only at market, and pause the account. Asks for confirmation on a terminal.
    EmergencyStop {
        /// The account id, or `all`.
        target: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Print the plan (what would be cancelled and closed) and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check the config and that every enabled account's keys can be read.
    Validate,
    /// Send one message through the configured notifier: printed on stdout, and sent to Telegram
    /// when `notifier.telegram` is on and its credentials are set. For operators' scripts
    /// (infra/ec2/albra-job reports failing and missed runs with it). Exits 1 when Telegram is on
    /// but the message did not reach it. A low one is not sent alone: the next status-report
    /// folds it into its summary.
    Notify {
        /// low, medium, high or critical (each channel's minimum in [notifier] applies).
        #[arg(long, default_value = "high", value_parser = ["low", "medium", "high", "critical"])]
        priority: String,
        /// Short machine-readable kind, e.g. job_failed.
        #[arg(long, default_value = "ops")]
        kind: String,
        /// What the message is about, where a job's notifications name their account.
        #[arg(long, default_value = "ops")]
        account: String,
        /// The message (several words are joined with spaces).
        #[arg(required = true)]
        text: Vec<String>,
    },
    /// Send the status report of the current 30-minute slot (run it every 30 minutes): per
    /// account equity, today's PnL, paused or halted, open positions and whether each stop is
    /// on the exchange, jobs that need attention, the low-priority notifications folded into a
    /// summary and those Telegram did not take in time. Printed on stdout and sent to Telegram.
    #[command(
        long_about = None,
        after_help = "Reads the state store only: no exchange call, no key needed. Once per \
slot: a rerun in the same half hour sends nothing (unless Telegram did not take the first). \
Telegram gets notifier.telegram_budget_secs at most; a slow or down Telegram never makes it \
exit non-zero (the notifications it would have shown wait for the next report). Exits 1 only \
when the state store cannot be read."
    )]
    StatusReport,
    /// Serve the read-only dashboard: every account's equity, drawdown, today's PnL, open
    /// positions with their stops, job health; equity charts, closed trades (CSV), performance
    /// per strategy and a candle chart with the trades marked. Ctrl-C stops.
    #[command(after_help = DASHBOARD_HELP)]
    Dashboard {
        /// Address to listen on. Loopback by default; anything else is plain HTTP that carries
        /// the token, so put TLS (a reverse proxy) in front of it.
        #[arg(long, default_value = "127.0.0.1:5000")]
        listen: std::net::SocketAddr,
        /// Candle CSV files the chart page draws from (e.g. the replay's data), named
        /// SYMBOL-…-TF.csv; repeatable. Without one it asks Binance's public klines.
        #[arg(long = "data")]
        data: Vec<PathBuf>,
    },
    /// The Telegram bot: answer the commands of the allow-listed chats (/status, /pause,
    /// /close_all, … ; /help lists them) through a webhook or a long poll.
    #[command(after_help = TELEGRAM_HELP)]
    Telegram {
        #[command(subcommand)]
        cmd: TelegramCommand,
    },
    /// Compute indicators over a candle CSV and print CSV: `open_time` then one column per
    /// output (`ema_20`, `macd_signal_12_26_9`, …), empty during warm-up.
    #[command(after_help = indicators_help())]
    Indicators {
        /// Candle CSV (`open_time,open,high,low,close,volume`).
        #[arg(long)]
        data: PathBuf,
        /// `NAME[:P1,P2,…]`, repeatable (e.g. --indicator ema:20 --indicator macd:12,26,9).
        #[arg(long = "indicator", required = true)]
        indicators: Vec<String>,
        /// Resample the data to this timeframe first (e.g. 1h from 15m candles).
        #[arg(long)]
        timeframe: Option<Timeframe>,
    },
    /// Backtest strategies over candle files with the live jobs' code: evaluate after every
    /// close, sync, paper fills (next candle's open, stops from highs/lows); metrics per run.
    #[command(after_help = BACKTEST_HELP)]
    Backtest {
        /// Strategy name(s), comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        strategy: Vec<String>,
        /// Candle CSV file(s), comma-separated; the symbol comes from each file name.
        #[arg(long, value_delimiter = ',', required = true)]
        data: Vec<PathBuf>,
        /// Evaluate at this timeframe (resamples 5m/15m input); default: the strategy's
        /// configured timeframe when the config lists it, else the data's own.
        #[arg(long)]
        timeframe: Option<Timeframe>,
        #[command(flatten)]
        range: Range,
        #[command(flatten)]
        sim: SimArgs,
        /// Write every trade as CSV (strategy,symbol,side,entry_time,exit_time,entry_price,
        /// exit_price,qty,pnl,fees,funding,exit_reason).
        #[arg(long)]
        trades_out: Option<PathBuf>,
        /// Write every order each run's paper account was sent as CSV (run,symbol,kind,client_id,
        /// side,qty,reduce_only,close_position,trigger_price,callback_rate,status,avg_price,time).
        #[arg(long)]
        orders_out: Option<PathBuf>,
        /// Write a self-contained HTML report with equity and drawdown charts.
        #[arg(long)]
        report: Option<PathBuf>,
        /// After the summary, one table per dimension (comma-separated, any of month, symbol,
        /// exit, strategy): trades, win rate, PnL, fees and funding per group; months by exit
        /// time, UTC.
        #[arg(long, value_delimiter = ',')]
        breakdown: Vec<albra_core::backtest::Dimension>,
    },
    /// Walk-forward optimisation: pick the best grid point on each in-sample window (by
    /// --objective), trade it blind on the next out-of-sample window, stitch the results.
    ///
    /// Windows roll by --step; each is --in-sample in-sample and one step out-of-sample
    /// (0.7 and 30d: score 70 days, trade the next 30). Every grid point is backtested once over
    /// the whole file with the live jobs' code and scored on each in-sample slice; each winner is
    /// then run fresh (flat, warmed up on earlier candles) over its out-of-sample window.
    #[command(
        name = "walk-forward",
        after_help = "Examples:\n  albra walk-forward --strategy EMA_CROSS --data data/BTCUSDT-spot-1h.csv \\\n    --in-sample 0.7 --step 30d --grid fast=8,12,20 --grid slow=26,50,100 --grid trend=150,200,300\n  \
albra walk-forward --strategy EMA_CROSS --data data/BTCUSDT-spot-1h.csv --timerange 20240101- \\\n    --grid fast=8,12,20   windows over 2024 on, warmed up on the candles before\n\n\
On a terminal, a run longer than a second redraws one stderr line: parameter sets and windows done."
    )]
    WalkForward {
        /// Registered strategy name.
        #[arg(long)]
        strategy: String,
        /// Candle CSV; the symbol comes from the file name.
        #[arg(long)]
        data: PathBuf,
        /// Fraction of each window that is in-sample (0 < x < 1).
        #[arg(long, default_value = "0.7")]
        in_sample: f64,
        /// Out-of-sample length and roll step: a number and m, h, d or w (e.g. 30d, 2w).
        #[arg(long, default_value = "30d")]
        step: String,
        /// `param=v1,v2,…`, repeatable; the grid is every combination. Parameters not listed
        /// keep their configured (or default) values.
        #[arg(long = "grid", required = true)]
        grid: Vec<String>,
        /// What in-sample windows are ranked by: sharpe, sortino, return, calmar, profit_factor.
        #[arg(long, default_value = "sharpe")]
        objective: String,
        /// Evaluate at this timeframe (resamples finer input).
        #[arg(long)]
        timeframe: Option<Timeframe>,
        #[command(flatten)]
        range: Range,
        #[command(flatten)]
        sim: SimArgs,
        /// Worker threads (0 = every core).
        #[arg(long, default_value = "0")]
        jobs: usize,
        /// Write the windows as CSV (dates, winning parameters, in/out-of-sample figures).
        #[arg(long)]
        windows_out: Option<PathBuf>,
        /// Write the stitched out-of-sample equity as CSV (time,equity).
        #[arg(long)]
        equity_out: Option<PathBuf>,
    },
    /// Download closed candles and the funding-rate history of USDⓈ-M perpetuals from Binance's
    /// public futures API into the files the other commands read; a rerun fetches only what the
    /// files lack.
    #[command(after_help = DOWNLOAD_HELP)]
    Download {
        /// Symbol(s), comma-separated (e.g. BTCUSDT,ETHUSDT).
        #[arg(long, value_delimiter = ',', required = true)]
        symbol: Vec<String>,
        /// Candle timeframe: 1m, 5m, 15m, 1h or 4h.
        #[arg(long)]
        timeframe: Timeframe,
        /// First UTC day to download (YYYY-MM-DD).
        #[arg(long, value_parser = utc_day)]
        from: chrono::NaiveDate,
        /// Last UTC day to download, included (YYYY-MM-DD); default: up to the last closed candle.
        #[arg(long, value_parser = utc_day)]
        to: Option<chrono::NaiveDate>,
        /// Folder of the files.
        #[arg(long, default_value = "data")]
        dir: PathBuf,
    },
    /// Print one CSV row per closed candle with a strategy's decision and every condition it
    /// checked (the same decision code the jobs run).
    #[command(
        after_help = "Examples:\n  albra signals --strategy EMA_CROSS --data data/BTCUSDT-perp-15m.csv --actions-only\n  \
albra signals --strategy EMA_CROSS --data data/BTCUSDT-perp-15m.csv --timerange 20251001-20251031"
    )]
    Signals {
        /// Registered strategy name (see `albra signals --help`).
        #[arg(long)]
        strategy: String,
        /// Candle CSV.
        #[arg(long)]
        data: PathBuf,
        /// Resample to this timeframe first (default: the config's timeframe for the strategy,
        /// else the data's own).
        #[arg(long)]
        timeframe: Option<Timeframe>,
        /// Print only candles where the decision is not HOLD.
        #[arg(long)]
        actions_only: bool,
        #[command(flatten)]
        range: Range,
    },
}

const BACKTEST_HELP: &str = "\
Examples:
  albra backtest --strategy EMA_CROSS,TFPE --data data/BTCUSDT-perp-15m.csv --timeframe 1h
  albra backtest --strategy EMA_CROSS --data data/BTCUSDT-perp-15m.csv --timerange 20251001-
  albra --config none backtest --strategy EMA_CROSS --data data/BTCUSDT-spot-1h.csv --risk off

--timerange trades and reports only the candles of its days; the strategy still reads every \
earlier candle of the file, so each candle in the range is decided as in the run over the whole \
file (a position the whole run holds across START is not open here: the range starts flat). \
On a terminal, a run longer than a second redraws one stderr line: candles done.";

const TELEGRAM_HELP: &str = "Needs TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID (environment or .env); \
serve and set-webhook also TELEGRAM_WEBHOOK_SECRET (1-256 of A-Z a-z 0-9 _ -), which Telegram sends \
with every delivery. Only the chats of [telegram] allowed_chat_ids in the config (default: \
TELEGRAM_CHAT_ID) are answered. /close and /close_all ask for a button press that expires \
after 60 s; every command that changes something is recorded in the state store.\n\n\
With a public HTTPS URL (a reverse proxy in front of serve):\n  \
albra telegram serve --listen 127.0.0.1:8081 --path /telegram\n  \
albra telegram set-webhook https://bot.example.com/telegram\n\
Without one:\n  albra telegram poll";

/// `albra telegram …`.
#[derive(Subcommand)]
pub enum TelegramCommand {
    /// Receive Telegram's webhook deliveries over HTTP (put an HTTPS reverse proxy in front).
    /// Each POST must carry the secret in X-Telegram-Bot-Api-Secret-Token (else 401, nothing
    /// done); a body that is not an update is 400.
    Serve {
        /// Address to listen on (loopback by default: the proxy forwards to it).
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: std::net::SocketAddr,
        /// URL path the updates are posted to.
        #[arg(long, default_value = "/telegram")]
        path: String,
    },
    /// Fetch updates with getUpdates (long poll) instead, for a host without a public URL;
    /// Ctrl-C stops. Telegram refuses this while a webhook is set (delete it first).
    Poll,
    /// Register URL as the bot's webhook with the secret token, for messages and button
    /// presses only.
    SetWebhook {
        /// The public https URL Telegram posts updates to.
        url: String,
    },
}

const DASHBOARD_HELP: &str = "\
Access: the pages need the token in ALBRA_DASHBOARD_TOKEN (environment or .env, at least 24 \
characters, e.g. `openssl rand -hex 24`); the browser trades it once for a session cookie \
(HttpOnly, Secure, SameSite=Strict, 12 hours). Without a token it does not start.

It reads the state store only (--state): no order, no key, no write. The overview refreshes \
itself every 30 s; positions are valued at the marks the last position sync recorded. The same \
pages run in AWS Lambda behind a function URL (the `dashboard` function of infra/template.yaml).

Pages: / (overview), /equity, /trades (and /trades.csv), /performance, /chart, /api/status \
(the JSON of `albra status --json`).

Example: albra dashboard --state state/replay --data data/BTCUSDT-perp-15m.csv";

const DOWNLOAD_HELP: &str = "\
Files (in --dir): <SYMBOL>-perp-<TF>.csv with `open_time,open,high,low,close,volume` (the format \
backtest, replay and indicators read) and <SYMBOL>-funding.csv with \
`funding_time,funding_rate,mark_price`; times in ms since the epoch, values as Binance sends them.

Only closed candles are written. When a file exists, only what it lacks is fetched (candles after \
its last one, and before its first when --from is earlier) and the file is replaced whole once \
everything arrived. Gaps in Binance's own data (outages) are listed, never filled. Binance is \
reached at ALBRA_BINANCE_URL, else the config's [binance] base_url, else fapi.binance.com; no \
key is needed. Requests stay under 1000 of the 2400 weight per minute and obey Retry-After.

Examples:
  albra download --symbol BTCUSDT,ETHUSDT --timeframe 15m --from 2024-01-01 --to 2024-06-30
  albra download --symbol BTCUSDT --timeframe 1h --from 2020-01-01      (rerun to bring it up to date)";

/// A `--from`/`--to` value: a UTC day written `YYYY-MM-DD`.
fn utc_day(s: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|e| format!("`{s}` is not a UTC day written YYYY-MM-DD, e.g. 2024-01-01 ({e})"))
}

pub fn indicators_help() -> String {
    format!(
        "Indicators (NAME:PARAMS, defaults in parentheses):\n{}",
        albra_core::indicators::named::catalog_help()
    )
}

impl Command {
    /// The commands over candle files, which `albra` runs itself: no exchange, store or AWS.
    pub fn is_tool(&self) -> bool {
        matches!(
            self,
            Command::Indicators { .. }
                | Command::Signals { .. }
                | Command::Backtest { .. }
                | Command::WalkForward { .. }
        )
    }

    /// The subcommand as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Replay { .. } => "replay",
            Command::Run { .. } => "run",
            Command::Status { .. } => "status",
            Command::Positions { .. } => "positions",
            Command::Balance { .. } => "balance",
            Command::Performance { .. } => "performance",
            Command::Report { .. } => "report",
            Command::RiskCheck { .. } => "risk-check",
            Command::Health { .. } => "health",
            Command::ListStrategies { .. } => "list-strategies",
            Command::Pause { .. } => "pause",
            Command::Resume { .. } => "resume",
            Command::SwitchStrategy { .. } => "switch-strategy",
            Command::Sync { .. } => "sync",
            Command::EmergencyStop { .. } => "emergency-stop",
            Command::Validate => "validate",
            Command::Notify { .. } => "notify",
            Command::StatusReport => "status-report",
            Command::Dashboard { .. } => "dashboard",
            Command::Telegram { .. } => "telegram",
            Command::Indicators { .. } => "indicators",
            Command::Backtest { .. } => "backtest",
            Command::WalkForward { .. } => "walk-forward",
            Command::Signals { .. } => "signals",
            Command::Download { .. } => "download",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_named_config_must_exist_and_only_the_default_may_be_missing() {
        let default = Path::new("config/albra.toml");
        let only = |present: &'static str| move |p: &Path| p == Path::new(present);
        let read = |p: &str| Ok(ConfigFile::Read(PathBuf::from(p)));
        assert_eq!(
            choose_config(Some(Path::new("my.toml")), default, only("my.toml")),
            read("my.toml")
        );
        let err = choose_config(
            Some(Path::new("nope.toml")),
            default,
            only("config/albra.toml"),
        )
        .unwrap_err();
        assert!(err.starts_with("--config nope.toml: no such file"), "{err}");
        assert_eq!(
            choose_config(None, default, only("config/albra.toml")),
            read("config/albra.toml")
        );
        assert_eq!(
            choose_config(None, default, only("elsewhere")),
            Ok(ConfigFile::BuiltIn {
                missing_default: Some(default.to_path_buf())
            })
        );
        assert_eq!(
            choose_config(Some(Path::new("none")), default, only("config/albra.toml")),
            Ok(ConfigFile::BuiltIn {
                missing_default: None
            })
        );
    }

    #[test]
    fn timerange_parses_on_every_command_over_candles() {
        for cmd in ["backtest", "walk-forward", "signals", "replay"] {
            let args = [
                "albra",
                cmd,
                "--strategy",
                "EMA_CROSS",
                "--data",
                "x.csv",
                "--grid",
                "fast=5",
                "--timerange",
                "20240101-",
            ];
            let args: Vec<&str> = match cmd {
                "walk-forward" => args.to_vec(),
                "replay" => [&args[..2], &args[4..6], &args[8..]].concat(),
                _ => [&args[..6], &args[8..]].concat(),
            };
            let cli = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let range = match cli.cmd {
                Command::Backtest { range, .. }
                | Command::WalkForward { range, .. }
                | Command::Signals { range, .. }
                | Command::Replay { range, .. } => range.timerange,
                _ => None,
            };
            assert_eq!(range.map(|r| r.to_string()).as_deref(), Some("20240101-"));
        }
        let bad = Cli::try_parse_from([
            "albra",
            "signals",
            "--strategy",
            "X",
            "--data",
            "x.csv",
            "--timerange",
            "20241231-20240101",
        ]);
        let e = bad.err().unwrap().to_string();
        assert!(
            e.contains("--timerange") && e.contains("END 20240101 is before START 20241231"),
            "{e}"
        );
    }

    #[test]
    fn names_are_the_subcommands_and_tools_are_the_candle_file_commands() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("albra").chain(args.iter().copied()))
                .unwrap()
                .cmd
        };
        let cases: [(&[&str], bool); 25] = [
            (&["replay", "--data", "x.csv"], false),
            (&["run"], false),
            (&["status", "--json"], false),
            (&["positions"], false),
            (&["balance", "sub1"], false),
            (&["performance", "--days", "7"], false),
            (&["risk-check"], false),
            (&["health", "--json"], false),
            (&["list-strategies"], false),
            (&["pause", "main"], false),
            (&["resume", "main"], false),
            (&["switch-strategy", "main", "TFPE", "--dry-run"], false),
            (&["sync", "--all"], false),
            (&["emergency-stop", "all", "--dry-run"], false),
            (&["validate"], false),
            (&["notify", "--priority", "critical", "sync failing"], false),
            (&["status-report"], false),
            (&["dashboard", "--listen", "127.0.0.1:5001"], false),
            (&["report", "--type", "weekly", "-o", "week.html"], false),
            (&["telegram", "serve", "--listen", "127.0.0.1:9000"], false),
            (
                &["indicators", "--data", "x.csv", "--indicator", "ema:20"],
                true,
            ),
            (
                &["backtest", "--strategy", "EMA_CROSS", "--data", "x.csv"],
                true,
            ),
            (
                &[
                    "walk-forward",
                    "--strategy",
                    "EMA_CROSS",
                    "--data",
                    "x.csv",
                    "--grid",
                    "fast=5",
                ],
                true,
            ),
            (
                &["signals", "--strategy", "EMA_CROSS", "--data", "x.csv"],
                true,
            ),
            (
                &[
                    "download",
                    "--symbol",
                    "BTCUSDT,ETHUSDT",
                    "--timeframe",
                    "15m",
                    "--from",
                    "2024-01-01",
                ],
                false,
            ),
        ];
        for (args, tool) in cases {
            let cmd = parse(args);
            assert_eq!(cmd.name(), args[0], "{args:?}");
            assert_eq!(cmd.is_tool(), tool, "{args:?}");
        }
        // Every subcommand clap knows is one of the cases above.
        let known: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        assert_eq!(known.len(), cases.len(), "{known:?}");
    }

    #[test]
    fn download_days_are_checked_and_named() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(
                [
                    "albra",
                    "download",
                    "--symbol",
                    "BTCUSDT",
                    "--timeframe",
                    "1h",
                ]
                .into_iter()
                .chain(args.iter().copied()),
            )
        };
        match parse(&["--from", "2024-01-01", "--to", "2024-06-30"])
            .unwrap()
            .cmd
        {
            Command::Download { from, to, dir, .. } => {
                assert_eq!(from.to_string(), "2024-01-01");
                assert_eq!(to.map(|d| d.to_string()).as_deref(), Some("2024-06-30"));
                assert_eq!(dir, PathBuf::from("data"));
            }
            _ => panic!("not download"),
        }
        for bad in ["2024-13-01", "01/02/2024", "yesterday"] {
            let e = parse(&["--from", bad]).err().expect(bad);
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
            let text = e.to_string();
            assert!(text.contains("--from") && text.contains(bad), "{text}");
        }
    }
}
