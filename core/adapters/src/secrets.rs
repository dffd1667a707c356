//! Secrets adapters behind [`Secrets`]: [`EnvSecrets`] (process environment + `.env`, for local
//! runs and EC2), [`SsmSecrets`] (SSM Parameter Store SecureStrings, for Lambda) and
//! [`ChainSecrets`], which picks one per account by its [`KeySource`].
//!
//! Every value is held as a [`Secret`] from the moment it is read, so no Debug or Display of these
//! types (or of what they return) can leak a key into a log.

pub use albra_core::config::{
    default_ssm_prefix, ssm_account_prefix, ssm_stage, DEFAULT_SSM_STAGE, STAGE_VAR,
};
use albra_core::domain::AccountId;
use albra_core::ports::{ApiKeys, KeySource, Secret, Secrets, SecretsError, TelegramCreds};
use async_trait::async_trait;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_ssm::error::DisplayErrorContext;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub const TELEGRAM_TOKEN_VAR: &str = "TELEGRAM_BOT_TOKEN";
pub const TELEGRAM_CHAT_VAR: &str = "TELEGRAM_CHAT_ID";
/// The token Telegram sends with every webhook delivery (`X-Telegram-Bot-Api-Secret-Token`), as
/// registered by `albra telegram set-webhook`.
pub const TELEGRAM_WEBHOOK_SECRET_VAR: &str = "TELEGRAM_WEBHOOK_SECRET";

/// Telegram's rule for a webhook secret: 1–256 characters of `A-Z a-z 0-9 _ -`.
/// The dashboard's access token (environment or `.env`; SSM `/albra/{stage}/dashboard/token` in
/// Lambda): whoever presents it gets the read-only pages.
pub const DASHBOARD_TOKEN_VAR: &str = "ALBRA_DASHBOARD_TOKEN";
/// The shortest dashboard token taken: the token is the only lock on the pages, and a short
/// one can be guessed.
pub const DASHBOARD_TOKEN_MIN_LEN: usize = 24;

fn dashboard_token_rule(name: &str) -> String {
    format!("{name} must be at least {DASHBOARD_TOKEN_MIN_LEN} characters with no spaces (e.g. `openssl rand -hex 24`)")
}

fn valid_dashboard_token(s: &str) -> bool {
    s.len() >= DASHBOARD_TOKEN_MIN_LEN && !s.chars().any(char::is_whitespace)
}

fn valid_webhook_secret(s: &str) -> bool {
    (1..=256).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Environment variable names holding an account's keys for `KeySource::Env { prefix }`:
/// `BINANCE` keeps the original system's `BINANCE_API_KEY` / `BINANCE_SECRET_KEY`; any other
/// prefix `P` uses `P_API_KEY` / `P_API_SECRET`.
pub fn env_key_names(prefix: &str) -> (String, String) {
    let p = prefix.trim_end_matches('_');
    if p == "BINANCE" {
        ("BINANCE_API_KEY".into(), "BINANCE_SECRET_KEY".into())
    } else {
        (format!("{p}_API_KEY"), format!("{p}_API_SECRET"))
    }
}

/// SSM parameter names for `KeySource::Ssm { prefix }`: `{prefix}/binance_api_key` and
/// `{prefix}/binance_api_secret`.
pub fn ssm_key_names(prefix: &str) -> (String, String) {
    let p = prefix.trim_end_matches('/');
    (
        format!("{p}/binance_api_key"),
        format!("{p}/binance_api_secret"),
    )
}

/// The Telegram SecureStrings of a stage: `/albra/{stage}/telegram/bot_token` and
/// `/albra/{stage}/telegram/chat_id`.
pub fn ssm_telegram_names(stage: &str) -> (String, String) {
    (
        format!("/albra/{stage}/telegram/bot_token"),
        format!("/albra/{stage}/telegram/chat_id"),
    )
}

/// The webhook secret's SecureString in a stage: `/albra/{stage}/telegram/webhook_secret`.
pub fn ssm_webhook_secret_name(stage: &str) -> String {
    format!("/albra/{stage}/telegram/webhook_secret")
}

/// The dashboard token's SecureString in a stage: `/albra/{stage}/dashboard/token`.
pub fn ssm_dashboard_token_name(stage: &str) -> String {
    format!("/albra/{stage}/dashboard/token")
}

// ---------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------

/// Where process variables come from.
enum ProcessEnv {
    /// The live process environment.
    Live,
    /// A fixed set (embedding and tests), standing in for the process environment.
    Fixed(HashMap<String, Secret>),
}

/// Secrets from the process environment, falling back to a `.env` file. Variables already set in
/// the process win over the file, as with dotenvy's non-overriding load; unlike that load, the
/// file is read into this value instead of into the process environment, because changing the
/// environment of a running multi-threaded process is unsound.
pub struct EnvSecrets {
    process: ProcessEnv,
    env_file: Option<PathBuf>,
    file_vars: HashMap<String, Secret>,
}

impl fmt::Debug for EnvSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.file_vars.keys().collect();
        names.sort();
        f.debug_struct("EnvSecrets")
            .field(
                "process",
                &match self.process {
                    ProcessEnv::Live => "live",
                    ProcessEnv::Fixed(_) => "fixed",
                },
            )
            .field("env_file", &self.env_file)
            .field("file_vars", &names)
            .finish()
    }
}

