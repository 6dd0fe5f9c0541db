//! Built-in NodeAttestor plugins (agent halves), one file each.

pub mod join_token;
pub mod k8s_psat;
pub mod x509pop;
