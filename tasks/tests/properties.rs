//! Properties of the `validate` task over generated configs and answers: the same ones the
//! `validate_config` and `validate_answers` fuzz targets check (fuzz/README.md), at a case
//! count CI runs in a few seconds.

use std::{
    pin::pin,
    sync::{Arc, LazyLock},
    task::{Context, Poll, Waker},
};

use chrono::DateTime;
use postsub_tasks::{
    MemoryState, Mode, Outcome, Registry, RunContext, Submission, TaskBase, validate::Validate,
};
use proptest::{collection, prelude::*, sample};
use regex::Regex;
use serde_json::{Map, Number, Value, json};
use uuid::Uuid;

type Parsed = <Validate as TaskBase>::Config;

/// Built once: building one builds the webhook task's HTTP client.
static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::with_builtins);

/// Patterns that compile.
const PATTERNS: [&str; 5] = ["^[^@]+@[^@]+$", "^[a-z]{1,3}$", "\\d", "", "(?i)RED|green"];
const TYPES: [&str; 6] = ["string", "number", "integer", "boolean", "array", "object"];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => sample::select(vec!["a", "b", "c", "tags"]).prop_map(String::from),
        1 => "[a-z]{1,3}",
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-3i64..200).prop_map(|n| json!(n)),
        (-2000i32..2000).prop_map(|n| json!(f64::from(n) / 8.0)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| Number::from_f64(n).map_or(Value::Null, Value::Number)),
    ]
}

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        sample::select(vec!["", " ", "ada@example.org", "red", "Green"]).prop_map(String::from),
        ".{0,6}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        string().prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            collection::btree_map(key(), inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn answers() -> impl Strategy<Value = Map<String, Value>> {
    collection::vec((key(), json_value()), 0..6).prop_map(|pairs| pairs.into_iter().collect())
}

/// A field spec that parses: every check, min at most max, patterns that compile.
fn field_spec() -> impl Strategy<Value = Value> {
    (
        any::<Option<bool>>(),
        proptest::option::of(sample::select(TYPES.to_vec())),
        proptest::option::of(number()),
        proptest::option::of(number()),
        proptest::option::of(0u32..6),
        proptest::option::of(0u32..6),
        proptest::option::of(sample::select(PATTERNS.to_vec())),
        proptest::option::of(collection::vec(json_value(), 0..3)),
    )
        .prop_map(
            |(required, ty, min, max, min_length, max_length, pattern, one_of)| {
                let (min, max) = match (min, max) {
                    (Some(a), Some(b)) if a.as_f64() > b.as_f64() => (Some(b), Some(a)),
                    other => other,
                };
                let mut spec = Map::new();
                let mut put = |name: &str, value: Option<Value>| {
                    spec.extend(value.map(|value| (name.to_owned(), value)));
                };
                put("required", required.map(Value::Bool));
                put("type", ty.map(|ty| json!(ty)));
                put("min", min);
                put("max", max);
                put("min_length", min_length.map(|n| json!(n)));
                put("max_length", max_length.map(|n| json!(n)));
                put("pattern", pattern.map(|p| json!(p)));
                put("one_of", one_of.map(Value::Array));
                Value::Object(spec)
            },
        )
}

/// A CEL expression over the answers; not always well typed, since evaluation errors are
/// flags too.
fn cel_expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        sample::select(vec![
            "true", "false", "null", "0", "1", "2.5", "''", "'red'", "[]", "a", "b", "c", "tags",
            "answers", "x",
        ])
        .prop_map(String::from),
        (-1000i64..1000).prop_map(|n| n.to_string()),
    ];
    leaf.prop_recursive(3, 16, 3, |inner| {
        let op = sample::select(vec![
            "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%", "&&", "||", "in",
        ]);
        let r#macro = sample::select(vec!["all", "exists", "exists_one", "map", "filter"]);
        prop_oneof![
            (inner.clone(), op, inner.clone()).prop_map(|(l, op, r)| format!("({l} {op} {r})")),
            inner.clone().prop_map(|e| format!("!{e}")),
            inner.clone().prop_map(|e| format!("size({e})")),
            key().prop_map(|k| format!("has(answers.{k})")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(c, t, e)| format!("({c} ? {t} : {e})")),
            (inner.clone(), r#macro, inner.clone())
                .prop_map(|(t, m, body)| format!("{t}.{m}(x, {body})")),
            (inner.clone(), inner.clone()).prop_map(|(l, i)| format!("{l}[{i}]")),
            inner.prop_map(|e| format!("string({e})")),
        ]
    })
}

