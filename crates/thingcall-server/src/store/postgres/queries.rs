//! The SQL of the PostgreSQL store: start-up load, registry changes, and
//! invocation records (written in bulk: one statement per batch).
//!
//! Secrets are stored sealed (`store/sealed.rs`): the store seals a
//! change's secret before the writer gets it, and opens what the reads
//! here return, so the secret columns read and written here hold
//! ciphertext only.

use std::collections::HashMap;

use thingcall_core::MessageId;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row, ToStatement};

use super::error::from_pg;
use crate::store::sealed;
use crate::store::{
    AccessKey, CallMode, Change, Completion, Device, Invocation, LogPosition, ModelVersion,
    Outcome, Product, RecordQuery, Snapshot, StoreError, logged_entity,
};

/// A message id as the integer key it is stored under (ids above
/// `i64::MAX` name no record).
fn message_key(id: MessageId) -> Option<i64> {
    i64::try_from(id.get()).ok()
}

async fn all<C: GenericClient>(client: &C, sql: &str) -> Result<Vec<Row>, StoreError> {
    client.query(sql, &[]).await.map_err(from_pg)
}

const ACCESS_KEY_COLUMNS: &str = "id, secret, enabled";

fn row_to_access_key(r: &Row) -> AccessKey {
    AccessKey {
        id: r.get(0),
        secret: r.get::<_, String>(1).into(),
        enabled: r.get(2),
    }
}

const DEVICE_COLUMNS: &str = "iot_id, product_key, device_name, device_secret, nickname, \
     enabled, created_ms, activated_ms, online_ms, status_ms, ip_address";

/// A device row (presence is not stored: `online` starts false).
fn row_to_device(r: &Row) -> Device {
    Device {
        iot_id: r.get(0),
        product_key: r.get(1),
        device_name: r.get(2),
        device_secret: r.get::<_, String>(3).into(),
        nickname: r.get(4),
        enabled: r.get(5),
        created_ms: r.get(6),
        activated_ms: r.get(7),
        online_ms: r.get(8),
        status_ms: r.get(9),
        ip_address: r.get(10),
        online: false,
    }
}

/// Products with their versions and modules: every one, or the one named.
async fn products_where<C: GenericClient>(
    client: &C,
    only: Option<&str>,
) -> Result<Vec<Product>, StoreError> {
    let filter = if only.is_some() {
        " WHERE product_key = $1"
    } else {
        ""
    };
    let key_param: Vec<&(dyn ToSql + Sync)> = match &only {
        Some(key) => vec![key],
        None => Vec::new(),
    };
    let select = |sql: String| {
        let params = key_param.clone();
        async move { client.query(&sql, &params).await.map_err(from_pg) }
    };
    let mut products: Vec<Product> = select(format!(
        "SELECT product_key, product_name, product_secret, description, node_type, data_format,
                commodity_code, auth_type, protocol_type, net_type, category_key, validate_type,
                created_ms, draft_tsl FROM products{filter}"
    ))
    .await?
    .iter()
    .map(|r| Product {
        product_key: r.get(0),
        product_name: r.get(1),
        product_secret: r.get::<_, String>(2).into(),
        description: r.get(3),
        node_type: r.get(4),
        data_format: r.get(5),
        commodity_code: r.get(6),
        auth_type: r.get(7),
        protocol_type: r.get(8),
        net_type: r.get(9),
        category_key: r.get(10),
        validate_type: r.get(11),
        created_ms: r.get(12),
        draft_tsl: r.get(13),
        versions: Vec::new(),
        modules: Default::default(),
    })
    .collect();
    let by_key: HashMap<String, usize> = products
        .iter()
        .enumerate()
        .map(|(i, p)| (p.product_key.clone(), i))
        .collect();
    let versions = select(format!(
        "SELECT product_key, version, description, tsl, created_ms, seq FROM model_versions{filter}
         ORDER BY seq"
    ));
    for r in versions.await? {
        if let Some(&i) = by_key.get(r.get::<_, &str>(0)) {
            products[i].versions.push(ModelVersion {
                version: r.get(1),
                description: r.get(2),
                tsl: r.get(3),
                created_ms: r.get(4),
                seq: r.get(5),
                modules: Default::default(),
            });
        }
    }
    let modules = select(format!(
        "SELECT product_key, block_id, draft_tsl FROM modules{filter}"
    ));
    for r in modules.await? {
        if let Some(&i) = by_key.get(r.get::<_, &str>(0)) {
            products[i].modules.insert(r.get(1), r.get(2));
        }
    }
    let module_versions = select(format!(
        "SELECT product_key, version, block_id, tsl FROM module_versions{filter}"
    ));
    for r in module_versions.await? {
        let version: &str = r.get(1);
        if let Some(v) = by_key.get(r.get::<_, &str>(0)).and_then(|&i| {
            products[i]
                .versions
                .iter_mut()
                .find(|v| v.version == version)
        }) {
            v.modules.insert(r.get(2), r.get(3));
        }
    }
    Ok(products)
}

