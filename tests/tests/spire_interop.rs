//! Drop-in compatibility with real SPIRE v1.15 binaries (built from the Go
//! module proxy by `.ci/install-spire.sh`; `SIGIL_TEST_SPIRE_BIN` names the
//! directory holding `spire-server` and `spire-agent`). In CI they are
//! required; elsewhere the tests print a skip line without them.
//!
//! - a real `spire-agent` attests to `sigil-server` and serves SVIDs;
//! - a real `sigil-agent` attests to a real `spire-server` and serves SVIDs;
//! - the real `spire-server` CLI drives `sigil-server`'s admin socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use sigil_e2e::my_uid;
use sigil_e2e::spire::{self, SpireAgent, SpireServer, run};
use sigil_testkit::{TrustDomain, wait_for};

const JOIN_TOKEN: &str = r#"NodeAttestor "join_token" {
        plugin_data {
        }
    }"#;

#[test]
fn spire_agent_attests_to_sigil_server_and_serves_svids() {
    let Some(spire) = spire::bin_dir() else {
        return;
    };
    let mut td = TrustDomain::new();
    td.start_server();
    let token = td.join_token();
    let agent = SpireAgent::start(&mut td, &spire, JOIN_TOKEN, &["-joinToken", &token]);
    let agent_bin = agent.bin.clone();
    let sock_s = agent.sock.to_str().unwrap().to_owned();

    // The node shows up as an attested agent in sigil-server.
    let agents = td.server_cli(&["agent", "list"]).ok();
    assert!(
        agents.stdout.contains(&td.join_token_agent_id(&token)),
        "{}",
        agents.stdout
    );

    let id = "spiffe://example.org/workload/under-spire-agent";
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
    let out_dir = td.path().join("svids");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out_s = out_dir.to_str().unwrap().to_owned();
    wait_for(
        "X509-SVID from spire-agent",
        Duration::from_secs(60),
        || {
            let out = run(
                &agent_bin,
                &[
                    "api",
                    "fetch",
                    "x509",
                    "-socketPath",
                    &sock_s,
                    "-write",
                    &out_s,
                ],
            );
            (out.code == 0 && out.stdout.contains(id)).then_some(())
        },
    );
    let verify = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(out_dir.join("bundle.0.pem"))
        .arg(out_dir.join("svid.0.pem"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );

    let jwt = run(
        &agent_bin,
        &[
            "api",
            "fetch",
            "jwt",
            "-audience",
            "spire-interop",
            "-socketPath",
            &sock_s,
        ],
    )
    .ok();
    assert!(
        jwt.stdout.contains(&format!("token({id})")),
        "{}",
        jwt.stdout
    );
    let token_line = jwt
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("token("))
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();
    let valid = run(
        &agent_bin,
        &[
            "api",
            "validate",
            "jwt",
            "-audience",
            "spire-interop",
            "-svid",
            &token_line,
            "-socketPath",
            &sock_s,
        ],
    )
    .ok();
    assert!(valid.stdout.contains("SVID is valid."), "{}", valid.stdout);

    // Banned through sigil-server, the SPIRE agent is told why (SPIRE's
    // PermissionDeniedDetails) and shuts itself down, as with a SPIRE server.
    td.server_cli(&["agent", "ban", "-spiffeID", &td.join_token_agent_id(&token)])
        .ok();
    wait_for(
        "spire-agent to shut down after the ban",
        Duration::from_secs(60),
        || (!td.process_running(agent.process)).then_some(()),
    );
}

