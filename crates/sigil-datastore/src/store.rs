//! The `DataStore` trait: everything the server persists, behind one object-safe
//! interface so the server holds an `Arc<dyn DataStore>` and tests can hand it
//! any implementation.

use async_trait::async_trait;
use sigil_spiffe::{Selector, SpiffeId, TrustDomain};

use crate::error::DataStoreError;
use crate::model::{
    AttestedNode, EntryMask, FederationRelationship, FederationRelationshipMask, JoinToken,
    ListEntriesRequest, ListEntriesResponse, ListNodesRequest, NodeMask, NodeSerials,
    RegistrationEntry, StoredBundle,
};

/// Shorthand for datastore results.
pub type Result<T, E = DataStoreError> = std::result::Result<T, E>;

/// The server's persistent state.
///
/// Every write is one transaction: it either happens completely (including its
/// change-feed event) or not at all, so a rejected input leaves the store as it
/// was. Event IDs only grow, and an event becomes visible to readers only after
/// every event with a smaller ID (writers serialise on the event table), so a
/// reader that remembers the last ID it saw never misses one.
#[async_trait]
pub trait DataStore: Send + Sync {
    // ---- registration entries ----

    /// Stores a new entry. Generates a UUID v4 `id` when it is empty, sets
    /// `revision_number` to 0 and `created_at` to now unless the caller set it.
    /// `AlreadyExists` when the ID is taken or another entry has the same parent
    /// ID, SPIFFE ID and selector set; `InvalidArgument` when the entry breaks a
    /// rule (no selectors, duplicate selectors, bad ID, negative TTL, ...).
    async fn create_entry(&self, entry: RegistrationEntry) -> Result<RegistrationEntry>;

    /// Replaces the fields of entry `entry.id` chosen by `mask`, bumps its
    /// revision number and returns the stored result. `NotFound` when no such
    /// entry; `AlreadyExists` when the change would duplicate another entry.
    async fn update_entry(
        &self,
        entry: RegistrationEntry,
        mask: &EntryMask,
    ) -> Result<RegistrationEntry>;

    /// Deletes an entry and returns what it was. `NotFound` when no such entry.
    async fn delete_entry(&self, id: &str) -> Result<RegistrationEntry>;

    /// Fetches one entry.
    async fn get_entry(&self, id: &str) -> Result<Option<RegistrationEntry>>;

    /// The entries among `ids` that exist, ordered by ID (missing IDs are
    /// left out). The entry index uses it to re-read what the event feed
    /// names, many at a time.
    async fn get_entries(&self, ids: &[String]) -> Result<Vec<RegistrationEntry>>;

    /// Lists entries matching every set filter, ordered by ID, one page at a time.
    /// `InvalidArgument` for a selector or federates-with filter with an empty set.
    async fn list_entries(&self, req: &ListEntriesRequest) -> Result<ListEntriesResponse>;

    /// Counts entries matching the filters of `req` (paging fields are ignored).
    async fn count_entries(&self, req: &ListEntriesRequest) -> Result<u64>;

    /// All entries whose parent ID is one of `parent_ids`, ordered by ID.
    async fn list_entries_by_parents(
        &self,
        parent_ids: &[SpiffeId],
    ) -> Result<Vec<RegistrationEntry>>;

    /// All entries whose selector set is a subset of `selectors` (used to find
    /// the node-alias entries a node's selectors satisfy), ordered by ID.
    async fn list_entries_by_selector_subset(
        &self,
        selectors: &[Selector],
    ) -> Result<Vec<RegistrationEntry>>;

    /// Deletes at most `limit` entries whose `expires_at` is set and strictly
    /// before `expires_before` (soonest-expired first), writing an event for
    /// each; returns how many went. Callers prune in bounded batches and
    /// call again while a batch comes back full.
    async fn prune_entries(&self, expires_before: i64, limit: u32) -> Result<u64>;

    // ---- entry change feed ----

    /// `(event ID, entry ID)` of every entry event with an ID above `after_id`,
    /// in ID order.
    async fn list_entry_events_since(&self, after_id: i64) -> Result<Vec<(i64, String)>>;

    /// The highest entry event ID, or 0 when there is none.
    async fn latest_entry_event_id(&self) -> Result<i64>;