impl EnvSecrets {
    /// The process environment plus a `.env` file: `env_file` when given (`--env-file`; it must
    /// exist), else `.env` in the current directory when there is one. Never a parent folder's:
    /// a job started from the wrong folder must not pick up some other file's live keys.
    pub fn load(env_file: Option<&Path>) -> Result<Self, SecretsError> {
        if let Some(path) = env_file {
            return Self::from_env_file(path);
        }
        let cwd = std::env::current_dir().map_err(|e| SecretsError::Backend {
            name: ".env".into(),
            detail: format!("cannot read the current directory: {e}"),
        })?;
        Self::load_in(&cwd)
    }

    /// [`Self::load`] without `--env-file`, run in `dir`: `dir/.env` or nothing.
    fn load_in(dir: &Path) -> Result<Self, SecretsError> {
        let path = dir.join(".env");
        if path.is_file() {
            Self::from_env_file(path)
        } else {
            Ok(Self::process_only())
        }
    }

    /// The process environment plus the given `.env` file, which must exist.
    pub fn from_env_file(path: impl AsRef<Path>) -> Result<Self, SecretsError> {
        let path = path.as_ref();
        Ok(EnvSecrets {
            process: ProcessEnv::Live,
            file_vars: read_env_file(path)?,
            env_file: Some(path.to_path_buf()),
        })
    }

    /// The process environment only.
    pub fn process_only() -> Self {
        EnvSecrets {
            process: ProcessEnv::Live,
            env_file: None,
            file_vars: HashMap::new(),
        }
    }

