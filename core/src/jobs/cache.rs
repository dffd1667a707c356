//! Strategies already fed, kept between evaluations of one process ([`StrategyCache`]), and
//! when each share book was last dated.

use super::*;

pub(crate) type CacheKey = (AccountId, String, Symbol, Timeframe);
/// When each account's share books were dated, per symbol.
pub(super) type BookDates =
    std::collections::HashMap<AccountId, std::collections::HashMap<Symbol, i64>>;
/// A fed strategy and the open time of the last candle it was fed.
pub(crate) type Fed = (Box<dyn strategy::Strategy>, i64);

/// Fed strategy instances with the open time of the last candle each was fed.
///
/// A cold start builds a strategy from the last `jobs.history` candles (its window). A strategy
/// fed every candle since the process started has seen older candles too, and indicators with an
/// infinite memory (every EMA, Wilder's averages) would read differently: a warm process could
/// decide otherwise than a cold one. So the default cache also keeps each strategy's window, and
/// once the new candles push it past `history` it builds the strategy again from the window (the
/// candles a cold start would fetch, none fetched twice). A research run
/// ([`crate::fastpath::Research`]) keeps no window and never rebuilds: it decides as a job whose
/// history reaches back to the first candle of its file.
#[derive(Default)]
pub struct StrategyCache {
    fed: std::sync::Mutex<std::collections::HashMap<CacheKey, Fed>>,
    /// The candles each strategy in `fed` was built from, oldest first.
    windows:
        std::sync::Mutex<std::collections::HashMap<CacheKey, std::collections::VecDeque<Candle>>>,
    /// When each (account, symbol) share book in the store was dated, as this process last read
    /// or wrote it: a process that syncs again and again (scheduler, replay) need not read an
    /// unchanged book every minute.
    books: std::sync::Mutex<BookDates>,
    /// The equity bucket each account's point was last recorded (or found already recorded) in
    /// by this process: a sync every minute writes the bucket's point once, not fifteen
    /// conditional puts of which fourteen fail (each a round trip, and a write unit in DynamoDB).
    equity_buckets: std::sync::Mutex<std::collections::HashMap<AccountId, i64>>,
}

impl StrategyCache {
    /// Remember the candles a strategy was just built from.
    pub(crate) fn start_window(&self, k: &CacheKey, candles: &[Candle]) {
        let mut w = self.windows.lock().expect("strategy windows");
        w.insert(k.clone(), candles.iter().copied().collect());
    }
    /// Add `fresh` to `k`'s window. When that makes it longer than `limit` (the candles a cold
    /// start fetches), drop the oldest and return the window: the strategy must be built again
    /// from it. `None`: feeding `fresh` leaves it as a cold start would build it.
    pub(crate) fn slide(
        &self,
        k: &CacheKey,
        fresh: &[Candle],
        limit: usize,
    ) -> Option<Vec<Candle>> {
        let mut w = self.windows.lock().expect("strategy windows");
        let window = w.entry(k.clone()).or_default();
        window.extend(fresh.iter().copied());
        if window.len() <= limit {
            return None;
        }
        let surplus = window.len() - limit;
        window.drain(..surplus);
        Some(window.iter().copied().collect())
    }
    pub(crate) fn take(&self, k: &CacheKey) -> Option<(Box<dyn strategy::Strategy>, i64)> {
        self.fed.lock().expect("strategy cache").remove(k)
    }
    pub(crate) fn put(&self, k: CacheKey, s: Box<dyn strategy::Strategy>, last: i64) {
        self.fed
            .lock()
            .expect("strategy cache")
            .insert(k, (s, last));
    }
    pub(super) fn book_dated(&self, account: &AccountId, sym: &Symbol) -> Option<i64> {
        let books = self.books.lock().expect("book dates");
        books.get(account)?.get(sym).copied()
    }
    /// Whether this process already has `account`'s point of `bucket` in the store.
    pub(super) fn equity_recorded(&self, account: &AccountId, bucket: i64) -> bool {
        let b = self.equity_buckets.lock().expect("equity buckets");
        b.get(account) == Some(&bucket)
    }
    pub(super) fn mark_equity_recorded(&self, account: &AccountId, bucket: i64) {
        let mut b = self.equity_buckets.lock().expect("equity buckets");
        b.insert(account.clone(), bucket);
    }
    pub(super) fn date_book(&self, account: &AccountId, sym: &Symbol, as_of: i64) {
        let mut books = self.books.lock().expect("book dates");
        let of_account = books.entry(account.clone()).or_default();
        of_account.insert(sym.clone(), as_of);
    }
}
