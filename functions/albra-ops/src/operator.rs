//! The operator's commands as a terminal front end of the query/command layer
//! (`albra_core::query`): each reads or plans there, and this module only lays the answer out —
//! a table, or the query's own type as JSON with `--json` — and asks before an emergency stop.
//! No figure is computed here, so the CLI, Telegram and the dashboard always agree.

use albra_adapters::app::{self, Mode};
use albra_adapters::store::open_store;
use albra_cli::cli::Output;
use albra_core::config::Config;
use albra_core::query::{commands, queries};
use albra_core::state::StateRepo;
use anyhow::{anyhow, bail, Context, Result};
use comfy_table::{presets, CellAlignment, Table};
use serde::Serialize;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

/// The wall clock (ms): state-only commands date what they write with it; commands that reach
/// the exchange use the exchange's clock.
fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn repo(state: &str) -> Result<StateRepo> {
    Ok(StateRepo::new(open_store(state).await?))
}

/// `value` as JSON on stdout.
fn print_json<T: Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A table with a header, its columns in `right` aligned right (figures).
fn table(header: &[&str], right: &[usize], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING).set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    for &i in right {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.to_string()
}

use albra_core::domain::utc_minute as at;

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// A fraction as a percentage with one decimal, rounded (Decimal's own `{:.1}` truncates).
fn pct(fraction: rust_decimal::Decimal) -> String {
    format!(
        "{:.1}%",
        (fraction * rust_decimal::Decimal::ONE_HUNDRED).round_dp(1)
    )
}

/// `status`: one line per account, then its open positions and how long since a job ran.
pub async fn status(cfg: Config, state: &str, out: Output) -> Result<()> {
    let report = queries::status(&repo(state).await?, &cfg, wall_ms()).await?;
    if out.json {
        return print_json(&report);
    }
    println!("state: {}", report.state);
    for a in &report.accounts {
        let flag = if a.enabled { "" } else { " (disabled)" };
        match &a.figures {
            Some(f) => println!(
                "{}{flag}: equity {} USDT, peak {}, drawdown {:.2}% (MDD level {}), paused {}{}; {} open position(s), unrealised {}; {} closed trade(s), PnL {}, today {}",
                a.account,
                f.equity.round_dp(2),
                f.peak_equity.round_dp(2),
                f.drawdown_pct.round_dp(2),
                f.mdd_level,
                f.paused,
                f.halted_until
                    .map_or(String::new(), |t| format!(", entries HALTED until {}", at(t))),
                a.open_positions,
                or_dash(a.unrealized_pnl.map(|u| u.round_dp(2))),
                a.closed_trades,
                a.realized_pnl.round_dp(2),
                f.daily_pnl.round_dp(2),
            ),
            None => println!(
                "{}{flag}: no state yet (the sync job has not run); {} open position(s)",
                a.account, a.open_positions
            ),
        }
        for p in &a.positions {
            println!(
                "  {}/{} {} {} @ {}, mark {}, unrealised {}, stop {}, take-profit {} [{}]",
                p.strategy,
                p.symbol,
                p.side,
                p.qty,
                p.entry_price,
                or_dash(p.mark_price),
                or_dash(p.unrealized_pnl.map(|u| u.round_dp(2))),
                or_dash(p.stop_loss),
                or_dash(p.take_profit),
                p.label
            );
        }
        let heartbeat = a.heartbeat_age_ms.map_or("no job has run".into(), |ms| {
            format!("last job ran {} ago", age(ms))
        });
        println!("  {heartbeat}");
    }
    Ok(())
}

