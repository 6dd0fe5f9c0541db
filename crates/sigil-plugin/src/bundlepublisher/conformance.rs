//! The conformance suite every BundlePublisher runs: what it publishes is
//! what the destination then holds, publishing the same bundle again is
//! harmless, and a newer bundle replaces the older one.

use std::future::Future;
use std::sync::Arc;

use sigil_spiffe::Bundle;

use super::BundlePublisher;

/// Runs every case. `first` and `second` are two different bundles of the
/// same trust domain; `read_back` returns what the destination holds now.
pub async fn run_all<F, Fut>(
    publisher: Arc<dyn BundlePublisher>,
    first: &Bundle,
    second: &Bundle,
    read_back: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<Bundle>>,
{
    assert_ne!(first, second, "the suite needs two different bundles");
    publisher
        .publish(first)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", publisher.name()));
    assert_eq!(read_back().await.as_ref(), Some(first), "published bundle");
    publisher
        .publish(first)
        .await
        .unwrap_or_else(|e| panic!("{} refused a repeat: {e}", publisher.name()));
    assert_eq!(read_back().await.as_ref(), Some(first), "after a repeat");
    publisher
        .publish(second)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", publisher.name()));
    assert_eq!(read_back().await.as_ref(), Some(second), "replaced");
}