#[test]
fn sigil_agent_attests_to_spire_server_and_serves_svids() {
    let Some(spire) = spire::bin_dir() else {
        return;
    };
    let mut td = TrustDomain::new();
    let server = SpireServer::start(&mut td, &spire, JOIN_TOKEN);
    let token = server.cli(&["token", "generate"]).ok();
    let token = token
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Token: "))
        .unwrap()
        .trim()
        .to_owned();
    // sigil-agent #0 bootstraps from SPIRE's bundle and dials SPIRE's port.
    server.serve_sigil_agent(&mut td, 0);
    td.start_agent(0, Some(&token));

    let id = "spiffe://example.org/workload/under-sigil-agent";
    server
        .cli(&[
            "entry",
            "create",
            "-parentID",
            &format!("spiffe://example.org/spire/agent/join_token/{token}"),
            "-spiffeID",
            id,
            "-selector",
            &format!("unix:uid:{}", my_uid()),
        ])
        .ok();
    wait_for(
        "X509-SVID from sigil-agent",
        Duration::from_secs(60),
        || {
            let out = td.agent_cli(0, &["api", "fetch", "x509"]);
            (out.code == 0 && out.stdout.contains(id)).then_some(())
        },
    );
    let jwt = td
        .agent_cli(0, &["api", "fetch", "jwt", "-audience", "a"])
        .ok();
    assert!(
        jwt.stdout.contains(&format!("token({id})")),
        "{}",
        jwt.stdout
    );
    let agents = server.cli(&["agent", "list"]).ok();
    assert!(agents.stdout.contains(&token), "{}", agents.stdout);
}

#[test]
fn spire_server_cli_drives_sigil_server() {
    let Some(spire) = spire::bin_dir() else {
        return;
    };
    let cli = spire.join("spire-server");
    let mut td = TrustDomain::new();
    td.start_server();
    let sock = td.server_socket();
    let sock = sock.to_str().unwrap();
    let spire_cli = |args: &[&str]| {
        let mut full = args.to_vec();
        full.extend(["-socketPath", sock]);
        run(&cli, &full)
    };

    let token = spire_cli(&[
        "token",
        "generate",
        "-spiffeID",
        "spiffe://example.org/node-alias",
    ])
    .ok();
    let token = token
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Token: "))
        .unwrap()
        .trim()
        .to_owned();
    let parent = format!("spiffe://example.org/spire/agent/join_token/{token}");

    let created = spire_cli(&[
        "entry",
        "create",
        "-parentID",
        &parent,
        "-spiffeID",
        "spiffe://example.org/svc",
        "-selector",
        "unix:uid:1001",
        "-dns",
        "svc.example.org",
        "-x509SVIDTTL",
        "600",
    ])
    .ok();
    let entry_id = created
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Entry ID"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap()
        .trim()
        .to_owned();
    let shown = spire_cli(&["entry", "show", "-spiffeID", "spiffe://example.org/svc"]).ok();
    assert!(
        shown.stdout.contains(&entry_id) && shown.stdout.contains("svc.example.org"),
        "{}",
        shown.stdout
    );
    let shown_json = spire_cli(&["entry", "show", "-entryID", &entry_id, "-output", "json"]).ok();
    assert!(
        shown_json.stdout.contains("\"spiffe_id\""),
        "{}",
        shown_json.stdout
    );
    spire_cli(&[
        "entry",
        "update",
        "-entryID",
        &entry_id,
        "-parentID",
        &parent,
        "-spiffeID",
        "spiffe://example.org/svc2",
        "-selector",
        "unix:uid:1002",
    ])
    .ok();
    let shown = sigil_show(&td, &entry_id);
    assert!(
        shown.contains("spiffe://example.org/svc2") && shown.contains("unix:uid:1002"),
        "{shown}"
    );
    spire_cli(&["entry", "delete", "-entryID", &entry_id]).ok();
    assert!(
        td.server_cli(&["entry", "show", "-entryID", &entry_id])
            .code
            != 0
    );

    // An attested agent, for the agent commands.
    td.start_agent(0, Some(&token));
    let listed = spire_cli(&["agent", "list"]).ok();
    assert!(listed.stdout.contains(&parent), "{}", listed.stdout);
    let shown = spire_cli(&["agent", "show", "-spiffeID", &parent]).ok();
    assert!(shown.stdout.contains("join_token"), "{}", shown.stdout);
    spire_cli(&["agent", "ban", "-spiffeID", &parent]).ok();
    let shown = td.server_cli(&["agent", "show", "-spiffeID", &parent]).ok();
    assert!(shown.stdout.contains("Banned"), "{}", shown.stdout);
    spire_cli(&["agent", "evict", "-spiffeID", &parent]).ok();
    let count = td.server_cli(&["agent", "count"]).ok();
    assert!(
        count.stdout.contains("0 attested agents"),
        "{}",
        count.stdout
    );

    let pem = spire_cli(&["bundle", "show"]).ok();
    assert!(pem.stdout.contains("BEGIN CERTIFICATE"), "{}", pem.stdout);
    let jwks = spire_cli(&["bundle", "show", "-format", "spiffe"]).ok();
    assert!(jwks.stdout.contains("\"x509-svid\""), "{}", jwks.stdout);

    // Federated bundles: set one from a file, list it.
    let other = td.path().join("other.pem");
    std::fs::write(&other, &pem.stdout).unwrap();
    spire_cli(&[
        "bundle",
        "set",
        "-id",
        "spiffe://other.org",
        "-path",
        other.to_str().unwrap(),
    ])
    .ok();
    let list = spire_cli(&["bundle", "list"]).ok();
    assert!(list.stdout.contains("other.org"), "{}", list.stdout);

    // Federation relationships: create one with a bundle file, read it back
    // with both CLIs, delete it.
    let created = spire_cli(&[
        "federation",
        "create",
        "-trustDomain",
        "other.org",
        "-bundleEndpointURL",
        "https://other.org:8443",
        "-bundleEndpointProfile",
        "https_spiffe",
        "-endpointSpiffeID",
        "spiffe://other.org/spire/server",
        "-trustDomainBundlePath",
        other.to_str().unwrap(),
    ])
    .ok();
    assert!(
        created
            .stdout
            .contains("Endpoint SPIFFE ID        : spiffe://other.org/spire/server"),
        "{}",
        created.stdout
    );
    let listed = spire_cli(&["federation", "list"]).ok();
    assert!(
        listed
            .stdout
            .starts_with("Found 1 federation relationship\n"),
        "{}",
        listed.stdout
    );
    let shown = spire_cli(&["federation", "show", "-trustDomain", "other.org"]).ok();
    let sigil_shown = td
        .server_cli(&["federation", "show", "-trustDomain", "other.org"])
        .ok();
    assert_eq!(shown.stdout, sigil_shown.stdout);
    let deleted = spire_cli(&["federation", "delete", "-id", "other.org"]).ok();
    assert_eq!(deleted.stdout, "federation relationship deleted.\n");
    let listed = spire_cli(&["federation", "list"]).ok();
    assert_eq!(listed.stdout, "Found 0 federation relationships\n");
}

