//! A server on port 0 with a fixed AccessKey, and a small signed HTTP client.

#![allow(dead_code, unreachable_pub)] // each test file uses part of this

pub mod peers;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thingcall_core::{Clock, DeviceName, ProductKey, Secret};
use thingcall_gateway::GatewayConfig;
use thingcall_gateway::simulator::{self, SimulatorConfig};
use thingcall_server::{
    Listeners, PostgresUrl, Server, ServerConfig, ServerOptions, StoreConfig, SystemClock,
};
use thingcall_sign::v1;
use thingcall_transport::DeviceKey;
use thingcall_tsl::CompiledModel;
use thingcall_wire::form::encode_pairs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const KEY_ID: &str = "testid";
pub const KEY_SECRET: &str = "testsecret";

pub struct Harness {
    pub http: String,
    pub mqtt: String,
    /// Plaintext AMQP (server-side subscription).
    pub amqp: String,
    /// The TLS listeners and the CA to trust, for [`Harness::start_tls`].
    pub tls: Option<TlsListeners>,
    pub data_dir: PathBuf,
    /// The PostgreSQL database of this harness, when the tests run on
    /// PostgreSQL (`THINGCALL_TEST_POSTGRES`): one per data directory.
    pub postgres: Option<PostgresUrl>,
    config: ServerConfig,
    clock: Arc<dyn Clock>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// The PostgreSQL server the tests run against, if any
/// (`THINGCALL_TEST_POSTGRES=postgres://USER@HOST[:PORT]/DB`). With
/// `THINGCALL_REQUIRE_POSTGRES=1` it must be set.
pub fn test_postgres() -> Option<PostgresUrl> {
    match std::env::var("THINGCALL_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(PostgresUrl::parse(&url).unwrap()),
        _ => {
            assert!(
                std::env::var("THINGCALL_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "THINGCALL_REQUIRE_POSTGRES=1 but THINGCALL_TEST_POSTGRES names no server"
            );
            None
        }
    }
}

/// The database a data directory's server uses on the test server.
fn database_for(dir: &std::path::Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    format!("thingcall_t_{:016x}", h.finish())
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let n: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let dir = std::env::temp_dir().join(format!("thingcall-{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Where a TLS harness listens, and its certificate.
pub struct TlsListeners {
    pub https: String,
    pub mqtts: String,
    pub mqtt_ws: String,
    pub mqtt_wss: String,
    /// AMQP over TLS (server-side subscription).
    pub amqps: String,
    /// AMQP in plaintext.
    pub amqp: String,
    /// The demo CA (PEM) that signed the server's certificate.
    pub ca: PathBuf,
    /// The server's certificate store (tests reload it).
    pub server_tls: thingcall_tls::ServerTls,
}

async fn bind0() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap().to_string();
    (l, a)
}

/// The key that seals the test stores' secrets: a fixed one, so a test
/// that opens its store again (or another server on the same database)
/// has it. (The SQLite store's own key file is tested in secrets.rs.)
pub const TEST_SECRETS_KEY: &str = "dGhpbmdjYWxsLXRlc3Qtc2VjcmV0cy1rZXktMzJieSE=";

/// [`TEST_SECRETS_KEY`] as a server option.
pub fn test_secrets_key() -> thingcall_server::SecretsKeySource {
    thingcall_server::SecretsKeySource::Value(Secret::new(TEST_SECRETS_KEY))
}

/// Opens a server on `data_dir` (or, when the tests run on PostgreSQL, on
/// the database of that directory, created if missing) with the test key.
async fn open(
    data_dir: &std::path::Path,
    config: &ServerConfig,
    gateway: GatewayConfig,
    clock: &Arc<dyn Clock>,
) -> (Server, Option<PostgresUrl>) {
    let postgres = match test_postgres() {
        Some(server) => {
            let name = database_for(data_dir);
            server.create_database(&name).await.unwrap();
            Some(server.with_database(&name))
        }
        None => None,
    };
    let options = ServerOptions {
        config: config.clone(),
        gateway,
        data_dir: data_dir.to_owned(),
        store: match &postgres {
            Some(url) => StoreConfig::Postgres(url.clone()),
            None => StoreConfig::Sqlite,
        },
        secrets_key: match &postgres {
            Some(_) => test_secrets_key(),
            None => Default::default(),
        },
        access_key: Some((KEY_ID.to_owned(), Secret::new(KEY_SECRET))),
        cluster: None,
    };
    let server = Server::open(options, Arc::clone(clock)).await.unwrap();
    (server, postgres)
}

impl Harness {
    /// A server with every listener on (HTTPS, MQTTS, ws, wss, and TLS by
    /// first byte on the MQTT port), a demo CA in its data directory, and
    /// the gateway settings given.
    pub async fn start_tls(config: ServerConfig, gateway: GatewayConfig) -> Harness {
        let data_dir = temp_dir("tls");
        let made = thingcall_tls::demo::ensure(&data_dir).unwrap();
        let server_tls = thingcall_tls::ServerTls::load(made.files.clone()).unwrap();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let (server, postgres) = open(&data_dir, &config, gateway, &clock).await;
        let (http, h) = bind0().await;
        let (mqtt, m) = bind0().await;
        let (https, https_addr) = bind0().await;
        let (mqtts, mqtts_addr) = bind0().await;
        let (mqtt_ws, ws_addr) = bind0().await;
        let (mqtt_wss, wss_addr) = bind0().await;
        let (amqp, amqp_addr) = bind0().await;
        let (amqps, amqps_addr) = bind0().await;
        let listeners = Listeners {
            http,
            https: Some(https),
            mqtt,
            mqtts: Some(mqtts),
            mqtt_ws: Some(mqtt_ws),
            mqtt_wss: Some(mqtt_wss),
            amqp: Some(amqp),
            amqps: Some(amqps),
            tls: Some(server_tls.clone()),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve_on(listeners, async move {
            let _ = stopped.await;
        }));
        Harness {
            http: h,
            mqtt: m,
            amqp: amqp_addr.clone(),
            tls: Some(TlsListeners {
                https: https_addr,
                mqtts: mqtts_addr,
                mqtt_ws: ws_addr,
                mqtt_wss: wss_addr,
                amqps: amqps_addr,
                amqp: amqp_addr,
                ca: made.ca,
                server_tls,
            }),
            data_dir,
            postgres,
            config,
            clock,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn start(config: ServerConfig) -> Harness {
        Harness::start_in(temp_dir("server"), config).await
    }

    pub async fn start_in(data_dir: PathBuf, config: ServerConfig) -> Harness {
        Harness::start_with_clock(data_dir, config, Arc::new(SystemClock)).await
    }

    pub async fn start_with_clock(
        data_dir: PathBuf,
        config: ServerConfig,
        clock: Arc<dyn Clock>,
    ) -> Harness {
        let (server, postgres) = open(&data_dir, &config, GatewayConfig::default(), &clock).await;
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mqtt = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (h, m) = (
            http.local_addr().unwrap().to_string(),
            mqtt.local_addr().unwrap().to_string(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (amqp, amqp_addr) = bind0().await;
        let listeners = Listeners {
            amqp: Some(amqp),
            ..Listeners::plain(http, mqtt)
        };
        let task = tokio::spawn(server.serve_on(listeners, async move {
            let _ = stopped.await;
        }));
        Harness {
            http: h,
            mqtt: m,
            amqp: amqp_addr,
            tls: None,
            data_dir,
            postgres,
            config,
            clock,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn shut_down(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }

    /// Stops the server and starts it again on the same data (directory or
    /// database).
    pub async fn restart(mut self) -> Harness {
        self.shut_down().await;
        let (dir, config, clock) = (
            self.data_dir.clone(),
            self.config.clone(),
            Arc::clone(&self.clock),
        );
        Harness::start_with_clock(dir, config, clock).await
    }

    /// Stops the server and drops its PostgreSQL database, if it has one.
    pub async fn stop(mut self) {
        self.shut_down().await;
        if let (Some(server), Some(url)) = (test_postgres(), &self.postgres) {
            server.drop_database(url.database().unwrap()).await.unwrap();
        }
    }
}

/// A raw HTTP/1.1 exchange; returns the status and the body.
pub async fn raw(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    // A server that closes the connection at once (every slot taken) may
    // reset it under the request: what arrived, if anything, is the answer
    // (status 0 for none).
    let mut out = Vec::new();
    if stream.write_all(req.as_bytes()).await.is_ok() && stream.write_all(body).await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut out))
            .await
            .expect("no answer within 30 s");
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_owned();
    (status, content_type, body.to_owned())
}

/// The common v1 parameters, fresh timestamp and nonce.
pub fn common(action: &str) -> Vec<(String, String)> {
    let now = SystemClock.now();
    let nonce = format!("{}-{}", now.get(), rand_suffix());
    vec![
        ("Action".into(), action.into()),
        ("Version".into(), "2018-01-20".into()),
        ("Format".into(), "JSON".into()),
        ("AccessKeyId".into(), KEY_ID.into()),
        ("SignatureMethod".into(), "HMAC-SHA1".into()),
        ("SignatureVersion".into(), "1.0".into()),
        ("SignatureNonce".into(), nonce),
        ("Timestamp".into(), now.to_iso8601_seconds()),
    ]
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Signs `params` (v1, GET) and returns the query string.
pub fn signed_query(mut params: Vec<(String, String)>, method: &str) -> String {
    let sig = v1::sign(method, &params, KEY_SECRET);
    params.push(("Signature".into(), sig));
    encode_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// A signed GET of `action` with extra parameters; returns status and JSON.
pub async fn call(addr: &str, action: &str, extra: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let mut params = common(action);
    params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let (status, _, body) = raw(
        addr,
        "GET",
        &format!("/?{}", signed_query(params, "GET")),
        &[],
        b"",
    )
    .await;
    let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    (status, json)
}

/// Like `call` but asserts success and returns the body.
pub async fn ok(addr: &str, action: &str, extra: &[(&str, &str)]) -> serde_json::Value {
    let (status, body) = call(addr, action, extra).await;
    assert_eq!(status, 200, "{action}: {body}");
    assert_eq!(body["Success"], true, "{action}: {body}");
    body
}

pub const MODEL: &str = include_str!("../../demo/model.json");

/// Creates a thing-model product with the demo model published; returns its key.
pub async fn product(addr: &str, name: &str) -> String {
    let body = ok(
        addr,
        "CreateProduct",
        &[
            ("ProductName", name),
            ("NodeType", "0"),
            ("AliyunCommodityCode", "iothub_senior"),
            ("DataFormat", "1"),
        ],
    )
    .await;
    let pk = body["ProductKey"].as_str().unwrap().to_owned();
    ok(
        addr,
        "ImportThingModelTsl",
        &[("ProductKey", &pk), ("TslStr", MODEL)],
    )
    .await;
    ok(addr, "PublishThingModel", &[("ProductKey", &pk)]).await;
    pk
}

/// Registers a device; returns (iot_id, secret).
pub async fn device(addr: &str, pk: &str, name: &str) -> (String, String) {
    let body = ok(
        addr,
        "RegisterDevice",
        &[("ProductKey", pk), ("DeviceName", name)],
    )
    .await;
    (
        body["Data"]["IotId"].as_str().unwrap().to_owned(),
        body["Data"]["DeviceSecret"].as_str().unwrap().to_owned(),
    )
}

pub fn model() -> Arc<CompiledModel> {
    Arc::new(CompiledModel::compile(thingcall_tsl::check_str(MODEL).unwrap()).unwrap())
}

pub async fn simulate(
    mqtt: &str,
    pk: &str,
    dn: &str,
    secret: &str,
) -> tokio::sync::oneshot::Sender<()> {
    simulate_over(mqtt, Default::default(), pk, dn, secret)
}

/// A simulated device over `transport` (TLS, WebSocket); sending on, or
/// dropping, the returned sender stops it.
pub fn simulate_over(
    mqtt: &str,
    transport: thingcall_gateway::client::Transport,
    pk: &str,
    dn: &str,
    secret: &str,
) -> tokio::sync::oneshot::Sender<()> {
    let cfg = SimulatorConfig {
        seed: 3,
        transport,
        ..SimulatorConfig::new(
            mqtt,
            DeviceKey::new(ProductKey::new(pk).unwrap(), DeviceName::new(dn).unwrap()),
            Secret::new(secret),
            model(),
        )
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _keep = rx;
        simulator::run(cfg, tx, async move {
            let _ = stopped.await;
        })
        .await
    });
    stop
}

pub async fn wait_status(addr: &str, iot_id: &str, want: &str) {
    for _ in 0..200 {
        let body = ok(addr, "GetDeviceStatus", &[("IotId", iot_id)]).await;
        if body["Data"]["Status"] == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{iot_id} never became {want}");
}
