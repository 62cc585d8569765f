//! Validation of any answers against a `validate` config that parses: fields with every
//! check and CEL rules built from the operators, macros and functions rules use. See
//! `postsub_fuzz::check_outcome`; besides, the order the answers come in changes nothing.
#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use postsub_fuzz::{check_outcome, config, json_object, run_validate, uniform_answers};
use postsub_tasks::{TaskBase, validate::Validate};
use serde_json::{Map, Value, json};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(config) = config(&mut u, false) else {
        return;
    };
    let fields_only = json!({"fields": config["fields"]});
    if let Err(err) = Validate::new().parse_config(&fields_only) {
        panic!("fields built to parse are refused ({err}): {fields_only}");
    }
    // A rule built here may still be refused (over 2000 characters, a literal out of
    // range); then there is nothing to run.
    let Ok(parsed) = Validate::new().parse_config(&config) else {
        return;
    };
    let Ok(answers) = json_object(&mut u, 2) else {
        return;
    };
    check_outcome(&config, &parsed, &answers);
    let reversed: Map<String, Value> = answers.clone().into_iter().rev().collect();
    assert_eq!(
        run_validate(&parsed, &reversed),
        run_validate(&parsed, &answers),
        "the order of the answers changed the outcome"
    );
    if let Ok(uniform) = uniform_answers(&mut u, &config) {
        check_outcome(&config, &parsed, &uniform);
    }
});
