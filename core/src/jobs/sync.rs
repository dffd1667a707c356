//! The position-sync job: reconcile every enabled account with the exchange (protection first,
//! then pending entries, fired exits, shares that moved, strategies no longer enabled, what no
//! strategy explains, the stops' shape, the account state), and the portfolio view over them.
//! Backtests call [`Engine::observe_equity`] on candles where nothing changed.

use super::reconcile::{self, ManualStep, Verdict};
use super::*;

/// The job name the sync records its runs under ([`crate::state::JobRun`]).
pub const SYNC_JOB: &str = "position-sync";

/// A sync without errors rewrites its run record at most this often (see
/// [`crate::state::StateRepo::record_job_run`]): job health's heartbeat granularity.
pub const SYNC_RECORD_REFRESH_MS: i64 = 300_000;

/// Up to this many symbols, the sync asks `openAlgoOrders` once per symbol (weight 1 each, all at
/// once); above it, once for the account (weight 40).
const ALGO_LISTS_PER_SYMBOL_MAX: usize = 10;

/// The open conditional orders on `symbols` (the ones with a position or a stored share): a
/// quiet sync's heaviest read, 40 of its 54 weight when asked for the whole account.
async fn open_algo_orders_on(
    ex: &dyn Exchange,
    symbols: &BTreeSet<&Symbol>,
) -> Result<Vec<AlgoOrderInfo>, ExchangeError> {
    if symbols.len() > ALGO_LISTS_PER_SYMBOL_MAX {
        return ex.open_algo_orders(None).await;
    }
    let lists =
        futures::future::try_join_all(symbols.iter().map(|s| ex.open_algo_orders(Some(s)))).await?;
    Ok(lists.into_iter().flatten().collect())
}

/// Moves the positions marked closed out of `stored` into `closed`.
fn drop_closed(stored: &mut Vec<Versioned<Position>>, closed: &mut Vec<Position>) {
    if stored
        .iter()
        .all(|v| v.value.status != PositionStatus::Closed)
    {
        return;
    }
    let (gone, open): (Vec<_>, Vec<_>) = std::mem::take(stored)
        .into_iter()
        .partition(|v| v.value.status == PositionStatus::Closed);
    *stored = open;
    closed.extend(gone.into_iter().map(|v| v.value));
}

/// What a sync leaves in the store beside what it reconciles.
#[derive(Clone, Copy)]
struct Records {
    /// Each account's run ([`Engine::record_sync_run`]), for job health.
    runs: bool,
    /// Each account's equity point of the bucket ([`StateRepo::record_equity_point`]), for
    /// reports. Backtests, which sync on every changed candle, leave none: a report reads live
    /// or replayed history, and a backtest has its own equity curve.
    equity: bool,
}

impl Engine {
    /// Reconcile every enabled account's stored positions with the exchange, recording nothing
    /// else: backtests drive the reconciliation with this; replay runs
    /// [`Engine::sync_with_history`], the scheduled job [`Engine::sync_job`].
    pub async fn sync_positions(&self, now: i64) -> JobReport {
        let records = Records {
            runs: false,
            equity: false,
        };
        self.sync_accounts(now, records).await
    }

    /// [`Engine::sync_positions`], and each account's equity point left in the store (at most
    /// one per [`crate::state::EQUITY_BUCKET_MS`]): replay, so `albra report` reads what it did.
    pub async fn sync_with_history(&self, now: i64) -> JobReport {
        let records = Records {
            runs: false,
            equity: true,
        };
        self.sync_accounts(now, records).await
    }

    /// The position-sync job: [`Engine::sync_positions`], and each account's run (job health)
    /// and equity point (reports) left in the store.
    pub async fn sync_job(&self, now: i64) -> JobReport {
        let records = Records {
            runs: true,
            equity: true,
        };
        self.sync_accounts(now, records).await
    }

