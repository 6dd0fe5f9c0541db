//! Housekeeping the server does on its own schedule: registration entries
//! past their `expires_at`, expired join tokens, old change events and,
//! when `prune_attested_nodes_expired_for` is set, agents whose SVID
//! expired that long ago.
//!
//! Every job deletes in bounded batches, each batch its own short
//! transaction, and yields between batches, so a backlog of a million rows
//! never holds a lock or the runtime long enough to stall the APIs. The
//! cadences are SPIRE's: entries every 5 minutes, events every half of
//! `prune_events_older_than`, agents hourly; join tokens every minute.
//!
//! This module decides when and how much; what counts as expired, banned
//! or re-attestable is the datastore's rule ([`DataStore::prune_attested_nodes`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sigil_datastore::{DataStore, DataStoreError};
use sigil_plugin::clock::Clock;

/// SPIRE's default for `experimental.prune_events_older_than`.
pub const DEFAULT_EVENTS_OLDER_THAN: Duration = Duration::from_secs(12 * 3600);
/// How often expired registration entries are pruned (SPIRE's cadence).
pub const ENTRY_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// How often expired agents are pruned, when enabled (SPIRE's cadence).
pub const NODE_INTERVAL: Duration = Duration::from_secs(3600);
/// How often expired join tokens are pruned.
pub const JOIN_TOKEN_INTERVAL: Duration = Duration::from_secs(60);
/// Rows deleted per transaction.
pub const BATCH: u32 = 500;

/// What the configuration asks to prune beyond the always-on jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneConfig {
    /// `experimental.prune_events_older_than`: entry and node change events
    /// older than this go.
    pub events_older_than: Duration,
    /// `prune_attested_nodes_expired_for`: agents whose SVID expired longer
    /// ago than this go; `None` keeps them (SPIRE's default).
    pub attested_nodes_expired_for: Option<Duration>,
    /// `prune_tofu_nodes`: also prune agents that cannot re-attest.
    pub tofu_nodes: bool,
    /// `prune_attested_nodes_batch_size`: agents deleted per transaction.
    pub attested_nodes_batch_size: u32,
}

/// SPIRE's default for `prune_attested_nodes_batch_size`.
pub const DEFAULT_ATTESTED_NODES_BATCH_SIZE: u32 = 1000;

impl Default for PruneConfig {
    fn default() -> Self {
        PruneConfig {
            events_older_than: DEFAULT_EVENTS_OLDER_THAN,
            attested_nodes_expired_for: None,
            tofu_nodes: false,
            attested_nodes_batch_size: DEFAULT_ATTESTED_NODES_BATCH_SIZE,
        }
    }
}

/// Runs the pruning jobs against one datastore.
pub struct Pruner {
    ds: Arc<dyn DataStore>,
    clock: Arc<dyn Clock>,
    config: PruneConfig,
    batch: u32,
}

