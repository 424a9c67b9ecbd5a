//! The thingcall server: Alibaba IoT's `InvokeThingService` and management
//! actions over HTTP, an invocation engine that reaches devices through the
//! built-in MQTT gateway, and an embedded SQLite store.
//!
//! [`Server::open`] loads the store; [`Server::serve`] takes its listeners
//! and a shutdown future as arguments, so tests run many servers on port 0
//! in one process.

mod actions;
mod catalog;
mod cluster;
mod copy;
mod data_dir;
mod engine;
mod events;
#[doc(hidden)]
pub mod fuzzing;
mod gate;
mod http;
mod ids;
mod limits;
mod metrics;
mod store;
mod subscribe;
mod sync;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use thingcall_core::{Clock, Secret};
use thingcall_gateway::listen::Listen;
use thingcall_gateway::simulator::{self, SimulatorConfig};
use thingcall_gateway::{Gateway, GatewayConfig};
use thingcall_transport::DeviceKey;
use tokio::net::TcpListener;

pub use cluster::ClusterConfig;
pub use copy::{CopyKeys, CopyProgress, CopySummary, copy_store};
pub use engine::ServerConfig;
pub use store::postgres::{PostgresUrl, SslMode};
pub use store::sealed::{SecretsKeySource, new_secrets_key, write_key_file};
pub use store::{StoreError, StoreErrorKind};

use crate::catalog::{CatalogRegistry, read};
use crate::engine::Engine;
use crate::store::{AccessKey, Change, Records, Registry};

/// How to open a server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Engine and HTTP settings.
    pub config: ServerConfig,
    /// MQTT gateway settings.
    pub gateway: GatewayConfig,
    /// The data directory: the SQLite store lives here (when it is the
    /// store), and the node's own files. Kept to its owner (0700).
    pub data_dir: PathBuf,
    /// Which store keeps the registry and the records.
    pub store: StoreConfig,
    /// The key that seals the store's secrets (by default
    /// `DATA_DIR/secrets.key`, which the SQLite store makes on first start).
    pub secrets_key: SecretsKeySource,
    /// The AccessKey to accept (id, secret); stored, replacing its secret.
    pub access_key: Option<(String, Secret)>,
    /// Join a cluster of nodes on NATS (needs the PostgreSQL store).
    pub cluster: Option<ClusterConfig>,
}

/// Which store a server keeps its registry and invocation records in.
#[derive(Clone, Debug, Default)]
pub enum StoreConfig {
    /// SQLite in the data directory: the embedded default.
    #[default]
    Sqlite,
    /// PostgreSQL (`serve --store postgres://...`).
    Postgres(PostgresUrl),
}

/// An AccessKey pair generated for an empty store; shown to the operator once.
#[derive(Clone, Debug)]
pub struct GeneratedKey {
    /// The AccessKey id.
    pub id: String,
    /// The AccessKey secret (redacted in `Debug`).
    pub secret: Secret,
}

/// What `ensure_demo` set up.
#[derive(Clone, Debug)]
pub struct Demo {
    /// The demo product.
    pub product_key: String,
    /// The demo device.
    pub device_name: String,
    /// The demo device's secret.
    pub device_secret: Secret,
    /// The sync service.
    pub sync_service: String,
    /// The async service.
    pub async_service: String,
}

