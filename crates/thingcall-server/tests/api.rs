//! The server end to end: provisioning, sync and async invocations through
//! the MQTT gateway to a simulated device, records, device states, and the
//! documented failures.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use thingcall_core::{DeviceName, ProductKey};
use thingcall_gateway::client::{self, CredentialOptions};
use thingcall_server::ServerConfig;
use thingcall_transport::DeviceKey;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_invoke_and_query() {
    let h = Harness::start(ServerConfig {
        sync_timeout: Duration::from_secs(3),
        ..ServerConfig::default()
    })
    .await;
    let a = h.http.as_str();
    let pk = product(a, "Light_1").await;
    let (iot_id, secret) = device(a, &pk, "dev1").await;

    let detail = ok(
        a,
        "QueryDeviceDetail",
        &[("ProductKey", &pk), ("DeviceName", "dev1")],
    )
    .await;
    assert_eq!(detail["Data"]["Status"], "UNACTIVE");
    assert_eq!(detail["Data"]["IotId"], iot_id.as_str());
    assert_eq!(detail["Data"]["ProductName"], "Light_1");
    assert!(detail["Data"].get("GmtActive").is_none());

    // Never connected: InactiveDevice.
    let (status, body) = call(
        a,
        "InvokeThingService",
        &[
            ("IotId", &iot_id),
            ("Identifier", "Calibrate"),
            ("Args", "{}"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["Code"].as_str()),
        (200, Some("iot.device.InactiveDevice"))
    );

    let stop = simulate(&h.mqtt, &pk, "dev1", &secret).await;
    wait_status(a, &iot_id, "ONLINE").await;

    // Sync: the reply's data comes back as a JSON string.
    let body = ok(
        a,
        "InvokeThingService",
        &[
            ("ProductKey", &pk),
            ("DeviceName", "dev1"),
            ("Identifier", "Calibrate"),
            ("Args", r#"{"Offset":1.5}"#),
        ],
    )
    .await;
    let result: serde_json::Value =
        serde_json::from_str(body["Data"]["Result"].as_str().unwrap()).unwrap();
    assert!(result["Result"].is_i64(), "{result}");
    let sync_id = body["Data"]["MessageId"].as_str().unwrap().to_owned();
    assert!(sync_id.bytes().all(|b| b.is_ascii_digit()));

    // Async: only a MessageId.
    let body = ok(
        a,
        "InvokeThingService",
        &[
            ("IotId", &iot_id),
            ("Identifier", "Reboot"),
            ("Args", r#"{"Delay":3}"#),
            ("Qos", "1"),
        ],
    )
    .await;
    assert!(body["Data"].get("Result").is_none());
    let async_id = body["Data"]["MessageId"].as_str().unwrap().to_owned();

    // set and get are services too.
    ok(
        a,
        "InvokeThingService",
        &[
            ("IotId", &iot_id),
            ("Identifier", "set"),
            ("Args", r#"{"Brightness":5}"#),
        ],
    )
    .await;

    // Every call is recorded, async replies included once they arrive.
    let mut records = serde_json::Value::Null;
    for _ in 0..100 {
        let body = ok(
            a,
            "QueryDeviceServiceData",
            &[
                ("IotId", &iot_id),
                ("StartTime", "0"),
                ("EndTime", "9999999999999"),
                ("Asc", "1"),
                ("PageSize", "10"),
            ],
        )
        .await;
        records = body["Data"]["List"]["ServiceInfo"].clone();
        if records
            .as_array()
            .is_some_and(|r| r.len() == 3 && r.iter().all(|x| x.get("OutputData").is_some()))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let list = records.as_array().unwrap();
    assert_eq!(list.len(), 3, "{records}");
    assert_eq!(list[0]["Identifier"], "Calibrate");
    assert_eq!(list[0]["InputData"], r#"{"Offset":1.5}"#);
    let output: serde_json::Value =
        serde_json::from_str(list[0]["OutputData"].as_str().unwrap()).unwrap();
    assert_eq!(output["id"], sync_id.as_str());
    assert_eq!(output["code"], 200);
    assert_eq!(list[1]["Identifier"], "Reboot");
    assert!(list[1]["OutputData"].as_str().unwrap().contains(&async_id));
    assert_eq!(list[0]["Name"], "校准");

    // Paging.
    let page = ok(
        a,
        "QueryDeviceServiceData",
        &[
            ("IotId", &iot_id),
            ("StartTime", "0"),
            ("EndTime", "9999999999999"),
            ("Asc", "1"),
            ("PageSize", "2"),
        ],
    )
    .await;
    assert_eq!(page["Data"]["NextValid"], true);
    assert_eq!(
        page["Data"]["List"]["ServiceInfo"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // XML, with the action's root element.
    let mut params = common("GetDeviceStatus");
    params.retain(|(k, _)| k != "Format");
    params.push(("IotId".into(), iot_id.clone()));
    let (status, content_type, body) = raw(
        a,
        "GET",
        &format!("/?{}", signed_query(params, "GET")),
        &[],
        b"",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/xml;charset=utf-8");
    assert!(
        body.starts_with(
            "<?xml version='1.0' encoding='utf-8'?><GetDeviceStatusResponse><RequestId>"
        ),
        "{body}"
    );
    assert!(body.contains("<Status>ONLINE</Status>"));

    // Disable: the session is closed and calls fail; enable again.
    ok(a, "DisableThing", &[("IotId", &iot_id)]).await;
    wait_status(a, &iot_id, "DISABLE").await;
    let (_, body) = call(
        a,
        "InvokeThingService",
        &[
            ("IotId", &iot_id),
            ("Identifier", "Calibrate"),
            ("Args", "{}"),
        ],
    )
    .await;
    assert_eq!(body["Code"], "iot.device.InvokeThingServiceFailed");
    ok(a, "EnableThing", &[("IotId", &iot_id)]).await;
    let status = ok(a, "GetDeviceStatus", &[("IotId", &iot_id)]).await;
    assert_ne!(status["Data"]["Status"], "DISABLE");

    // Thing models: draft, published, versions.
    let tsl = ok(a, "GetThingModelTslPublished", &[("ProductKey", &pk)]).await;
    let doc: serde_json::Value =
        serde_json::from_str(tsl["Data"]["TslStr"].as_str().unwrap()).unwrap();
    assert_eq!(doc["profile"]["productKey"], pk.as_str());
    assert_eq!(doc["services"].as_array().unwrap().len(), 4);
    let simple = ok(
        a,
        "GetThingModelTsl",
        &[("ProductKey", &pk), ("Simple", "True")],
    )
    .await;
    assert!(
        !simple["Data"]["TslStr"]
            .as_str()
            .unwrap()
            .contains("\"name\"")
    );
    let (_, body) = call(
        a,
        "PublishThingModel",
        &[("ProductKey", &pk), ("ModelVersion", "V9.0.0")],
    )
    .await;
    assert_eq!(body["Success"], true);
    let (_, body) = call(
        a,
        "PublishThingModel",
        &[("ProductKey", &pk), ("ModelVersion", "V9.0.0")],
    )
    .await;
    assert_eq!(body["Code"], "iot.common.InvalidFormattedParameter");

    let product = ok(a, "QueryProduct", &[("ProductKey", &pk)]).await;
    assert_eq!(product["Data"]["DeviceCount"], 1);
    assert_eq!(product["Data"]["ProductName"], "Light_1");

    let _ = stop.send(());
    ok(a, "DeleteDevice", &[("IotId", &iot_id)]).await;
    let (_, body) = call(a, "GetDeviceStatus", &[("IotId", &iot_id)]).await;
    assert_eq!(body["Code"], "iot.device.NotExistedDevice");
    ok(a, "DeleteProduct", &[("ProductKey", &pk)]).await;
    let (_, body) = call(a, "QueryProduct", &[("ProductKey", &pk)]).await;
    assert_eq!(body["Code"], "iot.prod.NotExistedProduct");

    let metrics = raw(a, "GET", "/metrics", &[], b"").await.2;
    assert!(
        metrics
            .contains("thingcall_requests_total{action=\"InvokeThingService\",code=\"Success\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("thingcall_invocation_seconds_bucket{mode=\"sync\""));
    assert!(metrics.contains("thingcall_devices_online"));
    assert!(
        metrics.contains("\nthingcall_records_waiting "),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nthingcall_record_copy_failures_total 0\n"),
        "{metrics}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_offline_and_late_replies() {
    let h = Harness::start(ServerConfig {
        sync_timeout: Duration::from_millis(400),
        ..ServerConfig::default()
    })
    .await;
    let a = h.http.as_str();
    let pk = product(a, "Slow_1").await;
    let (iot_id, secret) = device(a, &pk, "slow1").await;
    // A device that subscribes and never answers.
    let key = DeviceKey::new(
        ProductKey::new(pk.as_str()).unwrap(),
        DeviceName::new("slow1").unwrap(),
    );
    let creds = client::credentials(
        &key,
        &secret,
        CredentialOptions {
            ext: true,
            auto_subscribe: true,
            ..Default::default()
        },
    );
    let (ack, mut reader, mut writer) =
        client::connect(&h.mqtt, client::connect_packet(&creds, 60, true))
            .await
            .unwrap();
    assert_eq!(
        ack.code,
        thingcall_gateway::mqttbytes::v4::ConnectReturnCode::Success
    );
    wait_status(a, &iot_id, "ONLINE").await;

    let (status, body) = call(
        a,
        "InvokeThingService",
        &[
            ("IotId", &iot_id),
            ("Identifier", "Calibrate"),
            ("Args", "{}"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["Code"].as_str()),
        (200, Some("iot.messagebroker.TIMEOUT")),
        "{body}"
    );
    // The request did reach the device: answer it late.
    let publish = loop {
        if let thingcall_gateway::mqttbytes::v4::Packet::Publish(p) =
            reader.recv_timeout(Duration::from_secs(5)).await.unwrap()
        {
            break p;
        }
    };
    let request: serde_json::Value = serde_json::from_slice(&publish.payload).unwrap();
    let id = request["id"].as_str().unwrap().to_owned();
    let reply = format!(r#"{{"id":"{id}","code":200,"data":{{"Result":1}}}}"#);
    writer
        .send(&thingcall_gateway::mqttbytes::v4::Packet::Publish(
            thingcall_gateway::mqttbytes::v4::Publish::new(
                publish.topic.clone(),
                thingcall_gateway::mqttbytes::QoS::AtMostOnce,
                reply.into_bytes(),
            ),
        ))
        .await
        .unwrap();
    let mut late = false;
    for _ in 0..100 {
        let body = ok(
            a,
            "QueryDeviceServiceData",
            &[
                ("IotId", &iot_id),
                ("StartTime", "0"),
                ("EndTime", "9999999999999"),
            ],
        )
        .await;
        let list = body["Data"]["List"]["ServiceInfo"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if list
            .iter()
            .any(|r| r["OutputData"].as_str().is_some_and(|o| o.contains(&id)))
        {
            late = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(late, "the late reply was recorded");

    // Offline after having been online: OFFLINE for sync, accepted for async.
    drop(writer);
    drop(reader);
    wait_status(a, &iot_id, "OFFLINE").await;
    let (_, body) = call(
        a,
        "InvokeThingService",
        &[
            ("IotId", &iot_id),
            ("Identifier", "Calibrate"),
            ("Args", "{}"),
        ],
    )
    .await;
    assert_eq!(body["Code"], "iot.messagebroker.OFFLINE");
    let body = ok(
        a,
        "InvokeThingService",
        &[("IotId", &iot_id), ("Identifier", "Reboot"), ("Args", "{}")],
    )
    .await;
    assert!(body["Data"]["MessageId"].is_string());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_restart() {
    let dir = temp_dir("restart");
    let h = Harness::start_in(dir, ServerConfig::default()).await;
    let pk = product(&h.http, "Keep_1").await;
    let (iot_id, _) = device(&h.http, &pk, "keep1").await;
    let module =
        r#"{"services":[{"identifier":"Ping","callType":"sync","inputData":[],"outputData":[]}]}"#;
    ok(
        &h.http,
        "ImportThingModelTsl",
        &[
            ("ProductKey", &pk),
            ("TslStr", module),
            ("FunctionBlockId", "net"),
            ("FunctionBlockName", "Network"),
        ],
    )
    .await;
    ok(
        &h.http,
        "PublishThingModel",
        &[("ProductKey", &pk), ("ModelVersion", "keep.2")],
    )
    .await;
    let h = h.restart().await;
    let body = ok(&h.http, "QueryDeviceDetail", &[("IotId", &iot_id)]).await;
    assert_eq!(body["Data"]["DeviceName"], "keep1");
    let tsl = ok(&h.http, "GetThingModelTslPublished", &[("ProductKey", &pk)]).await;
    assert!(
        tsl["Data"]["TslStr"]
            .as_str()
            .unwrap()
            .contains("Calibrate")
    );
    // The custom module comes back too: its draft and its published version.
    let net = [("ProductKey", pk.as_str()), ("FunctionBlockId", "net")];
    let versioned = [
        ("ProductKey", pk.as_str()),
        ("FunctionBlockId", "net"),
        ("ModelVersion", "keep.2"),
    ];
    for (action, params) in [
        ("GetThingModelTsl", &net[..]),
        ("GetThingModelTslPublished", &versioned[..]),
    ] {
        let body = ok(&h.http, action, params).await;
        assert!(
            body["Data"]["TslStr"].as_str().unwrap().contains("Ping"),
            "{action}: {body}"
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_modules_are_addressed_as_block_service() {
    let h = Harness::start(ServerConfig::default()).await;
    let a = h.http.as_str();
    let pk = product(a, "Blocks_1").await;
    let (iot_id, secret) = device(a, &pk, "blk1").await;
    let module = r#"{"profile":{"productKey":"ignored"},"properties":[],"events":[],"services":[
        {"identifier":"Reboot","name":"重启","callType":"async","method":"thing.service.Reboot",
         "inputData":[{"identifier":"Delay","name":"d","dataType":{"type":"int","specs":{"min":"0","max":"9"}}}],"outputData":[]}]}"#;
    ok(
        a,
        "ImportThingModelTsl",
        &[
            ("ProductKey", &pk),
            ("TslStr", module),
            ("FunctionBlockId", "power"),
            ("FunctionBlockName", "Power"),
        ],
    )
    .await;
    // Not published yet: the module's services do not exist.
    let stop = simulate(&h.mqtt, &pk, "blk1", &secret).await;
    wait_status(a, &iot_id, "ONLINE").await;
    let (_, body) = call(
        a,
        "InvokeThingService",
        &[
            ("IotId", &iot_id),
            ("Identifier", "power:Reboot"),
            ("Args", "{}"),
        ],
    )
    .await;
    assert_eq!(body["Code"], "iot.device.InvokeThingServiceFailed");
    ok(a, "PublishThingModel", &[("ProductKey", &pk)]).await;

    let draft = ok(
        a,
        "GetThingModelTsl",
        &[("ProductKey", &pk), ("FunctionBlockId", "power")],
    )
    .await;
    let doc: serde_json::Value =
        serde_json::from_str(draft["Data"]["TslStr"].as_str().unwrap()).unwrap();
    assert_eq!(doc["profile"]["functionBlockId"], "power");
    assert_eq!(doc["profile"]["productKey"], pk.as_str());
    let published = ok(
        a,
        "GetThingModelTslPublished",
        &[("ProductKey", &pk), ("FunctionBlockId", "power")],
    )
    .await;
    assert!(
        published["Data"]["TslStr"]
            .as_str()
            .unwrap()
            .contains("Reboot")
    );
    let (_, body) = call(
        a,
        "GetThingModelTsl",
        &[("ProductKey", &pk), ("FunctionBlockId", "nope")],
    )
    .await;
    assert_eq!(body["Code"], "iot.common.InvalidFormattedParameter");

    // The module's schema applies, and the default module is untouched.
    let (_, body) = call(
        a,
        "InvokeThingService",
        &[
            ("IotId", &iot_id),
            ("Identifier", "power:Reboot"),
            ("Args", r#"{"Delay":99}"#),
        ],
    )
    .await;
    assert_eq!(body["Code"], "iot.device.InvokeThingServiceFailed");
    assert!(body["ErrorMessage"].as_str().unwrap().contains("/Delay"));
    let body = ok(
        a,
        "InvokeThingService",
        &[
            ("IotId", &iot_id),
            ("Identifier", "power:Reboot"),
            ("Args", r#"{"Delay":3}"#),
        ],
    )
    .await;
    assert!(body["Data"]["MessageId"].is_string());
    ok(
        a,
        "InvokeThingService",
        &[
            ("IotId", &iot_id),
            ("Identifier", "Reboot"),
            ("Args", r#"{"Delay":3}"#),
        ],
    )
    .await;
    let records = ok(
        a,
        "QueryDeviceServiceData",
        &[
            ("IotId", &iot_id),
            ("StartTime", "0"),
            ("EndTime", "9999999999999"),
            ("Identifier", "power:Reboot"),
        ],
    )
    .await;
    assert_eq!(
        records["Data"]["List"]["ServiceInfo"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let _ = stop.send(());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_timeouts_follow_the_injected_clock() {
    use thingcall_core::{Clock, ManualClock};
    let clock = Arc::new(ManualClock::new(thingcall_server::SystemClock.now()));
    let config = ServerConfig {
        sync_timeout: Duration::from_secs(600),
        ..ServerConfig::default()
    };
    let h = Harness::start_with_clock(temp_dir("clock"), config, clock.clone()).await;
    let a = h.http.clone();
    let pk = product(&a, "Clock_1").await;
    let (iot_id, secret) = device(&a, &pk, "clock1").await;
    let key = DeviceKey::new(
        ProductKey::new(pk.as_str()).unwrap(),
        DeviceName::new("clock1").unwrap(),
    );
    let creds = client::credentials(
        &key,
        &secret,
        CredentialOptions {
            ext: true,
            auto_subscribe: true,
            ..Default::default()
        },
    );
    let _mute = client::connect(&h.mqtt, client::connect_packet(&creds, 60, true))
        .await
        .unwrap();
    wait_status(&a, &iot_id, "ONLINE").await;
    let started = std::time::Instant::now();
    let call_task = {
        let (a, iot_id) = (a.clone(), iot_id.clone());
        tokio::spawn(async move {
            call(
                &a,
                "InvokeThingService",
                &[
                    ("IotId", &iot_id),
                    ("Identifier", "Calibrate"),
                    ("Args", "{}"),
                ],
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !call_task.is_finished(),
        "the call waits while the clock stands still"
    );
    clock.advance_millis(601_000);
    let (status, body) = call_task.await.unwrap();
    assert_eq!(
        (status, body["Code"].as_str()),
        (200, Some("iot.messagebroker.TIMEOUT"))
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "timed out by the clock, not by waiting 600 s"
    );
    h.stop().await;
}
