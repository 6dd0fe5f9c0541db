//! [`SqlStore`]: the [`DataStore`] implementation shared by every SQL engine.
//!
//! All SQL here is engine-neutral ([`Stmt`] with abstract placeholders); what
//! differs per engine comes from [`Backend`]. Each write runs in one
//! transaction and ends with its change-feed event, so a failed write leaves
//! nothing behind and events appear in ID order.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sigil_spiffe::{Selector, SpiffeId, TrustDomain};
use sqlx::{Pool, Transaction};

use super::backend::{Backend, map_err};
use super::filter;
use super::stmt::{Arg, Stmt};
use crate::error::DataStoreError;
use crate::model::{
    AttestedNode, BundleEndpointProfile, EntryMask, FederationRelationship,
    FederationRelationshipMask, JoinToken, ListEntriesRequest, ListEntriesResponse,
    ListNodesRequest, NodeMask, NodeSerials, RegistrationEntry, StoredBundle,
};
use crate::store::{DataStore, Result};
use crate::validate::{self, invalid};

/// A datastore over a connection pool of engine `DB`.
pub(crate) struct SqlStore<DB: Backend> {
    pool: Pool<DB>,
    /// Set when getting a connection last timed out: the database is taken
    /// to be down (see [`SqlStore::pooled`]).
    unreachable: AtomicBool,
}

impl<DB: Backend> SqlStore<DB> {
    /// Wraps a pool whose database has been migrated.
    pub(crate) fn new(pool: Pool<DB>) -> Self {
        SqlStore {
            pool,
            unreachable: AtomicBool::new(false),
        }
    }
}

/// How long a caller waits for a connection while the database is known to
/// be down. sqlx retries a refused connection until the pool's whole acquire
/// timeout, so without this every call would hang that long during an
/// outage; this is still long enough for a database that has just come back
/// to answer the first try.
const UNREACHABLE_WAIT: Duration = Duration::from_secs(1);

/// Parent IDs per `IN (...)` list; far below every engine's parameter limit.
const PARENTS_PER_QUERY: usize = 500;
/// Child rows per multi-row INSERT (4 parameters each).
const ROWS_PER_INSERT: usize = 200;

const ENTRY_COLUMNS: &str = "e0.entry_id, e0.spiffe_id, e0.parent_id, e0.x509_svid_ttl, \
     e0.jwt_svid_ttl, e0.admin, e0.downstream, e0.expires_at, e0.hint, e0.store_svid, \
     e0.revision_number, e0.created_at";

const NODE_COLUMNS: &str = "n0.spiffe_id, n0.attestation_data_type, n0.cert_serial_number, \
     n0.cert_not_after, n0.new_cert_serial_number, n0.new_cert_not_after, n0.can_reattest";

const RELATIONSHIP_COLUMNS: &str =
    "trust_domain, bundle_endpoint_url, bundle_endpoint_profile, endpoint_spiffe_id";

#[async_trait]
impl<DB: Backend> DataStore for SqlStore<DB> {
    async fn create_entry(&self, entry: RegistrationEntry) -> Result<RegistrationEntry> {
        const WHAT: &str = "create registration entry";
        let mut entry = entry;
        validate::check_entry(&entry)?;
        if entry.id.is_empty() {
            entry.id = uuid::Uuid::new_v4().to_string();
        } else {
            validate::check_entry_id(&entry.id)?;
        }
        entry.revision_number = 0;
        if entry.created_at == 0 {
            entry.created_at = now_unix();
        }
        let mut tx = self.begin_write(WHAT).await?;
        let result = Self::create_entry_in(&mut tx, &entry).await;
        finish::<DB, _>(tx, result, WHAT).await?;
        Ok(entry)
    }

    async fn update_entry(
        &self,
        entry: RegistrationEntry,
        mask: &EntryMask,
    ) -> Result<RegistrationEntry> {
        const WHAT: &str = "update registration entry";
        validate::check_entry_id(&entry.id)?;
        let mut tx = self.begin_write(WHAT).await?;
        let result = Self::update_entry_in(&mut tx, entry, mask).await;
        finish::<DB, _>(tx, result, WHAT).await
    }

    async fn delete_entry(&self, id: &str) -> Result<RegistrationEntry> {
        const WHAT: &str = "delete registration entry";
        let mut tx = self.begin_write(WHAT).await?;
        let result = Self::delete_entry_in(&mut tx, id).await;
        finish::<DB, _>(tx, result, WHAT).await
    }

    async fn get_entry(&self, id: &str) -> Result<Option<RegistrationEntry>> {
        const WHAT: &str = "get registration entry";
        let mut tx = self.begin_read(WHAT).await?;
        let result = fetch_entries::<DB>(&mut tx, entry_scope_by_id(id)).await;
        finish::<DB, _>(tx, result, WHAT)
            .await
            .map(|entries| entries.into_iter().next())
    }

    async fn get_entries(&self, ids: &[String]) -> Result<Vec<RegistrationEntry>> {
        const WHAT: &str = "get registration entries";
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_read(WHAT).await?;
        let result = async {
            let mut all = Vec::with_capacity(ids.len());
            let scopes = in_list_scopes(
                "SELECT e.entry_id FROM registered_entries e WHERE e.entry_id IN ",
                ids.iter().map(String::as_str),
            );
            for scope in scopes {
                all.extend(fetch_entries::<DB>(&mut tx, scope).await?);
            }
            Ok(all)
        }
        .await;
        let mut entries: Vec<RegistrationEntry> = finish::<DB, _>(tx, result, WHAT).await?;
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        entries.dedup_by(|a, b| a.id == b.id);
        Ok(entries)
    }

    async fn list_entries(&self, req: &ListEntriesRequest) -> Result<ListEntriesResponse> {
        const WHAT: &str = "list registration entries";
        let mut scope = Stmt::new("SELECT e.entry_id FROM registered_entries e WHERE 1 = 1");
        filter::entry_conditions(&mut scope, req)?;
        if !req.page_token.is_empty() {
            scope
                .push(" AND e.entry_id > ")
                .bind(req.page_token.as_str());
        }
        scope.push(" ORDER BY e.entry_id");
        let page_size = usize::try_from(req.page_size).unwrap_or(usize::MAX);
        if page_size > 0 {
            // One extra row tells whether another page follows.
            scope.push(" LIMIT ").bind(i64::from(req.page_size) + 1);
        }
        let mut tx = self.begin_read(WHAT).await?;
        let result = fetch_entries::<DB>(&mut tx, scope).await;
        let mut entries = finish::<DB, _>(tx, result, WHAT).await?;
        let mut next_page_token = String::new();
        if page_size > 0 && entries.len() > page_size {
            entries.truncate(page_size);
            if let Some(last) = entries.last() {
                next_page_token = last.id.clone();
            }
        }
        Ok(ListEntriesResponse {
            entries,
            next_page_token,
        })
    }

    async fn count_entries(&self, req: &ListEntriesRequest) -> Result<u64> {
        const WHAT: &str = "count registration entries";
        let mut stmt = Stmt::new("SELECT COUNT(*) AS n FROM registered_entries e WHERE 1 = 1");
        filter::entry_conditions(&mut stmt, req)?;
        self.count(stmt, WHAT).await
    }

    async fn list_entries_by_parents(
        &self,
        parent_ids: &[SpiffeId],
    ) -> Result<Vec<RegistrationEntry>> {
        const WHAT: &str = "list registration entries by parent";
        if parent_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_read(WHAT).await?;
        let result = Self::entries_by_parents_in(&mut tx, parent_ids).await;
        finish::<DB, _>(tx, result, WHAT).await
    }

    async fn list_entries_by_selector_subset(
        &self,
        selectors: &[Selector],
    ) -> Result<Vec<RegistrationEntry>> {
        const WHAT: &str = "list registration entries by selector subset";
        if selectors.is_empty() {
            return Ok(Vec::new());
        }
        let mut scope = Stmt::new("SELECT e.entry_id FROM registered_entries e WHERE 1 = 1");
        filter::entry_selector_subset(&mut scope, selectors);
        scope.push(" ORDER BY e.entry_id");
        let mut tx = self.begin_read(WHAT).await?;
        let result = fetch_entries::<DB>(&mut tx, scope).await;
        finish::<DB, _>(tx, result, WHAT).await
    }

    async fn prune_entries(&self, expires_before: i64, limit: u32) -> Result<u64> {
        const WHAT: &str = "prune registration entries";
        let mut tx = self.begin_write(WHAT).await?;
        let result = Self::prune_entries_in(&mut tx, expires_before, limit).await;
        finish::<DB, _>(tx, result, WHAT).await
    }

