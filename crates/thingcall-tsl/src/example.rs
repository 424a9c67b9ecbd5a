//! Example values generated from the thing model.
//!
//! Every value generated here validates against the model. The device
//! simulator answers calls with [`example_output`]; tests generate `Args`
//! with [`example_args`]. Generation is deterministic: the caller passes a
//! seed, and the same seed gives the same value.

use serde_json::{Map, Number, Value, json};

use crate::model::{DataType, Param, Service, ServiceInput};

/// A small deterministic generator (SplitMix64).
#[derive(Clone, Debug)]
struct Seq(u64);

impl Seq {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A valid value of `dt`.
pub fn example_value(dt: &DataType, seed: u64) -> Value {
    value(dt, &mut Seq(seed))
}

/// A valid object with every parameter of `params`.
pub fn example_object(params: &[Param], seed: u64) -> Value {
    object(params, &mut Seq(seed))
}

/// A valid reply `data` for a service.
pub fn example_output(service: &Service, seed: u64) -> Value {
    example_object(&service.output_data, seed)
}

/// Valid `Args` for a service (every input given).
pub fn example_args(service: &Service, seed: u64) -> Value {
    match &service.input {
        ServiceInput::Params(params) => example_object(params, seed),
        ServiceInput::PropertyNames(names) => json!(names),
    }
}

fn object(params: &[Param], seq: &mut Seq) -> Value {
    let mut map = Map::new();
    for p in params {
        map.insert(p.identifier.clone(), value(&p.data_type, seq));
    }
    Value::Object(map)
}

fn value(dt: &DataType, seq: &mut Seq) -> Value {
    match dt {
        DataType::Int(_) => {
            let (lo, hi) = dt.numeric_bounds().unwrap_or((0.0, 0.0));
            // Stay near the low end when the range is the whole of int32.
            let (lo, hi) = (lo as i64, hi as i64);
            let span = (hi - lo).clamp(0, 1000) as u64;
            json!(lo + seq.below(span + 1) as i64)
        }
        DataType::Float(_) | DataType::Double(_) => {
            let (lo, hi) = dt.numeric_bounds().unwrap_or((0.0, 0.0));
            let (lo, hi) = (lo.max(-1000.0).min(hi), hi.min(1000.0).max(lo.max(-1000.0)));
            // Quarters are exact in binary, so the value survives JSON and
            // f32 without drifting out of range.
            let steps = ((hi - lo) * 4.0).floor().max(0.0) as u64;
            let v = lo + seq.below(steps + 1) as f64 / 4.0;
            let v = v.clamp(lo, hi);
            Number::from_f64(v).map_or(Value::Null, Value::Number)
        }
        DataType::Text { length } => {
            let len = seq.below(u64::from((*length).min(12))) + 1;
            let text: String = (0..len)
                .map(|_| char::from(b'a' + seq.below(26) as u8))
                .collect();
            json!(text)
        }
        DataType::Date => json!((1_700_000_000_000u64 + seq.below(1_000_000_000)).to_string()),
        DataType::Bool { .. } => json!(seq.below(2)),
        DataType::Enum { values } => {
            let keys: Vec<&i64> = values.keys().collect();
            let i = seq.below(keys.len() as u64) as usize;
            keys.get(i).map_or(Value::Null, |k| json!(k))
        }
        DataType::Struct(members) => object(members, seq),
        DataType::Array { size, item } => {
            let len = seq.below(u64::from((*size).min(4)) + 1);
            Value::Array((0..len).map(|_| value(item, seq)).collect())
        }
    }
}
