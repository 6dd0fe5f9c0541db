//! sigil-helper: spiffe-helper's job for sigil. It reads spiffe-helper's
//! configuration file unchanged, keeps an X.509-SVID (certificate chain,
//! key, bundle), JWT-SVIDs and the JWT bundles in files for programs that
//! cannot speak the Workload API, and starts or signals such a program when
//! they change; or, in one-shot mode, writes them once and exits.
//!
//! Modules: [`config`] (the file and its rules), [`cmd_args`] (splitting
//! `cmd_args`), [`files`] (file contents and atomic writes), [`agent`] (the
//! Workload API calls, behind a trait), [`process`] (the child and the pid
//! file), [`signal`] (signal names), [`health`] (the health listener),
//! [`run`] (daemon and one-shot modes).
#![forbid(unsafe_code)]

pub mod agent;
pub mod cmd_args;
pub mod config;
pub mod files;
pub mod health;
pub mod process;
pub mod run;
pub mod signal;
