//! Bad input gets a precise error and changes nothing stored: malformed
//! SPIFFE IDs and selectors in `entry create`, reused and expired join
//! tokens, Workload API calls without the security header or from a caller
//! with no entry. Real binaries; no fakes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use sigil_e2e::{my_uid, with_header, workload_client};
use sigil_proto::workload::{JwtsvidRequest, X509svidRequest};
use sigil_testkit::TrustDomain;

fn entry_count(td: &TrustDomain) -> String {
    td.server_cli(&["entry", "count"])
        .ok()
        .stdout
        .trim()
        .to_owned()
}

#[test]
fn entry_create_rejects_bad_ids_and_selectors_and_stores_nothing() {
    let mut td = TrustDomain::new();
    td.start_server();
    let before = entry_count(&td);
    let parent = "spiffe://example.org/spire/agent/join_token/x";
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "-spiffeID",
                "spiffe://example.org/a//b",
                "-selector",
                "unix:uid:1",
            ],
            "empty segments",
        ),
        (
            &[
                "-spiffeID",
                "spiffe://Example.org/a",
                "-selector",
                "unix:uid:1",
            ],
            "trust domain",
        ),
        (
            &[
                "-spiffeID",
                "http://example.org/a",
                "-selector",
                "unix:uid:1",
            ],
            "scheme",
        ),
        (
            &[
                "-spiffeID",
                "spiffe://example.org/a%20b",
                "-selector",
                "unix:uid:1",
            ],
            "percent",
        ),
        (
            &[
                "-spiffeID",
                "spiffe://other.org/a",
                "-selector",
                "unix:uid:1",
            ],
            "not a member of trust domain",
        ),
        (
            &[
                "-spiffeID",
                "spiffe://example.org/spire/x",
                "-selector",
                "unix:uid:1",
            ],
            "reserved",
        ),
        (
            &[
                "-spiffeID",
                "spiffe://example.org/a",
                "-selector",
                "nocolon",
            ],
            "selector",
        ),
        (
            &["-spiffeID", "spiffe://example.org/a", "-selector", ":value"],
            "selector",
        ),
        (&["-spiffeID", "spiffe://example.org/a"], "selector"),
    ];
    for (args, needle) in cases {
        let mut full = vec!["entry", "create", "-parentID", parent];
        full.extend_from_slice(args);
        let out = td.server_cli(&full).failed();
        assert!(
            out.all().to_lowercase().contains(&needle.to_lowercase()),
            "{args:?}: expected {needle:?} in:\n{}",
            out.all()
        );
    }
    assert_eq!(entry_count(&td), before, "nothing was stored");
}

#[test]
fn join_token_is_single_use_and_expires() {
    let mut td = TrustDomain::new();
    td.start_server();
    let token = td.join_token();
    td.start_agent(0, Some(&token));
    // A second agent with the same token is refused with the server's reason.
    let out = td.start_agent_expect_exit(1, Some(&token), Duration::from_secs(60));
    assert_ne!(out.code, 0);
    assert!(
        out.all()
            .contains("join token does not exist or has already been used"),
        "{}",
        out.all()
    );
    // An expired token.
    let expired = td.server_cli(&["token", "generate", "-ttl", "1"]).ok();
    let expired = expired
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Token: "))
        .expect("a Token: line")
        .trim()
        .to_owned();
    std::thread::sleep(Duration::from_secs(2));
    let out = td.start_agent_expect_exit(2, Some(&expired), Duration::from_secs(60));
    assert_ne!(out.code, 0);
    assert!(out.all().contains("join token expired"), "{}", out.all());
    // Only the first agent is attested.
    let list = td.server_cli(&["agent", "count"]).ok();
    assert!(list.stdout.contains("1 attested agent"), "{}", list.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_api_requires_header_and_an_identity() {
    let mut td = tokio::task::block_in_place(|| {
        let mut td = TrustDomain::new();
        td.start_server();
        td
    });
    let token = td.join_token();
    tokio::task::block_in_place(|| td.start_agent(0, Some(&token)));
    let mut client = workload_client(&td.agent_socket(0)).await;

    // No header: InvalidArgument.
    let err = client
        .fetch_x509svid(tonic::Request::new(X509svidRequest {}))
        .await
        .expect_err("no header");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("security header"),
        "{}",
        err.message()
    );

    // Header but no entry for this uid: PermissionDenied.
    let err = match client.fetch_x509svid(with_header(X509svidRequest {})).await {
        Err(e) => e,
        Ok(resp) => resp
            .into_inner()
            .message()
            .await
            .expect_err("no identity for this caller"),
    };
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let err = client
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        }))
        .await
        .expect_err("no identity");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");

    // An entry for a different uid does not help.
    td.server_cli(&[
        "entry",
        "create",
        "-parentID",
        &td.join_token_agent_id(&token),
        "-spiffeID",
        "spiffe://example.org/someone-else",
        "-selector",
        &format!("unix:uid:{}", my_uid() + 4242),
    ])
    .ok();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let err = client
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        }))
        .await
        .expect_err("still no identity");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
}

#[test]
fn banned_agent_shuts_down_and_forgets_its_svid() {
    let mut td = TrustDomain::new();
    td.start_server();
    let token = td.join_token();
    td.start_agent(0, Some(&token));
    td.server_cli(&["agent", "ban", "-spiffeID", &td.join_token_agent_id(&token)])
        .ok();
    let code = td
        .wait_agent_exit(0, Duration::from_secs(30))
        .expect("the banned agent stops by itself");
    assert_ne!(code, 0);
    let log = std::fs::read_to_string(td.path().join("agent0.log")).unwrap();
    assert!(log.contains("banned"), "{log}");
    assert!(
        !td.path().join("agent0-data/agent_svid.der").exists(),
        "the agent SVID is removed, so a restart must attest again"
    );
}

#[test]
fn evicted_agent_stops_because_a_join_token_cannot_reattest() {
    let mut td = TrustDomain::new();
    td.start_server();
    let token = td.join_token();
    td.start_agent(0, Some(&token));
    td.server_cli(&[
        "agent",
        "evict",
        "-spiffeID",
        &td.join_token_agent_id(&token),
    ])
    .ok();
    let code = td
        .wait_agent_exit(0, Duration::from_secs(30))
        .expect("the evicted agent stops by itself");
    assert_ne!(code, 0);
    let log = std::fs::read_to_string(td.path().join("agent0.log")).unwrap();
    assert!(log.contains("attest again"), "{log}");
    assert!(!td.path().join("agent0-data/agent_svid.der").exists());
}
