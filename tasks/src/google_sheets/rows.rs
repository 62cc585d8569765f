//! Turning submissions into sheet rows: the header (column order that only ever grows) and
//! typed cell values.

use serde_json::{Map, Value};

/// Columns every row starts with, before the answers.
pub const FIXED_COLUMNS: [&str; 2] = ["submission_id", "submitted_at"];

/// The column a binding with `on_delete: "mark"` writes a deletion's time into; added at the
/// end on the first such deletion. An answer of this key does not show in the sheet.
pub const DELETED_AT: &str = "deleted_at";

/// The sheet's columns, in order: [`FIXED_COLUMNS`], then answer keys. Columns are only
/// ever added at the end, so rows written earlier keep their meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    keys: Vec<String>,
}

impl Header {
    /// A header with the fixed columns and `preferred` answer keys first.
    pub fn new(preferred: &[String]) -> Self {
        let mut header = Self {
            keys: FIXED_COLUMNS.iter().map(|k| (*k).to_owned()).collect(),
        };
        header.extend(preferred.iter().cloned());
        header
    }

    /// The header read back from a sheet's first row; `labels` maps keys to the labels that
    /// were written instead of them. An empty row gives `None`.
    pub fn from_row(row: &[Value], labels: &Map<String, Value>) -> Option<Self> {
        if row.is_empty() {
            return None;
        }
        let keys = row
            .iter()
            .map(|cell| {
                let text = match cell {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                labels
                    .iter()
                    .find(|(_, label)| label.as_str() == Some(text.as_str()))
                    .map_or(text, |(key, _)| key.clone())
            })
            .collect();
        Some(Self { keys })
    }

    /// Adds the keys not yet present, in the order given; true when any was added.
    pub fn extend(&mut self, keys: impl IntoIterator<Item = String>) -> bool {
        let before = self.keys.len();
        for key in keys {
            if !self.keys.contains(&key) {
                self.keys.push(key);
            }
        }
        self.keys.len() != before
    }

    /// Adds the answer keys of `answers` that are new; new keys go in sorted order, so
    /// concurrent writers agree on the order.
    pub fn extend_with_answers<'a>(
        &mut self,
        answers: impl IntoIterator<Item = &'a Map<String, Value>>,
    ) -> bool {
        let mut new: Vec<String> = answers
            .into_iter()
            .flat_map(|a| a.keys())
            .filter(|k| !self.keys.contains(k))
            .cloned()
            .collect();
        new.sort();
        new.dedup();
        self.extend(new)
    }

    /// The (0-based) column of `key`, if it is one.
    pub fn position(&self, key: &str) -> Option<usize> {
        self.keys.iter().position(|k| k == key)
    }

    /// Whether any of `answers` has a key that is not a column yet.
    pub fn lacks_any<'a>(&self, answers: impl IntoIterator<Item = &'a Map<String, Value>>) -> bool {
        answers
            .into_iter()
            .flat_map(|a| a.keys())
            .any(|k| !self.keys.contains(k))
    }

    /// The header row as written to the sheet: labels where configured.
    pub fn row(&self, labels: &Map<String, Value>) -> Vec<Value> {
        self.keys
            .iter()
            .map(|key| {
                labels
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| Value::String(key.clone()))
            })
            .collect()
    }

    /// One submission's row in header order.
    pub fn cells(
        &self,
        submission_id: &str,
        submitted_at: &str,
        answers: &Map<String, Value>,
    ) -> Vec<Value> {
        self.keys
            .iter()
            .map(|key| match key.as_str() {
                "submission_id" => Value::String(submission_id.to_owned()),
                "submitted_at" => Value::String(submitted_at.to_owned()),
                // A row written is not deleted (a rewrite clears an earlier mark).
                DELETED_AT => Value::String(String::new()),
                _ => cell(answers.get(key)),
            })
            .collect()
    }
}

/// The A1 letters of a (0-based) column: A, …, Z, AA, AB, ….
pub fn column_letters(index: usize) -> String {
    let mut letters = Vec::new();
    let mut n = index + 1;
    while n > 0 {
        let rest = (n - 1) % 26;
        letters.push(b'A' + rest as u8);
        n = (n - 1) / 26;
    }
    letters.reverse();
    String::from_utf8(letters).expect("ASCII letters")
}

/// A cell keeps the answer's type: numbers stay numbers and booleans booleans; lists and
/// objects become JSON text; a missing or null answer an empty cell.
pub fn cell(value: Option<&Value>) -> Value {
    match value {
        None | Some(Value::Null) => Value::String(String::new()),
        Some(v @ (Value::Bool(_) | Value::Number(_) | Value::String(_))) => v.clone(),
        Some(other) => Value::String(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        let Value::Object(map) = value else {
            panic!("object")
        };
        map
    }

    #[test]
    fn columns_only_grow_at_the_end() {
        let mut header = Header::new(&["name".into()]);
        assert!(header.extend_with_answers([&map(json!({"name": "a", "zeta": 1, "age": 3}))]));
        assert_eq!(
            header.keys,
            ["submission_id", "submitted_at", "name", "age", "zeta"]
        );
        assert!(!header.extend_with_answers([&map(json!({"age": 4}))]));
        assert!(header.extend_with_answers([&map(json!({"colour": "red"}))]));
        assert_eq!(header.keys.last().unwrap(), "colour");
    }

    #[test]
    fn cells_keep_types_and_order() {
        let mut header = Header::new(&[]);
        header.extend_with_answers([&map(
            json!({"a": 1.5, "b": true, "c": [1, 2], "d": null, "e": "x"}),
        )]);
        let cells = header.cells(
            "id",
            "t",
            &map(json!({"a": 1.5, "b": true, "c": [1, 2], "e": "x"})),
        );
        assert_eq!(
            cells,
            vec![
                json!("id"),
                json!("t"),
                json!(1.5),
                json!(true),
                json!("[1,2]"),
                json!(""),
                json!("x")
            ]
        );
    }

    #[test]
    fn column_letters_count_like_a1() {
        let letters: Vec<String> = [0, 1, 25, 26, 27, 51, 52, 701, 702]
            .into_iter()
            .map(column_letters)
            .collect();
        assert_eq!(
            letters,
            ["A", "B", "Z", "AA", "AB", "AZ", "BA", "ZZ", "AAA"]
        );
    }

    #[test]
    fn header_reads_back_through_labels() {
        let labels = map(json!({"email": "E-mail"}));
        let mut header = Header::new(&["email".into()]);
        header.extend(["age".to_owned()]);
        let row = header.row(&labels);
        assert_eq!(
            row,
            vec![
                json!("submission_id"),
                json!("submitted_at"),
                json!("E-mail"),
                json!("age")
            ]
        );
        assert_eq!(Header::from_row(&row, &labels), Some(header));
        assert_eq!(Header::from_row(&[], &labels), None);
    }
}