/// The server.
pub struct Server {
    state: Arc<Engine>,
    /// The built-in gateway (absent for a server made from parts).
    gateway: Option<Gateway>,
    generated_key: Option<GeneratedKey>,
    /// This node's part in a cluster.
    cluster: Option<Arc<cluster::Cluster>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

impl Server {
    /// Opens the store (creating and migrating it), loads the registry,
    /// sets the AccessKey up, and puts the built-in MQTT gateway in front
    /// of the engine.
    pub async fn open(options: ServerOptions, clock: Arc<dyn Clock>) -> Result<Server, StoreError> {
        // The data directory is its owner's before anything is read from
        // it or written to it (the SQLite store makes it; a PostgreSQL
        // server may have none).
        if options.data_dir.exists() {
            data_dir::prepare(&options.data_dir)?;
        }
        if let Some(cluster) = options.cluster.clone() {
            return Server::open_node(options, cluster, clock).await;
        }
        let (registry, records, subscriptions): (
            Arc<dyn Registry>,
            Arc<dyn Records>,
            Arc<dyn store::Subscriptions>,
        ) = match &options.store {
            StoreConfig::Sqlite => {
                let store = Arc::new(store::sqlite::Store::open_with(
                    &options.data_dir,
                    &options.secrets_key,
                )?);
                (store.clone(), store.clone(), store)
            }
            StoreConfig::Postgres(url) => {
                let key = store::sealed::load(&options.secrets_key, &options.data_dir)?;
                let store =
                    Arc::new(store::postgres::Store::connect(url, key, &options.data_dir).await?);
                (store.clone(), store.clone(), store)
            }
        };
        let (catalog, last_message_id) = engine::load_catalog(registry.as_ref()).await?;
        let models = Arc::new(thingcall_tsl::ModelCache::new());
        let gateway = Gateway::new(
            options.gateway,
            Arc::new(CatalogRegistry {
                catalog: Arc::clone(&catalog),
                models: Arc::clone(&models),
            }),
            Arc::clone(&clock),
        );
        let mut engine = Engine::assemble(
            options.config,
            registry,
            records,
            catalog,
            last_message_id,
            Arc::new(gateway.clone()),
            clock,
            Some(gateway.clone()),
            0,
        );
        engine.models = models;
        engine.subscribe = Some(
            subscribe::Subscribe::start(
                subscriptions,
                engine.config.amqp.broker.clone(),
                Arc::clone(&engine.clock),
            )
            .await?,
        );
        let generated_key = ensure_access_key(&engine, options.access_key).await?;
        Ok(Server {
            state: Arc::new(engine),
            gateway: Some(gateway),
            generated_key,
            cluster: None,
        })
    }

    /// Opens a node of a cluster: the PostgreSQL store, a node number, the
    /// registry (with the change log's position read first, so no change
    /// made meanwhile is missed), NATS.
    async fn open_node(
        options: ServerOptions,
        config: ClusterConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Server, StoreError> {
        let StoreConfig::Postgres(url) = &options.store else {
            return Err(StoreError::new(
                StoreErrorKind::Internal,
                "a cluster keeps its registry in PostgreSQL: give --store postgres://...",
            ));
        };
        let node_id = cluster::node_id(&options.data_dir, config.node_id.as_deref())
            .map_err(|e| StoreError::new(StoreErrorKind::Internal, e))?;
        let key = store::sealed::load(&options.secrets_key, &options.data_dir)?;
        let store = Arc::new(store::postgres::Store::connect(url, key, &options.data_dir).await?);
        let number = cluster::claim_number(&store, &node_id, clock.now().get()).await?;
        let applied = store.registry_last().await?;
        let (catalog, last_message_id) = engine::load_catalog(store.as_ref()).await?;
        catalog::write(&catalog).set_log_base(applied);
        let models = Arc::new(thingcall_tsl::ModelCache::new());
        let logins = Arc::new(limits::LoginChecks::new());
        let gateway = Gateway::new(
            options.gateway,
            Arc::new(cluster::StoreCheckedRegistry {
                mirror: CatalogRegistry {
                    catalog: Arc::clone(&catalog),
                    models: Arc::clone(&models),
                },
                store: Arc::clone(&store),
                checks: Arc::clone(&logins),
            }),
            Arc::clone(&clock),
        );
        let (reconnected, reconnects) = tokio::sync::mpsc::unbounded_channel();
        let nats = cluster::connect_nats(&config, &node_id, reconnected)
            .await
            .map_err(|e| StoreError::new(StoreErrorKind::Unavailable, e))?;
        let node = cluster::Cluster::new(
            node_id.clone(),
            nats,
            reconnects,
            Arc::clone(&store),
            gateway.clone(),
            Arc::clone(&catalog),
            Arc::clone(&models),
            Arc::clone(&clock),
            applied,
            options.config.sync_timeout,
            logins,
        );
        let mut engine = Engine::assemble(
            options.config,
            store.clone(),
            store.clone(),
            catalog,
            last_message_id,
            node.transport(),
            clock,
            Some(gateway.clone()),
            number,
        );
        engine.models = models;
        engine.gate = Some(Arc::clone(&node.gate));
        engine.shared_nonces = Some(Arc::new(cluster::BatchedNonces::start(store)));
        engine.node_id = Some(node_id.clone());
        tracing::info!(node = %node_id, number, "joined the cluster");
        let generated_key = ensure_access_key(&engine, options.access_key).await?;
        Ok(Server {
            state: Arc::new(engine),
            gateway: Some(gateway),
            generated_key,
            cluster: Some(node),
        })
    }

    /// This node's id, when it is a node of a cluster.
    pub fn node_id(&self) -> Option<&str> {
        self.cluster.as_ref().map(|c| c.node_id.as_str())
    }

    /// A server from its parts: any transport, any registry and record
    /// store, any clock. The engine's tests run it on `MemoryTransport`
    /// and a manual clock, as quinn tests `quinn-proto`; it has no MQTT
    /// listener of its own.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) async fn from_parts(
        config: ServerConfig,
        transport: Arc<dyn thingcall_transport::Transport>,
        registry: Arc<dyn Registry>,
        records: Arc<dyn Records>,
        clock: Arc<dyn Clock>,
    ) -> Result<Server, StoreError> {
        let (catalog, last_message_id) = engine::load_catalog(registry.as_ref()).await?;
        let engine = Engine::assemble(
            config,
            registry,
            records,
            catalog,
            last_message_id,
            transport,
            clock,
            None,
            0,
        );
        Ok(Server {
            state: Arc::new(engine),
            gateway: None,
            generated_key: None,
            cluster: None,
        })
    }

