//! `postsub-sms dev`, the example's own binary, on the embedded backend and on PostgreSQL +
//! RabbitMQ: submissions to a form backend's route behind the layer go through `Process`,
//! the queue and the worker to the Twilio fake, one SMS each, even when a run is retried by
//! hand after it succeeded or its job comes back after the process was killed in the middle
//! of the send.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use axum::http::StatusCode;
use postsub::{
    PostSubmissionLayer,
    json::{from_proto_struct, to_proto_struct},
    pb::{self, task_admin_client::TaskAdminClient},
};
use postsub_testkit::{
    TestBroker, TestDatabase, TestSqlite, TwilioFake,
    form_backend::{submit, submit_route},
    process::{free_port, spawn, terminate, wait_for_proxy},
};
use serde_json::{Value, json};
use tonic::Code;
use uuid::Uuid;

const BINARY: &str = env!("CARGO_BIN_EXE_postsub-sms");

/// Where `postsub-sms dev` keeps its data, the test's own: one SQLite file, or a
/// PostgreSQL database and a RabbitMQ vhost.
enum Data {
    Embedded(TestSqlite),
    Servers(TestDatabase, TestBroker, PathBuf),
}

impl Data {
    async fn create(servers: bool) -> Self {
        if servers {
            let log = std::env::temp_dir().join(format!("sms-{}.log", Uuid::new_v4().simple()));
            Data::Servers(TestDatabase::create("sms").await, TestBroker::create(), log)
        } else {
            Data::Embedded(TestSqlite::create("sms"))
        }
    }

    fn log(&self) -> PathBuf {
        match self {
            Data::Embedded(file) => file.path.with_extension("log"),
            Data::Servers(_, _, log) => log.clone(),
        }
    }
}

/// `postsub-sms dev` on `data`, its gRPC API at `grpc_addr`.
fn start_dev(data: &Data, grpc_addr: &str) -> tokio::process::Child {
    let mut env = vec![
        ("POSTSUB_GRPC_ADDR", grpc_addr),
        ("POSTSUB_HTTP_ADDR", "127.0.0.1:0"),
    ];
    match data {
        Data::Embedded(file) => env.push(("DATABASE_URL", file.url.as_str())),
        Data::Servers(db, broker, _) => env.extend([
            ("DATABASE_URL", db.url.as_str()),
            ("AMQP_URL", broker.url.as_str()),
            ("POSTSUB_QUEUE_PREFIX", broker.prefix.as_str()),
        ]),
    }
    spawn(BINARY, &["dev"], &env, &data.log())
}

/// Submits `answers` to `form` through a backend route behind the layer; the reply's jobs.
async fn submit_to(grpc: &str, form: Uuid, answers: Value) -> Vec<Value> {
    let layer = PostSubmissionLayer::connect_lazy(grpc).unwrap();
    let stored = json!({"id": Uuid::new_v4(), "form_id": form, "answers": answers,
        "created_at": "2026-12-03T10:00:00Z"});
    let (status, body) = submit(submit_route(layer, StatusCode::CREATED, stored)).await;
    assert_eq!(status, StatusCode::CREATED);
    body["post_submission"]["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no jobs in {body}"))
        .clone()
}

