//! `thingcall store copy`: moves a deployment from its SQLite data
//! directory into PostgreSQL: the registry (AccessKeys, products with every
//! version and module, devices with their state, tombstones) and every
//! invocation record, in message-id order.
//!
//! Secrets travel only sealed: they are opened with the source's key as
//! the source's registry is read, and sealed again, with the target's key
//! (the source's, unless another is given), as the target writes them;
//! the target keeps its key's id, so every server on it must have that key.

use std::path::Path;

use crate::store::postgres::{self, PostgresUrl};
use crate::store::sealed::{self, SecretsKeySource};
use crate::store::sqlite;
use crate::store::{Change, OnCommit, Records, Registry, StoreError};

/// How far a copy has come: `done` of `total` in the named stage.
#[derive(Clone, Copy, Debug)]
pub struct CopyProgress {
    /// `registry` or `records`.
    pub stage: &'static str,
    /// Items copied in this stage.
    pub done: u64,
    /// Items this stage copies.
    pub total: u64,
}

/// What a copy moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopySummary {
    /// AccessKeys.
    pub access_keys: u64,
    /// Products.
    pub products: u64,
    /// Devices.
    pub devices: u64,
    /// Invocation records.
    pub records: u64,
}

/// Records copied per round trip.
const PAGE: usize = 2_000;

/// Where `store copy` finds the keys of its two stores.
#[derive(Clone, Debug, Default)]
pub struct CopyKeys {
    /// The source's key (by default the source's `secrets.key`).
    pub from: SecretsKeySource,
    /// The target's key; `None`: the source's. (`DataDir` names the
    /// source's data directory here.)
    pub to: Option<SecretsKeySource>,
}

/// Copies the SQLite store in `from` into the PostgreSQL database `to`,
/// its secrets sealed again with the target's key (see [`CopyKeys`]).
/// A target that holds anything is refused unless `force`, which empties
/// it first. The source is opened like a server would open it (its journal
/// is replayed; a store of an earlier release is sealed), so no server may
/// be running on it.
pub async fn copy_store(
    from: &Path,
    keys: &CopyKeys,
    to: &PostgresUrl,
    force: bool,
    mut progress: impl FnMut(CopyProgress),
) -> Result<CopySummary, StoreError> {
    if !from.join("thingcall.db").exists() {
        return Err(StoreError::new(
            crate::StoreErrorKind::NotFound,
            format!("{} holds no thingcall store", from.display()),
        ));
    }
    let source = sqlite::Store::open_with(from, &keys.from)?;
    let target_key = match &keys.to {
        Some(k) => sealed::load(k, from)?.ok_or_else(|| {
            StoreError::new(
                crate::StoreErrorKind::NotFound,
                format!(
                    "{} holds no secrets key for the target",
                    from.join(sealed::KEY_FILE).display()
                ),
            )
        })?,
        None => source.key().clone(),
    };
    postgres::Store::prepare_target(to, force).await?;
    let target = postgres::Store::connect(to, Some(target_key), from).await?;
    let snapshot = source.load().await?;
    let mut changes = Vec::new();
    let now = snapshot
        .devices
        .iter()
        .map(|d| d.status_ms)
        .max()
        .unwrap_or(0);
    let summary_registry = (
        snapshot.access_keys.len() as u64,
        snapshot.products.len() as u64,
        snapshot.devices.len() as u64,
    );
    for key in snapshot.access_keys {
        changes.push(Change::PutAccessKey { key, at: now });
    }
    for p in snapshot.products {
        let drafts: Vec<(String, String)> = p.modules.clone().into_iter().collect();
        let product_key = p.product_key.clone();
        changes.push(Change::InsertProduct(p));
        for (block, tsl) in drafts {
            // A module's draft names itself in its profile.
            let name = serde_json::from_str::<serde_json::Value>(&tsl)
                .ok()
                .and_then(|v| {
                    v["profile"]["functionBlockName"]
                        .as_str()
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| block.clone());
            changes.push(Change::SetDraft {
                product_key: product_key.clone(),
                module: Some((block, name)),
                tsl,
            });
        }
    }
    // Tombstones first (registering a device clears its own): the delete
    // of a device that is gone already writes only the tombstone.
    for (product_key, device_name) in snapshot.tombstones {
        changes.push(Change::DeleteDevice {
            iot_id: String::new(),
            product_key,
            device_name,
            at: now,
        });
    }
    for d in snapshot.devices {
        changes.push(Change::InsertDevice(d));
    }
    let total = changes.len() as u64;
    let mut pending = Vec::with_capacity(changes.len());
    for change in changes {
        let nothing: OnCommit = Box::new(|_, _| {});
        pending.push(target.apply(change, nothing)?);
    }
    for (i, p) in pending.into_iter().enumerate() {
        p.wait().await?;
        if i % 500 == 499 || i as u64 + 1 == total {
            progress(CopyProgress {
                stage: "registry",
                done: i as u64 + 1,
                total,
            });
        }
    }
    let total = source.count_records().await?;
    let mut done = 0u64;
    let mut after = 0i64;
    loop {
        let page = source.records_after(after, PAGE).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = i64::try_from(last.message_id.get()).unwrap_or(i64::MAX);
        let n = page.len() as u64;
        let writes = page
            .into_iter()
            .map(|r| target.record(r))
            .collect::<Result<Vec<_>, _>>()?;
        for w in writes {
            w.wait().await?;
        }
        done += n;
        progress(CopyProgress {
            stage: "records",
            done,
            total,
        });
    }
    Records::close(&target).await;
    source.close();
    Ok(CopySummary {
        access_keys: summary_registry.0,
        products: summary_registry.1,
        devices: summary_registry.2,
        records: done,
    })
}