    async fn sync_accounts(&self, now: i64, records: Records) -> JobReport {
        // Accounts are reconciled at once (they share nothing), their reports joined in
        // configuration order.
        let parts =
            futures::future::join_all(self.accounts.iter().filter(|a| a.config.enabled).map(
                |acct| async move {
                    let mut part = JobReport::default();
                    let r = self
                        .sync_account(acct, now, records.equity, &mut part)
                        .await;
                    if let Err(e) = r {
                        part.errors.push(JobFailure::SyncFailed {
                            account: acct.config.id.clone(),
                            error: Arc::new(e),
                        });
                    }
                    if records.runs {
                        self.record_sync_run(&acct.config.id, now, &mut part).await;
                    }
                    part
                },
            ))
            .await;
        let mut report = JobReport::default();
        for part in parts {
            report.absorb(part);
        }
        self.portfolio_view(now, &mut report).await;
        report
    }

    /// Reconcile one account (enabled or not) as [`Engine::sync_positions`] does, without the
    /// portfolio view: the operator's `sync ACCOUNT`. An account the engine does not trade is an
    /// error in the report.
    pub async fn sync_one(&self, account: &AccountId, now: i64) -> JobReport {
        let mut report = JobReport::default();
        let Some(acct) = self.accounts.iter().find(|a| &a.config.id == account) else {
            report
                .errors
                .push(JobFailure::UnknownAccount(account.clone()));
            return report;
        };
        if let Err(e) = self.sync_account(acct, now, true, &mut report).await {
            report.errors.push(JobFailure::SyncFailed {
                account: account.clone(),
                error: Arc::new(e),
            });
        }
        self.record_sync_run(account, now, &mut report).await;
        report
    }

    /// Leave the account's last sync run in the store (job health reads it). A failure to write
    /// it is one more error of the run, never a reason to undo what the sync did.
    async fn record_sync_run(&self, account: &AccountId, now: i64, report: &mut JobReport) {
        let run = crate::state::JobRun {
            at: now,
            ok: report.errors.is_empty(),
            outcome: report
                .errors
                .first()
                .map(ToString::to_string)
                .unwrap_or_else(|| format!("ok: {} line(s)", report.lines.len())),
        };
        if let Err(e) = self
            .repo
            .record_job_run(account, SYNC_JOB, &run, SYNC_RECORD_REFRESH_MS)
            .await
        {
            report.errors.push(JobFailure::RunNotRecorded {
                account: account.clone(),
                error: Arc::new(e.into()),
            });
        }
    }

    /// Leave the account's equity (and the exchange's weight gauge) as the equity point of the
    /// bucket holding `now`. A failure to write it is one more error of the run, never a reason
    /// to undo what the sync did.
    async fn record_equity_point(
        &self,
        account: &AccountId,
        equity: Notional,
        api_weight_1m: Option<u32>,
        now: i64,
        report: &mut JobReport,
    ) {
        let bucket = crate::state::equity_bucket(now);
        if self.cache.equity_recorded(account, bucket) {
            return;
        }
        let point = crate::state::EquityPoint {
            at: now,
            equity: equity.get(),
            api_weight_1m,
        };
        match self.repo.record_equity_point(account, &point).await {
            // Written now, or by an earlier run or another process: either way it is there.
            Ok(_) => self.cache.mark_equity_recorded(account, bucket),
            Err(e) => report.errors.push(JobFailure::EquityNotRecorded {
                account: account.clone(),
                error: Arc::new(e.into()),
            }),
        }
    }

    /// The advisory portfolio view across accounts: warnings in the report and one notification
    /// per warning and day. It never closes or blocks anything.
    async fn portfolio_view(&self, now: i64, report: &mut JobReport) {
        let mut states = Vec::new();
        for acct in self.accounts.iter().filter(|a| a.config.enabled) {
            if let Ok(Some(v)) = self.repo.account_state(&acct.config.id).await {
                states.push((acct.config.id.0.clone(), v.value));
            }
        }
        let day = risk::trading_day(now, self.config.risk.day_start_hour_utc);
        for w in risk::portfolio_warnings(&states, &self.config.risk) {
            report.note(format!("portfolio (advisory): {w}"));
            self.notify(
                &AccountId::new("portfolio"),
                Priority::Low,
                "portfolio_warning",
                || notices::portfolio_warning(day, &w),
                now,
            )
            .await;
        }
    }

