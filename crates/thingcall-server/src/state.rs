//! The server's shared state and the invocation engine.
//!
//! The engine resolves a device, checks the call against the published thing
//! model, records it, hands it to the [`Transport`], and for a sync service
//! waits for the reply in a table of pending calls. Replies that come after
//! their call timed out, and replies to async calls, complete the record
//! instead of being dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use thingcall_core::{
    AlinkRequest, ApiError, CallType, Clock, DeviceName, ErrorCode, Identifier, MessageId,
    ProductKey, Qos, UnixMillis,
};
use thingcall_gateway::{DeviceLookup, DeviceRegistry, RegistryError};
use thingcall_sign::policy::{InMemoryNonceStore, KeyState, KeyStore, VerifyPolicy};
use thingcall_transport::{
    Delivery, DeliveryKind, DeliveryOutcome, DeviceKey, DeviceReply, PresenceEvent, ReplyVia,
    RrpcForm, Transport, TransportError, TransportEvent,
};
use thingcall_tsl::{
    CompiledModel, CompiledService, ModelCache, ReplyMode, check_str, violations_to_api_error,
};
use tokio::sync::oneshot;

use crate::catalog::{Applied, Catalog, Device, Unresolved};
use crate::ids::MessageIds;
use crate::lock;
use crate::metrics::Metrics;
use crate::repo::{Change, Pending, Records, Registry};
use crate::store::Invocation;

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// How long a sync call waits for the device (5 s by default).
    pub sync_timeout: Duration,
    /// Signature timestamp window and nonce policy.
    pub verify: VerifyPolicy,
    /// How device replies are checked against `outputData`.
    pub reply_mode: ReplyMode,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// The region reported by QueryDeviceDetail.
    pub region: String,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            sync_timeout: Duration::from_secs(5),
            verify: VerifyPolicy::default(),
            reply_mode: ReplyMode::Lenient,
            max_body: 1024 * 1024,
            region: "cn-shanghai".to_owned(),
        }
    }
}

/// The catalog, shared with the gateway's registry.
pub(crate) type SharedCatalog = Arc<RwLock<Catalog>>;

pub(crate) fn read(c: &SharedCatalog) -> std::sync::RwLockReadGuard<'_, Catalog> {
    match c.read() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

pub(crate) fn write(c: &SharedCatalog) -> std::sync::RwLockWriteGuard<'_, Catalog> {
    match c.write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The gateway authenticates devices against the catalog.
pub(crate) struct CatalogRegistry(pub(crate) SharedCatalog);

#[async_trait]
impl DeviceRegistry for CatalogRegistry {
    async fn lookup(&self, device: &DeviceKey) -> Result<DeviceLookup, RegistryError> {
        let c = read(&self.0);
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
}

/// Signatures are checked against the catalog's AccessKeys.
impl KeyStore for State {
    fn lookup(&self, access_key_id: &str) -> Option<KeyState> {
        read(&self.catalog)
            .access_keys
            .get(access_key_id)
            .map(|k| KeyState {
                secret: k.secret.clone(),
                active: k.enabled,
            })
    }
}

/// Everything a request handler needs.
pub(crate) struct State {
    pub(crate) config: ServerConfig,
    pub(crate) registry: Arc<dyn Registry>,
    pub(crate) records: Arc<dyn Records>,
    pub(crate) catalog: SharedCatalog,
    pub(crate) models: Arc<ModelCache>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) nonces: InMemoryNonceStore,
    pub(crate) pending: Mutex<HashMap<MessageId, PendingCall>>,
    pub(crate) message_ids: MessageIds,
    pub(crate) metrics: Metrics,
    /// The gateway's counters, when the transport is the built-in gateway.
    pub(crate) gateway_metrics: Option<Arc<thingcall_gateway::Gateway>>,
    /// Set once shutdown has begun.
    pub(crate) stopping: std::sync::atomic::AtomicBool,
}

/// Loads the registry into a new mirror; also returns the highest message
/// id recorded.
pub(crate) async fn load_catalog(
    registry: &dyn Registry,
) -> Result<(SharedCatalog, Option<u64>), crate::repo::StoreError> {
    let snapshot = registry.load().await?;
    let last = snapshot.last_message_id;
    Ok((
        Arc::new(RwLock::new(Catalog::from_snapshot(snapshot))),
        last,
    ))
}

