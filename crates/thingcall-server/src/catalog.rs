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

use thingcall_core::{DeviceRef, Secret, UnixMillis};
use thingcall_wire::actions::DeviceStatus;

use crate::repo::Change;
use crate::store::Snapshot;

/// An AccessKey pair.
#[derive(Clone, Debug)]
pub(crate) struct AccessKey {
    pub(crate) id: String,
    pub(crate) secret: Secret,
    pub(crate) enabled: bool,
}

/// A published thing-model version: the default module and every custom
/// module as they were when it was published.
#[derive(Clone, Debug)]
pub(crate) struct ModelVersion {
    pub(crate) version: String,
    pub(crate) description: Option<String>,
    pub(crate) tsl: String,
    pub(crate) created_ms: i64,
    pub(crate) seq: i64,
    /// Custom modules: block id → TSL.
    pub(crate) modules: std::collections::BTreeMap<String, String>,
}

/// A product.
#[derive(Clone, Debug)]
pub(crate) struct Product {
    pub(crate) product_key: String,
    pub(crate) product_name: String,
    pub(crate) product_secret: Secret,
    pub(crate) description: Option<String>,
    pub(crate) node_type: i64,
    pub(crate) data_format: Option<i64>,
    pub(crate) commodity_code: Option<String>,
    pub(crate) auth_type: String,
    pub(crate) protocol_type: Option<String>,
    pub(crate) net_type: Option<String>,
    pub(crate) category_key: Option<String>,
    pub(crate) validate_type: i64,
    pub(crate) created_ms: i64,
    pub(crate) draft_tsl: String,
    /// Oldest first; the last is the one in use.
    pub(crate) versions: Vec<ModelVersion>,
    /// Custom modules' draft TSLs, by block id (each names itself in its
    /// profile).
    pub(crate) modules: std::collections::BTreeMap<String, String>,
}

impl Product {
    /// The version in use.
    pub(crate) fn published(&self) -> Option<&ModelVersion> {
        self.versions.last()
    }

    /// Whether the product has thing models (`iothub_senior`).
    pub(crate) fn is_senior(&self) -> bool {
        self.commodity_code.as_deref() == Some("iothub_senior")
    }
}

/// A device.
#[derive(Clone, Debug)]
pub(crate) struct Device {
    pub(crate) iot_id: String,
    pub(crate) product_key: String,
    pub(crate) device_name: String,
    pub(crate) device_secret: Secret,
    pub(crate) nickname: Option<String>,
    pub(crate) enabled: bool,
    pub(crate) created_ms: i64,
    pub(crate) activated_ms: Option<i64>,
    pub(crate) online_ms: Option<i64>,
    pub(crate) status_ms: i64,
    pub(crate) ip_address: Option<String>,
    /// Connected now (not stored: every device is offline after a restart).
    pub(crate) online: bool,
}

impl Device {
    /// The status the API reports.
    pub(crate) fn status(&self) -> DeviceStatus {
        if !self.enabled {
            DeviceStatus::Disable
        } else if self.online {
            DeviceStatus::Online
        } else if self.activated_ms.is_none() {
            DeviceStatus::Unactive
        } else {
            DeviceStatus::Offline
        }
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
