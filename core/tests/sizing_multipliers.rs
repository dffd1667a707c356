//! The optional market-regime and volatility-target multipliers, through the engine: the same
//! EMA_CROSS entry on real candles, sized with each switched on, against the same entry with both
//! off. The entry quantity must scale by exactly the multiplier `risk` computes from the closes
//! the evaluator saw (within one lot of rounding), and the entry's report line must say why.

mod common;

use albra_core::domain::{AccountId, Timeframe};
use albra_core::fastpath::typed_state::TypedState;
use albra_core::risk;
use albra_core::state::StateRepo;
use albra_core::strategy::{self, Action, Context};
use rust_decimal::Decimal;
use std::sync::Arc;

/// Evaluate the first EMA_CROSS signal of the sample with `extra` config appended; the entry's
/// quantity, the report line, and the closes the sizing looked at (newest last).
async fn entry(extra: &str) -> (Decimal, String, Vec<Decimal>) {
    let series = common::perp_15m();
    let mut s = strategy::build("EMA_CROSS", &toml::Table::new(), "t").unwrap();
    let signal = series
        .candles
        .iter()
        .position(|c| {
            s.update(c);
            matches!(s.decide(&Context::flat(0)).action, Action::Open { .. })
        })
        .expect("a signal in the sample");
    let open_time = series.candles[signal].open_time;
    let closes: Vec<Decimal> = series.candles[..=signal]
        .iter()
        .map(|c| c.close.get())
        .collect();
    let now = open_time + Timeframe::M15.millis() + 3_000;
    let (engine, _) = common::paper_engine(
        &common::ema_cross_15m("0.01", extra),
        series,
        now,
        StateRepo::over(Arc::new(TypedState::default())),
    );
    let r = engine.evaluate(Timeframe::M15, now).await;
    assert!(r.ok(), "{r:?}");
    let line = r.line_texts().join("\n");
    let pos = engine
        .repo
        .positions(&AccountId::new("main"))
        .await
        .unwrap();
    assert_eq!(pos.len(), 1, "one entry: {line}");
    (pos[0].value.qty.get(), line, closes)
}

fn tail(closes: &[Decimal], lookback: usize) -> &[Decimal] {
    &closes[closes.len().saturating_sub(lookback + 1)..]
}

/// `with` ≈ `base × mult` within one lot (0.001 BTC) of rounding down.
fn assert_scaled(base: Decimal, with: Decimal, mult: Decimal, what: &str) {
    let want = base * mult;
    let lot = Decimal::new(1, 3);
    assert!(
        (with - want).abs() <= lot,
        "{what}: qty {with} vs base {base} × {mult} = {want}"
    );
}

#[tokio::test]
async fn regime_and_volatility_multipliers_scale_the_entry() {
    let (base, base_line, closes) = entry("").await;
    assert!(!base_line.contains("market regime") && !base_line.contains("volatility target"));

    // Regime: a range of 0.2–1.5 with a low trend threshold so the multiplier is far from 1.
    let (with, line, _) = entry(
        "[risk.regime]\nenabled = true\nlookback = 40\nmin_multiplier = 0.2\nmax_multiplier = 1.5\ntrend_er = 0.9\n",
    )
    .await;
    let cfg = albra_core::config::RegimeConfig {
        enabled: true,
        lookback: 40,
        min_multiplier: Decimal::new(2, 1),
        max_multiplier: Decimal::new(15, 1),
        trend_er: Decimal::new(9, 1),
    };
    let (m, _) = risk::regime_multiplier(tail(&closes, 40), &cfg).expect("enough closes");
    assert!(m != Decimal::ONE, "a multiplier of 1 would prove nothing");
    assert!(line.contains("market regime"), "{line}");
    assert_scaled(base, with, m, "regime");

    // Volatility targeting: a 5 % annual target on 15m BTC scales the entry well down.
    let (with, line, _) = entry(
        "[risk.volatility]\nenabled = true\ntarget_annual = 0.05\nlookback = 60\nmin_multiplier = 0.1\nmax_multiplier = 1.0\n",
    )
    .await;
    let cfg = albra_core::config::VolatilityConfig {
        enabled: true,
        target_annual: Decimal::new(5, 2),
        lookback: 60,
        min_multiplier: Decimal::new(1, 1),
        max_multiplier: Decimal::ONE,
    };
    let (v, _) = risk::volatility_multiplier(tail(&closes, 60), Timeframe::M15.millis(), &cfg)
        .expect("enough closes");
    assert!(v < Decimal::ONE, "volatility multiplier {v}");
    assert!(line.contains("volatility target"), "{line}");
    assert_scaled(base, with, v, "volatility");
}
