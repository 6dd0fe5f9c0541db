//! NodeAttestor (server halves): how agents prove their node. Any number,
//! one per attestation type; an agent whose type has no attestor here is
//! refused. The trait pair lives in `sigil_plugin::nodeattestor`.

use sigil_plugin::catalog::{Builtin, CountRule, PluginType};
use sigil_plugin::nodeattestor::ServerNodeAttestor;

use super::ServerContext;
use crate::plugin::nodeattestor::{join_token, k8s_psat, x509pop};

/// The NodeAttestor type.
pub static TYPE: PluginType<dyn ServerNodeAttestor, ServerContext> = PluginType {
    kind: "NodeAttestor",
    count: CountRule::ANY,
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
