//! The entry graph: registration entries and attested nodes in memory, with
//! the secondary maps that answer "what may this agent serve" and "which
//! agents does this entry concern" without touching the datastore.
//!
//! An agent is authorized for every entry descending (through parent IDs)
//! from its own ID, and from each node alias it belongs to. A node alias is an
//! entry parented to the server (`spiffe://<td>/spire/server`) whose selectors
//! are all among the agent's node selectors; the alias itself is not served,
//! its descendants are. Expired entries are left out, and so is everything
//! reachable only through them.
//!
//! Sans-IO and synchronous: [`super::EntryIndex`] feeds it from the event feed
//! and holds it behind a lock. It never reads the clock (callers pass `now`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use sigil_datastore::{AttestedNode, RegistrationEntry};
use sigil_spiffe::{Selector, SpiffeId};

/// An entry ID, shared between the maps.
pub type EntryKey = Arc<str>;

/// The entries an agent is authorized for, by entry ID.
pub type AuthorizedSet = BTreeMap<EntryKey, Arc<RegistrationEntry>>;

/// Entries and nodes with their secondary maps.
#[derive(Debug)]
pub struct EntryGraph {
    server_id: SpiffeId,
    entries: HashMap<EntryKey, Arc<RegistrationEntry>>,
    /// Entry IDs by parent ID.
    by_parent: HashMap<SpiffeId, BTreeSet<EntryKey>>,
    /// Entry IDs by SPIFFE ID (to walk up from a parent ID to the entries
    /// that name it, and to find admin and downstream entries of a caller).
    by_spiffe_id: HashMap<SpiffeId, BTreeSet<EntryKey>>,
    /// Node-alias entry IDs by each of their selectors.
    alias_by_selector: HashMap<Selector, BTreeSet<EntryKey>>,
    nodes: HashMap<SpiffeId, Arc<AttestedNode>>,
    /// Node IDs by each of their selectors.
    nodes_by_selector: HashMap<Selector, BTreeSet<SpiffeId>>,
}

impl EntryGraph {
    /// An empty graph for the server `server_id`.
    pub fn new(server_id: SpiffeId) -> Self {
        EntryGraph {
            server_id,
            entries: HashMap::new(),
            by_parent: HashMap::new(),
            by_spiffe_id: HashMap::new(),
            alias_by_selector: HashMap::new(),
            nodes: HashMap::new(),
            nodes_by_selector: HashMap::new(),
        }
    }

    /// The server ID node aliases are parented to.
    pub fn server_id(&self) -> &SpiffeId {
        &self.server_id
    }

    /// How many entries are held.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// How many nodes are held.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// One entry.
    pub fn entry(&self, id: &str) -> Option<&Arc<RegistrationEntry>> {
        self.entries.get(id)
    }

    /// One node.
    pub fn node(&self, id: &SpiffeId) -> Option<&Arc<AttestedNode>> {
        self.nodes.get(id)
    }

