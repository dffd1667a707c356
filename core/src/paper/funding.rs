//! Funding: at each funding time of a symbol with recorded rates ([`PaperConfig::funding`]), the
//! position held at that instant pays or receives `amount × mark × rate` (a long pays a positive
//! rate, a short receives it), rounded to 8 decimals as Binance books USDT, into the wallet, with
//! a `FUNDING_FEE` income row (no trade id), as `/fapi/v1/income` reports it. The mark is the
//! file's mark price, else the market price at that time (a recorded candle's open).
//!
//! Order at one instant: the candles that closed by the funding time are replayed first (their
//! fills are stamped before it), then funding is charged, then whatever the caller does at the
//! clock's time; an order placed at exactly a funding time therefore comes after it.

use super::*;
use crate::data::FundingRate;

/// Where each symbol's recorded funding stands: the index of its next rate not yet charged.
pub(super) struct FundingCursor {
    symbol: Symbol,
    rates: Arc<[FundingRate]>,
    next: usize,
}

/// The cursors of `cfg`'s funding, each past the rates at or before `now` (the account did not
/// exist then).
pub(super) fn cursors(cfg: &PaperConfig, now: i64) -> Vec<FundingCursor> {
    let mut out: Vec<FundingCursor> = cfg
        .funding
        .iter()
        .map(|(symbol, rates)| FundingCursor {
            symbol: symbol.clone(),
            next: rates.partition_point(|r| r.time <= now),
            rates: rates.clone(),
        })
        .collect();
    // A fixed order, so two rates at one time are charged the same way on every run.
    out.sort_by(|a, b| a.symbol.cmp(&b.symbol));
    out
}

/// A funding event due: the cursor it belongs to and its rate.
pub(super) struct Due {
    cursor: usize,
    symbol: Symbol,
    rate: FundingRate,
}

impl State {
    /// The earliest funding event at or before `now` not yet charged.
    pub(super) fn funding_due(&self, now: i64) -> Option<Due> {
        self.funding
            .iter()
            .enumerate()
            .filter_map(|(k, c)| c.rates.get(c.next).map(|r| (k, c, *r)))
            .filter(|(_, _, r)| r.time <= now)
            .min_by_key(|(_, _, r)| r.time)
            .map(|(k, c, rate)| Due {
                cursor: k,
                symbol: c.symbol.clone(),
                rate,
            })
    }

    /// The time of the next funding event after everything charged so far.
    pub(super) fn next_funding_time(&self) -> Option<i64> {
        self.funding
            .iter()
            .filter_map(|c| c.rates.get(c.next).map(|r| r.time))
            .min()
    }

    /// The signed amount held on `due`'s symbol, `None` when `due` was charged meanwhile (a
    /// concurrent call).
    fn held_for(&self, due: &Due) -> Option<Decimal> {
        let c = &self.funding[due.cursor];
        (c.rates.get(c.next) == Some(&due.rate)).then(|| self.amount(&due.symbol))
    }

    /// Charge `due` once on the position held now, at `mark` (needed only when a position is
    /// held: a flat account pays nothing and books nothing).
    fn charge(
        &mut self,
        due: &Due,
        mark: Result<Decimal, ExchangeError>,
    ) -> Result<(), ExchangeError> {
        let Some(amount) = self.held_for(due) else {
            return Ok(());
        };
        if !amount.is_zero() {
            let payment = funding_payment(amount, mark?, due.rate.rate);
            self.wallet += payment;
            self.changes += 1;
            self.push_income(&due.symbol, "FUNDING_FEE", payment, due.rate.time, None);
        }
        self.funding[due.cursor].next += 1;
        Ok(())
    }
}

/// What a position of signed `amount` receives (+) or pays (−) at `mark` and `rate`: the
/// notional times the rate, against a long when the rate is positive; 8 decimals, as booked.
pub fn funding_payment(amount: Decimal, mark: Decimal, rate: Decimal) -> Decimal {
    (-(amount * mark * rate)).round_dp(8)
}

impl PaperExchange {
    /// Advance to `now` with every funding event up to it charged in time order between the
    /// candles (see the module docs).
    pub(super) async fn advance_funded(&self, now: i64) -> Result<i64, ExchangeError> {
        loop {
            let due = self.lock().funding_due(now);
            let Some(due) = due else {
                return self.advance_to(now).await;
            };
            self.advance_to(due.rate.time).await?;
            let mark = match due.rate.mark_price {
                Some(m) => Ok(m),
                None => self
                    .market
                    .price(&due.symbol, due.rate.time)
                    .await
                    .map(|p| p.get()),
            };
            self.lock().charge(&due, mark)?;
        }
    }