    async fn list_entry_events_since(&self, after_id: i64) -> Result<Vec<(i64, String)>> {
        const WHAT: &str = "list entry events";
        let stmt = Stmt::with(
            "SELECT id, entry_id FROM entry_events WHERE id > ? ORDER BY id",
            [Arg::from(after_id)],
        );
        let mut conn = self.acquire(WHAT).await?;
        let rows = DB::fetch_all(&mut conn, stmt)
            .await
            .map_err(|e| map_err::<DB>(WHAT, e))?;
        rows.iter()
            .map(|row| {
                Ok((
                    DB::int(row, "id").map_err(|e| map_err::<DB>(WHAT, e))?,
                    DB::text(row, "entry_id").map_err(|e| map_err::<DB>(WHAT, e))?,
                ))
            })
            .collect()
    }

    async fn latest_entry_event_id(&self) -> Result<i64> {
        self.query_int(
            Stmt::new("SELECT COALESCE(MAX(id), 0) AS n FROM entry_events"),
            "latest entry event",
        )
        .await
    }

    async fn prune_entry_events(&self, older_than: i64, limit: u32) -> Result<u64> {
        self.execute_one(
            prune_events_stmt("entry_events", older_than, limit),
            "prune entry events",
        )
        .await
    }

    async fn create_attested_node(&self, node: AttestedNode) -> Result<AttestedNode> {
        const WHAT: &str = "create attested node";
        let mut node = node;
        node.selectors = validate::dedup_selectors(std::mem::take(&mut node.selectors));
        let mut tx = self.begin_write(WHAT).await?;
        let result = Self::create_node_in(&mut tx, &node).await;
        finish::<DB, _>(tx, result, WHAT).await?;
        Ok(node)
    }

    async fn get_attested_node(&self, spiffe_id: &SpiffeId) -> Result<Option<AttestedNode>> {
        const WHAT: &str = "get attested node";
        let mut tx = self.begin_read(WHAT).await?;
        let result = fetch_nodes::<DB>(&mut tx, node_scope_by_id(spiffe_id)).await;
        finish::<DB, _>(tx, result, WHAT)
            .await
            .map(|nodes| nodes.into_iter().next())
    }

    async fn get_attested_nodes(&self, ids: &[SpiffeId]) -> Result<Vec<AttestedNode>> {
        const WHAT: &str = "get attested nodes";
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_read(WHAT).await?;
        let result = async {
            let mut all = Vec::with_capacity(ids.len());
            let scopes = in_list_scopes(
                "SELECT n.spiffe_id FROM attested_nodes n WHERE n.spiffe_id IN ",
                ids.iter().map(SpiffeId::as_str),
            );
            for scope in scopes {
                all.extend(fetch_nodes::<DB>(&mut tx, scope).await?);
            }
            Ok(all)
        }
        .await;
        let mut nodes: Vec<AttestedNode> = finish::<DB, _>(tx, result, WHAT).await?;
        nodes.sort_by(|a, b| a.spiffe_id.cmp(&b.spiffe_id));
        nodes.dedup_by(|a, b| a.spiffe_id == b.spiffe_id);
        Ok(nodes)
    }

    async fn update_attested_node(
        &self,
        node: AttestedNode,
        mask: &NodeMask,
    ) -> Result<AttestedNode> {
        const WHAT: &str = "update attested node";
        let id = node.spiffe_id.clone();
        let mut tx = self.begin_write(WHAT).await?;
        let result = Self::update_node_in(&mut tx, node, mask, NodeCondition::Any).await;
        finish::<DB, _>(tx, result, WHAT)
            .await?
            .ok_or_else(|| node_not_found(&id))
    }

    async fn update_attested_node_if(
        &self,
        node: AttestedNode,
        mask: &NodeMask,
        expected: &NodeSerials,
    ) -> Result<Option<AttestedNode>> {
        const WHAT: &str = "update attested node";
        let mut tx = self.begin_write(WHAT).await?;
        let result =
            Self::update_node_in(&mut tx, node, mask, NodeCondition::Serials(expected)).await;
        finish::<DB, _>(tx, result, WHAT).await
    }

    async fn attest_node(
        &self,
        node: AttestedNode,
        join_token: Option<&str>,
    ) -> Result<AttestedNode> {
        const WHAT: &str = "record node attestation";
        let mut node = node;
        node.selectors = validate::dedup_selectors(std::mem::take(&mut node.selectors));
        let mut tx = self.begin_write(WHAT).await?;
        let result = Self::attest_node_in(&mut tx, node, join_token).await;
        finish::<DB, _>(tx, result, WHAT).await
    }

    async fn delete_attested_node(&self, spiffe_id: &SpiffeId) -> Result<AttestedNode> {
        const WHAT: &str = "delete attested node";
        let mut tx = self.begin_write(WHAT).await?;
        let result = Self::delete_node_in(&mut tx, spiffe_id).await;
        finish::<DB, _>(tx, result, WHAT).await
    }

    async fn prune_attested_nodes(
        &self,
        expired_before: i64,
        include_non_reattestable: bool,
        limit: u32,
    ) -> Result<Vec<SpiffeId>> {
        const WHAT: &str = "prune attested nodes";
        let mut tx = self.begin_write(WHAT).await?;
        let result =
            Self::prune_nodes_in(&mut tx, expired_before, include_non_reattestable, limit).await;
        finish::<DB, _>(tx, result, WHAT).await
    }

    async fn list_attested_nodes(
        &self,
        req: &ListNodesRequest,
    ) -> Result<(Vec<AttestedNode>, String)> {
        const WHAT: &str = "list attested nodes";
        let mut scope = Stmt::new("SELECT n.spiffe_id FROM attested_nodes n WHERE 1 = 1");
        filter::node_conditions(&mut scope, req)?;
        if !req.page_token.is_empty() {
            scope
                .push(" AND n.spiffe_id > ")
                .bind(req.page_token.as_str());
        }
        scope.push(" ORDER BY n.spiffe_id");
        let page_size = usize::try_from(req.page_size).unwrap_or(usize::MAX);
        if page_size > 0 {
            scope.push(" LIMIT ").bind(i64::from(req.page_size) + 1);
        }
        let mut tx = self.begin_read(WHAT).await?;
        let result = fetch_nodes::<DB>(&mut tx, scope).await;
        let mut nodes = finish::<DB, _>(tx, result, WHAT).await?;
        let mut next_page_token = String::new();
        if page_size > 0 && nodes.len() > page_size {
            nodes.truncate(page_size);
            if let Some(last) = nodes.last() {
                next_page_token = last.spiffe_id.as_str().to_owned();
            }
        }
        Ok((nodes, next_page_token))
    }

    async fn count_attested_nodes(&self, req: &ListNodesRequest) -> Result<u64> {
        const WHAT: &str = "count attested nodes";
        let mut stmt = Stmt::new("SELECT COUNT(*) AS n FROM attested_nodes n WHERE 1 = 1");
        filter::node_conditions(&mut stmt, req)?;
        self.count(stmt, WHAT).await
    }

    async fn set_node_selectors(
        &self,
        spiffe_id: &SpiffeId,
        selectors: Vec<Selector>,
    ) -> Result<()> {
        const WHAT: &str = "set node selectors";
        let selectors = validate::dedup_selectors(selectors);
        let mut tx = self.begin_write(WHAT).await?;
        let result = Self::set_node_selectors_in(&mut tx, spiffe_id, &selectors).await;
        finish::<DB, _>(tx, result, WHAT).await
    }

    async fn get_node_selectors(&self, spiffe_id: &SpiffeId) -> Result<Vec<Selector>> {
        const WHAT: &str = "get node selectors";
        let stmt = Stmt::with(
            "SELECT spiffe_id, selector_type, selector_value FROM node_selectors \
             WHERE spiffe_id = ? ORDER BY position",
            [Arg::from(spiffe_id.as_str())],
        );
        let mut conn = self.acquire(WHAT).await?;
        let rows = DB::fetch_all(&mut conn, stmt)
            .await
            .map_err(|e| map_err::<DB>(WHAT, e))?;
        rows.iter()
            .map(|row| read_selector::<DB>(row, "node", spiffe_id.as_str()))
            .collect()
    }

    async fn list_node_events_since(&self, after_id: i64) -> Result<Vec<(i64, SpiffeId)>> {
        const WHAT: &str = "list node events";
        let stmt = Stmt::with(
            "SELECT id, spiffe_id FROM node_events WHERE id > ? ORDER BY id",
            [Arg::from(after_id)],
        );
        let mut conn = self.acquire(WHAT).await?;
        let rows = DB::fetch_all(&mut conn, stmt)
            .await
            .map_err(|e| map_err::<DB>(WHAT, e))?;
        rows.iter()
            .map(|row| {
                let id = DB::int(row, "id").map_err(|e| map_err::<DB>(WHAT, e))?;
                let raw = DB::text(row, "spiffe_id").map_err(|e| map_err::<DB>(WHAT, e))?;
                Ok((id, parse_stored_id(&raw, "node event", &id.to_string())?))
            })
            .collect()
    }

    async fn latest_node_event_id(&self) -> Result<i64> {
        self.query_int(
            Stmt::new("SELECT COALESCE(MAX(id), 0) AS n FROM node_events"),
            "latest node event",
        )
        .await
    }

