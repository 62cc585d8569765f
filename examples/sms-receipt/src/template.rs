//! The message body: text with `{{answer_key}}` and `{{submission_id}}` placeholders,
//! parsed once when the binding is made.

use postsub_tasks::{ConfigError, Submission, TaskError};
use serde_json::Value;

/// A parsed body template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    SubmissionId,
    Answer(String),
}

impl Template {
    /// Parses `text`; an unclosed `{{` or an empty placeholder is refused, naming where.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let at = text.len() - rest.len() + open;
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| {
                ConfigError::at(
                    "body",
                    format_args!("the `{{{{` at byte {at} is not closed"),
                )
            })?;
            let name = after[..close].trim();
            if name.is_empty() {
                return Err(ConfigError::at(
                    "body",
                    format_args!("the placeholder at byte {at} names no answer"),
                ));
            }
            parts.push(match name {
                "submission_id" => Part::SubmissionId,
                key => Part::Answer(key.to_owned()),
            });
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self(parts))
    }

    /// The body for `submission`. A placeholder for an answer the submission lacks is a
    /// fatal error: no retry brings the answer.
    pub fn render(&self, submission: &Submission) -> Result<String, TaskError> {
        let mut body = String::new();
        for part in &self.0 {
            match part {
                Part::Text(text) => body += text,
                Part::SubmissionId => body += &submission.submission_id.to_string(),
                Part::Answer(key) => match submission.answers.get(key) {
                    Some(Value::String(text)) => body += text,
                    Some(Value::Null) | None => {
                        return Err(TaskError::fatal(format!(
                            "body: the submission has no answer `{key}` for {{{{{key}}}}}"
                        )));
                    }
                    Some(other) => body += &other.to_string(),
                },
            }
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn submission(answers: Value) -> Submission {
        serde_json::from_value(json!({
            "form_id": uuid::Uuid::nil(), "submission_id": uuid::Uuid::nil(),
            "answers": answers, "submitted_at": "2026-12-03T10:00:00Z"}))
        .unwrap()
    }

    #[test]
    fn placeholders_are_answers_and_the_submission_id() {
        let template = Template::parse("Hi {{ name }}, receipt {{submission_id}} ({{n}})").unwrap();
        let body = template
            .render(&submission(json!({"name": "Ada", "n": 3})))
            .unwrap();
        assert_eq!(
            body,
            "Hi Ada, receipt 00000000-0000-0000-0000-000000000000 (3)"
        );
        let missing = template.render(&submission(json!({"n": 3}))).unwrap_err();
        assert!(!missing.is_retryable());
        assert_eq!(
            missing.to_string(),
            "body: the submission has no answer `name` for {{name}}"
        );
    }

    #[test]
    fn bad_templates_say_where() {
        assert_eq!(
            Template::parse("Hi {{name").unwrap_err().0,
            "body: the `{{` at byte 3 is not closed"
        );
        assert_eq!(
            Template::parse("a {{ }} b").unwrap_err().0,
            "body: the placeholder at byte 2 names no answer"
        );
        assert_eq!(Template::parse("no placeholders").unwrap().0.len(), 1);
    }
}