    /// Deletes at most `limit` entry events created strictly before
    /// `older_than` (unix seconds), oldest first; returns how many went.
    async fn prune_entry_events(&self, older_than: i64, limit: u32) -> Result<u64>;

    // ---- attested nodes ----

    /// Stores a new attested node with its selectors. `AlreadyExists` when a node
    /// with that SPIFFE ID exists.
    async fn create_attested_node(&self, node: AttestedNode) -> Result<AttestedNode>;

    /// Fetches one node, with its selectors.
    async fn get_attested_node(&self, spiffe_id: &SpiffeId) -> Result<Option<AttestedNode>>;

    /// The nodes among `ids` that exist (with selectors), ordered by SPIFFE
    /// ID; missing IDs are left out.
    async fn get_attested_nodes(&self, ids: &[SpiffeId]) -> Result<Vec<AttestedNode>>;

    /// Replaces the fields chosen by `mask` and returns the stored node.
    /// `NotFound` when no such node.
    async fn update_attested_node(
        &self,
        node: AttestedNode,
        mask: &NodeMask,
    ) -> Result<AttestedNode>;

    /// Compare-and-set: replaces the fields chosen by `mask` only if the
    /// node's serial numbers are still `expected` and it is not banned, in one
    /// statement, and returns the stored node. `None` (nothing changed) when
    /// the node is gone, banned, or its serials changed since the caller read
    /// them. A banned node (both serials empty) never matches, so no renewal
    /// or promotion computed before a ban can undo it.
    async fn update_attested_node_if(
        &self,
        node: AttestedNode,
        mask: &NodeMask,
        expected: &NodeSerials,
    ) -> Result<Option<AttestedNode>>;

    /// Records a successful node attestation in one transaction: spends
    /// `join_token` (when the attestation used one), replaces the node's
    /// selectors with `node.selectors` and creates the node or replaces every
    /// field of the existing one. Either all of it happens or none of it:
    /// `NotFound` when the join token does not exist (it was used already; of
    /// concurrent attestations with one token exactly one succeeds),
    /// `FailedPrecondition` when the node exists and is banned.
    async fn attest_node(
        &self,
        node: AttestedNode,
        join_token: Option<&str>,
    ) -> Result<AttestedNode>;

    /// Deletes a node and its selectors and returns what it was. `NotFound` when
    /// no such node.
    async fn delete_attested_node(&self, spiffe_id: &SpiffeId) -> Result<AttestedNode>;

    /// Deletes at most `limit` nodes whose current SVID expired strictly
    /// before `expired_before` (unix seconds), with their selectors, writing
    /// a node event for each, and returns their IDs. Banned nodes are never
    /// pruned (their record is what keeps them out); nodes that cannot
    /// re-attest go only when `include_non_reattestable` (SPIRE's
    /// `prune_tofu_nodes`), since deleting them would let the same
    /// attestation data admit the node again.
    async fn prune_attested_nodes(
        &self,
        expired_before: i64,
        include_non_reattestable: bool,
        limit: u32,
    ) -> Result<Vec<SpiffeId>>;

    /// Lists nodes (with selectors) matching every set filter, ordered by SPIFFE
    /// ID; returns the page and the next page token (empty on the last page).
    async fn list_attested_nodes(
        &self,
        req: &ListNodesRequest,
    ) -> Result<(Vec<AttestedNode>, String)>;

    /// Counts nodes matching the filters of `req` (paging fields are ignored).
    async fn count_attested_nodes(&self, req: &ListNodesRequest) -> Result<u64>;

    /// Replaces the selectors recorded for a node (duplicates are dropped). The
    /// node need not exist yet.
    async fn set_node_selectors(
        &self,
        spiffe_id: &SpiffeId,
        selectors: Vec<Selector>,
    ) -> Result<()>;

    /// The selectors recorded for a node; empty when there are none.
    async fn get_node_selectors(&self, spiffe_id: &SpiffeId) -> Result<Vec<Selector>>;

    // ---- node change feed ----

    /// `(event ID, node SPIFFE ID)` of every node event above `after_id`, in ID
    /// order. Node creates, updates, deletes and selector changes write events.
    async fn list_node_events_since(&self, after_id: i64) -> Result<Vec<(i64, SpiffeId)>>;

