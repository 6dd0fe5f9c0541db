//! The authorized-entry index: every registration entry and attested node in
//! memory, kept current from the datastore's event feed, so the agent API
//! (authorization, GetAuthorizedEntries, SyncAuthorizedEntries,
//! BatchNewX509SVID, NewJWTSVID, WatchChanges) answers from memory and never
//! walks the datastore.
//!
//! Every server on one database runs its own index and follows the same
//! feed: a server that writes applies its own change at once
//! ([`EntryIndex::refresh`]); the others see it at their next poll
//! (`cache_reload_interval`). The feed cannot skip an event: the datastore
//! makes events visible in ID order (writers serialise on the event table),
//! so reading "every event above the last one seen" is complete, unlike
//! SPIRE's gap tracking (its issues #6876 and #7181). Each event only names
//! the record; the index re-reads the record, so replays and duplicates are
//! harmless.
//!
//! After each applied batch the index recomputes the authorized set of every
//! agent the change concerns (found by walking up from the changed entries)
//! and that holds a [`Subscription`], diffs it against what that
//! subscription last received, and sends only the difference: an entry
//! change wakes only the agents whose set changed.
//!
//! This module owns the in-memory state and the feed loop; it never writes
//! to the datastore and never decides who may call what (the API does).

mod feed;
pub mod graph;

pub use feed::{EntryIndex, IndexConfig, IndexError, IndexMode, Push, Subscription};
pub use graph::{AuthorizedSet, EntryGraph, EntryKey};
