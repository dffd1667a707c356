//! `SqliteStore`: the embedded [`StateStore`] for local runs, the EC2 scheduler, replay and backtests.
//!
//! One table `items (pk, sk, version, body, expires_at)` in a single SQLite file. The file is safe to
//! share between restarts and between processes: WAL journaling lets readers run beside a writer,
//! `busy_timeout` makes a second writer wait instead of failing, and every conditional write reads
//! the current version and writes inside one `BEGIN IMMEDIATE` transaction, so the check and the
//! write cannot interleave with another connection's (two processes cannot both win).

use albra_core::ports::{Expect, Record, StateStore, StoreError};
use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the durable store lives when nothing else is configured.
pub const DEFAULT_SQLITE_PATH: &str = "./state/albra.db";

/// How long a writer waits for another connection's write transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS items (
    pk TEXT NOT NULL,
    sk TEXT NOT NULL,
    version INTEGER NOT NULL,
    body TEXT NOT NULL,
    expires_at INTEGER NULL,
    PRIMARY KEY (pk, sk)
)";

const SQL_GET: &str = "SELECT version, body, expires_at FROM items WHERE pk = ?1 AND sk = ?2";
const SQL_VERSION: &str = "SELECT version FROM items WHERE pk = ?1 AND sk = ?2";
const SQL_UPSERT: &str =
    "INSERT INTO items (pk, sk, version, body, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT (pk, sk) DO UPDATE SET version = excluded.version, body = excluded.body,
     expires_at = excluded.expires_at";
const SQL_DELETE: &str = "DELETE FROM items WHERE pk = ?1 AND sk = ?2";
const SQL_QUERY_RANGE: &str = "SELECT sk, version, body, expires_at FROM items
     WHERE pk = ?1 AND sk >= ?2 AND sk < ?3 ORDER BY sk";
const SQL_QUERY_FROM: &str =
    "SELECT sk, version, body, expires_at FROM items WHERE pk = ?1 AND sk >= ?2 ORDER BY sk";

/// Create `path`'s missing parent directories (0700) and the database file (0600), and make an
/// existing database file and its `-wal`, `-shm` and `-journal` companions 0600, before SQLite
/// opens it: the store holds positions, balances and order ids that are nobody else's business.
/// SQLite's unix VFS gives the journal, WAL and shared-memory files it creates the mode of the
/// database file, whatever the umask, so a private database keeps its companions private.
/// Directories that already exist are left alone: the path may sit in a home folder.
fn make_private(path: &Path) -> Result<(), StoreError> {
    let fail = |what: &str, target: &Path, e: std::io::Error| {
        StoreError::Unavailable(format!(
            "sqlite {}: cannot {what} {}: {e}",
            path.display(),
            target.display()
        ))
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut dirs = std::fs::DirBuilder::new();
        dirs.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dirs, 0o700);
        dirs.create(parent)
            .map_err(|e| fail("create directory", parent, e))?;
    }
    let mut file = std::fs::OpenOptions::new();
    file.read(true).write(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    file.open(path).map_err(|e| fail("create", path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            let f = Path::new(&name);
            // Written by an earlier version or under a lax umask: tighten it.
            if let Ok(meta) = std::fs::metadata(f) {
                if meta.permissions().mode() & 0o077 != 0 {
                    std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600))
                        .map_err(|e| fail("make private (chmod 600)", f, e))?;
                }
            }
        }
    }
    Ok(())
}

/// How calls reach the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exec {
    /// On tokio's blocking pool: a durable commit waits for fsync, which must not stall the runtime.
    Blocking,
    /// Directly on the calling task: with `synchronous=OFF` a call takes microseconds, less than the
    /// thread hop to the blocking pool would cost (replay makes ~250k calls).
    Inline,
}

struct Inner {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl Inner {
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection, &Path) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // A panic while holding the lock leaves the connection usable: an unfinished transaction
        // is rolled back when its guard drops, so a poisoned lock is safe to take over.
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn, &self.path)
    }
}

/// The embedded state store (see the module docs). Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
    exec: Exec,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("exec", &self.exec)
            .finish()
    }
}

