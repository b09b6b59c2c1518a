//! `pvc-guard audit`: what is already stored, judged by the same core with
//! the same cluster facts, plus what admission cannot see on every apply.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, TypeMeta};
use kube::{Api, Client, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::Mode;
use crate::model::Object;
use crate::policy::{Finding, Policy, Rule, Severity};
use crate::report::Entry;
use crate::report::policy_report::{Subject, Verdict};

/// The kinds audited (and reported by the controller): (group, version,
/// kind, plural). Owned Pods, ReplicaSets and Jobs are skipped, and their
/// owners judged instead.
pub const WORKLOADS: &[(&str, &str, &str, &str)] = &[
    ("apps", "v1", "Deployment", "deployments"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("apps", "v1", "DaemonSet", "daemonsets"),
    ("apps", "v1", "ReplicaSet", "replicasets"),
    ("", "v1", "ReplicationController", "replicationcontrollers"),
    ("", "v1", "Pod", "pods"),
    ("batch", "v1", "Job", "jobs"),
    ("batch", "v1", "CronJob", "cronjobs"),
];

const PAGE: u32 = 500;

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Every item of a list, a page of `limit` at a time.
async fn list_all<K>(
    api: &Api<K>,
    what: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<K>, kube::Error>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut items = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = api.list(&params).await?;
        items.extend(page.items);
        progress(&format!("{what}: {} listed", items.len()));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(items),
        }
    }
}

/// What `audit` found.
#[derive(Debug, Clone, Default)]
pub struct Audited {
    /// Each judged object (and each claim whose class deletes its volume)
    /// with its findings as admission would answer in its namespace's mode.
    pub entries: Vec<Entry>,
    /// Each stored workload as the claim controller's policy report has
    /// it: the same verdicts, made by [`super::reports::verdict`].
    pub subjects: Vec<Subject>,
}

/// Judges every stored workload (in `namespace`, or everywhere) and lists
/// claims and StatefulSets that delete data on their own.
pub async fn audit(
    client: &Client,
    policy: &Policy,
    namespace: Option<&str>,
    source: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<Audited, kube::Error> {
    // A user audits with what they may read: one namespace needs only a get,
    // and without access to StorageClasses the reclaim check is skipped.
    let namespaces = match namespace {
        Some(ns) => match Api::<Namespace>::all(client.clone()).get(ns).await {
            Ok(n) => vec![n],
            Err(kube::Error::Api(s)) if s.code == 403 => {
                progress(&format!(
                    "namespace {ns}: not readable, so its labels are unknown"
                ));
                Vec::new()
            }
            Err(e) => return Err(e),
        },
        None => {
            list_all(
                &Api::<Namespace>::all(client.clone()),
                "namespaces",
                progress,
            )
            .await?
        }
    };
    let classes = match list_all(
        &Api::<StorageClass>::all(client.clone()),
        "storageclasses",
        progress,
    )
    .await
    {
        Ok(classes) => Some(classes),
        Err(kube::Error::Api(s)) if s.code == 403 => {
            progress(
                "storageclasses: not readable, so claims are not checked for reclaimPolicy Delete",
            );
            None
        }
        Err(e) => return Err(e),
    };
    let claims = list_all(
        &api::<PersistentVolumeClaim>(client, namespace),
        "persistentvolumeclaims",
        progress,
    )
    .await?;
    let autoscalers = list_all(
        &api::<HorizontalPodAutoscaler>(client, namespace),
        "horizontalpodautoscalers",
        progress,
    )
    .await?;
    // Grouped once: a large cluster has many workloads and claims.
    type Held<'a> = (
        Vec<&'a PersistentVolumeClaim>,
        Vec<&'a HorizontalPodAutoscaler>,
    );
    let mut by_namespace: BTreeMap<String, Held> = BTreeMap::new();
    for c in &claims {
        by_namespace
            .entry(c.namespace().unwrap_or_default())
            .or_default()
            .0
            .push(c);
    }
    for h in &autoscalers {
        by_namespace
            .entry(h.namespace().unwrap_or_default())
            .or_default()
            .1
            .push(h);
    }
    let facts = |ns: &str| {
        let (claims, autoscalers) = by_namespace.get(ns).cloned().unwrap_or_default();
        super::facts_for(
            namespaces.iter().find(|n| n.name_any() == ns),
            claims.into_iter(),
            autoscalers.into_iter(),
            false,
        )
    };
    let mut entries = Vec::new();
    let mut subjects = Vec::new();
    for (group, version, kind, plural) in WORKLOADS {
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        for mut item in list_all(&api, plural, progress).await? {
            // List items carry no apiVersion and kind; the core reads kind.
            item.types = Some(TypeMeta {
                api_version: resource.api_version.clone(),
                kind: kind.to_string(),
            });
            let ns = item.namespace().unwrap_or_default();
            let name = item.name_any();
            let object = serde_json::to_value(&item).map_err(kube::Error::SerdeError)?;
            let facts = facts(&ns);
            // The controller reports on no workload of these.
            let reported = !super::reports::unreported(&ns, None);
            let subject = |verdict| Subject {
                api_version: resource.api_version.clone(),
                kind: kind.to_string(),
                namespace: ns.clone(),
                name: name.clone(),
                uid: item.metadata.uid.clone(),
                verdict,
            };
            if let Some(why) = super::reports::not_judged(&policy.config, &ns, &facts) {
                if reported && !super::controlled(&item.metadata) {
                    subjects.push(subject(Verdict::Skipped(why)));
                }
                continue;
            }
            let mode = facts.mode(&policy.config);
            let (findings, verdict) = match Object::from_value(&object) {
                // Owned objects are judged through their owner (as the
                // webhook's matchConditions skip the control plane's
                // writes): an operator's Pods are its business.
                Ok(Object::Workload(w)) if w.controller_owner().is_some() => continue,
                Ok(Object::Workload(w)) => match super::reports::verdict(policy, &w, &facts) {
                    Some(verdict) => {
                        let mut findings = match &verdict {
                            Verdict::Judged { findings, .. } => findings.clone(),
                            Verdict::Skipped(_) | Verdict::Unreadable(_) => Vec::new(),
                        };
                        // As admission answers in this namespace: in warn
                        // and audit mode nothing is denied.
                        if mode != Mode::Enforce {
                            for f in &mut findings {
                                f.severity = Severity::Warn;
                            }
                        }
                        (findings, verdict)
                    }
                    None => continue,
                },
                Ok(Object::Other) => continue,
                Err(e) => (
                    vec![unreadable(kind, &ns, &name, &e.to_string())],
                    Verdict::Unreadable(e.to_string()),
                ),
            };
            if reported {
                subjects.push(subject(verdict));
            }
            let mut findings = findings;
            if *kind == "StatefulSet" {
                findings.extend(retention_deletes(&object, &ns, &name));
            }
            entries.push(Entry {
                source: source.to_string(),
                kind: kind.to_string(),
                namespace: ns,
                name,
                findings,
            });
        }
    }
    if let Some(classes) = &classes {
        entries.extend(reclaim_deletes(&claims, classes, source));
    }
    Ok(Audited { entries, subjects })
}

