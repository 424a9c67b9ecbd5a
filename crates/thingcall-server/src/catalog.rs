//! The in-memory mirror of the registry: access keys, products, thing-model
//! versions and devices.
//!
//! Every change is a [`Change`], written to the store first and applied
//! here by [`Catalog::apply`] after the commit, in the store's commit order
//! (the store calls back from its writer), so the mirror never shows what
//! the store does not hold and never applies two changes in another order
//! than the store did. The hot path (signature checks, device resolution,
//! CONNECT authentication) reads only this mirror.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use thingcall_core::{DeviceRef, UnixMillis};
use thingcall_gateway::{DeviceLookup, DeviceRegistry, RegistryError};
use thingcall_sign::policy::{KeyState, KeyStore};
use thingcall_transport::DeviceKey;
use thingcall_tsl::{CompiledModel, ModelCache, check_str};
use thingcall_wire::actions::DeviceStatus;

use crate::store::{
    AccessKey, Change, Device, LogPosition, LoggedChange, Product, Snapshot, Stored,
};

/// The mirror, shared by the engine, the handlers and the gateway's
/// device authentication.
pub(crate) type SharedCatalog = Arc<RwLock<Catalog>>;

/// Read access; a lock poisoned by a panicking thread still holds a
/// consistent mirror (every change is applied whole).
pub(crate) fn read(c: &SharedCatalog) -> RwLockReadGuard<'_, Catalog> {
    match c.read() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Write access (see [`read`]).
pub(crate) fn write(c: &SharedCatalog) -> RwLockWriteGuard<'_, Catalog> {
    match c.write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The gateway authenticates devices against the mirror, and checks what
/// they post against the published models (compiled in the engine's cache).
pub(crate) struct CatalogRegistry {
    pub(crate) catalog: SharedCatalog,
    pub(crate) models: Arc<ModelCache>,
}

#[async_trait]
impl DeviceRegistry for CatalogRegistry {
    async fn lookup(&self, device: &DeviceKey) -> Result<DeviceLookup, RegistryError> {
        let c = read(&self.catalog);
        let (pk, dn) = (device.product_key.as_str(), device.device_name.as_str());
        Ok(match c.device_by_name(pk, dn) {
            Some(d) => DeviceLookup::Found {
                secret: d.device_secret.clone(),
                enabled: d.enabled,
            },
            None if c.tombstones.contains(&(pk.to_owned(), dn.to_owned())) => DeviceLookup::Deleted,
            None => DeviceLookup::Unknown,
        })
    }

    fn model(&self, product: &thingcall_core::ProductKey) -> Option<Arc<CompiledModel>> {
        compile_published(&self.catalog, &self.models, product.as_str(), None)
            .ok()
            .flatten()
    }
}

/// Signatures are checked against the mirror's AccessKeys.
pub(crate) struct CatalogKeys<'a>(pub(crate) &'a SharedCatalog);

impl KeyStore for CatalogKeys<'_> {
    fn lookup(&self, access_key_id: &str) -> Option<KeyState> {
        read(self.0)
            .access_keys
            .get(access_key_id)
            .map(|k| KeyState {
                secret: k.secret.clone(),
                active: k.enabled,
            })
    }
}

/// The status the API reports for a device.
pub(crate) fn status(d: &Device) -> DeviceStatus {
    if !d.enabled {
        DeviceStatus::Disable
    } else if d.online {
        DeviceStatus::Online
    } else if d.activated_ms.is_none() {
        DeviceStatus::Unactive
    } else {
        DeviceStatus::Offline
    }
}

/// The mirror.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    pub(crate) access_keys: HashMap<String, AccessKey>,
    pub(crate) products: HashMap<String, Product>,
    pub(crate) devices: HashMap<String, Device>,
    pub(crate) by_name: HashMap<(String, String), String>,
    pub(crate) tombstones: HashSet<(String, String)>,
    /// In a cluster: the registry-log entry each entity is held as of
    /// (entities not listed are as of `log_base`, the log's end when the
    /// mirror was loaded). A re-read as of an older entry is stale and is
    /// not applied, so the mirror never goes back.
    log_seen: HashMap<(&'static str, String), i64>,
    log_base: i64,
}

