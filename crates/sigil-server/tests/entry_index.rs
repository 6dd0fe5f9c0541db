//! The in-memory entry index against the datastore it follows, over real
//! mTLS to in-process servers: random entry, alias and agent changes, and
//! after each step every agent's authorized set, as GetAuthorizedEntries and
//! its WatchChanges stream give it, equals the set computed from scratch from
//! the datastore. On PostgreSQL two servers share the database and each
//! step's writes go to either, so each index must follow the other server's
//! changes through the event feed.
//!
//! Node selectors are changed directly in the datastore (as a re-attestation
//! with other selectors would): join-token agents have none of their own.
//!
//! PostgreSQL runs when `SIGIL_TEST_POSTGRES_URL` is set; without it that
//! case is skipped, unless `CI` is set, where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{admin_channel, attest_to, roots, tls_channel};
use sigil_datastore::DataStore;
use sigil_proto::sigil::api::server::sync::v1 as syncpb;
use sigil_proto::spire::api::server::agent::v1 as agentpb;
use sigil_proto::spire::api::server::entry::v1 as entrypb;
use sigil_proto::spire::api::types;
use sigil_server::config::ServerConfig;
use sigil_spiffe::{Selector, SpiffeId};
use tonic::transport::Channel;

/// A deterministic generator, so a failing sequence can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

fn server_config(dir: &Path, td: &str, datastore: &str) -> ServerConfig {
    ServerConfig::parse(&format!(
        r#"
server {{
    bind_address = "127.0.0.1"
    bind_port = "0"
    socket_path = "{dir}/admin.sock"
    trust_domain = "{td}"
    data_dir = "{dir}/data"
    cache_reload_interval = "50ms"
    ratelimit {{
        attestation = false
        signing = false
    }}
}}
plugins {{
    DataStore "sql" {{
        plugin_data {{
            {datastore}
        }}
    }}
    KeyManager "memory" {{
        plugin_data {{}}
    }}
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
}}
"#,
        dir = dir.display()
    ))
    .expect("valid config")
}

struct Node {
    dir: tempfile::TempDir,
    running: sigil_server::run::Running,
    admin: Channel,
}

async fn start_node(td: &str, datastore: impl Fn(&Path) -> String) -> Node {
    let dir = tempfile::Builder::new()
        .prefix("sgidx")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let running = sigil_server::run::start(server_config(dir.path(), td, &datastore(dir.path())))
        .await
        .expect("server starts");
    let admin = admin_channel(&dir.path().join("admin.sock")).await;
    Node {
        dir,
        running,
        admin,
    }
}

/// An attested agent: its ID, the server it talks to, and what its
/// WatchChanges stream has told it (entry ID -> revision).
struct Agent {
    id: SpiffeId,
    server: usize,
    channel: Channel,
    watched: Arc<Mutex<Option<BTreeMap<String, i64>>>>,
    watcher: tokio::task::JoinHandle<()>,
}

