//! Strategies: one trait, a registry by name, and the decision record every evaluation produces.
//!
//! A strategy is pure: it is fed closed candles one at a time (`update`) and asked for a decision
//! given the position it holds (`decide`). The live evaluator feeds a fresh instance the fetched
//! history; replay and backtests stream candles into one instance. Both run this same code.
//!
//! Adding a strategy: write one file in this folder implementing [`Strategy`], then add one line to
//! [`REGISTRY`].

use crate::domain::{Candle, Price, Qty, Side};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub mod ema_cross;
pub mod tfpe;
pub mod zlhma_ema_cross;
pub mod zlmacd_ichimoku;

/// One named condition checked by a decision, with the value that decided it.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Condition {
    pub name: String,
    pub held: bool,
    /// Human-readable value(s), e.g. `ema50=101234.5 ema200=100998.1`.
    pub value: String,
}

impl Condition {
    pub fn new(name: impl Into<String>, held: bool, value: impl Into<String>) -> Self {
        Condition {
            name: name.into(),
            held,
            value: value.into(),
        }
    }
}

/// Whether a strategy writes its conditions' names and values and its notes (`decide`) or only
/// decides what holds (`decide_action`, asked on every candle of a backtest, where the texts cost
/// far more than the rules). One code path decides both ways; only the texts are skipped.
#[derive(Clone, Copy)]
pub(crate) struct Texts(pub(crate) bool);

impl Texts {
    /// `text()`, or an empty string (no allocation) when texts are off.
    pub(crate) fn make(self, text: impl FnOnce() -> String) -> String {
        if self.0 {
            text()
        } else {
            String::new()
        }
    }
}

/// Where the protective stop goes, relative to the actual fill (the strategy does not know it).
#[derive(Clone, Copy, PartialEq, Debug, Serialize, Deserialize)]
pub enum StopSpec {
    /// A fraction of the fill price (0.02 = 2 % away).
    Percent(Decimal),
    /// An absolute price distance from the fill (e.g. ATR × 1.5).
    Distance(Decimal),
}

impl StopSpec {
    /// Trigger price of a stop for a position of `side` filled at `fill`.
    pub fn stop_price(self, side: Side, fill: Price) -> Price {
        let d = match self {
            StopSpec::Percent(p) => fill.get() * p,
            StopSpec::Distance(d) => d,
        };
        match side {
            Side::Long => Price::new(fill.get() - d),
            Side::Short => Price::new(fill.get() + d),
        }
    }
    /// Take-profit price at the same distance on the profitable side.
    pub fn target_price(self, side: Side, fill: Price) -> Price {
        self.stop_price(side.opposite(), fill)
    }
}

/// What the strategy wants done at the open of the next candle.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum Action {
    /// Nothing to do.
    Hold,
    /// Open a position (only when flat).
    Open {
        side: Side,
        stop: Option<StopSpec>,
        take_profit: Option<StopSpec>,
    },
    /// Close the whole position.
    Close { reason: String },
    /// Close the current position and open the opposite one.
    Reverse {
        side: Side,
        stop: Option<StopSpec>,
        take_profit: Option<StopSpec>,
    },
    /// Close `fraction` (0–1] of the current quantity (a partial take-profit step); `stage` is the
    /// 1-based step number, recorded so the same step never fires twice.
    PartialClose {
        fraction: Decimal,
        stage: u8,
        reason: String,
    },
    /// Add to the position: `fraction` of the strategy's base entry size (a pyramiding step);
    /// `stage` is the 1-based step number.
    Pyramid { fraction: Decimal, stage: u8 },
    /// Move the protective stop (a trailing stop managed by the jobs); only ever tightens.
    MoveStop { price: Price, reason: String },
}

/// The result of one evaluation: the action, and every condition that was checked with its value.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Decision {
    pub action: Action,
    pub conditions: Vec<Condition>,
    /// One-line summary for notifications and audit logs.
    pub note: String,
}

