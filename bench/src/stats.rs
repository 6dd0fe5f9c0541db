//! Latency histograms shared by many tasks, and their JSON form.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// A latency histogram in microseconds (3 significant digits), recorded
/// from many tasks. The lock is held only for one `record`, never across an
/// await.
#[derive(Debug)]
pub struct Hist(Mutex<Histogram<u64>>);

impl Hist {
    /// An empty histogram that grows as needed.
    pub fn new() -> Self {
        // 3 significant digits is a valid precision, so this cannot fail.
        let h = Histogram::new(3).unwrap_or_else(|_| unreachable!("sigfig 3 is valid"));
        Hist(Mutex::new(h))
    }

    /// Records one sample.
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        if let Ok(mut h) = self.0.lock() {
            // Auto-resizing histograms accept any value.
            let _ = h.record(us);
        }
    }

    /// Count and percentiles in milliseconds.
    pub fn json(&self) -> Value {
        let Ok(h) = self.0.lock() else {
            return json!({ "count": 0 });
        };
        let ms = |us: u64| us as f64 / 1000.0;
        json!({
            "count": h.len(),
            "mean_ms": h.mean() / 1000.0,
            "p50_ms": ms(h.value_at_quantile(0.50)),
            "p90_ms": ms(h.value_at_quantile(0.90)),
            "p99_ms": ms(h.value_at_quantile(0.99)),
            "max_ms": ms(h.max()),
        })
    }
}
