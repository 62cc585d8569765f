//! The `validate` task: per-field checks and cross-field business rules in CEL.
//!
//! Config:
//! ```json
//! {"fields": {"age": {"required": true, "type": "number", "min": 0, "max": 150},
//!             "email": {"type": "string", "pattern": "^[^@]+@[^@]+$"}},
//!  "rules": [{"name": "savings_within_income", "expr": "monthly_savings <= monthly_income",
//!             "field": "monthly_savings",
//!             "message": "Monthly savings cannot exceed monthly income"}]}
//! ```
//! Each broken check is a [`Flag`]. An answer of the wrong type is a flag, never an error.
//! A rule sees every answer as a variable of the same name (and all of them as `answers`);
//! a rule whose inputs are missing or null is skipped. Patterns and rules are compiled once,
//! when the binding is created.

use std::{
    collections::BTreeMap,
    sync::{Arc, LazyLock},
};

use async_trait::async_trait;
use cel::{Context, Env, Program, Value as CelValue, objects::ResolveResult};
use regex::Regex;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    ConfigError, Event, Events, Flag, Outcome, RunContext, Submission, TaskBase, TaskError,
};

/// The CEL standard environment, built once: building it registers every function.
static CEL_ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// The `validate` task kind.
#[derive(Debug, Default)]
pub struct Validate;

impl Validate {
    /// The task kind.
    pub fn new() -> Self {
        Self
    }
}

/// The JSON type an answer must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// A JSON string.
    String,
    /// Any JSON number.
    Number,
    /// A JSON number without a fractional part.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// A JSON array.
    Array,
    /// A JSON object.
    Object,
}

impl FieldType {
    fn name(self) -> &'static str {
        match self {
            FieldType::String => "a string",
            FieldType::Number => "a number",
            FieldType::Integer => "an integer",
            FieldType::Boolean => "true or false",
            FieldType::Array => "a list",
            FieldType::Object => "an object",
        }
    }

    fn matches(self, value: &Value) -> bool {
        match self {
            FieldType::String => value.is_string(),
            FieldType::Number => value.is_number(),
            FieldType::Integer => {
                value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|n| n.fract() == 0.0)
            }
            FieldType::Boolean => value.is_boolean(),
            FieldType::Array => value.is_array(),
            FieldType::Object => value.is_object(),
        }
    }
}

/// The checks of one answer, by its question key.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct FieldSpec {
    /// The answer must be present, not null and not blank.
    #[serde(default)]
    required: bool,
    /// The JSON type the answer must have.
    #[serde(rename = "type")]
    ty: Option<FieldType>,
    /// Smallest allowed number.
    min: Option<f64>,
    /// Largest allowed number.
    max: Option<f64>,
    /// Fewest characters (strings) or items (lists).
    min_length: Option<usize>,
    /// Most characters (strings) or items (lists).
    max_length: Option<usize>,
    /// Regular expression a string answer must match.
    pattern: Option<String>,
    /// The answer must be one of these values.
    one_of: Option<Vec<Value>>,
}

/// A business rule across answers, in CEL.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    /// Unique within the binding; the flag's `rule`.
    name: String,
    /// A CEL expression over the answers (each a variable, all of them as `answers`) that
    /// is true when the answers are fine.
    #[schemars(length(max = 2000))]
    expr: String,
    /// The question key the flag names (default: the first answer the rule reads).
    field: Option<String>,
    /// The flag's message (default: says which rule broke).
    message: Option<String>,
}

/// A `validate` binding's config.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "validate config")]
struct ConfigSpec {
    /// Checks per answer, by question key.
    #[serde(default)]
    fields: BTreeMap<String, FieldSpec>,
    /// Rules across answers, checked in order.
    #[serde(default)]
    #[schemars(length(max = 100))]
    rules: Vec<RuleSpec>,
}

/// Most CEL rules one binding may have: every rule runs on every submission, inline.
const MAX_RULES: usize = 100;
/// Longest CEL expression, in characters.
const MAX_EXPR_CHARS: usize = 2_000;
/// Longest `pattern`, in characters.
const MAX_PATTERN_CHARS: usize = 1_000;
/// Most memory one compiled pattern may take (the `regex` crate's size limit): enough for
/// any sensible pattern, far from what `\w{1000}{1000}`-like patterns would take.
const PATTERN_SIZE_LIMIT: usize = 256 * 1024;

