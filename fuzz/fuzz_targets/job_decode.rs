//! The job message decoder (`Job::decode`) on any bytes, and `Job::encode` on any job.
//!
//! - Bytes that decode give a job whose encoding decodes to the same job, and encoding
//!   that job again gives the same bytes.
//! - Any job, its answers any JSON, decodes from its own encoding to itself.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Unstructured};
use chrono::DateTime;
use libfuzzer_sys::fuzz_target;
use postsub_fuzz::{json_object, submission};
use postsub_proxy::job::Job;
use uuid::Uuid;

fn round_trip(job: &Job) -> Vec<u8> {
    let body = job.encode();
    let decoded = Job::decode(&body)
        .unwrap_or_else(|err| panic!("an encoded job does not decode ({err}): {job:?}"));
    assert_eq!(&decoded, job, "{}", String::from_utf8_lossy(&body));
    assert_eq!(decoded.encode(), body);
    body
}

fn built(u: &mut Unstructured) -> arbitrary::Result<Job> {
    let mut submission = submission(json_object(u, 3)?);
    submission.form_id = Uuid::from_u128(u.arbitrary()?);
    submission.submission_id = Uuid::from_u128(u.arbitrary()?);
    let time = |u: &mut Unstructured| -> arbitrary::Result<_> {
        // Any instant chrono can hold, to the nanosecond (leap seconds included).
        let seconds = u.int_in_range(-8_334_601_228_800..=8_210_266_876_799)?;
        Ok(
            DateTime::from_timestamp(seconds, u.int_in_range(0..=1_999_999_999)?)
                .unwrap_or_default(),
        )
    };
    submission.submitted_at = time(u)?;
    submission.metadata = BTreeMap::arbitrary(u)?;
    Ok(Job {
        run_id: Uuid::from_u128(u.arbitrary()?),
        binding_id: Uuid::from_u128(u.arbitrary()?),
        kind: u.arbitrary()?,
        queued_at: time(u)?,
        submission,
        attempts_before: u.arbitrary()?,
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok(job) = Job::decode(rest) {
            round_trip(&job);
        }
    } else if let Ok(job) = built(&mut Unstructured::new(rest)) {
        round_trip(&job);
    }
});
