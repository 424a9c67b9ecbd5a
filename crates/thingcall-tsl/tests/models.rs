//! The example thing models, and the checker's problem reports.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)] // test code; case tables

use serde_json::{Value, json};
use thingcall_core::CallType;
use thingcall_tsl::model::{AccessMode, DataType};
use thingcall_tsl::{CompiledModel, ServiceInput, check, check_str, example};

fn model_text(name: &str) -> String {
    std::fs::read_to_string(format!("{}/test-models/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn example_models_check_clean() {
    for name in ["calibrator-all-types.json", "iotkit-embedded-model.json"] {
        let model = check_str(&model_text(name)).unwrap_or_else(|p| panic!("{name}: {p:?}"));
        let compiled = CompiledModel::compile(model.clone()).unwrap();
        for service in &model.services {
            let c = compiled.service(&service.identifier).unwrap();
            for seed in 0..20 {
                let out = example::example_output(service, seed);
                assert!(
                    c.validate_output(&out).is_empty(),
                    "{name}/{}: {out}",
                    service.identifier
                );
                let args = example::example_args(service, seed);
                assert!(
                    c.validate_args(&args).is_empty(),
                    "{name}/{}: {args}",
                    service.identifier
                );
            }
        }
    }
}

#[test]
fn calibrator_is_typed_as_written() {
    let model = check_str(&model_text("calibrator-all-types.json")).unwrap();
    assert_eq!(model.profile.product_key.as_deref(), Some("a1TestPk001"));
    assert_eq!(
        model.property("Temperature").unwrap().access_mode,
        AccessMode::ReadOnly
    );
    let cal = model.service("Calibrate").unwrap();
    assert_eq!(cal.call_type, CallType::Sync);
    let ServiceInput::Params(inputs) = &cal.input else {
        panic!()
    };
    let types: Vec<&str> = inputs.iter().map(|p| p.data_type.type_name()).collect();
    assert_eq!(types, ["float", "enum", "text", "date", "struct", "array"]);
    match &inputs[0].data_type {
        DataType::Float(spec) => assert_eq!((spec.min, spec.max), (Some(-10.0), Some(10.0))),
        other => panic!("{other:?}"),
    }
    let get = model.service("get").unwrap();
    assert_eq!(
        get.input,
        ServiceInput::PropertyNames(vec![
            "PowerSwitch".into(),
            "Brightness".into(),
            "Temperature".into()
        ])
    );
    assert_eq!(get.call_type, CallType::Async);
}

fn service_with(input: Value) -> Value {
    json!({"properties": [], "events": [], "services": [
        {"identifier": "S", "name": "s", "callType": "sync", "method": "thing.service.S", "inputData": input, "outputData": []}
    ]})
}

fn problems(doc: &Value) -> Vec<String> {
    match check(doc) {
        Ok(_) => Vec::new(),
        Err(p) => p.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn checker_reports_each_problem_at_its_pointer() {
    let param = |id: &str, dt: Value| json!({"identifier": id, "name": id, "dataType": dt});
    let cases: Vec<(&str, Value, &str)> = vec![
        ("not an object", json!([1]), "/: expected an object"),
        (
            "bad identifier",
            service_with(json!([param(
                "bad-id",
                json!({"type": "int", "specs": {}})
            )])),
            "/services/0/inputData/0/identifier",
        ),
        (
            "reserved word",
            service_with(json!([param("value", json!({"type": "int"}))])),
            "is a reserved word",
        ),
        (
            "duplicate param",
            service_with(json!([
                param("a", json!({"type": "int"})),
                param("a", json!({"type": "int"}))
            ])),
            "/services/0/inputData/1/identifier: duplicate",
        ),
        (
            "unknown type",
            service_with(json!([param("a", json!({"type": "decimal"}))])),
            "/services/0/inputData/0/dataType/type: unknown type",
        ),
        (
            "text too long",
            service_with(json!([param(
                "a",
                json!({"type": "text", "specs": {"length": "10241"}})
            )])),
            "/services/0/inputData/0/dataType/specs/length",
        ),
        (
            "array too big",
            service_with(json!([param(
                "a",
                json!({"type": "array", "specs": {"size": "513", "item": {"type": "int"}}})
            )])),
            "/services/0/inputData/0/dataType/specs/size",
        ),
        (
            "array size 0",
            service_with(json!([param(
                "a",
                json!({"type": "array", "specs": {"size": "0", "item": {"type": "int"}}})
            )])),
            "specs/size",
        ),
        (
            "struct in struct",
            service_with(json!([param(
                "a",
                json!({"type": "struct", "specs": [param("b", json!({"type": "struct", "specs": [param("c", json!({"type": "int"}))]}))]})
            )])),
            "/services/0/inputData/0/dataType/specs/0/dataType/type",
        ),
        (
            "array in struct",
            service_with(json!([param(
                "a",
                json!({"type": "struct", "specs": [param("b", json!({"type": "array", "specs": {"size": "2", "item": {"type": "int"}}}))]})
            )])),
            "cannot be a struct or an array",
        ),
        (
            "bool array",
            service_with(json!([param(
                "a",
                json!({"type": "array", "specs": {"size": "2", "item": {"type": "bool"}}})
            )])),
            "an array item must be",
        ),
        (
            "enum key",
            service_with(json!([param(
                "a",
                json!({"type": "enum", "specs": {"x": "bad"}})
            )])),
            "/services/0/inputData/0/dataType/specs/x: key \"x\" is not an integer",
        ),
        (
            "min > max",
            service_with(json!([param(
                "a",
                json!({"type": "int", "specs": {"min": "10", "max": "1"}})
            )])),
            "min 10 is greater than max 1",
        ),
        (
            "int fraction bound",
            service_with(json!([param(
                "a",
                json!({"type": "int", "specs": {"min": "0.5"}})
            )])),
            "specs/min: must be an integer",
        ),
        (
            "int bound beyond int32",
            service_with(json!([param(
                "a",
                json!({"type": "int", "specs": {"max": "3000000000"}})
            )])),
            "specs/max",
        ),
        (
            "NaN bound",
            service_with(json!([param(
                "a",
                json!({"type": "double", "specs": {"max": "NaN"}})
            )])),
            "specs/max: must be a number",
        ),
        (
            "bad callType",
            json!({"services": [{"identifier": "S", "callType": "later", "inputData": [], "outputData": []}]}),
            "/services/0/callType",
        ),
        (
            "21 inputs",
            service_with(Value::Array(
                (0..21)
                    .map(|i| param(&format!("p{i}"), json!({"type": "int"})))
                    .collect(),
            )),
            "/services/0/inputData: has 21 parameters",
        ),
        (
            "duplicate feature",
            json!({"properties": [{"identifier": "X", "accessMode": "r", "dataType": {"type": "int"}}], "services": [{"identifier": "X", "callType": "async", "inputData": [], "outputData": []}]}),
            "/services/0/identifier: duplicate identifier \"X\"",
        ),
        (
            "get lists unknown property",
            json!({"services": [{"identifier": "get", "method": "thing.service.property.get", "callType": "async", "inputData": ["Nope"], "outputData": []}]}),
            "/services/0/inputData/0",
        ),
        (
            "set without builtin method",
            json!({"services": [{"identifier": "set", "callType": "async", "inputData": [], "outputData": []}]}),
            "reserved word",
        ),
        (
            "missing dataType",
            service_with(json!([{"identifier": "a"}])),
            "/services/0/inputData/0/dataType: is required",
        ),
        (
            "bad accessMode",
            json!({"properties": [{"identifier": "P", "accessMode": "w", "dataType": {"type": "int"}}]}),
            "/properties/0/accessMode",
        ),
        (
            "services not an array",
            json!({"services": {}}),
            "/services: expected an array",
        ),
    ];
    for (what, doc, expected) in cases {
        let found = problems(&doc);
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "{what}: expected {expected:?} in {found:?}"
        );
    }
}

#[test]
fn checker_collects_every_problem() {
    let doc = json!({"properties": [{"identifier": "1-bad", "dataType": {"type": "nope"}}], "services": [{"identifier": "S", "callType": "x"}]});
    assert!(problems(&doc).len() >= 3, "{:?}", problems(&doc));
}

#[test]
fn not_json_is_one_problem_at_the_root() {
    let p = check_str("{ nope").unwrap_err();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].pointer, "");
}

#[test]
fn block_services_resolve_through_their_module() {
    let mut doc: Value = serde_json::from_str(&model_text("calibrator-all-types.json")).unwrap();
    doc["profile"]["functionBlockId"] = json!("testFb");
    let compiled = CompiledModel::compile(check(&doc).unwrap()).unwrap();
    assert!(compiled.service("testFb:Calibrate").is_some());
    assert!(
        compiled.service("Calibrate").is_none(),
        "a module's services need the prefix"
    );
    assert!(compiled.service("other:Calibrate").is_none());
    let plain =
        CompiledModel::compile(check_str(&model_text("calibrator-all-types.json")).unwrap())
            .unwrap();
    assert!(plain.service("Calibrate").is_some());
    assert!(plain.service("testFb:Calibrate").is_none());
}

/// Models exported by Alibaba's console write `"specs": []` for `date`
/// (and at times for other types whose specs are optional): an empty list
/// reads as no specs; a struct without members is still refused.
#[test]
fn an_empty_specs_list_is_no_specs() {
    let param = |id: &str, dt: Value| json!({"identifier": id, "name": id, "dataType": dt});
    let doc = service_with(json!([
        param("At", json!({"type": "date", "specs": []})),
        param("Count", json!({"type": "int", "specs": []})),
        param("Ratio", json!({"type": "float", "specs": []})),
        param("Big", json!({"type": "double", "specs": []})),
        param("Label", json!({"type": "text", "specs": []})),
    ]));
    assert_eq!(problems(&doc), Vec::<String>::new());
    let model = check(&doc).unwrap();
    let compiled = thingcall_tsl::CompiledModel::compile(model).unwrap();
    let service = compiled.service("S").unwrap();
    assert!(
        service
            .validate_args_str(r#"{"At":"1700000000000","Count":3,"Label":"x"}"#)
            .is_ok()
    );
    let empty_struct = service_with(json!([param("S", json!({"type": "struct", "specs": []}))]));
    assert!(
        problems(&empty_struct)
            .iter()
            .any(|p| p.contains("at least one member")),
        "{:?}",
        problems(&empty_struct)
    );
    let empty_enum = service_with(json!([param("E", json!({"type": "enum", "specs": []}))]));
    assert!(!problems(&empty_enum).is_empty());
}
