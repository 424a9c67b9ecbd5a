//! The Alibaba Cloud IoT OpenAPI wire model (RPC style, version 2018-01-20).
//!
//! * Parsing: [`Params`] decodes the query string and form body (`+` is a
//!   space, repeated keys are detected, `Name.N` lists are gathered), and
//!   [`ApiRequest::parse`] turns them into one typed request per action.
//! * Encoding: [`encode_response`] writes any action's response in JSON or
//!   XML; [`encode_gateway_error`] writes gateway errors.
//! * Decoding: [`decode_response`] reads them back, for clients.
//!
//! Every malformed input maps to the documented Alibaba code, as an
//! [`thingcall_core::ApiError`]. The crate does no IO.

pub mod actions;
pub mod common;
pub mod envelope;
pub mod field;
pub mod form;
pub mod node;
pub mod params;
pub mod sink;

pub use actions::{ACTION_NAMES, Action, ApiRequest};
pub use common::{CONTENT_TYPE_JSON, CONTENT_TYPE_XML, CommonParams, Format};
pub use envelope::{
    BusinessFailure, Data, Decoded, GatewayError, Response, ResponseBody, decode_gateway_error,
    decode_response, encode_gateway_error, encode_response,
};
pub use node::DecodeError;
pub use params::Params;

/// The README example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
