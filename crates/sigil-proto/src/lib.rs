//! sigil's protobuf definitions and the tonic/prost code generated from them.
//!
//! The `.proto` files under `proto/` are sigil's own transcriptions of the
//! public SPIFFE Workload API and SPIRE API definitions: same packages,
//! services, messages, field numbers and enum values, so sigil is wire
//! compatible with SPIRE and every SPIFFE client library. This crate owns only
//! the wire types and their client/server stubs; it holds no logic.
//!
//! Module paths follow the protobuf packages, with two exceptions forced by
//! upstream: the Workload API has no package and lives in [`workload`], and
//! the agent debug API's package is `spire.agent.debug.v1` (no `api`), so it
//! lives in [`spire::agent::debug::v1`] and is re-exported as
//! [`spire::api::agent::debug`] next to its siblings.

pub mod status;

/// Largest gRPC message, in bytes, that sigil's servers and clients send or
/// accept: 4 MiB, the gRPC default that SPIRE (grpc-go) also keeps. Every
/// sigil server and client sets both its decoding and its encoding limit to
/// this, so a message too large is refused by its sender with a clear
/// error instead of by its peer mid-stream.
pub const MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// Most entries (or entry IDs) one `BatchCreateEntry`, `BatchUpdateEntry`
/// or `BatchDeleteEntry` may carry. sigil-server refuses larger batches
/// (SPIRE has no such bound); sigil's own clients send larger sets in
/// batches of this size.
pub const MAX_ENTRY_BATCH: usize = 1000;

/// Encoded `google.protobuf.FileDescriptorSet` of every file compiled here,
/// including imported well-known types and source comments, for
/// `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));

/// SPIFFE Workload API (gRPC paths `/SpiffeWorkloadAPI/<Method>`), served by
/// the agent.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod workload {
    // Upstream workload.proto has no package; prost names such output `_`.
    tonic::include_proto!("_");
}

/// SPIRE APIs.
pub mod spire {
    /// SPIRE API packages under `spire.api`.
    pub mod api {
        /// Shared message types (`spire.api.types`).
        #[allow(clippy::all, clippy::pedantic, missing_docs)]
        pub mod types {
            tonic::include_proto!("spire.api.types");
        }

        /// SPIRE server APIs (`spire.api.server.*.v1`).
        pub mod server {
            /// Node agent admission and administration.
            pub mod agent {
                #[allow(clippy::all, clippy::pedantic, missing_docs)]
                pub mod v1 {
                    tonic::include_proto!("spire.api.server.agent.v1");
                }
            }

            /// Own and federated trust bundles.
            pub mod bundle {
                #[allow(clippy::all, clippy::pedantic, missing_docs)]
                pub mod v1 {
                    tonic::include_proto!("spire.api.server.bundle.v1");
                }
            }

            /// Registration entries.
            pub mod entry {
                #[allow(clippy::all, clippy::pedantic, missing_docs)]
                pub mod v1 {
                    tonic::include_proto!("spire.api.server.entry.v1");
                }
            }

            /// SVID issuance.
            pub mod svid {
                #[allow(clippy::all, clippy::pedantic, missing_docs)]
                pub mod v1 {
                    tonic::include_proto!("spire.api.server.svid.v1");
                }
            }

            /// Federation relationships.
            pub mod trustdomain {
                #[allow(clippy::all, clippy::pedantic, missing_docs)]
                pub mod v1 {
                    tonic::include_proto!("spire.api.server.trustdomain.v1");
                }
            }

            /// Manual rotation of the server's signing authorities.
            pub mod localauthority {
                #[allow(clippy::all, clippy::pedantic, missing_docs)]
                pub mod v1 {
                    tonic::include_proto!("spire.api.server.localauthority.v1");
                }
            }

            /// Server diagnostics.
            pub mod debug {
                #[allow(clippy::all, clippy::pedantic, missing_docs)]
                pub mod v1 {
                    tonic::include_proto!("spire.api.server.debug.v1");
                }
            }

            /// Server runtime log level.
            pub mod logger {
                #[allow(clippy::all, clippy::pedantic, missing_docs)]
                pub mod v1 {
                    tonic::include_proto!("spire.api.server.logger.v1");
                }
            }
        }

        /// SPIRE agent admin APIs (`spire.api.agent.*.v1`).
        pub mod agent {
            /// Agent diagnostics; really package `spire.agent.debug.v1`.
            pub use crate::spire::agent::debug;

            /// Delegated identity for trusted local processes.
            pub mod delegatedidentity {
                #[allow(clippy::all, clippy::pedantic, missing_docs)]
                pub mod v1 {
                    tonic::include_proto!("spire.api.agent.delegatedidentity.v1");
                }
            }

            /// Agent runtime log level.
            pub mod logger {
                #[allow(clippy::all, clippy::pedantic, missing_docs)]
                pub mod v1 {
                    tonic::include_proto!("spire.api.agent.logger.v1");
                }
            }
        }
    }

    /// Package `spire.agent` (only the agent debug API uses it).
    pub mod agent {
        /// Agent diagnostics (`spire.agent.debug.v1`).
        pub mod debug {
            #[allow(clippy::all, clippy::pedantic, missing_docs)]
            pub mod v1 {
                tonic::include_proto!("spire.agent.debug.v1");
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// sigil's own API extensions (not part of SPIRE).
pub mod sigil {
    /// Server-side extensions.
    pub mod api {
        /// Server APIs.
        pub mod server {
            /// Change notifications for agents.
            pub mod sync {
                #[allow(clippy::all, clippy::pedantic, missing_docs)]
                pub mod v1 {
                    tonic::include_proto!("sigil.api.server.sync.v1");
                }
            }
        }
    }
}
