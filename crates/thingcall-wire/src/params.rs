//! The decoded parameters of one request, with typed accessors.
//!
//! A request's parameters come from the URL query and the form body, merged
//! (spec digest §2.2). [`Params`] keeps them in arrival order and answers the
//! questions an action parser asks: is it there, is it there once, is it a
//! number. Every failure is an [`ApiError`] with the documented code.

use thingcall_core::{ApiError, ErrorCode};

use crate::form;

/// At most this many parameters per request.
pub const MAX_PARAMS: usize = 512;
/// At most this many bytes in one decoded parameter name.
pub const MAX_NAME_BYTES: usize = 128;
/// At most this many bytes in one decoded value (a TSL document is the
/// largest legitimate value: Alibaba caps imports at 256 KB).
pub const MAX_VALUE_BYTES: usize = 256 * 1024;

/// The merged, decoded parameters of one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parameters from already-decoded pairs (checked against the limits).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<Params, ApiError> {
        let params = Params { pairs };
        params.check_limits()?;
        Ok(params)
    }

    /// Decodes the URL query and, when given, a form body.
    pub fn from_query_and_body(query: &[u8], body: Option<&[u8]>) -> Result<Params, ApiError> {
        let mut pairs = Vec::new();
        form::decode_pairs(query, &mut pairs)?;
        if let Some(body) = body {
            form::decode_pairs(body, &mut pairs)?;
        }
        Params::from_pairs(pairs)
    }

    fn check_limits(&self) -> Result<(), ApiError> {
        if self.pairs.len() > MAX_PARAMS {
            return Err(ApiError::invalid_parameter(
                "the request",
                format_args!("has more than {MAX_PARAMS} parameters."),
            ));
        }
        for (name, value) in &self.pairs {
            if name.len() > MAX_NAME_BYTES {
                return Err(ApiError::invalid_parameter(
                    "a parameter name",
                    format_args!("is longer than {MAX_NAME_BYTES} bytes."),
                ));
            }
            if value.len() > MAX_VALUE_BYTES {
                return Err(ApiError::invalid_parameter(
                    name,
                    format_args!("is longer than {MAX_VALUE_BYTES} bytes."),
                ));
            }
        }
        Ok(())
    }

    /// All pairs in arrival order (what a v1 signature covers).
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// Adds a pair (used for v3 requests, whose `Action` and `Version`
    /// arrive as headers).
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.pairs.push((name.into(), value.into()));
    }

    /// True when no pair has this name.
    pub fn is_absent(&self, name: &str) -> bool {
        !self.pairs.iter().any(|(n, _)| n == name)
    }

    /// A single-valued parameter: `None` when absent, an error when repeated.
    pub fn get(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut found = None;
        for (n, v) in &self.pairs {
            if n == name {
                if found.is_some() {
                    return Err(ApiError::invalid_parameter(
                        name,
                        "is given more than once.",
                    ));
                }
                found = Some(v.as_str());
            }
        }
        Ok(found)
    }

    /// A single-valued parameter that counts as absent when empty.
    pub fn get_non_empty(&self, name: &str) -> Result<Option<&str>, ApiError> {
        Ok(self.get(name)?.filter(|v| !v.is_empty()))
    }

    /// A required parameter: absent or empty gives `Missing{Name}`.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get_non_empty(name)?
            .ok_or_else(|| ApiError::missing(name))
    }

    /// An optional integer. A value that is not a decimal integer in range
    /// gives `iot.common.InvalidFormattedParameter`.
    pub fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get_non_empty(name)? {
            None => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                ApiError::with_detail(
                    ErrorCode::InvalidFormattedParameter,
                    format_args!("{name} must be an integer, got {v:?}."),
                )
            }),
        }
    }

    /// An optional boolean, `true`/`false` in any case (the Python SDKs send
    /// `True`/`False`).
    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get_non_empty(name)? {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(ApiError::with_detail(
                ErrorCode::InvalidFormattedParameter,
                format_args!("{name} must be true or false, got {v:?}."),
            )),
        }
    }

    /// A list parameter sent as `Name.1`, `Name.2`, ... in index order.
    /// Gaps are allowed (the Python SDK skips `None` items but keeps
    /// counting); a repeated index, index 0 or a non-numeric index is an
    /// `InvalidParameter`.
    pub fn list(&self, name: &str) -> Result<Vec<&str>, ApiError> {
        let mut items: Vec<(u32, &str)> = Vec::new();
        for (n, v) in &self.pairs {
            let Some(index) = n.strip_prefix(name).and_then(|rest| rest.strip_prefix('.')) else {
                continue;
            };
            let index: u32 = match index.parse() {
                Ok(i) if i > 0 && index.bytes().all(|b| b.is_ascii_digit()) => i,
                _ => return Err(ApiError::invalid_parameter(n, "has an invalid list index.")),
            };
            if items.iter().any(|(i, _)| *i == index) {
                return Err(ApiError::invalid_parameter(n, "is given more than once."));
            }
            items.push((index, v.as_str()));
        }
        items.sort_unstable_by_key(|(i, _)| *i);
        Ok(items.into_iter().map(|(_, v)| v).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Params {
        Params::from_query_and_body(q.as_bytes(), None).unwrap()
    }

    #[test]
    fn single_and_repeated() {
        let p = params("A=1&B=&A=2");
        assert_eq!(p.get("A").unwrap_err().code(), ErrorCode::InvalidParameter);
        assert_eq!(p.get("B").unwrap(), Some(""));
        assert_eq!(p.get_non_empty("B").unwrap(), None);
        assert_eq!(p.required("B").unwrap_err().wire_code(), "MissingB");
        assert_eq!(p.required("C").unwrap_err().wire_code(), "MissingC");
    }

    #[test]
    fn typed_values() {
        let p = params("Qos=abc&N=12&T=True&F=false&X=yes&Big=99999999999999999999");
        assert_eq!(
            p.int("Qos").unwrap_err().code(),
            ErrorCode::InvalidFormattedParameter
        );
        assert_eq!(p.int("N").unwrap(), Some(12));
        assert_eq!(
            p.int("Big").unwrap_err().code(),
            ErrorCode::InvalidFormattedParameter
        );
        assert_eq!(p.bool("T").unwrap(), Some(true));
        assert_eq!(p.bool("F").unwrap(), Some(false));
        assert_eq!(
            p.bool("X").unwrap_err().code(),
            ErrorCode::InvalidFormattedParameter
        );
    }

    #[test]
    fn lists() {
        let p = params("DeviceName.2=b&DeviceName.1=a&DeviceName.10=c&DeviceNameX=no");
        assert_eq!(p.list("DeviceName").unwrap(), vec!["a", "b", "c"]);
        for bad in [
            "DeviceName.0=a",
            "DeviceName.x=a",
            "DeviceName.1=a&DeviceName.1=b",
            "DeviceName.+1=a",
        ] {
            assert_eq!(
                params(bad).list("DeviceName").unwrap_err().code(),
                ErrorCode::InvalidParameter,
                "{bad}"
            );
        }
    }

    #[test]
    fn limits() {
        let long = format!("A={}", "x".repeat(MAX_VALUE_BYTES + 1));
        let err = Params::from_query_and_body(long.as_bytes(), None).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidParameter);
        let many: String = (0..=MAX_PARAMS).map(|i| format!("P{i}=1&")).collect();
        assert!(Params::from_query_and_body(many.as_bytes(), None).is_err());
    }

    #[test]
    fn body_and_query_merge() {
        let p = Params::from_query_and_body(b"A=1", Some(b"B=2&A=3")).unwrap();
        assert_eq!(p.get("B").unwrap(), Some("2"));
        assert!(
            p.get("A").is_err(),
            "a key in both query and body is a duplicate"
        );
    }
}