impl State {
    /// The engine around a loaded registry, a record store, a transport and
    /// a clock. `gateway` is the built-in gateway when it is the transport
    /// (for its counters).
    #[allow(clippy::too_many_arguments)] // the parts of the engine, each once
    pub(crate) fn assemble(
        config: ServerConfig,
        registry: Arc<dyn Registry>,
        records: Arc<dyn Records>,
        catalog: SharedCatalog,
        last_message_id: Option<u64>,
        transport: Arc<dyn Transport>,
        clock: Arc<dyn Clock>,
        gateway: Option<thingcall_gateway::Gateway>,
    ) -> State {
        State {
            config,
            registry,
            records,
            catalog,
            models: Arc::new(ModelCache::new()),
            transport,
            clock,
            nonces: InMemoryNonceStore::new(),
            pending: Mutex::new(HashMap::new()),
            message_ids: MessageIds::after(last_message_id),
            metrics: Metrics::default(),
            gateway_metrics: gateway.map(Arc::new),
            stopping: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// A sync call waiting for its reply. It carries its record, which is
/// written once, complete, by whoever settles the call.
pub(crate) struct PendingCall {
    /// The device called: only its reply settles the call.
    device: DeviceKey,
    deadline: UnixMillis,
    record: Invocation,
    tx: oneshot::Sender<Settled>,
}

/// How a sync call ended: the reply (`None` when the injected clock passed
/// its deadline first), and the write of its complete record.
pub(crate) struct Settled {
    reply: Option<DeviceReply>,
    recorded: Result<Pending<()>, crate::repo::StoreError>,
}

impl Settled {
    /// The reply, once the call's record is durable.
    async fn committed(self) -> Result<Option<DeviceReply>, ApiError> {
        self.recorded
            .map_err(system_error)?
            .wait()
            .await
            .map_err(system_error)?;
        Ok(self.reply)
    }
}

/// How often the pending table is checked against the clock.
const SWEEP_EVERY: Duration = Duration::from_millis(10);

/// A successful invocation.
pub(crate) struct Invoked {
    pub(crate) message_id: MessageId,
    /// The reply's `data` as JSON text (sync services).
    pub(crate) result: Option<String>,
}

/// Maps an unresolved reference to its code.
pub(crate) fn unresolved(u: Unresolved) -> ApiError {
    match u {
        Unresolved::NoProduct => ApiError::new(ErrorCode::NotExistedProduct),
        Unresolved::NoDevice => ApiError::new(ErrorCode::NotExistedDevice),
    }
}

fn system_error(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "internal failure");
    ApiError::new(ErrorCode::SystemException)
}

impl State {
    /// The compiled published model of a product, compiled once per version.
    pub(crate) fn published_model(
        &self,
        product_key: &str,
    ) -> Result<Option<Arc<CompiledModel>>, ApiError> {
        self.published_module(product_key, None)
    }

    /// The compiled published model of one module (`None`: the default
    /// module), compiled once per (product, version, module).
    pub(crate) fn published_module(
        &self,
        product_key: &str,
        block: Option<&str>,
    ) -> Result<Option<Arc<CompiledModel>>, ApiError> {
        // The catalog stays read-locked while the cache is consulted, so a
        // hit borrows the model text instead of copying it; only a miss (the
        // first call of a version) compiles, still under the read lock.
        let c = read(&self.catalog);
        let Some(p) = c.products.get(product_key) else {
            return Err(ApiError::new(ErrorCode::NotExistedProduct));
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
        // Keyed by the version's sequence number, which is never reused:
        // a version name published again after pruning is another model.
        let seq = u64::try_from(v.seq).unwrap_or(0);
        self.models
            .get_or_compile(product_key, seq, block, || {
                check_str(tsl)
                    .map_err(|p| thingcall_tsl::CompileError(format!("{} problems", p.len())))
            })
            .map(Some)
            .map_err(system_error)
    }

    /// Runs one `InvokeThingService` call.
    pub(crate) async fn invoke(
        &self,
        device: &Device,
        identifier: &Identifier,
        args: &str,
        qos: Qos,
    ) -> Result<Invoked, ApiError> {
        if !device.enabled {
            return Err(ApiError::with_detail(
                ErrorCode::InvokeThingServiceFailed,
                "The device is disabled.",
            ));
        }
        let service = self.service(&device.product_key, identifier)?;
        let params = service
            .validate_args_str(args)
            .map_err(|v| violations_to_api_error(&v))?;
        let key = device_key(device)?;
        if device.activated_ms.is_none() {
            return Err(ApiError::new(ErrorCode::InactiveDevice));
        }
        let call_type = service.call_type();
        if call_type == CallType::Sync && !self.transport.is_online(&key) {
            return Err(ApiError::new(ErrorCode::Offline));
        }
        let now = self.clock.now();
        let message_id = self.message_ids.next(now);
        let request = AlinkRequest::for_service(message_id, identifier, params);
        let record = Invocation {
            message_id: message_id.to_string(),
            iot_id: device.iot_id.clone(),
            identifier: identifier.to_string(),
            name: service.service().name.clone(),
            time_ms: now.get(),
            mode: call_type.as_str(),
            input: args.to_owned(),
            output: None,
            code: "pending".to_owned(),
        };
        let kind = match call_type {
            CallType::Sync => DeliveryKind::Rrpc {
                identifier: identifier.clone(),
                form: RrpcForm::Auto,
            },
            CallType::Async => DeliveryKind::Async {
                identifier: identifier.clone(),
            },
        };
        let delivery = Delivery {
            device: key.clone(),
            message_id,
            kind,
            qos,
            payload: request.to_vec(),
        };
        let started = Instant::now();
        match call_type {
            CallType::Async => {
                // The caller is answered with the message id, so the record
                // must exist first: it is queued now, committed while the
                // message travels, and the reply later completes it.
                let recorded = self.records.record(record).map_err(system_error)?;
                let outcome = self.transport.deliver(delivery).await;
                let code = match &outcome {
                    // Online, but subscribed to nothing that matches: the
                    // device will never see the call.
                    Ok(d) if d.outcome == DeliveryOutcome::NoSubscriber => Some("HALFCONN"),
                    Ok(_) => None,
                    // Alibaba reports an undeliverable async call on the
                    // downlink-result topic with 9201, not in the response.
                    Err(TransportError::Offline) => Some("9201"),
                    Err(TransportError::QueueFull) => Some("429"),
                    Err(_) => Some("9201"),
                };
                match code {
                    Some(code) => {
                        tracing::info!(%key, %message_id, code, "async call not delivered");
                        self.finish(recorded, message_id, &device.iot_id, None, code)
                            .await?;
                    }
                    None => recorded.wait().await.map_err(system_error)?,
                }
                self.metrics.observe_invocation("async", started.elapsed());
                Ok(Invoked {
                    message_id,
                    result: None,
                })
            }
            CallType::Sync => {
                // A sync call is written once, when it is settled (reply,
                // timeout or delivery failure), and answered after that
                // write commits. Until then only the caller knows of it.
                let (tx, rx) = oneshot::channel();
                let deadline = now.add_millis(
                    i64::try_from(self.config.sync_timeout.as_millis()).unwrap_or(i64::MAX),
                );
                let call = PendingCall {
                    device: key.clone(),
                    deadline,
                    record,
                    tx,
                };
                lock(&self.pending).insert(message_id, call);
                let refused = match self.transport.deliver(delivery).await {
                    // A device that subscribes to no RRPC topic never sees
                    // the call: say so now instead of waiting out the
                    // timeout (the RRpc API calls this state HALFCONN).
                    Ok(d) if d.outcome == DeliveryOutcome::NoSubscriber => {
                        Some(("HALFCONN", ApiError::new(ErrorCode::HalfConn)))
                    }
                    Ok(_) => None,
                    Err(e) => Some(match e {
                        TransportError::Offline => ("OFFLINE", ApiError::new(ErrorCode::Offline)),
                        TransportError::QueueFull => {
                            ("RateLimit", ApiError::new(ErrorCode::RateLimit))
                        }
                        other => (
                            "RrpcFailed",
                            ApiError::with_detail(ErrorCode::RrpcFailed, other),
                        ),
                    }),
                };
                if let Some((code, err)) = refused {
                    let settled = self.settle_here(message_id, code, rx).await;
                    settled.committed().await?;
                    return Err(err);
                }
                // The sweeper settles the call once the injected clock passes
                // the deadline; the timer here only guards against a sweeper
                // that is not running.
                let guard = self.config.sync_timeout + Duration::from_secs(1);
                let mut rx = rx;
                let settled = match tokio::time::timeout(guard, &mut rx).await {
                    Ok(Ok(settled)) => settled,
                    _ => self.settle_here(message_id, "TIMEOUT", rx).await,
                };
                self.metrics.observe_invocation("sync", started.elapsed());
                let reply = settled.committed().await?;
                let Some(reply) = reply else {
                    return Err(ApiError::new(ErrorCode::Timeout));
                };
                let check = service.check_reply(&reply.reply.data, self.config.reply_mode);
                if !check.violations.is_empty() {
                    tracing::warn!(%key, %message_id, violations = ?check.violations, "reply breaks outputData");
                }
                if !check.accepted {
                    return Err(violations_to_api_error(&check.violations));
                }
                Ok(Invoked {
                    message_id,
                    result: Some(reply.reply.data_json()),
                })
            }
        }
    }

    /// Settles a pending sync call from its own task with `code` and no
    /// reply; when another party (a reply, the sweeper) settled it first,
    /// that outcome is awaited instead.
    async fn settle_here(
        &self,
        message_id: MessageId,
        code: &'static str,
        rx: oneshot::Receiver<Settled>,
    ) -> Settled {
        {
            let mut pending = lock(&self.pending);
            if let Some(call) = pending.remove(&message_id) {
                self.settle(call, Err(code));
            }
        }
        rx.await.unwrap_or_else(|_| Settled {
            reply: None,
            recorded: Err(crate::repo::StoreError(
                "a settled call lost its outcome".into(),
            )),
        })
    }

    /// Writes a removed call's complete record and hands the outcome (the
    /// reply, or the code it ended with) to its waiting task. Called with
    /// the pending table locked, so the record is queued before any later
    /// reply to the same id can queue its update.
    fn settle(&self, mut call: PendingCall, outcome: Result<DeviceReply, &'static str>) {
        let reply = match outcome {
            Ok(r) => {
                let (output, code) = recorded_reply(&r);
                call.record.output = Some(output);
                call.record.code = code;
                Some(r)
            }
            Err(code) => {
                call.record.code = code.to_owned();
                None
            }
        };
        let recorded = self.records.record(call.record);
        // A caller that went away (its connection closed) still has its
        // call recorded; only the hand-off is lost.
        let _ = call.tx.send(Settled { reply, recorded });
    }

    /// Delivers an async call to several devices of one product
    /// (`InvokeThingsService`): every device is checked first, then each
    /// gets its own message id and record.
    pub(crate) async fn invoke_many(
        &self,
        devices: &[Device],
        identifier: &Identifier,
        args: &str,
        qos: Qos,
    ) -> Result<(), ApiError> {
        for d in devices {
            if d.activated_ms.is_none() {
                return Err(ApiError::with_detail(
                    ErrorCode::InactiveDevice,
                    format_args!("{} has never connected.", d.device_name),
                ));
            }
            if !d.enabled {
                return Err(ApiError::with_detail(
                    ErrorCode::InvokeThingServiceFailed,
                    format_args!("{} is disabled.", d.device_name),
                ));
            }
        }
        if let Some(first) = devices.first() {
            let service = self.service(&first.product_key, identifier)?;
            service
                .validate_args_str(args)
                .map_err(|v| violations_to_api_error(&v))?;
            if service.call_type() != CallType::Async {
                return Err(ApiError::with_detail(
                    ErrorCode::InvokeThingServiceFailed,
                    "InvokeThingsService only invokes async services.",
                ));
            }
        }
        for d in devices {
            self.invoke(d, identifier, args, qos).await?;
        }
        Ok(())
    }

    fn service(
        &self,
        product_key: &str,
        identifier: &Identifier,
    ) -> Result<Arc<CompiledService>, ApiError> {
        let missing = || {
            ApiError::with_detail(
                ErrorCode::InvokeThingServiceFailed,
                format_args!("The published thing model has no service {identifier}."),
            )
        };
        let model = self
            .published_module(product_key, identifier.block())?
            .ok_or_else(missing)?;
        model
            .service(identifier.as_str())
            .cloned()
            .ok_or_else(missing)
    }

    /// Queues the outcome of an invocation (applied after its insert).
    fn submit_completion(
        &self,
        message_id: MessageId,
        iot_id: &str,
        output: Option<String>,
        code: &str,
    ) -> Option<Pending<bool>> {
        match self.records.complete(
            message_id.to_string(),
            iot_id.to_owned(),
            output,
            code.to_owned(),
        ) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::error!(%message_id, error = %e, "cannot record the invocation's outcome");
                None
            }
        }
    }

    /// Records the outcome and waits until the record and its outcome are
    /// both committed.
    async fn finish(
        &self,
        recorded: Pending<()>,
        message_id: MessageId,
        iot_id: &str,
        output: Option<String>,
        code: &str,
    ) -> Result<(), ApiError> {
        let completed = self.submit_completion(message_id, iot_id, output, code);
        recorded.wait().await.map_err(system_error)?;
        if let Some(c) = completed {
            c.wait().await.map_err(system_error)?;
        }
        Ok(())
    }

    /// Times out pending sync calls whose deadline the injected clock has
    /// passed. Runs until the task is aborted.
    pub(crate) async fn run_sweeper(self: Arc<Self>) {
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            let now = self.clock.now();
            let mut pending = lock(&self.pending);
            let ids: Vec<MessageId> = pending
                .iter()
                .filter(|(_, c)| c.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                if let Some(call) = pending.remove(&id) {
                    self.settle(call, Err("TIMEOUT"));
                }
            }
        }
    }