    async fn prune_node_events(&self, older_than: i64, limit: u32) -> Result<u64> {
        self.execute_one(
            prune_events_stmt("node_events", older_than, limit),
            "prune node events",
        )
        .await
    }

    async fn create_join_token(&self, token: JoinToken) -> Result<()> {
        const WHAT: &str = "create join token";
        if token.token.is_empty() {
            return Err(invalid("join token is empty"));
        }
        let mut conn = self.acquire(WHAT).await?;
        insert_join_token::<DB>(&mut conn, &token).await
    }

    async fn create_join_token_with_entry(
        &self,
        token: JoinToken,
        entry: RegistrationEntry,
    ) -> Result<RegistrationEntry> {
        const WHAT: &str = "create join token";
        if token.token.is_empty() {
            return Err(invalid("join token is empty"));
        }
        let mut entry = entry;
        validate::check_entry(&entry)?;
        if entry.id.is_empty() {
            entry.id = uuid::Uuid::new_v4().to_string();
        } else {
            validate::check_entry_id(&entry.id)?;
        }
        entry.revision_number = 0;
        if entry.created_at == 0 {
            entry.created_at = now_unix();
        }
        let mut tx = self.begin_write(WHAT).await?;
        let result = async {
            insert_join_token::<DB>(&mut tx, &token).await?;
            Self::create_entry_in(&mut tx, &entry).await
        }
        .await;
        finish::<DB, _>(tx, result, WHAT).await?;
        Ok(entry)
    }

    async fn get_join_token(&self, token: &str) -> Result<Option<JoinToken>> {
        const WHAT: &str = "get join token";
        let mut conn = self.acquire(WHAT).await?;
        let rows = DB::fetch_all(
            &mut conn,
            Stmt::with(
                "SELECT token, expires_at FROM join_tokens WHERE token = ?",
                [Arg::from(token)],
            ),
        )
        .await
        .map_err(|e| map_err::<DB>(WHAT, e))?;
        rows.first()
            .map(|row| read_join_token::<DB>(row, WHAT))
            .transpose()
    }

    async fn take_join_token(&self, token: &str) -> Result<Option<JoinToken>> {
        const WHAT: &str = "take join token";
        let mut conn = self.acquire(WHAT).await?;
        let rows = DB::fetch_all(
            &mut conn,
            Stmt::with(DB::TAKE_JOIN_TOKEN, [Arg::from(token)]),
        )
        .await
        .map_err(|e| map_err::<DB>(WHAT, e))?;
        rows.first()
            .map(|row| read_join_token::<DB>(row, WHAT))
            .transpose()
    }

    async fn prune_join_tokens(&self, expires_before: i64) -> Result<u64> {
        self.execute_one(
            Stmt::with(
                "DELETE FROM join_tokens WHERE expires_at < ?",
                [Arg::from(expires_before)],
            ),
            "prune join tokens",
        )
        .await
    }

    async fn set_bundle(&self, bundle: StoredBundle) -> Result<()> {
        let stmt = Stmt::with(
            DB::UPSERT_BUNDLE,
            [
                Arg::from(bundle.trust_domain.name()),
                Arg::from(bundle.data),
            ],
        );
        self.execute_one(stmt, "set bundle").await?;
        Ok(())
    }

    async fn set_bundle_if(&self, bundle: StoredBundle, expected: Option<&[u8]>) -> Result<bool> {
        // One statement each: the row is written only if it still holds what
        // the caller read (PostgreSQL re-checks the condition on the latest
        // row version after waiting for a concurrent writer; SQLite has one
        // writer at a time).
        let stmt = match expected {
            None => Stmt::with(
                DB::INSERT_BUNDLE_IF_ABSENT,
                [
                    Arg::from(bundle.trust_domain.name()),
                    Arg::from(bundle.data),
                ],
            ),
            Some(old) => Stmt::with(
                "UPDATE bundles SET data = ? WHERE trust_domain = ? AND data = ?",
                [
                    Arg::from(bundle.data),
                    Arg::from(bundle.trust_domain.name()),
                    Arg::from(old.to_vec()),
                ],
            ),
        };
        Ok(self.execute_one(stmt, "set bundle").await? == 1)
    }

    async fn get_bundle(&self, trust_domain: &TrustDomain) -> Result<Option<StoredBundle>> {
        let stmt = Stmt::with(
            "SELECT trust_domain, data FROM bundles WHERE trust_domain = ?",
            [Arg::from(trust_domain.name())],
        );
        Ok(self
            .fetch_bundles(stmt, "get bundle")
            .await?
            .into_iter()
            .next())
    }

    async fn list_bundles(&self) -> Result<Vec<StoredBundle>> {
        let stmt = Stmt::new("SELECT trust_domain, data FROM bundles ORDER BY trust_domain");
        self.fetch_bundles(stmt, "list bundles").await
    }

    async fn delete_bundle(&self, trust_domain: &TrustDomain) -> Result<()> {
        let stmt = Stmt::with(
            "DELETE FROM bundles WHERE trust_domain = ?",
            [Arg::from(trust_domain.name())],
        );
        if self.execute_one(stmt, "delete bundle").await? == 0 {
            return Err(DataStoreError::NotFound(format!(
                "no bundle for trust domain {trust_domain}"
            )));
        }
        Ok(())
    }

    async fn create_federation_relationship(
        &self,
        rel: FederationRelationship,
    ) -> Result<FederationRelationship> {
        const WHAT: &str = "create federation relationship";
        check_relationship_url(&rel.bundle_endpoint_url)?;
        let (profile, endpoint_id) = profile_columns(&rel.profile);
        let stmt = Stmt::with(
            &format!(
                "INSERT INTO federation_relationships ({RELATIONSHIP_COLUMNS}) VALUES (?, ?, ?, ?)"
            ),
            [
                Arg::from(rel.trust_domain.name()),
                Arg::from(rel.bundle_endpoint_url.as_str()),
                Arg::from(profile),
                Arg::from(endpoint_id),
            ],
        );
        self.execute_one(stmt, WHAT).await.map_err(|e| match e {
            DataStoreError::AlreadyExists(_) => DataStoreError::AlreadyExists(format!(
                "federation relationship with trust domain {} already exists",
                rel.trust_domain
            )),
            other => other,
        })?;
        Ok(rel)
    }

