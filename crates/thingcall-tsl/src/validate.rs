//! Validating `Args` and replies against a compiled service.
//!
//! Validation goes through the `jsonschema` crate. The fast path asks only
//! "valid?"; when the answer is no, every schema error is turned into a
//! [`Violation`] at its JSON pointer, with what the thing model expects,
//! what was received and the Alibaba 63xx detail code.

use std::fmt;

use jsonschema::error::ValidationErrorKind;
use jsonschema::paths::Location;
use jsonschema::{Keyword, ValidationError, Validator};
use serde_json::{Map, Value};
use thingcall_core::{ApiError, CallType, ErrorCode};

use crate::check::kind;
use crate::model::{DataType, Param, Service, ServiceInput};
use crate::pointer::Pointer;
use crate::schema::{self, INTEGER_LITERAL_KEYWORD, MAX_BYTES_KEYWORD};

/// What kind of rule a value broke; each maps to one Alibaba detail code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ViolationKind {
    /// The payload is not JSON (6207).
    NotJson,
    /// The value has the wrong JSON type for its place (6301).
    TypeMismatch,
    /// A key that is not a parameter of the service (6320).
    UnknownParameter,
    /// A key that is not a member of the struct (6304).
    UnknownMember,
    /// `int` type or range (6306).
    Int,
    /// `float` type or range (6307).
    Float,
    /// `double` type or range (6322).
    Double,
    /// `bool` (6308).
    Bool,
    /// `enum` (6309).
    Enum,
    /// `text` type or length (6310).
    Text,
    /// `date` (6311).
    Date,
    /// `struct` type (6312).
    Struct,
    /// `array` size or items (6324).
    Array,
    /// Not an array where one is required (6328).
    NotArray,
    /// A posted value's `time` is not epoch milliseconds (6326).
    Time,
}

impl ViolationKind {
    /// The Alibaba detail code (spec digest §3.4).
    pub fn detail_code(self) -> u32 {
        match self {
            ViolationKind::NotJson => 6207,
            ViolationKind::TypeMismatch => 6301,
            ViolationKind::UnknownParameter => 6320,
            ViolationKind::UnknownMember => 6304,
            ViolationKind::Int => 6306,
            ViolationKind::Float => 6307,
            ViolationKind::Double => 6322,
            ViolationKind::Bool => 6308,
            ViolationKind::Enum => 6309,
            ViolationKind::Text => 6310,
            ViolationKind::Date => 6311,
            ViolationKind::Struct => 6312,
            ViolationKind::Array => 6324,
            ViolationKind::NotArray => 6328,
            ViolationKind::Time => 6326,
        }
    }

    /// The API code every violation is reported under.
    pub fn error_code(self) -> ErrorCode {
        ErrorCode::InvokeThingServiceFailed
    }

    fn of(dt: &DataType) -> ViolationKind {
        match dt {
            DataType::Int(_) => ViolationKind::Int,
            DataType::Float(_) => ViolationKind::Float,
            DataType::Double(_) => ViolationKind::Double,
            DataType::Text { .. } => ViolationKind::Text,
            DataType::Date => ViolationKind::Date,
            DataType::Bool { .. } => ViolationKind::Bool,
            DataType::Enum { .. } => ViolationKind::Enum,
            DataType::Struct(_) => ViolationKind::Struct,
            DataType::Array { .. } => ViolationKind::Array,
        }
    }
}

/// One value that breaks the thing model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Where, as a JSON pointer into the validated value (`""` is the root).
    pub pointer: String,
    /// Which rule.
    pub kind: ViolationKind,
    /// What the model expects there.
    pub expected: String,
    /// What was received.
    pub received: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pointer = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(
            f,
            "{pointer}: expected {}, got {} ({})",
            self.expected,
            self.received,
            self.kind.detail_code()
        )
    }
}

