//! EMA_CROSS: the reference strategy and the template for new ones.
//!
//! EMA(fast) and EMA(slow) of closes (TA-Lib seeding). A cross up at the close of candle i
//! (`diff[i-1] ≤ 0 < diff[i]`, diff = fast − slow) means: be long from the open of candle i+1,
//! closing any short; a cross down is the mirror. After the first cross the strategy is always in
//! the market, except after a protective stop, when it waits for the next cross (unless
//! `reenter_after_stop`). A position on the wrong side of the trend (a missed evaluation) is
//! reversed at the next evaluation.

use super::{
    parse_params, Action, Condition, Context, Decision, StopSpec, Strategy, StrategyError,
};
use crate::domain::{Candle, Side};
use crate::indicators::Ema;
use rust_decimal::Decimal;
use serde::Deserialize;

/// Parameters (`[strategies.params]` in config).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub fast: usize,
    pub slow: usize,
    /// Protective stop distance as a fraction of the fill price; 0 disables the stop.
    pub stop_loss_pct: Decimal,
    /// After a stop-out, re-enter in the trend's direction at the next evaluation instead of
    /// waiting for the next cross.
    pub reenter_after_stop: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            fast: 50,
            slow: 200,
            stop_loss_pct: Decimal::new(3, 2),
            reenter_after_stop: false,
        }
    }
}

pub fn build(params: &toml::Table, path: &str) -> Result<Box<dyn Strategy>, StrategyError> {
    let p: Params = parse_params(params, path)?;
    if p.fast == 0 || p.slow == 0 || p.fast >= p.slow {
        return Err(StrategyError::BadParams {
            path: format!("{path}.fast"),
            message: format!("need 0 < fast < slow, got fast={} slow={}", p.fast, p.slow),
        });
    }
    if p.stop_loss_pct < Decimal::ZERO || p.stop_loss_pct >= Decimal::ONE {
        return Err(StrategyError::BadParams {
            path: format!("{path}.stop_loss_pct"),
            message: format!("expected a fraction in [0, 1), got {}", p.stop_loss_pct),
        });
    }
    Ok(Box::new(EmaCross::new(p)))
}

#[derive(Clone, Debug)]
pub struct EmaCross {
    p: Params,
    fast: Ema,
    slow: Ema,
    prev_diff: Option<f64>,
    diff: Option<f64>,
    candles: usize,
}

impl EmaCross {
    pub fn new(p: Params) -> Self {
        EmaCross {
            fast: Ema::new(p.fast),
            slow: Ema::new(p.slow),
            p,
            prev_diff: None,
            diff: None,
            candles: 0,
        }
    }

    fn stop(&self) -> Option<StopSpec> {
        (self.p.stop_loss_pct > Decimal::ZERO).then_some(StopSpec::Percent(self.p.stop_loss_pct))
    }
}

/// (cross up, cross down) between the previous and the current fast − slow difference.
fn crosses(prev: f64, diff: f64) -> (bool, bool) {
    (prev <= 0.0 && diff > 0.0, prev >= 0.0 && diff < 0.0)
}

