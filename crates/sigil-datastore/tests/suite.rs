//! The DataStore conformance suite: one set of cases, each an async fn over an
//! `Arc<dyn DataStore>`, run against every engine.
//!
//! SQLite runs always (a temp file per case). PostgreSQL runs when
//! `SIGIL_TEST_POSTGRES_URL` names a database whose user may create databases;
//! each case gets its own freshly created database, dropped afterwards. Without
//! the variable the PostgreSQL cases print a skip notice, unless `CI` is set, in
//! which case they fail: CI must not pass by silently skipping an engine.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use sigil_datastore::{
    AttestedNode, BundleEndpointProfile, DataStore, DataStoreError, EntryMask,
    FederationRelationship, FederationRelationshipMask, JoinToken, ListEntriesRequest,
    ListNodesRequest, MatchMode, NodeMask, RegistrationEntry, StoredBundle,
};
use sigil_spiffe::{Selector, SpiffeId, TrustDomain};

/// Declares each case once per engine.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::harness::with_sqlite(crate::cases::$case).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::harness::with_postgres(crate::cases::$case).await;
                }
            )*
        }
    };
}

conformance!(
    entry_create_then_get_returns_same_entry,
    entry_create_generates_uuid_and_keeps_supplied_id,
    entry_create_rejects_same_parent_spiffe_id_and_selector_set,
    entry_invalid_input_is_rejected_and_changes_nothing,
    entry_update_applies_only_masked_fields_and_bumps_revision,
    entry_update_rejected_leaves_entry_and_revision_unchanged,
    entry_concurrent_updates_each_bump_revision,
    entry_delete_returns_entry_and_removes_it,
    entry_list_filters_by_scalar_fields,
    entry_list_selector_match_modes,
    entry_list_federates_with_match_modes,
    entry_list_rejects_empty_match_sets,
    entry_list_pages_cover_everything_once_in_id_order,
    entry_count_agrees_with_list,
    entry_list_by_parents_and_selector_subset,
    bulk_get_returns_existing_entries_and_nodes_in_order,
    entry_prune_removes_only_expired_entries,
    entry_prune_deletes_in_bounded_batches_soonest_expired_first,
    entry_events_written_for_each_change_only,
    events_prune_in_bounded_batches_oldest_first,
    entry_event_cursor_never_skips_under_concurrent_writes,
    node_create_get_update_delete,
    node_ban_semantics_and_filter,
    node_list_filters_and_pages,
    node_selector_match_modes,
    node_selectors_replace_and_write_events,
    node_prune_keeps_banned_unexpired_and_unless_asked_non_reattestable,
    join_token_is_single_use,
    join_token_concurrent_takes_yield_exactly_one,
    join_token_prune_removes_expired,
    bundle_upsert_get_list_delete,
    federation_relationship_create_get_delete,
    federation_relationship_invalid_or_duplicate_create_changes_nothing,
    federation_relationship_update_applies_only_masked_fields,
    federation_relationship_list_pages_in_trust_domain_order,
    ping_succeeds,
);

#[tokio::test]
async fn sqlite_data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("datastore.sqlite3");
    let path = path.to_str().expect("utf-8 temp path");

    let ds = sigil_datastore::open("sqlite3", path).await.expect("open");
    let created = ds
        .create_entry(entry("spiffe://td/w", "spiffe://td/agent", &["unix:uid:1"]))
        .await
        .expect("create entry");
    ds.create_attested_node(node("spiffe://td/agent", &["k:v"]))
        .await
        .expect("create node");
    ds.create_join_token(JoinToken {
        token: "tok".into(),
        expires_at: 99,
    })
    .await
    .expect("create token");
    ds.set_bundle(bundle("td", b"bytes"))
        .await
        .expect("set bundle");
    let events = ds.latest_entry_event_id().await.expect("latest");
    ds.close().await;
    drop(ds);

    // Reopening also re-runs migrations, which must be a no-op.
    let ds = sigil_datastore::open("sqlite3", &format!("file:{path}"))
        .await
        .expect("reopen");
    assert_eq!(ds.get_entry(&created.id).await.expect("get"), Some(created));
    assert_eq!(
        ds.get_attested_node(&id("spiffe://td/agent"))
            .await
            .expect("get node")
            .map(|n| n.selectors),
        Some(vec![sel("k:v")])
    );
    assert_eq!(
        ds.take_join_token("tok").await.expect("take"),
        Some(JoinToken {
            token: "tok".into(),
            expires_at: 99
        })
    );
    assert_eq!(
        ds.get_bundle(&td("td")).await.expect("bundle"),
        Some(bundle("td", b"bytes"))
    );
    assert_eq!(ds.latest_entry_event_id().await.expect("latest"), events);
    ds.close().await;
}

#[tokio::test]
async fn open_rejects_unsupported_and_unknown_database_types() {
    let Err(err) = sigil_datastore::open("mysql", "user@tcp(localhost)/db").await else {
        panic!("mysql must be refused");
    };
    assert!(matches!(err, DataStoreError::InvalidConfig(_)), "{err:?}");
    assert!(err.to_string().contains("mysql"), "{err}");
    assert!(err.to_string().contains("not supported yet"), "{err}");

    let Err(err) = sigil_datastore::open("oracle", "x").await else {
        panic!("unknown type must be refused");
    };
    let msg = err.to_string();
    assert!(
        msg.contains("oracle") && msg.contains("sqlite3") && msg.contains("postgres"),
        "{msg}"
    );
}

#[tokio::test]
async fn open_sqlite_in_unwritable_location_is_a_config_error() {
    let Err(err) = sigil_datastore::open("sqlite3", "/proc/definitely/not/here.sqlite3").await
    else {
        panic!("must fail");
    };
    assert!(matches!(err, DataStoreError::InvalidConfig(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory_database_is_shared_by_all_pooled_connections() {
    for conn in [":memory:", "sqlite::memory:"] {
        let ds = sigil_datastore::open("sqlite3", conn).await.expect("open");
        let e = ds
            .create_entry(entry("spiffe://td/w", "spiffe://td/agent", &["k:v"]))
            .await
            .expect("create");
        // Enough concurrent readers to need several pooled connections.
        let reads: Vec<_> = (0..8)
            .map(|_| {
                let ds = ds.clone();
                let id = e.id.clone();
                tokio::spawn(async move { ds.get_entry(&id).await })
            })
            .collect();
        for r in reads {
            assert_eq!(
                r.await.expect("task").expect("get").as_ref(),
                Some(&e),
                "{conn}"
            );
        }
        ds.close().await;
    }
}

#[tokio::test]
async fn operations_after_close_are_unavailable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ds.sqlite3");
    let ds = sigil_datastore::open("sqlite3", path.to_str().expect("utf-8"))
        .await
        .expect("open");
    ds.close().await;
    let err = ds.ping().await.expect_err("closed");
    assert!(err.is_transient(), "{err:?}");
}

mod harness {
    use super::*;

    pub async fn with_sqlite<F, Fut>(case: F)
    where
        F: FnOnce(Arc<dyn DataStore>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("datastore.sqlite3");
        let ds = sigil_datastore::open("sqlite3", path.to_str().expect("utf-8 temp path"))
            .await
            .expect("open sqlite datastore");
        case(ds.clone()).await;
        ds.close().await;
    }

    pub async fn with_postgres<F, Fut>(case: F)
    where
        F: FnOnce(Arc<dyn DataStore>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Ok(admin_url) = std::env::var("SIGIL_TEST_POSTGRES_URL") else {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "SIGIL_TEST_POSTGRES_URL is not set, and CI is: PostgreSQL tests must run in CI"
                );
            }
            eprintln!("skipping PostgreSQL case: SIGIL_TEST_POSTGRES_URL is not set");
            return;
        };
        let db = format!("sigil_t_{}", uuid::Uuid::new_v4().simple());
        admin(&admin_url, &format!("CREATE DATABASE {db}")).await;
        let ds = sigil_datastore::open("postgres", &with_database(&admin_url, &db))
            .await
            .expect("open postgres datastore");
        // Run on its own task so a failing case still lets us drop the database.
        let outcome = tokio::spawn(case(ds.clone())).await;
        ds.close().await;
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

    /// The same URL with its database path replaced.
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

// ---- builders ----

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).expect("test SPIFFE ID")
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).expect("test selector")
}

fn sels(list: &[&str]) -> Vec<Selector> {
    list.iter().map(|s| sel(s)).collect()
}

fn td(s: &str) -> TrustDomain {
    TrustDomain::new(s).expect("test trust domain")
}

