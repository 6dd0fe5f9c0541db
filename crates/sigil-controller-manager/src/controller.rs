//! Watches the cluster (kube-runtime reflectors) and runs two reconcilers,
//! as spire-controller-manager does: entries (ClusterSPIFFEIDs with pods,
//! nodes, namespaces and service endpoints; ClusterStaticEntries) and
//! federation relationships (ClusterFederatedTrustDomains). Each runs on
//! every watch event that concerns it, and at least every `gcInterval` so
//! state changed under the controller converges.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::json;
use tokio::sync::Notify;

use crate::cluster_federated_trust_domain::{self as cftd, FINALIZER, OWNED_ANNOTATION};
use crate::cluster_spiffe_id::{self as csid, Cluster, Spec};
use crate::cluster_static_entry as cse;
use crate::config::Config;
use crate::crd::{Age, Crd};
use crate::entries::{self, Counts, Declared};
use crate::service_dns::ServiceNames;
use crate::spire::entry::EntryClient;
use crate::spire::trustdomain::TrustDomainClient;
use crate::spire::{self, ApiError, Outcomes};

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A watch never delivered its initial list.
    #[error("waiting for the initial list of {0}: the watch stopped")]
    NotReady(&'static str),
}

fn reflect<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    notify: Arc<Notify>,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync,
    K: 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
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

/// A watched cache of one kind, and the task feeding it.
struct Watched<K: kube::Resource + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store: Store<K>,
    name: &'static str,
    _task: tokio::task::JoinHandle<()>,
}

impl<K> Watched<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync,
    K: 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default + Send + Sync,
{
    fn typed(client: &kube::Client, name: &'static str, notify: &Arc<Notify>) -> Self {
        let (store, writer) = reflector::store::<K>();
        let task = reflect(Api::<K>::all(client.clone()), writer, notify.clone());
        Watched {
            store,
            name,
            _task: task,
        }
    }
}

impl<K: kube::Resource + Clone + 'static> Watched<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    async fn ready(&self) -> Result<(), ControllerError> {
        self.store
            .wait_until_ready()
            .await
            .map_err(|_| ControllerError::NotReady(self.name))
    }

    fn snapshot(&self) -> Vec<K> {
        self.store.state().iter().map(|o| (**o).clone()).collect()
    }
}

/// A watched custom resource kind, with the API to write its status.
struct Custom {
    watched: Watched<DynamicObject>,
    api: Api<DynamicObject>,
}

impl Custom {
    fn new(client: &kube::Client, crd: Crd, notify: &Arc<Notify>) -> Self {
        let ar = crd.api_resource();
        let writer = reflector::store::Writer::<DynamicObject>::new(ar.clone());
        let store = writer.as_reader();
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let task = reflect(api.clone(), writer, notify.clone());
        Custom {
            watched: Watched {
                store,
                name: crd.plural,
                _task: task,
            },
            api,
        }
    }

    /// The objects of this controller's class, with their specs.
    fn objects(&self, cfg: &Config) -> Vec<(DynamicObject, serde_json::Value)> {
        self.watched
            .snapshot()
            .into_iter()
            .filter_map(|o| {
                let spec = o.data.get("spec").cloned().unwrap_or(json!({}));
                cfg.wants_class(&crate::crd::class_name(&spec))
                    .then_some((o, spec))
            })
            .collect()
    }
}

fn name(o: &DynamicObject) -> String {
    o.metadata.name.clone().unwrap_or_default()
}

/// The entry reconciler's view of the cluster.
struct EntryWatches {
    csids: Option<Custom>,
    cses: Option<Custom>,
    pods: Watched<Pod>,
    nodes: Watched<Node>,
    namespaces: Watched<Namespace>,
    endpoints: Watched<Endpoints>,
}