    /// A fixed set of variables in place of the process environment, plus an optional `.env`
    /// file; lets tests and embedders avoid touching the real environment.
    pub fn with_vars<K, V>(
        vars: impl IntoIterator<Item = (K, V)>,
        env_file: Option<&Path>,
    ) -> Result<Self, SecretsError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let fixed = vars
            .into_iter()
            .map(|(k, v)| (k.into(), Secret::new(v)))
            .collect();
        Ok(EnvSecrets {
            process: ProcessEnv::Fixed(fixed),
            file_vars: match env_file {
                Some(p) => read_env_file(p)?,
                None => HashMap::new(),
            },
            env_file: env_file.map(Path::to_path_buf),
        })
    }

    /// The `.env` file in use, if any.
    pub fn env_file(&self) -> Option<&Path> {
        self.env_file.as_deref()
    }

    /// A variable's value (process first, then `.env`), `None` when unset in both.
    fn lookup(&self, name: &str) -> Option<Secret> {
        let from_process = match &self.process {
            ProcessEnv::Live => std::env::var(name).ok().map(Secret::new),
            ProcessEnv::Fixed(m) => m.get(name).cloned(),
        };
        from_process.or_else(|| self.file_vars.get(name).cloned())
    }

    fn where_from(&self) -> String {
        match &self.env_file {
            Some(p) => format!("the environment or {}", p.display()),
            None => "the environment (no .env file)".to_string(),
        }
    }

    fn require(&self, name: &str) -> Result<Secret, SecretsError> {
        match self.lookup(name) {
            Some(v) if !v.expose().trim().is_empty() => Ok(v),
            Some(_) => Err(SecretsError::Missing(format!(
                "{name} is set but empty in {}",
                self.where_from()
            ))),
            None => Err(SecretsError::Missing(format!(
                "{name} (not set in {})",
                self.where_from()
            ))),
        }
    }

    fn keys_for_prefix(&self, prefix: &str) -> Result<ApiKeys, SecretsError> {
        let (key_var, secret_var) = env_key_names(prefix);
        Ok(ApiKeys {
            api_key: self.require(&key_var)?,
            api_secret: self.require(&secret_var)?,
        })
    }

    /// Whether `name` has a non-empty value here (environment or `.env`).
    pub fn is_set(&self, name: &str) -> bool {
        self.lookup(name)
            .is_some_and(|v| !v.expose().trim().is_empty())
    }

    /// The webhook secret (`TELEGRAM_WEBHOOK_SECRET`, environment or `.env`). Required: a
    /// webhook without one would take commands from anyone who finds its URL.
    pub fn webhook_secret(&self) -> Result<Secret, SecretsError> {
        let s = self.require(TELEGRAM_WEBHOOK_SECRET_VAR)?;
        if !valid_webhook_secret(s.expose()) {
            // The value is not quoted: it is a secret even when malformed.
            return Err(SecretsError::Missing(format!(
                "{TELEGRAM_WEBHOOK_SECRET_VAR} must be 1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule)"
            )));
        }
        Ok(s)
    }

    /// The dashboard token ([`DASHBOARD_TOKEN_VAR`]). Required, and long enough to be no
    /// guess: the dashboard serves nothing without one.
    pub fn dashboard_token(&self) -> Result<Secret, SecretsError> {
        let s = self.require(DASHBOARD_TOKEN_VAR)?;
        if !valid_dashboard_token(s.expose()) {
            // The value is not quoted: it is a secret even when too short.
            return Err(SecretsError::Missing(dashboard_token_rule(
                DASHBOARD_TOKEN_VAR,
            )));
        }
        Ok(s)
    }

    fn telegram_creds(&self) -> Result<Option<TelegramCreds>, SecretsError> {
        let set = |name| self.lookup(name).filter(|v| !v.expose().trim().is_empty());
        match (set(TELEGRAM_TOKEN_VAR), set(TELEGRAM_CHAT_VAR)) {
            (None, None) => Ok(None),
            (Some(bot_token), Some(chat)) => Ok(Some(TelegramCreds {
                bot_token,
                chat_id: chat.expose().trim().to_string(),
            })),
            // Half a configuration is a mistake worth stopping for, not "Telegram off".
            (Some(_), None) => Err(SecretsError::Missing(format!(
                "{TELEGRAM_CHAT_VAR} (set {TELEGRAM_TOKEN_VAR} too, or neither), not in {}",
                self.where_from()
            ))),
            (None, Some(_)) => Err(SecretsError::Missing(format!(
                "{TELEGRAM_TOKEN_VAR} ({TELEGRAM_CHAT_VAR} is set), not in {}",
                self.where_from()
            ))),
        }
    }
}

/// Read a `.env` file that only its owner can read. The mode is checked on the open file, so the
/// file checked is the file read.
fn read_env_file(path: &Path) -> Result<HashMap<String, Secret>, SecretsError> {
    let backend = |detail: String| SecretsError::Backend {
        name: path.display().to_string(),
        detail,
    };
    let file = std::fs::File::open(path).map_err(|e| backend(e.to_string()))?;
    check_private(path, &file)?;
    let iter = dotenvy::from_read_iter(file);
    let mut vars = HashMap::new();
    for item in iter {
        // dotenvy's parse errors quote the offending line, which may hold a secret: say where only.
        let (k, v) = item.map_err(|e| match e {
            dotenvy::Error::LineParse(_, idx) => {
                backend(format!("cannot parse the line at byte {idx}"))
            }
            dotenvy::Error::Io(io) => backend(io.to_string()),
            _ => backend("cannot parse the file".to_string()),
        })?;
        vars.insert(k, Secret::new(v));
    }
    Ok(vars)
}

/// Refuse a keys file that group or others can read (unix permission bits `0o044`): keys that
/// any local account can read are as good as published.
#[cfg(unix)]
fn check_private(path: &Path, file: &std::fs::File) -> Result<(), SecretsError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = file
        .metadata()
        .map_err(|e| SecretsError::Backend {
            name: path.display().to_string(),
            detail: e.to_string(),
        })?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o044 != 0 {
        return Err(SecretsError::Backend {
            name: path.display().to_string(),
            detail: format!(
                "the file is readable by group or others (mode {mode:04o}); keys must be readable \
                 by their owner only: run `chmod 600 {}`",
                path.display()
            ),
        });
    }
    Ok(())
}