fn unreadable(kind: &str, ns: &str, name: &str, why: &str) -> Finding {
    Finding::about_object(
        Rule::UnresolvedDataPath,
        "",
        format!(
            "[{}] {kind} {ns}/{name}: pvc-guard cannot read it: {why}",
            Rule::UnresolvedDataPath
        ),
    )
}

/// A StatefulSet whose `persistentVolumeClaimRetentionPolicy` deletes claims.
fn retention_deletes(object: &Value, ns: &str, name: &str) -> Vec<Finding> {
    let policy = object.pointer("/spec/persistentVolumeClaimRetentionPolicy");
    ["whenDeleted", "whenScaled"]
        .into_iter()
        .filter(|when| {
            policy
                .and_then(|p| p.get(*when))
                .and_then(Value::as_str)
                == Some("Delete")
        })
        .map(|when| Finding::about_object(
            Rule::ClaimRetentionDelete,
            when,
            format!(
                "[{}] StatefulSet {ns}/{name} has persistentVolumeClaimRetentionPolicy.{when}: Delete: its claims, and with the usual reclaim policy their data, go when it is {}. Set it to Retain unless the data is disposable.",
                Rule::ClaimRetentionDelete,
                if when == "whenDeleted" { "deleted" } else { "scaled down" }
            ),
        ))
        .collect()
}

/// Claims whose StorageClass (named, or the default one) has
/// `reclaimPolicy: Delete`, Kubernetes' default when the field is absent.
fn reclaim_deletes(
    claims: &[PersistentVolumeClaim],
    classes: &[StorageClass],
    source: &str,
) -> Vec<Entry> {
    let default_class = classes.iter().find(|c| {
        c.annotations()
            .get("storageclass.kubernetes.io/is-default-class")
            .is_some_and(|v| v == "true")
    });
    let by_name: BTreeMap<String, &StorageClass> =
        classes.iter().map(|c| (c.name_any(), c)).collect();
    claims
        .iter()
        .filter_map(|claim| {
            let named = claim.spec.as_ref().and_then(|s| s.storage_class_name.as_deref());
            let class = match named {
                Some("") => return None, // statically bound, no class
                Some(n) => by_name.get(n).copied(),
                None => default_class,
            }?;
            if class.reclaim_policy.as_deref().unwrap_or("Delete") != "Delete" {
                return None;
            }
            let (ns, name) = (claim.namespace().unwrap_or_default(), claim.name_any());
            Some(Entry {
                source: source.to_string(),
                kind: "PersistentVolumeClaim".into(),
                namespace: ns.clone(),
                name: name.clone(),
                findings: vec![Finding::about_object(
                    Rule::ReclaimPolicyDelete,
                    "",
                    format!(
                        "[{}] PersistentVolumeClaim {ns}/{name} uses StorageClass {:?} with reclaimPolicy Delete: deleting the claim deletes the volume and its data. Set the bound PersistentVolume's persistentVolumeReclaimPolicy to Retain, or use a class that retains.",
                        Rule::ReclaimPolicyDelete,
                        class.name_any()
                    ),
                )],
            })
        })
        .collect()
}

/// One readable line for a failed API call: the server, and what it said
/// or why it could not be reached.
pub fn describe_error(e: &kube::Error, url: &str) -> String {
    match e {
        kube::Error::Api(s) => format!(
            "the API server at {url} answered {} {}: {}",
            s.code, s.reason, s.message
        ),
        other => {
            let mut why = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                let text = s.to_string();
                if !why.contains(&text) {
                    why.push_str(": ");
                    why.push_str(&text);
                }
                source = s.source();
            }
            format!("cannot talk to the API server at {url}: {why}")
        }
    }
}