    /// The engine (for the crate's own tests).
    #[cfg(test)]
    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.state
    }

    /// The AccessKey generated because the store had none (print it once).
    pub fn generated_key(&self) -> Option<&GeneratedKey> {
        self.generated_key.as_ref()
    }

    /// An enabled AccessKey of the store, for `serve --demo` to sign its
    /// example with when it generated none this time (the store kept the
    /// one it generated on an earlier start): the one with the smallest id.
    pub fn stored_access_key(&self) -> Option<GeneratedKey> {
        read(&self.state.catalog)
            .access_keys
            .values()
            .filter(|k| k.enabled)
            .min_by(|a, b| a.id.cmp(&b.id))
            .map(|k| GeneratedKey {
                id: k.id.clone(),
                secret: k.secret.clone(),
            })
    }

    /// The built-in MQTT gateway (`None` for a server made from parts).
    pub fn gateway(&self) -> Option<&Gateway> {
        self.gateway.as_ref()
    }

    /// Creates, idempotently, a demo product (one sync and one async
    /// service, published) and a registered device.
    pub async fn ensure_demo(&self) -> Result<Demo, String> {
        demo::ensure(&self.state).await
    }

    /// Runs a simulated demo device against the gateway at `mqtt` until
    /// `shutdown` completes.
    pub async fn run_demo_device(
        &self,
        demo: &Demo,
        mqtt: SocketAddr,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        self.run_demo_device_over(demo, mqtt, simulator_transport(), shutdown)
            .await
    }

