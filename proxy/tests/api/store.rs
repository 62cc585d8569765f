//! The store's claims, on both backends: a batch of first deliveries takes each run that
//! may start once, and leaves finished and held runs alone.

use chrono::Utc;
use postsub_proxy::{
    app::Services,
    job::Job,
    run::{Run, RunStatus},
    store::RunWrite,
};
use postsub_tasks::{Mode, Registry, Submission};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{Backend, Resources};

crate::contract!(a_batch_of_claims_takes_each_run_that_may_start_once);

async fn a_batch_of_claims_takes_each_run_that_may_start_once(backend: Backend) {
    let resources = Resources::create(backend).await;
    let settings = resources.settings(&[]);
    let opened = settings.backend().unwrap();
    opened.database.migrate().await.unwrap();
    let services = Services::start(&opened, Registry::with_builtins())
        .await
        .unwrap();
    let store = services.store.clone();
    let form = Uuid::new_v4();
    let job = |binding: Uuid| {
        let submission = Submission {
            form_id: form,
            submission_id: Uuid::new_v4(),
            answers: json!({"n": 1}).as_object().cloned().unwrap(),
            submitted_at: Utc::now(),
            metadata: Default::default(),
        };
        let run = Run::queued(binding, "webhook", Mode::Async, &submission, Utc::now());
        let job = Job {
            run_id: run.run_id,
            binding_id: binding,
            kind: "webhook".into(),
            queued_at: run.created_at,
            attempts_before: 0,
            submission,
        };
        (run, job)
    };
    let binding = Uuid::new_v4();
    // Not in the history yet (the proxy's record still on its way), queued, finished.
    let (fresh, queued, finished) = (job(binding), job(binding), job(binding));
    let mut done = finished.0.clone();
    done.status = RunStatus::Succeeded;
    done.attempts = 1;
    store
        .write_history(
            &[
                (queued.0.clone(), RunWrite::InsertIfAbsent),
                (done, RunWrite::Upsert),
            ],
            &[],
        )
        .await
        .unwrap();

    let claims = [fresh.clone(), queued.clone(), finished.clone()];
    assert_eq!(
        store.claim_runs(&claims).await.unwrap(),
        [Some(1), Some(1), None],
        "the fresh and the queued run are taken, the finished one is not"
    );
    for (run, job) in [&fresh, &queued] {
        let taken = store.get_run(run.run_id).await.unwrap().unwrap();
        assert_eq!(taken.status, RunStatus::Running);
        assert_eq!(
            store.run_input(run.run_id).await.unwrap().unwrap().run_id,
            job.run_id,
            "the job is kept as the run's input"
        );
    }
    assert_eq!(
        store.claim_runs(&claims[..2]).await.unwrap(),
        [None, None],
        "a first delivery never takes over a running run"
    );
    assert_eq!(
        store.claim_run(&fresh.0, &fresh.1, true).await.unwrap(),
        Some(2),
        "a redelivered one does"
    );
    assert_eq!(
        store.get_run(finished.0.run_id).await.unwrap().unwrap().status,
        RunStatus::Succeeded
    );
    services.stop().await;
}
