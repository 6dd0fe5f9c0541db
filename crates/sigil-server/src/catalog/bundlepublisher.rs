//! BundlePublisher: pushes the bundle outside the server when it changes.
//! Any number.

use sigil_plugin::bundlepublisher::BundlePublisher;
use sigil_plugin::catalog::{Builtin, CountRule, PluginType};

use super::ServerContext;
use crate::plugin::bundlepublisher::k8s_configmap;

/// The BundlePublisher type.
pub static TYPE: PluginType<dyn BundlePublisher, ServerContext> = PluginType {
    kind: "BundlePublisher",
    count: CountRule::ANY,
    builtins: &[Builtin {
        name: k8s_configmap::NAME,
        build: k8s_configmap::build,
    }],
};
