//! Account side of the test exchange: one-way (BOTH) netting positions per symbol, MARKET fills at
//! the mark price with taker commission, conditional (algo) orders and their triggering, margin,
//! trades and income. Pure state; the HTTP layer renders it.

use super::market::{Market, SymbolRules};
use albra_core::domain::OrderSide;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashMap};

/// Taker commission rate (0.04 %), charged in USDT on every fill.
pub(crate) fn taker_rate() -> Decimal {
    Decimal::new(4, 4)
}

/// Maintenance margin rate of the first notional bracket (0.4 %).
fn maint_rate() -> Decimal {
    Decimal::new(4, 3)
}

/// A Binance error answer: HTTP status plus `{"code":…,"msg":…}`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub code: i64,
    pub msg: String,
}

impl ApiError {
    pub fn new(status: u16, code: i64, msg: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            msg: msg.into(),
        }
    }
    pub fn bad(code: i64, msg: impl Into<String>) -> ApiError {
        ApiError::new(400, code, msg)
    }
    pub fn mandatory(param: &str) -> ApiError {
        ApiError::bad(
            -1102,
            format!("Mandatory parameter '{param}' was not sent, was empty/null, or malformed."),
        )
    }
    pub fn invalid(param: &str) -> ApiError {
        ApiError::bad(
            -1130,
            format!("Data sent for parameter '{param}' is not valid."),
        )
    }
    pub fn not_required(param: &str) -> ApiError {
        ApiError::bad(
            -1106,
            format!("Parameter '{param}' sent when not required."),
        )
    }
    pub fn unknown_symbol() -> ApiError {
        ApiError::bad(-1121, "Invalid symbol.")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MarginKind {
    Crossed,
    Isolated,
}

impl MarginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MarginKind::Crossed => "CROSSED",
            MarginKind::Isolated => "ISOLATED",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct SymbolConfig {
    pub leverage: u32,
    pub margin: MarginKind,
}

impl Default for SymbolConfig {
    fn default() -> Self {
        SymbolConfig {
            leverage: 20,
            margin: MarginKind::Crossed,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Position {
    /// Signed: > 0 long, < 0 short.
    pub amt: Decimal,
    pub entry: Decimal,
    pub update_time: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Order {
    pub order_id: i64,
    pub client_id: String,
    pub symbol: String,
    pub side: OrderSide,
    /// MARKET for plain orders; the conditional type for orders created by a triggered algo order.
    pub orig_type: String,
    pub qty: Decimal,
    pub executed: Decimal,
    pub avg_price: Decimal,
    pub reduce_only: bool,
    pub close_position: bool,
    pub stop_price: Decimal,
    /// A LIMIT order's price (zero for market orders).
    pub price: Decimal,
    pub status: &'static str,
    pub time: i64,
    pub update_time: i64,
}

impl Order {
    pub fn is_open(&self) -> bool {
        matches!(self.status, "NEW" | "PARTIALLY_FILLED")
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Algo {
    pub algo_id: i64,
    pub client_algo_id: String,
    pub symbol: String,
    pub side: OrderSide,
    pub order_type: String,
    pub qty: Option<Decimal>,
    pub trigger_price: Decimal,
    pub price: Decimal,
    pub time_in_force: String,
    pub working_type: String,
    pub close_position: bool,
    pub reduce_only: bool,
    pub price_protect: bool,
    pub activate_price: Option<Decimal>,
    pub callback_rate: Option<Decimal>,
    /// Best price seen since activation (trailing stops only).
    pub trail_extreme: Option<Decimal>,
    pub status: &'static str,
    pub actual_order_id: Option<i64>,
    pub actual_price: Option<Decimal>,
    pub create_time: i64,
    pub update_time: i64,
    pub trigger_time: i64,
}

impl Algo {
    pub fn is_open(&self) -> bool {
        self.status == "NEW"
    }
    fn is_stop(&self) -> bool {
        matches!(self.order_type.as_str(), "STOP_MARKET" | "STOP")
    }
    fn is_take_profit(&self) -> bool {
        matches!(
            self.order_type.as_str(),
            "TAKE_PROFIT_MARKET" | "TAKE_PROFIT"
        )
    }

    /// Whether `price` fires this order: a SELL stop fires at or below its trigger (it protects a
    /// long), a BUY stop at or above; take-profits the other way round; trailing stops once the
    /// price retraces `callback_rate` % from the best price since activation.
    fn crossed_by(&mut self, price: Decimal) -> bool {
        match (self.order_type.as_str(), self.side) {
            ("TRAILING_STOP_MARKET", side) => {
                let activated = match (self.trail_extreme, self.activate_price, side) {
                    (Some(_), _, _) | (None, None, _) => true,
                    (None, Some(a), OrderSide::Sell) => price >= a,
                    (None, Some(a), OrderSide::Buy) => price <= a,
                };
                if !activated {
                    return false;
                }
                let rate = self.callback_rate.unwrap_or(Decimal::ONE) / Decimal::ONE_HUNDRED;
                let extreme = match (self.trail_extreme, side) {
                    (None, _) => price,
                    (Some(e), OrderSide::Sell) => e.max(price),
                    (Some(e), OrderSide::Buy) => e.min(price),
                };
                self.trail_extreme = Some(extreme);
                match side {
                    OrderSide::Sell => price <= extreme * (Decimal::ONE - rate),
                    OrderSide::Buy => price >= extreme * (Decimal::ONE + rate),
                }
            }
            _ if self.is_stop() => match self.side {
                OrderSide::Sell => price <= self.trigger_price,
                OrderSide::Buy => price >= self.trigger_price,
            },
            _ if self.is_take_profit() => match self.side {
                OrderSide::Sell => price >= self.trigger_price,
                OrderSide::Buy => price <= self.trigger_price,
            },
            _ => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Trade {
    pub id: i64,
    pub order_id: i64,
    pub symbol: String,
    pub side: OrderSide,
    pub price: Decimal,
    pub qty: Decimal,
    pub realized_pnl: Decimal,
    pub commission: Decimal,
    pub time: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct IncomeRow {
    pub symbol: String,
    pub income_type: &'static str,
    pub income: Decimal,
    pub time: i64,
    pub tran_id: i64,
    pub trade_id: String,
}

pub(crate) struct Account {
    pub secret: String,
    pub wallet: Decimal,
    pub positions: BTreeMap<String, Position>,
    pub configs: BTreeMap<String, SymbolConfig>,
    pub orders: Vec<Order>,
    pub algos: Vec<Algo>,
    pub trades: Vec<Trade>,
    pub income: Vec<IncomeRow>,
    pub restrictions: super::KeyRestrictions,
}

impl Account {
    pub fn new(secret: String, wallet: Decimal) -> Account {
        Account {
            secret,
            wallet,
            positions: BTreeMap::new(),
            configs: BTreeMap::new(),
            orders: Vec::new(),
            algos: Vec::new(),
            trades: Vec::new(),
            income: Vec::new(),
            restrictions: super::KeyRestrictions::default(),
        }
    }
    pub fn config(&self, symbol: &str) -> SymbolConfig {
        self.configs.get(symbol).copied().unwrap_or_default()
    }
    pub fn amount(&self, symbol: &str) -> Decimal {
        self.positions
            .get(symbol)
            .map(|p| p.amt)
            .unwrap_or_default()
    }
}

/// Account-wide figures at the current marks.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Totals {
    pub wallet: Decimal,
    pub unrealized: Decimal,
    pub initial_margin: Decimal,
    pub maint_margin: Decimal,
}

impl Totals {
    pub fn margin_balance(&self) -> Decimal {
        self.wallet + self.unrealized
    }
    pub fn available(&self) -> Decimal {
        (self.margin_balance() - self.initial_margin).max(Decimal::ZERO)
    }
}

/// A MARKET order as it reaches the (simulated) matching engine.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct MarketRequest {
    pub symbol: String,
    pub side: OrderSide,
    pub qty: Decimal,
    pub reduce_only: bool,
}

impl MarketRequest {
    /// Quantity with the sign of the side (+ buy, − sell).
    fn signed_qty(&self) -> Decimal {
        match self.side {
            OrderSide::Buy => self.qty,
            OrderSide::Sell => -self.qty,
        }
    }
}

/// Result of sending an order into the (simulated) matching engine.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Fill {
    pub qty: Decimal,
    pub price: Decimal,
    pub realized: Decimal,
    pub commission: Decimal,
}

pub(crate) struct Exchange {
    pub market: Market,
    pub accounts: HashMap<String, Account>,
    /// (symbol, filterType) pairs left out of exchangeInfo, as if Binance stopped serving them.
    pub hidden_filters: Vec<(String, String)>,
    next_order_id: i64,
    next_algo_id: i64,
    next_trade_id: i64,
    next_tran_id: i64,
    next_client_seq: u64,
}

/// Binance's client id alphabet and length.
pub(crate) fn valid_client_id(id: &str) -> bool {
    (1..=36).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'/' | b'_' | b'-'))
}

fn is_multiple(x: Decimal, step: Decimal) -> bool {
    step.is_zero() || (x % step).is_zero()
}

impl Exchange {
    pub fn new(market: Market, accounts: HashMap<String, Account>) -> Exchange {
        Exchange {
            market,
            accounts,
            hidden_filters: Vec::new(),
            next_order_id: 8_389_765_000,
            next_algo_id: 3_000_000_100,
            next_trade_id: 512_000_000,
            next_tran_id: 91_000_000_000,
            next_client_seq: 0,
        }
    }

    pub fn rules(&self, symbol: &str) -> Result<&SymbolRules, ApiError> {
        self.market
            .rules
            .get(symbol)
            .ok_or_else(ApiError::unknown_symbol)
    }

    pub fn mark(&self, symbol: &str, now: i64) -> Result<Decimal, ApiError> {
        self.rules(symbol)?;
        self.market.mark(symbol, now).ok_or_else(|| {
            ApiError::bad(
                -1000,
                format!("test server has no candles or mark price for {symbol}"),
            )
        })
    }

    fn account(&self, key: &str) -> &Account {
        self.accounts
            .get(key)
            .unwrap_or_else(|| panic!("unknown test account api key `{key}`"))
    }

    fn account_mut(&mut self, key: &str) -> &mut Account {
        self.accounts
            .get_mut(key)
            .unwrap_or_else(|| panic!("unknown test account api key `{key}`"))
    }

    /// A client id like the ones Binance's website and apps generate (never Albra's `alb` prefix).
    /// The next order id, as the exchange numbers its orders.
    pub fn take_order_id(&mut self) -> i64 {
        self.next_order_id += 1;
        self.next_order_id - 1
    }

    pub fn generated_client_id(&mut self, prefix: &str) -> String {
        self.next_client_seq += 1;
        format!(
            "{prefix}{:016x}",
            self.next_client_seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        )
    }

    pub fn totals(&self, key: &str, now: i64) -> Totals {
        let acct = self.account(key);
        let mut t = Totals {
            wallet: acct.wallet,
            ..Totals::default()
        };
        for (symbol, p) in &acct.positions {
            if p.amt.is_zero() {
                continue;
            }
            let mark = self.market.mark(symbol, now).unwrap_or(p.entry);
            let notional = (p.amt * mark).abs();
            t.unrealized += p.amt * (mark - p.entry);
            t.initial_margin += notional / Decimal::from(acct.config(symbol).leverage);
            t.maint_margin += notional * maint_rate();
        }
        t
    }

    /// Checks a MARKET order against the filters and the account, as the matching engine would.
    pub fn check_market(&self, key: &str, req: &MarketRequest, now: i64) -> Result<(), ApiError> {
        let (symbol, qty) = (req.symbol.as_str(), req.qty);
        let rules = self.rules(symbol)?;
        if qty <= Decimal::ZERO {
            return Err(ApiError::bad(-4003, "Quantity less than or equal to zero."));
        }
        if !is_multiple(qty, rules.market_step_size) || !is_multiple(qty, rules.step_size) {
            return Err(ApiError::bad(
                -1111,
                "Precision is over the maximum defined for this asset.",
            ));
        }
        if qty < rules.market_min_qty {
            return Err(ApiError::bad(-4004, "Quantity less than min quantity."));
        }
        if qty > rules.market_max_qty {
            return Err(ApiError::bad(-4005, "Quantity greater than max quantity."));
        }
        let mark = self.mark(symbol, now)?;
        let acct = self.account(key);
        let old = acct.amount(symbol);
        let signed = req.signed_qty();
        if req.reduce_only {
            let reduces = !old.is_zero() && old.is_sign_positive() != signed.is_sign_positive();
            if !reduces || qty > old.abs() {
                return Err(ApiError::bad(-2022, "ReduceOnly Order is rejected."));
            }
            return Ok(());
        }
        if qty * mark < rules.min_notional {
            return Err(ApiError::bad(
                -4164,
                format!(
                    "Order's notional must be no smaller than {} (unless you choose reduce only).",
                    rules.min_notional.normalize()
                ),
            ));
        }
        // Only the part that adds exposure needs new initial margin.
        let added = ((old + signed).abs() - old.abs()).max(Decimal::ZERO) * mark;
        let required = added / Decimal::from(acct.config(symbol).leverage);
        if required > self.totals(key, now).available() {
            return Err(ApiError::bad(-2019, "Margin is insufficient."));
        }
        Ok(())
    }

    /// Nets a fill into the position, books realised PnL and commission, and records the trade and
    /// income rows.
    pub fn fill(
        &mut self,
        key: &str,
        req: &MarketRequest,
        price: Decimal,
        order_id: i64,
        now: i64,
    ) -> Fill {
        let (symbol, side, qty) = (req.symbol.as_str(), req.side, req.qty);
        let trade_id = self.next_trade_id;
        self.next_trade_id += 1;
        let tran_pnl = self.next_tran_id;
        let tran_fee = self.next_tran_id + 1;
        self.next_tran_id += 2;
        let acct = self.account_mut(key);
        let pos = acct.positions.entry(symbol.to_string()).or_default();
        let signed = req.signed_qty();
        let old = pos.amt;
        let new = old + signed;
        let mut realized = Decimal::ZERO;
        let mut closed = Decimal::ZERO;
        if old.is_zero() || old.is_sign_positive() == signed.is_sign_positive() {
            pos.entry = (old.abs() * pos.entry + qty * price) / new.abs();
        } else {
            closed = qty.min(old.abs());
            let direction = if old.is_sign_positive() {
                Decimal::ONE
            } else {
                Decimal::NEGATIVE_ONE
            };
            realized = ((price - pos.entry) * closed * direction).round_dp(8);
            if new.is_zero() {
                pos.entry = Decimal::ZERO;
            } else if new.is_sign_positive() != old.is_sign_positive() {
                pos.entry = price; // flipped: the remainder opened at this price
            }
        }
        pos.amt = new;
        pos.entry = pos.entry.round_dp(8);
        pos.update_time = now;
        let commission = (qty * price * taker_rate()).round_dp(8);
        acct.wallet += realized - commission;
        acct.trades.push(Trade {
            id: trade_id,
            order_id,
            symbol: symbol.to_string(),
            side,
            price,
            qty,
            realized_pnl: realized,
            commission,
            time: now,
        });
        if !closed.is_zero() {
            acct.income.push(IncomeRow {
                symbol: symbol.to_string(),
                income_type: "REALIZED_PNL",
                income: realized,
                time: now,
                tran_id: tran_pnl,
                trade_id: trade_id.to_string(),
            });
        }
        acct.income.push(IncomeRow {
            symbol: symbol.to_string(),
            income_type: "COMMISSION",
            income: -commission,
            time: now,
            tran_id: tran_fee,
            trade_id: trade_id.to_string(),
        });
        Fill {
            qty,
            price,
            realized,
            commission,
        }
    }

    /// Places and fills a MARKET order (already checked) at the mark. Returns the stored order.
    pub fn execute_market(
        &mut self,
        key: &str,
        req: &MarketRequest,
        client_id: String,
        now: i64,
    ) -> Order {
        let order_id = self.next_order_id;
        self.next_order_id += 1;
        let price = self
            .market
            .mark(&req.symbol, now)
            .expect("mark checked before execution");
        let fill = self.fill(key, req, price, order_id, now);
        let order = Order {
            order_id,
            client_id,
            symbol: req.symbol.clone(),
            side: req.side,
            orig_type: "MARKET".to_string(),
            qty: req.qty,
            executed: fill.qty,
            avg_price: fill.price,
            reduce_only: req.reduce_only,
            close_position: false,
            stop_price: Decimal::ZERO,
            price: Decimal::ZERO,
            status: "FILLED",
            time: now,
            update_time: now,
        };
        self.account_mut(key).orders.push(order.clone());
        order
    }

    /// A forced liquidation: the whole position on `symbol` is closed at `price` by an order of
    /// type LIQUIDATION (client id `autoclose-…`, as Binance names them), and the clearance fee
    /// (0.5 % of the notional here) is booked as an `INSURANCE_CLEAR` income row.
    pub fn liquidate(
        &mut self,
        key: &str,
        symbol: &str,
        price: Decimal,
        now: i64,
    ) -> Option<Order> {
        let amt = self.account(key).amount(symbol);
        if amt.is_zero() {
            return None;
        }
        let req = MarketRequest {
            symbol: symbol.to_string(),
            side: if amt.is_sign_positive() {
                OrderSide::Sell
            } else {
                OrderSide::Buy
            },
            qty: amt.abs(),
            reduce_only: true,
        };
        let order_id = self.next_order_id;
        self.next_order_id += 1;
        let fill = self.fill(key, &req, price, order_id, now);
        let client_id = self.generated_client_id("autoclose-");
        let fee = (fill.qty * price * Decimal::new(5, 3)).round_dp(8);
        let tran_id = self.next_tran_id;
        self.next_tran_id += 1;
        let acct = self.account_mut(key);
        acct.wallet -= fee;
        acct.income.push(IncomeRow {
            symbol: symbol.to_string(),
            income_type: "INSURANCE_CLEAR",
            income: -fee,
            time: now,
            tran_id,
            trade_id: String::new(),
        });
        let order = Order {
            order_id,
            client_id,
            symbol: symbol.to_string(),
            side: req.side,
            orig_type: "LIQUIDATION".to_string(),
            qty: req.qty,
            executed: fill.qty,
            avg_price: fill.price,
            reduce_only: true,
            close_position: false,
            stop_price: Decimal::ZERO,
            price: Decimal::ZERO,
            status: "FILLED",
            time: now,
            update_time: now,
        };
        acct.orders.push(order.clone());
        Some(order)
    }

    /// A funding payment on `symbol` (positive: received, negative: paid), booked to the wallet
    /// and as a `FUNDING_FEE` income row.
    pub fn funding(&mut self, key: &str, symbol: &str, amount: Decimal, now: i64) {
        let tran_id = self.next_tran_id;
        self.next_tran_id += 1;
        let acct = self.account_mut(key);
        acct.wallet += amount;
        acct.income.push(IncomeRow {
            symbol: symbol.to_string(),
            income_type: "FUNDING_FEE",
            income: amount,
            time: now,
            tran_id,
            trade_id: String::new(),
        });
    }

    pub fn next_algo_id(&mut self) -> i64 {
        self.next_algo_id += 1;
        self.next_algo_id
    }

    /// Sets the mark and fires every open conditional order of `symbol` (all accounts) that
    /// `price` crosses, filling each as a MARKET order at `price`. Returns how many fired.
    pub fn trigger(&mut self, symbol: &str, price: Decimal, now: i64) -> usize {
        self.market.set_mark(symbol, price);
        let mut fired = Vec::new();
        for (key, acct) in self.accounts.iter_mut() {
            for (i, a) in acct.algos.iter_mut().enumerate() {
                if a.is_open() && a.symbol == symbol && a.crossed_by(price) {
                    fired.push((key.clone(), i));
                }
            }
        }
        // Deterministic order across accounts (the map's iteration order is not).
        fired.sort();
        for (key, i) in &fired {
            self.fire(key, *i, price, now);
        }
        fired.len()
    }

    /// The activation price and callback rate (percent) of `key`'s conditional order
    /// `client_algo_id`, as placed (the query shapes leave them out).
    pub fn trailing_params(
        &self,
        key: &str,
        client_algo_id: &str,
    ) -> Option<(Option<Decimal>, Option<Decimal>)> {
        self.account(key)
            .algos
            .iter()
            .find(|a| a.client_algo_id == client_algo_id)
            .map(|a| (a.activate_price, a.callback_rate))
    }

    /// Fires `key`'s open conditional order `client_algo_id` at `price` (the mark is left as it
    /// is), as if its trigger was crossed at `now`; `false` when no such order is open.
    pub fn fire_one(&mut self, key: &str, client_algo_id: &str, price: Decimal, now: i64) -> bool {
        let found = self
            .account(key)
            .algos
            .iter()
            .position(|a| a.is_open() && a.client_algo_id == client_algo_id);
        match found {
            Some(i) => {
                self.fire(key, i, price, now);
                true
            }
            None => false,
        }
    }

    /// Executes a triggered conditional order: closePosition closes whatever position is open on
    /// the other side (nothing when flat); reduce-only never adds; the fill is booked like a
    /// MARKET order at `price`.
    fn fire(&mut self, key: &str, idx: usize, price: Decimal, now: i64) {
        let algo = self.account(key).algos[idx].clone();
        let amt = self.account(key).amount(&algo.symbol);
        let opposite = match algo.side {
            OrderSide::Sell => amt > Decimal::ZERO,
            OrderSide::Buy => amt < Decimal::ZERO,
        };
        let qty = if algo.close_position {
            if opposite {
                Some(amt.abs())
            } else {
                None
            }
        } else if algo.reduce_only {
            if opposite {
                algo.qty.map(|q| q.min(amt.abs()))
            } else {
                None
            }
        } else {
            algo.qty
        };
        let status = match qty {
            None if algo.close_position => ("FINISHED", None),
            None => ("REJECTED", None),
            Some(q) => {
                let leverage = Decimal::from(self.account(key).config(&algo.symbol).leverage);
                let adds = !algo.reduce_only && !algo.close_position && !opposite;
                if adds && q * price / leverage > self.totals(key, now).available() {
                    ("REJECTED", None)
                } else {
                    let order_id = self.next_order_id;
                    self.next_order_id += 1;
                    let req = MarketRequest {
                        symbol: algo.symbol.clone(),
                        side: algo.side,
                        qty: q,
                        reduce_only: algo.reduce_only || algo.close_position,
                    };
                    let fill = self.fill(key, &req, price, order_id, now);
                    let order = Order {
                        order_id,
                        client_id: algo.client_algo_id.clone(),
                        symbol: algo.symbol.clone(),
                        side: algo.side,
                        orig_type: algo.order_type.clone(),
                        qty: q,
                        executed: fill.qty,
                        avg_price: fill.price,
                        reduce_only: algo.reduce_only || algo.close_position,
                        close_position: algo.close_position,
                        stop_price: algo.trigger_price,
                        price: Decimal::ZERO,
                        status: "FILLED",
                        time: now,
                        update_time: now,
                    };
                    self.account_mut(key).orders.push(order);
                    ("FINISHED", Some((order_id, fill.price)))
                }
            }
        };
        let a = &mut self.account_mut(key).algos[idx];
        a.status = status.0;
        a.trigger_time = now;
        a.update_time = now;
        if let Some((order_id, avg)) = status.1 {
            a.actual_order_id = Some(order_id);
            a.actual_price = Some(avg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use albra_core::domain::Candle;

    const KEY: &str = "k1";

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn exchange(wallet: &str) -> Exchange {
        let c = Candle {
            open_time: 0,
            open: dec("50000").into(),
            high: dec("51000").into(),
            low: dec("49000").into(),
            close: dec("50500").into(),
            volume: dec("1"),
        };
        let market = Market::new(HashMap::from([("BTCUSDT".into(), vec![c])]), 900_000);
        let accounts = HashMap::from([(KEY.into(), Account::new("s".into(), dec(wallet)))]);
        Exchange::new(market, accounts)
    }

    fn market_order(
        x: &mut Exchange,
        side: OrderSide,
        qty: &str,
        reduce: bool,
    ) -> Result<Order, ApiError> {
        let req = MarketRequest {
            symbol: "BTCUSDT".into(),
            side,
            qty: dec(qty),
            reduce_only: reduce,
        };
        x.check_market(KEY, &req, 1)?;
        Ok(x.execute_market(KEY, &req, "c".into(), 1))
    }

    #[test]
    fn netting_averages_entry_and_realises_on_reduction() {
        let mut x = exchange("10000");
        market_order(&mut x, OrderSide::Buy, "0.010", false).unwrap();
        x.market.set_mark("BTCUSDT", dec("52000"));
        market_order(&mut x, OrderSide::Buy, "0.010", false).unwrap();
        let p = x.accounts[KEY].positions["BTCUSDT"].clone();
        assert_eq!(p.amt, dec("0.020"));
        assert_eq!(p.entry, dec("51000"));
        x.market.set_mark("BTCUSDT", dec("53000"));
        market_order(&mut x, OrderSide::Sell, "0.005", true).unwrap();
        let acct = &x.accounts[KEY];
        assert_eq!(acct.trades.last().unwrap().realized_pnl, dec("10")); // 2000 * 0.005
        assert_eq!(acct.positions["BTCUSDT"].amt, dec("0.015"));
        assert_eq!(acct.positions["BTCUSDT"].entry, dec("51000"));
        // wallet = 10000 + 10 − commissions (0.2 + 0.208 + 0.106)
        assert_eq!(acct.wallet, dec("10009.486"));
        let types: Vec<_> = acct.income.iter().map(|i| i.income_type).collect();
        assert_eq!(
            types,
            vec!["COMMISSION", "COMMISSION", "REALIZED_PNL", "COMMISSION"]
        );
    }

    #[test]
    fn flip_opens_the_remainder_at_the_fill_price() {
        let mut x = exchange("10000");
        market_order(&mut x, OrderSide::Buy, "0.010", false).unwrap();
        x.market.set_mark("BTCUSDT", dec("49000"));
        market_order(&mut x, OrderSide::Sell, "0.030", false).unwrap();
        let acct = &x.accounts[KEY];
        assert_eq!(acct.positions["BTCUSDT"].amt, dec("-0.020"));
        assert_eq!(acct.positions["BTCUSDT"].entry, dec("49000"));
        assert_eq!(acct.trades.last().unwrap().realized_pnl, dec("-10"));
    }

    #[test]
    fn order_checks_follow_binance_codes() {
        let mut x = exchange("1000");
        let code = |r: Result<Order, ApiError>| r.unwrap_err().code;
        assert_eq!(
            code(market_order(&mut x, OrderSide::Buy, "0.0015", false)),
            -1111
        );
        assert_eq!(
            code(market_order(&mut x, OrderSide::Buy, "0.001", false)),
            -4164
        );
        assert_eq!(
            code(market_order(&mut x, OrderSide::Sell, "0.001", true)),
            -2022
        );
        assert_eq!(
            code(market_order(&mut x, OrderSide::Buy, "121", false)),
            -4005
        );
        // 1000 USDT at 20x buys at most 20000 notional = 0.4 BTC
        assert_eq!(
            code(market_order(&mut x, OrderSide::Buy, "0.500", false)),
            -2019
        );
        market_order(&mut x, OrderSide::Buy, "0.010", false).unwrap();
        assert_eq!(
            code(market_order(&mut x, OrderSide::Sell, "0.020", true)),
            -2022
        );
        assert_eq!(
            code(market_order(&mut x, OrderSide::Buy, "0.001", true)),
            -2022
        );
        market_order(&mut x, OrderSide::Sell, "0.010", true).unwrap();
        assert!(x.accounts[KEY].positions["BTCUSDT"].amt.is_zero());
    }

    fn algo(side: OrderSide, kind: &str, trigger: &str, close: bool, qty: Option<&str>) -> Algo {
        Algo {
            algo_id: 1,
            client_algo_id: "albSL-x".into(),
            symbol: "BTCUSDT".into(),
            side,
            order_type: kind.into(),
            qty: qty.map(dec),
            trigger_price: dec(trigger),
            price: Decimal::ZERO,
            time_in_force: "GTE_GTC".into(),
            working_type: "MARK_PRICE".into(),
            close_position: close,
            reduce_only: !close && qty.is_some(),
            price_protect: false,
            activate_price: None,
            callback_rate: None,
            trail_extreme: None,
            status: "NEW",
            actual_order_id: None,
            actual_price: None,
            create_time: 0,
            update_time: 0,
            trigger_time: 0,
        }
    }

    #[test]
    fn stop_for_a_long_fires_at_or_below_trigger_and_closes() {
        let mut x = exchange("10000");
        market_order(&mut x, OrderSide::Buy, "0.010", false).unwrap();
        let stop = algo(OrderSide::Sell, "STOP_MARKET", "49000", true, None);
        x.accounts.get_mut(KEY).unwrap().algos.push(stop);
        assert_eq!(x.trigger("BTCUSDT", dec("49500"), 5), 0);
        assert_eq!(x.trigger("BTCUSDT", dec("49000"), 6), 1);
        let acct = &x.accounts[KEY];
        assert!(acct.positions["BTCUSDT"].amt.is_zero());
        let a = &acct.algos[0];
        assert_eq!(a.status, "FINISHED");
        assert_eq!(a.actual_price, Some(dec("49000")));
        let order = acct.orders.last().unwrap();
        assert_eq!(Some(order.order_id), a.actual_order_id);
        assert_eq!(acct.trades.last().unwrap().realized_pnl, dec("-10"));
    }

    #[test]
    fn close_position_when_flat_finishes_without_a_fill() {
        let mut x = exchange("10000");
        x.accounts.get_mut(KEY).unwrap().algos.push(algo(
            OrderSide::Sell,
            "STOP_MARKET",
            "49000",
            true,
            None,
        ));
        assert_eq!(x.trigger("BTCUSDT", dec("48000"), 5), 1);
        let acct = &x.accounts[KEY];
        assert_eq!(acct.algos[0].status, "FINISHED");
        assert_eq!(acct.algos[0].actual_order_id, None);
        assert!(acct.trades.is_empty());
    }

    #[test]
    fn take_profit_for_a_short_fires_at_or_below() {
        let mut x = exchange("10000");
        market_order(&mut x, OrderSide::Sell, "0.010", false).unwrap();
        x.accounts.get_mut(KEY).unwrap().algos.push(algo(
            OrderSide::Buy,
            "TAKE_PROFIT_MARKET",
            "45000",
            false,
            Some("0.004"),
        ));
        assert_eq!(x.trigger("BTCUSDT", dec("46000"), 5), 0);
        assert_eq!(x.trigger("BTCUSDT", dec("44000"), 6), 1);
        let acct = &x.accounts[KEY];
        assert_eq!(acct.positions["BTCUSDT"].amt, dec("-0.006"));
        assert_eq!(acct.trades.last().unwrap().realized_pnl, dec("24"));
    }

    #[test]
    fn trailing_stop_tracks_the_best_price() {
        let mut a = algo(
            OrderSide::Sell,
            "TRAILING_STOP_MARKET",
            "0",
            false,
            Some("0.01"),
        );
        a.callback_rate = Some(dec("1"));
        a.activate_price = Some(dec("51000"));
        assert!(!a.crossed_by(dec("50000"))); // not activated
        assert!(!a.crossed_by(dec("51000")));
        assert!(!a.crossed_by(dec("52000")));
        assert!(!a.crossed_by(dec("51500")));
        assert!(a.crossed_by(dec("51480"))); // 52000 × 0.99
    }

    #[test]
    fn client_id_alphabet() {
        assert!(valid_client_id("albEN-0a1b2c3d4e5f-q3x1"));
        assert!(!valid_client_id("has space"));
        assert!(!valid_client_id(&"x".repeat(37)));
    }
}
