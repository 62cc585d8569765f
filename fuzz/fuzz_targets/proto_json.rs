//! The protobuf `Struct`/`Value` <-> JSON conversions (`postsub::json`), from JSON text, from
//! protobuf bytes, and the `Timestamp` conversions.
//!
//! - JSON -> `Struct` -> JSON keeps every string, bool, null, list and key, and every number
//!   as the same f64; an integer within 2^53 comes back as that integer. The JSON that comes
//!   back goes through again unchanged.
//! - `Struct` -> JSON -> `Struct` gives the same `Struct` but for what JSON cannot hold: a
//!   missing kind or any null is `NullValue(0)`, a NaN or infinity is null, -0 is 0.
//! - A `Timestamp` chrono can hold converts back to itself (negative nanos as 0).
#![no_main]

use libfuzzer_sys::fuzz_target;
use postsub::json::{
    from_proto_struct, from_proto_timestamp, to_proto_struct, to_proto_timestamp, to_proto_value,
};
use prost::Message;
use prost_types::{Struct, Timestamp, Value, value::Kind};
use serde_json::Value as Json;

/// `back` is `original` through a `Value`: the same but for numbers, which are the same
/// f64, and integers within 2^53, which stay integers.
fn same_json(original: &Json, back: &Json) -> bool {
    const EXACT: u64 = 1 << 53;
    match (original, back) {
        (Json::Number(a), Json::Number(b)) => {
            let exact = a.as_i64().filter(|i| i.unsigned_abs() <= EXACT);
            a.as_f64() == b.as_f64() && exact.is_none_or(|i| b.as_i64() == Some(i))
        }
        (Json::Array(a), Json::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_json(a, b))
        }
        (Json::Object(a), Json::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, a)| b.get(k).is_some_and(|b| same_json(a, b)))
        }
        (a, b) => a == b,
    }
}

/// `value` as it must come back from JSON.
fn normalised(value: &Value) -> Value {
    let kind = match &value.kind {
        None | Some(Kind::NullValue(_)) => Kind::NullValue(0),
        Some(Kind::NumberValue(n)) if !n.is_finite() => Kind::NullValue(0),
        Some(Kind::NumberValue(n)) => Kind::NumberValue(if *n == 0.0 { 0.0 } else { *n }),
        Some(Kind::ListValue(list)) => Kind::ListValue(prost_types::ListValue {
            values: list.values.iter().map(normalised).collect(),
        }),
        Some(Kind::StructValue(s)) => Kind::StructValue(normalised_struct(s)),
        Some(other) => other.clone(),
    };
    Value { kind: Some(kind) }
}

fn normalised_struct(s: &Struct) -> Struct {
    Struct {
        fields: s
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), normalised(v)))
            .collect(),
    }
}

/// Bit-exact equality, so that -0 and 0 differ and a NaN would show.
fn identical(a: &Struct, b: &Struct) -> bool {
    a.encode_to_vec() == b.encode_to_vec()
}

fn from_json(text: &[u8]) {
    let Ok(json) = serde_json::from_slice::<Json>(text) else {
        return;
    };
    let back = postsub::json::from_proto_value(to_proto_value(json.clone()));
    assert!(same_json(&json, &back), "{json} came back as {back}");
    let again = postsub::json::from_proto_value(to_proto_value(back.clone()));
    assert_eq!(again, back, "a second pass changed it");
    if let Json::Object(map) = json {
        let back = from_proto_struct(to_proto_struct(map.clone()));
        assert!(same_json(&Json::Object(map), &Json::Object(back)));
    }
}

fn from_proto(bytes: &[u8]) {
    let Ok(s) = Struct::decode(bytes) else {
        return;
    };
    let json = from_proto_struct(s.clone());
    let back = to_proto_struct(json.clone());
    assert!(
        identical(&back, &normalised_struct(&s)),
        "{s:?} came back as {back:?}"
    );
    assert_eq!(from_proto_struct(back), json, "a second pass changed it");
}

fn timestamp(bytes: &[u8]) {
    let Ok(timestamp) = Timestamp::decode(bytes) else {
        return;
    };
    if let Some(time) = from_proto_timestamp(timestamp) {
        let expected = Timestamp {
            seconds: timestamp.seconds,
            nanos: timestamp.nanos.max(0),
        };
        assert_eq!(to_proto_timestamp(&time), expected);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => from_json(rest),
        1 => from_proto(rest),
        _ => timestamp(rest),
    }
});