impl std::fmt::Debug for Pruner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pruner")
            .field("config", &self.config)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl Pruner {
    /// A pruner deleting [`BATCH`] rows per transaction.
    pub fn new(ds: Arc<dyn DataStore>, clock: Arc<dyn Clock>, config: PruneConfig) -> Self {
        Pruner {
            ds,
            clock,
            config,
            batch: BATCH,
        }
    }

    /// The same pruner with another batch size (tests use small ones).
    pub fn with_batch(mut self, batch: u32) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Deletes every registration entry whose `expires_at` has passed;
    /// returns how many went.
    pub async fn expired_entries(&self) -> Result<u64, DataStoreError> {
        let now = self.clock.unix_now();
        drain(self.batch, || self.ds.prune_entries(now, self.batch)).await
    }

    /// Deletes expired join tokens; returns how many went.
    pub async fn expired_join_tokens(&self) -> Result<u64, DataStoreError> {
        self.ds.prune_join_tokens(self.clock.unix_now()).await
    }

    /// Deletes entry and node events older than `prune_events_older_than`;
    /// returns how many of each went.
    pub async fn old_events(&self) -> Result<(u64, u64), DataStoreError> {
        let cutoff = self
            .clock
            .unix_now()
            .saturating_sub(secs(self.config.events_older_than));
        let entries = drain(self.batch, || {
            self.ds.prune_entry_events(cutoff, self.batch)
        })
        .await?;
        let nodes = drain(self.batch, || self.ds.prune_node_events(cutoff, self.batch)).await?;
        Ok((entries, nodes))
    }

    /// Deletes agents whose SVID expired longer ago than
    /// `prune_attested_nodes_expired_for` (nothing when it is unset);
    /// returns how many went.
    pub async fn expired_agents(&self) -> Result<u64, DataStoreError> {
        let Some(expired_for) = self.config.attested_nodes_expired_for else {
            return Ok(0);
        };
        let cutoff = self.clock.unix_now().saturating_sub(secs(expired_for));
        let batch = self.config.attested_nodes_batch_size.max(1);
        drain(batch, || async {
            let pruned = self
                .ds
                .prune_attested_nodes(cutoff, self.config.tofu_nodes, batch)
                .await?;
            for id in &pruned {
                tracing::info!(agent_id = %id, "pruned agent whose SVID expired before the pruning age");
            }
            Ok(pruned.len() as u64)
        })
        .await
    }

    /// Starts every job on its cadence, for the life of the process.
    pub fn spawn(self: Arc<Self>) {
        let events_every = (self.config.events_older_than / 2).max(Duration::from_secs(1));
        self.clone().every(
            ENTRY_INTERVAL,
            "expired registration entries",
            |p| async move { p.expired_entries().await },
        );
        self.clone()
            .every(JOIN_TOKEN_INTERVAL, "expired join tokens", |p| async move {
                p.expired_join_tokens().await
            });
        self.clone()
            .every(events_every, "old change events", |p| async move {
                p.old_events().await.map(|(e, n)| e + n)
            });
        if self.config.attested_nodes_expired_for.is_some() {
            self.every(NODE_INTERVAL, "expired agents", |p| async move {
                p.expired_agents().await
            });
        }
    }

    fn every<F, Fut>(self: Arc<Self>, period: Duration, what: &'static str, job: F)
    where
        F: Fn(Arc<Self>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<u64, DataStoreError>> + Send,
    {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match job(self.clone()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(pruned = n, "pruned {what}"),
                    Err(e) => tracing::warn!(error = %e, "could not prune {what}"),
                }
            }
        });
    }
}