    async fn get_federation_relationship(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Option<FederationRelationship>> {
        const WHAT: &str = "get federation relationship";
        let mut conn = self.acquire(WHAT).await?;
        let found = fetch_relationships::<DB>(&mut conn, relationship_by_td(trust_domain)).await?;
        Ok(found.into_iter().next())
    }

    async fn list_federation_relationships(
        &self,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<FederationRelationship>, String)> {
        const WHAT: &str = "list federation relationships";
        let mut stmt = Stmt::new(&format!(
            "SELECT {RELATIONSHIP_COLUMNS} FROM federation_relationships WHERE 1 = 1"
        ));
        if !page_token.is_empty() {
            stmt.push(" AND trust_domain > ").bind(page_token);
        }
        stmt.push(" ORDER BY trust_domain");
        let page = usize::try_from(page_size).unwrap_or(usize::MAX);
        if page > 0 {
            // One extra row tells whether another page follows.
            stmt.push(" LIMIT ").bind(i64::from(page_size) + 1);
        }
        let mut conn = self.acquire(WHAT).await?;
        let mut rels = fetch_relationships::<DB>(&mut conn, stmt).await?;
        let mut next_page_token = String::new();
        if page > 0 && rels.len() > page {
            rels.truncate(page);
            if let Some(last) = rels.last() {
                next_page_token = last.trust_domain.name().to_owned();
            }
        }
        Ok((rels, next_page_token))
    }

    async fn update_federation_relationship(
        &self,
        rel: FederationRelationship,
        mask: &FederationRelationshipMask,
    ) -> Result<FederationRelationship> {
        const WHAT: &str = "update federation relationship";
        if mask.bundle_endpoint_url {
            check_relationship_url(&rel.bundle_endpoint_url)?;
        }
        let mut tx = self.begin_write(WHAT).await?;
        let result = Self::update_relationship_in(&mut tx, rel, mask).await;
        finish::<DB, _>(tx, result, WHAT).await
    }

    async fn delete_federation_relationship(&self, trust_domain: &TrustDomain) -> Result<()> {
        let stmt = Stmt::with(
            "DELETE FROM federation_relationships WHERE trust_domain = ?",
            [Arg::from(trust_domain.name())],
        );
        if self
            .execute_one(stmt, "delete federation relationship")
            .await?
            == 0
        {
            return Err(relationship_not_found(trust_domain));
        }
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        const WHAT: &str = "ping";
        let mut conn = self.acquire(WHAT).await?;
        DB::fetch_all(&mut conn, Stmt::new("SELECT 1"))
            .await
            .map_err(|e| map_err::<DB>(WHAT, e))?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

// Single-statement helpers and the bodies of multi-statement writes.
impl<DB: Backend> SqlStore<DB> {
    /// Gets a connection (or a transaction on one) with `get`. After a wait
    /// for a connection timed out, the database is taken to be down and the
    /// next waits are cut to [`UNREACHABLE_WAIT`], so callers hear
    /// `Unavailable` at once; the first connection got lifts the cut. (A pool
    /// busy for the whole acquire timeout is cut the same way until one of
    /// its connections comes free, which sheds load rather than queueing.)
    async fn pooled<T>(
        &self,
        what: &str,
        get: impl Future<Output = std::result::Result<T, sqlx::Error>>,
    ) -> Result<T> {
        let got = if self.unreachable.load(Ordering::Relaxed) {
            tokio::time::timeout(UNREACHABLE_WAIT, get)
                .await
                .unwrap_or(Err(sqlx::Error::PoolTimedOut))
        } else {
            get.await
        };
        match &got {
            Ok(_) => self.unreachable.store(false, Ordering::Relaxed),
            Err(sqlx::Error::PoolTimedOut) => self.unreachable.store(true, Ordering::Relaxed),
            Err(_) => {}
        }
        got.map_err(|e| map_err::<DB>(what, e))
    }

    async fn acquire(&self, what: &str) -> Result<sqlx::pool::PoolConnection<DB>> {
        self.pooled(what, self.pool.acquire()).await
    }

    async fn begin_write(&self, what: &str) -> Result<Transaction<'static, DB>> {
        self.pooled(what, self.pool.begin_with(DB::BEGIN_WRITE))
            .await
    }

    async fn begin_read(&self, what: &str) -> Result<Transaction<'static, DB>> {
        self.pooled(what, self.pool.begin_with(DB::BEGIN_READ))
            .await
    }

    /// Runs one statement outside an explicit transaction; returns rows changed.
    async fn execute_one(&self, stmt: Stmt, what: &str) -> Result<u64> {
        let mut conn = self.acquire(what).await?;
        DB::execute(&mut conn, stmt)
            .await
            .map_err(|e| map_err::<DB>(what, e))
    }

    /// Runs a `SELECT COUNT(*) AS n ...`.
    async fn count(&self, stmt: Stmt, what: &str) -> Result<u64> {
        let n = self.query_int(stmt, what).await?;
        u64::try_from(n).map_err(|_| DataStoreError::Internal(format!("{what}: count is {n}")))
    }

    /// Runs a query returning one integer column `n` in one row.
    async fn query_int(&self, stmt: Stmt, what: &str) -> Result<i64> {
        let mut conn = self.acquire(what).await?;
        let rows = DB::fetch_all(&mut conn, stmt)
            .await
            .map_err(|e| map_err::<DB>(what, e))?;
        match rows.first() {
            Some(row) => DB::int(row, "n").map_err(|e| map_err::<DB>(what, e)),
            None => Err(DataStoreError::Internal(format!("{what}: no result row"))),
        }
    }

    async fn fetch_bundles(&self, stmt: Stmt, what: &str) -> Result<Vec<StoredBundle>> {
        let mut conn = self.acquire(what).await?;
        let rows = DB::fetch_all(&mut conn, stmt)
            .await
            .map_err(|e| map_err::<DB>(what, e))?;
        rows.iter()
            .map(|row| {
                let name = DB::text(row, "trust_domain").map_err(|e| map_err::<DB>(what, e))?;
                let trust_domain = TrustDomain::new(&name).map_err(|e| {
                    DataStoreError::Internal(format!(
                        "stored bundle has invalid trust domain {name:?}: {e}"
                    ))
                })?;
                let data = DB::bytes(row, "data").map_err(|e| map_err::<DB>(what, e))?;
                Ok(StoredBundle { trust_domain, data })
            })
            .collect()
    }

    async fn entries_by_parents_in(
        conn: &mut DB::Connection,
        parent_ids: &[SpiffeId],
    ) -> Result<Vec<RegistrationEntry>> {
        let mut entries = Vec::new();
        for chunk in parent_ids.chunks(PARENTS_PER_QUERY) {
            let mut scope =
                Stmt::new("SELECT e.entry_id FROM registered_entries e WHERE e.parent_id IN ");
            scope.bind_list(chunk.iter().map(SpiffeId::as_str));
            entries.extend(fetch_entries::<DB>(conn, scope).await?);
        }
        // Chunks hold different parents, so no entry appears twice.
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(entries)
    }

    async fn create_entry_in(conn: &mut DB::Connection, entry: &RegistrationEntry) -> Result<()> {
        const WHAT: &str = "create registration entry";
        let key =
            validate::entry_identity_key(&entry.parent_id, &entry.spiffe_id, &entry.selectors);
        // Checked first only for a precise message; the constraints still hold
        // against a concurrent writer.
        if entry_exists::<DB>(conn, &entry.id).await? {
            return Err(DataStoreError::AlreadyExists(format!(
                "registration entry {} already exists",
                entry.id
            )));
        }
        if let Some(other) = entry_with_identity::<DB>(conn, &key, None).await? {
            return Err(duplicate_entry(entry, &other));
        }
        let insert = Stmt::with(
            "INSERT INTO registered_entries (entry_id, spiffe_id, parent_id, x509_svid_ttl, \
             jwt_svid_ttl, admin, downstream, expires_at, hint, store_svid, revision_number, \
             created_at, identity_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                Arg::from(entry.id.as_str()),
                Arg::from(entry.spiffe_id.as_str()),
                Arg::from(entry.parent_id.as_str()),
                Arg::from(entry.x509_svid_ttl),
                Arg::from(entry.jwt_svid_ttl),
                Arg::from(entry.admin),
                Arg::from(entry.downstream),
                Arg::from(entry.expires_at),
                Arg::from(entry.hint.as_str()),
                Arg::from(entry.store_svid),
                Arg::from(entry.revision_number),
                Arg::from(entry.created_at),
                Arg::from(key),
            ],
        );
        DB::execute(conn, insert)
            .await
            .map_err(|e| map_err::<DB>(WHAT, e))?;
        insert_entry_selectors::<DB>(conn, &entry.id, &entry.selectors).await?;
        insert_entry_dns_names::<DB>(conn, &entry.id, &entry.dns_names).await?;
        insert_entry_federates_with::<DB>(conn, &entry.id, &entry.federates_with).await?;
        record_entry_events::<DB>(conn, std::slice::from_ref(&entry.id)).await
    }

