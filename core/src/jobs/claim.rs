//! The evaluator's claim on a candle, as the engine holds it: claiming (and taking over a dead
//! run's expired claim), giving it back, finishing it, and moving it to Acting, fenced by its
//! version, right before the first order (the stages live in [`crate::state::RunStage`]).
//!
//! An Acting claim has a lease too. The run that holds it starts no send after
//! `lease − recvWindow − 2 s` (its [`SubmitPolicy::send_until`]), so once the lease has passed no
//! order of it can still be accepted by the exchange, and a lookup that finds no entry is final:
//! a rerun then takes the candle back, drops the never-sent PENDING record and evaluates it
//! again. Without that, a run killed between its PENDING write and its order lost the signal.

use super::{AccountRuntime, Engine, EngineError, JobReport, Outcome};
use crate::domain::{PositionKey, PositionStatus};
use crate::orders::SubmitPolicy;
use crate::state::{Claim, RunKey, RunMarker, RunStage};
use std::time::{Duration, Instant};

/// Slack between the end of an Acting run's sends and its lease, beyond `recvWindow`: the two
/// runs' estimates of the exchange clock may differ by about that.
const LEASE_SLACK_MS: i64 = 2_000;

/// A candle claim this run holds: the marker's current version fences every write of it.
#[derive(Debug, Clone)]
pub struct HeldClaim {
    pub run: RunKey,
    pub version: u64,
    pub claimed_at: i64,
    /// Moved to [`RunStage::Acting`]: an order has been (or is being) sent.
    pub acting: bool,
    /// Taken over from a run that stopped before sending anything.
    pub took_over: bool,
    /// When this process claimed it (Acting's lease is counted from the move to Acting).
    pub started: Instant,
    /// Once Acting: no send may start after this.
    pub send_until: Option<Instant>,
}

impl HeldClaim {
    fn new(run: &RunKey, version: u64, now: i64, took_over: bool) -> HeldClaim {
        HeldClaim {
            run: run.clone(),
            version,
            claimed_at: now,
            acting: false,
            took_over,
            started: Instant::now(),
            send_until: None,
        }
    }
}

impl Engine {
    /// Claim a candle (see [`crate::state::StateRepo::claim_run`]). `Ok(Err(outcome))` when there is nothing to
    /// do for it; an error when another run still holds it within its lease (a retry after the
    /// lease takes it over if that run died).
    pub(crate) async fn claim(
        &self,
        acct: &AccountRuntime,
        run: &RunKey,
        now: i64,
    ) -> Result<Result<HeldClaim, Outcome>, EngineError> {
        let lease = self.config.jobs.claim_lease_secs as i64 * 1000;
        match self.repo.claim_run(run, now, lease).await? {
            Claim::Held { version, took_over } => {
                if let Some(m) = &took_over {
                    tracing::warn!(claimed_at = m.claimed_at, lease_until = m.lease_until, "took over the claim of a run that stopped before sending any order");
                }
                Ok(Ok(HeldClaim::new(run, version, now, took_over.is_some())))
            }
            Claim::Taken(m) => match m.stage {
                RunStage::Done => Ok(Err(Outcome::Skipped(
                    "already evaluated by an earlier run; nothing to do".into(),
                ))),
                RunStage::Acting if m.lease_until != 0 && m.lease_until < now => {
                    self.take_back_acting(acct, run, &m, now).await
                }
                RunStage::Acting => Ok(Err(Outcome::Skipped(
                    "another run is acting on this candle (orders sent); the sync job resolves them".into(),
                ))),
                RunStage::Evaluating => Err(EngineError::ClaimedElsewhere {
                    until: m.lease_until,
                }),
            },
        }
    }

    /// An Acting claim past its lease: when the candle's PENDING entry is not on the exchange
    /// (no order of that run can be accepted any more), take the candle back and drop the
    /// record; otherwise the sync resolves what was sent.
    async fn take_back_acting(
        &self,
        acct: &AccountRuntime,
        run: &RunKey,
        m: &RunMarker,
        now: i64,
    ) -> Result<Result<HeldClaim, Outcome>, EngineError> {
        let key = PositionKey {
            account: run.account.clone(),
            strategy: run.strategy.clone(),
            symbol: run.symbol.clone(),
        };
        let pending = self.repo.position(&key).await?.filter(|v| {
            v.value.status == PositionStatus::Pending && v.value.signal_open_time == run.open_time
        });
        let Some(pending) = pending else {
            return Ok(Err(Outcome::Skipped(
                "another run acted on this candle (its lease has passed); the sync job resolves its orders".into(),
            )));
        };
        let id = &pending.value.entry_client_id;
        if acct
            .exchange
            .order_by_client_id(&run.symbol, id)
            .await?
            .is_some()
        {
            return Ok(Err(Outcome::Skipped(format!(
                "another run sent this candle's entry {id}; the sync job adopts it"
            ))));
        }
        let lease = self.config.jobs.claim_lease_secs as i64 * 1000;
        let Some((version, _)) = self.repo.take_over_acting(run, now, lease).await? else {
            return Ok(Err(Outcome::Skipped(
                "another run took this candle back first; nothing to do".into(),
            )));
        };
        self.repo.delete_position(&key, pending.version).await?;
        tracing::warn!(client_id = %id, acting_lease_until = m.lease_until, "took back the candle of a run that died before its entry reached the exchange; its PENDING record is dropped");
        Ok(Ok(HeldClaim::new(run, version, now, true)))
    }

    pub(super) async fn finish_claim(&self, c: &HeldClaim, outcome: Outcome) -> Outcome {
        if let Err(e) = self
            .repo
            .finish_run(&c.run, c.version, c.claimed_at, &outcome.to_string())
            .await
        {
            tracing::warn!(error = %e, "could not record the run outcome");
        }
        outcome
    }

    pub(crate) async fn release_claim(&self, c: &HeldClaim) {
        if let Err(e) = self.repo.release_run(&c.run, c.version).await {
            tracing::warn!(error = %e, "could not release the run marker");
        }
    }

    /// Right before each market order: the first one of an evaluation moves its candle's claim
    /// to Acting, fenced by the claim's version and with a lease from now, so a run whose claim
    /// was taken over (it outlived its lease) sends nothing. Returns the submission policy whose
    /// sends stop in time for that lease.
    pub(super) async fn before_send(
        &self,
        report: &mut JobReport,
    ) -> Result<SubmitPolicy, EngineError> {
        let lease_ms = self.config.jobs.claim_lease_secs * 1000;
        let recv_ms = self.config.binance.recv_window_ms;
        if let Some(c) = report.claim.as_mut().filter(|c| !c.acting) {
            let acting_at = c.claimed_at + c.started.elapsed().as_millis() as i64;
            let lease_until = acting_at + lease_ms as i64;
            c.version = match self
                .repo
                .mark_acting(&c.run, c.version, c.claimed_at, lease_until)
                .await
            {
                Ok(v) => v,
                Err(e) if e.is_conflict() => return Err(EngineError::TakenOver),
                Err(e) => return Err(e.into()),
            };
            c.acting = true;
            let sends_for = lease_ms.saturating_sub(recv_ms + LEASE_SLACK_MS as u64);
            c.send_until = Some(Instant::now() + Duration::from_millis(sends_for));
        }
        report.orders_attempted += 1;
        Ok(SubmitPolicy {
            send_until: report.claim.as_ref().and_then(|c| c.send_until),
            ..self.timing.submit
        })
    }
}
