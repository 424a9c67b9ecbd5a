//! A small document tree for decoding responses from JSON or XML alike.
//!
//! XML carries no types, so the accessors are forgiving in the one way both
//! formats need: a number may arrive as text and a boolean as `true`/`false`
//! text. A list may arrive as a JSON array inside its wrapper object, or as
//! repeated XML elements (one element, or none, included).

use std::fmt;

use quick_xml::Reader;
use quick_xml::events::Event;

/// A decoding failure: the body is not the response it claims to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    message: String,
}

impl DecodeError {
    pub(crate) fn new(message: impl Into<String>) -> DecodeError {
        DecodeError {
            message: message.into(),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot decode response: {}", self.message)
    }
}

impl std::error::Error for DecodeError {}

/// An open XML element while parsing: its name, child elements and text.
type Frame = (String, Vec<(String, Node)>, String);

/// One decoded value.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// JSON `null`.
    Null,
    /// JSON boolean.
    Bool(bool),
    /// JSON number, kept as its text.
    Number(String),
    /// JSON string, or the text of an XML element without child elements.
    Text(String),
    /// JSON object, or an XML element with child elements (names may repeat).
    Object(Vec<(String, Node)>),
    /// JSON array.
    Array(Vec<Node>),
}

impl Node {
    /// Converts a JSON document.
    pub fn from_json(bytes: &[u8]) -> Result<Node, DecodeError> {
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| DecodeError::new(format!("invalid JSON: {e}")))?;
        Ok(Node::from_value(value))
    }

    fn from_value(value: serde_json::Value) -> Node {
        use serde_json::Value;
        match value {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(b),
            Value::Number(n) => Node::Number(n.to_string()),
            Value::String(s) => Node::Text(s),
            Value::Array(items) => Node::Array(items.into_iter().map(Node::from_value).collect()),
            Value::Object(map) => Node::Object(
                map.into_iter()
                    .map(|(k, v)| (k, Node::from_value(v)))
                    .collect(),
            ),
        }
    }

    /// Parses an XML document; returns the root element's name and content.
    pub fn from_xml(bytes: &[u8]) -> Result<(String, Node), DecodeError> {
        let text =
            std::str::from_utf8(bytes).map_err(|_| DecodeError::new("XML body is not UTF-8"))?;
        let mut reader = Reader::from_str(text);
        let mut stack: Vec<Frame> = Vec::new();
        let mut root: Option<(String, Node)> = None;
        loop {
            let event = reader
                .read_event()
                .map_err(|e| DecodeError::new(format!("invalid XML: {e}")))?;
            match event {
                Event::Start(e) => {
                    if root.is_some() {
                        return Err(DecodeError::new("content after the root element"));
                    }
                    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                    stack.push((name, Vec::new(), String::new()));
                }
                Event::Empty(e) => {
                    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                    match stack.last_mut() {
                        Some(parent) => parent.1.push((name, Node::Text(String::new()))),
                        None if root.is_none() => root = Some((name, Node::Text(String::new()))),
                        None => return Err(DecodeError::new("content after the root element")),
                    }
                }
                Event::End(_) => {
                    let Some((name, children, text)) = stack.pop() else {
                        return Err(DecodeError::new("unbalanced end tag"));
                    };
                    let node = if children.is_empty() {
                        Node::Text(text)
                    } else if text.trim().is_empty() {
                        Node::Object(children)
                    } else {
                        return Err(DecodeError::new(format!(
                            "element <{name}> mixes text and elements"
                        )));
                    };
                    match stack.last_mut() {
                        Some(parent) => parent.1.push((name, node)),
                        None => root = Some((name, node)),
                    }
                }
                Event::Text(t) => {
                    let s = t
                        .decode()
                        .map_err(|e| DecodeError::new(format!("invalid XML text: {e}")))?;
                    match stack.last_mut() {
                        Some(frame) => frame.2.push_str(&s),
                        None if s.trim().is_empty() => {}
                        None => return Err(DecodeError::new("text outside the root element")),
                    }
                }
                Event::CData(t) => {
                    let s = t
                        .decode()
                        .map_err(|e| DecodeError::new(format!("invalid CDATA: {e}")))?;
                    match stack.last_mut() {
                        Some(frame) => frame.2.push_str(&s),
                        None => return Err(DecodeError::new("CDATA outside the root element")),
                    }
                }
                Event::GeneralRef(r) => {
                    let ch = match r.resolve_char_ref() {
                        Ok(Some(ch)) => ch,
                        Ok(None) => {
                            let name = r
                                .decode()
                                .map_err(|e| DecodeError::new(format!("invalid entity: {e}")))?;
                            match name.as_ref() {
                                "amp" => '&',
                                "lt" => '<',
                                "gt" => '>',
                                "quot" => '"',
                                "apos" => '\'',
                                other => {
                                    return Err(DecodeError::new(format!(
                                        "unknown entity &{other};"
                                    )));
                                }
                            }
                        }
                        Err(e) => {
                            return Err(DecodeError::new(format!(
                                "invalid character reference: {e}"
                            )));
                        }
                    };
                    match stack.last_mut() {
                        Some(frame) => frame.2.push(ch),
                        None => return Err(DecodeError::new("entity outside the root element")),
                    }
                }
                Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
                Event::Eof => break,
            }
        }
        if !stack.is_empty() {
            return Err(DecodeError::new("unclosed element"));
        }
        root.ok_or_else(|| DecodeError::new("empty XML document"))
    }

    /// The first member called `name` of an object.
    pub fn field(&self, name: &str) -> Option<&Node> {
        match self {
            Node::Object(members) => members.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Whether a field is present and not null.
    pub fn has(&self, name: &str) -> bool {
        !matches!(self.field(name), None | Some(Node::Null))
    }

    /// The node as text (numbers and booleans are given as their text).
    pub fn as_text(&self) -> Option<String> {
        match self {
            Node::Text(s) | Node::Number(s) => Some(s.clone()),
            Node::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// The node as an integer (a JSON number or decimal text).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Node::Number(s) | Node::Text(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// The node as a boolean (a JSON boolean or `true`/`false` text).
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Node::Bool(b) => Some(*b),
            Node::Text(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Node::Text(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
    }

    /// True for an object, or for the empty text of an empty XML element.
    pub fn is_object_like(&self) -> bool {
        match self {
            Node::Object(_) => true,
            Node::Text(s) => s.trim().is_empty(),
            _ => false,
        }
    }

    /// The items of a list field: `{"Name":{"Item":[...]}}` in JSON or
    /// `<Name><Item/>...</Name>` in XML. A missing or empty list is empty.
    pub fn list_items(&self, name: &str, item: &str) -> Result<Vec<&Node>, DecodeError> {
        let Some(list) = self.field(name) else {
            return Ok(Vec::new());
        };
        match list {
            Node::Null => Ok(Vec::new()),
            Node::Text(s) if s.trim().is_empty() => Ok(Vec::new()),
            Node::Array(items) => Ok(items.iter().collect()),
            Node::Object(members) => {
                let mut out = Vec::new();
                for (n, v) in members {
                    if n != item {
                        continue;
                    }
                    match v {
                        Node::Array(items) => out.extend(items.iter()),
                        other => out.push(other),
                    }
                }
                Ok(out)
            }
            _ => Err(DecodeError::new(format!("{name} is not a list"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_tree() {
        let (root, node) = Node::from_xml(
            b"<?xml version='1.0' encoding='utf-8'?>\n<R>\n  <A>1</A><B>x &amp; &#13;&lt;</B><E/><L><I><N>1</N></I><I><N>2</N></I></L></R>",
        )
        .unwrap();
        assert_eq!(root, "R");
        assert_eq!(node.field("A").unwrap().as_i64(), Some(1));
        assert_eq!(node.field("B").unwrap().as_text().unwrap(), "x & \r<");
        assert_eq!(node.field("E").unwrap().as_text().unwrap(), "");
        assert_eq!(node.list_items("L", "I").unwrap().len(), 2);
    }

    #[test]
    fn xml_errors() {
        for bad in [
            &b""[..],
            b"<a>",
            b"<a></b>",
            b"<a>x<b/></a>",
            b"<a/><b/>",
            b"<a>&bogus;</a>",
            b"x",
            b"\xff",
        ] {
            assert!(
                Node::from_xml(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn json_lists() {
        let node = Node::from_json(
            br#"{"List":{"I":[{"N":1},{"N":2}]},"One":{"I":{"N":1}},"Empty":{"I":[]}}"#,
        )
        .unwrap();
        assert_eq!(node.list_items("List", "I").unwrap().len(), 2);
        assert_eq!(node.list_items("One", "I").unwrap().len(), 1);
        assert_eq!(node.list_items("Empty", "I").unwrap().len(), 0);
        assert_eq!(node.list_items("Missing", "I").unwrap().len(), 0);
    }
}