    /// Follows the transport's events until it closes.
    pub(crate) async fn run_events(self: Arc<Self>, mut events: thingcall_transport::EventStream) {
        while let Some(event) = events.recv().await {
            match event {
                TransportEvent::Reply(reply) => self.on_reply(reply).await,
                TransportEvent::Presence(p) => self.on_presence(p),
            }
        }
    }

    /// Matches a device reply to its call by (device, message id): a reply
    /// completes only the call of the device that sent it. Anything else is
    /// ignored, logged at debug level (a device that guesses ids would
    /// flood the log) and counted.
    async fn on_reply(self: &Arc<Self>, reply: DeviceReply) {
        let Some(message_id) = reply.message_id else {
            self.reject_reply(&reply, "no_message_id");
            return;
        };
        let mut table = lock(&self.pending);
        match table.get(&message_id) {
            Some(call) if call.device == reply.device => {
                if let Some(call) = table.remove(&message_id) {
                    self.settle(call, Ok(reply));
                }
                drop(table);
                self.metrics.count_reply("sync");
                return;
            }
            Some(_) => {
                drop(table);
                self.reject_reply(&reply, "other_device");
                return;
            }
            None => {}
        }
        // An async reply, or a sync reply after its call timed out: complete
        // the record so nothing the device said is lost. The update is
        // queued under the table's lock, so it follows a timed-out call's
        // record.
        let iot_id = read(&self.catalog)
            .device_by_name(
                reply.device.product_key.as_str(),
                reply.device.device_name.as_str(),
            )
            .map(|d| d.iot_id.clone());
        let Some(iot_id) = iot_id else {
            drop(table);
            self.reject_reply(&reply, "unknown_device");
            return;
        };
        let late = matches!(reply.via, ReplyVia::Rrpc);
        let (output, code) = recorded_reply(&reply);
        let code_for_late = if late { format!("{code} (late)") } else { code };
        let pending =
            self.records
                .complete(message_id.to_string(), iot_id, Some(output), code_for_late);
        drop(table);
        // The write is followed on its own task: the event loop must keep
        // pace with the devices, not with the disk.
        let state = Arc::clone(self);
        tokio::spawn(async move {
            let outcome = match pending {
                Ok(p) => p.wait().await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(true) => {
                    state
                        .metrics
                        .count_reply(if late { "late" } else { "async" });
                    tracing::debug!(device = %reply.device, %message_id, code = reply.reply.code, late, "reply recorded");
                }
                Ok(false) => state.reject_reply(&reply, "unknown_call"),
                Err(e) => tracing::error!(%message_id, error = %e, "cannot record a reply"),
            }
        });
    }

