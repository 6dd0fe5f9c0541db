//! The audit log (`audit_log_enabled = true`): a real sigil-server with JSON
//! logs writes one SPIRE-shaped record (`type=audit`, message
//! `API accessed`) per API call, on the admin socket (with the caller's
//! uid, gid and executable) and on the agent endpoint (with the caller's
//! address and SPIFFE ID), for calls that succeed and calls that fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use serde_json::Value;
use sigil_testkit::{Options, TrustDomain, wait_for};

/// The `fields` of every audit record in the server's JSON log.
fn audit_records(td: &TrustDomain) -> Vec<Value> {
    let log = std::fs::read_to_string(td.path().join("server.log")).unwrap();
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["type"] == "audit")
        .map(|v| {
            assert_eq!(v["fields"]["message"], "API accessed", "{v}");
            v["fields"].clone()
        })
        .collect()
}

#[test]
fn audit_log_records_admin_socket_and_agent_calls_with_caller_and_status() {
    let mut td = TrustDomain::with(Options {
        server_extra_config: "    audit_log_enabled = true\n    log_format = \"json\"".into(),
        ..Options::default()
    });
    td.start_server();
    // Our uid and gid, as a file we create gets them.
    let probe = td.path().join("probe");
    std::fs::write(&probe, "").unwrap();
    let meta = std::fs::metadata(&probe).unwrap();
    let (uid, gid) = (u64::from(meta.uid()), u64::from(meta.gid()));

    let create = [
        "entry",
        "create",
        "-parentID",
        "spiffe://example.org/node",
        "-spiffeID",
        "spiffe://example.org/audited",
        "-selector",
        "unix:uid:4242",
    ];
    td.server_cli(&create).ok();
    // The same entry again: the call succeeds, its only item fails.
    td.server_cli(&create).failed();
    // A call that fails as a whole.
    td.server_cli(&[
        "agent",
        "show",
        "-spiffeID",
        "spiffe://example.org/spire/agent/join_token/nope",
    ])
    .failed();

    let records = audit_records(&td);
    let creates: Vec<&Value> = records
        .iter()
        .filter(|r| r["method"] == "BatchCreateEntry")
        .collect();
    assert_eq!(creates.len(), 2, "{records:#?}");
    for r in &creates {
        assert_eq!(r["service"], "entry.v1.Entry");
        assert_eq!(r["caller_uid"], uid, "{r}");
        assert_eq!(r["caller_gid"], gid, "{r}");
        assert!(
            r["caller_path"]
                .as_str()
                .is_some_and(|p| p.ends_with("sigil-server")),
            "the CLI's executable: {r}"
        );
        assert!(r.get("caller_addr").is_none(), "{r}");
        assert_eq!(r["spiffe_id"], "spiffe://example.org/audited");
        assert_eq!(r["parent_id"], "spiffe://example.org/node");
        assert_eq!(r["selectors"], "unix:uid:4242");
        assert!(r["request_id"].as_str().is_some_and(|s| s.len() == 36));
    }
    assert_eq!(creates[0]["status"], "success", "{}", creates[0]);
    assert!(
        creates[0]["entry_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert!(creates[0].get("status_code").is_none());
    assert_eq!(creates[1]["status"], "error", "{}", creates[1]);
    assert_eq!(creates[1]["status_code"], "AlreadyExists");
    assert!(
        creates[1]["status_message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );

    let show = records
        .iter()
        .find(|r| r["method"] == "GetAgent")
        .unwrap_or_else(|| panic!("a GetAgent record: {records:#?}"));
    assert_eq!(show["service"], "agent.v1.Agent");
    assert_eq!(show["status"], "error");
    assert_eq!(show["status_code"], "NotFound");
    assert_eq!(
        show["spiffe_id"],
        "spiffe://example.org/spire/agent/join_token/nope"
    );
    assert_eq!(show["caller_uid"], uid);

    // An agent attests and syncs over mTLS.
    let token = td.join_token();
    td.start_agent(0, Some(&token));
    let agent_id = td.join_token_agent_id(&token);
    let synced = wait_for(
        "an audited call by the agent",
        Duration::from_secs(30),
        || {
            audit_records(&td)
                .into_iter()
                .find(|r| r["caller_id"] == agent_id.as_str() && r["status"] == "success")
        },
    );
    assert!(
        synced["caller_addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{synced}"
    );
    assert!(synced.get("caller_uid").is_none(), "{synced}");
    let attest = audit_records(&td)
        .into_iter()
        .find(|r| r["method"] == "AttestAgent")
        .expect("an AttestAgent record");
    assert_eq!(attest["status"], "success", "{attest}");
    assert!(attest.get("caller_id").is_none(), "no SVID yet: {attest}");
    // Health checks are not audited, as in SPIRE.
    assert!(
        audit_records(&td)
            .iter()
            .all(|r| r["service"] != "grpc.health.v1.Health")
    );
}

#[test]
fn without_audit_log_enabled_no_audit_records_are_written() {
    let mut td = TrustDomain::with(Options {
        server_extra_config: "    log_format = \"json\"".into(),
        ..Options::default()
    });
    td.start_server();
    td.server_cli(&[
        "entry",
        "create",
        "-parentID",
        "spiffe://example.org/node",
        "-spiffeID",
        "spiffe://example.org/quiet",
        "-selector",
        "unix:uid:4242",
    ])
    .ok();
    assert!(audit_records(&td).is_empty());
}

/// Kills the server it holds when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// With its log on a full device (`/dev/full`), the server cannot write an
/// audit record: the call then ends with `Internal` "audit log could not be
/// written" instead of passing for audited.
#[test]
fn a_call_whose_audit_record_cannot_be_written_ends_with_internal() {
    let td = TrustDomain::with(Options {
        server_extra_config: "    audit_log_enabled = true\n    log_format = \"json\"".into(),
        ..Options::default()
    });
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let _server = Killed(
        std::process::Command::new(sigil_testkit::bin("sigil-server"))
            .arg("run")
            .arg("-config")
            .arg(td.server_conf())
            .stdout(full())
            .stderr(full())
            .spawn()
            .unwrap(),
    );
    wait_for("server healthcheck", Duration::from_secs(30), || {
        (td.server_cli(&["healthcheck"]).code == 0).then_some(())
    });
    let out = td.server_cli(&[
        "entry",
        "create",
        "-parentID",
        "spiffe://example.org/node",
        "-spiffeID",
        "spiffe://example.org/unaudited",
        "-selector",
        "unix:uid:4242",
    ]);
    assert_ne!(out.code, 0, "{}", out.all());
    assert!(
        out.all().contains("audit log could not be written"),
        "{}",
        out.all()
    );
}
