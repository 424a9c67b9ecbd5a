//! How a node of a cluster checks a device's login: against the store, as
//! it is now, not only against this node's mirror. A device disabled,
//! deleted or re-keyed through another node a moment ago is refused here
//! at once, and one registered a moment ago is let in, without waiting for
//! this node to re-read the registry log. When the store cannot be reached
//! the mirror answers (it is at most a few milliseconds behind while the
//! nodes hear each other).

use std::sync::Arc;

use async_trait::async_trait;
use thingcall_gateway::registry::{DeviceLookup, DeviceRegistry, RegistryError};
use thingcall_transport::DeviceKey;
use thingcall_tsl::CompiledModel;

use crate::catalog::CatalogRegistry;
use crate::store::postgres::Store as PgStore;

/// The gateway's registry on a node of a cluster.
pub(crate) struct StoreCheckedRegistry {
    pub(crate) mirror: CatalogRegistry,
    pub(crate) store: Arc<PgStore>,
}

#[async_trait]
impl DeviceRegistry for StoreCheckedRegistry {
    async fn lookup(&self, device: &DeviceKey) -> Result<DeviceLookup, RegistryError> {
        let (pk, dn) = (device.product_key.as_str(), device.device_name.as_str());
        match self.store.device_now(pk, dn).await {
            Ok((Some(d), _)) => Ok(DeviceLookup::Found {
                secret: d.device_secret,
                enabled: d.enabled,
            }),
            Ok((None, true)) => Ok(DeviceLookup::Deleted),
            Ok((None, false)) => Ok(DeviceLookup::Unknown),
            Err(e) => {
                tracing::warn!(%device, error = %e, "cannot read the device from the store; the mirror answers");
                self.mirror.lookup(device).await
            }
        }
    }

    fn model(&self, product: &thingcall_core::ProductKey) -> Option<Arc<CompiledModel>> {
        self.mirror.model(product)
    }
}
