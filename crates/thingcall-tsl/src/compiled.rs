//! Compiled models and the shared cache of compiled services.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::model::ThingModel;
use crate::validate::{CompileError, CompiledService};

/// A checked thing model with every service compiled once.
#[derive(Debug)]
pub struct CompiledModel {
    model: ThingModel,
    services: BTreeMap<String, Arc<CompiledService>>,
}

impl CompiledModel {
    /// Compiles every service of a checked model.
    pub fn compile(model: ThingModel) -> Result<CompiledModel, CompileError> {
        let mut services = BTreeMap::new();
        for service in &model.services {
            services.insert(
                service.identifier.clone(),
                Arc::new(CompiledService::compile(service)?),
            );
        }
        Ok(CompiledModel { model, services })
    }

    /// The model.
    pub fn model(&self) -> &ThingModel {
        &self.model
    }

    /// The custom module id, for a module's model.
    pub fn block(&self) -> Option<&str> {
        self.model.profile.function_block_id.as_deref()
    }

    /// A compiled service by its API identifier: `Calibrate` for the default
    /// module, `block:Calibrate` for a custom module's model.
    pub fn service(&self, identifier: &str) -> Option<&Arc<CompiledService>> {
        let local = match (identifier.split_once(':'), self.block()) {
            (Some((block, service)), Some(own)) if block == own => service,
            (None, None) => identifier,
            _ => return None,
        };
        self.services.get(local)
    }

    /// Every compiled service, by local identifier.
    pub fn services(&self) -> impl Iterator<Item = (&str, &Arc<CompiledService>)> {
        self.services.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// Compiled models shared across calls, keyed by (product, model version),
/// so each service is compiled once per published version and its
/// validators are shared through `Arc`.
#[derive(Debug, Default)]
pub struct ModelCache {
    models: Mutex<HashMap<(String, String), Arc<CompiledModel>>>,
}

impl ModelCache {
    /// An empty cache.
    pub fn new() -> ModelCache {
        ModelCache::default()
    }

    /// The compiled model for (product, version), compiling it with `load`
    /// on first use.
    pub fn get_or_compile<E>(
        &self,
        product: &str,
        version: &str,
        load: impl FnOnce() -> Result<ThingModel, E>,
    ) -> Result<Arc<CompiledModel>, E>
    where
        E: From<CompileError>,
    {
        let key = (product.to_owned(), version.to_owned());
        if let Some(found) = self.lock().get(&key) {
            return Ok(Arc::clone(found));
        }
        // Compile outside the lock; a racing thread may compile the same
        // version, and the first one stored wins.
        let compiled = Arc::new(CompiledModel::compile(load()?)?);
        Ok(Arc::clone(self.lock().entry(key).or_insert(compiled)))
    }

    /// Drops every cached version of a product (after a delete).
    pub fn invalidate(&self, product: &str) {
        self.lock().retain(|(p, _), _| p != product);
    }

    /// How many compiled models are cached.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<CompiledModel>>> {
        // The map is only ever inserted into whole; a poisoned lock still
        // holds a consistent map.
        match self.models.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}
