//! Parsing and checking a TSL document.
//!
//! [`check`] walks any JSON value, builds the typed [`ThingModel`] and
//! reports every problem it finds, each at a JSON pointer. It never stops at
//! the first problem and never panics, whatever the input.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};
use thingcall_core::CallType;

use crate::model::*;
use crate::pointer::Pointer;

/// One problem in a TSL document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where, as a JSON pointer (`/services/2/inputData/0/dataType/specs/min`).
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pointer = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(f, "{pointer}: {}", self.message)
    }
}

/// Parses TSL text. A document that is not JSON is one problem at the root.
pub fn check_str(text: &str) -> Result<ThingModel, Vec<Problem>> {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => check(&value),
        Err(e) => Err(vec![Problem {
            pointer: String::new(),
            message: format!("not valid JSON: {e}"),
        }]),
    }
}

/// Parses and checks a TSL document.
pub fn check(value: &Value) -> Result<ThingModel, Vec<Problem>> {
    let mut c = Checker {
        problems: Vec::new(),
    };
    let model = c.model(value);
    if c.problems.is_empty() {
        Ok(model)
    } else {
        Err(c.problems)
    }
}

struct Checker {
    problems: Vec<Problem>,
}

/// Where a parameter list sits, which decides what its members may be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    /// Service input/output, event output, property.
    Top,
    /// Struct member: no struct or array.
    StructMember,
    /// Array item: int, float, double, text or struct.
    ArrayItem,
}

