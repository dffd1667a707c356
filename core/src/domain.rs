//! Domain vocabulary shared by every layer: money newtypes (Decimal, never f64), symbols, sides,
//! timeframes, candles, positions, orders and trade records. Pure data, no I/O.

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Powers of ten as f64 for every Decimal scale (0–28): exact up to 10^22, correctly rounded
/// above.
const POW10_F64: [f64; 29] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22, 1e23, 1e24, 1e25, 1e26, 1e27, 1e28,
];

/// `d` as f64, bit for bit what `rust_decimal`'s `to_f64` gives, faster for the values prices and
/// quantities take: a mantissa below 2^40 with at most 22 decimals is one correctly rounded
/// division of two exact f64s, which is where `rust_decimal`'s own rounding step lands for them
/// (its intermediate error there is far below half a unit). Indicators read every candle this
/// way; other values take `rust_decimal`'s path.
pub fn decimal_to_f64(d: Decimal) -> f64 {
    let m = d.mantissa();
    let scale = d.scale() as usize;
    // Zero keeps rust_decimal's path: it returns −0.0 for a negative zero with decimals.
    if m != 0 && scale <= 22 && m.unsigned_abs() < 1u128 << 40 {
        // Through i64: the same exact value, without the 128-bit conversion routine.
        return m as i64 as f64 / POW10_F64[scale];
    }
    d.to_f64().unwrap_or(f64::NAN)
}

/// `d` as f64 to within a few units in the last place (relative error below 1e-15), for every
/// Decimal and without `rust_decimal`'s slow path: the 96-bit mantissa as two exact-or-rounded
/// halves, one rounded sum and one division (at most four roundings of 2^-53 each, counting the
/// power of ten above 1e22). For comparisons that keep a margin far wider than that
/// (`risk::side_of`); not for values that must equal [`decimal_to_f64`].
pub fn decimal_to_f64_approx(d: Decimal) -> f64 {
    const TWO_64: f64 = 18_446_744_073_709_551_616.0;
    let m = d.mantissa().unsigned_abs();
    let v = ((m >> 64) as u64 as f64 * TWO_64 + m as u64 as f64) / POW10_F64[d.scale() as usize];
    if d.is_sign_negative() {
        -v
    } else {
        v
    }
}

/// `a.cmp(&b)` for the common case (scales at most nine apart, as prices read from one file are)
/// as one comparison of the signed mantissas, the one at the smaller scale first brought to the
/// other's (exact in i128: below 2^96 · 10^9 < 2^126). `Decimal`'s own comparison costs several
/// times more, and a backtest compares a price on every candle it holds a position through.
#[inline]
fn decimal_cmp(a: Decimal, b: Decimal) -> std::cmp::Ordering {
    const POW10_I128: [i128; 10] = [
        1,
        10,
        100,
        1_000,
        10_000,
        100_000,
        1_000_000,
        10_000_000,
        100_000_000,
        1_000_000_000,
    ];
    let (sa, sb) = (a.scale() as usize, b.scale() as usize);
    // −0 and 0 both have mantissa 0.
    let (ma, mb) = (a.mantissa(), b.mantissa());
    if sa == sb {
        ma.cmp(&mb)
    } else if sa < sb && sb - sa < POW10_I128.len() {
        (ma * POW10_I128[sb - sa]).cmp(&mb)
    } else if sb < sa && sa - sb < POW10_I128.len() {
        ma.cmp(&(mb * POW10_I128[sa - sb]))
    } else {
        a.cmp(&b)
    }
}

macro_rules! decimal_newtype {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Decimal);

        impl Ord for $name {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                decimal_cmp(self.0, other.0)
            }
        }
        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl $name {
            pub const ZERO: $name = $name(Decimal::ZERO);
            pub const fn new(d: Decimal) -> Self {
                $name(d)
            }
            pub const fn get(self) -> Decimal {
                self.0
            }
            /// Lossy view for indicators and statistics only; never feed it back into an order.
            pub fn to_f64(self) -> f64 {
                decimal_to_f64(self.0)
            }
            pub fn is_zero(self) -> bool {
                self.0.is_zero()
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.normalize(), f)
            }
        }
        impl FromStr for $name {
            type Err = rust_decimal::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Decimal::from_str_exact(s.trim()).or_else(|_| Decimal::from_scientific(s.trim())).map($name)
            }
        }
        impl From<Decimal> for $name {
            fn from(d: Decimal) -> Self {
                $name(d)
            }
        }

        // Arithmetic: each operator is exactly the one Decimal operation on the inner values
        // (same operands, same order, no rounding of its own).
        impl std::ops::Add for $name {
            type Output = $name;
            fn add(self, rhs: $name) -> $name {
                $name(self.0 + rhs.0)
            }
        }
        impl std::ops::Sub for $name {
            type Output = $name;
            fn sub(self, rhs: $name) -> $name {
                $name(self.0 - rhs.0)
            }
        }
        impl std::ops::Neg for $name {
            type Output = $name;
            fn neg(self) -> $name {
                $name(-self.0)
            }
        }
        impl std::ops::AddAssign for $name {
            fn add_assign(&mut self, rhs: $name) {
                self.0 += rhs.0;
            }
        }
        impl std::ops::SubAssign for $name {
            fn sub_assign(&mut self, rhs: $name) {
                self.0 -= rhs.0;
            }
        }
        impl std::ops::Mul<Decimal> for $name {
            type Output = $name;
            fn mul(self, rhs: Decimal) -> $name {
                $name(self.0 * rhs)
            }
        }
        impl std::ops::Div<Decimal> for $name {
            type Output = $name;
            fn div(self, rhs: Decimal) -> $name {
                $name(self.0 / rhs)
            }
        }
        impl std::iter::Sum for $name {
            /// Folds from zero in iteration order, as `fold(ZERO, |a, b| a + b)` does.
            fn sum<I: Iterator<Item = $name>>(iter: I) -> $name {
                iter.fold($name::ZERO, |a, b| a + b)
            }
        }
        impl<'a> std::iter::Sum<&'a $name> for $name {
            fn sum<I: Iterator<Item = &'a $name>>(iter: I) -> $name {
                iter.fold($name::ZERO, |a, b| a + *b)
            }
        }
    };
}

