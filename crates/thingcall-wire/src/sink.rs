//! Response writers: one field-by-field interface, two formats.
//!
//! A response type describes itself once through [`Sink`]; [`JsonWriter`]
//! and [`XmlWriter`] turn that description into bytes. Writing goes straight
//! into a `String` without an intermediate tree, which keeps encoding on the
//! hot path cheap.
//!
//! Lists follow Alibaba's two spellings: JSON wraps the items in an object
//! (`"List":{"ServiceInfo":[...]}`) and XML repeats the item element
//! (`<List><ServiceInfo>..</ServiceInfo><ServiceInfo>..</ServiceInfo></List>`).

use std::fmt::Write as _;

/// The XML declaration every XML response starts with.
pub const XML_DECLARATION: &str = "<?xml version='1.0' encoding='utf-8'?>";

/// A destination for the fields of a response.
pub trait Sink {
    /// A string field.
    fn str(&mut self, name: &str, value: &str);
    /// An integer field.
    fn int(&mut self, name: &str, value: i64);
    /// A boolean field.
    fn bool(&mut self, name: &str, value: bool);
    /// Opens a nested object field.
    fn begin_object(&mut self, name: &str);
    /// Closes the nested object opened by `begin_object(name)`.
    fn end_object(&mut self, name: &str);
    /// Opens a list field whose items are objects named `item`.
    fn begin_list(&mut self, name: &str, item: &str);
    /// Opens one item of the current list.
    fn begin_item(&mut self, item: &str);
    /// Closes the current item.
    fn end_item(&mut self, item: &str);
    /// Closes the list opened by `begin_list(name, item)`.
    fn end_list(&mut self, name: &str, item: &str);
    /// A list of strings: a plain array in JSON, `<item>` elements in XML.
    fn strings(&mut self, name: &str, item: &str, values: &[String]);
}

/// Writes a JSON object.
#[derive(Debug)]
pub struct JsonWriter {
    out: String,
    need_comma: bool,
}

impl JsonWriter {
    /// Starts the root object.
    pub fn new(capacity: usize) -> JsonWriter {
        let mut out = String::with_capacity(capacity);
        out.push('{');
        JsonWriter {
            out,
            need_comma: false,
        }
    }

    /// Closes the root object and returns the text.
    pub fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }

    fn key(&mut self, name: &str) {
        if self.need_comma {
            self.out.push(',');
        }
        self.out.push('"');
        self.out.push_str(name);
        self.out.push_str("\":");
    }
}

