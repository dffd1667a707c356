//! State store adapters behind [`StateStore`]: [`SqliteStore`] (embedded file: local runs, EC2,
//! replay) and [`DynamoStore`] (one DynamoDB table: Lambda), plus [`open_store`], which
//! picks one from a configuration string.

pub mod dynamo;
pub mod sqlite;

pub use dynamo::DynamoStore;
pub use sqlite::{SqliteStore, DEFAULT_SQLITE_PATH};

use albra_core::ports::{StateStore, StoreError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File name used when a store spec names a directory.
pub const DEFAULT_DB_FILE: &str = "albra.db";

const EXPECTED: &str = "expected `dynamodb:TABLE`, `sqlite:PATH` or a file path \
     (a directory means DIR/albra.db), e.g. `./state/albra.db`";

/// A parsed store spec (see [`StoreSpec::parse`]).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum StoreSpec {
    Sqlite(PathBuf),
    Dynamo { table: String },
}

impl StoreSpec {
    /// `dynamodb:TABLE` → DynamoDB; `sqlite:PATH` or a bare `PATH` → an SQLite file, where a path
    /// ending in `/` or naming an existing directory means `DIR/albra.db`. A word followed by `:`
    /// that is neither scheme (`dynamo:t`, `postgres:…`) is refused rather than taken as a file
    /// name, so a typo cannot silently create a stray local database.
    pub fn parse(spec: &str) -> Result<StoreSpec, StoreError> {
        let trimmed = spec.trim();
        let bad = |why: &str| StoreError::Other(format!("store spec {spec:?}: {why}; {EXPECTED}"));
        if let Some(table) = trimmed.strip_prefix("dynamodb:") {
            validate_table_name(table).map_err(|why| bad(&why))?;
            return Ok(StoreSpec::Dynamo {
                table: table.to_string(),
            });
        }
        let path = match trimmed.strip_prefix("sqlite:") {
            Some(p) => p,
            None => {
                if let Some((scheme, _)) = trimmed.split_once(':') {
                    if scheme.len() > 1 && scheme.chars().all(|c| c.is_ascii_alphanumeric()) {
                        return Err(bad(&format!("unknown store kind `{scheme}:`")));
                    }
                }
                trimmed
            }
        };
        if path.is_empty() {
            return Err(bad("no path given"));
        }
        let as_path = Path::new(path);
        // `./state` (the default) names a directory even before it exists; only a path with a
        // database extension names the file itself.
        let is_file_name = matches!(
            as_path.extension().and_then(|e| e.to_str()),
            Some("db" | "sqlite" | "sqlite3")
        );
        let file = if path.ends_with('/') || as_path.is_dir() || !is_file_name {
            as_path.join(DEFAULT_DB_FILE)
        } else {
            as_path.to_path_buf()
        };
        Ok(StoreSpec::Sqlite(file))
    }
}

/// DynamoDB's table name rules: 3–255 characters from `[A-Za-z0-9_.-]`.
fn validate_table_name(table: &str) -> Result<(), String> {
    if table.len() < 3 || table.len() > 255 {
        return Err(format!(
            "DynamoDB table name {table:?} must be 3-255 characters long"
        ));
    }
    if let Some(c) = table
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "DynamoDB table name {table:?} contains {c:?}; allowed are letters, digits, `_`, `-`, `.`"
        ));
    }
    Ok(())
}

/// Open the store a spec names (see [`StoreSpec::parse`]). SQLite stores are opened durable.
pub async fn open_store(spec: &str) -> Result<Arc<dyn StateStore>, StoreError> {
    match StoreSpec::parse(spec)? {
        StoreSpec::Dynamo { table } => Ok(Arc::new(DynamoStore::from_env(table).await)),
        StoreSpec::Sqlite(path) => {
            // Opening may wait on another process's lock (busy_timeout): keep it off the runtime.
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(path))
                .await
                .map_err(|e| {
                    StoreError::Other(format!("store spec {spec:?}: open failed: {e}"))
                })??;
            Ok(Arc::new(store))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(p: &str) -> StoreSpec {
        StoreSpec::Sqlite(PathBuf::from(p))
    }

    #[test]
    fn parses_dynamodb_specs() {
        assert_eq!(
            StoreSpec::parse("dynamodb:albra-prod").unwrap(),
            StoreSpec::Dynamo {
                table: "albra-prod".into()
            }
        );
        assert_eq!(
            StoreSpec::parse(" dynamodb:a.b_c-1 ").unwrap(),
            StoreSpec::Dynamo {
                table: "a.b_c-1".into()
            }
        );
    }

    #[test]
    fn parses_sqlite_specs() {
        assert_eq!(
            StoreSpec::parse("./state/albra.db").unwrap(),
            sqlite("./state/albra.db")
        );
        assert_eq!(
            StoreSpec::parse("sqlite:/var/lib/albra/x.db").unwrap(),
            sqlite("/var/lib/albra/x.db")
        );
        assert_eq!(
            StoreSpec::parse("sqlite:./state/").unwrap(),
            sqlite("./state/albra.db")
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        assert_eq!(
            StoreSpec::parse(d).unwrap(),
            StoreSpec::Sqlite(dir.path().join("albra.db"))
        );
        // `./state` (the default) is a directory even before it exists.
        assert_eq!(
            StoreSpec::parse("./state-not-created-yet").unwrap(),
            sqlite("./state-not-created-yet/albra.db")
        );
        // A colon inside a path is fine; only a leading `word:` is taken as a store kind.
        assert_eq!(
            StoreSpec::parse("./data:2024/a.db").unwrap(),
            sqlite("./data:2024/a.db")
        );
    }

    #[test]
    fn errors_name_the_spec_and_the_expected_forms() {
        for (spec, needle) in [
            ("dynamodb:", "3-255"),
            ("dynamodb:ab", "3-255"),
            ("dynamodb:bad table", "' '"),
            ("", "no path"),
            ("sqlite:", "no path"),
            ("dynamo:albra", "unknown store kind `dynamo:`"),
        ] {
            let msg = StoreSpec::parse(spec).unwrap_err().to_string();
            assert!(msg.contains(&format!("{spec:?}")), "{msg}");
            assert!(msg.contains(needle), "{msg}");
            assert!(msg.contains("dynamodb:TABLE"), "{msg}");
        }
    }

    #[tokio::test]
    async fn open_store_opens_sqlite_in_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let spec = format!("sqlite:{}/", dir.path().display());
        let store = open_store(&spec).await.unwrap();
        assert_eq!(
            store.describe(),
            format!("sqlite:{}", dir.path().join("albra.db").display())
        );
        store
            .put("P", "S", "{}", albra_core::ports::Expect::Absent, None)
            .await
            .unwrap();
        assert!(dir.path().join("albra.db").exists());
    }
}
