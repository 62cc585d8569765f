//! The embedded backend's own failure modes: files it must refuse and leave alone, and a
//! database another program keeps locked.

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use postsub::pb;
use postsub_proxy::{
    app::{DevStack, Services},
    settings::DevSettings,
};
use postsub_testkit::{TestSqlite, WebhookReceiver};
use serde_json::json;
use sqlx::{Connection as _, Executor as _, SqliteConnection};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{Backend, binding, eventually, process, registry, spawn_proxy_with};

/// `postsub dev` on `file`, or why it did not start.
async fn start(file: &str) -> anyhow::Result<DevStack> {
    let settings = DevSettings::embedded(file, &[]).expect("settings parse");
    DevStack::start(
        &settings,
        registry(Arc::new(AtomicBool::new(false))),
        CancellationToken::new(),
    )
    .await
}

fn refusal(started: anyhow::Result<DevStack>) -> String {
    match started {
        Ok(_) => panic!("postsub must refuse the file"),
        Err(err) => format!("{err:#}"),
    }
}

#[tokio::test]
async fn files_that_are_not_postsub_databases_are_refused_and_left_as_they_were() {
    // Not a database at all.
    let file = TestSqlite::create("garbage");
    let garbage = b"these are someone's notes, not a database\n".repeat(100);
    std::fs::write(&file.path, &garbage).unwrap();
    let error = refusal(start(&file.url).await);
    assert!(error.contains("is not a SQLite database"), "{error}");
    assert!(error.contains(&file.path.display().to_string()), "{error}");
    assert_eq!(
        std::fs::read(&file.path).unwrap(),
        garbage,
        "left as it was"
    );

    // Another program's SQLite database.
    let other = TestSqlite::create("other");
    let mut connection = SqliteConnection::connect(&format!("{}?mode=rwc", other.url))
        .await
        .unwrap();
    connection
        .execute("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me')")
        .await
        .unwrap();
    let error = refusal(start(&other.url).await);
    assert!(error.contains("is not a postsub database"), "{error}");
    let kept: String = sqlx::query_scalar("SELECT body FROM notes")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(kept, "keep me");
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table'")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(tables, 1, "nothing was added");
    connection.close().await.unwrap();

    // A postsub database a newer postsub migrated.
    let newer = TestSqlite::create("newer");
    start(&newer.url).await.unwrap().stop().await.unwrap();
    let mut connection = SqliteConnection::connect(&newer.url).await.unwrap();
    connection
        .execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (29990101000000, 'from the future', true, x'00', 0)",
        )
        .await
        .unwrap();
    connection.close().await.unwrap();
    let error = refusal(start(&newer.url).await);
    assert!(
        error.contains("was migrated by a newer postsub (migration 29990101000000)"),
        "{error}"
    );

    // A directory that cannot be made: its parent is a file.
    let blocked = TestSqlite::create("blocked");
    std::fs::write(&blocked.path, b"a file").unwrap();
    let inside = blocked.path.join("sub").join("postsub.db");
    let error = refusal(start(&inside.display().to_string()).await);
    assert!(error.contains("cannot create the directory"), "{error}");
    assert!(error.contains(&inside.display().to_string()), "{error}");
}

#[tokio::test]
async fn serve_on_a_file_never_migrated_says_to_migrate() {
    let file = TestSqlite::create("fresh");
    let settings = DevSettings::embedded(&file.url, &[]).unwrap();
    let Err(err) = Services::start(
        &settings.backend().unwrap(),
        registry(Arc::new(AtomicBool::new(false))),
    )
    .await
    else {
        panic!("a file that was never migrated is refused");
    };
    let message = format!("{err:#}");
    assert!(message.contains("run `postsub migrate` first"), "{message}");
}

#[tokio::test]
async fn a_database_locked_by_another_program_delays_writes_and_loses_none() {
    let proxy = spawn_proxy_with(Backend::Embedded, &[]).await;
    let crate::helpers::Resources::Embedded(file) = &proxy.resources else {
        unreachable!("an embedded test")
    };
    let receiver = WebhookReceiver::start().await;
    let form = Uuid::new_v4();
    proxy
        .admin()
        .await
        .create_binding(binding(
            form,
            "hook",
            "webhook",
            pb::Mode::Async,
            json!({"url": receiver.url, "secret": receiver.secret}),
        ))
        .await
        .unwrap();

    // Another program takes the write lock and keeps it past postsub's busy_timeout (5 s).
    let mut other = SqliteConnection::connect(&file.url).await.unwrap();
    other.execute("BEGIN IMMEDIATE").await.unwrap();
    let locked_at = Instant::now();
    let client = proxy.process_client().await;
    let calls = tokio::spawn(join_all((0..20).map(move |i| {
        let mut client = client.clone();
        async move { client.process(process(form, json!({"n": i}))).await }
    })));
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(!calls.is_finished(), "Process waits for the lock");
    other.execute("ROLLBACK").await.unwrap();
    other.close().await.unwrap();

    let replies = calls.await.unwrap();
    assert!(locked_at.elapsed() >= Duration::from_secs(7));
    let mut run_ids = Vec::new();
    for reply in replies {
        let reply = reply.expect("every call is answered once the lock is free");
        run_ids.push(reply.into_inner().jobs[0].run_id.clone());
    }
    eventually("every job delivered", || async {
        receiver.delivery_count() >= run_ids.len()
    })
    .await;
    for run_id in &run_ids {
        let run = proxy.run_in(run_id, pb::RunStatus::Succeeded).await;
        assert_eq!(run.attempts, 1);
    }
    proxy.stack.stop().await.unwrap();
}