decimal_newtype!(
    /// A price in quote currency (USDT) per unit of base asset.
    Price
);
decimal_newtype!(
    /// A quantity of the base asset (contracts of a USDⓈ-M perpetual are base units).
    Qty
);
decimal_newtype!(
    /// An amount of quote currency (USDT): notional, equity, PnL, fees.
    Notional
);

impl Qty {
    /// Notional value of this quantity at `price`.
    pub fn notional(self, price: Price) -> Notional {
        Notional(self.0 * price.0)
    }
}

impl std::ops::Mul<Price> for Qty {
    type Output = Notional;
    /// `qty * price`, the same as [`Qty::notional`].
    fn mul(self, price: Price) -> Notional {
        self.notional(price)
    }
}

/// A trading pair as Binance names it, e.g. `BTCUSDT`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Symbol(pub String);

impl Symbol {
    pub fn new(s: impl Into<String>) -> Self {
        Symbol(s.into().to_ascii_uppercase())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Account identifier from config (`main`, `sub1`, …).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountId(pub String);
impl AccountId {
    pub fn new(s: impl Into<String>) -> Self {
        AccountId(s.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Strategy name as registered (`EMA_CROSS`, `TFPE`, …); `MANUAL` is reserved for hand-opened positions.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StrategyId(pub String);
impl StrategyId {
    pub const MANUAL: &'static str = "MANUAL";
    pub fn new(s: impl Into<String>) -> Self {
        StrategyId(s.into())
    }
    pub fn manual() -> Self {
        StrategyId(Self::MANUAL.to_string())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn is_manual(&self) -> bool {
        self.0 == Self::MANUAL
    }
}
impl fmt::Debug for StrategyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for StrategyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Direction of a position.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Side {
    Long,
    Short,
}

impl Side {
    pub fn opposite(self) -> Side {
        match self {
            Side::Long => Side::Short,
            Side::Short => Side::Long,
        }
    }
    /// +1 for long, −1 for short.
    pub fn sign(self) -> Decimal {
        match self {
            Side::Long => Decimal::ONE,
            Side::Short => Decimal::NEGATIVE_ONE,
        }
    }
    /// The order side that opens a position of this direction.
    pub fn entry_order_side(self) -> OrderSide {
        match self {
            Side::Long => OrderSide::Buy,
            Side::Short => OrderSide::Sell,
        }
    }
    /// The order side that reduces or closes a position of this direction.
    pub fn exit_order_side(self) -> OrderSide {
        self.entry_order_side().opposite()
    }
}
impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Long => "LONG",
            Side::Short => "SHORT",
        })
    }
}

/// Order side as Binance spells it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum OrderSide {
    Buy,
    Sell,
}
impl OrderSide {
    pub fn opposite(self) -> OrderSide {
        match self {
            OrderSide::Buy => OrderSide::Sell,
            OrderSide::Sell => OrderSide::Buy,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            OrderSide::Buy => "BUY",
            OrderSide::Sell => "SELL",
        }
    }
}

/// Candle interval. The jobs run on 15m, 1h and 4h; 1m and 5m exist for recorded data.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub enum Timeframe {
    #[serde(rename = "1m")]
    M1,
    #[serde(rename = "5m")]
    M5,
    #[serde(rename = "15m")]
    M15,
    #[serde(rename = "1h")]
    H1,
    #[serde(rename = "4h")]
    H4,
}

impl Timeframe {
    pub const ALL: [Timeframe; 5] = [
        Timeframe::M1,
        Timeframe::M5,
        Timeframe::M15,
        Timeframe::H1,
        Timeframe::H4,
    ];
    /// The timeframes the evaluator job runs on.
    pub const SCHEDULED: [Timeframe; 3] = [Timeframe::M15, Timeframe::H1, Timeframe::H4];

