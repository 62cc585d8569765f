//! Input builders and property checks shared by the fuzz targets in `fuzz_targets/`.
//!
//! The builders turn fuzzer bytes into JSON values, `validate` configs and CEL expressions
//! through [`arbitrary::Unstructured`], so that most inputs reach the code under test
//! instead of failing to parse. The checks say what must hold of every input; each target
//! is a few lines calling them.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::pin,
    sync::{Arc, LazyLock},
    task::{Context, Poll, Waker},
};

use arbitrary::{Result, Unstructured};
use chrono::{DateTime, Utc};
use postsub_tasks::{
    MemoryState, Mode, Outcome, Registry, RunContext, Submission, TaskBase, validate::Validate,
};
use regex::Regex;
use serde_json::{Map, Number, Value, json};
use uuid::Uuid;

/// Built once: building one builds the webhook task's HTTP client.
static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::with_builtins);

/// Answer and field keys: mostly a few fixed ones, so that configs and answers meet.
pub fn key(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=7)? {
        0 | 1 => "a".into(),
        2 => "b".into(),
        3 => "c".into(),
        4 => "tags".into(),
        5 => "answers".into(),
        _ => u.arbitrary()?,
    })
}

/// A JSON number: small integers and short decimals (what forms send) as often as any.
pub fn number(u: &mut Unstructured) -> Result<Value> {
    Ok(match u.int_in_range(0..=4)? {
        0 => json!(u.int_in_range(-3i64..=200)?),
        1 => json!(f64::from(u.int_in_range(-2000i32..=2000)?) / 8.0),
        2 => json!(u.arbitrary::<i64>()?),
        3 => json!(u.arbitrary::<u64>()?),
        _ => Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
    })
}

/// A short string: a few fixed ones (empty, blank, e-mail-like) and any.
pub fn string(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=5)? {
        0 => String::new(),
        1 => " ".into(),
        2 => "ada@example.org".into(),
        3 => "red".into(),
        _ => u.arbitrary()?,
    })
}

/// Any JSON value, nested at most `depth` deep.
pub fn json_value(u: &mut Unstructured, depth: u32) -> Result<Value> {
    let kinds = if depth == 0 { 3 } else { 5 };
    Ok(match u.int_in_range(0..=kinds)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => number(u)?,
        3 => Value::String(string(u)?),
        4 => Value::Array(
            (0..u.int_in_range(0..=4)?)
                .map(|_| json_value(u, depth - 1))
                .collect::<Result<_>>()?,
        ),
        _ => Value::Object(json_object(u, depth - 1)?),
    })
}

/// A JSON object of up to 6 entries, keys from [`key`].
pub fn json_object(u: &mut Unstructured, depth: u32) -> Result<Map<String, Value>> {
    let mut map = Map::new();
    for _ in 0..u.int_in_range(0..=6)? {
        map.insert(key(u)?, json_value(u, depth)?);
    }
    Ok(map)
}

/// Patterns that compile, for configs meant to parse.
pub const PATTERNS: [&str; 6] = [
    "^[^@]+@[^@]+$",
    "^[a-z]{1,3}$",
    "\\d",
    "",
    "^$",
    "(?i)RED|green",
];

/// The field types `validate` knows.
pub const TYPES: [&str; 6] = ["string", "number", "integer", "boolean", "array", "object"];