/// Runs `step` (one bounded batch) until a batch comes back short, yielding
/// between batches; returns the total.
async fn drain<F, Fut>(batch: u32, mut step: F) -> Result<u64, DataStoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, DataStoreError>>,
{
    let mut total = 0;
    loop {
        let n = step().await?;
        total += n;
        if n < u64::from(batch) {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use sigil_datastore::{AttestedNode, ListEntriesRequest, ListNodesRequest, RegistrationEntry};
    use sigil_plugin::clock::ManualClock;
    use sigil_spiffe::{Selector, SpiffeId};

    use super::*;

    const START: u64 = 1_000_000;

    async fn store() -> (tempfile::TempDir, Arc<dyn DataStore>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ds.sqlite3");
        let ds = sigil_datastore::open("sqlite3", path.to_str().expect("utf-8 path"))
            .await
            .expect("open sqlite");
        (dir, ds)
    }

    fn clock() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(START)))
    }

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).expect("id")
    }

    fn entry(n: u32, expires_at: i64) -> RegistrationEntry {
        RegistrationEntry {
            id: String::new(),
            spiffe_id: id(&format!("spiffe://td/w{n}")),
            parent_id: id("spiffe://td/agent"),
            selectors: vec![Selector::parse("unix:uid:1").expect("selector")],
            x509_svid_ttl: 0,
            jwt_svid_ttl: 0,
            dns_names: Vec::new(),
            federates_with: Vec::new(),
            admin: false,
            downstream: false,
            expires_at,
            hint: String::new(),
            store_svid: false,
            revision_number: 0,
            created_at: 0,
        }
    }

    fn agent(name: &str, not_after: i64) -> AttestedNode {
        AttestedNode {
            spiffe_id: id(&format!("spiffe://td/spire/agent/{name}")),
            attestation_data_type: "join_token".into(),
            cert_serial_number: "1".into(),
            cert_not_after: not_after,
            new_cert_serial_number: String::new(),
            new_cert_not_after: 0,
            can_reattest: true,
            selectors: Vec::new(),
        }
    }

    fn now() -> i64 {
        START as i64
    }

    #[tokio::test]
    async fn expired_entries_go_in_several_bounded_batches_and_live_ones_stay() {
        let (_dir, ds) = store().await;
        for n in 0..7 {
            ds.create_entry(entry(n, now() - 10 - i64::from(n)))
                .await
                .expect("expired entry");
        }
        ds.create_entry(entry(100, now() + 3600))
            .await
            .expect("live");
        ds.create_entry(entry(101, 0)).await.expect("never expires");
        let pruner = Pruner::new(ds.clone(), clock(), PruneConfig::default()).with_batch(3);

        assert_eq!(pruner.expired_entries().await.expect("prune"), 7);
        let left = ds
            .list_entries(&ListEntriesRequest::default())
            .await
            .expect("list")
            .entries;
        let mut left: Vec<String> = left.into_iter().map(|e| e.spiffe_id.to_string()).collect();
        left.sort();
        assert_eq!(left, ["spiffe://td/w100", "spiffe://td/w101"]);
        assert_eq!(pruner.expired_entries().await.expect("again"), 0);
    }

    #[tokio::test]
    async fn agents_are_pruned_only_when_configured_and_only_past_the_age() {
        let (_dir, ds) = store().await;
        ds.create_attested_node(agent("recent", now() - 1800))
            .await
            .expect("recent");
        ds.create_attested_node(agent("old", now() - 7200))
            .await
            .expect("old");
        let unset = Pruner::new(ds.clone(), clock(), PruneConfig::default());
        assert_eq!(unset.expired_agents().await.expect("unset"), 0);

        let config = PruneConfig {
            attested_nodes_expired_for: Some(Duration::from_secs(3600)),
            ..PruneConfig::default()
        };
        let pruner = Pruner::new(ds.clone(), clock(), config);
        assert_eq!(pruner.expired_agents().await.expect("prune"), 1);
        let (nodes, _) = ds
            .list_attested_nodes(&ListNodesRequest::default())
            .await
            .expect("list");
        assert_eq!(
            nodes
                .iter()
                .map(|n| n.spiffe_id.to_string())
                .collect::<Vec<_>>(),
            ["spiffe://td/spire/agent/recent"]
        );
    }

    #[tokio::test]
    async fn events_older_than_the_configured_age_go_and_newer_ones_stay() {
        let (_dir, ds) = store().await;
        ds.create_entry(entry(1, 0)).await.expect("entry");
        let clock = clock();
        // Events carry the wall-clock time they were written at.
        let written_at = SystemTime::now();
        let config = PruneConfig {
            events_older_than: Duration::from_secs(3600),
            ..PruneConfig::default()
        };
        let pruner = Pruner::new(ds.clone(), clock.clone(), config);

        clock.set(written_at + Duration::from_secs(600));
        assert_eq!(pruner.old_events().await.expect("young"), (0, 0));
        assert_eq!(
            ds.list_entry_events_since(0).await.expect("events").len(),
            1
        );

        clock.set(written_at + Duration::from_secs(3700));
        assert_eq!(pruner.old_events().await.expect("old"), (1, 0));
        assert!(
            ds.list_entry_events_since(0)
                .await
                .expect("events")
                .is_empty()
        );
    }
}