/// A config that parses but for a rule the generator made that does not compile.
fn config() -> impl Strategy<Value = Value> {
    let rule = (
        cel_expr(),
        proptest::option::of(key()),
        proptest::option::of(string()),
    );
    (
        collection::btree_map(key(), field_spec(), 0..5),
        collection::vec(rule, 0..4),
    )
        .prop_map(|(fields, rules)| {
            let rules: Vec<Value> = rules
                .into_iter()
                .enumerate()
                .map(|(i, (expr, field, message))| {
                    let mut rule = json!({"name": format!("r{i}"), "expr": expr});
                    if let Some(field) = field {
                        rule["field"] = json!(field);
                    }
                    if let Some(message) = message {
                        rule["message"] = json!(message);
                    }
                    rule
                })
                .collect();
            json!({"fields": fields, "rules": rules})
        })
}

/// A config of parts that may each be wrong: any text as type, pattern and expression,
/// min above max, unknown keys, rule names that repeat.
fn wild_config() -> impl Strategy<Value = Value> {
    let spec = (
        field_spec(),
        proptest::option::of(".{0,8}"),
        proptest::option::of(".{0,12}"),
        proptest::option::of((number(), number())),
        proptest::option::of(("[a-z_]{1,10}", json_value())),
    )
        .prop_map(|(mut spec, ty, pattern, min_max, extra)| {
            if let Some(ty) = ty {
                spec["type"] = json!(ty);
            }
            if let Some(pattern) = pattern {
                spec["pattern"] = json!(pattern);
            }
            if let Some((min, max)) = min_max {
                spec["min"] = min;
                spec["max"] = max;
            }
            if let Some((name, value)) = extra {
                spec[name] = value;
            }
            spec
        });
    let expr = prop_oneof![cel_expr(), ".{0,20}"];
    let rule = (sample::select(vec!["r1", "r2", "r3"]), expr)
        .prop_map(|(name, expr)| json!({"name": name, "expr": expr}));
    (
        collection::btree_map(key(), spec, 0..4),
        collection::vec(rule, 0..4),
    )
        .prop_map(|(fields, rules)| json!({"fields": fields, "rules": rules}))
}

/// Runs a parsed config against `answers`: a run finishes at once and always has an outcome.
fn run(config: &Parsed, answers: &Map<String, Value>) -> Outcome {
    let context = RunContext {
        run_id: Uuid::nil(),
        binding_id: Uuid::nil(),
        binding_name: String::new(),
        events: Default::default(),
        attempt: 1,
        state: Arc::new(MemoryState::default()),
    };
    let submission = Submission {
        form_id: Uuid::nil(),
        submission_id: Uuid::nil(),
        answers: answers.clone(),
        submitted_at: DateTime::UNIX_EPOCH,
        metadata: Default::default(),
        event: Default::default(),
        revision: 0,
    };
    let validate = Validate::new();
    let mut future = pin!(validate.run(config, &context, &submission));
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(outcome) => outcome.expect("validate never fails: a broken check is a flag"),
        Poll::Pending => panic!("a validate run waited"),
    }
}

/// The flags one field must get, by check name, as the task's docs describe the checks.
fn expected_field_flags(spec: &Map<String, Value>, value: Option<&Value>) -> Vec<&'static str> {
    let required = spec.get("required").and_then(Value::as_bool) == Some(true);
    let value = match value {
        None | Some(Value::Null) => return if required { vec!["required"] } else { vec![] },
        Some(Value::String(s)) if required && s.trim().is_empty() => return vec!["required"],
        Some(value) => value,
    };
    let type_ok = match spec.get("type").and_then(Value::as_str) {
        None => true,
        Some("string") => value.is_string(),
        Some("number") => value.is_number(),
        Some("integer") => value.as_f64().is_some_and(|n| n.fract() == 0.0),
        Some("boolean") => value.is_boolean(),
        Some("array") => value.is_array(),
        Some("object") => value.is_object(),
        Some(other) => panic!("type {other} parsed"),
    };
    if !type_ok {
        return vec!["type"];
    }
    let limit = |name: &str| spec.get(name).and_then(Value::as_f64);
    let mut flags = Vec::new();
    if let Some(n) = value.as_f64() {
        if limit("min").is_some_and(|min| n < min) {
            flags.push("min");
        }
        if limit("max").is_some_and(|max| n > max) {
            flags.push("max");
        }
    }
    let length = match value {
        Value::String(s) => Some(s.chars().count() as f64),
        Value::Array(items) => Some(items.len() as f64),
        _ => None,
    };
    if let Some(length) = length {
        if limit("min_length").is_some_and(|min| length < min) {
            flags.push("min_length");
        }
        if limit("max_length").is_some_and(|max| length > max) {
            flags.push("max_length");
        }
    }
    if let (Some(pattern), Some(s)) = (spec.get("pattern").and_then(Value::as_str), value.as_str())
        && !Regex::new(pattern)
            .expect("the pattern compiled")
            .is_match(s)
    {
        flags.push("pattern");
    }
    if let Some(allowed) = spec.get("one_of").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        flags.push("one_of");
    }
    flags
}

