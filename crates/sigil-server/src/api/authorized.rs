//! Which registration entries an agent may serve, answered from the
//! in-memory [`crate::index::EntryIndex`] (never the datastore): every entry
//! descending (through parent IDs) from the agent's own ID, and from each
//! node alias the agent belongs to. Expired entries are left out.

use std::sync::Arc;

use sigil_datastore::{AttestedNode, RegistrationEntry};

use super::ApiState;

/// The entries `agent` is authorized for, ordered by entry ID.
pub fn authorized_entries(state: &ApiState, agent: &AttestedNode) -> Vec<Arc<RegistrationEntry>> {
    state.index.authorized(agent)
}

/// One authorized entry by ID (found by walking up from the entry, so it
/// costs the same however many entries the agent holds).
pub fn authorized_entry(
    state: &ApiState,
    agent: &AttestedNode,
    entry_id: &str,
) -> Option<Arc<RegistrationEntry>> {
    state.index.authorized_entry(agent, entry_id)
}