/// `positions`: every tracked position in columns.
pub async fn positions(
    cfg: Config,
    state: &str,
    account: Option<String>,
    out: Output,
) -> Result<()> {
    let rows = queries::positions(&repo(state).await?, &cfg, account.as_deref()).await?;
    if out.json {
        return print_json(&rows);
    }
    if rows.is_empty() {
        println!("(no positions)");
        return Ok(());
    }
    let header = [
        "account", "strategy", "symbol", "side", "qty", "entry", "stop", "status",
    ];
    let cells = rows
        .iter()
        .map(|p| {
            vec![
                p.account.to_string(),
                p.strategy.to_string(),
                p.symbol.to_string(),
                p.side.to_string(),
                p.qty.to_string(),
                p.entry_price.to_string(),
                or_dash(p.stop_loss),
                p.label.clone(),
            ]
        })
        .collect();
    println!("{}", table(&header, &[4, 5, 6], cells));
    Ok(())
}

/// What `albra report` was asked for (see its `--help`).
pub struct ReportArgs {
    pub kind: String,
    pub on: Option<String>,
    pub account: Option<String>,
    pub output: Option<std::path::PathBuf>,
}

/// How a report file is written, from its extension.
enum ReportFile {
    Html,
    Json,
}

fn report_file(path: &Path) -> Result<ReportFile> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => Ok(ReportFile::Html),
        "json" => Ok(ReportFile::Json),
        "" => bail!(
            "report file {} has no extension: use .html or .json",
            path.display()
        ),
        _ => bail!(
            "report file {}: unsupported extension .{ext} (use .html or .json)",
            path.display()
        ),
    }
}

/// `report`: the period's figures per account and strategy, laid out as a table, JSON or a file.
pub async fn report(cfg: Config, state: &str, args: ReportArgs, out: Output) -> Result<()> {
    let kind = albra_core::report::ReportKind::parse(&args.kind)
        .ok_or_else(|| anyhow!("--type {}: use daily or weekly", args.kind))?;
    let file = args.output.as_deref().map(report_file).transpose()?;
    let now = match &args.on {
        Some(d) => chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .with_context(|| format!("--on {d}: expected YYYY-MM-DD"))?
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_millis())
            .ok_or_else(|| anyhow!("--on {d}: not a day"))?,
        None => wall_ms(),
    };
    let repo = repo(state).await?;
    let report = queries::report(&repo, &cfg, args.account.as_deref(), kind, now).await?;
    match (file, args.output) {
        (Some(ReportFile::Html), Some(path)) => {
            let page = albra_adapters::web::report_html(&report, wall_ms())?;
            write_report(&path, &page)
        }
        (Some(ReportFile::Json), Some(path)) => {
            write_report(&path, &serde_json::to_string_pretty(&report)?)
        }
        _ if out.json => print_json(&report),
        _ => {
            print_report(&report);
            Ok(())
        }
    }
}

fn write_report(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    println!("report written to {}", path.display());
    Ok(())
}

fn opt_pct(fraction: Option<f64>) -> String {
    fraction.map_or("n/a".into(), |f| format!("{:.2}%", f * 100.0))
}

