//! `make bench-live`'s measurement on its smallest case (one symbol, one account, 5 ms added per
//! request): the real evaluator and position-sync run, and the counting means something (the
//! trading close sends an entry and its stop, the quiet jobs send none, the round trips before
//! each are at least one and no more than the requests, the weights add up per account).

use albra_tests::bench_live::{run_case, Case, Job};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smallest_case_counts_requests_weight_and_round_trips() {
    let latency = Duration::from_millis(5);
    let figures = run_case(
        Case {
            symbols: 1,
            accounts: 1,
        },
        latency,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        figures.iter().map(|f| f.job).collect::<Vec<_>>(),
        Job::ALL.to_vec()
    );
    for f in &figures {
        assert!(f.requests > 0, "{f:?}");
        assert!(f.weight > 0, "{f:?}");
        assert_eq!(f.weight_by_account.values().sum::<u64>(), f.weight, "{f:?}");
        // Every request waited at least the added latency.
        assert!(
            f.wall >= latency * f.to_stop.map_or(1, |r| r.by_chain as u32),
            "{f:?}"
        );
    }
    let trading = &figures[0];
    assert_eq!(trading.orders, 1, "{trading:?}");
    assert!(trading.algo_orders >= 1, "{trading:?}");
    let (entry, stop) = (trading.to_entry.unwrap(), trading.to_stop.unwrap());
    let requests = trading.requests as u64;
    for rt in [entry, stop] {
        assert!((1..=requests).contains(&rt.by_chain), "{trading:?}");
        // Each link of the chain waited the latency, so the time says at least as many.
        let by_time = rt.by_time.expect("latency is set");
        assert!(by_time >= rt.by_chain, "{trading:?}");
    }
    assert!(
        stop.by_chain > entry.by_chain,
        "the stop waits for the fill: {trading:?}"
    );
    for quiet in &figures[1..] {
        assert_eq!((quiet.orders, quiet.algo_orders), (0, 0), "{quiet:?}");
        assert!(quiet.to_entry.is_none() && quiet.to_stop.is_none());
    }
    // The quiet sync signs with the main account's key.
    assert!(
        figures[2]
            .weight_by_account
            .get("main")
            .copied()
            .unwrap_or(0)
            > 0,
        "{:?}",
        figures[2]
    );
}