fn entry(spiffe_id: &str, parent_id: &str, selectors: &[&str]) -> RegistrationEntry {
    RegistrationEntry {
        id: String::new(),
        spiffe_id: id(spiffe_id),
        parent_id: id(parent_id),
        selectors: sels(selectors),
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

fn node(spiffe_id: &str, selectors: &[&str]) -> AttestedNode {
    AttestedNode {
        spiffe_id: id(spiffe_id),
        attestation_data_type: "join_token".into(),
        cert_serial_number: "1".into(),
        cert_not_after: 1000,
        new_cert_serial_number: String::new(),
        new_cert_not_after: 0,
        can_reattest: false,
        selectors: sels(selectors),
    }
}

fn bundle(name: &str, data: &[u8]) -> StoredBundle {
    StoredBundle {
        trust_domain: td(name),
        data: data.to_vec(),
    }
}

fn web_relationship(name: &str, url: &str) -> FederationRelationship {
    FederationRelationship {
        trust_domain: td(name),
        bundle_endpoint_url: url.into(),
        profile: BundleEndpointProfile::HttpsWeb,
    }
}

fn spiffe_relationship(name: &str, url: &str, endpoint_id: &str) -> FederationRelationship {
    FederationRelationship {
        trust_domain: td(name),
        bundle_endpoint_url: url.into(),
        profile: BundleEndpointProfile::HttpsSpiffe {
            endpoint_spiffe_id: id(endpoint_id),
        },
    }
}

fn ids(entries: &[RegistrationEntry]) -> Vec<String> {
    entries.iter().map(|e| e.id.clone()).collect()
}

fn node_ids(nodes: &[AttestedNode]) -> Vec<&str> {
    nodes.iter().map(|n| n.spiffe_id.as_str()).collect()
}

async fn list_ids(ds: &Arc<dyn DataStore>, req: ListEntriesRequest) -> Vec<String> {
    ids(&ds.list_entries(&req).await.expect("list entries").entries)
}

async fn create_with_id(ds: &Arc<dyn DataStore>, id_: &str, mut e: RegistrationEntry) {
    e.id = id_.into();
    ds.create_entry(e).await.expect("create entry");
}

mod cases {
    use super::*;

    pub async fn entry_create_then_get_returns_same_entry(ds: Arc<dyn DataStore>) {
        let mut e = entry(
            "spiffe://td/web",
            "spiffe://td/agent",
            &["unix:uid:1000", "unix:gid:50"],
        );
        e.x509_svid_ttl = 3600;
        e.jwt_svid_ttl = 300;
        e.dns_names = vec!["web.example.org".into(), "a.example.org".into()];
        e.federates_with = vec![td("other.org"), td("b.org")];
        e.admin = true;
        e.downstream = true;
        e.expires_at = 2_000_000_000;
        e.hint = "primary".into();
        e.revision_number = 42; // ignored on create
        let created = ds.create_entry(e.clone()).await.expect("create");
        assert_eq!(created.revision_number, 0);
        assert!(created.created_at > 1_600_000_000, "created_at set to now");
        let expected = RegistrationEntry {
            id: created.id.clone(),
            revision_number: 0,
            created_at: created.created_at,
            ..e
        };
        assert_eq!(created, expected);
        // Lists keep the caller's order (the first DNS name becomes the CN).
        assert_eq!(
            ds.get_entry(&created.id).await.expect("get"),
            Some(expected)
        );
        assert_eq!(ds.get_entry("missing").await.expect("get"), None);
    }

    pub async fn entry_create_generates_uuid_and_keeps_supplied_id(ds: Arc<dyn DataStore>) {
        let a = ds
            .create_entry(entry("spiffe://td/a", "spiffe://td/agent", &["k:1"]))
            .await
            .expect("create");
        let parsed = uuid::Uuid::parse_str(&a.id).expect("generated id is a UUID");
        assert_eq!(parsed.get_version_num(), 4);

        let mut b = entry("spiffe://td/b", "spiffe://td/agent", &["k:1"]);
        b.id = "my-entry_1.0".into();
        b.created_at = 1234;
        let b = ds.create_entry(b).await.expect("create with id");
        assert_eq!(b.id, "my-entry_1.0");
        assert_eq!(b.created_at, 1234, "a caller-supplied created_at is kept");
        assert!(ds.get_entry("my-entry_1.0").await.expect("get").is_some());

        let mut c = entry("spiffe://td/c", "spiffe://td/agent", &["k:1"]);
        c.id = "my-entry_1.0".into();
        let err = ds.create_entry(c).await.expect_err("same id");
        assert!(matches!(err, DataStoreError::AlreadyExists(_)), "{err:?}");
    }

    pub async fn entry_create_rejects_same_parent_spiffe_id_and_selector_set(
        ds: Arc<dyn DataStore>,
    ) {
        let first = ds
            .create_entry(entry(
                "spiffe://td/w",
                "spiffe://td/agent",
                &["unix:uid:1", "unix:gid:2"],
            ))
            .await
            .expect("create");
        // Same set in another order is the same entry.
        let mut dup = entry(
            "spiffe://td/w",
            "spiffe://td/agent",
            &["unix:gid:2", "unix:uid:1"],
        );
        dup.hint = "different".into();
        let err = ds.create_entry(dup).await.expect_err("duplicate");
        assert!(matches!(err, DataStoreError::AlreadyExists(_)), "{err:?}");
        assert!(err.to_string().contains(&first.id), "{err}");

        // Any one of the three differing makes a distinct entry.
        for e in [
            entry("spiffe://td/w", "spiffe://td/agent", &["unix:uid:1"]),
            entry(
                "spiffe://td/w",
                "spiffe://td/agent2",
                &["unix:uid:1", "unix:gid:2"],
            ),
            entry(
                "spiffe://td/w2",
                "spiffe://td/agent",
                &["unix:uid:1", "unix:gid:2"],
            ),
        ] {
            ds.create_entry(e).await.expect("distinct entry");
        }
        assert_eq!(
            ds.count_entries(&ListEntriesRequest::default())
                .await
                .expect("count"),
            4
        );
    }

    pub async fn entry_invalid_input_is_rejected_and_changes_nothing(ds: Arc<dyn DataStore>) {
        ds.create_entry(entry("spiffe://td/ok", "spiffe://td/agent", &["k:v"]))
            .await
            .expect("create");
        let events = ds.latest_entry_event_id().await.expect("latest");

        let mut cases: Vec<(&str, RegistrationEntry)> = Vec::new();
        cases.push((
            "no selectors",
            entry("spiffe://td/w", "spiffe://td/agent", &[]),
        ));
        cases.push((
            "duplicate selector",
            entry("spiffe://td/w", "spiffe://td/agent", &["k:v", "k:v"]),
        ));
        let mut e = entry("spiffe://td/w", "spiffe://td/agent", &["k:v"]);
        e.id = "bad id/with slash".into();
        cases.push(("bad id", e));
        let mut e = entry("spiffe://td/w", "spiffe://td/agent", &["k:v"]);
        e.id = "x".repeat(256);
        cases.push(("long id", e));
        let mut e = entry("spiffe://td/w", "spiffe://td/agent", &["k:v"]);
        e.x509_svid_ttl = -1;
        cases.push(("negative x509 ttl", e));
        let mut e = entry("spiffe://td/w", "spiffe://td/agent", &["k:v"]);
        e.jwt_svid_ttl = -5;
        cases.push(("negative jwt ttl", e));
        let mut e = entry(
            "spiffe://td/w",
            "spiffe://td/agent",
            &["unix:uid:1", "k8s:ns:x"],
        );
        e.store_svid = true;
        cases.push(("store_svid with mixed selector types", e));
        let mut e = entry("spiffe://td/w", "spiffe://td/agent", &["k:v"]);
        e.dns_names = vec!["a".into(), "a".into()];
        cases.push(("duplicate dns name", e));
        let mut e = entry("spiffe://td/w", "spiffe://td/agent", &["k:v"]);
        e.federates_with = vec![td("x.org"), td("x.org")];
        cases.push(("duplicate federated domain", e));

        for (what, e) in cases {
            let err = ds.create_entry(e).await.expect_err(what);
            assert!(
                matches!(err, DataStoreError::InvalidArgument(_)),
                "{what}: {err:?}"
            );
        }
        assert_eq!(
            ds.count_entries(&ListEntriesRequest::default())
                .await
                .expect("count"),
            1
        );
        assert_eq!(ds.latest_entry_event_id().await.expect("latest"), events);
    }

    pub async fn entry_update_applies_only_masked_fields_and_bumps_revision(
        ds: Arc<dyn DataStore>,
    ) {
        let mut e = entry("spiffe://td/w", "spiffe://td/agent", &["k:a", "k:b"]);
        e.dns_names = vec!["a.org".into()];
        e.federates_with = vec![td("fed.org")];
        e.hint = "old".into();
        let created = ds.create_entry(e).await.expect("create");

        // Everything in `change` differs, but only hint and selectors are masked.
        let mut change = entry("spiffe://td/other", "spiffe://td/other-agent", &["k:c"]);
        change.id = created.id.clone();
        change.hint = "new".into();
        change.admin = true;
        let mask = EntryMask {
            hint: true,
            selectors: true,
            ..EntryMask::default()
        };
        let updated = ds.update_entry(change, &mask).await.expect("update");
        let expected = RegistrationEntry {
            hint: "new".into(),
            selectors: sels(&["k:c"]),
            revision_number: 1,
            ..created.clone()
        };
        assert_eq!(updated, expected);
        assert_eq!(
            ds.get_entry(&created.id).await.expect("get"),
            Some(expected.clone())
        );

        // Full mask replaces child lists too, including emptying them.
        let mut full = entry("spiffe://td/w3", "spiffe://td/agent3", &["z:1"]);
        full.id = created.id.clone();
        full.x509_svid_ttl = 10;
        full.jwt_svid_ttl = 20;
        full.downstream = true;
        full.expires_at = 5;
        full.store_svid = true;
        let updated = ds
            .update_entry(full.clone(), &EntryMask::all())
            .await
            .expect("update all");
        assert_eq!(updated.revision_number, 2);
        assert!(updated.dns_names.is_empty() && updated.federates_with.is_empty());
        assert_eq!(
            updated,
            RegistrationEntry {
                revision_number: 2,
                created_at: created.created_at,
                ..full
            }
        );
        assert_eq!(ds.get_entry(&created.id).await.expect("get"), Some(updated));

        // An empty mask still bumps the revision.
        let again = ds
            .update_entry(created.clone(), &EntryMask::default())
            .await
            .expect("empty mask");
        assert_eq!(again.revision_number, 3);

        let mut missing = created;
        missing.id = "no-such-entry".into();
        let err = ds
            .update_entry(missing, &EntryMask::all())
            .await
            .expect_err("missing");
        assert!(matches!(err, DataStoreError::NotFound(_)), "{err:?}");
    }

    pub async fn entry_update_rejected_leaves_entry_and_revision_unchanged(ds: Arc<dyn DataStore>) {
        ds.create_entry(entry("spiffe://td/w", "spiffe://td/agent", &["k:a"]))
            .await
            .expect("create a");
        let b = ds
            .create_entry(entry("spiffe://td/w", "spiffe://td/agent", &["k:b"]))
            .await
            .expect("create b");
        let events = ds.latest_entry_event_id().await.expect("latest");

        // Would make b a duplicate of a.
        let mut change = b.clone();
        change.selectors = sels(&["k:a"]);
        let err = ds
            .update_entry(
                change,
                &EntryMask {
                    selectors: true,
                    ..EntryMask::default()
                },
            )
            .await
            .expect_err("duplicate");
        assert!(matches!(err, DataStoreError::AlreadyExists(_)), "{err:?}");

        // Breaks a rule.
        let mut change = b.clone();
        change.selectors = Vec::new();
        let err = ds
            .update_entry(
                change,
                &EntryMask {
                    selectors: true,
                    ..EntryMask::default()
                },
            )
            .await
            .expect_err("no selectors");
        assert!(matches!(err, DataStoreError::InvalidArgument(_)), "{err:?}");

        assert_eq!(ds.get_entry(&b.id).await.expect("get"), Some(b));
        assert_eq!(ds.latest_entry_event_id().await.expect("latest"), events);
    }

    pub async fn entry_concurrent_updates_each_bump_revision(ds: Arc<dyn DataStore>) {
        let e = ds
            .create_entry(entry("spiffe://td/w", "spiffe://td/agent", &["k:a"]))
            .await
            .expect("create");
        let mut tasks = Vec::new();
        for i in 0..8 {
            let ds = ds.clone();
            let mut change = e.clone();
            change.hint = format!("h{i}");
            tasks.push(tokio::spawn(async move {
                ds.update_entry(
                    change,
                    &EntryMask {
                        hint: true,
                        ..EntryMask::default()
                    },
                )
                .await
            }));
        }
        let mut revisions = BTreeSet::new();
        for t in tasks {
            revisions.insert(t.await.expect("task").expect("update").revision_number);
        }
        assert_eq!(
            revisions,
            (1..=8).collect::<BTreeSet<i64>>(),
            "each update saw the last"
        );
        let stored = ds.get_entry(&e.id).await.expect("get").expect("exists");
        assert_eq!(stored.revision_number, 8);
    }

    pub async fn entry_delete_returns_entry_and_removes_it(ds: Arc<dyn DataStore>) {
        let mut e = entry("spiffe://td/w", "spiffe://td/agent", &["k:a", "k:b"]);
        e.dns_names = vec!["x.org".into()];
        e.federates_with = vec![td("f.org")];
        let created = ds.create_entry(e.clone()).await.expect("create");
        let deleted = ds.delete_entry(&created.id).await.expect("delete");
        assert_eq!(deleted, created);
        assert_eq!(ds.get_entry(&created.id).await.expect("get"), None);
        let err = ds.delete_entry(&created.id).await.expect_err("gone");
        assert!(matches!(err, DataStoreError::NotFound(_)), "{err:?}");

        // Nothing of it is left behind: the same entry (same ID) can be created again.
        e.id = created.id.clone();
        let again = ds.create_entry(e).await.expect("recreate");
        assert_eq!(again.selectors, created.selectors);
        assert_eq!(again.dns_names, created.dns_names);
        assert_eq!(again.federates_with, created.federates_with);
    }

    pub async fn entry_list_filters_by_scalar_fields(ds: Arc<dyn DataStore>) {
        let mut e = entry("spiffe://td/a", "spiffe://td/p1", &["k:1"]);
        e.hint = "h1".into();
        create_with_id(&ds, "e1", e).await;
        let mut e = entry("spiffe://td/a", "spiffe://td/p2", &["k:1"]);
        e.downstream = true;
        create_with_id(&ds, "e2", e).await;
        let mut e = entry("spiffe://td/b", "spiffe://td/p1", &["k:1"]);
        e.hint = "h1".into();
        e.downstream = true;
        create_with_id(&ds, "e3", e).await;

        let req = |f: fn(&mut ListEntriesRequest)| {
            let mut r = ListEntriesRequest::default();
            f(&mut r);
            r
        };
        assert_eq!(
            list_ids(&ds, ListEntriesRequest::default()).await,
            ["e1", "e2", "e3"]
        );
        assert_eq!(
            list_ids(&ds, req(|r| r.by_spiffe_id = Some(id("spiffe://td/a")))).await,
            ["e1", "e2"]
        );
        assert_eq!(
            list_ids(&ds, req(|r| r.by_parent_id = Some(id("spiffe://td/p1")))).await,
            ["e1", "e3"]
        );
        assert_eq!(
            list_ids(&ds, req(|r| r.by_hint = Some("h1".into()))).await,
            ["e1", "e3"]
        );
        assert_eq!(
            list_ids(&ds, req(|r| r.by_downstream = Some(true))).await,
            ["e2", "e3"]
        );
        assert_eq!(
            list_ids(&ds, req(|r| r.by_downstream = Some(false))).await,
            ["e1"]
        );
        assert_eq!(
            list_ids(
                &ds,
                req(|r| {
                    r.by_parent_id = Some(id("spiffe://td/p1"));
                    r.by_downstream = Some(true);
                    r.by_hint = Some("h1".into());
                })
            )
            .await,
            ["e3"]
        );
        assert!(
            list_ids(&ds, req(|r| r.by_hint = Some("none".into())))
                .await
                .is_empty()
        );
    }

    pub async fn entry_list_selector_match_modes(ds: Arc<dyn DataStore>) {
        create_with_id(&ds, "a", entry("spiffe://td/a", "spiffe://td/p", &["k:a"])).await;
        create_with_id(
            &ds,
            "ab",
            entry("spiffe://td/ab", "spiffe://td/p", &["k:a", "k:b"]),
        )
        .await;
        create_with_id(
            &ds,
            "abc",
            entry("spiffe://td/abc", "spiffe://td/p", &["k:a", "k:b", "k:c"]),
        )
        .await;
        create_with_id(&ds, "d", entry("spiffe://td/d", "spiffe://td/p", &["k:d"])).await;
        create_with_id(
            &ds,
            "bd",
            entry("spiffe://td/bd", "spiffe://td/p", &["k:b", "k:d"]),
        )
        .await;

        let query = |mode| ListEntriesRequest {
            by_selectors: Some((sels(&["k:b", "k:a"]), mode)),
            ..ListEntriesRequest::default()
        };
        assert_eq!(list_ids(&ds, query(MatchMode::Exact)).await, ["ab"]);
        assert_eq!(list_ids(&ds, query(MatchMode::Subset)).await, ["a", "ab"]);
        assert_eq!(
            list_ids(&ds, query(MatchMode::Superset)).await,
            ["ab", "abc"]
        );
        assert_eq!(
            list_ids(&ds, query(MatchMode::Any)).await,
            ["a", "ab", "abc", "bd"]
        );

        // A repeated selector in the request does not change the meaning.
        let req = ListEntriesRequest {
            by_selectors: Some((sels(&["k:a", "k:b", "k:a"]), MatchMode::Exact)),
            ..ListEntriesRequest::default()
        };
        assert_eq!(list_ids(&ds, req).await, ["ab"]);
        // Same type, other value: no match.
        let req = ListEntriesRequest {
            by_selectors: Some((sels(&["k:zz"]), MatchMode::Any)),
            ..ListEntriesRequest::default()
        };
        assert!(list_ids(&ds, req).await.is_empty());
        // Combined with another filter.
        let req = ListEntriesRequest {
            by_selectors: Some((sels(&["k:b"]), MatchMode::Superset)),
            by_spiffe_id: Some(id("spiffe://td/bd")),
            ..ListEntriesRequest::default()
        };
        assert_eq!(list_ids(&ds, req).await, ["bd"]);
    }

    pub async fn entry_list_federates_with_match_modes(ds: Arc<dyn DataStore>) {
        let with = |domains: &[&str]| {
            let mut e = entry("spiffe://td/w", "spiffe://td/p", &[]);
            let tag = if domains.is_empty() {
                "none".to_owned()
            } else {
                domains.join("-")
            };
            e.selectors = vec![sel(&format!("k:{tag}"))];
            e.federates_with = domains.iter().map(|d| td(d)).collect();
            e
        };
        create_with_id(&ds, "none", with(&[])).await;
        create_with_id(&ds, "x", with(&["x.org"])).await;
        create_with_id(&ds, "xy", with(&["x.org", "y.org"])).await;
        create_with_id(&ds, "xyz", with(&["x.org", "y.org", "z.org"])).await;
        create_with_id(&ds, "yz", with(&["y.org", "z.org"])).await;

        let query = |mode| ListEntriesRequest {
            by_federates_with: Some((vec![td("y.org"), td("x.org")], mode)),
            ..ListEntriesRequest::default()
        };
        assert_eq!(list_ids(&ds, query(MatchMode::Exact)).await, ["xy"]);
        // Entries that federate with nothing are not a subset match (as in SPIRE).
        assert_eq!(list_ids(&ds, query(MatchMode::Subset)).await, ["x", "xy"]);
        assert_eq!(
            list_ids(&ds, query(MatchMode::Superset)).await,
            ["xy", "xyz"]
        );
        assert_eq!(
            list_ids(&ds, query(MatchMode::Any)).await,
            ["x", "xy", "xyz", "yz"]
        );
        assert_eq!(
            ds.count_entries(&query(MatchMode::Any))
                .await
                .expect("count"),
            4
        );
    }

    pub async fn entry_list_rejects_empty_match_sets(ds: Arc<dyn DataStore>) {
        let req = ListEntriesRequest {
            by_selectors: Some((Vec::new(), MatchMode::Any)),
            ..ListEntriesRequest::default()
        };
        let err = ds.list_entries(&req).await.expect_err("empty selectors");
        assert!(matches!(err, DataStoreError::InvalidArgument(_)), "{err:?}");
        let err = ds.count_entries(&req).await.expect_err("empty selectors");
        assert!(matches!(err, DataStoreError::InvalidArgument(_)), "{err:?}");
        let req = ListEntriesRequest {
            by_federates_with: Some((Vec::new(), MatchMode::Exact)),
            ..ListEntriesRequest::default()
        };
        let err = ds.list_entries(&req).await.expect_err("empty domains");
        assert!(matches!(err, DataStoreError::InvalidArgument(_)), "{err:?}");
    }

    pub async fn entry_list_pages_cover_everything_once_in_id_order(ds: Arc<dyn DataStore>) {
        let mut all = Vec::new();
        for i in 0..25 {
            let mut e = entry(&format!("spiffe://td/w{i}"), "spiffe://td/p", &["k:v"]);
            // Mixed-case IDs check that order is by bytes on every engine.
            e.id = if i % 2 == 0 {
                format!("E{i:02}")
            } else {
                format!("e{i:02}")
            };
            e.downstream = i % 3 == 0;
            all.push(ds.create_entry(e).await.expect("create").id);
        }
        all.sort();

        let mut seen = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let resp = ds
                .list_entries(&ListEntriesRequest {
                    page_size: 10,
                    page_token: token.clone(),
                    ..ListEntriesRequest::default()
                })
                .await
                .expect("page");
            pages += 1;
            assert!(resp.entries.len() <= 10);
            seen.extend(ids(&resp.entries));
            if resp.next_page_token.is_empty() {
                break;
            }
            token = resp.next_page_token;
            assert!(pages < 10, "paging does not terminate");
        }
        assert_eq!(
            pages, 3,
            "25 entries in pages of 10, no trailing empty page"
        );
        assert_eq!(seen, all);

        // Exactly one full page: no next token.
        let resp = ds
            .list_entries(&ListEntriesRequest {
                page_size: 25,
                ..ListEntriesRequest::default()
            })
            .await
            .expect("page");
        assert_eq!(resp.entries.len(), 25);
        assert!(resp.next_page_token.is_empty());

        // Paging composes with filters.
        let filtered: Vec<String> = {
            let mut out = Vec::new();
            let mut token = String::new();
            loop {
                let resp = ds
                    .list_entries(&ListEntriesRequest {
                        by_downstream: Some(true),
                        page_size: 2,
                        page_token: token.clone(),
                        ..ListEntriesRequest::default()
                    })
                    .await
                    .expect("page");
                out.extend(ids(&resp.entries));
                if resp.next_page_token.is_empty() {
                    break out;
                }
                token = resp.next_page_token;
            }
        };
        let expected = list_ids(
            &ds,
            ListEntriesRequest {
                by_downstream: Some(true),
                ..ListEntriesRequest::default()
            },
        )
        .await;
        assert_eq!(expected.len(), 9);
        assert_eq!(filtered, expected);
    }

    pub async fn entry_count_agrees_with_list(ds: Arc<dyn DataStore>) {
        assert_eq!(
            ds.count_entries(&ListEntriesRequest::default())
                .await
                .expect("count"),
            0
        );
        for i in 0..7 {
            let parent = if i < 3 {
                "spiffe://td/p1"
            } else {
                "spiffe://td/p2"
            };
            ds.create_entry(entry(&format!("spiffe://td/w{i}"), parent, &["k:v"]))
                .await
                .expect("create");
        }
        let req = ListEntriesRequest {
            by_parent_id: Some(id("spiffe://td/p1")),
            page_size: 1, // ignored by count
            ..ListEntriesRequest::default()
        };
        assert_eq!(ds.count_entries(&req).await.expect("count"), 3);
        assert_eq!(
            ds.count_entries(&ListEntriesRequest::default())
                .await
                .expect("count"),
            7
        );
    }

    pub async fn bulk_get_returns_existing_entries_and_nodes_in_order(ds: Arc<dyn DataStore>) {
        // More IDs than one IN list holds, so the chunking is exercised.
        let mut ids = Vec::new();
        for i in 0..1200 {
            let name = format!("e{i:05}");
            create_with_id(
                &ds,
                &name,
                entry(&format!("spiffe://td/w{i}"), "spiffe://td/p", &["k:1"]),
            )
            .await;
            ids.push(name);
        }
        let mut asked: Vec<String> = ids.iter().rev().cloned().collect();
        asked.push("missing".into());
        asked.push(ids[3].clone());
        let got = ds.get_entries(&asked).await.expect("get entries");
        let got_ids: Vec<_> = got.iter().map(|e| e.id.clone()).collect();
        assert_eq!(got_ids, ids, "every existing entry once, in ID order");
        assert_eq!(got[7].selectors, sels(&["k:1"]));
        assert!(ds.get_entries(&[]).await.expect("empty").is_empty());

        ds.create_attested_node(node("spiffe://td/spire/agent/b", &["s:1", "s:2"]))
            .await
            .expect("node b");
        ds.create_attested_node(node("spiffe://td/spire/agent/a", &[]))
            .await
            .expect("node a");
        let nodes = ds
            .get_attested_nodes(&[
                id("spiffe://td/spire/agent/b"),
                id("spiffe://td/spire/agent/none"),
                id("spiffe://td/spire/agent/a"),
            ])
            .await
            .expect("get nodes");
        let node_ids: Vec<_> = nodes.iter().map(|n| n.spiffe_id.to_string()).collect();
        assert_eq!(
            node_ids,
            ["spiffe://td/spire/agent/a", "spiffe://td/spire/agent/b"]
        );
        assert_eq!(nodes[1].selectors, sels(&["s:1", "s:2"]));
    }

    pub async fn entry_list_by_parents_and_selector_subset(ds: Arc<dyn DataStore>) {
        create_with_id(
            &ds,
            "c1",
            entry("spiffe://td/c1", "spiffe://td/p1", &["k:1"]),
        )
        .await;
        create_with_id(
            &ds,
            "c2",
            entry("spiffe://td/c2", "spiffe://td/p2", &["k:1"]),
        )
        .await;
        create_with_id(
            &ds,
            "c3",
            entry("spiffe://td/c3", "spiffe://td/p3", &["k:1"]),
        )
        .await;
        // Node alias entries (parent is the server) keyed by node selectors.
        let server = "spiffe://td/spire/server";
        create_with_id(
            &ds,
            "alias-a",
            entry("spiffe://td/alias/a", server, &["aws:region:x"]),
        )
        .await;
        create_with_id(
            &ds,
            "alias-ab",
            entry(
                "spiffe://td/alias/ab",
                server,
                &["aws:region:x", "aws:tag:y"],
            ),
        )
        .await;
        create_with_id(
            &ds,
            "alias-az",
            entry(
                "spiffe://td/alias/az",
                server,
                &["aws:region:x", "aws:tag:z"],
            ),
        )
        .await;

        let found = ds
            .list_entries_by_parents(&[
                id("spiffe://td/p3"),
                id("spiffe://td/p1"),
                id("spiffe://td/none"),
            ])
            .await
            .expect("by parents");
        assert_eq!(ids(&found), ["c1", "c3"]);
        assert!(
            ds.list_entries_by_parents(&[])
                .await
                .expect("empty")
                .is_empty()
        );

        let node_selectors = sels(&["aws:region:x", "aws:tag:y", "aws:az:1"]);
        let aliases = ds
            .list_entries_by_selector_subset(&node_selectors)
            .await
            .expect("subset");
        assert_eq!(ids(&aliases), ["alias-a", "alias-ab"]);
        assert!(
            ds.list_entries_by_selector_subset(&[])
                .await
                .expect("empty")
                .is_empty()
        );

        // Many parents span several internal queries.
        let many: Vec<SpiffeId> = (0..1200)
            .map(|i| id(&format!("spiffe://td/n{i}")))
            .chain([id("spiffe://td/p2")])
            .collect();
        assert_eq!(
            ids(&ds.list_entries_by_parents(&many).await.expect("many")),
            ["c2"]
        );
    }

    pub async fn entry_prune_removes_only_expired_entries(ds: Arc<dyn DataStore>) {
        let mut e = entry("spiffe://td/old", "spiffe://td/p", &["k:1"]);
        e.expires_at = 100;
        create_with_id(&ds, "old", e).await;
        let mut e = entry("spiffe://td/new", "spiffe://td/p", &["k:1"]);
        e.expires_at = 300;
        create_with_id(&ds, "new", e).await;
        create_with_id(
            &ds,
            "never",
            entry("spiffe://td/never", "spiffe://td/p", &["k:1"]),
        )
        .await;
        let before = ds.latest_entry_event_id().await.expect("latest");

        assert_eq!(ds.prune_entries(200, 1000).await.expect("prune"), 1);
        assert_eq!(
            list_ids(&ds, ListEntriesRequest::default()).await,
            ["never", "new"]
        );
        let events = ds.list_entry_events_since(before).await.expect("events");
        assert_eq!(
            events.iter().map(|(_, e)| e.as_str()).collect::<Vec<_>>(),
            ["old"]
        );
        assert_eq!(ds.prune_entries(200, 1000).await.expect("prune again"), 0);
    }

    pub async fn entry_prune_deletes_in_bounded_batches_soonest_expired_first(
        ds: Arc<dyn DataStore>,
    ) {
        for (n, expires_at) in [(1, 150), (2, 110), (3, 190), (4, 120), (5, 500)] {
            let mut e = entry(&format!("spiffe://td/w{n}"), "spiffe://td/p", &["k:1"]);
            e.expires_at = expires_at;
            create_with_id(&ds, &format!("e{n}"), e).await;
        }
        // Four are expired at 200; batches of two take the soonest first.
        assert_eq!(ds.prune_entries(200, 2).await.expect("batch 1"), 2);
        assert_eq!(
            list_ids(&ds, ListEntriesRequest::default()).await,
            ["e1", "e3", "e5"]
        );
        assert_eq!(ds.prune_entries(200, 2).await.expect("batch 2"), 2);
        assert_eq!(ds.prune_entries(200, 2).await.expect("batch 3"), 0);
        assert_eq!(list_ids(&ds, ListEntriesRequest::default()).await, ["e5"]);
    }

    pub async fn events_prune_in_bounded_batches_oldest_first(ds: Arc<dyn DataStore>) {
        for n in 0..5 {
            create_with_id(
                &ds,
                &format!("ev{n}"),
                entry(&format!("spiffe://td/ev{n}"), "spiffe://td/p", &["k:1"]),
            )
            .await;
            ds.set_node_selectors(&id(&format!("spiffe://td/agent/{n}")), sels(&["a:b"]))
                .await
                .expect("selectors");
        }
        let entry_events = ds.list_entry_events_since(0).await.expect("entry events");
        let node_events = ds.list_node_events_since(0).await.expect("node events");
        assert_eq!((entry_events.len(), node_events.len()), (5, 5));

        assert_eq!(
            ds.prune_entry_events(i64::MAX, 2).await.expect("entries"),
            2
        );
        assert_eq!(ds.prune_node_events(i64::MAX, 3).await.expect("nodes"), 3);
        // The oldest went; the rest are exactly the newest, cursor intact.
        assert_eq!(
            ds.list_entry_events_since(0).await.expect("left"),
            entry_events[2..].to_vec()
        );
        assert_eq!(
            ds.list_node_events_since(0).await.expect("left"),
            node_events[3..].to_vec()
        );
        assert_eq!(ds.prune_entry_events(i64::MAX, 10).await.expect("rest"), 3);
        assert_eq!(ds.prune_node_events(i64::MAX, 10).await.expect("rest"), 2);
    }

    pub async fn entry_events_written_for_each_change_only(ds: Arc<dyn DataStore>) {
        assert_eq!(ds.latest_entry_event_id().await.expect("latest"), 0);
        assert!(
            ds.list_entry_events_since(0)
                .await
                .expect("events")
                .is_empty()
        );

        let a = ds
            .create_entry(entry("spiffe://td/a", "spiffe://td/p", &["k:1"]))
            .await
            .expect("create");
        let b = ds
            .create_entry(entry("spiffe://td/b", "spiffe://td/p", &["k:1"]))
            .await
            .expect("create");
        ds.update_entry(a.clone(), &EntryMask::all())
            .await
            .expect("update");
        ds.delete_entry(&b.id).await.expect("delete");
        // Failures write nothing.
        let _ = ds
            .create_entry(entry("spiffe://td/a", "spiffe://td/p", &["k:1"]))
            .await;
        let _ = ds.delete_entry("missing").await;
        let _ = ds.get_entry(&a.id).await;

        let events = ds.list_entry_events_since(0).await.expect("events");
        let entry_ids: Vec<&str> = events.iter().map(|(_, e)| e.as_str()).collect();
        assert_eq!(
            entry_ids,
            [a.id.as_str(), b.id.as_str(), a.id.as_str(), b.id.as_str()]
        );
        let event_ids: Vec<i64> = events.iter().map(|(i, _)| *i).collect();
        assert!(
            event_ids.windows(2).all(|w| w[0] < w[1]),
            "ascending: {event_ids:?}"
        );
        let latest = ds.latest_entry_event_id().await.expect("latest");
        assert_eq!(Some(&latest), event_ids.last());
        assert_eq!(
            ds.list_entry_events_since(event_ids[1])
                .await
                .expect("since"),
            events[2..].to_vec()
        );

        // Pruning drops old events but never reuses IDs.
        assert_eq!(ds.prune_entry_events(0, 1000).await.expect("prune none"), 0);
        assert_eq!(
            ds.prune_entry_events(i64::MAX, 1000)
                .await
                .expect("prune all"),
            4
        );
        assert!(
            ds.list_entry_events_since(0)
                .await
                .expect("events")
                .is_empty()
        );
        ds.delete_entry(&a.id).await.expect("delete");
        let events = ds.list_entry_events_since(0).await.expect("events");
        assert_eq!(events.len(), 1);
        assert!(events[0].0 > latest, "event IDs keep growing after a prune");
    }

    pub async fn entry_event_cursor_never_skips_under_concurrent_writes(ds: Arc<dyn DataStore>) {
        const WRITERS: usize = 4;
        const PER_WRITER: usize = 15;
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let ds = ds.clone();
                tokio::spawn(async move {
                    for i in 0..PER_WRITER {
                        ds.create_entry(entry(
                            &format!("spiffe://td/w{w}/{i}"),
                            "spiffe://td/p",
                            &["k:v"],
                        ))
                        .await
                        .expect("create");
                    }
                })
            })
            .collect();
        // A follower that only ever asks for events after the last one it saw,
        // as the server's entry cache does.
        let mut cursor = 0;
        let mut followed = Vec::new();
        loop {
            let done = writers.iter().all(|w| w.is_finished());
            for (event_id, entry_id) in ds.list_entry_events_since(cursor).await.expect("events") {
                cursor = event_id;
                followed.push(entry_id);
            }
            if done {
                break;
            }
            tokio::task::yield_now().await;
        }
        for w in writers {
            w.await.expect("writer");
        }
        followed.extend(
            ds.list_entry_events_since(cursor)
                .await
                .expect("events")
                .into_iter()
                .map(|(_, e)| e),
        );
        assert_eq!(
            followed.len(),
            WRITERS * PER_WRITER,
            "the cursor skipped events"
        );
    }

    pub async fn node_create_get_update_delete(ds: Arc<dyn DataStore>) {
        let mut n = node("spiffe://td/spire/agent/x", &["k:a", "k:b", "k:a"]);
        n.can_reattest = true;
        let created = ds.create_attested_node(n.clone()).await.expect("create");
        assert_eq!(
            created.selectors,
            sels(&["k:a", "k:b"]),
            "duplicates dropped"
        );
        assert_eq!(
            ds.get_attested_node(&n.spiffe_id).await.expect("get"),
            Some(created.clone())
        );
        let err = ds
            .create_attested_node(n.clone())
            .await
            .expect_err("duplicate");
        assert!(matches!(err, DataStoreError::AlreadyExists(_)), "{err:?}");

        // Rotation: only the masked fields change.
        let mut change = node("spiffe://td/spire/agent/x", &[]);
        change.attestation_data_type = "ignored".into();
        change.new_cert_serial_number = "2".into();
        change.new_cert_not_after = 2000;
        let mask = NodeMask {
            new_cert_serial_number: true,
            new_cert_not_after: true,
            ..NodeMask::default()
        };
        let updated = ds
            .update_attested_node(change, &mask)
            .await
            .expect("update");
        let expected = AttestedNode {
            new_cert_serial_number: "2".into(),
            new_cert_not_after: 2000,
            ..created.clone()
        };
        assert_eq!(updated, expected, "selectors kept, unmasked fields kept");
        assert_eq!(
            ds.get_attested_node(&n.spiffe_id).await.expect("get"),
            Some(expected.clone())
        );
        // An empty mask is a no-op that still finds the node.
        assert_eq!(
            ds.update_attested_node(expected.clone(), &NodeMask::default())
                .await
                .expect("empty mask"),
            expected
        );

        let missing = node("spiffe://td/spire/agent/missing", &[]);
        let err = ds
            .update_attested_node(missing.clone(), &NodeMask::all())
            .await
            .expect_err("missing");
        assert!(matches!(err, DataStoreError::NotFound(_)), "{err:?}");

        let deleted = ds.delete_attested_node(&n.spiffe_id).await.expect("delete");
        assert_eq!(deleted, expected);
        assert_eq!(ds.get_attested_node(&n.spiffe_id).await.expect("get"), None);
        assert!(
            ds.get_node_selectors(&n.spiffe_id)
                .await
                .expect("sel")
                .is_empty()
        );
        let err = ds
            .delete_attested_node(&n.spiffe_id)
            .await
            .expect_err("gone");
        assert!(matches!(err, DataStoreError::NotFound(_)), "{err:?}");
    }

    pub async fn node_ban_semantics_and_filter(ds: Arc<dyn DataStore>) {
        let ok = node("spiffe://td/agent/ok", &[]);
        let mut rotating = node("spiffe://td/agent/rotating", &[]);
        rotating.cert_serial_number = String::new();
        rotating.new_cert_serial_number = "9".into();
        let mut banned = node("spiffe://td/agent/banned", &[]);
        banned.cert_serial_number = String::new();
        assert!(!ok.is_banned());
        assert!(!rotating.is_banned(), "a pending serial alone is not a ban");
        assert!(banned.is_banned());
        for n in [ok.clone(), rotating, banned] {
            ds.create_attested_node(n).await.expect("create");
        }

        let list = |b| ListNodesRequest {
            by_banned: Some(b),
            ..ListNodesRequest::default()
        };
        let (nodes, _) = ds.list_attested_nodes(&list(true)).await.expect("banned");
        assert_eq!(node_ids(&nodes), ["spiffe://td/agent/banned"]);
        let (nodes, _) = ds
            .list_attested_nodes(&list(false))
            .await
            .expect("not banned");
        assert_eq!(
            node_ids(&nodes),
            ["spiffe://td/agent/ok", "spiffe://td/agent/rotating"]
        );

        // Banning is an update that clears both serials.
        let mut ban = ok.clone();
        ban.cert_serial_number = String::new();
        ban.new_cert_serial_number = String::new();
        let mask = NodeMask {
            cert_serial_number: true,
            new_cert_serial_number: true,
            ..NodeMask::default()
        };
        let stored = ds.update_attested_node(ban, &mask).await.expect("ban");
        assert!(stored.is_banned());
        assert_eq!(
            ds.count_attested_nodes(&list(true)).await.expect("count"),
            2
        );
    }

    pub async fn node_list_filters_and_pages(ds: Arc<dyn DataStore>) {
        for i in 0..7 {
            let mut n = node(&format!("spiffe://td/agent/{i}"), &[]);
            n.attestation_data_type = if i % 2 == 0 { "join_token" } else { "x509pop" }.into();
            n.cert_not_after = 100 * i;
            n.can_reattest = i % 2 == 1;
            ds.create_attested_node(n).await.expect("create");
        }
        let all = |r: ListNodesRequest| {
            let ds = ds.clone();
            async move {
                let (nodes, token) = ds.list_attested_nodes(&r).await.expect("list");
                assert!(token.is_empty());
                nodes
                    .into_iter()
                    .map(|n| n.spiffe_id.path().to_owned())
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            all(ListNodesRequest {
                by_attestation_type: Some("x509pop".into()),
                ..ListNodesRequest::default()
            })
            .await,
            ["/agent/1", "/agent/3", "/agent/5"]
        );
        assert_eq!(
            all(ListNodesRequest {
                by_expires_before: Some(300),
                ..ListNodesRequest::default()
            })
            .await,
            ["/agent/0", "/agent/1", "/agent/2"]
        );
        assert_eq!(
            all(ListNodesRequest {
                by_can_reattest: Some(false),
                by_expires_before: Some(500),
                ..ListNodesRequest::default()
            })
            .await,
            ["/agent/0", "/agent/2", "/agent/4"]
        );

        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let (nodes, next) = ds
                .list_attested_nodes(&ListNodesRequest {
                    page_size: 3,
                    page_token: token.clone(),
                    ..ListNodesRequest::default()
                })
                .await
                .expect("page");
            assert!(nodes.len() <= 3);
            seen.extend(nodes.into_iter().map(|n| n.spiffe_id));
            if next.is_empty() {
                break;
            }
            token = next;
        }
        let expected: Vec<SpiffeId> = (0..7)
            .map(|i| id(&format!("spiffe://td/agent/{i}")))
            .collect();
        assert_eq!(seen, expected);
        assert_eq!(
            ds.count_attested_nodes(&ListNodesRequest {
                by_attestation_type: Some("join_token".into()),
                page_size: 1,
                ..ListNodesRequest::default()
            })
            .await
            .expect("count"),
            4
        );
    }

    pub async fn node_selector_match_modes(ds: Arc<dyn DataStore>) {
        ds.create_attested_node(node("spiffe://td/n/none", &[]))
            .await
            .expect("create");
        ds.create_attested_node(node("spiffe://td/n/a", &["k:a"]))
            .await
            .expect("create");
        ds.create_attested_node(node("spiffe://td/n/ab", &["k:a", "k:b"]))
            .await
            .expect("create");
        ds.create_attested_node(node("spiffe://td/n/abc", &["k:a", "k:b", "k:c"]))
            .await
            .expect("create");
        ds.create_attested_node(node("spiffe://td/n/c", &["k:c"]))
            .await
            .expect("create");

        let query = |mode| ListNodesRequest {
            by_selector_match: Some((sels(&["k:a", "k:b"]), mode)),
            ..ListNodesRequest::default()
        };
        let paths = |nodes: Vec<AttestedNode>| {
            nodes
                .into_iter()
                .map(|n| n.spiffe_id.path().to_owned())
                .collect::<Vec<_>>()
        };
        let list = |mode| {
            let ds = ds.clone();
            async move { paths(ds.list_attested_nodes(&query(mode)).await.expect("list").0) }
        };
        assert_eq!(list(MatchMode::Exact).await, ["/n/ab"]);
        assert_eq!(list(MatchMode::Subset).await, ["/n/a", "/n/ab"]);
        assert_eq!(list(MatchMode::Superset).await, ["/n/ab", "/n/abc"]);
        assert_eq!(list(MatchMode::Any).await, ["/n/a", "/n/ab", "/n/abc"]);
        assert_eq!(
            ds.count_attested_nodes(&query(MatchMode::Any))
                .await
                .expect("count"),
            3
        );

        let empty = ListNodesRequest {
            by_selector_match: Some((Vec::new(), MatchMode::Any)),
            ..ListNodesRequest::default()
        };
        let err = ds.list_attested_nodes(&empty).await.expect_err("empty set");
        assert!(matches!(err, DataStoreError::InvalidArgument(_)), "{err:?}");
    }

    pub async fn node_selectors_replace_and_write_events(ds: Arc<dyn DataStore>) {
        let agent = id("spiffe://td/agent/1");
        assert_eq!(ds.latest_node_event_id().await.expect("latest"), 0);
        // Selectors may be recorded before the node exists.
        ds.set_node_selectors(&agent, sels(&["k:b", "k:a", "k:b"]))
            .await
            .expect("set");
        assert_eq!(
            ds.get_node_selectors(&agent).await.expect("get"),
            sels(&["k:b", "k:a"])
        );
        ds.create_attested_node(node("spiffe://td/agent/1", &["k:c"]))
            .await
            .expect("create");
        assert_eq!(
            ds.get_node_selectors(&agent).await.expect("get"),
            sels(&["k:c"])
        );
        ds.set_node_selectors(&agent, sels(&["k:d"]))
            .await
            .expect("replace");
        assert_eq!(
            ds.get_attested_node(&agent)
                .await
                .expect("get")
                .map(|n| n.selectors),
            Some(sels(&["k:d"]))
        );
        ds.update_attested_node(node("spiffe://td/agent/1", &[]), &NodeMask::all())
            .await
            .expect("update");
        ds.delete_attested_node(&agent).await.expect("delete");
        let _ = ds.delete_attested_node(&agent).await; // fails: no event

        let events = ds.list_node_events_since(0).await.expect("events");
        assert_eq!(
            events.len(),
            5,
            "set, create, set, update, delete: {events:?}"
        );
        assert!(events.iter().all(|(_, n)| *n == agent));
        assert!(events.windows(2).all(|w| w[0].0 < w[1].0));
        let latest = ds.latest_node_event_id().await.expect("latest");
        assert_eq!(latest, events[4].0);
        assert_eq!(
            ds.list_node_events_since(events[2].0)
                .await
                .expect("since")
                .len(),
            2
        );
        assert_eq!(
            ds.prune_node_events(i64::MAX, 1000).await.expect("prune"),
            5
        );
        assert!(
            ds.list_node_events_since(0)
                .await
                .expect("events")
                .is_empty()
        );
    }

    pub async fn node_prune_keeps_banned_unexpired_and_unless_asked_non_reattestable(
        ds: Arc<dyn DataStore>,
    ) {
        let make = |name: &str, not_after: i64, reattest: bool, banned: bool| {
            let mut n = node(&format!("spiffe://td/agent/{name}"), &["t:v"]);
            n.cert_not_after = not_after;
            n.can_reattest = reattest;
            if banned {
                n.cert_serial_number = String::new();
            }
            n
        };
        for n in [
            make("valid", 5000, true, false),
            make("expired", 100, true, false),
            make("expired-too", 200, true, false),
            make("banned", 100, true, true),
            make("tofu", 100, false, false),
        ] {
            ds.create_attested_node(n.clone()).await.expect("create");
            ds.set_node_selectors(&n.spiffe_id, n.selectors.clone())
                .await
                .expect("selectors");
        }
        let before = ds.latest_node_event_id().await.expect("latest");
        let names = |ids: Vec<SpiffeId>| {
            ids.iter()
                .map(|i| i.path().trim_start_matches("/agent/").to_owned())
                .collect::<Vec<_>>()
        };

        // Nothing expired before 100.
        assert!(
            ds.prune_attested_nodes(100, false, 10)
                .await
                .expect("none")
                .is_empty()
        );
        // One per batch, soonest-expired first; banned and TOFU stay.
        assert_eq!(
            names(ds.prune_attested_nodes(1000, false, 1).await.expect("b1")),
            ["expired"]
        );
        assert_eq!(
            names(ds.prune_attested_nodes(1000, false, 1).await.expect("b2")),
            ["expired-too"]
        );
        assert!(
            ds.prune_attested_nodes(1000, false, 1)
                .await
                .expect("b3")
                .is_empty()
        );
        // prune_tofu_nodes takes the node that cannot re-attest; never the banned one.
        assert_eq!(
            names(ds.prune_attested_nodes(1000, true, 10).await.expect("tofu")),
            ["tofu"]
        );
        let mut left: Vec<String> = ds
            .list_attested_nodes(&ListNodesRequest::default())
            .await
            .expect("list")
            .0
            .into_iter()
            .map(|n| n.spiffe_id.path().trim_start_matches("/agent/").to_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["banned", "valid"]);
        // Selectors went with the nodes, and each deletion wrote an event.
        assert!(
            ds.get_node_selectors(&id("spiffe://td/agent/expired"))
                .await
                .expect("selectors")
                .is_empty()
        );
        assert_eq!(
            ds.list_node_events_since(before)
                .await
                .expect("events")
                .len(),
            3
        );
    }

    pub async fn join_token_is_single_use(ds: Arc<dyn DataStore>) {
        let t = JoinToken {
            token: "secret".into(),
            expires_at: 1000,
        };
        ds.create_join_token(t.clone()).await.expect("create");
        let err = ds
            .create_join_token(t.clone())
            .await
            .expect_err("duplicate");
        assert!(matches!(err, DataStoreError::AlreadyExists(_)), "{err:?}");
        assert!(
            !err.to_string().contains("secret"),
            "token value must not leak: {err}"
        );
        assert_eq!(ds.take_join_token("secret").await.expect("take"), Some(t));
        assert_eq!(
            ds.take_join_token("secret").await.expect("take again"),
            None
        );
        assert_eq!(
            ds.take_join_token("never-existed").await.expect("take"),
            None
        );
        let err = ds
            .create_join_token(JoinToken {
                token: String::new(),
                expires_at: 1,
            })
            .await
            .expect_err("empty");
        assert!(matches!(err, DataStoreError::InvalidArgument(_)), "{err:?}");
    }

    pub async fn join_token_concurrent_takes_yield_exactly_one(ds: Arc<dyn DataStore>) {
        for round in 0..3 {
            let token = format!("race-{round}");
            ds.create_join_token(JoinToken {
                token: token.clone(),
                expires_at: 1000,
            })
            .await
            .expect("create");
            let barrier = Arc::new(tokio::sync::Barrier::new(10));
            let mut tasks = Vec::new();
            for _ in 0..10 {
                let ds = ds.clone();
                let token = token.clone();
                let barrier = barrier.clone();
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    ds.take_join_token(&token).await
                }));
            }
            let mut winners = 0;
            for t in tasks {
                if t.await.expect("task").expect("take").is_some() {
                    winners += 1;
                }
            }
            assert_eq!(winners, 1, "round {round}");
        }
    }

    pub async fn join_token_prune_removes_expired(ds: Arc<dyn DataStore>) {
        for (t, exp) in [("a", 100), ("b", 200), ("c", 300)] {
            ds.create_join_token(JoinToken {
                token: t.into(),
                expires_at: exp,
            })
            .await
            .expect("create");
        }
        assert_eq!(ds.prune_join_tokens(200).await.expect("prune"), 1);
        assert_eq!(ds.take_join_token("a").await.expect("a"), None);
        assert!(ds.take_join_token("b").await.expect("b").is_some());
        assert!(ds.take_join_token("c").await.expect("c").is_some());
    }

    pub async fn bundle_upsert_get_list_delete(ds: Arc<dyn DataStore>) {
        assert!(ds.list_bundles().await.expect("list").is_empty());
        assert_eq!(ds.get_bundle(&td("b.org")).await.expect("get"), None);
        ds.set_bundle(bundle("b.org", b"v1")).await.expect("set");
        ds.set_bundle(bundle("a.org", &[0, 159, 255, 0]))
            .await
            .expect("set");
        ds.set_bundle(bundle("b.org", b"v2"))
            .await
            .expect("replace");
        assert_eq!(
            ds.get_bundle(&td("b.org")).await.expect("get"),
            Some(bundle("b.org", b"v2"))
        );
        assert_eq!(
            ds.list_bundles().await.expect("list"),
            vec![bundle("a.org", &[0, 159, 255, 0]), bundle("b.org", b"v2")]
        );
        ds.delete_bundle(&td("a.org")).await.expect("delete");
        let err = ds.delete_bundle(&td("a.org")).await.expect_err("gone");
        assert!(matches!(err, DataStoreError::NotFound(_)), "{err:?}");
        assert_eq!(
            ds.list_bundles().await.expect("list"),
            vec![bundle("b.org", b"v2")]
        );
    }

    pub async fn federation_relationship_create_get_delete(ds: Arc<dyn DataStore>) {
        let web = web_relationship("web.org", "https://web.org/bundle");
        let spiffe = spiffe_relationship(
            "spiffe.org",
            "https://spiffe.org:8443",
            "spiffe://spiffe.org/spire/server",
        );
        assert_eq!(
            ds.create_federation_relationship(web.clone())
                .await
                .expect("web"),
            web
        );
        assert_eq!(
            ds.create_federation_relationship(spiffe.clone())
                .await
                .expect("spiffe"),
            spiffe
        );
        assert_eq!(
            ds.get_federation_relationship(&td("web.org"))
                .await
                .expect("get"),
            Some(web.clone())
        );
        assert_eq!(
            ds.get_federation_relationship(&td("spiffe.org"))
                .await
                .expect("get"),
            Some(spiffe.clone())
        );
        assert_eq!(
            ds.get_federation_relationship(&td("none.org"))
                .await
                .expect("get"),
            None
        );

        // The relationship's bundle is its own record and outlives it.
        ds.set_bundle(bundle("web.org", b"roots"))
            .await
            .expect("set bundle");
        ds.delete_federation_relationship(&td("web.org"))
            .await
            .expect("delete");
        assert_eq!(
            ds.get_federation_relationship(&td("web.org"))
                .await
                .expect("get"),
            None
        );
        assert_eq!(
            ds.get_bundle(&td("web.org")).await.expect("bundle"),
            Some(bundle("web.org", b"roots"))
        );
        let err = ds
            .delete_federation_relationship(&td("web.org"))
            .await
            .expect_err("already gone");
        assert!(matches!(err, DataStoreError::NotFound(_)), "{err:?}");
        assert_eq!(
            ds.list_federation_relationships(0, "").await.expect("list"),
            (vec![spiffe], String::new())
        );
    }

    pub async fn federation_relationship_invalid_or_duplicate_create_changes_nothing(
        ds: Arc<dyn DataStore>,
    ) {
        let original = web_relationship("a.org", "https://a.org/one");
        ds.create_federation_relationship(original.clone())
            .await
            .expect("create");
        let dup = spiffe_relationship("a.org", "https://a.org/two", "spiffe://a.org/server");
        let err = ds
            .create_federation_relationship(dup)
            .await
            .expect_err("duplicate");
        assert!(matches!(err, DataStoreError::AlreadyExists(_)), "{err:?}");
        let err = ds
            .create_federation_relationship(web_relationship("b.org", ""))
            .await
            .expect_err("no URL");
        assert!(matches!(err, DataStoreError::InvalidArgument(_)), "{err:?}");
        assert_eq!(
            ds.list_federation_relationships(0, "").await.expect("list"),
            (vec![original], String::new())
        );
    }

    pub async fn federation_relationship_update_applies_only_masked_fields(ds: Arc<dyn DataStore>) {
        let stored = spiffe_relationship(
            "a.org",
            "https://a.org/bundle",
            "spiffe://a.org/spire/server",
        );
        ds.create_federation_relationship(stored.clone())
            .await
            .expect("create");
        let replacement = web_relationship("a.org", "https://new.a.org/bundle");

        let url_only = FederationRelationshipMask {
            bundle_endpoint_url: true,
            ..Default::default()
        };
        let got = ds
            .update_federation_relationship(replacement.clone(), &url_only)
            .await
            .expect("update URL");
        let mut expected = stored.clone();
        expected.bundle_endpoint_url = "https://new.a.org/bundle".into();
        assert_eq!(got, expected);

        let nothing = ds
            .update_federation_relationship(replacement.clone(), &Default::default())
            .await
            .expect("empty mask");
        assert_eq!(nothing, expected);

        let got = ds
            .update_federation_relationship(replacement.clone(), &FederationRelationshipMask::all())
            .await
            .expect("update all");
        assert_eq!(got, replacement);
        assert_eq!(
            ds.get_federation_relationship(&td("a.org"))
                .await
                .expect("get"),
            Some(replacement.clone())
        );

        // Back to https_spiffe with a different endpoint ID.
        let back = spiffe_relationship("a.org", "ignored", "spiffe://a.org/other");
        let profile_only = FederationRelationshipMask {
            profile: true,
            ..Default::default()
        };
        let got = ds
            .update_federation_relationship(back, &profile_only)
            .await
            .expect("update profile");
        assert_eq!(
            got,
            spiffe_relationship("a.org", "https://new.a.org/bundle", "spiffe://a.org/other")
        );

        let err = ds
            .update_federation_relationship(web_relationship("a.org", ""), &url_only)
            .await
            .expect_err("empty URL");
        assert!(matches!(err, DataStoreError::InvalidArgument(_)), "{err:?}");
        let err = ds
            .update_federation_relationship(
                web_relationship("missing.org", "https://x"),
                &FederationRelationshipMask::all(),
            )
            .await
            .expect_err("missing");
        assert!(matches!(err, DataStoreError::NotFound(_)), "{err:?}");
        let err = ds
            .update_federation_relationship(
                web_relationship("missing.org", "https://x"),
                &Default::default(),
            )
            .await
            .expect_err("missing, empty mask");
        assert!(matches!(err, DataStoreError::NotFound(_)), "{err:?}");
        assert_eq!(
            ds.list_federation_relationships(0, "")
                .await
                .expect("list")
                .0
                .len(),
            1
        );
    }

    pub async fn federation_relationship_list_pages_in_trust_domain_order(ds: Arc<dyn DataStore>) {
        let names = ["e.org", "a.org", "d.org", "b.org", "c.org"];
        for name in names {
            ds.create_federation_relationship(web_relationship(name, &format!("https://{name}")))
                .await
                .expect("create");
        }
        let mut seen = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let (page, next) = ds
                .list_federation_relationships(2, &token)
                .await
                .expect("page");
            assert!(page.len() <= 2);
            seen.extend(page.into_iter().map(|r| r.trust_domain.name().to_owned()));
            pages += 1;
            if next.is_empty() {
                break;
            }
            token = next;
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, vec!["a.org", "b.org", "c.org", "d.org", "e.org"]);
        let (all, next) = ds.list_federation_relationships(0, "").await.expect("all");
        assert_eq!(all.len(), 5);
        assert!(next.is_empty());
        let (exact, next) = ds
            .list_federation_relationships(5, "")
            .await
            .expect("exact");
        assert_eq!(exact.len(), 5);
        assert!(next.is_empty(), "a full last page has no next token");
    }

    pub async fn ping_succeeds(ds: Arc<dyn DataStore>) {
        ds.ping().await.expect("ping");
    }
}