/// The API error for a list of violations: `iot.device.InvokeThingServiceFailed`
/// with every violation in the message.
pub fn violations_to_api_error(violations: &[Violation]) -> ApiError {
    let detail: Vec<String> = violations.iter().map(Violation::to_string).collect();
    ApiError::with_detail(ErrorCode::InvokeThingServiceFailed, detail.join("; "))
}

/// A service's schema could not be compiled (a bug or an unchecked model).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileError(pub String);

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot compile the thing model: {}", self.0)
    }
}

impl std::error::Error for CompileError {}

/// How replies are checked against `outputData`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReplyMode {
    /// A reply that breaks the model is refused.
    Strict,
    /// Violations are reported, the reply is accepted.
    #[default]
    Lenient,
    /// Replies are not checked.
    Off,
}

impl std::str::FromStr for ReplyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<ReplyMode, String> {
        match s {
            "strict" => Ok(ReplyMode::Strict),
            "lenient" => Ok(ReplyMode::Lenient),
            "off" => Ok(ReplyMode::Off),
            other => Err(format!(
                "reply validation must be strict, lenient or off, not {other:?}"
            )),
        }
    }
}

/// The verdict on a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyCheck {
    /// Whether the reply is accepted under the mode.
    pub accepted: bool,
    /// What was wrong with it (empty under `Off`).
    pub violations: Vec<Violation>,
}

struct MaxBytes(u64);