/// Everything the mirror holds.
pub(super) async fn load<C: GenericClient>(client: &C) -> Result<Snapshot, StoreError> {
    let access_keys = all(
        client,
        &format!("SELECT {ACCESS_KEY_COLUMNS} FROM access_keys"),
    )
    .await?
    .iter()
    .map(row_to_access_key)
    .collect();
    let products = products_where(client, None).await?;
    let devices = all(client, &format!("SELECT {DEVICE_COLUMNS} FROM devices"))
        .await?
        .iter()
        .map(row_to_device)
        .collect();
    let tombstones = all(client, "SELECT product_key, device_name FROM tombstones")
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let last: Option<i64> = client
        .query_one("SELECT MAX(message_id) FROM invocations", &[])
        .await
        .map_err(from_pg)?
        .get(0);
    Ok(Snapshot {
        access_keys,
        products,
        devices,
        tombstones,
        last_message_id: last.and_then(|id| u64::try_from(id).ok()),
    })
}

async fn insert_version<C: GenericClient>(
    client: &C,
    product_key: &str,
    v: &ModelVersion,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO model_versions (product_key, version, description, tsl, created_ms, seq)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &product_key,
                &v.version,
                &v.description,
                &v.tsl,
                &v.created_ms,
                &v.seq,
            ],
        )
        .await?;
    for (block, tsl) in &v.modules {
        client
            .execute(
                "INSERT INTO module_versions (product_key, version, block_id, tsl) VALUES ($1, $2, $3, $4)",
                &[&product_key, &v.version, block, tsl],
            )
            .await?;
    }
    Ok(())
}

/// What a change leaves in `registry_log` for other nodes to re-read:
/// (entity, key, product key, device name). Presence leaves nothing: it
/// travels between nodes as events.
fn logged(change: &Change) -> Option<(&'static str, &str, Option<&str>, Option<&str>)> {
    let (entity, key) = logged_entity(change)?;
    let (product_key, device_name) = match change {
        Change::InsertDevice(d) => (Some(d.product_key.as_str()), Some(d.device_name.as_str())),
        Change::DeleteDevice {
            product_key,
            device_name,
            ..
        } => (Some(product_key.as_str()), Some(device_name.as_str())),
        _ => (None, None),
    };
    Some((entity, key, product_key, device_name))
}

/// The newest log entry of an entity (0 for none).
pub(super) async fn entity_log_last<C: GenericClient>(
    client: &C,
    entity: &str,
    key: &str,
) -> Result<i64, StoreError> {
    Ok(client
        .query_one(
            "SELECT COALESCE(MAX(seq), 0) FROM registry_log WHERE entity = $1 AND key = $2",
            &[&entity, &key],
        )
        .await
        .map_err(from_pg)?
        .get(0))
}

/// The advisory lock that orders registry changes across nodes.
const REGISTRY_LOG_LOCK: i64 = 0x7468_696e_6763_616c;