    /// The time of the next funding event not yet charged (`None`: no recorded funding left). A
    /// backtest stops a run of quiet candles before it, since it moves the wallet.
    pub fn next_funding_time(&self) -> Option<i64> {
        self.lock().next_funding_time()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ClientId, Price, Qty};
    use crate::ports::{AlgoKind, AlgoOrder, MarketOrder, SimClock, WorkingType};
    use rust_decimal_macros::dec;

    /// 2025-07-04 00:00 UTC: a funding time; the next ones are 8 and 16 hours later.
    const DAY: i64 = 1_751_587_200_000;
    const H: i64 = 3_600_000;

    fn btc() -> Symbol {
        Symbol::new("BTCUSDT")
    }

    /// 24 hourly candles from `DAY`, candle `i` opening at 50,000 + 10 i, its low 5 under the
    /// open, except candle 7 (07:00–08:00), which dips to 49,970.
    fn market() -> Arc<RecordedMarket> {
        let candles = (0..24)
            .map(|i| {
                let open = Decimal::from(50_000 + 10 * i);
                let dip = if i == 7 { dec!(100) } else { dec!(5) };
                Candle {
                    open_time: DAY + i * H,
                    open: Price::new(open),
                    high: Price::new(open + dec!(50)),
                    low: Price::new(open - dip),
                    close: Price::new(open + dec!(10)),
                    volume: dec!(1),
                }
            })
            .collect();
        Arc::new(RecordedMarket::new(
            btc(),
            CandleSeries::new(candles, Timeframe::H1),
        ))
    }

    fn rate(hour: i64, rate: Decimal, mark: Option<Decimal>) -> FundingRate {
        FundingRate {
            time: DAY + hour * H,
            rate,
            mark_price: mark,
        }
    }

    /// A paper account from `DAY` without fees or slippage, charging `rates`.
    fn account(rates: Vec<FundingRate>) -> (Arc<SimClock>, PaperExchange) {
        let clock = Arc::new(SimClock::new(DAY));
        let mut cfg = PaperConfig {
            commission_rate: Decimal::ZERO,
            slippage: Decimal::ZERO,
            ..PaperConfig::default()
        };
        cfg.funding.insert(btc(), rates.into());
        (clock.clone(), PaperExchange::new(market(), clock, cfg))
    }

    async fn market_order(ex: &PaperExchange, side: OrderSide, qty: Decimal, id: &str) {
        let order = MarketOrder {
            symbol: btc(),
            side,
            qty: Qty::new(qty),
            reduce_only: false,
            client_id: ClientId(id.into()),
        };
        ex.place_market(&order).await.unwrap();
    }

    async fn funding_rows(ex: &PaperExchange) -> Vec<(i64, Decimal)> {
        ex.income(0)
            .await
            .unwrap()
            .into_iter()
            .filter(|i| i.income_type == "FUNDING_FEE")
            .inspect(|i| assert_eq!((i.symbol.as_ref(), &i.trade_id), (Some(&btc()), &None)))
            .map(|i| (i.time, i.income.get()))
            .collect()
    }

    #[test]
    fn the_payment_is_against_a_long_when_the_rate_is_positive() {
        // (signed amount, mark, rate, payment)
        let cases = [
            (dec!(0.5), dec!(60000), dec!(0.0001), dec!(-3)),
            (dec!(-0.5), dec!(60000), dec!(0.0001), dec!(3)),
            (dec!(0.5), dec!(60000), dec!(-0.0001), dec!(3)),
            (dec!(-0.5), dec!(60000), dec!(-0.0001), dec!(-3)),
            (
                dec!(0.001),
                dec!(61234.5),
                dec!(0.00012345),
                dec!(-0.00755940),
            ),
            (dec!(0), dec!(61234.5), dec!(0.0003), dec!(0)),
        ];
        for (amount, mark, r, want) in cases {
            assert_eq!(
                funding_payment(amount, mark, r),
                want,
                "{amount} {mark} {r}"
            );
        }
    }

