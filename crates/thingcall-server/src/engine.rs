//! The invocation engine: resolve, check, deliver, settle.
//!
//! The engine checks a call against the product's published thing model,
//! records it, hands it to the [`Transport`], and for a sync service waits
//! for the reply in a table of pending calls, which a sweeper times out by
//! the injected clock. Whoever settles a sync call (its device's reply, the
//! sweeper, a failed delivery) writes its record, complete, once. Replies
//! that come after their call timed out, and replies to async calls,
//! complete the record instead (`events.rs`). Registry changes go through
//! [`Engine::change`]: the store first, then the mirror, in one order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use thingcall_core::{
    AlinkRequest, ApiError, CallType, Clock, DeviceName, ErrorCode, Identifier, MessageId,
    ProductKey, Qos, UnixMillis,
};
use thingcall_sign::policy::{InMemoryNonceStore, VerifyPolicy};
use thingcall_transport::{
    Delivery, DeliveryKind, DeliveryOutcome, DeviceKey, DeviceReply, RrpcForm, Transport,
    TransportError,
};
use thingcall_tsl::{
    CompiledModel, CompiledService, ModelCache, ReplyMode, violations_to_api_error,
};
use tokio::sync::oneshot;

use crate::catalog::{
    Applied, Catalog, SharedCatalog, Unpublished, Unresolved, compile_published, read, write,
};
use crate::gate::MirrorGate;
use crate::ids::MessageIds;
use crate::metrics::Metrics;
use crate::store::{
    CallMode, Change, Completion, Device, Invocation, Outcome, Pending, Records, Registry,
    StoreError,
};
use crate::sync::lock;

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
    /// HTTP and HTTPS connections open at once (counting TLS handshakes);
    /// beyond this a new connection is closed at once.
    pub max_http_connections: usize,
    /// How long an HTTPS handshake may take.
    pub tls_handshake_timeout: Duration,
    /// How long a request's head may take to arrive, counted from the
    /// connection's start or the end of its previous response: it also
    /// bounds how long a keep-alive connection may stay idle (30 s).
    pub header_timeout: Duration,
    /// A request body's allowance: it must arrive within this time plus
    /// one second for every [`ServerConfig::body_min_rate`] bytes received
    /// so far (10 s); a body that falls behind is answered 408
    /// `RequestTimeout` and its connection closed.
    pub body_timeout: Duration,
    /// The rate, in bytes per second, below which a body falls behind its
    /// allowance (8 KiB/s).
    pub body_min_rate: u32,
    /// Bytes of request bodies held at once, over every connection, before
    /// their signature is verified (64 MiB); a body that finds it spent is
    /// answered 503 `ServiceUnavailable` at once. At least `max_body`.
    pub unverified_body_budget: usize,
    /// How long a response write may wait for a client that does not read
    /// before its connection is closed (30 s).
    pub write_timeout: Duration,
    /// Server-side subscription: delivery and the AMQP endpoint's limits.
    pub amqp: thingcall_amqp::AmqpConfig,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            sync_timeout: Duration::from_secs(5),
            verify: VerifyPolicy::default(),
            reply_mode: ReplyMode::Lenient,
            max_body: 1024 * 1024,
            region: "cn-shanghai".to_owned(),
            max_http_connections: 16 * 1024,
            tls_handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(10),
            body_min_rate: 8 * 1024,
            unverified_body_budget: 64 * 1024 * 1024,
            write_timeout: Duration::from_secs(30),
            amqp: thingcall_amqp::AmqpConfig::default(),
        }
    }
}

/// The engine, and everything a request handler needs.
pub(crate) struct Engine {
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
    /// In a cluster: the nonces every node shares (checked after this
    /// node's own, for requests whose signature checked out).
    pub(crate) shared_nonces: Option<Arc<dyn crate::store::SharedNonces>>,
    /// In a cluster: requests hold it shared while they read the mirror
    /// (`gate.rs`); a node that lost the registry's change notices holds
    /// it alone while it catches up.
    pub(crate) gate: Option<Arc<tokio::sync::RwLock<()>>>,
    /// In a cluster: this node's id (a label on every metric).
    pub(crate) node_id: Option<String>,
    /// Server-side subscription (absent in an engine made from parts).
    pub(crate) subscribe: Option<Arc<crate::subscribe::Subscribe>>,
}

