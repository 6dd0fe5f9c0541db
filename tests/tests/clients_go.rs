//! go-spiffe v2 (Go module proxy, unmodified) against a real sigil-agent:
//! two processes of `tests/interop/go-spiffe` do mutual TLS with X509-SVIDs
//! from `workloadapi.X509Source`, each side checking the peer's SVID against
//! the bundle from the Workload API and authorizing its exact SPIFFE ID
//! (`tlsconfig.AuthorizeID`); the client then fetches a JWT-SVID from a
//! `workloadapi.JWTSource` and validates it locally with
//! `jwtsvid.ParseAndValidate`.
//!
//! Both processes run as our uid, so to give them different identities the
//! agent's unix attestor discovers workload paths and the binary is copied
//! to two paths: entry `go/server` selects `unix:uid` + the server copy's
//! `unix:path`, entry `go/client` the client copy's. Each end authorizes only
//! the other's ID, and a peer with the wrong ID is refused on both sides.
//!
//! Needs `SIGIL_TEST_GO_SPIFFE` pointing at the binary that
//! `.ci/install-go-spiffe.sh` builds; in CI its absence is a failure,
//! elsewhere a skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use sigil_e2e::my_uid;
use sigil_testkit::{Options, TrustDomain, bin, wait_for};

const SERVER_ID: &str = "spiffe://example.org/go/server";
const CLIENT_ID: &str = "spiffe://example.org/go/client";
const SENTINEL_ID: &str = "spiffe://example.org/go/entries-synced";

/// Kills the Go server if the test ends early (it also stops by itself
/// after its `-timeout`).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn go_spiffe_mtls_between_two_processes_and_jwt_svid_validation() {
    let Some(go_bin) = std::env::var_os("SIGIL_TEST_GO_SPIFFE") else {
        assert!(
            std::env::var("CI").is_err(),
            "SIGIL_TEST_GO_SPIFFE must be set in CI (.ci/install-go-spiffe.sh)"
        );
        eprintln!("skipping: SIGIL_TEST_GO_SPIFFE not set (see .ci/install-go-spiffe.sh)");
        return;
    };
    let mut td = TrustDomain::with(Options {
        // Path selectors only; hashing a 20 MB binary on every attestation
        // would add nothing here.
        unix_attestor_data:
            "            discover_workload_path = true\n            workload_size_limit = -1".into(),
        ..Options::default()
    });
    let server_bin = copy_exe(Path::new(&go_bin), &td.path().join("go-server"));
    let client_bin = copy_exe(Path::new(&go_bin), &td.path().join("go-client"));
    td.start_server();
    let token = td.join_token();
    td.start_agent(0, Some(&token));
    let parent = td.join_token_agent_id(&token);
    let uid = format!("unix:uid:{}", my_uid());
    // The sentinel (for the agent CLI itself) is created last: once the
    // agent serves it, the two earlier entries have been synced as well.
    let agent_bin = bin("sigil-agent")
        .canonicalize()
        .expect("agent binary path");
    for (id, exe) in [
        (SERVER_ID, &server_bin),
        (CLIENT_ID, &client_bin),
        (SENTINEL_ID, &agent_bin),
    ] {
        td.server_cli(&[
            "entry",
            "create",
            "-parentID",
            &parent,
            "-spiffeID",
            id,
            "-selector",
            &uid,
            "-selector",
            &format!("unix:path:{}", exe.display()),
        ])
        .ok();
    }
    wait_for(
        "entries synced to the agent",
        Duration::from_secs(30),
        || {
            let out = td.agent_cli(0, &["api", "fetch", "x509"]);
            (out.code == 0 && out.stdout.contains(SENTINEL_ID)).then_some(())
        },
    );
    let socket = td.agent_socket(0);

    let server_log = std::fs::File::create(td.path().join("go-server.log")).expect("server log");
    let mut server = KillOnDrop(
        Command::new(&server_bin)
            .args([
                "server",
                "-addr",
                "127.0.0.1:0",
                "-timeout",
                "90s",
                "-socket",
            ])
            .arg(&socket)
            .args(["-expect", CLIENT_ID])
            .stdout(Stdio::piped())
            .stderr(server_log)
            .spawn()
            .expect("spawn go-spiffe server"),
    );
    // Blocks until the server has its SVID and listens; bounded by its -timeout.
    let mut first = String::new();
    BufReader::new(server.0.stdout.take().expect("server stdout"))
        .read_line(&mut first)
        .expect("read server stdout");
    let mut words = first.split_whitespace();
    assert_eq!(words.next(), Some("LISTENING"), "server said {first:?}");
    let addr = words.next().expect("listen address").to_owned();
    assert_eq!(words.next(), Some(SERVER_ID), "server's own SVID");

    let out = run_client(&client_bin, &addr, &socket, SERVER_ID);
    let stdout = check_ok(&out, "go-spiffe client");
    for line in [
        format!("OK mtls {SERVER_ID}"),
        format!("OK seen-by-server {CLIENT_ID}"),
        format!("OK jwt {CLIENT_ID}"),
        "OK jwt wrong-audience rejected".to_owned(),
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in\n{stdout}"
        );
    }

    // The client refuses a server whose ID it did not authorize.
    let out = run_client(
        &client_bin,
        &addr,
        &socket,
        "spiffe://example.org/go/someone-else",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "client accepted an unexpected server"
    );
    assert!(
        stderr.contains("unexpected ID"),
        "client error names the ID check:\n{stderr}"
    );

    // The server refuses a client with the wrong ID: the server copy run in
    // client mode holds the server's SVID, not the client's.
    let out = run_client(&server_bin, &addr, &socket, SERVER_ID);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "server accepted an unexpected client:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains("remote error: tls:"),
        "the server's TLS alert, not something else, failed the request:\n{stderr}"
    );
    // The server logs the refusal after sending its alert: poll briefly.
    let refused = format!("unexpected ID \"{SERVER_ID}\"");
    wait_for(
        "server log naming the refused ID",
        Duration::from_secs(5),
        || {
            std::fs::read_to_string(td.path().join("go-server.log"))
                .ok()
                .filter(|log| log.contains(&refused))
        },
    );
    assert!(
        server.0.try_wait().expect("server status").is_none(),
        "server still running after refusing a client"
    );
    drop(server);
    drop(td);
}

/// Copies the Go binary so that its path (a `unix:path` selector) is ours.
fn copy_exe(from: &Path, to: &Path) -> PathBuf {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
    to.canonicalize().expect("copied binary path")
}

fn run_client(exe: &Path, addr: &str, socket: &Path, expect: &str) -> Output {
    Command::new(exe)
        .args(["client", "-addr", addr, "-timeout", "60s", "-socket"])
        .arg(socket)
        .args(["-expect", expect])
        .output()
        .expect("run go-spiffe client")
}

fn check_ok(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
