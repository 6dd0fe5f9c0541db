//! NodeAttestor (agent half): how this agent proves its node. Exactly one.
//! The trait pair lives in `sigil_plugin::nodeattestor`.

use sigil_plugin::catalog::{Builtin, CountRule, PluginType};
use sigil_plugin::nodeattestor::AgentNodeAttestor;

use super::AgentContext;
use crate::plugin::nodeattestor::{join_token, k8s_psat, x509pop};

/// The NodeAttestor type.
pub static TYPE: PluginType<dyn AgentNodeAttestor, AgentContext> = PluginType {
    kind: "NodeAttestor",
    count: CountRule::EXACTLY_ONE,
    builtins: &[
        Builtin {
            name: join_token::NAME,
            build: join_token::build,
        },
        Builtin {
            name: x509pop::NAME,
            build: x509pop::build,
        },
        Builtin {
            name: k8s_psat::NAME,
            build: k8s_psat::build,
        },
    ],
};
