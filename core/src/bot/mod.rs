//! The Telegram bot's pure half: what a message asks ([`command`]), and each answer laid out as
//! Telegram HTML from the query layer's types ([`render`]). The adapters own the rest: the
//! webhook's guards (secret token, chat allow-list, redelivered and stale updates), the Bot API
//! calls, and running the query or command each [`command::BotCommand`] names.

pub mod command;
pub mod render;

pub use command::{BotCommand, ParseError, COMMANDS};