    fn reject_reply(&self, reply: &DeviceReply, reason: &'static str) {
        self.metrics.count_rejected_reply(reason);
        tracing::debug!(device = %reply.device, message_id = ?reply.message_id, id = %reply.reply.id, reason, "device reply ignored");
    }

    /// Records a presence change. The event loop that carries replies only
    /// queues the write (in order with every other registry change) and
    /// moves on; the mirror follows once it is committed.
    fn on_presence(&self, p: PresenceEvent) {
        let iot_id = read(&self.catalog)
            .device_by_name(p.device.product_key.as_str(), p.device.device_name.as_str())
            .map(|d| d.iot_id.clone());
        let Some(iot_id) = iot_id else {
            return;
        };
        let change = Change::Presence {
            iot_id,
            online: p.online,
            at: p.at.get(),
            ip_address: p
                .online
                .then(|| p.client_addr.map(|a| a.ip().to_string()))
                .flatten(),
        };
        match self.submit_change(change) {
            Ok((pending, _)) => {
                let device = p.device;
                tokio::spawn(async move {
                    if let Err(e) = pending.wait().await {
                        tracing::error!(%device, error = %e, "cannot record presence");
                    }
                });
            }
            Err(e) => tracing::error!(device = %p.device, error = %e, "cannot record presence"),
        }
    }

