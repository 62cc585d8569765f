//! Tokens and scopes, on both backends: every RPC without a token, with a wrong or revoked
//! one and with each scope gets exactly the code its scope table says; a revoke reaches the
//! proxy through the change feed; the layer with a refused token still lets the submission
//! succeed and says why its tasks did not run.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use postsub::{
    PostSubmissionLayer,
    pb::{self, post_submission_client::PostSubmissionClient, task_admin_client::TaskAdminClient},
};
use postsub_proxy::{
    auth::{IssuedToken, Scope},
    backend::{DEV_DATABASE, Database},
    store::{NewToken, Store},
};
use postsub_testkit::form_backend::{self, stored_submission, submit_route};
use serde_json::{Value, json};
use tonic::{Code, Request, Status, transport::Channel};
use uuid::Uuid;

use crate::helpers::{Backend, TestProxy, eventually, object, process, spawn_proxy_with};

crate::contract!(
    every_method_answers_only_a_token_of_its_scope,
    a_revoked_token_is_refused_within_a_second,
    a_layer_whose_token_is_refused_lets_the_submission_succeed_and_says_why
);

/// The bootstrap admin token the test proxies start with (`POSTSUB_ADMIN_TOKEN`).
pub(crate) const BOOTSTRAP: &str = "test-bootstrap-admin-token-0123456789abcdef";

/// A proxy that asks for tokens, and its store, to make tokens in.
pub(crate) async fn proxy_with_tokens(backend: Backend) -> (TestProxy, Arc<dyn Store>) {
    let proxy = spawn_proxy_with(backend, &["--admin-token", BOOTSTRAP]).await;
    let store = Database::from_settings(&proxy.settings.database, DEV_DATABASE)
        .unwrap()
        .open_store()
        .await
        .unwrap();
    (proxy, store)
}

/// Stores a new token of `scope` and returns it.
pub(crate) async fn create_token(store: &dyn Store, name: &str, scope: Scope) -> String {
    let issued = IssuedToken::generate();
    store
        .create_token(&NewToken {
            name: name.into(),
            scope,
            hash: issued.hash,
        })
        .await
        .unwrap();
    issued.secret
}

/// `message` with `authorization: Bearer <token>` when there is a token.
pub(crate) fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Every RPC the proxy serves, with what each asks.
const METHODS: &[(&str, Need)] = &[
    ("Process", Need::Scope(Scope::Submit)),
    ("CreateBinding", Need::Scope(Scope::Admin)),
    ("GetBinding", Need::Scope(Scope::Read)),
    ("ListBindings", Need::Scope(Scope::Read)),
    ("UpdateBinding", Need::Scope(Scope::Admin)),
    ("DeleteBinding", Need::Scope(Scope::Admin)),
    ("ListTaskKinds", Need::Scope(Scope::Read)),
    ("ListRuns", Need::Scope(Scope::Read)),
    ("GetRun", Need::Scope(Scope::Read)),
    ("RetryRun", Need::Scope(Scope::Admin)),
    ("ReplayDeadLetters", Need::Scope(Scope::Admin)),
    ("ListQueues", Need::Scope(Scope::Read)),
    ("ListAuditEntries", Need::Scope(Scope::Admin)),
    ("Health.Check", Need::Nothing),
    ("ServerReflectionInfo", Need::AnyToken),
];

#[derive(Debug, Clone, Copy)]
enum Need {
    Nothing,
    AnyToken,
    Scope(Scope),
}