/// Runs until the process is stopped.
pub async fn run(cfg: Config, client: kube::Client) -> Result<(), ControllerError> {
    let channel = spire::connect(&cfg.socket_path);
    let r = cfg.reconcile;
    let entries_task = async {
        if !(r.cluster_spiffe_ids || r.cluster_static_entries) {
            return futures::future::pending::<Result<(), ControllerError>>().await;
        }
        let notify = Arc::new(Notify::new());
        let w = EntryWatches {
            csids: r
                .cluster_spiffe_ids
                .then(|| Custom::new(&client, csid::CRD, &notify)),
            cses: r
                .cluster_static_entries
                .then(|| Custom::new(&client, cse::CRD, &notify)),
            pods: Watched::typed(&client, "pods", &notify),
            nodes: Watched::typed(&client, "nodes", &notify),
            namespaces: Watched::typed(&client, "namespaces", &notify),
            endpoints: Watched::typed(&client, "endpoints", &notify),
        };
        for c in [&w.csids, &w.cses].into_iter().flatten() {
            c.watched.ready().await?;
        }
        w.pods.ready().await?;
        w.nodes.ready().await?;
        w.namespaces.ready().await?;
        w.endpoints.ready().await?;
        tracing::info!("Entry caches synced; reconciling");
        let mut client = EntryClient::new(channel.clone());
        loop {
            reconcile_entries(&cfg, &mut client, &w).await;
            tokio::select! {
                () = notify.notified() => {}
                () = tokio::time::sleep(cfg.gc_interval) => {}
            }
        }
    };
    let federation_task = async {
        if !r.cluster_federated_trust_domains {
            return futures::future::pending::<Result<(), ControllerError>>().await;
        }
        let notify = Arc::new(Notify::new());
        let cftds = Custom::new(&client, cftd::CRD, &notify);
        cftds.watched.ready().await?;
        tracing::info!("Federation caches synced; reconciling");
        let mut client = TrustDomainClient::new(channel.clone());
        loop {
            reconcile_federation(&cfg, &mut client, &cftds).await;
            tokio::select! {
                () = notify.notified() => {}
                () = tokio::time::sleep(cfg.gc_interval) => {}
            }
        }
    };
    tokio::try_join!(entries_task, federation_task).map(|_: ((), ())| ())
}

