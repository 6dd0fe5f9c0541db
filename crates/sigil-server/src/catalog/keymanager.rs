//! KeyManager: where the CA and JWT signing keys live. Exactly one. The
//! trait and built-ins are shared with the agent (`sigil_plugin::keymanager`);
//! the server's `disk` takes `keys_path`.

use sigil_plugin::catalog::{Builtin, CountRule, PluginType};
use sigil_plugin::keymanager::{self, KeyManager};

use super::ServerContext;

/// The KeyManager type.
pub static TYPE: PluginType<dyn KeyManager, ServerContext> = PluginType {
    kind: keymanager::KIND,
    count: CountRule::EXACTLY_ONE,
    builtins: &[
        Builtin {
            name: "memory",
            build: keymanager::build_memory::<ServerContext>,
        },
        Builtin {
            name: "disk",
            build: keymanager::build_disk_server::<ServerContext>,
        },
    ],
};
