//! Secrets adapters against real peers: `SsmSecrets` on a moto server (SecureString parameters
//! written with the SDK), `EnvSecrets` on real `.env` files and the process environment, and
//! `ChainSecrets` dispatching between them.

use albra_adapters::secrets::{
    ssm_stage, ssm_telegram_names, ChainSecrets, EnvSecrets, SsmSecrets, TelegramSource,
};
use albra_core::domain::AccountId;
use albra_core::ports::{KeySource, Secrets, SecretsError};
use albra_tests::moto::MotoServer;
use aws_sdk_ssm::types::ParameterType;

async fn put_secure(client: &aws_sdk_ssm::Client, name: &str, value: &str) {
    client
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {name}: {e:?}"));
}

fn ssm(prefix: &str) -> KeySource {
    KeySource::Ssm {
        prefix: prefix.into(),
    }
}

fn env(prefix: &str) -> KeySource {
    KeySource::Env {
        prefix: prefix.into(),
    }
}

/// Debug (plain and pretty) and Display of `x` contain none of `values`.
fn assert_hidden(what: &str, dbg: String, values: &[&str]) {
    for v in values {
        assert!(!dbg.contains(v), "{what} shows {v:?}: {dbg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_secrets_read_secure_strings_once_and_name_missing_paths() {
    let moto = MotoServer::start();
    let config = moto.sdk_config().await;
    let client = aws_sdk_ssm::Client::new(&config);
    put_secure(&client, "/albra/prod/main/binance_api_key", "main-key-123").await;
    put_secure(
        &client,
        "/albra/prod/main/binance_api_secret",
        "main-secret-456",
    )
    .await;
    put_secure(&client, "/albra/prod/sub1/binance_api_key", "sub1-key-789").await;

    let secrets = SsmSecrets::from_config(&config);
    let main = AccountId::new("main");
    let keys = secrets
        .binance_keys(&main, &ssm("/albra/prod/main"))
        .await
        .unwrap();
    assert_eq!(keys.api_key.expose(), "main-key-123");
    assert_eq!(keys.api_secret.expose(), "main-secret-456");
    // A trailing slash on the prefix names the same parameters.
    let again = secrets
        .binance_keys(&main, &ssm("/albra/prod/main/"))
        .await
        .unwrap();
    assert_eq!(again.api_secret.expose(), "main-secret-456");

    // Half the keys present: the error names the full path of the missing one.
    let err = secrets
        .binance_keys(&AccountId::new("sub1"), &ssm("/albra/prod/sub1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SecretsError::Missing(m) if m.contains("/albra/prod/sub1/binance_api_secret")),
        "{err:?}"
    );
    let err = secrets
        .binance_keys(&AccountId::new("ghost"), &ssm("/albra/prod/ghost"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("/albra/prod/ghost/binance_api_key"),
        "{err}"
    );

    // Read once per instance: a rotated value is only seen by a new instance (a new cold start).
    put_secure(
        &client,
        "/albra/prod/main/binance_api_secret",
        "rotated-secret",
    )
    .await;
    let cached = secrets
        .binance_keys(&main, &ssm("/albra/prod/main"))
        .await
        .unwrap();
    assert_eq!(cached.api_secret.expose(), "main-secret-456");
    let fresh = SsmSecrets::from_config(&config)
        .binance_keys(&main, &ssm("/albra/prod/main"))
        .await
        .unwrap();
    assert_eq!(fresh.api_secret.expose(), "rotated-secret");

    // An SSM adapter refuses environment key sources instead of guessing.
    assert!(secrets.binance_keys(&main, &env("BINANCE")).await.is_err());

    assert_hidden(
        "SsmSecrets",
        format!("{secrets:?} {secrets:#?} {keys:?} {keys:#?} {err:?}"),
        &[
            "main-key-123",
            "main-secret-456",
            "sub1-key-789",
            "rotated-secret",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_telegram_is_none_until_both_parameters_exist() {
    let moto = MotoServer::start();
    let config = moto.sdk_config().await;
    let client = aws_sdk_ssm::Client::new(&config);

    let dev = || SsmSecrets::from_config(&config).with_stage("dev");
    assert!(dev().telegram().await.unwrap().is_none());

    let (token_name, chat_name) = ssm_telegram_names("dev");
    assert_eq!(token_name, "/albra/dev/telegram/bot_token");
    put_secure(&client, &token_name, "999:bot-token-abc").await;
    let err = dev().telegram().await.unwrap_err();
    assert!(err.to_string().contains(&chat_name), "{err}");

    put_secure(&client, &chat_name, "-100123").await;
    let secrets = dev();
    let tg = secrets.telegram().await.unwrap().unwrap();
    assert_eq!(tg.bot_token.expose(), "999:bot-token-abc");
    assert_eq!(tg.chat_id, "-100123");
    // Another stage's functions do not see this stage's parameters.
    assert!(SsmSecrets::from_config(&config)
        .with_stage("staging")
        .telegram()
        .await
        .unwrap()
        .is_none());
    assert_hidden(
        "TelegramCreds",
        format!("{tg:?} {tg:#?} {secrets:?}"),
        &["bot-token-abc"],
    );
}

/// A keys file is read only when no one but its owner can read it.
fn owner_only(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[tokio::test]
async fn env_secrets_read_dotenv_with_process_variables_winning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env");
    std::fs::write(
        &path,
        "# main account, original names\n\
         BINANCE_API_KEY=file-main-key\n\
         BINANCE_SECRET_KEY=\"file-main-secret\"\n\
         SUB1_API_KEY=file-sub1-key\n\
         SUB1_API_SECRET='file-sub1-secret'\n\
         TELEGRAM_BOT_TOKEN=file-bot-token\n\
         TELEGRAM_CHAT_ID=777\n",
    )
    .unwrap();
    owner_only(&path);

    // The process already has the main key (as a deployment would): it wins over the file.
    let secrets =
        EnvSecrets::with_vars([("BINANCE_API_KEY", "proc-main-key")], Some(&path)).unwrap();
    assert_eq!(secrets.env_file(), Some(path.as_path()));
    let main = secrets
        .binance_keys(&AccountId::new("main"), &env("BINANCE"))
        .await
        .unwrap();
    assert_eq!(main.api_key.expose(), "proc-main-key");
    assert_eq!(main.api_secret.expose(), "file-main-secret");
    let sub1 = secrets
        .binance_keys(&AccountId::new("sub1"), &env("SUB1"))
        .await
        .unwrap();
    assert_eq!(sub1.api_key.expose(), "file-sub1-key");
    assert_eq!(sub1.api_secret.expose(), "file-sub1-secret");
    let tg = secrets.telegram().await.unwrap().unwrap();
    assert_eq!(
        (tg.bot_token.expose(), tg.chat_id.as_str()),
        ("file-bot-token", "777")
    );

    let err = secrets
        .binance_keys(&AccountId::new("sub2"), &env("SUB2"))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("SUB2_API_KEY") && msg.contains(".env"),
        "{msg}"
    );

    assert_hidden(
        "EnvSecrets",
        format!("{secrets:?} {secrets:#?} {main:?} {sub1:?} {tg:?}"),
        &[
            "proc-main-key",
            "file-main-key",
            "file-main-secret",
            "file-sub1-key",
            "file-sub1-secret",
            "file-bot-token",
        ],
    );
}

#[tokio::test]
async fn env_secrets_read_the_live_process_environment_before_the_file() {
    // Names no other test uses; set once before the lookups.
    std::env::set_var("ALBRATEST_LIVE_API_KEY", "live-proc-key");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("custom.env");
    std::fs::write(
        &path,
        "ALBRATEST_LIVE_API_KEY=file-key\nALBRATEST_LIVE_API_SECRET=file-secret\n",
    )
    .unwrap();
    owner_only(&path);
    let secrets = EnvSecrets::from_env_file(&path).unwrap();
    let keys = secrets
        .binance_keys(&AccountId::new("live"), &env("ALBRATEST_LIVE"))
        .await
        .unwrap();
    assert_eq!(keys.api_key.expose(), "live-proc-key");
    assert_eq!(keys.api_secret.expose(), "file-secret");
    // The file was read into the adapter, not into the process environment.
    assert!(std::env::var("ALBRATEST_LIVE_API_SECRET").is_err());

    // An explicit file that does not exist is an error naming it.
    let err = EnvSecrets::from_env_file(dir.path().join("nope.env")).unwrap_err();
    assert!(err.to_string().contains("nope.env"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_secrets_dispatch_by_key_source() {
    let moto = MotoServer::start();
    let config = moto.sdk_config().await;
    let client = aws_sdk_ssm::Client::new(&config);
    put_secure(&client, "/albra/prod/sub2/binance_api_key", "ssm-sub2-key").await;
    put_secure(
        &client,
        "/albra/prod/sub2/binance_api_secret",
        "ssm-sub2-secret",
    )
    .await;
    // The chain's SSM adapter reads the Telegram parameters of this process's stage.
    let (token_name, chat_name) = ssm_telegram_names(&ssm_stage());
    put_secure(&client, &token_name, "ssm-bot-token").await;
    put_secure(&client, &chat_name, "42").await;

    let env_part = EnvSecrets::with_vars(
        [
            ("BINANCE_API_KEY", "env-main-key"),
            ("BINANCE_SECRET_KEY", "env-main-secret"),
            ("TELEGRAM_BOT_TOKEN", "env-bot-token"),
            ("TELEGRAM_CHAT_ID", "7"),
        ],
        None,
    )
    .unwrap();
    let chain = ChainSecrets::new(env_part, TelegramSource::Ssm).with_sdk_config(config.clone());

    let main = chain
        .binance_keys(&AccountId::new("main"), &env("BINANCE"))
        .await
        .unwrap();
    assert_eq!(main.api_key.expose(), "env-main-key");
    assert!(
        !chain.ssm_in_use(),
        "an env source must not build the SSM client"
    );

    let sub2 = chain
        .binance_keys(&AccountId::new("sub2"), &ssm("/albra/prod/sub2"))
        .await
        .unwrap();
    assert_eq!(sub2.api_secret.expose(), "ssm-sub2-secret");
    assert!(chain.ssm_in_use());
    let tg = chain.telegram().await.unwrap().unwrap();
    assert_eq!(
        (tg.bot_token.expose(), tg.chat_id.as_str()),
        ("ssm-bot-token", "42")
    );

    let env_tg = ChainSecrets::new(
        EnvSecrets::with_vars(
            [
                ("TELEGRAM_BOT_TOKEN", "env-bot-token"),
                ("TELEGRAM_CHAT_ID", "7"),
            ],
            None,
        )
        .unwrap(),
        TelegramSource::Env,
    );
    assert_eq!(env_tg.telegram().await.unwrap().unwrap().chat_id, "7");
    assert!(!env_tg.ssm_in_use());

    assert_hidden(
        "ChainSecrets",
        format!("{chain:?} {chain:#?} {env_tg:?} {main:?} {sub2:?} {tg:?}"),
        &[
            "env-main-key",
            "env-main-secret",
            "env-bot-token",
            "ssm-sub2-key",
            "ssm-sub2-secret",
            "ssm-bot-token",
        ],
    );
}