    /// Like [`Server::run_demo_device`], over `transport` (TLS when the
    /// server requires it of devices).
    pub async fn run_demo_device_over(
        &self,
        demo: &Demo,
        mqtt: SocketAddr,
        transport: thingcall_gateway::client::Transport,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        let model = match self.state.published_model(&demo.product_key) {
            Ok(Some(m)) => m,
            _ => {
                tracing::error!("the demo product has no published model");
                return;
            }
        };
        let (Ok(pk), Ok(dn)) = (
            thingcall_core::ProductKey::new(demo.product_key.as_str()),
            thingcall_core::DeviceName::new(demo.device_name.as_str()),
        ) else {
            return;
        };
        let cfg = SimulatorConfig {
            latency: Duration::from_millis(2),
            seed: 1,
            transport,
            ..SimulatorConfig::new(
                mqtt.to_string(),
                DeviceKey::new(pk, dn),
                demo.device_secret.clone(),
                model,
            )
        };
        let (tx, mut calls) = tokio::sync::mpsc::unbounded_channel::<simulator::CallRecord>();
        tokio::spawn(async move {
            while let Some(c) = calls.recv().await {
                tracing::info!(device = %c.device, service = %c.identifier, id = %c.id, code = c.code, "demo device answered");
            }
        });
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            if let Err(e) = simulator::run(cfg, tx, shutdown).await {
                // The gateway closes every device connection as the server
                // stops; only a loss before that is a fault.
                if state.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                    tracing::info!("the demo device disconnected: the server is stopping");
                } else {
                    tracing::error!(error = %e, "the demo device stopped");
                }
            }
        });
    }

    /// Serves HTTP on `http` and MQTT on `mqtt` until `shutdown` completes;
    /// then stops accepting, lets in-flight requests finish (a sync call
    /// gets its answer or its timeout), closes device connections and
    /// flushes the store.
    pub async fn serve(
        self,
        http: TcpListener,
        mqtt: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        self.serve_on(Listeners::plain(http, mqtt), shutdown).await
    }

    /// Like [`Server::serve`], on every listener in `listeners` (HTTPS, MQTT
    /// over TLS and over WebSocket besides the plain ones).
    pub async fn serve_on(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let Listeners {
            http,
            https,
            mqtt,
            mqtts,
            mqtt_ws,
            mqtt_wss,
            amqp,
            amqps,
            tls,
        } = listeners;
        let needs_tls = https.is_some() || mqtts.is_some() || mqtt_wss.is_some() || amqps.is_some();
        if needs_tls && tls.is_none() {
            return Err(std::io::Error::other(
                "the HTTPS, MQTTS and secure WebSocket listeners need a certificate",
            ));
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let events = Arc::clone(&self.state).run_events(self.state.transport.subscribe());
        let cluster_tasks = match &self.cluster {
            Some(c) => c
                .start()
                .await
                .map_err(|e| std::io::Error::other(format!("cannot join the cluster: {e}")))?,
            None => Vec::new(),
        };
        let events = tokio::spawn(events);
        let sweeper = tokio::spawn(Arc::clone(&self.state).run_sweeper());
        let acceptor = |alpn: &[&[u8]]| {
            tls.as_ref()
                .map(|t| tokio_rustls::TlsAcceptor::from(t.config(alpn)))
        };
        let mut device_listeners = vec![(mqtt, Listen::Mqtt { tls: acceptor(&[]) })];
        if let (Some(l), Some(a)) = (mqtts, acceptor(&[])) {
            device_listeners.push((l, Listen::Mqtts(a)));
        }
        if let Some(l) = mqtt_ws {
            device_listeners.push((l, Listen::WebSocket { tls: None }));
        }
        if let (Some(l), Some(a)) = (mqtt_wss, acceptor(&[b"http/1.1"])) {
            device_listeners.push((l, Listen::WebSocket { tls: Some(a) }));
        }
        // A server made from parts has no gateway; its MQTT listeners are
        // closed unused. The gateway stops accepting devices as soon as
        // shutdown begins; its open sessions stay until the calls in
        // flight are answered.
        let mut gw_tasks = Vec::new();
        for (listener, kind) in device_listeners {
            let gateway = self.gateway.clone();
            let mut gw_stop = stop_rx.clone();
            gw_tasks.push(tokio::spawn(async move {
                match gateway {
                    Some(g) => {
                        g.accept_on(listener, kind, async move {
                            let _ = gw_stop.wait_for(|s| *s).await;
                        })
                        .await
                    }
                    None => Ok(()),
                }
            }));
        }
        // Server-side subscription: plaintext and TLS AMQP endpoints.
        let mut amqp_endpoints = vec![(amqp, None)];
        if let Some(l) = amqps {
            amqp_endpoints.push((Some(l), acceptor(&[b"amqp"])));
        }
        let mut amqp_tasks = Vec::new();
        for (listener, tls_acceptor) in amqp_endpoints {
            let (Some(listener), Some(subscribe)) = (listener, self.state.subscribe.clone()) else {
                continue;
            };
            let directory = Arc::new(subscribe::AmqpDirectory {
                catalog: Arc::clone(&self.state.catalog),
                subscribe: Arc::clone(&subscribe),
            });
            let mut stop = stop_rx.clone();
            amqp_tasks.push(tokio::spawn(thingcall_amqp::listener::accept_on(
                listener,
                tls_acceptor,
                Arc::clone(&subscribe.broker),
                directory,
                self.state.config.amqp.endpoint.clone(),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            )));
        }
        let watcher = tls.clone().map(|t| {
            let mut stop = stop_rx.clone();
            tokio::spawn(t.watch(async move {
                let _ = stop.wait_for(|s| *s).await;
            }))
        });
        let https_acceptor = acceptor(&[b"http/1.1"]);
        let handshake_limit = self.state.config.tls_handshake_timeout;
        let http_slots = Arc::new(tokio::sync::Semaphore::new(
            self.state.config.max_http_connections,
        ));
        let front = Arc::new(http::Front {
            engine: Arc::clone(&self.state),
            budget: limits::BodyBudget::new(self.state.config.unverified_body_budget),
            logins: self.cluster.as_ref().map(|c| Arc::clone(&c.logins)),
        });

        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(shutdown);
        // Once told to stop, the listeners stay open for a moment: a client
        // that connected just before (its connection still in the kernel's
        // queue, or accepted with its request on the wire) is served, not
        // reset; hyper's graceful shutdown closes a connection at once when
        // no request has been read from it yet.
        let mut closing_at: Option<tokio::time::Instant> = None;
        loop {
            let (accepted, secure) = tokio::select! {
                _ = &mut shutdown, if closing_at.is_none() => {
                    closing_at = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
                    continue;
                }
                _ = sleep_until_some(closing_at), if closing_at.is_some() => break,
                a = http.accept() => (a, false),
                a = accept_if(https.as_ref()) => (a, true),
            };
            let (stream, addr) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = Arc::clone(&http_slots).try_acquire_owned() else {
                self.state.metrics.http_over_limit();
                tracing::warn!(%addr, "HTTP connection limit reached; closing a new connection");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let front = Arc::clone(&front);
            let watcher = graceful.watcher();
            let acceptor = if secure { https_acceptor.clone() } else { None };
            tokio::spawn(async move {
                let _slot = slot;
                match acceptor {
                    None => serve_http(front, stream, watcher).await,
                    Some(a) => match thingcall_tls::accept(&a, stream, handshake_limit).await {
                        Ok(tls) => serve_http(front, tls, watcher).await,
                        Err(e) => {
                            front.engine.metrics.https_handshake_failed();
                            tracing::info!(%addr, error = %e, "HTTPS handshake failed; closing");
                        }
                    },
                }
            });
        }
        self.state
            .stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // Drain: take no new device and no new request; finish what is in
        // flight; then let the devices go (in a cluster they reconnect to
        // another node).
        let _ = stop_tx.send(true);
        tracing::info!("shutting down: finishing in-flight requests");
        let limit = self.state.config.sync_timeout + Duration::from_secs(5);
        if tokio::time::timeout(limit, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("some HTTP connections did not finish in time");
        }
        for task in gw_tasks {
            let _ = task.await;
        }
        for task in amqp_tasks {
            let _ = task.await;
        }
        if let Some(w) = watcher {
            let _ = w.await;
        }
        if let Some(c) = &self.cluster {
            c.drain(self.state.config.sync_timeout + Duration::from_secs(1))
                .await;
        }
        if let Some(g) = &self.gateway {
            g.close_sessions("gateway shutting down");
            // The devices' offline events reach the store (and, in a
            // cluster, the other nodes) before the event loop stops.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while !g.connected().is_empty() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        events.abort();
        sweeper.abort();
        for task in cluster_tasks {
            task.abort();
        }
        self.state.records.close().await;
        tracing::info!("store flushed; bye");
        Ok(())
    }
}

/// Everything a server listens on. The plain HTTP and MQTT listeners are
/// always there; the others are optional, and those over TLS need `tls`.
/// With `tls`, the plain MQTT listener also serves devices that open with a
/// TLS handshake (told by the first byte, as Alibaba's port 1883 does).
#[derive(Debug)]
pub struct Listeners {
    /// The HTTP API.
    pub http: TcpListener,
    /// The HTTP API over TLS.
    pub https: Option<TcpListener>,
    /// MQTT over TCP (and over TLS, with a certificate).
    pub mqtt: TcpListener,
    /// MQTT over TLS.
    pub mqtts: Option<TcpListener>,
    /// MQTT over WebSocket (`ws://HOST:PORT/mqtt`).
    pub mqtt_ws: Option<TcpListener>,
    /// MQTT over WebSocket over TLS (`wss://HOST:PORT/mqtt`).
    pub mqtt_wss: Option<TcpListener>,
    /// AMQP 1.0 server-side subscription, plaintext (development only).
    pub amqp: Option<TcpListener>,
    /// AMQP 1.0 server-side subscription over TLS (`amqps://`, 5671).
    pub amqps: Option<TcpListener>,
    /// The certificate of every TLS listener, reloaded on SIGHUP and when
    /// its files change.
    pub tls: Option<thingcall_tls::ServerTls>,
}

impl Listeners {
    /// Plain HTTP and MQTT only.
    pub fn plain(http: TcpListener, mqtt: TcpListener) -> Listeners {
        Listeners {
            http,
            https: None,
            mqtt,
            mqtts: None,
            mqtt_ws: None,
            mqtt_wss: None,
            amqp: None,
            amqps: None,
            tls: None,
        }
    }
}

/// How long the HTTP listeners keep accepting after the shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(250);

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn simulator_transport() -> thingcall_gateway::client::Transport {
    thingcall_gateway::client::Transport::default()
}

/// Accepts on `listener`, or waits forever when there is none.
async fn accept_if(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Serves the HTTP API on one connection (plain or TLS) until it ends or
/// the server drains. Every wait on the client has a deadline: a request's
/// head `header_timeout` (hyper restarts it after each response, so it
/// bounds an idle keep-alive connection too), its body its allowance
/// (`http.rs`), and a write that the client does not read `write_timeout`
/// (hyper has no write deadline of its own; `tokio-io-timeout` adds one).
async fn serve_http<S>(
    front: Arc<http::Front>,
    stream: S,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let config = &front.engine.config;
    let header_timeout = config.header_timeout;
    let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
    stream.set_write_timeout(Some(config.write_timeout));
    let io = TokioIo::new(Box::pin(stream));
    let service = service_fn(move |req| http::handle(Arc::clone(&front), req));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(io, service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// Stores the AccessKey the operator gave, or generates one for a store
/// that has none (returned, to be shown once).
async fn ensure_access_key(
    engine: &Engine,
    given: Option<(String, Secret)>,
) -> Result<Option<GeneratedKey>, StoreError> {
    let (key, generated) = match given {
        Some((id, secret)) => (
            AccessKey {
                id,
                secret,
                enabled: true,
            },
            None,
        ),
        None if read(&engine.catalog).access_keys.is_empty() => {
            let key = AccessKey {
                id: format!("LTAI{}", ids::alnum(20)),
                secret: ids::alnum(30).into(),
                enabled: true,
            };
            let generated = GeneratedKey {
                id: key.id.clone(),
                secret: key.secret.clone(),
            };
            (key, Some(generated))
        }
        None => return Ok(None),
    };
    let at = engine.now().get();
    engine.change(Change::PutAccessKey { key, at }).await?;
    Ok(generated)
}

mod demo {
    //! The `--demo` product and device.

    use thingcall_wire::actions::{
        CreateProduct, ImportThingModelTsl, PublishThingModel, RegisterDevice,
    };
    use thingcall_wire::{Action, ApiRequest, Format, Params};

    use super::*;

    /// The demo product's name.
    pub(super) const PRODUCT_NAME: &str = "thingcall_demo";
    /// The demo device's name.
    pub(super) const DEVICE_NAME: &str = "demo-device-1";
    const MODEL: &str = include_str!("../demo/model.json");

    async fn run(state: &Engine, action: &str, pairs: &[(&str, &str)]) -> Result<(), String> {
        let params = Params::from_pairs(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .map_err(|e| e.to_string())?;
        let request = ApiRequest::parse(action, &params).map_err(|e| e.to_string())?;
        crate::actions::dispatch(state, request, Format::Json, &ids::request_id())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    pub(super) async fn ensure(state: &Engine) -> Result<Demo, String> {
        let existing = read(&state.catalog)
            .products
            .values()
            .find(|p| p.product_name == PRODUCT_NAME)
            .map(|p| p.product_key.clone());
        let product_key = match existing {
            Some(pk) => pk,
            None => {
                run(
                    state,
                    CreateProduct::NAME,
                    &[
                        ("ProductName", PRODUCT_NAME),
                        ("NodeType", "0"),
                        ("AliyunCommodityCode", "iothub_senior"),
                        ("DataFormat", "1"),
                    ],
                )
                .await?;
                let pk = read(&state.catalog)
                    .products
                    .values()
                    .find(|p| p.product_name == PRODUCT_NAME)
                    .map(|p| p.product_key.clone())
                    .ok_or("the demo product vanished")?;
                run(
                    state,
                    ImportThingModelTsl::NAME,
                    &[("ProductKey", &pk), ("TslStr", MODEL)],
                )
                .await?;
                run(
                    state,
                    PublishThingModel::NAME,
                    &[("ProductKey", &pk), ("ModelVersion", "demo.1")],
                )
                .await?;
                pk
            }
        };
        if read(&state.catalog)
            .device_by_name(&product_key, DEVICE_NAME)
            .is_none()
        {
            run(
                state,
                RegisterDevice::NAME,
                &[("ProductKey", &product_key), ("DeviceName", DEVICE_NAME)],
            )
            .await?;
        }
        // The demo product's device data and status changes go to the
        // default consumer group (`thingcall subscribe --consumer-group
        // DEFAULT_GROUP` prints them).
        if let Some(s) = &state.subscribe
            && s.subscription(&product_key, crate::subscribe::AMQP)
                .is_none()
        {
            run(
                state,
                thingcall_wire::actions::CreateSubscribeRelation::NAME,
                &[
                    ("ProductKey", &product_key),
                    ("Type", crate::subscribe::AMQP),
                    ("ConsumerGroupIds.1", crate::subscribe::DEFAULT_GROUP),
                    ("DeviceDataFlag", "true"),
                    ("DeviceStatusChangeFlag", "true"),
                ],
            )
            .await?;
        }
        let secret = read(&state.catalog)
            .device_by_name(&product_key, DEVICE_NAME)
            .map(|d| d.device_secret.clone())
            .ok_or("the demo device vanished")?;
        Ok(Demo {
            product_key,
            device_name: DEVICE_NAME.to_owned(),
            device_secret: secret,
            sync_service: "Calibrate".to_owned(),
            async_service: "Reboot".to_owned(),
        })
    }
}

/// The wall clock. The only place thingcall reads the system time.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> thingcall_core::UnixMillis {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        thingcall_core::UnixMillis::new(ms)
    }
}

#[cfg(test)]
mod front_tests;

/// The README example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
