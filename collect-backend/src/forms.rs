//! Forms, questions, answers and submissions: request bodies, their parsing at the edge
//! ([`NewForm::try_from`], [`Answers::try_from`]) and the stored records the API answers with.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::types::Json;
use uuid::Uuid;

use crate::ApiError;

/// Type of answer a question expects. The backend only stores it; postsub's `validate` task
/// checks answers against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuestionType {
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

/// One question of a form.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    /// Name the answer is stored under in a submission's `answers`; unique within the form.
    pub key: String,
    /// Text shown to the person filling in the form; defaults to the key.
    #[serde(default)]
    pub label: String,
    /// Type of answer expected.
    #[serde(rename = "type")]
    pub kind: QuestionType,
    /// Whether an answer is required (default `false`).
    #[serde(default)]
    pub required: bool,
}

/// Body of `POST /forms`, as sent; [`NewForm::try_from`] checks it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateForm {
    /// Title of the form.
    pub title: String,
    /// Questions, in display order.
    pub questions: Vec<Question>,
}

/// A form that passed validation: title not blank, keys not blank and unique, labels set.
#[derive(Debug)]
pub struct NewForm {
    /// Title, trimmed.
    pub title: String,
    /// Questions, each with a label.
    pub questions: Vec<Question>,
}

impl TryFrom<CreateForm> for NewForm {
    type Error = ApiError;

    fn try_from(body: CreateForm) -> Result<Self, ApiError> {
        let title = body.title.trim();
        if title.is_empty() {
            return Err(ApiError::Invalid(
                "`title` is empty; give the form a title".into(),
            ));
        }
        let mut questions = body.questions;
        let mut keys = HashSet::new();
        for (i, question) in questions.iter_mut().enumerate() {
            if question.key.trim().is_empty() {
                return Err(ApiError::Invalid(format!(
                    "`questions[{i}].key` is empty; every question needs the key its answer is stored under"
                )));
            }
            if !keys.insert(question.key.clone()) {
                return Err(ApiError::Invalid(format!(
                    "`questions[{i}].key` is `{}`, which an earlier question already uses; keys must be unique",
                    question.key
                )));
            }
            if question.label.trim().is_empty() {
                question.label = question.key.clone();
            }
        }
        Ok(Self {
            title: title.to_owned(),
            questions,
        })
    }
}

/// A stored form, as the API returns it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Form {
    /// Id of the form.
    pub id: Uuid,
    /// Title of the form.
    pub title: String,
    /// Questions, in display order.
    pub questions: Json<Vec<Question>>,
    /// When the form was created.
    pub created_at: DateTime<Utc>,
}

/// Body of `POST /forms/{id}/submit`, as sent; [`Answers::try_from`] checks it.
#[derive(Debug, Deserialize)]
pub struct SubmitBody {
    /// Should be an object of answers keyed by question key; anything else is refused.
    pub answers: Option<Value>,
}

/// Answers of one submission: a JSON object keyed by question key. Only the shape is
/// checked here; whether the answers fit the questions is postsub's `validate` task.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Answers(pub Map<String, Value>);

impl TryFrom<SubmitBody> for Answers {
    type Error = ApiError;

    fn try_from(body: SubmitBody) -> Result<Self, ApiError> {
        match body.answers {
            Some(Value::Object(answers)) => Ok(Self(answers)),
            None => Err(ApiError::Invalid(
                r#"the body has no `answers`; send {"answers": {"<question key>": <answer>, ...}}"#
                    .into(),
            )),
            Some(other) => Err(ApiError::Invalid(format!(
                "`answers` is {}, not an object; send the answers as an object keyed by question key",
                json_kind(&other)
            ))),
        }
    }
}

/// "a string", "an array", … for error messages.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A stored submission, as the API returns it. The submit route's answer carries exactly
/// these fields, which is what `PostSubmissionLayer` reads.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Submission {
    /// Id of the submission.
    pub id: Uuid,
    /// Form the submission answers.
    pub form_id: Uuid,
    /// The answers, as sent.
    pub answers: Json<Answers>,
    /// When the submission was stored (serialized as RFC 3339).
    pub created_at: DateTime<Utc>,
    /// 1 when stored, one more per edit; a deleted submission is answered one more again.
    pub revision: i64,
}

/// Where a page of submissions ended: the last one's `(created_at, id)`, written
/// `<microseconds since 1970>_<id>` (the `next` of a page, the `after` of the next request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// When the last submission of the page was stored.
    pub created_at: DateTime<Utc>,
    /// Its id.
    pub id: Uuid,
}

