//! [`EntryIndex`]: the [`EntryGraph`] behind a lock, the loop that feeds it
//! from the datastore's event feed, and the per-agent subscriptions that
//! receive only what changed for them.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use sigil_datastore::{
    AttestedNode, DataStore, DataStoreError, ListEntriesRequest, ListNodesRequest,
    RegistrationEntry,
};
use sigil_plugin::clock::Clock;
use sigil_spiffe::SpiffeId;
use tokio::sync::mpsc;

use super::graph::{EntryGraph, EntryKey};

/// How the index learns about changes (SPIRE's `events_based_cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexMode {
    /// Follow the event feed every poll interval (sigil's default).
    Events,
    /// Rebuild from a full read every poll interval (SPIRE's cache with
    /// `events_based_cache = false`).
    FullReload,
}

/// Index settings, from the server config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexConfig {
    /// Events or full reloads.
    pub mode: IndexMode,
    /// How often changes made by other servers are looked for
    /// (`cache_reload_interval`).
    pub poll_interval: Duration,
    /// A full rebuild this often even when following events
    /// (`full_cache_reload_interval`), as a backstop.
    pub full_reload_interval: Duration,
    /// After this long without a successful read of the feed, the next
    /// successful poll rebuilds in full (`event_timeout`): events may have
    /// been pruned meanwhile.
    pub event_timeout: Duration,
    /// How old the index's node records may be for agent authentication to
    /// use them instead of reading the datastore
    /// (`max_attested_node_info_staleness`; zero: always read).
    pub node_staleness: Duration,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            mode: IndexMode::Events,
            poll_interval: Duration::from_secs(1),
            full_reload_interval: Duration::from_secs(24 * 3600),
            event_timeout: Duration::from_secs(15 * 60),
            node_staleness: Duration::ZERO,
        }
    }
}

/// Why the index could not be built or refreshed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// Reading the datastore failed; the index keeps its previous state.
    #[error("reading the datastore for the entry index: {0}")]
    DataStore(#[from] DataStoreError),
}

/// What one subscription receives after a change: the entries added to its
/// agent's authorized set or changed, and the IDs that left it.
#[derive(Debug, Clone, Default)]
pub struct Push {
    /// The index revision the change brought.
    pub revision: u64,
    /// Whole entries, new or changed.
    pub upserted: Vec<Arc<RegistrationEntry>>,
    /// Entry IDs no longer authorized.
    pub removed: Vec<EntryKey>,
}

/// One agent's stream of changes. Dropping it unsubscribes. The channel
/// closes when the agent is deleted or banned, or when it falls so far
/// behind that its queue fills (it then subscribes again and starts over).
#[derive(Debug)]
pub struct Subscription {
    /// The index revision of `initial`.
    pub revision: u64,
    /// The agent's whole authorized set when it subscribed, by entry ID.
    pub initial: Vec<Arc<RegistrationEntry>>,
    /// Changes after `initial`, in order.
    pub changes: mpsc::Receiver<Push>,
    index: Weak<EntryIndex>,
    agent: SpiffeId,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(index) = self.index.upgrade() {
            index.unsubscribe(&self.agent, self.id);
        }
    }
}

/// Changes queued for a subscription before it is dropped as too slow.
const SUBSCRIPTION_QUEUE: usize = 32;

struct Subscriber {
    id: u64,
    /// What the subscription has been told its agent holds.
    held: HashMap<EntryKey, Arc<RegistrationEntry>>,
    tx: mpsc::Sender<Push>,
}

struct State {
    graph: EntryGraph,
    subscribers: HashMap<SpiffeId, Vec<Subscriber>>,
    next_subscriber: u64,
}

/// Where the feed was last read up to.
#[derive(Debug)]
struct Cursor {
    entry_event: i64,
    node_event: i64,
    last_read: Instant,
    last_full: Instant,
}

