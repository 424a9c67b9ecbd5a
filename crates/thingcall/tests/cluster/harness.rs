//! What the cluster tests run: a NATS cluster of three `nats-server`
//! processes on free ports, `thingcall serve` nodes on one PostgreSQL
//! database, simulated devices, and a TCP load balancer in front of the
//! nodes' MQTT listeners (the part HAProxy plays in a deployment).

#![allow(dead_code, unreachable_pub)] // each test uses part of this

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thingcall_core::{Clock, UnixMillis};
use thingcall_server::SystemClock;
use thingcall_sign::v1;
use thingcall_wire::form::encode_pairs;

use crate::common::{ID, SECRET, finish, store_args, temp_dir};

/// The NATS servers' password: no node may ever print it.
pub const NATS_PASSWORD: &str = "n4ts-s3cret-pw";

/// Whether the cluster tests must run (CI sets `THINGCALL_REQUIRE_CLUSTER=1`).
fn required() -> bool {
    std::env::var("THINGCALL_REQUIRE_CLUSTER").is_ok_and(|v| v == "1")
}

/// The model every test product publishes: `Calibrate` (sync) and
/// `Reboot` (async).
pub fn model_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../thingcall-server/demo/model.json")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} failed");
}

/// Three `nats-server` processes routed into one cluster. Servers ping
/// their clients every 2 s and drop one after 2 missed pings, so a frozen
/// node loses its subscriptions within seconds.
pub struct Nats {
    dir: PathBuf,
    servers: Vec<Option<Child>>,
    pub ports: Vec<u16>,
    monitors: Vec<u16>,
}

impl Nats {
    pub fn start(dir: &Path) -> Nats {
        // Free ports are picked by binding port 0 and letting it go, so a
        // test running beside this one may take one first: then the
        // cluster does not form, and it is started again on other ports.
        for attempt in 1..=3 {
            if let Some(nats) = Nats::try_start(dir) {
                return nats;
            }
            eprintln!("the NATS cluster did not form (attempt {attempt}); new ports");
        }
        panic!("the NATS cluster never formed");
    }

