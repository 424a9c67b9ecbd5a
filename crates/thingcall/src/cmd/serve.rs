//! `thingcall serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use thingcall_core::{Clock, Secret};
use thingcall_server::{
    ClusterConfig, Listeners, PostgresUrl, SecretsKeySource, Server, ServerConfig, ServerOptions,
    StoreConfig, SystemClock,
};
use thingcall_sign::v1;
use thingcall_tls::{ServerTls, TlsFiles};
use thingcall_wire::form::encode_pairs;

use super::Outcome;

/// Prints a line of the start-up banner. A closed standard output (the
/// operator piped it into `head`, a supervisor went away) must not stop a
/// running server, so write errors are ignored, where `println!` would
/// panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// The HTTP API address [default: 127.0.0.1:8080] (port 0 picks a free
    /// port; with --demo, a taken default falls back to a free one).
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// The MQTT device gateway address [default: 127.0.0.1:1883] (port 0
    /// picks a free port; with --demo, a taken default falls back to a free
    /// one).
    #[arg(long, value_name = "ADDR")]
    mqtt: Option<SocketAddr>,
    /// The HTTP API over TLS (needs --tls-cert and --tls-key, or --demo).
    #[arg(long, value_name = "ADDR")]
    https: Option<SocketAddr>,
    /// MQTT over TLS (needs a certificate, as --https). With a certificate,
    /// the plain --mqtt port takes TLS handshakes too.
    #[arg(long, value_name = "ADDR")]
    mqtts: Option<SocketAddr>,
    /// MQTT over WebSocket, plaintext: ws://ADDR/mqtt, subprotocol mqtt.
    #[arg(long, value_name = "ADDR")]
    mqtt_ws: Option<SocketAddr>,
    /// MQTT over WebSocket over TLS: wss://ADDR/mqtt (needs a certificate).
    #[arg(long, value_name = "ADDR")]
    mqtt_wss: Option<SocketAddr>,
    /// AMQP 1.0 server-side subscription over TLS (amqps://; Alibaba's port
    /// is 5671; needs a certificate).
    #[arg(long, value_name = "ADDR")]
    amqps: Option<SocketAddr>,
    /// AMQP 1.0 server-side subscription in plaintext, for local
    /// development only (refused with --require-tls-devices).
    #[arg(long, value_name = "ADDR")]
    amqp: Option<SocketAddr>,
    /// How long a consumer group's undelivered messages are kept, in hours.
    #[arg(long, value_name = "HOURS", default_value_t = 24)]
    amqp_retention_hours: u64,
    /// The server's certificate chain, PEM (or THINGCALL_TLS_CERT). Reloaded
    /// on SIGHUP and when the file changes.
    #[arg(
        long,
        value_name = "CHAIN.pem",
        env = "THINGCALL_TLS_CERT",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key, PEM (or THINGCALL_TLS_KEY).
    #[arg(
        long,
        value_name = "KEY.pem",
        env = "THINGCALL_TLS_KEY",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Refuse every device that logs in without TLS (CONNACK 5).
    #[arg(long)]
    require_tls_devices: bool,
    /// Device connections open at once over all MQTT listeners, counting
    /// TLS handshakes and WebSocket upgrades in progress.
    #[arg(long, default_value_t = 100_000)]
    max_device_connections: usize,
    /// The data directory: the SQLite store (unless --store), the lock.
    #[arg(long, default_value = "./thingcall-data")]
    data_dir: PathBuf,
    /// Keep the registry and the records in PostgreSQL instead of SQLite:
    /// postgres://USER[:PASSWORD]@HOST[:PORT]/DB (or THINGCALL_STORE).
    #[arg(
        long,
        value_name = "URL",
        env = "THINGCALL_STORE",
        hide_env_values = true
    )]
    store: Option<String>,
    /// Run as a node of a cluster: the NATS servers, comma-separated
    /// (nats://HOST:PORT[,nats://...]; or THINGCALL_CLUSTER). Needs --store.
    #[arg(long, value_name = "URLS", env = "THINGCALL_CLUSTER")]
    cluster: Option<String>,
    /// This node's id in the cluster (or THINGCALL_NODE_ID); by default one
    /// made up on first start and kept in the data directory.
    #[arg(long, env = "THINGCALL_NODE_ID", requires = "cluster")]
    node_id: Option<String>,
    /// The AccessKey id to accept (or THINGCALL_ACCESS_KEY_ID).
    #[arg(long, env = "THINGCALL_ACCESS_KEY_ID")]
    access_key_id: Option<String>,
    /// The AccessKey secret (or THINGCALL_ACCESS_KEY_SECRET).
    #[arg(long, env = "THINGCALL_ACCESS_KEY_SECRET", hide_env_values = true)]
    access_key_secret: Option<String>,
    /// The key that seals the store's secrets: a file of one line, 32 bytes
    /// in base64 (make one with `thingcall store new-key FILE`). Or the key
    /// itself in THINGCALL_SECRETS_KEY. Without either, DATA_DIR/secrets.key,
    /// which the SQLite store makes on first start; a PostgreSQL store
    /// refuses to start without a key (every node needs the same one).
    #[arg(long, value_name = "FILE", env = "THINGCALL_SECRETS_KEY_FILE")]
    secrets_key_file: Option<PathBuf>,
    /// How long a sync service call waits for the device (e.g. 5s, 800ms, 1m).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    sync_timeout: Duration,
    /// HTTP and HTTPS connections open at once, TLS handshakes included;
    /// one more is closed at once.
    #[arg(long, value_name = "N", default_value_t = 16_384)]
    max_http_connections: usize,
    /// How long an HTTP request's head may take, and a keep-alive
    /// connection stay idle.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    http_header_timeout: Duration,
    /// A request body must arrive within this, plus one second for every
    /// --http-body-min-rate bytes received (else 408 RequestTimeout).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    http_body_timeout: Duration,
    /// Bytes per second a request body must keep up (see --http-body-timeout).
    #[arg(long, value_name = "BYTES", default_value_t = 8192)]
    http_body_min_rate: u32,
    /// Bytes of request bodies held at once before their signature is
    /// verified, over all connections (else 503 ServiceUnavailable); at
    /// least 1 MiB, the largest body.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
    http_unverified_body_budget: usize,
    /// How long an HTTP answer may wait for a client that does not read.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    http_write_timeout: Duration,
    /// Once every listener is bound, write {"http":"ADDR","mqtt":"ADDR",...}
    /// here (with "https", "mqtts", "mqtt_ws", "mqtt_wss", "amqp", "amqps" for
    /// those on).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Create a demo product and device, and run the device in-process.
    /// Without --tls-cert, also make a local CA and a certificate for
    /// localhost in the data directory (once) and turn on HTTPS (8443),
    /// MQTTS (8883) and secure WebSocket (8884) unless given elsewhere.
    #[arg(long)]
    demo: bool,
    /// Refuse a device CONNECT whose signed `timestamp` is further than this
    /// from the server's clock (e.g. 15m), so a captured CONNECT cannot be
    /// replayed. Off by default, as on Alibaba (the C SDK signs a constant).
    #[arg(long, value_parser = parse_duration)]
    device_timestamp_window: Option<Duration>,
}