impl Cursor {
    /// The cursor after `submission`.
    pub fn after(submission: &Submission) -> Self {
        Self {
            created_at: submission.created_at,
            id: submission.id,
        }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_{}", self.created_at.timestamp_micros(), self.id)
    }
}

impl std::str::FromStr for Cursor {
    type Err = ApiError;

    fn from_str(text: &str) -> Result<Self, ApiError> {
        let bad = || {
            ApiError::BadRequest(format!(
                "after: `{text}` is not a cursor; pass the `next` of the previous page"
            ))
        };
        let (micros, id) = text.split_once('_').ok_or_else(bad)?;
        Ok(Self {
            created_at: micros
                .parse()
                .ok()
                .and_then(DateTime::from_timestamp_micros)
                .ok_or_else(bad)?,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

/// The query of `GET /forms/{id}/submissions`, as sent.
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    since: Option<String>,
    until: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// Which submissions of a form to list, oldest first: stored at or after `since`, before
/// `until`, after the cursor `after`; at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionQuery {
    /// Stored at or after.
    pub since: Option<DateTime<Utc>>,
    /// Stored before.
    pub until: Option<DateTime<Utc>>,
    /// After this one (the previous page's end).
    pub after: Option<Cursor>,
    /// At most this many, 1 to [`SubmissionQuery::MAX_LIMIT`].
    pub limit: u32,
}

impl SubmissionQuery {
    /// A page's size when the request does not say.
    pub const DEFAULT_LIMIT: u32 = 100;
    /// The largest page.
    pub const MAX_LIMIT: u32 = 1000;
}

impl TryFrom<ListParams> for SubmissionQuery {
    type Error = ApiError;

    fn try_from(params: ListParams) -> Result<Self, ApiError> {
        let time = |name: &str, text: Option<String>| {
            text.filter(|text| !text.is_empty())
                .map(|text| {
                    DateTime::parse_from_rfc3339(&text)
                        .map(|at| at.with_timezone(&Utc))
                        .map_err(|_| {
                            ApiError::BadRequest(format!(
                                "{name}: `{text}` is not an RFC 3339 time such as \
                                 2026-12-03T10:00:00Z"
                            ))
                        })
                })
                .transpose()
        };
        let since = time("since", params.since)?;
        let until = time("until", params.until)?;
        if let (Some(since), Some(until)) = (since, until)
            && since >= until
        {
            return Err(ApiError::BadRequest(format!(
                "since ({since}) must be before until ({until})"
            )));
        }
        let limit = match params.limit.filter(|text| !text.is_empty()) {
            None => Self::DEFAULT_LIMIT,
            Some(text) => text
                .parse()
                .ok()
                .filter(|limit| (1..=Self::MAX_LIMIT).contains(limit))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "limit: `{text}` is not a number from 1 to {}",
                        Self::MAX_LIMIT
                    ))
                })?,
        };
        Ok(Self {
            since,
            until,
            after: params
                .after
                .filter(|text| !text.is_empty())
                .map(|text| text.parse())
                .transpose()?,
            limit,
        })
    }
}

/// One page of a form's submissions; `next` is the cursor of the next page, `null` on the
/// last.
#[derive(Debug, Serialize)]
pub struct SubmissionPage {
    /// Oldest first.
    pub submissions: Vec<Submission>,
    /// Pass as `after` for the next page.
    pub next: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn create_form(body: Value) -> Result<NewForm, ApiError> {
        NewForm::try_from(serde_json::from_value::<CreateForm>(body).unwrap())
    }

    #[test]
    fn label_defaults_to_key_and_required_to_false() {
        let form = create_form(
            json!({"title": " Survey ", "questions": [{"key": "age", "type": "integer"}]}),
        )
        .unwrap();
        assert_eq!(form.title, "Survey");
        assert_eq!(form.questions[0].label, "age");
        assert!(!form.questions[0].required);
    }

    #[test]
    fn blank_title_and_blank_or_repeated_keys_are_refused() {
        let q = |key: &str| json!({"key": key, "type": "string"});
        assert!(create_form(json!({"title": " ", "questions": []})).is_err());
        assert!(create_form(json!({"title": "t", "questions": [q("")]})).is_err());
        assert!(create_form(json!({"title": "t", "questions": [q("a"), q("a")]})).is_err());
    }

    #[test]
    fn answers_must_be_an_object() {
        let parse = |answers| Answers::try_from(SubmitBody { answers });
        assert!(parse(Some(json!({"a": 1}))).is_ok());
        assert!(parse(None).is_err());
        assert!(parse(Some(json!([1]))).is_err());
    }
}
