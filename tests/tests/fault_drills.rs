//! Fault drills: the real server and agent are killed with SIGKILL in the
//! middle of work (a CA rotation, a batch entry create, agent attestations,
//! the agent's cache write), and PostgreSQL is stopped under load; each
//! drill then checks what an operator would: nothing committed is lost,
//! nothing half-done remains, and agents carry on. No fakes.
//!
//! Kill points are random; each drill prints its seed, and
//! `SIGIL_DRILL_SEED=<seed>` replays one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use sigil_e2e::my_uid;
use sigil_testkit::{CmdResult, Options, TrustDomain, bin, free_port, wait_for};

/// A small deterministic generator for kill points (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(drill: &str) -> Rng {
        let seed = std::env::var("SIGIL_DRILL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("{drill}: SIGIL_DRILL_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }

    fn millis(&mut self, max: u64) -> Duration {
        Duration::from_millis(self.below(max + 1))
    }
}

/// Runs `sigil-server <args> -socketPath <socket>` as a child, so the server
/// can be killed while the call is in flight.
fn spawn_server_cli(td: &TrustDomain, args: &[&str]) -> Child {
    Command::new(bin("sigil-server"))
        .args(args)
        .arg("-socketPath")
        .arg(td.server_socket())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sigil-server CLI")
}

fn finish(child: Child) -> CmdResult {
    CmdResult::from(child.wait_with_output().expect("CLI output"))
}

/// The X.509 authorities of the bundle the server shows.
fn bundle_authorities(td: &TrustDomain) -> BTreeSet<Vec<u8>> {
    let pem = td.server_cli(&["bundle", "show"]).ok().stdout;
    sigil_spiffe::bundle::certificates_from_pem(pem.as_bytes())
        .expect("bundle show prints PEM certificates")
        .into_iter()
        .collect()
}

/// SPIRE's authority ID of a CA certificate: its SubjectKeyIdentifier in hex.
fn authority_id(der: &[u8]) -> String {
    use x509_parser::extensions::ParsedExtension;
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("a certificate");
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(ski) => {
                Some(ski.0.iter().map(|b| format!("{b:02x}")).collect())
            }
            _ => None,
        })
        .expect("CA certificates carry a SubjectKeyIdentifier")
}

/// `localauthority x509 show`: (active ID, prepared ID if any).
fn x509_authorities(td: &TrustDomain) -> (String, Option<String>) {
    let out = td
        .server_cli(&["localauthority", "x509", "show", "-output", "json"])
        .ok();
    let v: Value = serde_json::from_str(&out.stdout).expect("JSON");
    let active = v["active"]["authority_id"]
        .as_str()
        .unwrap_or_else(|| panic!("an active X.509 authority: {}", out.stdout))
        .to_owned();
    let prepared = v["prepared"]["authority_id"].as_str().map(str::to_owned);
    (active, prepared)
}

/// The authority ID in a `prepare`/`activate` JSON answer.
fn changed_authority(out: &CmdResult, key: &str) -> String {
    let v: Value = serde_json::from_str(&out.stdout).expect("JSON");
    v[key]["authority_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {}", out.stdout))
        .to_owned()
}

/// Creates an entry for this test process's uid under `parent`.
fn create_entry(td: &TrustDomain, parent: &str, spiffe_id: &str) {
    td.server_cli(&[
        "entry",
        "create",
        "-parentID",
        parent,
        "-spiffeID",
        spiffe_id,
        "-selector",
        &format!("unix:uid:{}", my_uid()),
    ])
    .ok();
}

