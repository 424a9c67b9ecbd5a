//! Thing-model hot paths: validating Args, big arrays, compiling a model.

#![allow(missing_docs, clippy::unwrap_used)] // criterion macros; bench code

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use thingcall_tsl::{CompiledModel, check};

fn six_field_service() -> Value {
    json!({"services": [{"identifier": "Calibrate", "callType": "sync", "method": "thing.service.Calibrate",
    "inputData": [
        {"identifier": "Offset", "name": "o", "dataType": {"type": "float", "specs": {"min": "-10", "max": "10"}}},
        {"identifier": "Mode", "name": "m", "dataType": {"type": "enum", "specs": {"0": "fast", "1": "precise"}}},
        {"identifier": "Operator", "name": "op", "dataType": {"type": "text", "specs": {"length": "64"}}},
        {"identifier": "StartAt", "name": "s", "dataType": {"type": "date", "specs": {}}},
        {"identifier": "Level", "name": "l", "dataType": {"type": "int", "specs": {"min": "0", "max": "100"}}},
        {"identifier": "Enabled", "name": "e", "dataType": {"type": "bool", "specs": {"0": "off", "1": "on"}}}
    ],
    "outputData": [
        {"identifier": "Samples", "name": "s", "dataType": {"type": "array", "specs": {"size": "512", "item": {"type": "double", "specs": {"min": "-1000", "max": "1000"}}}}}
    ]}]})
}

fn fifty_services() -> Value {
    let services: Vec<Value> = (0..50)
        .map(|i| {
            json!({"identifier": format!("Svc{i}"), "callType": if i % 2 == 0 {"sync"} else {"async"}, "method": format!("thing.service.Svc{i}"),
                "inputData": [
                    {"identifier": "A", "name": "a", "dataType": {"type": "int", "specs": {"min": "0", "max": "100"}}},
                    {"identifier": "B", "name": "b", "dataType": {"type": "text", "specs": {"length": "32"}}},
                    {"identifier": "C", "name": "c", "dataType": {"type": "struct", "specs": [
                        {"identifier": "X", "name": "x", "dataType": {"type": "double", "specs": {"min": "-1", "max": "1"}}},
                        {"identifier": "Y", "name": "y", "dataType": {"type": "enum", "specs": {"0": "a", "1": "b"}}}]}}
                ],
                "outputData": [{"identifier": "R", "name": "r", "dataType": {"type": "bool", "specs": {"0": "no", "1": "yes"}}}]})
        })
        .collect();
    json!({"services": services})
}

fn benches(c: &mut Criterion) {
    let model = CompiledModel::compile(check(&six_field_service()).unwrap()).unwrap();
    let svc = model.service("Calibrate").unwrap();
    let args = r#"{"Offset":1.5,"Mode":1,"Operator":"bob","StartAt":"1700000000000","Level":42,"Enabled":1}"#;
    assert!(svc.validate_args_str(args).is_ok());
    c.bench_function("validate_args_str_6_fields", |b| {
        b.iter(|| svc.validate_args_str(black_box(args)).unwrap())
    });

    let samples: Vec<f64> = (0..512).map(|i| f64::from(i) * 0.5 - 100.0).collect();
    let output = json!({"Samples": samples});
    assert!(svc.validate_output(&output).is_empty());
    c.bench_function("validate_output_512_item_array", |b| {
        b.iter(|| svc.validate_output(black_box(&output)))
    });

    let doc = fifty_services();
    c.bench_function("check_and_compile_50_services", |b| {
        b.iter(|| CompiledModel::compile(check(black_box(&doc)).unwrap()).unwrap())
    });
}

criterion_group!(tsl, benches);
criterion_main!(tsl);
