//! The audit log, on both backends: every change through the admin API is recorded with the
//! token's name, the action, the target and a masked before/after; refused calls and reads
//! leave no entry; the log pages newest first and filters by time.

use postsub::pb::{self, task_admin_client::TaskAdminClient};
use postsub_proxy::auth::Scope;
use serde_json::json;
use tonic::{Code, transport::Channel};
use uuid::Uuid;

use crate::{
    auth::{BOOTSTRAP, create_token, proxy_with_tokens, with_token},
    helpers::{binding, eventually},
};

crate::contract!(every_admin_change_is_audited_with_its_token_and_masked_secrets);

const SECRET: &str = "whsec_QXVkaXRUZXN0U2VjcmV0TmV2ZXJTaG93bg==";

async fn every_admin_change_is_audited_with_its_token_and_masked_secrets(
    backend: crate::helpers::Backend,
) {
    let (proxy, store) = proxy_with_tokens(backend).await;
    let ops = create_token(&*store, "ops", Scope::Admin).await;
    let channel = Channel::from_shared(proxy.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = TaskAdminClient::new(channel);
    eventually("the proxy knows the token", || {
        let mut admin = admin.clone();
        let ops = ops.clone();
        async move {
            admin
                .list_queues(with_token(pb::ListQueuesRequest {}, Some(&ops)))
                .await
                .is_ok()
        }
    })
    .await;

    let form = Uuid::new_v4();
    let hook = json!({"url": "http://127.0.0.1:9/hook", "secret": SECRET});
    let created = admin
        .create_binding(with_token(
            binding(form, "hook", "webhook", pb::Mode::Async, hook),
            Some(&ops),
        ))
        .await
        .unwrap()
        .into_inner();
    admin
        .update_binding(with_token(
            pb::UpdateBindingRequest {
                id: created.id.clone(),
                name: Some("renamed".into()),
                ..Default::default()
            },
            Some(&ops),
        ))
        .await
        .unwrap();
    admin
        .delete_binding(with_token(
            pb::DeleteBindingRequest {
                id: created.id.clone(),
            },
            Some(&ops),
        ))
        .await
        .unwrap();
    let replayed = admin
        .replay_dead_letters(with_token(
            pb::ReplayDeadLettersRequest {
                kind: "webhook".into(),
                form_id: form.to_string(),
            },
            Some(&ops),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.replayed, 0);
    // Calls that change nothing leave no entry: a refused one, a failed one, a read.
    let refused = admin
        .create_binding(with_token(
            binding(form, "x", "validate", pb::Mode::Sync, json!({})),
            Some("pst_nobody"),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let missing = admin
        .retry_run(with_token(
            pb::RetryRunRequest {
                run_id: Uuid::new_v4().to_string(),
            },
            Some(&ops),
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    admin
        .list_bindings(with_token(pb::ListBindingsRequest::default(), Some(&ops)))
        .await
        .unwrap();
    let checks = admin
        .create_binding(with_token(
            binding(form, "checks", "validate", pb::Mode::Sync, json!({})),
            Some(BOOTSTRAP),
        ))
        .await
        .unwrap()
        .into_inner();

    let list = |since: Option<prost_types::Timestamp>, page_size, page_token: String| {
        let mut admin = admin.clone();
        let ops = ops.clone();
        async move {
            admin
                .list_audit_entries(with_token(
                    pb::ListAuditEntriesRequest {
                        since,
                        page_size,
                        page_token,
                    },
                    Some(&ops),
                ))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let entries = list(None, 0, String::new()).await.entries;
    let said: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str(), e.target.as_str()))
        .collect();
    let replay_target = format!("kind webhook, form {form}");
    assert_eq!(
        said,
        [
            ("POSTSUB_ADMIN_TOKEN", "binding.create", checks.id.as_str()),
            ("ops", "dlq.replay", replay_target.as_str()),
            ("ops", "binding.delete", created.id.as_str()),
            ("ops", "binding.update", created.id.as_str()),
            ("ops", "binding.create", created.id.as_str()),
        ]
    );
    let json = |value: &Option<prost_types::Value>| {
        value
            .clone()
            .map(postsub::json::from_proto_value)
            .unwrap_or_default()
    };
    let (update, create) = (&entries[3], &entries[4]);
    assert_eq!(json(&create.before), serde_json::Value::Null);
    assert_eq!(json(&create.after)["name"], "hook");
    assert_eq!(json(&update.before)["name"], "hook");
    assert_eq!(json(&update.after)["name"], "renamed");
    assert_eq!(json(&entries[2].after), serde_json::Value::Null);
    assert_eq!(
        json(&entries[1].after),
        json!({"replayed": 0, "unknown": 0})
    );
    assert_eq!(
        json(&create.after)["config"]["url"],
        "http://127.0.0.1:9/hook"
    );
    let everything = format!("{entries:?}");
    assert!(!everything.contains(SECRET), "the secret is in the log");
    assert!(
        everything.contains("whsec_********"),
        "masked as the API masks it"
    );

    // Newest first, in pages, and since a time.
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(None, 2, token).await;
        assert!(page.entries.len() <= 2);
        paged.extend(page.entries.into_iter().map(|e| e.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(paged, entries.iter().map(|e| e.id).collect::<Vec<_>>());
    let later = entries[0].at.unwrap();
    let since = list(Some(later), 0, String::new()).await.entries;
    assert_eq!(since.first().map(|e| e.id), Some(entries[0].id));
    let future = prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + 60,
        nanos: 0,
    };
    assert!(
        list(Some(future), 0, String::new())
            .await
            .entries
            .is_empty()
    );
    store.close().await;
    proxy.stack.stop().await.unwrap();
}
