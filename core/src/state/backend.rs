//! The port [`StateRepo`](super::StateRepo) stores through: [`StateBackend`], over type-erased
//! [`Item`]s. Its implementations are [`KvItems`](super::KvItems) (JSON bodies in any
//! [`StateStore`](crate::ports::StateStore): what the jobs use) and the research fast path's
//! [`TypedState`](crate::fastpath::typed_state::TypedState) (decoded items in process).
//!
//! Every method answers with an [`Answer`]: ready at once, or a future to wait on. A store that
//! lives in the process answers at once, so a call costs it no boxed future; a backtest reads and
//! writes its state several times per candle, and a boxed future per call would be most of that
//! cost. A store behind the network boxes, as an `async_trait` method would.

use super::item::{Item, Kind};
use super::Versioned;
use crate::domain::{AccountId, AccountState, Position, StrategyId};
use crate::ports::{Expect, StoreError};
use crate::risk::StrategyStats;
use crate::store::memory::Update;
use futures::future::BoxFuture;
use std::future::{Future, Ready};
use std::pin::Pin;
use std::task::{Context, Poll};

/// What a [`StateBackend`] method answers: the value now, or a future of it.
pub enum Answer<'a, T> {
    /// Answered without waiting (a store in the process).
    Now(Ready<T>),
    /// To be waited for (a store behind I/O).
    Later(BoxFuture<'a, T>),
}

impl<'a, T> Answer<'a, T> {
    pub fn now(value: T) -> Self {
        Answer::Now(std::future::ready(value))
    }

    pub fn later(f: impl Future<Output = T> + Send + 'a) -> Self {
        Answer::Later(Box::pin(f))
    }
}

impl<T> Future for Answer<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.get_mut() {
            Answer::Now(r) => Pin::new(r).poll(cx),
            Answer::Later(f) => f.as_mut().poll(cx),
        }
    }
}

/// The result of a [`StateBackend`] call.
pub type Reply<'a, T> = Answer<'a, Result<T, StoreError>>;

/// The account state update [`StateBackend::update_account_state`] runs: it gets the state (a
/// default one and `false` when there is none yet) and says whether to write it, having left it
/// as it was if not.
pub type AccountFold<'a> = dyn FnMut(&mut AccountState, bool) -> bool + Send + 'a;

/// The stats update [`StateBackend::update_strategy_stats`] runs: it gets the item (`None` when
/// there is none) and says what to write.
pub type StatsFold<'a> = dyn FnMut(Option<&mut StrategyStats>) -> Update<StrategyStats> + Send + 'a;

/// Where a [`StateRepo`](super::StateRepo) keeps its items, under the stores' rules: every write
/// is conditional (`Expect`), versions start at 1 and grow by one per write, and a lost condition
/// is [`StoreError::Conflict`]. Items are keyed by partition and sort key as laid out in
/// [`crate::state`]; `kind` says which type a read expects (what a decoding store decodes to).
///
/// Beside the primitives, the reads and writes every evaluation makes have methods of their own,
/// so a backend can answer them without building keys or copying what it need not (positions,
/// the account state's fold and `paused`, the strategy stats' fold).
pub trait StateBackend: Send + Sync {
    /// A short description for logs.
    fn describe(&self) -> String;

    fn get<'a>(
        &'a self,
        kind: Kind,
        pk: &'a str,
        sk: &'a str,
    ) -> Reply<'a, Option<Versioned<Item>>>;

    /// Write `item` if `expect` holds; returns the new version. `expires_at`: epoch seconds after
    /// which a store may drop the item (a store that lives with its process ignores it).
    fn put<'a>(
        &'a self,
        pk: &'a str,
        sk: &'a str,
        item: Item,
        expect: Expect,
        expires_at: Option<i64>,
    ) -> Reply<'a, u64>;

    /// Delete if `expect` holds.
    fn delete<'a>(&'a self, pk: &'a str, sk: &'a str, expect: Expect) -> Reply<'a, ()>;

    /// The items of `kind` under `prefix`, ordered by sort key.
    fn query<'a>(
        &'a self,
        kind: Kind,
        pk: &'a str,
        prefix: &'a str,
    ) -> Reply<'a, Vec<Versioned<Item>>>;

    /// The items of `kind` under `prefix` with their sort keys, ordered by sort key.
    fn query_keyed<'a>(
        &'a self,
        kind: Kind,
        pk: &'a str,
        prefix: &'a str,
    ) -> Reply<'a, Vec<(String, Item)>>;

    /// All positions of an account, ordered by strategy then symbol.
    fn positions<'a>(&'a self, account: &'a AccountId) -> Reply<'a, Vec<Versioned<Position>>>;

    /// Save a position if `expect` holds; returns the new version.
    fn save_position<'a>(&'a self, pos: &'a Position, expect: Expect) -> Reply<'a, u64>;

    /// Run `f` on the account's state and write it when `f` says so, conditionally on what `f`
    /// was given (see [`StateRepo::update_account_state`](super::StateRepo::update_account_state)).
    fn update_account_state<'a>(
        &'a self,
        account: &'a AccountId,
        f: &'a mut AccountFold<'a>,
    ) -> Answer<'a, Result<(), super::UpdateError>>;

    /// Run `f` on the strategy's stats item and write what it says, conditionally on what `f`
    /// was given (see [`StateRepo::update_strategy_stats`](super::StateRepo::update_strategy_stats)).
    fn update_strategy_stats<'a>(
        &'a self,
        account: &'a AccountId,
        strategy: &'a StrategyId,
        f: &'a mut StatsFold<'a>,
    ) -> Answer<'a, Result<(), super::UpdateError>>;

    /// Whether the account is paused (`None`: no state yet).
    fn account_paused<'a>(&'a self, account: &'a AccountId) -> Reply<'a, Option<bool>>;
}