    /// Queues a registry change: the store commits it, in order with every
    /// other change, then the mirror applies it and compiled models it
    /// retired are evicted. The receiver gets what the mirror dropped.
    pub(crate) fn submit_change(
        &self,
        change: Change,
    ) -> Result<(Pending<()>, oneshot::Receiver<Applied>), crate::repo::StoreError> {
        let catalog = Arc::clone(&self.catalog);
        let models = Arc::clone(&self.models);
        let (tx, rx) = oneshot::channel();
        let pending = self.registry.apply(
            change,
            Box::new(move |change| {
                let applied = write(&catalog).apply(change);
                if let Some((product, kept)) = &applied.versions {
                    let kept: Vec<u64> =
                        kept.iter().filter_map(|s| u64::try_from(*s).ok()).collect();
                    models.retain(product, |seq| kept.contains(&seq));
                }
                let _ = tx.send(applied);
            }),
        )?;
        Ok((pending, rx))
    }

    /// Makes a registry change and waits until the store committed it and
    /// the mirror shows it.
    pub(crate) async fn change(&self, change: Change) -> Result<Applied, crate::repo::StoreError> {
        let (pending, applied) = self.submit_change(change)?;
        pending.wait().await?;
        applied
            .await
            .map_err(|_| crate::repo::StoreError("a committed change lost its result".into()))
    }

