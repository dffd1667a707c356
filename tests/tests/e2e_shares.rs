//! Shares follow fills, through the real `evaluator` and `position-sync` binaries against the
//! Binance-speaking loopback server: a hand-made order on the strategy's symbol is the person's
//! own share, whichever way and however large it is. The strategy's position, its record and its
//! stop stay as they were; the MANUAL share is tracked beside it, and the shares add up to the
//! exchange's net after every sync. A hand-made position that pins the symbol's margin type
//! does not cost the strategy its entry, and a stop swap whose cancel failed is finished by the
//! next sync.

use albra_core::domain::{AccountId, Position, Side};
use albra_tests::binance_server::{FaultKind, FaultRule, When};
use albra_tests::harness::{self, TestConfig, MAIN_KEY};
use rust_decimal::Decimal;

type Env = harness::JobEnv;

fn main_id() -> AccountId {
    AccountId::new("main")
}

/// The open stored positions: the strategy's and the MANUAL one (if any).
async fn shares(env: &Env) -> (Position, Option<Position>) {
    let all: Vec<Position> = env
        .repo()
        .positions(&main_id())
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.value)
        .filter(Position::is_open)
        .collect();
    let strategy = all
        .iter()
        .find(|p| !p.is_manual)
        .cloned()
        .unwrap_or_else(|| panic!("no strategy position left: {all:?}"));
    let manual = all.iter().find(|p| p.is_manual).cloned();
    assert!(all.len() <= 2, "{all:?}");
    (strategy, manual)
}

fn signed(p: &Position) -> Decimal {
    p.side.sign() * p.qty.get()
}

/// The evaluator entered at the first signal and a sync has seen it: the strategy's share and
/// its stop are on the exchange.
async fn entered() -> (Env, Position) {
    let env = Env::at_signal(&TestConfig::default(), 0).await;
    let r = env.evaluator().await;
    assert!(r.ok() && r.stdout.contains("entered"), "{r}");
    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    let (p, manual) = shares(&env).await;
    assert!(manual.is_none());
    assert_eq!(signed(&p), env.server.position(MAIN_KEY, "BTCUSDT"));
    (env, p)
}

/// Checks the state after a sync: the strategy's record unchanged, the MANUAL share as given,
/// the sum equal to the net, no trade recorded, and the strategy's stop still on the exchange.
async fn assert_shares(env: &Env, before: &Position, manual: Option<(Side, Decimal)>) {
    let (p, m) = shares(env).await;
    assert_eq!((p.side, p.qty), (before.side, before.qty), "strategy share");
    assert_eq!(p.entry_client_id, before.entry_client_id);
    assert_eq!(
        m.as_ref().map(|m| (m.side, m.qty.get())),
        manual,
        "MANUAL share"
    );
    let sum = signed(&p) + m.as_ref().map(signed).unwrap_or_default();
    assert_eq!(
        sum,
        env.server.position(MAIN_KEY, "BTCUSDT"),
        "Σ shares = net"
    );
    assert!(env.repo().trades(&main_id()).await.unwrap().is_empty());
    let stop = p.stop_client_id.clone().expect("stop id");
    let open = env.server.open_algo_orders(MAIN_KEY);
    assert!(
        open.iter().any(|a| a["clientAlgoId"] == stop.as_str()),
        "the strategy's stop {stop} is on the exchange: {open:?}"
    );
}

/// The outside campaign's case: the strategy holds a share, the person trades twice its size
/// the other way, so the net turns. By sizes the strategy looked closed (a trade was recorded and
/// its stop cancelled); by fills it still holds its share and the person holds theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_larger_hand_made_order_the_other_way_leaves_the_strategy_share_in_place() {
    let (env, p) = entered().await;
    let other = p.side.opposite();
    let size = p.qty.get() * Decimal::TWO;
    env.server
        .manual_market_order(MAIN_KEY, "BTCUSDT", other.entry_order_side().as_str(), size);
    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert!(s.stdout.contains("MANUAL position found"), "{s}");
    assert!(!s.stdout.contains("size changed"), "{s}");
    assert_shares(&env, &p, Some((other, size))).await;
    // The stop now shares the symbol with an opposite MANUAL share: a plain quantity stop.
    let open = env.server.open_algo_orders(MAIN_KEY);
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["closePosition"], false, "{open:?}");
    assert_eq!(open[0]["reduceOnly"], false, "{open:?}");
    // A second sync changes nothing.
    let (p2, _) = shares(&env).await;
    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert_shares(&env, &p2, Some((other, size))).await;

    // The person closes their own share: it goes, the strategy's stays.
    env.server.manual_market_order(
        MAIN_KEY,
        "BTCUSDT",
        p.side.entry_order_side().as_str(),
        size,
    );
    let s = env.sync().await;
    assert!(s.ok() && s.stdout.contains("is closed"), "{s}");
    assert_shares(&env, &p2, None).await;
}