/// The report as text: per account, its figures, then its strategies' trade figures.
fn print_report(r: &albra_core::report::Report) {
    println!(
        "{:?} report, {} to {}",
        r.kind,
        at(r.window.start),
        at(r.window.end)
    );
    for a in &r.accounts {
        println!("\naccount {}", a.account);
        let mut rows = Vec::new();
        if let Some(e) = &a.equity {
            rows.push(vec![
                "equity".into(),
                format!(
                    "{} -> {} USDT",
                    e.start_equity.round_dp(2),
                    e.end_equity.round_dp(2)
                ),
            ]);
            rows.push(vec!["return".into(), opt_pct(e.return_frac)]);
            rows.push(vec!["max drawdown".into(), opt_pct(Some(e.max_drawdown))]);
            let sharpe = e.sharpe.map_or_else(
                || format!("n/a ({} daily return(s))", e.daily_returns),
                |s| format!("{s:.2}"),
            );
            rows.push(vec!["Sharpe (daily, x sqrt 365)".into(), sharpe]);
        }
        let t = &a.total;
        rows.push(vec![
            "trades (wins)".into(),
            format!("{} ({})", t.trades, t.wins),
        ]);
        rows.push(vec![
            "win rate".into(),
            t.win_rate.map_or("n/a".into(), pct),
        ]);
        rows.push(vec!["PnL".into(), t.pnl.round_dp(2).to_string()]);
        rows.push(vec!["fees".into(), t.fees.round_dp(2).to_string()]);
        rows.push(vec!["funding".into(), t.funding.round_dp(2).to_string()]);
        let weight = a.api_weight.map_or("not reported".into(), |w| {
            format!(
                "peak {}, mean {:.1} ({} readings)",
                w.peak_1m, w.mean_1m, w.samples
            )
        });
        rows.push(vec!["API weight used (1m)".into(), weight]);
        println!("{}", table(&["figure", "value"], &[1], rows));
        if !a.strategies.is_empty() {
            let header = [
                "strategy",
                "trades",
                "win rate",
                "PnL",
                "fees",
                "funding",
                "of equity",
            ];
            let cells = a
                .strategies
                .iter()
                .map(|s| {
                    vec![
                        or_dash(s.strategy.as_ref()),
                        s.trades.to_string(),
                        s.win_rate.map_or("n/a".into(), pct),
                        s.pnl.round_dp(2).to_string(),
                        s.fees.round_dp(2).to_string(),
                        s.funding.round_dp(2).to_string(),
                        opt_pct(s.return_frac),
                    ]
                })
                .collect();
            println!("{}", table(&header, &[1, 2, 3, 4, 5, 6], cells));
        }
        for n in &a.notes {
            println!("  note: {n}");
        }
    }
}

/// `performance`: per account and strategy, then the account's total.
pub async fn performance(
    cfg: Config,
    state: &str,
    account: Option<String>,
    days: Option<u32>,
    out: Output,
) -> Result<()> {
    let repo = repo(state).await?;
    let report = queries::performance(&repo, &cfg, account.as_deref(), days, wall_ms()).await?;
    if out.json {
        return print_json(&report);
    }
    match report.since {
        Some(t) => println!("trades closed since {}", at(t)),
        None => println!("all closed trades"),
    }
    let header = [
        "account",
        "strategy",
        "trades",
        "win rate",
        "PnL",
        "fees",
        "profit factor",
        "max DD",
    ];
    let cells = report
        .rows
        .iter()
        .map(|r| {
            vec![
                r.account.to_string(),
                r.strategy
                    .as_ref()
                    .map_or("(all)".into(), |s| s.to_string()),
                r.trades.to_string(),
                pct(r.win_rate),
                r.total_pnl.round_dp(2).to_string(),
                r.fees.round_dp(2).to_string(),
                r.profit_factor
                    .map_or("-".into(), |f| f.round_dp(2).to_string()),
                r.max_drawdown.round_dp(2).to_string(),
            ]
        })
        .collect();
    println!("{}", table(&header, &[2, 3, 4, 5, 6, 7], cells));
    Ok(())
}

/// `risk-check`: limits and use per account, then every warning.
pub async fn risk_check(
    cfg: Config,
    state: &str,
    account: Option<String>,
    out: Output,
) -> Result<()> {
    let repo = repo(state).await?;
    let checks = queries::risk_check(&repo, &cfg, account.as_deref(), wall_ms()).await?;
    if out.json {
        return print_json(&checks);
    }
    let header = [
        "account",
        "paused",
        "daily loss",
        "limit",
        "halted until",
        "MDD level",
        "size x",
        "positions",
    ];
    let cells = checks
        .iter()
        .map(|c| {
            vec![
                c.account.to_string(),
                c.paused.to_string(),
                c.daily_loss.round_dp(2).to_string(),
                c.daily_loss_limit.round_dp(2).to_string(),
                c.halted_until.map_or("-".into(), at),
                c.mdd_level.to_string(),
                c.size_multiplier.to_string(),
                format!("{}/{}", c.open_positions, c.max_positions),
            ]
        })
        .collect();
    println!("{}", table(&header, &[2, 3, 5, 6, 7], cells));
    for c in &checks {
        for l in &c.leverage {
            println!(
                "{} {}: leverage {}x configured, cap {}x, used {}x",
                c.account, l.strategy, l.configured, l.cap, l.effective
            );
        }
        for w in &c.warnings {
            println!("WARNING {}: {w}", c.account);
        }
    }
    Ok(())
}

