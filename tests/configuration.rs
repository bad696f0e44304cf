//! `docs/CONFIGURATION.md` is the `--help` of every binary, verbatim. This
//! test fails when they drift; `ACKFLOW_BLESS=1 cargo test -p ackflow-tests
//! --test e2e configuration::` rewrites the file from the binaries. The systemd
//! units in `deploy/` are checked here too.

use std::path::PathBuf;
use std::process::Command;

use ackflow_tests::bin;

const HEADER: &str = "# Configuration

Every flag of every binary, as printed by `--help`. Each flag also reads the
environment variable shown (`[env: …]`); the default is shown as
`[default: …]`. Generated from the binaries and checked by
`tests/configuration.rs`: do not edit by hand, run
`ACKFLOW_BLESS=1 cargo test -p ackflow-tests --test e2e configuration::`.
";

fn help(binary: &str, args: &[&str]) -> String {
    let output = Command::new(bin(binary))
        .args(args)
        .arg("--help")
        .env_clear()
        .output()
        .expect("the binary runs");
    assert!(output.status.success(), "{binary} --help failed");
    // The test copies are named e2e-*; the usage line names the real binary.
    let real = binary.replace("e2e-", "ackflow-");
    String::from_utf8(output.stdout)
        .expect("help is UTF-8")
        .replace(binary, &real)
}

fn expected() -> String {
    let mut doc = HEADER.to_string();
    for (title, binary, args) in [
        ("ackflow-core", "e2e-core", &[][..]),
        ("ackflow-processor", "e2e-processor", &[][..]),
        ("ackflow-monitor", "e2e-monitor", &[][..]),
        ("ackflow-monitor demo", "e2e-monitor", &["demo"][..]),
    ] {
        let text = help(binary, args);
        doc.push_str(&format!(
            "\n## `{title}`\n\n```text\n{}\n```\n",
            text.trim_end()
        ));
    }
    doc
}

#[test]
fn configuration_md_matches_help() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/CONFIGURATION.md");
    let expected = expected();
    if std::env::var_os("ACKFLOW_BLESS").is_some() {
        std::fs::write(&path, &expected).expect("write docs/CONFIGURATION.md");
        return;
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "docs/CONFIGURATION.md differs from --help; regenerate with \
         ACKFLOW_BLESS=1 cargo test -p ackflow-tests --test e2e configuration::"
    );
}

#[test]
fn every_flag_names_its_env_and_invalid_values_name_the_flag() {
    for (binary, args) in [("e2e-core", &[][..]), ("e2e-processor", &[][..])] {
        let text = help(binary, args);
        for line in text.lines().filter(|l| l.trim_start().starts_with("--")) {
            let flag = line.split_whitespace().next().unwrap_or_default();
            if ["--help", "--version"].contains(&flag) {
                continue;
            }
            let section = &text[text.find(line).unwrap_or(0)..];
            let end = section[2..]
                .find("\n  -")
                .map(|i| i + 2)
                .unwrap_or(section.len());
            assert!(
                section[..end].contains("[env: "),
                "{binary} {flag} has no environment variable:\n{}",
                &section[..end]
            );
        }
    }
    let output = Command::new(bin("e2e-core"))
        .args(["--window", "0"])
        .env_clear()
        .output()
        .expect("core runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--window"),
        "the error names the flag: {stderr}"
    );
    let output = Command::new(bin("e2e-processor"))
        .args(["--drop-acks", "2"])
        .env_clear()
        .output()
        .expect("processor runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--drop-acks"));
    let version = Command::new(bin("e2e-core"))
        .arg("--version")
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("ackflow-core "));
}

