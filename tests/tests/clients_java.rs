//! java-spiffe (`io.spiffe:java-spiffe-core` + `grpc-netty-linux` from Maven
//! Central, unmodified) against a real sigil-agent: X509-SVID and bundle via
//! `DefaultX509Source` (chain verified against the bundle), X.509 context and
//! a JWT-SVID via `DefaultWorkloadApiClient`, validation by the agent
//! (`ValidateJWTSVID`, wrong audience refused), and local validation with
//! `DefaultJwtSource`. java-spiffe speaks grpc-java over netty epoll, which
//! sends its own `:authority` over the Unix socket.
//!
//! Needs `SIGIL_TEST_JAVA_SPIFFE`: the jar `.ci/install-java-spiffe.sh`
//! builds (run with `java -jar`), or a whole command prefix; in CI its
//! absence is a failure, elsewhere a skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use sigil_e2e::my_uid;
use sigil_testkit::{TrustDomain, wait_for};

#[test]
fn java_spiffe_fetches_x509_and_jwt_svids_from_sigil_agent() {
    let Ok(check) = std::env::var("SIGIL_TEST_JAVA_SPIFFE") else {
        assert!(
            std::env::var("CI").is_err(),
            "SIGIL_TEST_JAVA_SPIFFE must be set in CI (.ci/install-java-spiffe.sh)"
        );
        eprintln!("skipping: SIGIL_TEST_JAVA_SPIFFE not set (see .ci/install-java-spiffe.sh)");
        return;
    };
    let mut td = TrustDomain::new();
    td.start_server();
    let token = td.join_token();
    td.start_agent(0, Some(&token));
    let id = "spiffe://example.org/workload/java";
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

    let out = java_command(&check)
        .arg(td.agent_socket(0))
        .arg(id)
        .output()
        .expect("run java-spiffe check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "java-spiffe failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for line in [
        format!("OK x509 {id}"),
        format!("OK x509 context {id}"),
        format!("OK jwt {id}"),
        "OK jwt wrong-audience rejected".to_owned(),
        format!("OK jwt local {id}"),
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in\n{stdout}\n--- stderr\n{stderr}"
        );
    }
}

/// `java -jar <jar>` for a jar path; any other value is a command prefix.
fn java_command(check: &str) -> Command {
    if check.ends_with(".jar") {
        let java = std::env::var_os("JAVA_HOME")
            .map(|home| std::path::PathBuf::from(home).join("bin/java"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| "java".into());
        let mut cmd = Command::new(java);
        cmd.arg("-jar").arg(check);
        return cmd;
    }
    let mut words = check.split_whitespace();
    let mut cmd = Command::new(words.next().expect("SIGIL_TEST_JAVA_SPIFFE is empty"));
    cmd.args(words);
    cmd
}