/// Parses `5s`, `800ms`, `2m` or a bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 5s, 800ms or 1m"))?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(format!("{s:?} is not a duration such as 5s, 800ms or 1m")),
    };
    if d.is_zero() {
        return Err("the duration must be greater than zero".to_owned());
    }
    Ok(d)
}

async fn bind(addr: SocketAddr, flag: &str) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                format!("{addr} is already in use; choose another address with {flag}")
            }
            _ => format!("cannot listen on {addr} ({flag}): {e}"),
        })
}

/// Where a listener goes: the address, and whether it is a default that
/// may move to a free port when taken (the demo's).
type At = Option<(SocketAddr, bool)>;

/// A bound listener, and the default port it had to leave because another
/// process held it.
struct Bound {
    listener: tokio::net::TcpListener,
    moved_from: Option<u16>,
}

impl Bound {
    fn addr(&self) -> Result<SocketAddr, String> {
        self.listener.local_addr().map_err(|e| e.to_string())
    }
}

/// What the banner adds to a listener's address that moved off a taken
/// default port.
fn moved(bound: Option<&Bound>) -> String {
    match bound.and_then(|b| b.moved_from) {
        Some(port) => format!(" (port {port} is taken: a free one instead)"),
        None => String::new(),
    }
}

/// Binds an optional listener; a default that may move (`true`) and is
/// taken falls back to a free port.
async fn bind_optional(at: At, flag: &str) -> Result<Option<Bound>, String> {
    let Some((addr, may_move)) = at else {
        return Ok(None);
    };
    match bind(addr, flag).await {
        Ok(listener) => Ok(Some(Bound {
            listener,
            moved_from: None,
        })),
        Err(_) if may_move => {
            let listener = bind(SocketAddr::new(addr.ip(), 0), flag).await?;
            Ok(Some(Bound {
                listener,
                moved_from: Some(addr.port()),
            }))
        }
        Err(e) => Err(e),
    }
}