async fn run_status(
    admin: &mut TaskAdminClient<tonic::transport::Channel>,
    run_id: &str,
) -> pb::Run {
    admin
        .get_run(pb::GetRunRequest {
            run_id: run_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn wait_succeeded(grpc: &str, run_id: &str, within: Duration) -> pb::Run {
    let mut admin = TaskAdminClient::connect(grpc.to_owned()).await.unwrap();
    let start = Instant::now();
    loop {
        let run = run_status(&mut admin, run_id).await;
        if run.status() == pb::RunStatus::Succeeded {
            return run;
        }
        assert!(
            start.elapsed() < within,
            "run {run_id} is {:?}: {}",
            run.status(),
            run.error
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn one_sms_per_submission_through_the_whole_path_even_when_a_job_comes_back_embedded() {
    one_sms_per_submission(Data::create(false).await).await
}

#[tokio::test]
async fn one_sms_per_submission_through_the_whole_path_even_when_a_job_comes_back_postgres() {
    one_sms_per_submission(Data::create(true).await).await
}

async fn one_sms_per_submission(file: Data) {
    let fake = TwilioFake::start().await;
    let grpc_addr = format!("127.0.0.1:{}", free_port());
    let grpc = format!("http://{grpc_addr}");
    let mut dev = start_dev(&file, &grpc_addr);
    wait_for_proxy(&grpc).await;
    let mut admin = TaskAdminClient::connect(grpc.clone()).await.unwrap();

    // The binary knows the built-ins and its own kind, schema included.
    let kinds = admin
        .list_task_kinds(pb::ListTaskKindsRequest {})
        .await
        .unwrap()
        .into_inner()
        .kinds;
    let names: Vec<&str> = kinds.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "google_sheets",
            "remote",
            "sms_receipt",
            "validate",
            "webhook"
        ]
    );
    let schema = kinds[2]
        .config_schema
        .clone()
        .map(from_proto_struct)
        .unwrap();
    assert_eq!(schema["title"], "sms_receipt config");

    let form = Uuid::new_v4();
    let config = json!({"phone_answer": "phone", "from": "+15550001111",
        "body": "Thanks {{name}}! Receipt {{submission_id}}",
        "account_sid": fake.account_sid, "auth_token": fake.auth_token,
        "base_url": fake.base_url});
    let Value::Object(config) = config else {
        unreachable!()
    };
    let binding = admin
        .create_binding(pb::CreateBindingRequest {
            form_id: form.to_string(),
            name: "receipt".into(),
            kind: "sms_receipt".into(),
            mode: pb::Mode::Async.into(),
            config: Some(to_proto_struct(config)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let shown = from_proto_struct(binding.config.unwrap());
    assert_eq!(shown["auth_token"], "********", "the token is masked");

    let mut runs = Vec::new();
    for (i, name) in ["Ada", "Bo", "Cy"].iter().enumerate() {
        let jobs = submit_to(
            &grpc,
            form,
            json!({"phone": format!("+1555010020{i}"), "name": name}),
        )
        .await;
        assert_eq!(jobs.len(), 1);
        runs.push(jobs[0]["run_id"].as_str().unwrap().to_owned());
    }
    for run in &runs {
        wait_succeeded(&grpc, run, Duration::from_secs(30)).await;
    }
    let messages = fake.messages();
    assert_eq!(messages.len(), 3, "{messages:?}");
    // Async runs finish in any order: Ada's message is the one to her number.
    let ada = messages
        .iter()
        .find(|message| message.to == "+15550100200")
        .unwrap_or_else(|| panic!("a message to Ada: {messages:?}"));
    assert!(ada.body.starts_with("Thanks Ada! Receipt "), "{ada:?}");

    // Retrying a run that succeeded is refused: nothing is sent again.
    let refused = admin
        .retry_run(pb::RetryRunRequest {
            run_id: runs[0].clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");

    // Killed while the API holds the fourth message's answer: the job's lease runs out
    // after the restart, it comes back, and the task finds the message instead of resending.
    fake.set_delay(Duration::from_secs(60));
    let jobs = submit_to(&grpc, form, json!({"phone": "+15550100209", "name": "Di"})).await;
    let fourth = jobs[0]["run_id"].as_str().unwrap().to_owned();
    let start = Instant::now();
    while fake.messages().len() < 4 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the fourth SMS was not sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    dev.start_kill().unwrap(); // SIGKILL
    dev.wait().await.unwrap();
    fake.set_delay(Duration::ZERO);
    let mut dev = start_dev(&file, &grpc_addr);
    wait_for_proxy(&grpc).await;
    let run = wait_succeeded(&grpc, &fourth, Duration::from_secs(60)).await;
    let output = run.output.map(postsub::json::from_proto_value).unwrap();
    assert_eq!(
        output["delivery"],
        "found: sent by an earlier attempt that was not recorded"
    );
    assert_eq!(fake.messages().len(), 4, "{:?}", fake.messages());
    assert!(terminate(&mut dev).await);

    let log = std::fs::read_to_string(file.log()).unwrap();
    assert!(
        !log.contains(fake.auth_token.as_str()),
        "the token is in the log"
    );
}