fn is_identifier(s: &str) -> bool {
    (1..=50).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Checker {
    fn problem(&mut self, at: &Pointer, message: impl Into<String>) {
        self.problems.push(Problem {
            pointer: at.to_string(),
            message: message.into(),
        });
    }

    fn object<'v>(&mut self, value: &'v Value, at: &Pointer) -> Option<&'v Map<String, Value>> {
        match value {
            Value::Object(map) => Some(map),
            other => {
                self.problem(at, format!("expected an object, found {}", kind(other)));
                None
            }
        }
    }

    /// An optional array member; absent means empty.
    fn array<'v>(&mut self, map: &'v Map<String, Value>, key: &str, at: &Pointer) -> &'v [Value] {
        match map.get(key) {
            None | Some(Value::Null) => &[],
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.problem(
                    &at.key(key),
                    format!("expected an array, found {}", kind(other)),
                );
                &[]
            }
        }
    }

    fn string(
        &mut self,
        map: &Map<String, Value>,
        key: &str,
        at: &Pointer,
        required: bool,
    ) -> Option<String> {
        match map.get(key) {
            Some(Value::String(s)) => Some(s.clone()),
            None | Some(Value::Null) => {
                if required {
                    self.problem(&at.key(key), "is required");
                }
                None
            }
            Some(other) => {
                self.problem(
                    &at.key(key),
                    format!("expected a string, found {}", kind(other)),
                );
                None
            }
        }
    }

    fn boolean(&mut self, map: &Map<String, Value>, key: &str, at: &Pointer) -> bool {
        match map.get(key) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.problem(
                    &at.key(key),
                    format!("expected true or false, found {}", kind(other)),
                );
                false
            }
        }
    }

    fn identifier(
        &mut self,
        map: &Map<String, Value>,
        at: &Pointer,
        builtin_ok: &[&str],
    ) -> String {
        let Some(id) = self.string(map, "identifier", at, true) else {
            return String::new();
        };
        if !is_identifier(&id) {
            self.problem(
                &at.key("identifier"),
                format!("{id:?} must be 1-50 letters, digits and _"),
            );
        } else if RESERVED_IDENTIFIERS.contains(&id.as_str()) && !builtin_ok.contains(&id.as_str())
        {
            self.problem(&at.key("identifier"), format!("{id:?} is a reserved word"));
        }
        id
    }

    fn model(&mut self, value: &Value) -> ThingModel {
        let root = Pointer::root();
        let empty = Map::new();
        let map = self.object(value, &root).unwrap_or(&empty);
        let schema = self.string(map, "schema", &root, false);
        let profile = match map.get("profile") {
            None | Some(Value::Null) => Profile::default(),
            Some(p) => self.profile(p, &root.key("profile")),
        };

        let at = root.key("properties");
        let properties: Vec<Property> = self
            .array(map, "properties", &root)
            .iter()
            .enumerate()
            .filter_map(|(i, p)| self.property(p, &at.index(i)))
            .collect();
        let at = root.key("events");
        let events: Vec<Event> = self
            .array(map, "events", &root)
            .iter()
            .enumerate()
            .filter_map(|(i, e)| self.event(e, &at.index(i)))
            .collect();
        let property_ids: BTreeSet<&str> =
            properties.iter().map(|p| p.identifier.as_str()).collect();
        let at = root.key("services");
        let services: Vec<Service> = self
            .array(map, "services", &root)
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.service(s, &at.index(i), &property_ids))
            .collect();

        // Feature identifiers are unique across the model.
        let mut seen: BTreeMap<&str, String> = BTreeMap::new();
        let features = properties
            .iter()
            .enumerate()
            .map(|(i, p)| (p.identifier.as_str(), root.key("properties").index(i)))
            .chain(
                events
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (e.identifier.as_str(), root.key("events").index(i))),
            )
            .chain(
                services
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.identifier.as_str(), root.key("services").index(i))),
            );
        let mut duplicates = Vec::new();
        for (id, at) in features {
            if id.is_empty() {
                continue;
            }
            match seen.get(id) {
                Some(first) => duplicates.push((
                    at.key("identifier"),
                    format!("duplicate identifier {id:?} (first at {first})"),
                )),
                None => {
                    seen.insert(id, at.to_string());
                }
            }
        }
        for (at, message) in duplicates {
            self.problem(&at, message);
        }
        ThingModel {
            schema,
            profile,
            properties,
            events,
            services,
        }
    }

    fn profile(&mut self, value: &Value, at: &Pointer) -> Profile {
        let Some(map) = self.object(value, at) else {
            return Profile::default();
        };
        Profile {
            product_key: self.string(map, "productKey", at, false),
            version: self.string(map, "version", at, false),
            function_block_id: self.string(map, "functionBlockId", at, false),
            function_block_name: self.string(map, "functionBlockName", at, false),
        }
    }

    fn property(&mut self, value: &Value, at: &Pointer) -> Option<Property> {
        let map = self.object(value, at)?;
        let identifier = self.identifier(map, at, &[]);
        let name = self.string(map, "name", at, false).unwrap_or_default();
        let access_mode = match map.get("accessMode") {
            Some(Value::String(s)) if s == "r" => AccessMode::ReadOnly,
            Some(Value::String(s)) if s == "rw" => AccessMode::ReadWrite,
            None | Some(Value::Null) => AccessMode::ReadWrite,
            Some(other) => {
                self.problem(
                    &at.key("accessMode"),
                    format!("expected \"r\" or \"rw\", found {other}"),
                );
                AccessMode::ReadWrite
            }
        };
        let required = self.boolean(map, "required", at);
        let data_type = self.data_type_member(map, at, Level::Top)?;
        Some(Property {
            identifier,
            name,
            access_mode,
            required,
            data_type,
        })
    }

    fn event(&mut self, value: &Value, at: &Pointer) -> Option<Event> {
        let map = self.object(value, at)?;
        let method = self.string(map, "method", at, false).unwrap_or_default();
        let builtin: &[&str] = if method == "thing.event.property.post" {
            &["post"]
        } else {
            &[]
        };
        let identifier = self.identifier(map, at, builtin);
        let name = self.string(map, "name", at, false).unwrap_or_default();
        let event_type = self
            .string(map, "type", at, false)
            .unwrap_or_else(|| "info".to_owned());
        if !matches!(event_type.as_str(), "info" | "alert" | "error") {
            self.problem(
                &at.key("type"),
                format!("expected \"info\", \"alert\" or \"error\", found {event_type:?}"),
            );
        }
        let output_data = self.params(map, "outputData", at, MAX_EVENT_PARAMS);
        Some(Event {
            identifier,
            name,
            event_type,
            output_data,
            method,
        })
    }

    fn service(
        &mut self,
        value: &Value,
        at: &Pointer,
        properties: &BTreeSet<&str>,
    ) -> Option<Service> {
        let map = self.object(value, at)?;
        let method = self.string(map, "method", at, false).unwrap_or_default();
        let builtin: &[&str] = match method.as_str() {
            "thing.service.property.set" => &["set"],
            "thing.service.property.get" => &["get"],
            _ => &[],
        };
        let identifier = self.identifier(map, at, builtin);
        let name = self.string(map, "name", at, false).unwrap_or_default();
        let call_type = match map.get("callType") {
            None | Some(Value::Null) => CallType::Async,
            Some(Value::String(s)) => s.parse().unwrap_or_else(|e: String| {
                self.problem(&at.key("callType"), e);
                CallType::Async
            }),
            Some(other) => {
                self.problem(
                    &at.key("callType"),
                    format!("expected \"sync\" or \"async\", found {}", kind(other)),
                );
                CallType::Async
            }
        };
        let required = self.boolean(map, "required", at);
        let limit = if builtin.is_empty() {
            MAX_SERVICE_PARAMS
        } else {
            usize::MAX
        };
        let input = if identifier == "get" && !builtin.is_empty() {
            ServiceInput::PropertyNames(self.property_names(map, at, properties))
        } else {
            ServiceInput::Params(self.params(map, "inputData", at, limit))
        };
        let output_data = self.params(map, "outputData", at, limit);
        Some(Service {
            identifier,
            name,
            call_type,
            input,
            output_data,
            method,
            required,
        })
    }

    fn property_names(
        &mut self,
        map: &Map<String, Value>,
        at: &Pointer,
        properties: &BTreeSet<&str>,
    ) -> Vec<String> {
        let list_at = at.key("inputData");
        let mut names = Vec::new();
        for (i, item) in self.array(map, "inputData", at).iter().enumerate() {
            match item {
                Value::String(s) if properties.contains(s.as_str()) => names.push(s.clone()),
                Value::String(s) => self.problem(
                    &list_at.index(i),
                    format!("{s:?} is not a property of this model"),
                ),
                other => self.problem(
                    &list_at.index(i),
                    format!("expected a property identifier, found {}", kind(other)),
                ),
            }
        }
        names
    }

    fn params(
        &mut self,
        map: &Map<String, Value>,
        key: &str,
        at: &Pointer,
        limit: usize,
    ) -> Vec<Param> {
        let list = self.array(map, key, at);
        let list_at = at.key(key);
        if list.len() > limit {
            self.problem(
                &list_at,
                format!("has {} parameters; at most {limit} are allowed", list.len()),
            );
        }
        self.param_list(list, &list_at, Level::Top)
    }

    fn param_list(&mut self, list: &[Value], at: &Pointer, level: Level) -> Vec<Param> {
        let mut out: Vec<Param> = Vec::with_capacity(list.len());
        let mut seen = BTreeSet::new();
        for (i, item) in list.iter().enumerate() {
            let item_at = at.index(i);
            let Some(map) = self.object(item, &item_at) else {
                continue;
            };
            let identifier = self.identifier(map, &item_at, &[]);
            if !identifier.is_empty() && !seen.insert(identifier.clone()) {
                self.problem(
                    &item_at.key("identifier"),
                    format!("duplicate identifier {identifier:?}"),
                );
            }
            let name = self
                .string(map, "name", &item_at, false)
                .unwrap_or_default();
            if let Some(data_type) = self.data_type_member(map, &item_at, level) {
                out.push(Param {
                    identifier,
                    name,
                    data_type,
                });
            }
        }
        out
    }

    fn data_type_member(
        &mut self,
        map: &Map<String, Value>,
        at: &Pointer,
        level: Level,
    ) -> Option<DataType> {
        match map.get("dataType") {
            Some(dt) => self.data_type(dt, &at.key("dataType"), level),
            None => {
                self.problem(&at.key("dataType"), "is required");
                None
            }
        }
    }

    fn data_type(&mut self, value: &Value, at: &Pointer, level: Level) -> Option<DataType> {
        let map = self.object(value, at)?;
        let type_name = self.string(map, "type", at, true)?;
        let specs_at = at.key("specs");
        let specs = match map.get("specs") {
            // Models exported by Alibaba write `"specs": []` for types whose
            // specs are optional (`date` among them); an empty list says
            // nothing, like an absent spec. A struct keeps its list: an
            // empty one is still a struct without members.
            Some(Value::Array(a)) if a.is_empty() && type_name != "struct" => &Value::Null,
            Some(v) => v,
            None => &Value::Null,
        };
        let allowed = match level {
            Level::Top => true,
            Level::StructMember => !matches!(type_name.as_str(), "struct" | "array"),
            Level::ArrayItem => matches!(
                type_name.as_str(),
                "int" | "float" | "double" | "text" | "struct"
            ),
        };
        if !allowed {
            let why = match level {
                Level::StructMember => "a struct member cannot be a struct or an array",
                _ => "an array item must be int, float, double, text or struct",
            };
            self.problem(&at.key("type"), format!("{type_name:?}: {why}"));
            return None;
        }
        let dt = match type_name.as_str() {
            "int" => DataType::Int(self.number_spec(specs, &specs_at, true)?),
            "float" => DataType::Float(self.number_spec(specs, &specs_at, false)?),
            "double" => DataType::Double(self.number_spec(specs, &specs_at, false)?),
            "text" => {
                let length = match specs {
                    Value::Object(m) => {
                        match m.get("length") {
                            None | Some(Value::Null) => MAX_TEXT_LENGTH,
                            Some(v) => {
                                match spec_number(v) {
                                    Some(n)
                                        if n.fract() == 0.0
                                            && (1.0..=f64::from(MAX_TEXT_LENGTH)).contains(&n) =>
                                    {
                                        n as u32
                                    }
                                    _ => {
                                        self.problem(&specs_at.key("length"), format!("must be an integer in 1..={MAX_TEXT_LENGTH}, found {v}"));
                                        return None;
                                    }
                                }
                            }
                        }
                    }
                    Value::Null => MAX_TEXT_LENGTH,
                    other => {
                        self.problem(
                            &specs_at,
                            format!("expected an object, found {}", kind(other)),
                        );
                        return None;
                    }
                };
                DataType::Text { length }
            }
            "date" => {
                if !matches!(specs, Value::Null | Value::Object(_)) {
                    self.problem(
                        &specs_at,
                        format!("expected an object, found {}", kind(specs)),
                    );
                }
                DataType::Date
            }
            "bool" => {
                let labels = self.labels(specs, &specs_at)?;
                if let Some(bad) = labels.keys().find(|k| !matches!(k, 0 | 1)) {
                    self.problem(&specs_at, format!("bool keys must be 0 and 1, found {bad}"));
                    return None;
                }
                DataType::Bool { labels }
            }
            "enum" => {
                let values = self.labels(specs, &specs_at)?;
                if values.is_empty() {
                    self.problem(&specs_at, "an enum needs at least one value");
                    return None;
                }
                DataType::Enum { values }
            }
            "struct" => {
                let Value::Array(members) = specs else {
                    self.problem(
                        &specs_at,
                        format!(
                            "a struct's specs must be an array of members, found {}",
                            kind(specs)
                        ),
                    );
                    return None;
                };
                if members.is_empty() {
                    self.problem(&specs_at, "a struct needs at least one member");
                    return None;
                }
                let before = self.problems.len();
                let members = self.param_list(members, &specs_at, Level::StructMember);
                if self.problems.len() > before {
                    return None;
                }
                DataType::Struct(members)
            }
            "array" => {
                let m = self.object(specs, &specs_at)?;
                let size = match m.get("size").and_then(spec_number) {
                    Some(n)
                        if n.fract() == 0.0 && (1.0..=f64::from(MAX_ARRAY_SIZE)).contains(&n) =>
                    {
                        n as u32
                    }
                    _ => {
                        let found = m.get("size").map_or("nothing".to_owned(), Value::to_string);
                        self.problem(
                            &specs_at.key("size"),
                            format!("must be an integer in 1..={MAX_ARRAY_SIZE}, found {found}"),
                        );
                        return None;
                    }
                };
                let Some(item) = m.get("item") else {
                    self.problem(&specs_at.key("item"), "is required");
                    return None;
                };
                let item = self.data_type(item, &specs_at.key("item"), Level::ArrayItem)?;
                DataType::Array {
                    size,
                    item: Box::new(item),
                }
            }
            other => {
                self.problem(&at.key("type"), format!("unknown type {other:?}"));
                return None;
            }
        };
        Some(dt)
    }

    fn number_spec(&mut self, specs: &Value, at: &Pointer, integer: bool) -> Option<NumberSpec> {
        let map = match specs {
            Value::Null => return Some(NumberSpec::default()),
            Value::Object(m) => m,
            other => {
                self.problem(at, format!("expected an object, found {}", kind(other)));
                return None;
            }
        };
        let mut ok = true;
        let mut field = |c: &mut Checker, key: &str| -> Option<f64> {
            let v = map.get(key)?;
            if matches!(v, Value::Null) || v.as_str() == Some("") {
                return None;
            }
            match spec_number(v) {
                Some(n)
                    if integer
                        && (key == "min" || key == "max")
                        && (n.fract() != 0.0
                            || n < f64::from(i32::MIN)
                            || n > f64::from(i32::MAX)) =>
                {
                    c.problem(
                        &at.key(key),
                        format!("must be an integer within int32, found {v}"),
                    );
                    ok = false;
                    None
                }
                Some(n) => Some(n),
                None => {
                    c.problem(
                        &at.key(key),
                        format!("must be a number (usually written as a string), found {v}"),
                    );
                    ok = false;
                    None
                }
            }
        };
        let min = field(self, "min");
        let max = field(self, "max");
        let step = field(self, "step");
        if let (Some(lo), Some(hi)) = (min, max)
            && lo > hi
        {
            self.problem(at, format!("min {lo} is greater than max {hi}"));
            ok = false;
        }
        let unit = map.get("unit").and_then(Value::as_str).map(str::to_owned);
        ok.then_some(NumberSpec {
            min,
            max,
            step,
            unit,
        })
    }

    fn labels(&mut self, specs: &Value, at: &Pointer) -> Option<BTreeMap<i64, String>> {
        let Value::Object(map) = specs else {
            self.problem(
                at,
                format!("expected an object of value labels, found {}", kind(specs)),
            );
            return None;
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (k, v) in map {
            let key = k.trim().parse::<i32>().ok().filter(|_| k.trim() == k);
            match (key, v) {
                (Some(key), Value::String(label)) => {
                    out.insert(i64::from(key), label.clone());
                }
                (None, _) => {
                    self.problem(&at.key(k), format!("key {k:?} is not an integer"));
                    ok = false;
                }
                (Some(_), other) => {
                    self.problem(
                        &at.key(k),
                        format!("label must be a string, found {}", kind(other)),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }
}

/// A numeric spec value: a JSON string holding a number (the TSL way), or a
/// JSON number. Non-finite values are refused.
fn spec_number(v: &Value) -> Option<f64> {
    let n = match v {
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    n.is_finite().then_some(n)
}

/// A short name for the JSON kind of a value.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
