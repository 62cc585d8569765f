//! The `validate` config parser and rule compiler on any config: JSON text as a user
//! could send it, or a config built of parts that may each be wrong (unknown types and
//! keys, patterns and CEL expressions of any text). See `postsub_fuzz::check_config`.
#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use postsub_fuzz::{check_config, config, json_object, uniform_answers};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut u = Unstructured::new(rest);
    let config = if mode % 2 == 0 {
        let Ok(config) = serde_json::from_slice::<Value>(rest) else {
            return;
        };
        config
    } else {
        let Ok(config) = config(&mut u, true) else {
            return;
        };
        config
    };
    let mut answers = vec![serde_json::Map::new()];
    answers.extend(uniform_answers(&mut u, &config));
    answers.extend(json_object(&mut u, 2));
    check_config(&config, &answers);
});
