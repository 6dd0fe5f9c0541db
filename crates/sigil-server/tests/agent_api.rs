//! The SPIRE server API as an agent sees it, over real mTLS to an
//! in-process server (SQLite datastore, memory keys): join-token attestation,
//! authorization of SVID requests, single-use tokens, bans. No fakes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Server, attest, roots, server_id, start, tls_channel};
use sigil_crypto::key::{KeyType, Signer, SoftwareKey};
use sigil_proto::spire::api::server::agent::v1 as agentpb;
use sigil_proto::spire::api::server::entry::v1 as entrypb;
use sigil_proto::spire::api::server::svid::v1 as svidpb;
use sigil_proto::spire::api::types;

fn entry(parent: &str, id: &str) -> types::Entry {
    let split = |s: &str| {
        let rest = s.trim_start_matches("spiffe://");
        let (td, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        types::Spiffeid {
            trust_domain: td.into(),
            path: path.into(),
        }
    };
    types::Entry {
        parent_id: Some(split(parent)),
        spiffe_id: Some(split(id)),
        selectors: vec![types::Selector {
            r#type: "unix".into(),
            value: "uid:1000".into(),
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_gets_svids_only_for_its_authorized_entries() {
    let Server {
        dir: _dir,
        running,
        admin,
        ..
    } = start("sgapi").await;
    let mut agent_admin = agentpb::agent_client::AgentClient::new(admin.clone());
    let mut entries = entrypb::entry_client::EntryClient::new(admin.clone());
    let roots = roots(&admin).await;
    assert!(!roots.is_empty());

    let token = agent_admin
        .create_join_token(agentpb::CreateJoinTokenRequest {
            ttl: 600,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .value;
    let agent_id = format!("spiffe://example.org/spire/agent/join_token/{token}");
    let created = entries
        .batch_create_entry(entrypb::BatchCreateEntryRequest {
            entries: vec![
                entry(&agent_id, "spiffe://example.org/mine"),
                entry(
                    "spiffe://example.org/spire/agent/join_token/other",
                    "spiffe://example.org/not-mine",
                ),
            ],
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<String> = created
        .results
        .iter()
        .map(|r| {
            assert_eq!(r.status.as_ref().unwrap().code, 0, "{:?}", r.status);
            r.entry.as_ref().unwrap().id.clone()
        })
        .collect();

    let agent = attest(running.agent_addr, roots.clone(), &token)
        .await
        .expect("attests");
    let leaf = sigil_crypto::x509::cert_info(&agent.chain[0]).unwrap();
    assert_eq!(leaf.uri_sans, std::slice::from_ref(&agent_id));

    // The same token again: refused, and no second agent appears.
    let reused = attest(running.agent_addr, roots.clone(), &token)
        .await
        .err()
        .expect("refused");
    assert_eq!(reused.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        reused.message(),
        "failed to attest: join token does not exist or has already been used"
    );

    // mTLS with the agent SVID.
    let server_id = server_id();
    let cfg = sigil_crypto::tls::client_config(
        roots.clone(),
        server_id.clone(),
        Some((agent.chain.clone(), agent.key.to_pkcs8_der())),
    )
    .unwrap();
    let ch = tls_channel(running.agent_addr, cfg).await;
    let mut svid = svidpb::svid_client::SvidClient::new(ch.clone());
    let authorized = entrypb::entry_client::EntryClient::new(ch.clone())
        .get_authorized_entries(entrypb::GetAuthorizedEntriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(authorized.entries.len(), 1);
    assert_eq!(authorized.entries[0].id, ids[0]);

    let wkey = SoftwareKey::generate(KeyType::EcP256).unwrap();
    let csr = sigil_crypto::csr::create_csr(&wkey, None).unwrap();
    let mut bad_csr = csr.clone();
    let n = bad_csr.len();
    bad_csr[n - 5] ^= 0xff;
    let resp = svid
        .batch_new_x509svid(svidpb::BatchNewX509svidRequest {
            params: vec![
                svidpb::NewX509svidParams {
                    entry_id: ids[0].clone(),
                    csr: csr.clone(),
                },
                svidpb::NewX509svidParams {
                    entry_id: ids[1].clone(),
                    csr: csr.clone(),
                },
                svidpb::NewX509svidParams {
                    entry_id: ids[0].clone(),
                    csr: bad_csr,
                },
                svidpb::NewX509svidParams {
                    entry_id: "no-such-entry".into(),
                    csr,
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<i32> = resp
        .results
        .iter()
        .map(|r| r.status.as_ref().unwrap().code)
        .collect();
    assert_eq!(
        codes,
        [
            0,
            tonic::Code::NotFound as i32,
            tonic::Code::InvalidArgument as i32,
            tonic::Code::NotFound as i32
        ]
    );
    assert_eq!(
        resp.results[1].status.as_ref().unwrap().message,
        "entry not found or not authorized"
    );
    let issued = resp.results[0].svid.as_ref().unwrap();
    let info = sigil_crypto::x509::cert_info(&issued.cert_chain[0]).unwrap();
    assert_eq!(info.uri_sans, ["spiffe://example.org/mine"]);
    assert_eq!(info.public_key_der, wkey.public_key_der());
    sigil_crypto::x509::verify_chain(&issued.cert_chain, &roots, std::time::SystemTime::now())
        .expect("issued SVID chains to the bundle");

    // JWT for an unauthorized entry: NotFound; for ours: a token.
    let err = svid
        .new_jwtsvid(svidpb::NewJwtsvidRequest {
            entry_id: ids[1].clone(),
            audience: vec!["a".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let jwt = svid
        .new_jwtsvid(svidpb::NewJwtsvidRequest {
            entry_id: ids[0].clone(),
            audience: vec!["a".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!jwt.svid.unwrap().token.is_empty());

    // Without a client certificate the caller is not an agent.
    let anon = sigil_crypto::tls::client_config(roots.clone(), server_id.clone(), None).unwrap();
    let err = svidpb::svid_client::SvidClient::new(tls_channel(running.agent_addr, anon).await)
        .batch_new_x509svid(svidpb::BatchNewX509svidRequest { params: vec![] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    // Admin RPCs are refused to agents.
    let err = entrypb::entry_client::EntryClient::new(ch.clone())
        .count_entries(entrypb::CountEntriesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    // Banned agents are refused.
    let (td_name, path) = agent_id
        .trim_start_matches("spiffe://")
        .split_once('/')
        .unwrap();
    agent_admin
        .ban_agent(agentpb::BanAgentRequest {
            id: Some(types::Spiffeid {
                trust_domain: td_name.into(),
                path: format!("/{path}"),
            }),
        })
        .await
        .unwrap();
    let err = svid
        .new_jwtsvid(svidpb::NewJwtsvidRequest {
            entry_id: ids[0].clone(),
            audience: vec!["a".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("banned"), "{}", err.message());
    // SPIRE agents read the reason from the status details and shut down.
    let details = String::from_utf8_lossy(err.details()).into_owned();
    assert!(
        details.contains("type.googleapis.com/spire.api.types.PermissionDeniedDetails"),
        "{details:?}"
    );

    // Nothing was created by the rejected requests.
    let count = entries
        .count_entries(entrypb::CountEntriesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(count, 2);
}

/// SyncAuthorizedEntries as SPIRE agents use it: the full list when it fits
/// in a page; above 500 entries, revisions first, then full entries for the
/// IDs the agent asks for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_authorized_entries_full_and_sparse_modes() {
    let Server {
        dir: _dir,
        running,
        admin,
        ..
    } = start("sgsync").await;
    let mut agent_admin = agentpb::agent_client::AgentClient::new(admin.clone());
    let mut entries = entrypb::entry_client::EntryClient::new(admin.clone());
    let roots = roots(&admin).await;
    let token = agent_admin
        .create_join_token(agentpb::CreateJoinTokenRequest {
            ttl: 600,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .value;
    let agent_id = format!("spiffe://example.org/spire/agent/join_token/{token}");
    let agent = attest(running.agent_addr, roots.clone(), &token)
        .await
        .expect("attests");
    let server_id = server_id();
    let cfg = sigil_crypto::tls::client_config(
        roots,
        server_id,
        Some((agent.chain.clone(), agent.key.to_pkcs8_der())),
    )
    .unwrap();
    let ch = tls_channel(running.agent_addr, cfg).await;

    let sync = |ids: Vec<Vec<String>>| {
        let ch = ch.clone();
        async move {
            let mut reqs = vec![entrypb::SyncAuthorizedEntriesRequest {
                output_mask: None,
                ids: vec![],
            }];
            reqs.extend(
                ids.into_iter()
                    .map(|ids| entrypb::SyncAuthorizedEntriesRequest {
                        output_mask: None,
                        ids,
                    }),
            );
            let mut stream = entrypb::entry_client::EntryClient::new(ch)
                .sync_authorized_entries(futures::stream::iter(reqs))
                .await
                .unwrap()
                .into_inner();
            let mut out = Vec::new();
            while let Some(msg) = stream.message().await.unwrap() {
                out.push(msg);
            }
            out
        }
    };

    // Few entries: one response carrying them all.
    let batch: Vec<types::Entry> = (0..3)
        .map(|i| entry(&agent_id, &format!("spiffe://example.org/w{i}")))
        .collect();
    entries
        .batch_create_entry(entrypb::BatchCreateEntryRequest {
            entries: batch,
            output_mask: None,
        })
        .await
        .unwrap();
    let resp = sync(vec![]).await;
    assert_eq!(resp.len(), 1);
    assert_eq!(resp[0].entries.len(), 3);
    assert!(resp[0].entry_revisions.is_empty() && !resp[0].more);

    // Above the page size: sparse revisions, then the requested entries.
    for chunk in 0..6 {
        let batch: Vec<types::Entry> = (0..100)
            .map(|i| entry(&agent_id, &format!("spiffe://example.org/b{chunk}/{i}")))
            .collect();
        entries
            .batch_create_entry(entrypb::BatchCreateEntryRequest {
                entries: batch,
                output_mask: None,
            })
            .await
            .unwrap();
    }
    let all_ids: Vec<String> = {
        let resp = sync(vec![]).await;
        assert_eq!(resp.len(), 2, "603 revisions in pages of 500");
        assert!(resp[0].more && !resp[1].more);
        assert_eq!(
            resp[0].entry_revisions.len() + resp[1].entry_revisions.len(),
            603
        );
        assert!(resp.iter().all(|r| r.entries.is_empty()));
        resp.iter()
            .flat_map(|r| r.entry_revisions.iter().map(|e| e.id.clone()))
            .collect()
    };
    let wanted: Vec<String> = all_ids
        .iter()
        .take(2)
        .cloned()
        .chain(["unknown".to_owned()])
        .collect();
    let resp = sync(vec![wanted.clone()]).await;
    let last = resp.last().unwrap();
    assert!(!last.more);
    let got: Vec<String> = last.entries.iter().map(|e| e.id.clone()).collect();
    assert_eq!(
        got,
        wanted[..2].to_vec(),
        "known IDs come back, unknown ones do not"
    );
}

/// An entry parented to the server is a node alias: agents whose node
/// selectors include all its selectors are authorized for its children.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_alias_entries_authorize_agents_by_node_selectors() {
    let Server {
        dir: _dir, running, ..
    } = start("sgalias").await;
    let state = running.state.clone();
    let sel = |s: &str| sigil_spiffe::Selector::parse(s).unwrap();
    let id = |s: &str| sigil_spiffe::SpiffeId::parse(s).unwrap();
    let mk = |parent: &str, spiffe: &str, sels: Vec<sigil_spiffe::Selector>| {
        sigil_datastore::RegistrationEntry {
            id: String::new(),
            spiffe_id: id(spiffe),
            parent_id: id(parent),
            selectors: sels,
            x509_svid_ttl: 0,
            jwt_svid_ttl: 0,
            dns_names: vec![],
            federates_with: vec![],
            admin: false,
            downstream: false,
            expires_at: 0,
            hint: String::new(),
            store_svid: false,
            revision_number: 0,
            created_at: 0,
        }
    };
    let ds = &state.ds;
    ds.create_entry(mk(
        "spiffe://example.org/spire/server",
        "spiffe://example.org/cluster/a",
        vec![sel("k8s_psat:cluster:a")],
    ))
    .await
    .unwrap();
    let child = ds
        .create_entry(mk(
            "spiffe://example.org/cluster/a",
            "spiffe://example.org/ns/web",
            vec![sel("unix:uid:1")],
        ))
        .await
        .unwrap();
    ds.create_entry(mk(
        "spiffe://example.org/spire/server",
        "spiffe://example.org/cluster/b",
        vec![sel("k8s_psat:cluster:b"), sel("k8s_psat:zone:x")],
    ))
    .await
    .unwrap();
    ds.create_entry(mk(
        "spiffe://example.org/cluster/b",
        "spiffe://example.org/ns/db",
        vec![sel("unix:uid:2")],
    ))
    .await
    .unwrap();

    let node = |n: &str, sels: Vec<sigil_spiffe::Selector>| sigil_datastore::AttestedNode {
        spiffe_id: id(&format!("spiffe://example.org/spire/agent/test/{n}")),
        attestation_data_type: "test".into(),
        cert_serial_number: "01".into(),
        cert_not_after: 0,
        new_cert_serial_number: String::new(),
        new_cert_not_after: 0,
        can_reattest: false,
        selectors: sels,
    };
    // In cluster a; also has zone x but not cluster b: only alias a applies.
    let agent = node(
        "n1",
        vec![sel("k8s_psat:cluster:a"), sel("k8s_psat:zone:x")],
    );
    // Written straight to the datastore: the index learns of it from the
    // event feed.
    state.index.refresh().await.unwrap();
    let got = sigil_server::api::authorized::authorized_entries(&state, &agent);
    let ids: Vec<&str> = got.iter().map(|e| e.spiffe_id.as_str()).collect();
    assert_eq!(ids, ["spiffe://example.org/ns/web"], "{got:?}");
    assert_eq!(got[0].id, child.id);
    let lonely = node("n2", vec![sel("k8s_psat:zone:x")]);
    assert!(sigil_server::api::authorized::authorized_entries(&state, &lonely).is_empty());
}

/// A workload whose entry is marked `downstream` (a nested server) gets an
/// intermediate CA from NewDownstreamX509CA; SVIDs it signs chain to our
/// bundle. A workload without the flag is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_workload_gets_an_intermediate_ca_and_others_do_not() {
    let Server {
        dir: _dir,
        running,
        admin,
        ..
    } = start("sgdown").await;
    let mut agent_admin = agentpb::agent_client::AgentClient::new(admin.clone());
    let mut entries = entrypb::entry_client::EntryClient::new(admin.clone());
    let roots = roots(&admin).await;
    let token = agent_admin
        .create_join_token(agentpb::CreateJoinTokenRequest {
            ttl: 600,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .value;
    let agent_id = format!("spiffe://example.org/spire/agent/join_token/{token}");
    let mut downstream = entry(&agent_id, "spiffe://example.org/nested-server");
    downstream.downstream = true;
    let plain = entry(&agent_id, "spiffe://example.org/plain");
    let created = entries
        .batch_create_entry(entrypb::BatchCreateEntryRequest {
            entries: vec![downstream, plain],
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<String> = created
        .results
        .iter()
        .map(|r| r.entry.as_ref().unwrap().id.clone())
        .collect();

    let agent = attest(running.agent_addr, roots.clone(), &token)
        .await
        .unwrap();
    let server_id = server_id();
    let agent_cfg = sigil_crypto::tls::client_config(
        roots.clone(),
        server_id.clone(),
        Some((agent.chain.clone(), agent.key.to_pkcs8_der())),
    )
    .unwrap();
    let mut agent_svid =
        svidpb::svid_client::SvidClient::new(tls_channel(running.agent_addr, agent_cfg).await);

    // The agent obtains the two workloads' SVIDs, as it would for them.
    let mut workload = Vec::new();
    for id in &ids {
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let csr = sigil_crypto::csr::create_csr(&key, None).unwrap();
        let resp = agent_svid
            .batch_new_x509svid(svidpb::BatchNewX509svidRequest {
                params: vec![svidpb::NewX509svidParams {
                    entry_id: id.clone(),
                    csr,
                }],
            })
            .await
            .unwrap()
            .into_inner();
        workload.push((resp.results[0].svid.clone().unwrap().cert_chain, key));
    }

    let ca_key = SoftwareKey::generate(KeyType::EcP256).unwrap();
    let ca_csr = sigil_crypto::csr::create_csr(&ca_key, None).unwrap();
    let call = |chain: Vec<Vec<u8>>, key: &SoftwareKey| {
        let cfg = sigil_crypto::tls::client_config(
            roots.clone(),
            server_id.clone(),
            Some((chain, key.to_pkcs8_der())),
        )
        .unwrap();
        let csr = ca_csr.clone();
        async move {
            svidpb::svid_client::SvidClient::new(tls_channel(running.agent_addr, cfg).await)
                .new_downstream_x509ca(svidpb::NewDownstreamX509caRequest {
                    csr,
                    preferred_ttl: 600,
                })
                .await
        }
    };
    let resp = call(workload[0].0.clone(), &workload[0].1)
        .await
        .expect("downstream is allowed")
        .into_inner();
    assert_eq!(resp.x509_authorities, roots);
    let downstream_ca = &resp.ca_cert_chain[0];
    let info = sigil_crypto::x509::cert_info(downstream_ca).unwrap();
    assert!(info.is_ca);
    assert_eq!(info.uri_sans, ["spiffe://example.org"]);
    assert_eq!(info.public_key_der, ca_key.public_key_der());
    // An SVID minted by the nested server verifies against our bundle.
    let now = std::time::SystemTime::now();
    let leaf_key = SoftwareKey::generate(KeyType::EcP256).unwrap();
    let leaf = sigil_crypto::x509::sign_x509_svid(
        downstream_ca,
        &ca_key,
        &sigil_crypto::x509::X509SvidParams::new(
            sigil_spiffe::SpiffeId::parse("spiffe://example.org/nested/w").unwrap(),
            leaf_key.public_key_der().to_vec(),
            now - std::time::Duration::from_secs(10),
            now + std::time::Duration::from_secs(60),
        ),
    )
    .unwrap();
    let mut chain = vec![leaf];
    chain.extend(resp.ca_cert_chain.iter().cloned());
    sigil_crypto::x509::verify_chain(&chain, &roots, now)
        .expect("nested SVID chains to our bundle");

    let err = call(workload[1].0.clone(), &workload[1].1)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().contains("not a downstream workload"),
        "{}",
        err.message()
    );
}