impl SqliteStore {
    /// Durable store (`synchronous=FULL`): a write has reached the disk when `put` returns. Creates
    /// the file and its parent directories if needed and drops items whose `expires_at` is past
    /// (the embedded counterpart of DynamoDB's TTL sweeper).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let store = Self::open_with(path.as_ref(), "FULL", Exec::Blocking)?;
        store.purge_expired_sync(chrono::Utc::now().timestamp())?;
        Ok(store)
    }

    /// Scratch store for replay and backtests (`synchronous=OFF`): as safe against concurrent
    /// writers as [`SqliteStore::open`], but an OS crash may lose recent writes. Nothing is purged
    /// on open because such runs write expiry times in simulated, not wall-clock, time.
    pub fn open_fast(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path.as_ref(), "OFF", Exec::Inline)
    }

    fn open_with(path: &Path, synchronous: &str, exec: Exec) -> Result<Self, StoreError> {
        make_private(path)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| map_err(path, e))?;
        // busy_timeout first: switching to WAL and creating the table take locks that another
        // process opening the same file at the same moment may hold.
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| map_err(path, e))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(|e| map_err(path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!(
                "sqlite {}: cannot switch to WAL journaling (got {mode}); is the file on a network filesystem?",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", synchronous)
            .map_err(|e| map_err(path, e))?;
        conn.execute_batch(SCHEMA).map_err(|e| map_err(path, e))?;
        conn.set_prepared_statement_cache_capacity(16);
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                path: path.to_path_buf(),
            }),
            exec,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Delete every item whose `expires_at` is before `now_epoch_secs`; returns how many went.
    pub async fn purge_expired(&self, now_epoch_secs: i64) -> Result<usize, StoreError> {
        self.run(move |conn, path| purge_expired(conn, path, now_epoch_secs))
            .await
    }

    fn purge_expired_sync(&self, now_epoch_secs: i64) -> Result<usize, StoreError> {
        self.inner
            .with_conn(|conn, path| purge_expired(conn, path, now_epoch_secs))
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &Path) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        match self.exec {
            Exec::Inline => self.inner.with_conn(f),
            Exec::Blocking => {
                let inner = Arc::clone(&self.inner);
                tokio::task::spawn_blocking(move || inner.with_conn(f))
                    .await
                    .map_err(|e| {
                        StoreError::Other(format!(
                            "sqlite {}: store task failed: {e}",
                            self.inner.path.display()
                        ))
                    })?
            }
        }
    }
}

fn purge_expired(conn: &mut Connection, path: &Path, now: i64) -> Result<usize, StoreError> {
    conn.prepare_cached("DELETE FROM items WHERE expires_at IS NOT NULL AND expires_at < ?1")
        .and_then(|mut st| st.execute(params![now]))
        .map_err(|e| map_err(path, e))
}

fn map_err(path: &Path, e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(format!(
                "sqlite {}: database stayed locked by another writer: {e}",
                path.display()
            ))
        }
        Some(
            ErrorCode::CannotOpen
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied,
        ) => StoreError::Unavailable(format!("sqlite {}: {e}", path.display())),
        _ => StoreError::Other(format!("sqlite {}: {e}", path.display())),
    }
}

fn to_version(path: &Path, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| {
        StoreError::Other(format!(
            "sqlite {}: corrupt item version {v}",
            path.display()
        ))
    })
}

fn conflict(pk: &str, sk: &str, detail: String) -> StoreError {
    StoreError::Conflict {
        pk: pk.to_string(),
        sk: sk.to_string(),
        detail,
    }
}

/// The smallest string greater than every string that starts with `prefix`, or `None` when there
/// is none (empty prefix, or only `char::MAX`). SQLite compares TEXT bytewise and UTF-8 preserves
/// code point order, so `[prefix, upper)` is exactly the strings with that prefix and the query
/// stays an index range scan.
fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last as u32 + 1 {
            0xD800 => Some('\u{E000}'),
            n => char::from_u32(n),
        };
        if let Some(c) = next {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

fn get_sync(
    conn: &mut Connection,
    path: &Path,
    pk: &str,
    sk: &str,
) -> Result<Option<Record>, StoreError> {
    let mut st = conn.prepare_cached(SQL_GET).map_err(|e| map_err(path, e))?;
    let row = st
        .query_row(params![pk, sk], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })
        .optional()
        .map_err(|e| map_err(path, e))?;
    row.map(|(version, body, expires_at)| {
        Ok(Record {
            pk: pk.to_string(),
            sk: sk.to_string(),
            version: to_version(path, version)?,
            body,
            expires_at,
        })
    })
    .transpose()
}

