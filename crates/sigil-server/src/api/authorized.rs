//! Which registration entries an agent may serve: every entry descending
//! (through parent IDs) from the agent's own ID, and from each node alias the
//! agent belongs to. A node alias is an entry parented to the server
//! (`spiffe://<td>/spire/server`) whose selectors are all among the agent's
//! node selectors. Expired entries are left out.
//!
//! This walks the datastore on each call; an in-memory index fed by the
//! entry event feed is the planned replacement for large deployments.

use std::collections::{BTreeMap, BTreeSet};

use sigil_datastore::{AttestedNode, RegistrationEntry};
use tonic::Status;

use super::{ApiState, ds_status};

/// The entries `agent` is authorized for, ordered by entry ID.
pub async fn authorized_entries(
    state: &ApiState,
    agent: &AttestedNode,
) -> Result<Vec<RegistrationEntry>, Status> {
    let now = state.clock.unix_now();
    let mut found: BTreeMap<String, RegistrationEntry> = BTreeMap::new();
    let mut seen_parents = BTreeSet::new();
    let mut frontier = vec![agent.spiffe_id.clone()];

    if !agent.selectors.is_empty() {
        let aliases = state
            .ds
            .list_entries_by_selector_subset(&agent.selectors)
            .await
            .map_err(ds_status)?;
        for alias in aliases {
            if alias.parent_id == state.server_id && !expired(&alias, now) {
                frontier.push(alias.spiffe_id.clone());
            }
        }
    }

    while !frontier.is_empty() {
        frontier.retain(|p| seen_parents.insert(p.clone()));
        if frontier.is_empty() {
            break;
        }
        let children = state
            .ds
            .list_entries_by_parents(&frontier)
            .await
            .map_err(ds_status)?;
        frontier = Vec::new();
        for child in children {
            if expired(&child, now) || found.contains_key(&child.id) {
                continue;
            }
            frontier.push(child.spiffe_id.clone());
            found.insert(child.id.clone(), child);
        }
    }
    Ok(found.into_values().collect())
}

/// Finds one authorized entry by ID.
pub async fn authorized_entry(
    state: &ApiState,
    agent: &AttestedNode,
    entry_id: &str,
) -> Result<Option<RegistrationEntry>, Status> {
    Ok(authorized_entries(state, agent)
        .await?
        .into_iter()
        .find(|e| e.id == entry_id))
}

fn expired(e: &RegistrationEntry, now: i64) -> bool {
    e.expires_at != 0 && e.expires_at < now
}