    async fn update_entry_in(
        conn: &mut DB::Connection,
        entry: RegistrationEntry,
        mask: &EntryMask,
    ) -> Result<RegistrationEntry> {
        const WHAT: &str = "update registration entry";
        // Bumping first locks the row, so concurrent updates of one entry
        // apply one after the other, each on the other's result.
        let bumped = DB::execute(
            conn,
            Stmt::with(
                "UPDATE registered_entries SET revision_number = revision_number + 1 \
                 WHERE entry_id = ?",
                [Arg::from(entry.id.as_str())],
            ),
        )
        .await
        .map_err(|e| map_err::<DB>(WHAT, e))?;
        if bumped == 0 {
            return Err(entry_not_found(&entry.id));
        }
        let current = fetch_entries::<DB>(conn, entry_scope_by_id(&entry.id))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| entry_not_found(&entry.id))?;
        let merged = apply_entry_mask(current, entry, mask);
        validate::check_entry(&merged)?;
        let key =
            validate::entry_identity_key(&merged.parent_id, &merged.spiffe_id, &merged.selectors);
        if let Some(other) = entry_with_identity::<DB>(conn, &key, Some(&merged.id)).await? {
            return Err(duplicate_entry(&merged, &other));
        }
        let update = Stmt::with(
            "UPDATE registered_entries SET spiffe_id = ?, parent_id = ?, x509_svid_ttl = ?, \
             jwt_svid_ttl = ?, admin = ?, downstream = ?, expires_at = ?, hint = ?, \
             store_svid = ?, identity_key = ? WHERE entry_id = ?",
            [
                Arg::from(merged.spiffe_id.as_str()),
                Arg::from(merged.parent_id.as_str()),
                Arg::from(merged.x509_svid_ttl),
                Arg::from(merged.jwt_svid_ttl),
                Arg::from(merged.admin),
                Arg::from(merged.downstream),
                Arg::from(merged.expires_at),
                Arg::from(merged.hint.as_str()),
                Arg::from(merged.store_svid),
                Arg::from(key),
                Arg::from(merged.id.as_str()),
            ],
        );
        DB::execute(conn, update)
            .await
            .map_err(|e| map_err::<DB>(WHAT, e))?;
        if mask.selectors {
            delete_children::<DB>(conn, "entry_selectors", &merged.id).await?;
            insert_entry_selectors::<DB>(conn, &merged.id, &merged.selectors).await?;
        }
        if mask.dns_names {
            delete_children::<DB>(conn, "entry_dns_names", &merged.id).await?;
            insert_entry_dns_names::<DB>(conn, &merged.id, &merged.dns_names).await?;
        }
        if mask.federates_with {
            delete_children::<DB>(conn, "entry_federates_with", &merged.id).await?;
            insert_entry_federates_with::<DB>(conn, &merged.id, &merged.federates_with).await?;
        }
        record_entry_events::<DB>(conn, std::slice::from_ref(&merged.id)).await?;
        Ok(merged)
    }

    async fn delete_entry_in(conn: &mut DB::Connection, id: &str) -> Result<RegistrationEntry> {
        const WHAT: &str = "delete registration entry";
        // Lock the row first so the entry returned is the one deleted, not a
        // mix of it and a concurrent update.
        let locked = DB::execute(
            conn,
            Stmt::with(
                "UPDATE registered_entries SET revision_number = revision_number \
                 WHERE entry_id = ?",
                [Arg::from(id)],
            ),
        )
        .await
        .map_err(|e| map_err::<DB>(WHAT, e))?;
        if locked == 0 {
            return Err(entry_not_found(id));
        }
        let entry = fetch_entries::<DB>(conn, entry_scope_by_id(id))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| entry_not_found(id))?;
        // Child rows go with it (ON DELETE CASCADE).
        DB::execute(
            conn,
            Stmt::with(
                "DELETE FROM registered_entries WHERE entry_id = ?",
                [Arg::from(id)],
            ),
        )
        .await
        .map_err(|e| map_err::<DB>(WHAT, e))?;
        record_entry_events::<DB>(conn, std::slice::from_ref(&entry.id)).await?;
        Ok(entry)
    }

    async fn prune_entries_in(
        conn: &mut DB::Connection,
        expires_before: i64,
        limit: u32,
    ) -> Result<u64> {
        const WHAT: &str = "prune registration entries";
        let rows = DB::fetch_all(
            conn,
            Stmt::with(
                "SELECT entry_id FROM registered_entries WHERE expires_at <> 0 AND expires_at < ? \
                 ORDER BY expires_at, entry_id LIMIT ?",
                [Arg::from(expires_before), Arg::from(i64::from(limit))],
            ),
        )
        .await
        .map_err(|e| map_err::<DB>(WHAT, e))?;
        let ids = rows
            .iter()
            .map(|row| DB::text(row, "entry_id").map_err(|e| map_err::<DB>(WHAT, e)))
            .collect::<Result<Vec<String>>>()?;
        if ids.is_empty() {
            return Ok(0);
        }
        let mut delete = Stmt::new("DELETE FROM registered_entries WHERE entry_id IN ");
        delete.bind_list(ids.iter().map(String::as_str));
        let deleted = DB::execute(conn, delete)
            .await
            .map_err(|e| map_err::<DB>(WHAT, e))?;
        record_entry_events::<DB>(conn, &ids).await?;
        Ok(deleted)
    }

    async fn prune_nodes_in(
        conn: &mut DB::Connection,
        expired_before: i64,
        include_non_reattestable: bool,
        limit: u32,
    ) -> Result<Vec<SpiffeId>> {
        const WHAT: &str = "prune attested nodes";
        // Banned: both serial numbers empty (see `AttestedNode::is_banned`).
        let mut select = Stmt::new("SELECT spiffe_id FROM attested_nodes WHERE cert_not_after < ");
        select
            .bind(expired_before)
            .push(" AND NOT (cert_serial_number = '' AND new_cert_serial_number = '')");
        if !include_non_reattestable {
            select.push(" AND can_reattest = ").bind(true);
        }
        select
            .push(" ORDER BY cert_not_after, spiffe_id LIMIT ")
            .bind(i64::from(limit));
        let rows = DB::fetch_all(conn, select)
            .await
            .map_err(|e| map_err::<DB>(WHAT, e))?;
        let mut pruned = Vec::with_capacity(rows.len());
        for row in &rows {
            let id = DB::text(row, "spiffe_id").map_err(|e| map_err::<DB>(WHAT, e))?;
            let id = parse_stored_id(&id, "attested node", &id)?;
            Self::delete_node_in(conn, &id).await?;
            pruned.push(id);
        }
        Ok(pruned)
    }

    async fn create_node_in(conn: &mut DB::Connection, node: &AttestedNode) -> Result<()> {
        const WHAT: &str = "create attested node";
        let insert = Stmt::with(
            "INSERT INTO attested_nodes (spiffe_id, attestation_data_type, cert_serial_number, \
             cert_not_after, new_cert_serial_number, new_cert_not_after, can_reattest) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                Arg::from(node.spiffe_id.as_str()),
                Arg::from(node.attestation_data_type.as_str()),
                Arg::from(node.cert_serial_number.as_str()),
                Arg::from(node.cert_not_after),
                Arg::from(node.new_cert_serial_number.as_str()),
                Arg::from(node.new_cert_not_after),
                Arg::from(node.can_reattest),
            ],
        );
        DB::execute(conn, insert)
            .await
            .map_err(|e| match map_err::<DB>(WHAT, e) {
                DataStoreError::AlreadyExists(_) => DataStoreError::AlreadyExists(format!(
                    "attested node {} already exists",
                    node.spiffe_id
                )),
                other => other,
            })?;
        replace_node_selectors::<DB>(conn, &node.spiffe_id, &node.selectors).await?;
        record_node_event::<DB>(conn, &node.spiffe_id).await
    }

    async fn attest_node_in(
        conn: &mut DB::Connection,
        node: AttestedNode,
        join_token: Option<&str>,
    ) -> Result<AttestedNode> {
        const WHAT: &str = "record node attestation";
        if let Some(token) = join_token {
            // Deleting is the claim: of concurrent attestations with one
            // token, only the first deletes a row (the others wait for it on
            // PostgreSQL, or run after it on SQLite, and find none).
            let spent = DB::execute(
                conn,
                Stmt::with(
                    "DELETE FROM join_tokens WHERE token = ?",
                    [Arg::from(token)],
                ),
            )
            .await
            .map_err(|e| map_err::<DB>(WHAT, e))?;
            if spent == 0 {
                return Err(DataStoreError::NotFound(
                    "join token does not exist or has already been used".into(),
                ));
            }
        }
        replace_node_selectors::<DB>(conn, &node.spiffe_id, &node.selectors).await?;
        let id = node.spiffe_id.clone();
        let selectors = node.selectors.clone();
        if let Some(mut stored) = Self::update_node_in(
            conn,
            node.clone(),
            &NodeMask::all(),
            NodeCondition::NotBanned,
        )
        .await?
        {
            stored.selectors = selectors;
            return Ok(stored);
        }
        // Not updated: either there is no such node yet, or it is banned.
        let existing = fetch_nodes::<DB>(conn, node_scope_by_id(&id)).await?;
        if existing.iter().any(AttestedNode::is_banned) {
            return Err(DataStoreError::FailedPrecondition(format!(
                "attested node {id} is banned"
            )));
        }
        Self::create_node_in(conn, &node).await?;
        Ok(node)
    }

    /// Updates the masked fields where `condition` holds; `None` when no row
    /// matched (the node is gone, or the condition failed).
    async fn update_node_in(
        conn: &mut DB::Connection,
        node: AttestedNode,
        mask: &NodeMask,
        condition: NodeCondition<'_>,
    ) -> Result<Option<AttestedNode>> {
        const WHAT: &str = "update attested node";
        let mut update = Stmt::new("UPDATE attested_nodes SET ");
        // Rewriting the key to itself keeps the statement valid (and the row
        // locked) when the mask is empty.
        update.push("spiffe_id = ").bind(node.spiffe_id.as_str());
        if mask.attestation_data_type {
            update
                .push(", attestation_data_type = ")
                .bind(node.attestation_data_type.as_str());
        }
        if mask.cert_serial_number {
            update
                .push(", cert_serial_number = ")
                .bind(node.cert_serial_number.as_str());
        }
        if mask.cert_not_after {
            update.push(", cert_not_after = ").bind(node.cert_not_after);
        }
        if mask.new_cert_serial_number {
            update
                .push(", new_cert_serial_number = ")
                .bind(node.new_cert_serial_number.as_str());
        }
        if mask.new_cert_not_after {
            update
                .push(", new_cert_not_after = ")
                .bind(node.new_cert_not_after);
        }
        if mask.can_reattest {
            update.push(", can_reattest = ").bind(node.can_reattest);
        }
        update
            .push(" WHERE spiffe_id = ")
            .bind(node.spiffe_id.as_str());
        match condition {
            NodeCondition::Any => {}
            NodeCondition::NotBanned => {
                update.push(NOT_BANNED);
            }
            NodeCondition::Serials(expected) => {
                update
                    .push(" AND cert_serial_number = ")
                    .bind(expected.cert_serial_number.as_str())
                    .push(" AND new_cert_serial_number = ")
                    .bind(expected.new_cert_serial_number.as_str())
                    .push(NOT_BANNED);
            }
        }
        let changed = DB::execute(conn, update)
            .await
            .map_err(|e| map_err::<DB>(WHAT, e))?;
        if changed == 0 {
            return Ok(None);
        }
        let stored = fetch_nodes::<DB>(conn, node_scope_by_id(&node.spiffe_id))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| node_not_found(&node.spiffe_id))?;
        record_node_event::<DB>(conn, &node.spiffe_id).await?;
        Ok(Some(stored))
    }

    async fn delete_node_in(
        conn: &mut DB::Connection,
        spiffe_id: &SpiffeId,
    ) -> Result<AttestedNode> {
        const WHAT: &str = "delete attested node";
        let node = fetch_nodes::<DB>(conn, node_scope_by_id(spiffe_id))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| node_not_found(spiffe_id))?;
        DB::execute(
            conn,
            Stmt::with(
                "DELETE FROM attested_nodes WHERE spiffe_id = ?",
                [Arg::from(spiffe_id.as_str())],
            ),
        )
        .await
        .map_err(|e| map_err::<DB>(WHAT, e))?;
        replace_node_selectors::<DB>(conn, spiffe_id, &[]).await?;
        record_node_event::<DB>(conn, spiffe_id).await?;
        Ok(node)
    }

    async fn update_relationship_in(
        conn: &mut DB::Connection,
        rel: FederationRelationship,
        mask: &FederationRelationshipMask,
    ) -> Result<FederationRelationship> {
        const WHAT: &str = "update federation relationship";
        let mut update = Stmt::new("UPDATE federation_relationships SET ");
        // Rewriting the key to itself keeps the statement valid (and the row
        // locked) when the mask is empty.
        update.push("trust_domain = ").bind(rel.trust_domain.name());
        if mask.bundle_endpoint_url {
            update
                .push(", bundle_endpoint_url = ")
                .bind(rel.bundle_endpoint_url.as_str());
        }
        if mask.profile {
            let (profile, endpoint_id) = profile_columns(&rel.profile);
            update
                .push(", bundle_endpoint_profile = ")
                .bind(profile)
                .push(", endpoint_spiffe_id = ")
                .bind(endpoint_id);
        }
        update
            .push(" WHERE trust_domain = ")
            .bind(rel.trust_domain.name());
        let changed = DB::execute(conn, update)
            .await
            .map_err(|e| map_err::<DB>(WHAT, e))?;
        if changed == 0 {
            return Err(relationship_not_found(&rel.trust_domain));
        }
        fetch_relationships::<DB>(conn, relationship_by_td(&rel.trust_domain))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| relationship_not_found(&rel.trust_domain))
    }

    async fn set_node_selectors_in(
        conn: &mut DB::Connection,
        spiffe_id: &SpiffeId,
        selectors: &[Selector],
    ) -> Result<()> {
        replace_node_selectors::<DB>(conn, spiffe_id, selectors).await?;
        record_node_event::<DB>(conn, spiffe_id).await
    }
}

