//! Bounded agent memory (issue 8): with `x509_svid_cache_max_size = 100`
//! and 1,000 entries for the agent, a workload matching the last entry
//! still gets its SVID (signed on demand), and the agent holds at most 100
//! X509-SVIDs plus those of the workloads it is serving. The count is read
//! the way an operator reads it: the agent's Prometheus gauge
//! `spire_agent_lru_cache_svid_map_size`. Real binaries; no fakes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sigil_e2e::{my_uid, with_header, workload_client};
use sigil_proto::workload::X509svidRequest;
use sigil_testkit::{Options, TrustDomain, free_port, wait_for};

const CACHE_SIZE: usize = 100;
const ENTRIES: usize = 1000;

/// The value of an unlabelled gauge on the agent's `/metrics`.
fn gauge(port: u16, name: &str) -> Option<f64> {
    let (code, body) = sigil_testkit::http::get_local(port, "/metrics")?;
    if code != 200 {
        return None;
    }
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (metric, value) = l.rsplit_once(' ')?;
        let metric = metric.split_once('{').map_or(metric, |(m, _)| m);
        (metric == name).then(|| value.parse().ok())?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_holds_at_most_the_cache_size_plus_connected_workloads_and_signs_the_rest_on_demand()
{
    let metrics_port = free_port();
    let opts = Options {
        agent_extra_config: format!("    x509_svid_cache_max_size = {CACHE_SIZE}"),
        agent_top_config: format!(
            "telemetry {{\n    Prometheus {{\n        host = \"127.0.0.1\"\n        port = {metrics_port}\n    }}\n}}\n"
        ),
        ..Options::default()
    };
    let mut td = tokio::task::block_in_place(|| {
        let mut td = TrustDomain::with(opts);
        td.start_server();
        let token = td.join_token();
        td.start_agent(0, Some(&token));
        let parent = td.join_token_agent_id(&token);

        // Entries lru-0000 .. lru-0998 match nobody; lru-0999, the last in
        // entry ID order (so never among those signed ahead of callers),
        // matches this test's user.
        let entries: Vec<Value> = (0..ENTRIES)
            .map(|i| {
                let selector = if i == ENTRIES - 1 {
                    json!({"type": "unix", "value": format!("uid:{}", my_uid())})
                } else {
                    json!({"type": "unix", "value": format!("user:lru-nobody-{i}")})
                };
                json!({
                    "entry_id": format!("lru-{i:04}"),
                    "spiffe_id": format!("spiffe://example.org/lru/{i}"),
                    "parent_id": parent,
                    "selectors": [selector],
                })
            })
            .collect();
        let data = td.path().join("entries.json");
        std::fs::write(&data, json!({ "entries": entries }).to_string()).unwrap();
        td.server_cli(&["entry", "create", "-data", data.to_str().unwrap()])
            .ok();
        td
    });

    let svids = "spire_agent_lru_cache_svid_map_size";
    let records = "spire_agent_lru_cache_record_map_size";
    tokio::task::block_in_place(|| {
        wait_for(
            "the agent to hold all entries and a full SVID cache",
            Duration::from_secs(60),
            || {
                (gauge(metrics_port, records) == Some(ENTRIES as f64)
                    && gauge(metrics_port, svids) == Some(CACHE_SIZE as f64))
                .then_some(())
            },
        );
    });

    // The workload matching entry 999 (not held: the cache is full of
    // lower entries) gets its SVID: the agent signs it on demand.
    let last = format!("spiffe://example.org/lru/{}", ENTRIES - 1);
    let fetched = tokio::task::block_in_place(|| td.agent_cli(0, &["api", "fetch", "x509"]));
    assert_eq!(fetched.code, 0, "{}", fetched.all());
    assert!(
        fetched.stdout.contains(&format!("{last}\n")),
        "{}",
        fetched.all()
    );

    // While it stays connected, its SVID is held and the others fill only
    // what room is left: never more than the cache size plus its one.
    let mut client = workload_client(&td.agent_socket(0)).await;
    let mut stream = client
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let ids: Vec<&str> = first.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
    assert_eq!(ids, [last.as_str()]);

    let started = Instant::now();
    let mut seen = Vec::new();
    // Several syncs (the interval is 1 s), each of which re-plans the cache.
    while started.elapsed() < Duration::from_secs(5) {
        let held = tokio::task::block_in_place(|| gauge(metrics_port, svids)).unwrap();
        seen.push(held);
        assert!(
            held <= (CACHE_SIZE + 1) as f64,
            "the agent holds {held} X509-SVIDs, more than {CACHE_SIZE} plus one connected workload"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        seen.iter().all(|h| *h >= CACHE_SIZE as f64),
        "the cache stays full: {seen:?}"
    );

    // The connected workload still has its SVID and the agent still serves
    // it to a new caller without signing again.
    let again = tokio::task::block_in_place(|| td.agent_cli(0, &["api", "fetch", "x509"]));
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(again.stdout.contains(&format!("{last}\n")));
    drop(stream);
    tokio::task::block_in_place(|| td.stop_agent(0));
}
