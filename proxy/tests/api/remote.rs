//! Task authors' paths: the `remote` kind against a local task service (sync and async,
//! retries and fatal answers), the Python helper and example against a real postsub, config
//! schemas through the CLI, and a job of a kind the worker does not know.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, atomic::AtomicBool},
};

use postsub::{
    PostSubmissionLayer,
    pb::{self, post_submission_client::PostSubmissionClient},
};
use postsub_proxy::app::{Launch, Proxy, Services};
use postsub_tasks::{Registry, TargetPolicy};
use postsub_testkit::{
    WebhookReceiver,
    form_backend::{submit, submit_route},
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    contract,
    helpers::{
        Backend, Resources, TestProxy, binding, process, quick_retries, registry, run_in,
        spawn_proxy,
    },
};

contract!(
    a_remote_task_answering_500_twice_succeeds_on_its_third_attempt,
    a_remote_task_answering_400_is_dead_at_once_with_the_answer_quoted,
    a_sync_remote_tasks_flags_come_back_with_the_submit_response,
    a_job_of_a_kind_the_worker_does_not_know_is_dead_lettered_saying_so,
    the_python_helper_and_example_pass_their_tests_and_serve_a_sync_remote_binding,
);

fn remote_config(receiver: &WebhookReceiver, settings: Value) -> Value {
    json!({"url": receiver.url, "secret": receiver.secret, "timeout": "5s", "settings": settings})
}

async fn a_remote_task_answering_500_twice_succeeds_on_its_third_attempt(backend: Backend) {
    let proxy = spawn_proxy(backend).await;
    let receiver = WebhookReceiver::start().await;
    receiver.set_answer(r#"{"status": "ok", "flags": [], "output": {"stored": true}}"#);
    receiver.answer_with(&[(500, "oops"), (500, "oops")]);
    let form = Uuid::new_v4();
    let mut request = binding(
        form,
        "crm",
        "remote",
        pb::Mode::Async,
        remote_config(&receiver, json!({"list": "newsletter"})),
    );
    request.options = Some(quick_retries(5));
    proxy.admin().await.create_binding(request).await.unwrap();
    let run_id = proxy
        .submit(form, json!({"email": "ada@example.org"}))
        .await
        .remove(0);

    let run = proxy.run_in(&run_id, pb::RunStatus::Succeeded).await;
    assert_eq!(run.attempts, 3);
    let output = run.output.map(postsub::json::from_proto_value).unwrap();
    assert_eq!(output, json!({"stored": true}));
    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), 3);
    for (attempt, delivery) in deliveries.iter().enumerate() {
        assert!(delivery.signature_ok, "signed per Standard Webhooks");
        assert_eq!(
            delivery.id, run_id,
            "webhook-id is the run id on every attempt"
        );
        let body = &delivery.body;
        assert_eq!(body["type"], "task.run");
        assert_eq!(body["run_id"], run_id.as_str());
        assert_eq!(body["attempt"], attempt as u64 + 1);
        assert_eq!(body["binding"]["name"], "crm");
        assert_eq!(body["binding"]["form_id"], form.to_string());
        assert_eq!(body["settings"], json!({"list": "newsletter"}));
        assert_eq!(
            body["submission"]["answers"],
            json!({"email": "ada@example.org"})
        );
    }
}

async fn a_remote_task_answering_400_is_dead_at_once_with_the_answer_quoted(backend: Backend) {
    let proxy = spawn_proxy(backend).await;
    let receiver = WebhookReceiver::start().await;
    receiver.answer_with(&[(400, "the answer `phone` is not a phone number")]);
    let form = Uuid::new_v4();
    let mut request = binding(
        form,
        "crm",
        "remote",
        pb::Mode::Async,
        remote_config(&receiver, json!({})),
    );
    request.options = Some(quick_retries(5));
    proxy.admin().await.create_binding(request).await.unwrap();
    let run_id = proxy.submit(form, json!({"phone": "x"})).await.remove(0);

    let run = proxy.run_in(&run_id, pb::RunStatus::Dead).await;
    assert_eq!(run.attempts, 1);
    assert!(
        run.error
            .ends_with("answered 400 Bad Request: the answer `phone` is not a phone number"),
        "{}",
        run.error
    );
    assert_eq!(receiver.deliveries().len(), 1);
    assert_eq!(proxy.dead_letters("remote").await, 1);
}