impl Decision {
    pub fn hold(note: impl Into<String>, conditions: Vec<Condition>) -> Self {
        Decision {
            action: Action::Hold,
            conditions,
            note: note.into(),
        }
    }
    /// `name=value✓ name=value✗ …` for logs.
    pub fn conditions_line(&self) -> String {
        self.conditions
            .iter()
            .map(|c| format!("{}{}[{}]", c.name, if c.held { "✓" } else { "✗" }, c.value))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// What a strategy knows of the position it holds.
#[derive(Clone, PartialEq, Debug)]
pub struct PositionView {
    pub side: Side,
    pub qty: Qty,
    /// Average entry price (moves with pyramid adds).
    pub entry_price: Price,
    pub opened_at: i64,
    /// Best price seen since entry (highest high for a long, lowest low for a short), kept by
    /// the jobs from closed candles.
    pub best_price: Option<Price>,
    /// The protective stop currently on the exchange.
    pub stop_loss: Option<Price>,
    pub partial_exits_done: u8,
    pub pyramids_done: u8,
}

/// Everything a decision may depend on besides the candles fed: the position, the time, and
/// what the jobs know across positions. Built by the engine (live, replay, backtest alike).
#[derive(Clone, Debug)]
pub struct Context<'a> {
    pub position: Option<&'a PositionView>,
    pub now: i64,
    /// When this strategy last opened a position on this account (any symbol), for minimum
    /// intervals between signals.
    pub last_entry_time: Option<i64>,
    /// Open positions this strategy holds on this account (all symbols), for concurrency limits.
    pub open_positions: usize,
}

impl<'a> Context<'a> {
    /// Flat, nothing else known: for tests and tools.
    pub fn flat(now: i64) -> Context<'static> {
        Context {
            position: None,
            now,
            last_entry_time: None,
            open_positions: 0,
        }
    }
    /// Holding `position`, nothing else known.
    pub fn holding(position: &'a PositionView, now: i64) -> Context<'a> {
        Context {
            position: Some(position),
            now,
            last_entry_time: None,
            open_positions: 1,
        }
    }
}

/// A trading strategy. Implementations hold only indicator state derived from the candles fed.
pub trait Strategy: Send {
    /// Registered name (`EMA_CROSS`).
    fn name(&self) -> &'static str;
    /// Number of closed candles needed before `decide` can return anything but `Hold`.
    fn warmup(&self) -> usize;
    /// Feed the next closed candle (strictly increasing open times).
    fn update(&mut self, candle: &Candle);
    /// Decide after the latest candle fed, given the position this strategy holds (if any) and
    /// the rest of the context.
    fn decide(&self, ctx: &Context<'_>) -> Decision;
    /// The action [`Strategy::decide`] would return, without building the explanation. Callers
    /// that drop a HOLD's record (backtests) ask this first and call `decide` only when it acts.
    /// Must always equal `self.decide(ctx).action` (checked for every registered strategy over
    /// real candles in `core/tests/decide_action.rs`); override it only to skip formatting.
    fn decide_action(&self, ctx: &Context<'_>) -> Action {
        self.decide(ctx).action
    }
    /// The protective stop this strategy attaches to a new position of `side`, given the candles fed
    /// so far. Used when the sync job adopts one of our entries whose decision was lost in a crash.
    fn protective_stop(&self, side: Side) -> Option<StopSpec>;
    /// The exits this strategy wants resting on the exchange (take-profit ladder, trailing stop),
    /// from its parameters alone. The engine turns them into prices and quantities from the
    /// actual fill; the strategy's own at-close exits stay as the fallback. Default: none.
    fn exchange_exits(&self) -> ExitPlan {
        ExitPlan::default()
    }
}

/// One step of an exchange-side take-profit ladder.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct TpStep {
    /// Profit over the average entry price that triggers the step (0.05 = +5 %).
    pub profit_pct: Decimal,
    /// Fraction (0–1] of the quantity held when the step fires: the same meaning as
    /// [`Action::PartialClose`]'s `fraction`, so the ladder and the at-close fallback agree.
    pub fraction: Decimal,
    /// 1-based step number, as counted by `partial_exits_done`.
    pub stage: u8,
}

/// An exchange-side trailing stop (Binance TRAILING_STOP_MARKET).
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Trailing {
    /// Profit over the average entry price at which the trail activates (0.05 = +5 %).
    pub activation_pct: Decimal,
    /// Retracement from the best price since activation that fires it (0.02 = 2 %).
    pub callback_pct: Decimal,
}

impl Trailing {
    /// A trailing stop Binance can express (its `callbackRate` range and step, see
    /// [`crate::orders::callback_rate`]), or `None`: then the strategy manages it at candle close.
    pub fn expressible(activation_pct: Decimal, callback_pct: Decimal) -> Option<Trailing> {
        (activation_pct >= Decimal::ZERO && crate::orders::callback_rate(callback_pct).is_some())
            .then_some(Trailing {
                activation_pct,
                callback_pct,
            })
    }
}

/// The exits a strategy keeps on the exchange while it holds a position.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct ExitPlan {
    /// Increasing profit levels, stages 1, 2, …
    pub take_profits: Vec<TpStep>,
    pub trailing: Option<Trailing>,
}

impl ExitPlan {
    pub fn is_empty(&self) -> bool {
        self.take_profits.is_empty() && self.trailing.is_none()
    }
}

/// Errors building a strategy from config.
#[derive(thiserror::Error, Debug, PartialEq)]
pub enum StrategyError {
    #[error("unknown strategy `{name}` (valid: {valid})")]
    Unknown { name: String, valid: String },
    #[error("{path}: {message}")]
    BadParams { path: String, message: String },
}

/// Constructor: parameters table from config and its key path (for error messages).
pub type Builder = fn(&toml::Table, &str) -> Result<Box<dyn Strategy>, StrategyError>;

/// Every strategy by name. Adding a strategy = one file + one line here.
pub const REGISTRY: &[(&str, Builder)] = &[
    ("EMA_CROSS", ema_cross::build),
    ("TFPE", tfpe::build),
    ("ZLMACD_ICHIMOKU", zlmacd_ichimoku::build),
    ("ZLHMA_EMA_CROSS", zlhma_ema_cross::build),
];

/// Registered names, for help texts and error messages.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|(n, _)| *n).collect()
}

/// Build a strategy by name with its parameters (`path` names the config table for errors).
pub fn build(
    name: &str,
    params: &toml::Table,
    path: &str,
) -> Result<Box<dyn Strategy>, StrategyError> {
    match REGISTRY.iter().find(|(n, _)| *n == name) {
        Some((_, b)) => b(params, path),
        None => Err(StrategyError::Unknown {
            name: name.to_string(),
            valid: names().join(", "),
        }),
    }
}

/// Deserialize a strategy's parameter table into its typed params, rejecting unknown keys, with the
/// key path in the error (`strategies[0].params.fast: invalid type …`).
pub fn parse_params<T: serde::de::DeserializeOwned>(
    params: &toml::Table,
    path: &str,
) -> Result<T, StrategyError> {
    let value = toml::Value::Table(params.clone());
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(value, &mut track);
    T::deserialize(de).map_err(|e| StrategyError::BadParams {
        path: {
            let p = track.path().to_string();
            if p == "." || p.is_empty() {
                path.to_string()
            } else {
                format!("{path}.{p}")
            }
        },
        message: e.to_string(),
    })
}