/// Runs one registry change's statements (inside the writer's
/// transaction), and logs it for the other nodes of a cluster: returns its
/// log entry and the entity's previous one.
pub(super) async fn apply_change<C: GenericClient>(
    client: &C,
    change: &Change,
) -> Result<Option<LogPosition>, tokio_postgres::Error> {
    apply_statements(client, change).await?;
    let Some((entity, key, product_key, device_name)) = logged(change) else {
        return Ok(None);
    };
    let at = match change {
        Change::PutAccessKey { at, .. }
        | Change::DeleteProduct { at, .. }
        | Change::DeleteDevice { at, .. }
        | Change::SetEnabled { at, .. } => *at,
        _ => 0,
    };
    // One registry change at a time across the nodes, until this
    // transaction ends: the log's numbers are then given in commit order,
    // so a node that read entry n has seen every entry below n.
    client
        .execute("SELECT pg_advisory_xact_lock($1)", &[&REGISTRY_LOG_LOCK])
        .await?;
    let previous: i64 = client
        .query_one(
            "SELECT COALESCE(MAX(seq), 0) FROM registry_log WHERE entity = $1 AND key = $2",
            &[&entity, &key],
        )
        .await?
        .get(0);
    let seq: i64 = client
        .query_one(
            "INSERT INTO registry_log (entity, key, product_key, device_name, at_ms)
             VALUES ($1, $2, $3, $4, $5) RETURNING seq",
            &[&entity, &key, &product_key, &device_name, &at],
        )
        .await?
        .get(0);
    Ok(Some(LogPosition { previous, seq }))
}