/// A field spec of a `validate` config. `wild` lets it be anything a user could send
/// (unknown types and keys, patterns that do not compile, min above max).
pub fn field_spec(u: &mut Unstructured, wild: bool) -> Result<Value> {
    let mut spec = Map::new();
    if u.arbitrary()? {
        spec.insert("required".into(), Value::Bool(u.arbitrary()?));
    }
    if u.arbitrary()? {
        let ty = if wild && u.ratio(1, 8)? {
            u.arbitrary::<String>()?
        } else {
            u.choose(&TYPES)?.to_string()
        };
        spec.insert("type".into(), json!(ty));
    }
    let min = if u.arbitrary()? {
        Some(number(u)?)
    } else {
        None
    };
    let max = if u.arbitrary()? {
        Some(number(u)?)
    } else {
        None
    };
    let (min, max) = match (min, max) {
        // A tame spec keeps min <= max, which parse_config demands.
        (Some(a), Some(b)) if !wild && a.as_f64() > b.as_f64() => (Some(b), Some(a)),
        other => other,
    };
    spec.extend(min.map(|n| ("min".to_owned(), n)));
    spec.extend(max.map(|n| ("max".to_owned(), n)));
    for name in ["min_length", "max_length"] {
        if u.arbitrary()? {
            spec.insert(name.into(), json!(u.int_in_range(0u32..=6)?));
        }
    }
    if u.arbitrary()? {
        let pattern = if wild && u.arbitrary()? {
            u.arbitrary::<String>()?
        } else {
            u.choose(&PATTERNS)?.to_string()
        };
        spec.insert("pattern".into(), json!(pattern));
    }
    if u.arbitrary()? {
        let allowed = (0..u.int_in_range(0..=3)?)
            .map(|_| json_value(u, 1))
            .collect::<Result<_>>()?;
        spec.insert("one_of".into(), Value::Array(allowed));
    }
    if wild && u.ratio(1, 16)? {
        spec.insert(u.arbitrary()?, json_value(u, 1)?);
    }
    Ok(Value::Object(spec))
}

/// A CEL expression over the answers, nested at most `depth` deep. It need not be well
/// typed (`a + true`): evaluation errors are flags, and flags are what is checked.
pub fn cel_expr(u: &mut Unstructured, depth: u32) -> Result<String> {
    const LITERALS: [&str; 14] = [
        "true",
        "false",
        "null",
        "0",
        "1",
        "-1",
        "2.5",
        "0.0",
        "9223372036854775807",
        "-9223372036854775808",
        "18446744073709551615u",
        "''",
        "'red'",
        "[]",
    ];
    const BINARY: [&str; 14] = [
        "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%", "&&", "||", "in",
    ];
    // `x` is declared only inside a macro binding it.
    let variable = |u: &mut Unstructured| -> Result<&'static str> {
        u.choose(&["a", "b", "c", "tags", "answers", "x"]).copied()
    };
    if depth == 0 {
        return Ok(match u.int_in_range(0..=2)? {
            0 => u.choose(&LITERALS)?.to_string(),
            1 => variable(u)?.to_owned(),
            _ => format!("{}", u.int_in_range(-1000i64..=1000)?),
        });
    }
    let sub = |u: &mut Unstructured| cel_expr(u, depth - 1);
    Ok(match u.int_in_range(0..=14)? {
        0 => u.choose(&LITERALS)?.to_string(),
        1 | 2 => variable(u)?.to_owned(),
        3..=5 => format!("({} {} {})", sub(u)?, u.choose(&BINARY)?, sub(u)?),
        6 => format!("!{}", sub(u)?),
        7 => format!("-{}", sub(u)?),
        8 => format!("size({})", sub(u)?),
        9 => format!("has(answers.{})", variable(u)?),
        10 => format!("({} ? {} : {})", sub(u)?, sub(u)?, sub(u)?),
        11 => format!("[{}, {}]", sub(u)?, sub(u)?),
        12 => {
            let macro_name = u.choose(&["all", "exists", "exists_one", "map", "filter"])?;
            let bound = u.choose(&["x", "a"])?;
            format!("{}.{macro_name}({bound}, {})", sub(u)?, sub(u)?)
        }
        13 => format!("{}[{}]", sub(u)?, sub(u)?),
        _ => {
            let function = u.choose(&[
                "string",
                "int",
                "uint",
                "double",
                "type",
                "matches",
                "contains",
                "startsWith",
            ])?;
            match *function {
                "matches" | "contains" | "startsWith" => {
                    format!("{}.{function}({})", sub(u)?, sub(u)?)
                }
                _ => format!("{function}({})", sub(u)?),
            }
        }
    })
}