    /// The highest node event ID, or 0 when there is none.
    async fn latest_node_event_id(&self) -> Result<i64>;

    /// Deletes at most `limit` node events created strictly before
    /// `older_than` (unix seconds), oldest first; returns how many went.
    async fn prune_node_events(&self, older_than: i64, limit: u32) -> Result<u64>;

    // ---- join tokens ----

    /// Stores a join token. `AlreadyExists` when the token value is taken.
    async fn create_join_token(&self, token: JoinToken) -> Result<()>;

    /// Creates a join token and the registration entry that aliases its agent
    /// in one transaction, and returns the stored entry. `AlreadyExists` when
    /// the token value is taken or the entry duplicates another; nothing is
    /// stored on any error.
    async fn create_join_token_with_entry(
        &self,
        token: JoinToken,
        entry: RegistrationEntry,
    ) -> Result<RegistrationEntry>;

    /// Fetches a token without spending it (attestation spends it with
    /// [`DataStore::attest_node`]).
    async fn get_join_token(&self, token: &str) -> Result<Option<JoinToken>>;

    /// Fetches and deletes a token in one atomic step, so of any number of
    /// concurrent takes exactly one receives it. Expired tokens are returned
    /// too; the caller checks `expires_at`.
    async fn take_join_token(&self, token: &str) -> Result<Option<JoinToken>>;

    /// Deletes tokens expiring strictly before `expires_before`; returns how many.
    async fn prune_join_tokens(&self, expires_before: i64) -> Result<u64>;

    // ---- bundles ----

    /// Creates or replaces the bundle of `bundle.trust_domain`.
    async fn set_bundle(&self, bundle: StoredBundle) -> Result<()>;

    /// Compare-and-set of a bundle: stores `bundle` only if the stored data
    /// of its trust domain is still `expected` (`None`: there is no bundle
    /// yet), in one statement. Returns whether it was stored; `false` means a
    /// concurrent writer (possibly another server on the same database) won,
    /// and the caller should read again and redo its change.
    async fn set_bundle_if(&self, bundle: StoredBundle, expected: Option<&[u8]>) -> Result<bool>;

    /// Fetches one bundle.
    async fn get_bundle(&self, trust_domain: &TrustDomain) -> Result<Option<StoredBundle>>;

    /// All bundles, ordered by trust domain name.
    async fn list_bundles(&self) -> Result<Vec<StoredBundle>>;

    /// Deletes a bundle. `NotFound` when there is none for that trust domain.
    async fn delete_bundle(&self, trust_domain: &TrustDomain) -> Result<()>;

    // ---- federation relationships ----

    /// Stores a new federation relationship and returns it. `AlreadyExists`
    /// when one exists for that trust domain; `InvalidArgument` when the
    /// bundle endpoint URL is empty. The foreign bundle is not touched.
    async fn create_federation_relationship(
        &self,
        rel: FederationRelationship,
    ) -> Result<FederationRelationship>;

    /// Fetches the relationship with a trust domain.
    async fn get_federation_relationship(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Option<FederationRelationship>>;

    /// Lists relationships in trust domain order, `page_size` at a time (0
    /// returns everything); `page_token` is empty for the first page, else the
    /// token returned with the previous one. Returns the page and the next
    /// page token (empty on the last page).
    async fn list_federation_relationships(
        &self,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<FederationRelationship>, String)>;

    /// Replaces the fields of relationship `rel.trust_domain` chosen by
    /// `mask` and returns the stored result. `NotFound` when there is none;
    /// `InvalidArgument` when the URL would become empty.
    async fn update_federation_relationship(
        &self,
        rel: FederationRelationship,
        mask: &FederationRelationshipMask,
    ) -> Result<FederationRelationship>;

    /// Deletes the relationship with a trust domain; its bundle stays.
    /// `NotFound` when there is none.
    async fn delete_federation_relationship(&self, trust_domain: &TrustDomain) -> Result<()>;

    // ---- health and lifecycle ----

    /// Round-trips to the database; `Unavailable` when it cannot be reached.
    async fn ping(&self) -> Result<()>;

    /// Closes every connection, waiting for ones in use to be returned. Calls
    /// made afterwards fail with `Unavailable`.
    async fn close(&self);
}
