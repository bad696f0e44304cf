//! Tokens as an operator meets them, with the real binaries: core refuses a
//! non-loopback address while a service there has no token, naming the
//! missing flags, and starts once each has one; every token can come from a
//! file (`--*-token-file`, `--token-file`); the processor and the monitor
//! refuse to send a token in clear text beyond loopback; no token shows in
//! `--help`, in an error or in a log.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use ackflow_proto::v1 as pb;
use ackflow_tests::{bin, free_port, http_exchange, start_processor, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::metadata::MetadataValue;

const PUBLISH_TOKEN: &str = "publish-token-0123456789";
const PROCESSOR_TOKEN: &str = "processor-token-0123456789";
const ADMIN_TOKEN: &str = "admin-token-0123456789";
/// A TEST-NET-1 address (RFC 5737): not loopback, and nothing answers.
const REMOTE_CORE: &str = "http://192.0.2.1:50051";

/// Runs `binary` with `args` and no inherited environment; returns its
/// output. Bounded, since a binary that does not refuse would run on.
async fn run(binary: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(bin(binary));
    command
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .unwrap_or_else(|_| panic!("{binary} {args:?} still runs after 30 s"))
        .expect("the binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Writes `text` to `dir/name` and returns the path as a string.
fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn a_public_bind_without_tokens_is_refused_naming_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.display().to_string();
    let http = format!("0.0.0.0:{}", free_port());
    let grpc = format!("127.0.0.1:{}", free_port());

    // REST beyond loopback serves publishers: the publish token is missing.
    let output = run(
        "e2e-core",
        &[
            "--http-addr",
            &http,
            "--grpc-addr",
            &grpc,
            "--data-dir",
            &data_arg,
        ],
        &[],
    )
    .await;
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("--http-addr {http} needs --publish-token."))
            && text.contains("--insecure"),
        "{text}"
    );
    assert!(!text.contains("--grpc-addr"), "gRPC is on loopback: {text}");
    assert!(!data.exists(), "refused before opening the store");

    // gRPC beyond loopback serves all three roles; the admin token is set
    // (from a file), so only the other two are named.
    let admin_file = write(dir.path(), "admin", &format!("{ADMIN_TOKEN}\n"));
    let http = format!("127.0.0.1:{}", free_port());
    let grpc = format!("0.0.0.0:{}", free_port());
    let output = run(
        "e2e-core",
        &[
            "--http-addr",
            &http,
            "--grpc-addr",
            &grpc,
            "--data-dir",
            &data_arg,
            "--admin-token-file",
            &admin_file,
        ],
        &[],
    )
    .await;
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "--grpc-addr {grpc} needs --publish-token, --processor-token."
        )),
        "{text}"
    );
    assert!(!text.contains(ADMIN_TOKEN), "{text}");
}

#[tokio::test]
async fn token_flags_and_files_are_checked_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let empty = write(dir.path(), "empty", "\n");
    let token_file = write(dir.path(), "token", &format!("{PUBLISH_TOKEN}\n"));

    // An empty file is refused, naming the flag and the file.
    let output = run("e2e-core", &["--publish-token-file", &empty], &[]).await;
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("--publish-token-file") && text.contains(&empty) && text.contains("no token"),
        "{text}"
    );
    // A flag and its file exclude each other (clap says so, exit code 2).
    for (binary, flag) in [
        ("e2e-core", "--publish-token"),
        ("e2e-core", "--processor-token"),
        ("e2e-core", "--admin-token"),
        ("e2e-processor", "--token"),
        ("e2e-monitor", "--token"),
    ] {
        let file_flag = format!("{flag}-file");
        let output = run(binary, &[flag, PUBLISH_TOKEN, &file_flag, &token_file], &[]).await;
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{binary} {flag}: {text}");
        assert!(text.contains(&file_flag), "{binary} {flag}: {text}");
        assert!(!text.contains(PUBLISH_TOKEN), "{binary} {flag}: {text}");
    }
    // A malformed token is refused without being quoted.
    let output = run(
        "e2e-core",
        &["--admin-token", "admin token with spaces"],
        &[],
    )
    .await;
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("--admin-token must be visible ASCII") && !text.contains("with spaces"),
        "{text}"
    );
    // --help shows which variable holds a token, never its value.
    for (binary, var) in [
        ("e2e-core", "ACKFLOW_PUBLISH_TOKEN"),
        ("e2e-core", "ACKFLOW_PROCESSOR_TOKEN"),
        ("e2e-core", "ACKFLOW_ADMIN_TOKEN"),
        ("e2e-processor", "ACKFLOW_PROCESSOR_TOKEN"),
        ("e2e-monitor", "ACKFLOW_ADMIN_TOKEN"),
    ] {
        let output = run(binary, &["--help"], &[(var, PUBLISH_TOKEN)]).await;
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(help.contains(var), "{binary} --help names {var}");
        assert!(!help.contains(PUBLISH_TOKEN), "{binary} --help shows {var}");
    }
}

