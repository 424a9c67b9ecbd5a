//! Property and event posts compiled with the model: subsets pass, values
//! are checked by type, `{"value", "time"}` wrappers are taken off.

#![allow(clippy::unwrap_used)] // test code

use serde_json::json;
use thingcall_tsl::{CompiledModel, ViolationKind, check_str, posted_values};

fn model() -> CompiledModel {
    let text = include_str!("../test-models/calibrator-all-types.json");
    CompiledModel::compile(check_str(text).unwrap()).unwrap()
}

fn kinds(m: &CompiledModel, params: serde_json::Value) -> Vec<ViolationKind> {
    let (values, mut v) = posted_values(&params);
    v.extend(m.property_post().validate_args(&values));
    v.into_iter().map(|v| v.kind).collect()
}

#[test]
fn property_posts_take_any_subset_of_well_typed_values() {
    let m = model();
    assert!(kinds(&m, json!({})).is_empty());
    assert!(kinds(&m, json!({"Brightness": 40})).is_empty());
    assert!(
        kinds(
            &m,
            json!({"Brightness": {"value": 40, "time": 1700000000000u64}})
        )
        .is_empty()
    );
    assert!(
        kinds(
            &m,
            json!({"Brightness": {"value": 40, "time": "1700000000000"}})
        )
        .is_empty()
    );
    assert_eq!(kinds(&m, json!({"Brightness": 400})), [ViolationKind::Int]);
    assert_eq!(
        kinds(&m, json!({"Brightness": {"value": 4, "time": -1}})),
        [ViolationKind::Time]
    );
    assert_eq!(
        kinds(&m, json!({"Unknown": 1})),
        [ViolationKind::UnknownParameter]
    );
    // An object with more than value and time is the value itself.
    assert!(!kinds(&m, json!({"Brightness": {"value": 4, "extra": 1}})).is_empty());
}

#[test]
fn events_are_compiled_by_identifier() {
    let m = model();
    assert!(m.event("post").is_some());
    assert!(m.event("NoSuchEvent").is_none());
}