/// Compiles a field's `pattern` within the limits.
fn compile_pattern(key: &str, pattern: &str) -> Result<Regex, ConfigError> {
    let length = pattern.chars().count();
    if length > MAX_PATTERN_CHARS {
        return Err(ConfigError::at(
            format_args!("fields.{key}.pattern"),
            format_args!("the pattern is {length} characters; the limit is {MAX_PATTERN_CHARS}"),
        ));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|err| match err {
            regex::Error::CompiledTooBig(_) => ConfigError::at(
                format_args!("fields.{key}.pattern"),
                format_args!(
                    "the pattern compiles to more than {PATTERN_SIZE_LIMIT} bytes, the limit"
                ),
            ),
            err => ConfigError::at(
                format_args!("fields.{key}.pattern"),
                format_args!("pattern does not compile: {err}"),
            ),
        })
}

/// A parsed `validate` config: patterns and rules compiled.
pub struct ValidateConfig {
    fields: Vec<(String, FieldSpec, Option<Regex>)>,
    rules: Vec<Rule>,
}

struct Rule {
    name: String,
    field: String,
    message: String,
    program: Program,
    /// Answers the rule reads, bound as CEL variables when present.
    variables: Vec<String>,
}

#[async_trait]
impl TaskBase for Validate {
    type Config = ValidateConfig;

    fn kind(&self) -> &'static str {
        "validate"
    }

    fn description(&self) -> &'static str {
        "Checks answers: required, type, min/max, length, pattern, one_of, and CEL rules across fields"
    }

    /// A deleted submission has nothing left to check.
    fn events(&self) -> Events {
        Events::of(&[Event::Created, Event::Updated])
    }

    fn config_schema(&self) -> Value {
        crate::schema_for::<ConfigSpec>()
    }

    fn parse_config(&self, config: &Value) -> Result<ValidateConfig, ConfigError> {
        let spec = ConfigError::parse::<ConfigSpec>(config)?;
        if spec.rules.len() > MAX_RULES {
            return Err(ConfigError::at(
                "rules",
                format_args!(
                    "{} rules; a binding may have at most {MAX_RULES}",
                    spec.rules.len()
                ),
            ));
        }
        let mut fields = Vec::with_capacity(spec.fields.len());
        for (key, field) in spec.fields {
            if let (Some(min), Some(max)) = (field.min, field.max)
                && min > max
            {
                return Err(ConfigError::at(
                    format_args!("fields.{key}"),
                    format_args!("min {min} is greater than max {max}"),
                ));
            }
            let pattern = field
                .pattern
                .as_deref()
                .map(|pattern| compile_pattern(&key, pattern))
                .transpose()?;
            fields.push((key, field, pattern));
        }
        let mut rules = Vec::with_capacity(spec.rules.len());
        for (index, rule) in spec.rules.into_iter().enumerate() {
            if rules.iter().any(|r: &Rule| r.name == rule.name) {
                return Err(ConfigError::at(
                    format_args!("rules[{index}].name"),
                    format_args!("two rules are named `{}`", rule.name),
                ));
            }
            let length = rule.expr.chars().count();
            if length > MAX_EXPR_CHARS {
                return Err(ConfigError::at(
                    format_args!("rules[{index}].expr"),
                    format_args!(
                        "rule `{}`: the expression is {length} characters; the limit is {MAX_EXPR_CHARS}",
                        rule.name
                    ),
                ));
            }
            let program = CEL_ENV.compile(&rule.expr).map_err(|err| {
                ConfigError::at(
                    format_args!("rules[{index}].expr"),
                    format_args!(
                        "rule `{}`: expression `{}` does not compile: {err}",
                        rule.name, rule.expr
                    ),
                )
            })?;
            let mut variables: Vec<String> = program
                .references()
                .variables()
                .into_iter()
                .filter(|v| *v != "answers")
                .map(str::to_owned)
                .collect();
            variables.sort();
            let field = rule
                .field
                .or_else(|| variables.first().cloned())
                .unwrap_or_default();
            let message = rule
                .message
                .unwrap_or_else(|| format!("breaks the rule `{}`", rule.expr));
            rules.push(Rule {
                name: rule.name,
                field,
                message,
                program,
                variables,
            });
        }
        Ok(ValidateConfig { fields, rules })
    }

    async fn run(
        &self,
        config: &ValidateConfig,
        _context: &RunContext,
        submission: &Submission,
    ) -> Result<Outcome, TaskError> {
        Ok(validate(config, &submission.answers))
    }
}

