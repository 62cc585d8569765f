//! The embedded backend on a disk that fills up: `Process` answers `UNAVAILABLE` instead of
//! pretending, and once there is room again every job it did confirm is delivered.
//!
//! The disk is a small tmpfs this test mounts (`mount -t tmpfs`, so it runs as a user
//! allowed to mount: root on the project's machines) and grows afterwards with a remount;
//! a guard unmounts it even when the test fails.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use postsub::pb::{
    self, post_submission_client::PostSubmissionClient, task_admin_client::TaskAdminClient,
};
use postsub_proxy::{app::DevStack, settings::DevSettings};
use postsub_tasks::{Registry, TargetPolicy};
use postsub_testkit::WebhookReceiver;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use uuid::Uuid;

mod common;

use common::{form_runs, object, process_request};

/// A tmpfs of `size` mounted on a fresh directory, unmounted and removed when dropped.
struct Tmpfs {
    dir: PathBuf,
}

fn mount(args: &[&str]) {
    let status = Command::new("mount")
        .args(args)
        .status()
        .expect("mount runs (the test mounts a tmpfs)");
    assert!(status.success(), "mount {args:?}");
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("postsub-full-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        mount(&[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "tmpfs",
            &dir.display().to_string(),
        ]);
        Self { dir }
    }

    fn resize(&self, size: &str) {
        mount(&[
            "-o",
            &format!("remount,size={size}"),
            &self.dir.display().to_string(),
        ]);
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_full_disk_makes_process_unavailable_and_loses_nothing_it_confirmed() {
    let disk = Tmpfs::mount("2m");
    let database = disk.path().join("postsub.db").display().to_string();
    let settings = DevSettings::embedded(&database, &[]).unwrap();
    let stack = DevStack::start(
        &settings,
        Registry::with_builtins_for(TargetPolicy::dev()),
        CancellationToken::new(),
    )
    .await
    .expect("postsub starts on the small disk");
    let grpc = format!("http://{}", stack.grpc_addr());
    // Nothing listens at the webhook's URL until the disk has room again: the jobs are
    // retried every second meanwhile, and their attempts written too, when they can be.
    let form = Uuid::new_v4();
    let mut admin = TaskAdminClient::connect(grpc.clone()).await.unwrap();
    let secret = "whsec_c2VjcmV0";
    let binding = admin
        .create_binding(pb::CreateBindingRequest {
            form_id: form.to_string(),
            name: "hook".into(),
            kind: "webhook".into(),
            mode: pb::Mode::Async.into(),
            config: Some(object(
                json!({"url": "http://127.0.0.1:9/hook", "secret": secret}),
            )),
            options: Some(pb::BindingOptions {
                max_attempts: Some(1000),
                backoff_initial: "100ms".into(),
                backoff_max: "1s".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    // Large answers, until the disk is full.
    let mut client = PostSubmissionClient::connect(grpc.clone()).await.unwrap();
    let essay = "x".repeat(100_000);
    let mut confirmed = HashSet::new();
    let refusal = loop {
        assert!(confirmed.len() < 200, "the 2 MB disk never filled up");
        let request = process_request(form, json!({"essay": essay}));
        match client.process(request).await {
            Ok(reply) => {
                confirmed.insert(reply.into_inner().jobs[0].run_id.clone());
            }
            Err(status) => break status,
        }
    };
    assert_eq!(refusal.code(), Code::Unavailable, "{refusal:?}");
    assert!(
        refusal.message().contains("full"),
        "the answer says why: {}",
        refusal.message()
    );
    eprintln!(
        "{} calls confirmed before the disk filled; then: {}",
        confirmed.len(),
        refusal.message()
    );
    assert!(!confirmed.is_empty());

    // Room again, and a receiver: every confirmed job arrives.
    disk.resize("256m");
    let receiver = WebhookReceiver::start().await;
    admin
        .update_binding(pb::UpdateBindingRequest {
            id: binding.id,
            config: Some(object(
                json!({"url": receiver.url, "secret": receiver.secret}),
            )),
            ..Default::default()
        })
        .await
        .expect("the binding can be changed once there is room");
    let start = Instant::now();
    loop {
        let runs = form_runs(&grpc, form).await;
        let succeeded: HashSet<String> = runs
            .iter()
            .filter(|run| run.status() == pb::RunStatus::Succeeded)
            .map(|run| run.run_id.clone())
            .collect();
        if confirmed.is_subset(&succeeded) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{} of {} confirmed jobs succeeded",
            confirmed.intersection(&succeeded).count(),
            confirmed.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stack.stop().await.unwrap();
}
