//! [`Bot`]: the Telegram bot's impure half. It owns the guards every update passes (the chat
//! allow-list, once-per-update in the state store, the age limit), runs each
//! [`BotCommand`] through the same query/command layer as the CLI (`albra_core::query`), answers
//! with `albra_core::bot::render`, asks for a button press before anything that sends closing
//! orders, and writes an audit record for every state-changing command.
//!
//! Front ends (the webhook in `webhook.rs`, `albra telegram poll`) only hand it updates.

use super::api::types::{InlineKeyboardButton, InlineKeyboardMarkup, MaybeInaccessibleMessage};
use super::api::updates::{Update, UpdateContent};
use super::BotClient;
use crate::app::{self, App, Mode};
use crate::chart;
use albra_core::bot::{render, BotCommand, ParseError};
use albra_core::config::Config;
use albra_core::query::{commands, queries, QueryError};
use albra_core::state::{AuditRecord, PendingConfirm, StateRepo};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How long a reply may take, Telegram's 429 waits and retries included.
const REPLY_BUDGET: Duration = Duration::from_secs(10);
/// How long an update id is remembered: Telegram stops redelivering long before.
const KEEP_UPDATE_SECS: i64 = 24 * 3600;
/// The answer to a button whose confirmation is gone.
const EXPIRED: &str = "expired or already used";

/// What the bot did with one update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handled {
    /// A command (or a bad one's error) was answered.
    Answered,
    /// A `/close` or `/close_all` plan was sent with its Confirm / Cancel buttons.
    AskedToConfirm,
    /// A confirmed command ran; `ok` when it finished everything it planned.
    Confirmed {
        ok: bool,
    },
    Cancelled,
    /// A button whose confirmation was used, never existed, or expired.
    ConfirmationGone,
    /// A button pressed by someone other than the person who asked.
    NotYours,
    Ignored(Ignored),
    /// The store could not be read: the update was not taken (the webhook answers 500, so
    /// Telegram delivers it again).
    Failed(String),
}

/// Why an update was not acted on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// From a chat not in the allow-list (never answered).
    ForeignChat(i64),
    /// Taken before (Telegram redelivered it, or another process took it).
    Redelivered,
    /// Sent more than the age limit ago (a backlog after downtime is not replayed).
    Stale { age_secs: i64 },
    /// Text that is not a command, or a command for another bot.
    NotACommand,
    /// An update kind the bot does not handle (edits, reactions, …).
    Unsupported,
}

/// How a [`Bot`] behaves, besides its engine and client.
#[derive(Clone, Debug)]
pub struct BotSettings {
    /// Chats whose updates are handled.
    pub allowed_chats: Vec<i64>,
    /// The bot's @username (without `@`), to tell `/cmd@us` from `/cmd@other_bot`.
    pub username: Option<String>,
    /// Messages older than this are ignored.
    pub max_age: Duration,
    /// How long Confirm / Cancel buttons work.
    pub confirm_for: Duration,
}

impl BotSettings {
    pub const MAX_AGE: Duration = Duration::from_secs(300);
    pub const CONFIRM_FOR: Duration = Duration::from_secs(60);
}

/// The bot: built once per process, then [`Bot::handle`] per update.
pub struct Bot {
    app: App,
    client: BotClient,
    settings: BotSettings,
    allowed: HashSet<i64>,
    /// Foreign chats already logged (once per chat per process: a spammer cannot flood the log).
    warned: Mutex<HashSet<i64>>,
}

/// One update as the bot reads it.
struct Incoming<'a> {
    update_id: i64,
    chat: i64,
    user_id: u64,
    username: Option<String>,
    /// When a message was sent (s); `None` for a button press (its confirmation has an expiry).
    date: Option<u64>,
    kind: Kind<'a>,
}

enum Kind<'a> {
    Text(&'a str),
    Button {
        query_id: &'a str,
        message_id: i32,
        data: &'a str,
    },
}

/// An answer: its HTML (a picture's caption when there is one), whether the command did what
/// was asked (the audit's `ok`), and a PNG to send with it.
struct Reply {
    html: String,
    ok: bool,
    photo: Option<Vec<u8>>,
}

impl Reply {
    fn ok(html: String) -> Reply {
        Reply {
            html,
            ok: true,
            photo: None,
        }
    }
}

#[derive(thiserror::Error, Debug)]
pub enum BotError {
    #[error("{0}")]
    Setup(String),
}

