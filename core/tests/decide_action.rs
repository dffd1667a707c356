//! `Strategy::decide_action` is what backtests ask first (a HOLD there skips building the
//! explanation), so it must equal `decide(ctx).action` for every registered strategy, on every
//! candle and in every context: flat, long or short (fresh, in profit with partial exits and
//! pyramid adds done, in loss), right after an entry and long after one, and at each concurrency
//! count. Checked over real candles with each strategy's default parameters.

use albra_core::data::load_csv;
use albra_core::domain::{Price, Qty, Side};
use albra_core::strategy::{self, Action, Context, PositionView};
use rust_decimal::Decimal;
use std::path::Path;

fn views(entry: Decimal, opened_at: i64, close: Decimal) -> Vec<PositionView> {
    let mut out = Vec::new();
    for side in [Side::Long, Side::Short] {
        for (k, (partials, pyramids)) in [(0u8, 0u8), (1, 1), (3, 3)].into_iter().enumerate() {
            // Entries below, at and above the current close: in profit and in loss either way.
            let moved = entry * Decimal::new(100 + 6 * k as i64 - 6, 2);
            let best = if side == Side::Long {
                moved.max(close) * Decimal::new(102, 2)
            } else {
                moved.min(close) * Decimal::new(98, 2)
            };
            out.push(PositionView {
                side,
                qty: Qty::new(Decimal::new(15, 3)),
                entry_price: Price::new(moved),
                opened_at,
                best_price: Some(Price::new(best)),
                stop_loss: Some(Price::new(if side == Side::Long {
                    moved * Decimal::new(97, 2)
                } else {
                    moved * Decimal::new(103, 2)
                })),
                partial_exits_done: partials,
                pyramids_done: pyramids,
            });
        }
    }
    out
}

fn check(file: &str, limit: usize) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data")
        .join(file);
    let series = load_csv(&path).expect("sample data");
    let tf = series.timeframe.millis();
    for (name, params) in variants() {
        let mut s = strategy::build(name, &params, "params").expect("valid parameters");
        let (mut checked, mut acting, mut closing) = (0usize, 0usize, 0usize);
        for (i, c) in series.candles.iter().take(limit).enumerate() {
            s.update(c);
            let now = c.open_time + tf + 3_000;
            let entry = series.candles[i.saturating_sub(30)].close.get();
            let vs = views(entry, c.open_time - 30 * tf, c.close.get());
            let mut ctxs: Vec<Context<'_>> = Vec::new();
            for open_positions in [0, 1, 2, 3] {
                for last in [None, Some(now - tf), Some(now - 30 * tf)] {
                    ctxs.push(Context {
                        position: None,
                        now,
                        last_entry_time: last,
                        open_positions,
                    });
                }
            }
            for v in &vs {
                for last in [Some(v.opened_at), Some(now - tf)] {
                    ctxs.push(Context {
                        position: Some(v),
                        now,
                        last_entry_time: last,
                        open_positions: 1,
                    });
                }
            }
            for ctx in &ctxs {
                let full = s.decide(ctx).action;
                assert_eq!(
                    s.decide_action(ctx),
                    full,
                    "{name} {file} candle {i} ({}): context {ctx:?}",
                    c.open_time
                );
                checked += 1;
                acting += usize::from(full != Action::Hold);
                closing += usize::from(matches!(
                    full,
                    Action::Close { .. } | Action::PartialClose { .. } | Action::MoveStop { .. }
                ));
            }
        }
        // The comparison means something only if the strategy acted in some of the contexts.
        assert!(
            acting > 0,
            "{name} {file}: no context produced an action in {checked} checks"
        );
        // Closes, partial closes and stop moves carry their reason as text, which the
        // comparison covers only if some happen. EMA_CROSS only reverses; TFPE's exits are
        // optional and off by default, so the variant with them on covers it.
        if name != "EMA_CROSS" && (name != "TFPE" || !params.is_empty()) {
            assert!(
                closing > 0,
                "{name} {file} {params}: no action with a reason in {checked} checks"
            );
        }
    }
}

/// Every registered strategy with its defaults, and TFPE with its optional exits switched on.
fn variants() -> Vec<(&'static str, toml::Table)> {
    let mut out: Vec<_> = strategy::names()
        .iter()
        .map(|n| (*n, toml::Table::new()))
        .collect();
    let exits: toml::Table =
        toml::from_str("time_exit_bars = 12\nexit_on_middle_cross = true").expect("params");
    out.push(("TFPE", exits));
    out
}

#[test]
fn decide_action_equals_decide_on_spot_1h() {
    check("BTCUSDT-spot-1h.csv", 4_000);
}

#[test]
fn decide_action_equals_decide_on_perp_15m() {
    check("BTCUSDT-perp-15m.csv", 4_000);
}
