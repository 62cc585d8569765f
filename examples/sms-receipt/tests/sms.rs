//! The `sms_receipt` kind through the task harness and the Twilio fake: no postsub server.

use std::{sync::Arc, time::Duration};

use postsub_sms_receipt::SmsReceipt;
use postsub_tasks::{TargetPolicy, TaskBase, TaskError};
use postsub_testkit::{TaskHarness, TwilioFake};
use serde_json::{Value, json};

fn config(fake: &TwilioFake) -> Value {
    json!({"phone_answer": "phone", "from": "+15550001111",
        "body": "Thanks {{name}}! Receipt {{submission_id}}",
        "account_sid": fake.account_sid, "auth_token": fake.auth_token,
        "base_url": fake.base_url})
}

fn harness(fake: &TwilioFake) -> TaskHarness<SmsReceipt> {
    TaskHarness::new(SmsReceipt::new(&TargetPolicy::dev()), config(fake)).expect("config parses")
}

#[tokio::test]
async fn a_receipt_is_sent_once_per_run_whatever_the_attempts() {
    let fake = TwilioFake::start().await;
    let harness = harness(&fake);
    let submission = harness.submission(json!({"phone": "+15550100200", "name": "Ada"}));

    let outcome = harness.run(&submission).await.unwrap();
    let messages = fake.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].to, "+15550100200");
    assert_eq!(
        messages[0].body,
        format!("Thanks Ada! Receipt {}", submission.submission_id)
    );
    assert_eq!(outcome.output["message_sid"], messages[0].sid.as_str());

    // A redelivery of the same run sends nothing.
    let again = harness.attempt(&submission, 2).await.unwrap();
    assert_eq!(again.output["delivery"], "sent by an earlier attempt");
    assert_eq!(fake.messages().len(), 1);

    // Another submission is another run: another message.
    let other = harness.submission(json!({"phone": "+15550100201", "name": "Bo"}));
    harness.run(&other).await.unwrap();
    assert_eq!(fake.messages().len(), 2);
}

#[tokio::test]
async fn an_attempt_that_died_after_sending_is_not_sent_again() {
    let fake = TwilioFake::start().await;
    let harness = Arc::new(harness(&fake));
    let submission = harness.submission(json!({"phone": "+15550100200", "name": "Ada"}));
    // The first attempt's message is accepted, then the attempt dies before the answer.
    fake.set_delay(Duration::from_secs(30));
    let first = tokio::spawn({
        let (harness, submission) = (harness.clone(), submission.clone());
        async move { harness.run(&submission).await }
    });
    while fake.messages().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.abort();
    fake.set_delay(Duration::ZERO);

    let outcome = harness.attempt(&submission, 2).await.unwrap();
    assert_eq!(
        outcome.output["delivery"],
        "found: sent by an earlier attempt that was not recorded"
    );
    assert_eq!(fake.messages().len(), 1);
}

#[tokio::test]
async fn rate_limits_and_server_errors_retry_and_a_bad_number_does_not() {
    let fake = TwilioFake::start().await;
    let harness = harness(&fake);
    let submission = harness.submission(json!({"phone": "+15550100200", "name": "Ada"}));
    fake.script(&[429, 503]);
    for attempt in 1..=2 {
        let err = harness.attempt(&submission, attempt).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
    }
    harness.attempt(&submission, 3).await.unwrap();
    assert_eq!(fake.messages().len(), 1);

    let bad = harness.submission(json!({"phone": "555-0100", "name": "Ada"}));
    let err = harness.run(&bad).await.unwrap_err();
    assert!(!err.is_retryable());
    assert!(
        err.to_string().ends_with(
            "answered 400 Bad Request: The 'To' number 555-0100 is not a valid phone number."
        ),
        "{err}"
    );
    let lacking = harness.submission(json!({"phone": "+15550100200"}));
    assert_eq!(
        harness.run(&lacking).await.unwrap_err(),
        TaskError::fatal("body: the submission has no answer `name` for {{name}}")
    );
    let no_phone = harness.submission(json!({"name": "Ada"}));
    assert!(
        harness
            .run(&no_phone)
            .await
            .unwrap_err()
            .to_string()
            .contains("`phone`")
    );
    assert_eq!(fake.messages().len(), 1);
}

#[tokio::test]
async fn wrong_credentials_are_fatal_and_the_token_never_shows() {
    let fake = TwilioFake::start().await;
    let mut config = config(&fake);
    config["auth_token"] = json!("not-the-token");
    let harness = TaskHarness::new(SmsReceipt::new(&TargetPolicy::dev()), config.clone()).unwrap();
    let submission = harness.submission(json!({"phone": "+15550100200", "name": "Ada"}));
    let err = harness.run(&submission).await.unwrap_err();
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("401 Unauthorized"), "{err}");
    assert!(!err.to_string().contains("not-the-token"));
    let shown = harness.task().redact_config(&config);
    assert_eq!(shown["auth_token"], "********");
}

#[test]
fn bad_configs_name_the_path_and_the_schema_describes_the_config() {
    let task = SmsReceipt::new(&TargetPolicy::public_only());
    let base = json!({"phone_answer": "phone", "from": "+1555", "account_sid": "AC1",
        "auth_token": "t"});
    let err = |change: Value| {
        let mut config = base.clone();
        for (key, value) in change.as_object().unwrap() {
            config[key] = value.clone();
        }
        task.parse_config(&config).expect_err("refused").0
    };
    assert_eq!(
        err(json!({"body": "Hi {{name"})),
        "body: the `{{` at byte 3 is not closed"
    );
    assert_eq!(err(json!({"from": " "})), "from: cannot be empty");
    assert!(err(json!({"base_url": "http://127.0.0.1:9/"})).starts_with("base_url: 127.0.0.1"));
    assert!(err(json!({"base_url": "ftp://x/"})).starts_with("base_url: `ftp://x/`"));
    assert!(err(json!({"phone_answer": 3})).starts_with("phone_answer: invalid type"));
    assert!(
        task.parse_config(&base).is_ok(),
        "defaults for body and base_url"
    );

    let schema = task.config_schema();
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        required,
        ["phone_answer", "from", "account_sid", "auth_token"]
    );
    assert_eq!(schema["properties"]["auth_token"]["writeOnly"], true);
}