    /// One account's sync, in phases: gather the exchange's positions and open conditional
    /// orders beside the stored positions; repair protection first; record what the exchange
    /// did (pending entries, exit fills, fired stops) and whose fills moved each net; then apply
    /// the pure reconciliation plans of [`reconcile`] (share verdicts, paused strategies, the
    /// MANUAL share); last, reshape stops, date the share books and fold the account's equity
    /// (and, with `history`, leave it as the bucket's equity point).
    pub(super) async fn sync_account(
        &self,
        acct: &AccountRuntime,
        now: i64,
        history: bool,
        report: &mut JobReport,
    ) -> Result<(), EngineError> {
        let account = &acct.config.id;
        let ex = acct.exchange.as_ref();
        // Protection needs only the positions and the open algo orders: the account read comes
        // last, so a rate limit on it cannot hold up a stop's repair.
        let ex_positions = ex.positions().await?;
        let mut stored = self.repo.positions(account).await?;
        let net = reconcile::net_of(&ex_positions);
        let open_algos = self
            .gather_open_algos(ex, account, &net, &stored, report)
            .await;
        let open_algo_ids: HashSet<&str> = open_algos
            .iter()
            .flatten()
            .map(|a| a.client_algo_id.as_str())
            .collect();

        // 0. Protection first: a strategy position whose symbol the exchange holds exactly as
        // stored gets its missing stop back before anything else is reconciled.
        self.restore_stops(ex, &mut stored, &net, &open_algo_ids, now, report)
            .await?;
        self.cancel_superseded_stops(ex, &stored, &open_algo_ids, report)
            .await;
        stored.retain(|v| v.value.status != PositionStatus::Closed);
        // Symbols whose net moved since the stored shares were last true: the ones this sync
        // reconciles, and whose share books it dates again afterwards.
        let moved = reconcile::drifted(&net, &stored);
        report.sync_drift += moved.len() as u32;

        // 1–2a. What the exchange did on its own: entries, exit fills, fired protection.
        let closed = self
            .record_exchange_events(ex, &mut stored, &open_algo_ids, now, report)
            .await?;
        // Shares follow fills: where the net moved, whose fills moved it.
        let books = self
            .attribute_fills(acct, &net, &stored, &closed, &moved, report)
            .await?;
        // 2b. Strategy positions: closed or resized on the exchange? stop still there?
        for sym in reconcile::strategy_symbols(&stored) {
            let verdicts = reconcile::symbol_verdicts(&stored, &net, &sym, books.get(&sym));
            for (i, verdict) in verdicts {
                self.apply_verdict(ex, &mut stored[i], verdict, &open_algo_ids, now, report)
                    .await?;
            }
        }
        stored.retain(|v| v.value.status != PositionStatus::Closed);
        // 2c. Positions of strategies no longer enabled pause; enabled again, they resume.
        self.apply_status_changes(acct, &mut stored, now).await?;
        // 3. Exchange amounts no strategy explains: adopt our own orders, otherwise MANUAL.
        self.reconcile_residuals(acct, &net, &mut stored, now, report)
            .await?;

        // 4. Every strategy stop matches its symbol's sharing (closePosition vs quantity).
        for sym in reconcile::strategy_symbols(&stored) {
            self.reshape_stops(ex, account, &sym, open_algos.as_deref(), now, report)
                .await?;
        }
        self.save_share_books(account, &ex_positions, &stored, &moved, now)
            .await?;

        // 5. Account state: equity, its peak, the day's starting equity.
        let snap = ex.account().await?;
        let marks = history.then(|| reconcile::marks_of(&ex_positions));
        self.observe_account_then(&acct.config, snap.equity, marks.as_ref(), now, |_| ())
            .await?;
        if history {
            self.record_equity_point(account, snap.equity, ex.used_weight_1m(), now, report)
                .await;
        }
        let open = stored.iter().filter(|v| v.value.is_open()).count();
        report.note(format!(
            "{account}: {open} open position(s), equity {} USDT",
            snap.equity.get().round_dp(2)
        ));
        Ok(())
    }

