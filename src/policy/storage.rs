//! Where each data path lives (DESIGN.md, section 2): the longest mount that
//! contains it, that mount's volume, and the image VOLUMEs the container
//! runtime mounts over whatever the pod mounted above them.

use std::collections::BTreeMap;

use serde_json::Value;

use super::workload::{Container, Kind, Workload, at, normalize_path, path_contains};
use crate::config::CsiClass;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageClass {
    WritableLayer,
    ImageVolume,
    Ephemeral,
    ReadOnlySource,
    NodeLocal,
    Persistent,
    Unknown,
}

impl StorageClass {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageClass::WritableLayer => "writable-layer",
            StorageClass::ImageVolume => "image-volume",
            StorageClass::Ephemeral => "ephemeral",
            StorageClass::ReadOnlySource => "read-only-source",
            StorageClass::NodeLocal => "node-local",
            StorageClass::Persistent => "persistent",
            StorageClass::Unknown => "unknown",
        }
    }
}

/// The mount that holds a data path.
#[derive(Debug, Clone)]
pub struct Mount<'a> {
    pub index: usize,
    pub mount_path: String,
    pub volume_name: &'a str,
    pub sub_path: Option<&'a str>,
    pub read_only: bool,
}

/// What the volume behind a mount is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    None,
    EmptyDir,
    GenericEphemeral,
    Claim(String),
    ClaimTemplate(String),
    Other(String),
    Missing,
}

#[derive(Debug, Clone)]
pub struct Placement<'a> {
    pub class: StorageClass,
    pub mount: Option<Mount<'a>>,
    pub backing: Backing,
    /// The image VOLUME that shadows the mount above the path.
    pub image_volume: Option<String>,
    /// `subPathExpr` with the pod name outside a StatefulSet.
    pub per_pod_sub_path: bool,
    /// A single-file mount of the data file itself.
    pub file_mount: bool,
    /// Human words for the storage: `emptyDir volume "data"`.
    pub describe: String,
}

/// Built-in classes of inline CSI drivers; config entries override them.
const CSI_DRIVERS: &[(&str, CsiClass)] = &[
    ("secrets-store.csi.k8s.io", CsiClass::ReadOnlySource),
    ("csi.cert-manager.io", CsiClass::ReadOnlySource),
    ("spiffe.csi.cert-manager.io", CsiClass::ReadOnlySource),
    ("file.csi.azure.com", CsiClass::Persistent),
    ("nfs.csi.k8s.io", CsiClass::Persistent),
    ("smb.csi.k8s.io", CsiClass::Persistent),
    ("efs.csi.aws.com", CsiClass::Persistent),
    ("filestore.csi.storage.gke.io", CsiClass::Persistent),
];

/// Network and cloud volume sources: the data outlives the pod.
const PERSISTENT_SOURCES: &[&str] = &[
    "persistentVolumeClaim",
    "nfs",
    "iscsi",
    "cephfs",
    "rbd",
    "cinder",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "fc",
    "flexVolume",
    "flocker",
    "glusterfs",
    "photonPersistentDisk",
    "portworxVolume",
    "quobyte",
    "scaleIO",
    "storageos",
    "vsphereVolume",
];

const READ_ONLY_SOURCES: &[&str] = &["configMap", "secret", "downwardAPI", "projected", "image"];

fn csi_class(driver: &str, config: &BTreeMap<String, CsiClass>) -> CsiClass {
    config
        .get(driver)
        .copied()
        .or_else(|| {
            CSI_DRIVERS
                .iter()
                .find(|(d, _)| *d == driver)
                .map(|(_, c)| *c)
        })
        .unwrap_or(CsiClass::Unknown)
}

fn volume_class(
    volume: &Value,
    csi: &BTreeMap<String, CsiClass>,
) -> (StorageClass, Backing, String) {
    let name = volume.get("name").and_then(Value::as_str).unwrap_or("");
    let Some(obj) = volume.as_object() else {
        return (
            StorageClass::Unknown,
            Backing::Missing,
            format!("volume {name:?}"),
        );
    };
    let source = obj
        .keys()
        .find(|k| *k != "name")
        .map(String::as_str)
        .unwrap_or("");
    let describe = format!("{source} volume {name:?}");
    match source {
        "emptyDir" | "gitRepo" => (StorageClass::Ephemeral, Backing::EmptyDir, describe),
        "ephemeral" => (StorageClass::Ephemeral, Backing::GenericEphemeral, describe),
        "hostPath" | "local" => (
            StorageClass::NodeLocal,
            Backing::Other(source.into()),
            describe,
        ),
        "persistentVolumeClaim" => {
            let claim = at(volume, "/persistentVolumeClaim/claimName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            (
                StorageClass::Persistent,
                Backing::Claim(claim.clone()),
                format!("claim {claim:?}"),
            )
        }
        s if PERSISTENT_SOURCES.contains(&s) => {
            (StorageClass::Persistent, Backing::Other(s.into()), describe)
        }
        s if READ_ONLY_SOURCES.contains(&s) => (
            StorageClass::ReadOnlySource,
            Backing::Other(s.into()),
            describe,
        ),
        "csi" => {
            let driver = at(volume, "/csi/driver")
                .and_then(Value::as_str)
                .unwrap_or("");
            let class = match csi_class(driver, csi) {
                CsiClass::Persistent => StorageClass::Persistent,
                CsiClass::ReadOnlySource => StorageClass::ReadOnlySource,
                CsiClass::Ephemeral => StorageClass::Ephemeral,
                CsiClass::NodeLocal => StorageClass::NodeLocal,
                CsiClass::Unknown => StorageClass::Unknown,
            };
            (
                class,
                Backing::Other("csi".into()),
                format!("inline CSI volume {name:?} (driver {driver})"),
            )
        }
        _ => (
            StorageClass::Unknown,
            Backing::Other(source.into()),
            describe,
        ),
    }
}