/// Which stored state a node update requires.
#[derive(Debug, Clone, Copy)]
enum NodeCondition<'a> {
    /// Whatever is stored.
    Any,
    /// The node is not banned.
    NotBanned,
    /// The node is not banned and still has these serial numbers.
    Serials(&'a NodeSerials),
}

/// Appended to a node UPDATE's WHERE clause: a banned node (both serial
/// numbers empty) is left alone.
const NOT_BANNED: &str = " AND NOT (cert_serial_number = '' AND new_cert_serial_number = '')";

async fn insert_join_token<DB: Backend>(
    conn: &mut DB::Connection,
    token: &JoinToken,
) -> Result<()> {
    const WHAT: &str = "create join token";
    let stmt = Stmt::with(
        "INSERT INTO join_tokens (token, expires_at) VALUES (?, ?)",
        [Arg::from(token.token.as_str()), Arg::from(token.expires_at)],
    );
    DB::execute(conn, stmt)
        .await
        .map_err(|e| match map_err::<DB>(WHAT, e) {
            // The message would carry the secret value; say only what happened.
            DataStoreError::AlreadyExists(_) => {
                DataStoreError::AlreadyExists("join token already exists".into())
            }
            other => other,
        })?;
    Ok(())
}

fn read_join_token<DB: Backend>(row: &DB::Row, what: &str) -> Result<JoinToken> {
    Ok(JoinToken {
        token: DB::text(row, "token").map_err(|e| map_err::<DB>(what, e))?,
        expires_at: DB::int(row, "expires_at").map_err(|e| map_err::<DB>(what, e))?,
    })
}

/// Commits on success and rolls back on failure, returning the operation's
/// result (or the commit's failure).
async fn finish<DB: Backend, T>(
    tx: Transaction<'static, DB>,
    result: Result<T>,
    what: &str,
) -> Result<T> {
    match result {
        Ok(value) => {
            tx.commit().await.map_err(|e| map_err::<DB>(what, e))?;
            Ok(value)
        }
        Err(err) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(operation = what, error = %rollback, "rollback failed");
            }
            Err(err)
        }
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn entry_not_found(id: &str) -> DataStoreError {
    DataStoreError::NotFound(format!("registration entry {id} does not exist"))
}

fn node_not_found(id: &SpiffeId) -> DataStoreError {
    DataStoreError::NotFound(format!("attested node {id} does not exist"))
}

fn relationship_not_found(td: &TrustDomain) -> DataStoreError {
    DataStoreError::NotFound(format!(
        "federation relationship with trust domain {td} does not exist"
    ))
}

fn check_relationship_url(url: &str) -> Result<()> {
    if url.is_empty() {
        return Err(invalid("bundle endpoint URL is required"));
    }
    Ok(())
}

const PROFILE_HTTPS_WEB: &str = "https_web";
const PROFILE_HTTPS_SPIFFE: &str = "https_spiffe";

/// The stored `(bundle_endpoint_profile, endpoint_spiffe_id)` of a profile.
fn profile_columns(profile: &BundleEndpointProfile) -> (&'static str, String) {
    match profile {
        BundleEndpointProfile::HttpsWeb => (PROFILE_HTTPS_WEB, String::new()),
        BundleEndpointProfile::HttpsSpiffe { endpoint_spiffe_id } => {
            (PROFILE_HTTPS_SPIFFE, endpoint_spiffe_id.as_str().to_owned())
        }
    }
}

fn relationship_by_td(td: &TrustDomain) -> Stmt {
    Stmt::with(
        &format!(
            "SELECT {RELATIONSHIP_COLUMNS} FROM federation_relationships WHERE trust_domain = ?"
        ),
        [Arg::from(td.name())],
    )
}

/// Runs a query selecting [`RELATIONSHIP_COLUMNS`] and reads its rows.
async fn fetch_relationships<DB: Backend>(
    conn: &mut DB::Connection,
    stmt: Stmt,
) -> Result<Vec<FederationRelationship>> {
    const WHAT: &str = "read federation relationships";
    let err = |e| map_err::<DB>(WHAT, e);
    let rows = DB::fetch_all(conn, stmt).await.map_err(err)?;
    rows.iter()
        .map(|row| {
            let name = DB::text(row, "trust_domain").map_err(err)?;
            let trust_domain = TrustDomain::new(&name).map_err(|e| {
                DataStoreError::Internal(format!(
                    "stored federation relationship has invalid trust domain {name:?}: {e}"
                ))
            })?;
            let kind = DB::text(row, "bundle_endpoint_profile").map_err(err)?;
            let profile = match kind.as_str() {
                PROFILE_HTTPS_WEB => BundleEndpointProfile::HttpsWeb,
                PROFILE_HTTPS_SPIFFE => BundleEndpointProfile::HttpsSpiffe {
                    endpoint_spiffe_id: parse_stored_id(
                        &DB::text(row, "endpoint_spiffe_id").map_err(err)?,
                        "federation relationship",
                        &name,
                    )?,
                },
                other => {
                    return Err(DataStoreError::Internal(format!(
                        "stored federation relationship {name} has unknown bundle endpoint \
                         profile {other:?}"
                    )));
                }
            };
            Ok(FederationRelationship {
                trust_domain,
                bundle_endpoint_url: DB::text(row, "bundle_endpoint_url").map_err(err)?,
                profile,
            })
        })
        .collect()
}

fn duplicate_entry(entry: &RegistrationEntry, other: &str) -> DataStoreError {
    DataStoreError::AlreadyExists(format!(
        "registration entry {other} already has parent ID {}, SPIFFE ID {} and the same selectors",
        entry.parent_id, entry.spiffe_id
    ))
}

