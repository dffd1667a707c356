//! The bot's commands: parsed from a message's text into a [`BotCommand`], with what each needs
//! (a confirmation, an audit record) and the `/help` list Telegram's command menu also shows.

use crate::domain::Symbol;

/// One command a person sent the bot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BotCommand {
    Status,
    /// `None`: every account (`/balance` or `/balance all`).
    Balance {
        account: Option<String>,
    },
    Positions {
        account: Option<String>,
    },
    Accounts,
    Pause {
        account: String,
    },
    /// `None`: every account (after `/stop`).
    Resume {
        account: Option<String>,
    },
    /// No new entries on any account; protective orders stay.
    Stop,
    Sync {
        account: Option<String>,
    },
    /// Close a strategy position of `symbol` at market (every strategy's when `None`).
    Close {
        symbol: Symbol,
        strategy: Option<String>,
    },
    /// Emergency stop of one account or all.
    CloseAll {
        account: Option<String>,
    },
    /// Closed-trade figures over the last `days` days (all when `None`).
    Profit {
        days: Option<u32>,
    },
    Daily {
        days: u32,
    },
    Weekly {
        weeks: u32,
    },
    Performance,
    /// Equity and drawdown of the last seven days as a picture (every account when `None`).
    Chart {
        account: Option<String>,
    },
    Risk,
    Health,
    Help,
}

/// Why a message is not a command the bot runs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not a command at all (no leading `/`), or one addressed to another bot in a group.
    #[error("not a command")]
    NotACommand,
    #[error("unknown command /{0}; /help lists them")]
    Unknown(String),
    #[error("/{command}: {why}; usage: {usage}")]
    BadArgument {
        command: &'static str,
        why: String,
        usage: &'static str,
    },
}

/// Every command with its usage and what it does: `/help`, and the menu set with setMyCommands.
pub const COMMANDS: &[(&str, &str, &str)] = &[
    (
        "status",
        "/status",
        "equity, drawdown and open positions per account",
    ),
    (
        "balance",
        "/balance [all|ACCOUNT]",
        "what the exchange holds",
    ),
    (
        "positions",
        "/positions [ACCOUNT]",
        "every tracked position with its stop",
    ),
    ("accounts", "/accounts", "accounts, enabled or paused"),
    (
        "pause",
        "/pause ACCOUNT",
        "no entries or signal exits; stops stay",
    ),
    (
        "resume",
        "/resume [ACCOUNT]",
        "trade again (every account without one)",
    ),
    ("stop", "/stop", "no new entries anywhere; stops stay"),
    ("sync", "/sync [ACCOUNT]", "run the position sync now"),
    (
        "close",
        "/close SYMBOL [STRATEGY]",
        "close a strategy position at market (asks first)",
    ),
    (
        "close_all",
        "/close_all [ACCOUNT]",
        "emergency stop: flatten, cancel, pause (asks first)",
    ),
    ("profit", "/profit [DAYS]", "closed-trade figures"),
    ("daily", "/daily [N]", "PnL of the last N days"),
    ("weekly", "/weekly [N]", "PnL of the last N weeks"),
    (
        "performance",
        "/performance",
        "figures per account and strategy",
    ),
    (
        "chart",
        "/chart [ACCOUNT]",
        "equity and drawdown of the last 7 days, as a picture",
    ),
    ("risk", "/risk", "limits and what needs attention"),
    ("health", "/health", "last run of every job"),
    ("help", "/help", "this list"),
];

impl BotCommand {
    /// Parse `/name[@bot] args…`. A command addressed to another bot (`@other_bot`) is not ours.
    pub fn parse(text: &str, bot_username: Option<&str>) -> Result<BotCommand, ParseError> {
        let text = text.trim();
        let Some(rest) = text.strip_prefix('/') else {
            return Err(ParseError::NotACommand);
        };
        let mut words = rest.split_whitespace();
        let head = words.next().unwrap_or_default();
        let (name, to) = match head.split_once('@') {
            Some((n, bot)) => (n, Some(bot)),
            None => (head, None),
        };
        if let (Some(to), Some(me)) = (to, bot_username) {
            if !to.eq_ignore_ascii_case(me) {
                return Err(ParseError::NotACommand);
            }
        }
        let args: Vec<&str> = words.collect();
        Self::from_parts(&name.to_ascii_lowercase(), &args)
    }

