//! TLS, tried with the real binary and a CA made in the test: the CLI and the layer reach
//! `postsub serve` over `https://` when they trust its CA and fail when they trust another;
//! with `POSTSUB_TLS_CLIENT_CA` (mutual TLS) a client without a certificate of that CA is
//! refused; certificate files that do not parse stop the start-up with a clear error.

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

mod common;

use common::{free_port, postsub, run_postsub, terminate};
use http::StatusCode;
use postsub::{ClientTls, PostSubmissionLayer};
use postsub_testkit::{
    TestSqlite,
    form_backend::{stored_submission, submit, submit_route},
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use serde_json::{Value, json};
use tokio::process::Child;

const ADMIN_TOKEN: &str = "tls-test-admin-token-0123456789abcdefghij";

/// A certificate authority made for one test, and the certificates it signs, as PEM files.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    name: &'static str,
}

impl TestCa {
    fn new(dir: &Path, name: &'static str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("postsub test CA {name}"));
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let ca = Self {
            issuer,
            dir: dir.to_owned(),
            name,
        };
        std::fs::write(ca.path("ca.pem"), ca.issuer.pem()).unwrap();
        ca
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(format!("{}-{file}", self.name))
    }

    /// The CA's certificate file.
    fn ca_file(&self) -> String {
        self.path("ca.pem").display().to_string()
    }

