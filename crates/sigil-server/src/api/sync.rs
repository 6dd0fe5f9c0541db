//! `sigil.api.server.sync.v1.Sync`: sigil's push channel to its agents.
//! An agent holds one WatchChanges stream open and syncs whenever a message
//! arrives, so a new or changed entry reaches it at once instead of at its
//! next poll. The message carries no data; the agent fetches what changed
//! through the ordinary SPIRE RPCs, so authorization stays in one place.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use sigil_proto::sigil::api::server::sync::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{ApiState, authenticate, require_agent};
use crate::endpoints::CallerInfo;

/// Changes closer together than this are announced once.
const COALESCE: Duration = Duration::from_millis(20);

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
        require_agent(&caller)?;
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
        let mut changes = self.state.changes.subscribe();
        let mut bundles = self.state.ca.subscribe_bundle();
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let mut revision = 0u64;
            let mut end = std::pin::pin!(end);
            loop {
                tokio::select! {
                    r = tx.send(Ok(pb::WatchChangesResponse { revision, ..Default::default() })) => if r.is_err() { return },
                    () = &mut end => return,
                }
                tokio::select! {
                    r = changes.changed() => if r.is_err() { return },
                    r = bundles.changed() => if r.is_err() { return },
                    () = tx.closed() => return,
                    () = &mut end => return,
                }
                tokio::time::sleep(COALESCE).await;
                changes.borrow_and_update();
                bundles.borrow_and_update();
                revision += 1;
            }
        });
        let out: ChangeStream = Box::pin(ReceiverStream::new(rx));
        Ok(Response::new(out))
    }
}
