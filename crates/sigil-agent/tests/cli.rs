//! The `sigil-agent` binary's configuration handling, run as an operator
//! would: SPIRE's agent.conf loads, unknown or unsupported options are
//! errors naming them. (Also makes `cargo test` build the binary, which the
//! end-to-end tests in `tests/` run.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const GOOD: &str = r#"
agent {
    data_dir = "./data/agent"
    log_level = "DEBUG"
    server_address = "127.0.0.1"
    server_port = "8081"
    socket_path = "/tmp/spire-agent/public/api.sock"
    trust_bundle_path = "./conf/agent/dummy_root_ca.crt"
    trust_domain = "example.org"
}
plugins {
    NodeAttestor "join_token" {
        plugin_data {
        }
    }
    KeyManager "disk" {
        plugin_data {
            directory = "./data/agent"
        }
    }
    WorkloadAttestor "unix" {
        plugin_data {
        }
    }
}
"#;

fn validate(conf: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.conf");
    std::fs::write(&path, conf).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sigil-agent"))
        .arg("validate")
        .arg("-config")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn validate_accepts_spire_example_agent_conf() {
    let (code, out) = validate(GOOD);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("SPIRE agent configuration file is valid."),
        "{out}"
    );
}

#[test]
fn unknown_and_unsupported_agent_options_are_named() {
    let (code, out) = validate(&GOOD.replace("log_level", "log_levl"));
    assert_ne!(code, 0);
    assert!(out.contains("log_levl"), "{out}");
    let (code, out) =
        validate(&GOOD.replace("WorkloadAttestor \"unix\"", "WorkloadAttestor \"docker\""));
    assert_ne!(code, 0);
    assert!(
        out.contains("docker") && out.contains("not supported"),
        "{out}"
    );
}

#[test]
fn api_fetch_against_missing_socket_names_the_socket() {
    let out = Command::new(env!("CARGO_BIN_EXE_sigil-agent"))
        .args([
            "api",
            "fetch",
            "x509",
            "-socketPath",
            "/nonexistent/sigil/agent.sock",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("/nonexistent/sigil/agent.sock"), "{all}");
}
