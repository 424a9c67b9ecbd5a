//! The SQL of the SQLite store: start-up load, registry changes, and
//! invocation records.
//!
//! Secrets are stored sealed (`store/sealed.rs`): the store seals a
//! change's secret before it reaches [`apply_change`], and opens what
//! [`load`] read; the writes here refuse a secret that is not sealed, so a
//! path that forgot to seal fails instead of writing plaintext.

use std::collections::HashMap;

use rusqlite::{Connection, params};
use thingcall_core::MessageId;

use crate::store::sealed::{Column, SecretsKey};
use crate::store::{
    AccessKey, CallMode, Change, Completion, Device, Invocation, ModelVersion, Outcome, Product,
    Snapshot, StoreError,
};

/// Runs a query without parameters and maps every row.
fn all<T>(
    conn: &Connection,
    sql: &str,
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    conn.prepare(sql)?.query_map([], row)?.collect()
}

pub(crate) fn load(conn: &Connection) -> rusqlite::Result<Snapshot> {
    let access_keys = all(conn, "SELECT id, secret, enabled FROM access_keys", |r| {
        Ok(AccessKey {
            id: r.get(0)?,
            secret: r.get::<_, String>(1)?.into(),
            enabled: r.get(2)?,
        })
    })?;
    let sql = "SELECT product_key, product_name, product_secret, description, node_type, data_format, commodity_code,
                auth_type, protocol_type, net_type, category_key, validate_type, created_ms, draft_tsl FROM products";
    let mut products = all(conn, sql, |r| {
        Ok(Product {
            product_key: r.get(0)?,
            product_name: r.get(1)?,
            product_secret: r.get::<_, String>(2)?.into(),
            description: r.get(3)?,
            node_type: r.get(4)?,
            data_format: r.get(5)?,
            commodity_code: r.get(6)?,
            auth_type: r.get(7)?,
            protocol_type: r.get(8)?,
            net_type: r.get(9)?,
            category_key: r.get(10)?,
            validate_type: r.get(11)?,
            created_ms: r.get(12)?,
            draft_tsl: r.get(13)?,
            versions: Vec::new(),
            modules: Default::default(),
        })
    })?;
    let versions = all(
        conn,
        "SELECT product_key, version, description, tsl, created_ms, seq FROM model_versions ORDER BY seq",
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                ModelVersion {
                    version: r.get(1)?,
                    description: r.get(2)?,
                    tsl: r.get(3)?,
                    created_ms: r.get(4)?,
                    seq: r.get(5)?,
                    modules: Default::default(),
                },
            ))
        },
    )?;
    // Rows are attached to their product through an index, so start-up
    // stays linear in the number of products.
    let by_key: HashMap<String, usize> = products
        .iter()
        .enumerate()
        .map(|(i, p)| (p.product_key.clone(), i))
        .collect();
    for (pk, v) in versions {
        if let Some(&i) = by_key.get(&pk) {
            products[i].versions.push(v);
        }
    }
    let modules = all(
        conn,
        "SELECT product_key, block_id, draft_tsl FROM modules",
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        },
    )?;
    for (pk, block, m) in modules {
        if let Some(&i) = by_key.get(&pk) {
            products[i].modules.insert(block, m);
        }
    }
    let module_versions = all(
        conn,
        "SELECT product_key, version, block_id, tsl FROM module_versions",
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        },
    )?;
    for (pk, version, block, tsl) in module_versions {
        if let Some(v) = by_key.get(&pk).and_then(|&i| {
            products[i]
                .versions
                .iter_mut()
                .find(|v| v.version == version)
        }) {
            v.modules.insert(block, tsl);
        }
    }
    let sql = "SELECT iot_id, product_key, device_name, device_secret, nickname, enabled, created_ms, activated_ms,
                online_ms, status_ms, ip_address FROM devices";
    let devices = all(conn, sql, |r| {
        Ok(Device {
            iot_id: r.get(0)?,
            product_key: r.get(1)?,
            device_name: r.get(2)?,
            device_secret: r.get::<_, String>(3)?.into(),
            nickname: r.get(4)?,
            enabled: r.get(5)?,
            created_ms: r.get(6)?,
            activated_ms: r.get(7)?,
            online_ms: r.get(8)?,
            status_ms: r.get(9)?,
            ip_address: r.get(10)?,
            online: false,
        })
    })?;
    let tombstones = all(
        conn,
        "SELECT product_key, device_name FROM tombstones",
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let last_message_id = conn
        .query_row("SELECT MAX(message_id) FROM invocations", [], |r| {
            r.get::<_, Option<i64>>(0)
        })?
        .and_then(|id| u64::try_from(id).ok());
    Ok(Snapshot {
        access_keys,
        products,
        devices,
        tombstones,
        last_message_id,
    })
}

