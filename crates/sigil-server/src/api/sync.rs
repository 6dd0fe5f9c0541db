//! `sigil.api.server.sync.v1.Sync`: sigil's push channel to its agents.
//!
//! An agent holds one WatchChanges stream open. The stream subscribes to the
//! agent's authorized set in the [`crate::index::EntryIndex`], so it wakes
//! only when that set changes, and (when the agent asks with
//! `entry_changes`) carries the change itself: first the whole set, then
//! only what was added, changed or removed. Our bundle travels in the stream
//! too; federated bundle changes ask the agent for a full sync.
//!
//! Authorization stays in one place: the set comes from the same index the
//! SPIRE RPCs read, computed for the authenticated agent.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use prost::Message;
use sigil_proto::sigil::api::server::sync::v1 as pb;
use sigil_proto::spire::api::types;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::bundle::bundle_to_proto_with_taints;
use super::convert::entry_to_proto;
use super::{ApiState, authenticate, require_agent};
use crate::endpoints::CallerInfo;
use crate::index::Push;

/// Encoded entry bytes per message: far below gRPC's 4 MiB default limit,
/// whatever the entries look like.
const PAGE_BYTES: usize = 1024 * 1024;

/// The sync service.
#[derive(Debug, Clone)]
pub struct SyncService {
    state: Arc<ApiState>,
}

impl SyncService {
    /// Wraps the shared state.
    pub fn new(state: Arc<ApiState>) -> Self {
        SyncService { state }
    }
}

type ChangeStream = Pin<Box<dyn Stream<Item = Result<pb::WatchChangesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::sync_server::Sync for SyncService {
    type WatchChangesStream = ChangeStream;

    async fn watch_changes(
        &self,
        request: Request<pb::WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        let agent = require_agent(&caller)?.clone();
        let with_entries = request.get_ref().entry_changes;
        // The stream ends (OK) when its connection reaches its maximum age,
        // so the agent watches again on a new connection.
        let goaway_at = match request.extensions().get::<CallerInfo>() {
            Some(CallerInfo::Tls { goaway_at, .. }) => *goaway_at,
            _ => None,
        };
        let end = async move {
            match goaway_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let mut subscription = self.state.index.subscribe(&agent);
        let mut federated = self.state.changes.subscribe();
        let mut bundles = self.state.ca.subscribe_bundle();
        let state = self.state.clone();
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            let mut end = std::pin::pin!(end);
            let bundle = |state: &ApiState| {
                bundle_to_proto_with_taints(&state.ca.bundle(), &state.ca.bundle_taints())
            };
            // First: the whole set (or a bare signal for older agents).
            let mut revision = subscription.revision;
            let first: Vec<pb::WatchChangesResponse> = if with_entries {
                let initial = std::mem::take(&mut subscription.initial);
                pages(revision, true, &initial, Vec::new(), Some(bundle(&state)))
            } else {
                vec![signal(revision)]
            };
            bundles.borrow_and_update();
            federated.borrow_and_update();
            if !send_all(&tx, first, &mut end).await {
                return;
            }
            loop {
                let messages = tokio::select! {
                    push = subscription.changes.recv() => match push {
                        // Deleted, banned, or too slow: the agent watches
                        // again and starts over (or is refused).
                        None => return,
                        Some(first) => {
                            let mut push = first;
                            // Fold whatever else is queued into one change.
                            while let Ok(next) = subscription.changes.try_recv() {
                                push = merge(push, next);
                            }
                            revision = push.revision;
                            if with_entries {
                                let removed = push.removed.iter().map(|k| k.to_string()).collect();
                                pages(revision, false, &push.upserted, removed, None)
                            } else {
                                vec![signal(revision)]
                            }
                        }
                    },
                    r = bundles.changed() => {
                        if r.is_err() { return }
                        bundles.borrow_and_update();
                        if with_entries {
                            vec![pb::WatchChangesResponse { revision, bundle: Some(bundle(&state)), ..Default::default() }]
                        } else {
                            vec![signal(revision)]
                        }
                    },
                    r = federated.changed() => {
                        if r.is_err() { return }
                        federated.borrow_and_update();
                        vec![pb::WatchChangesResponse { revision, resync: with_entries, ..Default::default() }]
                    },
                    () = tx.closed() => return,
                    () = &mut end => return,
                };
                if !send_all(&tx, messages, &mut end).await {
                    return;
                }
            }
        });
        let out: ChangeStream = Box::pin(ReceiverStream::new(rx));
        Ok(Response::new(out))
    }
}

/// A message that only says "something changed" (agents that did not ask
/// for entry changes sync on it).
fn signal(revision: u64) -> pb::WatchChangesResponse {
    pb::WatchChangesResponse {
        revision,
        ..Default::default()
    }
}

