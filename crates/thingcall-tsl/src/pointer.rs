//! JSON pointers (RFC 6901), built segment by segment.

use std::fmt;

/// A JSON pointer under construction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pointer(String);

impl Pointer {
    /// The whole document (`""`).
    pub fn root() -> Pointer {
        Pointer(String::new())
    }

    /// Parses a pointer string as the validator reports it.
    pub fn from_string(s: String) -> Pointer {
        Pointer(s)
    }

    /// The pointer to a member, with `~` and `/` escaped.
    pub fn key(&self, key: &str) -> Pointer {
        let mut s = String::with_capacity(self.0.len() + key.len() + 1);
        s.push_str(&self.0);
        s.push('/');
        for c in key.chars() {
            match c {
                '~' => s.push_str("~0"),
                '/' => s.push_str("~1"),
                c => s.push(c),
            }
        }
        Pointer(s)
    }

    /// The pointer to an array element.
    pub fn index(&self, i: usize) -> Pointer {
        Pointer(format!("{}/{i}", self.0))
    }

    /// The pointer text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The unescaped segments.
    pub fn segments(&self) -> Vec<String> {
        if self.0.is_empty() {
            return Vec::new();
        }
        self.0
            .split('/')
            .skip(1)
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect()
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips() {
        let p = Pointer::root().key("a/b").key("c~d").index(3);
        assert_eq!(p.as_str(), "/a~1b/c~0d/3");
        assert_eq!(p.segments(), ["a/b", "c~d", "3"]);
        assert!(Pointer::root().segments().is_empty());
    }
}
