//! Built-in BundlePublisher plugins, one file each.

pub mod k8s_configmap;
