//! A change applied to the typed view, and the JSON Patch operations that
//! make the same edit to the JSON the view was read from. The view keeps
//! every list element in place, so an element's index in the view is its
//! index in the JSON as the operations so far have left it: each operation
//! is addressed by the positions the view holds when it is written.
//!
//! What each change owns (docs/architecture.md, "The mutation and its
//! laws") is found by name, as in the JSON: a change applied twice is the
//! same as applied once.

use serde::Serialize;
use serde_json::{Value, json};

use crate::k8s::pointer_token;
use crate::model::read::{List, Seen, Shape};
use crate::model::{
    ClaimTemplate, Container, ContainerList, Mount, NameOnly, PodSecurityContext, Strategy, Volume,
    Workload,
};
use crate::record::{Change, ClaimSpec, InitDir, permissions_container};

/// One JSON Patch (RFC 6902) operation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    Add { path: String, value: Value },
    Remove { path: String },
    Replace { path: String, value: Value },
}

impl Op {
    pub fn path(&self) -> &str {
        match self {
            Op::Add { path, .. } | Op::Remove { path } | Op::Replace { path, .. } => path,
        }
    }
}

/// Appends `value` to the list at `path`, or makes the list when there is
/// none (absent, null or not a list, which `add` replaces).
fn push<T, const CAP: usize>(
    list: &mut List<T, CAP>,
    item: T,
    path: &str,
    value: Value,
    ops: &mut Vec<Op>,
) {
    if list.shape.is_present() {
        ops.push(Op::Add {
            path: format!("{path}/-"),
            value,
        });
    } else {
        ops.push(Op::Add {
            path: path.to_string(),
            value: Value::Array(vec![value]),
        });
        *list = List {
            shape: Shape::Present,
            items: Vec::new(),
            len: 0,
        };
    }
    list.items.push(item);
    list.len += 1;
}

/// Applies `change` to `w` and appends the operations that make it.
pub fn apply(w: &mut Workload, change: &Change, ops: &mut Vec<Op>) {
    let pod = w.kind.pod_spec_pointer();
    match change {
        Change::ClaimVolume { volume, claim, .. } => claim_volume(w, pod, volume, claim, ops),
        Change::ClaimTemplate { name, spec } => claim_template(w, pod, name, spec, ops),
        Change::Mount {
            container,
            volume,
            mount_path,
            sub_path,
        } => mount(
            w,
            pod,
            container,
            volume,
            mount_path,
            sub_path.as_deref(),
            ops,
        ),
        Change::Permissions { image, dirs } => permissions(w, pod, image, dirs, ops),
        Change::FsGroup { gid } => fs_group(w, pod, *gid, ops),
        Change::Recreate => recreate(w, ops),
    }
}

/// The pod volume `volume` becomes a claim volume, or is added as one.
fn claim_volume(w: &mut Workload, pod: &str, volume: &str, claim: &str, ops: &mut Vec<Op>) {
    let value = json!({"name": volume, "persistentVolumeClaim": {"claimName": claim}});
    let item = Volume::claim_volume(volume, claim);
    let volumes = &mut w.pod.volumes;
    let existing = volumes.shape.is_present().then(|| {
        volumes
            .items
            .iter()
            .position(|v| v.shape.is_present() && v.name.as_deref() == Some(volume))
    });
    match existing.flatten() {
        Some(i) => {
            ops.push(Op::Replace {
                path: format!("{pod}/volumes/{i}"),
                value,
            });
            volumes.items[i] = item;
        }
        None => push(volumes, item, &format!("{pod}/volumes"), value, ops),
    }
}

/// A StatefulSet claim template takes the place of the pod volume.
fn claim_template(w: &mut Workload, pod: &str, name: &str, spec: &ClaimSpec, ops: &mut Vec<Op>) {
    let templates = &mut w.spec.volume_claim_templates;
    if !templates
        .iter()
        .any(|t| t.metadata.name.as_deref() == Some(name))
    {
        let value = json!({"metadata": {"name": name}, "spec": spec.claim_spec()});
        let item = ClaimTemplate {
            shape: Shape::Present,
            metadata: NameOnly {
                shape: Shape::Present,
                name: Some(name.to_string()),
            },
        };
        push(templates, item, "/spec/volumeClaimTemplates", value, ops);
    }
    // The template takes the pod volume's place.
    let volumes = &mut w.pod.volumes;
    if volumes.shape.is_present() {
        for i in (0..volumes.items.len()).rev() {
            let v = &volumes.items[i];
            if v.shape.is_present() && v.name.as_deref() == Some(name) {
                ops.push(Op::Remove {
                    path: format!("{pod}/volumes/{i}"),
                });
                volumes.items.remove(i);
                volumes.len -= 1;
            }
        }
        if volumes.items.is_empty() {
            ops.push(Op::Remove {
                path: format!("{pod}/volumes"),
            });
            *volumes = List::default();
        }
    }
}

