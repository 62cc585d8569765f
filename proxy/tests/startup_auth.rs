//! Secure by default, tried with the real binary: `serve` without any token refuses to
//! start and says how to make one; `--no-auth` starts and warns; `dev` on loopback needs no
//! token for a first run, and on another address it does; `postsub tokens` makes, lists and
//! revokes tokens that the CLI then has to carry.

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

mod common;

use common::{free_port, postsub, run_postsub, terminate, wait_for_proxy};
use postsub_testkit::TestSqlite;
use tokio::process::Child;

/// Runs the `postsub` command line to its end on `database`, talking to `server`.
fn cli(args: &[&str], database: &str, server: &str) -> Output {
    run_postsub(
        args,
        &[("DATABASE_URL", database), ("POSTSUB_SERVER", server)],
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `postsub ARGS` on `file`, listening for gRPC on a free port of `host`; returns the
/// process, the proxy's URL and its log (named `log` beside the file).
fn start(args: &[&str], file: &TestSqlite, host: &str, log: &str) -> (Child, String, PathBuf) {
    let grpc_addr = format!("{host}:{}", free_port());
    let log_path = file.path.with_extension(log);
    let env = [
        ("DATABASE_URL", file.url.as_str()),
        ("POSTSUB_GRPC_ADDR", grpc_addr.as_str()),
        ("POSTSUB_HTTP_ADDR", "127.0.0.1:0"),
    ];
    let child = postsub(args, &env, &log_path);
    (child, format!("http://{grpc_addr}"), log_path)
}

/// Waits for `child` to exit and asserts that it failed.
async fn fails(mut child: Child) {
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the process exits")
        .unwrap();
    assert!(!status.success());
}

/// A migrated SQLite file.
fn migrated(name: &str) -> TestSqlite {
    let file = TestSqlite::create(name);
    let migrated = cli(&["migrate"], &file.url, "");
    assert!(migrated.status.success(), "{}", text(&migrated.stderr));
    file
}

#[tokio::test]
async fn serve_without_any_token_refuses_to_start_and_says_how_to_make_one() {
    let file = migrated("no-token");
    let (serve, _, log_path) = start(&["serve"], &file, "127.0.0.1", "serve.log");
    fails(serve).await;
    let log = log(&log_path);
    assert!(
        log.contains("no API token exists")
            && log.contains("postsub tokens create --name NAME --scope admin")
            && log.contains("--no-auth"),
        "{log}"
    );
}

#[tokio::test]
async fn serve_with_no_auth_starts_and_warns() {
    let file = migrated("no-auth");
    let (mut serve, server, log_path) =
        start(&["serve", "--no-auth"], &file, "127.0.0.1", "serve.log");
    wait_for_proxy(&server).await;
    // `host:port` is taken as `http://host:port`.
    let kinds = cli(&["kinds"], &file.url, server.trim_start_matches("http://"));
    assert!(kinds.status.success(), "{}", text(&kinds.stderr));
    assert!(terminate(&mut serve).await);
    let log = log(&log_path);
    assert!(
        log.contains("WARN")
            && log.contains("--no-auth: this proxy answers every call without a token"),
        "{log}"
    );
}

#[tokio::test]
async fn dev_needs_no_token_on_loopback_and_refuses_to_start_without_one_elsewhere() {
    let file = TestSqlite::create("dev");
    let (mut dev, server, log_path) = start(&["dev"], &file, "127.0.0.1", "dev.log");
    wait_for_proxy(&server).await;
    let kinds = cli(&["kinds"], &file.url, &server);
    assert!(kinds.status.success(), "{}", text(&kinds.stderr));
    assert!(terminate(&mut dev).await);
    assert!(log(&log_path).contains("no token needed: `postsub dev` on a loopback address"));

    // Reachable from other machines, dev is held to serve's rule.
    let (dev, _, open_log) = start(&["dev"], &file, "0.0.0.0", "dev-open.log");
    fails(dev).await;
    assert!(
        log(&open_log).contains("no API token exists"),
        "{}",
        log(&open_log)
    );
}

#[tokio::test]
async fn tokens_are_made_listed_and_revoked_and_the_cli_must_carry_one() {
    let file = migrated("tokens");
    let created = cli(
        &["tokens", "create", "--name", "ops", "--scope", "admin"],
        &file.url,
        "",
    );
    assert!(created.status.success(), "{}", text(&created.stderr));
    // stdout is the token alone, so `TOKEN=$(postsub tokens create …)` works.
    let token = text(&created.stdout).trim().to_owned();
    assert!(
        token.starts_with("pst_") && !token.contains(char::is_whitespace),
        "{token}"
    );
    assert!(text(&created.stderr).contains("shown only this once"));
    let again = cli(
        &["tokens", "create", "--name", "ops", "--scope", "read"],
        &file.url,
        "",
    );
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("a token named \"ops\" exists already"));
    let reader = cli(
        &["tokens", "create", "--name", "dash", "--scope", "read"],
        &file.url,
        "",
    );
    let reader = text(&reader.stdout).trim().to_owned();

    let listed = cli(&["tokens", "list", "--json"], &file.url, "");
    let listed_text = text(&listed.stdout);
    let rows: serde_json::Value = serde_json::from_str(&listed_text).unwrap();
    let names: Vec<_> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].clone(), r["scope"].clone()))
        .collect();
    assert_eq!(
        names,
        [
            ("ops".into(), "admin".into()),
            ("dash".into(), "read".into())
        ]
    );
    assert!(!listed_text.contains(&token) && !listed_text.contains(&reader));

    let (mut serve, server, log_path) = start(&["serve"], &file, "127.0.0.1", "serve.log");
    wait_for_proxy(&server).await;
    let refused = cli(&["kinds"], &file.url, &server);
    assert!(!refused.status.success());
    let refusal = text(&refused.stderr);
    assert!(
        refusal.contains("Unauthenticated") && refusal.contains("--token"),
        "{refusal}"
    );
    // Client flags go before or after the command.
    let kinds = cli(&["kinds", "--token", &reader], &file.url, &server);
    assert!(kinds.status.success(), "{}", text(&kinds.stderr));
    let kinds = cli(
        &["--token", &reader, "--server", &server, "kinds"],
        &file.url,
        "",
    );
    assert!(kinds.status.success(), "{}", text(&kinds.stderr));
    let denied = cli(&["dlq", "replay", "--token", &reader], &file.url, &server);
    let denial = text(&denied.stderr);
    assert!(
        denial.contains("PermissionDenied") && denial.contains("`admin` scope"),
        "{denial}"
    );

    let revoked = cli(&["tokens", "revoke", "dash"], &file.url, "");
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    let gone = cli(&["tokens", "revoke", "dash"], &file.url, "");
    assert!(text(&gone.stderr).contains("no token is named \"dash\""));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = cli(&["kinds", "--token", &reader], &file.url, &server);
    assert!(text(&after.stderr).contains("unknown or revoked token"));

    // The audit log holds the token changes, by the user who ran `postsub tokens`, and
    // what the admin token changed through the API; never a token.
    let bound = cli(
        &[
            "bindings",
            "create",
            "--token",
            &token,
            "--form",
            &uuid::Uuid::new_v4().to_string(),
            "--name",
            "checks",
            "--kind",
            "validate",
            "--mode",
            "sync",
            "--config",
            "{}",
        ],
        &file.url,
        &server,
    );
    assert!(bound.status.success(), "{}", text(&bound.stderr));
    // A replay without a filter says what it touches first (stdin is not a terminal here,
    // so it does not ask).
    let replay = cli(&["dlq", "replay", "--token", &token], &file.url, &server);
    assert!(replay.status.success(), "{}", text(&replay.stderr));
    assert!(
        text(&replay.stderr).contains("replaying the dead letters of every kind and form")
            && text(&replay.stderr).contains("webhook 0"),
        "{}",
        text(&replay.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&replay.stdout).unwrap();
    assert_eq!(answer, serde_json::json!({"replayed": 0, "unknown": 0}));
    let audit = cli(
        &["audit", "list", "--json", "--token", &token],
        &file.url,
        &server,
    );
    assert!(audit.status.success(), "{}", text(&audit.stderr));
    let audit_text = text(&audit.stdout);
    let entries: serde_json::Value = serde_json::from_str(&audit_text).unwrap();
    let said: Vec<(String, String, String)> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let field = |key: &str| e[key].as_str().unwrap().to_owned();
            (field("actor"), field("action"), field("target"))
        })
        .collect();
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown user".into());
    let by_cli = format!("postsub tokens ({user})");
    assert_eq!(said.len(), 5, "{audit_text}");
    assert_eq!(
        (said[0].0.as_str(), said[0].1.as_str()),
        ("ops", "dlq.replay")
    );
    assert_eq!(
        (said[1].0.as_str(), said[1].1.as_str()),
        ("ops", "binding.create")
    );
    assert_eq!(
        said[2],
        (by_cli.clone(), "token.revoke".into(), "dash".into())
    );
    assert_eq!(
        said[3],
        (by_cli.clone(), "token.create".into(), "dash".into())
    );
    assert_eq!(said[4], (by_cli, "token.create".into(), "ops".into()));
    assert!(!audit_text.contains(&token) && !audit_text.contains(&reader));
    let table = cli(
        &["audit", "list", "--since", "1h", "--token", &token],
        &file.url,
        &server,
    );
    let table = text(&table.stdout);
    assert!(
        table.starts_with("AT") && table.lines().count() == 6,
        "{table}"
    );
    let bad_since = cli(
        &["audit", "list", "--since", "yesterday-ish"],
        &file.url,
        &server,
    );
    assert!(
        text(&bad_since.stderr).contains("neither an RFC 3339 time nor an age"),
        "{}",
        text(&bad_since.stderr)
    );
    assert!(terminate(&mut serve).await);
    // No token reaches the log.
    let log = log(&log_path);
    assert!(!log.contains(&token) && !log.contains(&reader), "{log}");
}

#[test]
fn an_unreachable_proxy_is_said_once() {
    let nowhere = format!("127.0.0.1:{}", free_port());
    let output = cli(&["kinds"], "", &nowhere);
    assert!(!output.status.success());
    let error = text(&output.stderr);
    assert!(
        error.starts_with(&format!(
            "error: cannot reach the postsub proxy at http://{nowhere}: "
        )) && error.matches("tcp connect error").count() == 1
            && error.lines().count() == 1,
        "{error}"
    );
}

#[test]
fn bindings_create_asks_for_its_config() {
    let form = uuid::Uuid::new_v4().to_string();
    let args = [
        "bindings", "create", "--form", &form, "--name", "x", "--kind", "validate",
    ];
    let output = cli(
        &[&args[..], &["--mode", "sync"]].concat(),
        "",
        "127.0.0.1:1",
    );
    assert!(!output.status.success());
    let error = text(&output.stderr);
    assert!(
        error.contains("the following required arguments were not provided")
            && error.contains("--config <CONFIG>"),
        "{error}"
    );
}