/// The systemd units in `deploy/`: each names the binary and reads the
/// environment file its comment promises, waits longer for a stop than
/// core's graceful shutdown may take (or acks received at the end would be
/// delivered again), and passes `systemd-analyze verify` (on a copy whose
/// `ExecStart` names a binary that exists here) where systemd is installed.
#[test]
fn systemd_units_verify_and_outlast_the_shutdown_timeout() {
    let deploy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let core_default = ackflow_core::config::Config::local(None, "unused".into());
    for (unit, binary, env_file) in [
        (
            "ackflow-core.service",
            "ackflow-core",
            "/etc/ackflow/core.env",
        ),
        (
            "ackflow-processor.service",
            "ackflow-processor",
            "/etc/ackflow/processor.env",
        ),
    ] {
        let text = std::fs::read_to_string(deploy.join(unit)).expect("the unit file");
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or_else(|| panic!("{unit} has no {key}"))
                .to_string()
        };
        assert_eq!(value("ExecStart"), format!("/usr/local/bin/{binary}"));
        assert_eq!(value("EnvironmentFile"), format!("-{env_file}"));
        let stop: u64 = value("TimeoutStopSec").parse().expect("seconds");
        assert!(
            stop > core_default.shutdown_timeout_s,
            "{unit}: TimeoutStopSec={stop} does not outlast --shutdown-timeout-s {}",
            core_default.shutdown_timeout_s
        );

        let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
            eprintln!("systemd-analyze is not installed: {unit} checked without it");
            continue;
        };
        assert!(version.status.success());
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join(unit);
        let here = bin(&binary.replace("ackflow-", "e2e-"));
        std::fs::write(
            &copy,
            text.replace(
                &format!("/usr/local/bin/{binary}"),
                &here.display().to_string(),
            ),
        )
        .unwrap();
        let verify = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&copy)
            .output()
            .expect("systemd-analyze runs");
        let said = String::from_utf8_lossy(&verify.stderr);
        assert!(
            verify.status.success() && !said.contains(unit),
            "systemd-analyze verify {unit}:\n{said}"
        );
    }
}

/// The grpcurl commands in README.md, each joined across its `\` line ends.
/// (No grpcurl in CI: the same requests were run by hand with `buf curl`;
/// this keeps their methods and fields true to the proto.)
fn readme_grpcurl_commands() -> Vec<String> {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let mut commands = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        let line = line.trim();
        match current.as_mut() {
            Some(command) => command.push_str(line.trim_end_matches('\\')),
            None if line.starts_with("grpcurl ") => {
                current = Some(line.trim_end_matches('\\').to_string())
            }
            None => continue,
        }
        if !line.ends_with('\\') {
            // Without a trailing `# comment`.
            let command = current.take().unwrap_or_default();
            let command = command.split(" #").next().unwrap_or_default().trim();
            commands.push(command.to_string());
        }
    }
    commands
}

/// The single-quoted value after `flag` in a shell command.
fn quoted_after(command: &str, flag: &str) -> Option<String> {
    let rest = &command[command.find(&format!("{flag} '"))? + flag.len() + 2..];
    Some(rest[..rest.find('\'')?].to_string())
}

#[test]
fn readme_grpcurl_examples_name_real_methods_and_fields() {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(ackflow_proto::FILE_DESCRIPTOR_SET).unwrap();
    let files = || set.file.iter();
    let service = |name: &str| {
        files().find_map(|f| {
            let short = name.strip_prefix(&format!("{}.", f.package()))?;
            f.service.iter().find(|s| s.name() == short)
        })
    };
    let message = |name: &str| {
        files().find_map(|f| {
            let short = name.strip_prefix(&format!(".{}.", f.package()))?;
            f.message_type.iter().find(|m| m.name() == short)
        })
    };
    let commands = readme_grpcurl_commands();
    let publish = commands
        .iter()
        .find(|c| c.ends_with("ackflow.v1.Ingest/Publish"))
        .expect("README shows a grpcurl publish");
    assert!(publish.contains("-H 'traceparent: 00-"), "{publish}");
    let mut checked = 0;
    for command in &commands {
        let target = command.split_whitespace().last().unwrap();
        let body: serde_json::Value =
            serde_json::from_str(&quoted_after(command, "-d").unwrap_or("{}".into()))
                .unwrap_or_else(|e| panic!("{command}: -d is not JSON: {e}"));
        let Some((service_name, method_name)) = target.split_once('/') else {
            continue; // `list`
        };
        if service_name == "grpc.health.v1.Health" {
            let named = body["service"].as_str().unwrap_or_default();
            assert!(service(named).is_some(), "{command}: no service {named:?}");
            continue;
        }
        let found = service(service_name).unwrap_or_else(|| panic!("{command}: no service"));
        let method = found
            .method
            .iter()
            .find(|m| m.name() == method_name)
            .unwrap_or_else(|| panic!("{command}: no method {method_name}"));
        let input = message(method.input_type()).expect("the input type is ours");
        for key in body.as_object().expect("a JSON object").keys() {
            assert!(
                input
                    .field
                    .iter()
                    .any(|f| f.name() == key || f.json_name() == key),
                "{command}: {} has no field {key}",
                input.name()
            );
        }
        checked += 1;
    }
    assert!(checked >= 2, "{commands:?}");
}
