//! py-spiffe (PyPI `spiffe`, built on grpcio, unmodified) against a real
//! sigil-agent. grpcio is a grpc-core client: it sends the socket path
//! percent-encoded as `:authority`, which the agent's Unix listener must
//! accept (DESIGN.md, "grpc-core clients over Unix sockets").
//!
//! Needs `SIGIL_TEST_PYTHON` pointing at a Python with `spiffe` installed
//! (`.ci/run` makes one); in CI its absence is a failure, elsewhere a skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use sigil_e2e::my_uid;
use sigil_testkit::{TrustDomain, wait_for};

#[test]
fn py_spiffe_fetches_x509_jwt_and_bundles_from_sigil_agent() {
    let Some(python) = std::env::var("SIGIL_TEST_PYTHON").ok() else {
        assert!(
            std::env::var("CI").is_err(),
            "SIGIL_TEST_PYTHON must be set in CI"
        );
        eprintln!("skipping: SIGIL_TEST_PYTHON not set (see .ci/run)");
        return;
    };
    let mut td = TrustDomain::new();
    td.start_server();
    let token = td.join_token();
    td.start_agent(0, Some(&token));
    let id = "spiffe://example.org/workload/python";
    td.server_cli(&[
        "entry",
        "create",
        "-parentID",
        &td.join_token_agent_id(&token),
        "-spiffeID",
        id,
        "-selector",
        &format!("unix:uid:{}", my_uid()),
    ])
    .ok();
    wait_for("SVID", Duration::from_secs(30), || {
        let out = td.agent_cli(0, &["api", "fetch", "x509"]);
        (out.code == 0 && out.stdout.contains(id)).then_some(())
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/fetch.py");
    let out = Command::new(python)
        .arg(script)
        .arg(td.agent_socket(0))
        .arg(id)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "py-spiffe failed\n{stdout}\n{stderr}");
    for line in [
        "OK x509",
        "OK x509 bundles",
        "OK jwt",
        "OK validate",
        "OK jwt bundles",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
}
