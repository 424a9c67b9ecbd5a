//! Table tests of valid and invalid `Args`, per type and edge.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)] // test code; case tables

use std::sync::Arc;

use serde_json::{Value, json};
use thingcall_core::ErrorCode;
use thingcall_tsl::{
    CompiledModel, CompiledService, ReplyMode, ViolationKind, check, violations_to_api_error,
};

fn calibrate() -> Arc<CompiledService> {
    let text = std::fs::read_to_string(format!(
        "{}/test-models/calibrator-all-types.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let model = thingcall_tsl::check_str(&text).unwrap();
    Arc::clone(
        CompiledModel::compile(model)
            .unwrap()
            .service("Calibrate")
            .unwrap(),
    )
}

/// A one-parameter service with the given data type.
fn single(dt: Value) -> Arc<CompiledService> {
    let doc = json!({"services": [{"identifier": "S", "callType": "sync", "method": "thing.service.S",
        "inputData": [{"identifier": "v", "name": "v", "dataType": dt}], "outputData": []}]});
    let model = check(&doc).unwrap();
    Arc::clone(CompiledModel::compile(model).unwrap().service("S").unwrap())
}

fn verdict(s: &CompiledService, args: &str) -> Result<(), Vec<(String, ViolationKind)>> {
    s.validate_args_str(args)
        .map(|_| ())
        .map_err(|v| v.into_iter().map(|v| (v.pointer, v.kind)).collect())
}

#[test]
fn the_documented_call_is_valid() {
    let s = calibrate();
    let args = r#"{"Offset":1.5,"Mode":1,"Operator":"bob","StartAt":"1700000000000","Color":{"R":255,"G":0,"B":10},"Points":[1.0,2.5]}"#;
    assert_eq!(verdict(&s, args), Ok(()));
    assert_eq!(verdict(&s, "{}"), Ok(()), "inputs are optional");
}

#[test]
fn per_type_edges() {
    use ViolationKind::*;
    let int = single(json!({"type": "int", "specs": {"min": "-5", "max": "100"}}));
    let int_full = single(json!({"type": "int", "specs": {}}));
    let float = single(json!({"type": "float", "specs": {"min": "-10", "max": "10"}}));
    let double = single(json!({"type": "double", "specs": {"min": "0", "max": "200"}}));
    let text = single(json!({"type": "text", "specs": {"length": "6"}}));
    let date = single(json!({"type": "date", "specs": {}}));
    let boolean = single(json!({"type": "bool", "specs": {"0": "off", "1": "on"}}));
    let en = single(json!({"type": "enum", "specs": {"0": "a", "2": "b", "-1": "c"}}));
    let st = single(json!({"type": "struct", "specs": [
        {"identifier": "R", "name": "R", "dataType": {"type": "int", "specs": {"min": "0", "max": "255"}}},
        {"identifier": "N", "name": "N", "dataType": {"type": "text", "specs": {"length": "4"}}}]}));
    let arr = single(
        json!({"type": "array", "specs": {"size": "3", "item": {"type": "int", "specs": {"min": "0", "max": "9"}}}}),
    );
    let arr_struct = single(
        json!({"type": "array", "specs": {"size": "2", "item": {"type": "struct", "specs": [
        {"identifier": "T", "name": "T", "dataType": {"type": "date", "specs": {}}}]}}}),
    );

    let ok: Vec<(&Arc<CompiledService>, &str)> = vec![
        (&int, r#"{"v":-5}"#),
        (&int, r#"{"v":100}"#),
        (&int_full, r#"{"v":2147483647}"#),
        (&int_full, r#"{"v":-2147483648}"#),
        (&float, r#"{"v":-10}"#),
        (&float, r#"{"v":10.0}"#),
        (&float, r#"{"v":3}"#),
        (&double, r#"{"v":199.999}"#),
        (&text, r#"{"v":"abcdef"}"#),
        (&text, r#"{"v":"温度"}"#),
        (&text, r#"{"v":""}"#),
        (&date, r#"{"v":"1536228947682"}"#),
        (&boolean, r#"{"v":0}"#),
        (&boolean, r#"{"v":1}"#),
        (&en, r#"{"v":-1}"#),
        (&en, r#"{"v":2}"#),
        (&st, r#"{"v":{"R":1}}"#),
        (&st, r#"{"v":{}}"#),
        (&arr, r#"{"v":[]}"#),
        (&arr, r#"{"v":[1,2,9]}"#),
        (&arr_struct, r#"{"v":[{"T":"1"},{}]}"#),
    ];
    for (s, args) in ok {
        assert_eq!(verdict(s, args), Ok(()), "{args}");
    }

    let bad: Vec<(&Arc<CompiledService>, &str, &str, ViolationKind)> = vec![
        (&int, r#"{"v":-6}"#, "/v", Int),
        (&int, r#"{"v":101}"#, "/v", Int),
        (&int, r#"{"v":1.5}"#, "/v", Int),
        (&int, r#"{"v":"5"}"#, "/v", Int),
        (&int, r#"{"v":5.0}"#, "/v", Int),
        (&int, r#"{"v":5e0}"#, "/v", Int),
        (&boolean, r#"{"v":1.0}"#, "/v", Bool),
        (&en, r#"{"v":2.0}"#, "/v", Enum),
        (&int_full, r#"{"v":2147483648}"#, "/v", Int),
        (&int_full, r#"{"v":-2147483649}"#, "/v", Int),
        (&float, r#"{"v":10.5}"#, "/v", Float),
        (&float, r#"{"v":"NaN"}"#, "/v", Float),
        (&float, r#"{"v":"Infinity"}"#, "/v", Float),
        (&double, r#"{"v":-0.001}"#, "/v", Double),
        (&double, r#"{"v":"1.0"}"#, "/v", Double),
        (&text, r#"{"v":"abcdefg"}"#, "/v", Text),
        (&text, r#"{"v":"温度a"}"#, "/v", Text),
        (&text, r#"{"v":7}"#, "/v", Text),
        (&date, r#"{"v":"1536228947682x"}"#, "/v", Date),
        (&date, r#"{"v":"-1"}"#, "/v", Date),
        (&date, r#"{"v":""}"#, "/v", Date),
        (&date, r#"{"v":1536228947682}"#, "/v", Date),
        (&boolean, r#"{"v":2}"#, "/v", Bool),
        (&boolean, r#"{"v":true}"#, "/v", Bool),
        (&en, r#"{"v":1}"#, "/v", Enum),
        (&en, r#"{"v":"0"}"#, "/v", Enum),
        (&st, r#"{"v":{"R":1,"X":2}}"#, "/v/X", UnknownMember),
        (&st, r#"{"v":{"R":"1"}}"#, "/v/R", Int),
        (&st, r#"{"v":{"N":"12345"}}"#, "/v/N", Text),
        (&st, r#"{"v":[1]}"#, "/v", Struct),
        (&arr, r#"{"v":[1,2,3,4]}"#, "/v", Array),
        (&arr, r#"{"v":[1,10]}"#, "/v/1", Int),
        (&arr, r#"{"v":{"0":1}}"#, "/v", NotArray),
        (&arr_struct, r#"{"v":[{"T":"x"}]}"#, "/v/0/T", Date),
        (&arr_struct, r#"{"v":[{"U":"1"}]}"#, "/v/0/U", UnknownMember),
        (&int, r#"{"w":1}"#, "/w", UnknownParameter),
        (&int, r#"[1]"#, "", TypeMismatch),
        (&int, r#""v""#, "", TypeMismatch),
        (&int, r#"{"v":1"#, "", NotJson),
        (&int, "", "", NotJson),
    ];
    for (s, args, pointer, kind) in bad {
        let found = verdict(s, args).expect_err(args);
        assert!(
            found.contains(&(pointer.to_owned(), kind)),
            "{args}: expected ({pointer}, {kind:?}) in {found:?}"
        );
    }
}

#[test]
fn every_violation_is_reported_with_expectations() {
    let s = calibrate();
    let args = r#"{"Offset":11,"Mode":7,"Operator":7,"StartAt":"soon","Color":{"R":256,"X":1},"Points":[1,"a"],"Extra":true}"#;
    let violations = s.validate_args_str(args).unwrap_err();
    let pointers: Vec<&str> = violations.iter().map(|v| v.pointer.as_str()).collect();
    for p in [
        "/Offset",
        "/Mode",
        "/Operator",
        "/StartAt",
        "/Color/R",
        "/Color/X",
        "/Points/1",
        "/Extra",
    ] {
        assert!(pointers.contains(&p), "{p} missing from {pointers:?}");
    }
    let offset = violations.iter().find(|v| v.pointer == "/Offset").unwrap();
    assert_eq!(offset.expected, "a float in [-10, 10]");
    assert_eq!(offset.received, "11");
    assert_eq!(
        offset.to_string(),
        "/Offset: expected a float in [-10, 10], got 11 (6307)"
    );
    let err = violations_to_api_error(&violations);
    assert_eq!(err.code(), ErrorCode::InvokeThingServiceFailed);
    assert!(err.message().starts_with("Failed to invoke the service. "));
    assert!(
        err.message()
            .contains("/Color/X: expected a member among R, G, B, got 1 (6304)"),
        "{}",
        err.message()
    );
}

#[test]
fn get_takes_a_list_of_property_names() {
    let text = std::fs::read_to_string(format!(
        "{}/test-models/calibrator-all-types.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let compiled = CompiledModel::compile(thingcall_tsl::check_str(&text).unwrap()).unwrap();
    let get = compiled.service("get").unwrap();
    assert_eq!(verdict(get, r#"["Temperature","PowerSwitch"]"#), Ok(()));
    assert_eq!(
        verdict(get, r#"["Nope"]"#),
        Err(vec![("/0".into(), ViolationKind::UnknownParameter)])
    );
    assert!(verdict(get, r#"{"Temperature":1}"#).is_err());
    assert!(verdict(get, r#"["Temperature","Temperature"]"#).is_err());
    let set = compiled.service("set").unwrap();
    assert_eq!(verdict(set, r#"{"Brightness":50}"#), Ok(()));
    assert_eq!(
        verdict(set, r#"{"Temperature":20}"#),
        Err(vec![(
            "/Temperature".into(),
            ViolationKind::UnknownParameter
        )]),
        "read-only properties are not in set"
    );
}

#[test]
fn reply_modes() {
    let s = calibrate();
    let good = json!({"Result": 1, "Readings": [{"Ts": "1700000000000", "Val": 12.5}]});
    let bad = json!({"Result": 3, "Readings": "none"});
    for mode in [ReplyMode::Strict, ReplyMode::Lenient, ReplyMode::Off] {
        let c = s.check_reply(&good, mode);
        assert!(c.accepted && c.violations.is_empty(), "{mode:?}");
    }
    let strict = s.check_reply(&bad, ReplyMode::Strict);
    assert!(!strict.accepted);
    assert_eq!(strict.violations.len(), 2);
    let lenient = s.check_reply(&bad, ReplyMode::Lenient);
    assert!(lenient.accepted);
    assert_eq!(lenient.violations.len(), 2);
    let off = s.check_reply(&bad, ReplyMode::Off);
    assert!(off.accepted && off.violations.is_empty());
    assert_eq!("strict".parse::<ReplyMode>().unwrap(), ReplyMode::Strict);
    assert!("loose".parse::<ReplyMode>().is_err());
}

#[test]
fn schemas_are_standard_json_schema() {
    let s = calibrate();
    let schema = s.input_schema();
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["properties"]["Operator"]["maxLength"], 64);
    assert_eq!(schema["properties"]["Operator"]["x-maxUtf8Bytes"], 64);
    assert_eq!(schema["properties"]["Mode"]["enum"], json!([0, 1]));
    assert_eq!(schema["properties"]["Points"]["maxItems"], 8);
    assert!(schema.get("required").is_none());
    let out = s.output_schema();
    assert_eq!(
        out["properties"]["Readings"]["items"]["properties"]["Ts"]["pattern"],
        "^[0-9]{1,18}$"
    );
}