fn sigil_show(td: &TrustDomain, entry_id: &str) -> String {
    td.server_cli(&["entry", "show", "-entryID", entry_id])
        .ok()
        .stdout
}

/// Mixed fleet: one trust domain with a sigil-server, a real spire-agent and
/// a sigil-agent. A go-spiffe workload under the spire-agent and one under
/// the sigil-agent do mutual TLS, each authorizing the other's exact ID.
#[test]
fn mixed_fleet_workloads_accept_each_others_svids() {
    let Some(spire) = spire::bin_dir() else {
        return;
    };
    let Some(go_bin) = std::env::var_os("SIGIL_TEST_GO_SPIFFE") else {
        assert!(
            std::env::var("CI").is_err(),
            "SIGIL_TEST_GO_SPIFFE must be set in CI"
        );
        eprintln!("skipping: SIGIL_TEST_GO_SPIFFE not set");
        return;
    };
    let mut td = TrustDomain::new();
    td.start_server();

    // The sigil-agent node.
    let sigil_token = td.join_token();
    td.start_agent(0, Some(&sigil_token));
    // The spire-agent node.
    let spire_token = td.join_token();
    let spire_agent = SpireAgent::start(&mut td, &spire, JOIN_TOKEN, &["-joinToken", &spire_token]);
    let spire_sock = spire_agent.sock.clone();

    let uid = format!("unix:uid:{}", my_uid());
    let server_id = "spiffe://example.org/fleet/on-spire-agent";
    let client_id = "spiffe://example.org/fleet/on-sigil-agent";
    for (parent, id) in [
        (td.join_token_agent_id(&spire_token), server_id),
        (td.join_token_agent_id(&sigil_token), client_id),
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
        ])
        .ok();
    }
    spire_agent.wait_for_x509_svid(server_id);
    wait_for("SVID on the sigil-agent", Duration::from_secs(60), || {
        let out = td.agent_cli(0, &["api", "fetch", "x509"]);
        (out.code == 0 && out.stdout.contains(client_id)).then_some(())
    });

    let mut server_cmd = Command::new(&go_bin);
    server_cmd
        .args([
            "server",
            "-addr",
            "127.0.0.1:0",
            "-timeout",
            "90s",
            "-socket",
        ])
        .arg(&spire_sock)
        .args(["-expect", client_id])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut server = server_cmd.spawn().expect("spawn go-spiffe server");
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    let mut words = first.split_whitespace();
    assert_eq!(words.next(), Some("LISTENING"), "server said {first:?}");
    let addr = words.next().unwrap().to_owned();
    assert_eq!(words.next(), Some(server_id));

    let out = Command::new(&go_bin)
        .args(["client", "-addr", &addr, "-timeout", "60s", "-socket"])
        .arg(td.agent_socket(0))
        .args(["-expect", server_id])
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("OK mtls {server_id}")), "{stdout}");
    assert!(
        stdout.contains(&format!("OK seen-by-server {client_id}")),
        "{stdout}"
    );
}