    /// Each side with each sign of rate, over two funding times: the file's mark at 08:00, the
    /// candle's open at 16:00 (no mark in the file).
    #[tokio::test]
    async fn a_held_position_pays_or_receives_at_every_funding_time() {
        // (side, rate, payment at 08:00 at mark 51,000, payment at 16:00 at the open 50,160)
        let cases = [
            (OrderSide::Buy, dec!(0.0001), dec!(-1.02), dec!(-1.0032)),
            (OrderSide::Sell, dec!(0.0001), dec!(1.02), dec!(1.0032)),
            (OrderSide::Buy, dec!(-0.0002), dec!(2.04), dec!(2.0064)),
            (OrderSide::Sell, dec!(-0.0002), dec!(-2.04), dec!(-2.0064)),
        ];
        for (side, r, at8, at16) in cases {
            let rates = vec![
                rate(0, r, None),
                rate(8, r, Some(dec!(51000))),
                rate(16, r, None),
            ];
            let (clock, ex) = account(rates);
            clock.set(DAY + H + 3_000);
            market_order(&ex, side, dec!(0.2), "entry").await;
            let before = ex.account().await.unwrap().wallet_balance.get();
            clock.set(DAY + 17 * H + 3_000);
            let after = ex.account().await.unwrap().wallet_balance.get();
            assert_eq!(
                funding_rows(&ex).await,
                vec![(DAY + 8 * H, at8), (DAY + 16 * H, at16)],
                "{side:?} {r}"
            );
            assert_eq!(after - before, at8 + at16, "{side:?} {r}");
        }
    }

    #[tokio::test]
    async fn a_position_opened_and_closed_between_funding_times_pays_nothing() {
        let r = dec!(0.0005);
        let (clock, ex) = account(vec![rate(8, r, None), rate(16, r, None)]);
        clock.set(DAY + 9 * H + 3_000);
        market_order(&ex, OrderSide::Buy, dec!(0.2), "entry").await;
        clock.set(DAY + 15 * H + 3_000);
        market_order(&ex, OrderSide::Sell, dec!(0.2), "exit").await;
        clock.set(DAY + 23 * H);
        ex.account().await.unwrap();
        assert_eq!(funding_rows(&ex).await, vec![]);
        // Flat at 16:00 too: nothing booked, and the account is as the fills left it.
        let wallet = ex.account().await.unwrap().wallet_balance.get();
        assert_eq!(wallet, dec!(10000) + dec!(0.2) * dec!(60));
    }

    /// A stop that fires in the candle before a funding time closes the position before it: the
    /// candles closed by the funding time are replayed first.
    #[tokio::test]
    async fn a_stop_filled_before_the_funding_time_is_not_charged() {
        let r = dec!(0.0001);
        let (clock, ex) = account(vec![rate(8, r, None), rate(16, r, None)]);
        clock.set(DAY + 3_000);
        market_order(&ex, OrderSide::Buy, dec!(0.2), "entry").await;
        // Only candle 7 (07:00–08:00) reaches the trigger.
        let stop = AlgoOrder {
            symbol: btc(),
            side: OrderSide::Sell,
            kind: AlgoKind::StopMarket,
            trigger_price: Some(Price::new(dec!(49975))),
            qty: None,
            close_position: true,
            reduce_only: false,
            working_type: WorkingType::MarkPrice,
            client_algo_id: ClientId("sl".into()),
        };
        ex.place_algo(&stop).await.unwrap();
        clock.set(DAY + 7 * H + 3_000);
        assert_eq!(
            ex.positions().await.unwrap()[0].amount,
            dec!(0.2),
            "not yet"
        );
        clock.set(DAY + 20 * H);
        assert!(ex
            .positions()
            .await
            .unwrap()
            .iter()
            .all(|p| p.amount.is_zero()));
        let fired = ex.algo_by_client_id("sl").await.unwrap().unwrap();
        assert_eq!(fired.update_time, DAY + 8 * H - 1, "in candle 7");
        assert_eq!(funding_rows(&ex).await, vec![]);
        // Without the stop the 08:00 payment is due.
        let (clock, ex) = account(vec![rate(8, r, None)]);
        clock.set(DAY + 3_000);
        market_order(&ex, OrderSide::Buy, dec!(0.2), "entry").await;
        clock.set(DAY + 20 * H);
        ex.account().await.unwrap();
        assert_eq!(funding_rows(&ex).await, vec![(DAY + 8 * H, dec!(-1.0016))]);
        assert_eq!(ex.next_funding_time(), None);
    }
}