/// The in-memory authorized-entry index (see the module docs of
/// [`crate::index`]).
pub struct EntryIndex {
    ds: Arc<dyn DataStore>,
    clock: Arc<dyn Clock>,
    cfg: IndexConfig,
    state: RwLock<State>,
    /// Serialises reads of the feed, so batches apply in event order.
    cursor: tokio::sync::Mutex<Cursor>,
    /// When the feed was last read successfully.
    synced_at: Mutex<Instant>,
    revision: AtomicU64,
    pushes: AtomicU64,
}

impl std::fmt::Debug for EntryIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryIndex")
            .field("cfg", &self.cfg)
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

impl EntryIndex {
    /// Builds the index from a full read of the datastore.
    pub async fn load(
        ds: Arc<dyn DataStore>,
        server_id: SpiffeId,
        clock: Arc<dyn Clock>,
        cfg: IndexConfig,
    ) -> Result<Arc<Self>, IndexError> {
        let started = Instant::now();
        let (graph, entry_event, node_event) = read_all(&*ds, server_id).await?;
        tracing::info!(
            entries = graph.entry_count(),
            agents = graph.node_count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Entry index loaded"
        );
        let now = Instant::now();
        Ok(Arc::new(EntryIndex {
            ds,
            clock,
            cfg,
            state: RwLock::new(State {
                graph,
                subscribers: HashMap::new(),
                next_subscriber: 0,
            }),
            cursor: tokio::sync::Mutex::new(Cursor {
                entry_event,
                node_event,
                last_read: now,
                last_full: now,
            }),
            synced_at: Mutex::new(now),
            revision: AtomicU64::new(0),
            pushes: AtomicU64::new(0),
        }))
    }

    /// The settings the index runs with.
    pub fn config(&self) -> &IndexConfig {
        &self.cfg
    }

