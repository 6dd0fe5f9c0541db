//! Built-in agent plugins that are not workload attestors (those live in
//! `crate::attestor`), one folder per type and one file per plugin. The
//! catalog (`crate::catalog`) lists them.

pub mod nodeattestor;
