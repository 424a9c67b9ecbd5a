//! Typed fields: how one struct field is written to a [`Sink`] and read back
//! from a [`Node`]. The [`wire_struct!`] macro builds response data types
//! from these.

use thingcall_core::Secret;

use crate::node::{DecodeError, Node};
use crate::sink::Sink;

/// A struct field that knows its wire form.
pub trait Field: Sized {
    /// Writes the field (an absent optional writes nothing).
    fn write_field<W: Sink>(&self, name: &str, w: &mut W);
    /// Reads the field from an object node.
    fn read_field(object: &Node, name: &str) -> Result<Self, DecodeError>;
}

/// A value that is written as one scalar.
pub trait Scalar: Sized {
    /// Writes the value under `name`.
    fn write_scalar<W: Sink>(&self, name: &str, w: &mut W);
    /// Reads the value from a node.
    fn read_scalar(node: &Node, name: &str) -> Result<Self, DecodeError>;
}

impl Scalar for String {
    fn write_scalar<W: Sink>(&self, name: &str, w: &mut W) {
        w.str(name, self);
    }
    fn read_scalar(node: &Node, name: &str) -> Result<String, DecodeError> {
        node.as_text()
            .ok_or_else(|| DecodeError::new(format!("{name} is not a string")))
    }
}

impl Scalar for Secret {
    fn write_scalar<W: Sink>(&self, name: &str, w: &mut W) {
        w.str(name, self.expose());
    }
    fn read_scalar(node: &Node, name: &str) -> Result<Secret, DecodeError> {
        String::read_scalar(node, name).map(Secret::new)
    }
}

impl Scalar for i64 {
    fn write_scalar<W: Sink>(&self, name: &str, w: &mut W) {
        w.int(name, *self);
    }
    fn read_scalar(node: &Node, name: &str) -> Result<i64, DecodeError> {
        node.as_i64()
            .ok_or_else(|| DecodeError::new(format!("{name} is not an integer")))
    }
}

impl Scalar for bool {
    fn write_scalar<W: Sink>(&self, name: &str, w: &mut W) {
        w.bool(name, *self);
    }
    fn read_scalar(node: &Node, name: &str) -> Result<bool, DecodeError> {
        node.as_bool()
            .ok_or_else(|| DecodeError::new(format!("{name} is not a boolean")))
    }
}

impl<T: Scalar> Field for T {
    fn write_field<W: Sink>(&self, name: &str, w: &mut W) {
        self.write_scalar(name, w);
    }
    fn read_field(object: &Node, name: &str) -> Result<T, DecodeError> {
        match object.field(name) {
            Some(node) if !matches!(node, Node::Null) => T::read_scalar(node, name),
            _ => Err(DecodeError::new(format!("missing field {name}"))),
        }
    }
}

impl<T: Scalar> Field for Option<T> {
    fn write_field<W: Sink>(&self, name: &str, w: &mut W) {
        if let Some(v) = self {
            v.write_scalar(name, w);
        }
    }
    fn read_field(object: &Node, name: &str) -> Result<Option<T>, DecodeError> {
        match object.field(name) {
            Some(node) if !matches!(node, Node::Null) => T::read_scalar(node, name).map(Some),
            _ => Ok(None),
        }
    }
}

/// A group of fields written inside an object (or at the response root).
pub trait WireObject: Sized {
    /// Writes every field.
    fn write_fields<W: Sink>(&self, w: &mut W);
    /// Reads every field from an object node.
    fn read_fields(node: &Node) -> Result<Self, DecodeError>;
}

/// Declares a wire data struct whose fields are all [`Field`]s.
macro_rules! wire_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* $wire:literal => $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl $crate::field::WireObject for $name {
            fn write_fields<W: $crate::sink::Sink>(&self, w: &mut W) {
                $( $crate::field::Field::write_field(&self.$field, $wire, w); )*
            }
            fn read_fields(node: &$crate::node::Node) -> Result<Self, $crate::node::DecodeError> {
                Ok($name { $( $field: $crate::field::Field::read_field(node, $wire)?, )* })
            }
        }
    };
}

pub(crate) use wire_struct;
