//! The PostgreSQL schema: versioned migrations in `migrations/`, run by
//! refinery. Several thingcall nodes may start against one database at
//! once, so the run holds an advisory lock.

use refinery::{Migration, Runner};
use tokio_postgres::Client;

use super::error::from_pg;
use crate::store::{StoreError, migration_error};

/// Every migration, oldest first.
const MIGRATIONS: [(&str, &str); 5] = [
    ("V1__initial", include_str!("migrations/V1__initial.sql")),
    (
        "V2__invocations_fillfactor",
        include_str!("migrations/V2__invocations_fillfactor.sql"),
    ),
    ("V3__cluster", include_str!("migrations/V3__cluster.sql")),
    (
        "V4__subscriptions",
        include_str!("migrations/V4__subscriptions.sql"),
    ),
    (
        "V5__registry_log_by_entity",
        include_str!("migrations/V5__registry_log_by_entity.sql"),
    ),
];

/// The advisory lock that serialises migrations ("thingcall" in ASCII).
const MIGRATION_LOCK: i64 = 0x7468_696e_6763_616c;

/// Brings the schema up to date.
pub(super) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let migrations = MIGRATIONS
        .iter()
        .map(|(name, sql)| Migration::unapplied(name, sql))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::internal(format!("a built-in migration is malformed: {e}")))?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(from_pg)?;
    let outcome = Runner::new(&migrations).run_async(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let report = outcome.map_err(migration_error)?;
    unlocked.map_err(from_pg)?;
    for m in report.applied_migrations() {
        tracing::info!(version = m.version(), name = m.name(), "store migrated");
    }
    Ok(())
}