async fn a_sync_remote_tasks_flags_come_back_with_the_submit_response(backend: Backend) {
    let proxy = spawn_proxy(backend).await;
    let receiver = WebhookReceiver::start().await;
    receiver.set_answer(
        r#"{"status": "flagged", "output": {"city": null},
            "flags": [{"field": "city", "rule": "known_city", "message": "unknown city"}]}"#,
    );
    let form = Uuid::new_v4();
    let request = binding(
        form,
        "city",
        "remote",
        pb::Mode::Sync,
        remote_config(&receiver, json!({})),
    );
    proxy.admin().await.create_binding(request).await.unwrap();
    let result = first_sync_result(&proxy, form).await;
    assert_eq!(result.status(), pb::SyncStatus::Flagged);
    assert_eq!(result.flags[0].rule, "known_city");

    // A sync run is not retried: a 503 fails it at once.
    receiver.answer_with(&[(503, "busy")]);
    let result = first_sync_result(&proxy, form).await;
    assert_eq!(result.status(), pb::SyncStatus::Failed);
    assert!(
        result
            .error
            .ends_with("answered 503 Service Unavailable: busy"),
        "{}",
        result.error
    );

    // An answer over 1 MiB is not read to its end: the run fails, saying why.
    receiver.set_answer(&" ".repeat(2 << 20));
    let result = first_sync_result(&proxy, form).await;
    assert_eq!(result.status(), pb::SyncStatus::Failed);
    assert!(
        result.error.ends_with("with a body over 1048576 bytes"),
        "{}",
        result.error
    );
}

#[tokio::test]
async fn two_kinds_registered_under_one_name_stop_the_start() {
    let resources = Resources::create(Backend::Embedded).await;
    let backend = resources.settings(&[]).backend().unwrap();
    backend.database.migrate().await.unwrap();
    let mut registry = Registry::with_builtins_for(TargetPolicy::dev());
    registry.register(postsub_tasks::validate::Validate::new());
    let refused = Services::start(&backend, registry).await.err().unwrap();
    assert!(
        refused
            .to_string()
            .starts_with("task kind `validate` is registered twice"),
        "{refused}"
    );
}

/// The first sync result of a submission of `form` with a `city` the task does not know.
async fn first_sync_result(proxy: &TestProxy, form: Uuid) -> pb::SyncResult {
    let reply = PostSubmissionClient::connect(proxy.url())
        .await
        .unwrap()
        .process(process(form, json!({"city": "Gotham"})))
        .await
        .unwrap()
        .into_inner();
    reply
        .sync_results
        .into_iter()
        .next()
        .expect("a sync result")
}

async fn a_job_of_a_kind_the_worker_does_not_know_is_dead_lettered_saying_so(backend: Backend) {
    let resources = Resources::create(backend).await;
    let settings = resources.settings(&[]);
    let backend = settings.backend().unwrap();
    backend.database.migrate().await.unwrap();
    // The proxy knows the test kinds (`flaky` among them); the worker only the built-ins.
    let proxy_services = Services::start(&backend, registry(Arc::new(AtomicBool::new(true))))
        .await
        .unwrap();
    let proxy = Proxy::build(&proxy_services, &settings.proxy, Launch::Dev)
        .await
        .unwrap();
    let grpc = format!("http://{}", proxy.grpc_addr());
    let stop = CancellationToken::new();
    let proxy_task = tokio::spawn(proxy.run(stop.clone()));
    let form = Uuid::new_v4();
    let mut request = binding(
        form,
        "flaky",
        "flaky",
        pb::Mode::Async,
        json!({"failures": 0}),
    );
    request.options = Some(quick_retries(5));
    let mut admin = pb::task_admin_client::TaskAdminClient::connect(grpc.clone())
        .await
        .unwrap();
    admin.create_binding(request).await.unwrap();

    let worker_services =
        Services::start(&backend, Registry::with_builtins_for(TargetPolicy::dev()))
            .await
            .unwrap();
    let worker = worker_services.worker(&settings.worker).unwrap();
    let worker_task = tokio::spawn(worker.run(stop.clone()));
    let reply = PostSubmissionClient::connect(grpc.clone())
        .await
        .unwrap()
        .process(process(form, json!({"a": 1})))
        .await
        .unwrap()
        .into_inner();
    let run_id = reply.jobs[0].run_id.clone();

    let run = run_in(&grpc, &run_id, pb::RunStatus::Dead).await;
    assert_eq!(
        run.attempts, 1,
        "not retried: no attempt of this worker can run it"
    );
    assert!(
        run.error.starts_with(
            "this process does not know the task kind `flaky` (it knows google_sheets, remote, \
             validate, webhook): run a worker built with it, then `postsub dlq replay --kind flaky`"
        ),
        "{}",
        run.error
    );
    stop.cancel();
    worker_task.await.unwrap();
    proxy_task.await.unwrap().unwrap();
    worker_services.stop().await;
    proxy_services.stop().await;
}

/// The workspace's root directory.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A fresh virtual environment with `pip install ./clients/python` done, as the README
/// says; removed when dropped.
struct PythonEnv(PathBuf);

impl PythonEnv {
    fn create() -> Self {
        let dir = std::env::temp_dir().join(format!("postsub-pyenv-{}", Uuid::new_v4().simple()));
        let env = PythonEnv(dir);
        env.run(
            "python3",
            &["-m", "venv", env.0.to_str().unwrap()],
            &workspace(),
        );
        env.run(
            &env.python(),
            &["-m", "pip", "install", "--quiet", "./clients/python"],
            &workspace(),
        );
        env
    }

    fn python(&self) -> String {
        self.0.join("bin/python").to_string_lossy().into_owned()
    }