/// Calls `method` with harmless arguments (unknown ids, a form without bindings) and
/// returns the code it answered.
async fn call(channel: &Channel, method: &str, token: Option<&str>) -> Code {
    let mut admin = TaskAdminClient::new(channel.clone());
    let unknown = Uuid::new_v4().to_string();
    let result: Result<(), Status> = match method {
        "Process" => PostSubmissionClient::new(channel.clone())
            .process(with_token(process(Uuid::new_v4(), json!({})), token))
            .await
            .map(drop),
        "CreateBinding" => admin
            .create_binding(with_token(
                pb::CreateBindingRequest {
                    form_id: Uuid::new_v4().to_string(),
                    name: format!("b-{unknown}"),
                    kind: "validate".into(),
                    mode: pb::Mode::Sync.into(),
                    config: Some(object(json!({"required": ["a"]}))),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        "GetBinding" => admin
            .get_binding(with_token(pb::GetBindingRequest { id: unknown }, token))
            .await
            .map(drop),
        "ListBindings" => admin
            .list_bindings(with_token(pb::ListBindingsRequest::default(), token))
            .await
            .map(drop),
        "UpdateBinding" => admin
            .update_binding(with_token(
                pb::UpdateBindingRequest {
                    id: unknown,
                    enabled: Some(false),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        "DeleteBinding" => admin
            .delete_binding(with_token(pb::DeleteBindingRequest { id: unknown }, token))
            .await
            .map(drop),
        "ListTaskKinds" => admin
            .list_task_kinds(with_token(pb::ListTaskKindsRequest {}, token))
            .await
            .map(drop),
        "ListRuns" => admin
            .list_runs(with_token(pb::ListRunsRequest::default(), token))
            .await
            .map(drop),
        "GetRun" => admin
            .get_run(with_token(pb::GetRunRequest { run_id: unknown }, token))
            .await
            .map(drop),
        "RetryRun" => admin
            .retry_run(with_token(pb::RetryRunRequest { run_id: unknown }, token))
            .await
            .map(drop),
        "ReplayDeadLetters" => admin
            .replay_dead_letters(with_token(
                pb::ReplayDeadLettersRequest {
                    kind: "webhook".into(),
                    form_id: Uuid::new_v4().to_string(),
                },
                token,
            ))
            .await
            .map(drop),
        "ListQueues" => admin
            .list_queues(with_token(pb::ListQueuesRequest {}, token))
            .await
            .map(drop),
        "ListAuditEntries" => admin
            .list_audit_entries(with_token(pb::ListAuditEntriesRequest::default(), token))
            .await
            .map(drop),
        "Health.Check" => tonic_health::pb::health_client::HealthClient::new(channel.clone())
            .check(with_token(
                tonic_health::pb::HealthCheckRequest::default(),
                token,
            ))
            .await
            .map(drop),
        "ServerReflectionInfo" => {
            use tonic_reflection::pb::v1::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
            };
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut client = ServerReflectionClient::new(channel.clone());
            match client
                .server_reflection_info(with_token(tokio_stream::once(request), token))
                .await
            {
                Ok(response) => {
                    let mut stream = response.into_inner();
                    stream.message().await.map(drop)
                }
                Err(status) => Err(status),
            }
        }
        other => panic!("no call for {other}"),
    };
    result.err().map_or(Code::Ok, |status| status.code())
}

async fn every_method_answers_only_a_token_of_its_scope(backend: Backend) {
    let (proxy, store) = proxy_with_tokens(backend).await;
    let submit = create_token(&*store, "form-backend", Scope::Submit).await;
    let read = create_token(&*store, "dashboard", Scope::Read).await;
    let admin = create_token(&*store, "operator", Scope::Admin).await;
    let revoked = create_token(&*store, "former", Scope::Admin).await;
    assert!(store.revoke_token("former").await.unwrap());
    let channel = Channel::from_shared(proxy.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    // The proxy follows the store: wait until it knows every new token (each reload reads
    // the store as it is then, so the last one has the revoke too).
    eventually("the proxy knows the new tokens", || async {
        call(&channel, "Process", Some(&submit)).await == Code::Ok
            && call(&channel, "ListRuns", Some(&read)).await == Code::Ok
            && call(&channel, "ListRuns", Some(&admin)).await == Code::Ok
            && call(&channel, "ListRuns", Some(&revoked)).await == Code::Unauthenticated
    })
    .await;

    let credentials: [(&str, Option<&str>, Option<Scope>); 7] = [
        ("no token", None, None),
        ("a wrong token", Some("pst_not-a-token-anyone-made"), None),
        ("a revoked token", Some(&revoked), None),
        ("submit", Some(&submit), Some(Scope::Submit)),
        ("read", Some(&read), Some(Scope::Read)),
        ("admin", Some(&admin), Some(Scope::Admin)),
        ("POSTSUB_ADMIN_TOKEN", Some(BOOTSTRAP), Some(Scope::Admin)),
    ];
    let mut checked = 0;
    for &(method, need) in METHODS {
        // What the method answers its harmless arguments when let through.
        let through = call(&channel, method, Some(&admin)).await;
        assert!(
            !matches!(through, Code::Unauthenticated | Code::PermissionDenied),
            "{method} refused an admin token: {through:?}"
        );
        for (who, token, scope) in credentials {
            let expected = match (need, scope) {
                (Need::Nothing, _) => through,
                (_, None) => Code::Unauthenticated,
                (Need::AnyToken, Some(_)) => through,
                (Need::Scope(needed), Some(scope)) if scope.covers(needed) => through,
                (Need::Scope(_), Some(_)) => Code::PermissionDenied,
            };
            let code = call(&channel, method, token).await;
            assert_eq!(code, expected, "{method} with {who}");
            checked += 1;
        }
    }
    assert_eq!(checked, METHODS.len() * credentials.len());
    // The proxy writes back when each token was last used (every few seconds).
    eventually("the proxy records when tokens were last used", || async {
        let tokens = store.tokens().await.unwrap();
        let used = |name: &str| {
            tokens
                .iter()
                .any(|t| t.name == name && t.last_used_at.is_some())
        };
        used("dashboard") && used("operator") && !used("former")
    })
    .await;
    store.close().await;
}

async fn a_revoked_token_is_refused_within_a_second(backend: Backend) {
    let (proxy, store) = proxy_with_tokens(backend).await;
    let token = create_token(&*store, "soon-gone", Scope::Read).await;
    let channel = Channel::from_shared(proxy.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    eventually("the proxy knows the token", || async {
        call(&channel, "ListQueues", Some(&token)).await == Code::Ok
    })
    .await;
    assert!(store.revoke_token("soon-gone").await.unwrap());
    let revoked = Instant::now();
    while call(&channel, "ListQueues", Some(&token)).await == Code::Ok {
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "the revoked token still worked after a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        call(&channel, "ListQueues", Some(&token)).await,
        Code::Unauthenticated
    );
    store.close().await;
}

async fn a_layer_whose_token_is_refused_lets_the_submission_succeed_and_says_why(backend: Backend) {
    let (proxy, store) = proxy_with_tokens(backend).await;
    let submit = create_token(&*store, "shop", Scope::Submit).await;
    let read = create_token(&*store, "not-for-submitting", Scope::Read).await;
    let channel = Channel::from_shared(proxy.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    eventually("the proxy knows the tokens", || async {
        call(&channel, "Process", Some(&submit)).await == Code::Ok
            && call(&channel, "ListRuns", Some(&read)).await == Code::Ok
    })
    .await;
    let submit_through = |token: Option<&str>| {
        let mut layer = PostSubmissionLayer::connect_lazy(&proxy.url()).unwrap();
        if let Some(token) = token {
            layer = layer.bearer_token(token).unwrap();
        }
        let stored = stored_submission(json!({"a": 1}));
        form_backend::submit(submit_route(layer, http::StatusCode::CREATED, stored))
    };
    let (status, body) = submit_through(Some(&submit)).await;
    assert_eq!(status, http::StatusCode::CREATED);
    assert_eq!(body["post_submission"]["error"], Value::Null, "{body}");
    for (token, code) in [
        (None, "Unauthenticated"),
        (Some("pst_wrong"), "Unauthenticated"),
        (Some(read.as_str()), "PermissionDenied"),
    ] {
        let (status, body) = submit_through(token).await;
        assert_eq!(status, http::StatusCode::CREATED, "{body}");
        assert_eq!(body["answers"], json!({"a": 1}));
        let error = body["post_submission"]["error"].as_str().unwrap();
        assert!(
            error.starts_with(
                "post-submission tasks did not run: the postsub proxy refused the token"
            ) && error.contains(code),
            "{error}"
        );
    }
    store.close().await;
}
