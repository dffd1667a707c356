//! The reduced fault campaign inside `make test`: a fixed seed, 40 scenarios of the real
//! `evaluator` and `position-sync` against the loopback Binance server (`make chaos` runs the
//! full one). Fails on any duplicate, unprotected position, lost signal, hung job, key leak,
//! unowned position, half-written record, unseen fault, entry against MANUAL or panic, printing
//! every failing scenario with its transcript and the command that reruns it alone.

use albra_tests::chaos::{campaign, Settings};

/// Fixed so a failure here is the same failure on every machine.
const SEED: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_fault_campaign_finds_no_violation() {
    let tally = campaign(&Settings {
        seed: SEED,
        scenarios: 40,
        from: 0,
        jobs: 6,
        min_faults: 0,
        progress_every: 0,
    })
    .await;
    let report = tally.render();
    assert_eq!(tally.scenarios, 40, "{report}");
    assert!(
        tally.faults >= 60,
        "too few faults fired for the campaign to mean much:\n{report}"
    );
    assert!(tally.disruptions.kills > 0, "{report}");
    assert!(tally.passed(), "{report}");
}
