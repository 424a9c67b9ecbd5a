//! The typed thing model (spec digest §4.1-4.5).
//!
//! These types are what [`crate::check`] produces from TSL JSON; every value
//! in them has passed the checks, so the compiler and validator can rely on
//! them (`min <= max`, known types, no struct inside a struct, ...).

use std::collections::BTreeMap;

use thingcall_core::CallType;

/// Longest `text` allowed, in bytes.
pub const MAX_TEXT_LENGTH: u32 = 10_240;
/// Largest `array` size allowed.
pub const MAX_ARRAY_SIZE: u32 = 512;
/// Most input (and, separately, output) parameters of a service.
pub const MAX_SERVICE_PARAMS: usize = 20;
/// Most output parameters of an event.
pub const MAX_EVENT_PARAMS: usize = 50;
/// Identifiers that features and parameters may not use (the built-in
/// `set`/`get` services and the `post` event excepted).
pub const RESERVED_IDENTIFIERS: &[&str] = &["set", "get", "post", "time", "value"];

/// A whole thing model.
#[derive(Clone, Debug, PartialEq)]
pub struct ThingModel {
    /// `schema`, informational.
    pub schema: Option<String>,
    /// `profile`.
    pub profile: Profile,
    /// `properties`.
    pub properties: Vec<Property>,
    /// `events`.
    pub events: Vec<Event>,
    /// `services`, the built-in `set` and `get` included.
    pub services: Vec<Service>,
}

impl ThingModel {
    /// The service with this identifier (without any module prefix).
    pub fn service(&self, identifier: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.identifier == identifier)
    }

    /// The property with this identifier.
    pub fn property(&self, identifier: &str) -> Option<&Property> {
        self.properties.iter().find(|p| p.identifier == identifier)
    }
}

/// `profile`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// `productKey`.
    pub product_key: Option<String>,
    /// `version`.
    pub version: Option<String>,
    /// `functionBlockId`: set for a custom module.
    pub function_block_id: Option<String>,
    /// `functionBlockName`.
    pub function_block_name: Option<String>,
}

/// Read/write access of a property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessMode {
    /// `r`
    ReadOnly,
    /// `rw`
    ReadWrite,
}

/// `properties[]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Property {
    /// `identifier`.
    pub identifier: String,
    /// `name`.
    pub name: String,
    /// `accessMode`.
    pub access_mode: AccessMode,
    /// `required`.
    pub required: bool,
    /// `dataType`.
    pub data_type: DataType,
}

/// `events[]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// `identifier`.
    pub identifier: String,
    /// `name`.
    pub name: String,
    /// `type`: `info`, `alert` or `error`.
    pub event_type: String,
    /// `outputData`.
    pub output_data: Vec<Param>,
    /// `method`.
    pub method: String,
}

/// `services[]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    /// `identifier`.
    pub identifier: String,
    /// `name`.
    pub name: String,
    /// `callType`.
    pub call_type: CallType,
    /// `inputData`.
    pub input: ServiceInput,
    /// `outputData`.
    pub output_data: Vec<Param>,
    /// `method`.
    pub method: String,
    /// `required`.
    pub required: bool,
}

impl Service {
    /// True for the built-in `set` and `get` services.
    pub fn is_builtin(&self) -> bool {
        matches!(self.identifier.as_str(), "set" | "get")
    }
}

/// A service's `inputData`.
#[derive(Clone, Debug, PartialEq)]
pub enum ServiceInput {
    /// Parameters with types (every service but `get`).
    Params(Vec<Param>),
    /// The property identifiers `get` can read.
    PropertyNames(Vec<String>),
}

/// A parameter (service input/output, event output, struct member).
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// `identifier`.
    pub identifier: String,
    /// `name`.
    pub name: String,
    /// `dataType`.
    pub data_type: DataType,
}

/// Numeric range of an `int`, `float` or `double`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NumberSpec {
    /// `min`.
    pub min: Option<f64>,
    /// `max`.
    pub max: Option<f64>,
    /// `step` (informational).
    pub step: Option<f64>,
    /// `unit`.
    pub unit: Option<String>,
}

/// `dataType`: one of the nine TSL types with its specs.
#[derive(Clone, Debug, PartialEq)]
pub enum DataType {
    /// 32-bit signed integer.
    Int(NumberSpec),
    /// Single-precision number.
    Float(NumberSpec),
    /// Double-precision number.
    Double(NumberSpec),
    /// String of at most `length` UTF-8 bytes.
    Text {
        /// `length`.
        length: u32,
    },
    /// Epoch milliseconds as a string of digits.
    Date,
    /// 0 or 1, with labels.
    Bool {
        /// Labels for 0 and 1.
        labels: BTreeMap<i64, String>,
    },
    /// An integer among the keys.
    Enum {
        /// Allowed values and their labels.
        values: BTreeMap<i64, String>,
    },
    /// An object of known members (no struct or array members).
    Struct(Vec<Param>),
    /// A list of at most `size` items of one type.
    Array {
        /// `size`.
        size: u32,
        /// `item`.
        item: Box<DataType>,
    },
}

impl DataType {
    /// The TSL type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            DataType::Int(_) => "int",
            DataType::Float(_) => "float",
            DataType::Double(_) => "double",
            DataType::Text { .. } => "text",
            DataType::Date => "date",
            DataType::Bool { .. } => "bool",
            DataType::Enum { .. } => "enum",
            DataType::Struct(_) => "struct",
            DataType::Array { .. } => "array",
        }
    }

    /// The effective bounds of a numeric type: the spec's range clamped to
    /// what the type can hold.
    pub fn numeric_bounds(&self) -> Option<(f64, f64)> {
        let (spec, lo, hi) = match self {
            DataType::Int(s) => (s, f64::from(i32::MIN), f64::from(i32::MAX)),
            DataType::Float(s) => (s, f64::from(f32::MIN), f64::from(f32::MAX)),
            DataType::Double(s) => (s, f64::MIN, f64::MAX),
            _ => return None,
        };
        Some((
            spec.min.map_or(lo, |m| m.max(lo)),
            spec.max.map_or(hi, |m| m.min(hi)),
        ))
    }

    /// A short description of what a value of this type must be.
    pub fn expectation(&self) -> String {
        fn num(v: f64) -> String {
            if v.fract() == 0.0 && v.abs() < 1e15 {
                format!("{}", v as i64)
            } else {
                format!("{v}")
            }
        }
        match self {
            DataType::Int(_) | DataType::Float(_) | DataType::Double(_) => {
                let (lo, hi) = self.numeric_bounds().unwrap_or((f64::MIN, f64::MAX));
                let what = match self {
                    DataType::Int(_) => "an integer",
                    DataType::Float(_) => "a float",
                    _ => "a double",
                };
                format!("{what} in [{}, {}]", num(lo), num(hi))
            }
            DataType::Text { length } => format!("a string of at most {length} UTF-8 bytes"),
            DataType::Date => "a string of epoch milliseconds (digits only)".to_owned(),
            DataType::Bool { .. } => "0 or 1".to_owned(),
            DataType::Enum { values } => {
                let keys: Vec<String> = values.keys().map(i64::to_string).collect();
                format!("one of {}", keys.join(", "))
            }
            DataType::Struct(members) => {
                let names: Vec<&str> = members.iter().map(|m| m.identifier.as_str()).collect();
                format!("an object with members among {}", names.join(", "))
            }
            DataType::Array { size, item } => format!(
                "a list of at most {size} items of type {}",
                item.type_name()
            ),
        }
    }
}