    /// Entries whose SPIFFE ID is `id`, in entry ID order.
    pub fn entries_with_spiffe_id(&self, id: &SpiffeId) -> Vec<Arc<RegistrationEntry>> {
        self.by_spiffe_id
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|k| self.entries.get(k).cloned())
            .collect()
    }

    /// Adds or replaces an entry; returns the one it replaced.
    pub fn upsert_entry(&mut self, entry: RegistrationEntry) -> Option<Arc<RegistrationEntry>> {
        let old = self.remove_entry(&entry.id);
        let key: EntryKey = Arc::from(entry.id.as_str());
        self.by_parent
            .entry(entry.parent_id.clone())
            .or_default()
            .insert(key.clone());
        self.by_spiffe_id
            .entry(entry.spiffe_id.clone())
            .or_default()
            .insert(key.clone());
        if self.is_alias(&entry) {
            for s in &entry.selectors {
                self.alias_by_selector
                    .entry(s.clone())
                    .or_default()
                    .insert(key.clone());
            }
        }
        self.entries.insert(key, Arc::new(entry));
        old
    }

    /// Removes an entry; returns it when it was held.
    pub fn remove_entry(&mut self, id: &str) -> Option<Arc<RegistrationEntry>> {
        let (key, old) = self.entries.remove_entry(id)?;
        remove_from(&mut self.by_parent, &old.parent_id, &key);
        remove_from(&mut self.by_spiffe_id, &old.spiffe_id, &key);
        if self.is_alias(&old) {
            for s in &old.selectors {
                remove_from(&mut self.alias_by_selector, s, &key);
            }
        }
        Some(old)
    }

    /// Adds or replaces a node; returns the one it replaced.
    pub fn upsert_node(&mut self, node: AttestedNode) -> Option<Arc<AttestedNode>> {
        let old = self.remove_node(&node.spiffe_id);
        for s in &node.selectors {
            self.nodes_by_selector
                .entry(s.clone())
                .or_default()
                .insert(node.spiffe_id.clone());
        }
        self.nodes.insert(node.spiffe_id.clone(), Arc::new(node));
        old
    }

    /// Removes a node; returns it when it was held.
    pub fn remove_node(&mut self, id: &SpiffeId) -> Option<Arc<AttestedNode>> {
        let old = self.nodes.remove(id)?;
        for s in &old.selectors {
            remove_from(&mut self.nodes_by_selector, s, id);
        }
        Some(old)
    }

    /// The entries agent `agent_id` (with node selectors `selectors`) is
    /// authorized for at `now`.
    pub fn authorized(
        &self,
        agent_id: &SpiffeId,
        selectors: &[Selector],
        now: i64,
    ) -> AuthorizedSet {
        let mut found = AuthorizedSet::new();
        let mut seen: HashSet<&SpiffeId> = HashSet::new();
        let mut frontier: Vec<&SpiffeId> = vec![agent_id];
        for alias in self.aliases_of(selectors) {
            if !expired(alias, now) {
                frontier.push(&alias.spiffe_id);
            }
        }
        while let Some(parent) = frontier.pop() {
            if !seen.insert(parent) {
                continue;
            }
            for key in self.by_parent.get(parent).into_iter().flatten() {
                let Some(child) = self.entries.get(key) else {
                    continue;
                };
                if expired(child, now) || found.contains_key(key) {
                    continue;
                }
                frontier.push(&child.spiffe_id);
                found.insert(key.clone(), child.clone());
            }
        }
        found
    }

    /// Whether entry `entry_id` is in the authorized set of the agent, found
    /// by walking up from the entry rather than down from the agent (cheap
    /// when the agent is authorized for many entries). Agrees with
    /// [`EntryGraph::authorized`].
    pub fn is_authorized(
        &self,
        agent_id: &SpiffeId,
        selectors: &[Selector],
        entry_id: &str,
        now: i64,
    ) -> Option<Arc<RegistrationEntry>> {
        let entry = self.entries.get(entry_id)?;
        if expired(entry, now) || self.is_alias(entry) {
            return None;
        }
        let agent_selectors: HashSet<&Selector> = selectors.iter().collect();
        let mut seen: HashSet<&SpiffeId> = HashSet::new();
        let mut frontier = vec![&entry.parent_id];
        while let Some(id) = frontier.pop() {
            if !seen.insert(id) {
                continue;
            }
            if id == agent_id {
                return Some(entry.clone());
            }
            for key in self.by_spiffe_id.get(id).into_iter().flatten() {
                let Some(above) = self.entries.get(key) else {
                    continue;
                };
                if expired(above, now) {
                    continue;
                }
                if self.is_alias(above) {
                    if above.selectors.iter().all(|s| agent_selectors.contains(s)) {
                        return Some(entry.clone());
                    }
                } else {
                    frontier.push(&above.parent_id);
                }
            }
        }
        None
    }

    /// Every node whose authorized set may contain `entry` (or, for a node
    /// alias, the entries below it): the nodes reached by walking up from the
    /// entry. Expiry is ignored, so this over-approximates; callers diff the
    /// real sets.
    pub fn agents_concerned(&self, entry: &RegistrationEntry) -> BTreeSet<SpiffeId> {
        let mut out = BTreeSet::new();
        if self.is_alias(entry) {
            self.agents_matching(&entry.selectors, &mut out);
            return out;
        }
        let mut seen: HashSet<&SpiffeId> = HashSet::new();
        let mut frontier = vec![&entry.parent_id];
        while let Some(id) = frontier.pop() {
            if !seen.insert(id) {
                continue;
            }
            if self.nodes.contains_key(id) {
                out.insert(id.clone());
            }
            for key in self.by_spiffe_id.get(id).into_iter().flatten() {
                let Some(above) = self.entries.get(key) else {
                    continue;
                };
                if self.is_alias(above) {
                    self.agents_matching(&above.selectors, &mut out);
                } else {
                    frontier.push(&above.parent_id);
                }
            }
        }
        out
    }

    /// Nodes whose selectors include every one of `selectors`.
    fn agents_matching(&self, selectors: &[Selector], out: &mut BTreeSet<SpiffeId>) {
        let Some(smallest) = selectors
            .iter()
            .map(|s| self.nodes_by_selector.get(s))
            .min_by_key(|set| set.map_or(0, BTreeSet::len))
        else {
            return;
        };
        for id in smallest.into_iter().flatten() {
            let Some(node) = self.nodes.get(id) else {
                continue;
            };
            if selectors.iter().all(|s| node.selectors.contains(s)) {
                out.insert(id.clone());
            }
        }
    }

    /// The node-alias entries whose selectors are all among `selectors`.
    fn aliases_of(&self, selectors: &[Selector]) -> Vec<&Arc<RegistrationEntry>> {
        let have: HashSet<&Selector> = selectors.iter().collect();
        let mut keys: BTreeSet<&EntryKey> = BTreeSet::new();
        for s in selectors {
            keys.extend(self.alias_by_selector.get(s).into_iter().flatten());
        }
        keys.into_iter()
            .filter_map(|k| self.entries.get(k))
            .filter(|alias| alias.selectors.iter().all(|s| have.contains(s)))
            .collect()
    }

    fn is_alias(&self, entry: &RegistrationEntry) -> bool {
        entry.parent_id == self.server_id
    }
}

