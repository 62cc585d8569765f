//! The operators' console over plain HTTP (no JavaScript), on both backends: every page
//! answers a logged-in `read` or `admin` session and sends anyone else to the login page;
//! only `admin` sees buttons and may post; a stale CSRF token does nothing; a dead webhook
//! run shows on Overview, Forms and Dead letters, and "retry all" on its group makes it
//! succeed, once; bad filters name the field; secrets never appear. Then the same story
//! in headless Chromium, with a screenshot of each page.

use std::{path::PathBuf, process::Command, sync::LazyLock};

use postsub::pb::{self, post_submission_client::PostSubmissionClient};
use postsub_proxy::auth::Scope;
use postsub_testkit::webhook::WebhookReceiver;
use regex::Regex;
use reqwest::{StatusCode, header, redirect};
use serde_json::json;
use uuid::Uuid;

use crate::{
    auth::{BOOTSTRAP, create_token, proxy_with_tokens, with_token},
    helpers::{Backend, TestProxy, binding, eventually, process, quick_retries, spawn_proxy},
};

crate::contract!(
    the_console_shows_a_dead_run_and_an_admin_retries_its_group,
    console_pages_refuse_bad_filters_and_strangers
);

const SECRET: &str = "whsec_Q29uc29sZVRlc3RTZWNyZXROZXZlclNob3du";

