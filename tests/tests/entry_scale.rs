//! An agent authorized for more entries than one gRPC message can carry
//! (4 MiB, the decode limit of sigil and SPIRE) still syncs: sigil-agent
//! fetches them with `SyncAuthorizedEntries` (revision pages, then the
//! entries it lacks a page at a time), against sigil-server and against a
//! real spire-server 1.15 (`SIGIL_TEST_SPIRE_BIN`).
//!
//! Size, not count, is what the limit is about, so the entries are made
//! large (eight long selectors each, about 700 bytes encoded) and
//! [`FILLER`] of them come to more than 4 MiB — the test measures the
//! encoded size of the equivalent `GetAuthorizedEntries` response and
//! asserts it. Issue 8 asks for 50,000 entries; at that count the agent
//! would sign (and keep, and persist) 50,000 X509-SVIDs and SPIRE's bulk
//! create alone takes many minutes, so the test uses the fewest entries
//! that cross the limit, keeping each case well under three minutes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use prost::Message;
use sigil_e2e::my_uid;
use sigil_e2e::spire::{self, SpireServer};
use sigil_proto::spire::api::server::entry::v1::GetAuthorizedEntriesResponse;
use sigil_proto::spire::api::types;
use sigil_testkit::{CmdResult, TrustDomain, wait_for};

/// Entries the workload does not match, all parented to the agent.
const FILLER: usize = 6_500;
/// Entries per `entry create -data` file (each request stays well under
/// the 4 MiB message limit with entries this large).
const PER_FILE: usize = 1_500;
/// Selectors per filler entry.
const SELECTORS: usize = 8;

const JOIN_TOKEN: &str = r#"NodeAttestor "join_token" {
        plugin_data {
        }
    }"#;

fn filler_selectors(i: usize) -> Vec<(String, String)> {
    (0..SELECTORS)
        .map(|k| {
            (
                "k8s".to_owned(),
                format!(
                    "pod-label:app.kubernetes.io/component:entry-scale-filler-{i:06}-label-{k}"
                ),
            )
        })
        .collect()
}

fn filler_id(i: usize) -> String {
    format!(
        "spiffe://example.org/entry-scale/namespace-{:03}/service-account/filler-{i:06}",
        i % 100
    )
}

const TARGET_ID: &str = "spiffe://example.org/entry-scale/target";

/// The encoded size of a `GetAuthorizedEntriesResponse` carrying the filler
/// entries with the fields an agent asks for (SPIFFE ID, selectors, a
/// UUID-length ID, revision, creation time).
fn encoded_size_of_full_list() -> usize {
    let entries = (0..FILLER)
        .map(|i| types::Entry {
            id: format!("{:036}", i),
            spiffe_id: Some(types::Spiffeid {
                trust_domain: "example.org".into(),
                path: filler_id(i)
                    .trim_start_matches("spiffe://example.org")
                    .to_owned(),
            }),
            selectors: filler_selectors(i)
                .into_iter()
                .map(|(t, v)| types::Selector {
                    r#type: t,
                    value: v,
                })
                .collect(),
            revision_number: 1,
            created_at: 1_700_000_000,
            ..Default::default()
        })
        .collect();
    GetAuthorizedEntriesResponse { entries }.encoded_len()
}

/// Writes SPIRE's `-data` files (`{"entries": [...]}`) for the filler
/// entries and, last, the one the test's workload matches.
fn write_data_files(dir: &Path, parent: &str) -> Vec<std::path::PathBuf> {
    let uid = my_uid().to_string();
    let mut all: Vec<serde_json::Value> = (0..FILLER)
        .map(|i| {
            serde_json::json!({
                "parent_id": parent,
                "spiffe_id": filler_id(i),
                "selectors": filler_selectors(i)
                    .into_iter()
                    .map(|(t, v)| serde_json::json!({"type": t, "value": v}))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    all.push(serde_json::json!({
        "parent_id": parent,
        "spiffe_id": TARGET_ID,
        "selectors": [{"type": "unix", "value": format!("uid:{uid}")}],
    }));
    all.chunks(PER_FILE)
        .enumerate()
        .map(|(n, chunk)| {
            let path = dir.join(format!("entries-{n}.json"));
            std::fs::write(
                &path,
                serde_json::to_vec(&serde_json::json!({ "entries": chunk })).unwrap(),
            )
            .unwrap();
            path
        })
        .collect()
}

/// Creates every entry through `cli` (`entry create -data <file>`), one
/// file at a time.
fn create_entries(td: &TrustDomain, parent: &str, cli: impl Fn(&[&str]) -> CmdResult) {
    let started = Instant::now();
    for file in write_data_files(td.path(), parent) {
        let out = cli(&["entry", "create", "-data", file.to_str().unwrap()]);
        assert_eq!(out.code, 0, "entry create -data failed: {}", out.stderr);
    }
    eprintln!("created {} entries in {:?}", FILLER + 1, started.elapsed());
}

/// Waits until the agent serves the target entry's SVID to this process,
/// then checks the agent's log: sparse mode was used and no message was
/// too large.
fn assert_target_served_without_size_errors(td: &mut TrustDomain) {
    let started = Instant::now();
    wait_for(
        "the X509-SVID of the last entry",
        Duration::from_secs(150),
        || {
            assert!(td.agent_running(0), "sigil-agent exited");
            let out = td.agent_cli(0, &["api", "fetch", "x509"]);
            (out.code == 0 && out.stdout.contains(TARGET_ID)).then_some(())
        },
    );
    eprintln!(
        "agent start -> SVID of the last entry: {:?}",
        started.elapsed()
    );
    let log = std::fs::read_to_string(td.path().join("agent0.log")).unwrap();
    for bad in [
        "too large",
        "message length",
        "ResourceExhausted",
        "OutOfRange",
    ] {
        assert!(
            !log.contains(bad),
            "agent log mentions {bad:?}:\n{}",
            log.lines()
                .filter(|l| l.contains(bad))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(
        log.contains("Synced authorized entries"),
        "the agent synced in sparse mode (revision pages, then the entries it lacked)"
    );
}

#[test]
fn filler_entries_encode_to_more_than_the_4_mib_grpc_limit_as_one_list() {
    let size = encoded_size_of_full_list();
    eprintln!("{FILLER} entries as one GetAuthorizedEntries response: {size} bytes");
    assert!(
        size > sigil_proto::MAX_MESSAGE_SIZE,
        "{FILLER} filler entries encode to {size} bytes, not above the 4 MiB limit"
    );
}

#[test]
fn agent_authorized_for_more_than_4_mib_of_entries_syncs_from_sigil_server() {
    let mut td = TrustDomain::new();
    td.start_server();
    let token = td.join_token();
    let parent = td.join_token_agent_id(&token);
    create_entries(&td, &parent, |args| td.server_cli(args));
    td.start_agent(0, Some(&token));
    assert_target_served_without_size_errors(&mut td);
}

#[test]
fn agent_authorized_for_more_than_4_mib_of_entries_syncs_from_spire_server() {
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
    let parent = format!("spiffe://example.org/spire/agent/join_token/{token}");
    create_entries(&td, &parent, |args| server.cli(args));
    server.serve_sigil_agent(&mut td, 0);
    td.start_agent(0, Some(&token));
    assert_target_served_without_size_errors(&mut td);
}