/// `health`: the last run of every job.
pub async fn health(cfg: Config, state: &str, account: Option<String>, out: Output) -> Result<()> {
    let repo = repo(state).await?;
    let rows = queries::job_health(&repo, &cfg, account.as_deref(), wall_ms()).await?;
    if out.json {
        return print_json(&rows);
    }
    let header = ["account", "job", "last run", "age", "state", "outcome"];
    let cells = rows
        .iter()
        .map(|h| {
            vec![
                h.account.to_string(),
                h.job.clone(),
                h.last_run.map_or("-".into(), at),
                h.age_ms.map_or("-".into(), age),
                h.state().to_string(),
                clip(h.outcome.as_deref().unwrap_or_default(), 60),
            ]
        })
        .collect();
    println!("{}", table(&header, &[3], cells));
    Ok(())
}

/// `text` cut to `max` characters (the JSON answer has it whole).
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

use albra_core::domain::age_text as age;

/// `list-strategies`.
pub fn list_strategies(cfg: &Config, out: Output) -> Result<()> {
    let rows = queries::strategies(cfg);
    if out.json {
        return print_json(&rows);
    }
    let header = [
        "strategy",
        "configured",
        "timeframe",
        "symbols",
        "leverage",
        "size",
        "accounts",
    ];
    let cells = rows
        .iter()
        .map(|r| {
            let configured = match (r.configured, r.enabled) {
                (false, _) => "no",
                (true, false) => "disabled",
                (true, true) => "yes",
            };
            vec![
                r.name.clone(),
                configured.to_string(),
                or_dash(r.timeframe),
                join(&r.symbols),
                r.leverage.map_or("-".into(), |l| format!("{l}x")),
                r.size_pct.map_or("-".into(), pct),
                join(&r.accounts),
            ]
        })
        .collect();
    println!("{}", table(&header, &[4, 5], cells));
    Ok(())
}

fn join<T: ToString>(v: &[T]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// `pause` / `resume`: the plan, then the conditional write.
pub async fn pause(cfg: Config, state: &str, account: &str, pause: bool) -> Result<()> {
    let repo = repo(state).await?;
    let now = wall_ms();
    let snap = commands::gather_state(&repo, &cfg, account, now).await?;
    let plan = commands::plan_pause(&snap, pause);
    let paused = commands::apply_pause(&repo, &plan, now).await?;
    let what = if paused { "paused" } else { "trading" };
    match plan.write {
        None => println!("{}: already {what}; nothing written", plan.account),
        Some(_) if paused => println!(
            "{}: paused: no new entries or signal exits; the {} open position(s) keep their stops on the exchange",
            plan.account, plan.open_positions
        ),
        Some(_) => println!("{}: resumed: the next candle close is evaluated", plan.account),
    }
    Ok(())
}

/// `switch-strategy`: the plan; unless `dry_run`, the config file rewritten in place (through a
/// temporary file and a rename, so a job never reads half a file).
pub async fn switch_strategy(
    cfg: Config,
    config_path: &Path,
    state: &str,
    account: &str,
    strategy: &str,
    dry_run: bool,
) -> Result<()> {
    let repo = repo(state).await?;
    let snap = commands::gather_state(&repo, &cfg, account, wall_ms()).await?;
    let plan = commands::plan_switch(&cfg, &snap, strategy)?;
    println!(
        "{}: strategies [{}] -> [{}]",
        plan.account,
        plan.from.join(", "),
        plan.to
    );
    if plan.unchanged {
        println!("already its only strategy; nothing written");
        return Ok(());
    }
    let file = config_path.display().to_string();
    let text = std::fs::read_to_string(config_path).with_context(|| format!("reading {file}"))?;
    let changed = commands::apply_switch(&plan, &text, &file)?;
    if dry_run {
        println!("dry run: {file} not changed");
        return Ok(());
    }
    write_atomically(config_path, &changed)?;
    println!(
        "{file} updated; the next job of {} runs {}",
        plan.account, plan.to
    );
    Ok(())
}

fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let mut tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new(".")))
        .with_context(|| format!("writing beside {}", path.display()))?;
    tmp.write_all(text.as_bytes())?;
    if let Ok(meta) = std::fs::metadata(path) {
        tmp.as_file().set_permissions(meta.permissions())?;
    }
    tmp.persist(path)
        .map_err(|e| anyhow!("replacing {}: {}", path.display(), e.error))?;
    Ok(())
}