/// Refuses a secret that is not sealed.
fn sealed_only(value: &str) -> rusqlite::Result<&str> {
    if crate::store::sealed::is_sealed(value) {
        Ok(value)
    } else {
        Err(rusqlite::Error::ToSqlConversionFailure(
            "a secret reached the store unsealed".into(),
        ))
    }
}

pub(crate) fn insert_access_key(
    conn: &Connection,
    k: &AccessKey,
    now: i64,
) -> rusqlite::Result<()> {
    sealed_only(k.secret.expose())?;
    conn.execute(
        "INSERT INTO access_keys (id, secret, enabled, created_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(id) DO UPDATE SET secret = excluded.secret, enabled = excluded.enabled",
        params![k.id, k.secret.expose(), k.enabled, now],
    )?;
    Ok(())
}

pub(crate) fn insert_product(conn: &Connection, p: &Product) -> rusqlite::Result<()> {
    sealed_only(p.product_secret.expose())?;
    conn.execute(
        "INSERT INTO products (product_key, product_name, product_secret, description, node_type, data_format,
             commodity_code, auth_type, protocol_type, net_type, category_key, validate_type, created_ms, draft_tsl)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        params![
            p.product_key,
            p.product_name,
            p.product_secret.expose(),
            p.description,
            p.node_type,
            p.data_format,
            p.commodity_code,
            p.auth_type,
            p.protocol_type,
            p.net_type,
            p.category_key,
            p.validate_type,
            p.created_ms,
            p.draft_tsl
        ],
    )?;
    for v in &p.versions {
        insert_version(conn, &p.product_key, v)?;
    }
    Ok(())
}

pub(crate) fn delete_product(
    conn: &Connection,
    product_key: &str,
    now: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO tombstones (product_key, device_name, deleted_ms)
         SELECT product_key, device_name, ?2 FROM devices WHERE product_key = ?1",
        params![product_key, now],
    )?;
    conn.execute(
        "DELETE FROM products WHERE product_key = ?1",
        params![product_key],
    )?;
    Ok(())
}

pub(crate) fn set_draft(conn: &Connection, product_key: &str, tsl: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE products SET draft_tsl = ?2 WHERE product_key = ?1",
        params![product_key, tsl],
    )?;
    Ok(())
}

pub(crate) fn insert_version(
    conn: &Connection,
    product_key: &str,
    v: &ModelVersion,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO model_versions (product_key, version, description, tsl, created_ms, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![product_key, v.version, v.description, v.tsl, v.created_ms, v.seq],
    )?;
    for (block, tsl) in &v.modules {
        conn.execute(
            "INSERT INTO module_versions (product_key, version, block_id, tsl) VALUES (?1, ?2, ?3, ?4)",
            params![product_key, v.version, block, tsl],
        )?;
    }
    Ok(())
}

/// Creates or replaces a custom module's draft.
pub(crate) fn set_module_draft(
    conn: &Connection,
    product_key: &str,
    block_id: &str,
    name: &str,
    tsl: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO modules (product_key, block_id, block_name, draft_tsl) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(product_key, block_id) DO UPDATE SET block_name = excluded.block_name, draft_tsl = excluded.draft_tsl",
        params![product_key, block_id, name, tsl],
    )?;
    Ok(())
}

pub(crate) fn prune_versions(
    conn: &Connection,
    product_key: &str,
    keep: usize,
) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM model_versions WHERE product_key = ?1 AND seq NOT IN
            (SELECT seq FROM model_versions WHERE product_key = ?1 ORDER BY seq DESC LIMIT ?2)",
        params![product_key, keep as i64],
    )?;
    Ok(())
}

pub(crate) fn insert_device(conn: &Connection, d: &Device) -> rusqlite::Result<()> {
    sealed_only(d.device_secret.expose())?;
    conn.execute(
        "DELETE FROM tombstones WHERE product_key = ?1 AND device_name = ?2",
        params![d.product_key, d.device_name],
    )?;
    conn.execute(
        "INSERT INTO devices (iot_id, product_key, device_name, device_secret, nickname, enabled, created_ms,
             activated_ms, online_ms, status_ms, ip_address)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            d.iot_id,
            d.product_key,
            d.device_name,
            d.device_secret.expose(),
            d.nickname,
            d.enabled,
            d.created_ms,
            d.activated_ms,
            d.online_ms,
            d.status_ms,
            d.ip_address
        ],
    )?;
    Ok(())
}

