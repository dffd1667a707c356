//! The [`Exchange`] port over the paper account: each call advances the account to the
//! clock, then does what Binance does.

use super::*;

#[async_trait]
impl Exchange for PaperExchange {
    async fn server_time(&self) -> Result<i64, ExchangeError> {
        self.advance().await
    }

    async fn last_price(&self, symbol: &Symbol) -> Result<Price, ExchangeError> {
        let now = self.advance().await?;
        self.market.price(symbol, now).await
    }

    async fn closed_klines(
        &self,
        symbol: &Symbol,
        tf: Timeframe,
        limit: u32,
        now: i64,
    ) -> Result<Vec<Candle>, ExchangeError> {
        self.advance().await?;
        self.market.closed_candles(symbol, tf, limit, now).await
    }

    async fn symbol_filters(&self, symbol: &Symbol) -> Result<SymbolFilters, ExchangeError> {
        self.advance().await?;
        self.filters(symbol)
    }

    async fn account(&self) -> Result<AccountSnapshot, ExchangeError> {
        let now = self.advance().await?;
        self.refresh_marks(now).await;
        let st = self.lock();
        let (upnl, im) = st.exposure(&self.cfg, None);
        let equity = st.wallet + upnl;
        Ok(AccountSnapshot {
            equity: Notional::new(equity),
            wallet_balance: Notional::new(st.wallet),
            available_balance: Notional::new((equity - im).max(Decimal::ZERO)),
            total_initial_margin: Notional::new(im),
            unrealized_pnl: Notional::new(upnl),
        })
    }

    async fn equity(&self) -> Result<Notional, ExchangeError> {
        let now = self.advance().await?;
        self.refresh_marks(now).await;
        let st = self.lock();
        Ok(Notional::new(st.wallet + st.unrealized_pnl()))
    }

    async fn positions(&self) -> Result<Vec<ExchangePosition>, ExchangeError> {
        let now = self.advance().await?;
        self.refresh_marks(now).await;
        let st = self.lock();
        let mut out: Vec<ExchangePosition> = st
            .positions
            .iter()
            .filter(|(_, p)| !p.amount.is_zero())
            .map(|(s, p)| {
                let mark = st.mark(s, p);
                ExchangePosition {
                    symbol: s.clone(),
                    amount: p.amount,
                    entry_price: Price::new(p.entry),
                    mark_price: Price::new(mark),
                    unrealized_pnl: Notional::new(p.amount * (mark - p.entry)),
                    // Liquidation is not modelled.
                    liquidation_price: Price::ZERO,
                    leverage: Some(st.leverage(&self.cfg, s)),
                    update_time: p.update_time,
                }
            })
            .collect();
        out.sort_by(|a, b| a.symbol.cmp(&b.symbol));
        Ok(out)
    }

    async fn symbol_config(&self, symbol: &Symbol) -> Result<SymbolConfig, ExchangeError> {
        self.advance().await?;
        let st = self.lock();
        let (leverage, margin_type) = st
            .configs
            .get(symbol)
            .copied()
            .unwrap_or((self.cfg.default_leverage, MarginType::Crossed));
        Ok(SymbolConfig {
            symbol: symbol.clone(),
            leverage,
            margin_type,
        })
    }

    async fn set_leverage(&self, symbol: &Symbol, leverage: u32) -> Result<(), ExchangeError> {
        self.advance().await?;
        if !(1..=125).contains(&leverage) {
            return Err(rejected(
                "POST /fapi/v1/leverage",
                Refusal::Other,
                format!("Leverage {leverage} is not valid"),
            ));
        }
        let mut st = self.lock();
        let default = (self.cfg.default_leverage, MarginType::Crossed);
        st.configs.entry(symbol.clone()).or_insert(default).0 = leverage;
        Ok(())
    }

    async fn set_margin_type(
        &self,
        symbol: &Symbol,
        margin: MarginType,
    ) -> Result<(), ExchangeError> {
        self.advance().await?;
        const EP: &str = "POST /fapi/v1/marginType";
        let mut st = self.lock();
        let default = (self.cfg.default_leverage, MarginType::Crossed);
        let current = st.configs.get(symbol).copied().unwrap_or(default);
        if current.1 == margin {
            return Err(rejected(
                EP,
                Refusal::MarginTypeUnchanged,
                "No need to change margin type.",
            ));
        }
        if !st.amount(symbol).is_zero() {
            return Err(rejected(
                EP,
                Refusal::MarginTypeLocked,
                "Margin type cannot be changed if there exists position.",
            ));
        }
        st.configs.insert(symbol.clone(), (current.0, margin));
        Ok(())
    }

    async fn place_market(&self, order: &MarketOrder) -> Result<OrderInfo, ExchangeError> {
        let now = self.advance().await?;
        let f = self.filters(&order.symbol)?;
        let price = self.market.price(&order.symbol, now).await?.get();
        let fill = match order.side {
            OrderSide::Buy => price * (Decimal::ONE + self.cfg.slippage),
            OrderSide::Sell => price * (Decimal::ONE - self.cfg.slippage),
        };
        let mut st = self.lock();
        st.marks.insert(order.symbol.clone(), price);
        self.check_market(&st, &f, order, price, fill)?;
        Ok(st.fill(
            &self.cfg,
            &order.symbol,
            order.side,
            order.qty.get(),
            fill,
            order.reduce_only,
            order.client_id.0.clone(),
            now,
        ))
    }