fn validate(config: &ValidateConfig, answers: &Map<String, Value>) -> Outcome {
    let mut flags = Vec::new();
    for (key, spec, pattern) in &config.fields {
        check_field(key, spec, pattern.as_ref(), answers.get(key), &mut flags);
    }
    let mut skipped = Vec::new();
    for rule in &config.rules {
        match evaluate(rule, answers) {
            RuleResult::Passed => {}
            RuleResult::Skipped => skipped.push(rule.name.as_str()),
            RuleResult::Broken(detail) => flags.push(Flag {
                field: rule.field.clone(),
                rule: rule.name.clone(),
                message: match detail {
                    None => rule.message.clone(),
                    Some(detail) => format!("{} ({detail})", rule.message),
                },
            }),
        }
    }
    Outcome {
        output: json!({
            "fields_checked": config.fields.len(),
            "rules_checked": config.rules.len() - skipped.len(),
            "rules_skipped": skipped,
        }),
        flags,
    }
}

fn check_field(
    key: &str,
    spec: &FieldSpec,
    pattern: Option<&Regex>,
    value: Option<&Value>,
    flags: &mut Vec<Flag>,
) {
    let mut flag = |rule: &str, message: String| {
        flags.push(Flag {
            field: key.to_owned(),
            rule: rule.to_owned(),
            message,
        })
    };
    let value = match value {
        None | Some(Value::Null) => {
            if spec.required {
                flag("required", "is required".into());
            }
            return;
        }
        Some(Value::String(s)) if s.trim().is_empty() && spec.required => {
            flag("required", "is required".into());
            return;
        }
        Some(value) => value,
    };
    if let Some(ty) = spec.ty
        && !ty.matches(value)
    {
        // Range and pattern checks mean nothing on a value of the wrong type.
        flag("type", format!("must be {}", ty.name()));
        return;
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = spec.min
            && n < min
        {
            flag("min", format!("must be at least {min}"));
        }
        if let Some(max) = spec.max
            && n > max
        {
            flag("max", format!("must be at most {max}"));
        }
    }
    let length = match value {
        Value::String(s) => Some(s.chars().count()),
        Value::Array(items) => Some(items.len()),
        _ => None,
    };
    if let Some(length) = length {
        if let Some(min) = spec.min_length
            && length < min
        {
            flag(
                "min_length",
                format!("must have at least {min} characters or items"),
            );
        }
        if let Some(max) = spec.max_length
            && length > max
        {
            flag(
                "max_length",
                format!("must have at most {max} characters or items"),
            );
        }
    }
    if let (Some(pattern), Some(s)) = (pattern, value.as_str())
        && !pattern.is_match(s)
    {
        flag("pattern", format!("must match {}", pattern.as_str()));
    }
    if let Some(allowed) = &spec.one_of
        && !allowed.contains(value)
    {
        let allowed: Vec<String> = allowed.iter().map(Value::to_string).collect();
        flag("one_of", format!("must be one of {}", allowed.join(", ")));
    }
}

enum RuleResult {
    Passed,
    Skipped,
    /// The rule is broken; the detail says why when it could not even be evaluated.
    Broken(Option<String>),
}

fn evaluate(rule: &Rule, answers: &Map<String, Value>) -> RuleResult {
    let mut context = Context::with_env(CEL_ENV.clone());
    for name in &rule.variables {
        match answers.get(name) {
            Some(Value::Null) | None => {}
            Some(value) => {
                if context.add_variable(name.as_str(), value).is_err() {
                    return RuleResult::Broken(Some(format!("`{name}` cannot be read")));
                }
            }
        }
    }
    if rule.program.references().has_variable("answers")
        && context.add_variable("answers", answers).is_err()
    {
        return RuleResult::Broken(Some("the answers cannot be read".into()));
    }
    interpret(rule.program.execute(&context))
}

fn interpret(result: ResolveResult) -> RuleResult {
    match result {
        Ok(CelValue::Bool(true)) => RuleResult::Passed,
        Ok(CelValue::Bool(false)) => RuleResult::Broken(None),
        // A missing input (or a comprehension over one) means the rule does not apply yet.
        Err(cel::ExecutionError::UndeclaredReference(_)) => RuleResult::Skipped,
        Ok(other) => RuleResult::Broken(Some(format!(
            "the rule gave {:?} instead of true or false",
            other.type_of()
        ))),
        Err(err) => RuleResult::Broken(Some(format!("could not be evaluated: {}", describe(&err)))),
    }
}

