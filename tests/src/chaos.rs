//! A seeded fault campaign against the real `evaluator` and `position-sync` binaries (issue 20,
//! point 4): each scenario runs the jobs against its own loopback Binance server and state, under
//! faults drawn from every kind on every endpoint the jobs call, kills at step boundaries,
//! concurrent and repeated runs, hand-made positions and hand-deleted stops, clock jumps and
//! rate-limit storms; an independent checker then reads the server's records and the state.
//!
//! One job per module: [`rng`] (the seeded generator), [`scenario`] (what a seed makes),
//! [`jobs`] (running a binary under a time cap or killing it), [`play`] (one scenario, start to
//! clean sync), [`check`] (the checker), [`report`] (the figures). This file runs the campaign:
//! scenarios in parallel, until the asked number of scenarios and faults is reached.

pub mod check;
pub mod jobs;
pub mod play;
pub mod report;
pub mod rng;
pub mod scenario;

use report::{ScenarioResult, Tally};
use scenario::Scenario;
use std::sync::Arc;
use std::time::Instant;

/// What to run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Campaign seed: with a scenario's index it determines the scenario.
    pub seed: u64,
    /// Scenarios to run at least.
    pub scenarios: usize,
    /// Index of the first scenario (rerun one failure with `from = index, scenarios = 1`).
    pub from: usize,
    /// Scenarios in flight at once (each runs its own server and processes).
    pub jobs: usize,
    /// Keep adding scenarios until this many faults have fired.
    pub min_faults: usize,
    /// Print a progress line every this many scenarios (0: never).
    pub progress_every: usize,
}

/// Plays and checks one scenario.
pub async fn run_one(sc: Scenario, fixture: &play::Fixture) -> ScenarioResult {
    let played = play::play(sc, fixture).await;
    let findings = check::check(&played).await;
    ScenarioResult::new(&played, findings)
}

/// Runs the campaign and returns its tally (print it with [`Tally::render`]).
pub async fn campaign(s: &Settings) -> Tally {
    let started = Instant::now();
    let fixture = Arc::new(play::Fixture::load());
    let mut tally = Tally::new(s.seed);
    let mut set = tokio::task::JoinSet::new();
    let mut next = s.from;
    let enough =
        |t: &Tally, launched: usize| launched >= s.from + s.scenarios && t.faults >= s.min_faults;
    loop {
        while set.len() < s.jobs.max(1) && !enough(&tally, next) {
            let sc = Scenario::generate(s.seed, next);
            let f = fixture.clone();
            set.spawn(async move { run_one(sc, &f).await });
            next += 1;
        }
        let Some(done) = set.join_next().await else {
            break;
        };
        let result = done.expect("a scenario task panicked");
        tally.add(result);
        if tally.scenarios.checked_rem(s.progress_every) == Some(0) {
            eprintln!(
                "[chaos] {} scenarios, {} faults, {} violations, {:.0} s",
                tally.scenarios,
                tally.faults,
                tally.violations(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    tally.wall = started.elapsed();
    tally
}