fn split(id: &str) -> types::Spiffeid {
    let rest = id.trim_start_matches("spiffe://");
    let (td, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    types::Spiffeid {
        trust_domain: td.into(),
        path: path.into(),
    }
}

async fn new_agent(nodes: &[Node], server: usize, td: &str) -> Agent {
    let node = &nodes[server];
    let roots = roots(&node.admin).await;
    let token = agentpb::agent_client::AgentClient::new(node.admin.clone())
        .create_join_token(agentpb::CreateJoinTokenRequest {
            ttl: 600,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .value;
    let addr = node.running.agent_addr;
    let server_id = SpiffeId::parse(&format!("spiffe://{td}/spire/server")).unwrap();
    let attested = attest_to(addr, roots.clone(), &token, server_id.clone())
        .await
        .unwrap();
    let cfg = sigil_crypto::tls::client_config(
        roots,
        server_id,
        Some((attested.chain, attested.key.to_pkcs8_der())),
    )
    .unwrap();
    let channel = tls_channel(addr, cfg).await;
    let watched = Arc::new(Mutex::new(None));
    let watcher = tokio::spawn(watch(channel.clone(), watched.clone()));
    Agent {
        id: SpiffeId::parse(&format!("spiffe://{td}/spire/agent/join_token/{token}")).unwrap(),
        server,
        channel,
        watched,
        watcher,
    }
}

/// Applies an agent's WatchChanges stream the way an agent does: a reset
/// group replaces the set, later groups add, change and remove entries.
async fn watch(channel: Channel, out: Arc<Mutex<Option<BTreeMap<String, i64>>>>) {
    let mut client = syncpb::sync_client::SyncClient::new(channel);
    let Ok(resp) = client
        .watch_changes(syncpb::WatchChangesRequest {
            entry_changes: true,
        })
        .await
    else {
        return;
    };
    let mut stream = resp.into_inner();
    let mut building: Option<BTreeMap<String, i64>> = None;
    while let Ok(Some(msg)) = stream.message().await {
        let Some(changes) = msg.entries else { continue };
        let mut set = match building.take() {
            Some(s) => s,
            None if changes.reset => BTreeMap::new(),
            None => out
                .lock()
                .unwrap()
                .clone()
                .expect("a change before the reset"),
        };
        for e in changes.upserted {
            set.insert(e.id, e.revision_number);
        }
        for id in changes.removed {
            set.remove(&id);
        }
        if changes.more {
            building = Some(set);
        } else {
            *out.lock().unwrap() = Some(set);
        }
    }
}

/// The authorized set computed from scratch from the datastore (the walk the
/// server did before it had an index): `(entry ID, revision)`.
async fn from_scratch(
    ds: &dyn DataStore,
    server_id: &SpiffeId,
    agent: &SpiffeId,
) -> Option<BTreeMap<String, i64>> {
    let node = ds.get_attested_node(agent).await.unwrap()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expired = |e: &sigil_datastore::RegistrationEntry| e.expires_at != 0 && e.expires_at < now;
    let mut found = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut frontier = vec![agent.clone()];
    if !node.selectors.is_empty() {
        for alias in ds
            .list_entries_by_selector_subset(&node.selectors)
            .await
            .unwrap()
        {
            if alias.parent_id == *server_id && !expired(&alias) {
                frontier.push(alias.spiffe_id.clone());
            }
        }
    }
    while !frontier.is_empty() {
        frontier.retain(|p| seen.insert(p.clone()));
        let children = ds.list_entries_by_parents(&frontier).await.unwrap();
        frontier.clear();
        for c in children {
            if expired(&c) || found.contains_key(&c.id) {
                continue;
            }
            frontier.push(c.spiffe_id.clone());
            found.insert(c.id.clone(), c.revision_number);
        }
    }
    Some(found)
}

async fn fetched(agent: &Agent) -> BTreeMap<String, i64> {
    entrypb::entry_client::EntryClient::new(agent.channel.clone())
        .get_authorized_entries(entrypb::GetAuthorizedEntriesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .map(|e| (e.id, e.revision_number))
        .collect()
}

/// Random changes for `steps` steps; after each, every agent's fetched and
/// watched sets equal the datastore's (waiting up to 10 s for servers that
/// learn the change from the feed).
async fn drive(nodes: Vec<Node>, ds: Arc<dyn DataStore>, td: &str, steps: usize, seed: u64) {
    let mut rng = Lcg(seed);
    let server_id = SpiffeId::parse(&format!("spiffe://{td}/spire/server")).unwrap();
    let mut agents = Vec::new();
    for i in 0..4 {
        agents.push(new_agent(&nodes, i % nodes.len(), td).await);
    }
    let names: Vec<String> = (0..6).map(|i| format!("spiffe://{td}/w{i}")).collect();
    let aliases: Vec<String> = (0..2).map(|i| format!("spiffe://{td}/alias{i}")).collect();
    let node_selectors = ["k:1", "k:2", "k:3"];
    let mut entry_ids: Vec<String> = Vec::new();

    for step in 0..steps {
        let via = &nodes[rng.below(nodes.len())].admin;
        let mut entries = entrypb::entry_client::EntryClient::new(via.clone());
        let parent = |rng: &mut Lcg, agents: &[Agent]| match rng.below(3) {
            0 => agents[rng.below(agents.len())].id.to_string(),
            1 => aliases[rng.below(aliases.len())].clone(),
            _ => names[rng.below(names.len())].clone(),
        };
        let op = rng.below(10);
        let what = match op {
            0..=3 => {
                let mut e = types::Entry {
                    parent_id: Some(split(&parent(&mut rng, &agents))),
                    spiffe_id: Some(split(&names[rng.below(names.len())])),
                    selectors: vec![types::Selector {
                        r#type: "unix".into(),
                        value: format!("uid:{}", rng.below(100_000)),
                    }],
                    ..Default::default()
                };
                if rng.below(8) == 0 {
                    e.expires_at = 1_000_000;
                }
                let r = entries
                    .batch_create_entry(entrypb::BatchCreateEntryRequest {
                        entries: vec![e],
                        output_mask: None,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                if let Some(created) = r.results.into_iter().next().and_then(|r| r.entry) {
                    entry_ids.push(created.id);
                }
                "create entry"
            }
            4 => {
                let count = 1 + rng.below(2);
                let selectors = (0..count)
                    .map(|_| {
                        let (t, v) = node_selectors[rng.below(3)].split_once(':').unwrap();
                        types::Selector {
                            r#type: t.into(),
                            value: v.into(),
                        }
                    })
                    .collect::<Vec<_>>();
                let mut selectors = selectors;
                selectors.dedup_by(|a, b| a.value == b.value);
                let r = entries
                    .batch_create_entry(entrypb::BatchCreateEntryRequest {
                        entries: vec![types::Entry {
                            parent_id: Some(split(server_id.as_str())),
                            spiffe_id: Some(split(&aliases[rng.below(aliases.len())])),
                            selectors,
                            ..Default::default()
                        }],
                        output_mask: None,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                if let Some(created) = r.results.into_iter().next().and_then(|r| r.entry) {
                    entry_ids.push(created.id);
                }
                "create alias"
            }
            5 if !entry_ids.is_empty() => {
                let id = entry_ids[rng.below(entry_ids.len())].clone();
                let (mask, entry) = if rng.below(2) == 0 {
                    (
                        types::EntryMask {
                            parent_id: true,
                            ..Default::default()
                        },
                        types::Entry {
                            id,
                            parent_id: Some(split(&parent(&mut rng, &agents))),
                            ..Default::default()
                        },
                    )
                } else {
                    (
                        types::EntryMask {
                            spiffe_id: true,
                            ..Default::default()
                        },
                        types::Entry {
                            id,
                            spiffe_id: Some(split(&names[rng.below(names.len())])),
                            ..Default::default()
                        },
                    )
                };
                entries
                    .batch_update_entry(entrypb::BatchUpdateEntryRequest {
                        entries: vec![entry],
                        input_mask: Some(mask),
                        output_mask: None,
                    })
                    .await
                    .unwrap();
                "update entry"
            }
            6 if !entry_ids.is_empty() => {
                let id = entry_ids.swap_remove(rng.below(entry_ids.len()));
                entries
                    .batch_delete_entry(entrypb::BatchDeleteEntryRequest { ids: vec![id] })
                    .await
                    .unwrap();
                "delete entry"
            }
            7 => {
                let agent = &agents[rng.below(agents.len())];
                let selectors: Vec<Selector> = node_selectors
                    .iter()
                    .filter(|_| rng.below(2) == 0)
                    .map(|s| Selector::parse(s).unwrap())
                    .collect();
                ds.set_node_selectors(&agent.id, selectors).await.unwrap();
                "set node selectors"
            }
            8 if agents.len() > 2 => {
                let gone = agents.swap_remove(rng.below(agents.len()));
                agentpb::agent_client::AgentClient::new(nodes[gone.server].admin.clone())
                    .delete_agent(agentpb::DeleteAgentRequest {
                        id: Some(split(gone.id.as_str())),
                    })
                    .await
                    .unwrap();
                // Its change stream ends.
                tokio::time::timeout(Duration::from_secs(10), gone.watcher)
                    .await
                    .expect("a deleted agent's change stream ends")
                    .unwrap();
                "delete agent"
            }
            _ => {
                agents.push(new_agent(&nodes, rng.below(nodes.len()), td).await);
                "new agent"
            }
        };

        for agent in &agents {
            let want = from_scratch(&*ds, &server_id, &agent.id)
                .await
                .expect("agent is attested");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let got = fetched(agent).await;
                let watched = agent.watched.lock().unwrap().clone();
                if got == want && watched.as_ref() == Some(&want) {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "step {step} ({what}), agent {}: datastore says {want:?}, \
                     GetAuthorizedEntries {got:?}, WatchChanges {watched:?}",
                    agent.id
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_matches_the_datastore_after_every_random_change_on_sqlite() {
    let td = "example.org";
    let node = start_node(td, |dir| {
        format!(
            "database_type = \"sqlite3\"\n connection_string = \"{}/data/ds.sqlite3\"",
            dir.display()
        )
    })
    .await;
    let ds = sigil_datastore::open(
        "sqlite3",
        &format!("{}/data/ds.sqlite3", node.dir.path().display()),
    )
    .await
    .unwrap();
    drive(vec![node], ds, td, 80, 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_database_follow_each_others_changes() {
    let Ok(url) = std::env::var("SIGIL_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "SIGIL_TEST_POSTGRES_URL is not set, and CI is: PostgreSQL tests must run in CI"
        );
        eprintln!("skipping PostgreSQL case: SIGIL_TEST_POSTGRES_URL is not set");
        return;
    };
    // A trust domain of its own, so other tests in the database never
    // touch these agents' sets.
    let td = format!("i{}.example", uuid::Uuid::new_v4().simple());
    let conn = |_: &Path| format!("database_type = \"postgres\"\n connection_string = \"{url}\"");
    let a = start_node(&td, conn).await;
    let b = start_node(&td, conn).await;
    let ds = sigil_datastore::open("postgres", &url).await.unwrap();
    drive(vec![a, b], ds, &td, 60, 23).await;
}

/// A change to one agent's entries is pushed to that agent only, counted on
/// the server; the others' streams stay silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_change_wakes_only_the_agent_it_concerns() {
    let td = "example.org";
    let node = start_node(td, |dir| {
        format!(
            "database_type = \"sqlite3\"\n connection_string = \"{}/data/ds.sqlite3\"",
            dir.display()
        )
    })
    .await;
    let index = node.running.state.index.clone();
    let nodes = vec![node];
    let mut agents = Vec::new();
    for _ in 0..3 {
        agents.push(new_agent(&nodes, 0, td).await);
    }
    // Every stream has its initial set before the change.
    for a in &agents {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while a.watched.lock().unwrap().is_none() {
            assert!(tokio::time::Instant::now() < deadline, "no initial set");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_eq!(index.subscriptions(), 3);
    let before = index.pushes();

    let created = entrypb::entry_client::EntryClient::new(nodes[0].admin.clone())
        .batch_create_entry(entrypb::BatchCreateEntryRequest {
            entries: vec![types::Entry {
                parent_id: Some(split(agents[1].id.as_str())),
                spiffe_id: Some(split(&format!("spiffe://{td}/only-for-agent-1"))),
                selectors: vec![types::Selector {
                    r#type: "unix".into(),
                    value: "uid:1".into(),
                }],
                ..Default::default()
            }],
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    let id = created.results[0]
        .entry
        .as_ref()
        .expect("created")
        .id
        .clone();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !agents[1]
        .watched
        .lock()
        .unwrap()
        .as_ref()
        .is_some_and(|s| s.contains_key(&id))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent 1 never got its entry"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Give any stray push time to arrive before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(index.pushes() - before, 1, "exactly one agent woken");
    for i in [0, 2] {
        assert_eq!(
            agents[i]
                .watched
                .lock()
                .unwrap()
                .as_ref()
                .map(BTreeMap::len),
            Some(0),
            "agent {i} received nothing"
        );
    }
}
