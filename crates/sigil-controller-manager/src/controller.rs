//! Watches pods, nodes, namespaces and ClusterSPIFFEIDs (kube-runtime
//! reflectors) and reconciles whenever any of them changes, and at least
//! every `gcInterval` so entries changed under the controller converge.

use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::json;
use tokio::sync::Notify;

use crate::config::Config;
use crate::reconcile::{self, Object, Stats};
use crate::spec::{self, Spec};
use crate::spire::{self, EntryClient};

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A watch never delivered its initial list.
    #[error("waiting for the initial list of {0}: the watch stopped")]
    NotReady(&'static str),
}

fn crd_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(spec::GROUP, spec::VERSION, spec::KIND),
        spec::PLURAL,
    )
}

fn watch<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    notify: Arc<Notify>,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => notify.notify_one(),
                Err(e) => tracing::warn!(error = %e, "Watch failed; retrying"),
            }
        }
    })
}

/// Runs until the process is stopped.
pub async fn run(cfg: Config, client: kube::Client) -> Result<(), ControllerError> {
    let notify = Arc::new(Notify::new());
    let (pods, pods_w) = reflector::store::<Pod>();
    let (nodes, nodes_w) = reflector::store::<Node>();
    let (namespaces, namespaces_w) = reflector::store::<Namespace>();
    let ar = crd_resource();
    let csid_w = reflector::store::Writer::<DynamicObject>::new(ar.clone());
    let csids = csid_w.as_reader();
    let csid_api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let _tasks = [
        watch(Api::<Pod>::all(client.clone()), pods_w, notify.clone()),
        watch(Api::<Node>::all(client.clone()), nodes_w, notify.clone()),
        watch(
            Api::<Namespace>::all(client.clone()),
            namespaces_w,
            notify.clone(),
        ),
        {
            let stream = reflector::reflector(
                csid_w,
                watcher(csid_api.clone(), watcher::Config::default()),
            )
            .default_backoff();
            let notify = notify.clone();
            tokio::spawn(async move {
                futures::pin_mut!(stream);
                while let Some(ev) = stream.next().await {
                    match ev {
                        Ok(_) => notify.notify_one(),
                        Err(e) => tracing::warn!(error = %e, "Watch failed; retrying"),
                    }
                }
            })
        },
    ];
    pods.wait_until_ready()
        .await
        .map_err(|_| ControllerError::NotReady("pods"))?;
    nodes
        .wait_until_ready()
        .await
        .map_err(|_| ControllerError::NotReady("nodes"))?;
    namespaces
        .wait_until_ready()
        .await
        .map_err(|_| ControllerError::NotReady("namespaces"))?;
    csids
        .wait_until_ready()
        .await
        .map_err(|_| ControllerError::NotReady("clusterspiffeids"))?;
    tracing::info!("Caches synced; reconciling");
    let mut entries = spire::connect(&cfg.socket_path);
    loop {
        reconcile_once(
            &cfg,
            &mut entries,
            &csid_api,
            &csids,
            &pods,
            &nodes,
            &namespaces,
        )
        .await;
        tokio::select! {
            () = notify.notified() => {}
            () = tokio::time::sleep(cfg.gc_interval) => {}
        }
    }
}

fn snapshot<K: kube::Resource + Clone>(s: &Store<K>) -> Vec<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    s.state().iter().map(|o| (**o).clone()).collect()
}

