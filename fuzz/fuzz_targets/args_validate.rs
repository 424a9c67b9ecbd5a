//! Args validation of every service of a fixed model (every TSL type) on
//! arbitrary text, and reply checking of the same text as `data`.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use thingcall_tsl::{CompiledModel, ReplyMode, check_str};

const MODEL: &str =
    include_str!("../../crates/thingcall-tsl/test-models/calibrator-all-types.json");

fn model() -> &'static Arc<CompiledModel> {
    static M: OnceLock<Arc<CompiledModel>> = OnceLock::new();
    M.get_or_init(|| {
        let checked = check_str(MODEL).unwrap_or_else(|p| panic!("fixture: {p:?}"));
        Arc::new(CompiledModel::compile(checked).unwrap_or_else(|e| panic!("fixture: {e}")))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let value: Option<serde_json::Value> = serde_json::from_str(text).ok();
    for (_, service) in model().services() {
        match service.validate_args_str(text) {
            Ok(_) => {}
            Err(violations) => assert!(!violations.is_empty()),
        }
        if let Some(v) = &value {
            let check = service.check_reply(v, ReplyMode::Strict);
            assert_eq!(check.accepted, check.violations.is_empty());
        }
    }
});
