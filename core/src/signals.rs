//! Decisions over recorded candles, for `albra signals`: the strategy is streamed candle by candle
//! exactly as the jobs feed it, and asked to decide after each closed candle. The position it is
//! shown is the one its own decisions would hold (opened at the signal candle's close, tracked for
//! best price, partial and pyramid steps, stop moves); exchange-side stops are not simulated here —
//! that is the backtest's job.

use crate::domain::{Candle, Price, Qty, Side, Timeframe};
use crate::strategy::{Action, Context, Decision, PositionView, Strategy};
use rust_decimal::Decimal;

/// One closed candle and what the strategy decided after it.
pub struct SignalRow {
    pub open_time: i64,
    pub close: Price,
    pub decision: Decision,
}

/// Stream `candles` (closed, at `tf`) through `strategy`.
pub fn run(strategy: &mut dyn Strategy, candles: &[Candle], tf: Timeframe) -> Vec<SignalRow> {
    let mut rows = Vec::with_capacity(candles.len());
    let mut pos: Option<PositionView> = None;
    let mut last_entry: Option<i64> = None;
    for c in candles {
        strategy.update(c);
        let now = c.open_time + tf.millis();
        if let Some(p) = pos.as_mut() {
            let better = match p.side {
                Side::Long => c.high,
                Side::Short => c.low,
            };
            p.best_price = Some(match (p.best_price, p.side) {
                (Some(b), Side::Long) => b.max(better),
                (Some(b), Side::Short) => b.min(better),
                (None, _) => better,
            });
        }
        let ctx = Context {
            position: pos.as_ref(),
            now,
            last_entry_time: last_entry,
            open_positions: usize::from(pos.is_some()),
        };
        let decision = strategy.decide(&ctx);
        let open = |side: Side| PositionView {
            side,
            qty: Qty::new(Decimal::ONE),
            entry_price: c.close,
            opened_at: now,
            best_price: Some(c.close),
            stop_loss: None,
            partial_exits_done: 0,
            pyramids_done: 0,
        };
        match &decision.action {
            Action::Hold => {}
            Action::Open { side, .. } | Action::Reverse { side, .. } => {
                pos = Some(open(*side));
                last_entry = Some(now);
            }
            Action::Close { .. } => pos = None,
            Action::PartialClose {
                fraction, stage, ..
            } => {
                if let Some(p) = pos.as_mut() {
                    p.qty = p.qty * (Decimal::ONE - (*fraction).min(Decimal::ONE));
                    p.partial_exits_done = *stage;
                    if p.qty.is_zero() {
                        pos = None;
                    }
                }
            }
            Action::Pyramid { stage, .. } => {
                if let Some(p) = pos.as_mut() {
                    p.pyramids_done = *stage;
                }
            }
            Action::MoveStop { price, .. } => {
                if let Some(p) = pos.as_mut() {
                    p.stop_loss = Some(*price);
                }
            }
        }
        rows.push(SignalRow {
            open_time: c.open_time,
            close: c.close,
            decision,
        });
    }
    rows
}

/// The action as one word or phrase: `HOLD`, `OPEN LONG`, `REVERSE SHORT`, `CLOSE`, `PARTIAL 1`, …
pub fn action_label(a: &Action) -> String {
    match a {
        Action::Hold => "HOLD".into(),
        Action::Open { side, .. } => format!("OPEN {side}"),
        Action::Reverse { side, .. } => format!("REVERSE {side}"),
        Action::Close { .. } => "CLOSE".into(),
        Action::PartialClose { stage, .. } => format!("PARTIAL {stage}"),
        Action::Pyramid { stage, .. } => format!("PYRAMID {stage}"),
        Action::MoveStop { price, .. } => format!("MOVE STOP {price}"),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// CSV: `open_time,close,action,note,conditions_held,conditions` with conditions as
/// `name=yes|no:value` joined by `; `.
pub fn write_csv(rows: &[SignalRow], w: &mut impl std::io::Write) -> std::io::Result<()> {
    writeln!(w, "open_time,close,action,note,conditions_held,conditions")?;
    for r in rows {
        let held = r.decision.conditions.iter().filter(|c| c.held).count();
        let conds = r
            .decision
            .conditions
            .iter()
            .map(|c| {
                format!(
                    "{}={}:{}",
                    c.name,
                    if c.held { "yes" } else { "no" },
                    c.value
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        writeln!(
            w,
            "{},{},{},{},{held},{}",
            r.open_time,
            r.close,
            csv_field(&action_label(&r.decision.action)),
            csv_field(&r.decision.note),
            csv_field(&conds)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy;

    #[test]
    fn ema_cross_rows_alternate_and_name_their_conditions() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/BTCUSDT-perp-15m.csv");
        let series = crate::data::load_csv(&path).unwrap();
        let candles = &series.candles[..3000];
        let mut s = strategy::build("EMA_CROSS", &toml::Table::new(), "t").unwrap();
        let rows = run(s.as_mut(), candles, Timeframe::M15);
        assert_eq!(rows.len(), 3000);
        let actions: Vec<String> = rows
            .iter()
            .map(|r| action_label(&r.decision.action))
            .filter(|a| a != "HOLD")
            .collect();
        assert!(actions.len() >= 4, "{actions:?}");
        assert!(actions[0].starts_with("OPEN"), "{actions:?}");
        // After the first signal every cross reverses the virtual position.
        assert!(
            actions[1..].iter().all(|a| a.starts_with("REVERSE")),
            "{actions:?}"
        );
        let mut out = Vec::new();
        write_csv(&rows, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("open_time,close,action,note,conditions_held,conditions\n"));
        assert!(text.contains("cross_up=yes:"), "conditions are written");
        assert_eq!(text.lines().count(), 3001);
    }
}
