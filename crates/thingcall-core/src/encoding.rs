//! RFC 3986 percent-encoding, exactly as Alibaba's signers apply it.
//!
//! Unreserved bytes `A-Z a-z 0-9 - _ . ~` stay as they are; every other byte
//! of the UTF-8 encoding becomes `%XY` with upper-case hex. A space is `%20`
//! (never `+`), `*` is `%2A` and `~` is never encoded.

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// True for the bytes RFC 3986 leaves unencoded.
#[inline]
pub fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// Appends the percent-encoding of `s` to `out`.
pub fn percent_encode_into(s: &str, out: &mut String) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !is_unreserved(b) {
            // `start..i` holds only unreserved ASCII bytes, so when it is not
            // empty both ends are character boundaries.
            if start < i {
                out.push_str(&s[start..i]);
            }
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0x0f)] as char);
            start = i + 1;
        }
    }
    if start < bytes.len() {
        out.push_str(&s[start..]);
    }
}

/// The percent-encoding of `s`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 2);
    percent_encode_into(s, &mut out);
    out
}

/// The byte length `s` will have once percent-encoded.
pub fn percent_encoded_len(s: &str) -> usize {
    s.bytes()
        .map(|b| if is_unreserved(b) { 1 } else { 3 })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_documented_rules() {
        assert_eq!(
            percent_encode("a b*c~d+e/f=g&h:i"),
            "a%20b%2Ac~d%2Be%2Ff%3Dg%26h%3Ai"
        );
        assert_eq!(
            percent_encode("2016-02-23T12:46:24Z"),
            "2016-02-23T12%3A46%3A24Z"
        );
        assert_eq!(percent_encode("温"), "%E6%B8%A9");
        assert_eq!(percent_encode(""), "");
        assert_eq!(percent_encoded_len("a b温"), percent_encode("a b温").len());
    }
}
