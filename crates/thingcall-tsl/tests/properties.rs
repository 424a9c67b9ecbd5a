//! Properties: generated Args validate, nothing panics, and breaking a value
//! is reported at its pointer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use thingcall_tsl::{CompiledModel, CompiledService, check, example};

/// A scalar dataType as TSL JSON (numeric specs as strings).
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-1000i64..1000, 0i64..2000).prop_map(|(lo, span)| json!({"type": "int", "specs": {"min": lo.to_string(), "max": (lo + span).to_string(), "step": "1"}})),
        Just(json!({"type": "int", "specs": {}})),
        (-1000i64..1000, 0i64..2000, any::<bool>()).prop_map(|(lo, span, dbl)| json!({"type": if dbl {"double"} else {"float"}, "specs": {"min": lo.to_string(), "max": (lo + span).to_string()}})),
        (1u32..=10240).prop_map(|len| json!({"type": "text", "specs": {"length": len.to_string()}})),
        Just(json!({"type": "date", "specs": {}})),
        Just(json!({"type": "bool", "specs": {"0": "off", "1": "on"}})),
        proptest::collection::btree_set(-50i64..50, 1..6).prop_map(|keys| {
            let specs: Map<String, Value> = keys.into_iter().map(|k| (k.to_string(), json!(format!("v{k}")))).collect();
            json!({"type": "enum", "specs": specs})
        }),
    ]
}

fn members(inner: impl Strategy<Value = Value>) -> impl Strategy<Value = Vec<Value>> {
    proptest::collection::vec(inner, 1..5).prop_map(|dts| {
        dts.into_iter().enumerate().map(|(i, dt)| json!({"identifier": format!("m{i}"), "name": format!("m{i}"), "dataType": dt})).collect()
    })
}

fn array_item() -> impl Strategy<Value = Value> {
    prop_oneof![
        scalar().prop_filter("array items are int, float, double, text or struct", |dt| {
            matches!(
                dt["type"].as_str(),
                Some("int" | "float" | "double" | "text")
            )
        }),
        members(scalar()).prop_map(|m| json!({"type": "struct", "specs": m})),
    ]
}

fn data_type() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => scalar(),
        1 => members(scalar()).prop_map(|m| json!({"type": "struct", "specs": m})),
        1 => (1u32..=512, array_item()).prop_map(|(size, item)| json!({"type": "array", "specs": {"size": size.to_string(), "item": item}})),
    ]
}

fn service() -> impl Strategy<Value = Arc<CompiledService>> {
    members(data_type()).prop_map(|inputs| {
        let doc = json!({"services": [{"identifier": "S", "callType": "sync", "method": "thing.service.S",
            "inputData": inputs.clone(), "outputData": inputs}]});
        let model = check(&doc).unwrap_or_else(|p| panic!("generated model rejected: {p:?}"));
        Arc::clone(CompiledModel::compile(model).unwrap().service("S").unwrap())
    })
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,8}".prop_map(Value::String),
        prop_oneof![
            Just("int"),
            Just("struct"),
            Just("array"),
            Just("text"),
            Just("enum"),
            Just("identifier"),
            Just("dataType"),
            Just("specs")
        ]
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("type".to_owned()),
                    Just("specs".to_owned()),
                    Just("identifier".to_owned()),
                    Just("dataType".to_owned()),
                    Just("services".to_owned()),
                    Just("inputData".to_owned()),
                    Just("item".to_owned()),
                    Just("size".to_owned()),
                    Just("min".to_owned()),
                    "[a-z]{1,4}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every leaf pointer of a value, with the value there.
fn leaves(value: &Value, at: String, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => map
            .iter()
            .for_each(|(k, v)| leaves(v, format!("{at}/{k}"), out)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, v)| leaves(v, format!("{at}/{i}"), out)),
        other => out.push((at, other.clone())),
    }
}

/// A value that breaks `schema` (a leaf schema) for sure.
fn breaking(schema: &Value) -> Value {
    match schema["type"].as_str() {
        Some("integer") if schema.get("enum").is_some() => {
            let max = schema["enum"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_i64)
                .max()
                .unwrap();
            json!(max + 1)
        }
        Some("integer") => json!(schema["maximum"].as_i64().unwrap() + 1),
        Some("number") => json!(schema["maximum"].as_f64().unwrap().abs() * 2.0 + 1.0),
        Some("string") if schema.get("pattern").is_some() => json!("not-a-date"),
        Some("string") => json!("x".repeat(schema["maxLength"].as_u64().unwrap() as usize + 1)),
        other => panic!("not a leaf schema: {other:?}"),
    }
}

/// The schema at an instance pointer.
fn schema_at<'s>(schema: &'s Value, pointer: &str) -> &'s Value {
    let mut s = schema;
    for segment in pointer.split('/').skip(1) {
        s = if s["type"] == "array" {
            &s["items"]
        } else {
            &s["properties"][segment]
        };
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn generated_args_and_outputs_validate(s in service(), seed in any::<u64>()) {
        let args = example::example_args(s.service(), seed);
        prop_assert_eq!(s.validate_args(&args), vec![], "{}", args);
        let out = example::example_output(s.service(), seed);
        prop_assert_eq!(s.validate_output(&out), vec![], "{}", out);
    }

    #[test]
    fn breaking_a_leaf_is_reported_at_its_pointer(s in service(), seed in any::<u64>(), pick in any::<usize>()) {
        let mut args = example::example_args(s.service(), seed);
        let mut found = Vec::new();
        leaves(&args, String::new(), &mut found);
        prop_assume!(!found.is_empty());
        let (pointer, _) = found[pick % found.len()].clone();
        let bad = breaking(schema_at(s.input_schema(), &pointer));
        *args.pointer_mut(&pointer).unwrap() = bad.clone();
        let violations = s.validate_args(&args);
        prop_assert!(violations.iter().any(|v| v.pointer == pointer), "{pointer} = {bad}: {violations:?}");
    }

    #[test]
    fn the_checker_never_panics(doc in arb_json()) {
        let _ = check(&doc);
        let _ = check(&json!({"services": [doc.clone()]}));
        let _ = check(&json!({"services": [{"identifier": "S", "inputData": [{"identifier": "a", "dataType": doc}]}]}));
    }

    #[test]
    fn the_validator_never_panics(s in service(), value in arb_json()) {
        let _ = s.validate_args(&value);
        let _ = s.validate_output(&value);
        let _ = s.validate_args_str(&value.to_string());
    }
}