fn put_sync(
    conn: &mut Connection,
    path: &Path,
    pk: &str,
    sk: &str,
    body: &str,
    expect: Expect,
    expires_at: Option<i64>,
) -> Result<u64, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| map_err(path, e))?;
    let current = current_version(&tx, path, pk, sk)?;
    let new_version = match (expect, current) {
        (Expect::Absent, None) => 1,
        (Expect::Absent, Some(found)) => {
            return Err(conflict(
                pk,
                sk,
                format!("item already exists (version {found})"),
            ))
        }
        (Expect::Version(want), Some(found)) if found == want => want + 1,
        (Expect::Version(want), Some(found)) => {
            return Err(conflict(
                pk,
                sk,
                format!("expected version {want}, found {found}"),
            ))
        }
        (Expect::Version(want), None) => {
            return Err(conflict(
                pk,
                sk,
                format!("expected version {want}, item is absent"),
            ))
        }
    };
    let stored = i64::try_from(new_version)
        .map_err(|_| StoreError::Other(format!("sqlite {}: version overflow", path.display())))?;
    tx.prepare_cached(SQL_UPSERT)
        .and_then(|mut st| st.execute(params![pk, sk, stored, body, expires_at]))
        .map_err(|e| map_err(path, e))?;
    tx.commit().map_err(|e| map_err(path, e))?;
    Ok(new_version)
}

fn delete_sync(
    conn: &mut Connection,
    path: &Path,
    pk: &str,
    sk: &str,
    want: u64,
) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| map_err(path, e))?;
    match current_version(&tx, path, pk, sk)? {
        Some(found) if found == want => {}
        Some(found) => {
            return Err(conflict(
                pk,
                sk,
                format!("delete expected version {want}, found {found}"),
            ))
        }
        None => {
            return Err(conflict(
                pk,
                sk,
                format!("delete expected version {want}, item is absent"),
            ))
        }
    }
    tx.prepare_cached(SQL_DELETE)
        .and_then(|mut st| st.execute(params![pk, sk]))
        .map_err(|e| map_err(path, e))?;
    tx.commit().map_err(|e| map_err(path, e))
}

fn current_version(
    conn: &Connection,
    path: &Path,
    pk: &str,
    sk: &str,
) -> Result<Option<u64>, StoreError> {
    let v = conn
        .prepare_cached(SQL_VERSION)
        .and_then(|mut st| {
            st.query_row(params![pk, sk], |r| r.get::<_, i64>(0))
                .optional()
        })
        .map_err(|e| map_err(path, e))?;
    v.map(|v| to_version(path, v)).transpose()
}

fn query_sync(
    conn: &mut Connection,
    path: &Path,
    pk: &str,
    prefix: &str,
) -> Result<Vec<Record>, StoreError> {
    let upper = prefix_upper_bound(prefix);
    let mut st = match upper {
        Some(_) => conn.prepare_cached(SQL_QUERY_RANGE),
        None => conn.prepare_cached(SQL_QUERY_FROM),
    }
    .map_err(|e| map_err(path, e))?;
    let map_row = |r: &rusqlite::Row<'_>| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<i64>>(3)?,
        ))
    };
    let rows = match &upper {
        Some(upper) => st.query_map(params![pk, prefix, upper], map_row),
        None => st.query_map(params![pk, prefix], map_row),
    }
    .map_err(|e| map_err(path, e))?;
    let mut out = Vec::new();
    for row in rows {
        let (sk, version, body, expires_at) = row.map_err(|e| map_err(path, e))?;
        out.push(Record {
            pk: pk.to_string(),
            sk,
            version: to_version(path, version)?,
            body,
            expires_at,
        });
    }
    Ok(out)
}

#[async_trait]
impl StateStore for SqliteStore {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Record>, StoreError> {
        let (pk, sk) = (pk.to_string(), sk.to_string());
        self.run(move |conn, path| get_sync(conn, path, &pk, &sk))
            .await
    }

    async fn put(
        &self,
        pk: &str,
        sk: &str,
        body: &str,
        expect: Expect,
        expires_at: Option<i64>,
    ) -> Result<u64, StoreError> {
        let (pk, sk, body) = (pk.to_string(), sk.to_string(), body.to_string());
        self.run(move |conn, path| put_sync(conn, path, &pk, &sk, &body, expect, expires_at))
            .await
    }

    async fn delete(&self, pk: &str, sk: &str, expect: Expect) -> Result<(), StoreError> {
        let want = match expect {
            Expect::Version(v) => v,
            Expect::Absent => {
                return Err(StoreError::Other(format!(
                "delete of {pk}/{sk} with Expect::Absent: a delete must name the version it read"
            )))
            }
        };
        let (pk, sk) = (pk.to_string(), sk.to_string());
        self.run(move |conn, path| delete_sync(conn, path, &pk, &sk, want))
            .await
    }