impl Strategy for EmaCross {
    fn name(&self) -> &'static str {
        "EMA_CROSS"
    }

    fn warmup(&self) -> usize {
        self.p.slow + 1
    }

    fn update(&mut self, candle: &Candle) {
        let c = candle.close.to_f64();
        let f = self.fast.update(c);
        let s = self.slow.update(c);
        self.candles += 1;
        self.prev_diff = self.diff;
        self.diff = match (f, s) {
            (Some(f), Some(s)) => Some(f - s),
            _ => None,
        };
    }

    fn decide_action(&self, ctx: &Context<'_>) -> Action {
        let (Some(prev), Some(diff)) = (self.prev_diff, self.diff) else {
            return Action::Hold;
        };
        let (cross_up, cross_down) = crosses(prev, diff);
        let trend = if diff > 0.0 {
            Some(Side::Long)
        } else if diff < 0.0 {
            Some(Side::Short)
        } else {
            None
        };
        let want = if cross_up {
            Some(Side::Long)
        } else if cross_down {
            Some(Side::Short)
        } else {
            None
        };
        let stop = self.stop();
        match (want, ctx.position) {
            (Some(side), None) => Action::Open {
                side,
                stop,
                take_profit: None,
            },
            (Some(side), Some(p)) if p.side != side => Action::Reverse {
                side,
                stop,
                take_profit: None,
            },
            (Some(_), Some(_)) => Action::Hold,
            // No cross on this candle: catch up if the position sits against the trend.
            (None, Some(p)) => match trend {
                Some(t) if t != p.side => Action::Reverse {
                    side: t,
                    stop,
                    take_profit: None,
                },
                _ => Action::Hold,
            },
            (None, None) if self.p.reenter_after_stop => match trend {
                Some(side) => Action::Open {
                    side,
                    stop,
                    take_profit: None,
                },
                None => Action::Hold,
            },
            (None, None) => Action::Hold,
        }
    }

    fn protective_stop(&self, _side: Side) -> Option<StopSpec> {
        self.stop()
    }

    fn decide(&self, ctx: &Context<'_>) -> Decision {
        let (Some(prev), Some(diff)) = (self.prev_diff, self.diff) else {
            return Decision::hold(
                format!("warming up ({}/{} candles)", self.candles, self.warmup()),
                vec![Condition::new(
                    "warmed_up",
                    false,
                    format!("{}/{}", self.candles, self.warmup()),
                )],
            );
        };
        let values = format!(
            "ema{}={:.4} ema{}={:.4} diff={:.4} prev_diff={:.4}",
            self.p.fast,
            self.fast.value().unwrap_or(f64::NAN),
            self.p.slow,
            self.slow.value().unwrap_or(f64::NAN),
            diff,
            prev
        );
        let (cross_up, cross_down) = crosses(prev, diff);
        let conditions = vec![
            Condition::new("cross_up", cross_up, values.clone()),
            Condition::new("cross_down", cross_down, values),
        ];
        let action = self.decide_action(ctx);
        let note = match &action {
            Action::Hold => "no cross".to_string(),
            Action::Open { side, .. } => {
                format!("EMA{}/{} cross → open {side}", self.p.fast, self.p.slow)
            }
            Action::Reverse { side, .. } => {
                format!(
                    "EMA{}/{} cross → reverse to {side}",
                    self.p.fast, self.p.slow
                )
            }
            other => format!("{other:?}"),
        };
        Decision {
            action,
            conditions,
            note,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Price, Qty};
    use crate::strategy::PositionView;

    fn candle(i: i64, close: f64) -> Candle {
        let p = Price::new(Decimal::try_from(close).unwrap());
        Candle {
            open_time: i * 60_000,
            open: p,
            high: p,
            low: p,
            close: p,
            volume: Decimal::ONE,
        }
    }

    fn strat(fast: usize, slow: usize) -> EmaCross {
        EmaCross::new(Params {
            fast,
            slow,
            ..Params::default()
        })
    }

    fn view(side: Side) -> PositionView {
        PositionView {
            side,
            qty: Qty::new(Decimal::ONE),
            entry_price: Price::new(Decimal::ONE),
            opened_at: 0,
            best_price: None,
            stop_loss: None,
            partial_exits_done: 0,
            pyramids_done: 0,
        }
    }

    #[test]
    fn holds_while_warming_up() {
        let mut s = strat(2, 3);
        s.update(&candle(0, 10.0));
        s.update(&candle(1, 10.0));
        s.update(&candle(2, 10.0));
        let d = s.decide(&Context::flat(0));
        assert_eq!(d.action, Action::Hold);
        assert!(!d.conditions[0].held);
    }

    #[test]
    fn cross_up_opens_long_and_reverses_short() {
        let mut s = strat(2, 3);
        // Falling then rising: fast EMA crosses above slow on the jump.
        for (i, c) in [10.0, 9.0, 8.0, 7.0].iter().enumerate() {
            s.update(&candle(i as i64, *c));
        }
        assert_eq!(s.decide(&Context::flat(0)).action, Action::Hold);
        s.update(&candle(4, 20.0));
        let d = s.decide(&Context::flat(0));
        assert!(
            matches!(
                d.action,
                Action::Open {
                    side: Side::Long,
                    stop: Some(_),
                    ..
                }
            ),
            "{d:?}"
        );
        assert!(d.conditions.iter().any(|c| c.name == "cross_up" && c.held));
        let d = s.decide(&Context::holding(&view(Side::Short), 0));
        assert!(matches!(
            d.action,
            Action::Reverse {
                side: Side::Long,
                ..
            }
        ));
        let d = s.decide(&Context::holding(&view(Side::Long), 0));
        assert_eq!(d.action, Action::Hold);
    }

    #[test]
    fn flat_after_stop_waits_for_next_cross_unless_reentry() {
        let mut s = strat(2, 3);
        for (i, c) in [10.0, 9.0, 8.0, 7.0, 20.0, 21.0].iter().enumerate() {
            s.update(&candle(i as i64, *c));
        }
        assert_eq!(s.decide(&Context::flat(0)).action, Action::Hold);
        let mut r = EmaCross::new(Params {
            fast: 2,
            slow: 3,
            reenter_after_stop: true,
            ..Params::default()
        });
        for (i, c) in [10.0, 9.0, 8.0, 7.0, 20.0, 21.0].iter().enumerate() {
            r.update(&candle(i as i64, *c));
        }
        assert!(matches!(
            r.decide(&Context::flat(0)).action,
            Action::Open {
                side: Side::Long,
                ..
            }
        ));
    }

    #[test]
    fn bad_params_name_the_key() {
        let mut t = toml::Table::new();
        t.insert("fats".into(), toml::Value::Integer(3));
        let e = build(&t, "strategies[0].params").err().unwrap();
        assert!(e.to_string().contains("strategies[0].params"), "{e}");
        assert!(e.to_string().contains("fats"), "{e}");
        let mut t = toml::Table::new();
        t.insert("fast".into(), toml::Value::Integer(300));
        let e = build(&t, "strategies[0].params").err().unwrap();
        assert!(e.to_string().contains("fast < slow"), "{e}");
    }
}
