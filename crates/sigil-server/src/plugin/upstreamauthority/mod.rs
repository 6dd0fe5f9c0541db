//! Built-in UpstreamAuthority plugins, one file each; the catalog lists
//! them in `crate::catalog::upstreamauthority`.

pub mod disk;