/// Unix seconds `now` is past the entry's expiry (0: never expires).
pub fn expired(e: &RegistrationEntry, now: i64) -> bool {
    e.expires_at != 0 && e.expires_at < now
}

fn remove_from<K, V>(map: &mut HashMap<K, BTreeSet<V>>, key: &K, value: &V)
where
    K: std::hash::Hash + Eq,
    V: Ord,
{
    if let Some(set) = map.get_mut(key) {
        set.remove(value);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "spiffe://td/spire/server";

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).expect("test id")
    }

    fn sel(s: &str) -> Selector {
        Selector::parse(s).expect("test selector")
    }

    fn entry(eid: &str, spiffe_id: &str, parent: &str, selectors: &[&str]) -> RegistrationEntry {
        RegistrationEntry {
            id: eid.into(),
            spiffe_id: id(spiffe_id),
            parent_id: id(parent),
            selectors: selectors.iter().map(|s| sel(s)).collect(),
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
            attestation_data_type: "test".into(),
            cert_serial_number: "1".into(),
            cert_not_after: 0,
            new_cert_serial_number: String::new(),
            new_cert_not_after: 0,
            can_reattest: false,
            selectors: selectors.iter().map(|s| sel(s)).collect(),
        }
    }

    fn ids(set: &AuthorizedSet) -> Vec<&str> {
        set.keys().map(|k| &**k).collect()
    }

    fn graph() -> EntryGraph {
        let mut g = EntryGraph::new(id(SERVER));
        g.upsert_node(node("spiffe://td/spire/agent/a", &["k:1", "k:2"]));
        g.upsert_node(node("spiffe://td/spire/agent/b", &["k:1"]));
        g.upsert_entry(entry(
            "direct",
            "spiffe://td/w1",
            "spiffe://td/spire/agent/a",
            &["u:1"],
        ));
        g.upsert_entry(entry(
            "nested",
            "spiffe://td/w2",
            "spiffe://td/w1",
            &["u:2"],
        ));
        g.upsert_entry(entry(
            "alias12",
            "spiffe://td/cluster",
            SERVER,
            &["k:1", "k:2"],
        ));
        g.upsert_entry(entry("alias1", "spiffe://td/all", SERVER, &["k:1"]));
        g.upsert_entry(entry(
            "under12",
            "spiffe://td/w3",
            "spiffe://td/cluster",
            &["u:3"],
        ));
        g.upsert_entry(entry(
            "under1",
            "spiffe://td/w4",
            "spiffe://td/all",
            &["u:4"],
        ));
        g.upsert_entry(entry(
            "elsewhere",
            "spiffe://td/w5",
            "spiffe://td/nobody",
            &["u:5"],
        ));
        g
    }

    #[test]
    fn agents_get_their_descendants_and_those_of_the_aliases_they_match() {
        let g = graph();
        let a = g.authorized(
            &id("spiffe://td/spire/agent/a"),
            &[sel("k:1"), sel("k:2")],
            0,
        );
        assert_eq!(ids(&a), ["direct", "nested", "under1", "under12"]);
        let b = g.authorized(&id("spiffe://td/spire/agent/b"), &[sel("k:1")], 0);
        assert_eq!(ids(&b), ["under1"]);
    }

    #[test]
    fn expired_entries_and_what_hangs_below_them_are_left_out() {
        let mut g = graph();
        let mut w1 = entry(
            "direct",
            "spiffe://td/w1",
            "spiffe://td/spire/agent/a",
            &["u:1"],
        );
        w1.expires_at = 10;
        g.upsert_entry(w1);
        let agent = id("spiffe://td/spire/agent/a");
        assert_eq!(ids(&g.authorized(&agent, &[], 5)), ["direct", "nested"]);
        assert!(g.authorized(&agent, &[], 11).is_empty());
        assert!(g.is_authorized(&agent, &[], "nested", 11).is_none());
        assert!(g.is_authorized(&agent, &[], "nested", 5).is_some());
    }

    #[test]
    fn agents_concerned_walks_up_through_parents_and_aliases() {
        let g = graph();
        let concerned = |eid: &str| {
            g.agents_concerned(g.entry(eid).expect("entry"))
                .into_iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(concerned("nested"), ["spiffe://td/spire/agent/a"]);
        assert_eq!(concerned("under12"), ["spiffe://td/spire/agent/a"]);
        assert_eq!(
            concerned("under1"),
            ["spiffe://td/spire/agent/a", "spiffe://td/spire/agent/b"]
        );
        assert_eq!(
            concerned("alias1"),
            ["spiffe://td/spire/agent/a", "spiffe://td/spire/agent/b"]
        );
        assert!(concerned("elsewhere").is_empty());
    }

    #[test]
    fn removing_and_replacing_keeps_the_secondary_maps_exact() {
        let mut g = graph();
        let agent = id("spiffe://td/spire/agent/b");
        // Move the alias so that it no longer matches b.
        g.upsert_entry(entry("alias1", "spiffe://td/all", SERVER, &["k:9"]));
        assert!(g.authorized(&agent, &[sel("k:1")], 0).is_empty());
        g.remove_entry("alias1");
        assert!(!g.alias_by_selector.contains_key(&sel("k:9")));
        g.remove_node(&agent);
        assert!(
            g.nodes_by_selector
                .get(&sel("k:1"))
                .is_some_and(|s| !s.contains(&agent))
        );
        assert_eq!(g.entry_count(), 6);
        assert_eq!(g.node_count(), 1);
    }

    /// A small deterministic generator, so the property test needs no crate.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    #[test]
    fn walking_up_agrees_with_walking_down_on_random_graphs() {
        let mut rng = Lcg(7);
        for round in 0..40 {
            let mut g = EntryGraph::new(id(SERVER));
            let agents: Vec<SpiffeId> = (0..4)
                .map(|i| id(&format!("spiffe://td/spire/agent/{i}")))
                .collect();
            let selector_pool = ["k:1", "k:2", "k:3"];
            let mut agent_selectors = Vec::new();
            for a in &agents {
                let s: Vec<&str> = selector_pool
                    .iter()
                    .copied()
                    .filter(|_| rng.next(2) == 0)
                    .collect();
                g.upsert_node(node(a.as_str(), &s));
                agent_selectors.push(s.iter().map(|x| sel(x)).collect::<Vec<_>>());
            }
            let names: Vec<String> = (0..8).map(|i| format!("spiffe://td/n{i}")).collect();
            for e in 0..30 {
                let parent = match rng.next(3) {
                    0 => agents[rng.next(4) as usize].to_string(),
                    1 => SERVER.to_owned(),
                    _ => names[rng.next(8) as usize].clone(),
                };
                let spiffe = names[rng.next(8) as usize].clone();
                let sels: Vec<&str> = vec![selector_pool[rng.next(3) as usize]];
                let mut en = entry(&format!("e{e}"), &spiffe, &parent, &sels);
                if rng.next(6) == 0 {
                    en.expires_at = 50;
                }
                g.upsert_entry(en);
            }
            for (a, s) in agents.iter().zip(&agent_selectors) {
                for now in [0, 100] {
                    let down = g.authorized(a, s, now);
                    for e in 0..30 {
                        let key = format!("e{e}");
                        assert_eq!(
                            down.contains_key(key.as_str()),
                            g.is_authorized(a, s, &key, now).is_some(),
                            "round {round}, agent {a}, entry {key}, now {now}"
                        );
                        if down.contains_key(key.as_str()) {
                            let en = g.entry(&key).expect("entry");
                            assert!(
                                g.agents_concerned(en).contains(a),
                                "round {round}: {a} holds {key} but is not concerned by it"
                            );
                        }
                    }
                }
            }
        }
    }
}
