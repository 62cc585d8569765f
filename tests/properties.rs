//! Properties of the protobuf <-> JSON conversions (`postsub::json`): the same ones the
//! `proto_json` fuzz target checks (fuzz/README.md), at a case count CI runs in a second.

use chrono::DateTime;
use postsub::json::{
    from_proto_struct, from_proto_timestamp, from_proto_value, to_proto_struct, to_proto_timestamp,
    to_proto_value,
};
use proptest::{collection, prelude::*};
use prost::Message;
use prost_types::{ListValue, Struct, Timestamp, Value, value::Kind};
use serde_json::{Map, Number, Value as Json};

fn json_value() -> impl Strategy<Value = Json> {
    let number = prop_oneof![
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        (-(1i64 << 54)..(1i64 << 54)).prop_map(Json::from),
        prop::sample::select(vec![i64::MIN, i64::MAX, -(1 << 53), 1 << 53]).prop_map(Json::from),
        Just(Json::from(u64::MAX)),
        any::<f64>().prop_map(|n| Number::from_f64(n).map_or(Json::Null, Json::Number)),
        (-1000i32..1000).prop_map(|n| Json::from(f64::from(n) / 4.0)),
    ];
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        number,
        ".{0,8}".prop_map(Json::String),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            collection::vec(inner.clone(), 0..5).prop_map(Json::Array),
            collection::vec((".{0,4}", inner), 0..5)
                .prop_map(|pairs| Json::Object(pairs.into_iter().collect())),
        ]
    })
}

fn proto_value() -> impl Strategy<Value = Value> {
    let number = prop_oneof![
        any::<f64>(),
        Just(-0.0),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(9_007_199_254_740_993.0),
        (-1000i32..1000).prop_map(f64::from),
    ];
    let leaf = prop_oneof![
        Just(None),
        any::<i32>().prop_map(|n| Some(Kind::NullValue(n))),
        any::<bool>().prop_map(|b| Some(Kind::BoolValue(b))),
        number.prop_map(|n| Some(Kind::NumberValue(n))),
        ".{0,8}".prop_map(|s| Some(Kind::StringValue(s))),
    ];
    let leaf = leaf.prop_map(|kind| Value { kind });
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            collection::vec(inner.clone(), 0..5).prop_map(|values| Value {
                kind: Some(Kind::ListValue(ListValue { values }))
            }),
            collection::btree_map(".{0,4}", inner, 0..5).prop_map(|fields| Value {
                kind: Some(Kind::StructValue(Struct { fields }))
            }),
        ]
    })
}

/// `back` is `original` through a protobuf `Value`: the same but for numbers, which keep
/// their f64, and integers within 2^53, which stay those integers.
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

/// `value` as it comes back from JSON: every null `NullValue(0)`, NaN and infinities null,
/// -0 as 0.
fn normalised(value: &Value) -> Value {
    let kind = match &value.kind {
        None | Some(Kind::NullValue(_)) => Kind::NullValue(0),
        Some(Kind::NumberValue(n)) if !n.is_finite() => Kind::NullValue(0),
        Some(Kind::NumberValue(n)) => Kind::NumberValue(if *n == 0.0 { 0.0 } else { *n }),
        Some(Kind::ListValue(list)) => Kind::ListValue(ListValue {
            values: list.values.iter().map(normalised).collect(),
        }),
        Some(Kind::StructValue(s)) => Kind::StructValue(Struct {
            fields: s
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), normalised(v)))
                .collect(),
        }),
        Some(other) => other.clone(),
    };
    Value { kind: Some(kind) }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn json_through_a_proto_value_keeps_its_values_and_then_stays_put(json in json_value()) {
        let back = from_proto_value(to_proto_value(json.clone()));
        prop_assert!(same_json(&json, &back), "{} came back as {}", json, back);
        let again = from_proto_value(to_proto_value(back.clone()));
        prop_assert_eq!(again, back);
        if let Json::Object(map) = json {
            let back = from_proto_struct(to_proto_struct(map.clone()));
            prop_assert!(same_json(&Json::Object(map), &Json::Object(back)));
        }
    }

    #[test]
    fn a_proto_value_through_json_loses_only_what_json_cannot_hold(value in proto_value()) {
        let json = from_proto_value(value.clone());
        let back = to_proto_value(json.clone());
        // Compared encoded, so that -0 and 0 differ and a NaN would show.
        prop_assert_eq!(
            back.encode_to_vec(),
            normalised(&value).encode_to_vec(),
            "{:?} came back as {:?}", value, back
        );
        prop_assert_eq!(from_proto_value(back), json);
        let s = Struct { fields: [("k".to_owned(), value)].into() };
        let map: Map<String, Json> = from_proto_struct(s.clone());
        prop_assert_eq!(to_proto_struct(map).encode_to_vec(), Struct {
            fields: [("k".to_owned(), normalised(&s.fields["k"]))].into(),
        }.encode_to_vec());
    }

    #[test]
    fn timestamps_chrono_can_hold_convert_back(
        seconds in prop_oneof![
            -8_334_601_228_800i64..=8_210_266_876_799,
            any::<i64>(),
        ],
        nanos in prop_oneof![0i32..2_000_000_000, any::<i32>()],
    ) {
        let timestamp = Timestamp { seconds, nanos };
        if let Some(time) = from_proto_timestamp(timestamp) {
            prop_assert_eq!(
                to_proto_timestamp(&time),
                Timestamp { seconds, nanos: nanos.max(0) }
            );
        } else {
            prop_assert!(DateTime::from_timestamp(seconds, nanos.max(0) as u32).is_none());
        }
    }
}