/// Appends `s` as a JSON string literal.
pub fn json_string(s: &str, out: &mut String) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x00..=0x1f => None,
            _ => continue,
        };
        // Every byte that needs escaping is ASCII, so `start..i` sits on
        // character boundaries.
        out.push_str(&s[start..i]);
        match escape {
            Some(e) => out.push_str(e),
            None => {
                let _ = write!(out, "\\u{:04x}", b);
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

impl Sink for JsonWriter {
    fn str(&mut self, name: &str, value: &str) {
        self.key(name);
        json_string(value, &mut self.out);
        self.need_comma = true;
    }

    fn int(&mut self, name: &str, value: i64) {
        self.key(name);
        let _ = write!(self.out, "{value}");
        self.need_comma = true;
    }

    fn bool(&mut self, name: &str, value: bool) {
        self.key(name);
        self.out.push_str(if value { "true" } else { "false" });
        self.need_comma = true;
    }

    fn begin_object(&mut self, name: &str) {
        self.key(name);
        self.out.push('{');
        self.need_comma = false;
    }

    fn end_object(&mut self, _name: &str) {
        self.out.push('}');
        self.need_comma = true;
    }

    fn begin_list(&mut self, name: &str, item: &str) {
        self.key(name);
        self.out.push_str("{\"");
        self.out.push_str(item);
        self.out.push_str("\":[");
        self.need_comma = false;
    }

    fn begin_item(&mut self, _item: &str) {
        if self.need_comma {
            self.out.push(',');
        }
        self.out.push('{');
        self.need_comma = false;
    }

    fn end_item(&mut self, _item: &str) {
        self.out.push('}');
        self.need_comma = true;
    }

    fn end_list(&mut self, _name: &str, _item: &str) {
        self.out.push_str("]}");
        self.need_comma = true;
    }

    fn strings(&mut self, name: &str, _item: &str, values: &[String]) {
        self.key(name);
        self.out.push('[');
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            json_string(v, &mut self.out);
        }
        self.out.push(']');
        self.need_comma = true;
    }
}

/// Writes an XML document with one root element.
#[derive(Debug)]
pub struct XmlWriter {
    out: String,
    root: &'static str,
    root_suffix: &'static str,
}

impl XmlWriter {
    /// Writes the declaration and opens `<{root}{root_suffix}>` (e.g.
    /// `InvokeThingService` + `Response`).
    pub fn new(root: &'static str, root_suffix: &'static str, capacity: usize) -> XmlWriter {
        let mut out = String::with_capacity(capacity);
        out.push_str(XML_DECLARATION);
        out.push('<');
        out.push_str(root);
        out.push_str(root_suffix);
        out.push('>');
        XmlWriter {
            out,
            root,
            root_suffix,
        }
    }

    /// Closes the root element and returns the text.
    pub fn finish(mut self) -> String {
        self.out.push_str("</");
        self.out.push_str(self.root);
        self.out.push_str(self.root_suffix);
        self.out.push('>');
        self.out
    }

    fn open(&mut self, name: &str) {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
    }

    fn close(&mut self, name: &str) {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
    }
}

/// Appends `s` as XML character data.
///
/// `&`, `<` and `>` are escaped, and `\r` is written as `&#13;` so that
/// parsers do not fold it into `\n`. XML 1.0 cannot carry the other C0
/// control characters in any form; they are written as U+FFFD (documented in
/// `docs/COMPATIBILITY.md`).
pub fn xml_text(s: &str, out: &mut String) {
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let replacement = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'\r' => "&#13;",
            b'\t' | b'\n' => continue,
            0x00..=0x1f => "\u{FFFD}",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        out.push_str(replacement);
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

impl Sink for XmlWriter {
    fn str(&mut self, name: &str, value: &str) {
        self.open(name);
        xml_text(value, &mut self.out);
        self.close(name);
    }

    fn int(&mut self, name: &str, value: i64) {
        self.open(name);
        let _ = write!(self.out, "{value}");
        self.close(name);
    }

    fn bool(&mut self, name: &str, value: bool) {
        self.open(name);
        self.out.push_str(if value { "true" } else { "false" });
        self.close(name);
    }

    fn begin_object(&mut self, name: &str) {
        self.open(name);
    }

    fn end_object(&mut self, name: &str) {
        self.close(name);
    }

    fn begin_list(&mut self, name: &str, _item: &str) {
        self.open(name);
    }

    fn begin_item(&mut self, item: &str) {
        self.open(item);
    }

    fn end_item(&mut self, item: &str) {
        self.close(item);
    }

    fn end_list(&mut self, name: &str, _item: &str) {
        self.close(name);
    }

    fn strings(&mut self, name: &str, item: &str, values: &[String]) {
        self.open(name);
        for v in values {
            self.str(item, v);
        }
        self.close(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escaping() {
        let mut s = String::new();
        json_string("a\"b\\c\nd\u{1}温", &mut s);
        assert_eq!(s, r#""a\"b\\c\nd\u0001温""#);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v, "a\"b\\c\nd\u{1}温");
    }

    #[test]
    fn xml_escaping() {
        let mut s = String::new();
        xml_text("<a&b>\r\n\u{1}", &mut s);
        assert_eq!(s, "&lt;a&amp;b&gt;&#13;\n\u{FFFD}");
    }

    #[test]
    fn lists_in_both_formats() {
        fn write<S: Sink>(s: &mut S) {
            s.begin_object("Data");
            s.bool("NextValid", false);
            s.begin_list("List", "ServiceInfo");
            for i in 0..2 {
                s.begin_item("ServiceInfo");
                s.int("N", i);
                s.end_item("ServiceInfo");
            }
            s.end_list("List", "ServiceInfo");
            s.end_object("Data");
        }
        let mut j = JsonWriter::new(64);
        write(&mut j);
        assert_eq!(
            j.finish(),
            r#"{"Data":{"NextValid":false,"List":{"ServiceInfo":[{"N":0},{"N":1}]}}}"#
        );
        let mut x = XmlWriter::new("Q", "Response", 64);
        write(&mut x);
        assert_eq!(
            x.finish(),
            "<?xml version='1.0' encoding='utf-8'?><QResponse><Data><NextValid>false</NextValid><List><ServiceInfo><N>0</N></ServiceInfo><ServiceInfo><N>1</N></ServiceInfo></List></Data></QResponse>"
        );
    }
}
