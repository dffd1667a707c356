//! Fills: an order applied to the position and wallet (orders, trades and income rows
//! recorded), and each closed candle replayed against the open conditional orders.

use super::*;

impl State {
    /// Apply one fill to the position and wallet, record the order, trade and income rows.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fill(
        &mut self,
        cfg: &PaperConfig,
        symbol: &Symbol,
        side: OrderSide,
        qty: Decimal,
        price: Decimal,
        reduce_only: bool,
        client_id: String,
        time: i64,
    ) -> OrderInfo {
        let pos = self.positions.entry(symbol.clone()).or_default();
        let signed = sign(side) * qty;
        let mut realized = Decimal::ZERO;
        let mut closed_some = false;
        if pos.amount.is_zero() || (pos.amount > Decimal::ZERO) == (signed > Decimal::ZERO) {
            let held = pos.amount.abs();
            pos.entry = (held * pos.entry + qty * price) / (held + qty);
            pos.amount += signed;
        } else {
            let closing = qty.min(pos.amount.abs());
            let direction = if pos.amount > Decimal::ZERO {
                Decimal::ONE
            } else {
                Decimal::NEGATIVE_ONE
            };
            realized = closing * (price - pos.entry) * direction;
            closed_some = true;
            let flips = qty > pos.amount.abs();
            pos.amount += signed;
            if pos.amount.is_zero() {
                pos.entry = Decimal::ZERO;
            } else if flips {
                pos.entry = price;
            }
        }
        pos.update_time = time;
        let commission = price * qty * cfg.commission_rate;
        self.wallet += realized - commission;
        self.changes += 1;
        self.marks.insert(symbol.clone(), price);

        let order_id = self.next_order_id;
        self.next_order_id += 1;
        let trade_id = self.next_trade_id;
        self.next_trade_id += 1;
        self.trades
            .entry(symbol.clone())
            .or_default()
            .push(UserTrade {
                symbol: symbol.clone(),
                id: trade_id,
                order_id,
                side,
                price: Price::new(price),
                qty: Qty::new(qty),
                realized_pnl: Notional::new(realized),
                commission: Notional::new(commission),
                commission_asset: "USDT".into(),
                time,
            });
        // Binance books a REALIZED_PNL row for fills that reduce a position and a COMMISSION row
        // for every fill.
        if closed_some {
            self.push_income(symbol, "REALIZED_PNL", realized, time, Some(trade_id));
        }
        if !commission.is_zero() {
            self.push_income(symbol, "COMMISSION", -commission, time, Some(trade_id));
        }
        let info = OrderInfo {
            symbol: symbol.clone(),
            order_id,
            client_id: client_id.clone(),
            side,
            status: OrderStatus::Filled,
            orig_qty: Qty::new(qty),
            executed_qty: Qty::new(qty),
            avg_price: Price::new(price),
            reduce_only,
            update_time: time,
        };
        self.order_by_client.insert(client_id, self.orders.len());
        self.orders.push(info.clone());
        info
    }

    pub(super) fn push_income(
        &mut self,
        symbol: &Symbol,
        kind: &str,
        amount: Decimal,
        time: i64,
        trade: Option<i64>,
    ) {
        let tran_id = self.next_tran_id;
        self.next_tran_id += 1;
        self.income.push(Income {
            symbol: Some(symbol.clone()),
            income_type: kind.into(),
            income: Notional::new(amount),
            asset: "USDT".into(),
            time,
            tran_id,
            trade_id: trade.map(|t| t.to_string()),
        });
    }

    /// Replay one closed candle of `symbol` against its open conditional orders.
    pub(super) fn on_candle(
        &mut self,
        cfg: &PaperConfig,
        symbol: &Symbol,
        tf: Timeframe,
        c: &Candle,
    ) {
        // Fills inside the candle are stamped with its last millisecond (Binance's kline close time).
        let time = c.open_time + tf.millis() - 1;
        // A scratch list kept in the state: this runs for every candle a backtest holds orders.
        let mut ids = std::mem::take(&mut self.scratch);
        ids.clear();
        ids.extend(
            self.open_algos
                .iter()
                .copied()
                .filter(|&i| &self.algos[i].info.symbol == symbol),
        );
        // Stops (and trailing stops already active) before take-profits: if both could fire in
        // this candle we assume the adverse move came first. A trailing stop that activates or
        // moves in this candle can only fire on the way back from the candle's extreme, so after
        // the take-profits that extreme crossed.
        ids.sort_by_key(|&i| self.algos[i].info.algo_id);
        let slip = cfg.slippage;
        let passes = [Pass::Stops, Pass::TakeProfits, Pass::Trails];
        for (pass, i) in passes
            .into_iter()
            .flat_map(|p| ids.iter().map(move |&i| (p, i)))
        {
            if self.algos[i].info.status != AlgoStatus::New {
                continue;
            }
            let Some(base) = self.trigger(i, c, pass) else {
                continue;
            };
            let a = &self.algos[i].info;
            let (side, algo_id) = (a.side, a.algo_id);
            let amount = self.amount(symbol);
            let qty = if a.close_position {
                reduces(side, amount).then(|| amount.abs())
            } else if a.reduce_only {
                let q = a.qty.map_or(Decimal::ZERO, |q| q.get());
                reduces(side, amount).then(|| q.min(amount.abs()))
            } else {
                a.qty.map(|q| q.get())
            };
            // Nothing to reduce: the order does nothing and stays NEW (see the module docs).
            let Some(qty) = qty.filter(|q| *q > Decimal::ZERO) else {
                continue;
            };
            let reduce = a.close_position || a.reduce_only;
            let fill = match side {
                OrderSide::Buy => base * (Decimal::ONE + slip),
                OrderSide::Sell => base * (Decimal::ONE - slip),
            };
            if !reduce && !self.margin_ok(cfg, symbol, side, qty, base, fill) {
                let a = &mut self.algos[i].info;
                a.status = AlgoStatus::Rejected;
                a.update_time = time;
                continue;
            }
            let order = self.fill(
                cfg,
                symbol,
                side,
                qty,
                fill,
                reduce,
                triggered_client_id(algo_id).0,
                time,
            );
            let a = &mut self.algos[i].info;
            a.status = AlgoStatus::Finished;
            a.actual_order_id = Some(order.order_id);
            a.actual_price = Some(Price::new(fill));
            a.update_time = time;
        }
        match self.marks.get_mut(symbol) {
            Some(m) => *m = c.close.get(),
            None => {
                self.marks.insert(symbol.clone(), c.close.get());
            }
        }
        let algos = &self.algos;
        let open = self.open_algos.len();
        self.open_algos
            .retain(|&i| algos[i].info.status == AlgoStatus::New);
        if self.open_algos.len() != open {
            self.changes += 1;
        }
        self.scratch = ids;
    }

    /// The price (before slippage) at which algo order `i` fires in candle `c` during `pass`, if it
    /// does; updates a trailing stop's state (see [`Pass`]).
    pub(super) fn trigger(&mut self, i: usize, c: &Candle, pass: Pass) -> Option<Decimal> {
        let (o, h, l, cl) = (c.open.get(), c.high.get(), c.low.get(), c.close.get());
        let entry = &mut self.algos[i];
        let side = entry.info.side;
        let fires_down = |t: Decimal| (l <= t).then(|| if o <= t { o } else { t });
        let fires_up = |t: Decimal| (h >= t).then(|| if o >= t { o } else { t });
        match entry.info.kind {
            AlgoKind::StopMarket | AlgoKind::TakeProfitMarket => {
                let stop = matches!(entry.info.kind, AlgoKind::StopMarket);
                let due = if stop { Pass::Stops } else { Pass::TakeProfits };
                if pass != due {
                    return None;
                }
                let t = entry.info.trigger_price?.get();
                match (side, stop) {
                    (OrderSide::Sell, true) | (OrderSide::Buy, false) => fires_down(t),
                    (OrderSide::Buy, true) | (OrderSide::Sell, false) => fires_up(t),
                }
            }
            AlgoKind::TrailingStopMarket { .. } => {
                let activation = entry.info.trigger_price.map(|p| p.get());
                let tr = entry.trail.as_mut()?;
                let sell = side == OrderSide::Sell;
                let cb = tr.callback;
                let level = |best: Decimal| {
                    if sell {
                        best * (Decimal::ONE - cb)
                    } else {
                        best * (Decimal::ONE + cb)
                    }
                };
                match pass {
                    Pass::TakeProfits => return None,
                    // First against the best price known before this candle…
                    Pass::Stops => {
                        if !tr.activated {
                            return None;
                        }
                        let stop = level(tr.best);
                        return if sell {
                            fires_down(stop)
                        } else {
                            fires_up(stop)
                        };
                    }
                    Pass::Trails => {}
                }
                if !tr.activated {
                    let a = activation?;
                    let reached = if sell { h >= a } else { l <= a };
                    if !reached {
                        return None;
                    }
                    tr.activated = true;
                    tr.best = a;
                }
                // …then the extreme of this candle moves the stop; the close comes after the
                // extreme, so a close beyond the moved stop means the price crossed it on the way.
                tr.best = if sell { tr.best.max(h) } else { tr.best.min(l) };
                let stop = level(tr.best);
                let crossed = if sell { cl <= stop } else { cl >= stop };
                crossed.then_some(stop)
            }
        }
    }
}
