//! Alink reply parsing: arbitrary bytes never panic, and a reply that
//! parses survives being written and parsed again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use thingcall_core::AlinkReply;

fuzz_target!(|data: &[u8]| {
    let Ok(reply) = AlinkReply::from_slice(data) else {
        return;
    };
    let again = AlinkReply::from_slice(&reply.to_vec())
        .unwrap_or_else(|e| panic!("a reply we wrote does not parse: {e}"));
    assert_eq!(again.id, reply.id);
    assert_eq!(again.code, reply.code);
    let _ = reply.id.message_id();
    let _ = reply.data_json();
});
