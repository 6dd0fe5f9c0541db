//! Built-in server plugins, one folder per plugin type and one file per
//! plugin. The catalog (`crate::catalog`) lists them.

pub mod bundlepublisher;
pub mod datastore;
pub mod nodeattestor;
pub mod upstreamauthority;