    fn from_parts(name: &str, args: &[&str]) -> Result<BotCommand, ParseError> {
        let usage = COMMANDS
            .iter()
            .find(|(n, ..)| *n == name)
            .map(|(n, u, _)| (*n, *u))
            .ok_or_else(|| ParseError::Unknown(name.to_string()))?;
        let arg = |i: usize| args.get(i).map(|s| s.to_string());
        let cmd = match name {
            "status" => BotCommand::Status,
            "balance" => BotCommand::Balance {
                account: arg(0).filter(|a| !a.eq_ignore_ascii_case("all")),
            },
            "positions" => BotCommand::Positions { account: arg(0) },
            "accounts" => BotCommand::Accounts,
            "pause" => BotCommand::Pause {
                account: arg(0).ok_or_else(|| bad(usage, "which account?"))?,
            },
            "resume" => BotCommand::Resume { account: arg(0) },
            "stop" => BotCommand::Stop,
            "sync" => BotCommand::Sync { account: arg(0) },
            "close" => BotCommand::Close {
                symbol: Symbol::new(
                    arg(0)
                        .ok_or_else(|| bad(usage, "which symbol?"))?
                        .to_ascii_uppercase(),
                ),
                strategy: arg(1).map(|s| s.to_ascii_uppercase()),
            },
            "close_all" => BotCommand::CloseAll {
                account: arg(0).filter(|a| !a.eq_ignore_ascii_case("all")),
            },
            "profit" => BotCommand::Profit {
                days: number(usage, args.first(), 1..=3650)?,
            },
            "daily" => BotCommand::Daily {
                days: number(usage, args.first(), 1..=90)?.unwrap_or(7),
            },
            "weekly" => BotCommand::Weekly {
                weeks: number(usage, args.first(), 1..=52)?.unwrap_or(4),
            },
            "performance" => BotCommand::Performance,
            "chart" => BotCommand::Chart { account: arg(0) },
            "risk" => BotCommand::Risk,
            "health" => BotCommand::Health,
            _ => BotCommand::Help,
        };
        if args.len() > max_args(&cmd) {
            return Err(bad(usage, "too many arguments"));
        }
        Ok(cmd)
    }

    /// Whether it changes anything (it then writes an audit record).
    pub fn changes_state(&self) -> bool {
        matches!(
            self,
            BotCommand::Pause { .. }
                | BotCommand::Resume { .. }
                | BotCommand::Stop
                | BotCommand::Sync { .. }
                | BotCommand::Close { .. }
                | BotCommand::CloseAll { .. }
        )
    }

    /// Whether it sends orders that close positions: asked for again with buttons that expire.
    pub fn needs_confirmation(&self) -> bool {
        matches!(self, BotCommand::Close { .. } | BotCommand::CloseAll { .. })
    }

    /// The command as it would be typed (audit records, confirmations).
    pub fn text(&self) -> String {
        let opt = |a: &Option<String>| a.as_ref().map(|a| format!(" {a}")).unwrap_or_default();
        match self {
            BotCommand::Status => "/status".into(),
            BotCommand::Balance { account } => format!("/balance{}", opt(account)),
            BotCommand::Positions { account } => format!("/positions{}", opt(account)),
            BotCommand::Accounts => "/accounts".into(),
            BotCommand::Pause { account } => format!("/pause {account}"),
            BotCommand::Resume { account } => format!("/resume{}", opt(account)),
            BotCommand::Stop => "/stop".into(),
            BotCommand::Sync { account } => format!("/sync{}", opt(account)),
            BotCommand::Close { symbol, strategy } => format!("/close {symbol}{}", opt(strategy)),
            BotCommand::CloseAll { account } => format!("/close_all{}", opt(account)),
            BotCommand::Profit { days } => {
                format!("/profit{}", opt(&days.map(|d| d.to_string())))
            }
            BotCommand::Daily { days } => format!("/daily {days}"),
            BotCommand::Weekly { weeks } => format!("/weekly {weeks}"),
            BotCommand::Performance => "/performance".into(),
            BotCommand::Chart { account } => format!("/chart{}", opt(account)),
            BotCommand::Risk => "/risk".into(),
            BotCommand::Health => "/health".into(),
            BotCommand::Help => "/help".into(),
        }
    }
}