/// A `validate` rule. A `wild` one may have any text as its expression.
pub fn rule(u: &mut Unstructured, wild: bool) -> Result<Value> {
    let expr = if wild && u.arbitrary()? {
        u.arbitrary::<String>()?
    } else {
        cel_expr(u, 4)?
    };
    let mut rule = Map::new();
    rule.insert(
        "name".into(),
        json!(u.choose(&["r1", "r2", "r3", "r4", "min", "type"])?),
    );
    rule.insert("expr".into(), json!(expr));
    if u.arbitrary()? {
        rule.insert("field".into(), json!(key(u)?));
    }
    if u.arbitrary()? {
        rule.insert("message".into(), json!(string(u)?));
    }
    Ok(Value::Object(rule))
}

/// A `validate` config: fields and rules, `wild` as in [`field_spec`] and [`rule`].
pub fn config(u: &mut Unstructured, wild: bool) -> Result<Value> {
    let mut fields = Map::new();
    for _ in 0..u.int_in_range(0..=5)? {
        fields.insert(key(u)?, field_spec(u, wild)?);
    }
    let rules = (0..u.int_in_range(0..=4)?)
        .map(|_| rule(u, wild))
        .collect::<Result<_>>()?;
    Ok(json!({"fields": fields, "rules": Value::Array(rules)}))
}

/// Polls a future that must finish without waiting: a `validate` run does no I/O.
pub fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a validate run waited"),
    }
}

/// A submission with these answers.
pub fn submission(answers: Map<String, Value>) -> Submission {
    Submission {
        form_id: Uuid::nil(),
        submission_id: Uuid::nil(),
        answers,
        submitted_at: DateTime::<Utc>::UNIX_EPOCH,
        metadata: BTreeMap::new(),
        event: Default::default(),
        revision: 0,
    }
}

/// Runs a parsed `validate` config against `answers`, which must give an outcome.
pub fn run_validate(
    config: &<Validate as TaskBase>::Config,
    answers: &Map<String, Value>,
) -> Outcome {
    let context = RunContext {
        run_id: Uuid::nil(),
        binding_id: Uuid::nil(),
        binding_name: String::new(),
        events: Default::default(),
        attempt: 1,
        state: Arc::new(MemoryState::default()),
    };
    ready(Validate::new().run(config, &context, &submission(answers.clone())))
        .expect("validate never fails: a broken check is a flag")
}

/// The checks `validate` makes of one field, by name, as the task's docs describe them:
/// what its flags on that field must be.
pub fn expected_field_flags(spec: &Map<String, Value>, value: Option<&Value>) -> Vec<&'static str> {
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
        Some(other) => panic!("unknown type {other} in a config that parsed"),
    };
    if !type_ok {
        return vec!["type"];
    }
    let mut flags = Vec::new();
    let limit = |name: &str| spec.get(name).and_then(Value::as_f64);
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

/// What must hold of the outcome of a config that parsed, run against `answers`:
/// - the output counts every field, and every rule as checked or skipped;
/// - the field flags come first, field by field in key order, exactly those of
///   [`expected_field_flags`];
/// - then at most one flag per checked rule, in rule order, on the rule's `field` when it
///   names one; a skipped rule flags nothing;
/// - the same answers give the same outcome.
pub fn check_outcome(
    config: &Value,
    parsed: &<Validate as TaskBase>::Config,
    answers: &Map<String, Value>,
) {
    let outcome = run_validate(parsed, answers);
    let empty = Map::new();
    let fields = config["fields"].as_object().unwrap_or(&empty);
    let rules: &[Value] = config["rules"].as_array().map_or(&[], Vec::as_slice);

    assert_eq!(outcome.output["fields_checked"], json!(fields.len()));
    let skipped: Vec<&str> = outcome.output["rules_skipped"]
        .as_array()
        .expect("rules_skipped is a list")
        .iter()
        .map(|name| name.as_str().expect("a skipped rule's name"))
        .collect();
    let checked = outcome.output["rules_checked"]
        .as_u64()
        .expect("rules_checked is a count") as usize;
    assert_eq!(checked + skipped.len(), rules.len(), "{outcome:?}");

    let mut keys: Vec<&String> = fields.keys().collect();
    keys.sort();
    let mut expected = Vec::new();
    for key in keys {
        let spec = fields[key].as_object().expect("a field spec is an object");
        for rule in expected_field_flags(spec, answers.get(key)) {
            expected.push((key.as_str(), rule));
        }
    }
    let (field_flags, rule_flags) = outcome
        .flags
        .split_at(expected.len().min(outcome.flags.len()));
    let got: Vec<(&str, &str)> = field_flags
        .iter()
        .map(|flag| (flag.field.as_str(), flag.rule.as_str()))
        .collect();
    assert_eq!(got, expected, "answers {answers:?}: {outcome:?}");

    let mut rule_flags = rule_flags.iter().peekable();
    for rule in rules {
        let name = rule["name"].as_str().expect("a rule's name");
        let Some(flag) = rule_flags.next_if(|flag| flag.rule == name) else {
            continue;
        };
        assert!(
            !skipped.contains(&name),
            "skipped rule {name} flagged: {outcome:?}"
        );
        if let Some(field) = rule.get("field").and_then(Value::as_str) {
            assert_eq!(flag.field, field);
        }
    }
    assert!(
        rule_flags.next().is_none(),
        "flags beyond one per rule, or out of rule order: {outcome:?}"
    );
    assert_eq!(
        run_validate(parsed, answers),
        outcome,
        "a second run differs"
    );
}