pub(crate) fn delete_device(
    conn: &Connection,
    iot_id: &str,
    product_key: &str,
    device_name: &str,
    now: i64,
) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM devices WHERE iot_id = ?1", params![iot_id])?;
    conn.execute(
        "INSERT OR REPLACE INTO tombstones (product_key, device_name, deleted_ms) VALUES (?1, ?2, ?3)",
        params![product_key, device_name, now],
    )?;
    Ok(())
}

/// Enables or disables a device: `enabled` and the status time only.
pub(crate) fn set_enabled(
    conn: &Connection,
    iot_id: &str,
    enabled: bool,
    at: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE devices SET enabled = ?2, status_ms = ?3 WHERE iot_id = ?1")?
        .execute(params![iot_id, enabled, at])?;
    Ok(())
}

/// A presence change: the status time, and for a login the first
/// activation, the last online time and the address. Never `enabled`.
pub(crate) fn set_presence(
    conn: &Connection,
    iot_id: &str,
    online: bool,
    at: i64,
    ip_address: Option<&str>,
) -> rusqlite::Result<()> {
    if online {
        conn.prepare_cached(
            "UPDATE devices SET activated_ms = COALESCE(activated_ms, ?2), online_ms = ?2,
                 status_ms = ?2, ip_address = ?3 WHERE iot_id = ?1",
        )?
        .execute(params![iot_id, at, ip_address])?;
    } else {
        conn.prepare_cached("UPDATE devices SET status_ms = ?2 WHERE iot_id = ?1")?
            .execute(params![iot_id, at])?;
    }
    Ok(())
}

/// A message id as the integer key it is stored under (ids above
/// `i64::MAX` name no record: a device can send any digits).
pub(crate) fn message_key(id: MessageId) -> Option<i64> {
    i64::try_from(id.get()).ok()
}

/// Stores a record unless one with its message id exists (returns whether
/// it was stored).
pub(crate) fn insert_invocation(conn: &Connection, i: &Invocation) -> rusqlite::Result<bool> {
    let Some(key) = message_key(i.message_id) else {
        return Err(rusqlite::Error::ToSqlConversionFailure(
            "a message id beyond the integer key range".into(),
        ));
    };
    let mut stmt = conn.prepare_cached(
        "INSERT OR IGNORE INTO invocations (message_id, iot_id, identifier, name, time_ms, mode, input, output, code)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    stmt.execute(params![
        key,
        i.iot_id,
        i.identifier,
        i.name,
        i.time_ms,
        i.mode.as_str(),
        i.input,
        i.output,
        i.outcome.to_stored()
    ])
    .map(|n| n > 0)
}

/// Sets the outcome of an invocation of the completion's device; false
/// when that device has no record with this message id (an id of another
/// device's call completes nothing). A completion without a device (from a
/// journal of an earlier release) matches any device.
pub(crate) fn complete_invocation(conn: &Connection, c: &Completion) -> rusqlite::Result<bool> {
    let Some(key) = message_key(c.message_id) else {
        return Ok(false);
    };
    let mut stmt = conn.prepare_cached(
        "UPDATE invocations SET output = COALESCE(?2, output), code = ?3
         WHERE message_id = ?1 AND (?4 IS NULL OR iot_id = ?4)",
    )?;
    Ok(stmt.execute(params![key, c.output, c.outcome.to_stored(), c.iot_id])? > 0)
}

fn row_to_invocation(r: &rusqlite::Row<'_>) -> rusqlite::Result<Invocation> {
    let bad = |i: usize, e: StoreError| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    };
    let id: i64 = r.get(0)?;
    let output: Option<String> = r.get(7)?;
    let code: String = r.get(8)?;
    Ok(Invocation {
        message_id: MessageId::from_u64(
            u64::try_from(id)
                .map_err(|_| bad(0, StoreError::corrupt(format!("negative message id {id}"))))?,
        ),
        iot_id: r.get(1)?,
        identifier: r.get(2)?,
        name: r.get(3)?,
        time_ms: r.get(4)?,
        mode: CallMode::parse(&r.get::<_, String>(5)?).map_err(|e| bad(5, e))?,
        input: r.get(6)?,
        outcome: Outcome::parse(&code, output.is_some()).map_err(|e| bad(8, e))?,
        output,
    })
}

