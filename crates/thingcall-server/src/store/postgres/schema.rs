//! The PostgreSQL schema: versioned migrations in `migrations/`, run by
//! refinery. Several thingcall nodes may start against one database at
//! once, so the run holds an advisory lock; so does [`seal`], which checks
//! the secrets key and seals the secrets an earlier release kept in
//! plaintext.

use refinery::{Migration, Runner};
use tokio_postgres::Client;

use super::error::from_pg;
use crate::store::sealed::{self, Column, SecretsKey};
use crate::store::{StoreError, StoreErrorKind, migration_error};

/// Every migration, oldest first.
const MIGRATIONS: [(&str, &str); 6] = [
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
    (
        "V6__secret_keys",
        include_str!("migrations/V6__secret_keys.sql"),
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

/// Checks `key` against the key ids the store keeps. A store that keeps
/// none (a new one, or one of a release that kept secrets in plaintext)
/// has every secret sealed with `key`, in one transaction with the key's
/// id, under the migration lock (so nodes that start together agree on
/// one key: the first seals, the others are checked against it). Without
/// a key nothing is read: a PostgreSQL store never makes one.
pub(super) async fn seal(
    client: &mut Client,
    key: Option<SecretsKey>,
    data_dir: &std::path::Path,
) -> Result<SecretsKey, StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(from_pg)?;
    let outcome = seal_locked(client, key, data_dir).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let key = outcome?;
    unlocked.map_err(from_pg)?;
    Ok(key)
}

async fn seal_locked(
    client: &mut Client,
    key: Option<SecretsKey>,
    data_dir: &std::path::Path,
) -> Result<SecretsKey, StoreError> {
    let tx = client.transaction().await.map_err(from_pg)?;
    let stored: Vec<String> = tx
        .query("SELECT key_id FROM secret_keys ORDER BY key_id", &[])
        .await
        .map_err(from_pg)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let Some(key) = key else {
        if !stored.is_empty() {
            return Err(sealed::no_key(&stored, data_dir));
        }
        return Err(StoreError::new(
            StoreErrorKind::Internal,
            format!(
                "a PostgreSQL store needs a secrets key, the same on every node: make one with \
                 `thingcall store new-key FILE` and give it with --secrets-key-file FILE (or \
                 THINGCALL_SECRETS_KEY), or put it at {}",
                data_dir.join(sealed::KEY_FILE).display()
            ),
        ));
    };
    if !stored.is_empty() {
        if !stored.iter().any(|id| id == key.id()) {
            return Err(sealed::wrong_key(&stored, &key));
        }
        return Ok(key);
    }
    let mut count = 0usize;
    for (table, id_column, columns, column) in [
        ("access_keys", "id", "id, '', '', secret", Column::AccessKey),
        (
            "products",
            "product_key",
            "product_key, '', '', product_secret",
            Column::Product,
        ),
        (
            "devices",
            "iot_id",
            "iot_id, product_key, device_name, device_secret",
            Column::Device,
        ),
    ] {
        let rows = tx
            .query(&format!("SELECT {columns} FROM {table}"), &[])
            .await
            .map_err(from_pg)?;
        let mut ids: Vec<String> = Vec::with_capacity(rows.len());
        let mut values: Vec<String> = Vec::with_capacity(rows.len());
        for r in &rows {
            let (id, pk, dn, plain): (String, String, String, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            let value = match column {
                Column::Device => key.seal(column, &[&id, &pk, &dn], &plain),
                _ => key.seal(column, &[&id], &plain),
            };
            ids.push(id);
            values.push(value);
        }
        let secret_column = columns.rsplit(", ").next().unwrap_or_default();
        // One statement per table, whatever its size.
        let n = tx
            .execute(
                &format!(
                    "UPDATE {table} AS t SET {secret_column} = u.value
                     FROM UNNEST($1::text[], $2::text[]) AS u(id, value)
                     WHERE t.{id_column} = u.id"
                ),
                &[&ids, &values],
            )
            .await
            .map_err(from_pg)?;
        count += usize::try_from(n).unwrap_or(usize::MAX);
    }
    tx.execute("INSERT INTO secret_keys (key_id) VALUES ($1)", &[&key.id()])
        .await
        .map_err(from_pg)?;
    tx.commit().await.map_err(from_pg)?;
    if count > 0 {
        tracing::info!(
            secrets = count,
            key = key.id(),
            "sealed the secrets an earlier release stored in plaintext"
        );
    }
    Ok(key)
}
