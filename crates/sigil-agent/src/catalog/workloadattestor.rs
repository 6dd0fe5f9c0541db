//! WorkloadAttestor: turns a Workload API caller into selectors. At least
//! one; when several are declared, every one attests each caller and the
//! selectors are combined (`crate::attestor::Combined`). The trait lives
//! in `crate::attestor`.

use sigil_plugin::catalog::{Builtin, CountRule, PluginType};

use super::AgentContext;
use crate::attestor::{WorkloadAttestor, k8s, unix};

/// The WorkloadAttestor type.
pub static TYPE: PluginType<dyn WorkloadAttestor, AgentContext> = PluginType {
    kind: "WorkloadAttestor",
    count: CountRule::AT_LEAST_ONE,
    builtins: &[
        Builtin {
            name: unix::UnixAttestor::NAME,
            build: unix::build,
        },
        Builtin {
            name: k8s::K8sAttestor::NAME,
            build: k8s::K8sAttestor::build,
        },
    ],
};
