//! The SQLite schema: the versioned migrations in `migrations/`, run by
//! refinery. Stores made before refinery counted their schema version in
//! `PRAGMA user_version`; their history is recorded as applied first.
//! After the migrations, [`seal`] checks the secrets key against the one
//! the store was sealed with, and seals the secrets of a store an earlier
//! release kept in plaintext.

use std::path::Path;

use refinery::{Migration, Runner, Target};
use rusqlite::Connection;

use super::queries;
use crate::store::sealed::{self, SecretsKey, SecretsKeySource};
use crate::store::{StoreError, migration_error};

/// Every migration, oldest first.
const MIGRATIONS: [(&str, &str); 6] = [
    ("V1__initial", include_str!("migrations/V1__initial.sql")),
    (
        "V2__custom_modules",
        include_str!("migrations/V2__custom_modules.sql"),
    ),
    (
        "V3__integer_message_ids",
        include_str!("migrations/V3__integer_message_ids.sql"),
    ),
    (
        "V4__platform_outcomes",
        include_str!("migrations/V4__platform_outcomes.sql"),
    ),
    (
        "V5__subscriptions",
        include_str!("migrations/V5__subscriptions.sql"),
    ),
    (
        "V6__secret_keys",
        include_str!("migrations/V6__secret_keys.sql"),
    ),
];

/// The migrations in refinery's form.
pub(super) fn migrations() -> Result<Vec<Migration>, StoreError> {
    MIGRATIONS
        .iter()
        .map(|(name, sql)| Migration::unapplied(name, sql))
        .collect::<Result<_, _>>()
        .map_err(|e| StoreError::internal(format!("a built-in migration is malformed: {e}")))
}

/// Brings the schema up to date.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let migrations = migrations()?;
    let has_history: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'refinery_schema_history'",
        [],
        |r| r.get(0),
    )?;
    let legacy: i32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if has_history == 0 && legacy > 0 {
        if usize::try_from(legacy).map_or(true, |v| v > 3) {
            return Err(StoreError::corrupt(format!(
                "the database is at schema version {legacy}, newer than this thingcall knows"
            )));
        }
        Runner::new(&migrations)
            .set_target(Target::FakeVersion(legacy))
            .run(conn)
            .map_err(migration_error)?;
    }
    let report = Runner::new(&migrations)
        .run(conn)
        .map_err(migration_error)?;
    for m in report.applied_migrations() {
        tracing::info!(version = m.version(), name = m.name(), "store migrated");
    }
    Ok(())
}

/// The key of the store in `dir`: the one `source` names, checked against
/// the key id the store keeps. A store that keeps none (a new one, or one
/// of a release that kept secrets in plaintext) gets the key, made in the
/// data directory when `source` names none, and every secret it holds is
/// sealed, in one transaction with the key's id. The plaintext the rows
/// held is then wiped from the file: `VACUUM` rewrites every page, and the
/// write-ahead log is truncated.
pub(super) fn seal(
    conn: &mut Connection,
    source: &SecretsKeySource,
    dir: &Path,
) -> Result<SecretsKey, StoreError> {
    let stored: Vec<String> = conn
        .prepare("SELECT key_id FROM secret_keys ORDER BY key_id")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let key = sealed::load(source, dir)?;
    if !stored.is_empty() {
        let Some(key) = key else {
            return Err(sealed::no_key(&stored, dir));
        };
        if !stored.iter().any(|id| id == key.id()) {
            return Err(sealed::wrong_key(&stored, &key));
        }
        return Ok(key);
    }
    let key = match key {
        Some(key) => key,
        None => {
            let key = sealed::create_key_file(&dir.join(sealed::KEY_FILE))?;
            tracing::warn!(
                file = %dir.join(sealed::KEY_FILE).display(),
                key = key.id(),
                "made a secrets key: the store's secrets cannot be read without it; back it up apart from the store"
            );
            key
        }
    };
    let tx = conn.transaction()?;
    let sealed_rows = queries::seal_plaintext(&tx, &key)?;
    tx.execute("INSERT INTO secret_keys (key_id) VALUES (?1)", [key.id()])?;
    tx.commit()?;
    if sealed_rows > 0 {
        conn.execute_batch("VACUUM")?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        tracing::info!(
            secrets = sealed_rows,
            key = key.id(),
            "sealed the secrets an earlier release stored in plaintext"
        );
    }
    Ok(key)
}