/// Binds a listener that is always on (`--http`, `--mqtt`).
async fn bind_required(at: At, flag: &str) -> Result<Bound, String> {
    bind_optional(at, flag)
        .await?
        .ok_or_else(|| format!("{flag} has no address"))
}

/// How to point each SDK at the demo CA.
fn print_ca_help(
    ca: &std::path::Path,
    https: Option<SocketAddr>,
    mqtts: Option<SocketAddr>,
    wss: Option<SocketAddr>,
    amqps: Option<SocketAddr>,
) {
    let ca = ca.display();
    say!("  demo CA      {ca} (trust it, and only for this server):");
    if let Some(addr) = https {
        say!("    curl                    curl --cacert {ca} https://{addr}/...");
        say!("    aliyunsdkcore (Python)  ALIBABA_CLOUD_CA_BUNDLE={ca}, endpoint {addr}");
        say!("    tea SDKs (Python)       RuntimeOptions(ca='{ca}'), endpoint {addr}");
        say!("    thingcall api           --endpoint https://{addr} --ca-file {ca}");
    }
    if let Some(addr) = mqtts {
        say!(
            "    linkkit (Python)        config_mqtt(port={}, secure='TLS', cadata=open('{ca}').read(), endpoint='{}')",
            addr.port(),
            addr.ip()
        );
        say!("    Node device SDK         brokerUrl mqtts://{addr}, NODE_EXTRA_CA_CERTS={ca}");
    }
    if let Some(addr) = wss {
        say!("    browsers, mqtt.js       wss://{addr}/mqtt (subprotocol mqtt)");
    }
    if let Some(addr) = amqps {
        say!(
            "    AMQP consumers          thingcall subscribe --consumer-group DEFAULT_GROUP --endpoint amqps://{addr} --ca-file {ca}"
        );
        say!(
            "                            (proton: SSL_CERT_FILE={ca}; rhea: NODE_EXTRA_CA_CERTS={ca})"
        );
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

pub(crate) fn run(a: ServeArgs) -> Outcome {
    let access_key = match (a.access_key_id.clone(), a.access_key_secret.clone()) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
            thingcall_core::AccessKeyId::new(id.as_str())
                .map_err(|e| format!("--access-key-id: {e}"))?;
            Some((id, Secret::new(secret)))
        }
        (None, None) => None,
        _ => {
            return Err(
                "give both --access-key-id and --access-key-secret (or neither)".to_owned(),
            );
        }
    };
    let max_body = ServerConfig::default().max_body;
    if a.http_unverified_body_budget < max_body {
        return Err(format!(
            "--http-unverified-body-budget must be at least {max_body} bytes, the largest body"
        ));
    }
    if a.max_http_connections == 0 {
        return Err("--max-http-connections must be at least 1".to_owned());
    }
    let secrets_key = match (
        a.secrets_key_file.clone(),
        std::env::var("THINGCALL_SECRETS_KEY")
            .ok()
            .filter(|k| !k.is_empty()),
    ) {
        (Some(_), Some(_)) => {
            return Err(
                "give the secrets key once: --secrets-key-file or THINGCALL_SECRETS_KEY".into(),
            );
        }
        (Some(file), None) => SecretsKeySource::File(file),
        (None, Some(key)) => SecretsKeySource::Value(Secret::new(key)),
        (None, None) => SecretsKeySource::DataDir,
    };
    let store = match a.store.as_deref() {
        None | Some("") => StoreConfig::Sqlite,
        Some(url) => {
            StoreConfig::Postgres(PostgresUrl::parse(url).map_err(|e| format!("--store: {e}"))?)
        }
    };
    let cluster = match a.cluster.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(urls) => {
            if matches!(store, StoreConfig::Sqlite) {
                return Err(
                    "--cluster needs the PostgreSQL store that every node shares: give --store postgres://..."
                        .to_owned(),
                );
            }
            Some(ClusterConfig {
                nats: urls
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned)
                    .collect(),
                node_id: a.node_id.clone(),
            })
        }
    };
    if a.amqp.is_some() && a.require_tls_devices {
        return Err(
            "--amqp is plaintext and --require-tls-devices refuses plaintext: use --amqps".into(),
        );
    }
    if (a.amqp.is_some() || a.amqps.is_some()) && cluster.is_some() {
        return Err("server-side subscription (--amqp, --amqps) does not run in a cluster yet: a consumer group's backlog is delivered by one node".into());
    }
    // With --demo and no certificate of the operator's, the demo's own CA
    // and certificate are made (once) in the data directory: known now,
    // written only after every listener is bound.
    let demo_tls = a.demo && a.tls_cert.is_none();
    if a.tls_cert.is_none() && !demo_tls {
        for (given, flag) in [
            (a.https.is_some(), "--https"),
            (a.mqtts.is_some(), "--mqtts"),
            (a.mqtt_wss.is_some(), "--mqtt-wss"),
            (a.amqps.is_some(), "--amqps"),
            (a.require_tls_devices, "--require-tls-devices"),
        ] {
            if given {
                return Err(format!(
                    "{flag} needs a certificate: give --tls-cert CHAIN.pem --tls-key KEY.pem"
                ));
            }
        }
    }
    // The demo turns the TLS listeners on at well-known ports; one that is
    // taken falls back to a free port (the banner says which).
    let demo_default = |given: Option<SocketAddr>, port: u16| match given {
        Some(addr) => Some((addr, false)),
        None if demo_tls => Some((SocketAddr::from(([127, 0, 0, 1], port)), true)),
        None => None,
    };
    // The two listeners that are always on: a demo that finds a default
    // port taken (1883 often is, by another broker) moves to a free one
    // rather than stopping a newcomer at the first command.
    let always_on = |given: Option<SocketAddr>, port: u16| match given {
        Some(addr) => Some((addr, false)),
        None => Some((SocketAddr::from(([127, 0, 0, 1], port)), a.demo)),
    };
    let http_at = always_on(a.http, 8080);
    let mqtt_at = always_on(a.mqtt, 1883);
    let https_at = demo_default(a.https, 8443);
    let mqtts_at = demo_default(a.mqtts, 8883);
    let mqtt_wss_at = demo_default(a.mqtt_wss, 8884);
    let amqps_at = if cluster.is_some() {
        a.amqps.map(|at| (at, false))
    } else {
        demo_default(a.amqps, 5671)
    };
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        // Every listener is bound before anything is written: a taken port
        // stops the server before it creates a store, generates an
        // AccessKey it would show only once, or makes the demo CA.
        let http = bind_required(http_at, "--http").await?;
        let mqtt = bind_required(mqtt_at, "--mqtt").await?;
        let https = bind_optional(https_at, "--https").await?;
        let mqtts = bind_optional(mqtts_at, "--mqtts").await?;
        let mqtt_ws = bind_optional(a.mqtt_ws.map(|at| (at, false)), "--mqtt-ws").await?;
        let mqtt_wss = bind_optional(mqtt_wss_at, "--mqtt-wss").await?;
        let amqp = bind_optional(a.amqp.map(|at| (at, false)), "--amqp").await?;
        let amqps = bind_optional(amqps_at, "--amqps").await?;
        let (tls_files, demo_ca) = match (&a.tls_cert, &a.tls_key) {
            (Some(cert), Some(key)) => (Some(TlsFiles::new(cert, key)), None),
            _ if demo_tls => {
                let made = thingcall_tls::demo::ensure(&a.data_dir).map_err(|e| e.to_string())?;
                (Some(made.files), Some(made.ca))
            }
            _ => (None, None),
        };
        let tls = match tls_files {
            Some(files) => Some(ServerTls::load(files).map_err(|e| format!("TLS: {e}"))?),
            None => None,
        };
        let options = ServerOptions {
            config: ServerConfig {
                sync_timeout: a.sync_timeout,
                max_http_connections: a.max_http_connections,
                header_timeout: a.http_header_timeout,
                body_timeout: a.http_body_timeout,
                body_min_rate: a.http_body_min_rate,
                unverified_body_budget: a.http_unverified_body_budget,
                write_timeout: a.http_write_timeout,
                amqp: thingcall_amqp::AmqpConfig {
                    broker: thingcall_amqp::BrokerConfig {
                        retention: std::time::Duration::from_secs(
                            a.amqp_retention_hours.saturating_mul(3600),
                        ),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                ..ServerConfig::default()
            },
            gateway: thingcall_gateway::GatewayConfig {
                timestamp_window: a.device_timestamp_window,
                require_tls: a.require_tls_devices,
                max_connections: a.max_device_connections,
                ..Default::default()
            },
            data_dir: a.data_dir.clone(),
            store: store.clone(),
            secrets_key,
            access_key,
            cluster: cluster.clone(),
        };
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let server = match Server::open(options, Arc::clone(&clock)).await {
            Ok(s) => s,
            Err(e) => {
                // One line that names what is wrong (the database's host,
                // never its password); exit 1.
                note!("error: {}", e.message());
                return Ok(ExitCode::from(1));
            }
        };
        let (http_addr, mqtt_addr) = (http.addr()?, mqtt.addr()?);
        let optional_addr = |l: &Option<Bound>| match l {
            Some(l) => l.addr().map(Some),
            None => Ok(None),
        };
        let https_addr = optional_addr(&https)?;
        let mqtts_addr = optional_addr(&mqtts)?;
        let mqtt_ws_addr = optional_addr(&mqtt_ws)?;
        let mqtt_wss_addr = optional_addr(&mqtt_wss)?;
        let amqp_addr = optional_addr(&amqp)?;
        let amqps_addr = optional_addr(&amqps)?;
        say!("thingcall {} serving", env!("CARGO_PKG_VERSION"));
        say!("  HTTP API     http://{http_addr}/{}", moved(Some(&http)));
        if let Some(addr) = https_addr {
            say!("  HTTPS API    https://{addr}/{}", moved(https.as_ref()));
        }
        if tls.is_some() {
            say!(
                "  MQTT devices {mqtt_addr} (plain, or TLS told by the first byte){}",
                moved(Some(&mqtt))
            );
        } else {
            say!("  MQTT devices {mqtt_addr}{}", moved(Some(&mqtt)));
        }
        if let Some(addr) = mqtts_addr {
            say!("  MQTT/TLS     {addr}{}", moved(mqtts.as_ref()));
        }
        if let Some(addr) = mqtt_ws_addr {
            say!("  MQTT/WS      ws://{addr}/mqtt");
        }
        if let Some(addr) = mqtt_wss_addr {
            say!("  MQTT/WSS     wss://{addr}/mqtt{}", moved(mqtt_wss.as_ref()));
        }
        if let Some(addr) = amqp_addr {
            say!("  AMQP         amqp://{addr} (plaintext: development only)");
        }
        if let Some(addr) = amqps_addr {
            say!("  AMQP/TLS     amqps://{addr}{}", moved(amqps.as_ref()));
        }
        if let Some(t) = &tls {
            say!(
                "  certificate  {} (reloaded on SIGHUP and when it changes)",
                t.files().cert.display()
            );
        }
        if a.require_tls_devices {
            say!("  devices      TLS required: plaintext logins are refused");
        }
        match &store {
            StoreConfig::Sqlite => say!("  store        SQLite in {}", a.data_dir.display()),
            StoreConfig::Postgres(url) => say!("  store        {url}"),
        }
        if let (Some(c), Some(node)) = (&cluster, server.node_id()) {
            say!("  cluster      node {node} on {}", c.servers_shown());
        }
        // The key to show: one generated now (outside the demo, shown only
        // this once); with --demo and no key given, the store's, so a demo
        // started again (after a failed first start, say) still prints a
        // key and a working example.
        let shown_key = match server.generated_key() {
            Some(k) => Some((k.clone(), "generated AccessKey (shown only now, kept in the store)")),
            None if a.demo && a.access_key_id.is_none() => server
                .stored_access_key()
                .map(|k| (k, "AccessKey kept in the store (--demo shows it again)")),
            None => None,
        };
        if let Some((k, label)) = &shown_key {
            say!("  {label}:");
            say!("    AccessKeyId     {}", k.id);
            say!("    AccessKeySecret {}", k.secret.expose());
        }
        if let Some(path) = &a.ready_file {
            let mut ready = serde_json::json!({"http": http_addr.to_string(), "mqtt": mqtt_addr.to_string()});
            for (key, addr) in [
                ("https", https_addr),
                ("mqtts", mqtts_addr),
                ("mqtt_ws", mqtt_ws_addr),
                ("mqtt_wss", mqtt_wss_addr),
                ("amqp", amqp_addr),
                ("amqps", amqps_addr),
            ] {
                if let Some(addr) = addr {
                    ready[key] = serde_json::Value::String(addr.to_string());
                }
            }
            std::fs::write(path, ready.to_string())
                .map_err(|e| format!("--ready-file {}: {e}", path.display()))?;
        }
        if let Some(ca) = &demo_ca {
            print_ca_help(ca, https_addr, mqtts_addr, mqtt_wss_addr, amqps_addr);
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        if a.demo {
            let demo = server.ensure_demo().await?;
            let mut stop = stop_rx.clone();
            // A server that refuses plaintext devices gets a demo device on
            // TLS, trusting the demo CA.
            let transport = match (&demo_ca, a.require_tls_devices) {
                (Some(ca), true) => thingcall_gateway::client::Transport {
                    tls: Some(
                        thingcall_gateway::client::tls_trusting(ca).map_err(|e| e.to_string())?,
                    ),
                    websocket: false,
                },
                (None, true) => {
                    say!("  note: the demo device logs in without TLS and will be refused (--require-tls-devices with your own certificate)");
                    Default::default()
                }
                _ => Default::default(),
            };
            server
                .run_demo_device_over(&demo, mqtt_addr, transport, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            // The device line and the example come once the demo device is
            // online (the gateway accepts it as soon as the server serves,
            // below), so the example works when it is run at once; after
            // 10 s they come anyway.
            let gateway = server.gateway().cloned();
            let device = match (
                thingcall_core::ProductKey::new(demo.product_key.as_str()),
                thingcall_core::DeviceName::new(demo.device_name.as_str()),
            ) {
                (Ok(pk), Ok(dn)) => Some(thingcall_transport::DeviceKey::new(pk, dn)),
                _ => None,
            };
            let given = a.access_key_id.clone().zip(a.access_key_secret.clone());
            let key = shown_key.map(|(k, _)| k);
            let clock = Arc::clone(&clock);
            tokio::spawn(async move {
                use thingcall_transport::Transport as _;
                if let (Some(g), Some(d)) = (&gateway, &device) {
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                    while !g.is_online(d) && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                say!(
                    "  demo device  {}/{} (secret {})",
                    demo.product_key,
                    demo.device_name,
                    demo.device_secret.expose()
                );
                if let Some(line) = demo_curl(http_addr, &demo, given, key.as_ref(), clock.as_ref())
                {
                    say!("  try it (signed now: valid for 15 minutes, once):");
                    say!("    {line}");
                }
            });
        }
        let listener = |b: Option<Bound>| b.map(|b| b.listener);
        let listeners = Listeners {
            http: http.listener,
            https: listener(https),
            mqtt: mqtt.listener,
            mqtts: listener(mqtts),
            mqtt_ws: listener(mqtt_ws),
            mqtt_wss: listener(mqtt_wss),
            amqp: listener(amqp),
            amqps: listener(amqps),
            tls,
        };
        server
            .serve_on(listeners, shutdown_signal())
            .await
            .map_err(|e| e.to_string())?;
        let _ = stop_tx.send(true);
        Ok(ExitCode::SUCCESS)
    })
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// A signed `curl` line that calls the demo's sync service.
fn demo_curl(
    http: SocketAddr,
    demo: &thingcall_server::Demo,
    given: Option<(String, String)>,
    key: Option<&thingcall_server::GeneratedKey>,
    clock: &dyn Clock,
) -> Option<String> {
    let (id, secret) = match (given, key) {
        (Some(given), _) => given,
        (None, Some(g)) => (g.id.clone(), g.secret.expose().to_owned()),
        (None, None) => return None,
    };
    let now = clock.now();
    let nonce = format!("demo-{}", now.get());
    let mut params: Vec<(String, String)> = [
        ("Action", "InvokeThingService"),
        ("Version", "2018-01-20"),
        ("Format", "JSON"),
        ("AccessKeyId", id.as_str()),
        ("SignatureMethod", v1::SIGNATURE_METHOD),
        ("SignatureVersion", v1::SIGNATURE_VERSION),
        ("SignatureNonce", nonce.as_str()),
        ("Timestamp", &now.to_iso8601_seconds()),
        ("ProductKey", demo.product_key.as_str()),
        ("DeviceName", demo.device_name.as_str()),
        ("Identifier", demo.sync_service.as_str()),
        ("Args", r#"{"Offset":1.5}"#),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let signature = v1::sign("GET", &params, &secret);
    params.push(("Signature".to_owned(), signature));
    let query = encode_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    Some(format!("curl -s 'http://{http}/?{query}'"))
}