impl Bot {
    pub fn new(app: App, client: BotClient, settings: BotSettings) -> Bot {
        Bot {
            app,
            client,
            allowed: settings.allowed_chats.iter().copied().collect(),
            settings,
            warned: Mutex::new(HashSet::new()),
        }
    }

    /// The bot for `cfg`: the live engine (each account's signed client), the Bot API client
    /// for `TELEGRAM_BOT_TOKEN`, the chats of `[telegram] allowed_chat_ids` (or
    /// `TELEGRAM_CHAT_ID` when that list is empty), and its @username from getMe when Telegram
    /// answers within a few seconds.
    pub async fn build(cfg: Config, state: &str, env_file: Option<&Path>) -> Result<Bot, BotError> {
        let setup = |e: &dyn std::fmt::Display| BotError::Setup(e.to_string());
        let secrets = app::default_secrets(env_file).map_err(|e| setup(&e))?;
        let creds = albra_core::ports::Secrets::telegram(&secrets)
            .await
            .map_err(|e| setup(&e))?
            .ok_or_else(|| setup(&"TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID are not set"))?;
        let mut allowed_chats = cfg.telegram.allowed_chat_ids.clone();
        if allowed_chats.is_empty() {
            let id = creds.chat_id.parse::<i64>().map_err(|_| {
                setup(&"TELEGRAM_CHAT_ID is not a numeric chat id; list the chats in [telegram] allowed_chat_ids")
            })?;
            allowed_chats.push(id);
        }
        let client = BotClient::new(creds.bot_token).map_err(|e| setup(&e))?;
        let username = match client.get_me(Instant::now() + Duration::from_secs(5)).await {
            Ok(me) => me.username,
            Err(e) => {
                tracing::warn!(error = %e, "getMe failed; commands addressed /cmd@bot to any bot are taken as ours");
                None
            }
        };
        let app = app::build(cfg, state, Mode::Live, env_file)
            .await
            .map_err(|e| setup(&e))?;
        let settings = BotSettings {
            allowed_chats,
            username,
            max_age: BotSettings::MAX_AGE,
            confirm_for: BotSettings::CONFIRM_FOR,
        };
        Ok(Bot::new(app, client, settings))
    }

    pub fn client(&self) -> &BotClient {
        &self.client
    }

    fn repo(&self) -> &StateRepo {
        &self.app.engine.repo
    }

    fn cfg(&self) -> &Config {
        &self.app.engine.config
    }

    /// Handle one update at wall-clock time `now` (ms). Never panics; errors are answered in
    /// the chat or logged.
    pub async fn handle(&self, update: &Update, now: i64) -> Handled {
        // The bot lives for days: each update is a job of its own with a fresh Telegram budget
        // for the notifications its commands raise (a close's exit notice), as each scheduled
        // job gets one; without this the budget would run out once and stay spent.
        self.app.telegram_budget.renew();
        let Some(inc) = read(update) else {
            return Handled::Ignored(Ignored::Unsupported);
        };
        if !self.allowed.contains(&inc.chat) {
            let first = self
                .warned
                .lock()
                .map(|mut w| w.insert(inc.chat))
                .unwrap_or(false);
            if first {
                tracing::warn!(
                    chat = inc.chat,
                    user = inc.user_id,
                    "Telegram update from a chat not in [telegram] allowed_chat_ids: ignored (logged once per chat)"
                );
            }
            return Handled::Ignored(Ignored::ForeignChat(inc.chat));
        }
        match self
            .repo()
            .take_update(inc.update_id, now, KEEP_UPDATE_SECS)
            .await
        {
            Ok(true) => {}
            Ok(false) => return Handled::Ignored(Ignored::Redelivered),
            Err(e) => {
                tracing::error!(error = %e, update_id = inc.update_id, "update not taken: the store failed");
                return Handled::Failed(e.to_string());
            }
        }
        if let Some(date) = inc.date {
            let age_secs = now / 1000 - date as i64;
            if age_secs > self.settings.max_age.as_secs() as i64 {
                tracing::info!(
                    update_id = inc.update_id,
                    age_secs,
                    "stale Telegram update ignored"
                );
                return Handled::Ignored(Ignored::Stale { age_secs });
            }
        }
        match inc.kind {
            Kind::Text(text) => self.on_text(&inc, text, now).await,
            Kind::Button {
                query_id,
                message_id,
                data,
            } => self.on_button(&inc, query_id, message_id, data, now).await,
        }
    }