/// Other systems have no unix permission bits to check.
#[cfg(not(unix))]
fn check_private(_: &Path, _: &std::fs::File) -> Result<(), SecretsError> {
    Ok(())
}

#[async_trait]
impl Secrets for EnvSecrets {
    async fn binance_keys(
        &self,
        account: &AccountId,
        source: &KeySource,
    ) -> Result<ApiKeys, SecretsError> {
        match source {
            KeySource::Env { prefix } => self.keys_for_prefix(prefix),
            KeySource::Ssm { prefix } => Err(SecretsError::Backend {
                name: prefix.clone(),
                detail: format!(
                    "account {account} reads its keys from SSM, but only environment secrets are configured"
                ),
            }),
        }
    }

    async fn telegram(&self) -> Result<Option<TelegramCreds>, SecretsError> {
        self.telegram_creds()
    }
}

// ---------------------------------------------------------------------------------------------
// SSM Parameter Store
// ---------------------------------------------------------------------------------------------

/// Secrets from SSM Parameter Store (SecureString, decrypted on read). Each parameter is read at
/// most once per instance (found or not), so a Lambda reads SSM once per cold start.
pub struct SsmSecrets {
    client: aws_sdk_ssm::Client,
    /// The stage whose Telegram parameters [`Secrets::telegram`] reads.
    stage: String,
    /// `None` records a parameter SSM does not have.
    cache: tokio::sync::Mutex<HashMap<String, Option<Secret>>>,
}

impl fmt::Debug for SsmSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self.cache.try_lock().map(|c| c.len()).ok();
        f.debug_struct("SsmSecrets")
            .field("stage", &self.stage)
            .field("cached_parameters", &cached)
            .finish()
    }
}

/// SSM GetParameters accepts at most this many names per call.
const SSM_BATCH: usize = 10;

