//! Conditional and multi-step writes: compare-and-set of agent records (a
//! ban is never undone by a write computed before it), node attestation and
//! join-token creation as one transaction each, and bundle compare-and-set
//! across two datastore instances on one database (two servers).
//!
//! Every case gets two instances opened on the same database: the same
//! SQLite file, or the same freshly created PostgreSQL database (when
//! `SIGIL_TEST_POSTGRES_URL` names a database whose user may create
//! databases; without it the PostgreSQL cases are skipped, unless `CI` is
//! set, in which case they fail).

use std::future::Future;
use std::sync::Arc;

use sigil_datastore::{
    AttestedNode, DataStore, DataStoreError, JoinToken, ListEntriesRequest, ListNodesRequest,
    NodeMask, NodeSerials, RegistrationEntry, StoredBundle,
};
use sigil_spiffe::{Selector, SpiffeId, TrustDomain};

type Pair = (Arc<dyn DataStore>, Arc<dyn DataStore>);

macro_rules! on_both_engines {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    crate::harness::with_sqlite(crate::cases::$case).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    crate::harness::with_postgres(crate::cases::$case).await;
                }
            )*
        }
    };
}

on_both_engines!(
    ban_between_read_and_conditional_promotion_is_not_undone,
    conditional_node_update_applies_only_to_the_state_read,
    attest_node_records_token_selectors_and_node_together,
    attest_node_failing_midway_changes_nothing,
    attest_node_concurrent_with_one_token_exactly_one_wins,
    join_token_with_alias_entry_is_all_or_nothing,
    bundle_compare_and_set_refuses_stale_expectations,
    bundle_appends_from_two_instances_all_survive,
);

mod harness {
    use super::*;

    pub async fn with_sqlite<F, Fut>(case: F)
    where
        F: FnOnce(Pair) -> Fut,
        Fut: Future<Output = ()>,
    {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("datastore.sqlite3");
        let path = path.to_str().expect("utf-8 temp path");
        let a = sigil_datastore::open("sqlite3", path)
            .await
            .expect("open a");
        let b = sigil_datastore::open("sqlite3", path)
            .await
            .expect("open b");
        case((a.clone(), b.clone())).await;
        a.close().await;
        b.close().await;
    }

    pub async fn with_postgres<F, Fut>(case: F)
    where
        F: FnOnce(Pair) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Ok(admin_url) = std::env::var("SIGIL_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "SIGIL_TEST_POSTGRES_URL is not set, and CI is: PostgreSQL tests must run in CI"
            );
            eprintln!("skipping PostgreSQL case: SIGIL_TEST_POSTGRES_URL is not set");
            return;
        };
        let db = format!("sigil_t_{}", uuid::Uuid::new_v4().simple());
        admin(&admin_url, &format!("CREATE DATABASE {db}")).await;
        let url = with_database(&admin_url, &db);
        let a = sigil_datastore::open("postgres", &url)
            .await
            .expect("open a");
        let b = sigil_datastore::open("postgres", &url)
            .await
            .expect("open b");
        let outcome = tokio::spawn(case((a.clone(), b.clone()))).await;
        a.close().await;
        b.close().await;
        admin(
            &admin_url,
            &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        )
        .await;
        if let Err(err) = outcome {
            std::panic::resume_unwind(err.into_panic());
        }
    }

    async fn admin(url: &str, sql: &str) {
        use sqlx::{Connection, Executor};
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .expect("connect to SIGIL_TEST_POSTGRES_URL");
        conn.execute(sqlx::AssertSqlSafe(sql.to_owned()))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        conn.close().await.expect("close admin connection");
    }

    fn with_database(url: &str, db: &str) -> String {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (url, None),
        };
        let authority_start = base.find("://").map_or(0, |i| i + 3);
        let base = match base[authority_start..].find('/') {
            Some(i) => &base[..authority_start + i],
            None => base,
        };
        match query {
            Some(q) => format!("{base}/{db}?{q}"),
            None => format!("{base}/{db}"),
        }
    }
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).expect("test SPIFFE ID")
}

fn sels(list: &[&str]) -> Vec<Selector> {
    list.iter()
        .map(|s| Selector::parse(s).expect("test selector"))
        .collect()
}

fn node(spiffe_id: &str, serial: &str, new_serial: &str, selectors: &[&str]) -> AttestedNode {
    AttestedNode {
        spiffe_id: id(spiffe_id),
        attestation_data_type: "join_token".into(),
        cert_serial_number: serial.into(),
        cert_not_after: 1000,
        new_cert_serial_number: new_serial.into(),
        new_cert_not_after: if new_serial.is_empty() { 0 } else { 2000 },
        can_reattest: false,
        selectors: sels(selectors),
    }
}