/// Two queued changes as one: later state wins per entry.
fn merge(mut a: Push, b: Push) -> Push {
    for e in &b.upserted {
        a.removed.retain(|k| **k != *e.id);
        a.upserted.retain(|x| x.id != e.id);
    }
    for k in &b.removed {
        a.upserted.retain(|x| *x.id != **k);
        if !a.removed.contains(k) {
            a.removed.push(k.clone());
        }
    }
    a.upserted.extend(b.upserted);
    a.revision = b.revision;
    a
}

/// One change as messages of at most [`PAGE_BYTES`] of entries each; the
/// first carries `reset` and `bundle`, all but the last carry `more`.
fn pages(
    revision: u64,
    reset: bool,
    upserted: &[Arc<sigil_datastore::RegistrationEntry>],
    removed: Vec<String>,
    bundle: Option<types::Bundle>,
) -> Vec<pb::WatchChangesResponse> {
    let mut out: Vec<pb::EntryChanges> = vec![pb::EntryChanges {
        reset,
        removed,
        ..Default::default()
    }];
    let mut bytes = out[0].encoded_len();
    for e in upserted {
        let entry = entry_to_proto(e, None);
        let len = entry.encoded_len() + 8;
        if bytes + len > PAGE_BYTES && !out.last().is_none_or(|p| p.upserted.is_empty()) {
            out.push(pb::EntryChanges::default());
            bytes = 0;
        }
        bytes += len;
        if let Some(page) = out.last_mut() {
            page.upserted.push(entry);
        }
    }
    let last = out.len() - 1;
    let mut bundle = bundle;
    out.into_iter()
        .enumerate()
        .map(|(i, mut page)| {
            page.more = i != last;
            pb::WatchChangesResponse {
                revision,
                entries: Some(page),
                bundle: bundle.take(),
                resync: false,
            }
        })
        .collect()
}

/// Sends messages in order; false when the stream is over.
async fn send_all(
    tx: &mpsc::Sender<Result<pb::WatchChangesResponse, Status>>,
    messages: Vec<pb::WatchChangesResponse>,
    end: &mut Pin<&mut impl std::future::Future<Output = ()>>,
) -> bool {
    for m in messages {
        tokio::select! {
            r = tx.send(Ok(m)) => if r.is_err() { return false },
            () = end.as_mut() => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_datastore::RegistrationEntry;
    use sigil_spiffe::{Selector, SpiffeId};

    fn entry(id: &str, selectors: usize) -> Arc<RegistrationEntry> {
        Arc::new(RegistrationEntry {
            id: id.into(),
            spiffe_id: SpiffeId::parse("spiffe://td/w").expect("id"),
            parent_id: SpiffeId::parse("spiffe://td/spire/agent/a").expect("id"),
            selectors: (0..selectors)
                .map(|i| Selector::new("unix", &format!("uid:{i:0>200}")).expect("selector"))
                .collect(),
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
        })
    }

    #[test]
    fn a_large_set_is_split_into_pages_below_the_message_limit() {
        let set: Vec<_> = (0..3000).map(|i| entry(&format!("e{i:05}"), 4)).collect();
        let msgs = pages(7, true, &set, Vec::new(), Some(types::Bundle::default()));
        assert!(msgs.len() > 1, "{} pages", msgs.len());
        let total: usize = msgs
            .iter()
            .map(|m| m.entries.as_ref().map_or(0, |e| e.upserted.len()))
            .sum();
        assert_eq!(total, 3000);
        for (i, m) in msgs.iter().enumerate() {
            assert!(m.encoded_len() <= PAGE_BYTES + 4096, "page {i} too big");
            let e = m.entries.as_ref().expect("entries");
            assert_eq!(e.reset, i == 0, "only the first page resets");
            assert_eq!(e.more, i != msgs.len() - 1);
            assert_eq!(m.bundle.is_some(), i == 0);
        }
    }

    #[test]
    fn an_empty_change_is_one_message() {
        let msgs = pages(1, true, &[], Vec::new(), None);
        assert_eq!(msgs.len(), 1);
        assert!(!msgs[0].entries.as_ref().expect("entries").more);
    }

    #[test]
    fn merged_changes_keep_the_latest_state_of_each_entry() {
        let a = Push {
            revision: 1,
            upserted: vec![entry("x", 1), entry("y", 1)],
            removed: vec![Arc::from("z")],
        };
        let b = Push {
            revision: 2,
            upserted: vec![entry("z", 1)],
            removed: vec![Arc::from("x")],
        };
        let m = merge(a, b);
        assert_eq!(m.revision, 2);
        let up: Vec<_> = m.upserted.iter().map(|e| e.id.clone()).collect();
        assert_eq!(up, ["y", "z"]);
        let rm: Vec<_> = m.removed.iter().map(|k| k.to_string()).collect();
        assert_eq!(rm, ["x"]);
    }
}