    /// The time now.
    pub(crate) fn now(&self) -> UnixMillis {
        self.clock.now()
    }

    /// Devices connected now.
    pub(crate) fn online_count(&self) -> usize {
        read(&self.catalog)
            .devices
            .values()
            .filter(|d| d.online)
            .count()
    }

    /// The gateway's counters (empty without the built-in gateway).
    pub(crate) fn gateway_metrics(&self) -> &thingcall_gateway::GatewayMetrics {
        static EMPTY: std::sync::OnceLock<thingcall_gateway::GatewayMetrics> =
            std::sync::OnceLock::new();
        match &self.gateway_metrics {
            Some(g) => g.metrics(),
            None => EMPTY.get_or_init(thingcall_gateway::GatewayMetrics::default),
        }
    }
}

/// What a record keeps of a device's reply: the whole Alink reply as JSON
/// text, and its code.
fn recorded_reply(reply: &DeviceReply) -> (String, String) {
    (
        String::from_utf8(reply.reply.to_vec()).unwrap_or_default(),
        reply.reply.code.to_string(),
    )
}

/// The transport key of a catalog device.
pub(crate) fn device_key(d: &Device) -> Result<DeviceKey, ApiError> {
    match (
        ProductKey::new(d.product_key.as_str()),
        DeviceName::new(d.device_name.as_str()),
    ) {
        (Ok(pk), Ok(dn)) => Ok(DeviceKey::new(pk, dn)),
        _ => Err(system_error("a stored device has a malformed name")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Product;
    use thingcall_transport::MemoryTransport;
    use thingcall_wire::actions::{DisableThing, EnableThing};
    use thingcall_wire::{Action, ApiRequest, Format, Params};

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "thingcall-state-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    async fn engine(
        dir: &std::path::Path,
    ) -> (Arc<State>, Arc<MemoryTransport>, Arc<crate::store::Store>) {
        let store = Arc::new(crate::store::Store::open(dir).unwrap());
        let (catalog, last) = load_catalog(store.as_ref()).await.unwrap();
        let transport = Arc::new(MemoryTransport::new());
        let state = Arc::new(State::assemble(
            ServerConfig::default(),
            store.clone(),
            store.clone(),
            catalog,
            last,
            transport.clone(),
            Arc::new(crate::SystemClock),
            None,
        ));
        (state, transport, store)
    }

    fn product(pk: &str) -> Product {
        Product {
            product_key: pk.to_owned(),
            product_name: format!("name_{pk}"),
            product_secret: "s".into(),
            description: None,
            node_type: 0,
            data_format: None,
            commodity_code: None,
            auth_type: "secret".to_owned(),
            protocol_type: None,
            net_type: None,
            category_key: None,
            validate_type: 1,
            created_ms: 1,
            draft_tsl: "{}".to_owned(),
            versions: Vec::new(),
            modules: Default::default(),
        }
    }

    fn device(pk: &str, dn: &str) -> Device {
        Device {
            iot_id: format!("{dn}000100"),
            product_key: pk.to_owned(),
            device_name: dn.to_owned(),
            device_secret: "secret".into(),
            nickname: None,
            enabled: true,
            created_ms: 1,
            activated_ms: None,
            online_ms: None,
            status_ms: 1,
            ip_address: None,
            online: false,
        }
    }

    async fn set_enabled(state: &State, iot_id: &str, enabled: bool) {
        let action = if enabled {
            EnableThing::NAME
        } else {
            DisableThing::NAME
        };
        let params = Params::from_pairs(vec![("IotId".to_owned(), iot_id.to_owned())]).unwrap();
        let request = ApiRequest::parse(action, &params).unwrap();
        crate::actions::dispatch(state, request, Format::Json, &crate::ids::request_id())
            .await
            .unwrap();
    }

    fn stored_enabled(dir: &std::path::Path, iot_id: &str) -> bool {
        let conn = rusqlite::Connection::open(dir.join("thingcall.db")).unwrap();
        conn.query_row(
            "SELECT enabled FROM devices WHERE iot_id = ?1",
            [iot_id],
            |r| r.get(0),
        )
        .unwrap()
    }

    /// Presence changes race with DisableThing/EnableThing, hundreds of
    /// times: after each round the store, the mirror and the last API call
    /// agree on `enabled`, and so does the store after a restart. (Before
    /// presence and `enabled` were written as separate columns, a presence
    /// write carrying a stale copy of the whole row could land last and
    /// bring a disabled device back.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn presence_never_undoes_an_enable_or_disable() {
        let dir = temp_dir("presence-race");
        let (state, transport, store) = engine(&dir).await;
        let events = tokio::spawn(Arc::clone(&state).run_events(transport.subscribe()));
        state
            .change(Change::InsertProduct(product("a1Race")))
            .await
            .unwrap();
        let d = device("a1Race", "racer");
        state.change(Change::InsertDevice(d.clone())).await.unwrap();
        let key = device_key(&d).unwrap();
        let mut enabled = true;
        let mut mismatches = Vec::new();
        for round in 0..400u32 {
            let presence = PresenceEvent {
                device: key.clone(),
                online: round % 2 == 0,
                at: UnixMillis::new(1_000 + i64::from(round)),
                client_addr: Some(([127, 0, 0, 1], 1000).into()),
                reason: "test".to_owned(),
            };
            enabled = !enabled;
            let t = Arc::clone(&transport);
            let injected = tokio::spawn(async move { t.inject_presence(presence).await });
            set_enabled(&state, &d.iot_id, enabled).await;
            injected.await.unwrap();
            // Let the presence write reach the store.
            for _ in 0..100 {
                let activated = read(&state.catalog)
                    .devices
                    .get(&d.iot_id)
                    .is_some_and(|m| m.status_ms >= 1_000 + i64::from(round));
                if activated {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            let in_store = stored_enabled(&dir, &d.iot_id);
            let in_mirror = read(&state.catalog).devices[&d.iot_id].enabled;
            if in_store != enabled || in_mirror != enabled {
                mismatches.push((round, enabled, in_store, in_mirror));
            }
        }
        assert!(
            mismatches.is_empty(),
            "{} of 400 rounds disagree; the first (round, api, store, mirror): {:?}",
            mismatches.len(),
            &mismatches[..mismatches.len().min(10)]
        );
        events.abort();
        store.close();
        drop(state);
        drop(store);
        let (again, _, store) = engine(&dir).await;
        assert_eq!(read(&again.catalog).devices[&d.iot_id].enabled, enabled);
        store.close();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