    pub fn millis(self) -> i64 {
        match self {
            Timeframe::M1 => 60_000,
            Timeframe::M5 => 300_000,
            Timeframe::M15 => 900_000,
            Timeframe::H1 => 3_600_000,
            Timeframe::H4 => 14_400_000,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Timeframe::M1 => "1m",
            Timeframe::M5 => "5m",
            Timeframe::M15 => "15m",
            Timeframe::H1 => "1h",
            Timeframe::H4 => "4h",
        }
    }
    /// Open time of the candle that contains `t_ms` (aligned to UTC, like Binance). Saturates
    /// instead of overflowing within one interval of `i64::MIN`, which no real time is near.
    pub fn open_of(self, t_ms: i64) -> i64 {
        t_ms.saturating_sub(t_ms.rem_euclid(self.millis()))
    }
    /// Open time of the newest candle that is closed at `now_ms` (its close ≤ now).
    pub fn last_closed_open(self, now_ms: i64) -> i64 {
        self.open_of(now_ms).saturating_sub(self.millis())
    }
    pub fn from_millis(ms: i64) -> Option<Timeframe> {
        Self::ALL.into_iter().find(|t| t.millis() == ms)
    }
}

impl fmt::Display for Timeframe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Timeframe {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown timeframe `{s}` (expected one of 1m, 5m, 15m, 1h, 4h)"))
    }
}

/// One closed OHLCV candle. `open_time` is milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, PartialEq, Debug, Serialize, Deserialize)]
pub struct Candle {
    pub open_time: i64,
    pub open: Price,
    pub high: Price,
    pub low: Price,
    pub close: Price,
    pub volume: Decimal,
}

impl Candle {
    /// `open_time + interval`, saturating at `i64::MAX`: a candle opened that late is never
    /// closed, rather than wrapping to a negative close that would count as long past.
    pub fn close_time(&self, tf: Timeframe) -> i64 {
        self.open_time.saturating_add(tf.millis())
    }
}

/// Lifecycle of a tracked position.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PositionStatus {
    /// Entry intent written ahead of the order; the order may or may not exist yet.
    Pending,
    Active,
    /// Size changed outside the strategy (partial close by hand, etc.).
    Modified,
    Closed,
    Paused,
}

/// Key of a position: account + strategy + symbol (`BTCUSDT_TFPE` in the original system, per account).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct PositionKey {
    pub account: AccountId,
    pub strategy: StrategyId,
    pub symbol: Symbol,
}

impl fmt::Display for PositionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}_{}", self.account, self.symbol, self.strategy)
    }
}

/// A position the system tracks: a strategy's share of the exchange's net position, or a MANUAL one.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Position {
    pub key: PositionKey,
    pub side: Side,
    pub qty: Qty,
    pub entry_price: Price,
    pub leverage: u32,
    pub status: PositionStatus,
    pub is_manual: bool,
    /// Client id of the entry order (our deterministic id); empty for manual positions.
    pub entry_client_id: String,
    /// Open time of the candle whose close produced the entry (0 for manual/adopted-by-guess).
    pub signal_open_time: i64,
    pub opened_at: i64,
    pub stop_loss: Option<Price>,
    pub take_profit: Option<Price>,
    /// `clientAlgoId` of the protective stop on the exchange, if placed.
    pub stop_client_id: Option<String>,
    /// How many times the stop was re-placed (part of the next stop's client id).
    #[serde(default)]
    pub stop_generation: u32,
    #[serde(default)]
    pub partial_exits_done: u8,
    #[serde(default)]
    pub pyramids_done: u8,
    pub best_price: Option<Price>,
    /// Fees paid on the entry (quote currency), from the fill.
    #[serde(default)]
    pub entry_fee: Notional,
    pub updated_at: i64,
    /// Exchange-side exits besides the stop: the take-profit ladder steps not yet filled and the
    /// trailing stop, as placed (see `Strategy::exchange_exits`).
    #[serde(default)]
    pub exit_orders: Vec<ExitOrder>,
    /// How many times the exit orders were re-placed (part of their client ids).
    #[serde(default)]
    pub exit_generation: u32,
}

/// What an exchange-side exit order does.
#[derive(Clone, Copy, PartialEq, Debug, Serialize, Deserialize)]
pub enum ExitKind {
    /// A TAKE_PROFIT_MARKET step of the ladder (1-based stage, as in `partial_exits_done`).
    TakeProfit { stage: u8 },
    /// A TRAILING_STOP_MARKET; `callback_rate` in percent as Binance takes it (1 = 1 %).
    Trailing { callback_rate: Decimal },
}

/// One exchange-side exit order of a position, as placed.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct ExitOrder {
    pub kind: ExitKind,
    /// `clientAlgoId` on the exchange.
    pub client_id: String,
    /// Trigger price (the activation price of a trailing stop).
    pub trigger_price: Price,
    pub qty: Qty,
    pub reduce_only: bool,
}

impl Position {
    pub fn unrealized_pnl(&self, mark: Price) -> Notional {
        Notional(self.side.sign() * self.qty.0 * (mark.0 - self.entry_price.0))
    }
    pub fn is_open(&self) -> bool {
        matches!(
            self.status,
            PositionStatus::Active | PositionStatus::Modified | PositionStatus::Paused
        )
    }
}

/// Why an order is sent; part of its deterministic client id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Intent {
    Entry,
    Exit,
    StopLoss,
    TakeProfit,
    Pyramid,
    PartialExit,
    /// A take-profit ladder step (exchange-side, one per stage).
    TakeProfitStep,
    /// An exchange-side trailing stop.
    TrailingStop,
}

