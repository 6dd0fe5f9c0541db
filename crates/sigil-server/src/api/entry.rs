//! `spire.api.server.entry.v1.Entry`: registration entry administration and
//! the authorized-entry feeds agents sync from. Every batch item is checked
//! on its own and reports its own status; a rejected item changes nothing.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use sigil_datastore::{DataStoreError, EntryMask, ListEntriesRequest, MatchMode};
use sigil_proto::spire::api::server::entry::v1 as pb;
use sigil_proto::spire::api::types;
use sigil_spiffe::TrustDomain;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::authorized::authorized_entries;
use super::convert::{
    entry_from_proto, entry_to_proto, id_from_proto, match_from_proto, selectors_from_proto,
};
use super::limits::{MAX_ENTRY_BATCH, check_batch};
use super::{
    ApiState, authenticate, ds_status, require_admin, require_agent, status_from, status_ok,
};

/// Entries per SyncAuthorizedEntries page, as in SPIRE.
pub const SYNC_PAGE_SIZE: usize = 500;

/// The entry service.
#[derive(Debug, Clone)]
pub struct EntryService {
    state: Arc<ApiState>,
}

impl EntryService {
    /// Wraps the shared state.
    pub fn new(state: Arc<ApiState>) -> Self {
        EntryService { state }
    }

    async fn create_one(
        &self,
        e: &types::Entry,
    ) -> Result<sigil_datastore::RegistrationEntry, Status> {
        let mut entry = entry_from_proto(&self.state.td, e, None)
            .map_err(|m| Status::invalid_argument(format!("failed to convert entry: {m}")))?;
        if !e.id.is_empty() {
            validate_entry_id(&e.id)?;
        }
        entry.revision_number = 0;
        self.state
            .ds
            .create_entry(entry)
            .await
            .map_err(|err| match err {
                DataStoreError::AlreadyExists(_) => {
                    Status::already_exists("similar entry already exists")
                }
                other => ds_status(other),
            })
    }

    async fn update_one(
        &self,
        e: &types::Entry,
        input_mask: Option<&types::EntryMask>,
    ) -> Result<sigil_datastore::RegistrationEntry, Status> {
        if e.id.is_empty() {
            return Err(Status::invalid_argument(
                "failed to convert entry: missing entry ID",
            ));
        }
        let all = super::convert::all_entry_mask();
        let m = input_mask.unwrap_or(&all);
        let entry = entry_from_proto(&self.state.td, e, Some(m))
            .map_err(|msg| Status::invalid_argument(format!("failed to convert entry: {msg}")))?;
        let mask = EntryMask {
            spiffe_id: m.spiffe_id,
            parent_id: m.parent_id,
            selectors: m.selectors,
            x509_svid_ttl: m.x509_svid_ttl,
            jwt_svid_ttl: m.jwt_svid_ttl,
            dns_names: m.dns_names,
            federates_with: m.federates_with,
            admin: m.admin,
            downstream: m.downstream,
            expires_at: m.expires_at,
            hint: m.hint,
            store_svid: m.store_svid,
        };
        self.state
            .ds
            .update_entry(entry, &mask)
            .await
            .map_err(|err| match err {
                DataStoreError::NotFound(_) => Status::not_found("entry not found"),
                DataStoreError::AlreadyExists(_) => {
                    Status::already_exists("similar entry already exists")
                }
                other => ds_status(other),
            })
    }

