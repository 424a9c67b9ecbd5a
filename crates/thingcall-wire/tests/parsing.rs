//! Request parsing: bad input gets its documented code, and no input panics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)] // test code; case tables

use proptest::prelude::*;
use thingcall_core::{DeviceRef, ErrorCode};
use thingcall_wire::{ACTION_NAMES, ApiRequest, Params};

fn parse(action: &str, query: &[u8]) -> Result<ApiRequest, thingcall_core::ApiError> {
    let params = Params::from_query_and_body(query, None)?;
    ApiRequest::parse(action, &params)
}

const OK: &str = "ProductKey=a1TestPk001&DeviceName=dev1&Identifier=Calibrate&Args=%7B%7D";

#[test]
fn a_valid_invoke_request() {
    match parse("InvokeThingService", OK.as_bytes()).unwrap() {
        ApiRequest::InvokeThingService(r) => {
            assert_eq!(r.identifier.as_str(), "Calibrate");
            assert_eq!(r.args, "{}");
            assert!(matches!(r.device, DeviceRef::Name { .. }));
            assert_eq!(r.qos, None);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_input_table() {
    let long_args = format!(
        "ProductKey=a1TestPk001&DeviceName=dev1&Identifier=S&Args={}",
        "x".repeat(200_000)
    );
    let too_long_value = format!("{OK}&Extra={}", "x".repeat(300_000));
    let many_devices: String = (1..=101)
        .map(|i| format!("&DeviceName.{i}=dev{i:03}"))
        .collect();
    let batch_too_big = format!("ProductKey=a1TestPk001&Identifier=S&Args=%7B%7D{many_devices}");
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "malformed percent-encoding",
            "InvokeThingService",
            format!("{OK}&X=%G1").into_bytes(),
            "InvalidParameter",
        ),
        (
            "truncated percent-encoding",
            "InvokeThingService",
            format!("{OK}&X=%4").into_bytes(),
            "InvalidParameter",
        ),
        (
            "non-UTF-8 bytes",
            "InvokeThingService",
            [OK.as_bytes(), b"&X=\xc3\x28"].concat(),
            "InvalidParameter",
        ),
        (
            "non-UTF-8 after decoding",
            "InvokeThingService",
            format!("{OK}&X=%C3%28").into_bytes(),
            "InvalidParameter",
        ),
        (
            "duplicate single-valued key",
            "InvokeThingService",
            format!("{OK}&Identifier=Other").into_bytes(),
            "InvalidParameter",
        ),
        (
            "missing Identifier",
            "InvokeThingService",
            b"ProductKey=a1TestPk001&DeviceName=dev1&Args=%7B%7D".to_vec(),
            "MissingIdentifier",
        ),
        (
            "empty Identifier",
            "InvokeThingService",
            b"ProductKey=a1TestPk001&DeviceName=dev1&Identifier=&Args=%7B%7D".to_vec(),
            "MissingIdentifier",
        ),
        (
            "missing Args",
            "InvokeThingService",
            b"ProductKey=a1TestPk001&DeviceName=dev1&Identifier=S".to_vec(),
            "MissingArgs",
        ),
        (
            "Qos=abc",
            "InvokeThingService",
            format!("{OK}&Qos=abc").into_bytes(),
            "iot.common.InvalidFormattedParameter",
        ),
        (
            "Qos=2",
            "InvokeThingService",
            format!("{OK}&Qos=2").into_bytes(),
            "iot.common.InvalidFormattedParameter",
        ),
        (
            "malformed DeviceName",
            "InvokeThingService",
            OK.replace("dev1", "d%2F1").into_bytes(),
            "iot.device.InvalidFormattedDeviceName",
        ),
        (
            "short DeviceName",
            "InvokeThingService",
            OK.replace("dev1", "d1").into_bytes(),
            "iot.device.InvalidFormattedDeviceName",
        ),
        (
            "malformed ProductKey",
            "InvokeThingService",
            OK.replace("a1TestPk001", "a1-Test").into_bytes(),
            "iot.prod.InvalidFormattedProductkey",
        ),
        (
            "ProductKey alone",
            "InvokeThingService",
            b"ProductKey=a1TestPk001&Identifier=S&Args=%7B%7D".to_vec(),
            "iot.device.NullDeviceName",
        ),
        (
            "DeviceName alone",
            "InvokeThingService",
            b"DeviceName=dev1&Identifier=S&Args=%7B%7D".to_vec(),
            "iot.prod.NullProductKey",
        ),
        (
            "empty IotId",
            "InvokeThingService",
            format!("{OK}&IotId=").into_bytes(),
            "iot.device.InvalidIoTId",
        ),
        (
            "malformed IotId",
            "InvokeThingService",
            b"IotId=a%2Fb&Identifier=S&Args=%7B%7D".to_vec(),
            "iot.device.InvalidIoTId",
        ),
        (
            "malformed Identifier",
            "InvokeThingService",
            OK.replace("Calibrate", "bad-id").into_bytes(),
            "iot.device.InvokeThingServiceFailed",
        ),
        (
            "oversized Args",
            "InvokeThingService",
            long_args.into_bytes(),
            "iot.device.InvokeThingServiceFailed",
        ),
        (
            "over-long value",
            "InvokeThingService",
            too_long_value.into_bytes(),
            "InvalidParameter",
        ),
        (
            "unknown action",
            "NoSuchAction",
            OK.as_bytes().to_vec(),
            "InvalidAction.NotFound",
        ),
        (
            "empty batch",
            "InvokeThingsService",
            b"ProductKey=a1TestPk001&Identifier=S&Args=%7B%7D".to_vec(),
            "iot.device.NoneDeviceNameElement",
        ),
        (
            "batch over 100",
            "InvokeThingsService",
            batch_too_big.into_bytes(),
            "iot.common.InvalidFormattedParameter",
        ),
        (
            "bad list index",
            "InvokeThingsService",
            b"ProductKey=a1TestPk001&Identifier=S&Args=%7B%7D&DeviceName.0=dev1".to_vec(),
            "InvalidParameter",
        ),
        (
            "missing ProductName",
            "CreateProduct",
            b"NodeType=0".to_vec(),
            "MissingProductName",
        ),
        (
            "empty ProductName",
            "CreateProduct",
            b"ProductName=&NodeType=0".to_vec(),
            "iot.prod.NullProductName",
        ),
        (
            "bad ProductName",
            "CreateProduct",
            b"ProductName=a%20b&NodeType=0".to_vec(),
            "iot.prod.InvalidFormattedProductName",
        ),
        (
            "bad NodeType",
            "CreateProduct",
            b"ProductName=Light_1&NodeType=7".to_vec(),
            "iot.prod.InvalidNodeType",
        ),
        (
            "typed NodeType",
            "CreateProduct",
            b"ProductName=Light_1&NodeType=x".to_vec(),
            "iot.common.InvalidFormattedParameter",
        ),
        (
            "bad commodity code",
            "CreateProduct",
            b"ProductName=Light_1&NodeType=0&AliyunCommodityCode=gold".to_vec(),
            "iot.prod.InvalidAliyunCommodityCode",
        ),
        (
            "long description",
            "CreateProduct",
            format!(
                "ProductName=Light_1&NodeType=0&Description={}",
                "d".repeat(101)
            )
            .into_bytes(),
            "iot.prod.LongProductDesc",
        ),
        (
            "bad boolean",
            "CreateProduct",
            b"ProductName=Light_1&NodeType=0&PublishAuto=maybe".to_vec(),
            "iot.common.InvalidFormattedParameter",
        ),
        (
            "QueryProduct without key",
            "QueryProduct",
            b"".to_vec(),
            "iot.prod.NullProductKey",
        ),
        (
            "RegisterDevice bad name",
            "RegisterDevice",
            b"ProductKey=a1TestPk001&DeviceName=x".to_vec(),
            "iot.device.InvalidFormattedDeviceName",
        ),
        (
            "RegisterDevice bad nickname",
            "RegisterDevice",
            b"ProductKey=a1TestPk001&Nickname=a%20b".to_vec(),
            "iot.common.InvalidFormattedParameter",
        ),
        (
            "Import without TslStr",
            "ImportThingModelTsl",
            b"ProductKey=a1TestPk001".to_vec(),
            "MissingTslStr",
        ),
        (
            "Import block id alone",
            "ImportThingModelTsl",
            b"ProductKey=a1TestPk001&TslStr=%7B%7D&FunctionBlockId=b1".to_vec(),
            "iot.common.InvalidFormattedParameter",
        ),
        (
            "bad ModelVersion",
            "PublishThingModel",
            b"ProductKey=a1TestPk001&ModelVersion=v%201".to_vec(),
            "iot.common.InvalidFormattedParameter",
        ),
        (
            "missing StartTime",
            "QueryDeviceServiceData",
            b"IotId=abc&EndTime=1".to_vec(),
            "MissingStartTime",
        ),
        (
            "PageSize 51",
            "QueryDeviceServiceData",
            b"IotId=abc&StartTime=0&EndTime=1&PageSize=51".to_vec(),
            "iot.common.InvalidPageParams",
        ),
        (
            "Asc 2",
            "QueryDeviceServiceData",
            b"IotId=abc&StartTime=0&EndTime=1&Asc=2".to_vec(),
            "iot.common.InvalidFormattedParameter",
        ),
        (
            "device actions need a device",
            "GetDeviceStatus",
            b"".to_vec(),
            "iot.prod.NullProductKey",
        ),
    ];
    for (what, action, query, code) in cases {
        match parse(action, &query) {
            Ok(r) => panic!("{what}: accepted as {r:?}"),
            Err(e) => {
                assert_eq!(e.wire_code(), code, "{what}: {e}");
                let expected = ErrorCode::from_code(code).unwrap();
                assert_eq!(e.code(), expected, "{what}");
            }
        }
    }
}

#[test]
fn iot_id_wins_over_names() {
    let q = format!("{OK}&IotId=Q7uOhVRdZRRlDnTLv00100");
    match parse("InvokeThingService", q.as_bytes()).unwrap() {
        ApiRequest::InvokeThingService(r) => assert_eq!(
            r.device.iot_id().unwrap().as_str(),
            "Q7uOhVRdZRRlDnTLv00100"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn python_sdk_booleans_and_lists() {
    let r = parse("CreateProduct", b"ProductName=Light_1&NodeType=0&DataFormat=1&AliyunCommodityCode=iothub_senior&PublishAuto=False").unwrap();
    match r {
        ApiRequest::CreateProduct(c) => assert_eq!(c.publish_auto, Some(false)),
        other => panic!("{other:?}"),
    }
    let r = parse(
        "InvokeThingsService",
        b"ProductKey=a1TestPk001&DeviceName.2=dev2&DeviceName.1=dev1&Identifier=S&Args=%7B%7D",
    )
    .unwrap();
    match r {
        ApiRequest::InvokeThingsService(b) => {
            let names: Vec<&str> = b.device_names.iter().map(|d| d.as_str()).collect();
            assert_eq!(names, ["dev1", "dev2"]);
        }
        other => panic!("{other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(query in proptest::collection::vec(any::<u8>(), 0..256), body in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))) {
        if let Ok(params) = Params::from_query_and_body(&query, body.as_deref()) {
            for action in ACTION_NAMES {
                let _ = ApiRequest::parse(action, &params);
            }
        }
    }

    #[test]
    fn form_shaped_input_never_panics(query in "([A-Za-z.0-9]{0,12}=[%+&=A-Za-z0-9{}\":]{0,16}&?){0,12}") {
        if let Ok(params) = Params::from_query_and_body(query.as_bytes(), None) {
            for action in ACTION_NAMES {
                let _ = ApiRequest::parse(action, &params);
            }
        }
    }
}
