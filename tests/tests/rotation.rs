//! Rotation: with a short X509-SVID TTL, the agent renews at half life and
//! pushes the new SVID on an already open FetchX509SVID stream before the
//! old one expires. Real server, agent and gRPC stream; no fakes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use sigil_e2e::{my_uid, with_header, workload_client};
use sigil_proto::workload::X509svidRequest;
use sigil_testkit::{Options, TrustDomain, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_pushes_new_svid_on_open_stream_before_expiry() {
    let mut td = tokio::task::block_in_place(|| {
        let mut td = TrustDomain::new();
        td.start_server();
        td
    });
    let token = td.join_token();
    tokio::task::block_in_place(|| td.start_agent(0, Some(&token)));
    let id = "spiffe://example.org/workload/rotating";
    td.server_cli(&[
        "entry",
        "create",
        "-parentID",
        &td.join_token_agent_id(&token),
        "-spiffeID",
        id,
        "-selector",
        &format!("unix:uid:{}", my_uid()),
        "-x509SVIDTTL",
        "30",
    ])
    .ok();
    tokio::task::block_in_place(|| {
        wait_for("first SVID", Duration::from_secs(30), || {
            let out = td.agent_cli(0, &["api", "fetch", "x509"]);
            (out.code == 0 && out.stdout.contains(id)).then_some(())
        })
    });

    let mut client = workload_client(&td.agent_socket(0)).await;
    let mut stream = client
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .expect("open stream")
        .into_inner();
    let first = stream
        .message()
        .await
        .expect("first message")
        .expect("stream open");
    assert_eq!(first.svids.len(), 1, "one identity");
    let svid = &first.svids[0];
    assert_eq!(svid.spiffe_id, id);
    assert!(
        !svid.x509_svid_key.is_empty() && !svid.bundle.is_empty(),
        "message is complete"
    );
    let leaf = first_cert(&svid.x509_svid);
    let info = sigil_crypto::x509::cert_info(&leaf).expect("leaf");
    let old_serial = info.serial_hex.clone();
    let old_expiry = info.not_after;

    let next = tokio::time::timeout(Duration::from_secs(40), async {
        loop {
            let msg = stream
                .message()
                .await
                .expect("stream message")
                .expect("stream open");
            let Some(s) = msg.svids.first() else { continue };
            let info = sigil_crypto::x509::cert_info(&first_cert(&s.x509_svid)).expect("leaf");
            if info.serial_hex != old_serial {
                return (SystemTime::now(), msg);
            }
        }
    })
    .await
    .expect("a rotated SVID within 40s");
    let (received_at, msg) = next;
    assert!(
        received_at < old_expiry,
        "new SVID arrived before the old one expired"
    );
    // Renewal happens at half life (SPIRE's watermark: the SVID's lifetime
    // counts from its backdated notBefore), not on every sync.
    let lifetime = old_expiry.duration_since(info.not_before).unwrap();
    assert!(
        old_expiry.duration_since(received_at).unwrap() <= lifetime / 2 + Duration::from_secs(2),
        "renewed at half life, not earlier"
    );
    assert_eq!(msg.svids.len(), 1, "each message is the complete state");
    assert_eq!(msg.svids[0].spiffe_id, id);
    assert!(!msg.svids[0].bundle.is_empty());
}

/// The first DER certificate of a concatenated chain.
fn first_cert(chain: &[u8]) -> Vec<u8> {
    // DER SEQUENCE: 0x30, length in short or long form.
    assert!(chain.len() > 4 && chain[0] == 0x30, "DER certificate");
    let (len, hdr) = if chain[1] < 0x80 {
        (chain[1] as usize, 2)
    } else {
        let n = (chain[1] & 0x7f) as usize;
        let mut l = 0usize;
        for b in &chain[2..2 + n] {
            l = (l << 8) | *b as usize;
        }
        (l, 2 + n)
    };
    chain[..hdr + len].to_vec()
}

/// A join-token agent whose SVID expires while the server is down cannot
/// attest again by itself (the token is spent): once the outage has outlived
/// its SVID it exits non-zero, naming when the SVID expired and what to do,
/// instead of retrying forever with transport errors (SPIRE's agent exits so
/// that an orchestrator restarts it). Real server and agent.
#[test]
fn join_token_agent_whose_svid_expired_in_an_outage_exits_saying_when_and_what_to_do() {
    let mut td = TrustDomain::with(Options {
        x509_svid_ttl: "10s".into(),
        ..Options::default()
    });
    td.start_server();
    let token = td.join_token();
    td.start_agent(0, Some(&token));
    let agent_id = td.join_token_agent_id(&token);
    wait_for("the agent in agent list", Duration::from_secs(30), || {
        let out = td.server_cli(&["agent", "list"]);
        (out.code == 0 && out.stdout.contains(&agent_id)).then_some(())
    });

    td.stop_server();
    // Longer than the agent SVID's whole lifetime.
    std::thread::sleep(Duration::from_secs(12));
    td.start_server();

    let code = td.wait_agent_exit(0, Duration::from_secs(90));
    let log = std::fs::read_to_string(td.path().join("agent0.log")).unwrap();
    assert!(
        matches!(code, Some(c) if c != 0),
        "the agent exits non-zero (exit: {code:?}); log:\n{log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("agent SVID expired at"))
        .unwrap_or_else(|| panic!("the agent says its SVID expired; log:\n{log}"));
    // The expiry time is readable (RFC 3339, UTC), and the way out is named.
    let year = time::OffsetDateTime::now_utc().year().to_string();
    assert!(
        line.contains(&format!("expired at {year}-")) && line.contains("new join token"),
        "{line}"
    );
}