/// A hand-made partial close of the strategy's size is the person's own (opposite) share, not a
/// smaller strategy position: the strategy's record, size and stop are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_made_partial_close_is_the_persons_share_not_a_smaller_strategy() {
    let (env, p) = entered().await;
    let part = Decimal::new(1, 3);
    assert!(p.qty.get() > part);
    env.server
        .manual_market_order(MAIN_KEY, "BTCUSDT", p.side.exit_order_side().as_str(), part);
    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert!(!s.stdout.contains("size changed"), "{s}");
    assert_shares(&env, &p, Some((p.side.opposite(), part))).await;

    // Closed entirely by hand: a flat net holds no share; the strategy's trade is recorded.
    env.server.manual_market_order(
        MAIN_KEY,
        "BTCUSDT",
        p.side.exit_order_side().as_str(),
        p.qty.get() - part,
    );
    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert_eq!(env.server.position(MAIN_KEY, "BTCUSDT"), Decimal::ZERO);
    let open: Vec<_> = env
        .repo()
        .positions(&main_id())
        .await
        .unwrap()
        .into_iter()
        .filter(|v| v.value.is_open())
        .collect();
    assert!(open.is_empty(), "{open:?}");
    assert_eq!(env.repo().trades(&main_id()).await.unwrap().len(), 1);
    assert!(env.server.open_algo_orders(MAIN_KEY).is_empty());
}

/// The campaign's finding: a hand-made position on the symbol pins its margin type (Binance
/// -4048 on `POST /fapi/v1/marginType`); the entry on the same side goes through under the
/// exchange's margin type instead of the signal being lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_made_position_pinning_the_margin_type_does_not_block_the_entry() {
    let env = Env::at_signal(&TestConfig::default(), 0).await;
    let side = env.signal.side;
    let mine = Decimal::new(2, 3);
    env.server
        .manual_market_order(MAIN_KEY, "BTCUSDT", side.entry_order_side().as_str(), mine);
    let r = env.evaluator().await;
    assert!(r.ok() && r.stdout.contains("entered"), "{r}");
    assert!(env.server.count("POST", "/fapi/v1/marginType") >= 1);
    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    let (p, manual) = shares(&env).await;
    assert_eq!(p.side, side);
    assert_eq!(manual.map(|m| (m.side, m.qty.get())), Some((side, mine)));
    assert_eq!(
        signed(&p) + side.sign() * mine,
        env.server.position(MAIN_KEY, "BTCUSDT")
    );
}

/// A stop swap (closePosition → quantity when a MANUAL share appears) whose cancel of the old
/// stop keeps failing (a CDN 504 page, outcome unknown) is looked up and sent again within the
/// sync; when every try fails two stops are left working, and the next sync cancels the replaced
/// one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_stop_left_open_by_a_failed_cancel_is_cancelled_by_the_next_sync() {
    let (env, p) = entered().await;
    let old = p.stop_client_id.clone().expect("stop id");
    env.server.manual_market_order(
        MAIN_KEY,
        "BTCUSDT",
        p.side.entry_order_side().as_str(),
        Decimal::new(3, 3),
    );
    env.server.add_rule(
        FaultRule::new(
            "DELETE",
            "/fapi/v1/algoOrder",
            FaultKind::Html5xx {
                status: 504,
                apply: false,
            },
        )
        .when(When::Next(10)),
    );
    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert_eq!(
        env.server.count("DELETE", "/fapi/v1/algoOrder"),
        3,
        "sent, looked up, sent again: at most 3 sends"
    );
    let open = env.server.open_algo_orders(MAIN_KEY);
    assert_eq!(open.len(), 2, "the swap's cancel failed: {open:?}");
    env.server.clear_rules();
    let (now, _) = shares(&env).await;
    let new = now.stop_client_id.clone().expect("new stop id");
    assert_ne!(new, old);

    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert!(
        s.stdout.contains(&format!("cancelled the stop {old}")),
        "{s}"
    );
    let open = env.server.open_algo_orders(MAIN_KEY);
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["clientAlgoId"], new.as_str());
    assert_eq!(open[0]["closePosition"], false);
}
