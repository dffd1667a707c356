//! Telegram's per-chat limits on the messages a bot sends: at most one message a second to a
//! chat, and at most twenty a minute to a group (a negative chat id, or an `@channel`). Every
//! `sendMessage` part and `sendPhoto` of a [`BotClient`](super::BotClient) waits here for its
//! slot, within the caller's deadline: a slot past the deadline is not taken, and the send fails
//! at once with [`TelegramError::ChatRateLimited`](super::TelegramError) instead of overrunning.
//! Edits and button answers change no chat's message count and do not wait.
//!
//! The limits are kept per process (one table shared by every client of the process, keyed by
//! API URL and chat): two processes sending to one chat at once are not aware of each other, and
//! Telegram's 429 `retry_after`, which the transport honours, covers that case.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

/// Least spacing of two messages to one chat.
pub const PER_CHAT: Duration = Duration::from_secs(1);
/// Messages a group may receive in any [`GROUP_WINDOW`].
pub const GROUP_PER_WINDOW: usize = 20;
pub const GROUP_WINDOW: Duration = Duration::from_secs(60);

/// Whether Telegram counts `chat` as a group or channel (the stricter per-minute limit).
pub fn is_group(chat: &str) -> bool {
    chat.starts_with('-') || chat.starts_with('@')
}

/// The earliest time a message may go to a chat whose slots of the last minute are `taken`
/// (ascending), at `now` (pure).
pub fn next_slot(taken: &VecDeque<Instant>, group: bool, now: Instant) -> Instant {
    let mut at = now;
    if let Some(last) = taken.back() {
        at = at.max(*last + PER_CHAT);
    }
    if group && taken.len() >= GROUP_PER_WINDOW {
        at = at.max(taken[taken.len() - GROUP_PER_WINDOW] + GROUP_WINDOW);
    }
    at
}

/// The slots each chat has taken in the last minute.
#[derive(Default)]
pub struct ChatLimiter {
    chats: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl ChatLimiter {
    /// The process's table, shared by every client.
    pub fn process() -> Arc<ChatLimiter> {
        static PROCESS: OnceLock<Arc<ChatLimiter>> = OnceLock::new();
        PROCESS.get_or_init(Arc::default).clone()
    }

    /// Takes the next slot of `chat` (under `key`, the API URL and chat) when it falls before
    /// `deadline`, and waits for it; `Err` is the wait that would have passed the deadline (no
    /// slot taken).
    pub async fn wait(&self, key: &str, group: bool, deadline: Instant) -> Result<(), Duration> {
        let slot = {
            let mut chats = self.chats.lock().unwrap_or_else(|p| p.into_inner());
            let taken = chats.entry(key.to_string()).or_default();
            let now = Instant::now();
            while taken.front().is_some_and(|t| *t + GROUP_WINDOW <= now) {
                taken.pop_front();
            }
            let slot = next_slot(taken, group, now);
            if slot > deadline {
                return Err(slot - now);
            }
            taken.push_back(slot);
            slot
        };
        tokio::time::sleep_until(slot).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_negative_ids_and_channels() {
        assert!(is_group("-100123") && is_group("@albra_ops"));
        assert!(!is_group("4242"));
    }

    #[tokio::test(start_paused = true)]
    async fn one_message_a_second_per_chat_and_chats_do_not_wait_for_each_other() {
        let l = ChatLimiter::default();
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(600);
        for _ in 0..3 {
            l.wait("u#1", false, far).await.unwrap();
        }
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
        l.wait("u#2", false, far).await.unwrap();
        assert_eq!(
            t0.elapsed(),
            Duration::from_secs(2),
            "another chat goes at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_gets_twenty_a_minute() {
        let l = ChatLimiter::default();
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(600);
        for _ in 0..20 {
            l.wait("u#-5", true, far).await.unwrap();
        }
        assert_eq!(t0.elapsed(), Duration::from_secs(19));
        l.wait("u#-5", true, far).await.unwrap();
        assert_eq!(
            t0.elapsed(),
            Duration::from_secs(60),
            "the 21st waits for the first's minute"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_past_the_deadline_fails_at_once_and_takes_nothing() {
        let l = ChatLimiter::default();
        let t0 = Instant::now();
        l.wait("u#1", false, t0 + Duration::from_secs(5))
            .await
            .unwrap();
        let e = l.wait("u#1", false, t0 + Duration::from_millis(500)).await;
        assert_eq!(e, Err(Duration::from_secs(1)));
        assert_eq!(t0.elapsed(), Duration::ZERO, "no wait");
        l.wait("u#1", false, t0 + Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            t0.elapsed(),
            Duration::from_secs(1),
            "the refused slot was not taken"
        );
    }
}