    /// The open conditional orders on every symbol with a position or a stored share; `None`
    /// (said in the report) when unreadable: every stop is then looked up by its own id instead,
    /// slower, same answer.
    async fn gather_open_algos(
        &self,
        ex: &dyn Exchange,
        account: &AccountId,
        net: &reconcile::Net,
        stored: &[Versioned<Position>],
        report: &mut JobReport,
    ) -> Option<Vec<AlgoOrderInfo>> {
        let symbols: BTreeSet<&Symbol> = net
            .keys()
            .chain(stored.iter().map(|v| &v.value.key.symbol))
            .collect();
        match open_algo_orders_on(ex, &symbols).await {
            Ok(list) => Some(list),
            Err(e) => {
                report.errors.push(JobFailure::AlgoOrdersUnreadable {
                    account: account.clone(),
                    error: Arc::new(e.into()),
                });
                None
            }
        }
    }

    /// Record what the exchange did on its own since the last sync, in this order: entries
    /// written ahead of their order (adopted or dropped), take-profit steps and trailing stops
    /// that filled (partial closes come before anything compares sizes), and protective orders
    /// of ours that fired (each closed exactly its strategy's share, even on a shared symbol).
    /// Returns the positions recorded closed (their protective orders' fills are still theirs).
    async fn record_exchange_events(
        &self,
        ex: &dyn Exchange,
        stored: &mut Vec<Versioned<Position>>,
        open_algo_ids: &HashSet<&str>,
        now: i64,
        report: &mut JobReport,
    ) -> Result<Vec<Position>, EngineError> {
        let mut closed: Vec<Position> = Vec::new();
        for v in stored
            .iter_mut()
            .filter(|v| v.value.status == PositionStatus::Pending)
        {
            self.resolve_pending(ex, v, now, report).await?;
        }
        drop_closed(stored, &mut closed);
        for v in stored
            .iter_mut()
            .filter(|v| !v.value.is_manual && v.value.is_open() && !v.value.exit_orders.is_empty())
        {
            if self
                .record_exit_fills(ex, v, open_algo_ids, now, report)
                .await?
            {
                v.value.status = PositionStatus::Closed;
            }
        }
        drop_closed(stored, &mut closed);
        for v in stored
            .iter_mut()
            .filter(|v| !v.value.is_manual && v.value.is_open())
        {
            if self.protection_fired(ex, &v.value, open_algo_ids).await? {
                self.record_exchange_close(ex, v, now).await?;
                v.value.status = PositionStatus::Closed;
            }
        }
        drop_closed(stored, &mut closed);
        Ok(closed)
    }

    /// Apply one strategy position's [`Verdict`]: record its close, store its new size, or (held)
    /// check that its stop and exit orders are in place.
    async fn apply_verdict(
        &self,
        ex: &dyn Exchange,
        v: &mut Versioned<Position>,
        verdict: Verdict,
        open_algo_ids: &HashSet<&str>,
        now: i64,
        report: &mut JobReport,
    ) -> Result<(), EngineError> {
        match verdict {
            Verdict::Closed => {
                self.record_exchange_close(ex, v, now).await?;
                v.value.status = PositionStatus::Closed;
            }
            // Its own fills, or (by sizes) the exchange holding less than its sole share.
            Verdict::Resized(qty) => {
                let before = v.value.qty;
                v.value.qty = qty;
                v.value.status = PositionStatus::Modified;
                v.value.updated_at = now;
                v.version = self.repo.save_position(&v.value, Some(v.version)).await?;
                let (id, text) = notices::size_changed(&v.value, before, qty);
                self.notify(
                    &v.value.key.account,
                    Priority::High,
                    "size_changed",
                    || (id, text),
                    now,
                )
                .await;
            }
            Verdict::Held => {
                self.check_stop(ex, v, open_algo_ids, now, report).await?;
                if v.value.is_open() {
                    self.check_exits(ex, v, open_algo_ids, now, report).await?;
                }
            }
        }
        Ok(())
    }