/// Loads the registry into a new mirror; also returns the highest message
/// id recorded.
pub(crate) async fn load_catalog(
    registry: &dyn Registry,
) -> Result<(SharedCatalog, Option<u64>), StoreError> {
    let snapshot = registry.load().await?;
    let last = snapshot.last_message_id;
    Ok((
        Arc::new(RwLock::new(Catalog::from_snapshot(snapshot))),
        last,
    ))
}

impl Engine {
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
        node: u8,
    ) -> Engine {
        Engine {
            config,
            registry,
            records,
            catalog,
            models: Arc::new(ModelCache::new()),
            transport,
            clock,
            nonces: InMemoryNonceStore::new(),
            pending: Mutex::new(HashMap::new()),
            message_ids: MessageIds::after(node, last_message_id),
            metrics: Metrics::default(),
            gateway_metrics: gateway.map(Arc::new),
            stopping: std::sync::atomic::AtomicBool::new(false),
            shared_nonces: None,
            gate: None,
            node_id: None,
            subscribe: None,
        }
    }
}

/// A sync call waiting for its reply. It carries its record, which is
/// written once, complete, by whoever settles the call.
pub(crate) struct PendingCall {
    /// The device called: only its reply settles the call.
    pub(crate) device: DeviceKey,
    deadline: UnixMillis,
    record: Invocation,
    tx: oneshot::Sender<Settled>,
}

/// How a sync call ended: the reply (`None` when the injected clock passed
/// its deadline first), and the write of its complete record.
pub(crate) struct Settled {
    reply: Option<DeviceReply>,
    recorded: Result<Pending<()>, StoreError>,
}

impl Settled {
    /// The reply, once the call's record is durable.
    async fn committed(self) -> Result<Option<DeviceReply>, ApiError> {
        self.recorded
            .map_err(store_error)?
            .wait()
            .await
            .map_err(store_error)?;
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

/// Maps a store failure for the caller: an unavailable store (a database
/// restarting, a lost connection) is `ServiceUnavailable` (HTTP 503, worth
/// a retry); anything else is a system error. Either way it is logged.
pub(crate) fn store_error(e: StoreError) -> ApiError {
    if e.is_unavailable() {
        tracing::warn!(error = %e, "the store is unavailable");
        ApiError::new(ErrorCode::ServiceUnavailable)
    } else {
        system_error(e)
    }
}

impl Engine {
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
        match compile_published(&self.catalog, &self.models, product_key, block) {
            Ok(model) => Ok(model),
            Err(Unpublished::NoProduct) => Err(ApiError::new(ErrorCode::NotExistedProduct)),
            Err(Unpublished::Broken(e)) => Err(system_error(e)),
        }
    }

    /// Runs one `InvokeThingService` call.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) async fn invoke(
        &self,
        device: &Device,
        identifier: &Identifier,
        args: &str,
        qos: Qos,
    ) -> Result<Invoked, ApiError> {
        self.invoke_gated(device, identifier, args, qos, &mut MirrorGate::default())
            .await
    }

