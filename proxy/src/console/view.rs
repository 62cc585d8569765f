//! Formatting shared by the console's pages.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// A query string (without `?`) of the pairs whose value is not empty.
pub(super) fn query_string<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        if !value.is_empty() {
            query.append_pair(key, value);
        }
    }
    query.finish()
}

/// A time as the pages show it: UTC to the second.
pub(super) fn time(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// An optional time, or a dash.
pub(super) fn maybe_time(at: Option<&DateTime<Utc>>) -> String {
    at.map_or_else(|| "–".to_owned(), time)
}

/// How long ago, roughly: `12s`, `5m`, `3h`, `2d`.
pub(super) fn age(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// How long something took: `41 µs`, `6.6 ms`, `2.35 s`.
pub(super) fn took(duration: std::time::Duration) -> String {
    let micros = duration.as_micros();
    match micros {
        m if m < 1000 => format!("{m} µs"),
        m if m < 1_000_000 => format!("{:.1} ms", m as f64 / 1000.0),
        m => format!("{:.2} s", m as f64 / 1_000_000.0),
    }
}

/// Pretty JSON.
pub(super) fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// Answers as the console shows them: the values of keys that name a secret (`password`,
/// `token`, `secret`, …) masked, at any depth.
pub(super) fn masked_answers(value: &Value) -> Value {
    const SECRET_WORDS: [&str; 6] = ["password", "passwd", "secret", "token", "api_key", "apikey"];
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| {
                    let lower = key.to_ascii_lowercase();
                    let masked = if SECRET_WORDS.iter().any(|word| lower.contains(word)) {
                        Value::String("********".to_owned())
                    } else {
                        masked_answers(value)
                    };
                    (key.clone(), masked)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(masked_answers).collect()),
        other => other.clone(),
    }
}

/// One CSV line of `fields` (RFC 4180 quoting), with its line break.
pub(super) fn csv_line<'a>(fields: impl IntoIterator<Item = &'a str>) -> String {
    let mut line = String::new();
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        // A leading =, +, - or @ would be a formula to a spreadsheet that opens the file.
        let formula = field.starts_with(['=', '+', '-', '@']);
        if formula || field.contains([',', '"', '\n', '\r']) {
            line.push('"');
            if formula {
                line.push('\'');
            }
            line.push_str(&field.replace('"', "\"\""));
            line.push('"');
        } else {
            line.push_str(field);
        }
    }
    line.push_str("\r\n");
    line
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secret_looking_answers_are_masked_at_any_depth() {
        let answers = json!({"name": "Ann", "Password": "x", "nested": [{"api_key": "k", "n": 1}]});
        assert_eq!(
            masked_answers(&answers),
            json!({"name": "Ann", "Password": "********", "nested": [{"api_key": "********", "n": 1}]})
        );
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(
            csv_line(["a", "b,c", "say \"hi\"", "=1+1"]),
            "a,\"b,c\",\"say \"\"hi\"\"\",\"'=1+1\"\r\n"
        );
    }
}