/// Invocations of one device in `[from, to]`, ordered, at most `limit`.
pub(crate) fn invocations(
    conn: &Connection,
    iot_id: &str,
    from: i64,
    to: i64,
    identifier: Option<&str>,
    ascending: bool,
    limit: usize,
) -> rusqlite::Result<Vec<Invocation>> {
    let order = if ascending { "ASC" } else { "DESC" };
    let sql = format!(
        "SELECT message_id, iot_id, identifier, name, time_ms, mode, input, output, code FROM invocations
         WHERE iot_id = ?1 AND time_ms BETWEEN ?2 AND ?3 AND (?4 IS NULL OR identifier = ?4)
         ORDER BY time_ms {order}, message_id {order} LIMIT ?5"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![iot_id, from, to, identifier, limit as i64],
        row_to_invocation,
    )?;
    rows.collect()
}

/// Records in message-id order after `after`, at most `limit` (for
/// copying a store).
pub(crate) fn invocations_after(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> rusqlite::Result<Vec<Invocation>> {
    let mut stmt = conn.prepare_cached(
        "SELECT message_id, iot_id, identifier, name, time_ms, mode, input, output, code FROM invocations
         WHERE message_id > ?1 ORDER BY message_id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after, limit as i64], row_to_invocation)?;
    rows.collect()
}

/// Runs one registry change's statements.
pub(crate) fn apply_change(conn: &Connection, change: &Change) -> rusqlite::Result<()> {
    match change {
        Change::PutAccessKey { key, at } => insert_access_key(conn, key, *at),
        Change::InsertProduct(p) => insert_product(conn, p),
        Change::DeleteProduct { product_key, at } => delete_product(conn, product_key, *at),
        Change::SetDraft {
            product_key,
            module,
            tsl,
        } => match module {
            Some((id, name)) => set_module_draft(conn, product_key, id, name, tsl),
            None => set_draft(conn, product_key, tsl),
        },
        Change::Publish {
            product_key,
            version,
            keep,
        } => {
            insert_version(conn, product_key, version)?;
            prune_versions(conn, product_key, *keep)
        }
        Change::InsertDevice(d) => insert_device(conn, d),
        Change::DeleteDevice {
            iot_id,
            product_key,
            device_name,
            at,
        } => delete_device(conn, iot_id, product_key, device_name, *at),
        Change::SetEnabled {
            iot_id,
            enabled,
            at,
        } => set_enabled(conn, iot_id, *enabled, *at),
        Change::Presence {
            iot_id,
            online,
            at,
            ip_address,
        } => set_presence(conn, iot_id, *online, *at, ip_address.as_deref()),
    }
}

/// Seals every secret of the store (AccessKeys, products, devices) in
/// place: for a store that keeps no key id yet, whose secrets are all
/// plaintext. Returns how many were sealed.
pub(crate) fn seal_plaintext(conn: &Connection, key: &SecretsKey) -> rusqlite::Result<usize> {
    let mut sealed = 0;
    let keys: Vec<(String, String)> = all(conn, "SELECT id, secret FROM access_keys", |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    for (id, secret) in keys {
        let value = key.seal(Column::AccessKey, &[&id], &secret);
        sealed += conn.execute(
            "UPDATE access_keys SET secret = ?2 WHERE id = ?1",
            params![id, value],
        )?;
    }
    let products: Vec<(String, String)> = all(
        conn,
        "SELECT product_key, product_secret FROM products",
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    for (pk, secret) in products {
        let value = key.seal(Column::Product, &[&pk], &secret);
        sealed += conn.execute(
            "UPDATE products SET product_secret = ?2 WHERE product_key = ?1",
            params![pk, value],
        )?;
    }
    let devices: Vec<(String, String, String, String)> = all(
        conn,
        "SELECT iot_id, product_key, device_name, device_secret FROM devices",
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    for (iot, pk, dn, secret) in devices {
        let value = key.seal(Column::Device, &[&iot, &pk, &dn], &secret);
        sealed += conn.execute(
            "UPDATE devices SET device_secret = ?2 WHERE iot_id = ?1",
            params![iot, value],
        )?;
    }
    Ok(sealed)
}
