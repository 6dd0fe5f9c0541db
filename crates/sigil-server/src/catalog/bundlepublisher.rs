//! BundlePublisher: pushes the bundle outside the server when it changes.
//! Any number; none is built in yet, so a declaration names the type as
//! having no supported plugins.

use sigil_plugin::bundlepublisher::BundlePublisher;
use sigil_plugin::catalog::{CountRule, PluginType};

use super::ServerContext;

/// The BundlePublisher type.
pub static TYPE: PluginType<dyn BundlePublisher, ServerContext> = PluginType {
    kind: "BundlePublisher",
    count: CountRule::ANY,
    builtins: &[],
};