fn token(value: &str) -> JoinToken {
    JoinToken {
        token: value.into(),
        expires_at: 5000,
    }
}

fn alias_entry(agent: &str) -> RegistrationEntry {
    RegistrationEntry {
        id: String::new(),
        spiffe_id: id("spiffe://td/node/alias"),
        parent_id: id(agent),
        selectors: sels(&[&format!("spiffe_id:{agent}")]),
        x509_svid_ttl: 0,
        jwt_svid_ttl: 0,
        dns_names: Vec::new(),
        federates_with: Vec::new(),
        admin: false,
        downstream: false,
        expires_at: 0,
        hint: String::new(),
        store_svid: false,
        revision_number: 0,
        created_at: 0,
    }
}

const SERIALS: NodeMask = NodeMask {
    attestation_data_type: false,
    cert_serial_number: true,
    cert_not_after: true,
    new_cert_serial_number: true,
    new_cert_not_after: true,
    can_reattest: false,
};

async fn ban(ds: &dyn DataStore, spiffe_id: &str) {
    let banned = node(spiffe_id, "", "", &[]);
    let mask = NodeMask {
        cert_serial_number: true,
        new_cert_serial_number: true,
        ..NodeMask::default()
    };
    assert!(
        ds.update_attested_node(banned, &mask)
            .await
            .expect("ban")
            .is_banned()
    );
}

async fn banned_ids(ds: &dyn DataStore) -> Vec<String> {
    let (nodes, _) = ds
        .list_attested_nodes(&ListNodesRequest {
            by_banned: Some(true),
            ..ListNodesRequest::default()
        })
        .await
        .expect("list banned");
    nodes.iter().map(|n| n.spiffe_id.to_string()).collect()
}

async fn entry_count(ds: &dyn DataStore) -> u64 {
    ds.count_entries(&ListEntriesRequest::default())
        .await
        .expect("count entries")
}

mod cases {
    use super::*;

    /// Server A reads an agent (serials 1 and 2) to promote it; server B
    /// bans it; A's promotion and a renewal computed from the same read
    /// must both fail and leave the agent banned.
    pub async fn ban_between_read_and_conditional_promotion_is_not_undone((a, b): Pair) {
        const AGENT: &str = "spiffe://td/spire/agent/x";
        a.create_attested_node(node(AGENT, "1", "2", &[]))
            .await
            .expect("create");
        let read = a
            .get_attested_node(&id(AGENT))
            .await
            .expect("read")
            .expect("exists");

        ban(b.as_ref(), AGENT).await;

        let promoted = node(AGENT, "2", "", &[]);
        let outcome = a
            .update_attested_node_if(promoted, &SERIALS, &NodeSerials::of(&read))
            .await
            .expect("conditional promotion");
        assert_eq!(outcome, None, "the promotion must not apply over a ban");
        let renewed = node(AGENT, "1", "3", &[]);
        let outcome = a
            .update_attested_node_if(renewed, &SERIALS, &NodeSerials::of(&read))
            .await
            .expect("conditional renewal");
        assert_eq!(outcome, None, "the renewal must not apply over a ban");
        // Not even a write that expects the banned state un-bans it.
        let outcome = a
            .update_attested_node_if(
                node(AGENT, "9", "", &[]),
                &SERIALS,
                &NodeSerials {
                    cert_serial_number: String::new(),
                    new_cert_serial_number: String::new(),
                },
            )
            .await
            .expect("conditional write on a banned node");
        assert_eq!(outcome, None);

        let stored = b
            .get_attested_node(&id(AGENT))
            .await
            .expect("get")
            .expect("exists");
        assert!(stored.is_banned(), "{stored:?}");
        assert_eq!(banned_ids(b.as_ref()).await, [AGENT]);
    }

