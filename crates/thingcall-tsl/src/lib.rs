//! Alibaba IoT thing models (TSL): parse, check, compile, validate.
//!
//! * [`check()`]: parse TSL JSON into a typed [`ThingModel`], reporting every
//!   problem at its JSON pointer.
//! * [`schema`]: compile a service's `inputData` / `outputData` to JSON
//!   Schema.
//! * [`CompiledService`]: validate `Args` and reply `data` through the
//!   `jsonschema` crate, with violations mapped to Alibaba's codes.
//! * [`ModelCache`]: compile once per published version and share.
//! * [`example`]: generate values that satisfy the model.
//!
//! The crate does no IO.

pub mod check;
pub mod compiled;
pub mod example;
pub mod model;
pub mod pointer;
pub mod schema;
pub mod validate;

pub use check::{Problem, check, check_str};
pub use compiled::{CompiledModel, ModelCache};
pub use model::{DataType, Param, Service, ServiceInput, ThingModel};
pub use validate::{
    CompileError, CompiledService, ReplyCheck, ReplyMode, Violation, ViolationKind, posted_values,
    violations_to_api_error,
};

/// The README example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