    fn list_filter(
        &self,
        by_spiffe_id: Option<&types::Spiffeid>,
        by_parent_id: Option<&types::Spiffeid>,
        by_selectors: Option<&types::SelectorMatch>,
        by_federates_with: Option<&types::FederatesWithMatch>,
        by_hint: Option<&String>,
        by_downstream: Option<bool>,
    ) -> Result<ListEntriesRequest, Status> {
        let by_spiffe_id = by_spiffe_id
            .map(|id| id_from_proto(Some(id)))
            .transpose()
            .map_err(|e| Status::invalid_argument(format!("malformed by_spiffe_id filter: {e}")))?;
        let by_parent_id = by_parent_id
            .map(|id| id_from_proto(Some(id)))
            .transpose()
            .map_err(|e| Status::invalid_argument(format!("malformed by_parent_id filter: {e}")))?;
        let by_selectors = match by_selectors {
            None => None,
            Some(m) => {
                if m.selectors.is_empty() {
                    return Err(Status::invalid_argument(
                        "malformed by_selectors filter: empty selector set",
                    ));
                }
                let sels = selectors_from_proto(&m.selectors).map_err(|e| {
                    Status::invalid_argument(format!("malformed by_selectors filter: {e}"))
                })?;
                Some((
                    sels,
                    match_from_proto(m.r#match).map_err(Status::invalid_argument)?,
                ))
            }
        };
        let by_federates_with = match by_federates_with {
            None => None,
            Some(m) => {
                if m.trust_domains.is_empty() {
                    return Err(Status::invalid_argument(
                        "malformed by_federates_with filter: empty trust domain set",
                    ));
                }
                let tds = m
                    .trust_domains
                    .iter()
                    .map(|t| TrustDomain::new(t))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| {
                        Status::invalid_argument(format!("malformed by_federates_with filter: {e}"))
                    })?;
                let mode = match m.r#match {
                    0 => MatchMode::Exact,
                    1 => MatchMode::Subset,
                    2 => MatchMode::Superset,
                    3 => MatchMode::Any,
                    other => {
                        return Err(Status::invalid_argument(format!(
                            "unknown match behavior {other}"
                        )));
                    }
                };
                Some((tds, mode))
            }
        };
        Ok(ListEntriesRequest {
            by_spiffe_id,
            by_parent_id,
            by_selectors,
            by_federates_with,
            by_hint: by_hint.cloned(),
            by_downstream,
            page_size: 0,
            page_token: String::new(),
        })
    }
}

fn validate_entry_id(id: &str) -> Result<(), Status> {
    if id.len() > 255 {
        return Err(Status::invalid_argument(
            "failed to convert entry: entry ID too long",
        ));
    }
    if !id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Status::invalid_argument(
            "failed to convert entry: entry ID contains invalid characters",
        ));
    }
    Ok(())
}

