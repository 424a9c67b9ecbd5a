//! The client against an in-process thingcall server (every action, JSON and
//! XML, v1 and v3), over TLS with a generated certificate, and byte for byte
//! against the official Python SDK's wire capture.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::sync::Arc;
use std::time::Duration;

use thingcall_client::actions::*;
use thingcall_client::{Client, Credentials, ErrorKind, SignatureVersion, request};
use thingcall_core::{DeviceName, DeviceRef, Identifier, IotId, ProductKey, Secret, UnixMillis};
use thingcall_gateway::simulator::{self, SimulatorConfig};
use thingcall_server::{Server, ServerConfig, ServerOptions, SystemClock};
use thingcall_transport::DeviceKey;
use thingcall_wire::Format;

const MODEL: &str = include_str!("../../thingcall-server/demo/model.json");

struct Running {
    http: String,
    mqtt: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn server(sync_timeout: Duration) -> Running {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let now = thingcall_core::Clock::now(&SystemClock).get();
    let dir =
        std::env::temp_dir().join(format!("thingcall-client-{}-{now}-{n}", std::process::id()));
    let options = ServerOptions {
        config: ServerConfig {
            sync_timeout,
            ..ServerConfig::default()
        },
        gateway: Default::default(),
        data_dir: dir,
        store: Default::default(),
        secrets_key: Default::default(),
        access_key: Some(("clientid".into(), Secret::new("clientsecret"))),
        cluster: None,
    };
    let s = Server::open(options, Arc::new(SystemClock)).await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mqtt = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (h, m) = (
        http.local_addr().unwrap().to_string(),
        mqtt.local_addr().unwrap().to_string(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(s.serve(http, mqtt, async move {
        let _ = stopped.await;
    }));
    Running {
        http: h,
        mqtt: m,
        _stop: stop,
    }
}

fn client(url: &str, signature: SignatureVersion, format: Format) -> Client {
    Client::builder()
        .endpoint_url(url)
        .unwrap()
        .credentials(Credentials::new("clientid", "clientsecret"))
        .signature(signature)
        .format(format)
        .retries(0)
        .build()
        .unwrap()
}

fn run_device(mqtt: &str, pk: &str, dn: &str, secret: &str) -> tokio::sync::oneshot::Sender<()> {
    let model = Arc::new(
        thingcall_tsl::CompiledModel::compile(thingcall_tsl::check_str(MODEL).unwrap()).unwrap(),
    );
    let cfg = SimulatorConfig {
        seed: 9,
        ..SimulatorConfig::new(
            mqtt,
            DeviceKey::new(ProductKey::new(pk).unwrap(), DeviceName::new(dn).unwrap()),
            Secret::new(secret),
            model,
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

fn name_ref(pk: &str, dn: &str) -> DeviceRef {
    DeviceRef::Name {
        product_key: ProductKey::new(pk).unwrap(),
        device_name: DeviceName::new(dn).unwrap(),
    }
}

async fn every_action(c: &Client, mqtt: &str, tag: &str) {
    let created = c
        .call(&CreateProduct {
            aliyun_commodity_code: Some("iothub_senior".into()),
            data_format: Some(1),
            description: Some("client test".into()),
            publish_auto: Some(false),
            ..CreateProduct::new(format!("Client_{tag}"), 0)
        })
        .await
        .unwrap();
    let pk = created.product_key.clone();
    let pkey = ProductKey::new(pk.as_str()).unwrap();
    let q = c.call(&QueryProduct::new(pkey.clone())).await.unwrap();
    assert_eq!(q.0.product_name, format!("Client_{tag}"));
    c.call(&ImportThingModelTsl::new(pkey.clone(), MODEL))
        .await
        .unwrap();
    c.call(&PublishThingModel {
        model_version: Some("v1".into()),
        ..PublishThingModel::new(pkey.clone())
    })
    .await
    .unwrap();
    let draft = c.call(&GetThingModelTsl::new(pkey.clone())).await.unwrap();
    assert!(draft.0.tsl_str.contains("Calibrate"));
    let published = c
        .call(&GetThingModelTslPublished {
            model_version: Some("v1".into()),
            simple: Some(true),
            ..GetThingModelTslPublished::new(pkey.clone())
        })
        .await
        .unwrap();
    assert!(published.0.tsl_str.contains("Reboot"));
    let reg = c
        .call(&RegisterDevice::new(
            pkey.clone(),
            Some(DeviceName::new("cdev1").unwrap()),
        ))
        .await
        .unwrap();
    assert_eq!(reg.0.device_name, "cdev1");
    let iot = DeviceRef::IotId(IotId::new(reg.0.iot_id.as_str()).unwrap());
    let status = c.call(&GetDeviceStatus::new(iot.clone())).await.unwrap();
    assert_eq!(status.0.status, DeviceStatus::Unactive);

    let stop = run_device(mqtt, &pk, "cdev1", reg.0.device_secret.expose());
    for _ in 0..200 {
        if c.call(&GetDeviceStatus::new(iot.clone()))
            .await
            .unwrap()
            .0
            .status
            == DeviceStatus::Online
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let detail = c
        .call(&QueryDeviceDetail::new(name_ref(&pk, "cdev1")))
        .await
        .unwrap();
    assert_eq!(detail.0.status, DeviceStatus::Online);
    let sync = c
        .call(&InvokeThingService::new(
            iot.clone(),
            Identifier::new("Calibrate").unwrap(),
            r#"{"Offset":1.5}"#,
        ))
        .await
        .unwrap();
    assert!(sync.0.result.unwrap().contains("Result"));
    let asyn = c
        .call(&InvokeThingService::new(
            iot.clone(),
            Identifier::new("Reboot").unwrap(),
            "{}",
        ))
        .await
        .unwrap();
    assert!(asyn.0.result.is_none() && asyn.0.message_id.is_some());
    c.call(&InvokeThingsService::new(
        pkey.clone(),
        vec![DeviceName::new("cdev1").unwrap()],
        Identifier::new("Reboot").unwrap(),
        "{}",
    ))
    .await
    .unwrap();
    let page = c
        .call(&QueryDeviceServiceData {
            asc: Some(1),
            page_size: Some(10),
            ..QueryDeviceServiceData::new(iot.clone(), 0, 9_999_999_999_999)
        })
        .await
        .unwrap();
    assert!(page.0.list.len() >= 3);
    c.call(&DisableThing::new(iot.clone())).await.unwrap();
    let err = c
        .call(&InvokeThingService::new(
            iot.clone(),
            Identifier::new("Calibrate").unwrap(),
            "{}",
        ))
        .await
        .unwrap_err();
    assert!(err.is_business() && err.request_id().is_some());
    c.call(&EnableThing::new(iot.clone())).await.unwrap();
    let _ = stop.send(());
    c.call(&DeleteDevice::new(iot.clone())).await.unwrap();
    c.call(&DeleteProduct::new(pkey)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_in_json_and_xml_with_v1_and_v3() {
    let s = server(Duration::from_secs(3)).await;
    let url = format!("http://{}", s.http);
    every_action(
        &client(&url, SignatureVersion::V1, Format::Json),
        &s.mqtt,
        "json",
    )
    .await;
    every_action(
        &client(&url, SignatureVersion::V1, Format::Xml),
        &s.mqtt,
        "xml",
    )
    .await;
    every_action(
        &client(&url, SignatureVersion::V3, Format::Json),
        &s.mqtt,
        "v3",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_predicates() {
    let s = server(Duration::from_millis(300)).await;
    let url = format!("http://{}", s.http);
    let c = client(&url, SignatureVersion::V1, Format::Json);
    let missing = c
        .call(&GetDeviceStatus::new(DeviceRef::IotId(
            IotId::new("nope000100").unwrap(),
        )))
        .await
        .unwrap_err();
    assert_eq!(
        (missing.kind(), missing.code()),
        (ErrorKind::Business, Some("iot.device.NotExistedDevice"))
    );
    let wrong = Client::builder()
        .endpoint_url(&url)
        .unwrap()
        .credentials(Credentials::new("clientid", "wrong"))
        .build()
        .unwrap();
    let e = wrong
        .call(&QueryProduct::new(ProductKey::new("a1x").unwrap()))
        .await
        .unwrap_err();
    assert!(
        e.is_signature_mismatch()
            && e.is_gateway()
            && e.http_status() == Some(400)
            && e.request_id().is_some()
    );
    for format in [Format::Json, Format::Xml] {
        let e = Client::builder()
            .endpoint_url(&url)
            .unwrap()
            .credentials(Credentials::new("nobody", "x"))
            .format(format)
            .build()
            .unwrap()
            .call(&QueryProduct::new(ProductKey::new("a1x").unwrap()))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("InvalidAccessKeyId.NotFound"), "{format:?}");
    }

    // Offline and timeout, with a device that never answers.
    let pk = c
        .call(&CreateProduct {
            aliyun_commodity_code: Some("iothub_senior".into()),
            data_format: Some(1),
            ..CreateProduct::new("Pred_1", 0)
        })
        .await
        .unwrap()
        .product_key;
    let pkey = ProductKey::new(pk.as_str()).unwrap();
    c.call(&ImportThingModelTsl::new(pkey.clone(), MODEL))
        .await
        .unwrap();
    c.call(&PublishThingModel::new(pkey.clone())).await.unwrap();
    let reg = c
        .call(&RegisterDevice::new(
            pkey,
            Some(DeviceName::new("mute1").unwrap()),
        ))
        .await
        .unwrap();
    let key = DeviceKey::new(
        ProductKey::new(pk.as_str()).unwrap(),
        DeviceName::new("mute1").unwrap(),
    );
    let creds = thingcall_gateway::client::credentials(
        &key,
        reg.0.device_secret.expose(),
        thingcall_gateway::client::CredentialOptions {
            ext: true,
            auto_subscribe: true,
            ..Default::default()
        },
    );
    let conn = thingcall_gateway::client::connect(
        &s.mqtt,
        thingcall_gateway::client::connect_packet(&creds, 60, true),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let call = || {
        InvokeThingService::new(
            name_ref(&pk, "mute1"),
            Identifier::new("Calibrate").unwrap(),
            "{}",
        )
    };
    let e = c.call(&call()).await.unwrap_err();
    assert!(e.is_timeout() && !e.is_retryable(), "{e}");
    drop(conn);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = c.call(&call()).await.unwrap_err();
    assert!(e.is_device_offline(), "{e}");

    // Nothing listening: a retryable transport error, retried then reported.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let c = Client::builder()
        .endpoint_url(&format!("http://{closed}"))
        .unwrap()
        .credentials(Credentials::new("a", "b"))
        .retries(2)
        .backoff(Duration::from_millis(10))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let e = c
        .call(&QueryProduct::new(ProductKey::new("a1x").unwrap()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transport);
    assert!(
        started.elapsed() >= Duration::from_millis(30),
        "two retries with 10 ms and 20 ms backoff"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_generated_certificate() {
    let s = server(Duration::from_secs(3)).await;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let der = cert.cert.der().to_vec();
    let key = rustls_key(cert.signing_key.serialize_der());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![der.clone().into()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let backend = s.http.clone();
    // A TLS terminator in front of the real server.
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, backend) = (acceptor.clone(), backend.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(&backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    let c = Client::builder()
        .endpoint_url(&format!("https://localhost:{port}"))
        .unwrap()
        .credentials(Credentials::new("clientid", "clientsecret"))
        .add_root_certificate(der)
        .build()
        .unwrap();
    let e = c
        .call(&QueryProduct::new(ProductKey::new("a1Nope00000").unwrap()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("iot.prod.NotExistedProduct"), "{e}");
    // Without trusting the certificate, TLS fails.
    let untrusted = Client::builder()
        .endpoint_url(&format!("https://localhost:{port}"))
        .unwrap()
        .credentials(Credentials::new("a", "b"))
        .retries(0)
        .build()
        .unwrap();
    let e = untrusted
        .call(&QueryProduct::new(ProductKey::new("a1x").unwrap()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transport, "{e}");
}

fn rustls_key(der: Vec<u8>) -> tokio_rustls::rustls::pki_types::PrivateKeyDer<'static> {
    tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(der.into())
}

#[test]
fn v1_requests_match_the_python_sdk_capture_byte_for_byte() {
    let path = format!(
        "{}/../thingcall-sign/test-vectors/signature-v1.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let case = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "iot-invoke-python-sdk-capture")
        .unwrap();
    let raw_query = case["raw_query"].as_str().unwrap();
    let business: Vec<(String, String)> = [
        ("ProductKey", "a1TestPk001"),
        ("DeviceName", "dev 1"),
        ("Identifier", "Calibrate"),
        ("Args", r#"{"Offset":1.5,"Operator":"a*b~c+d"}"#),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let at = UnixMillis::parse_iso8601_seconds("2026-11-26T03:49:17Z").unwrap();
    let r = request::v1_request(
        "InvokeThingService",
        &business,
        &Credentials::new("testid", "testsecret"),
        "cn-shanghai",
        Format::Json,
        at,
        "40fb262e1e1e20d58497fd2f067400a6",
    );
    assert_eq!(r.method, "POST");
    assert_eq!(r.path_and_query, format!("/?{raw_query}"));
    assert!(r.body.is_empty());
    assert!(
        r.headers
            .contains(&("x-acs-action".to_owned(), "InvokeThingService".to_owned()))
    );
}