impl<'i> Keyword<'i> for MaxBytes {
    fn validate(&self, instance: &'i Value) -> Result<(), ValidationError<'i>> {
        if self.is_valid(instance) {
            Ok(())
        } else {
            Err(ValidationError::custom(format!(
                "longer than {} UTF-8 bytes",
                self.0
            )))
        }
    }

    fn is_valid(&self, instance: &'i Value) -> bool {
        instance.as_str().is_none_or(|s| s.len() as u64 <= self.0)
    }
}

struct IntegerLiteral;

impl<'i> Keyword<'i> for IntegerLiteral {
    fn validate(&self, instance: &'i Value) -> Result<(), ValidationError<'i>> {
        if self.is_valid(instance) {
            Ok(())
        } else {
            Err(ValidationError::custom("not an integer literal"))
        }
    }

    fn is_valid(&self, instance: &'i Value) -> bool {
        match instance {
            Value::Number(n) => n.is_i64() || n.is_u64(),
            _ => true,
        }
    }
}

fn build(schema: &Value) -> Result<Validator, CompileError> {
    jsonschema::options()
        .with_keyword(
            INTEGER_LITERAL_KEYWORD,
            |_parent, _value: &Value, _path: Location| {
                Ok(Box::new(IntegerLiteral) as Box<dyn for<'i> Keyword<'i>>)
            },
        )
        .with_keyword(
            MAX_BYTES_KEYWORD,
            |_parent, value: &Value, _path: Location| {
                let limit = value
                    .as_u64()
                    .ok_or_else(|| ValidationError::custom("x-maxUtf8Bytes must be an integer"))?;
                Ok(Box::new(MaxBytes(limit)) as Box<dyn for<'i> Keyword<'i>>)
            },
        )
        .build(schema)
        .map_err(|e| CompileError(e.to_string()))
}

/// A device's property post (or event) `params` with each value taken out
/// of its `{"value": v, "time": t}` wrapper, the form devices use to give
/// a value its own time; values without the wrapper stay as they are. A
/// `time` that is not a whole number of epoch milliseconds is a violation
/// (6326).
pub fn posted_values(params: &Value) -> (Value, Vec<Violation>) {
    let Value::Object(map) = params else {
        return (params.clone(), Vec::new());
    };
    let mut out = serde_json::Map::new();
    let mut violations = Vec::new();
    for (key, value) in map {
        match value {
            Value::Object(inner)
                if inner.contains_key("value")
                    && inner.keys().all(|k| k == "value" || k == "time") =>
            {
                if let Some(time) = inner.get("time")
                    && !(time.is_u64() || time.as_str().is_some_and(|t| t.parse::<u64>().is_ok()))
                {
                    violations.push(Violation {
                        pointer: crate::pointer::Pointer::root()
                            .key(key)
                            .key("time")
                            .as_str()
                            .to_owned(),
                        kind: ViolationKind::Time,
                        expected: "epoch milliseconds".to_owned(),
                        received: time.to_string(),
                    });
                }
                out.insert(
                    key.clone(),
                    inner.get("value").cloned().unwrap_or(Value::Null),
                );
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    (Value::Object(out), violations)
}

/// A service compiled for validation: its schemas and their validators.
pub struct CompiledService {
    service: Service,
    input_schema: Value,
    output_schema: Value,
    input: Validator,
    output: Validator,
}

impl fmt::Debug for CompiledService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledService")
            .field("identifier", &self.service.identifier)
            .finish_non_exhaustive()
    }
}

impl CompiledService {
    /// Compiles a checked service.
    pub fn compile(service: &Service) -> Result<CompiledService, CompileError> {
        let input_schema = schema::input_schema(service);
        let output_schema = schema::output_schema(service);
        Ok(CompiledService {
            input: build(&input_schema)?,
            output: build(&output_schema)?,
            input_schema,
            output_schema,
            service: service.clone(),
        })
    }

    /// The service definition.
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// The service's `callType`.
    pub fn call_type(&self) -> CallType {
        self.service.call_type
    }

    /// The JSON Schema of the inputs.
    pub fn input_schema(&self) -> &Value {
        &self.input_schema
    }

    /// The JSON Schema of the outputs.
    pub fn output_schema(&self) -> &Value {
        &self.output_schema
    }

    /// Parses `Args` text and validates it. On success returns the parsed
    /// value, ready to be sent as the Alink `params`.
    pub fn validate_args_str(&self, args: &str) -> Result<Value, Vec<Violation>> {
        let value: Value = serde_json::from_str(args).map_err(|e| {
            vec![Violation {
                pointer: String::new(),
                kind: ViolationKind::NotJson,
                expected: "a JSON object".to_owned(),
                received: format!("text that is not JSON ({e})"),
            }]
        })?;
        let violations = self.validate_args(&value);
        if violations.is_empty() {
            Ok(value)
        } else {
            Err(violations)
        }
    }

    /// Validates parsed `Args`.
    pub fn validate_args(&self, args: &Value) -> Vec<Violation> {
        if self.input.is_valid(args) {
            return Vec::new();
        }
        let root = match &self.service.input {
            ServiceInput::Params(params) => Root::Object(params),
            ServiceInput::PropertyNames(_) => Root::Names,
        };
        collect(&self.input, args, root)
    }

    /// Validates a reply's `data` against `outputData`.
    pub fn validate_output(&self, data: &Value) -> Vec<Violation> {
        if self.output.is_valid(data) {
            return Vec::new();
        }
        collect(&self.output, data, Root::Object(&self.service.output_data))
    }

    /// Checks a reply's `data` under a mode.
    pub fn check_reply(&self, data: &Value, mode: ReplyMode) -> ReplyCheck {
        match mode {
            ReplyMode::Off => ReplyCheck {
                accepted: true,
                violations: Vec::new(),
            },
            ReplyMode::Lenient => ReplyCheck {
                accepted: true,
                violations: self.validate_output(data),
            },
            ReplyMode::Strict => {
                let violations = self.validate_output(data);
                ReplyCheck {
                    accepted: violations.is_empty(),
                    violations,
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Root<'a> {
    Object(&'a [Param]),
    Names,
}

/// What sits at a pointer: the root, or a typed value.
enum Place<'a> {
    Root(Root<'a>),
    Typed(&'a DataType),
    Unknown,
}

fn place<'a>(root: Root<'a>, pointer: &Pointer) -> Place<'a> {
    let segments = pointer.segments();
    let Some((first, rest)) = segments.split_first() else {
        return Place::Root(root);
    };
    let mut dt = match root {
        Root::Object(params) => match params.iter().find(|p| &p.identifier == first) {
            Some(p) => &p.data_type,
            None => return Place::Unknown,
        },
        Root::Names => return Place::Unknown,
    };
    for segment in rest {
        dt = match dt {
            DataType::Struct(members) => match members.iter().find(|m| &m.identifier == segment) {
                Some(m) => &m.data_type,
                None => return Place::Unknown,
            },
            DataType::Array { item, .. } => item,
            _ => return Place::Unknown,
        };
    }
    Place::Typed(dt)
}

fn render(value: &Value) -> String {
    let text = match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    if text.chars().count() > 64 {
        let cut: String = text.chars().take(61).collect();
        format!("{cut}...")
    } else {
        text
    }
}

fn lookup<'v>(value: &'v Value, pointer: &str) -> Option<&'v Value> {
    value.pointer(pointer)
}

fn collect(validator: &Validator, instance: &Value, root: Root<'_>) -> Vec<Violation> {
    let mut out: Vec<Violation> = Vec::new();
    let mut push = |v: Violation| {
        if !out.iter().any(|o| o.pointer == v.pointer) {
            out.push(v);
        }
    };
    for error in validator.iter_errors(instance) {
        let pointer = Pointer::from_string(error.instance_path().as_str().to_owned());
        let received =
            lookup(instance, pointer.as_str()).map_or_else(|| "nothing".to_owned(), render);
        match (error.kind(), place(root, &pointer)) {
            (ValidationErrorKind::AdditionalProperties { unexpected }, found) => {
                let (kind, expected) = match found {
                    Place::Typed(DataType::Struct(members)) => (
                        ViolationKind::UnknownMember,
                        format!("a member among {}", names(members)),
                    ),
                    Place::Root(Root::Object(params)) => (
                        ViolationKind::UnknownParameter,
                        if params.is_empty() {
                            "no parameters".to_owned()
                        } else {
                            format!("a parameter among {}", names(params))
                        },
                    ),
                    _ => (
                        ViolationKind::UnknownParameter,
                        "a known identifier".to_owned(),
                    ),
                };
                for name in unexpected {
                    let at = pointer.key(name);
                    let received =
                        lookup(instance, at.as_str()).map_or_else(|| "nothing".to_owned(), render);
                    push(Violation {
                        pointer: at.to_string(),
                        kind,
                        expected: expected.clone(),
                        received,
                    });
                }
            }
            (_, Place::Root(Root::Object(_))) => push(Violation {
                pointer: pointer.to_string(),
                kind: ViolationKind::TypeMismatch,
                expected: "a JSON object".to_owned(),
                received: format!(
                    "{} {}",
                    kind(lookup(instance, "").unwrap_or(&Value::Null)),
                    received
                ),
            }),
            (_, Place::Root(Root::Names)) => push(Violation {
                pointer: pointer.to_string(),
                kind: ViolationKind::NotArray,
                expected: "a list of distinct property identifiers".to_owned(),
                received,
            }),
            (_, Place::Typed(dt)) => {
                let value = lookup(instance, pointer.as_str());
                let kind = match dt {
                    DataType::Array { .. } if !value.is_some_and(Value::is_array) => {
                        ViolationKind::NotArray
                    }
                    other => ViolationKind::of(other),
                };
                push(Violation {
                    pointer: pointer.to_string(),
                    kind,
                    expected: dt.expectation(),
                    received,
                });
            }
            (_, Place::Unknown) => push(Violation {
                pointer: pointer.to_string(),
                kind: ViolationKind::UnknownParameter,
                expected: "a property identifier of this model".to_owned(),
                received,
            }),
        }
    }
    out
}

fn names(params: &[Param]) -> String {
    params
        .iter()
        .map(|p| p.identifier.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// An empty object, the `Args` of a service with no inputs.
pub fn empty_args() -> Value {
    Value::Object(Map::new())
}