/// What applying a change took out of the mirror, for the caller to act on
/// (close sessions, evict compiled models).
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Devices removed (a deleted device, or a deleted product's devices).
    pub(crate) removed: Vec<Device>,
    /// A product whose published versions changed: the versions it keeps,
    /// by sequence number (none when the product was deleted).
    pub(crate) versions: Option<(String, Vec<i64>)>,
}

/// Why a device reference did not resolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unresolved {
    NoProduct,
    NoDevice,
}

impl Catalog {
    /// The mirror of a store's contents.
    pub(crate) fn from_snapshot(s: Snapshot) -> Catalog {
        let mut c = Catalog::default();
        for k in s.access_keys {
            c.access_keys.insert(k.id.clone(), k);
        }
        for p in s.products {
            c.products.insert(p.product_key.clone(), p);
        }
        for d in s.devices {
            c.insert_device(d);
        }
        c.tombstones = s.tombstones.into_iter().collect();
        c
    }

    /// Applies a committed change.
    /// The mirror was loaded with the registry log read up to `seq`.
    pub(crate) fn set_log_base(&mut self, seq: i64) {
        self.log_base = seq;
    }

    fn log_seen(&self, entity: &'static str, key: &str) -> i64 {
        self.log_seen
            .get(&(entity, key.to_owned()))
            .copied()
            .unwrap_or(self.log_base)
    }

    /// Applies a change this node committed. In a cluster, the entity is
    /// then as of the change's log entry, if the mirror held it as of the
    /// entry before; else (another node's change in between has not been
    /// re-read yet) it stays as of what it was, so that re-read applies.
    pub(crate) fn apply_local(
        &mut self,
        change: &Change,
        position: Option<LogPosition>,
    ) -> Applied {
        if let (Some(p), Some((entity, key))) = (position, crate::store::logged_entity(change))
            && self.log_seen(entity, key) >= p.previous
        {
            self.log_seen.insert((entity, key.to_owned()), p.seq);
        }
        self.apply(change)
    }

    /// Applies what another node's change left stored, unless the mirror
    /// holds the entity as of that entry or a later one (a re-read that
    /// raced this node's own later change).
    pub(crate) fn refresh_logged(&mut self, logged: &LoggedChange) -> Applied {
        let (entity, key) = match &logged.now {
            Stored::Device { iot_id, .. } => ("device", iot_id.as_str()),
            Stored::Product { product_key, .. } => ("product", product_key.as_str()),
            Stored::AccessKey { id, .. } => ("access_key", id.as_str()),
        };
        if self.log_seen(entity, key) >= logged.as_of {
            return Applied::default();
        }
        self.log_seen.insert((entity, key.to_owned()), logged.as_of);
        self.refresh(&logged.now)
    }