    /// Without interference the conditional write applies; with a stale
    /// expectation (another request renewed meanwhile) it does not, and a
    /// missing node is `None`, not an error.
    pub async fn conditional_node_update_applies_only_to_the_state_read((a, b): Pair) {
        const AGENT: &str = "spiffe://td/spire/agent/y";
        a.create_attested_node(node(AGENT, "1", "2", &["t:a"]))
            .await
            .expect("create");
        let read = a
            .get_attested_node(&id(AGENT))
            .await
            .expect("read")
            .expect("exists");
        let events = a.latest_node_event_id().await.expect("events");

        let renewed = node(AGENT, "1", "3", &[]);
        let stored = b
            .update_attested_node_if(renewed, &SERIALS, &NodeSerials::of(&read))
            .await
            .expect("renewal")
            .expect("applies to the state read");
        assert_eq!(stored.new_cert_serial_number, "3");
        assert_eq!(stored.selectors, sels(&["t:a"]));
        assert!(a.latest_node_event_id().await.expect("events") > events);

        let stale = a
            .update_attested_node_if(node(AGENT, "2", "", &[]), &SERIALS, &NodeSerials::of(&read))
            .await
            .expect("stale promotion");
        assert_eq!(stale, None);
        let now = a
            .get_attested_node(&id(AGENT))
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(
            (
                now.cert_serial_number.as_str(),
                now.new_cert_serial_number.as_str()
            ),
            ("1", "3")
        );

        let gone = a
            .update_attested_node_if(
                node("spiffe://td/spire/agent/none", "2", "", &[]),
                &SERIALS,
                &NodeSerials::of(&read),
            )
            .await
            .expect("missing node");
        assert_eq!(gone, None);
    }

    /// A first attestation spends the token and stores selectors and node;
    /// re-attestation of an agent that is not banned replaces both.
    pub async fn attest_node_records_token_selectors_and_node_together((a, b): Pair) {
        const AGENT: &str = "spiffe://td/spire/agent/join_token/t1";
        a.create_join_token(token("t1")).await.expect("token");
        let stored = a
            .attest_node(node(AGENT, "1", "", &["t:a", "t:b", "t:a"]), Some("t1"))
            .await
            .expect("attest");
        assert_eq!(stored.selectors, sels(&["t:a", "t:b"]));
        assert_eq!(b.get_join_token("t1").await.expect("token"), None);
        assert_eq!(
            b.get_node_selectors(&id(AGENT)).await.expect("selectors"),
            sels(&["t:a", "t:b"])
        );

        let mut again = node(AGENT, "5", "", &["t:c"]);
        again.can_reattest = true;
        let stored = b.attest_node(again.clone(), None).await.expect("re-attest");
        assert_eq!(stored, again);
        assert_eq!(
            a.get_attested_node(&id(AGENT)).await.expect("get"),
            Some(again)
        );
    }

    /// Attestation of a banned agent fails after the token was deleted and
    /// the selectors replaced within the transaction: the failure rolls all
    /// of it back. A missing token fails before anything is written.
    pub async fn attest_node_failing_midway_changes_nothing((a, b): Pair) {
        const AGENT: &str = "spiffe://td/spire/agent/banned";
        a.create_attested_node(node(AGENT, "1", "", &["t:old"]))
            .await
            .expect("create");
        ban(a.as_ref(), AGENT).await;
        a.create_join_token(token("kept")).await.expect("token");
        let events = a.latest_node_event_id().await.expect("events");

        let err = b
            .attest_node(node(AGENT, "7", "", &["t:new"]), Some("kept"))
            .await
            .expect_err("a banned agent cannot attest");
        assert!(
            matches!(err, DataStoreError::FailedPrecondition(_)),
            "{err:?}"
        );
        assert_eq!(
            a.get_join_token("kept").await.expect("token"),
            Some(token("kept")),
            "the token must still be usable"
        );
        assert_eq!(
            a.get_node_selectors(&id(AGENT)).await.expect("selectors"),
            sels(&["t:old"])
        );
        assert!(
            a.get_attested_node(&id(AGENT))
                .await
                .expect("get")
                .expect("exists")
                .is_banned()
        );
        assert_eq!(a.latest_node_event_id().await.expect("events"), events);

        const FRESH: &str = "spiffe://td/spire/agent/join_token/nope";
        let err = b
            .attest_node(node(FRESH, "1", "", &["t:x"]), Some("nope"))
            .await
            .expect_err("no such token");
        assert!(matches!(err, DataStoreError::NotFound(_)), "{err:?}");
        assert_eq!(a.get_attested_node(&id(FRESH)).await.expect("get"), None);
        assert!(
            a.get_node_selectors(&id(FRESH))
                .await
                .expect("selectors")
                .is_empty()
        );
        assert_eq!(a.latest_node_event_id().await.expect("events"), events);
    }

