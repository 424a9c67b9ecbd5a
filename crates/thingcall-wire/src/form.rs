//! `application/x-www-form-urlencoded` decoding and encoding.
//!
//! Decoding follows the form rules the Alibaba gateway applies to both the
//! query string and a form body: `+` is a space, `%XY` is a byte, and the
//! decoded bytes must be UTF-8. Encoding (for clients) uses RFC 3986
//! percent-encoding, which every server accepts.

use thingcall_core::ApiError;
use thingcall_core::encoding::percent_encode_into;

/// Decodes one form component (`+` → space, `%XY` → byte).
///
/// `what` names the component in the error (a parameter name, or
/// `"a parameter name"` when decoding a key).
pub fn decode_component(raw: &[u8], what: &str) -> Result<String, ApiError> {
    if !raw.iter().any(|&b| b == b'%' || b == b'+') {
        return String::from_utf8(raw.to_vec())
            .map_err(|_| ApiError::invalid_parameter(what, "is not valid UTF-8."));
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = raw.get(i + 1).and_then(|&b| hex_value(b));
                let lo = raw.get(i + 2).and_then(|&b| hex_value(b));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => {
                        return Err(ApiError::invalid_parameter(
                            what,
                            "contains a malformed percent-encoding.",
                        ));
                    }
                }
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::invalid_parameter(what, "is not valid UTF-8."))
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits and decodes a form string into `(name, value)` pairs, in order.
/// Empty segments (`a=1&&b=2`) are skipped; a segment without `=` is a name
/// with an empty value.
pub fn decode_pairs(raw: &[u8], out: &mut Vec<(String, String)>) -> Result<(), ApiError> {
    for segment in raw.split(|&b| b == b'&') {
        if segment.is_empty() {
            continue;
        }
        let (name, value) = match segment.iter().position(|&b| b == b'=') {
            Some(eq) => (&segment[..eq], &segment[eq + 1..]),
            None => (segment, &b""[..]),
        };
        let name = decode_component(name, "a parameter name")?;
        if name.is_empty() {
            return Err(ApiError::invalid_parameter("a parameter name", "is empty."));
        }
        let value = decode_component(value, &name)?;
        out.push((name, value));
    }
    Ok(())
}

/// Encodes pairs as a form string with RFC 3986 percent-encoding.
pub fn encode_pairs<'a, I>(pairs: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut out = String::new();
    for (name, value) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        percent_encode_into(name, &mut out);
        out.push('=');
        percent_encode_into(value, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use thingcall_core::ErrorCode;

    #[test]
    fn decodes_form_rules() {
        let mut pairs = Vec::new();
        decode_pairs(
            b"DeviceName=dev+1&Args=%7B%22a%22%3A1%7D&&Empty=&Bare",
            &mut pairs,
        )
        .unwrap();
        assert_eq!(
            pairs,
            vec![
                ("DeviceName".into(), "dev 1".into()),
                ("Args".into(), "{\"a\":1}".into()),
                ("Empty".into(), String::new()),
                ("Bare".into(), String::new()),
            ]
        );
    }

    #[test]
    fn rejects_bad_encodings() {
        for bad in [
            &b"a=%zz"[..],
            b"a=%4",
            b"a=%",
            b"a=%FF",
            b"%ZZ=1",
            b"=1",
            b"a=\xff",
        ] {
            let mut pairs = Vec::new();
            let err = decode_pairs(bad, &mut pairs).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidParameter, "{bad:?}");
        }
    }

    #[test]
    fn encode_then_decode() {
        let s = encode_pairs([("Args", "{\"x\":\"a*b~c+d e\"}"), ("温", "度")]);
        assert_eq!(
            s,
            "Args=%7B%22x%22%3A%22a%2Ab~c%2Bd%20e%22%7D=".replace("%7D=", "%7D")
                + "&%E6%B8%A9=%E5%BA%A6"
        );
        let mut pairs = Vec::new();
        decode_pairs(s.as_bytes(), &mut pairs).unwrap();
        assert_eq!(pairs[0].1, "{\"x\":\"a*b~c+d e\"}");
        assert_eq!(pairs[1], ("温".into(), "度".into()));
    }
}
