//! The `sigil-server` binary's configuration handling, run as an operator
//! would: SPIRE's config loads, and an unknown or unsupported option is a
//! startup error naming it. (Also makes `cargo test` build the binary, which
//! the end-to-end tests in `tests/` run.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const GOOD: &str = r#"
server {
    bind_address = "127.0.0.1"
    bind_port = "8081"
    socket_path = "/tmp/spire-server/private/api.sock"
    trust_domain = "example.org"
    data_dir = "./data/server"
    log_level = "DEBUG"
}
plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "./data/server/datastore.sqlite3"
        }
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "memory" {
        plugin_data = {}
    }
}
"#;

fn run(args: &[&str], conf: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.conf");
    std::fs::write(&path, conf).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sigil-server"))
        .args(args)
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
fn validate_accepts_spire_example_config() {
    let (code, out) = run(&["validate"], GOOD);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("SPIRE server configuration file is valid."),
        "{out}"
    );
}

#[test]
fn unknown_option_stops_startup_naming_it() {
    let bad = GOOD.replace("log_level = \"DEBUG\"", "log_levle = \"DEBUG\"");
    let (code, out) = run(&["run"], &bad);
    assert_ne!(code, 0);
    assert!(
        out.contains("unknown option \"log_levle\" in server"),
        "{out}"
    );
}

#[test]
fn unsupported_spire_options_and_plugins_are_named() {
    let bad = GOOD.replace(
        "log_level = \"DEBUG\"",
        "experimental {\n agent_spiffe_id_as_selector = true\n}",
    );
    let (code, out) = run(&["validate"], &bad);
    assert_ne!(code, 0);
    assert!(
        out.contains("agent_spiffe_id_as_selector") && out.contains("not supported"),
        "{out}"
    );

    let bad = GOOD.replace("NodeAttestor \"join_token\"", "NodeAttestor \"aws_iid\"");
    let (code, out) = run(&["validate"], &bad);
    assert_ne!(code, 0);
    assert!(
        out.contains("aws_iid") && out.contains("not supported"),
        "{out}"
    );

    let bad = GOOD.replace(
        "KeyManager \"memory\" {\n        plugin_data = {}\n    }",
        "",
    );
    let (code, out) = run(&["validate"], &bad);
    assert_ne!(code, 0);
    assert!(out.contains("KeyManager"), "{out}");
}

#[test]
fn go_style_and_gnu_style_flags_both_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.conf");
    std::fs::write(&path, GOOD).unwrap();
    for flag in ["-config", "--config"] {
        let out = Command::new(env!("CARGO_BIN_EXE_sigil-server"))
            .arg("validate")
            .arg(flag)
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// SPIRE's sample server.conf as SPIRE ships it, including its disk
/// UpstreamAuthority with paths relative to the working directory; the
/// dummy upstream CA files are generated here with openssl.
const SPIRE_SAMPLE: &str = r#"server {
    bind_address = "127.0.0.1"
    bind_port = "8081"
    socket_path = "/tmp/spire-server/private/api.sock"
    trust_domain = "example.org"
    data_dir = "./.data"
    log_level = "DEBUG"
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "./.data/datastore.sqlite3"
        }
    }

    NodeAttestor "join_token" {
        plugin_data {
        }
    }

    KeyManager "memory" {
        plugin_data = {}
    }

    UpstreamAuthority "disk" {
        plugin_data {
            key_file_path = "./conf/server/dummy_upstream_ca.key"
            cert_file_path = "./conf/server/dummy_upstream_ca.crt"
        }
    }
}
"#;

#[test]
fn spire_sample_server_conf_with_disk_upstream_validates_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("conf/server")).unwrap();
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "conf/server/dummy_upstream_ca.key",
            "-out",
            "conf/server/dummy_upstream_ca.crt",
            "-subj",
            "/C=US/O=SPIFFE",
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:true",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    std::fs::write(dir.path().join("server.conf"), SPIRE_SAMPLE).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sigil-server"))
        .args(["validate", "-config", "server.conf"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the CA files the same config is refused, naming the problem.
    std::fs::remove_file(dir.path().join("conf/server/dummy_upstream_ca.key")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sigil-server"))
        .args(["validate", "-config", "server.conf"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dummy_upstream_ca.key"), "{err}");
}
