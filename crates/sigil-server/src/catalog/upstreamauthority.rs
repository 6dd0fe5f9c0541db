//! UpstreamAuthority: a CA outside the server that signs its X.509 CA. At
//! most one.

use sigil_plugin::catalog::{Builtin, CountRule, PluginType};
use sigil_plugin::upstreamauthority::UpstreamAuthority;

use super::ServerContext;
use crate::plugin::upstreamauthority::disk;

/// The UpstreamAuthority type.
pub static TYPE: PluginType<dyn UpstreamAuthority, ServerContext> = PluginType {
    kind: "UpstreamAuthority",
    count: CountRule::AT_MOST_ONE,
    builtins: &[Builtin {
        name: disk::NAME,
        build: disk::build,
    }],
};