async fn apply_statements<C: GenericClient>(
    client: &C,
    change: &Change,
) -> Result<(), tokio_postgres::Error> {
    debug_assert!(
        match change {
            Change::PutAccessKey { key, .. } => sealed::is_sealed(key.secret.expose()),
            Change::InsertProduct(p) => sealed::is_sealed(p.product_secret.expose()),
            Change::InsertDevice(d) => sealed::is_sealed(d.device_secret.expose()),
            _ => true,
        },
        "a secret reached the PostgreSQL writer unsealed"
    );
    match change {
        Change::PutAccessKey { key, at } => {
            client
                .execute(
                    "INSERT INTO access_keys (id, secret, enabled, created_ms) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (id) DO UPDATE SET secret = EXCLUDED.secret, enabled = EXCLUDED.enabled",
                    &[&key.id, &key.secret.expose(), &key.enabled, at],
                )
                .await?;
        }
        Change::InsertProduct(p) => {
            client
                .execute(
                    "INSERT INTO products (product_key, product_name, product_secret, description, node_type,
                         data_format, commodity_code, auth_type, protocol_type, net_type, category_key,
                         validate_type, created_ms, draft_tsl)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                    &[
                        &p.product_key,
                        &p.product_name,
                        &p.product_secret.expose(),
                        &p.description,
                        &p.node_type,
                        &p.data_format,
                        &p.commodity_code,
                        &p.auth_type,
                        &p.protocol_type,
                        &p.net_type,
                        &p.category_key,
                        &p.validate_type,
                        &p.created_ms,
                        &p.draft_tsl,
                    ],
                )
                .await?;
            for v in &p.versions {
                insert_version(client, &p.product_key, v).await?;
            }
        }
        Change::DeleteProduct { product_key, at } => {
            client
                .execute(
                    "INSERT INTO tombstones (product_key, device_name, deleted_ms)
                     SELECT product_key, device_name, $2 FROM devices WHERE product_key = $1
                     ON CONFLICT (product_key, device_name) DO UPDATE SET deleted_ms = EXCLUDED.deleted_ms",
                    &[product_key, at],
                )
                .await?;
            client
                .execute(
                    "DELETE FROM products WHERE product_key = $1",
                    &[product_key],
                )
                .await?;
        }
        Change::SetDraft {
            product_key,
            module,
            tsl,
        } => match module {
            Some((id, name)) => {
                client
                    .execute(
                        "INSERT INTO modules (product_key, block_id, block_name, draft_tsl) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (product_key, block_id) DO UPDATE
                         SET block_name = EXCLUDED.block_name, draft_tsl = EXCLUDED.draft_tsl",
                        &[product_key, id, name, tsl],
                    )
                    .await?;
            }
            None => {
                client
                    .execute(
                        "UPDATE products SET draft_tsl = $2 WHERE product_key = $1",
                        &[product_key, tsl],
                    )
                    .await?;
            }
        },
        Change::Publish {
            product_key,
            version,
            keep,
        } => {
            insert_version(client, product_key, version).await?;
            let keep = i64::try_from(*keep).unwrap_or(i64::MAX);
            client
                .execute(
                    "DELETE FROM model_versions WHERE product_key = $1 AND seq NOT IN
                        (SELECT seq FROM model_versions WHERE product_key = $1 ORDER BY seq DESC LIMIT $2)",
                    &[product_key, &keep],
                )
                .await?;
        }
        Change::InsertDevice(d) => {
            client
                .execute(
                    "DELETE FROM tombstones WHERE product_key = $1 AND device_name = $2",
                    &[&d.product_key, &d.device_name],
                )
                .await?;
            client
                .execute(
                    "INSERT INTO devices (iot_id, product_key, device_name, device_secret, nickname, enabled,
                         created_ms, activated_ms, online_ms, status_ms, ip_address)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    &[
                        &d.iot_id,
                        &d.product_key,
                        &d.device_name,
                        &d.device_secret.expose(),
                        &d.nickname,
                        &d.enabled,
                        &d.created_ms,
                        &d.activated_ms,
                        &d.online_ms,
                        &d.status_ms,
                        &d.ip_address,
                    ],
                )
                .await?;
        }
        Change::DeleteDevice {
            iot_id,
            product_key,
            device_name,
            at,
        } => {
            client
                .execute("DELETE FROM devices WHERE iot_id = $1", &[iot_id])
                .await?;
            client
                .execute(
                    "INSERT INTO tombstones (product_key, device_name, deleted_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (product_key, device_name) DO UPDATE SET deleted_ms = EXCLUDED.deleted_ms",
                    &[product_key, device_name, at],
                )
                .await?;
        }
        Change::SetEnabled {
            iot_id,
            enabled,
            at,
        } => {
            client
                .execute(
                    "UPDATE devices SET enabled = $2, status_ms = $3 WHERE iot_id = $1",
                    &[iot_id, enabled, at],
                )
                .await?;
        }
        Change::Presence {
            iot_id,
            online,
            at,
            ip_address,
        } => {
            if *online {
                client
                    .execute(
                        "UPDATE devices SET activated_ms = COALESCE(activated_ms, $2), online_ms = $2,
                             status_ms = $2, ip_address = $3 WHERE iot_id = $1",
                        &[iot_id, at, ip_address],
                    )
                    .await?;
            } else {
                client
                    .execute(
                        "UPDATE devices SET status_ms = $2 WHERE iot_id = $1",
                        &[iot_id, at],
                    )
                    .await?;
            }
        }
    }
    Ok(())
}

/// Stores many records in one statement; a record whose message id exists
/// is left as it is. Prepared once per writer connection.
pub(super) const INSERT_INVOCATIONS: &str = "INSERT INTO invocations
        (message_id, iot_id, identifier, name, time_ms, mode, input, output, code)
    SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::int8[],
                         $6::text[], $7::text[], $8::text[], $9::text[])
    ON CONFLICT (message_id) DO NOTHING";

/// Applies many outcomes (distinct message ids) in one statement; returns
/// the ids that found their device's record. Prepared once per writer
/// connection.
pub(super) const COMPLETE_INVOCATIONS: &str = "UPDATE invocations AS i
    SET output = COALESCE(c.output, i.output), code = c.code
    FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[]) AS c(message_id, iot_id, output, code)
    WHERE i.message_id = c.message_id AND (c.iot_id IS NULL OR i.iot_id = c.iot_id)
    RETURNING i.message_id";

/// The parameters of [`INSERT_INVOCATIONS`] for some records (ids beyond
/// the key range, which the engine never makes, are left out).
pub(super) struct InsertParams<'a> {
    ids: Vec<i64>,
    iot_ids: Vec<&'a str>,
    identifiers: Vec<&'a str>,
    names: Vec<&'a str>,
    times: Vec<i64>,
    modes: Vec<&'a str>,
    inputs: Vec<&'a str>,
    outputs: Vec<Option<&'a str>>,
    codes: Vec<String>,
}

