//! The SPIRE entry API (`spire.api.server.entry.v1`) on the server's admin
//! Unix socket.

use std::path::Path;

use sigil_proto::spire::api::server::entry::v1 as pb;
use sigil_proto::spire::api::types::Entry;
use tonic::transport::{Channel, Endpoint};

/// A client that reconnects by itself when the server restarts.
pub type EntryClient = pb::entry_client::EntryClient<Channel>;

/// Why a batch call failed as a whole.
#[derive(Debug, thiserror::Error)]
#[error("{call}: {status}")]
pub struct ApiError {
    /// The RPC.
    pub call: &'static str,
    /// The server's status.
    #[source]
    pub status: tonic::Status,
}

/// Makes a lazily connecting client for the socket at `path`.
pub fn connect(path: &Path) -> EntryClient {
    let path = path.to_owned();
    #[allow(clippy::expect_used)] // a constant, valid URI
    let endpoint = Endpoint::try_from("http://localhost").expect("static URI");
    let channel = endpoint.connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
        let path = path.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(path).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    }));
    pb::entry_client::EntryClient::new(channel)
}

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

/// The per-entry outcome of a batch: `None` when it succeeded, else the
/// server's message.
pub type Outcomes = Vec<Option<String>>;

fn outcome(s: Option<sigil_proto::spire::api::types::Status>) -> Option<String> {
    match s {
        Some(s) if s.code == 0 => None,
        Some(s) => Some(format!("code {}: {}", s.code, s.message)),
        None => Some("no status in the response".to_owned()),
    }
}

/// `BatchCreateEntry`.
pub async fn create(client: &mut EntryClient, entries: Vec<Entry>) -> Result<Outcomes, ApiError> {
    let resp = client
        .batch_create_entry(pb::BatchCreateEntryRequest {
            entries,
            ..Default::default()
        })
        .await
        .map_err(|status| ApiError {
            call: "BatchCreateEntry",
            status,
        })?;
    Ok(resp
        .into_inner()
        .results
        .into_iter()
        .map(|r| outcome(r.status))
        .collect())
}

/// `BatchUpdateEntry` of every field.
pub async fn update(client: &mut EntryClient, entries: Vec<Entry>) -> Result<Outcomes, ApiError> {
    let resp = client
        .batch_update_entry(pb::BatchUpdateEntryRequest {
            entries,
            ..Default::default()
        })
        .await
        .map_err(|status| ApiError {
            call: "BatchUpdateEntry",
            status,
        })?;
    Ok(resp
        .into_inner()
        .results
        .into_iter()
        .map(|r| outcome(r.status))
        .collect())
}

/// `BatchDeleteEntry`.
pub async fn delete(client: &mut EntryClient, ids: Vec<String>) -> Result<Outcomes, ApiError> {
    let resp = client
        .batch_delete_entry(pb::BatchDeleteEntryRequest { ids })
        .await
        .map_err(|status| ApiError {
            call: "BatchDeleteEntry",
            status,
        })?;
    Ok(resp
        .into_inner()
        .results
        .into_iter()
        .map(|r| outcome(r.status))
        .collect())
}