/// Operators script against SPIRE's CLI output: for the same server and the
/// same data, `sigil-server` and the real `spire-server` print byte-identical
/// output (pretty and `-output json`).
#[test]
fn sigil_and_spire_cli_outputs_are_identical() {
    let Some(spire) = spire::bin_dir() else {
        return;
    };
    let spire_cli = spire.join("spire-server");
    let mut td = TrustDomain::new();
    td.start_server();
    let token = td.join_token();
    td.start_agent(0, Some(&token));
    let agent_id = td.join_token_agent_id(&token);
    td.server_cli(&[
        "entry",
        "create",
        "-parentID",
        &agent_id,
        "-spiffeID",
        "spiffe://example.org/web",
        "-selector",
        "unix:uid:1000",
        "-selector",
        "unix:gid:1000",
        "-dns",
        "web.example.org",
        "-x509SVIDTTL",
        "300",
        "-jwtSVIDTTL",
        "120",
        "-hint",
        "web",
        "-admin",
    ])
    .ok();
    td.server_cli(&[
        "entry",
        "create",
        "-node",
        "-spiffeID",
        "spiffe://example.org/cluster",
        "-selector",
        "join_token:whatever",
    ])
    .ok();
    let sock = td.server_socket();
    let sock = sock.to_str().unwrap();
    // A federated bundle, for the `bundle list` forms.
    let other_pem = td.path().join("other.pem");
    std::fs::write(&other_pem, td.server_cli(&["bundle", "show"]).ok().stdout).unwrap();
    let other_pem = other_pem.to_str().unwrap();
    td.server_cli(&[
        "bundle",
        "set",
        "-id",
        "spiffe://other.org",
        "-path",
        other_pem,
    ])
    .ok();
    let commands: &[&[&str]] = &[
        &["entry", "show"],
        &["entry", "show", "-output", "json"],
        &["entry", "show", "-spiffeID", "spiffe://example.org/web"],
        &[
            "entry",
            "show",
            "-selector",
            "unix:uid:1000",
            "-matchSelectorsOn",
            "subset",
        ],
        &["entry", "count"],
        &["entry", "count", "-output", "json"],
        &["agent", "list"],
        &["agent", "list", "-output", "json"],
        &["agent", "show", "-spiffeID", &agent_id],
        &["agent", "count"],
        &["bundle", "show"],
        &["bundle", "show", "-format", "spiffe"],
        &["bundle", "show", "-output", "json"],
        &["bundle", "count"],
        &["agent", "count", "-attestationType", "join_token"],
        &[
            "agent",
            "count",
            "-banned",
            "false",
            "-canReattest",
            "false",
        ],
        &[
            "agent",
            "count",
            "-selector",
            "join_token:nothing",
            "-matchSelectorsOn",
            "any",
            "-output",
            "json",
        ],
        &[
            "agent",
            "count",
            "-expiresBefore",
            "2001-01-01 00:00:00 +0000 +00",
        ],
        &["agent", "purge", "-dryRun"],
        &["agent", "purge", "-output", "json"],
        &["bundle", "list"],
        &["bundle", "list", "-format", "spiffe"],
        &["bundle", "list", "-output", "json"],
        &["bundle", "list", "-id", "spiffe://other.org"],
        &["bundle", "list", "-id", "spiffe://nope.org"],
        // Idempotent, so both CLIs see the same state.
        &[
            "bundle",
            "set",
            "-id",
            "spiffe://other.org",
            "-path",
            other_pem,
        ],
        &[
            "bundle",
            "set",
            "-id",
            "spiffe://example.org",
            "-path",
            other_pem,
        ],
        &["bundle", "delete", "-id", "spiffe://nope.org"],
        &["localauthority", "x509", "show"],
        &["localauthority", "x509", "show", "-output", "json"],
        &["localauthority", "jwt", "show"],
        &["localauthority", "jwt", "show", "-output", "json"],
        &["localauthority", "x509", "activate", "-authorityID", "nope"],
        &["localauthority", "jwt", "taint"],
        &["upstreamauthority", "taint", "-subjectKeyID", "abc"],
        &["upstreamauthority", "revoke", "-subjectKeyID", "abc"],
        &["logger", "get"],
        &["logger", "set", "-level", "debug"],
        &["logger", "get", "-output", "json"],
        &["logger", "set", "-level", "Loud"],
        &["logger", "reset", "-output", "json"],
        &["x509", "mint"],
        &["jwt", "mint", "-spiffeID", "spiffe://example.org/w"],
    ];
    for args in commands {
        let mut full = args.to_vec();
        full.extend(["-socketPath", sock]);
        let ours = Command::new(sigil_testkit::bin("sigil-server"))
            .args(&full)
            .output()
            .unwrap();
        let theirs = Command::new(&spire_cli).args(&full).output().unwrap();
        assert_eq!(
            ours.status.code(),
            theirs.status.code(),
            "{args:?}: exit codes"
        );
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&theirs.stdout),
            "{args:?}: stdout differs"
        );
        assert_eq!(
            String::from_utf8_lossy(&ours.stderr),
            String::from_utf8_lossy(&theirs.stderr),
            "{args:?}: stderr differs"
        );
    }

    // A deletion changes state: each CLI deletes a fresh copy.
    let delete = [
        "bundle",
        "delete",
        "-id",
        "spiffe://other.org",
        "-socketPath",
        sock,
    ];
    let mut outputs = Vec::new();
    for bin in [sigil_testkit::bin("sigil-server"), spire_cli.clone()] {
        td.server_cli(&[
            "bundle",
            "set",
            "-id",
            "spiffe://other.org",
            "-path",
            other_pem,
        ])
        .ok();
        outputs.push(Command::new(bin).args(delete).output().unwrap());
    }
    let [ours, theirs] = &outputs[..] else {
        unreachable!("two runs")
    };
    assert_eq!(ours.status.code(), Some(0), "bundle delete");
    assert_eq!(ours.status.code(), theirs.status.code(), "bundle delete");
    assert_eq!(ours.stdout, theirs.stdout, "bundle delete: stdout differs");
    assert_ne!(
        td.server_cli(&["bundle", "list", "-id", "spiffe://other.org"])
            .code,
        0,
        "the bundle is gone"
    );
}
