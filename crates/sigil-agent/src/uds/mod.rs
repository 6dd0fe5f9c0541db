//! The agent's Unix-socket front door.
//!
//! This module owns everything between `accept()` on a Unix socket and the
//! gRPC server: who the peer is ([`peer::PeerInfo`], captured at accept time,
//! with a pidfd so a later attestation can tell whether the process it
//! inspected is still the one that connected), the grpc-core `:authority`
//! repair ([`authority::AuthorityRewrite`]), and the listener that ties both
//! together as a stream tonic can serve ([`listener::UdsIncoming`]).
//!
//! It never decides what a peer may do; it only reports who the peer is.

pub mod authority;
pub mod listener;
pub mod peer;

pub use authority::{AuthorityRewrite, AuthorityRewriter, RewriteError};
pub use listener::{ConnectionLimits, UdsConnection, UdsIncoming};
pub use peer::PeerInfo;
