//! The job message: what the proxy publishes for one async run and the worker consumes.

use chrono::{DateTime, Utc};
use postsub_tasks::Submission;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One async run to do. JSON on the wire, `run_id` also as the AMQP message id.
///
/// The binding's config is not in the message: the worker reads the binding from its own
/// cache, so secrets stay out of the broker and a fixed config applies to retries. The same
/// message goes to the delay queues between attempts and to the dead-letter queue at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Deterministic id of the run (see [`crate::run::run_id`]).
    pub run_id: Uuid,
    /// The binding to run.
    pub binding_id: Uuid,
    /// The binding's task kind, which names the queue.
    pub kind: String,
    /// When `Process` queued it.
    pub queued_at: DateTime<Utc>,
    /// The submission to run it against.
    pub submission: Submission,
    /// Attempts the run made in earlier rounds. `postsub runs retry` and `postsub dlq
    /// replay` start a new round, which may make the binding's `max_attempts` attempts
    /// again, while the run's attempt count goes on (so its history shows every round).
    #[serde(default)]
    pub attempts_before: u32,
}

impl Job {
    /// Parses a message body.
    pub fn decode(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The message body.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a job always serializes")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use postsub_tasks::Event;
    use proptest::{collection, prelude::*};
    use serde_json::{Map, Value, json};

    use super::*;

    /// A float as a person types it: at most 14 significant digits, at most 8 decimals.
    /// serde_json reads every such number back exactly, but not every float: see
    /// `floats_of_full_precision_survive_the_message`.
    fn typed_float() -> impl Strategy<Value = f64> {
        (-99_999_999_999_999i64..=99_999_999_999_999, -8i32..=0)
            .prop_map(|(digits, exponent)| format!("{digits}e{exponent}").parse().unwrap())
    }

    fn answer() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            typed_float().prop_map(Value::from),
            ".{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(2, 12, 4, |inner| {
            prop_oneof![
                collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                collection::vec((".{0,4}", inner), 0..4)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    /// Any instant chrono holds, to the nanosecond, leap seconds included.
    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        (
            -8_334_601_228_800i64..=8_210_266_876_799,
            0u32..2_000_000_000,
        )
            .prop_map(|(seconds, nanos)| {
                DateTime::from_timestamp(seconds, nanos).unwrap_or_default()
            })
    }

    fn job() -> impl Strategy<Value = Job> {
        (
            (any::<u128>(), any::<u128>(), any::<u128>(), any::<u128>()),
            ".{0,12}",
            (instant(), instant()),
            collection::vec((".{0,6}", answer()), 0..6),
            collection::btree_map(".{0,6}", ".{0,6}", 0..3),
            any::<u32>(),
            (prop::sample::select(Event::ALL.to_vec()), any::<u64>()),
        )
            .prop_map(
                |(
                    ids,
                    kind,
                    (queued_at, submitted_at),
                    answers,
                    metadata,
                    attempts_before,
                    (event, revision),
                )| Job {
                    run_id: Uuid::from_u128(ids.0),
                    binding_id: Uuid::from_u128(ids.1),
                    kind,
                    queued_at,
                    submission: Submission {
                        form_id: Uuid::from_u128(ids.2),
                        submission_id: Uuid::from_u128(ids.3),
                        answers: answers.into_iter().collect::<Map<_, _>>(),
                        submitted_at,
                        metadata: metadata.into_iter().collect::<BTreeMap<_, _>>(),
                        event,
                        revision,
                    },
                    attempts_before,
                },
            )
    }

    /// Decodes `body`, which must give `job`, and encodes that back to `body`.
    fn decodes_to(body: &[u8], job: &Job) -> Result<(), TestCaseError> {
        let decoded = Job::decode(body).map_err(|err| TestCaseError::fail(err.to_string()))?;
        prop_assert_eq!(&decoded, job, "{}", String::from_utf8_lossy(body));
        prop_assert_eq!(decoded.encode(), body);
        Ok(())
    }

    fn has_float(value: &Value) -> bool {
        match value {
            Value::Number(n) => n.is_f64(),
            Value::Array(items) => items.iter().any(has_float),
            Value::Object(map) => map.values().any(has_float),
            _ => false,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn a_job_decodes_from_its_encoding_to_itself(job in job()) {
            decodes_to(&job.encode(), &job)?;
        }

        #[test]
        fn a_message_without_attempts_before_is_a_first_round(job in job()) {
            let mut message: Value = serde_json::from_slice(&job.encode()).unwrap();
            message.as_object_mut().unwrap().remove("attempts_before");
            let decoded = Job::decode(&serde_json::to_vec(&message).unwrap()).unwrap();
            prop_assert_eq!(decoded, Job { attempts_before: 0, ..job });
        }

        #[test]
        fn damaged_messages_are_refused_or_decode_to_a_job_that_round_trips(
            job in job(),
            cut in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            replace in any::<bool>(),
        ) {
            let mut body = job.encode();
            let at = cut.index(body.len());
            if replace {
                body[at] = byte;
            } else {
                body.truncate(at);
            }
            if let Ok(decoded) = Job::decode(&body) {
                let encoded = decoded.encode();
                if has_float(&Value::Object(decoded.submission.answers.clone())) {
                    // A damaged digit may make a float of full precision, which serde_json
                    // may read back one ULP off (`floats_of_full_precision_survive_the_message`).
                    Job::decode(&encoded).map_err(|err| TestCaseError::fail(err.to_string()))?;
                } else {
                    decodes_to(&encoded, &decoded)?;
                }
            }
        }
    }

    /// Found with the round-trip property above: serde_json without its `float_roundtrip`
    /// feature reads some floats it wrote one ULP off (1689.2548147911855 comes back as
    /// 1689.2548147911857, 3639483480160450.0 as 3639483480160449.5), so an async task
    /// would see a full-precision float answer not quite as submitted.
    #[test]
    fn floats_of_full_precision_survive_the_message() {
        let mut job = Job::decode(
            br#"{"run_id":"00000000-0000-0000-0000-000000000000",
                "binding_id":"00000000-0000-0000-0000-000000000000","kind":"webhook",
                "queued_at":"2026-01-01T00:00:00Z","submission":{
                "form_id":"00000000-0000-0000-0000-000000000000",
                "submission_id":"00000000-0000-0000-0000-000000000000",
                "answers":{},"submitted_at":"2026-01-01T00:00:00Z"}}"#,
        )
        .unwrap();
        job.submission
            .answers
            .insert("ratio".into(), json!(1689.2548147911855));
        assert_eq!(Job::decode(&job.encode()).unwrap(), job);
    }
}
