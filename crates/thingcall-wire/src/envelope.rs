//! Response envelopes: success, business failure and gateway error, in JSON
//! and XML.
//!
//! * Success: HTTP 200, `RequestId`, `Success=true`, then the action's data.
//! * Business failure: HTTP 200, `RequestId`, `Success=false`, `Code`,
//!   `ErrorMessage` (spec digest §3.2).
//! * Gateway error: the catalogue's HTTP status, `RequestId`, `HostId`,
//!   `Code`, `Message`, `Recommend`; the XML root is `<Error>` (§3.1).

use thingcall_core::{ApiError, RequestId};

use crate::common::Format;
use crate::field::WireObject;
use crate::node::{DecodeError, Node};
use crate::sink::{JsonWriter, Sink, XmlWriter};

/// What an action returns on success, written after `RequestId` and
/// `Success`.
pub trait ResponseBody: Sized {
    /// Writes the body's fields at the response root.
    fn write_body<W: Sink>(&self, w: &mut W);
    /// Reads the body from the response root.
    fn read_body(root: &Node) -> Result<Self, DecodeError>;
}

/// Actions that return nothing but `RequestId` and `Success`.
impl ResponseBody for () {
    fn write_body<W: Sink>(&self, _w: &mut W) {}
    fn read_body(_root: &Node) -> Result<(), DecodeError> {
        Ok(())
    }
}

/// A body that is one `Data` object.
#[derive(Clone, Debug, PartialEq)]
pub struct Data<T>(pub T);

impl<T: WireObject> ResponseBody for Data<T> {
    fn write_body<W: Sink>(&self, w: &mut W) {
        w.begin_object("Data");
        self.0.write_fields(w);
        w.end_object("Data");
    }
    fn read_body(root: &Node) -> Result<Data<T>, DecodeError> {
        match root.field("Data") {
            Some(node) if node.is_object_like() => T::read_fields(node).map(Data),
            _ => Err(DecodeError::new("missing Data object")),
        }
    }
}

/// A business failure (`Success=false`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusinessFailure {
    /// `Code`, e.g. `iot.messagebroker.TIMEOUT`.
    pub code: String,
    /// `ErrorMessage`.
    pub message: String,
}

impl From<&ApiError> for BusinessFailure {
    fn from(e: &ApiError) -> BusinessFailure {
        BusinessFailure {
            code: e.wire_code().to_owned(),
            message: e.message().to_owned(),
        }
    }
}

/// One response in the RPC envelope.
#[derive(Clone, Debug, PartialEq)]
pub struct Response<B> {
    /// `RequestId`.
    pub request_id: RequestId,
    /// The action's data, or the business failure.
    pub outcome: Result<B, BusinessFailure>,
}

/// A gateway error body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayError {
    /// `RequestId`.
    pub request_id: RequestId,
    /// `HostId`: the host the request was sent to.
    pub host_id: String,
    /// `Code`, e.g. `SignatureDoesNotMatch`.
    pub code: String,
    /// `Message`.
    pub message: String,
    /// `Recommend`: a troubleshooting link.
    pub recommend: Option<String>,
}

impl GatewayError {
    /// The body for an error, with Alibaba's troubleshooting link.
    pub fn from_api_error(
        error: &ApiError,
        request_id: RequestId,
        host_id: impl Into<String>,
    ) -> GatewayError {
        let recommend = format!(
            "https://api.aliyun.com/troubleshoot?q={}&product=Iot&requestId={}",
            error.wire_code(),
            request_id
        );
        GatewayError {
            request_id,
            host_id: host_id.into(),
            code: error.wire_code().to_owned(),
            message: error.message().to_owned(),
            recommend: Some(recommend),
        }
    }

    fn write<W: Sink>(&self, w: &mut W) {
        w.str("RequestId", self.request_id.as_str());
        w.str("HostId", &self.host_id);
        w.str("Code", &self.code);
        w.str("Message", &self.message);
        if let Some(r) = &self.recommend {
            w.str("Recommend", r);
        }
    }

    fn read(root: &Node) -> Result<GatewayError, DecodeError> {
        let text = |name: &str| root.field(name).and_then(Node::as_text);
        Ok(GatewayError {
            request_id: request_id(root)?,
            host_id: text("HostId").unwrap_or_default(),
            code: text("Code").ok_or_else(|| DecodeError::new("gateway error without Code"))?,
            message: text("Message").unwrap_or_default(),
            recommend: text("Recommend"),
        })
    }
}

