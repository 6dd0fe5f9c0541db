//! Built-in server plugins, one module per plugin type.

pub mod upstreamauthority;