#[tokio::test]
async fn processor_and_monitor_send_tokens_in_clear_text_to_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = write(dir.path(), "token", &format!("{PROCESSOR_TOKEN}\n"));
    let empty = write(dir.path(), "empty", "");
    for (binary, args) in [
        ("e2e-processor", vec!["--token", PROCESSOR_TOKEN]),
        ("e2e-processor", vec!["--token-file", &token_file]),
        ("e2e-monitor", vec!["--token", PROCESSOR_TOKEN]),
        ("e2e-monitor", vec!["--token-file", &token_file]),
    ] {
        for core in [REMOTE_CORE, "http://core.example:50051", "192.0.2.1:50051"] {
            let mut all = vec!["--core", core];
            all.extend(args.iter().copied());
            let output = run(binary, &all, &[]).await;
            let text = stderr(&output);
            assert_eq!(output.status.code(), Some(1), "{binary} {all:?}: {text}");
            assert!(
                text.contains("refusing to send the token in clear text")
                    && text.contains("https://"),
                "{binary} {all:?}: {text}"
            );
            assert!(!text.contains(PROCESSOR_TOKEN), "{binary} {all:?}: {text}");
        }
    }
    for binary in ["e2e-processor", "e2e-monitor"] {
        let output = run(binary, &["--token-file", &empty], &[]).await;
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{binary}: {text}");
        assert!(
            text.contains("--token-file") && text.contains("no token"),
            "{binary}: {text}"
        );
    }
    // A token file towards loopback is accepted: the monitor gets as far
    // as asking for a terminal (exit code 2), which the test has not.
    let output = run(
        "e2e-monitor",
        &["--core", "http://127.0.0.1:1", "--token-file", &token_file],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

/// A core child process on addresses of its own choosing.
struct PublicCore {
    child: tokio::process::Child,
    log: PathBuf,
    http: std::net::SocketAddr,
    grpc: std::net::SocketAddr,
}

/// `GET path` with a bearer token; returns status and body.
async fn get_with_token(addr: std::net::SocketAddr, path: &str, token: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: core\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

#[tokio::test]
async fn a_public_bind_with_every_token_from_files_starts_and_guards_everything() {
    let dir = tempfile::tempdir().unwrap();
    let publish_file = write(dir.path(), "publish", &format!("{PUBLISH_TOKEN}\n"));
    let processor_file = write(dir.path(), "processor", &format!("{PROCESSOR_TOKEN}\r\n"));
    let admin_file = write(dir.path(), "admin", ADMIN_TOKEN);
    let http_port = free_port();
    let grpc_port = free_port();
    let log = dir.path().join("core.log");
    let file = std::fs::File::create(&log).unwrap();
    let child = tokio::process::Command::new(bin("e2e-core"))
        .args([
            "--http-addr",
            &format!("0.0.0.0:{http_port}"),
            "--grpc-addr",
            &format!("0.0.0.0:{grpc_port}"),
            "--data-dir",
            &dir.path().join("data").display().to_string(),
            "--publish-token-file",
            &publish_file,
            "--processor-token-file",
            &processor_file,
        ])
        // The admin token file comes from the environment.
        .env_clear()
        .env("ACKFLOW_ADMIN_TOKEN_FILE", &admin_file)
        .env("RUST_LOG", "debug")
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut core = PublicCore {
        child,
        log,
        http: format!("127.0.0.1:{http_port}").parse().unwrap(),
        grpc: format!("127.0.0.1:{grpc_port}").parse().unwrap(),
    };
    let http = core.http;
    let log_text = |core: &PublicCore| std::fs::read_to_string(&core.log).unwrap_or_default();
    wait_for("core to be ready", Duration::from_secs(60), || async move {
        matches!(
            http_exchange(http, "GET", "/readyz", None).await,
            Ok(r) if r.status == 200
        )
        .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", log_text(&core)));

    // REST: open probes, guarded events.
    let refused = http_exchange(core.http, "GET", "/v1/events", None)
        .await
        .unwrap();
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(
        refused
            .header("www-authenticate")
            .is_some_and(|c| c.starts_with("Bearer"))
    );
    let metrics = http_exchange(core.http, "GET", "/metrics", None)
        .await
        .unwrap();
    assert_eq!(metrics.status, 200);

    // gRPC: publish with the token from the file.
    let channel = ackflow_tests::channel(core.grpc).await.unwrap();
    let mut ingest = pb::ingest_client::IngestClient::new(channel.clone());
    let event = pb::PublishRequest {
        kind: "sum".into(),
        payload: b"[20,22]".to_vec(),
        ..Default::default()
    };
    let err = ingest.publish(event.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let reply = ingest
        .publish(with_token(event, PUBLISH_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.seq, 1);

    // A processor with its token in a file processes it.
    let mut processor = start_processor(
        dir.path(),
        &format!("http://127.0.0.1:{grpc_port}"),
        &["--token-file", &processor_file],
    )
    .unwrap();
    let http = core.http;
    let body = wait_for(
        "the result of seq 1",
        Duration::from_secs(30),
        || async move {
            let (status, body) = get_with_token(http, "/v1/events/1", PUBLISH_TOKEN).await;
            (status == 200 && body.contains("\"state\":\"ok\"")).then_some(body)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", processor.log_tail(20)));
    assert!(body.contains("42"), "{body}");

    // The admin token from the environment's file opens Admin.
    let mut admin = pb::admin_client::AdminClient::new(channel);
    assert_eq!(
        admin.pause(pb::PauseRequest {}).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    admin
        .resume(with_token(pb::ResumeRequest {}, ADMIN_TOKEN))
        .await
        .unwrap();

    processor.kill().await;
    let _ = core.child.kill().await;
    let logs = log_text(&core) + &processor.log_tail(10_000);
    for token in [PUBLISH_TOKEN, PROCESSOR_TOKEN, ADMIN_TOKEN] {
        assert!(!logs.contains(token), "a token is in the logs");
    }
    assert!(
        logs.contains("publish_token"),
        "the start line says which tokens are set"
    );
}
