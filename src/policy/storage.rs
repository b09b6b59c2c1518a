//! Where each data path lives (docs/architecture.md, "Storage"): the
//! longest mount that contains it, that mount's volume, and the image
//! VOLUMEs the container runtime mounts over whatever the pod mounted above
//! them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::config::CsiClass;
use crate::k8s::path_contains;
use crate::model::{ContainerRef, Kind, Volume, Workload};

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
pub struct Mount<'w> {
    pub index: usize,
    pub mount_path: &'w str,
    pub volume_name: &'w str,
    pub sub_path: Option<&'w str>,
    pub read_only: bool,
}

/// What the volume behind a mount is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing<'w> {
    None,
    EmptyDir,
    GenericEphemeral,
    Claim(&'w str),
    ClaimTemplate(&'w str),
    Other,
    Missing,
}

/// The storage, in the words messages use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Describe<'w> {
    WritableLayer,
    /// A data path in an image VOLUME no mount matches.
    ImageVolume(String),
    /// An image VOLUME mounted over the pod's mount above it.
    ImageVolumeOver {
        volume: String,
        mount: &'w str,
    },
    /// `emptyDir volume "data"` and the like.
    Volume {
        source: &'w str,
        name: &'w str,
    },
    Claim(&'w str),
    Csi {
        name: &'w str,
        driver: &'w str,
    },
    ClaimTemplate(&'w str),
    Undefined(&'w str),
}

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Describe::WritableLayer => f.write_str("the container's writable layer"),
            Describe::ImageVolume(v) => write!(
                f,
                "the image's VOLUME {v}, which the container runtime gives a fresh directory for every container"
            ),
            Describe::ImageVolumeOver { volume, mount } => write!(
                f,
                "the image's VOLUME {volume}: the container runtime mounts a fresh per-container directory there, over the mount at {mount}"
            ),
            // A nameless volume or mount is refused by the API server, but
            // the message must still read as words, not `volume ""`.
            Describe::Volume { source, name: "" } => {
                write!(f, "a volume without a name ({source})")
            }
            Describe::Volume { source, name } => write!(f, "{source} volume {name:?}"),
            Describe::Claim(c) => write!(f, "claim {c:?}"),
            Describe::Csi { name, driver } => {
                write!(f, "inline CSI volume {name:?} (driver {driver})")
            }
            Describe::ClaimTemplate(n) => write!(f, "the volumeClaimTemplate {n:?}"),
            Describe::Undefined("") => f.write_str("a mount that names no volume"),
            Describe::Undefined(n) => {
                write!(f, "volume {n:?}, which the pod spec does not define")
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Placement<'w> {
    pub class: StorageClass,
    pub mount: Option<Mount<'w>>,
    pub backing: Backing<'w>,
    /// The image VOLUME that shadows the mount above the path.
    pub image_volume: Option<String>,
    /// `subPathExpr` with the pod name outside a StatefulSet.
    pub per_pod_sub_path: bool,
    /// A single-file mount of the data file itself.
    pub file_mount: bool,
    pub describe: Describe<'w>,
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

fn volume_class<'w>(
    volume: &'w Volume,
    csi: &BTreeMap<String, CsiClass>,
) -> (StorageClass, Backing<'w>, Describe<'w>) {
    let name = volume.name();
    let source = volume.source();
    let describe = Describe::Volume { source, name };
    match source {
        "emptyDir" | "gitRepo" => (StorageClass::Ephemeral, Backing::EmptyDir, describe),
        "ephemeral" => (StorageClass::Ephemeral, Backing::GenericEphemeral, describe),
        "hostPath" | "local" => (StorageClass::NodeLocal, Backing::Other, describe),
        "persistentVolumeClaim" => {
            let claim = volume
                .persistent_volume_claim
                .claim_name
                .as_deref()
                .unwrap_or("");
            (
                StorageClass::Persistent,
                Backing::Claim(claim),
                Describe::Claim(claim),
            )
        }
        s if PERSISTENT_SOURCES.contains(&s) => {
            (StorageClass::Persistent, Backing::Other, describe)
        }
        s if READ_ONLY_SOURCES.contains(&s) => {
            (StorageClass::ReadOnlySource, Backing::Other, describe)
        }
        "csi" => {
            let driver = volume.csi.driver.as_deref().unwrap_or("");
            let class = match csi_class(driver, csi) {
                CsiClass::Persistent => StorageClass::Persistent,
                CsiClass::ReadOnlySource => StorageClass::ReadOnlySource,
                CsiClass::Ephemeral => StorageClass::Ephemeral,
                CsiClass::NodeLocal => StorageClass::NodeLocal,
                CsiClass::Unknown => StorageClass::Unknown,
            };
            (class, Backing::Other, Describe::Csi { name, driver })
        }
        _ => (StorageClass::Unknown, Backing::Other, describe),
    }
}

/// The container's mount with the longest mountPath containing `path`
/// (of equal ones, the last, as the kubelet's later mount wins).
pub fn containing_mount<'w>(container: &ContainerRef<'w>, path: &str) -> Option<Mount<'w>> {
    let mut best: Option<Mount<'w>> = None;
    for (index, m) in container.container.volume_mounts.items.iter().enumerate() {
        let Some(mp) = m.mount_path.as_deref() else {
            continue;
        };
        if path_contains(mp, path) && best.as_ref().is_none_or(|b| mp.len() >= b.mount_path.len()) {
            best = Some(Mount {
                index,
                mount_path: mp,
                volume_name: m.name.as_deref().unwrap_or(""),
                sub_path: m.sub_path(),
                read_only: m.read_only.unwrap_or(false),
            });
        }
    }
    best
}

/// Classifies one data path of one container.
pub fn place<'w>(
    workload: &'w Workload,
    volumes: &HashMap<&'w str, &'w Volume>,
    container: &ContainerRef<'w>,
    path: &str,
    file: bool,
    image_volumes: &[String],
    csi: &BTreeMap<String, CsiClass>,
) -> Placement<'w> {
    let mount = containing_mount(container, path);
    // The runtime mounts each image VOLUME that no mount matches exactly
    // over any shallower pod mount.
    let shadow = image_volumes
        .iter()
        .filter(|v| path_contains(v, path))
        .filter(|v| {
            !container
                .container
                .mounts()
                .any(|m| m.mount_path.as_deref() == Some(v.as_str()))
        })
        .filter(|v| {
            mount
                .as_ref()
                .is_none_or(|m| path_contains(m.mount_path, v) && m.mount_path != v.as_str())
        })
        .max_by_key(|v| v.len())
        .cloned();
    let Some(mount) = mount else {
        let (class, describe) = match &shadow {
            Some(v) => (StorageClass::ImageVolume, Describe::ImageVolume(v.clone())),
            None => (StorageClass::WritableLayer, Describe::WritableLayer),
        };
        return Placement {
            class,
            mount: None,
            backing: Backing::None,
            describe,
            image_volume: shadow,
            per_pod_sub_path: false,
            file_mount: false,
        };
    };
    if let Some(v) = shadow {
        return Placement {
            class: StorageClass::ImageVolume,
            describe: Describe::ImageVolumeOver {
                volume: v.clone(),
                mount: mount.mount_path,
            },
            mount: Some(mount),
            backing: Backing::None,
            image_volume: Some(v),
            per_pod_sub_path: false,
            file_mount: false,
        };
    }
    let file_mount = file && mount.mount_path == path;
    let per_pod_sub_path = workload.kind != Kind::StatefulSet
        && container.container.volume_mounts.items[mount.index]
            .sub_path_expr
            .as_deref()
            .is_some_and(|e| e.contains("$(POD_NAME)") || e.contains("$(HOSTNAME)"));
    // A mount without a name (the API server rejects it, but a webhook sees
    // the object first) mounts no volume, not the one named "": the fix and
    // the UPDATE restore must agree on which volume holds the data.
    let named = container.container.volume_mounts.items[mount.index]
        .name
        .is_some();
    let (mut class, backing, describe) = if named && workload.has_claim_template(mount.volume_name)
    {
        (
            StorageClass::Persistent,
            Backing::ClaimTemplate(mount.volume_name),
            Describe::ClaimTemplate(mount.volume_name),
        )
    } else if let Some(volume) = volumes.get(mount.volume_name).filter(|_| named) {
        volume_class(volume, csi)
    } else {
        (
            StorageClass::Unknown,
            Backing::Missing,
            Describe::Undefined(mount.volume_name),
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