/// Why a config must be refused, if a limit or a cross-check rules it out whatever its
/// expressions and patterns are.
pub fn must_refuse(config: &Value) -> Option<String> {
    let empty = Map::new();
    let fields = config["fields"].as_object().unwrap_or(&empty);
    for (key, spec) in fields {
        let number = |name: &str| spec.get(name).and_then(Value::as_f64);
        if let (Some(min), Some(max)) = (number("min"), number("max"))
            && min > max
        {
            return Some(format!("field {key}: min {min} > max {max}"));
        }
        if spec
            .get("pattern")
            .and_then(Value::as_str)
            .is_some_and(|pattern| pattern.chars().count() > 1000)
        {
            return Some(format!("field {key}: pattern over 1000 characters"));
        }
    }
    let rules: &[Value] = config["rules"].as_array().map_or(&[], Vec::as_slice);
    if rules.len() > 100 {
        return Some("over 100 rules".into());
    }
    for (i, rule) in rules.iter().enumerate() {
        if rules[..i].iter().any(|r| r["name"] == rule["name"]) {
            return Some(format!("two rules named {}", rule["name"]));
        }
        if rule["expr"]
            .as_str()
            .is_some_and(|expr| expr.chars().count() > 2000)
        {
            return Some(format!(
                "rule {}: expression over 2000 characters",
                rule["name"]
            ));
        }
    }
    None
}

/// What must hold of any config: parsing it does not panic; the registry's `validate`
/// kind decides the same; a config a limit rules out is refused with a reason; and a
/// config that parses gives an outcome for any answers, as [`check_outcome`] says.
pub fn check_config(config: &Value, answers: &[Map<String, Value>]) {
    let parsed = Validate::new().parse_config(config);
    let prepared = REGISTRY.prepare("validate", Mode::Sync, config);
    assert_eq!(parsed.is_ok(), prepared.is_ok(), "{config}");
    match parsed {
        Err(err) => assert!(!err.0.is_empty(), "an empty reason for refusing {config}"),
        Ok(parsed) => {
            if let Some(reason) = must_refuse(config) {
                panic!("accepted a config it must refuse ({reason}): {config}");
            }
            for answers in answers {
                check_outcome(config, &parsed, answers);
            }
        }
    }
}

/// Answers giving every key of the config's fields the same value, one of a few that
/// meet each check (blank, zero, negative, a fraction, a list, an object).
pub fn uniform_answers(u: &mut Unstructured, config: &Value) -> Result<Map<String, Value>> {
    let value = match u.int_in_range(0..=9)? {
        0 => Value::Null,
        1 => json!(""),
        2 => json!(" "),
        3 => json!(0),
        4 => json!(-1),
        5 => json!(2.5),
        6 => json!("red"),
        7 => json!(true),
        8 => json!(["a", ""]),
        _ => json!({"a": 1}),
    };
    let mut answers = Map::new();
    if let Some(fields) = config["fields"].as_object() {
        for key in fields.keys() {
            answers.insert(key.clone(), value.clone());
        }
    }
    Ok(answers)
}
