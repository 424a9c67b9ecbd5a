//! Journal replay of arbitrary segment bytes: reading stops cleanly at the
//! first torn or corrupt frame, never panics, and what it read encodes and
//! reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    thingcall_server::fuzzing::journal_segment_round_trip(data);
});
