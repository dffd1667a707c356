//! The evaluator's claim on a candle, as the engine holds it: claiming (and taking over a dead
//! run's expired claim), giving it back, finishing it, and moving it to Acting, fenced by its
//! version, right before the first order (the stages live in [`crate::state::RunStage`]).

use super::{iso, Engine, EngineError, JobReport};
use crate::state::{Claim, RunKey, RunStage};

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
}

impl Engine {
    /// Claim a candle (see [`crate::state::StateRepo::claim_run`]). `Ok(Err(line))` when there is nothing to
    /// do for it; an error when another run still holds it within its lease (a retry after the
    /// lease takes it over if that run died).
    pub(super) async fn claim(
        &self,
        run: &RunKey,
        now: i64,
    ) -> Result<Result<HeldClaim, String>, EngineError> {
        let lease = self.config.jobs.claim_lease_secs as i64 * 1000;
        match self.repo.claim_run(run, now, lease).await? {
            Claim::Held { version, took_over } => {
                if let Some(m) = &took_over {
                    tracing::warn!(claimed_at = m.claimed_at, lease_until = m.lease_until, "took over the claim of a run that stopped before sending any order");
                }
                Ok(Ok(HeldClaim {
                    run: run.clone(),
                    version,
                    claimed_at: now,
                    acting: false,
                    took_over: took_over.is_some(),
                }))
            }
            Claim::Taken(m) => match m.stage {
                RunStage::Done => Ok(Err(
                    "already evaluated by an earlier run; nothing to do".into()
                )),
                RunStage::Acting => Ok(Err(
                    "another run is acting on this candle (orders sent); the sync job resolves them".into(),
                )),
                RunStage::Evaluating => Err(EngineError::Other(format!(
                    "claimed by another run until {} (its lease); a rerun after that takes it over if that run has died",
                    iso(m.lease_until)
                ))),
            },
        }
    }

    pub(super) async fn finish_claim(&self, c: &HeldClaim, outcome: String) -> String {
        if let Err(e) = self
            .repo
            .finish_run(&c.run, c.version, c.claimed_at, &outcome)
            .await
        {
            tracing::warn!(error = %e, "could not record the run outcome");
        }
        outcome
    }

    pub(super) async fn release_claim(&self, c: &HeldClaim) {
        if let Err(e) = self.repo.release_run(&c.run, c.version).await {
            tracing::warn!(error = %e, "could not release the run marker");
        }
    }

    /// Right before each market order: the first one of an evaluation moves its candle's claim
    /// to Acting, fenced by the claim's version, so a run whose claim was taken over (it
    /// outlived its lease) sends nothing.
    pub(super) async fn before_send(&self, report: &mut JobReport) -> Result<(), EngineError> {
        if let Some(c) = report.claim.as_mut().filter(|c| !c.acting) {
            c.version = match self.repo.mark_acting(&c.run, c.version, c.claimed_at).await {
                Ok(v) => v,
                Err(e) if e.is_conflict() => {
                    return Err(EngineError::Other(
                        "another run took this candle over (this run outlived its claim's lease); nothing sent".into(),
                    ))
                }
                Err(e) => return Err(e.into()),
            };
            c.acting = true;
        }
        report.orders_attempted += 1;
        Ok(())
    }
}
