//! The SQLite schema: the versioned migrations in `migrations/`, run by
//! refinery. Stores made before refinery counted their schema version in
//! `PRAGMA user_version`; their history is recorded as applied first.

use refinery::{Migration, Runner, Target};
use rusqlite::Connection;

use crate::store::{StoreError, migration_error};

/// Every migration, oldest first.
const MIGRATIONS: [(&str, &str); 5] = [
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