    fn try_start(dir: &Path) -> Option<Nats> {
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let monitors: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut servers = Vec::new();
        for i in 0..3 {
            let others: Vec<String> = (0..3)
                .filter(|j| *j != i)
                .map(|j| format!("nats-route://127.0.0.1:{}", routes[j]))
                .collect();
            let config = format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\n\
                 ping_interval: \"2s\"\nping_max: 2\nwrite_deadline: \"2s\"\n\
                 authorization {{ user: thingcall, password: \"{NATS_PASSWORD}\" }}\n\
                 cluster {{\n  name: thingcall\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                ports[i],
                monitors[i],
                routes[i],
                others.join(", ")
            );
            let path = dir.join(format!("nats-{i}.conf"));
            std::fs::write(&path, config).unwrap();
            let log = std::fs::File::create(dir.join(format!("nats-{i}.log"))).unwrap();
            let child = Command::new("nats-server")
                .arg("-c")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("nats-server");
            servers.push(Some(child));
        }
        // Every server routed to both others.
        let deadline = Instant::now() + Duration::from_secs(10);
        for m in &monitors {
            loop {
                let routed = http_get(&format!("127.0.0.1:{m}"), "/routez")
                    .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
                    .is_some_and(|v| v["num_routes"].as_u64() == Some(2));
                if routed {
                    break;
                }
                if Instant::now() >= deadline {
                    for child in servers.iter_mut().flatten() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    return None;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Some(Nats {
            dir: dir.to_owned(),
            servers,
            ports,
            monitors,
        })
    }

    /// `nats://...` for every server, comma-separated, with the password.
    pub fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("nats://thingcall:{NATS_PASSWORD}@127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The running server a client (by connection name) is connected to.
    pub fn server_of(&self, client: &str) -> Option<usize> {
        (0..self.servers.len()).find(|i| {
            self.servers[*i].is_some()
                && http_get(&format!("127.0.0.1:{}", self.monitors[*i]), "/connz")
                    .is_some_and(|b| b.contains(&format!("\"name\": \"{client}\"")))
        })
    }

    /// Kills server `i` (-9).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.servers[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// What server `i` logged.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("nats-{i}.log"))).unwrap_or_default()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}

/// One `thingcall serve` node.
pub struct Node {
    pub name: String,
    dir: PathBuf,
    child: Option<Child>,
    pub http: String,
    pub mqtt: String,
    args: Vec<String>,
}

impl Node {
    /// Starts (or restarts) the node and waits until it is ready.
    fn spawn(&mut self) {
        let ready = self.dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_thingcall"))
            .arg("serve")
            .args(&self.args)
            .arg("--ready-file")
            .arg(&ready)
            .env(
                "RUST_LOG",
                std::env::var("THINGCALL_NODE_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .stdout(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join("node.out"))
                    .unwrap(),
            )
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            {
                self.http = v["http"].as_str().unwrap().to_owned();
                self.mqtt = v["mqtt"].as_str().unwrap().to_owned();
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("node {} exited ({status}):\n{}", self.name, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "node {} never became ready:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and waits for the drain to end.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("the node is not running");
        signal(&c, "-TERM");
        c.wait().unwrap()
    }

    pub fn freeze(&self) {
        signal(self.child.as_ref().unwrap(), "-STOP");
    }

    pub fn thaw(&self) {
        signal(self.child.as_ref().unwrap(), "-CONT");
    }

    /// Restarts a stopped node, with the given flags set to new values.
    pub fn restart(&mut self, flags: &[(&str, &str)]) {
        assert!(self.child.is_none(), "stop the node first");
        for (flag, value) in flags {
            match self.args.iter().position(|a| a == flag) {
                Some(i) => self.args[i + 1] = (*value).to_owned(),
                None => self.args.extend([(*flag).to_owned(), (*value).to_owned()]),
            }
        }
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    /// What the node printed on its standard output (the banner).
    pub fn banner(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.out")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A frozen node cannot die until it runs again.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill9();
    }
}

/// A NATS cluster, nodes on one database, and a balancer.
pub struct Cluster {
    pub dir: PathBuf,
    pub nats: Nats,
    pub nodes: Vec<Node>,
    pub balancer: Balancer,
}

impl Cluster {
    /// Starts `n` nodes (A, B, C, ...); `None` when the machine cannot
    /// (no PostgreSQL named, no `nats-server`) and the run does not
    /// require it.
    pub async fn start(tag: &str, n: usize) -> Option<Cluster> {
        if crate::common::test_postgres().is_none() {
            assert!(
                !required(),
                "THINGCALL_REQUIRE_CLUSTER=1 but THINGCALL_TEST_POSTGRES names no server"
            );
            eprintln!("skipped: the cluster tests need THINGCALL_TEST_POSTGRES");
            return None;
        }
        if Command::new("nats-server")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                !required(),
                "THINGCALL_REQUIRE_CLUSTER=1 but nats-server is missing"
            );
            eprintln!("skipped: nats-server is not installed");
            return None;
        }
        let dir = temp_dir(&format!("cluster-{tag}"));
        // The helpers run a runtime of their own: off this one's threads.
        let store = {
            let dir = dir.clone();
            std::thread::spawn(move || store_args(&dir)).join().unwrap()
        };
        let nats = Nats::start(&dir);
        let mut nodes = Vec::new();
        for i in 0..n {
            let name = ((b'A' + u8::try_from(i).unwrap()) as char).to_string();
            let node_dir = dir.join(&name);
            std::fs::create_dir_all(&node_dir).unwrap();
            let mut args: Vec<String> = vec![
                "--http".into(),
                "127.0.0.1:0".into(),
                "--mqtt".into(),
                "127.0.0.1:0".into(),
                "--data-dir".into(),
                node_dir.join("data").to_string_lossy().into_owned(),
                "--access-key-id".into(),
                ID.into(),
                "--access-key-secret".into(),
                SECRET.into(),
                "--cluster".into(),
                nats.urls(),
                "--node-id".into(),
                format!("node-{name}"),
            ];
            args.extend(store.iter().cloned());
            let mut node = Node {
                name,
                dir: node_dir,
                child: None,
                http: String::new(),
                mqtt: String::new(),
                args,
            };
            node.spawn();
            nodes.push(node);
        }
        let balancer = Balancer::start(nodes.iter().map(|n| n.mqtt.clone()).collect()).await;
        Some(Cluster {
            dir,
            nats,
            nodes,
            balancer,
        })
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap()
    }

    pub fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap()
    }

    /// No node printed or logged a password (NATS's, or an AccessKey
    /// secret); each did show where its NATS servers are.
    pub fn assert_no_secret_shown(&self) {
        for n in &self.nodes {
            let (log, banner) = (n.log(), n.banner());
            for secret in [NATS_PASSWORD, SECRET] {
                assert!(!log.contains(secret), "node {} logged a secret", n.name);
                assert!(!banner.contains(secret), "node {} printed a secret", n.name);
            }
            assert!(banner.contains("***@127.0.0.1:"), "{banner}");
        }
    }

    /// Every node's log, for a failure's message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push_str(&format!("===== node {}\n{}\n", n.name, n.log()));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
            for i in 0..3 {
                eprintln!("===== nats {i}\n{}", self.nats.log(i));
            }
        }
        self.nodes.clear();
        let dir = self.dir.clone();
        let _ = std::thread::spawn(move || finish(&dir)).join();
    }
}

/// A TCP balancer: each connection goes to the first backend (in the
/// current order) that accepts it, as HAProxy does with health checks.
pub struct Balancer {
    pub addr: String,
    backends: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    pub async fn start(backends: Vec<String>) -> Balancer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let backends = Arc::new(Mutex::new(backends));
        let list = Arc::clone(&backends);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let candidates = list.lock().unwrap().clone();
                tokio::spawn(async move {
                    for backend in candidates {
                        let connect = tokio::net::TcpStream::connect(&backend);
                        if let Ok(Ok(mut outbound)) =
                            tokio::time::timeout(Duration::from_millis(500), connect).await
                        {
                            let _ = outbound.set_nodelay(true);
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Balancer {
            addr,
            backends,
            task,
        }
    }

    /// Sends new connections to these backends, in this order.
    pub fn route_to(&self, backends: &[&str]) {
        *self.backends.lock().unwrap() = backends.iter().map(|s| (*s).to_owned()).collect();
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A simulated device: `thingcall device simulate`, which reconnects by
/// itself after a lost connection.
pub struct Sim(Child);

impl Sim {
    pub fn start(mqtt: &str, pk: &str, dn: &str, secret: &str, latency_ms: u64) -> Sim {
        let child = Command::new(env!("CARGO_BIN_EXE_thingcall"))
            .args([
                "device",
                "simulate",
                "--mqtt",
                mqtt,
                "--product-key",
                pk,
                "--device-name",
                dn,
                "--device-secret",
                secret,
                "--latency",
                &latency_ms.to_string(),
                "--tsl",
            ])
            .arg(model_path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Sim(child)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "c{}-{}-{}",
        std::process::id(),
        SystemClock.now().get(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A v1-signed GET of `action` with `extra`, and its nonce.
pub fn signed_query(action: &str, extra: &[(&str, &str)], nonce: &str) -> String {
    signed_query_as(ID, SECRET, action, extra, nonce)
}

/// [`signed_query`] with another AccessKey.
pub fn signed_query_as(
    id: &str,
    secret: &str,
    action: &str,
    extra: &[(&str, &str)],
    nonce: &str,
) -> String {
    let now = SystemClock.now();
    let mut params: Vec<(String, String)> = [
        ("Action", action),
        ("Version", "2018-01-20"),
        ("Format", "JSON"),
        ("AccessKeyId", id),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", nonce),
        (
            "Timestamp",
            &UnixMillis::new(now.get()).to_iso8601_seconds(),
        ),
    ]
    .iter()
    .chain(extra.iter())
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let sig = v1::sign("GET", &params, secret);
    params.push(("Signature".into(), sig));
    encode_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// Sends a signed query to a node; the JSON answer.
pub async fn get(http: &str, query: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(http).await?;
        s.write_all(
            format!("GET /?{query} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<String, std::io::Error>(out)
    };
    let out = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("the node did not answer within 30 s")
        .expect("HTTP exchange");
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {out}"))
}

/// Calls `action` on a node (v1 signature, fresh nonce).
pub async fn api(http: &str, action: &str, extra: &[(&str, &str)]) -> serde_json::Value {
    get(http, &signed_query(action, extra, &nonce())).await
}

/// A product with the test model, published; its key.
pub async fn product(http: &str, name: &str) -> String {
    let created = api(
        http,
        "CreateProduct",
        &[
            ("ProductName", name),
            ("NodeType", "0"),
            ("AliyunCommodityCode", "iothub_senior"),
            ("DataFormat", "1"),
        ],
    )
    .await;
    assert_eq!(created["Success"], true, "{created}");
    let pk = created["ProductKey"].as_str().unwrap().to_owned();
    let tsl = std::fs::read_to_string(model_path()).unwrap();
    let imported = api(
        http,
        "ImportThingModelTsl",
        &[("ProductKey", &pk), ("TslStr", &tsl)],
    )
    .await;
    assert_eq!(imported["Success"], true, "{imported}");
    let published = api(
        http,
        "PublishThingModel",
        &[("ProductKey", &pk), ("ModelVersion", "v1")],
    )
    .await;
    assert_eq!(published["Success"], true, "{published}");
    pk
}

/// Registers a device; (iot id, secret).
pub async fn device(http: &str, pk: &str, dn: &str) -> (String, String) {
    let r = api(
        http,
        "RegisterDevice",
        &[("ProductKey", pk), ("DeviceName", dn)],
    )
    .await;
    assert_eq!(r["Success"], true, "{r}");
    (
        r["Data"]["IotId"].as_str().unwrap().to_owned(),
        r["Data"]["DeviceSecret"].as_str().unwrap().to_owned(),
    )
}

/// The device's status as a node tells it.
pub async fn status(http: &str, pk: &str, dn: &str) -> String {
    let r = api(
        http,
        "GetDeviceStatus",
        &[("ProductKey", pk), ("DeviceName", dn)],
    )
    .await;
    r["Data"]["Status"].as_str().unwrap_or("?").to_owned()
}

/// Waits until `probe` holds, for at most `within`; how long it took.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if probe().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A sync call of `Calibrate`; the whole answer and how long it took.
pub async fn calibrate(http: &str, pk: &str, dn: &str) -> (serde_json::Value, Duration) {
    let start = Instant::now();
    let r = api(
        http,
        "InvokeThingService",
        &[
            ("ProductKey", pk),
            ("DeviceName", dn),
            ("Identifier", "Calibrate"),
            ("Args", r#"{"Offset":1.5}"#),
        ],
    )
    .await;
    (r, start.elapsed())
}