/// An evaluation error in words, naming the types of the values involved rather than
/// showing them, as the CEL errors do: a message is for the person who filled the form,
/// and a map shows its entries in no fixed order (the same answers gave different
/// messages; found by the `validate_config` fuzz target).
fn describe(err: &cel::ExecutionError) -> String {
    use cel::ExecutionError as E;
    match err {
        E::UnsupportedBinaryOperator(op, left, right) => format!(
            "operator '{op}' does not apply to {} and {}",
            left.type_of(),
            right.type_of()
        ),
        E::Overflow(op, left, right) => format!(
            "operator '{op}' overflows on {} and {}",
            left.type_of(),
            right.type_of()
        ),
        E::ValuesNotComparable(left, right) => format!(
            "{} cannot be compared to {}",
            left.type_of(),
            right.type_of()
        ),
        E::UnsupportedTargetType { target } => {
            format!("invalid argument type {}", target.type_of())
        }
        E::NotSupportedAsMethod { method, target } => {
            format!("'{method}' does not apply to {}", target.type_of())
        }
        E::UnsupportedKeyType(key) => format!("{} cannot be a map key", key.type_of()),
        E::UnsupportedIndex(index, target) => {
            format!("{} cannot index {}", index.type_of(), target.type_of())
        }
        E::DivisionByZero(_) => "division by zero".into(),
        E::RemainderByZero(_) => "remainder by zero".into(),
        err => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(config: Value, answers: Value) -> Outcome {
        let config = Validate.parse_config(&config).expect("config parses");
        let Value::Object(answers) = answers else {
            panic!("answers must be an object")
        };
        validate(&config, &answers)
    }

    fn rules_of(outcome: &Outcome) -> Vec<(&str, &str)> {
        outcome
            .flags
            .iter()
            .map(|f| (f.field.as_str(), f.rule.as_str()))
            .collect()
    }

    fn savings_rule() -> Value {
        json!({"rules": [{"name": "savings_within_income", "expr": "monthly_savings <= monthly_income",
                          "field": "monthly_savings",
                          "message": "Monthly savings cannot exceed monthly income"}]})
    }

    #[test]
    fn cross_field_rule_flags_with_its_message() {
        let outcome = run(
            savings_rule(),
            json!({"monthly_savings": 2000, "monthly_income": 1500.5}),
        );
        assert_eq!(
            outcome.flags,
            vec![Flag {
                field: "monthly_savings".into(),
                rule: "savings_within_income".into(),
                message: "Monthly savings cannot exceed monthly income".into()
            }]
        );
        let outcome = run(
            savings_rule(),
            json!({"monthly_savings": 100, "monthly_income": 1500}),
        );
        assert!(outcome.flags.is_empty(), "{:?}", outcome.flags);
    }

    #[test]
    fn rule_with_missing_input_is_skipped() {
        let outcome = run(
            savings_rule(),
            json!({"monthly_savings": 100, "monthly_income": null}),
        );
        assert!(outcome.flags.is_empty());
        assert_eq!(
            outcome.output["rules_skipped"],
            json!(["savings_within_income"])
        );
    }

    #[test]
    fn rule_over_wrong_types_is_a_flag_not_an_error() {
        let outcome = run(
            savings_rule(),
            json!({"monthly_savings": "lots", "monthly_income": 10}),
        );
        assert_eq!(
            rules_of(&outcome),
            vec![("monthly_savings", "savings_within_income")]
        );
        assert!(outcome.flags[0].message.contains("could not be evaluated"));
    }

    #[test]
    fn evaluation_errors_name_types_so_the_same_answers_give_the_same_message() {
        // The validate_config fuzz target's case: a map operand, whose entries CEL showed
        // in a different order on each run.
        let config = json!({"rules": [{"name": "r", "expr": "b * 736 > 1"}]});
        let answers = json!({"b": {"a": null, "b": true, "tags": "red", "c": 1, "d": [2]}});
        let message = |outcome: Outcome| outcome.flags[0].message.clone();
        let first = message(run(config.clone(), answers.clone()));
        assert_eq!(
            first,
            "breaks the rule `b * 736 > 1` (could not be evaluated: operator 'mul' does not \
             apply to map and int)"
        );
        for _ in 0..20 {
            assert_eq!(message(run(config.clone(), answers.clone())), first);
        }
    }

    #[test]
    fn field_checks() {
        let config = json!({"fields": {
            "age": {"required": true, "type": "number", "min": 0, "max": 150},
            "email": {"type": "string", "pattern": "^[^@]+@[^@]+$"},
            "name": {"required": true},
            "count": {"type": "integer"},
            "colour": {"one_of": ["red", "green"]},
            "code": {"min_length": 3, "max_length": 4}
        }});
        let outcome = run(
            config.clone(),
            json!({"age": 200, "email": "nope", "name": " ", "count": 1.5, "colour": "blue", "code": "ab"}),
        );
        assert_eq!(
            rules_of(&outcome),
            vec![
                ("age", "max"),
                ("code", "min_length"),
                ("colour", "one_of"),
                ("count", "type"),
                ("email", "pattern"),
                ("name", "required"),
            ]
        );
        let outcome = run(config.clone(), json!({"age": "old", "name": "Ada"}));
        assert_eq!(rules_of(&outcome), vec![("age", "type")]);
        let outcome = run(
            config,
            json!({"age": 30, "name": "Ada", "email": "a@b", "count": 3}),
        );
        assert!(outcome.flags.is_empty(), "{:?}", outcome.flags);
    }

    #[test]
    fn rules_and_patterns_over_the_limits_are_refused_naming_the_limit() {
        let err = |config: Value| Validate::new().parse_config(&config).err().unwrap().0;
        let rules: Vec<Value> = (0..101)
            .map(|i| json!({"name": format!("r{i}"), "expr": "true"}))
            .collect();
        assert_eq!(
            err(json!({ "rules": rules })),
            "rules: 101 rules; a binding may have at most 100"
        );
        let long = vec!["a"; 1001].join(" + ");
        assert!(
            err(json!({"rules": [{"name": "long", "expr": long}]})).starts_with(
                "rules[0].expr: rule `long`: the expression is 4001 characters; the limit is 2000"
            )
        );
        assert!(
            err(json!({"fields": {"x": {"pattern": "a".repeat(1001)}}}))
                .contains("the pattern is 1001 characters; the limit is 1000")
        );
        assert!(
            err(json!({"fields": {"x": {"pattern": "\\w{1000}{1000}"}}}))
                .contains("compiles to more than 262144 bytes, the limit")
        );
        assert!(
            Validate::new()
                .parse_config(&json!({"fields": {"x": {"pattern": "^[a-z]{1,64}$"}}}))
                .is_ok()
        );
    }

    #[test]
    fn rules_can_use_functions_and_the_answers_map() {
        let config = json!({"rules": [
            {"name": "tags_nonempty", "expr": "tags.all(t, size(t) > 0)", "field": "tags"},
            {"name": "has_name", "expr": "has(answers.name)"}
        ]});
        let outcome = run(config.clone(), json!({"tags": ["a", ""]}));
        assert_eq!(
            rules_of(&outcome),
            vec![("tags", "tags_nonempty"), ("", "has_name")]
        );
        let outcome = run(config, json!({"tags": ["a"], "name": "x"}));
        assert!(outcome.flags.is_empty(), "{:?}", outcome.flags);
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        let err = |config: Value| Validate.parse_config(&config).err().unwrap().0;
        let ok = json!({"name": "ok", "expr": "true"});
        assert!(
            err(json!({"rules": [ok, ok.clone(), {"name": "r", "expr": "a <="}]}))
                .starts_with("rules[1].name: two rules are named `ok`")
        );
        assert!(
            err(
                json!({"rules": [ok, {"name": "s", "expr": "true"}, {"name": "r", "expr": "a <="}]})
            )
            .starts_with("rules[2].expr: rule `r`: expression `a <=` does not compile")
        );
        assert!(
            err(json!({"rules": [ok, {"name": "s", "expr": 3}]}))
                .starts_with("rules[1].expr: invalid type: integer `3`, expected a string")
        );
        assert!(
            err(json!({"fields": {"a": {"pattern": "("}}}))
                .starts_with("fields.a.pattern: pattern does not compile")
        );
        assert!(
            err(json!({"fields": {"a": {"type": "date"}}}))
                .starts_with("fields.a.type: unknown variant `date`")
        );
        let unknown = err(json!({"fields": {"a": {"requird": true}}}));
        assert!(
            unknown.starts_with("fields.a.requird: unknown field `requird`"),
            "{unknown}"
        );
        assert!(
            err(json!({"fields": {"a": {"min": 5, "max": 1}}}))
                .starts_with("fields.a: min 5 is greater")
        );
        assert_eq!(err(json!([])), "config must be a JSON object");
    }
}
