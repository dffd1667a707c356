//! The margin an account's orders of one evaluation take while they are in flight.
//!
//! [`Engine::evaluate`] works the symbols of an account at once (the strategies of one symbol one
//! after another), so an entry may be sized from an account read that predates another symbol's
//! entry of the same evaluation. Entries and pyramid adds are therefore sized one at a time
//! (under [`MarginLedger::size`]) and each adds the margin of the orders of this evaluation that
//! its account read may not show: those not answered before the read was asked. An order whose
//! answer came before the read is in it; one never answered (outcome unknown, or the step failed
//! before its answer) is counted for the rest of the evaluation. When the work runs one step
//! after another (one symbol, or a backtest), every order is answered before the next read and
//! nothing is added.
//!
//! [`Engine::evaluate`]: super::Engine::evaluate

use rust_decimal::Decimal;
use std::sync::Mutex;

/// One evaluation's orders of one account; see the module documentation.
#[derive(Default)]
pub(crate) struct MarginLedger {
    /// Held while an entry or pyramid add reads the store, sizes and writes its intent, so the
    /// next one sees its PENDING record (open positions, last entry) and its margin here.
    sizing: tokio::sync::Mutex<()>,
    book: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    /// Orders answered so far: a read asked when this was `n` shows the first `n` answers.
    answered: u64,
    /// Each order's margin and the count of answers once its own came.
    orders: Vec<(Decimal, Option<u64>)>,
}

/// A read of the account taken at a point of the ledger ([`MarginLedger::mark`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct Mark(u64);

/// An order registered in the ledger.
#[derive(Clone, Copy, Debug)]
pub(super) struct Slot(usize);

impl MarginLedger {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Taken right before an account read is asked.
    pub(super) fn mark(&self) -> Mark {
        Mark(self.book().answered)
    }

    /// Wait for the turn to size (see [`MarginLedger`]); the turn ends when the guard drops.
    pub(super) async fn size(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.sizing.lock().await
    }

    /// The margin of this evaluation's orders an account read taken at `at` may not show.
    pub(super) fn unseen(&self, at: Mark) -> Decimal {
        self.book()
            .orders
            .iter()
            .filter(|(_, answered)| answered.is_none_or(|n| n > at.0))
            .map(|(margin, _)| *margin)
            .sum()
    }

    /// Register an order about to be sent, taking `margin`.
    pub(super) fn take(&self, margin: Decimal) -> Slot {
        let mut b = self.book();
        b.orders.push((margin, None));
        Slot(b.orders.len() - 1)
    }

    /// The order's answer came: from now on account reads show it, and it took `margin` (zero
    /// when it was refused or did not fill).
    pub(super) fn answered(&self, slot: Slot, margin: Decimal) {
        let mut b = self.book();
        b.answered += 1;
        let n = b.answered;
        if let Some(o) = b.orders.get_mut(slot.0) {
            *o = (margin, Some(n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn a_read_misses_the_orders_answered_after_it_was_asked() {
        let l = MarginLedger::default();
        let before = l.mark();
        let a = l.take(dec!(100));
        assert_eq!(l.unseen(before), dec!(100));
        l.answered(a, dec!(90));
        // Asked before the answer: the fill's margin is not in that read.
        assert_eq!(l.unseen(before), dec!(90));
        // Asked after it: the exchange shows it.
        assert_eq!(l.unseen(l.mark()), Decimal::ZERO);
        let b = l.take(dec!(50));
        let c = l.take(dec!(20));
        let mid = l.mark();
        l.answered(c, Decimal::ZERO);
        // b never answered: counted for every read; c refused: nothing.
        assert_eq!(l.unseen(mid), dec!(50));
        assert_eq!(l.unseen(before), dec!(140));
        let _ = b;
    }
}
