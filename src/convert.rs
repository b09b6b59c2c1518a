//! `pvc-guard convert`: the StatefulSet hint made concrete. A Deployment
//! becomes a StatefulSet with the same pod template, `volumeClaimTemplates`
//! in place of its database claims and ephemeral data volumes, a headless
//! Service, and (as comments) the steps that move an existing claim's data.

use serde_json::{Map, Value, json};

use crate::model::{Object, Workload};
use crate::mutate::{self, patch};
use crate::policy::storage::Backing;
use crate::policy::{ClusterFacts, Policy};
use crate::record::{Change, ClaimSpec, HINT_ANNOTATION, MUTATED_ANNOTATION};

const DROPPED_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    MUTATED_ANNOTATION,
    HINT_ANNOTATION,
];

fn workload(object: &Value) -> Result<Workload, String> {
    match Object::from_value(object).map_err(|e| e.0)? {
        Object::Workload(w) => Ok(*w),
        Object::Other => Err("not a workload".into()),
    }
}

fn str_at<'v>(v: &'v Value, p: &str) -> Option<&'v str> {
    v.pointer(p).and_then(Value::as_str)
}

/// A Deployment converted: the objects to apply, and the steps that move
/// its data, as YAML comments.
pub struct Converted {
    pub objects: Vec<Value>,
    pub steps: String,
}

/// The StatefulSet, its headless Service and the migration steps.
pub fn convert(policy: &Policy, deployment: &Value) -> Result<Converted, String> {
    // What cannot be read is said of the Deployment, not of the
    // StatefulSet made from it.
    workload(deployment)?;
    let name = str_at(deployment, "/metadata/name")
        .ok_or("the Deployment has no name")?
        .to_string();
    let namespace = str_at(deployment, "/metadata/namespace").map(str::to_string);
    let spec = deployment
        .get("spec")
        .and_then(Value::as_object)
        .ok_or("the Deployment has no spec")?;
    let template = spec
        .get("template")
        .cloned()
        .ok_or("the Deployment has no pod template")?;
    let service = format!("{name}-headless");

    let mut metadata = Map::new();
    metadata.insert("name".into(), json!(name));
    if let Some(ns) = &namespace {
        metadata.insert("namespace".into(), json!(ns));
    }
    for key in ["labels", "annotations"] {
        if let Some(Value::Object(m)) = deployment.pointer(&format!("/metadata/{key}")) {
            let kept: Map<String, Value> = m
                .iter()
                .filter(|(k, _)| !DROPPED_ANNOTATIONS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if !kept.is_empty() {
                metadata.insert(key.into(), Value::Object(kept));
            }
        }
    }
    let mut sts_spec = Map::new();
    sts_spec.insert(
        "replicas".into(),
        spec.get("replicas").cloned().unwrap_or(json!(1)),
    );
    if let Some(selector) = spec.get("selector") {
        sts_spec.insert("selector".into(), selector.clone());
    }
    sts_spec.insert("serviceName".into(), json!(service));
    sts_spec.insert("template".into(), template);
    sts_spec.insert(
        "persistentVolumeClaimRetentionPolicy".into(),
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
    );
    for key in ["minReadySeconds", "revisionHistoryLimit"] {
        if let Some(v) = spec.get(key) {
            sts_spec.insert(key.into(), v.clone());
        }
    }
    let mut sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": metadata, "spec": sts_spec});

    // Ephemeral data volumes and missing mounts become claim templates, as
    // the mutation would do for a StatefulSet.
    let facts = ClusterFacts::default();
    let fixed = mutate::mutate_create(policy, &workload(&sts)?, &facts);
    sts = fixed.apply_to(&sts)?;
    if let Some(Value::Object(a)) = sts.pointer_mut("/metadata/annotations") {
        a.remove(MUTATED_ANNOTATION);
        if a.is_empty() {
            sts["metadata"]
                .as_object_mut()
                .expect("metadata")
                .remove("annotations");
        }
    }

    // Existing claims at data paths: per-replica templates, and the data to move.
    let mut moves: Vec<(String, String, ClaimSpec)> = Vec::new();
    let mut view = workload(&sts)?;
    {
        let a = policy.evaluate(&view, &facts);
        for site in &a.sites {
            if let (Backing::Claim(claim), Some(m)) =
                (&site.placement.backing, &site.placement.mount)
                && site.path.source.is_database()
                && !moves.iter().any(|(v, _, _)| v == m.volume_name)
            {
                let spec = ClaimSpec {
                    size: policy.config.claims.size.clone(),
                    storage_class: policy.config.claims.storage_class.clone(),
                    access_mode: policy.config.claims.access_mode.clone(),
                };
                moves.push((m.volume_name.to_string(), claim.to_string(), spec));
            }
        }
    }
    let mut ops = Vec::new();
    for (volume, _, spec) in &moves {
        let change = Change::ClaimTemplate {
            name: volume.clone(),
            spec: spec.clone(),
        };
        patch::apply(&mut view, &change, &mut ops);
    }
    sts = mutate::apply_ops(&sts, &ops)?;

    let labels = sts
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    let selector = sts
        .pointer("/spec/selector/matchLabels")
        .cloned()
        .unwrap_or(labels);
    let mut ports = Vec::new();
    if let Some(Value::Array(cs)) = sts.pointer("/spec/template/spec/containers") {
        for c in cs {
            for p in c
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(port) = p.get("containerPort") {
                    let mut entry = json!({"port": port, "targetPort": port});
                    if let Some(n) = p.get("name") {
                        entry["name"] = n.clone();
                    }
                    if let Some(proto) = p.get("protocol") {
                        entry["protocol"] = proto.clone();
                    }
                    ports.push(entry);
                }
            }
        }
    }
    let mut svc_meta = json!({"name": service});
    if let Some(ns) = &namespace {
        svc_meta["namespace"] = json!(ns);
    }
    let svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": svc_meta,
        "spec": {"clusterIP": "None", "selector": selector, "ports": ports},
    });

    let ns_flag = namespace
        .as_ref()
        .map(|n| format!(" -n {n}"))
        .unwrap_or_default();
    let mut out = format!(
        "# StatefulSet equivalent of Deployment {name}, printed by pvc-guard convert.\n\
         # Its claims are named <template>-{name}-<ordinal> and are kept when the\n\
         # StatefulSet is deleted or scaled down (persistentVolumeClaimRetentionPolicy: Retain).\n"
    );
    for (volume, claim, _) in &moves {
        let target = format!("{volume}-{name}-0");
        out.push_str(&format!(
            "#\n# Move the data of claim {claim} to the StatefulSet's first claim {target}:\n\
             #   1. kubectl{ns_flag} scale deployment {name} --replicas=0\n\
             #   2. PV=$(kubectl{ns_flag} get pvc {claim} -o jsonpath='{{.spec.volumeName}}')\n\
             #   3. kubectl patch pv \"$PV\" -p '{{\"spec\":{{\"persistentVolumeReclaimPolicy\":\"Retain\"}}}}'\n\
             #   4. kubectl{ns_flag} delete pvc {claim}\n\
             #   5. kubectl patch pv \"$PV\" --type json -p '[{{\"op\":\"remove\",\"path\":\"/spec/claimRef\"}}]'\n\
             #   6. create claim {target} bound to it: the claim of step 5's volume, with\n\
             #      spec.volumeName: $PV and the same storageClassName, size and accessModes\n\
             #   7. kubectl apply -f <this file>, wait for pod {name}-0, then\n\
             #      kubectl{ns_flag} delete deployment {name}\n"
        ));
    }
    Ok(Converted {
        objects: vec![sts, svc],
        steps: out,
    })
}