fn max_args(cmd: &BotCommand) -> usize {
    match cmd {
        BotCommand::Close { .. } => 2,
        BotCommand::Status
        | BotCommand::Accounts
        | BotCommand::Stop
        | BotCommand::Performance
        | BotCommand::Risk
        | BotCommand::Health
        | BotCommand::Help => 0,
        _ => 1,
    }
}

fn bad((command, usage): (&'static str, &'static str), why: &str) -> ParseError {
    ParseError::BadArgument {
        command,
        why: why.to_string(),
        usage,
    }
}

/// An optional whole number within `range`.
fn number(
    usage: (&'static str, &'static str),
    arg: Option<&&str>,
    range: std::ops::RangeInclusive<u32>,
) -> Result<Option<u32>, ParseError> {
    let Some(a) = arg else { return Ok(None) };
    match a.parse::<u32>() {
        Ok(n) if range.contains(&n) => Ok(Some(n)),
        _ => Err(bad(
            usage,
            &format!(
                "`{a}` is not a number from {} to {}",
                range.start(),
                range.end()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<BotCommand, ParseError> {
        BotCommand::parse(text, Some("albra_bot"))
    }

    #[test]
    fn commands_parse_with_their_arguments() {
        let cases: Vec<(&str, BotCommand)> = vec![
            ("/status", BotCommand::Status),
            ("/status@albra_bot", BotCommand::Status),
            ("  /STATUS  ", BotCommand::Status),
            ("/balance", BotCommand::Balance { account: None }),
            ("/balance all", BotCommand::Balance { account: None }),
            (
                "/balance sub1",
                BotCommand::Balance {
                    account: Some("sub1".into()),
                },
            ),
            (
                "/pause main",
                BotCommand::Pause {
                    account: "main".into(),
                },
            ),
            ("/resume", BotCommand::Resume { account: None }),
            (
                "/close btcusdt",
                BotCommand::Close {
                    symbol: Symbol::new("BTCUSDT"),
                    strategy: None,
                },
            ),
            (
                "/close BTCUSDT tfpe",
                BotCommand::Close {
                    symbol: Symbol::new("BTCUSDT"),
                    strategy: Some("TFPE".into()),
                },
            ),
            ("/close_all", BotCommand::CloseAll { account: None }),
            (
                "/close_all main",
                BotCommand::CloseAll {
                    account: Some("main".into()),
                },
            ),
            ("/profit", BotCommand::Profit { days: None }),
            ("/profit 30", BotCommand::Profit { days: Some(30) }),
            ("/daily", BotCommand::Daily { days: 7 }),
            ("/weekly 8", BotCommand::Weekly { weeks: 8 }),
            ("/chart", BotCommand::Chart { account: None }),
            (
                "/chart main",
                BotCommand::Chart {
                    account: Some("main".into()),
                },
            ),
            ("/help", BotCommand::Help),
        ];
        for (text, want) in cases {
            assert_eq!(p(text), Ok(want.clone()), "{text}");
            // What an audit record shows parses back to the same command.
            assert_eq!(p(&want.text()), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_input_is_named_and_other_bots_commands_are_not_ours() {
        assert_eq!(p("hello"), Err(ParseError::NotACommand));
        assert_eq!(p("/status@other_bot"), Err(ParseError::NotACommand));
        assert_eq!(p("/launch"), Err(ParseError::Unknown("launch".into())));
        let e = p("/pause").unwrap_err().to_string();
        assert!(
            e.contains("which account?") && e.contains("/pause ACCOUNT"),
            "{e}"
        );
        let e = p("/daily 0").unwrap_err().to_string();
        assert!(e.contains("`0` is not a number from 1 to 90"), "{e}");
        let e = p("/status now").unwrap_err().to_string();
        assert!(e.contains("too many arguments"), "{e}");
    }

    #[test]
    fn only_order_sending_commands_ask_and_only_changes_are_audited() {
        for (name, ..) in COMMANDS {
            let args = match *name {
                "pause" => " main",
                "close" => " BTCUSDT",
                _ => "",
            };
            let c = p(&format!("/{name}{args}")).unwrap();
            assert_eq!(
                c.needs_confirmation(),
                matches!(*name, "close" | "close_all"),
                "{name}"
            );
            assert_eq!(
                c.changes_state(),
                matches!(
                    *name,
                    "pause" | "resume" | "stop" | "sync" | "close" | "close_all"
                ),
                "{name}"
            );
        }
    }
}