    /// Follows the feed every poll interval until the index is dropped.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let interval = self.cfg.poll_interval;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(index) = weak.upgrade() else { return };
                if let Err(e) = index.poll(false).await {
                    tracing::warn!(error = %e, "Could not refresh the entry index; serving the last state");
                }
            }
        })
    }

    /// Applies every change committed so far: called after this server
    /// writes, so its own change is served at once.
    pub async fn refresh(&self) -> Result<(), IndexError> {
        self.poll(true).await
    }

    /// The entries `agent` is authorized for, ordered by entry ID.
    pub fn authorized(&self, agent: &AttestedNode) -> Vec<Arc<RegistrationEntry>> {
        let now = self.clock.unix_now();
        self.read()
            .graph
            .authorized(&agent.spiffe_id, &agent.selectors, now)
            .into_values()
            .collect()
    }

    /// Entry `entry_id` when `agent` is authorized for it.
    pub fn authorized_entry(
        &self,
        agent: &AttestedNode,
        entry_id: &str,
    ) -> Option<Arc<RegistrationEntry>> {
        let now = self.clock.unix_now();
        self.read()
            .graph
            .is_authorized(&agent.spiffe_id, &agent.selectors, entry_id, now)
    }

    /// Entries whose SPIFFE ID is `id` (a caller's admin or downstream
    /// entries).
    pub fn entries_with_spiffe_id(&self, id: &SpiffeId) -> Vec<Arc<RegistrationEntry>> {
        self.read().graph.entries_with_spiffe_id(id)
    }

    /// The index's record of node `id`, when node records may be used for
    /// authentication (`max_attested_node_info_staleness` is set and the
    /// feed was read within it). `None` means: read the datastore.
    pub fn fresh_node(&self, id: &SpiffeId) -> Option<Arc<AttestedNode>> {
        if self.cfg.node_staleness.is_zero() {
            return None;
        }
        let synced = *self
            .synced_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if synced.elapsed() > self.cfg.node_staleness {
            return None;
        }
        self.read().graph.node(id).cloned()
    }

    /// Subscribes to the changes of `agent`'s authorized set.
    pub fn subscribe(self: &Arc<Self>, agent: &AttestedNode) -> Subscription {
        let now = self.clock.unix_now();
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_QUEUE);
        let mut state = self.write();
        let selectors = state
            .graph
            .node(&agent.spiffe_id)
            .map_or_else(|| agent.selectors.clone(), |n| n.selectors.clone());
        let set = state.graph.authorized(&agent.spiffe_id, &selectors, now);
        let id = state.next_subscriber;
        state.next_subscriber += 1;
        let initial = set.values().cloned().collect();
        state
            .subscribers
            .entry(agent.spiffe_id.clone())
            .or_default()
            .push(Subscriber {
                id,
                held: set.into_iter().collect(),
                tx,
            });
        Subscription {
            revision: self.revision.load(Ordering::Relaxed),
            initial,
            changes: rx,
            index: Arc::downgrade(self),
            agent: agent.spiffe_id.clone(),
            id,
        }
    }

    /// The current revision (grows with every applied change).
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Relaxed)
    }

    /// How many changes have been sent to subscriptions since start (one per
    /// subscription woken).
    pub fn pushes(&self) -> u64 {
        self.pushes.load(Ordering::Relaxed)
    }

    /// How many subscriptions are open.
    pub fn subscriptions(&self) -> usize {
        self.read().subscribers.values().map(Vec::len).sum()
    }

    /// How many entries and nodes are held.
    pub fn sizes(&self) -> (usize, usize) {
        let state = self.read();
        (state.graph.entry_count(), state.graph.node_count())
    }

    fn unsubscribe(&self, agent: &SpiffeId, id: u64) {
        let mut state = self.write();
        if let Some(subs) = state.subscribers.get_mut(agent) {
            subs.retain(|s| s.id != id);
            if subs.is_empty() {
                state.subscribers.remove(agent);
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the feed (or everything, when a rebuild is due) and applies it.
    async fn poll(&self, on_write: bool) -> Result<(), IndexError> {
        let mut cursor = self.cursor.lock().await;
        let full = match self.cfg.mode {
            // With full reloads, a server's own writes wait for the next
            // reload, as in SPIRE.
            IndexMode::FullReload if on_write => return Ok(()),
            IndexMode::FullReload => true,
            IndexMode::Events => {
                cursor.last_read.elapsed() > self.cfg.event_timeout
                    || cursor.last_full.elapsed() > self.cfg.full_reload_interval
            }
        };
        if full {
            return self.rebuild(&mut cursor).await;
        }
        let entry_events = self.ds.list_entry_events_since(cursor.entry_event).await?;
        let node_events = self.ds.list_node_events_since(cursor.node_event).await?;
        if entry_events.is_empty() && node_events.is_empty() {
            self.mark_read(&mut cursor);
            return Ok(());
        }
        let entry_ids: Vec<String> = entry_events
            .iter()
            .map(|(_, id)| id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let node_ids: Vec<SpiffeId> = node_events
            .iter()
            .map(|(_, id)| id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut entries: HashMap<String, RegistrationEntry> = self
            .ds
            .get_entries(&entry_ids)
            .await?
            .into_iter()
            .map(|e| (e.id.clone(), e))
            .collect();
        let mut nodes: HashMap<SpiffeId, AttestedNode> = self
            .ds
            .get_attested_nodes(&node_ids)
            .await?
            .into_iter()
            .map(|n| (n.spiffe_id.clone(), n))
            .collect();
        let entry_changes = entry_ids
            .into_iter()
            .map(|id| {
                let now = entries.remove(&id);
                (id, now)
            })
            .collect();
        let node_changes = node_ids
            .into_iter()
            .map(|id| {
                let now = nodes.remove(&id);
                (id, now)
            })
            .collect();
        self.apply(entry_changes, node_changes);
        if let Some((id, _)) = entry_events.last() {
            cursor.entry_event = *id;
        }
        if let Some((id, _)) = node_events.last() {
            cursor.node_event = *id;
        }
        self.mark_read(&mut cursor);
        Ok(())
    }

    fn mark_read(&self, cursor: &mut Cursor) {
        {
            let state = self.read();
            metrics::gauge!("entry_index_entries").set(state.graph.entry_count() as f64);
            metrics::gauge!("entry_index_agents").set(state.graph.node_count() as f64);
            metrics::gauge!("entry_index_subscriptions")
                .set(state.subscribers.values().map(Vec::len).sum::<usize>() as f64);
        }
        let now = Instant::now();
        cursor.last_read = now;
        *self
            .synced_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = now;
    }

    /// Replaces the graph with a full read and re-diffs every subscription.
    async fn rebuild(&self, cursor: &mut Cursor) -> Result<(), IndexError> {
        let server_id = self.read_server_id();
        let (graph, entry_event, node_event) = read_all(&*self.ds, server_id).await?;
        let now = self.clock.unix_now();
        {
            let mut state = self.write();
            state.graph = graph;
            let revision = self.revision.fetch_add(1, Ordering::Relaxed) + 1;
            let agents: Vec<SpiffeId> = state.subscribers.keys().cloned().collect();
            for agent in agents {
                self.rediff(&mut state, &agent, now, revision);
            }
        }
        cursor.entry_event = entry_event;
        cursor.node_event = node_event;
        cursor.last_full = Instant::now();
        self.mark_read(cursor);
        Ok(())
    }

    fn read_server_id(&self) -> SpiffeId {
        self.read().graph.server_id().clone()
    }

    /// Applies one batch: `None` means the record is gone.
    fn apply(
        &self,
        entry_changes: Vec<(String, Option<RegistrationEntry>)>,
        node_changes: Vec<(SpiffeId, Option<AttestedNode>)>,
    ) {
        let now = self.clock.unix_now();
        let mut state = self.write();
        let watching = !state.subscribers.is_empty();
        let mut concerned: BTreeSet<SpiffeId> = BTreeSet::new();
        let mut changed_keys = Vec::with_capacity(entry_changes.len());
        for (id, entry) in entry_changes {
            if watching && let Some(old) = state.graph.entry(&id) {
                concerned.extend(state.graph.agents_concerned(old));
            }
            match entry {
                Some(e) => {
                    state.graph.upsert_entry(e);
                    changed_keys.push(id);
                }
                None => {
                    state.graph.remove_entry(&id);
                }
            }
        }
        let mut gone = Vec::new();
        for (id, node) in node_changes {
            match node {
                Some(n) if !n.is_banned() => {
                    state.graph.upsert_node(n);
                    concerned.insert(id);
                }
                Some(n) => {
                    // Banned: keep the record (authentication refuses it)
                    // and end its subscriptions.
                    state.graph.upsert_node(n);
                    gone.push(id);
                }
                None => {
                    state.graph.remove_node(&id);
                    gone.push(id);
                }
            }
        }
        if watching {
            for id in &changed_keys {
                if let Some(e) = state.graph.entry(id) {
                    concerned.extend(state.graph.agents_concerned(e));
                }
            }
        }
        let revision = self.revision.fetch_add(1, Ordering::Relaxed) + 1;
        for id in &gone {
            // Dropping the senders ends the agent's streams.
            state.subscribers.remove(id);
            concerned.remove(id);
        }
        for agent in concerned {
            if state.subscribers.contains_key(&agent) {
                self.rediff(&mut state, &agent, now, revision);
            }
        }
    }

    /// Recomputes `agent`'s set and sends each of its subscriptions what
    /// differs from what it holds. A subscription whose queue is full or
    /// closed is dropped.
    fn rediff(&self, state: &mut State, agent: &SpiffeId, now: i64, revision: u64) {
        let selectors = match state.graph.node(agent) {
            Some(n) if n.is_banned() => {
                state.subscribers.remove(agent);
                return;
            }
            Some(n) => n.selectors.clone(),
            None => return,
        };
        let set = state.graph.authorized(agent, &selectors, now);
        let Some(subs) = state.subscribers.get_mut(agent) else {
            return;
        };
        subs.retain_mut(|sub| {
            let removed: Vec<EntryKey> = sub
                .held
                .keys()
                .filter(|k| !set.contains_key(*k))
                .cloned()
                .collect();
            let upserted: Vec<Arc<RegistrationEntry>> = set
                .iter()
                .filter(|(k, e)| sub.held.get(*k).is_none_or(|held| !Arc::ptr_eq(held, e)))
                .map(|(_, e)| e.clone())
                .collect();
            if removed.is_empty() && upserted.is_empty() {
                return true;
            }
            for k in &removed {
                sub.held.remove(k);
            }
            for e in &upserted {
                sub.held.insert(Arc::from(e.id.as_str()), e.clone());
            }
            let push = Push {
                revision,
                upserted,
                removed,
            };
            match sub.tx.try_send(push) {
                Ok(()) => {
                    self.pushes.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("entry_index_pushes").increment(1);
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(agent_id = %agent, "Agent is not reading its entry changes; ending its stream so it starts over");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if subs.is_empty() {
            state.subscribers.remove(agent);
        }
    }
}

/// Reads every entry and node, with the feed positions the read reflects
/// (taken first: a change committed during the read has a later event and
/// is applied again afterwards, which is harmless).
async fn read_all(
    ds: &dyn DataStore,
    server_id: SpiffeId,
) -> Result<(EntryGraph, i64, i64), IndexError> {
    let entry_event = ds.latest_entry_event_id().await?;
    let node_event = ds.latest_node_event_id().await?;
    let entries = ds
        .list_entries(&ListEntriesRequest::default())
        .await?
        .entries;
    let (nodes, _) = ds.list_attested_nodes(&ListNodesRequest::default()).await?;
    let mut graph = EntryGraph::new(server_id);
    for n in nodes {
        graph.upsert_node(n);
    }
    for e in entries {
        graph.upsert_entry(e);
    }
    Ok((graph, entry_event, node_event))
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use sigil_datastore::NodeMask;
    use sigil_plugin::clock::ManualClock;

    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).expect("test id")
    }

    fn node(name: &str) -> AttestedNode {
        AttestedNode {
            spiffe_id: id(&format!("spiffe://td/spire/agent/{name}")),
            attestation_data_type: "test".into(),
            cert_serial_number: "01".into(),
            cert_not_after: 0,
            new_cert_serial_number: String::new(),
            new_cert_not_after: 0,
            can_reattest: false,
            selectors: Vec::new(),
        }
    }

    fn entry(spiffe_id: &str, parent: &str) -> RegistrationEntry {
        RegistrationEntry {
            id: String::new(),
            spiffe_id: id(spiffe_id),
            parent_id: id(parent),
            selectors: vec![sigil_spiffe::Selector::parse("unix:uid:1").expect("selector")],
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

    async fn setup(cfg: IndexConfig) -> (Arc<dyn DataStore>, Arc<EntryIndex>, AttestedNode) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.keep().join("ds.sqlite3");
        let ds = sigil_datastore::open("sqlite3", &path.display().to_string())
            .await
            .expect("datastore");
        let agent = ds.create_attested_node(node("a")).await.expect("node");
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let index = EntryIndex::load(ds.clone(), id("spiffe://td/spire/server"), clock, cfg)
            .await
            .expect("index");
        (ds, index, agent)
    }

    #[tokio::test]
    async fn node_records_are_used_for_authentication_only_within_the_staleness_bound() {
        let (_, index, agent) = setup(IndexConfig::default()).await;
        assert!(
            index.fresh_node(&agent.spiffe_id).is_none(),
            "0s: always the datastore"
        );
        let cfg = IndexConfig {
            node_staleness: Duration::from_secs(3600),
            ..IndexConfig::default()
        };
        let (ds, index, agent) = setup(cfg).await;
        assert_eq!(index.fresh_node(&agent.spiffe_id).as_deref(), Some(&agent));
        // A ban written and applied is what authentication sees next.
        let mut banned = agent.clone();
        banned.cert_serial_number.clear();
        ds.update_attested_node(banned, &NodeMask::all())
            .await
            .expect("ban");
        index.refresh().await.expect("refresh");
        assert!(
            index
                .fresh_node(&agent.spiffe_id)
                .is_some_and(|n| n.is_banned())
        );
        // An index that has not read the feed for longer than the bound is
        // not trusted for node records.
        *index.synced_at.lock().expect("lock") = Instant::now()
            .checked_sub(Duration::from_secs(7200))
            .expect("instant");
        assert!(index.fresh_node(&agent.spiffe_id).is_none());
    }

    #[tokio::test]
    async fn a_subscription_receives_the_changes_of_its_agent_only() {
        let (ds, index, agent) = setup(IndexConfig::default()).await;
        let other = ds.create_attested_node(node("b")).await.expect("node b");
        index.refresh().await.expect("refresh");
        let mut mine = index.subscribe(&agent);
        let mut theirs = index.subscribe(&other);
        assert!(mine.initial.is_empty());
        let created = ds
            .create_entry(entry("spiffe://td/w", "spiffe://td/spire/agent/a"))
            .await
            .expect("entry");
        index.refresh().await.expect("refresh");
        let push = mine.changes.try_recv().expect("a push for agent a");
        assert_eq!(push.upserted.len(), 1);
        assert_eq!(push.upserted[0].id, created.id);
        assert!(theirs.changes.try_recv().is_err(), "agent b is not woken");
        ds.delete_entry(&created.id).await.expect("delete");
        index.refresh().await.expect("refresh");
        let push = mine.changes.try_recv().expect("a removal for agent a");
        assert_eq!(&*push.removed[0], created.id.as_str());
        assert_eq!(index.pushes(), 2);
        drop(theirs);
        assert_eq!(index.subscriptions(), 1);
        // Deleting the agent ends its subscription.
        ds.delete_attested_node(&agent.spiffe_id)
            .await
            .expect("delete node");
        index.refresh().await.expect("refresh");
        assert!(mine.changes.recv().await.is_none());
    }

    #[tokio::test]
    async fn with_full_reloads_changes_wait_for_the_next_reload() {
        let cfg = IndexConfig {
            mode: IndexMode::FullReload,
            ..IndexConfig::default()
        };
        let (ds, index, agent) = setup(cfg).await;
        ds.create_entry(entry("spiffe://td/w", "spiffe://td/spire/agent/a"))
            .await
            .expect("entry");
        index.refresh().await.expect("refresh");
        assert!(index.authorized(&agent).is_empty(), "not before the reload");
        index.poll(false).await.expect("reload");
        assert_eq!(index.authorized(&agent).len(), 1);
    }

    #[tokio::test]
    async fn after_an_outage_longer_than_event_timeout_the_index_rebuilds_in_full() {
        let (ds, index, agent) = setup(IndexConfig::default()).await;
        ds.create_entry(entry("spiffe://td/w", "spiffe://td/spire/agent/a"))
            .await
            .expect("entry");
        // Simulate a long outage in which the events were pruned: the
        // cursor is old and the feed no longer holds the change.
        ds.prune_entry_events(i64::MAX, 1000).await.expect("prune");
        index.cursor.lock().await.last_read = Instant::now()
            .checked_sub(Duration::from_secs(3600))
            .expect("instant");
        index.refresh().await.expect("refresh");
        assert_eq!(
            index.authorized(&agent).len(),
            1,
            "the full read found what the pruned feed no longer names"
        );
    }
}
