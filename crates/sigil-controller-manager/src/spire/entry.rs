//! The SPIRE entry API (`spire.api.server.entry.v1`).

use sigil_proto::MAX_ENTRY_BATCH;
use sigil_proto::spire::api::server::entry::v1 as pb;
use sigil_proto::spire::api::types::Entry;
use tonic::transport::Channel;

use super::{ApiError, Outcomes, outcome};

/// An entry API client on the admin socket.
pub type EntryClient = pb::entry_client::EntryClient<Channel>;

/// Lists every entry, page by page.
pub async fn list(client: &mut EntryClient) -> Result<Vec<Entry>, ApiError> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let resp = client
            .list_entries(pb::ListEntriesRequest {
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .map_err(|status| ApiError {
                call: "ListEntries",
                status,
            })?
            .into_inner();
        out.extend(resp.entries);
        if resp.next_page_token.is_empty() {
            return Ok(out);
        }
        page_token = resp.next_page_token;
    }
}

/// `BatchCreateEntry`, in batches of at most [`MAX_ENTRY_BATCH`].
pub async fn create(client: &mut EntryClient, entries: Vec<Entry>) -> Result<Outcomes, ApiError> {
    let mut out = Outcomes::new();
    for batch in entries.chunks(MAX_ENTRY_BATCH) {
        let resp = client
            .batch_create_entry(pb::BatchCreateEntryRequest {
                entries: batch.to_vec(),
                ..Default::default()
            })
            .await
            .map_err(|status| ApiError {
                call: "BatchCreateEntry",
                status,
            })?;
        out.extend(
            resp.into_inner()
                .results
                .into_iter()
                .map(|r| outcome(r.status)),
        );
    }
    Ok(out)
}

/// `BatchUpdateEntry` of every field, in batches of at most [`MAX_ENTRY_BATCH`].
pub async fn update(client: &mut EntryClient, entries: Vec<Entry>) -> Result<Outcomes, ApiError> {
    let mut out = Outcomes::new();
    for batch in entries.chunks(MAX_ENTRY_BATCH) {
        let resp = client
            .batch_update_entry(pb::BatchUpdateEntryRequest {
                entries: batch.to_vec(),
                ..Default::default()
            })
            .await
            .map_err(|status| ApiError {
                call: "BatchUpdateEntry",
                status,
            })?;
        out.extend(
            resp.into_inner()
                .results
                .into_iter()
                .map(|r| outcome(r.status)),
        );
    }
    Ok(out)
}

/// `BatchDeleteEntry`, in batches of at most [`MAX_ENTRY_BATCH`].
pub async fn delete(client: &mut EntryClient, ids: Vec<String>) -> Result<Outcomes, ApiError> {
    let mut out = Outcomes::new();
    for batch in ids.chunks(MAX_ENTRY_BATCH) {
        let resp = client
            .batch_delete_entry(pb::BatchDeleteEntryRequest {
                ids: batch.to_vec(),
            })
            .await
            .map_err(|status| ApiError {
                call: "BatchDeleteEntry",
                status,
            })?;
        out.extend(
            resp.into_inner()
                .results
                .into_iter()
                .map(|r| outcome(r.status)),
        );
    }
    Ok(out)
}