    pub(crate) fn apply(&mut self, change: &Change) -> Applied {
        let mut applied = Applied::default();
        match change {
            Change::PutAccessKey { key, .. } => {
                self.access_keys.insert(key.id.clone(), key.clone());
            }
            Change::InsertProduct(p) => {
                self.products.insert(p.product_key.clone(), p.clone());
            }
            Change::DeleteProduct { product_key, .. } => {
                self.products.remove(product_key);
                for id in self.devices_of(product_key) {
                    applied.removed.extend(self.remove_device(&id));
                }
                applied.versions = Some((product_key.clone(), Vec::new()));
            }
            Change::SetDraft {
                product_key,
                module,
                tsl,
            } => {
                if let Some(p) = self.products.get_mut(product_key) {
                    match module {
                        Some((id, _)) => {
                            p.modules.insert(id.clone(), tsl.clone());
                        }
                        None => p.draft_tsl.clone_from(tsl),
                    }
                }
            }
            Change::Publish {
                product_key,
                version,
                keep,
            } => {
                if let Some(p) = self.products.get_mut(product_key) {
                    p.versions.push(version.clone());
                    let excess = p.versions.len().saturating_sub(*keep);
                    p.versions.drain(..excess);
                    let kept = p.versions.iter().map(|v| v.seq).collect();
                    applied.versions = Some((product_key.clone(), kept));
                }
            }
            Change::InsertDevice(d) => self.insert_device(d.clone()),
            Change::DeleteDevice { iot_id, .. } => {
                applied.removed.extend(self.remove_device(iot_id));
            }
            Change::SetEnabled {
                iot_id,
                enabled,
                at,
            } => {
                if let Some(d) = self.devices.get_mut(iot_id) {
                    d.enabled = *enabled;
                    d.status_ms = *at;
                }
            }
            Change::Presence {
                iot_id,
                online,
                at,
                ip_address,
            } => {
                if let Some(d) = self.devices.get_mut(iot_id) {
                    d.online = *online;
                    d.status_ms = *at;
                    if *online {
                        d.activated_ms.get_or_insert(*at);
                        d.online_ms = Some(*at);
                        d.ip_address.clone_from(ip_address);
                    }
                }
            }
        }
        applied
    }

    /// Makes the mirror hold what the shared store holds now for one entity
    /// (another node of a cluster changed it). A device keeps the presence
    /// the mirror knows of it (presence travels between nodes as events).
    pub(crate) fn refresh(&mut self, stored: &Stored) -> Applied {
        let mut applied = Applied::default();
        match stored {
            Stored::Device {
                iot_id,
                device: Some(d),
                ..
            } => {
                let mut d = d.clone();
                if let Some(known) = self.devices.get(iot_id) {
                    // Presence travels as events, ahead of the store: keep
                    // what the mirror knows when it is newer.
                    d.online = known.online;
                    d.activated_ms = match (d.activated_ms, known.activated_ms) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    if known.online_ms > d.online_ms {
                        d.online_ms = known.online_ms;
                        d.ip_address.clone_from(&known.ip_address);
                    }
                    d.status_ms = d.status_ms.max(known.status_ms);
                }
                self.insert_device(d);
            }
            Stored::Device {
                iot_id,
                device: None,
                tombstone,
            } => {
                applied.removed.extend(self.remove_device(iot_id));
                if let Some((pk, dn)) = tombstone {
                    self.tombstones.insert((pk.clone(), dn.clone()));
                }
            }
            Stored::Product {
                product_key,
                product,
                tombstones,
            } => {
                match product {
                    Some(p) => {
                        let kept = p.versions.iter().map(|v| v.seq).collect();
                        self.products.insert(product_key.clone(), p.clone());
                        applied.versions = Some((product_key.clone(), kept));
                    }
                    None => {
                        self.products.remove(product_key);
                        for id in self.devices_of(product_key) {
                            applied.removed.extend(self.remove_device(&id));
                        }
                        applied.versions = Some((product_key.clone(), Vec::new()));
                    }
                }
                for dn in tombstones {
                    if self.device_by_name(product_key, dn).is_none() {
                        self.tombstones.insert((product_key.clone(), dn.clone()));
                    }
                }
            }
            Stored::AccessKey { id, access_key } => match access_key {
                Some(k) => {
                    self.access_keys.insert(id.clone(), k.clone());
                }
                None => {
                    self.access_keys.remove(id);
                }
            },
        }
        applied
    }

    pub(crate) fn insert_device(&mut self, d: Device) {
        self.tombstones
            .remove(&(d.product_key.clone(), d.device_name.clone()));
        self.by_name.insert(
            (d.product_key.clone(), d.device_name.clone()),
            d.iot_id.clone(),
        );
        self.devices.insert(d.iot_id.clone(), d);
    }

