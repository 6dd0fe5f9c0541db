//! Server push: sigil-server tells its agents about entry changes at once
//! (sigil's WatchChanges extension), so a new entry reaches an open
//! Workload API stream without waiting for the agent's poll. The agent's
//! poll interval is set to 60 s here, so only the push can explain a fast
//! update. Real binaries; no fakes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use sigil_e2e::{my_uid, with_header, workload_client};
use sigil_proto::workload::X509svidRequest;
use sigil_testkit::{Options, TrustDomain};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_entry_reaches_open_workload_stream_without_waiting_for_poll() {
    let opts = Options {
        agent_sync_interval: "60s".into(),
        ..Options::default()
    };
    let mut td = tokio::task::block_in_place(|| {
        let mut td = TrustDomain::with(opts);
        td.start_server();
        td
    });
    let token = td.join_token();
    tokio::task::block_in_place(|| td.start_agent(0, Some(&token)));
    let parent = td.join_token_agent_id(&token);
    let uid = format!("unix:uid:{}", my_uid());
    let create = |id: &str| {
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
    };

    create("spiffe://example.org/push/a");
    let mut client = workload_client(&td.agent_socket(0)).await;
    let started = Instant::now();
    let mut stream = loop {
        match client.fetch_x509svid(with_header(X509svidRequest {})).await {
            Ok(resp) => {
                let mut s = resp.into_inner();
                if let Ok(Some(first)) = s.message().await {
                    assert_eq!(first.svids.len(), 1);
                    break s;
                }
            }
            Err(e) => assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "first entry pushed well before the 60 s poll"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let t0 = Instant::now();
    tokio::task::block_in_place(|| create("spiffe://example.org/push/b"));
    let latency = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let msg = stream.message().await.unwrap().expect("stream open");
            if msg.svids.len() == 2 {
                return t0.elapsed();
            }
        }
    })
    .await
    .expect("second SVID pushed on the open stream well before the 60 s poll");
    eprintln!("entry create -> workload stream update: {latency:?} (includes the CLI process)");
    assert!(latency < Duration::from_secs(10));
}