async fn reconcile_entries(cfg: &Config, client: &mut EntryClient, w: &EntryWatches) {
    let (current, clean_up): (Vec<_>, Vec<_>) = match spire::entry::list(client).await {
        Ok(all) => all
            .into_iter()
            .filter(|e| cfg.owns(e) || cfg.to_clean_up(e))
            .partition(|e| cfg.owns(e)),
        Err(e) => {
            tracing::error!(error = %e, "Failed to list SPIRE entries");
            return;
        }
    };
    let mut ages: Vec<Age> = Vec::new();

    // ClusterSPIFFEIDs first (indexes 0..), then ClusterStaticEntries.
    let csid_raw = w.csids.as_ref().map(|c| c.objects(cfg)).unwrap_or_default();
    let csid_objects: Vec<csid::Object> = csid_raw
        .iter()
        .map(|(o, spec)| {
            let spec = Spec::parse(spec).map(|(s, _)| s);
            if let Err(e) = &spec {
                tracing::error!(cluster_spiffe_id = %name(o), error = %e, "Failed to parse ClusterSPIFFEID spec");
            }
            csid::Object {
                name: name(o),
                age: Age::of(&o.metadata),
                spec,
            }
        })
        .collect();
    ages.extend(csid_objects.iter().map(|o| o.age.clone()));
    let (namespaces, pods, nodes) = (
        w.namespaces.snapshot(),
        w.pods.snapshot(),
        w.nodes.snapshot(),
    );
    let services = ServiceNames::index(&w.endpoints.snapshot());
    let cluster = Cluster {
        namespaces: &namespaces,
        pods: &pods,
        nodes: &nodes,
        services: &services,
    };
    let (mut declared, mut stats) = csid::declare(cfg, &csid_objects, 0, cluster);

    let first_static = ages.len();
    let cse_raw = w.cses.as_ref().map(|c| c.objects(cfg)).unwrap_or_default();
    let mut cse_rendered = Vec::new();
    for (i, (o, spec)) in cse_raw.iter().enumerate() {
        ages.push(Age::of(&o.metadata));
        match cse::parse(spec) {
            Ok(entry) => {
                declared.push(Declared {
                    entry,
                    by: first_static + i,
                });
                cse_rendered.push(true);
            }
            Err(e) => {
                tracing::error!(cluster_static_entry = %name(o), error = %e, "Failed to render ClusterStaticEntry");
                cse_rendered.push(false);
            }
        }
    }

    let mut plan = entries::plan(&ages, declared, current);
    plan.delete.extend(clean_up);
    if !plan.delete.is_empty() {
        let ids: Vec<String> = plan.delete.iter().map(|e| e.id.clone()).collect();
        match spire::entry::delete(client, ids.clone()).await {
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
        let static_prefix = cfg.static_entry_prefix();
        let batch: Vec<_> = plan
            .create
            .iter()
            .map(|(e, by)| {
                let mut e = e.clone();
                if !cfg.entry_id_prefix.is_empty() {
                    e.id = format!("{}{}", cfg.entry_id_prefix, uuid::Uuid::new_v4());
                } else if *by >= first_static {
                    e.id = format!("{static_prefix}{}", uuid::Uuid::new_v4());
                }
                e
            })
            .collect();
        let by: Vec<usize> = plan.create.iter().map(|(_, i)| *i).collect();
        let result = spire::entry::create(client, batch).await;
        count_failures("create", result, &by, &mut plan.counts);
    }
    if !plan.update.is_empty() {
        let batch: Vec<_> = plan.update.iter().map(|(e, _)| e.clone()).collect();
        let by: Vec<usize> = plan.update.iter().map(|(_, i)| *i).collect();
        let result = spire::entry::update(client, batch).await;
        count_failures("update", result, &by, &mut plan.counts);
    }

    if let Some(c) = &w.csids {
        for (i, ((o, _), obj)) in csid_raw.iter().zip(&csid_objects).enumerate() {
            stats[i].add(&plan.counts[i]);
            let error = obj.spec.as_ref().err().map(ToString::to_string);
            let want = json!({ "stats": stats[i], "error": error });
            let have = o.data.get("status").cloned().unwrap_or(json!({}));
            let same = have.get("stats") == want.get("stats")
                && have.get("error").filter(|v| !v.is_null())
                    == want.get("error").filter(|v| !v.is_null());
            if !same {
                write_status(&c.api, csid::CRD, &obj.name, want).await;
            }
        }
    }
    if let Some(c) = &w.cses {
        for (i, ((o, _), rendered)) in cse_raw.iter().zip(cse_rendered).enumerate() {
            let counts = plan
                .counts
                .get(first_static + i)
                .copied()
                .unwrap_or_default();
            let want = cse::Status::new(rendered, &counts);
            let have: Option<cse::Status> = o
                .data
                .get("status")
                .and_then(|s| serde_json::from_value(s.clone()).ok());
            if have != Some(want) {
                write_status(&c.api, cse::CRD, &name(o), json!(want)).await;
            }
        }
    }
}

fn count_failures(
    what: &str,
    result: Result<Outcomes, ApiError>,
    by: &[usize],
    counts: &mut [Counts],
) {
    let mut fail = |i: usize| {
        if let Some(c) = counts.get_mut(i) {
            c.failures += 1;
        }
    };
    match result {
        Ok(outcomes) => {
            for (i, r) in by.iter().zip(outcomes) {
                match r {
                    None => tracing::info!(op = what, "Entry {what}d"),
                    Some(e) => {
                        tracing::error!(op = what, error = %e, "Failed to {what} entry");
                        fail(*i);
                    }
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "Failed to {what} entries");
            by.iter().for_each(|i| fail(*i));
        }
    }
}

async fn write_status(api: &Api<DynamicObject>, crd: Crd, name: &str, status: serde_json::Value) {
    let patch = json!({ "status": status });
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => tracing::info!(kind = crd.kind, name, "Updated status"),
        // Deleted since this pass read it: nothing to report on, and the
        // watch brings the deletion into the next pass.
        Err(kube::Error::Api(status)) if status.is_not_found() => {
            tracing::debug!(
                kind = crd.kind,
                name,
                "Object gone before its status was written"
            )
        }
        Err(e) => tracing::error!(kind = crd.kind, name, error = %e, "Failed to update status"),
    }
}

/// Sets or clears this controller's finalizer and ownership annotation
/// (`owned`: the trust domain, or `None` to release). The resource version
/// makes a patch based on a stale cache fail instead of losing an update.
async fn mark(api: &Api<DynamicObject>, o: &DynamicObject, owned: Option<&str>) -> bool {
    let mut finalizers: Vec<String> = o.metadata.finalizers.clone().unwrap_or_default();
    finalizers.retain(|f| f != FINALIZER);
    if owned.is_some() {
        finalizers.push(FINALIZER.to_owned());
    }
    let patch = json!({
        "metadata": {
            "resourceVersion": o.metadata.resource_version,
            "finalizers": finalizers,
            "annotations": { OWNED_ANNOTATION: owned },
        }
    });
    let name = name(o);
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(cluster_federated_trust_domain = %name, error = %e, "Failed to update finalizer");
            false
        }
    }
}

