//! The items a [`StateBackend`](super::StateBackend) stores, type-erased: one [`Item`] variant per
//! state type of the layout (see [`crate::state`]), and the [`Kind`] tag that names a variant
//! without a value. A backend stores and returns `Item`s; [`StateRepo`](super::StateRepo) wraps
//! its typed values into them and takes them back out ([`Stored`]), so the port needs no generic
//! method and any backend can sit behind `Arc<dyn StateBackend>`.

use crate::domain::{AccountState, Position, TradeRecord};
use crate::risk::StrategyStats;
use crate::shares::ShareBook;
use crate::state::{
    AuditRecord, DeferredNotice, EquityPoint, JobRun, PendingConfirm, RunMarker, SeenUpdate,
};

/// A state type the repo stores, as one variant of [`Item`].
pub trait Stored: Clone + Send + Sync + 'static {
    /// The variant that holds this type (what a decoding backend decodes to).
    const KIND: Kind;
    fn wrap(self) -> Item;
    /// The value moved out, when `item` holds this type.
    fn take(item: Item) -> Option<Self>;
}

/// Declares [`Item`], [`Kind`] and the [`Stored`] impls from one list, so the three cannot drift.
macro_rules! items {
    ($($(#[$doc:meta])* $variant:ident($t:ty)),* $(,)?) => {
        /// One stored value of any state type.
        #[derive(Clone, Debug)]
        pub enum Item {
            $($(#[$doc])* $variant($t)),*
        }

        /// Which state type an [`Item`] holds.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Kind {
            $($variant),*
        }

        impl Item {
            pub fn kind(&self) -> Kind {
                match self {
                    $(Item::$variant(_) => Kind::$variant),*
                }
            }
        }

        $(
            impl Stored for $t {
                const KIND: Kind = Kind::$variant;
                fn wrap(self) -> Item {
                    Item::$variant(self)
                }
                fn take(item: Item) -> Option<Self> {
                    match item {
                        Item::$variant(v) => Some(v),
                        _ => None,
                    }
                }
            }
        )*
    };
}

items! {
    /// `POS#{strategy}#{symbol}`.
    Position(Position),
    /// `TRADE#{exit_time:013}#{trade id}`.
    Trade(TradeRecord),
    /// `STATE`.
    Account(AccountState),
    /// `RUN#{tf}#{strategy}#{symbol}#{open_time}`.
    Run(RunMarker),
    /// `ENTRY#{strategy}`: the last entry time (ms).
    Entry(i64),
    /// `STATS#{strategy}`.
    Stats(StrategyStats),
    /// `SHARES#{symbol}`.
    Shares(ShareBook),
    /// `JOB#{job}`.
    Job(JobRun),
    /// `EQUITY#{bucket start:013}`.
    Equity(EquityPoint),
    /// `BOT` / `UPDATE#{update_id}`.
    Seen(SeenUpdate),
    /// `BOT` / `CONFIRM#{nonce}`.
    Confirm(PendingConfirm),
    /// `BOT` / `AUDIT#{time}#{update_id}`.
    Audit(AuditRecord),
    /// `BOT` / `DEFER#{event_id}`.
    Deferred(DeferredNotice),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_goes_in_and_comes_out_of_its_own_variant_only() {
        let item = 7i64.wrap();
        assert_eq!(item.kind(), Kind::Entry);
        assert_eq!(<i64 as Stored>::KIND, Kind::Entry);
        assert_eq!(AccountState::take(item.clone()), None);
        assert_eq!(i64::take(item), Some(7));
    }
}