static CSRF: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"name="csrf" value="([^"]+)""#).unwrap());

/// A browser without JavaScript: follows no redirects, keeps the session cookie.
#[derive(Clone)]
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
}

/// A page as it came back.
struct Page {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

/// The CSRF token a page's forms carry.
fn csrf_in(body: &str) -> String {
    CSRF.captures(body)
        .unwrap_or_else(|| panic!("no CSRF field in {body}"))[1]
        .to_owned()
}

impl Page {
    fn csrf(&self) -> String {
        csrf_in(&self.body)
    }
}

impl Browser {
    fn new(proxy: &TestProxy) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(redirect::Policy::none())
                .build()
                .unwrap(),
            base: format!("http://{}", proxy.stack.http_addr()),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let response = request
            .header(header::COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        for set in response.headers().get_all(header::SET_COOKIE) {
            let set = set.to_str().unwrap();
            assert!(
                set.contains("HttpOnly") && set.contains("SameSite=Strict"),
                "{set}"
            );
            let (pair, _) = set.split_once(';').unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(k, _)| k != name);
            if !value.is_empty() {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        Page {
            status: response.status(),
            location: response
                .headers()
                .get(header::LOCATION)
                .map(|l| l.to_str().unwrap().to_owned()),
            body: response.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        self.send(request).await
    }

    /// Logs in with `token`; the page it lands on.
    async fn login(&mut self, token: &str) -> Page {
        let form = self.get("/ui/login?next=%2Fui%2Fforms").await;
        assert_eq!(form.status, StatusCode::OK, "{}", form.body);
        let csrf = form.csrf();
        let done = self
            .post(
                "/ui/login",
                &[("token", token), ("csrf", &csrf), ("next", "/ui/forms")],
            )
            .await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        assert_eq!(done.location.as_deref(), Some("/ui/forms"));
        self.get("/ui/forms").await
    }

    /// Waits until a login with each of `tokens` works: the proxy follows the store, and
    /// learns of new tokens on its next reload.
    async fn wait_until_the_proxy_knows(&self, tokens: &[&str]) {
        for token in tokens {
            eventually("the proxy knows the new tokens", || {
                let (mut probe, token) = (self.clone(), token.to_string());
                async move {
                    probe.cookies.clear();
                    let csrf = probe.get("/ui/login").await.csrf();
                    probe
                        .post("/ui/login", &[("token", &token), ("csrf", &csrf)])
                        .await
                        .status
                        == StatusCode::SEE_OTHER
                }
            })
            .await;
        }
    }

    /// A page that must answer 200.
    async fn page(&mut self, path: &str) -> String {
        let page = self.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert!(
            !page.body.contains(SECRET),
            "{path} shows the webhook secret"
        );
        page.body
    }
}

/// A form with a flagging sync binding and a webhook to `receiver` that dies at its first
/// failure; one submission whose webhook died. Returns (form, submission, dead run id).
async fn a_dead_webhook_run(
    proxy: &TestProxy,
    receiver: &WebhookReceiver,
    token: &str,
) -> (Uuid, Uuid, String) {
    let mut admin = proxy.admin().await;
    let form = Uuid::new_v4();
    let checks = json!({"fields": {"age": {"type": "number", "min": 18}}});
    admin
        .create_binding(with_token(
            binding(form, "checks", "validate", pb::Mode::Sync, checks),
            Some(token),
        ))
        .await
        .unwrap();
    let mut hook = binding(
        form,
        "crm",
        "webhook",
        pb::Mode::Async,
        json!({"url": receiver.url, "secret": SECRET}),
    );
    hook.options = Some(quick_retries(1));
    admin
        .create_binding(with_token(hook, Some(token)))
        .await
        .unwrap();
    receiver.respond_with(&[503]);
    let request = process(form, json!({"age": 12, "password": "hunter2"}));
    let submission = Uuid::parse_str(&request.submission_id).unwrap();
    let answer = PostSubmissionClient::connect(proxy.url())
        .await
        .unwrap()
        .process(with_token(request, Some(token)))
        .await
        .unwrap()
        .into_inner();
    let run_id = answer.jobs[0].run_id.clone();
    eventually("the webhook run to die", || async {
        let mut admin = admin.clone();
        admin
            .get_run(with_token(
                pb::GetRunRequest {
                    run_id: run_id.clone(),
                },
                Some(token),
            ))
            .await
            .is_ok_and(|run| run.into_inner().status() == pb::RunStatus::Dead)
    })
    .await;
    (form, submission, run_id)
}

async fn the_console_shows_a_dead_run_and_an_admin_retries_its_group(backend: Backend) {
    let (proxy, store) = proxy_with_tokens(backend).await;
    let read = create_token(&*store, "dashboard", Scope::Read).await;
    let ops = create_token(&*store, "operator", Scope::Admin).await;
    let receiver = WebhookReceiver::start().await;
    let (form, submission, dead_run) = a_dead_webhook_run(&proxy, &receiver, BOOTSTRAP).await;
    let run_page = format!("/ui/runs/{dead_run}");

    // A stranger is sent to the login page, which comes back to where they were going.
    let mut stranger = Browser::new(&proxy);
    let away = stranger.get("/ui/dead").await;
    assert_eq!(away.status, StatusCode::SEE_OTHER);
    assert_eq!(
        away.location.as_deref(),
        Some("/ui/login?next=%2Fui%2Fdead")
    );
    let refused = stranger
        .post(&format!("{run_page}/retry"), &[("csrf", "x")])
        .await;
    assert_eq!(refused.status, StatusCode::SEE_OTHER, "{}", refused.body);

    // `read` sees everything and no button; its posts are refused.
    let mut reader = Browser::new(&proxy);
    reader.wait_until_the_proxy_knows(&[&read, &ops]).await;
    let forms = reader.login(&read).await;
    assert_eq!(forms.status, StatusCode::OK, "{}", forms.body);
    assert!(forms.body.contains("dashboard · read"), "{}", forms.body);
    assert!(forms.body.contains(&form.to_string()) && forms.body.contains("crm"));
    assert!(
        forms.body.contains("status=dead"),
        "Forms links to the dead runs"
    );
    let overview = reader.page("/ui").await;
    assert!(
        overview.contains("webhook") && overview.contains("/ui/dead"),
        "{overview}"
    );
    let dead = reader.page("/ui/dead").await;
    assert!(
        dead.contains("HTTP 5xx (server error)") && dead.contains("answered 503"),
        "{dead}"
    );
    assert!(
        !dead.contains("Retry all"),
        "a read session sees no retry button"
    );
    let run = reader.page(&run_page).await;
    assert!(
        run.contains("dead") && run.contains("answered 503"),
        "{run}"
    );
    assert!(
        !run.contains("/retry\""),
        "a read session sees no retry button"
    );
    // Askama escapes the quotes.
    assert!(
        run.contains("&#34;age&#34;: 12") && run.contains("&#34;password&#34;: &#34;********&#34;"),
        "answers, masked: {run}"
    );
    assert!(!run.contains("hunter2"));
    let csrf = csrf_in(&run);
    let forbidden = reader
        .post(&format!("{run_page}/retry"), &[("csrf", &csrf)])
        .await;
    assert_eq!(
        forbidden.status,
        StatusCode::FORBIDDEN,
        "{}",
        forbidden.body
    );
    assert!(forbidden.body.contains("`admin`"), "{}", forbidden.body);
    for path in [
        "/ui/live",
        "/ui/runs",
        "/ui/bindings",
        "/ui/audit",
        &format!("/ui/submissions/{submission}"),
        &format!("/ui/runs?status=dead&submission={submission}"),
    ] {
        reader.page(path).await;
    }
    let submission_page = reader.page(&format!("/ui/submissions/{submission}")).await;
    assert!(
        submission_page.contains("checks") && submission_page.contains("flagged (1)"),
        "the sync verdict says flagged, as the submit did: {submission_page}"
    );

    // `admin` gets the buttons; a group retry first says what it will touch.
    let mut operator = Browser::new(&proxy);
    operator.login(&ops).await;
    let dead = operator.page("/ui/dead").await;
    assert!(dead.contains("Retry all 1"), "{dead}");
    let confirm_link = format!(
        "/ui/dead/retry?binding={}&cause={}",
        store
            .get_run(Uuid::parse_str(&dead_run).unwrap())
            .await
            .unwrap()
            .unwrap()
            .binding_id,
        "HTTP+5xx+%28server+error%29"
    );
    let confirm = operator.page(&confirm_link).await;
    assert!(confirm.contains("Retry 1 dead run?"), "{confirm}");
    assert!(
        confirm.contains("postsub runs retry-dead --binding")
            && confirm.contains("--cause &#39;HTTP 5xx (server error)&#39;"),
        "the CLI equivalent: {confirm}"
    );
    let csrf = csrf_in(&confirm.clone());
    let binding_id = Regex::new(r#"name="binding" value="([^"]+)""#)
        .unwrap()
        .captures(&confirm)
        .unwrap()[1]
        .to_owned();
    let cause = "HTTP 5xx (server error)";
    // A stale CSRF token: back to the login page, nothing done.
    let stale = [
        ("csrf", "not-this-sessions-token"),
        ("binding", binding_id.as_str()),
        ("cause", cause),
    ];
    let refused = operator.post("/ui/dead/retry", &stale).await;
    assert_eq!(refused.status, StatusCode::SEE_OTHER);
    assert!(refused.location.unwrap().starts_with("/ui/login"));
    assert_eq!(receiver.delivery_count(), 1, "nothing was retried");
    // The receiver is fixed; retry all, twice (a double click): the run is retried once.
    let good = [
        ("csrf", csrf.as_str()),
        ("binding", binding_id.as_str()),
        ("cause", cause),
    ];
    let retried = operator.post("/ui/dead/retry", &good).await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    assert!(retried.body.contains("Retried 1 run<"), "{}", retried.body);
    let again = operator.post("/ui/dead/retry", &good).await;
    assert!(again.body.contains("Retried 0 runs"), "{}", again.body);
    let found = format!("/ui/runs?status=succeeded&submission={submission}&kind=webhook");
    eventually("the retried run to succeed", || {
        let (mut probe, found, dead_run) = (operator.clone(), found.clone(), dead_run.clone());
        async move { probe.page(&found).await.contains(&dead_run) }
    })
    .await;
    assert_eq!(
        receiver.delivery_count(),
        2,
        "one failed delivery, one retried"
    );
    let csv = operator
        .page(&format!("/ui/runs.csv?submission={submission}"))
        .await;
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "a header and the two runs: {csv}");
    assert!(lines[0].starts_with("run_id,created_at,status"));
    assert!(csv.contains(&dead_run) && csv.contains(",succeeded,"));
    assert!(lines[0].ends_with(",error,event"), "{csv}");
    assert!(
        lines[1..].iter().all(|line| line.ends_with(",created")),
        "{csv}"
    );
    // The event filter: both runs are of the creation, none of an edit.
    let created = operator
        .page(&format!("/ui/runs?submission={submission}&event=created"))
        .await;
    assert!(created.contains(&dead_run), "{created}");
    assert!(
        created.contains("<option selected>created</option>"),
        "the filter shows what it filters by: {created}"
    );
    let updated = operator
        .page(&format!("/ui/runs?submission={submission}&event=updated"))
        .await;
    assert!(updated.contains("No runs match."), "{updated}");
    let csv = operator
        .page(&format!(
            "/ui/runs.csv?submission={submission}&event=deleted"
        ))
        .await;
    assert_eq!(csv.lines().count(), 1, "the header alone: {csv}");

    // Enable and disable, audited with the token's name.
    let bindings = operator.page("/ui/bindings").await;
    assert!(
        bindings.contains("whsec_********"),
        "the secret is masked: {bindings}"
    );
    let csrf = csrf_in(&bindings);
    let disabled = operator
        .post(
            &format!("/ui/bindings/{binding_id}/enabled"),
            &[("csrf", &csrf), ("enabled", "false")],
        )
        .await;
    assert_eq!(disabled.status, StatusCode::SEE_OTHER, "{}", disabled.body);
    let bindings = operator.page("/ui/bindings").await;
    assert!(bindings.contains(">Enable<"), "{bindings}");
    let audit = operator.page("/ui/audit").await;
    assert!(
        audit.contains("run.retry_group") && audit.contains("binding.update"),
        "{audit}"
    );
    assert!(audit.contains("operator"), "{audit}");

    // Logging out ends the session.
    let csrf = csrf_in(&audit);
    let out = operator.post("/ui/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(operator.get("/ui").await.status, StatusCode::SEE_OTHER);

    // A revoked token ends its sessions at once (on the next change-feed reload).
    assert!(store.revoke_token("dashboard").await.unwrap());
    eventually("the revoke to end the read session", || {
        let mut probe = reader.clone();
        async move { probe.get("/ui").await.status == StatusCode::SEE_OTHER }
    })
    .await;
}

async fn console_pages_refuse_bad_filters_and_strangers(backend: Backend) {
    // `dev` on loopback with no token: the console opens directly, as the API does.
    let proxy = spawn_proxy(backend).await;
    let mut browser = Browser::new(&proxy);
    let overview = browser.page("/ui").await;
    assert!(overview.contains("anonymous · admin"), "{overview}");
    let login = browser.get("/ui/login").await;
    assert_eq!(login.status, StatusCode::SEE_OTHER, "nothing to log in to");
    for (query, field) in [
        ("form=not-a-uuid", "form: `not-a-uuid` is not a UUID"),
        ("submission=123", "submission: `123` is not a UUID"),
        ("status=exploded", "status: `exploded` is not a status"),
        ("event=edited", "event: unknown event `edited`"),
        ("from=yesterday", "from: `yesterday` is not a time"),
        (
            "from=2026-12-03T10:00&to=2026-12-03T09:00",
            "the wrong way round",
        ),
        ("after=garbage", "after: not a page key"),
    ] {
        let page = browser.get(&format!("/ui/runs?{query}")).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(page.body.contains(field), "{query}: {}", page.body);
        assert!(
            page.body.contains("<form"),
            "the filter form is still there"
        );
    }
    let csv = browser.get("/ui/runs.csv?status=exploded").await;
    assert_eq!(csv.status, StatusCode::BAD_REQUEST);
    let unbound = browser
        .page(&format!("/ui/runs?form={}", Uuid::new_v4()))
        .await;
    assert!(unbound.contains("This form has no bindings"), "{unbound}");
    let missing = browser.get(&format!("/ui/runs/{}", Uuid::new_v4())).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("no run with id"), "{}", missing.body);
    let bad = browser.get("/ui/submissions/nope").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        browser.get("/ui/no-such-page").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(browser.get("/ui/").await.location.as_deref(), Some("/ui"));
    for asset in ["/ui/assets/console.css", "/ui/assets/console.js"] {
        assert!(!browser.page(asset).await.is_empty(), "{asset}");
    }
    if backend == Backend::Postgres {
        assert!(overview.contains("Outbox: 0 jobs"), "{overview}");
    }
    // Retrying a run that is not dead is refused with the reason.
    let form = Uuid::new_v4();
    proxy
        .admin()
        .await
        .create_binding(binding(
            form,
            "checks",
            "validate",
            pb::Mode::Sync,
            json!({"fields": {}}),
        ))
        .await
        .unwrap();
    let answer = proxy
        .process_client()
        .await
        .process(process(form, json!({"a": 1})))
        .await
        .unwrap()
        .into_inner();
    let run_id = &answer.sync_results[0].run_id;
    // The recorder writes the sync run in its next batch.
    eventually("the sync run to be recorded", || {
        let mut probe = browser.clone();
        async move { probe.get(&format!("/ui/runs/{run_id}")).await.status == StatusCode::OK }
    })
    .await;
    let csrf = csrf_in(&browser.page("/ui/bindings").await);
    let refused = browser
        .post(&format!("/ui/runs/{run_id}/retry"), &[("csrf", &csrf)])
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(
        refused.body.contains("only dead, failed or expired runs"),
        "{}",
        refused.body
    );
}

/// The console in Debian's headless Chromium (Playwright's `playwright-core` drives it):
/// the story above, with a screenshot of each page in `target/console-screenshots/`.
#[tokio::test]
async fn the_console_in_headless_chromium() {
    let script_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        PathBuf::from(&chromium).exists(),
        "no Chromium at {chromium}: install Debian's `chromium` (apt-get install chromium) or \
         set CHROMIUM; .ci/run does"
    );
    assert!(
        script_dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run `npm ci --prefix proxy/tests/browser`; .ci/run does"
    );
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    let (proxy, store) = proxy_with_tokens(Backend::Embedded).await;
    let read = create_token(&*store, "dashboard", Scope::Read).await;
    let ops = create_token(&*store, "operator", Scope::Admin).await;
    let receiver = WebhookReceiver::start().await;
    let (_, submission, dead_run) = a_dead_webhook_run(&proxy, &receiver, BOOTSTRAP).await;
    // The proxy must know the new tokens before the browser logs in with them.
    Browser::new(&proxy)
        .wait_until_the_proxy_knows(&[&read, &ops])
        .await;

    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script_dir.join("console.mjs"))
            .env("CONSOLE_URL", format!("http://{}", proxy.stack.http_addr()))
            .env("READ_TOKEN", &read)
            .env("ADMIN_TOKEN", &ops)
            .env("SUBMISSION_ID", submission.to_string())
            .env("DEAD_RUN_ID", &dead_run)
            .env("SCREENSHOTS", &shots)
            .env("CHROMIUM", &chromium)
            .output()
            .map(|output| (output, proxy))
    })
    .await
    .unwrap()
    .expect("node runs (Node.js 18 or later)");
    let (output, _proxy) = output;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("console ok"), "{stdout}\n{stderr}");
    assert_eq!(
        receiver.delivery_count(),
        2,
        "one failed delivery, one retried"
    );
}