async fn reconcile_federation(cfg: &Config, client: &mut TrustDomainClient, cftds: &Custom) {
    let current = match spire::trustdomain::list(client).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "Failed to list SPIRE federation relationships");
            return;
        }
    };
    let raw = cftds.objects(cfg);
    let objects: Vec<cftd::Object> = raw
        .iter()
        .map(|(o, spec)| {
            let spec = cftd::parse(spec);
            if let Err(e) = &spec {
                tracing::error!(cluster_federated_trust_domain = %name(o), error = %e, "Ignoring invalid ClusterFederatedTrustDomain");
            }
            cftd::Object {
                name: name(o),
                age: Age::of(&o.metadata),
                deleting: o.metadata.deletion_timestamp.is_some(),
                finalizers: o.metadata.finalizers.clone().unwrap_or_default(),
                owned: o
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(OWNED_ANNOTATION).cloned()),
                spec,
            }
        })
        .collect();
    let plan = cftd::plan(&objects, &current);
    for (loser, winner) in &plan.conflicts {
        tracing::warn!(
            cluster_federated_trust_domain = %objects[*loser].name,
            conflicts_with = %objects[*winner].name,
            "Ignoring ClusterFederatedTrustDomain with conflicting trust domain"
        );
    }
    let mut release = plan.release.clone();
    if !plan.delete.is_empty() {
        let tds: Vec<String> = plan.delete.iter().map(|(td, _)| td.clone()).collect();
        match spire::trustdomain::delete(client, tds).await {
            Ok(results) => {
                for ((td, then), r) in plan.delete.iter().zip(results) {
                    match r {
                        None => {
                            tracing::info!(trust_domain = %td, "Deleted federation relationship");
                            release.extend(then);
                        }
                        Some(e) => {
                            tracing::error!(trust_domain = %td, error = %e, "Failed to delete federation relationship")
                        }
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "Failed to delete federation relationships"),
        }
    }
    for i in release {
        if mark(&cftds.api, &raw[i].0, None).await {
            tracing::info!(cluster_federated_trust_domain = %objects[i].name, "Released");
        }
    }
    let mut unclaimed = HashSet::new();
    for (i, td) in &plan.claim {
        if !mark(&cftds.api, &raw[*i].0, Some(td)).await {
            unclaimed.insert(*i);
        }
    }
    let create: Vec<_> = plan
        .create
        .iter()
        .filter(|(_, i)| !unclaimed.contains(i))
        .map(|(r, _)| r.clone())
        .collect();
    if !create.is_empty() {
        let tds: Vec<String> = create.iter().map(|r| r.trust_domain.clone()).collect();
        log_outcomes(
            "create",
            &tds,
            spire::trustdomain::create(client, create).await,
        );
    }
    let update: Vec<_> = plan
        .update
        .iter()
        .filter(|(_, i)| !unclaimed.contains(i))
        .map(|(r, _)| r.clone())
        .collect();
    if !update.is_empty() {
        let tds: Vec<String> = update.iter().map(|r| r.trust_domain.clone()).collect();
        log_outcomes(
            "update",
            &tds,
            spire::trustdomain::update(client, update).await,
        );
    }
}

fn log_outcomes(what: &str, tds: &[String], result: Result<Outcomes, ApiError>) {
    match result {
        Ok(outcomes) => {
            for (td, r) in tds.iter().zip(outcomes) {
                match r {
                    None => tracing::info!(trust_domain = %td, "Federation relationship {what}d"),
                    Some(e) => {
                        tracing::error!(trust_domain = %td, error = %e, "Failed to {what} federation relationship")
                    }
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "Failed to {what} federation relationships"),
    }
}
