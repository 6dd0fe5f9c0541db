//! Built-in NodeAttestor plugins (agent halves), one file each.

pub mod join_token;
pub mod x509pop;