    /// A certificate for `names` and its key, written as `{who}.pem` and `{who}.key`.
    fn sign(&self, who: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, who);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) = (
            self.path(&format!("{who}.pem")),
            self.path(&format!("{who}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (
            cert_path.display().to_string(),
            key_path.display().to_string(),
        )
    }

    /// A server certificate for 127.0.0.1 and localhost.
    fn server(&self) -> (String, String) {
        self.sign(
            "server",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate.
    fn client(&self) -> (String, String) {
        self.sign("client", &[], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// `postsub serve` over TLS on a migrated file, with `tls` settings; its https URL and log.
async fn serve_tls(file: &TestSqlite, tls: &[(&str, &str)], log: &str) -> (Child, String, PathBuf) {
    let migrated = run_postsub(&["migrate"], &[("DATABASE_URL", file.url.as_str())]);
    assert!(migrated.status.success(), "{}", text(&migrated.stderr));
    let port = free_port();
    let grpc_addr = format!("127.0.0.1:{port}");
    let log_path = file.path.with_extension(log);
    let mut env = vec![
        ("DATABASE_URL", file.url.as_str()),
        ("POSTSUB_GRPC_ADDR", grpc_addr.as_str()),
        ("POSTSUB_HTTP_ADDR", "127.0.0.1:0"),
        ("POSTSUB_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    env.extend_from_slice(tls);
    let child = postsub(&["serve"], &env, &log_path);
    (child, format!("https://127.0.0.1:{port}"), log_path)
}

/// Waits until the proxy at `url` takes a connection of a client with `tls`.
async fn wait_for_tls_proxy(url: &str, tls: ClientTls, log: &Path) {
    let endpoint = tls.endpoint(url).unwrap();
    for _ in 0..300 {
        if endpoint.connect().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the proxy at {url} did not start: {}", read(log));
}

/// `postsub ARGS` as a client of `url`, with the admin token.
fn cli(url: &str, args: &[&str]) -> Output {
    let mut all = vec!["--server", url, "--token", ADMIN_TOKEN];
    all.extend_from_slice(args);
    run_postsub(&all, &[])
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A submission through `layer`, with the admin token: its status and body.
async fn submit_through(layer: PostSubmissionLayer) -> (StatusCode, Value) {
    let layer = layer.bearer_token(ADMIN_TOKEN).unwrap();
    submit(submit_route(
        layer,
        StatusCode::CREATED,
        stored_submission(json!({"a": 1})),
    ))
    .await
}

#[tokio::test]
async fn the_cli_and_the_layer_reach_a_tls_proxy_through_its_ca_and_no_other() {
    let file = TestSqlite::create("tls");
    let dir = file.path.parent().unwrap().to_owned();
    let (ca, other) = (TestCa::new(&dir, "ours"), TestCa::new(&dir, "other"));
    let (cert, key) = ca.server();
    let (mut serve, url, log) = serve_tls(
        &file,
        &[("POSTSUB_TLS_CERT", &cert), ("POSTSUB_TLS_KEY", &key)],
        "serve.log",
    )
    .await;
    let ca_pem = std::fs::read(ca.ca_file()).unwrap();
    wait_for_tls_proxy(&url, ClientTls::default().ca_certificate(&ca_pem), &log).await;
    assert!(read(&log).contains("gRPC over TLS"), "{}", read(&log));

    let kinds = cli(&url, &["--ca-cert", &ca.ca_file(), "kinds"]);
    assert!(kinds.status.success(), "{}", text(&kinds.stderr));
    assert!(text(&kinds.stdout).contains("validate"));

    let other_ca = other.ca_file();
    for (why, args) in [
        ("another CA", vec!["--ca-cert", other_ca.as_str(), "kinds"]),
        ("the system's roots", vec!["kinds"]),
    ] {
        let refused = cli(&url, &args);
        let stderr = text(&refused.stderr);
        assert!(!refused.status.success(), "{why}: {stderr}");
        assert!(
            stderr.contains("cannot reach the postsub proxy") && stderr.contains("certificate"),
            "{why}: {stderr}"
        );
    }
    let plain = cli(&url.replace("https", "http"), &["kinds"]);
    assert!(!plain.status.success(), "plain HTTP/2 to a TLS port");
    assert!(
        text(&plain.stderr).contains("https://"),
        "{}",
        text(&plain.stderr)
    );
    let not_https = cli(
        &url.replace("https", "http"),
        &["--ca-cert", &ca.ca_file(), "kinds"],
    );
    assert!(
        text(&not_https.stderr).contains("is not an https:// address"),
        "{}",
        text(&not_https.stderr)
    );
    let not_a_ca = cli(&url, &["--ca-cert", &cert.replace(".pem", ".key"), "kinds"]);
    assert!(
        text(&not_a_ca.stderr).contains("holds no PEM certificate"),
        "{}",
        text(&not_a_ca.stderr)
    );

    let (status, body) = submit_through(
        PostSubmissionLayer::connect_lazy(&url)
            .unwrap()
            .ca_certificate(&ca_pem)
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["post_submission"]["error"], Value::Null, "{body}");
    assert!(body["post_submission"]["sync_results"].is_array(), "{body}");
    let other_pem = std::fs::read(other.ca_file()).unwrap();
    let (status, body) = submit_through(
        PostSubmissionLayer::connect_lazy(&url)
            .unwrap()
            .ca_certificate(&other_pem)
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "the submission still succeeds");
    let error = body["post_submission"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("post-submission tasks did not run"),
        "{body}"
    );
    assert!(terminate(&mut serve).await, "serve exits cleanly");
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate_of_its_ca() {
    let file = TestSqlite::create("mtls");
    let dir = file.path.parent().unwrap().to_owned();
    let (ca, other) = (TestCa::new(&dir, "ours"), TestCa::new(&dir, "other"));
    let (cert, key) = ca.server();
    let client_ca = ca.ca_file();
    let (mut serve, url, log) = serve_tls(
        &file,
        &[
            ("POSTSUB_TLS_CERT", &cert),
            ("POSTSUB_TLS_KEY", &key),
            ("POSTSUB_TLS_CLIENT_CA", &client_ca),
        ],
        "serve.log",
    )
    .await;
    let ca_pem = std::fs::read(ca.ca_file()).unwrap();
    let (client_cert, client_key) = ca.client();
    let (stranger_cert, stranger_key) = other.client();
    let ours = ClientTls::from_pem_files(
        Some(Path::new(&client_ca)),
        Some((Path::new(&client_cert), Path::new(&client_key))),
    )
    .unwrap();
    wait_for_tls_proxy(&url, ours, &log).await;
    assert!(
        read(&log).contains("clients must show a certificate"),
        "{}",
        read(&log)
    );

    let with_cert = cli(
        &url,
        &[
            "--ca-cert",
            &client_ca,
            "--client-cert",
            &client_cert,
            "--client-key",
            &client_key,
            "kinds",
        ],
    );
    assert!(with_cert.status.success(), "{}", text(&with_cert.stderr));
    for (why, args) in [
        (
            "no certificate",
            vec!["--ca-cert", client_ca.as_str(), "kinds"],
        ),
        (
            "another CA's certificate",
            vec![
                "--ca-cert",
                client_ca.as_str(),
                "--client-cert",
                stranger_cert.as_str(),
                "--client-key",
                stranger_key.as_str(),
                "kinds",
            ],
        ),
    ] {
        let refused = cli(&url, &args);
        assert!(
            !refused.status.success(),
            "{why}: {}",
            text(&refused.stdout)
        );
    }
    let key_alone = cli(&url, &["--client-key", &client_key, "kinds"]);
    assert!(
        text(&key_alone.stderr).contains("--client-cert"),
        "{}",
        text(&key_alone.stderr)
    );

    let layer = || {
        PostSubmissionLayer::connect_lazy(&url)
            .unwrap()
            .ca_certificate(&ca_pem)
            .unwrap()
    };
    let (_, body) = submit_through(
        layer()
            .client_identity(
                std::fs::read(&client_cert).unwrap(),
                std::fs::read(&client_key).unwrap(),
            )
            .unwrap(),
    )
    .await;
    assert_eq!(body["post_submission"]["error"], Value::Null, "{body}");
    let (status, body) = submit_through(layer()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(
        body["post_submission"]["error"].is_string(),
        "a layer without a certificate is refused: {body}"
    );
    assert!(terminate(&mut serve).await, "serve exits cleanly");
}

#[tokio::test]
async fn certificate_files_that_do_not_parse_stop_the_start_up() {
    let file = TestSqlite::create("bad-tls");
    let dir = file.path.parent().unwrap().to_owned();
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let garbage = garbage.display().to_string();
    let ca = TestCa::new(&dir, "ours");
    let (cert, key) = ca.server();
    for (why, tls, expected) in [
        (
            "a key that is not one",
            vec![
                ("POSTSUB_TLS_CERT", cert.as_str()),
                ("POSTSUB_TLS_KEY", garbage.as_str()),
            ],
            "POSTSUB_TLS_CERT, POSTSUB_TLS_KEY or POSTSUB_TLS_CLIENT_CA",
        ),
        (
            "a client CA that holds no certificate",
            vec![
                ("POSTSUB_TLS_CERT", cert.as_str()),
                ("POSTSUB_TLS_KEY", key.as_str()),
                ("POSTSUB_TLS_CLIENT_CA", garbage.as_str()),
            ],
            "holds no PEM certificate",
        ),
        (
            "a file that is not there",
            vec![
                ("POSTSUB_TLS_CERT", "/nonexistent.pem"),
                ("POSTSUB_TLS_KEY", key.as_str()),
            ],
            "cannot read POSTSUB_TLS_CERT /nonexistent.pem",
        ),
        (
            "a certificate without its key",
            vec![("POSTSUB_TLS_CERT", cert.as_str())],
            "--tls-key",
        ),
    ] {
        let (mut serve, _, log) = serve_tls(&file, &tls, "bad.log").await;
        let status = tokio::time::timeout(Duration::from_secs(20), serve.wait())
            .await
            .expect("serve exits")
            .unwrap();
        assert!(!status.success(), "{why}");
        let log = read(&log);
        assert!(log.contains(expected), "{why}: {log}");
        std::fs::remove_file(file.path.with_extension("bad.log")).unwrap();
    }
}