async fn reconcile_once(
    cfg: &Config,
    entries: &mut EntryClient,
    csid_api: &Api<DynamicObject>,
    csids: &Store<DynamicObject>,
    pods: &Store<Pod>,
    nodes: &Store<Node>,
    namespaces: &Store<Namespace>,
) {
    let current = match spire::list(entries).await {
        Ok(all) => all.into_iter().filter(|e| cfg.owns(e)).collect::<Vec<_>>(),
        Err(e) => {
            tracing::error!(error = %e, "Failed to list SPIRE entries");
            return;
        }
    };
    let mut raw_objects = Vec::new();
    let mut objects = Vec::new();
    for o in snapshot(csids) {
        let spec_value = o.data.get("spec").cloned().unwrap_or(json!({}));
        let class = spec_value
            .get("className")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_owned();
        if !cfg.wants_class(&class) {
            continue;
        }
        let spec = Spec::parse(&spec_value).map(|(s, _)| s);
        if let Err(e) = &spec {
            tracing::error!(cluster_spiffe_id = %o.metadata.name.as_deref().unwrap_or_default(), error = %e, "Failed to parse ClusterSPIFFEID spec");
        }
        objects.push(Object {
            name: o.metadata.name.clone().unwrap_or_default(),
            uid: o.metadata.uid.clone().unwrap_or_default(),
            created: o
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
            spec,
        });
        raw_objects.push(o);
    }
    let mut plan = reconcile::plan(
        cfg,
        &objects,
        &snapshot(namespaces),
        &snapshot(pods),
        &snapshot(nodes),
        current,
    );
    if !plan.delete.is_empty() {
        let ids: Vec<String> = plan.delete.iter().map(|e| e.id.clone()).collect();
        match spire::delete(entries, ids.clone()).await {
            Ok(results) => {
                for (id, r) in ids.iter().zip(results) {
                    match r {
                        None => tracing::info!(entry_id = %id, "Deleted entry"),
                        Some(e) => {
                            tracing::error!(entry_id = %id, error = %e, "Failed to delete entry")
                        }
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "Failed to delete entries"),
        }
    }
    if !plan.create.is_empty() {
        let mut batch: Vec<_> = plan.create.iter().map(|(e, _)| e.clone()).collect();
        if !cfg.entry_id_prefix.is_empty() {
            for e in &mut batch {
                e.id = format!("{}{}", cfg.entry_id_prefix, uuid::Uuid::new_v4());
            }
        }
        let by: Vec<usize> = plan.create.iter().map(|(_, i)| *i).collect();
        apply(
            "create",
            spire::create(entries, batch).await,
            &by,
            &mut plan.stats,
        );
    }
    if !plan.update.is_empty() {
        let batch: Vec<_> = plan.update.iter().map(|(e, _)| e.clone()).collect();
        let by: Vec<usize> = plan.update.iter().map(|(_, i)| *i).collect();
        apply(
            "update",
            spire::update(entries, batch).await,
            &by,
            &mut plan.stats,
        );
    }
    for ((o, obj), stats) in raw_objects.iter().zip(&objects).zip(&plan.stats) {
        set_status(csid_api, o, obj, stats).await;
    }
}

fn apply(
    what: &str,
    result: Result<spire::Outcomes, spire::ApiError>,
    by: &[usize],
    stats: &mut [Stats],
) {
    match result {
        Ok(outcomes) => {
            for (i, r) in by.iter().zip(outcomes) {
                match r {
                    None => tracing::info!(op = what, "Entry {what}d"),
                    Some(e) => {
                        tracing::error!(op = what, error = %e, "Failed to {what} entry");
                        if let Some(s) = stats.get_mut(*i) {
                            s.entry_failures += 1;
                        }
                    }
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "Failed to {what} entries");
            for i in by {
                if let Some(s) = stats.get_mut(*i) {
                    s.entry_failures += 1;
                }
            }
        }
    }
}

async fn set_status(api: &Api<DynamicObject>, o: &DynamicObject, obj: &Object, stats: &Stats) {
    let error = obj.spec.as_ref().err().map(ToString::to_string);
    let want = json!({ "stats": stats, "error": error });
    let have = o.data.get("status").cloned().unwrap_or(json!({}));
    let same = have.get("stats") == want.get("stats")
        && have.get("error").filter(|v| !v.is_null()) == want.get("error").filter(|v| !v.is_null());
    if same {
        return;
    }
    let patch = json!({ "status": want });
    match api
        .patch_status(&obj.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => tracing::info!(cluster_spiffe_id = %obj.name, "Updated status"),
        Err(e) => {
            tracing::error!(cluster_spiffe_id = %obj.name, error = %e, "Failed to update status")
        }
    }
}
