//! Conversions between the protobuf well-known types postsub uses and their Rust
//! counterparts: `google.protobuf.Struct`/`Value` and `serde_json`, `Timestamp` and chrono.
//!
//! Answers and task outputs are JSON for every user of postsub; on the wire they travel as
//! `Struct`/`Value` so that `grpcurl` and any gRPC client can send them as plain JSON.

use chrono::{DateTime, Utc};
use prost_types::{ListValue, Struct, Timestamp, Value, value::Kind};
use serde_json::{Map, Number};

/// Converts a JSON value into a protobuf `Value`.
pub fn to_proto_value(value: serde_json::Value) -> Value {
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => Kind::ListValue(ListValue {
            values: items.into_iter().map(to_proto_value).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(to_proto_struct(map)),
    };
    Value { kind: Some(kind) }
}

/// Converts a JSON object into a protobuf `Struct`.
pub fn to_proto_struct(map: Map<String, serde_json::Value>) -> Struct {
    Struct {
        fields: map
            .into_iter()
            .map(|(k, v)| (k, to_proto_value(v)))
            .collect(),
    }
}

/// Converts a protobuf `Value` into JSON. Whole numbers come back as JSON integers, so an
/// answer `42` stays `42` and not `42.0`.
pub fn from_proto_value(value: Value) -> serde_json::Value {
    match value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(b),
        Some(Kind::NumberValue(n)) => number(n),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s),
        Some(Kind::ListValue(list)) => {
            serde_json::Value::Array(list.values.into_iter().map(from_proto_value).collect())
        }
        Some(Kind::StructValue(s)) => serde_json::Value::Object(from_proto_struct(s)),
    }
}

/// Converts a protobuf `Struct` into a JSON object.
pub fn from_proto_struct(s: Struct) -> Map<String, serde_json::Value> {
    s.fields
        .into_iter()
        .map(|(k, v)| (k, from_proto_value(v)))
        .collect()
}

/// A point in time as a protobuf `Timestamp`.
pub fn to_proto_timestamp<Tz: chrono::TimeZone>(time: &DateTime<Tz>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

/// A protobuf `Timestamp` as a point in time; `None` when it is out of chrono's range.
pub fn from_proto_timestamp(timestamp: Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(timestamp.seconds, timestamp.nanos.max(0) as u32)
}

fn number(n: f64) -> serde_json::Value {
    // 2^53: beyond it an f64 no longer holds every integer exactly.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() <= EXACT {
        serde_json::Value::Number(Number::from(n as i64))
    } else {
        Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_keeps_types() {
        let original = json!({
            "age": 42, "ratio": 0.5, "ok": true, "name": "Ada",
            "tags": ["a", 1, null], "nested": {"x": -3}
        });
        let serde_json::Value::Object(map) = original.clone() else {
            unreachable!()
        };
        let back = serde_json::Value::Object(from_proto_struct(to_proto_struct(map)));
        assert_eq!(back, original);
    }

    #[test]
    fn timestamps_round_trip() {
        let time = DateTime::parse_from_rfc3339("2026-11-22T10:00:00.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(from_proto_timestamp(to_proto_timestamp(&time)), Some(time));
        assert_eq!(
            from_proto_timestamp(Timestamp {
                seconds: i64::MAX,
                nanos: 0
            }),
            None
        );
    }

    #[test]
    fn non_finite_numbers_become_null() {
        assert_eq!(
            from_proto_value(Value {
                kind: Some(Kind::NumberValue(f64::NAN))
            }),
            serde_json::Value::Null
        );
    }
}
