//! Compiled models and the shared cache of compiled services.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use thingcall_core::CallType;

use crate::model::{Param, Service, ServiceInput, ThingModel};
use crate::validate::{CompileError, CompiledService};

/// A checked thing model with every service compiled once, and what
/// devices post (properties, events) compiled the same way.
#[derive(Debug)]
pub struct CompiledModel {
    model: ThingModel,
    services: BTreeMap<String, Arc<CompiledService>>,
    properties: Arc<CompiledService>,
    events: BTreeMap<String, Arc<CompiledService>>,
}

/// An uplink as a service whose inputs are what the device posts, so the
/// service validators check it: any subset of the listed values, each of
/// its declared type, and nothing else.
fn uplink(identifier: &str, method: &str, params: Vec<Param>) -> Service {
    Service {
        identifier: identifier.to_owned(),
        name: identifier.to_owned(),
        call_type: CallType::Async,
        input: ServiceInput::Params(params),
        output_data: Vec::new(),
        method: method.to_owned(),
        required: false,
    }
}

impl CompiledModel {
    /// Compiles every service of a checked model, the property post and
    /// every event.
    pub fn compile(model: ThingModel) -> Result<CompiledModel, CompileError> {
        let mut services = BTreeMap::new();
        for service in &model.services {
            services.insert(
                service.identifier.clone(),
                Arc::new(CompiledService::compile(service)?),
            );
        }
        let params = model
            .properties
            .iter()
            .map(|p| Param {
                identifier: p.identifier.clone(),
                name: p.name.clone(),
                data_type: p.data_type.clone(),
            })
            .collect();
        let properties = Arc::new(CompiledService::compile(&uplink(
            "post",
            "thing.event.property.post",
            params,
        ))?);
        let mut events = BTreeMap::new();
        for event in &model.events {
            let service = uplink(&event.identifier, &event.method, event.output_data.clone());
            events.insert(
                event.identifier.clone(),
                Arc::new(CompiledService::compile(&service)?),
            );
        }
        Ok(CompiledModel {
            model,
            services,
            properties,
            events,
        })
    }

    /// The property post (`thing.event.property.post`) as a compiled
    /// service: its inputs are the model's properties.
    pub fn property_post(&self) -> &Arc<CompiledService> {
        &self.properties
    }

    /// An event (`thing.event.{identifier}.post`) as a compiled service: its
    /// inputs are the event's `outputData`.
    pub fn event(&self, identifier: &str) -> Option<&Arc<CompiledService>> {
        self.events.get(identifier)
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

/// The compiled models of one product, by (version, module): the version
/// is the product's publication sequence number, which is never reused, and
/// the module is `None` for the default module.
type ProductModels = HashMap<(u64, Option<String>), Arc<CompiledModel>>;

/// Compiled models shared across calls, keyed by an immutable model
/// identity: (product, publication sequence number, module). Each service
/// is compiled once per published version and its validators are shared
/// through `Arc`. A version *name* can be published again after it was
/// pruned; its sequence number cannot, so a cached model never answers for
/// a different text. Callers evict what they prune or delete, so the cache
/// holds at most what the registry keeps.
#[derive(Debug, Default)]
pub struct ModelCache {
    models: Mutex<HashMap<String, ProductModels>>,
}

impl ModelCache {
    /// An empty cache.
    pub fn new() -> ModelCache {
        ModelCache::default()
    }

    /// The compiled model of `product`'s publication `version` (its
    /// sequence number) and `module` (`None`: the default one), compiling it
    /// with `load` on first use.
    pub fn get_or_compile<E>(
        &self,
        product: &str,
        version: u64,
        module: Option<&str>,
        load: impl FnOnce() -> Result<ThingModel, E>,
    ) -> Result<Arc<CompiledModel>, E>
    where
        E: From<CompileError>,
    {
        let key = (version, module.map(str::to_owned));
        if let Some(found) = self.lock().get(product).and_then(|m| m.get(&key)) {
            return Ok(Arc::clone(found));
        }
        // Compile outside the lock; a racing thread may compile the same
        // version, and the first one stored wins.
        let compiled = Arc::new(CompiledModel::compile(load()?)?);
        let mut all = self.lock();
        let models = all.entry(product.to_owned()).or_default();
        Ok(Arc::clone(models.entry(key).or_insert(compiled)))
    }

    /// Drops every cached version of a product (after a delete).
    pub fn invalidate(&self, product: &str) {
        self.lock().remove(product);
    }

    /// Drops the cached versions of a product that `keep` refuses (after
    /// old versions were pruned).
    pub fn retain(&self, product: &str, keep: impl Fn(u64) -> bool) {
        let mut all = self.lock();
        if let Some(models) = all.get_mut(product) {
            models.retain(|(version, _), _| keep(*version));
            if models.is_empty() {
                all.remove(product);
            }
        }
    }

    /// How many compiled models are cached.
    pub fn len(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ProductModels>> {
        // The map is only ever inserted into whole; a poisoned lock still
        // holds a consistent map.
        match self.models.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}