/// Fetches agent `n`'s X509-SVIDs with `-write` and returns the directory.
fn fetch_written(td: &TrustDomain, n: usize, want: &str) -> PathBuf {
    let dir = td.path().join(format!("fetched{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    wait_for(
        &format!("{want} from agent {n}"),
        Duration::from_secs(30),
        || {
            let out = td.agent_cli(
                n,
                &["api", "fetch", "x509", "-write", dir.to_str().unwrap()],
            );
            (out.code == 0 && out.stdout.contains(want)).then_some(())
        },
    );
    dir
}

/// The leaf and chain of the SVID named `id` in a `-write` directory, and
/// the bundle written beside it.
fn written_svid(dir: &Path, out: &str, id: &str) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    // SPIRE's CLI prints "SPIFFE ID: <id>" per SVID, in file order.
    let index = out
        .lines()
        .filter(|l| l.trim_start().starts_with("SPIFFE ID:"))
        .position(|l| l.contains(id))
        .unwrap_or_else(|| panic!("{id} in {out}"));
    let read = |name: String| {
        sigil_spiffe::bundle::certificates_from_pem(&std::fs::read(dir.join(&name)).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    (
        read(format!("svid.{index}.pem")),
        read(format!("bundle.{index}.pem")),
    )
}

/// Kills the server at random points of a loop of `localauthority x509
/// prepare` / `activate` calls (each in flight when the server dies), and
/// restarts it each time: every authority the bundle held stays, a call that
/// answered success is in effect after the restart, the active and prepared
/// CAs are in the bundle, and the agent keeps serving and gets SVIDs from the
/// final CA that verify against the bundle it serves.
#[test]
fn server_killed_during_ca_rotation_keeps_every_authority_and_the_agent_carries_on() {
    let mut rng = Rng::new("ca rotation drill");
    let mut td = TrustDomain::new();
    td.start_server();
    let token = td.join_token();
    td.start_agent(0, Some(&token));
    let agent_id = td.join_token_agent_id(&token);
    let first = "spiffe://example.org/workload/before-rotation";
    create_entry(&td, &agent_id, first);
    fetch_written(&td, 0, first);

    let mut ever_in_bundle = bundle_authorities(&td);
    for round in 0..12 {
        let (active_before, prepared) = x509_authorities(&td);
        if let Some(id) = &prepared {
            // As SPIRE's docs ask: activate only once agents hold the new
            // authority, or they cannot verify the server any more.
            wait_agent_holds(&td, id);
        }
        let (args, key): (Vec<String>, &str) = match &prepared {
            Some(id) => (
                ["localauthority", "x509", "activate", "-authorityID", id]
                    .map(String::from)
                    .to_vec(),
                "activated_authority",
            ),
            None => (
                ["localauthority", "x509", "prepare"]
                    .map(String::from)
                    .to_vec(),
                "prepared_authority",
            ),
        };
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.extend(["-output", "json"]);
        let call = spawn_server_cli(&td, &args);
        std::thread::sleep(rng.millis(120));
        td.kill_server();
        let out = finish(call);
        eprintln!("round {round}: {} answered: {}", args[2], out.code == 0);
        td.start_server();

        assert_eq!(
            temp_files(&td.path().join("server-data")),
            0,
            "round {round}: a journal or key write cut short is cleaned up"
        );
        let now_in_bundle = bundle_authorities(&td);
        let lost: Vec<String> = ever_in_bundle
            .difference(&now_in_bundle)
            .map(|c| authority_id(c))
            .collect();
        assert!(lost.is_empty(), "round {round}: authorities lost: {lost:?}");
        let ids: BTreeSet<String> = now_in_bundle.iter().map(|c| authority_id(c)).collect();
        let (active, prepared_after) = x509_authorities(&td);
        assert!(
            ids.contains(&active),
            "round {round}: the active CA {active} is not in the bundle {ids:?}"
        );
        if let Some(p) = &prepared_after {
            assert!(
                ids.contains(p),
                "round {round}: the prepared CA {p} is not in the bundle {ids:?}"
            );
        }
        if out.code == 0 {
            let id = changed_authority(&out, key);
            match key {
                "activated_authority" => {
                    assert_eq!(active, id, "round {round}: an answered activation was lost")
                }
                _ => assert_eq!(
                    prepared_after.as_deref(),
                    Some(id.as_str()),
                    "round {round}: an answered preparation was lost"
                ),
            }
        } else if key == "activated_authority" {
            // Not answered: either in effect or not at all.
            let target = prepared.as_deref().unwrap();
            assert!(
                active == target || (active == active_before && prepared_after.is_some()),
                "round {round}: half an activation: active {active}, prepared {prepared_after:?}"
            );
        }
        ever_in_bundle.extend(now_in_bundle);
        let served = td.agent_cli(0, &["api", "fetch", "x509"]);
        assert!(
            served.code == 0 && served.stdout.contains(first),
            "round {round}: the agent keeps serving: {}",
            served.all()
        );
    }

    // A last rotation, uninterrupted, then an SVID for a new entry: it comes
    // from the final CA and verifies against the bundle the agent serves.
    let (_, prepared) = x509_authorities(&td);
    let id = match prepared {
        Some(id) => id,
        None => changed_authority(
            &td.server_cli(&["localauthority", "x509", "prepare", "-output", "json"])
                .ok(),
            "prepared_authority",
        ),
    };
    wait_agent_holds(&td, &id);
    td.server_cli(&["localauthority", "x509", "activate", "-authorityID", &id])
        .ok();
    let after = "spiffe://example.org/workload/after-rotation";
    create_entry(&td, &agent_id, after);
    let dir = fetch_written(&td, 0, after);
    let out = td
        .agent_cli(
            0,
            &["api", "fetch", "x509", "-write", dir.to_str().unwrap()],
        )
        .ok();
    let (chain, bundle) = written_svid(&dir, &out.stdout, after);
    sigil_crypto::x509::verify_chain(&chain, &bundle, SystemTime::now())
        .expect("the new SVID verifies against the agent's bundle");
    let ca = bundle
        .iter()
        .find(|c| authority_id(c) == id)
        .expect("the final CA is in the agent's bundle");
    sigil_crypto::x509::verify_chain(&chain, std::slice::from_ref(ca), SystemTime::now())
        .expect("the new SVID is signed by the final CA");
    assert!(out.stdout.contains(first), "the first SVID is still served");
}

/// Waits until agent 0 serves a bundle holding the X.509 authority `id`.
fn wait_agent_holds(td: &TrustDomain, id: &str) {
    let dir = td.path().join("held");
    std::fs::create_dir_all(&dir).unwrap();
    wait_for(
        &format!("agent 0 to hold authority {id}"),
        Duration::from_secs(45),
        || {
            let out = td.agent_cli(
                0,
                &["api", "fetch", "x509", "-write", dir.to_str().unwrap()],
            );
            if out.code != 0 {
                return None;
            }
            let pem = std::fs::read(dir.join("bundle.0.pem")).ok()?;
            sigil_spiffe::bundle::certificates_from_pem(&pem)
                .ok()?
                .iter()
                .any(|c| authority_id(c) == id)
                .then_some(())
        },
    );
}

/// Kills the server in the middle of `entry create -data` with a few
/// thousand entries: after the restart every entry of the batch is there
/// whole (its selectors and DNS names as sent) or not at all, none twice,
/// and the server serves: the same batch sent again creates exactly the
/// missing ones.
#[test]
fn server_killed_during_batch_entry_create_leaves_each_entry_whole_or_absent() {
    const N: usize = 2000;
    let mut rng = Rng::new("batch create drill");
    let mut td = TrustDomain::new();
    td.start_server();
    let parent = "spiffe://example.org/spire/agent/batch";
    let entries: Vec<Value> = (0..N)
        .map(|i| {
            json!({
                "spiffe_id": format!("spiffe://example.org/batch/{i}"),
                "parent_id": parent,
                "selectors": [
                    {"type": "unix", "value": format!("uid:{i}")},
                    {"type": "unix", "value": "gid:0"},
                    {"type": "k8s", "value": format!("pod-name:p{i}")},
                ],
                "dns_names": [format!("a{i}.example.org"), format!("b{i}.example.org")],
            })
        })
        .collect();
    let data = td.path().join("entries.json");
    std::fs::write(&data, json!({ "entries": entries }).to_string()).unwrap();

    let call = spawn_server_cli(&td, &["entry", "create", "-data", data.to_str().unwrap()]);
    // Kill once part of the batch is in: somewhere past 50 entries.
    let threshold = 50 + rng.below(400) as usize;
    let started = Instant::now();
    loop {
        let n = entry_count(&td);
        if n >= threshold {
            break;
        }
        assert!(
            n < N && started.elapsed() < Duration::from_secs(60),
            "the batch finished ({n} entries) before the kill point"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    td.kill_server();
    let _ = finish(call);
    td.start_server();

    let stored = batch_entries(&td);
    assert!(
        stored.len() < N,
        "the kill landed mid-batch: {}",
        stored.len()
    );
    assert!(stored.len() >= threshold, "committed entries survive");
    check_batch_entries(&stored, N);

    // The server serves: the batch again creates exactly what is missing.
    let again = td.server_cli(&["entry", "create", "-data", data.to_str().unwrap()]);
    let created = again.stdout.matches("Entry ID").count();
    assert_eq!(
        created,
        N - stored.len(),
        "the retry creates the missing entries only\n{}",
        again.stderr.lines().take(5).collect::<Vec<_>>().join("\n")
    );
    let all = batch_entries(&td);
    assert_eq!(all.len(), N);
    check_batch_entries(&all, N);
}

/// `entry count` as a number.
fn entry_count(td: &TrustDomain) -> usize {
    let out = td.server_cli(&["entry", "count"]).ok();
    out.stdout
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count in {}", out.stdout))
}

/// A stored entry's selectors (type, value) and DNS names, sorted.
type StoredEntry = (Vec<(String, String)>, Vec<String>);

/// The stored entries by SPIFFE ID path; an entry stored twice fails.
fn batch_entries(td: &TrustDomain) -> BTreeMap<String, StoredEntry> {
    let out = td.server_cli(&["entry", "show", "-output", "json"]).ok();
    let v: Value = serde_json::from_str(&out.stdout).expect("JSON");
    let mut map = BTreeMap::new();
    for e in v["entries"].as_array().cloned().unwrap_or_default() {
        let path = e["spiffe_id"]["path"].as_str().unwrap().to_owned();
        let mut selectors: Vec<(String, String)> = e["selectors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["type"].as_str().unwrap().to_owned(),
                    s["value"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        selectors.sort();
        let mut dns: Vec<String> = e["dns_names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap().to_owned())
            .collect();
        dns.sort();
        assert!(
            map.insert(path.clone(), (selectors, dns)).is_none(),
            "entry {path} stored twice"
        );
    }
    map
}

fn check_batch_entries(stored: &BTreeMap<String, StoredEntry>, n: usize) {
    for (path, (selectors, dns)) in stored {
        let i: usize = path
            .strip_prefix("/batch/")
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("unexpected entry {path}"));
        assert!(i < n);
        let mut want = vec![
            ("k8s".to_owned(), format!("pod-name:p{i}")),
            ("unix".to_owned(), "gid:0".to_owned()),
            ("unix".to_owned(), format!("uid:{i}")),
        ];
        want.sort();
        assert_eq!(selectors, &want, "entry {path}: its selectors");
        assert_eq!(
            dns,
            &vec![format!("a{i}.example.org"), format!("b{i}.example.org")],
            "entry {path}: its DNS names"
        );
    }
}

/// Kills the server while agents attest with join tokens, in rounds, and
/// restarts it: every token is either still unspent (its agent attests with
/// it after the restart) or spent with its node recorded; an agent that got
/// its SVID serves workloads; no agent is left without a way back except
/// the one whose answer was lost after the node was recorded, as in SPIRE.
/// (A join token gives a node no selectors, in SPIRE as here, so what
/// attestation must write together is the spent token and the node.)
#[test]
fn server_killed_during_attestation_spends_no_token_without_its_node() {
    const ROUNDS: usize = 4;
    const PER_ROUND: usize = 4;
    let mut rng = Rng::new("attestation drill");
    // Without the per-IP attestation limit (1 a second, and every agent here
    // is 127.0.0.1), so a round's attestations run at once and the kill
    // lands in the middle of them, not in the limiter's queue.
    let mut td = TrustDomain::with(Options {
        server_extra_config: "    ratelimit {\n        attestation = false\n    }".into(),
        ..Options::default()
    });
    td.start_server();
    let mut tokens: Vec<String> = Vec::new();
    let mut answer_lost = 0;
    for round in 0..ROUNDS {
        let first = round * PER_ROUND;
        let round_tokens: Vec<String> = (0..PER_ROUND).map(|_| td.join_token()).collect();
        let done_before = attestations_logged(&td);
        for (i, t) in round_tokens.iter().enumerate() {
            td.spawn_agent(first + i, Some(t));
        }
        tokens.extend(round_tokens);
        // Kill while the round's attestations are under way: once the
        // first has completed, or at a random point.
        let deadline = Instant::now() + Duration::from_millis(200) + rng.millis(1500);
        while Instant::now() < deadline && attestations_logged(&td) == done_before {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(rng.millis(40));
        td.kill_server();
        eprintln!(
            "round {round}: {} of {PER_ROUND} attestations completed before the kill",
            attestations_logged(&td) - done_before
        );
        td.start_server();

        for (n, token) in tokens.clone().into_iter().enumerate().skip(first) {
            let node = td.join_token_agent_id(&token);
            // The agent retries through the restart; it ends serving, or
            // exits because its token is spent.
            let healthy = wait_for(
                &format!("agent {n} to serve or give up"),
                Duration::from_secs(40),
                || {
                    if td.agent_healthy(n) {
                        Some(true)
                    } else if !td.agent_running(n) {
                        Some(false)
                    } else {
                        None
                    }
                },
            );
            let recorded = node_recorded(&td, &node);
            if healthy {
                assert!(
                    recorded,
                    "agent {n} serves but its node {node} is not recorded"
                );
                continue;
            }
            let has_svid = td
                .path()
                .join(format!("agent{n}-data/agent_svid.der"))
                .exists();
            if has_svid {
                // It holds an SVID: it comes back without a token.
                td.start_agent(n, None);
                assert!(recorded, "agent {n} holds an SVID for an unrecorded node");
            } else if recorded {
                // The node was recorded and the token spent, but the answer
                // died with the server: the operator issues a new token.
                answer_lost += 1;
            } else {
                // Not recorded: the token must still be unspent.
                td.start_agent(n, Some(&token));
                assert!(
                    node_recorded(&td, &node),
                    "agent {n} attested again with its unspent token"
                );
            }
        }
    }
    eprintln!("attestation drill: {answer_lost} answers lost after the node was recorded");

    // Every agent that serves gets workload SVIDs.
    for (n, token) in tokens.iter().enumerate() {
        if !td.agent_running(n) {
            continue;
        }
        let id = format!("spiffe://example.org/workload/drill{n}");
        create_entry(&td, &td.join_token_agent_id(token), &id);
        fetch_written(&td, n, &id);
    }
    let nodes = td.server_cli(&["agent", "list"]).ok().stdout;
    for (n, t) in tokens.iter().enumerate() {
        let recorded = nodes.contains(&td.join_token_agent_id(t));
        assert!(
            recorded || td.agent_running(n),
            "token {n} left neither a node nor a serving agent"
        );
    }
}

/// How many attestations the server has logged as completed.
fn attestations_logged(td: &TrustDomain) -> usize {
    std::fs::read_to_string(td.path().join("server.log"))
        .unwrap_or_default()
        .matches("Agent attestation request completed")
        .count()
}

fn node_recorded(td: &TrustDomain, node: &str) -> bool {
    let out = td.server_cli(&["agent", "show", "-spiffeID", node]);
    out.code == 0 && out.stdout.contains(node)
}

/// Kills the agent again and again while it writes its SVID cache
/// (`svid_cache/`, one file per SVID; many SVIDs, so the writes take a
/// moment; the kill lands as soon as a temporary file appears, or at a
/// random point): it always restarts, serves every SVID, and leaves no
/// temporary files piling up.
#[test]
fn agent_killed_while_writing_its_cache_restarts_and_serves() {
    const ENTRIES: usize = 150;
    let mut rng = Rng::new("agent cache drill");
    let mut td = TrustDomain::new();
    td.start_server();
    let token = td.join_token();
    td.start_agent(0, Some(&token));
    let agent_id = td.join_token_agent_id(&token);
    let ids: Vec<String> = (0..ENTRIES)
        .map(|i| format!("spiffe://example.org/workload/cache{i}"))
        .collect();
    let data = td.path().join("entries.json");
    let batch: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({
                "spiffe_id": id,
                "parent_id": agent_id,
                "selectors": [{"type": "unix", "value": format!("uid:{}", my_uid())}],
            })
        })
        .collect();
    std::fs::write(&data, json!({ "entries": batch }).to_string()).unwrap();
    td.server_cli(&["entry", "create", "-data", data.to_str().unwrap()])
        .ok();
    wait_serves_all(&td, &ids);

    let data_dir = td.path().join("agent0-data");
    let cache = data_dir.join("svid_cache");
    let mut extra = 0;
    for round in 0..10 {
        td.kill_agent(0);
        // A new entry each round, so the cache changes and is written again.
        let id = format!("spiffe://example.org/workload/extra{extra}");
        extra += 1;
        create_entry(&td, &agent_id, &id);
        let left_before = temp_files(&data_dir);
        td.spawn_agent(0, None);
        let deadline = Instant::now() + Duration::from_millis(300) + rng.millis(2500);
        let mut saw_tmp = false;
        while Instant::now() < deadline {
            if temp_files(&data_dir) > left_before {
                saw_tmp = true;
                std::thread::sleep(rng.millis(3));
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        td.kill_agent(0);
        eprintln!(
            "round {round}: killed {} a cache write",
            if saw_tmp { "during" } else { "around" }
        );
    }
    let left: Vec<String> = std::fs::read_dir(&data_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    eprintln!("after the kills: {left:?}");
    // Whatever state the kills left, the agent starts and serves everything.
    let files: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(!files.is_empty(), "the cache was written");
    for f in &files {
        let whole = std::fs::read(f)
            .ok()
            .is_some_and(|b| serde_json::from_slice::<Value>(&b).is_ok());
        assert!(whole, "{} is whole (written atomically)", f.display());
    }
    td.start_agent(0, None);
    let mut all = ids.clone();
    all.extend((0..extra).map(|i| format!("spiffe://example.org/workload/extra{i}")));
    wait_serves_all(&td, &all);
    assert_eq!(
        temp_files(&data_dir),
        0,
        "temporary files left by killed writes are cleaned up"
    );
}

/// Temporary files in `dir` and in its `svid_cache/`.
fn temp_files(dir: &Path) -> usize {
    let count = |d: &Path| {
        std::fs::read_dir(d)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                    .count()
            })
            .unwrap_or(0)
    };
    count(dir) + count(&dir.join("svid_cache"))
}

fn wait_serves_all(td: &TrustDomain, ids: &[String]) {
    wait_for(
        &format!("agent 0 to serve all {} SVIDs", ids.len()),
        Duration::from_secs(60),
        || {
            let out = td.agent_cli(0, &["api", "fetch", "x509"]);
            (out.code == 0 && ids.iter().all(|id| out.stdout.contains(&format!("{id}\n"))))
                .then_some(())
        },
    );
}

/// A PostgreSQL cluster of this test's own (the shared one of `.ci/run`
/// cannot be stopped without breaking other tests), started with the
/// binaries of `/usr/lib/postgresql/*/bin`, as the `postgres` user when this
/// runs as root.
struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl Postgres {
    /// `None` (after a skip line) outside CI when PostgreSQL is not installed.
    fn start() -> Option<Postgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql").ok().and_then(|d| {
            let mut dirs: Vec<PathBuf> = d
                .flatten()
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("pg_ctl").exists())
                .collect();
            dirs.sort();
            dirs.pop()
        });
        let Some(bin) = bin else {
            let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
            assert!(!in_ci, "PostgreSQL binaries are needed in CI");
            eprintln!("skipping: no /usr/lib/postgresql/*/bin/pg_ctl");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("sgpg")
            .tempdir_in("/tmp")
            .unwrap();
        let as_postgres = sigil_e2e::my_uid() == 0;
        let pg = Postgres {
            bin,
            dir,
            port: free_port(),
            as_postgres,
        };
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(pg.dir.path())
                .status()
                .unwrap();
            assert!(ok.success(), "chown the cluster directory to postgres");
        }
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
            ],
        );
        pg.start_again();
        let ok = Command::new(pg.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &pg.port.to_string()])
            .args(["-U", "postgres", "-q", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg("CREATE DATABASE sigil")
            .status()
            .unwrap();
        assert!(ok.success(), "create the database");
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/sigil", self.port)
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start_again(&self) {
        let data = self.data();
        let log = self.dir.path().join("server.log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-o",
                &opts,
                "start",
            ],
        );
    }

    fn stop(&self) {
        let data = self.data();
        self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        if data.join("postmaster.pid").exists() {
            let exe = self.bin.join("pg_ctl");
            let mut cmd = if self.as_postgres {
                let mut c = Command::new("setpriv");
                c.args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--",
                ])
                .arg(&exe);
                c
            } else {
                Command::new(&exe)
            };
            let _ = cmd
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Stops PostgreSQL for 30 s under load, with the server on it and an
/// agent serving a workload: meanwhile the admin API answers `Unavailable`
/// within a bound (no hang, no crash) and the agent serves the cached SVID
/// on every call; once PostgreSQL is back the same server process creates
/// entries again within a bound.
#[test]
fn postgres_stopped_for_30s_server_answers_unavailable_agent_serves_and_server_recovers() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let mut td = TrustDomain::with(Options {
        datastore: Some(("postgres".into(), pg.url())),
        ..Options::default()
    });
    td.start_server();
    let token = td.join_token();
    td.start_agent(0, Some(&token));
    let agent_id = td.join_token_agent_id(&token);
    let id = "spiffe://example.org/workload/through-outage";
    create_entry(&td, &agent_id, id);
    fetch_written(&td, 0, id);

    pg.stop();
    let outage = Instant::now();
    // The first call cannot know the database is down and waits the pool's
    // acquire timeout (10 s); every later one answers at once.
    let first_bound = Duration::from_secs(15);
    let bound = Duration::from_secs(5);
    let mut unavailable = 0;
    let mut fetches = 0;
    let mut n = 0;
    while outage.elapsed() < Duration::from_secs(30) {
        n += 1;
        let started = Instant::now();
        let out = td.server_cli(&["entry", "show", "-spiffeID", id]);
        let limit = if n == 1 { first_bound } else { bound };
        assert!(
            started.elapsed() < limit,
            "call {n}: a read took {:?} while PostgreSQL was down",
            started.elapsed()
        );
        assert_ne!(out.code, 0, "an admin call succeeded without a database");
        assert!(
            out.all().contains("code = Unavailable") && out.all().contains("datastore"),
            "the admin API answers Unavailable: {}",
            out.all()
        );
        unavailable += 1;
        // Some writes too: entry create and token generate.
        let started = Instant::now();
        let write = td.server_cli(&[
            "entry",
            "create",
            "-parentID",
            &agent_id,
            "-spiffeID",
            &format!("spiffe://example.org/workload/during{n}"),
            "-selector",
            "unix:uid:4242",
        ]);
        // (A batch result prints its status as `code: Unavailable`.)
        assert!(
            write.code != 0 && write.all().contains("Unavailable"),
            "a write answers Unavailable: {}",
            write.all()
        );
        assert!(
            started.elapsed() < bound,
            "call {n}: a write took {:?} while PostgreSQL was down",
            started.elapsed()
        );
        assert!(td.server_running(), "the server process is still up");
        let fetched = td.agent_cli(0, &["api", "fetch", "x509"]);
        assert!(
            fetched.code == 0 && fetched.stdout.contains(id),
            "the agent serves the cached SVID during the outage: {}",
            fetched.all()
        );
        fetches += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(unavailable > 5 && fetches > 5);

    pg.start_again();
    let back = Instant::now();
    let after = "spiffe://example.org/workload/after-outage";
    wait_for(
        "entry create to work again",
        Duration::from_secs(20),
        || {
            let out = td.server_cli(&[
                "entry",
                "create",
                "-parentID",
                &agent_id,
                "-spiffeID",
                after,
                "-selector",
                &format!("unix:uid:{}", my_uid()),
            ]);
            (out.code == 0).then_some(())
        },
    );
    eprintln!("recovered in {:?}", back.elapsed());
    assert!(td.server_running(), "recovered without a restart");
    fetch_written(&td, 0, after);
}
