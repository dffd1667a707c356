//! The account's margin: leverage, positions' marks, unrealised PnL, initial margin, and
//! whether an order that adds exposure fits within equity.

use super::*;

impl State {
    pub(super) fn leverage(&self, cfg: &PaperConfig, symbol: &Symbol) -> u32 {
        self.configs
            .get(symbol)
            .map_or(cfg.default_leverage, |c| c.0)
            .max(1)
    }

    pub(super) fn amount(&self, symbol: &Symbol) -> Decimal {
        self.positions
            .get(symbol)
            .map_or(Decimal::ZERO, |p| p.amount)
    }

    pub(super) fn mark(&self, symbol: &Symbol, p: &PaperPosition) -> Decimal {
        self.marks.get(symbol).copied().unwrap_or(p.entry)
    }

    /// Unrealised PnL over all positions at the latest prices: [`Self::exposure`]'s first half,
    /// summed the same way.
    pub(super) fn unrealized_pnl(&self) -> Decimal {
        let mut upnl = Decimal::ZERO;
        for (s, p) in &self.positions {
            if !p.amount.is_zero() {
                upnl += p.amount * (self.mark(s, p) - p.entry);
            }
        }
        upnl
    }

    /// (unrealised PnL, initial margin) over all positions at the latest prices, with `symbol`'s
    /// position replaced by `(amount, mark)` when given (to test an order before filling it).
    pub(super) fn exposure(
        &self,
        cfg: &PaperConfig,
        replace: Option<(&Symbol, Decimal, Decimal)>,
    ) -> (Decimal, Decimal) {
        let mut upnl = Decimal::ZERO;
        let mut im = Decimal::ZERO;
        for (s, p) in &self.positions {
            let (amount, mark) = match replace {
                Some((rs, a, m)) if rs == s => (a, m),
                _ => (p.amount, self.mark(s, p)),
            };
            if amount.is_zero() {
                continue;
            }
            upnl += amount * (mark - p.entry);
            im += amount.abs() * mark / Decimal::from(self.leverage(cfg, s));
        }
        if let Some((rs, a, m)) = replace {
            if !self.positions.contains_key(rs) && !a.is_zero() {
                im += a.abs() * m / Decimal::from(self.leverage(cfg, rs));
            }
        }
        (upnl, im)
    }

    /// Binance's margin check for an order that adds exposure: after the fill, the initial margin
    /// must fit in equity less this order's commission and slippage cost.
    pub(super) fn margin_ok(
        &self,
        cfg: &PaperConfig,
        symbol: &Symbol,
        side: OrderSide,
        qty: Decimal,
        mark: Decimal,
        fill: Decimal,
    ) -> bool {
        let old = self.amount(symbol);
        let new = old + sign(side) * qty;
        let adds = new.abs() > old.abs() || (old * new < Decimal::ZERO);
        if !adds {
            return true;
        }
        let (upnl, _) = self.exposure(cfg, None);
        let (_, im_after) = self.exposure(cfg, Some((symbol, new, mark)));
        let cost = fill * qty * cfg.commission_rate + qty * (fill - mark).abs();
        im_after <= self.wallet + upnl - cost
    }
}
