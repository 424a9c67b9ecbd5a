//! Malformed requests, each with its exact code and HTTP status. The server
//! must answer every one, never panic, and keep working afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::time::Duration;

use common::*;
use thingcall_core::{Clock, UnixMillis};
use thingcall_server::{ServerConfig, SystemClock};

/// How a case is sent.
enum Req {
    /// Signed GET of an action with extra parameters; `drop` removes common
    /// parameters before signing; `edit` changes the signed query.
    Get {
        action: &'static str,
        extra: Vec<(String, String)>,
        drop: Vec<&'static str>,
        set: Vec<(&'static str, String)>,
        edit: fn(String) -> String,
    },
    /// Anything at all.
    Raw {
        method: &'static str,
        target: String,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
}

fn get(action: &'static str, extra: &[(&str, &str)]) -> Req {
    Req::Get {
        action,
        extra: extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        drop: vec![],
        set: vec![],
        edit: |q| q,
    }
}

fn get_with(
    action: &'static str,
    extra: &[(&str, &str)],
    drop: Vec<&'static str>,
    set: Vec<(&'static str, String)>,
    edit: fn(String) -> String,
) -> Req {
    Req::Get {
        action,
        extra: extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        drop,
        set,
        edit,
    }
}

fn post_form(action: &'static str, extra: &[(&str, &str)]) -> Req {
    let mut params = common(action);
    params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let body = signed_query(params, "POST").into_bytes();
    Req::Raw {
        method: "POST",
        target: "/".into(),
        headers: vec![("Content-Type", "application/x-www-form-urlencoded".into())],
        body,
    }
}

async fn send(addr: &str, req: Req) -> (u16, String) {
    let (status, _, body) = match req {
        Req::Get {
            action,
            extra,
            drop,
            set,
            edit,
        } => {
            let mut params = common(action);
            params.retain(|(k, _)| !drop.contains(&k.as_str()));
            for (k, v) in set {
                params.retain(|(n, _)| n != k);
                params.push((k.to_string(), v));
            }
            params.extend(extra);
            let query = edit(signed_query(params, "GET"));
            raw(addr, "GET", &format!("/?{query}"), &[], b"").await
        }
        Req::Raw {
            method,
            target,
            headers,
            body,
        } => {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            raw(addr, method, &target, &headers, &body).await
        }
    };
    // Before `Format` is read, a v1 request is answered in XML.
    let xml_code = body
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(c, _)| c.to_owned());
    let code = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["Code"].as_str().map(str::to_owned))
        .or(xml_code)
        .unwrap_or_else(|| format!("(no code) {body}"));
    (status, code)
}

fn ts(offset_ms: i64) -> String {
    UnixMillis::new(SystemClock.now().get() + offset_ms).to_iso8601_seconds()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_request_gets_its_code() {
    let h = Harness::start(ServerConfig {
        sync_timeout: Duration::from_millis(300),
        max_body: 512 * 1024,
        ..ServerConfig::default()
    })
    .await;
    let a = h.http.as_str();
    let pk = product(a, "Bad_1").await;
    let (inactive, _) = device(a, &pk, "inactive1").await;
    let (disabled, _) = device(a, &pk, "disabled1").await;
    ok(a, "DisableThing", &[("IotId", &disabled)]).await;
    let basic = ok(
        a,
        "CreateProduct",
        &[("ProductName", "Basic_1"), ("NodeType", "0")],
    )
    .await["ProductKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let many: Vec<(String, String)> = (1..=101)
        .map(|i| (format!("DeviceName.{i}"), format!("dev{i:04}")))
        .collect();
    let many_refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let big_args = format!(r#"{{"Offset":"{}"}}"#, "x".repeat(200 * 1024));
    let reused = {
        let mut p = common("QueryProduct");
        p.push(("ProductKey".into(), pk.clone()));
        signed_query(p, "GET")
    };
    // The first use of this signed request succeeds; the table replays it.
    assert_eq!(
        send(
            a,
            Req::Raw {
                method: "GET",
                target: format!("/?{reused}"),
                headers: vec![],
                body: vec![]
            }
        )
        .await
        .0,
        200
    );

    let pkdn = [("ProductKey", pk.as_str()), ("DeviceName", "inactive1")];
    let cases: Vec<(&str, Req, u16, &str)> = vec![
        // Common parameters and the signature.
        (
            "missing AccessKeyId",
            get_with(
                "QueryProduct",
                &[("ProductKey", &pk)],
                vec!["AccessKeyId"],
                vec![],
                |q| q,
            ),
            400,
            "MissingAccessKeyId",
        ),
        (
            "missing Signature",
            get_with(
                "QueryProduct",
                &[("ProductKey", &pk)],
                vec![],
                vec![],
                |q| q.split("&Signature=").next().unwrap().to_owned(),
            ),
            400,
            "MissingSignature",
        ),
        (
            "missing SignatureNonce",
            get_with(
                "QueryProduct",
                &[("ProductKey", &pk)],
                vec!["SignatureNonce"],
                vec![],
                |q| q,
            ),
            400,
            "MissingSignatureNonce",
        ),
        (
            "missing Timestamp",
            get_with(
                "QueryProduct",
                &[("ProductKey", &pk)],
                vec!["Timestamp"],
                vec![],
                |q| q,
            ),
            400,
            "MissingTimestamp",
        ),
        (
            "missing SignatureMethod",
            get_with(
                "QueryProduct",
                &[("ProductKey", &pk)],
                vec!["SignatureMethod"],
                vec![],
                |q| q,
            ),
            400,
            "MissingSignatureMethod",
        ),
        (
            "missing SignatureVersion",
            get_with(
                "QueryProduct",
                &[("ProductKey", &pk)],
                vec!["SignatureVersion"],
                vec![],
                |q| q,
            ),
            400,
            "MissingSignatureVersion",
        ),
        (
            "empty SignatureNonce",
            get_with(
                "QueryProduct",
                &[("ProductKey", &pk)],
                vec![],
                vec![("SignatureNonce", String::new())],
                |q| q,
            ),
            400,
            "MissingSignatureNonce",
        ),
        (
            "bad signature",
            get_with(
                "QueryProduct",
                &[("ProductKey", &pk)],
                vec![],
                vec![],
                |q| q.replace("&Signature=", "&Signature=AA"),
            ),
            400,
            "SignatureDoesNotMatch",
        ),
        (
            "tampered parameter",
            get_with(
                "QueryProduct",
                &[("ProductKey", &pk)],
                vec![],
                vec![],
                |q| q.replace("Format=JSON", "Format=json"),
            ),
            400,
            "SignatureDoesNotMatch",
        ),
        (
            "expired timestamp",
            get_with(
                "QueryProduct",
                &[("ProductKey", &pk)],
                vec![],
                vec![("Timestamp", ts(-16 * 60 * 1000))],
                |q| q,
            ),
            400,
            "InvalidTimeStamp.Expired",
        ),
        (
            "future timestamp",
            get_with(
                "QueryProduct",
                &[("ProductKey", &pk)],
                vec![],
                vec![("Timestamp", ts(16 * 60 * 1000))],
                |q| q,
            ),
            400,
            "InvalidTimeStamp.Expired",
        ),
        (
            "malformed timestamp",
            get_with(
                "QueryProduct",
                &[("ProductKey", &pk)],
                vec![],
                vec![("Timestamp", "2026-11-26 03:49:17".into())],
                |q| q,
            ),
            400,
            "InvalidTimeStamp.Format",
        ),
        (
            "reused nonce",
            Req::Raw {
                method: "GET",
                target: format!("/?{reused}"),
                headers: vec![],
                body: vec![],
            },
            400,
            "SignatureNonceUsed",
        ),
        (
            "unknown AccessKeyId",
            get_with(
                "QueryProduct",
                &[("ProductKey", &pk)],
                vec![],
                vec![("AccessKeyId", "nobody".into())],
                |q| q,
            ),
            404,
            "InvalidAccessKeyId.NotFound",
        ),
        (
            "HMAC-SHA256 method",
            get_with(
                "QueryProduct",
                &[("ProductKey", &pk)],
                vec![],
                vec![("SignatureMethod", "HMAC-SHA256".into())],
                |q| q,
            ),
            400,
            "IncompleteSignature",
        ),
        (
            "SignatureVersion 2.0",
            get_with(
                "QueryProduct",
                &[("ProductKey", &pk)],
                vec![],
                vec![("SignatureVersion", "2.0".into())],
                |q| q,
            ),
            400,
            "IncompleteSignature",
        ),
        (
            "duplicate Signature",
            get_with(
                "QueryProduct",
                &[("ProductKey", &pk)],
                vec![],
                vec![],
                |q| format!("{q}&Signature=x"),
            ),
            400,
            "InvalidParameter",
        ),
        (
            "wrong Version",
            get_with(
                "QueryProduct",
                &[("ProductKey", &pk)],
                vec![],
                vec![("Version", "2017-04-20".into())],
                |q| q,
            ),
            400,
            "InvalidVersion",
        ),
        (
            "missing Version",
            get_with(
                "QueryProduct",
                &[("ProductKey", &pk)],
                vec!["Version"],
                vec![],
                |q| q,
            ),
            400,
            "MissingVersion",
        ),
        (
            "unknown Action",
            get("NoSuchAction", &[]),
            404,
            "InvalidAction.NotFound",
        ),
        (
            "missing Action",
            get_with(
                "QueryProduct",
                &[("ProductKey", &pk)],
                vec!["Action"],
                vec![],
                |q| q,
            ),
            400,
            "MissingAction",
        ),
        (
            "Format=yaml",
            get_with(
                "QueryProduct",
                &[("ProductKey", &pk)],
                vec![],
                vec![("Format", "yaml".into())],
                |q| q,
            ),
            400,
            "InvalidParameter",
        ),
        (
            "wrong path",
            Req::Raw {
                method: "GET",
                target: "/api?Action=QueryProduct".into(),
                headers: vec![],
                body: vec![],
            },
            404,
            "InvalidAction.NotFound",
        ),
        (
            "PUT",
            Req::Raw {
                method: "PUT",
                target: "/".into(),
                headers: vec![],
                body: vec![],
            },
            404,
            "InvalidAction.NotFound",
        ),
        (
            "malformed percent-encoding",
            get_with(
                "QueryProduct",
                &[("ProductKey", &pk)],
                vec![],
                vec![],
                |q| format!("{q}&X=%G1"),
            ),
            400,
            "InvalidParameter",
        ),
        (
            "non-UTF-8 after decoding",
            get_with(
                "QueryProduct",
                &[("ProductKey", &pk)],
                vec![],
                vec![],
                |q| format!("{q}&X=%C3%28"),
            ),
            400,
            "InvalidParameter",
        ),
        (
            "duplicate single-valued key (signed)",
            get(
                "QueryProduct",
                &[("ProductKey", &pk), ("ProductKey", "other")],
            ),
            400,
            "InvalidParameter",
        ),
        (
            "duplicate key added after signing",
            get_with(
                "QueryProduct",
                &[("ProductKey", &pk)],
                vec![],
                vec![],
                |q| format!("{q}&ProductKey=other"),
            ),
            400,
            "SignatureDoesNotMatch",
        ),
        (
            "body over the limit",
            Req::Raw {
                method: "POST",
                target: "/".into(),
                headers: vec![("Content-Type", "application/x-www-form-urlencoded".into())],
                body: vec![b'a'; 600 * 1024],
            },
            400,
            "InvalidParameter",
        ),
        (
            "non-UTF-8 form body",
            Req::Raw {
                method: "POST",
                target: "/".into(),
                headers: vec![("Content-Type", "application/x-www-form-urlencoded".into())],
                body: b"Action=\xff".to_vec(),
            },
            400,
            "InvalidParameter",
        ),
        // InvokeThingService parameters.
        (
            "missing Identifier",
            get("InvokeThingService", &[pkdn[0], pkdn[1], ("Args", "{}")]),
            400,
            "MissingIdentifier",
        ),
        (
            "empty Identifier",
            get(
                "InvokeThingService",
                &[pkdn[0], pkdn[1], ("Identifier", ""), ("Args", "{}")],
            ),
            400,
            "MissingIdentifier",
        ),
        (
            "missing Args",
            get(
                "InvokeThingService",
                &[pkdn[0], pkdn[1], ("Identifier", "Calibrate")],
            ),
            400,
            "MissingArgs",
        ),
        (
            "Args not JSON",
            get(
                "InvokeThingService",
                &[
                    ("IotId", &inactive),
                    ("Identifier", "Calibrate"),
                    ("Args", "{oops"),
                ],
            ),
            200,
            "iot.device.InvokeThingServiceFailed",
        ),
        (
            "Args a JSON list",
            get(
                "InvokeThingService",
                &[
                    ("IotId", &inactive),
                    ("Identifier", "Calibrate"),
                    ("Args", "[1]"),
                ],
            ),
            200,
            "iot.device.InvokeThingServiceFailed",
        ),
        (
            "Args wrongly typed",
            get(
                "InvokeThingService",
                &[
                    ("IotId", &inactive),
                    ("Identifier", "Calibrate"),
                    ("Args", r#"{"Offset":"x"}"#),
                ],
            ),
            200,
            "iot.device.InvokeThingServiceFailed",
        ),
        (
            "Args out of range",
            get(
                "InvokeThingService",
                &[
                    ("IotId", &inactive),
                    ("Identifier", "Calibrate"),
                    ("Args", r#"{"Offset":11}"#),
                ],
            ),
            200,
            "iot.device.InvokeThingServiceFailed",
        ),
        (
            "Args with an unknown key",
            get(
                "InvokeThingService",
                &[
                    ("IotId", &inactive),
                    ("Identifier", "Calibrate"),
                    ("Args", r#"{"Nope":1}"#),
                ],
            ),
            200,
            "iot.device.InvokeThingServiceFailed",
        ),
        (
            "oversized Args",
            post_form(
                "InvokeThingService",
                &[
                    ("IotId", &inactive),
                    ("Identifier", "Calibrate"),
                    ("Args", &big_args),
                ],
            ),
            200,
            "iot.device.InvokeThingServiceFailed",
        ),
        (
            "unknown identifier",
            get(
                "InvokeThingService",
                &[
                    ("IotId", &inactive),
                    ("Identifier", "NoSuchService"),
                    ("Args", "{}"),
                ],
            ),
            200,
            "iot.device.InvokeThingServiceFailed",
        ),
        (
            "malformed identifier",
            get(
                "InvokeThingService",
                &[
                    ("IotId", &inactive),
                    ("Identifier", "bad-id"),
                    ("Args", "{}"),
                ],
            ),
            200,
            "iot.device.InvokeThingServiceFailed",
        ),
        (
            "unknown product",
            get(
                "InvokeThingService",
                &[
                    ("ProductKey", "a1Nope00000"),
                    ("DeviceName", "dev1"),
                    ("Identifier", "Calibrate"),
                    ("Args", "{}"),
                ],
            ),
            200,
            "iot.prod.NotExistedProduct",
        ),
        (
            "unknown device",
            get(
                "InvokeThingService",
                &[
                    ("ProductKey", &pk),
                    ("DeviceName", "nobody"),
                    ("Identifier", "Calibrate"),
                    ("Args", "{}"),
                ],
            ),
            200,
            "iot.device.NotExistedDevice",
        ),
        (
            "unknown IotId",
            get(
                "InvokeThingService",
                &[
                    ("IotId", "NoSuchIotId000100"),
                    ("Identifier", "Calibrate"),
                    ("Args", "{}"),
                ],
            ),
            200,
            "iot.device.NotExistedDevice",
        ),
        (
            "empty IotId",
            get(
                "InvokeThingService",
                &[
                    ("IotId", ""),
                    pkdn[0],
                    pkdn[1],
                    ("Identifier", "Calibrate"),
                    ("Args", "{}"),
                ],
            ),
            200,
            "iot.device.InvalidIoTId",
        ),
        (
            "ProductKey alone",
            get(
                "InvokeThingService",
                &[
                    ("ProductKey", &pk),
                    ("Identifier", "Calibrate"),
                    ("Args", "{}"),
                ],
            ),
            200,
            "iot.device.NullDeviceName",
        ),
        (
            "DeviceName alone",
            get(
                "InvokeThingService",
                &[
                    ("DeviceName", "inactive1"),
                    ("Identifier", "Calibrate"),
                    ("Args", "{}"),
                ],
            ),
            200,
            "iot.prod.NullProductKey",
        ),
        (
            "malformed DeviceName",
            get(
                "InvokeThingService",
                &[
                    ("ProductKey", &pk),
                    ("DeviceName", "d/1"),
                    ("Identifier", "Calibrate"),
                    ("Args", "{}"),
                ],
            ),
            200,
            "iot.device.InvalidFormattedDeviceName",
        ),
        (
            "malformed ProductKey",
            get(
                "InvokeThingService",
                &[
                    ("ProductKey", "a1-bad"),
                    ("DeviceName", "dev1"),
                    ("Identifier", "Calibrate"),
                    ("Args", "{}"),
                ],
            ),
            200,
            "iot.prod.InvalidFormattedProductkey",
        ),
        (
            "Qos=abc",
            get(
                "InvokeThingService",
                &[
                    ("IotId", &inactive),
                    ("Identifier", "Calibrate"),
                    ("Args", "{}"),
                    ("Qos", "abc"),
                ],
            ),
            200,
            "iot.common.InvalidFormattedParameter",
        ),
        (
            "Qos=2",
            get(
                "InvokeThingService",
                &[
                    ("IotId", &inactive),
                    ("Identifier", "Calibrate"),
                    ("Args", "{}"),
                    ("Qos", "2"),
                ],
            ),
            200,
            "iot.common.InvalidFormattedParameter",
        ),
        (
            "disabled device",
            get(
                "InvokeThingService",
                &[
                    ("IotId", &disabled),
                    ("Identifier", "Calibrate"),
                    ("Args", "{}"),
                ],
            ),
            200,
            "iot.device.InvokeThingServiceFailed",
        ),
        (
            "never connected",
            get(
                "InvokeThingService",
                &[
                    ("IotId", &inactive),
                    ("Identifier", "Calibrate"),
                    ("Args", "{}"),
                ],
            ),
            200,
            "iot.device.InactiveDevice",
        ),
        (
            "IotId wins over names",
            get(
                "InvokeThingService",
                &[
                    ("IotId", &inactive),
                    ("ProductKey", &pk),
                    ("DeviceName", "nobody"),
                    ("Identifier", "Calibrate"),
                    ("Args", "{}"),
                ],
            ),
            200,
            "iot.device.InactiveDevice",
        ),
        // Management actions.
        (
            "CreateProduct without ProductName",
            get("CreateProduct", &[("NodeType", "0")]),
            400,
            "MissingProductName",
        ),
        (
            "CreateProduct with an empty name",
            get("CreateProduct", &[("ProductName", ""), ("NodeType", "0")]),
            200,
            "iot.prod.NullProductName",
        ),
        (
            "CreateProduct with a bad name",
            get(
                "CreateProduct",
                &[("ProductName", "a b"), ("NodeType", "0")],
            ),
            200,
            "iot.prod.InvalidFormattedProductName",
        ),
        (
            "CreateProduct NodeType 9",
            get(
                "CreateProduct",
                &[("ProductName", "Node_9"), ("NodeType", "9")],
            ),
            200,
            "iot.prod.InvalidNodeType",
        ),
        (
            "CreateProduct twice",
            get(
                "CreateProduct",
                &[("ProductName", "Bad_1"), ("NodeType", "0")],
            ),
            200,
            "iot.prod.AlreadyExistedProductName",
        ),
        (
            "CreateProduct long description",
            get(
                "CreateProduct",
                &[
                    ("ProductName", "Long_1"),
                    ("NodeType", "0"),
                    ("Description", &"d".repeat(101)),
                ],
            ),
            200,
            "iot.prod.LongProductDesc",
        ),
        (
            "CreateProduct bad commodity code",
            get(
                "CreateProduct",
                &[
                    ("ProductName", "Gold_1"),
                    ("NodeType", "0"),
                    ("AliyunCommodityCode", "gold"),
                ],
            ),
            200,
            "iot.prod.InvalidAliyunCommodityCode",
        ),
        (
            "RegisterDevice unknown product",
            get(
                "RegisterDevice",
                &[("ProductKey", "a1Nope00000"), ("DeviceName", "dev1")],
            ),
            200,
            "iot.prod.NotExistedProduct",
        ),
        (
            "RegisterDevice twice",
            get(
                "RegisterDevice",
                &[("ProductKey", &pk), ("DeviceName", "inactive1")],
            ),
            200,
            "iot.device.AlreadyExistedDeviceName",
        ),
        (
            "RegisterDevice bad name",
            get(
                "RegisterDevice",
                &[("ProductKey", &pk), ("DeviceName", "x")],
            ),
            200,
            "iot.device.InvalidFormattedDeviceName",
        ),
        (
            "RegisterDevice without ProductKey",
            get("RegisterDevice", &[("DeviceName", "dev1")]),
            200,
            "iot.prod.NullProductKey",
        ),
        (
            "ImportThingModelTsl invalid model",
            get(
                "ImportThingModelTsl",
                &[
                    ("ProductKey", &pk),
                    ("TslStr", r#"{"services":[{"identifier":"bad-id"}]}"#),
                ],
            ),
            200,
            "iot.common.InvalidFormattedParameter",
        ),
        (
            "ImportThingModelTsl not JSON",
            get(
                "ImportThingModelTsl",
                &[("ProductKey", &pk), ("TslStr", "{")],
            ),
            200,
            "iot.common.InvalidFormattedParameter",
        ),
        (
            "ImportThingModelTsl without TslStr",
            get("ImportThingModelTsl", &[("ProductKey", &pk)]),
            400,
            "MissingTslStr",
        ),
        (
            "ImportThingModelTsl on a basic product",
            get(
                "ImportThingModelTsl",
                &[("ProductKey", &basic), ("TslStr", MODEL)],
            ),
            200,
            "iot.prod.NotSeniorProduct",
        ),
        (
            "GetThingModelTsl unknown version",
            get(
                "GetThingModelTsl",
                &[("ProductKey", &pk), ("ModelVersion", "V404")],
            ),
            200,
            "iot.common.InvalidFormattedParameter",
        ),
        (
            "QueryDeviceServiceData PageSize 51",
            get(
                "QueryDeviceServiceData",
                &[
                    ("IotId", &inactive),
                    ("StartTime", "0"),
                    ("EndTime", "1"),
                    ("PageSize", "51"),
                ],
            ),
            200,
            "iot.common.InvalidPageParams",
        ),
        (
            "QueryDeviceServiceData without StartTime",
            get(
                "QueryDeviceServiceData",
                &[("IotId", &inactive), ("EndTime", "1")],
            ),
            400,
            "MissingStartTime",
        ),
        (
            "InvokeThingsService with 101 devices",
            get(
                "InvokeThingsService",
                &[
                    &[
                        ("ProductKey", pk.as_str()),
                        ("Identifier", "Reboot"),
                        ("Args", "{}"),
                    ][..],
                    &many_refs[..],
                ]
                .concat(),
            ),
            200,
            "iot.common.InvalidFormattedParameter",
        ),
        (
            "InvokeThingsService without devices",
            get(
                "InvokeThingsService",
                &[
                    ("ProductKey", &pk),
                    ("Identifier", "Reboot"),
                    ("Args", "{}"),
                ],
            ),
            200,
            "iot.device.NoneDeviceNameElement",
        ),
        (
            "InvokeThingsService unknown device",
            get(
                "InvokeThingsService",
                &[
                    ("ProductKey", &pk),
                    ("DeviceName.1", "nobody"),
                    ("Identifier", "Reboot"),
                    ("Args", "{}"),
                ],
            ),
            200,
            "iot.device.NotExistedDevice",
        ),
        (
            "DeleteProduct unknown",
            get("DeleteProduct", &[("ProductKey", "a1Nope00000")]),
            200,
            "iot.prod.NotExistedProduct",
        ),
        (
            "QueryProduct without ProductKey",
            get("QueryProduct", &[]),
            200,
            "iot.prod.NullProductKey",
        ),
        (
            "GetDeviceStatus without a device",
            get("GetDeviceStatus", &[]),
            200,
            "iot.prod.NullProductKey",
        ),
    ];
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (what, req, status, code) in cases {
        let got = send(a, req).await;
        if got != (status, code.to_owned()) {
            failures.push(format!("{what}: expected ({status}, {code}), got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Still serving, and every failed invocation left no half record.
    ok(a, "QueryProduct", &[("ProductKey", &pk)]).await;
    let records = ok(
        a,
        "QueryDeviceServiceData",
        &[
            ("IotId", &inactive),
            ("StartTime", "0"),
            ("EndTime", "9999999999999"),
        ],
    )
    .await;
    assert_eq!(
        records["Data"]["List"]["ServiceInfo"]
            .as_array()
            .map_or(0, Vec::len),
        0
    );
    h.stop().await;
}