impl SsmSecrets {
    /// SSM through `client`, for the stage [`ssm_stage`] names.
    pub fn new(client: aws_sdk_ssm::Client) -> Self {
        SsmSecrets {
            client,
            stage: ssm_stage(),
            cache: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Read the Telegram parameters of this stage instead.
    pub fn with_stage(mut self, stage: &str) -> Self {
        self.stage = stage.to_string();
        self
    }

    pub fn from_config(config: &SdkConfig) -> Self {
        Self::new(aws_sdk_ssm::Client::new(config))
    }

    /// A client from the standard AWS configuration chain (`AWS_ENDPOINT_URL` honoured).
    pub async fn from_env() -> Self {
        let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
        Self::from_config(&config)
    }

    /// The values of `names` in order (`None` where SSM has no such parameter), reading only the
    /// ones not cached yet. The cache lock is held across the read so concurrent first calls make
    /// one request, not several.
    pub async fn parameters(&self, names: &[&str]) -> Result<Vec<Option<Secret>>, SecretsError> {
        let mut cache = self.cache.lock().await;
        let mut todo: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !cache.contains_key(*n))
            .collect();
        todo.dedup();
        for batch in todo.chunks(SSM_BATCH) {
            let out = self
                .client
                .get_parameters()
                .set_names(Some(batch.iter().map(|s| s.to_string()).collect()))
                .with_decryption(true)
                .send()
                .await
                .map_err(|e| SecretsError::Backend {
                    name: batch.join(", "),
                    detail: DisplayErrorContext(&e).to_string(),
                })?;
            let mut found: HashMap<&str, Secret> = HashMap::new();
            for p in out.parameters() {
                if let (Some(n), Some(v)) = (p.name(), p.value()) {
                    found.insert(n, Secret::new(v));
                }
            }
            for name in batch {
                cache.insert(name.to_string(), found.remove(name));
            }
        }
        Ok(names
            .iter()
            .map(|n| cache.get(*n).cloned().flatten())
            .collect())
    }

    async fn required(&self, names: [&str; 2]) -> Result<[Secret; 2], SecretsError> {
        let mut values = self.parameters(&names).await?.into_iter();
        let check = |name: &str, value: Option<Secret>| match value {
            Some(v) if !v.expose().trim().is_empty() => Ok(v),
            Some(_) => Err(SecretsError::Missing(format!(
                "SSM parameter {name} is empty"
            ))),
            None => Err(SecretsError::Missing(format!("SSM parameter {name}"))),
        };
        Ok([
            check(names[0], values.next().flatten())?,
            check(names[1], values.next().flatten())?,
        ])
    }

    /// This stage's webhook secret ([`ssm_webhook_secret_name`]), checked against Telegram's rule.
    pub async fn webhook_secret(&self) -> Result<Secret, SecretsError> {
        let name = ssm_webhook_secret_name(&self.stage);
        self.checked(&name, valid_webhook_secret, || {
            format!("SSM parameter {name} must be 1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule)")
        })
        .await
    }

    /// This stage's dashboard token ([`ssm_dashboard_token_name`]), held to the same rule as
    /// [`EnvSecrets::dashboard_token`].
    pub async fn dashboard_token(&self) -> Result<Secret, SecretsError> {
        let name = ssm_dashboard_token_name(&self.stage);
        self.checked(&name, valid_dashboard_token, || {
            dashboard_token_rule(&format!("SSM parameter {name}"))
        })
        .await
    }

    /// The parameter `name`, which must exist and pass `valid`; `rule` says what a value that
    /// does not pass breaks (never the value: it is a secret even when malformed).
    async fn checked(
        &self,
        name: &str,
        valid: fn(&str) -> bool,
        rule: impl FnOnce() -> String,
    ) -> Result<Secret, SecretsError> {
        match self.parameters(&[name]).await?.into_iter().next().flatten() {
            Some(s) if valid(s.expose()) => Ok(s),
            Some(_) => Err(SecretsError::Missing(rule())),
            None => Err(SecretsError::Missing(format!("SSM parameter {name}"))),
        }
    }

    fn telegram_from(
        stage: &str,
        token: Option<Secret>,
        chat: Option<Secret>,
    ) -> Result<Option<TelegramCreds>, SecretsError> {
        let (token_name, chat_name) = ssm_telegram_names(stage);
        match (token, chat) {
            (None, None) => Ok(None),
            (Some(bot_token), Some(chat)) => Ok(Some(TelegramCreds {
                bot_token,
                chat_id: chat.expose().trim().to_string(),
            })),
            (Some(_), None) => Err(SecretsError::Missing(format!(
                "SSM parameter {chat_name} ({token_name} exists)"
            ))),
            (None, Some(_)) => Err(SecretsError::Missing(format!(
                "SSM parameter {token_name} ({chat_name} exists)"
            ))),
        }
    }
}

#[async_trait]
impl Secrets for SsmSecrets {
    async fn binance_keys(
        &self,
        account: &AccountId,
        source: &KeySource,
    ) -> Result<ApiKeys, SecretsError> {
        match source {
            KeySource::Ssm { prefix } => {
                let (key, secret) = ssm_key_names(prefix);
                let [api_key, api_secret] = self.required([&key, &secret]).await?;
                Ok(ApiKeys {
                    api_key,
                    api_secret,
                })
            }
            KeySource::Env { prefix } => Err(SecretsError::Backend {
                name: prefix.clone(),
                detail: format!(
                    "account {account} reads its keys from the environment, but only SSM secrets are configured"
                ),
            }),
        }
    }

    async fn telegram(&self) -> Result<Option<TelegramCreds>, SecretsError> {
        let (token_name, chat_name) = ssm_telegram_names(&self.stage);
        let mut v = self
            .parameters(&[&token_name, &chat_name])
            .await?
            .into_iter();
        let (token, chat) = (v.next().flatten(), v.next().flatten());
        Self::telegram_from(&self.stage, token, chat)
    }
}

// ---------------------------------------------------------------------------------------------
// Dispatch by key source
// ---------------------------------------------------------------------------------------------

/// Where the Telegram credentials come from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TelegramSource {
    /// `TELEGRAM_BOT_TOKEN` + `TELEGRAM_CHAT_ID`.
    Env,
    /// `/albra/{stage}/telegram/bot_token` + `/albra/{stage}/telegram/chat_id`.
    Ssm,
    /// Telegram is off.
    Disabled,
}