/// The engine over the accounts' signed clients.
async fn live_app(cfg: Config, state: &str, env_file: Option<&Path>) -> Result<app::App> {
    app::build(cfg, state, Mode::Live, env_file)
        .await
        .map_err(|e| anyhow!("{e}"))
}

/// `balance`: one signed read per account, beside the recorded equity.
pub async fn balance(
    cfg: Config,
    state: &str,
    env_file: Option<&Path>,
    account: &str,
    out: Output,
) -> Result<()> {
    let app = app::build(cfg, state, Mode::ReadOnly, env_file)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let wanted = (account != "all").then_some(account);
    let accounts: Vec<_> = commands::runtimes(&app.engine, wanted)?
        .into_iter()
        .cloned()
        .collect();
    let rows = queries::balance(&app.engine.repo, &accounts).await?;
    if out.json {
        return print_json(&rows);
    }
    let header = [
        "account",
        "equity",
        "wallet",
        "available",
        "margin used",
        "recorded equity",
    ];
    let cells = rows
        .iter()
        .map(|r| {
            let x = r.exchange.as_ref();
            vec![
                r.account.to_string(),
                x.map_or_else(
                    || format!("ERROR: {}", or_dash(r.error.as_ref())),
                    |s| s.equity.get().round_dp(2).to_string(),
                ),
                or_dash(x.map(|s| s.wallet_balance.get().round_dp(2))),
                or_dash(x.map(|s| s.available_balance.get().round_dp(2))),
                or_dash(x.map(|s| s.total_initial_margin.get().round_dp(2))),
                or_dash(r.state_equity.map(|e| e.round_dp(2))),
            ]
        })
        .collect();
    println!("{}", table(&header, &[1, 2, 3, 4, 5], cells));
    if rows.iter().any(|r| r.error.is_some()) {
        bail!("the exchange did not answer for every account (see the table)");
    }
    Ok(())
}

/// `sync`: the dry-run plan of each account, then (unless `dry_run`) the sync job itself.
pub async fn sync(
    cfg: Config,
    state: &str,
    env_file: Option<&Path>,
    account: Option<String>,
    dry_run: bool,
) -> Result<()> {
    let app = live_app(cfg, state, env_file).await?;
    let now = app.exchange_now().await;
    let mut failed = 0;
    for acct in commands::runtimes(&app.engine, account.as_deref())? {
        let snap = commands::gather(&app.engine.repo, acct, now).await?;
        let plan = commands::plan_sync(&snap);
        print_sync_plan(&plan);
        if dry_run {
            continue;
        }
        let done = commands::apply_sync(&app.engine, &plan, now).await;
        for l in &done.lines {
            println!("  {l}");
        }
        for e in &done.errors {
            eprintln!("  error: {e}");
        }
        failed += done.errors.len();
        println!("  {}: {} order(s) placed", done.account, done.orders_placed);
    }
    if failed > 0 {
        bail!("the sync reported {failed} error(s)");
    }
    Ok(())
}