    pub(crate) fn remove_device(&mut self, iot_id: &str) -> Option<Device> {
        let d = self.devices.remove(iot_id)?;
        self.by_name
            .remove(&(d.product_key.clone(), d.device_name.clone()));
        self.tombstones
            .insert((d.product_key.clone(), d.device_name.clone()));
        Some(d)
    }

    pub(crate) fn device_by_name(&self, pk: &str, dn: &str) -> Option<&Device> {
        self.by_name
            .get(&(pk.to_owned(), dn.to_owned()))
            .and_then(|id| self.devices.get(id))
    }

    /// Resolves a device reference (IotId wins).
    pub(crate) fn resolve(&self, r: &DeviceRef) -> Result<&Device, Unresolved> {
        match r {
            DeviceRef::IotId(id) => self.devices.get(id.as_str()).ok_or(Unresolved::NoDevice),
            DeviceRef::Name {
                product_key,
                device_name,
            } => {
                if !self.products.contains_key(product_key.as_str()) {
                    return Err(Unresolved::NoProduct);
                }
                self.device_by_name(product_key.as_str(), device_name.as_str())
                    .ok_or(Unresolved::NoDevice)
            }
        }
    }

    pub(crate) fn devices_of(&self, product_key: &str) -> Vec<String> {
        self.devices
            .values()
            .filter(|d| d.product_key == product_key)
            .map(|d| d.iot_id.clone())
            .collect()
    }
}

/// The current time in the two formats QueryDeviceDetail uses.
pub(crate) fn gmt_utc(ms: i64) -> (String, String) {
    let t = UnixMillis::new(ms);
    (t.to_gmt8(), t.to_iso8601_millis())
}

/// Why a product has no compiled model.
pub(crate) enum Unpublished {
    /// No such product.
    NoProduct,
    /// The published text does not compile (it passed the checker when it
    /// was imported, so this is an internal fault).
    Broken(thingcall_tsl::CompileError),
}