/// Reads each account's keys from where its [`KeySource`] says: environment for `Env`, SSM for
/// `Ssm`. The SSM client is only built when an SSM source (or SSM Telegram) is first used, so a
/// purely local setup never needs AWS configuration.
pub struct ChainSecrets {
    env: EnvSecrets,
    ssm: tokio::sync::OnceCell<SsmSecrets>,
    ssm_config: Option<SdkConfig>,
    telegram: TelegramSource,
}

impl fmt::Debug for ChainSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainSecrets")
            .field("env", &self.env)
            .field("ssm", &self.ssm.get())
            .field("telegram", &self.telegram)
            .finish()
    }
}

impl ChainSecrets {
    /// SSM, when needed, through a client from the standard AWS configuration chain.
    pub fn new(env: EnvSecrets, telegram: TelegramSource) -> Self {
        ChainSecrets {
            env,
            ssm: tokio::sync::OnceCell::new(),
            ssm_config: None,
            telegram,
        }
    }

    /// Build the SSM client, when needed, from this configuration instead.
    pub fn with_sdk_config(mut self, config: SdkConfig) -> Self {
        self.ssm_config = Some(config);
        self
    }

    /// Use this SSM adapter instead of building one.
    pub fn with_ssm(mut self, ssm: SsmSecrets) -> Self {
        self.ssm = tokio::sync::OnceCell::from(ssm);
        self
    }

    /// Where the Telegram credentials are read from.
    pub fn telegram_source(&self) -> TelegramSource {
        self.telegram
    }

    /// The webhook secret: `TELEGRAM_WEBHOOK_SECRET` from the environment or `.env` when set
    /// there (see [`EnvSecrets::webhook_secret`]), else SSM's when Telegram's credentials come
    /// from SSM (a Lambda: [`SsmSecrets::webhook_secret`]).
    pub async fn webhook_secret(&self) -> Result<Secret, SecretsError> {
        if self.telegram == TelegramSource::Ssm && !self.env.is_set(TELEGRAM_WEBHOOK_SECRET_VAR) {
            return self.ssm().await.webhook_secret().await;
        }
        self.env.webhook_secret()
    }

    /// The dashboard token: [`DASHBOARD_TOKEN_VAR`] from the environment or `.env` when set
    /// there, else this stage's SSM parameter when `in_lambda` ([`SsmSecrets::dashboard_token`]).
    pub async fn dashboard_token(&self, in_lambda: bool) -> Result<Secret, SecretsError> {
        if in_lambda && !self.env.is_set(DASHBOARD_TOKEN_VAR) {
            return self.ssm().await.dashboard_token().await;
        }
        self.env.dashboard_token()
    }

    /// Whether the SSM adapter has been built (it is only built on first use).
    pub fn ssm_in_use(&self) -> bool {
        self.ssm.initialized()
    }

    async fn ssm(&self) -> &SsmSecrets {
        self.ssm
            .get_or_init(|| async {
                match &self.ssm_config {
                    Some(c) => SsmSecrets::from_config(c),
                    None => SsmSecrets::from_env().await,
                }
            })
            .await
    }
}

#[async_trait]
impl Secrets for ChainSecrets {
    async fn binance_keys(
        &self,
        account: &AccountId,
        source: &KeySource,
    ) -> Result<ApiKeys, SecretsError> {
        match source {
            KeySource::Env { .. } => self.env.binance_keys(account, source).await,
            KeySource::Ssm { .. } => self.ssm().await.binance_keys(account, source).await,
        }
    }