type SyncStream =
    Pin<Box<dyn Stream<Item = Result<pb::SyncAuthorizedEntriesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::entry_server::Entry for EntryService {
    async fn count_entries(
        &self,
        request: Request<pb::CountEntriesRequest>,
    ) -> Result<Response<pb::CountEntriesResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let f = request.into_inner().filter.unwrap_or_default();
        let req = self.list_filter(
            f.by_spiffe_id.as_ref(),
            f.by_parent_id.as_ref(),
            f.by_selectors.as_ref(),
            f.by_federates_with.as_ref(),
            f.by_hint.as_ref(),
            f.by_downstream,
        )?;
        let n = self.state.ds.count_entries(&req).await.map_err(ds_status)?;
        Ok(Response::new(pb::CountEntriesResponse {
            count: i32::try_from(n).unwrap_or(i32::MAX),
        }))
    }

    async fn list_entries(
        &self,
        request: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let r = request.into_inner();
        let f = r.filter.unwrap_or_default();
        let mut req = self.list_filter(
            f.by_spiffe_id.as_ref(),
            f.by_parent_id.as_ref(),
            f.by_selectors.as_ref(),
            f.by_federates_with.as_ref(),
            f.by_hint.as_ref(),
            f.by_downstream,
        )?;
        if r.page_size < 0 {
            return Err(Status::invalid_argument("page_size must not be negative"));
        }
        req.page_size = u32::try_from(r.page_size).unwrap_or(0);
        req.page_token = r.page_token;
        let page = self.state.ds.list_entries(&req).await.map_err(ds_status)?;
        Ok(Response::new(pb::ListEntriesResponse {
            entries: page
                .entries
                .iter()
                .map(|e| entry_to_proto(e, r.output_mask.as_ref()))
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn get_entry(
        &self,
        request: Request<pb::GetEntryRequest>,
    ) -> Result<Response<types::Entry>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let r = request.into_inner();
        if r.id.is_empty() {
            return Err(Status::invalid_argument("missing ID"));
        }
        let entry = self
            .state
            .ds
            .get_entry(&r.id)
            .await
            .map_err(ds_status)?
            .ok_or_else(|| Status::not_found("entry not found"))?;
        Ok(Response::new(entry_to_proto(
            &entry,
            r.output_mask.as_ref(),
        )))
    }

    async fn batch_create_entry(
        &self,
        request: Request<pb::BatchCreateEntryRequest>,
    ) -> Result<Response<pb::BatchCreateEntryResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let r = request.into_inner();
        check_batch(r.entries.len(), MAX_ENTRY_BATCH, "entries")?;
        let mut results = Vec::with_capacity(r.entries.len());
        let mut changed = false;
        for e in &r.entries {
            results.push(match self.create_one(e).await {
                Ok(created) => {
                    changed = true;
                    tracing::info!(entry_id = %created.id, spiffe_id = %created.spiffe_id, "Entry created");
                    pb::batch_create_entry_response::Result {
                        status: Some(status_ok()),
                        entry: Some(entry_to_proto(&created, r.output_mask.as_ref())),
                    }
                }
                Err(s) => pb::batch_create_entry_response::Result {
                    status: Some(status_from(&s)),
                    entry: None,
                },
            });
        }
        if changed {
            self.state.entries_changed().await;
        }
        Ok(Response::new(pb::BatchCreateEntryResponse { results }))
    }

    async fn batch_update_entry(
        &self,
        request: Request<pb::BatchUpdateEntryRequest>,
    ) -> Result<Response<pb::BatchUpdateEntryResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let r = request.into_inner();
        check_batch(r.entries.len(), MAX_ENTRY_BATCH, "entries")?;
        let mut results = Vec::with_capacity(r.entries.len());
        let mut changed = false;
        for e in &r.entries {
            results.push(match self.update_one(e, r.input_mask.as_ref()).await {
                Ok(updated) => {
                    changed = true;
                    pb::batch_update_entry_response::Result {
                        status: Some(status_ok()),
                        entry: Some(entry_to_proto(&updated, r.output_mask.as_ref())),
                    }
                }
                Err(s) => pb::batch_update_entry_response::Result {
                    status: Some(status_from(&s)),
                    entry: None,
                },
            });
        }
        if changed {
            self.state.entries_changed().await;
        }
        Ok(Response::new(pb::BatchUpdateEntryResponse { results }))
    }

    async fn batch_delete_entry(
        &self,
        request: Request<pb::BatchDeleteEntryRequest>,
    ) -> Result<Response<pb::BatchDeleteEntryResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        require_admin(&caller)?;
        let r = request.into_inner();
        check_batch(r.ids.len(), MAX_ENTRY_BATCH, "entry IDs")?;
        let mut results = Vec::with_capacity(r.ids.len());
        let mut changed = false;
        for id in r.ids {
            let status = if id.is_empty() {
                Status::invalid_argument("missing entry ID")
            } else {
                match self.state.ds.delete_entry(&id).await {
                    Ok(_) => {
                        changed = true;
                        Status::ok("OK")
                    }
                    Err(DataStoreError::NotFound(_)) => Status::not_found("entry not found"),
                    Err(e) => ds_status(e),
                }
            };
            results.push(pb::batch_delete_entry_response::Result {
                status: Some(if status.code() == tonic::Code::Ok {
                    status_ok()
                } else {
                    status_from(&status)
                }),
                id,
            });
        }
        if changed {
            self.state.entries_changed().await;
        }
        Ok(Response::new(pb::BatchDeleteEntryResponse { results }))
    }

    async fn get_authorized_entries(
        &self,
        request: Request<pb::GetAuthorizedEntriesRequest>,
    ) -> Result<Response<pb::GetAuthorizedEntriesResponse>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        let agent = require_agent(&caller)?.clone();
        let mask = request.into_inner().output_mask;
        let entries = authorized_entries(&self.state, &agent);
        Ok(Response::new(pb::GetAuthorizedEntriesResponse {
            entries: entries
                .iter()
                .map(|e| entry_to_proto(e, mask.as_ref()))
                .collect(),
        }))
    }

    type SyncAuthorizedEntriesStream = SyncStream;

    async fn sync_authorized_entries(
        &self,
        request: Request<Streaming<pb::SyncAuthorizedEntriesRequest>>,
    ) -> Result<Response<Self::SyncAuthorizedEntriesStream>, Status> {
        let caller = authenticate(&self.state, &request).await?;
        let agent = require_agent(&caller)?.clone();
        let mut incoming = request.into_inner();
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("stream closed before the initial request"))?;
        if !first.ids.is_empty() {
            return Err(Status::invalid_argument(
                "specifying IDs on initial request is not supported",
            ));
        }
        if first
            .output_mask
            .as_ref()
            .is_some_and(|m| !m.revision_number)
        {
            return Err(Status::invalid_argument("revision number cannot be masked"));
        }
        let mask = first.output_mask;
        // Ordered by entry ID.
        let entries = authorized_entries(&self.state, &agent);
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            if entries.len() <= SYNC_PAGE_SIZE {
                let _ = tx
                    .send(Ok(pb::SyncAuthorizedEntriesResponse {
                        entry_revisions: Vec::new(),
                        entries: entries
                            .iter()
                            .map(|e| entry_to_proto(e, mask.as_ref()))
                            .collect(),
                        more: false,
                    }))
                    .await;
                return;
            }
            // Sparse mode: revisions first, then full entries on request.
            let chunks: Vec<_> = entries.chunks(SYNC_PAGE_SIZE).collect();
            let last = chunks.len().saturating_sub(1);
            for (i, chunk) in chunks.iter().enumerate() {
                let page = pb::SyncAuthorizedEntriesResponse {
                    entry_revisions: chunk
                        .iter()
                        .map(|e| pb::EntryRevision {
                            id: e.id.clone(),
                            revision_number: e.revision_number,
                            created_at: e.created_at,
                        })
                        .collect(),
                    entries: Vec::new(),
                    more: i != last,
                };
                if tx.send(Ok(page)).await.is_err() {
                    return;
                }
            }
            loop {
                let req = match incoming.message().await {
                    Ok(Some(r)) => r,
                    Ok(None) => return,
                    Err(s) if s.code() == tonic::Code::Cancelled => return,
                    Err(s) => {
                        let _ = tx.send(Err(s)).await;
                        return;
                    }
                };
                let mut ids = req.ids;
                ids.sort();
                let wanted: Vec<_> = ids
                    .iter()
                    .filter_map(|id| {
                        entries
                            .binary_search_by(|e| e.id.as_str().cmp(id))
                            .ok()
                            .map(|i| &entries[i])
                    })
                    .collect();
                let mut pages: Vec<Vec<types::Entry>> = wanted
                    .chunks(SYNC_PAGE_SIZE)
                    .map(|c| c.iter().map(|e| entry_to_proto(e, mask.as_ref())).collect())
                    .collect();
                if pages.is_empty() {
                    pages.push(Vec::new());
                }
                let last = pages.len() - 1;
                for (i, page) in pages.into_iter().enumerate() {
                    let resp = pb::SyncAuthorizedEntriesResponse {
                        entry_revisions: Vec::new(),
                        entries: page,
                        more: i != last,
                    };
                    if tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                }
            }
        });
        let out: SyncStream = Box::pin(ReceiverStream::new(rx));
        Ok(Response::new(out))
    }
}