impl Intent {
    /// Every intent, in declaration order.
    pub const ALL: [Intent; 8] = [
        Intent::Entry,
        Intent::Exit,
        Intent::StopLoss,
        Intent::TakeProfit,
        Intent::Pyramid,
        Intent::PartialExit,
        Intent::TakeProfitStep,
        Intent::TrailingStop,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Intent::Entry => "EN",
            Intent::Exit => "EX",
            Intent::StopLoss => "SL",
            Intent::TakeProfit => "TP",
            Intent::Pyramid => "PY",
            Intent::PartialExit => "PX",
            Intent::TakeProfitStep => "TL",
            Intent::TrailingStop => "TS",
        }
    }
    pub fn from_code(s: &str) -> Option<Intent> {
        Intent::ALL.into_iter().find(|i| i.code() == s)
    }
}

/// Prefix of every client id Albra generates; lets sync tell our orders from hand-placed ones.
pub const CLIENT_ID_PREFIX: &str = "alb";

/// A deterministic client order id, `alb<intent>-<owner hash>-<candle minute base36>[-<n>]`.
///
/// It is derived from account, strategy, symbol, candle open time and intent, so a re-run of the same
/// decision produces the same id and can look the order up instead of sending it twice. It matches
/// Binance's `^[\.A-Z\:/a-z0-9_-]{1,36}$` and is at most 36 characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientId(pub String);

impl ClientId {
    pub fn derive(
        account: &AccountId,
        strategy: &StrategyId,
        symbol: &Symbol,
        candle_open_time: i64,
        intent: Intent,
        generation: u32,
    ) -> ClientId {
        let minutes = candle_open_time.div_euclid(60_000).max(0) as u64;
        // `alb{intent}-{owner}-{minutes}[-{generation}]`, written in place: every order of a
        // backtest derives one or more, and the owner's hash is the same each time.
        let mut s = String::with_capacity(36);
        s.push_str(CLIENT_ID_PREFIX);
        s.push_str(intent.code());
        s.push('-');
        with_owner_hash(account, strategy, symbol, |owner| s.push_str(owner));
        s.push('-');
        push_base36(&mut s, minutes);
        if generation > 0 {
            s.push('-');
            push_base36(&mut s, generation as u64);
        }
        debug_assert!(s.len() <= 36);
        ClientId(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// True when the id has Albra's shape (prefix and intent code).
    pub fn is_ours(id: &str) -> bool {
        id.len() > 6
            && id.starts_with(CLIENT_ID_PREFIX)
            && Intent::from_code(&id[3..5]).is_some()
            && id.as_bytes()[5] == b'-'
    }
    /// The intent encoded in one of our ids.
    pub fn intent_of(id: &str) -> Option<Intent> {
        if Self::is_ours(id) {
            Intent::from_code(&id[3..5])
        } else {
            None
        }
    }
    /// The owner hash encoded in one of our ids (compare with [`owner_hash`]).
    pub fn owner_of(id: &str) -> Option<&str> {
        if Self::is_ours(id) {
            id[6..].split('-').next()
        } else {
            None
        }
    }
}
impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// 12 hex characters of SHA-256 over `account|strategy|symbol`: identifies the owner of an order.
pub fn owner_hash(account: &AccountId, strategy: &StrategyId, symbol: &Symbol) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(account.0.as_bytes());
    h.update(b"|");
    h.update(strategy.0.as_bytes());
    h.update(b"|");
    h.update(symbol.0.as_bytes());
    hex::encode(&h.finalize()[..6])
}

/// [`owner_hash`] given to `f`, remembered per thread for the last few owners (a job or a
/// backtest derives ids for the same few again and again; the hash is a SHA-256).
fn with_owner_hash<R>(
    account: &AccountId,
    strategy: &StrategyId,
    symbol: &Symbol,
    f: impl FnOnce(&str) -> R,
) -> R {
    type Owners = Vec<([String; 3], String)>;
    thread_local! {
        static OWNERS: std::cell::RefCell<Owners> = const { std::cell::RefCell::new(Vec::new()) };
    }
    /// Owners remembered per thread; past this the list starts again.
    const KEEP: usize = 16;
    OWNERS.with(|owners| {
        let mut owners = owners.borrow_mut();
        let parts = [&account.0, &strategy.0, &symbol.0];
        let known = owners
            .iter()
            .position(|(k, _)| k.iter().zip(parts).all(|(a, b)| a == b));
        let i = match known {
            Some(i) => i,
            None => {
                if owners.len() >= KEEP {
                    owners.clear();
                }
                let hash = owner_hash(account, strategy, symbol);
                owners.push((parts.map(|p| p.clone()), hash));
                owners.len() - 1
            }
        };
        f(&owners[i].1)
    })
}

/// `n` in base 36 (lower-case digits), appended to `s`.
fn push_base36(s: &mut String, mut n: u64) {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    // u64::MAX has 13 base-36 digits.
    let mut buf = [0u8; 13];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = DIGITS[(n % 36) as usize];
        n /= 36;
        if n == 0 {
            break;
        }
    }
    s.push_str(std::str::from_utf8(&buf[at..]).expect("ascii"));
}

