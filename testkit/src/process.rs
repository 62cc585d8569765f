//! A postsub binary (the `postsub` one, or a task author's) run as a process the way an
//! operator runs it: started with flags and environment, waited for, stopped or killed.

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use postsub::pb::task_admin_client::TaskAdminClient;
use tokio::process::{Child, Command};

/// A port nothing listens on now, for a process that must be reached at a known address
/// (and started again on the same one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Starts the binary at `program` with `args` and `env` (after `RUST_LOG=info`, so `env`
/// may set its own; without the `AMQP_URL` the tests run with), its stderr appended to
/// `log`. Killed when dropped.
pub fn spawn(program: &str, args: &[&str], env: &[(&str, &str)], log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the process log");
    Command::new(program)
        .args(args)
        .env_remove("AMQP_URL")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|err| panic!("{program} starts: {err}"))
}

/// Waits until the admin API at `grpc` answers.
pub async fn wait_for_proxy(grpc: &str) {
    let start = Instant::now();
    while TaskAdminClient::connect(grpc.to_owned()).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the proxy at {grpc} did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends SIGTERM to `child` and waits for it to exit; true when it exited cleanly.
pub async fn terminate(child: &mut Child) -> bool {
    let pid = child.id().expect("a running child").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill -TERM {pid}");
    tokio::time::timeout(Duration::from_secs(40), child.wait())
        .await
        .expect("the process stops within its drain timeout")
        .expect("wait for the process")
        .success()
}
