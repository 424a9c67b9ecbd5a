//! How a node of a cluster checks a device's login: first against this
//! node's mirror, then, for a password that verified there, against the
//! store as it is now.
//!
//! The mirror answers every login it can refuse: a wrong password costs
//! no query, so a flood of bad CONNECTs never reaches PostgreSQL. A login
//! whose password verified against the mirror's secret is read from the
//! store before it is let in, so a device disabled, deleted or re-keyed
//! through another node a moment ago is refused here at once; at most
//! [`LOGIN_STORE_CHECKS`] such reads run at once per node, so even a caller
//! that holds a device secret and logs in again and again takes at most
//! that much of the store's pool. A device the mirror does not know (nor
//! one it knows as deleted) is not asked of the store either: registered
//! through another node a moment ago, it reaches the mirror within
//! milliseconds through the registry's change notices, so the login waits
//! for the mirror to apply changes, for at most [`MIRROR_WAIT`]. When the
//! store cannot be reached, or every store check stays busy for
//! [`STORE_CHECK_WAIT`], the mirror's answer stands (it is at most a few
//! milliseconds behind while the nodes hear each other). Every login is
//! counted by how it was checked (`thingcall_login_checks_total`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use thingcall_core::Secret;
use thingcall_gateway::registry::{DeviceLookup, DeviceRegistry, RegistryError};
use thingcall_transport::DeviceKey;
use thingcall_tsl::CompiledModel;

use crate::catalog::CatalogRegistry;
use crate::limits::{LOGIN_STORE_CHECKS, LoginCheck, LoginChecks};
use crate::store::postgres::Store as PgStore;

/// How long a login for a device that the mirror does not know waits for
/// the mirror to hear of it.
pub(crate) const MIRROR_WAIT: Duration = Duration::from_secs(1);

/// How long a login whose password verified waits for one of the
/// [`LOGIN_STORE_CHECKS`] store checks before the mirror answers.
pub(crate) const STORE_CHECK_WAIT: Duration = Duration::from_secs(1);

/// The gateway's registry on a node of a cluster.
pub(crate) struct StoreCheckedRegistry {
    pub(crate) mirror: CatalogRegistry,
    pub(crate) store: Arc<PgStore>,
    pub(crate) checks: Arc<LoginChecks>,
}

impl StoreCheckedRegistry {
    /// The mirror's answer; for a device it does not know (or knows as
    /// deleted), the answer once the mirror applied changes that name it,
    /// or after [`MIRROR_WAIT`].
    async fn mirrored(&self, device: &DeviceKey) -> Result<DeviceLookup, RegistryError> {
        // Subscribed before the first look, so a catch-up that ends
        // between the look and the wait is not missed.
        let mut moved = self.checks.watch_mirror();
        let mut found = self.mirror.lookup(device).await?;
        if matches!(found, DeviceLookup::Found { .. }) {
            return Ok(found);
        }
        self.checks.count(LoginCheck::WaitedForMirror);
        let deadline = tokio::time::Instant::now() + MIRROR_WAIT;
        while !matches!(found, DeviceLookup::Found { .. }) {
            match tokio::time::timeout_at(deadline, moved.changed()).await {
                Ok(Ok(())) => found = self.mirror.lookup(device).await?,
                // The wait ran out, or the node is stopping.
                Ok(Err(_)) | Err(_) => break,
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl DeviceRegistry for StoreCheckedRegistry {
    async fn lookup(&self, device: &DeviceKey) -> Result<DeviceLookup, RegistryError> {
        // Without a password to check, the mirror answers (the session
        // always logs in through `lookup_login`).
        self.mirror.lookup(device).await
    }

    async fn lookup_login(
        &self,
        device: &DeviceKey,
        proves: &(dyn for<'s> Fn(&'s Secret) -> bool + Send + Sync),
    ) -> Result<DeviceLookup, RegistryError> {
        let mirrored = self.mirrored(device).await?;
        let DeviceLookup::Found { secret, .. } = &mirrored else {
            self.checks.count(LoginCheck::RefusedByMirror);
            return Ok(mirrored);
        };
        if !proves(secret) {
            self.checks.count(LoginCheck::RefusedByMirror);
            return Ok(mirrored);
        }
        let Some(_permit) = self.checks.store_check(STORE_CHECK_WAIT).await else {
            self.checks.count(LoginCheck::StoreBusy);
            tracing::warn!(%device, checks = LOGIN_STORE_CHECKS, "every login check of the store is busy; the mirror answers");
            return Ok(mirrored);
        };
        let (pk, dn) = (device.product_key.as_str(), device.device_name.as_str());
        match self.store.device_now(pk, dn).await {
            Ok((Some(d), _)) => {
                self.checks.count(LoginCheck::Store);
                Ok(DeviceLookup::Found {
                    secret: d.device_secret,
                    enabled: d.enabled,
                })
            }
            Ok((None, tombstoned)) => {
                self.checks.count(LoginCheck::Store);
                Ok(if tombstoned {
                    DeviceLookup::Deleted
                } else {
                    DeviceLookup::Unknown
                })
            }
            Err(e) => {
                self.checks.count(LoginCheck::StoreFailed);
                tracing::warn!(%device, error = %e, "cannot read the device from the store; the mirror answers");
                Ok(mirrored)
            }
        }
    }

    fn model(&self, product: &thingcall_core::ProductKey) -> Option<Arc<CompiledModel>> {
        self.mirror.model(product)
    }
}
