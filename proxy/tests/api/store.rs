//! The store's claims, on both backends: a batch of first deliveries takes each run that
//! may start once, leaves finished and held runs alone, and never deadlocks with a history
//! batch over the same runs.

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

crate::contract!(
    a_batch_of_claims_takes_each_run_that_may_start_once,
    claim_and_history_batches_over_the_same_runs_do_not_deadlock
);

/// The services of a fresh backend, its database migrated.
async fn services(backend: Backend) -> (Resources, Services) {
    let resources = Resources::create(backend).await;
    let opened = resources.settings(&[]).backend().unwrap();
    opened.database.migrate().await.unwrap();
    let services = Services::start(&opened, Registry::with_builtins())
        .await
        .unwrap();
    (resources, services)
}

/// A queued webhook run of `binding` for a new submission, and its job.
fn job(binding: Uuid) -> (Run, Job) {
    let submission = Submission {
        form_id: Uuid::new_v4(),
        submission_id: Uuid::new_v4(),
        answers: json!({"n": 1}).as_object().cloned().unwrap(),
        submitted_at: Utc::now(),
        metadata: Default::default(),
        event: Default::default(),
        revision: 0,
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
}

async fn a_batch_of_claims_takes_each_run_that_may_start_once(backend: Backend) {
    let (_resources, services) = services(backend).await;
    let store = services.store.clone();
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
        store
            .get_run(finished.0.run_id)
            .await
            .unwrap()
            .unwrap()
            .status,
        RunStatus::Succeeded
    );
    services.stop().await;
}

/// The worker claims jobs whose queued records the proxy is still writing: both statements
/// lock the same runs, and in batches they must take them in the same order.
async fn claim_and_history_batches_over_the_same_runs_do_not_deadlock(backend: Backend) {
    let (_resources, services) = services(backend).await;
    let store = services.store.clone();
    let binding = Uuid::new_v4();
    for _ in 0..20 {
        let claims: Vec<(Run, Job)> = (0..64).map(|_| job(binding)).collect();
        // The proxy's records in the opposite order to the claims.
        let queued: Vec<(Run, RunWrite)> = claims
            .iter()
            .rev()
            .map(|(run, _)| (run.clone(), RunWrite::InsertIfAbsent))
            .collect();
        let (claimed, written) =
            tokio::join!(store.claim_runs(&claims), store.write_history(&queued, &[]));
        written.expect("the history batch is written");
        let claimed = claimed.expect("the claims are made");
        assert!(
            claimed.iter().all(|attempt| *attempt == Some(1)),
            "each run is taken once, whichever statement came first: {claimed:?}"
        );
    }
    services.stop().await;
}