fn print_sync_plan(plan: &commands::SyncPlan) {
    let nothing = plan.drift.is_empty() && plan.unprotected.is_empty() && plan.pending.is_empty();
    if nothing {
        println!(
            "{}: store and exchange agree; every stop is on the exchange",
            plan.account
        );
        return;
    }
    println!("{}:", plan.account);
    for d in &plan.drift {
        println!(
            "  {}: stored {} but the exchange holds {}",
            d.symbol, d.stored, d.exchange
        );
    }
    for k in &plan.unprotected {
        println!("  {k}: stop not on the exchange (placed first)");
    }
    for k in &plan.pending {
        println!("  {k}: pending entry (adopted if the exchange has it, else dropped)");
    }
}

/// `emergency-stop`: print the plan of each account, ask (on a terminal, unless `yes`), apply,
/// and read back that each account is flat, without open orders, and paused.
pub async fn emergency_stop(
    cfg: Config,
    state: &str,
    env_file: Option<&Path>,
    target: &str,
    yes: bool,
    dry_run: bool,
) -> Result<()> {
    let app = live_app(cfg, state, env_file).await?;
    let now = app.exchange_now().await;
    let wanted = (target != "all").then_some(target);
    let plans = commands::plan_emergency_for(&app.engine, wanted, now).await?;
    for p in &plans {
        print_emergency_plan(p);
    }
    if dry_run {
        println!("dry run: nothing sent, nothing written");
        return Ok(());
    }
    if !yes && !confirm(target)? {
        bail!("not confirmed; nothing sent");
    }
    let mut incomplete = Vec::new();
    for p in &plans {
        let o = commands::apply_emergency(&app.engine, p, now).await?;
        for l in &o.lines {
            println!("  {l}");
        }
        for e in &o.errors {
            eprintln!("  error: {e}");
        }
        println!(
            "{}: flat {}, open conditional orders {}, paused {}",
            o.account, o.flat, o.open_orders, o.paused
        );
        if !(o.flat && o.open_orders == 0 && o.paused && o.errors.is_empty()) {
            incomplete.push(o.account.to_string());
        }
    }
    if !incomplete.is_empty() {
        bail!(
            "the emergency stop did not finish for {}; run it again",
            incomplete.join(", ")
        );
    }
    Ok(())
}

fn print_emergency_plan(p: &commands::EmergencyPlan) {
    if p.is_empty() {
        println!("{}: already paused and flat, no open order", p.account);
        return;
    }
    println!("{}:", p.account);
    if p.pause {
        println!("  pause the account (first: no evaluation enters meanwhile)");
    }
    for k in &p.sync_first {
        println!("  sync first: {k} (stored, not on the exchange)");
    }
    for c in &p.close {
        println!("  close {} {} {} at market", c.key, c.side, c.qty);
    }
    for c in &p.cancel_resting {
        println!(
            "  cancel resting {} {} {} {} (placed by hand)",
            c.symbol,
            c.side.as_str(),
            c.open_qty,
            c.client_id
        );
    }
    for c in &p.cancel {
        let whose = if c.ours { "ours" } else { "placed by hand" };
        println!(
            "  cancel {} {} {} ({whose})",
            c.symbol, c.kind, c.client_algo_id
        );
    }
    for f in &p.flatten {
        println!(
            "  flatten {} {} {} reduce-only ({})",
            f.symbol,
            f.side.as_str(),
            f.qty,
            f.client_id
        );
    }
}

/// Ask on the terminal; off a terminal there is no one to ask, so `--yes` is required.
fn confirm(target: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("emergency-stop asks for confirmation on a terminal; pass --yes to run it unattended (or --dry-run to see the plan)");
    }
    print!("Type `{target}` to send these orders: ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim() == target)
}