/// What must hold of the outcome of a config that parsed: the output counts every field
/// and every rule (checked or skipped); the field flags come first, in key order, exactly
/// the expected ones; then at most one flag per checked rule, in rule order, on the rule's
/// `field` when it names one; and a second run gives the same outcome.
fn check_outcome(
    config: &Value,
    parsed: &Parsed,
    answers: &Map<String, Value>,
) -> Result<(), TestCaseError> {
    let outcome = run(parsed, answers);
    let empty = Map::new();
    let fields = config["fields"].as_object().unwrap_or(&empty);
    let rules: &[Value] = config["rules"].as_array().map_or(&[], Vec::as_slice);
    prop_assert_eq!(&outcome.output["fields_checked"], &json!(fields.len()));
    let skipped: Vec<&str> = outcome.output["rules_skipped"]
        .as_array()
        .expect("rules_skipped is a list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let checked = outcome.output["rules_checked"].as_u64().expect("a count") as usize;
    prop_assert_eq!(checked + skipped.len(), rules.len());

    // A BTreeMap's key order, which is the order the task checks fields in.
    let mut keys: Vec<&String> = fields.keys().collect();
    keys.sort();
    let expected: Vec<(&str, &str)> = keys
        .into_iter()
        .flat_map(|key| {
            let spec = fields[key].as_object().expect("a spec is an object");
            expected_field_flags(spec, answers.get(key))
                .into_iter()
                .map(move |rule| (key.as_str(), rule))
        })
        .collect();
    let (field_flags, rule_flags) = outcome
        .flags
        .split_at(expected.len().min(outcome.flags.len()));
    let got: Vec<(&str, &str)> = field_flags
        .iter()
        .map(|flag| (flag.field.as_str(), flag.rule.as_str()))
        .collect();
    prop_assert_eq!(got, expected, "answers {:?}", answers);

    let mut rule_flags = rule_flags.iter().peekable();
    for rule in rules {
        let name = rule["name"].as_str().expect("a rule's name");
        if let Some(flag) = rule_flags.next_if(|flag| flag.rule == name) {
            prop_assert!(!skipped.contains(&name), "skipped rule {} flagged", name);
            if let Some(field) = rule.get("field").and_then(Value::as_str) {
                prop_assert_eq!(&flag.field, field);
            }
        }
    }
    prop_assert!(rule_flags.next().is_none(), "{:?}", outcome.flags);
    prop_assert_eq!(run(parsed, answers), outcome, "a second run differs");
    Ok(())
}

/// Answers giving every field of `config` the same value.
fn uniform(config: &Value, value: &Value) -> Map<String, Value> {
    config["fields"]
        .as_object()
        .into_iter()
        .flat_map(|fields| fields.keys())
        .map(|key| (key.clone(), value.clone()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn outcomes_hold_the_field_checks_and_one_flag_per_rule(
        config in config(),
        answers in answers(),
        value in json_value(),
    ) {
        let fields_only = json!({"fields": config["fields"]});
        prop_assert!(Validate::new().parse_config(&fields_only).is_ok(), "{}", fields_only);
        let parsed = match Validate::new().parse_config(&config) {
            Ok(parsed) => parsed,
            // A generated rule may be refused (a literal out of range); nothing to run.
            Err(err) => {
                prop_assert!(err.0.starts_with("rule `"), "{}", err);
                return Ok(());
            }
        };
        check_outcome(&config, &parsed, &answers)?;
        check_outcome(&config, &parsed, &uniform(&config, &value))?;
        let reversed: Map<String, Value> = answers.clone().into_iter().rev().collect();
        prop_assert_eq!(run(&parsed, &reversed), run(&parsed, &answers));
    }

    #[test]
    fn any_config_is_parsed_or_refused_with_a_reason(
        config in wild_config(),
        answers in answers(),
    ) {
        let parsed = Validate::new().parse_config(&config);
        let prepared = REGISTRY.prepare("validate", Mode::Sync, &config);
        prop_assert_eq!(parsed.is_ok(), prepared.is_ok());
        match parsed {
            Err(err) => prop_assert!(!err.0.is_empty()),
            Ok(parsed) => {
                for (key, spec) in config["fields"].as_object().expect("fields") {
                    let (min, max) = (spec.get("min"), spec.get("max"));
                    let (min, max) = (min.and_then(Value::as_f64), max.and_then(Value::as_f64));
                    prop_assert!(
                        !matches!((min, max), (Some(min), Some(max)) if min > max),
                        "field {} accepted with min above max", key
                    );
                }
                let rules = config["rules"].as_array().expect("rules");
                for (i, rule) in rules.iter().enumerate() {
                    prop_assert!(
                        !rules[..i].iter().any(|r| r["name"] == rule["name"]),
                        "two rules named {}", rule["name"]
                    );
                }
                check_outcome(&config, &parsed, &Map::new())?;
                check_outcome(&config, &parsed, &answers)?;
            }
        }
    }
}
