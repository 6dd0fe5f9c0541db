//! sigil-agent: the SPIFFE node agent.
//!
//! It attests its node to sigil-server (or SPIRE server), keeps the SVIDs of
//! the registration entries it is authorized for fresh ([`manager`]),
//! attests the workloads that call it from kernel-verified peer credentials
//! ([`attestor`], [`uds`]), and serves them the SPIFFE Workload API
//! ([`workload`]), and on a separate admin socket the debug, logger and
//! delegated identity APIs ([`admin`]). It never depends on the server crate.
#![forbid(unsafe_code)]

pub mod admin;
pub mod attestor;
pub mod cache;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod health;
pub mod manager;
pub mod plugin;
pub mod run;
pub mod sds;
pub mod uds;
pub mod workload;