    /// Ten attestations with one token, on two instances at once: exactly
    /// one records the agent; the others find the token spent.
    pub async fn attest_node_concurrent_with_one_token_exactly_one_wins((a, b): Pair) {
        const AGENT: &str = "spiffe://td/spire/agent/join_token/race";
        a.create_join_token(token("race")).await.expect("token");
        let barrier = Arc::new(tokio::sync::Barrier::new(10));
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let ds = if i % 2 == 0 { a.clone() } else { b.clone() };
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    ds.attest_node(node(AGENT, &i.to_string(), "", &["t:a"]), Some("race"))
                        .await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.expect("task") {
                Ok(n) => winners.push(n.cert_serial_number),
                Err(DataStoreError::NotFound(_)) => {}
                Err(e) => panic!("unexpected failure: {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "{winners:?}");
        let stored = a
            .get_attested_node(&id(AGENT))
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(stored.cert_serial_number, winners[0]);
    }

    /// The token and its alias entry are stored together or not at all.
    pub async fn join_token_with_alias_entry_is_all_or_nothing((a, b): Pair) {
        const AGENT: &str = "spiffe://td/spire/agent/join_token/alias";
        let entry = a
            .create_join_token_with_entry(token("alias"), alias_entry(AGENT))
            .await
            .expect("create");
        assert!(!entry.id.is_empty());
        assert_eq!(
            b.get_join_token("alias").await.expect("token"),
            Some(token("alias"))
        );
        assert_eq!(b.get_entry(&entry.id).await.expect("entry"), Some(entry));

        // The entry duplicates the first one: no token either.
        let err = b
            .create_join_token_with_entry(token("other"), alias_entry(AGENT))
            .await
            .expect_err("duplicate entry");
        assert!(matches!(err, DataStoreError::AlreadyExists(_)), "{err:?}");
        assert_eq!(a.get_join_token("other").await.expect("token"), None);

        // The token is taken: no entry either.
        let err = b
            .create_join_token_with_entry(
                token("alias"),
                alias_entry("spiffe://td/spire/agent/join_token/two"),
            )
            .await
            .expect_err("duplicate token");
        assert!(matches!(err, DataStoreError::AlreadyExists(_)), "{err:?}");
        assert!(
            !err.to_string().contains("alias"),
            "token value leaked: {err}"
        );
        assert_eq!(entry_count(a.as_ref()).await, 1);

        // An invalid entry: no token.
        let mut bad = alias_entry(AGENT);
        bad.selectors.clear();
        let err = a
            .create_join_token_with_entry(token("third"), bad)
            .await
            .expect_err("invalid entry");
        assert!(matches!(err, DataStoreError::InvalidArgument(_)), "{err:?}");
        assert_eq!(a.get_join_token("third").await.expect("token"), None);
        assert_eq!(entry_count(a.as_ref()).await, 1);
    }

    pub async fn bundle_compare_and_set_refuses_stale_expectations((a, b): Pair) {
        let td = TrustDomain::new("td").expect("td");
        let v = |data: &[u8]| StoredBundle {
            trust_domain: td.clone(),
            data: data.to_vec(),
        };
        assert!(a.set_bundle_if(v(b"one"), None).await.expect("create"));
        assert!(
            !b.set_bundle_if(v(b"two"), None)
                .await
                .expect("exists already")
        );
        assert!(
            !b.set_bundle_if(v(b"two"), Some(b"zero"))
                .await
                .expect("stale")
        );
        assert!(
            b.set_bundle_if(v(b"two"), Some(b"one"))
                .await
                .expect("current")
        );
        assert!(
            !a.set_bundle_if(v(b"three"), Some(b"one"))
                .await
                .expect("stale")
        );
        assert_eq!(a.get_bundle(&td).await.expect("get"), Some(v(b"two")));
    }

    /// Two instances (two servers) each append 25 lines to one bundle, at
    /// the same time, by read and compare-and-set: all 50 survive.
    pub async fn bundle_appends_from_two_instances_all_survive((a, b): Pair) {
        let td = TrustDomain::new("td").expect("td");
        let append = |ds: Arc<dyn DataStore>, who: &'static str| {
            let td = td.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    loop {
                        let old = ds.get_bundle(&td).await.expect("get").map(|b| b.data);
                        let mut data = old.clone().unwrap_or_default();
                        data.extend_from_slice(format!("{who}-{i}\n").as_bytes());
                        let new = StoredBundle {
                            trust_domain: td.clone(),
                            data,
                        };
                        if ds.set_bundle_if(new, old.as_deref()).await.expect("cas") {
                            break;
                        }
                    }
                }
            })
        };
        let (ra, rb) = tokio::join!(append(a.clone(), "a"), append(b.clone(), "b"));
        ra.expect("a");
        rb.expect("b");
        let stored = a.get_bundle(&td).await.expect("get").expect("exists");
        let text = String::from_utf8(stored.data).expect("utf-8");
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        let mut expected: Vec<String> = (0..25)
            .flat_map(|i| [format!("a-{i}"), format!("b-{i}")])
            .collect();
        expected.sort_unstable();
        assert_eq!(lines, expected);
    }
}