/// The stored entry with the fields chosen by `mask` taken from `update`.
fn apply_entry_mask(
    current: RegistrationEntry,
    update: RegistrationEntry,
    mask: &EntryMask,
) -> RegistrationEntry {
    let mut merged = current;
    if mask.spiffe_id {
        merged.spiffe_id = update.spiffe_id;
    }
    if mask.parent_id {
        merged.parent_id = update.parent_id;
    }
    if mask.selectors {
        merged.selectors = update.selectors;
    }
    if mask.x509_svid_ttl {
        merged.x509_svid_ttl = update.x509_svid_ttl;
    }
    if mask.jwt_svid_ttl {
        merged.jwt_svid_ttl = update.jwt_svid_ttl;
    }
    if mask.dns_names {
        merged.dns_names = update.dns_names;
    }
    if mask.federates_with {
        merged.federates_with = update.federates_with;
    }
    if mask.admin {
        merged.admin = update.admin;
    }
    if mask.downstream {
        merged.downstream = update.downstream;
    }
    if mask.expires_at {
        merged.expires_at = update.expires_at;
    }
    if mask.hint {
        merged.hint = update.hint;
    }
    if mask.store_svid {
        merged.store_svid = update.store_svid;
    }
    merged
}

/// `<prefix>(?, ?, ...)` scopes over `ids`, [`PARENTS_PER_QUERY`] at a time.
fn in_list_scopes<'a>(prefix: &str, ids: impl Iterator<Item = &'a str>) -> Vec<Stmt> {
    let ids: Vec<&str> = ids.collect();
    ids.chunks(PARENTS_PER_QUERY)
        .map(|chunk| {
            let mut scope = Stmt::new(prefix);
            scope.bind_list(chunk.iter().copied());
            scope
        })
        .collect()
}

fn entry_scope_by_id(id: &str) -> Stmt {
    Stmt::with(
        "SELECT e.entry_id FROM registered_entries e WHERE e.entry_id = ?",
        [Arg::from(id)],
    )
}

fn node_scope_by_id(id: &SpiffeId) -> Stmt {
    Stmt::with(
        "SELECT n.spiffe_id FROM attested_nodes n WHERE n.spiffe_id = ?",
        [Arg::from(id.as_str())],
    )
}

/// `SELECT <columns> FROM <table> JOIN (<scope>) p ON p.<key> = <alias>.<key>
/// ORDER BY <order>`: the rows of `table` belonging to the records `scope`
/// selects. A derived table (not `IN`) because the scope may carry a LIMIT.
fn scoped(columns: &str, table: &str, key: &str, scope: &Stmt, order: &str) -> Stmt {
    let mut stmt = Stmt::new(&format!("SELECT {columns} FROM {table} JOIN ("));
    stmt.append(scope.clone());
    stmt.push(&format!(
        ") p ON p.{key} = {} ORDER BY {order}",
        key_of(table, key)
    ));
    stmt
}

/// `alias.key` for a `table alias` clause.
fn key_of(table: &str, key: &str) -> String {
    let alias = table.rsplit(' ').next().unwrap_or(table);
    format!("{alias}.{key}")
}

/// Loads the entries `scope` selects (a statement yielding an `entry_id`
/// column), with their selectors, DNS names and federated trust domains, in
/// entry ID order.
async fn fetch_entries<DB: Backend>(
    conn: &mut DB::Connection,
    scope: Stmt,
) -> Result<Vec<RegistrationEntry>> {
    const WHAT: &str = "read registration entries";
    let err = |e| map_err::<DB>(WHAT, e);

    let rows = DB::fetch_all(
        conn,
        scoped(
            ENTRY_COLUMNS,
            "registered_entries e0",
            "entry_id",
            &scope,
            "e0.entry_id",
        ),
    )
    .await
    .map_err(err)?;
    let mut entries = Vec::with_capacity(rows.len());
    let mut index = HashMap::with_capacity(rows.len());
    for row in &rows {
        let id = DB::text(row, "entry_id").map_err(err)?;
        let spiffe_id = parse_stored_id(&DB::text(row, "spiffe_id").map_err(err)?, "entry", &id)?;
        let parent_id = parse_stored_id(&DB::text(row, "parent_id").map_err(err)?, "entry", &id)?;
        index.insert(id.clone(), entries.len());
        entries.push(RegistrationEntry {
            spiffe_id,
            parent_id,
            selectors: Vec::new(),
            x509_svid_ttl: DB::int32(row, "x509_svid_ttl").map_err(err)?,
            jwt_svid_ttl: DB::int32(row, "jwt_svid_ttl").map_err(err)?,
            dns_names: Vec::new(),
            federates_with: Vec::new(),
            admin: DB::boolean(row, "admin").map_err(err)?,
            downstream: DB::boolean(row, "downstream").map_err(err)?,
            expires_at: DB::int(row, "expires_at").map_err(err)?,
            hint: DB::text(row, "hint").map_err(err)?,
            store_svid: DB::boolean(row, "store_svid").map_err(err)?,
            revision_number: DB::int(row, "revision_number").map_err(err)?,
            created_at: DB::int(row, "created_at").map_err(err)?,
            id,
        });
    }
    if entries.is_empty() {
        return Ok(entries);
    }

    let rows = DB::fetch_all(
        conn,
        scoped(
            "c.entry_id, c.selector_type, c.selector_value",
            "entry_selectors c",
            "entry_id",
            &scope,
            "c.entry_id, c.position",
        ),
    )
    .await
    .map_err(err)?;
    for row in &rows {
        let id = DB::text(row, "entry_id").map_err(err)?;
        if let Some(&i) = index.get(&id) {
            entries[i]
                .selectors
                .push(read_selector::<DB>(row, "entry", &id)?);
        }
    }

    let rows = DB::fetch_all(
        conn,
        scoped(
            "c.entry_id, c.dns_name",
            "entry_dns_names c",
            "entry_id",
            &scope,
            "c.entry_id, c.position",
        ),
    )
    .await
    .map_err(err)?;
    for row in &rows {
        let id = DB::text(row, "entry_id").map_err(err)?;
        if let Some(&i) = index.get(&id) {
            entries[i]
                .dns_names
                .push(DB::text(row, "dns_name").map_err(err)?);
        }
    }

    let rows = DB::fetch_all(
        conn,
        scoped(
            "c.entry_id, c.trust_domain",
            "entry_federates_with c",
            "entry_id",
            &scope,
            "c.entry_id, c.position",
        ),
    )
    .await
    .map_err(err)?;
    for row in &rows {
        let id = DB::text(row, "entry_id").map_err(err)?;
        if let Some(&i) = index.get(&id) {
            let name = DB::text(row, "trust_domain").map_err(err)?;
            let td = TrustDomain::new(&name).map_err(|e| {
                DataStoreError::Internal(format!(
                    "stored entry {id} has invalid federated trust domain {name:?}: {e}"
                ))
            })?;
            entries[i].federates_with.push(td);
        }
    }
    Ok(entries)
}

/// Loads the nodes `scope` selects (a statement yielding a `spiffe_id`
/// column), with their selectors, in SPIFFE ID order.
async fn fetch_nodes<DB: Backend>(
    conn: &mut DB::Connection,
    scope: Stmt,
) -> Result<Vec<AttestedNode>> {
    const WHAT: &str = "read attested nodes";
    let err = |e| map_err::<DB>(WHAT, e);

    let rows = DB::fetch_all(
        conn,
        scoped(
            NODE_COLUMNS,
            "attested_nodes n0",
            "spiffe_id",
            &scope,
            "n0.spiffe_id",
        ),
    )
    .await
    .map_err(err)?;
    let mut nodes = Vec::with_capacity(rows.len());
    let mut index = HashMap::with_capacity(rows.len());
    for row in &rows {
        let raw = DB::text(row, "spiffe_id").map_err(err)?;
        let spiffe_id = parse_stored_id(&raw, "node", &raw)?;
        index.insert(raw, nodes.len());
        nodes.push(AttestedNode {
            spiffe_id,
            attestation_data_type: DB::text(row, "attestation_data_type").map_err(err)?,
            cert_serial_number: DB::text(row, "cert_serial_number").map_err(err)?,
            cert_not_after: DB::int(row, "cert_not_after").map_err(err)?,
            new_cert_serial_number: DB::text(row, "new_cert_serial_number").map_err(err)?,
            new_cert_not_after: DB::int(row, "new_cert_not_after").map_err(err)?,
            can_reattest: DB::boolean(row, "can_reattest").map_err(err)?,
            selectors: Vec::new(),
        });
    }
    if nodes.is_empty() {
        return Ok(nodes);
    }
    let rows = DB::fetch_all(
        conn,
        scoped(
            "c.spiffe_id, c.selector_type, c.selector_value",
            "node_selectors c",
            "spiffe_id",
            &scope,
            "c.spiffe_id, c.position",
        ),
    )
    .await
    .map_err(err)?;
    for row in &rows {
        let id = DB::text(row, "spiffe_id").map_err(err)?;
        if let Some(&i) = index.get(&id) {
            nodes[i]
                .selectors
                .push(read_selector::<DB>(row, "node", &id)?);
        }
    }
    Ok(nodes)
}

