//! Keeping every configured BundlePublisher current: each publisher gets
//! the trust bundle at start and after every change of the CA's bundle
//! watch (SPIRE's `pubmanager`, which publishes on every bundle update).
//! A failure is logged and retried with exponential backoff until it
//! succeeds or a newer bundle supersedes it; a bundle a publisher already
//! took is not sent to it again.
//!
//! This module owns the publishing loop only. It never writes the bundle
//! and never holds anything the CA waits on: it reads the watch and each
//! publisher runs in its own task, so a slow or broken destination delays
//! nobody but itself.

use std::sync::Arc;
use std::time::Duration;

use sigil_plugin::bundlepublisher::BundlePublisher;
use sigil_spiffe::Bundle;
use tokio::sync::watch;

/// How long to wait before retrying a failed publish: `initial`, doubled
/// after each further failure up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

/// Starts one publishing task per publisher; they end when the bundle
/// watch's sender is dropped.
pub fn spawn(
    publishers: &[Arc<dyn BundlePublisher>],
    bundles: &watch::Receiver<Arc<Bundle>>,
    backoff: Backoff,
) {
    for publisher in publishers {
        tokio::spawn(run(publisher.clone(), bundles.clone(), backoff));
    }
}

/// Publishes the current bundle to `publisher` now and after every change,
/// retrying failures, until the watch closes.
pub async fn run(
    publisher: Arc<dyn BundlePublisher>,
    mut bundles: watch::Receiver<Arc<Bundle>>,
    backoff: Backoff,
) {
    let mut published: Option<Arc<Bundle>> = None;
    let mut wait = backoff.initial;
    loop {
        let current = bundles.borrow_and_update().clone();
        if published.as_deref() != Some(&*current) {
            match publisher.publish(&current).await {
                Ok(()) => {
                    tracing::info!(
                        plugin = publisher.name(),
                        sequence = current.sequence_number,
                        "Bundle published"
                    );
                    published = Some(current);
                    wait = backoff.initial;
                }
                Err(e) => {
                    tracing::error!(
                        plugin = publisher.name(),
                        error = %e,
                        retry_in = ?wait,
                        "Failed to publish bundle"
                    );
                    // Retry after the wait, or at once if a newer bundle
                    // arrives meanwhile.
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        changed = bundles.changed() => if changed.is_err() { return },
                    }
                    wait = (wait * 2).min(backoff.max);
                    continue;
                }
            }
        }
        if bundles.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use sigil_plugin::bundlepublisher::PublishError;
    use sigil_spiffe::TrustDomain;

    use super::*;

    /// Records what it was asked to publish; fails the first `failures`.
    #[derive(Debug)]
    struct Recorder {
        failures: AtomicUsize,
        calls: tokio::sync::Mutex<Vec<u64>>,
        taken: watch::Sender<Vec<u64>>,
    }

    #[async_trait]
    impl BundlePublisher for Recorder {
        fn name(&self) -> &'static str {
            "recorder"
        }
        async fn publish(&self, bundle: &Bundle) -> Result<(), PublishError> {
            self.calls.lock().await.push(bundle.sequence_number);
            if self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(PublishError::Destination("down".into()));
            }
            self.taken.send_modify(|t| t.push(bundle.sequence_number));
            Ok(())
        }
    }

    fn bundle(seq: u64) -> Arc<Bundle> {
        let mut b = Bundle::new(TrustDomain::new("example.org").unwrap());
        b.sequence_number = seq;
        Arc::new(b)
    }

    fn recorder(failures: usize) -> (Arc<Recorder>, watch::Receiver<Vec<u64>>) {
        let (taken, rx) = watch::channel(Vec::new());
        (
            Arc::new(Recorder {
                failures: AtomicUsize::new(failures),
                calls: tokio::sync::Mutex::new(Vec::new()),
                taken,
            }),
            rx,
        )
    }

    const FAST: Backoff = Backoff {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(20),
    };

    async fn until(rx: &mut watch::Receiver<Vec<u64>>, want: &[u64]) {
        let done = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|t| t == want))
            .await
            .map(|r| r.is_ok());
        assert_eq!(
            done,
            Ok(true),
            "published {:?}, want {want:?}",
            *rx.borrow()
        );
    }

    #[tokio::test]
    async fn the_bundle_is_published_at_start_and_on_every_change_once() {
        let (p, mut taken) = recorder(0);
        let (tx, rx) = watch::channel(bundle(1));
        spawn(&[p.clone() as Arc<dyn BundlePublisher>], &rx, FAST);
        until(&mut taken, &[1]).await;
        tx.send_replace(bundle(2));
        until(&mut taken, &[1, 2]).await;
        // The same bundle again (a new Arc, equal contents) is skipped.
        tx.send_replace(bundle(2));
        tx.send_replace(bundle(3));
        until(&mut taken, &[1, 2, 3]).await;
        assert_eq!(*p.calls.lock().await, [1, 2, 3]);
    }

    #[tokio::test]
    async fn a_failed_publish_is_retried_until_it_succeeds() {
        let (p, mut taken) = recorder(3);
        let (_tx, rx) = watch::channel(bundle(7));
        spawn(&[p.clone() as Arc<dyn BundlePublisher>], &rx, FAST);
        until(&mut taken, &[7]).await;
        assert_eq!(*p.calls.lock().await, [7, 7, 7, 7]);
    }

    #[tokio::test]
    async fn a_newer_bundle_supersedes_a_failing_one_without_waiting() {
        let (p, mut taken) = recorder(1);
        let (tx, rx) = watch::channel(bundle(1));
        let slow = Backoff {
            initial: Duration::from_secs(3600),
            max: Duration::from_secs(3600),
        };
        spawn(&[p.clone() as Arc<dyn BundlePublisher>], &rx, slow);
        tokio::time::timeout(Duration::from_secs(5), async {
            while p.calls.lock().await.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        tx.send_replace(bundle(2));
        until(&mut taken, &[2]).await;
    }

    #[tokio::test]
    async fn the_task_ends_when_the_ca_is_gone() {
        let (p, mut taken) = recorder(0);
        let (tx, rx) = watch::channel(bundle(1));
        let task = tokio::spawn(run(p, rx, FAST));
        until(&mut taken, &[1]).await;
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