    async fn on_text(&self, inc: &Incoming<'_>, text: &str, now: i64) -> Handled {
        let cmd = match BotCommand::parse(text, self.settings.username.as_deref()) {
            Ok(c) => c,
            Err(ParseError::NotACommand) => return Handled::Ignored(Ignored::NotACommand),
            Err(e) => {
                self.send(inc.chat, &render::escape(&e.to_string()), None)
                    .await;
                return Handled::Answered;
            }
        };
        if cmd.needs_confirmation() {
            return self.ask(inc, &cmd, now).await;
        }
        let reply = match self.run(&cmd, now).await {
            Ok(r) => r,
            Err(e) => Reply {
                html: format!(
                    "{}: {}",
                    render::escape(&cmd.text()),
                    render::escape(&e.to_string())
                ),
                ok: false,
                photo: None,
            },
        };
        if cmd.changes_state() {
            self.audit(inc, &cmd.text(), &reply, now).await;
        }
        match reply.photo {
            Some(png) => self.send_photo(inc.chat, png, &reply.html).await,
            None => self.send(inc.chat, &reply.html, None).await,
        }
        Handled::Answered
    }

    /// Every command that needs no confirmation, through the query/command layer.
    async fn run(&self, cmd: &BotCommand, now: i64) -> Result<Reply, QueryError> {
        let (repo, cfg) = (self.repo(), self.cfg());
        let html = match cmd {
            BotCommand::Status => render::status(&queries::status(repo, cfg, now).await?),
            BotCommand::Accounts => render::accounts(&queries::status(repo, cfg, now).await?),
            BotCommand::Balance { account } => {
                let accts: Vec<_> = commands::runtimes(&self.app.engine, account.as_deref())?
                    .into_iter()
                    .cloned()
                    .collect();
                render::balance(&queries::balance(repo, &accts).await?)
            }
            BotCommand::Positions { account } => {
                render::positions(&queries::positions(repo, cfg, account.as_deref()).await?)
            }
            BotCommand::Pause { account } => return self.pause(Some(account), true, now).await,
            BotCommand::Resume { account } => {
                return self.pause(account.as_deref(), false, now).await
            }
            BotCommand::Stop => return self.pause(None, true, now).await,
            BotCommand::Sync { account } => return self.sync(account.as_deref()).await,
            BotCommand::Profit { days } => {
                render::performance(&queries::performance(repo, cfg, None, *days, now).await?)
            }
            BotCommand::Performance => {
                render::performance(&queries::performance(repo, cfg, None, None, now).await?)
            }
            BotCommand::Daily { days } => {
                period(repo, cfg, queries::Period::Day, *days, now).await?
            }
            BotCommand::Weekly { weeks } => {
                period(repo, cfg, queries::Period::Week, *weeks, now).await?
            }
            BotCommand::Chart { account } => return self.chart(account.as_deref()).await,
            BotCommand::Risk => render::risk(&queries::risk_check(repo, cfg, None, now).await?),
            BotCommand::Health => render::health(&queries::job_health(repo, cfg, None, now).await?),
            BotCommand::Help => render::help(),
            BotCommand::Close { .. } | BotCommand::CloseAll { .. } => {
                return Err(QueryError::Refused("asks for confirmation first".into()))
            }
        };
        Ok(Reply::ok(html))
    }

    /// `/chart`: the last 7 days' equity and drawdown of one account or all, as a picture. The
    /// days are the exchange clock's, which dates the sync's equity points.
    async fn chart(&self, account: Option<&str>) -> Result<Reply, QueryError> {
        const WEEK_MS: i64 = 7 * 86_400_000;
        let now = self.app.exchange_now().await;
        let curves =
            queries::equity_history(self.repo(), self.cfg(), account, now - WEEK_MS, now + 1)
                .await?;
        let drawn: Vec<&[_]> = curves
            .iter()
            .map(|(_, c)| c.as_slice())
            .filter(|c| !c.is_empty())
            .collect();
        if drawn.is_empty() {
            return Ok(Reply::ok(render::chart_empty()));
        }
        let colours: Vec<&str> = chart::COLOURS.iter().map(|(name, _)| *name).collect();
        match chart::equity_png(&drawn) {
            Ok(png) => Ok(Reply {
                html: render::chart_caption(&curves, &colours),
                ok: true,
                photo: Some(png),
            }),
            Err(e) => Ok(Reply {
                html: render::escape(&e.to_string()),
                ok: false,
                photo: None,
            }),
        }
    }