fn request_id(root: &Node) -> Result<RequestId, DecodeError> {
    let text = root
        .field("RequestId")
        .and_then(Node::as_text)
        .ok_or_else(|| DecodeError::new("missing RequestId"))?;
    RequestId::new(text).map_err(|e| DecodeError::new(e.to_string()))
}

fn write_response<B: ResponseBody, W: Sink>(response: &Response<B>, w: &mut W) {
    w.str("RequestId", response.request_id.as_str());
    match &response.outcome {
        Ok(body) => {
            w.bool("Success", true);
            body.write_body(w);
        }
        Err(failure) => {
            w.bool("Success", false);
            w.str("Code", &failure.code);
            w.str("ErrorMessage", &failure.message);
        }
    }
}

/// Encodes a response for `action` in `format`.
pub fn encode_response<B: ResponseBody>(
    action: &'static str,
    format: Format,
    response: &Response<B>,
) -> String {
    match format {
        Format::Json => {
            let mut w = JsonWriter::new(256);
            write_response(response, &mut w);
            w.finish()
        }
        Format::Xml => {
            let mut w = XmlWriter::new(action, "Response", 320);
            write_response(response, &mut w);
            w.finish()
        }
    }
}

/// Encodes a gateway error in `format`.
pub fn encode_gateway_error(format: Format, error: &GatewayError) -> String {
    match format {
        Format::Json => {
            let mut w = JsonWriter::new(256);
            error.write(&mut w);
            w.finish()
        }
        Format::Xml => {
            let mut w = XmlWriter::new("Error", "", 320);
            error.write(&mut w);
            w.finish()
        }
    }
}

/// A decoded response body: the action's envelope or a gateway error.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded<B> {
    /// The RPC envelope (success or business failure).
    Response(Response<B>),
    /// A gateway error.
    Gateway(GatewayError),
}

fn parse_root(action: &str, format: Format, body: &[u8]) -> Result<(bool, Node), DecodeError> {
    match format {
        Format::Json => {
            let node = Node::from_json(body)?;
            if !matches!(node, Node::Object(_)) {
                return Err(DecodeError::new("JSON body is not an object"));
            }
            let gateway = !node.has("Success") && node.has("Code");
            Ok((gateway, node))
        }
        Format::Xml => {
            let (root, node) = Node::from_xml(body)?;
            if root == "Error" {
                Ok((true, node))
            } else if root.strip_suffix("Response") == Some(action) {
                Ok((false, node))
            } else {
                Err(DecodeError::new(format!(
                    "unexpected XML root <{root}> for {action}"
                )))
            }
        }
    }
}

/// Decodes a response body for `action` in `format`.
pub fn decode_response<B: ResponseBody>(
    action: &str,
    format: Format,
    body: &[u8],
) -> Result<Decoded<B>, DecodeError> {
    let (gateway, root) = parse_root(action, format, body)?;
    if gateway {
        return GatewayError::read(&root).map(Decoded::Gateway);
    }
    let request_id = request_id(&root)?;
    let success = root
        .field("Success")
        .and_then(Node::as_bool)
        .ok_or_else(|| DecodeError::new("missing Success"))?;
    let outcome = if success {
        Ok(B::read_body(&root)?)
    } else {
        let text = |name: &str| root.field(name).and_then(Node::as_text);
        Err(BusinessFailure {
            code: text("Code").ok_or_else(|| DecodeError::new("failure without Code"))?,
            message: text("ErrorMessage").unwrap_or_default(),
        })
    };
    Ok(Decoded::Response(Response {
        request_id,
        outcome,
    }))
}

/// Decodes a gateway error body.
pub fn decode_gateway_error(format: Format, body: &[u8]) -> Result<GatewayError, DecodeError> {
    let root = match format {
        Format::Json => Node::from_json(body)?,
        Format::Xml => {
            let (name, node) = Node::from_xml(body)?;
            if name != "Error" {
                return Err(DecodeError::new(format!(
                    "unexpected XML root <{name}> for an error"
                )));
            }
            node
        }
    };
    GatewayError::read(&root)
}