    /// Runs one `InvokeThingService` call holding a cluster node's request
    /// gate while it reads the mirror, and letting it go before it waits
    /// for the device (`gate.rs`).
    pub(crate) async fn invoke_gated(
        &self,
        device: &Device,
        identifier: &Identifier,
        args: &str,
        qos: Qos,
        gate: &mut MirrorGate,
    ) -> Result<Invoked, ApiError> {
        gate.hold().await;
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
        gate.release();
        if call_type == CallType::Sync && !self.transport.reachable(&key).await {
            return Err(ApiError::new(ErrorCode::Offline));
        }
        let now = self.clock.now();
        let message_id = self.message_ids.next(now);
        let request = AlinkRequest::for_service(message_id, identifier, params);
        let record = Invocation {
            message_id,
            iot_id: device.iot_id.clone(),
            identifier: identifier.to_string(),
            name: service.service().name.clone(),
            time_ms: now.get(),
            mode: match call_type {
                CallType::Sync => CallMode::Sync,
                CallType::Async => CallMode::Async,
            },
            input: args.to_owned(),
            output: None,
            outcome: Outcome::Pending,
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
                let recorded = self.records.record(record).map_err(store_error)?;
                let outcome = self.transport.deliver(delivery).await;
                let undelivered = match &outcome {
                    // Online, but subscribed to nothing that matches: the
                    // device will never see the call.
                    Ok(d) if d.outcome == DeliveryOutcome::NoSubscriber => Some(Outcome::HalfConn),
                    Ok(_) => None,
                    // Alibaba reports an undeliverable async call on the
                    // downlink-result topic (9201), not in the response.
                    Err(TransportError::QueueFull) => Some(Outcome::QueueFull),
                    Err(_) => Some(Outcome::NotDelivered),
                };
                match undelivered {
                    Some(outcome) => {
                        tracing::info!(%key, %message_id, ?outcome, "async call not delivered");
                        self.finish(recorded, message_id, &device.iot_id, outcome)
                            .await?;
                    }
                    None => recorded.wait().await.map_err(store_error)?,
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
                        Some((Outcome::HalfConn, ApiError::new(ErrorCode::HalfConn)))
                    }
                    Ok(_) => None,
                    Err(e) => Some(match e {
                        TransportError::Offline => {
                            (Outcome::Offline, ApiError::new(ErrorCode::Offline))
                        }
                        TransportError::QueueFull => {
                            (Outcome::RateLimit, ApiError::new(ErrorCode::RateLimit))
                        }
                        // The device's node (a cluster's) did not answer:
                        // whether the device saw the call is unknown.
                        TransportError::TimedOut => {
                            (Outcome::Timeout, ApiError::new(ErrorCode::Timeout))
                        }
                        other => (
                            Outcome::RrpcFailed,
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
                    _ => self.settle_here(message_id, Outcome::Timeout, rx).await,
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
        outcome: Outcome,
        rx: oneshot::Receiver<Settled>,
    ) -> Settled {
        {
            let mut pending = lock(&self.pending);
            if let Some(call) = pending.remove(&message_id) {
                self.settle(call, Err(outcome));
            }
        }
        rx.await.unwrap_or_else(|_| Settled {
            reply: None,
            recorded: Err(StoreError::internal("a settled call lost its outcome")),
        })
    }

    /// Writes a removed call's complete record and hands the outcome (the
    /// reply, or the code it ended with) to its waiting task. Called with
    /// the pending table locked, so the record is queued before any later
    /// reply to the same id can queue its update.
    pub(crate) fn settle(&self, mut call: PendingCall, outcome: Result<DeviceReply, Outcome>) {
        let reply = match outcome {
            Ok(r) => {
                let (output, code) = recorded_reply(&r);
                call.record.output = Some(output);
                call.record.outcome = Outcome::Replied(code);
                Some(r)
            }
            Err(outcome) => {
                call.record.outcome = outcome;
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
        gate: &mut MirrorGate,
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
            self.invoke_gated(d, identifier, args, qos, gate).await?;
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
        outcome: Outcome,
    ) -> Option<Pending<bool>> {
        match self.records.complete(Completion {
            message_id,
            iot_id: Some(iot_id.to_owned()),
            output: None,
            outcome,
        }) {
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
        outcome: Outcome,
    ) -> Result<(), ApiError> {
        let completed = self.submit_completion(message_id, iot_id, outcome);
        recorded.wait().await.map_err(store_error)?;
        if let Some(c) = completed {
            c.wait().await.map_err(store_error)?;
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
                    self.settle(call, Err(Outcome::Timeout));
                }
            }
        }
    }

    /// Queues a registry change: the store commits it, in order with every
    /// other change, then the mirror applies it and compiled models it
    /// retired are evicted. The receiver gets what the mirror dropped.
    pub(crate) fn submit_change(
        &self,
        change: Change,
    ) -> Result<(Pending<()>, oneshot::Receiver<Applied>), StoreError> {
        let catalog = Arc::clone(&self.catalog);
        let models = Arc::clone(&self.models);
        let (tx, rx) = oneshot::channel();
        let pending = self.registry.apply(
            change,
            Box::new(move |change, position| {
                let applied = write(&catalog).apply_local(change, position);
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
    pub(crate) async fn change(&self, change: Change) -> Result<Applied, StoreError> {
        let (pending, applied) = self.submit_change(change)?;
        pending.wait().await?;
        applied
            .await
            .map_err(|_| StoreError::internal("a committed change lost its result"))
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
pub(crate) fn recorded_reply(reply: &DeviceReply) -> (String, i64) {
    (
        String::from_utf8(reply.reply.to_vec()).unwrap_or_default(),
        reply.reply.code,
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
mod tests;
