//! The commands that reach the exchange, the state stores or AWS: replay, run, status, positions,
//! validate. Only `albra-ops` links this module; it also runs the candle-file tools, so it serves
//! every command on its own.

use crate::operator;
use albra_adapters::app::{self, Mode};
use albra_adapters::binance::BinanceClient;
use albra_adapters::store::open_store;
use albra_adapters::store::SqliteStore;
use albra_adapters::telegram::TelegramNotifier;
use albra_cli::cli::{Cli, Command, ConfigFile, TelegramCommand, NO_CONFIG};
use albra_core::config::Config;
use albra_core::domain::{AccountId, Symbol, Timeframe};
use albra_core::notify::{ConsoleNotifier, Deferring, FanoutNotifier, MinPriority};
use albra_core::ports::{Exchange, Notification, Notifier, Priority, Secrets};
use albra_core::replay::{self, ReplayOptions};
use albra_core::state::StateRepo;
use anyhow::{anyhow, bail, Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Run any command: the candle-file tools as `albra` does, the others with the config loaded (and
/// validated) first and on a multi-threaded runtime (the scheduler's jobs, the SDK's I/O).
pub fn run(cli: Cli) -> ExitCode {
    if cli.cmd.is_tool() {
        return albra_cli::tools::run(cli);
    }
    // Downloading reads the config for Binance's URL only, and needs none.
    let config = cli.config_file();
    if let Command::Download {
        symbol,
        timeframe,
        from,
        to,
        dir,
    } = cli.cmd
    {
        let req = crate::download::request(&symbol, timeframe, from, to, dir);
        return crate::download::main(config, req);
    }
    let mut cfg = match ops_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Command::Run { live, account, .. } = &cli.cmd {
        // The scheduler runs the accounts of `mode` / `--account` only, and only those need
        // the live opt-in.
        let checked = app::select_job_accounts(&mut cfg, account.as_deref()).and_then(|()| {
            if *live {
                app::live_opt_in(&cfg)
            } else {
                Ok(())
            }
        });
        if let Err(e) = checked {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    albra_cli::exit_code(rt.block_on(dispatch(cli, cfg)))
}

/// The config every command here needs: the file named, or the default one. A named file that
/// is missing, `--config none` and a missing default file are all errors naming the path: these
/// commands trade, read stores and send messages, and no built-in default says how.
fn ops_config(cli: &Cli) -> Result<Config, String> {
    match cli.config_file()? {
        ConfigFile::Read(p) => Config::load(&p).map_err(|e| e.to_string()),
        ConfigFile::BuiltIn {
            missing_default: Some(p),
        } => Config::load(&p).map_err(|e| e.to_string()),
        ConfigFile::BuiltIn {
            missing_default: None,
        } => Err(format!(
            "--config {NO_CONFIG}: the built-in defaults serve the candle-file tools only \
             (indicators, signals, backtest, walk-forward); `{}` needs a config file",
            cli.cmd.name()
        )),
    }
}

async fn dispatch(cli: Cli, cfg: Config) -> Result<()> {
    let state = cli.state.clone().unwrap_or_else(|| "./state".to_string());
    let env_file = cli.env_file.as_deref();
    let config_path = cli.config_path();
    match cli.cmd {
        Command::Replay {
            data,
            symbol,
            quiet,
            orders_out,
            range,
        } => {
            let how = ReplayHow {
                quiet,
                orders_out,
                range: range.timerange,
            };
            cmd_replay(cfg, cli.state, data, symbol, how).await
        }
        Command::Run { live, .. } => cmd_run(cfg, &state, live, cli.env_file.as_deref()).await,
        Command::Status { out } => operator::status(cfg, &state, out).await,
        Command::Positions { account, out } => operator::positions(cfg, &state, account, out).await,
        Command::Balance { account, out } => {
            operator::balance(cfg, &state, env_file, &account, out).await
        }
        Command::Performance { days, account, out } => {
            operator::performance(cfg, &state, account, days, out).await
        }
        Command::Report {
            kind,
            on,
            account,
            output,
            out,
        } => {
            let args = operator::ReportArgs {
                kind,
                on,
                account,
                output,
            };
            operator::report(cfg, &state, args, out).await
        }
        Command::RiskCheck { account, out } => {
            operator::risk_check(cfg, &state, account, out).await
        }
        Command::Health { account, out } => operator::health(cfg, &state, account, out).await,
        Command::ListStrategies { out } => operator::list_strategies(&cfg, out),
        Command::Pause { account } => operator::pause(cfg, &state, &account, true).await,
        Command::Resume { account } => operator::pause(cfg, &state, &account, false).await,
        Command::SwitchStrategy {
            account,
            strategy,
            dry_run,
        } => {
            operator::switch_strategy(cfg, &config_path, &state, &account, &strategy, dry_run).await
        }
        Command::Sync {
            account, dry_run, ..
        } => operator::sync(cfg, &state, env_file, account, dry_run).await,
        Command::EmergencyStop {
            target,
            yes,
            dry_run,
        } => operator::emergency_stop(cfg, &state, env_file, &target, yes, dry_run).await,
        Command::Telegram { cmd } => match cmd {
            TelegramCommand::Serve { listen, path } => {
                crate::telegram::serve(cfg, &state, env_file, listen, &path).await
            }
            TelegramCommand::Poll => crate::telegram::poll(cfg, &state, env_file).await,
            TelegramCommand::SetWebhook { url } => {
                crate::telegram::set_webhook(env_file, &url).await
            }
        },
        Command::StatusReport => cmd_status_report(cfg, &state, env_file).await,
        Command::Dashboard { listen, data } => {
            crate::dashboard::serve(cfg, &state, env_file, listen, data).await
        }
        Command::Validate => cmd_validate(cfg, &config_path, cli.env_file.as_deref()).await,
        Command::Notify {
            priority,
            kind,
            account,
            text,
        } => {
            let n = ops_notification(&priority, kind, account, text.join(" "))?;
            cmd_notify(cfg, &state, n, cli.env_file.as_deref()).await
        }
        Command::Download { .. } => bail!("`download` runs before the config is loaded"),
        tool => bail!(
            "`{}` is one of albra's candle-file tools, not run here",
            tool.name()
        ),
    }
}

/// How a replay runs and what it writes, beyond its data and store.
struct ReplayHow {
    quiet: bool,
    orders_out: Option<PathBuf>,
    range: Option<albra_core::timerange::TimeRange>,
}

async fn cmd_replay(
    cfg: Config,
    state: Option<String>,
    data: PathBuf,
    symbol: Option<String>,
    how: ReplayHow,
) -> Result<()> {
    let ReplayHow {
        quiet,
        orders_out,
        range,
    } = how;
    // `--state` names the store as every other command reads it (a directory holds albra.db),
    // so `albra status --state …` finds what the replay left.
    let kept = match state {
        Some(s) => match albra_adapters::store::StoreSpec::parse(&s)? {
            albra_adapters::store::StoreSpec::Sqlite(file) => {
                if file.exists() {
                    bail!("replay needs a fresh store, and {} already holds one; remove it or pick another --state", file.display());
                }
                if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                Some((file, s))
            }
            _ => bail!(
                "replay keeps its state in an embedded SQLite store; --state must be a local path"
            ),
        },
        None => None,
    };
    let inner: Vec<Arc<dyn Notifier>> = if quiet {
        vec![]
    } else {
        vec![Arc::new(ConsoleNotifier)]
    };
    let notifier = Arc::new(FanoutNotifier::new(inner, Priority::Low));
    // A replay's own state directory when none was given, removed when the replay ends however
    // it ends (declared before the store, so dropped after it).
    let scratch;
    let file = match &kept {
        Some((file, _)) => file.clone(),
        None => {
            scratch = tempfile::Builder::new()
                .prefix("albra-replay-")
                .tempdir()
                .context("creating a scratch directory for the replay's store")?;
            scratch.path().join("replay.db")
        }
    };
    let store = SqliteStore::open_fast(file)?;
    // The progress line shares the terminal with the notifications only when they go elsewhere:
    // a line printed on stdout would land in the middle of it.
    let progress = (quiet || !std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .then(albra_cli::progress::Terminal::on_stderr)
        .flatten();
    let started = std::time::Instant::now();
    let summary = replay::run(
        ReplayOptions {
            data,
            symbol: symbol.map(Symbol::new),
            config: cfg,
            range,
            progress: progress
                .as_ref()
                .map(albra_cli::progress::Terminal::reporter),
        },
        notifier,
        Arc::new(store),
    )
    .await;
    albra_cli::progress::finish(&progress);
    let summary = summary?;
    println!("{}", summary.render());
    println!("replayed in {:.1} s", started.elapsed().as_secs_f64());
    if let Some((file, spec)) = &kept {
        // Reports cover whole UTC days before `--on`: the day after the replay's last one
        // reports the week the replay ended with.
        let on = chrono::DateTime::from_timestamp_millis(summary.end_time + 86_400_000)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        println!(
            "state kept in {}: `albra status --state {spec}` (and positions, performance, health) reads it; \
             `albra report --type weekly --on {on} --state {spec}` reports its last week",
            file.display()
        );
    }
    if let Some(p) = orders_out {
        std::fs::write(&p, summary.orders_csv())
            .with_context(|| format!("writing {}", p.display()))?;
        println!("orders written to {}", p.display());
    }
    albra_cli::no_job_errors("replay", &summary.errors)
}

async fn cmd_run(
    cfg: Config,
    state: &str,
    live: bool,
    env_file: Option<&std::path::Path>,
) -> Result<()> {
    use tokio_cron_scheduler::{Job, JobScheduler};
    let mode = if live { Mode::Live } else { Mode::Paper };
    let app = Arc::new(
        app::build(cfg, state, mode, env_file)
            .await
            .map_err(|e| anyhow!("{e}"))?,
    );
    if live {
        // A scheduler that cannot trade must not look as if it runs: one signed read per account.
        for a in &app.engine.accounts {
            a.exchange.account().await.map_err(|e| {
                anyhow!(
                    "account {}: the exchange did not answer a signed read ({e}); not starting",
                    a.config.id
                )
            })?;
        }
    }
    let delay = app.engine.config.jobs.close_delay_secs;
    // One job at a time in this process: evaluations and syncs never interleave their writes.
    let gate = Arc::new(tokio::sync::Mutex::new(()));
    // Repeated failures reach the notifier, successes write heartbeats (see crate::watch).
    let watch = Arc::new(crate::watch::JobWatch::from_env(
        app.engine.notifier.clone(),
    ));
    let sched = JobScheduler::new().await?;
    let tfs: Vec<Timeframe> = {
        let c = &app.engine.config;
        let mut v: Vec<Timeframe> = c
            .accounts
            .iter()
            .filter(|a| a.enabled)
            .flat_map(|a| {
                c.account_strategies(a)
                    .map(|s| s.timeframe)
                    .collect::<Vec<_>>()
            })
            .collect();
        v.sort();
        v.dedup();
        v
    };
    for tf in tfs.clone() {
        // Cron on UTC, at second `delay` after each close; the engine uses the exchange clock.
        let expr = match tf {
            Timeframe::M15 => format!("{delay} 0/15 * * * *"),
            Timeframe::H1 => format!("{delay} 0 * * * *"),
            Timeframe::H4 => format!("{delay} 0 0/4 * * *"),
            other => bail!("timeframe {other} is not scheduled"),
        };
        let (app, gate, watch) = (app.clone(), gate.clone(), watch.clone());
        sched
            .add(Job::new_async(expr.as_str(), move |_id, _l| {
                let (app, gate, watch) = (app.clone(), gate.clone(), watch.clone());
                Box::pin(async move {
                    let _g = gate.lock().await;
                    app.telegram_budget.renew();
                    let now = app.exchange_now().await;
                    let r = app.engine.evaluate(tf, now).await;
                    for l in &r.lines {
                        println!("evaluate {tf}: {l}");
                    }
                    for e in &r.errors {
                        eprintln!("evaluate {tf} error: {e}");
                    }
                    let job = format!("evaluator-{tf}");
                    let first = r.errors.first().map(ToString::to_string);
                    watch.record(&job, first.as_deref(), now).await;
                })
            })?)
            .await?;
    }
    {
        let (app, gate, watch) = (app.clone(), gate.clone(), watch.clone());
        sched
            .add(Job::new_async("30 * * * * *", move |_id, _l| {
                let (app, gate, watch) = (app.clone(), gate.clone(), watch.clone());
                Box::pin(async move {
                    let _g = gate.lock().await;
                    app.telegram_budget.renew();
                    let now = app.exchange_now().await;
                    let r = app.engine.sync_job(now).await;
                    for e in &r.errors {
                        eprintln!("sync error: {e}");
                    }
                    let first = r.errors.first().map(ToString::to_string);
                    watch.record("position-sync", first.as_deref(), now).await;
                })
            })?)
            .await?;
    }
    println!(
        "albra run ({}) started: evaluating {} a few seconds after each close, syncing every 60 s; state {}. Ctrl-C stops.",
        if live { "LIVE — real orders" } else { "paper" },
        tfs.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", "),
        app.engine.repo.describe()
    );
    sched.start().await?;
    tokio::signal::ctrl_c().await?;
    println!("stopping…");
    let mut sched = sched;
    sched.shutdown().await?;
    Ok(())
}

/// A notification of an operator's script, with a fresh event id (each call is its own event).
fn ops_notification(
    priority: &str,
    kind: String,
    account: String,
    text: String,
) -> Result<Notification> {
    let priority = match priority {
        "low" => Priority::Low,
        "medium" => Priority::Medium,
        "high" => Priority::High,
        "critical" => Priority::Critical,
        other => bail!("unknown priority `{other}` (low, medium, high or critical)"),
    };
    let time = chrono::Utc::now().timestamp_millis();
    Ok(Notification {
        event_id: format!("ops:{kind}:{time}:{}", std::process::id()),
        account: AccountId::new(account),
        priority,
        kind,
        text,
        time,
    })
}

/// Send `n` to the console and, when the config turns Telegram on and its credentials are set,
/// to Telegram, each channel at its own minimum priority; a LOW one is kept in `state` for the
/// next status report instead of being sent alone. Unlike the jobs, which carry on when Telegram
/// fails, this fails: its caller (an alerting script) must know the alert did not get through,
/// and says so in the journal.
async fn cmd_notify(
    cfg: Config,
    state: &str,
    n: Notification,
    env_file: Option<&std::path::Path>,
) -> Result<()> {
    let console: Arc<dyn Notifier> = Arc::new(ConsoleNotifier);
    let mut inner: Vec<Arc<dyn Notifier>> = vec![Arc::new(MinPriority::new(
        console,
        cfg.notifier.console_min(),
    ))];
    if cfg.notifier.telegram {
        let secrets = app::default_secrets(env_file).map_err(|e| anyhow!("{e}"))?;
        match secrets.telegram().await {
            Ok(Some(creds)) => {
                let telegram = Arc::new(TelegramNotifier::new(creds).map_err(|e| anyhow!("{e}"))?);
                let store = open_store(state).await?;
                let clock = Arc::new(albra_core::ports::SystemClock);
                let folding = Deferring::folding(telegram, StateRepo::new(store), clock);
                inner.push(Arc::new(MinPriority::new(
                    Arc::new(folding),
                    cfg.notifier.telegram_min(),
                )));
            }
            Ok(None) => eprintln!(
                "warning: notifier.telegram is on but TELEGRAM_BOT_TOKEN / TELEGRAM_CHAT_ID are \
                 not set: console only"
            ),
            Err(e) => bail!("Telegram credentials unreadable, nothing sent to Telegram: {e}"),
        }
    }
    FanoutNotifier::new(inner, Priority::Low)
        .notify(&n)
        .await
        .map_err(|e| anyhow!("notification not delivered: {e}"))
}

/// `status-report`: this half hour's report, once (see `albra_adapters::status_report`).
async fn cmd_status_report(
    cfg: Config,
    state: &str,
    env_file: Option<&std::path::Path>,
) -> Result<()> {
    use albra_adapters::status_report::{run_once, Outcome};
    let now = chrono::Utc::now().timestamp_millis();
    match run_once(&cfg, state, env_file, now)
        .await
        .map_err(|e| anyhow!("{e}"))?
    {
        Outcome::Sent { telegram, shown } => eprintln!(
            "status report sent{} ({shown} waiting notification(s) shown)",
            if telegram {
                " to Telegram"
            } else {
                " (console only)"
            }
        ),
        Outcome::AlreadySent { slot } => eprintln!(
            "status report of the slot {} already sent: nothing sent",
            albra_core::domain::utc_minute(slot)
        ),
        Outcome::TelegramFailed { error } => eprintln!(
            "warning: the status report did not reach Telegram ({error}); the next run tries again"
        ),
    }
    Ok(())
}

async fn cmd_validate(
    cfg: Config,
    path: &std::path::Path,
    env_file: Option<&std::path::Path>,
) -> Result<()> {
    println!(
        "config {}: OK ({} strategies, {} accounts); mode {}, main account {}",
        path.display(),
        cfg.strategies.len(),
        cfg.accounts.len(),
        match cfg.mode {
            albra_core::config::AccountMode::Single => "single",
            albra_core::config::AccountMode::Multi => "multi",
        },
        cfg.main_account().id
    );
    for s in &cfg.strategies {
        println!(
            "  strategy {} {} on {} ({}x, size {}){}",
            s.name,
            s.timeframe,
            s.symbols
                .iter()
                .map(|s| s.0.as_str())
                .collect::<Vec<_>>()
                .join(","),
            s.leverage,
            s.size_pct,
            if s.enabled { "" } else { " (disabled)" }
        );
    }
    for w in cfg.shared_symbol_warnings() {
        println!("  WARN {w}");
    }
    let refusals = cfg.live_refusals();
    if refusals.is_empty() {
        let mut urls: Vec<String> = cfg
            .accounts
            .iter()
            .filter(|a| a.enabled)
            .map(|a| cfg.account_url(a))
            .collect();
        urls.dedup();
        println!("  live trading: allowed on {}", urls.join(", "));
    }
    for r in &refusals {
        println!("  live trading refused: {r}");
    }
    let secrets = app::default_secrets(env_file).map_err(|e| anyhow!("{e}"))?;
    let mut failed = Failed::default();
    for a in &cfg.accounts {
        validate_account(&cfg, a, &secrets, &mut failed).await?;
    }
    failed.into_result()
}

/// The accounts whose keys `validate` could not pass, by reason.
#[derive(Default)]
struct Failed {
    missing: Vec<String>,
    rejected: Vec<String>,
    no_futures: Vec<String>,
}

impl Failed {
    fn into_result(self) -> Result<()> {
        if !self.missing.is_empty() {
            bail!(
                "enabled account(s) without keys: {} (replay and --paper need none; live does)",
                self.missing.join(", ")
            );
        }
        if !self.rejected.is_empty() {
            bail!(
                "the exchange did not accept the keys of: {} (signed GET /fapi/v3/account)",
                self.rejected.join(", ")
            );
        }
        if !self.no_futures.is_empty() {
            bail!(
                "the key of {} has no futures permission (enableFutures = false): it cannot trade",
                self.no_futures.join(", ")
            );
        }
        Ok(())
    }
}

/// One account's keys: found, accepted by one signed read-only call at the account's own URL,
/// and their permissions where the host reports them. Never prints a secret.
async fn validate_account(
    cfg: &Config,
    a: &albra_core::config::AccountConfig,
    secrets: &dyn Secrets,
    failed: &mut Failed,
) -> Result<()> {
    let source = a
        .key_source()
        .map_err(|m| anyhow!("account {}: {m}", a.id))?;
    let shown = match &source {
        albra_core::ports::KeySource::Env { prefix } => {
            let (k, s) = albra_adapters::secrets::env_key_names(prefix);
            format!("env {k} / {s}")
        }
        albra_core::ports::KeySource::Ssm { prefix } => {
            format!("SSM {prefix}/binance_api_key, …/binance_api_secret")
        }
    };
    let url = cfg.account_url(a);
    let keys = match secrets.binance_keys(&a.id, &source).await {
        Ok(keys) if a.enabled => keys,
        Ok(_) => {
            println!("  account {} (disabled): keys found ({shown})", a.id);
            return Ok(());
        }
        Err(e) if a.enabled => {
            println!("  account {}: KEYS MISSING ({shown}): {e}", a.id);
            failed.missing.push(a.id.0.clone());
            return Ok(());
        }
        Err(_) => {
            println!("  account {} (disabled): no keys ({shown})", a.id);
            return Ok(());
        }
    };
    // One signed read-only call: keys that are present but wrong fail here, not at the first
    // order.
    let client = BinanceClient::new(app::binance_config_at(cfg, url.clone()), Some(keys.clone()))
        .map_err(|e| anyhow!("account {}: {e}", a.id))?;
    match client.account().await {
        Ok(snap) => println!(
            "  account {}: keys accepted by {url} ({shown}; equity {} USDT)",
            a.id,
            snap.equity.get().round_dp(2)
        ),
        Err(e) => {
            println!(
                "  account {}: KEYS NOT ACCEPTED by {url} ({shown}): {e}",
                a.id
            );
            failed.rejected.push(a.id.0.clone());
            return Ok(());
        }
    }
    report_permissions(a, &client, &url, keys, failed).await;
    Ok(())
}

/// Print what the key may do (GET /sapi/v1/account/apiRestrictions) and WARN lines for
/// withdrawals and a missing IP restriction; a key without futures permission is a failure.
async fn report_permissions(
    a: &albra_core::config::AccountConfig,
    client: &BinanceClient,
    url: &str,
    keys: albra_core::ports::ApiKeys,
    failed: &mut Failed,
) {
    use albra_adapters::binance::permissions::permissions_base;
    let Some(base) = permissions_base(url) else {
        println!(
            "  account {}: key permissions: not reported by this host ({url})",
            a.id
        );
        return;
    };
    match client.key_permissions(&base, keys).await {
        Ok(p) => {
            println!(
                "  account {}: key permissions ({base}): {}",
                a.id,
                p.summary()
            );
            let v = p.verdict();
            for w in &v.warnings {
                println!("  WARN account {}: {w}", a.id);
            }
            if v.futures_disabled {
                println!(
                    "  account {}: KEY CANNOT TRADE FUTURES (enableFutures = false)",
                    a.id
                );
                failed.no_futures.push(a.id.0.clone());
            }
        }
        Err(e) => println!(
            "  WARN account {}: key permissions not readable from {base}: {e}",
            a.id
        ),
    }
}
