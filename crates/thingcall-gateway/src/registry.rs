//! Where the gateway looks up device credentials.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use thingcall_core::{ProductKey, Secret};
use thingcall_transport::DeviceKey;
use thingcall_tsl::CompiledModel;

/// What the registry knows about a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceLookup {
    /// Never registered.
    Unknown,
    /// Registered once, deleted since.
    Deleted,
    /// Registered.
    Found {
        /// The device secret.
        secret: Secret,
        /// False when the device is disabled.
        enabled: bool,
    },
}

/// A registry failure (the store is unreachable, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryError(pub String);

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "device registry: {}", self.0)
    }
}

impl std::error::Error for RegistryError {}

/// The device registry the gateway authenticates against.
#[async_trait]
pub trait DeviceRegistry: Send + Sync {
    /// Looks a device up.
    async fn lookup(&self, device: &DeviceKey) -> Result<DeviceLookup, RegistryError>;

    /// Looks a device up for a login; `proves` tells whether the login's
    /// password was signed with a given secret. The session checks the
    /// password against the secret returned, whatever this does. The
    /// default is [`DeviceRegistry::lookup`]; a registry whose lookups are
    /// costly (a cluster node reads the store) checks `proves` against a
    /// cheap copy first, so that only a login that proves its secret costs
    /// a lookup, and a flood of wrong passwords costs nothing.
    async fn lookup_login(
        &self,
        device: &DeviceKey,
        proves: &(dyn for<'s> Fn(&'s Secret) -> bool + Send + Sync),
    ) -> Result<DeviceLookup, RegistryError> {
        let _ = proves;
        self.lookup(device).await
    }

    /// The product's published thing model, against which the gateway
    /// checks what devices post (properties, events). None: no model is
    /// published (the default).
    fn model(&self, _product: &ProductKey) -> Option<Arc<CompiledModel>> {
        None
    }
}

/// A registry in a map, for tests and the simulator's own checks.
#[derive(Debug, Default)]
pub struct MapRegistry {
    devices: Mutex<HashMap<DeviceKey, DeviceLookup>>,
    models: Mutex<HashMap<ProductKey, Arc<CompiledModel>>>,
}

impl MapRegistry {
    /// An empty registry.
    pub fn new() -> MapRegistry {
        MapRegistry::default()
    }

    /// Registers (or replaces) an enabled device.
    pub fn insert(&self, device: DeviceKey, secret: Secret) {
        self.lock().insert(
            device,
            DeviceLookup::Found {
                secret,
                enabled: true,
            },
        );
    }

    /// Enables or disables a registered device.
    pub fn set_enabled(&self, device: &DeviceKey, on: bool) {
        if let Some(DeviceLookup::Found { enabled, .. }) = self.lock().get_mut(device) {
            *enabled = on;
        }
    }

    /// Publishes a product's thing model.
    pub fn set_model(&self, product: ProductKey, model: Arc<CompiledModel>) {
        crate::lock(&self.models).insert(product, model);
    }

    /// Marks a device deleted.
    pub fn delete(&self, device: &DeviceKey) {
        self.lock().insert(device.clone(), DeviceLookup::Deleted);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceKey, DeviceLookup>> {
        crate::lock(&self.devices)
    }
}

#[async_trait]
impl DeviceRegistry for MapRegistry {
    async fn lookup(&self, device: &DeviceKey) -> Result<DeviceLookup, RegistryError> {
        Ok(self
            .lock()
            .get(device)
            .cloned()
            .unwrap_or(DeviceLookup::Unknown))
    }

    fn model(&self, product: &ProductKey) -> Option<Arc<CompiledModel>> {
        crate::lock(&self.models).get(product).cloned()
    }
}
