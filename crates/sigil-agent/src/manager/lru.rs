//! Which authorized entries hold an X509-SVID: SPIRE's LRU rules for
//! `x509_svid_cache_max_size`.
//!
//! - Entries of callers being served (an open Workload API or SDS stream,
//!   a fetch in progress) always hold one, even beyond the cache size: a
//!   connected workload is never denied its identity.
//! - The other SVIDs fill what room is left, most recently used first;
//!   the least recently used beyond it are dropped.
//! - While there is room, entries without an SVID are signed ahead of any
//!   caller (in entry ID order), so an agent with fewer entries than the
//!   cache size holds them all, as SPIRE does.
//!
//! Pure functions over entry IDs: the sync decides, this module only
//! plans. It never signs, never looks at certificates.

use std::collections::{BTreeSet, HashMap};

/// What to change in the SVID cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SvidPlan {
    /// Entries whose SVID is dropped (least recently used first).
    pub evict: Vec<String>,
    /// Entries without an SVID to sign now: those of callers being served
    /// first, then others while there is room, each group in entry ID
    /// order.
    pub create: Vec<String>,
}

/// Plans the SVID cache.
///
/// `authorized` are the authorized entry IDs, `cached` those holding an
/// SVID (all authorized), `subscribed` those of callers being served,
/// `last_use` when each entry's SVID was last used (larger is more recent;
/// never used counts as oldest). `max` is the cache size. With `fill`
/// false nothing is signed ahead of callers (on-demand signing between
/// syncs).
pub fn plan(
    authorized: &BTreeSet<&str>,
    cached: &BTreeSet<&str>,
    subscribed: &BTreeSet<&str>,
    last_use: &HashMap<String, u64>,
    max: usize,
    fill: bool,
) -> SvidPlan {
    let pinned: BTreeSet<&str> = subscribed.intersection(authorized).copied().collect();
    let room = max.saturating_sub(pinned.len());

    let mut others: Vec<&str> = cached
        .iter()
        .copied()
        .filter(|id| !pinned.contains(id))
        .collect();
    // Most recently used first; never used ones after, in entry ID order.
    others.sort_by(|a, b| {
        let use_of = |id: &str| last_use.get(id).copied().unwrap_or(0);
        use_of(b).cmp(&use_of(a)).then_with(|| a.cmp(b))
    });
    let kept = others.len().min(room);
    let mut evict: Vec<String> = others[kept..].iter().map(|s| (*s).to_owned()).collect();
    // Least recently used first, for the log.
    evict.reverse();

    let mut create: Vec<String> = pinned
        .iter()
        .filter(|id| !cached.contains(*id))
        .map(|s| (*s).to_owned())
        .collect();
    if fill {
        let free = room - kept;
        create.extend(
            authorized
                .iter()
                .filter(|id| !cached.contains(*id) && !pinned.contains(*id))
                .take(free)
                .map(|s| (*s).to_owned()),
        );
    }
    SvidPlan { evict, create }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("e{i:04}")).collect()
    }

    fn set(v: &[String]) -> BTreeSet<&str> {
        v.iter().map(String::as_str).collect()
    }

    #[test]
    fn fewer_entries_than_the_cache_size_are_all_signed() {
        let all = ids(0..10);
        let p = plan(
            &set(&all),
            &BTreeSet::new(),
            &BTreeSet::new(),
            &HashMap::new(),
            1000,
            true,
        );
        assert_eq!(p.create, all);
        assert!(p.evict.is_empty());
    }

    #[test]
    fn more_entries_than_the_cache_size_sign_only_up_to_it() {
        let all = ids(0..1000);
        let p = plan(
            &set(&all),
            &BTreeSet::new(),
            &BTreeSet::new(),
            &HashMap::new(),
            100,
            true,
        );
        assert_eq!(p.create, ids(0..100));
        // Once full, nothing more is signed ahead of callers.
        let cached = ids(0..100);
        let p = plan(
            &set(&all),
            &set(&cached),
            &BTreeSet::new(),
            &HashMap::new(),
            100,
            true,
        );
        assert_eq!(p, SvidPlan::default());
    }

    #[test]
    fn a_subscribed_entry_is_signed_beyond_the_cache_size_and_never_evicted() {
        let all = ids(0..1000);
        let cached = ids(0..100);
        let wanted = vec!["e0999".to_owned()];
        // On demand (no fill): sign it now, even though the cache is full;
        // the least recently used SVID makes room.
        let p = plan(
            &set(&all),
            &set(&cached),
            &set(&wanted),
            &HashMap::new(),
            100,
            false,
        );
        assert_eq!(p.create, wanted);
        assert_eq!(p.evict, ["e0099"]);

        // More callers than room: every one of theirs stays, all others go.
        let cached_now: Vec<String> = ids(0..3);
        let subs = ids(0..3);
        let p = plan(
            &set(&all),
            &set(&cached_now),
            &set(&subs),
            &HashMap::new(),
            2,
            true,
        );
        assert!(p.evict.is_empty(), "{p:?}");
        assert!(p.create.is_empty(), "{p:?}");
    }

    #[test]
    fn the_least_recently_used_svids_are_evicted_first() {
        let all = ids(0..10);
        let cached = ids(0..5);
        let last_use: HashMap<String, u64> = [("e0000", 5), ("e0001", 1), ("e0003", 9)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let p = plan(
            &set(&all),
            &set(&cached),
            &BTreeSet::new(),
            &last_use,
            2,
            true,
        );
        // Kept: e0003 (9), e0000 (5). Dropped, least recent first: the
        // never-used ones (e0004, e0002), then e0001 (1).
        assert_eq!(p.evict, ["e0004", "e0002", "e0001"]);
        assert!(p.create.is_empty());
    }

    #[test]
    fn a_cache_size_of_one_keeps_one_svid() {
        let all = ids(0..3);
        let p = plan(
            &set(&all),
            &BTreeSet::new(),
            &BTreeSet::new(),
            &HashMap::new(),
            1,
            true,
        );
        assert_eq!(p.create, ["e0000"]);
    }
}
