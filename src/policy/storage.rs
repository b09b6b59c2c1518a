//! Where each data path lives (docs/architecture.md, "Storage"): the
//! longest mount that contains it, that mount's volume, and the image
//! VOLUMEs the container runtime mounts over whatever the pod mounted above
//! them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use crate::config::CsiClass;
use crate::k8s::{PathIndex, path_contains};
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

/// A container's mounts by path, built once per container so that a data
/// path finds its mount in time linear in its own length, however many
/// mounts and data paths the container has.
pub struct MountIndex<'w> {
    container: ContainerRef<'w>,
    /// Each mount's index by its mountPath.
    by_path: PathIndex<'w, usize>,
    /// The mountPaths as written.
    exact: HashSet<&'w str>,
}

impl<'w> MountIndex<'w> {
    pub fn new(container: ContainerRef<'w>) -> MountIndex<'w> {
        let paths = || {
            container
                .container
                .volume_mounts
                .items
                .iter()
                .enumerate()
                .filter_map(|(index, m)| Some((m.mount_path.as_deref()?, index)))
        };
        MountIndex {
            container,
            by_path: PathIndex::new(paths()),
            exact: paths().map(|(path, _)| path).collect(),
        }
    }

    /// The mount with the longest mountPath containing `path` (of equal
    /// ones, the last, as the kubelet's later mount wins).
    pub fn containing(&self, path: &str) -> Option<Mount<'w>> {
        let index = self.by_path.longest_containing(path)?;
        let m = &self.container.container.volume_mounts.items[index];
        Some(Mount {
            index,
            mount_path: m.mount_path.as_deref().unwrap_or(""),
            volume_name: m.name.as_deref().unwrap_or(""),
            sub_path: m.sub_path(),
            read_only: m.read_only.unwrap_or(false),
        })
    }

    /// Does some mount's mountPath equal `path` as written?
    pub fn mounts_exactly(&self, path: &str) -> bool {
        self.exact.contains(path)
    }
}

/// Classifies one data path of one container.
pub fn place<'w>(
    workload: &'w Workload,
    volumes: &HashMap<&'w str, &'w Volume>,
    mounts: &MountIndex<'w>,
    path: &str,
    file: bool,
    image_volumes: &[String],
    csi: &BTreeMap<String, CsiClass>,
) -> Placement<'w> {
    let container = &mounts.container;
    let mount = mounts.containing(path);
    // The runtime mounts each image VOLUME that no mount matches exactly
    // over any shallower pod mount.
    let shadow = image_volumes
        .iter()
        .filter(|v| path_contains(v, path))
        .filter(|v| !mounts.mounts_exactly(v))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Object;
    use proptest::prelude::*;
    use serde_json::json;

    /// What the index replaces: every mount, each compared with the path.
    fn scanned(container: &ContainerRef<'_>, path: &str) -> Option<usize> {
        let mut best: Option<(usize, usize)> = None;
        for (index, m) in container.container.volume_mounts.items.iter().enumerate() {
            let Some(mp) = m.mount_path.as_deref() else {
                continue;
            };
            if path_contains(mp, path) && best.is_none_or(|(len, _)| mp.len() >= len) {
                best = Some((mp.len(), index));
            }
        }
        best.map(|(_, index)| index)
    }

    /// A path from few segments, so mounts and paths often nest, with the
    /// empty, doubled and trailing slashes the API server would refuse.
    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec(prop_oneof!["a", "b", "ab", "", "."], 0..5).prop_map(|parts| {
            let mut p = String::new();
            for part in parts {
                p.push('/');
                p.push_str(&part);
            }
            p
        })
    }

    proptest! {
        #[test]
        fn the_index_finds_the_mount_a_scan_finds(
            mounts in prop::collection::vec(prop::option::weighted(0.9, path()), 0..12),
            paths in prop::collection::vec(prop_oneof![path(), Just(String::new()), Just("a/b".to_string())], 1..8),
        ) {
            let list: Vec<_> = mounts.iter().enumerate()
                .map(|(i, _)| json!({"name": format!("v{i}"), "mountPath": "/x"}))
                .collect();
            let object = json!({"kind": "Pod", "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "c", "volumeMounts": list}]}});
            let Ok(Object::Workload(mut w)) = Object::from_value(&object) else {
                panic!("a pod reads");
            };
            // Normalised, as the read leaves every mountPath; a missing
            // one stays missing.
            for (m, raw) in w.pod.containers.items[0].volume_mounts.items.iter_mut().zip(&mounts) {
                m.mount_path = raw.as_deref().map(crate::k8s::normalize_path);
            }
            let container = w.containers().next().expect("one container");
            let index = MountIndex::new(container);
            for p in &paths {
                prop_assert_eq!(index.containing(p).map(|m| m.index), scanned(&container, p), "path {:?}", p);
                let exact = container.container.mounts().any(|m| m.mount_path.as_deref() == Some(p.as_str()));
                prop_assert_eq!(index.mounts_exactly(p), exact);
            }
        }
    }
}
