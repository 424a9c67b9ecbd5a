//! Parameters every action shares: `Action`, `Version`, `Format` and the
//! signature set.

use thingcall_core::ApiError;

use crate::params::Params;

/// `application/json;charset=utf-8`
pub const CONTENT_TYPE_JSON: &str = "application/json;charset=utf-8";
/// `text/xml;charset=utf-8` (the tea SDKs parse XML errors only under
/// exactly this content type).
pub const CONTENT_TYPE_XML: &str = "text/xml;charset=utf-8";

/// The response format a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// JSON.
    Json,
    /// XML.
    Xml,
}

impl Format {
    /// Parses the `Format` parameter, ignoring case.
    pub fn parse(value: &str) -> Result<Format, ApiError> {
        if value.eq_ignore_ascii_case("json") {
            Ok(Format::Json)
        } else if value.eq_ignore_ascii_case("xml") {
            Ok(Format::Xml)
        } else {
            Err(ApiError::invalid_parameter(
                "Format",
                "must be JSON or XML.",
            ))
        }
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => CONTENT_TYPE_JSON,
            Format::Xml => CONTENT_TYPE_XML,
        }
    }

    /// The wire spelling (`JSON` / `XML`).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "JSON",
            Format::Xml => "XML",
        }
    }
}

/// The common parameters of an RPC-style request (spec digest §2.1), as
/// sent. Signature checks happen in `thingcall-sign`; this type only reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommonParams {
    /// `Action`.
    pub action: Option<String>,
    /// `Version`.
    pub version: Option<String>,
    /// `Format`, when given.
    pub format: Option<Format>,
    /// `AccessKeyId`.
    pub access_key_id: Option<String>,
    /// `Signature`.
    pub signature: Option<String>,
    /// `SignatureMethod`.
    pub signature_method: Option<String>,
    /// `SignatureVersion`.
    pub signature_version: Option<String>,
    /// `SignatureNonce`.
    pub signature_nonce: Option<String>,
    /// `SignatureType` (sent empty by `aliyunsdkcore`).
    pub signature_type: Option<String>,
    /// `Timestamp`.
    pub timestamp: Option<String>,
    /// `RegionId`.
    pub region_id: Option<String>,
    /// `SecurityToken`.
    pub security_token: Option<String>,
}

/// The names of the common parameters; they are not business parameters.
pub const COMMON_PARAM_NAMES: &[&str] = &[
    "Action",
    "Version",
    "Format",
    "AccessKeyId",
    "Signature",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "SignatureType",
    "Timestamp",
    "RegionId",
    "SecurityToken",
];

impl CommonParams {
    /// Reads the common parameters. Each may appear at most once; `Format`
    /// must be JSON or XML in any case.
    pub fn from_params(params: &Params) -> Result<CommonParams, ApiError> {
        let get = |name: &str| -> Result<Option<String>, ApiError> {
            Ok(params.get(name)?.map(str::to_owned))
        };
        Ok(CommonParams {
            action: get("Action")?,
            version: get("Version")?,
            format: params.get("Format")?.map(Format::parse).transpose()?,
            access_key_id: get("AccessKeyId")?,
            signature: get("Signature")?,
            signature_method: get("SignatureMethod")?,
            signature_version: get("SignatureVersion")?,
            signature_nonce: get("SignatureNonce")?,
            signature_type: get("SignatureType")?,
            timestamp: get("Timestamp")?,
            region_id: get("RegionId")?,
            security_token: get("SecurityToken")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thingcall_core::ErrorCode;

    #[test]
    fn format_is_case_insensitive() {
        assert_eq!(Format::parse("json").unwrap(), Format::Json);
        assert_eq!(Format::parse("XmL").unwrap(), Format::Xml);
        assert_eq!(
            Format::parse("yaml").unwrap_err().code(),
            ErrorCode::InvalidParameter
        );
    }

    #[test]
    fn reads_common_params() {
        let p = Params::from_query_and_body(
            b"Action=A&Format=xml&SignatureType=&Version=2018-01-20",
            None,
        )
        .unwrap();
        let c = CommonParams::from_params(&p).unwrap();
        assert_eq!(c.action.as_deref(), Some("A"));
        assert_eq!(c.format, Some(Format::Xml));
        assert_eq!(c.signature_type.as_deref(), Some(""));
        assert_eq!(c.timestamp, None);
        let p = Params::from_query_and_body(b"Format=JSON&Format=XML", None).unwrap();
        assert!(CommonParams::from_params(&p).is_err());
    }
}