impl<'a> InsertParams<'a> {
    pub(super) fn new(rows: &[&'a Invocation]) -> InsertParams<'a> {
        let rows: Vec<&&Invocation> = rows
            .iter()
            .filter(|r| message_key(r.message_id).is_some())
            .collect();
        InsertParams {
            ids: rows
                .iter()
                .filter_map(|r| message_key(r.message_id))
                .collect(),
            iot_ids: rows.iter().map(|r| r.iot_id.as_str()).collect(),
            identifiers: rows.iter().map(|r| r.identifier.as_str()).collect(),
            names: rows.iter().map(|r| r.name.as_str()).collect(),
            times: rows.iter().map(|r| r.time_ms).collect(),
            modes: rows.iter().map(|r| r.mode.as_str()).collect(),
            inputs: rows.iter().map(|r| r.input.as_str()).collect(),
            outputs: rows.iter().map(|r| r.output.as_deref()).collect(),
            codes: rows.iter().map(|r| r.outcome.to_stored()).collect(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 9] {
        [
            &self.ids,
            &self.iot_ids,
            &self.identifiers,
            &self.names,
            &self.times,
            &self.modes,
            &self.inputs,
            &self.outputs,
            &self.codes,
        ]
    }
}

/// The parameters of [`COMPLETE_INVOCATIONS`] for one run of outcomes.
pub(super) struct CompleteParams<'a> {
    ids: Vec<i64>,
    iot_ids: Vec<Option<&'a str>>,
    outputs: Vec<Option<&'a str>>,
    codes: Vec<String>,
}

impl<'a> CompleteParams<'a> {
    pub(super) fn new(rows: &[&'a Completion]) -> CompleteParams<'a> {
        let rows: Vec<&&Completion> = rows
            .iter()
            .filter(|c| message_key(c.message_id).is_some())
            .collect();
        CompleteParams {
            ids: rows
                .iter()
                .filter_map(|c| message_key(c.message_id))
                .collect(),
            iot_ids: rows.iter().map(|c| c.iot_id.as_deref()).collect(),
            outputs: rows.iter().map(|c| c.output.as_deref()).collect(),
            codes: rows.iter().map(|c| c.outcome.to_stored()).collect(),
        }
    }

    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 4] {
        [&self.ids, &self.iot_ids, &self.outputs, &self.codes]
    }
}

/// Runs [`INSERT_INVOCATIONS`] (as text or prepared).
pub(super) async fn insert_invocations<C, T>(
    client: &C,
    statement: &T,
    rows: &InsertParams<'_>,
) -> Result<(), tokio_postgres::Error>
where
    C: GenericClient,
    T: ?Sized + ToStatement + Sync + Send,
{
    if rows.is_empty() {
        return Ok(());
    }
    client.execute(statement, &rows.params()).await.map(|_| ())
}

/// Runs [`COMPLETE_INVOCATIONS`] (as text or prepared); returns the ids
/// that found their device's record.
pub(super) async fn complete_invocations<C, T>(
    client: &C,
    statement: &T,
    rows: &CompleteParams<'_>,
) -> Result<Vec<i64>, tokio_postgres::Error>
where
    C: GenericClient,
    T: ?Sized + ToStatement + Sync + Send,
{
    if rows.ids.is_empty() {
        return Ok(Vec::new());
    }
    let found = client.query(statement, &rows.params()).await?;
    Ok(found.iter().map(|r| r.get(0)).collect())
}

/// Invocations of one device in `[from, to]`, ordered, at most `limit`.
pub(super) async fn invocations<C: GenericClient>(
    client: &C,
    q: &RecordQuery,
) -> Result<Vec<Invocation>, StoreError> {
    let order = if q.ascending { "ASC" } else { "DESC" };
    let sql = format!(
        "SELECT message_id, iot_id, identifier, name, time_ms, mode, input, output, code FROM invocations
         WHERE iot_id = $1 AND time_ms BETWEEN $2 AND $3 AND ($4::text IS NULL OR identifier = $4)
         ORDER BY time_ms {order}, message_id {order} LIMIT $5"
    );
    let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
    let rows = client
        .query(&sql, &[&q.iot_id, &q.from, &q.to, &q.identifier, &limit])
        .await
        .map_err(from_pg)?;
    rows.iter().map(row_to_invocation).collect()
}

fn row_to_invocation(r: &Row) -> Result<Invocation, StoreError> {
    let id: i64 = r.get(0);
    let output: Option<String> = r.get(7);
    let code: String = r.get(8);
    Ok(Invocation {
        message_id: MessageId::from_u64(
            u64::try_from(id)
                .map_err(|_| StoreError::corrupt(format!("negative message id {id}")))?,
        ),
        iot_id: r.get(1),
        identifier: r.get(2),
        name: r.get(3),
        time_ms: r.get(4),
        mode: CallMode::parse(r.get(5))?,
        input: r.get(6),
        outcome: Outcome::parse(&code, output.is_some())?,
        output,
    })
}

// ----------------------------------------------------------------- cluster

/// The registry changes after `seq`, in order: (seq, entity, key, product
/// key, device name).
pub(super) async fn registry_log_after<C: GenericClient>(
    client: &C,
    seq: i64,
) -> Result<Vec<(i64, String, String, Option<String>, Option<String>)>, StoreError> {
    let rows = client
        .query(
            "SELECT seq, entity, key, product_key, device_name FROM registry_log
             WHERE seq > $1 ORDER BY seq LIMIT 10000",
            &[&seq],
        )
        .await
        .map_err(from_pg)?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect())
}

/// The newest registry change's number (0 when there is none).
pub(super) async fn registry_log_last<C: GenericClient>(client: &C) -> Result<i64, StoreError> {
    let row = client
        .query_one("SELECT COALESCE(MAX(seq), 0) FROM registry_log", &[])
        .await
        .map_err(from_pg)?;
    Ok(row.get(0))
}

/// One device as stored now.
pub(super) async fn device<C: GenericClient>(
    client: &C,
    iot_id: &str,
) -> Result<Option<Device>, StoreError> {
    let row = client
        .query_opt(
            &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE iot_id = $1"),
            &[&iot_id],
        )
        .await
        .map_err(from_pg)?;
    Ok(row.as_ref().map(row_to_device))
}

/// A device as stored now, by name.
pub(super) async fn device_by_name<C: GenericClient>(
    client: &C,
    product_key: &str,
    device_name: &str,
) -> Result<Option<Device>, StoreError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE product_key = $1 AND device_name = $2"
            ),
            &[&product_key, &device_name],
        )
        .await
        .map_err(from_pg)?;
    Ok(row.as_ref().map(row_to_device))
}