/// The compiled published model of one module of a product (`None`: the
/// default module; `Ok(None)`: nothing published), compiled once per
/// (product, version, module) in `models`. The engine checks calls with
/// it, the gateway what devices post.
pub(crate) fn compile_published(
    catalog: &SharedCatalog,
    models: &ModelCache,
    product_key: &str,
    block: Option<&str>,
) -> Result<Option<Arc<CompiledModel>>, Unpublished> {
    // The catalog stays read-locked while the cache is consulted, so a hit
    // borrows the model text instead of copying it; only a miss (the first
    // call of a version) compiles, still under the read lock.
    let c = read(catalog);
    let Some(p) = c.products.get(product_key) else {
        return Err(Unpublished::NoProduct);
    };
    let Some(v) = p.published() else {
        return Ok(None);
    };
    let tsl = match block {
        None => v.tsl.as_str(),
        Some(b) => match v.modules.get(b) {
            Some(tsl) => tsl.as_str(),
            None => return Ok(None),
        },
    };
    // Keyed by the version's sequence number, which is never reused: a
    // version name published again after pruning is another model.
    let seq = u64::try_from(v.seq).unwrap_or(0);
    models
        .get_or_compile(product_key, seq, block, || {
            check_str(tsl).map_err(|p| thingcall_tsl::CompileError(format!("{} problems", p.len())))
        })
        .map(Some)
        .map_err(Unpublished::Broken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Device, Snapshot};

    fn device(activated: Option<i64>, online_ms: Option<i64>, status_ms: i64) -> Device {
        Device {
            iot_id: "iot-1".into(),
            product_key: "a1Product01".into(),
            device_name: "dev-1".into(),
            device_secret: "s".into(),
            nickname: None,
            enabled: true,
            created_ms: 1,
            activated_ms: activated,
            online_ms,
            status_ms,
            ip_address: online_ms.map(|_| "10.0.0.9".to_owned()),
            online: false,
        }
    }

    /// A node hears of a login (an event) before the store has it; a
    /// registry entry about the same device re-read from the store later
    /// must not make the device inactive or offline again.
    #[test]
    fn a_refresh_keeps_presence_that_is_newer_than_the_store() {
        let mut catalog = Catalog::from_snapshot(Snapshot {
            devices: vec![device(None, None, 1)],
            ..Snapshot::default()
        });
        catalog.apply(&Change::Presence {
            iot_id: "iot-1".into(),
            online: true,
            at: 50,
            ip_address: Some("10.0.0.7".into()),
        });
        catalog.refresh(&Stored::Device {
            iot_id: "iot-1".into(),
            device: Some(Device {
                nickname: Some("renamed".into()),
                ..device(None, None, 40)
            }),
            tombstone: None,
        });
        let d = catalog.device_by_name("a1Product01", "dev-1").unwrap();
        assert!(d.online);
        assert_eq!(d.activated_ms, Some(50));
        assert_eq!(d.online_ms, Some(50));
        assert_eq!(d.ip_address.as_deref(), Some("10.0.0.7"));
        assert_eq!(d.status_ms, 50);
        assert_eq!(
            d.nickname.as_deref(),
            Some("renamed"),
            "the rest comes from the store"
        );

        // A store that is ahead (a disable at 60) wins where it is newer.
        catalog.refresh(&Stored::Device {
            iot_id: "iot-1".into(),
            device: Some(Device {
                enabled: false,
                ..device(Some(50), Some(50), 60)
            }),
            tombstone: None,
        });
        let d = catalog.device_by_name("a1Product01", "dev-1").unwrap();
        assert!(!d.enabled);
        assert_eq!(d.status_ms, 60);
    }

    fn product(draft: &str) -> Product {
        Product {
            product_key: "a1Product01".into(),
            product_name: "P".into(),
            product_secret: "s".into(),
            description: None,
            node_type: 0,
            data_format: Some(1),
            commodity_code: Some("iothub_senior".into()),
            auth_type: "secret".into(),
            protocol_type: None,
            net_type: None,
            category_key: None,
            validate_type: 1,
            created_ms: 1,
            draft_tsl: draft.into(),
            versions: Vec::new(),
            modules: Default::default(),
        }
    }

    fn stored(draft: &str, as_of: i64) -> LoggedChange {
        LoggedChange {
            seq: as_of,
            as_of,
            now: Stored::Product {
                product_key: "a1Product01".into(),
                product: Some(product(draft)),
                tombstones: Vec::new(),
            },
        }
    }

    fn draft(c: &Catalog) -> &str {
        &c.products["a1Product01"].draft_tsl
    }

    fn set_draft(tsl: &str) -> Change {
        Change::SetDraft {
            product_key: "a1Product01".into(),
            module: None,
            tsl: tsl.into(),
        }
    }

    /// The cluster race that published an empty model: a node re-reads its
    /// own product (for the log entry of its creation) just before its own
    /// import commits, and applies that read just after. The read is older
    /// than what the mirror holds and must not take the import back.
    #[test]
    fn a_stale_re_read_never_takes_a_local_change_back() {
        let mut c = Catalog::default();
        c.set_log_base(5);
        let at = |previous, seq| Some(LogPosition { previous, seq });
        c.apply_local(&Change::InsertProduct(product("empty")), at(0, 10));
        c.apply_local(&set_draft("imported"), at(10, 11));
        c.refresh_logged(&stored("empty", 10));
        assert_eq!(draft(&c), "imported");
        // A re-read as of the newest entry is the same state: nothing to do.
        c.refresh_logged(&stored("imported", 11));
        assert_eq!(draft(&c), "imported");

        // Another node's change (12) not re-read yet, then one of ours
        // (13) on top: the mirror is behind, so the re-read as of 13
        // (which has both) is applied.
        c.apply_local(&set_draft("ours on a stale base"), at(12, 13));
        c.refresh_logged(&stored("theirs and ours", 13));
        assert_eq!(draft(&c), "theirs and ours");
        c.refresh_logged(&stored("older", 12));
        assert_eq!(draft(&c), "theirs and ours");
    }
}
