//! The SPIRE entry API (`spire.api.server.entry.v1`).

use sigil_proto::MAX_ENTRY_BATCH;
use sigil_proto::spire::api::server::entry::v1 as pb;
use sigil_proto::spire::api::types::{Entry, Status};
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

/// Sends `items` in batches of at most [`MAX_ENTRY_BATCH`] through `send`
/// (one batch RPC named `call`, answering one status per item), and
/// collects the items' outcomes in order.
async fn in_batches<T: Clone>(
    items: &[T],
    call: &'static str,
    mut send: impl AsyncFnMut(Vec<T>) -> Result<Vec<Option<Status>>, tonic::Status>,
) -> Result<Outcomes, ApiError> {
    let mut out = Outcomes::new();
    for batch in items.chunks(MAX_ENTRY_BATCH) {
        let statuses = send(batch.to_vec())
            .await
            .map_err(|status| ApiError { call, status })?;
        out.extend(statuses.into_iter().map(outcome));
    }
    Ok(out)
}

/// `BatchCreateEntry`, in batches of at most [`MAX_ENTRY_BATCH`].
pub async fn create(client: &mut EntryClient, entries: Vec<Entry>) -> Result<Outcomes, ApiError> {
    in_batches(&entries, "BatchCreateEntry", async |entries| {
        let resp = client
            .batch_create_entry(pb::BatchCreateEntryRequest {
                entries,
                ..Default::default()
            })
            .await?;
        Ok(resp
            .into_inner()
            .results
            .into_iter()
            .map(|r| r.status)
            .collect())
    })
    .await
}

/// `BatchUpdateEntry` of every field, in batches of at most [`MAX_ENTRY_BATCH`].
pub async fn update(client: &mut EntryClient, entries: Vec<Entry>) -> Result<Outcomes, ApiError> {
    in_batches(&entries, "BatchUpdateEntry", async |entries| {
        let resp = client
            .batch_update_entry(pb::BatchUpdateEntryRequest {
                entries,
                ..Default::default()
            })
            .await?;
        Ok(resp
            .into_inner()
            .results
            .into_iter()
            .map(|r| r.status)
            .collect())
    })
    .await
}

/// `BatchDeleteEntry`, in batches of at most [`MAX_ENTRY_BATCH`].
pub async fn delete(client: &mut EntryClient, ids: Vec<String>) -> Result<Outcomes, ApiError> {
    in_batches(&ids, "BatchDeleteEntry", async |ids| {
        let resp = client
            .batch_delete_entry(pb::BatchDeleteEntryRequest { ids })
            .await?;
        Ok(resp
            .into_inner()
            .results
            .into_iter()
            .map(|r| r.status)
            .collect())
    })
    .await
}