    fn run(&self, program: &str, args: &[&str], dir: &Path) {
        let output = Command::new(program)
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|err| panic!("{program} runs: {err}"));
        assert!(
            output.status.success(),
            "{program} {args:?} in {}:\n{}\n{}",
            dir.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PythonEnv {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The Python example's task service, on a port it picked; killed when dropped.
struct CityTask {
    child: Child,
    url: String,
}

impl CityTask {
    fn start(env: &PythonEnv, secret: &str) -> Self {
        let mut child = Command::new(env.python())
            .args(["city_task.py", "--port", "0"])
            .current_dir(workspace().join("examples/remote-task-python"))
            .env("POSTSUB_TASK_SECRET", secret)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the city task starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the city task said {line:?}"))
            .to_owned();
        CityTask { child, url }
    }
}

impl Drop for CityTask {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn the_python_helper_and_example_pass_their_tests_and_serve_a_sync_remote_binding(
    backend: Backend,
) {
    let env = PythonEnv::create();
    env.run(
        &env.python(),
        &["-m", "unittest", "discover", "-s", "tests"],
        &workspace().join("clients/python"),
    );
    env.run(
        &env.python(),
        &["-m", "unittest"],
        &workspace().join("examples/remote-task-python"),
    );

    let proxy = spawn_proxy(backend).await;
    let secret = "whsec_c2VjcmV0LW9mLXRoZS1jaXR5LXRhc2s=";
    let task = CityTask::start(&env, secret);
    let form = Uuid::new_v4();
    let config = json!({"url": task.url, "secret": secret, "settings": {"field": "city"}});
    let request = binding(form, "city", "remote", pb::Mode::Sync, config);
    proxy.admin().await.create_binding(request).await.unwrap();

    // Through a backend's route behind the layer, as a respondent submits.
    let layer = PostSubmissionLayer::connect_lazy(&proxy.url()).unwrap();
    let answer = |city: &str| {
        json!({"id": Uuid::new_v4(), "form_id": form, "answers": {"city": city},
            "created_at": "2026-12-03T10:00:00Z"})
    };
    let submitted = async |stored: Value| {
        let (_, body) = submit(submit_route(
            layer.clone(),
            http::StatusCode::CREATED,
            stored,
        ))
        .await;
        body["post_submission"]["sync_results"][0].clone()
    };
    let result = submitted(answer("Bombay")).await;
    assert_eq!(result["status"], "ok", "{result}");
    assert_eq!(
        result["output"],
        json!({"city": "Mumbai", "input": "Bombay"})
    );

    let result = submitted(answer("Gotham")).await;
    assert_eq!(result["status"], "flagged", "{result}");
    assert_eq!(result["flags"][0]["field"], "city");
    assert_eq!(result["flags"][0]["rule"], "known_city");

    // A binding with the wrong secret: the helper refuses the call, and the run says so.
    let wrong = Uuid::new_v4();
    let config = json!({"url": task.url, "secret": "whsec_bm90LXRoZS1zZWNyZXQ="});
    let request = binding(wrong, "city", "remote", pb::Mode::Sync, config);
    proxy.admin().await.create_binding(request).await.unwrap();
    let mut stored = answer("Bombay");
    stored["form_id"] = json!(wrong);
    let result = submitted(stored).await;
    assert_eq!(result["status"], "failed", "{result}");
    assert!(
        result["error"].as_str().unwrap().contains("401"),
        "{result}"
    );
}

#[tokio::test]
async fn kinds_json_shows_every_built_in_schema_and_a_bad_config_names_its_path() {
    let proxy = spawn_proxy(Backend::Embedded).await;
    let (ok, stdout, stderr) = proxy.cli(&["kinds", "--json"]).await;
    assert!(ok, "{stderr}");
    let kinds: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    for name in ["google_sheets", "remote", "validate", "webhook"] {
        let kind = kinds.iter().find(|k| k["name"] == name).unwrap();
        let schema = &kind["config_schema"];
        assert_eq!(schema["type"], "object", "{name}: {schema}");
        assert_eq!(schema["title"], format!("{name} config"));
    }
    let remote = kinds.iter().find(|k| k["name"] == "remote").unwrap();
    assert_eq!(remote["modes"], json!(["sync", "async"]));
    assert_eq!(
        remote["config_schema"]["required"],
        json!(["url", "secret"])
    );

    let (ok, table, _) = proxy.cli(&["kinds"]).await;
    assert!(ok);
    assert!(
        table.starts_with("KIND              MODES       DESCRIPTION\n"),
        "{table}"
    );
    assert!(
        table.contains("\nremote            sync,async  Runs the task"),
        "{table}"
    );

    let form = Uuid::new_v4().to_string();
    let config = r#"{"rules": [{"name": "a", "expr": "true"}, {"name": "b", "expr": "x <="}]}"#;
    let (ok, _, stderr) = proxy
        .cli(&[
            "bindings", "create", "--form", &form, "--name", "checks", "--kind", "validate",
            "--mode", "sync", "--config", config,
        ])
        .await;
    assert!(!ok);
    assert!(
        stderr.contains("rules[1].expr: rule `b`: expression `x <=` does not compile"),
        "{stderr}"
    );
}