    async fn query(&self, pk: &str, sk_prefix: &str) -> Result<Vec<Record>, StoreError> {
        let (pk, prefix) = (pk.to_string(), sk_prefix.to_string());
        self.run(move |conn, path| query_sync(conn, path, &pk, &prefix))
            .await
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.inner.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_bound_increments_last_char() {
        assert_eq!(prefix_upper_bound("POS#"), Some("POS$".to_string()));
        assert_eq!(prefix_upper_bound("ab"), Some("ac".to_string()));
        assert_eq!(prefix_upper_bound(""), None);
        // Surrogates are not chars: the successor of U+D7FF is U+E000.
        assert_eq!(
            prefix_upper_bound("a\u{D7FF}"),
            Some("a\u{E000}".to_string())
        );
        // A trailing char::MAX cannot be incremented: carry into the previous char.
        assert_eq!(prefix_upper_bound("a\u{10FFFF}"), Some("b".to_string()));
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
    }

    #[test]
    fn upper_bound_brackets_exactly_the_prefixed_strings() {
        let prefix = "TRADE#";
        let upper = prefix_upper_bound(prefix).unwrap();
        for s in ["TRADE#", "TRADE#1", "TRADE#\u{10FFFF}x", "TRADE#zzz"] {
            assert!(s >= prefix && s < upper.as_str(), "{s} should be inside");
        }
        for s in ["TRADE", "TRADE$", "TRADEX", "TRADF", "S"] {
            assert!(
                !(s >= prefix && s < upper.as_str()),
                "{s} should be outside"
            );
        }
    }

    /// The store's new directories are 0700 and its files 0600 (the database, and the WAL and
    /// shared-memory files SQLite makes beside it), whatever the umask; a database left readable
    /// by an earlier version is made private when opened.
    #[cfg(unix)]
    #[tokio::test]
    async fn store_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/inner/albra.db");
        let s = SqliteStore::open(&path).unwrap();
        s.put("A", "x", "{}", Expect::Absent, None).await.unwrap();
        assert_eq!(mode(&dir.path().join("state")), 0o700);
        assert_eq!(mode(&dir.path().join("state/inner")), 0o700);
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path.parent().unwrap()).unwrap() {
            let p = entry.unwrap().path();
            files.push(p.file_name().unwrap().to_string_lossy().to_string());
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
        files.sort();
        assert_eq!(files, ["albra.db", "albra.db-shm", "albra.db-wal"]);
        drop(s);

        // A world-readable database and WAL from before are tightened on open.
        let old = dir.path().join("old.db");
        std::fs::write(&old, b"").unwrap();
        std::fs::write(dir.path().join("old.db-wal"), b"").unwrap();
        for f in ["old.db", "old.db-wal"] {
            let p = dir.path().join(f);
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let s = SqliteStore::open_fast(&old).unwrap();
        s.put("A", "x", "{}", Expect::Absent, None).await.unwrap();
        assert_eq!(mode(&old), 0o600);
        assert_eq!(mode(&dir.path().join("old.db-wal")), 0o600);
        assert_eq!(mode(&dir.path().join("old.db-shm")), 0o600);
    }

    #[tokio::test]
    async fn reopen_keeps_items_and_purges_expired_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/albra.db");
        let now = chrono::Utc::now().timestamp();
        {
            let s = SqliteStore::open(&path).unwrap();
            s.put("A", "keep", "{}", Expect::Absent, Some(now + 3600))
                .await
                .unwrap();
            s.put("A", "forever", "{}", Expect::Absent, None)
                .await
                .unwrap();
            s.put("A", "old", "{}", Expect::Absent, Some(now - 10))
                .await
                .unwrap();
            // Reads still return an expired item until it is purged, as DynamoDB does.
            assert!(s.get("A", "old").await.unwrap().is_some());
        }
        let s = SqliteStore::open(&path).unwrap();
        let sks: Vec<String> = s
            .query("A", "")
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.sk)
            .collect();
        assert_eq!(sks, vec!["forever", "keep"]);
        assert_eq!(s.describe(), format!("sqlite:{}", path.display()));
    }

    #[tokio::test]
    async fn fast_store_keeps_expired_items_and_purges_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scratch.db");
        {
            let s = SqliteStore::open_fast(&path).unwrap();
            s.put("A", "old", "{}", Expect::Absent, Some(1_600_000_000))
                .await
                .unwrap();
        }
        let s = SqliteStore::open_fast(&path).unwrap();
        assert!(s.get("A", "old").await.unwrap().is_some());
        assert_eq!(s.purge_expired(1_600_000_001).await.unwrap(), 1);
        assert!(s.get("A", "old").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn delete_with_absent_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open_fast(dir.path().join("x.db")).unwrap();
        s.put("A", "b", "{}", Expect::Absent, None).await.unwrap();
        let err = s.delete("A", "b", Expect::Absent).await.unwrap_err();
        assert!(!err.is_conflict(), "{err}");
        assert!(s.get("A", "b").await.unwrap().is_some());
    }
}