/// The container's mount with the longest mountPath containing `path`.
pub fn containing_mount<'a>(container: &Container<'a>, path: &str) -> Option<Mount<'a>> {
    container
        .mounts()
        .iter()
        .enumerate()
        .filter_map(|(index, m)| {
            let mp = normalize_path(m.get("mountPath")?.as_str()?);
            path_contains(&mp, path).then(|| Mount {
                index,
                mount_path: mp,
                volume_name: m.get("name").and_then(Value::as_str).unwrap_or(""),
                sub_path: m
                    .get("subPath")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty()),
                read_only: m.get("readOnly").and_then(Value::as_bool).unwrap_or(false),
            })
        })
        .max_by_key(|m| m.mount_path.len())
}

/// Classifies one data path of one container.
pub fn place<'a>(
    workload: &Workload<'a>,
    container: &Container<'a>,
    path: &str,
    file: bool,
    image_volumes: &[String],
    csi: &BTreeMap<String, CsiClass>,
) -> Placement<'a> {
    let mount = containing_mount(container, path);
    // The runtime mounts each image VOLUME that no mount matches exactly
    // over any shallower pod mount.
    let shadow = image_volumes
        .iter()
        .filter(|v| path_contains(v, path))
        .filter(|v| {
            !container.mounts().iter().any(|m| {
                m.get("mountPath")
                    .and_then(Value::as_str)
                    .map(normalize_path)
                    .as_deref()
                    == Some(v.as_str())
            })
        })
        .filter(|v| {
            mount
                .as_ref()
                .is_none_or(|m| path_contains(&m.mount_path, v) && m.mount_path != **v)
        })
        .max_by_key(|v| v.len())
        .cloned();
    let Some(mount) = mount else {
        return match shadow {
            Some(v) => Placement {
                class: StorageClass::ImageVolume,
                mount: None,
                backing: Backing::None,
                describe: format!(
                    "the image's VOLUME {v}, which the container runtime gives a fresh directory for every container"
                ),
                image_volume: Some(v),
                per_pod_sub_path: false,
                file_mount: false,
            },
            None => Placement {
                class: StorageClass::WritableLayer,
                mount: None,
                backing: Backing::None,
                image_volume: None,
                per_pod_sub_path: false,
                file_mount: false,
                describe: "the container's writable layer".into(),
            },
        };
    };
    if let Some(v) = shadow {
        return Placement {
            class: StorageClass::ImageVolume,
            describe: format!(
                "the image's VOLUME {v}: the container runtime mounts a fresh per-container directory there, over the mount at {}",
                mount.mount_path
            ),
            mount: Some(mount),
            backing: Backing::None,
            image_volume: Some(v),
            per_pod_sub_path: false,
            file_mount: false,
        };
    }
    let file_mount = file && mount.mount_path == path;
    let mount_value = &container.mounts()[mount.index];
    let per_pod_sub_path = workload.kind != Kind::StatefulSet
        && mount_value
            .get("subPathExpr")
            .and_then(Value::as_str)
            .is_some_and(|e| e.contains("$(POD_NAME)") || e.contains("$(HOSTNAME)"));

    let (mut class, backing, describe) = if workload.claim_template(mount.volume_name).is_some() {
        (
            StorageClass::Persistent,
            Backing::ClaimTemplate(mount.volume_name.to_string()),
            format!("the volumeClaimTemplate {:?}", mount.volume_name),
        )
    } else if let Some(volume) = workload.volume(mount.volume_name) {
        volume_class(volume, csi)
    } else {
        (
            StorageClass::Unknown,
            Backing::Missing,
            format!(
                "volume {:?}, which the pod spec does not define",
                mount.volume_name
            ),
        )
    };
    if per_pod_sub_path && class == StorageClass::Persistent {
        class = StorageClass::Ephemeral;
    }
    Placement {
        class,
        mount: Some(mount),
        backing,
        image_volume: None,
        per_pod_sub_path,
        file_mount,
        describe,
    }
}