/// Whether a device name is tombstoned.
pub(super) async fn tombstoned<C: GenericClient>(
    client: &C,
    product_key: &str,
    device_name: &str,
) -> Result<bool, StoreError> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM tombstones WHERE product_key = $1 AND device_name = $2",
            &[&product_key, &device_name],
        )
        .await
        .map_err(from_pg)?
        .is_some())
}

/// One product as stored now, with its versions and modules, and the
/// tombstoned device names of the product.
pub(super) async fn product<C: GenericClient>(
    client: &C,
    product_key: &str,
) -> Result<(Option<Product>, Vec<String>), StoreError> {
    let tombstones: Vec<String> = client
        .query(
            "SELECT device_name FROM tombstones WHERE product_key = $1",
            &[&product_key],
        )
        .await
        .map_err(from_pg)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let product = products_where(client, Some(product_key)).await?.pop();
    Ok((product, tombstones))
}

/// One AccessKey as stored now.
pub(super) async fn access_key<C: GenericClient>(
    client: &C,
    id: &str,
) -> Result<Option<AccessKey>, StoreError> {
    let row = client
        .query_opt(
            &format!("SELECT {ACCESS_KEY_COLUMNS} FROM access_keys WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(from_pg)?;
    Ok(row.as_ref().map(row_to_access_key))
}