    /// Pause (or resume) one account, or every configured account (`/stop`, `/resume`).
    async fn pause(
        &self,
        account: Option<&str>,
        pause: bool,
        now: i64,
    ) -> Result<Reply, QueryError> {
        let ids: Vec<String> = match account {
            Some(a) => vec![a.to_string()],
            None => self.cfg().accounts.iter().map(|a| a.id.0.clone()).collect(),
        };
        let mut html = String::new();
        for id in ids {
            let snap = commands::gather_state(self.repo(), self.cfg(), &id, now).await?;
            let plan = commands::plan_pause(&snap, pause);
            let paused = commands::apply_pause(self.repo(), &plan, now).await?;
            let name = render::escape(plan.account.as_str());
            html.push_str(&match (plan.write, paused) {
                (None, true) => format!("<b>{name}</b>: already paused; nothing written\n"),
                (None, false) => format!("<b>{name}</b>: already trading; nothing written\n"),
                (Some(_), true) => format!(
                    "<b>{name}</b>: paused: no new entries or signal exits; the {} open position(s) keep their stops\n",
                    plan.open_positions
                ),
                (Some(_), false) => {
                    format!("<b>{name}</b>: resumed: the next candle close is evaluated\n")
                }
            });
        }
        Ok(Reply::ok(html))
    }

    async fn sync(&self, account: Option<&str>) -> Result<Reply, QueryError> {
        let now = self.app.exchange_now().await;
        let mut reply = Reply::ok(String::new());
        for acct in commands::runtimes(&self.app.engine, account)? {
            let snap = commands::gather(self.repo(), acct, now).await?;
            let done =
                commands::apply_sync(&self.app.engine, &commands::plan_sync(&snap), now).await;
            reply.ok &= done.errors.is_empty();
            reply.html.push_str(&render::sync_outcome(&done));
        }
        Ok(reply)
    }