    async fn order_by_client_id(
        &self,
        symbol: &Symbol,
        client_id: &str,
    ) -> Result<Option<OrderInfo>, ExchangeError> {
        self.advance().await?;
        let st = self.lock();
        Ok(st
            .order_by_client
            .get(client_id)
            .map(|&i| &st.orders[i])
            .filter(|o| &o.symbol == symbol)
            .cloned())
    }

    async fn place_algo(&self, order: &AlgoOrder) -> Result<AlgoOrderInfo, ExchangeError> {
        let now = self.advance().await?;
        let f = self.filters(&order.symbol)?;
        let price = self.market.price(&order.symbol, now).await?.get();
        let mut st = self.lock();
        st.marks.insert(order.symbol.clone(), price);
        self.check_algo(&st, &f, order, price)?;
        let algo_id = st.next_algo_id;
        st.next_algo_id += 1;
        let info = AlgoOrderInfo {
            algo_id,
            client_algo_id: order.client_algo_id.0.clone(),
            symbol: order.symbol.clone(),
            side: order.side,
            kind: order.kind,
            status: AlgoStatus::New,
            trigger_price: order.trigger_price,
            qty: order.qty,
            close_position: order.close_position,
            reduce_only: order.reduce_only,
            actual_order_id: None,
            actual_price: None,
            update_time: now,
        };
        let trail = match order.kind {
            AlgoKind::TrailingStopMarket { callback_rate } => {
                // Without an activation price Binance activates at once, from the current price.
                let activated = match order.trigger_price {
                    None => true,
                    Some(a) => match order.side {
                        OrderSide::Sell => price >= a.get(),
                        OrderSide::Buy => price <= a.get(),
                    },
                };
                Some(Trail {
                    callback: callback_rate / Decimal::from(100),
                    activated,
                    best: price,
                })
            }
            _ => None,
        };
        let idx = st.algos.len();
        st.algos.push(AlgoEntry {
            info: info.clone(),
            trail,
        });
        st.algo_by_client.insert(info.client_algo_id.clone(), idx);
        st.open_algos.push(idx);
        st.changes += 1;
        Ok(info)
    }

    async fn algo_by_client_id(
        &self,
        client_algo_id: &str,
    ) -> Result<Option<AlgoOrderInfo>, ExchangeError> {
        self.advance().await?;
        let st = self.lock();
        Ok(st
            .algo_by_client
            .get(client_algo_id)
            .map(|&i| st.algos[i].info.clone()))
    }

    async fn cancel_algo(
        &self,
        symbol: &Symbol,
        client_algo_id: &str,
    ) -> Result<(), ExchangeError> {
        let now = self.advance().await?;
        let mut st = self.lock();
        let idx = st
            .algo_by_client
            .get(client_algo_id)
            .copied()
            .filter(|&i| {
                let a = &st.algos[i].info;
                &a.symbol == symbol && a.status == AlgoStatus::New
            })
            .ok_or_else(|| {
                rejected(
                    "DELETE /fapi/v1/algoOrder",
                    Refusal::UnknownOrder,
                    "Unknown order sent.",
                )
            })?;
        let a = &mut st.algos[idx].info;
        a.status = AlgoStatus::Canceled;
        a.update_time = now;
        st.open_algos.retain(|&i| i != idx);
        st.changes += 1;
        Ok(())
    }

    /// The paper exchange takes only market and conditional orders: nothing ever rests.
    async fn open_orders(&self, _: Option<&Symbol>) -> Result<Vec<OrderInfo>, ExchangeError> {
        Ok(Vec::new())
    }

    async fn cancel_order(&self, symbol: &Symbol, client_id: &str) -> Result<(), ExchangeError> {
        Err(ExchangeError::Rejected {
            endpoint: "cancel order".into(),
            reason: Refusal::UnknownOrder,
            msg: format!("no resting order {client_id} on {symbol}"),
        })
    }

    async fn open_algo_orders(
        &self,
        symbol: Option<&Symbol>,
    ) -> Result<Vec<AlgoOrderInfo>, ExchangeError> {
        self.advance().await?;
        let st = self.lock();
        Ok(st
            .open_algos
            .iter()
            .map(|&i| &st.algos[i].info)
            .filter(|a| symbol.is_none_or(|s| &a.symbol == s))
            .cloned()
            .collect())
    }

    async fn user_trades(
        &self,
        symbol: &Symbol,
        start_time: i64,
    ) -> Result<Vec<UserTrade>, ExchangeError> {
        self.advance().await?;
        let st = self.lock();
        Ok(st.trades.get(symbol).map_or_else(Vec::new, |t| {
            let from = t.partition_point(|x| x.time < start_time);
            t[from..].to_vec()
        }))
    }

    async fn all_orders(
        &self,
        symbol: &Symbol,
        start_time: i64,
    ) -> Result<Vec<OrderInfo>, ExchangeError> {
        self.advance().await?;
        let st = self.lock();
        // Paper orders fill when created: their update time is their creation time.
        Ok(st
            .orders
            .iter()
            .filter(|o| &o.symbol == symbol && o.update_time >= start_time)
            .cloned()
            .collect())
    }

    async fn income(&self, start_time: i64) -> Result<Vec<Income>, ExchangeError> {
        self.advance().await?;
        let st = self.lock();
        let from = st.income.partition_point(|x| x.time < start_time);
        Ok(st.income[from..].to_vec())
    }
}
