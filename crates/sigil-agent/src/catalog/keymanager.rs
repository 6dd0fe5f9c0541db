//! KeyManager: where the agent's own private key lives. Exactly one. The
//! trait and built-ins are shared with the server (`sigil_plugin::keymanager`);
//! the agent's `disk` takes `directory`.

use sigil_plugin::catalog::{Builtin, CountRule, PluginType};
use sigil_plugin::keymanager::{self, KeyManager};

use super::AgentContext;

/// The KeyManager type.
pub static TYPE: PluginType<dyn KeyManager, AgentContext> = PluginType {
    kind: keymanager::KIND,
    count: CountRule::EXACTLY_ONE,
    builtins: &[
        Builtin {
            name: "memory",
            build: keymanager::build_memory::<AgentContext>,
        },
        Builtin {
            name: "disk",
            build: keymanager::build_disk_agent::<AgentContext>,
        },
    ],
};