fn read_selector<DB: Backend>(row: &DB::Row, owner_kind: &str, owner: &str) -> Result<Selector> {
    const WHAT: &str = "read selectors";
    let kind = DB::text(row, "selector_type").map_err(|e| map_err::<DB>(WHAT, e))?;
    let value = DB::text(row, "selector_value").map_err(|e| map_err::<DB>(WHAT, e))?;
    Selector::new(&kind, &value).map_err(|e| {
        DataStoreError::Internal(format!(
            "stored {owner_kind} {owner} has an invalid selector: {e}"
        ))
    })
}

fn parse_stored_id(raw: &str, owner_kind: &str, owner: &str) -> Result<SpiffeId> {
    SpiffeId::parse(raw).map_err(|e| {
        DataStoreError::Internal(format!(
            "stored {owner_kind} {owner} has invalid SPIFFE ID {raw:?}: {e}"
        ))
    })
}

async fn entry_exists<DB: Backend>(conn: &mut DB::Connection, id: &str) -> Result<bool> {
    let rows = DB::fetch_all(
        conn,
        Stmt::with(
            "SELECT entry_id FROM registered_entries WHERE entry_id = ?",
            [Arg::from(id)],
        ),
    )
    .await
    .map_err(|e| map_err::<DB>("look up registration entry", e))?;
    Ok(!rows.is_empty())
}

/// The ID of an entry (other than `except`) with this identity key.
async fn entry_with_identity<DB: Backend>(
    conn: &mut DB::Connection,
    key: &str,
    except: Option<&str>,
) -> Result<Option<String>> {
    const WHAT: &str = "look up duplicate registration entry";
    let mut stmt = Stmt::new("SELECT entry_id FROM registered_entries WHERE identity_key = ");
    stmt.bind(key);
    if let Some(id) = except {
        stmt.push(" AND entry_id <> ").bind(id);
    }
    let rows = DB::fetch_all(conn, stmt)
        .await
        .map_err(|e| map_err::<DB>(WHAT, e))?;
    rows.first()
        .map(|row| DB::text(row, "entry_id").map_err(|e| map_err::<DB>(WHAT, e)))
        .transpose()
}

async fn delete_children<DB: Backend>(
    conn: &mut DB::Connection,
    table: &str,
    entry_id: &str,
) -> Result<()> {
    DB::execute(
        conn,
        Stmt::with(
            &format!("DELETE FROM {table} WHERE entry_id = ?"),
            [Arg::from(entry_id)],
        ),
    )
    .await
    .map_err(|e| map_err::<DB>("replace registration entry details", e))?;
    Ok(())
}

/// Multi-row INSERT of `rows` into `table (columns)`, in chunks.
async fn insert_rows<DB: Backend>(
    conn: &mut DB::Connection,
    table_and_columns: &str,
    rows: Vec<Vec<Arg>>,
    what: &str,
) -> Result<()> {
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let mut stmt = Stmt::new(&format!("INSERT INTO {table_and_columns} VALUES "));
        for (i, row) in rows.by_ref().take(ROWS_PER_INSERT).enumerate() {
            if i > 0 {
                stmt.push(", ");
            }
            stmt.bind_list(row);
        }
        DB::execute(conn, stmt)
            .await
            .map_err(|e| map_err::<DB>(what, e))?;
    }
    Ok(())
}

fn position(i: usize) -> Arg {
    Arg::from(i32::try_from(i).unwrap_or(i32::MAX))
}

async fn insert_entry_selectors<DB: Backend>(
    conn: &mut DB::Connection,
    entry_id: &str,
    selectors: &[Selector],
) -> Result<()> {
    let rows = selectors
        .iter()
        .enumerate()
        .map(|(i, s)| {
            vec![
                Arg::from(entry_id),
                position(i),
                Arg::from(s.kind()),
                Arg::from(s.value()),
            ]
        })
        .collect();
    insert_rows::<DB>(
        conn,
        "entry_selectors (entry_id, position, selector_type, selector_value)",
        rows,
        "store entry selectors",
    )
    .await
}

async fn insert_entry_dns_names<DB: Backend>(
    conn: &mut DB::Connection,
    entry_id: &str,
    dns_names: &[String],
) -> Result<()> {
    let rows = dns_names
        .iter()
        .enumerate()
        .map(|(i, name)| vec![Arg::from(entry_id), position(i), Arg::from(name.as_str())])
        .collect();
    insert_rows::<DB>(
        conn,
        "entry_dns_names (entry_id, position, dns_name)",
        rows,
        "store entry DNS names",
    )
    .await
}

async fn insert_entry_federates_with<DB: Backend>(
    conn: &mut DB::Connection,
    entry_id: &str,
    domains: &[TrustDomain],
) -> Result<()> {
    let rows = domains
        .iter()
        .enumerate()
        .map(|(i, td)| vec![Arg::from(entry_id), position(i), Arg::from(td.name())])
        .collect();
    insert_rows::<DB>(
        conn,
        "entry_federates_with (entry_id, position, trust_domain)",
        rows,
        "store entry federated trust domains",
    )
    .await
}

async fn replace_node_selectors<DB: Backend>(
    conn: &mut DB::Connection,
    spiffe_id: &SpiffeId,
    selectors: &[Selector],
) -> Result<()> {
    const WHAT: &str = "store node selectors";
    DB::execute(
        conn,
        Stmt::with(
            "DELETE FROM node_selectors WHERE spiffe_id = ?",
            [Arg::from(spiffe_id.as_str())],
        ),
    )
    .await
    .map_err(|e| map_err::<DB>(WHAT, e))?;
    let rows = selectors
        .iter()
        .enumerate()
        .map(|(i, s)| {
            vec![
                Arg::from(spiffe_id.as_str()),
                position(i),
                Arg::from(s.kind()),
                Arg::from(s.value()),
            ]
        })
        .collect();
    insert_rows::<DB>(
        conn,
        "node_selectors (spiffe_id, position, selector_type, selector_value)",
        rows,
        WHAT,
    )
    .await
}

/// Appends entry change events; the last statements of their transaction.
async fn record_entry_events<DB: Backend>(conn: &mut DB::Connection, ids: &[String]) -> Result<()> {
    const WHAT: &str = "record entry event";
    if let Some(lock) = DB::LOCK_ENTRY_EVENTS {
        DB::execute(conn, Stmt::new(lock))
            .await
            .map_err(|e| map_err::<DB>(WHAT, e))?;
    }
    let now = now_unix();
    let rows = ids
        .iter()
        .map(|id| vec![Arg::from(id.as_str()), Arg::from(now)])
        .collect();
    insert_rows::<DB>(conn, "entry_events (entry_id, created_at)", rows, WHAT).await
}

/// Deletes at most `limit` rows of an event table older than `older_than`,
/// oldest first. `DELETE ... LIMIT` is not portable; a keyed subquery is.
fn prune_events_stmt(table: &'static str, older_than: i64, limit: u32) -> Stmt {
    let mut stmt = Stmt::new(&format!(
        "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE created_at < "
    ));
    stmt.bind(older_than)
        .push(" ORDER BY id LIMIT ")
        .bind(i64::from(limit))
        .push(")");
    stmt
}

/// Appends a node change event; the last statements of its transaction.
async fn record_node_event<DB: Backend>(conn: &mut DB::Connection, id: &SpiffeId) -> Result<()> {
    const WHAT: &str = "record node event";
    if let Some(lock) = DB::LOCK_NODE_EVENTS {
        DB::execute(conn, Stmt::new(lock))
            .await
            .map_err(|e| map_err::<DB>(WHAT, e))?;
    }
    DB::execute(
        conn,
        Stmt::with(
            "INSERT INTO node_events (spiffe_id, created_at) VALUES (?, ?)",
            [Arg::from(id.as_str()), Arg::from(now_unix())],
        ),
    )
    .await
    .map_err(|e| map_err::<DB>(WHAT, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Instant;

    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

    use super::*;

    /// Nothing listens on the port (bound, then released), as when
    /// PostgreSQL is stopped: connections are refused.
    fn refused_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn calls_during_a_database_outage_answer_unavailable_without_waiting_the_acquire_timeout()
    {
        let acquire_timeout = Duration::from_secs(4);
        let pool = PgPoolOptions::new()
            .acquire_timeout(acquire_timeout)
            .connect_lazy_with(
                PgConnectOptions::new()
                    .host("127.0.0.1")
                    .port(refused_port())
                    .username("nobody"),
            );
        let store = SqlStore::new(pool);
        // The first call cannot know the database is down: it waits.
        let first = store.get_join_token("t").await;
        assert!(
            matches!(first, Err(DataStoreError::Unavailable(_))),
            "{first:?}"
        );
        // The next ones answer Unavailable at once.
        for _ in 0..3 {
            let started = Instant::now();
            let next = store.get_join_token("t").await;
            assert!(
                matches!(next, Err(DataStoreError::Unavailable(_))),
                "{next:?}"
            );
            assert!(
                started.elapsed() < acquire_timeout / 2,
                "a call during the outage took {:?}",
                started.elapsed()
            );
        }
    }
}