    /// Pause the positions of strategies no longer enabled on the account, resume those enabled
    /// again ([`reconcile::status_changes`]), each with its notification.
    async fn apply_status_changes(
        &self,
        acct: &AccountRuntime,
        stored: &mut [Versioned<Position>],
        now: i64,
    ) -> Result<(), EngineError> {
        let running: HashSet<&str> = self
            .config
            .account_strategies(&acct.config)
            .map(|s| s.name.as_str())
            .collect();
        for (i, next) in reconcile::status_changes(stored, &running) {
            let v = &mut stored[i];
            v.value.status = next;
            v.value.updated_at = now;
            v.version = self.repo.save_position(&v.value, Some(v.version)).await?;
            let (id, text) = notices::position_paused(&v.value, now);
            self.notify(
                &acct.config.id,
                Priority::High,
                "position_paused",
                || (id, text),
                now,
            )
            .await;
        }
        Ok(())
    }

    /// For every symbol with an amount no strategy share explains: adopt an entry of ours that
    /// explains it (a crash between order and write), then reconcile the MANUAL share with what
    /// is left ([`reconcile::manual_step`]).
    async fn reconcile_residuals(
        &self,
        acct: &AccountRuntime,
        net: &reconcile::Net,
        stored: &mut Vec<Versioned<Position>>,
        now: i64,
        report: &mut JobReport,
    ) -> Result<(), EngineError> {
        for sym in reconcile::manual_symbols(net, stored) {
            let (mut residual, ex_entry) = reconcile::residual(net, stored, &sym);
            if !residual.is_zero() {
                if let Some(adopted) = self
                    .adopt_by_client_id(acct, &sym, residual, now, report)
                    .await?
                {
                    residual -= signed(&adopted);
                    stored.push(Versioned {
                        value: adopted,
                        version: 0,
                    });
                }
            }
            let step =
                reconcile::manual_step(&acct.config.id, &sym, (residual, ex_entry), stored, now);
            self.apply_manual_step(&acct.config.id, step, stored, now)
                .await?;
        }
        Ok(())
    }

    /// Only the account-state part of a sync: fold each enabled account's equity into its risk
    /// state (peak, MDD level, day start, daily-loss halt). Backtests call it instead of
    /// [`Engine::sync_positions`] on candles where the paper exchange shows no change since the
    /// last full sync (same wallet, positions and open protective orders): reconciliation would
    /// find nothing, but equity still moves with the price.
    pub async fn observe_equity(&self, now: i64) -> JobReport {
        let mut report = JobReport::default();
        for acct in self.accounts.iter().filter(|a| a.config.enabled) {
            let r = match acct.exchange.equity().await {
                Ok(equity) => {
                    self.observe_account_then(&acct.config, equity, None, now, |_| ())
                        .await
                }
                Err(e) => Err(e.into()),
            };
            if let Err(e) = r {
                report.errors.push(JobFailure::SyncFailed {
                    account: acct.config.id.clone(),
                    error: Arc::new(e),
                });
            }
        }
        report
    }

    /// Apply a [`ManualStep`]: close, open or change the stored MANUAL share, with its
    /// notification.
    async fn apply_manual_step(
        &self,
        account: &AccountId,
        step: ManualStep,
        stored: &mut Vec<Versioned<Position>>,
        now: i64,
    ) -> Result<(), EngineError> {
        let (priority, kind, (id, text)) = match step {
            ManualStep::Nothing => return Ok(()),
            ManualStep::Close(i) => {
                let v = stored.remove(i);
                self.repo.delete_position(&v.value.key, v.version).await?;
                (
                    Priority::Medium,
                    "manual_closed",
                    notices::manual_closed(&v.value),
                )
            }
            ManualStep::Open(p) => {
                let version = self.repo.save_position(&p, None).await?;
                let notice = notices::manual_found(&p, now);
                stored.push(Versioned { value: *p, version });
                (Priority::High, "manual_found", notice)
            }
            ManualStep::Change(i, side, qty) => {
                let v = &mut stored[i];
                let before = format!("{} {}", v.value.side, v.value.qty);
                v.value.side = side;
                v.value.qty = qty;
                v.value.status = PositionStatus::Modified;
                v.value.updated_at = now;
                v.version = self.repo.save_position(&v.value, Some(v.version)).await?;
                (
                    Priority::Medium,
                    "manual_changed",
                    notices::manual_changed(&v.value, &before, now),
                )
            }
        };
        self.notify(account, priority, kind, || (id, text), now)
            .await;
        Ok(())
    }
}
