//! Form and query decoding, then typed parsing of every action: never a
//! panic, and every refusal carries an error code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use thingcall_wire::{ACTION_NAMES, ApiRequest, Params};

fuzz_target!(|data: &[u8]| {
    // The first 0xFF byte, if any, separates the query from the body.
    let (query, body) = match data.iter().position(|b| *b == 0xFF) {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    let Ok(params) = Params::from_query_and_body(query, body) else {
        return;
    };
    if let Ok(Some(action)) = params.get("Action") {
        let _ = ApiRequest::parse(action, &params);
    }
    for action in ACTION_NAMES {
        if let Err(e) = ApiRequest::parse(action, &params) {
            assert!(!e.code().code_template().is_empty());
        }
    }
});