    /// Send the plan of `/close` or `/close_all` with Confirm / Cancel buttons that work for
    /// `confirm_for`, only for the person who asked.
    async fn ask(&self, inc: &Incoming<'_>, cmd: &BotCommand, now: i64) -> Handled {
        let plan = match self.plan_html(cmd).await {
            Ok(Some(html)) => html,
            Ok(None) => {
                let html = format!(
                    "{}: nothing to do; nothing sent",
                    render::escape(&cmd.text())
                );
                self.send(inc.chat, &html, None).await;
                return Handled::Answered;
            }
            Err(e) => {
                let html = format!(
                    "{}: {}",
                    render::escape(&cmd.text()),
                    render::escape(&e.to_string())
                );
                self.send(inc.chat, &html, None).await;
                return Handled::Answered;
            }
        };
        let nonce = match nonce() {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "no random nonce for a confirmation");
                self.send(
                    inc.chat,
                    "cannot ask for confirmation now; nothing sent",
                    None,
                )
                .await;
                return Handled::Answered;
            }
        };
        let pending = PendingConfirm {
            command: cmd.text(),
            chat_id: inc.chat,
            user_id: inc.user_id as i64,
            expires_at: now + self.settings.confirm_for.as_millis() as i64,
        };
        if let Err(e) = self.repo().save_confirm(&nonce, &pending).await {
            tracing::error!(error = %e, "confirmation not stored");
            self.send(
                inc.chat,
                "cannot store the confirmation; nothing sent",
                None,
            )
            .await;
            return Handled::Answered;
        }
        let html = format!(
            "{plan}\nConfirm within {} s.",
            self.settings.confirm_for.as_secs()
        );
        self.send(inc.chat, &html, Some(keyboard(&nonce))).await;
        Handled::AskedToConfirm
    }

    /// The plan as HTML, `None` when there is nothing to do.
    async fn plan_html(&self, cmd: &BotCommand) -> Result<Option<String>, QueryError> {
        let engine = &self.app.engine;
        match cmd {
            BotCommand::Close { symbol, strategy } => {
                let plan = commands::plan_close(engine, symbol, strategy.as_deref()).await?;
                Ok((!plan.close.is_empty()).then(|| render::close_plan(&plan)))
            }
            BotCommand::CloseAll { account } => {
                let now = self.app.exchange_now().await;
                let plans = commands::plan_emergency_for(engine, account.as_deref(), now).await?;
                Ok((!plans.iter().all(|p| p.is_empty())).then(|| render::emergency_plan(&plans)))
            }
            _ => Ok(None),
        }
    }

    async fn on_button(
        &self,
        inc: &Incoming<'_>,
        query_id: &str,
        message_id: i32,
        data: &str,
        now: i64,
    ) -> Handled {
        let Some((action, nonce)) = data.split_once(':') else {
            self.answer(query_id, "unknown button").await;
            return Handled::Ignored(Ignored::Unsupported);
        };
        let pending = match self.repo().use_confirm(nonce).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                self.answer(query_id, EXPIRED).await;
                return Handled::ConfirmationGone;
            }
            Err(e) => {
                tracing::error!(error = %e, "confirmation unreadable");
                self.answer(query_id, "the store failed; nothing was done")
                    .await;
                return Handled::Failed(e.to_string());
            }
        };
        if pending.user_id != inc.user_id as i64 || pending.chat_id != inc.chat {
            // Put it back for the person who asked (using it above removed it).
            if let Err(e) = self.repo().save_confirm(nonce, &pending).await {
                tracing::warn!(error = %e, "confirmation not put back");
            }
            self.answer(query_id, "only the person who asked can confirm")
                .await;
            return Handled::NotYours;
        }
        let what = render::escape(&pending.command);
        if pending.expires_at < now {
            self.answer(query_id, EXPIRED).await;
            self.edit(
                inc.chat,
                message_id,
                &format!("{what}: confirmation expired; nothing was done"),
            )
            .await;
            return Handled::ConfirmationGone;
        }
        if action != "ok" {
            self.answer(query_id, "cancelled").await;
            self.edit(
                inc.chat,
                message_id,
                &format!("{what}: cancelled; nothing was done"),
            )
            .await;
            return Handled::Cancelled;
        }
        // Answered before the orders: Telegram shows a spinner until then, and the stop can
        // take longer than its patience.
        self.answer(query_id, "running…").await;
        let reply = match self.confirmed(&pending.command).await {
            Ok(r) => r,
            Err(e) => Reply {
                html: format!("{what}: {}", render::escape(&e.to_string())),
                ok: false,
                photo: None,
            },
        };
        self.audit(inc, &pending.command, &reply, now).await;
        if !self.edit(inc.chat, message_id, &reply.html).await {
            self.send(inc.chat, &reply.html, None).await;
        }
        Handled::Confirmed { ok: reply.ok }
    }

    /// Run a confirmed `/close` or `/close_all`, planned again from what the exchange and the
    /// store hold now.
    async fn confirmed(&self, command: &str) -> Result<Reply, QueryError> {
        let engine = &self.app.engine;
        let now = self.app.exchange_now().await;
        match BotCommand::parse(command, None) {
            Ok(BotCommand::Close { symbol, strategy }) => {
                let plan = commands::plan_close(engine, &symbol, strategy.as_deref()).await?;
                let o = commands::apply_close(engine, &plan, now).await?;
                Ok(Reply {
                    ok: o.errors.is_empty() && o.still_open == 0,
                    html: render::close_outcome(&o),
                    photo: None,
                })
            }
            Ok(BotCommand::CloseAll { account }) => {
                let mut reply = Reply::ok(String::from("<b>Emergency stop</b>\n"));
                for p in commands::plan_emergency_for(engine, account.as_deref(), now).await? {
                    let o = commands::apply_emergency(engine, &p, now).await?;
                    reply.ok &= o.flat && o.open_orders == 0 && o.paused && o.errors.is_empty();
                    reply.html.push_str(&render::emergency_outcome(&o));
                }
                Ok(reply)
            }
            _ => Err(QueryError::Refused(format!(
                "`{command}` is not a confirmable command"
            ))),
        }
    }

    async fn audit(&self, inc: &Incoming<'_>, command: &str, reply: &Reply, now: i64) {
        let record = AuditRecord {
            at: now,
            update_id: inc.update_id,
            chat_id: inc.chat,
            user_id: inc.user_id as i64,
            user: inc.username.as_ref().map(|u| format!("@{u}")),
            command: command.to_string(),
            outcome: reply.html.clone(),
            ok: reply.ok,
        };
        if let Err(e) = self.repo().record_audit(&record).await {
            tracing::error!(error = %e, command, "audit record not written");
        }
    }

    async fn send(&self, chat: i64, html: &str, keyboard: Option<InlineKeyboardMarkup>) {
        let deadline = Instant::now() + REPLY_BUDGET;
        if let Err(e) = self
            .client
            .send_message(&chat.to_string(), html, keyboard, deadline)
            .await
        {
            tracing::warn!(error = %e, chat, "Telegram reply not sent");
        }
    }

    /// Send a picture with its HTML caption.
    async fn send_photo(&self, chat: i64, png: Vec<u8>, caption: &str) {
        let deadline = Instant::now() + REPLY_BUDGET;
        if let Err(e) = self
            .client
            .send_photo(&chat.to_string(), png, Some(caption), deadline)
            .await
        {
            tracing::warn!(error = %e, chat, "Telegram picture not sent");
        }
    }

    /// Replace a message's text (and drop its buttons); `false` when Telegram refused.
    async fn edit(&self, chat: i64, message_id: i32, html: &str) -> bool {
        let deadline = Instant::now() + REPLY_BUDGET;
        match self
            .client
            .edit_message_text(&chat.to_string(), message_id, html, None, deadline)
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, chat, message_id, "Telegram message not edited");
                false
            }
        }
    }

    async fn answer(&self, query_id: &str, text: &str) {
        let deadline = Instant::now() + REPLY_BUDGET;
        if let Err(e) = self
            .client
            .answer_callback_query(query_id, Some(text), deadline)
            .await
        {
            tracing::warn!(error = %e, "button press not answered");
        }
    }
}