/// A closed trade, as recorded for statistics, Kelly sizing and reports.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct TradeRecord {
    /// Deterministic: the entry client id plus a close sequence, so recording twice is a no-op.
    pub id: String,
    pub account: AccountId,
    pub strategy: StrategyId,
    pub symbol: Symbol,
    pub side: Side,
    pub qty: Qty,
    pub entry_price: Price,
    pub exit_price: Price,
    pub entry_time: i64,
    pub exit_time: i64,
    /// Realised PnL net of fees and funding (quote currency).
    pub pnl: Notional,
    pub fees: Notional,
    /// Funding received (+) or paid (−) while the position was open, from the exchange's income
    /// history (this position's share when several positions held the symbol); part of `pnl`.
    #[serde(default)]
    pub funding: Notional,
    /// Why it closed: an [`ExitReason`] as text (`signal`, `stop`, `take_profit`,
    /// `trailing_stop`, `partial_take_profit_<n>`, `end_of_data`, `manual`, `emergency_stop`,
    /// `liquidation`, `exchange`).
    pub reason: String,
    /// The protective stop in force when it closed (charts mark it beside entry and exit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_loss: Option<Price>,
}

/// Why a trade closed, as [`TradeRecord::reason`] records it (its `Display`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The strategy's exit (a close or reverse decision).
    Signal,
    /// The protective stop, or a market close because its level was already passed.
    Stop,
    TakeProfit,
    TrailingStop,
    /// Take-profit step `n` of a strategy's partial exits.
    PartialTakeProfit(u8),
    /// A backtest closing what is still open when its data ends.
    EndOfData,
    /// The operator's close of chosen positions (`/close`).
    Manual,
    /// The operator's emergency stop.
    EmergencyStop,
    Liquidation,
    /// Closed on the exchange by none of our orders.
    Exchange,
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ExitReason::Signal => "signal",
            ExitReason::Stop => "stop",
            ExitReason::TakeProfit => "take_profit",
            ExitReason::TrailingStop => "trailing_stop",
            ExitReason::PartialTakeProfit(n) => return write!(f, "partial_take_profit_{n}"),
            ExitReason::EndOfData => "end_of_data",
            ExitReason::Manual => "manual",
            ExitReason::EmergencyStop => "emergency_stop",
            ExitReason::Liquidation => "liquidation",
            ExitReason::Exchange => "exchange",
        };
        f.write_str(s)
    }
}

/// Per-account state the risk layer and reports need: equity peak, current equity, day start.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct AccountState {
    pub equity: Notional,
    pub peak_equity: Notional,
    pub day_start_equity: Notional,
    /// UTC day (days since epoch) that `day_start_equity` belongs to.
    pub day: i64,
    pub paused: bool,
    pub updated_at: i64,
    /// Drawdown level of equity vs its peak (0 normal … 4 emergency); see `risk::mdd_level`.
    #[serde(default)]
    pub mdd_level: u8,
    /// Consecutive winning / losing closed trades of the account (MDD recovery, loss streaks).
    #[serde(default)]
    pub consecutive_wins: u32,
    #[serde(default)]
    pub consecutive_losses: u32,
    /// No new entries before this time (ms) after the daily loss limit was hit.
    #[serde(default)]
    pub daily_halt_until: Option<i64>,
    /// Realised PnL (net of fees) of trades closed during the current trading day.
    #[serde(default)]
    pub daily_realized_pnl: Notional,
    /// Keys ([`trade_key`]) of the most recent trades already counted, so a replayed trade is
    /// never counted twice. Hashes, not ids: this state is read and written on every job run.
    #[serde(default)]
    pub counted_trade_keys: std::sync::Arc<Vec<u64>>,
    /// The exchange's mark price of each symbol the account held, as of `marks_at`: left by the
    /// live sync and replays (not backtests) with the equity fold that writes this state, and
    /// what status, the bot and the dashboard value open positions at, without a request of
    /// their own.
    #[serde(default, skip_serializing_if = "Marks::is_empty")]
    pub marks: Marks,
    /// Job time (ms) of the sync that last changed `marks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marks_at: Option<i64>,
}

/// Mark price per symbol.
pub type Marks = std::collections::BTreeMap<Symbol, Price>;

/// A stable 64-bit key of a trade id (FNV-1a; the same in every process and version).
pub fn trade_key(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl AccountState {
    /// Drawdown of equity from its peak, as a fraction (0.25 = 25 %).
    pub fn drawdown(&self) -> Decimal {
        if self.peak_equity.0 <= Decimal::ZERO {
            return Decimal::ZERO;
        }
        ((self.peak_equity.0 - self.equity.0) / self.peak_equity.0).max(Decimal::ZERO)
    }
}

/// A time (ms) to the minute as `2025-07-04 12:00 UTC`: every report line, notice and operator
/// answer writes times this way.
pub fn utc_minute(ms: i64) -> String {
    use chrono::{Datelike, Timelike};
    match chrono::DateTime::from_timestamp_millis(ms) {
        // The fields written directly: chrono parsing the format string on every call was a
        // visible share of a backtest's evaluations. Outside 0–9999 chrono adds a sign.
        Some(d) if (0..=9999).contains(&d.year()) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            d.year(),
            d.month(),
            d.day(),
            d.hour(),
            d.minute()
        ),
        Some(d) => d.format("%Y-%m-%d %H:%M UTC").to_string(),
        None => ms.to_string(),
    }
}

