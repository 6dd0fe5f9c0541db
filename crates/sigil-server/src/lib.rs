//! sigil-server: the root of trust of a SPIFFE trust domain.
//!
//! It owns the CA ([`ca`]), serves SPIRE's server API to agents and admins
//! ([`api`], [`endpoints`]), keeps registration entries and attested agents in
//! a datastore, federates with other trust domains ([`federation`]), and is
//! configured by SPIRE's `server.conf` ([`config`]).
//! It never depends on the agent crate.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod ca;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod dev;
pub mod endpoints;
pub mod federation;
pub mod health;
pub mod index;
pub mod k8s;
pub mod plugin;
pub mod podcert;
pub mod prune;
pub mod publish;
pub mod run;