    async fn telegram(&self) -> Result<Option<TelegramCreds>, SecretsError> {
        match self.telegram {
            TelegramSource::Env => self.env.telegram().await,
            TelegramSource::Ssm => self.ssm().await.telegram().await,
            TelegramSource::Disabled => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_follow_the_original_system() {
        assert_eq!(
            env_key_names("BINANCE"),
            ("BINANCE_API_KEY".into(), "BINANCE_SECRET_KEY".into())
        );
        assert_eq!(
            env_key_names("SUB1"),
            ("SUB1_API_KEY".into(), "SUB1_API_SECRET".into())
        );
        // A trailing underscore in the configured prefix is not doubled.
        assert_eq!(
            env_key_names("SUB1_"),
            ("SUB1_API_KEY".into(), "SUB1_API_SECRET".into())
        );
    }

    #[test]
    fn ssm_names_join_the_prefix() {
        assert_eq!(
            ssm_key_names("/albra/main"),
            (
                "/albra/main/binance_api_key".into(),
                "/albra/main/binance_api_secret".into()
            )
        );
        assert_eq!(ssm_key_names("/albra/sub1/"), ssm_key_names("/albra/sub1"));
        // Every name is under its stage, which the IAM policy of that stage's functions grants.
        let main = AccountId::new("main");
        assert_eq!(ssm_account_prefix("prod", &main), "/albra/prod/main");
        assert_eq!(ssm_account_prefix("dev", &main), "/albra/dev/main");
        assert_eq!(
            default_ssm_prefix(&main),
            ssm_account_prefix(&ssm_stage(), &main)
        );
        assert_eq!(
            ssm_telegram_names("prod"),
            (
                "/albra/prod/telegram/bot_token".into(),
                "/albra/prod/telegram/chat_id".into()
            )
        );
    }

    /// Write a `.env` as an operator should: readable by its owner only.
    fn write_private(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }

    /// `load` reads `./.env` and never a parent folder's.
    #[test]
    fn load_reads_the_working_folder_only() {
        let parent = tempfile::tempdir().unwrap();
        let child = parent.path().join("child");
        std::fs::create_dir(&child).unwrap();
        write_private(&parent.path().join(".env"), "PARENT_ONLY_VAR=parent\n");

        let from_child = EnvSecrets::load_in(&child).unwrap();
        assert_eq!(from_child.env_file(), None, "a parent's .env is never read");
        assert!(from_child.lookup("PARENT_ONLY_VAR").is_none());

        write_private(&child.join(".env"), "CHILD_VAR=child\n");
        let with_own = EnvSecrets::load_in(&child).unwrap();
        assert_eq!(with_own.env_file(), Some(child.join(".env").as_path()));
        assert_eq!(with_own.lookup("CHILD_VAR").unwrap().expose(), "child");
        assert!(with_own.lookup("PARENT_ONLY_VAR").is_none());

        // An explicit file is read wherever the process runs.
        let explicit = parent.path().join(".env");
        let e = EnvSecrets::load(Some(&explicit)).unwrap();
        assert_eq!(e.lookup("PARENT_ONLY_VAR").unwrap().expose(), "parent");
        assert_eq!(e.env_file(), Some(explicit.as_path()));
    }

    #[test]
    fn explicit_env_file_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("keys.env");
        let err = EnvSecrets::load(Some(&missing)).unwrap_err().to_string();
        assert!(err.contains("keys.env"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn env_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        write_private(&path, "BINANCE_API_KEY=k-private-value\n");
        let ok = EnvSecrets::with_vars(Vec::<(String, String)>::new(), Some(&path)).unwrap();
        assert_eq!(
            ok.lookup("BINANCE_API_KEY").unwrap().expose(),
            "k-private-value"
        );
        for (mode, shown) in [(0o644, "0644"), (0o640, "0640"), (0o604, "0604")] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = EnvSecrets::load(Some(&path)).unwrap_err().to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(&format!("mode {shown}")), "{err}");
            assert!(
                err.contains(&format!("chmod 600 {}", path.display())),
                "{err}"
            );
            assert!(!err.contains("k-private-value"), "{err}");
        }
        // Owner-only modes other than 0600 are private too.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(EnvSecrets::load(Some(&path)).is_ok());
    }

    fn fixed(vars: &[(&str, &str)]) -> EnvSecrets {
        EnvSecrets::with_vars(vars.iter().map(|(k, v)| (*k, *v)), None).unwrap()
    }

    #[tokio::test]
    async fn env_keys_by_prefix_and_missing_names() {
        let env = fixed(&[
            ("BINANCE_API_KEY", "main-key"),
            ("BINANCE_SECRET_KEY", "main-secret"),
            ("SUB1_API_KEY", "sub-key"),
            ("SUB1_API_SECRET", ""),
        ]);
        let main = AccountId::new("main");
        let k = env
            .binance_keys(
                &main,
                &KeySource::Env {
                    prefix: "BINANCE".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(k.api_key.expose(), "main-key");
        assert_eq!(k.api_secret.expose(), "main-secret");

        let err = env
            .binance_keys(
                &main,
                &KeySource::Env {
                    prefix: "SUB1".into(),
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SecretsError::Missing(m) if m.contains("SUB1_API_SECRET") && m.contains("empty")),
            "{err}"
        );

        let err = env
            .binance_keys(
                &main,
                &KeySource::Env {
                    prefix: "SUB2".into(),
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SecretsError::Missing(m) if m.contains("SUB2_API_KEY")),
            "{err}"
        );

        let err = env
            .binance_keys(
                &main,
                &KeySource::Ssm {
                    prefix: "/albra/main".into(),
                },
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("SSM"), "{err}");
    }

    #[tokio::test]
    async fn env_telegram_is_none_unset_and_an_error_when_half_set() {
        assert!(fixed(&[]).telegram().await.unwrap().is_none());
        let t = fixed(&[(TELEGRAM_TOKEN_VAR, "123:abc"), (TELEGRAM_CHAT_VAR, " 42 ")])
            .telegram()
            .await
            .unwrap()
            .unwrap();
        assert_eq!(t.bot_token.expose(), "123:abc");
        assert_eq!(t.chat_id, "42");
        let err = fixed(&[(TELEGRAM_TOKEN_VAR, "123:abc")])
            .telegram()
            .await
            .unwrap_err();
        assert!(err.to_string().contains(TELEGRAM_CHAT_VAR), "{err}");
    }

    #[test]
    fn the_webhook_secret_is_required_and_follows_telegrams_rule() {
        let e = fixed(&[]).webhook_secret().unwrap_err().to_string();
        assert!(e.contains(TELEGRAM_WEBHOOK_SECRET_VAR), "{e}");
        let s = fixed(&[(TELEGRAM_WEBHOOK_SECRET_VAR, "abc_DEF-123")])
            .webhook_secret()
            .unwrap();
        assert_eq!(s.expose(), "abc_DEF-123");
        let e = fixed(&[(TELEGRAM_WEBHOOK_SECRET_VAR, "has space!")])
            .webhook_secret()
            .unwrap_err()
            .to_string();
        assert!(!e.contains("has space"), "the value is not echoed: {e}");
    }

    #[test]
    fn ssm_telegram_pairs() {
        assert!(SsmSecrets::telegram_from("dev", None, None)
            .unwrap()
            .is_none());
        let err = SsmSecrets::telegram_from("dev", Some(Secret::new("t")), None).unwrap_err();
        assert!(
            err.to_string()
                .contains("SSM parameter /albra/dev/telegram/chat_id"),
            "{err}"
        );
        let err = SsmSecrets::telegram_from("dev", None, Some(Secret::new("1"))).unwrap_err();
        assert!(
            err.to_string()
                .contains("SSM parameter /albra/dev/telegram/bot_token"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn env_file_parse_errors_do_not_quote_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        write_private(&path, "GOOD=1\nBAD LINE 'topsecretvalue\n");
        let err = EnvSecrets::with_vars(Vec::<(String, String)>::new(), Some(&path)).unwrap_err();
        let msg = format!("{err} {err:?}");
        assert!(!msg.contains("topsecretvalue"), "{msg}");
        assert!(msg.contains(".env"), "{msg}");
    }

    #[tokio::test]
    async fn chain_never_builds_ssm_for_env_sources() {
        let chain = ChainSecrets::new(
            fixed(&[("SUB1_API_KEY", "k"), ("SUB1_API_SECRET", "s")]),
            TelegramSource::Disabled,
        );
        let k = chain
            .binance_keys(
                &AccountId::new("sub1"),
                &KeySource::Env {
                    prefix: "SUB1".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(k.api_secret.expose(), "s");
        assert!(chain.telegram().await.unwrap().is_none());
        assert!(!chain.ssm_in_use());
        let dbg = format!("{chain:?}");
        assert!(!dbg.contains("\"k\"") && !dbg.contains("\"s\""), "{dbg}");
    }

    #[test]
    fn debug_never_shows_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        write_private(&path, "FILE_API_KEY=file-value-xyz\n");
        let env = EnvSecrets::with_vars([("PROC_API_KEY", "proc-value-xyz")], Some(&path)).unwrap();
        let dbg = format!("{env:?}");
        assert!(!dbg.contains("value-xyz"), "{dbg}");
        assert!(dbg.contains("FILE_API_KEY"), "names may show: {dbg}");
        let chain = ChainSecrets::new(env, TelegramSource::Env);
        let dbg = format!("{chain:?} {chain:#?}");
        assert!(!dbg.contains("value-xyz"), "{dbg}");
    }
}
