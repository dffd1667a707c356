//! The research fast path: the only place in the system that skips work for speed.
//!
//! Backtests and walk-forwards run the same engine, rules and state layout as the live jobs
//! (nothing is implemented twice); what makes them fast is a handful of shortcuts that are valid
//! only for a process that owns all of its state, and they live here, together:
//!
//! - **the typed in-process state and its write marks** ([`typed_state`]): a backtest's state is
//!   kept decoded in a [`Table`](crate::store::memory::Table) instead of JSON bodies in a
//!   key/value store, so nothing is serialised or parsed on the every-candle reads and writes;
//!   keys are built in per-thread buffers; the account state and the strategy stats are folded in
//!   place under the table's lock instead of read, copied and saved; and every write of a
//!   position, an entry time, or the account state that can change whether it is paused moves a
//!   counter ([`WriteMarks`](typed_state::WriteMarks)) that says "nothing you read may have
//!   changed" when it has not moved;
//! - **the quiet-candle memo** (`quiet.rs`): what a backtest's last full evaluation of its single
//!   (account, strategy, symbol) read, kept so that the candles after it that decide HOLD are
//!   decided on those reads without asking the exchange or the store again, while the write marks
//!   say none of them changed;
//! - **all-equity sizing** (`sizer`): the backtest policy `--risk off`, under which every entry
//!   uses all equity (quantity = equity / price) with no protective stop and no limits, a sizer
//!   beside the account's risk-based ones rather than a branch in them.
//!
//! Why the shortcuts are safe:
//!
//! - The typed state keeps the stores' rules: every write is conditional (create-if-absent or
//!   version match) with the same versions and the same conflicts, and an in-place fold is
//!   exactly a read and a conditional write that nothing can come between — the outcome of the
//!   key/value read–modify–save loop when its save succeeds. Callers use the same
//!   [`StateRepo`](crate::state::StateRepo) methods on either backend
//!   ([`StateRepo::update_account_state`](crate::state::StateRepo::update_account_state),
//!   [`StateRepo::update_strategy_stats`](crate::state::StateRepo::update_strategy_stats)), so no
//!   decision code branches on which one it has. `core/tests/state_backends.rs` runs random
//!   sequences of every write and read on both and requires equal results, versions and reads.
//! - Write marks exist only for the typed state, which no other process can write: a key/value
//!   store has none ([`StateRepo::write_marks`](crate::state::StateRepo::write_marks) is `None`),
//!   so live jobs never skip anything. The marks count every write that can change what the memo
//!   read; `core/tests/quiet_path.rs` requires the memo's runs to equal full evaluations of every
//!   candle (and `tests/tests/differential.rs` compares with the real jobs), and
//!   `core/tests/strategy_stats.rs` requires the in-place stats to equal those
//!   rebuilt from the trade records.
//! - Everything here is used only by the research tools (`backtest`, `walkforward`): the memo
//!   only where no record of a HOLD is kept, all-equity sizing only on request. The jobs
//!   (`evaluate`, `position-sync`) and replay run with the key/value stores and do every step.

pub mod typed_state;