/// A mount at `mount_path` in the first container (of either list) named
/// `container`: an existing mount at that path takes the volume, else a
/// new one is added.
fn mount(
    w: &mut Workload,
    pod: &str,
    container: &str,
    volume: &str,
    mount_path: &str,
    sub_path: Option<&str>,
    ops: &mut Vec<Op>,
) {
    for list in [ContainerList::Containers, ContainerList::InitContainers] {
        let items = w.pod.list_mut(list);
        if !items.shape.is_present() {
            continue;
        }
        let Some(ci) = items
            .items
            .iter()
            .position(|c| c.shape.is_present() && c.name.as_deref() == Some(container))
        else {
            continue;
        };
        let base = format!("{pod}/{}/{ci}/volumeMounts", list.key());
        let mounts = &mut items.items[ci].volume_mounts;
        let existing = mounts.shape.is_present().then(|| {
            mounts
                .items
                .iter()
                .position(|m| m.shape.is_present() && m.mount_path.as_deref() == Some(mount_path))
        });
        match existing.flatten() {
            Some(k) => {
                ops.push(Op::Add {
                    path: format!("{base}/{k}/name"),
                    value: json!(volume),
                });
                let m = &mut mounts.items[k];
                m.name = Some(volume.to_string());
                if let Some(sp) = sub_path {
                    ops.push(Op::Add {
                        path: format!("{base}/{k}/subPath"),
                        value: json!(sp),
                    });
                    m.sub_path = Some(sp.to_string());
                }
            }
            None => {
                let mut value = json!({"name": volume, "mountPath": mount_path});
                if let Some(sp) = sub_path {
                    value["subPath"] = json!(sp);
                }
                let item = Mount {
                    shape: Shape::Present,
                    name: Some(volume.to_string()),
                    mount_path: Some(mount_path.to_string()),
                    sub_path: sub_path.map(str::to_string),
                    ..Mount::default()
                };
                push(mounts, item, &base, value, ops);
            }
        }
        break;
    }
}

/// The permissions init container, first of the init containers so it has
/// run before any sidecar starts. The plan never asks for it where a
/// container of its name exists (names are unique across both lists).
fn permissions(w: &mut Workload, pod: &str, image: &str, dirs: &[InitDir], ops: &mut Vec<Op>) {
    let value = permissions_container(image, dirs);
    let item = Container::from_value(&value);
    let inits = &mut w.pod.init_containers;
    if inits.shape.is_present() {
        ops.push(Op::Add {
            path: format!("{pod}/initContainers/0"),
            value,
        });
        inits.items.insert(0, item);
        inits.len += 1;
    } else {
        push(inits, item, &format!("{pod}/initContainers"), value, ops);
    }
}

/// The pod's fsGroup, with OnRootMismatch, unless the pod sets them.
fn fs_group(w: &mut Workload, pod: &str, gid: i64, ops: &mut Vec<Op>) {
    let sc = &mut w.pod.security_context;
    let path = format!("{pod}/securityContext");
    if sc.shape.is_present() {
        if sc.fs_group.0 == Shape::Absent {
            ops.push(Op::Add {
                path: format!("{path}/fsGroup"),
                value: json!(gid),
            });
            sc.fs_group = Seen(Shape::Other);
        }
        if sc.fs_group_change_policy.0 == Shape::Absent {
            ops.push(Op::Add {
                path: format!("{path}/fsGroupChangePolicy"),
                value: json!("OnRootMismatch"),
            });
            sc.fs_group_change_policy = Seen(Shape::Other);
        }
    } else {
        ops.push(Op::Add {
            path,
            value: json!({"fsGroup": gid, "fsGroupChangePolicy": "OnRootMismatch"}),
        });
        *sc = PodSecurityContext {
            shape: Shape::Present,
            fs_group: Seen(Shape::Other),
            fs_group_change_policy: Seen(Shape::Other),
            ..PodSecurityContext::default()
        };
    }
}

/// `strategy: {type: Recreate}`, with any rollingUpdate settings removed.
fn recreate(w: &mut Workload, ops: &mut Vec<Op>) {
    let s = &mut w.spec.strategy;
    if s.shape.is_present() {
        ops.push(Op::Add {
            path: "/spec/strategy/type".into(),
            value: json!("Recreate"),
        });
        if s.rolling_update.0 != Shape::Absent {
            ops.push(Op::Remove {
                path: "/spec/strategy/rollingUpdate".into(),
            });
        }
    } else {
        ops.push(Op::Add {
            path: "/spec/strategy".into(),
            value: json!({"type": "Recreate"}),
        });
    }
    *s = Strategy {
        shape: Shape::Present,
        type_: Some("Recreate".into()),
        rolling_update: Seen::default(),
    };
}

/// Sets annotations on the workload's own metadata (never its pod
/// template: a template change starts a rollout). The caller has checked
/// that `metadata` is an object.
pub fn set_annotations(w: &mut Workload, entries: &[(&str, String)], ops: &mut Vec<Op>) {
    if w.annotations.shape.is_present() {
        for (key, value) in entries {
            ops.push(Op::Add {
                path: format!("/metadata/annotations/{}", pointer_token(key)),
                value: json!(value),
            });
        }
    } else {
        let map: serde_json::Map<String, Value> = entries
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        ops.push(Op::Add {
            path: "/metadata/annotations".into(),
            value: Value::Object(map),
        });
        w.annotations.shape = Shape::Present;
    }
    for (key, value) in entries {
        if *key == crate::record::MUTATED_ANNOTATION {
            w.annotations.mutated = Some(value.clone());
        }
    }
}