/// A time (ms) to the second as `2026-01-01T00:15:00Z` (ISO 8601, UTC): CSV columns and event
/// times; the number itself when chrono cannot place it.
pub fn utc_iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// How long ago, for a person: `45 s`, `12 min`, `3.5 h` or `2.1 d` (the operator CLI's and the
/// dashboard's ages).
pub fn age_text(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        ..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        7200..172_800 => format!("{:.1} h", s as f64 / 3600.0),
        _ => format!("{:.1} d", s as f64 / 86_400.0),
    }
}

/// A money figure with two decimals, rounded (`round_dp`; Decimal's own `{:.2}` truncates): how
/// the bot, the dashboard and the reports show USDT.
pub fn money_text(d: Decimal) -> String {
    format!("{:.2}", d.round_dp(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_ages_and_money_as_every_front_end_writes_them() {
        assert_eq!(utc_iso(1_767_226_500_000), "2026-01-01T00:15:00Z");
        assert_eq!(utc_iso(i64::MAX), i64::MAX.to_string());
        let ages = [119_999, 120_000, 7_199_999, 7_200_000, 172_800_000].map(age_text);
        assert_eq!(ages, ["119 s", "2 min", "119 min", "2.0 h", "2.0 d"]);
        assert_eq!(
            money_text(Decimal::new(-5, 3)),
            "0.00",
            "round_dp: half to even"
        );
        assert_eq!(money_text(Decimal::new(98_158_702, 4)), "9815.87");
    }
    use rust_decimal_macros::dec;

    #[test]
    fn money_operators_are_the_decimal_operations() {
        // Each operator is the one Decimal operation on the inner values: same value and scale.
        let (a, b) = (Notional::new(dec!(10.50)), Notional::new(dec!(0.125)));
        assert_eq!(
            (a + b).get().to_string(),
            (dec!(10.50) + dec!(0.125)).to_string()
        );
        assert_eq!(
            (a - b).get().to_string(),
            (dec!(10.50) - dec!(0.125)).to_string()
        );
        assert_eq!((-a).get().to_string(), (-dec!(10.50)).to_string());
        let mut c = a;
        c += b;
        assert_eq!(c.get().to_string(), "10.625");
        c -= b;
        assert_eq!(c.get().to_string(), "10.500");
        assert_eq!(
            (Price::new(dec!(3.0)) * dec!(1.5)).get().to_string(),
            (dec!(3.0) * dec!(1.5)).to_string()
        );
        assert_eq!((Qty::new(dec!(1)) / dec!(3)).get(), dec!(1) / dec!(3));
        assert_eq!(
            Price::new(dec!(2)) - Price::new(dec!(5)),
            Price::new(dec!(-3))
        );
        assert_eq!(
            Qty::new(dec!(0.5)) + Qty::new(dec!(0.25)),
            Qty::new(dec!(0.75))
        );
    }

    #[test]
    fn qty_times_price_is_notional() {
        let (q, p) = (Qty::new(dec!(0.003)), Price::new(dec!(65000.10)));
        assert_eq!((q * p).get().to_string(), q.notional(p).get().to_string());
        assert_eq!((q * p).get(), dec!(0.003) * dec!(65000.10));
    }

    #[test]
    fn money_sums_fold_in_order_like_decimal() {
        let xs = [dec!(0.1), dec!(0.20), dec!(-0.005), dec!(7)];
        let owned: Notional = xs.iter().map(|d| Notional::new(*d)).sum();
        let plain: Decimal = xs.iter().sum();
        assert_eq!(owned.get().to_string(), plain.to_string());
        let qs: Vec<Qty> = xs.iter().map(|d| Qty::new(*d)).collect();
        let by_ref: Qty = qs.iter().sum();
        assert_eq!(by_ref.get().to_string(), plain.to_string());
        assert_eq!(std::iter::empty::<Price>().sum::<Price>(), Price::ZERO);
    }

    #[test]
    fn decimal_cmp_orders_as_decimal_does() {
        let mut next = crate::test_rng(0x51de_c0de_cafe_f00du64);
        // Few magnitudes at few scales: equal values written at different scales, ties, signs
        // and negative zeros are all frequent; full 96-bit mantissas too, rescaled by up to 10^9.
        let mut pick = || {
            let m = match next() % 4 {
                0 => (next() % 7) as i128 * 10,
                1 => (next() % 7) as i128,
                2 => (next() % (1 << 40)) as i128,
                _ => i128::from(next()) << 32 | i128::from(next() as u32),
            };
            // Scales close together (the exact fast path) and far apart (Decimal's own).
            let scale = [0, 1, 2, 9, 12, 28][(next() % 6) as usize];
            let mut d = Decimal::from_i128_with_scale(m, scale);
            if next().is_multiple_of(2) {
                d.set_sign_negative(true);
            }
            d
        };
        for _ in 0..100_000 {
            let (a, b) = (pick(), pick());
            assert_eq!(decimal_cmp(a, b), a.cmp(&b), "{a:?} vs {b:?}");
            assert_eq!(Price(a).cmp(&Price(b)), a.cmp(&b), "{a:?} vs {b:?}");
            assert_eq!(Price(a).partial_cmp(&Price(b)), Some(a.cmp(&b)));
            // Ord agrees with the derived equality.
            assert_eq!(
                Qty(a) == Qty(b),
                Qty(a).cmp(&Qty(b)).is_eq(),
                "{a:?} vs {b:?}"
            );
        }
        let mut neg_zero = Decimal::new(0, 2);
        neg_zero.set_sign_negative(true);
        assert!(neg_zero.is_sign_negative());
        assert_eq!(
            decimal_cmp(neg_zero, Decimal::ZERO),
            std::cmp::Ordering::Equal
        );
        assert_eq!(
            decimal_cmp(dec!(-1.5), dec!(-1.50)),
            std::cmp::Ordering::Equal
        );
        assert_eq!(
            decimal_cmp(dec!(-1.5), dec!(-1.4)),
            std::cmp::Ordering::Less
        );
    }

    #[test]
    fn decimal_to_f64_is_bit_for_bit_rust_decimals() {
        let mut next = crate::test_rng(0x9e37_79b9_7f4a_7c15u64);
        for _ in 0..200_000 {
            // Mantissas of every size around the fast path's 2^40 bound, every scale.
            let bits = next() % 48;
            let m = (next() % (1u64 << bits)) as i64;
            let m = if next().is_multiple_of(2) { m } else { -m };
            let d = Decimal::new(m, (next() % 29) as u32);
            let want = d.to_f64().unwrap();
            assert_eq!(decimal_to_f64(d).to_bits(), want.to_bits(), "{d}");
        }
        for text in [
            "0",
            "-0.00",
            "0.1",
            "-0.1",
            "43210.12",
            "1099511627775.5",
            "0.0000000001",
        ] {
            let d = Decimal::from_str(text).unwrap();
            assert_eq!(
                decimal_to_f64(d).to_bits(),
                d.to_f64().unwrap().to_bits(),
                "{text}"
            );
        }
        // Every price and volume of a real file.
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/BTCUSDT-perp-15m.csv");
        for c in crate::data::load_csv(&path).unwrap().candles {
            for d in [c.open.0, c.high.0, c.low.0, c.close.0, c.volume] {
                assert_eq!(
                    decimal_to_f64(d).to_bits(),
                    d.to_f64().unwrap().to_bits(),
                    "{d}"
                );
            }
        }
    }

    #[test]
    fn decimal_to_f64_approx_is_within_1e15_relative_for_every_size_and_scale() {
        let mut next = crate::test_rng(0x2545_f491_4f6c_dd1du64);
        let mut worst = 0.0f64;
        for _ in 0..200_000 {
            // Mantissas of every width up to the full 96 bits, every scale, both signs.
            let bits = next() % 97;
            let m = (u128::from(next()) << 64 | u128::from(next())) & ((1u128 << bits) - 1);
            let m = m as i128 * if next().is_multiple_of(2) { 1 } else { -1 };
            let d = Decimal::from_i128_with_scale(m, (next() % 29) as u32);
            let want = d.to_f64().unwrap();
            let got = decimal_to_f64_approx(d);
            if want == 0.0 {
                assert_eq!(got, 0.0, "{d}");
                continue;
            }
            let rel = ((got - want) / want).abs();
            worst = worst.max(rel);
            assert!(rel < 1e-15, "{d}: {got} vs {want} ({rel:e})");
        }
        // The bound is loose: a handful of roundings of 2^-53 ≈ 1.1e-16.
        assert!(worst < 5e-16, "worst {worst:e}");
    }

    #[test]
    fn client_ids_are_exactly_the_formatted_ones_for_any_owner_order() {
        // The id format as first written: ids of orders already on the exchange must be
        // derived again exactly, by any version.
        fn reference(
            a: &AccountId,
            s: &StrategyId,
            sym: &Symbol,
            t: i64,
            intent: Intent,
            generation: u32,
        ) -> String {
            fn base36(mut n: u64) -> String {
                const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
                if n == 0 {
                    return "0".into();
                }
                let mut out = Vec::new();
                while n > 0 {
                    out.push(DIGITS[(n % 36) as usize]);
                    n /= 36;
                }
                out.reverse();
                String::from_utf8(out).expect("ascii")
            }
            let owner = owner_hash(a, s, sym);
            let minutes = t.div_euclid(60_000).max(0) as u64;
            let mut id = format!(
                "{CLIENT_ID_PREFIX}{}-{owner}-{}",
                intent.code(),
                base36(minutes)
            );
            if generation > 0 {
                id.push('-');
                id.push_str(&base36(u64::from(generation)));
            }
            id
        }
        assert_eq!(
            ClientId::derive(
                &AccountId::new("main"),
                &StrategyId::new("EMA_CROSS"),
                &Symbol::new("BTCUSDT"),
                1_751_629_500_000,
                Intent::Entry,
                0
            )
            .0,
            "albEN-c39b6ace971c-hdq3l"
        );
        let mut next = crate::test_rng(0x1d5_c0de);
        let intents = Intent::ALL;
        // 40 owners, more than a thread remembers, visited in a random order.
        for _ in 0..5000 {
            let (a, s, sym) = (
                AccountId::new(format!("acct{}", next() % 4)),
                StrategyId::new(
                    ["EMA_CROSS", "TFPE", "ZLMACD_ICHIMOKU", "X"][(next() % 4) as usize],
                ),
                Symbol::new(["BTCUSDT", "ETHUSDT", "1000SHIBUSDT"][(next() % 3) as usize]),
            );
            let t = (next() % 4_000_000_000_000) as i64 - 1_000_000;
            let intent = intents[(next() % 8) as usize];
            let generation = [0, 1, 35, 36, u32::MAX][(next() % 5) as usize];
            assert_eq!(
                ClientId::derive(&a, &s, &sym, t, intent, generation).0,
                reference(&a, &s, &sym, t, intent, generation)
            );
        }
    }

    #[test]
    fn client_id_is_deterministic_short_and_binance_legal() {
        let a = AccountId::new("main-account-with-a-long-name");
        let s = StrategyId::new("ZLMACD_ICHIMOKU");
        let sym = Symbol::new("1000SHIBUSDT");
        let t = 1_751_629_500_000;
        let id1 = ClientId::derive(&a, &s, &sym, t, Intent::StopLoss, 0);
        let id2 = ClientId::derive(&a, &s, &sym, t, Intent::StopLoss, 0);
        assert_eq!(id1, id2);
        let id3 = ClientId::derive(&a, &s, &sym, t, Intent::StopLoss, 123_456);
        for id in [&id1, &id3] {
            assert!(id.0.len() <= 36, "{id} too long");
            assert!(id
                .0
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b)));
            assert!(ClientId::is_ours(&id.0));
        }
        assert_eq!(ClientId::intent_of(&id1.0), Some(Intent::StopLoss));
        assert_eq!(
            ClientId::owner_of(&id1.0),
            Some(owner_hash(&a, &s, &sym).as_str())
        );
        // Any input change changes the id.
        assert_ne!(
            id1,
            ClientId::derive(&a, &s, &sym, t + 900_000, Intent::StopLoss, 0)
        );
        assert_ne!(id1, ClientId::derive(&a, &s, &sym, t, Intent::Entry, 0));
        assert_ne!(
            id1,
            ClientId::derive(&a, &StrategyId::new("TFPE"), &sym, t, Intent::StopLoss, 0)
        );
        assert!(!ClientId::is_ours("web_abc123"));
    }

    #[test]
    fn a_position_stored_before_exit_orders_existed_still_reads() {
        let old = r#"{"key":{"account":"main","strategy":"ZLMACD_ICHIMOKU","symbol":"BTCUSDT"},
            "side":"LONG","qty":"0.010","entry_price":"100000","leverage":10,"status":"ACTIVE",
            "is_manual":false,"entry_client_id":"albEN-0a1b2c3d4e5f-1","signal_open_time":0,
            "opened_at":0,"stop_loss":"98500","take_profit":null,"stop_client_id":null,
            "best_price":null,"updated_at":0}"#;
        let p: Position = serde_json::from_str(old).unwrap();
        assert!(p.exit_orders.is_empty());
        assert_eq!(p.exit_generation, 0);
        let mut p2 = p.clone();
        p2.exit_orders.push(ExitOrder {
            kind: ExitKind::Trailing {
                callback_rate: Decimal::new(2, 0),
            },
            client_id: "albTS-0a1b2c3d4e5f-1-1".into(),
            trigger_price: Price(Decimal::from(105_000)),
            qty: p.qty,
            reduce_only: true,
        });
        let back: Position = serde_json::from_str(&serde_json::to_string(&p2).unwrap()).unwrap();
        assert_eq!(back, p2);
        assert_eq!(
            ClientId::intent_of("albTS-0a1b2c3d4e5f-1-1"),
            Some(Intent::TrailingStop)
        );
    }

    #[test]
    fn timeframe_alignment() {
        let tf = Timeframe::H1;
        let now = 1_751_630_405_000; // 12:00:05 UTC
        assert_eq!(tf.open_of(now), 1_751_630_400_000);
        assert_eq!(tf.last_closed_open(now), 1_751_626_800_000);
        assert_eq!("4h".parse::<Timeframe>().unwrap(), Timeframe::H4);
        assert!("2h".parse::<Timeframe>().is_err());
        // Negative times align downwards, as before.
        assert_eq!(Timeframe::M15.open_of(-1), -900_000);
        assert_eq!(Timeframe::M15.open_of(-900_000), -900_000);
    }

    /// Times at the ends of `i64` saturate instead of overflowing (a panic in debug builds, a
    /// wrapped "long closed" candle in release builds).
    #[test]
    fn time_arithmetic_saturates_at_the_ends() {
        for tf in Timeframe::ALL {
            let late = Candle {
                open_time: i64::MAX - 1,
                open: Price(Decimal::ONE),
                high: Price(Decimal::ONE),
                low: Price(Decimal::ONE),
                close: Price(Decimal::ONE),
                volume: Decimal::ZERO,
            };
            assert_eq!(late.close_time(tf), i64::MAX, "{tf}: never closed");
            assert!(tf.open_of(i64::MIN) <= i64::MIN + tf.millis());
            assert_eq!(tf.last_closed_open(i64::MIN), i64::MIN);
            assert_eq!(tf.open_of(i64::MAX) % tf.millis(), 0);
        }
    }

    #[test]
    fn money_parses_exactly() {
        let p: Price = "108994.30".parse().unwrap();
        assert_eq!(p.to_string(), "108994.3");
        let q: Qty = "0.001".parse().unwrap();
        assert_eq!(q.notional(p).0.normalize().to_string(), "108.9943");
    }
}
