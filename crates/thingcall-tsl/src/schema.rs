//! Compiling thing-model types to JSON Schema.
//!
//! The schemas are standard JSON Schema (draft 2020-12) with one extension
//! keyword, `x-maxUtf8Bytes`: TSL limits `text` in UTF-8 bytes while
//! `maxLength` counts characters. Both are written, so other tools still get
//! the (weaker) character limit. A second one, `x-integerLiteral`, refuses
//! `5.0` for `int`, `bool` and `enum`; other tools see plain `integer`.

use serde_json::{Map, Value, json};

use crate::model::{DataType, Param, Service, ServiceInput};

/// The extension keyword for byte-length limits.
pub const MAX_BYTES_KEYWORD: &str = "x-maxUtf8Bytes";

/// The extension keyword that refuses `5.0` where an integer literal is
/// required (JSON Schema's `integer` accepts any number with no fraction).
pub const INTEGER_LITERAL_KEYWORD: &str = "x-integerLiteral";

/// Digits only; 1 to 18 of them, so the value fits an `i64`.
pub const DATE_PATTERN: &str = "^[0-9]{1,18}$";

/// The schema of one data type.
pub fn data_type_schema(dt: &DataType) -> Value {
    match dt {
        DataType::Int(_) => {
            let (lo, hi) = dt
                .numeric_bounds()
                .unwrap_or((f64::from(i32::MIN), f64::from(i32::MAX)));
            // The bounds were checked to be integers within int32.
            json!({"type": "integer", "minimum": lo as i64, "maximum": hi as i64, INTEGER_LITERAL_KEYWORD: true})
        }
        DataType::Float(_) | DataType::Double(_) => {
            let (lo, hi) = dt.numeric_bounds().unwrap_or((f64::MIN, f64::MAX));
            json!({"type": "number", "minimum": lo, "maximum": hi})
        }
        DataType::Text { length } => {
            json!({"type": "string", "maxLength": length, MAX_BYTES_KEYWORD: length})
        }
        DataType::Date => json!({"type": "string", "pattern": DATE_PATTERN}),
        DataType::Bool { .. } => {
            json!({"type": "integer", "minimum": 0, "maximum": 1, INTEGER_LITERAL_KEYWORD: true})
        }
        DataType::Enum { values } => {
            let keys: Vec<Value> = values.keys().map(|k| json!(k)).collect();
            json!({"type": "integer", "enum": keys, INTEGER_LITERAL_KEYWORD: true})
        }
        DataType::Struct(members) => object_schema(members),
        DataType::Array { size, item } => {
            json!({"type": "array", "maxItems": size, "items": data_type_schema(item)})
        }
    }
}

/// An object whose members are `params`, all optional, nothing else allowed.
pub fn object_schema(params: &[Param]) -> Value {
    let mut properties = Map::new();
    for p in params {
        properties.insert(p.identifier.clone(), data_type_schema(&p.data_type));
    }
    json!({"type": "object", "properties": properties, "additionalProperties": false})
}

/// The schema of a service's `Args`.
pub fn input_schema(service: &Service) -> Value {
    let mut schema = match &service.input {
        ServiceInput::Params(params) => object_schema(params),
        ServiceInput::PropertyNames(names) => {
            json!({"type": "array", "items": {"type": "string", "enum": names}, "uniqueItems": true})
        }
    };
    annotate(&mut schema, service, "input");
    schema
}

/// The schema of a service's reply `data`.
pub fn output_schema(service: &Service) -> Value {
    let mut schema = object_schema(&service.output_data);
    annotate(&mut schema, service, "output");
    schema
}

fn annotate(schema: &mut Value, service: &Service, which: &str) {
    if let Value::Object(map) = schema {
        map.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        map.insert(
            "title".into(),
            json!(format!("{} {which}", service.identifier)),
        );
    }
}
