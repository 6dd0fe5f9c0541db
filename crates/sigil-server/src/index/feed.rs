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
            IndexMode::FullReload => !on_write,
            IndexMode::Events => {
                cursor.last_read.elapsed() > self.cfg.event_timeout
                    || cursor.last_full.elapsed() > self.cfg.full_reload_interval
            }
        };
        if full {
            if on_write {
                return Ok(());
            }
            return self.rebuild(&mut cursor).await;
        }
        if self.cfg.mode == IndexMode::FullReload {
            return Ok(());
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
