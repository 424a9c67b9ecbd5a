//! `tsl check` on arbitrary JSON: either a model that compiles, or
//! problems that each name a JSON pointer. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use thingcall_tsl::{CompiledModel, check_str};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match check_str(text) {
        Ok(model) => {
            // A model the checker accepts compiles.
            if let Err(e) = CompiledModel::compile(model) {
                panic!("a checked model does not compile: {e}");
            }
        }
        Err(problems) => {
            assert!(!problems.is_empty());
            for p in problems {
                assert!(p.to_string().starts_with('/'), "{p}");
            }
        }
    }
});