/// The update's chat, sender, date and content; `None` for kinds the bot does not handle.
fn read(update: &Update) -> Option<Incoming<'_>> {
    let update_id = i64::from(update.update_id);
    match &update.content {
        UpdateContent::Message(m) => {
            let from = m.from.as_ref()?;
            Some(Incoming {
                update_id,
                chat: m.chat.id,
                user_id: from.id,
                username: from.username.clone(),
                date: Some(m.date),
                kind: Kind::Text(m.text.as_deref()?),
            })
        }
        UpdateContent::CallbackQuery(q) => {
            let (chat, message_id) = match q.message.as_ref()? {
                MaybeInaccessibleMessage::Message(m) => (m.chat.id, m.message_id),
                MaybeInaccessibleMessage::InaccessibleMessage(m) => (m.chat.id, m.message_id),
            };
            Some(Incoming {
                update_id,
                chat,
                user_id: q.from.id,
                username: q.from.username.clone(),
                date: None,
                kind: Kind::Button {
                    query_id: &q.id,
                    message_id,
                    data: q.data.as_deref()?,
                },
            })
        }
        _ => None,
    }
}

async fn period(
    repo: &StateRepo,
    cfg: &Config,
    p: queries::Period,
    n: u32,
    now: i64,
) -> Result<String, QueryError> {
    let rows = queries::pnl_by_period(repo, cfg, None, p, n, now).await?;
    Ok(render::periods(&rows, p))
}

/// The Confirm / Cancel buttons of one confirmation.
fn keyboard(nonce: &str) -> InlineKeyboardMarkup {
    let button = |text: &str, action: &str| {
        InlineKeyboardButton::builder()
            .text(text)
            .callback_data(format!("{action}:{nonce}"))
            .build()
    };
    InlineKeyboardMarkup::builder()
        .inline_keyboard(vec![vec![button("Confirm", "ok"), button("Cancel", "no")]])
        .build()
}

/// 128 random bits as hex, from the kernel's generator: a confirmation cannot be guessed from
/// the chat (Linux only, as every host of this system; it avoids a random-number crate).
fn nonce() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_random_hex_that_fits_callback_data() {
        let (a, b) = (nonce().unwrap(), nonce().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        let kb = keyboard(&a);
        let data = kb.inline_keyboard[0][0].callback_data.clone().unwrap();
        assert_eq!(data, format!("ok:{a}"));
        assert!(data.len() <= 64, "Telegram's callback_data limit");
    }

    #[test]
    fn updates_are_read_for_chat_sender_and_kind() {
        let u: Update = serde_json::from_value(serde_json::json!({
            "update_id": 7,
            "message": {"message_id": 1, "date": 100, "text": "/status",
                "chat": {"id": -5, "type": "group", "title": "ops"},
                "from": {"id": 9, "is_bot": false, "first_name": "A", "username": "op"}}
        }))
        .unwrap();
        let inc = read(&u).unwrap();
        assert_eq!((inc.update_id, inc.chat, inc.user_id), (7, -5, 9));
        assert_eq!(inc.username.as_deref(), Some("op"));
        assert!(matches!(inc.kind, Kind::Text("/status")));
        let edited: Update = serde_json::from_value(serde_json::json!({
            "update_id": 8,
            "edited_message": {"message_id": 1, "date": 100, "text": "/stop",
                "chat": {"id": -5, "type": "group", "title": "ops"}}
        }))
        .unwrap();
        assert!(
            read(&edited).is_none(),
            "an edited command does not run again"
        );
    }
}
