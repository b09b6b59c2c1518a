//! The typed view of a workload: exactly what the policy reads, read once
//! (from the AdmissionReview's bytes, or from a manifest's JSON value) in
//! one linear pass, with the positions a JSON Patch needs.
//!
//! Fields the policy does not read (`managedFields`, `status`, labels,
//! ports, resources, ...) are skipped, never copied, so memory stays small
//! against the body. Nothing is ever written back from this view: the
//! mutation emits JSON Patch operations against the object as it was sent,
//! so fields this program does not know are never dropped
//! (docs/architecture.md).

pub mod read;

use std::collections::HashMap;

use read::{Counted, Lenient, List, Seen, Shape, view_struct};

use crate::k8s;

/// Hard caps on what one object may hold. Beyond them the object is not
/// judged piece by piece: it gets one `limit-exceeded` denial, so no input
/// can make a request cost more than these allow. Each is far above what a
/// real pod carries.
pub mod limits {
    /// Containers and init containers of one pod, together.
    pub const CONTAINERS: usize = 256;
    pub const VOLUMES: usize = 1024;
    /// Volume mounts of one container.
    pub const MOUNTS_PER_CONTAINER: usize = 1024;
    /// Volume mounts of all containers together.
    pub const MOUNTS: usize = 4096;
    /// Entries of the `pvc-guard.io/data-paths` annotation.
    pub const DATA_PATH_ENTRIES: usize = 256;
    /// Elements of all the lists of one object together (containers,
    /// volumes, mounts, variables, arguments, items, ...). A view of an
    /// element costs up to fifty times its JSON, so past this the lists
    /// only count and the object is denied: its view stays under a few MB
    /// whatever the body (`{},` repeated through 3 MiB is a million
    /// variables, 56 MB of view).
    pub const LIST_ELEMENTS: usize = 32_768;
    /// Data paths found in all containers together: an annotation entry
    /// counts once for each container it reaches, a SQLite file (placed
    /// or not) once for each container that names it. Every one becomes a
    /// finding and a fix, so detection stops copying past it; without it 256 entries reaching 256 containers made a
    /// 43 MB answer from a 180 KB request, and 60,000 variables naming
    /// SQLite files took seconds.
    pub const DATA_PATHS: usize = 4096;
    /// Bytes of those data paths together, each counted as often as it is
    /// found: every finding, site and fix copies its path, so 4,096 paths
    /// of 4,000 bytes were over 100 MB.
    pub const DATA_PATH_BYTES: usize = 1024 * 1024;
    /// `items` of a ConfigMap volume kept; beyond it the volume's files
    /// are unknown (read only to find a server's config file).
    pub const CONFIG_MAP_ITEMS: usize = 1024;
    /// ownerReferences read; later ones are not (they only ever relax).
    pub const OWNERS: usize = 64;
    /// Findings reported for one object; the rest are counted.
    pub const FINDINGS: usize = 100;
    /// Bytes of a denial message.
    pub const MESSAGE_BYTES: usize = 32 * 1024;
    /// Bytes of the object's name and namespace and of a container's name
    /// (the API server allows 253 at most). Messages and findings copy
    /// them once per data path.
    pub const NAME_BYTES: usize = 253;
    /// Bytes of a working directory, a mountPath or a subPath (Linux's
    /// PATH_MAX). Every relative SQLite file is joined onto the working
    /// directory: a 512 KB one made gigabytes.
    pub const PATH_BYTES: usize = 4096;
    /// Bytes of an image reference (a registry host, a 255-byte name, a
    /// tag and a digest fit). Every finding copies its image: a 1 MB one
    /// made 4.3 GB.
    pub const IMAGE_BYTES: usize = 1024;
    /// Bytes of the commands and args of all containers together: each
    /// word of a script becomes a string while detection reads it, which
    /// made 2.8 MB of `a;` about 290 MB. Real scripts of many KB fit.
    pub const COMMAND_BYTES: usize = 256 * 1024;
    /// Bytes of a `pvc-guard.io/mutated` record read: the API server
    /// stores at most this much of all an object's annotations.
    pub const RECORD_BYTES: usize = 256 * 1024;
}

/// Workload kinds pvc-guard judges. Any other kind is allowed untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    ReplicationController,
    Job,
    CronJob,
    Pod,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::ReplicaSet,
        Kind::ReplicationController,
        Kind::Job,
        Kind::CronJob,
        Kind::Pod,
    ];

    pub fn from_kind(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::ReplicationController => "ReplicationController",
            Kind::Job => "Job",
            Kind::CronJob => "CronJob",
            Kind::Pod => "Pod",
        }
    }

    /// JSON Pointer of the pod template's spec.
    pub fn pod_spec_pointer(self) -> &'static str {
        match self {
            Kind::Pod => "/spec",
            Kind::CronJob => "/spec/jobTemplate/spec/template/spec",
            _ => "/spec/template/spec",
        }
    }

    /// The API group of the kind (`""` for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Kind::Pod | Kind::ReplicationController => "",
            Kind::Job | Kind::CronJob => "batch",
            _ => "apps",
        }
    }
}

/// Why an object of a workload kind cannot be judged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unreadable(pub String);

view_struct! {
    /// The `pvc-guard.io/*` annotations (and kubectl's default container):
    /// the only annotations the policy reads.
    pub struct Annotations {
        "pvc-guard.io/data-paths" => data_paths: Option<String>,
        "pvc-guard.io/data-owner" => data_owner: Option<String>,
        "pvc-guard.io/allow-ephemeral" => allow_ephemeral: Option<String>,
        "pvc-guard.io/claim-name" => claim_name: Option<String>,
        "pvc-guard.io/claim-size" => claim_size: Option<String>,
        "pvc-guard.io/claim-storage-class" => claim_storage_class: Option<String>,
        "pvc-guard.io/claim-access-mode" => claim_access_mode: Option<String>,
        "pvc-guard.io/mutated" => mutated: Option<String>,
        "kubectl.kubernetes.io/default-container" => default_container: Option<String>,
    }
}

/// An annotation the policy reads, by meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Annotation {
    DataPaths,
    DataOwner,
    AllowEphemeral,
    ClaimName,
    ClaimSize,
    ClaimStorageClass,
    ClaimAccessMode,
    DefaultContainer,
}

impl Annotation {
    pub fn key(self) -> &'static str {
        use crate::record::*;
        match self {
            Annotation::DataPaths => DATA_PATHS_ANNOTATION,
            Annotation::DataOwner => DATA_OWNER_ANNOTATION,
            Annotation::AllowEphemeral => ALLOW_EPHEMERAL_ANNOTATION,
            Annotation::ClaimName => CLAIM_NAME_ANNOTATION,
            Annotation::ClaimSize => CLAIM_SIZE_ANNOTATION,
            Annotation::ClaimStorageClass => CLAIM_CLASS_ANNOTATION,
            Annotation::ClaimAccessMode => CLAIM_ACCESS_ANNOTATION,
            Annotation::DefaultContainer => DEFAULT_CONTAINER_ANNOTATION,
        }
    }
}

impl Annotations {
    pub fn get(&self, which: Annotation) -> Option<&str> {
        match which {
            Annotation::DataPaths => &self.data_paths,
            Annotation::DataOwner => &self.data_owner,
            Annotation::AllowEphemeral => &self.allow_ephemeral,
            Annotation::ClaimName => &self.claim_name,
            Annotation::ClaimSize => &self.claim_size,
            Annotation::ClaimStorageClass => &self.claim_storage_class,
            Annotation::ClaimAccessMode => &self.claim_access_mode,
            Annotation::DefaultContainer => &self.default_container,
        }
        .as_deref()
    }
}

view_struct! {
    pub struct OwnerReference {
        "apiVersion" => api_version: Option<String>,
        "kind" => kind: Option<String>,
        "name" => name: Option<String>,
        "controller" => controller: Option<bool>,
    }
}

view_struct! {
    pub struct EnvVar {
        "name" => name: Option<String>,
        "value" => value: Option<String>,
        "valueFrom" => value_from: Seen,
    }
}

view_struct! {
    pub struct Mount {
        "name" => name: Option<String>,
        /// Normalised once, as the kubelet resolves it.
        "mountPath" => mount_path: Option<String>,
        "subPath" => sub_path: Option<String>,
        "subPathExpr" => sub_path_expr: Option<String>,
        "readOnly" => read_only: Option<bool>,
    }
}

impl Mount {
    /// `subPath`, when it is set to something.
    pub fn sub_path(&self) -> Option<&str> {
        self.sub_path.as_deref().filter(|s| !s.is_empty())
    }
}

view_struct! {
    pub struct ContainerSecurityContext {
        "runAsUser" => run_as_user: Option<i64>,
        "runAsGroup" => run_as_group: Option<i64>,
    }
}

view_struct! {
    pub struct Container {
        "name" => name: Option<String>,
        "image" => image: Option<String>,
        "command" => command: List<Option<String>>,
        "args" => args: List<Option<String>>,
        "env" => env: List<EnvVar>,
        "envFrom" => env_from: List<Seen>,
        "volumeMounts" => volume_mounts: List<Mount, { limits::MOUNTS_PER_CONTAINER }>,
        /// Normalised once, as mount paths are, when absolute.
        "workingDir" => working_dir: Option<String>,
        "securityContext" => security_context: ContainerSecurityContext,
        "restartPolicy" => restart_policy: Option<String>,
    }
}

impl Container {
    /// The container's name, `""` when it has none (or not a string).
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    pub fn image(&self) -> Option<&str> {
        self.image.as_deref()
    }

    /// The string elements of `command`.
    pub fn command(&self) -> impl Iterator<Item = &str> {
        self.command.iter().filter_map(|s| s.as_deref())
    }

    /// The string elements of `args`.
    pub fn args(&self) -> impl Iterator<Item = &str> {
        self.args.iter().filter_map(|s| s.as_deref())
    }

    /// `command` is a non-empty list: the image's entrypoint is replaced.
    pub fn has_command(&self) -> bool {
        self.command.len > 0
    }

    pub fn has_env_from(&self) -> bool {
        self.env_from.len > 0
    }

    /// The variable `name` as the kubelet sets it: the last of duplicates wins.
    pub fn env(&self, name: &str) -> Option<&EnvVar> {
        self.env
            .iter()
            .rev()
            .find(|e| e.name.as_deref() == Some(name))
    }

    pub fn mounts(&self) -> std::slice::Iter<'_, Mount> {
        self.volume_mounts.iter()
    }

    /// `workingDir`, when it is an absolute path.
    pub fn working_dir(&self) -> Option<&str> {
        self.working_dir.as_deref().filter(|s| s.starts_with('/'))
    }
}

view_struct! {
    pub struct PodSecurityContext {
        "runAsUser" => run_as_user: Option<i64>,
        "runAsGroup" => run_as_group: Option<i64>,
        "runAsNonRoot" => run_as_non_root: Option<bool>,
        "fsGroup" => fs_group: Seen,
        "fsGroupChangePolicy" => fs_group_change_policy: Seen,
    }
}

view_struct! {
    pub struct ClaimName {
        "claimName" => claim_name: Option<String>,
    }
}

view_struct! {
    pub struct KeyToPath {
        "key" => key: Option<String>,
        "path" => path: Option<String>,
    }
}

view_struct! {
    pub struct ConfigMapName {
        "name" => name: Option<String>,
        /// When set, only these keys are files, each at its `path`.
        "items" => items: List<KeyToPath, { limits::CONFIG_MAP_ITEMS }>,
    }
}

view_struct! {
    pub struct SizeLimit {
        "sizeLimit" => size_limit: Option<String>,
    }
}

view_struct! {
    pub struct Driver {
        "driver" => driver: Option<String>,
    }
}

view_struct! {
    pub struct Requests {
        "storage" => storage: Option<String>,
    }
}

view_struct! {
    pub struct Resources {
        "requests" => requests: Requests,
    }
}

view_struct! {
    pub struct ClaimTemplateSpec {
        "accessModes" => access_modes: List<Option<String>, 8>,
        "storageClassName" => storage_class_name: Option<String>,
        "resources" => resources: Resources,
    }
}

view_struct! {
    pub struct EphemeralTemplate {
        "spec" => spec: ClaimTemplateSpec,
    }
}

view_struct! {
    pub struct Ephemeral {
        "volumeClaimTemplate" => volume_claim_template: EphemeralTemplate,
    }
}

/// One pod volume: its name, and its source as the policy classifies it.
#[derive(Debug, Clone, Default)]
pub struct Volume {
    pub shape: Shape,
    pub name: Option<String>,
    /// The key that names the source (`emptyDir`, `persistentVolumeClaim`,
    /// ...): of several, the first in key order, as a JSON object map reads.
    pub source: Option<String>,
    pub persistent_volume_claim: ClaimName,
    pub empty_dir: SizeLimit,
    /// Which ConfigMap, read only to find a server's config file in it.
    pub config_map: ConfigMapName,
    pub ephemeral: Ephemeral,
    pub csi: Driver,
}

impl Volume {
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    pub fn source(&self) -> &str {
        self.source.as_deref().unwrap_or("")
    }

    /// The claim this volume mounts, if it is a claim volume.
    pub fn claim(&self) -> Option<&str> {
        (self.source() == "persistentVolumeClaim")
            .then_some(self.persistent_volume_claim.claim_name.as_deref())
            .flatten()
    }

    /// A claim volume made by the mutation.
    pub fn claim_volume(name: &str, claim: &str) -> Volume {
        Volume {
            shape: Shape::Present,
            name: Some(name.to_string()),
            source: Some("persistentVolumeClaim".into()),
            persistent_volume_claim: ClaimName {
                shape: Shape::Present,
                claim_name: Some(claim.to_string()),
            },
            ..Volume::default()
        }
    }
}

impl Lenient for Volume {
    fn read<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use read::{Key, Seed, drain_seq};
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Volume;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a volume")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Volume, A::Error> {
                let mut v = Volume {
                    shape: Shape::Present,
                    ..Volume::default()
                };
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    if key != "name" && v.source.as_deref().is_none_or(|s| *key < *s) {
                        v.source = Some(key.to_string());
                    }
                    match key.as_ref() {
                        "name" => v.name = map.next_value_seed(Seed::new())?,
                        "persistentVolumeClaim" => {
                            v.persistent_volume_claim = map.next_value_seed(Seed::new())?
                        }
                        "emptyDir" => v.empty_dir = map.next_value_seed(Seed::new())?,
                        "configMap" => v.config_map = map.next_value_seed(Seed::new())?,
                        "ephemeral" => v.ephemeral = map.next_value_seed(Seed::new())?,
                        "csi" => v.csi = map.next_value_seed(Seed::new())?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(v)
            }
            fn visit_unit<E>(self) -> Result<Volume, E> {
                Ok(Volume {
                    shape: Shape::Null,
                    ..Volume::default()
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Volume, A::Error> {
                drain_seq(seq)?;
                Ok(other())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Volume, E> {
                Ok(other())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Volume, E> {
                Ok(other())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Volume, E> {
                Ok(other())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Volume, E> {
                Ok(other())
            }
            fn visit_str<E>(self, _: &str) -> Result<Volume, E> {
                Ok(other())
            }
        }
        fn other() -> Volume {
            Volume {
                shape: Shape::Other,
                ..Volume::default()
            }
        }
        d.deserialize_any(V)
    }
}

view_struct! {
    pub struct Strategy {
        "type" => type_: Option<String>,
        "rollingUpdate" => rolling_update: Seen,
    }
}

view_struct! {
    pub struct NameOnly {
        "name" => name: Option<String>,
    }
}

view_struct! {
    pub struct ClaimTemplate {
        "metadata" => metadata: NameOnly,
    }
}

view_struct! {
    pub struct RawTemplateMeta {
        "annotations" => annotations: Annotations,
    }
}

view_struct! {
    pub struct RawTemplate {
        "metadata" => metadata: RawTemplateMeta,
        "spec" => spec: Option<Box<RawSpec>>,
    }
}

view_struct! {
    pub struct RawJobTemplate {
        "spec" => spec: Option<Box<RawSpec>>,
    }
}

view_struct! {
    /// A workload's `spec`, a pod's `spec`, a pod template's `spec` and a
    /// job template's `spec` read as one shape: which of them an object's
    /// `spec` is depends on its `kind`, which may come after it.
    pub struct RawSpec {
        "containers" => containers: List<Container, { limits::CONTAINERS + 1 }>,
        "initContainers" => init_containers: List<Container, { limits::CONTAINERS + 1 }>,
        "volumes" => volumes: List<Volume, { limits::VOLUMES + 1 }>,
        "securityContext" => security_context: PodSecurityContext,
        "replicas" => replicas: Option<i64>,
        "parallelism" => parallelism: Option<i64>,
        "concurrencyPolicy" => concurrency_policy: Option<String>,
        "strategy" => strategy: Strategy,
        "volumeClaimTemplates" => volume_claim_templates: List<ClaimTemplate, { limits::VOLUMES + 1 }>,
        "template" => template: Option<Box<RawTemplate>>,
        "jobTemplate" => job_template: Option<Box<RawJobTemplate>>,
    }
}

impl<T: Lenient> Lenient for Option<Box<T>> {
    fn read<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::read(d).map(|t| Some(Box::new(t)))
    }
}

view_struct! {
    pub struct RawMeta {
        "name" => name: Option<String>,
        "generateName" => generate_name: Option<String>,
        "namespace" => namespace: Option<String>,
        "annotations" => annotations: Annotations,
        "ownerReferences" => owner_references: List<OwnerReference, { limits::OWNERS }>,
    }
}

view_struct! {
    /// An object as read from the wire: its kind, metadata and spec.
    pub struct RawObject {
        "kind" => kind: Option<String>,
        "metadata" => metadata: RawMeta,
        "spec" => spec: RawSpec,
    }
}

/// An object read with its lists' element count (`limits::LIST_ELEMENTS`).
pub type CountedObject = Counted<RawObject, { limits::LIST_ELEMENTS }>;

impl<'de> serde::Deserialize<'de> for CountedObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <CountedObject as Lenient>::read(d)
    }
}

/// Which list of the pod spec a container is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContainerList {
    Containers,
    InitContainers,
}

impl ContainerList {
    pub fn key(self) -> &'static str {
        match self {
            ContainerList::Containers => "containers",
            ContainerList::InitContainers => "initContainers",
        }
    }
}

/// A container with where it sits.
#[derive(Debug, Clone, Copy)]
pub struct ContainerRef<'w> {
    pub list: ContainerList,
    pub index: usize,
    pub container: &'w Container,
    /// An init container with `restartPolicy: Always` (a native sidecar).
    pub sidecar: bool,
}

impl<'w> ContainerRef<'w> {
    pub fn name(&self) -> &'w str {
        self.container.name()
    }

    /// An init container that runs to completion before the others start.
    pub fn ordinary_init(&self) -> bool {
        self.list == ContainerList::InitContainers && !self.sidecar
    }

    pub fn same(&self, other: &ContainerRef<'_>) -> bool {
        self.list == other.list && self.index == other.index
    }
}

/// The pod spec: containers, volumes and the pod's security context.
#[derive(Debug, Clone, Default)]
pub struct PodSpec {
    pub containers: List<Container, { limits::CONTAINERS + 1 }>,
    pub init_containers: List<Container, { limits::CONTAINERS + 1 }>,
    pub volumes: List<Volume, { limits::VOLUMES + 1 }>,
    pub security_context: PodSecurityContext,
}

impl PodSpec {
    pub fn list(&self, list: ContainerList) -> &List<Container, { limits::CONTAINERS + 1 }> {
        match list {
            ContainerList::Containers => &self.containers,
            ContainerList::InitContainers => &self.init_containers,
        }
    }

    pub fn list_mut(
        &mut self,
        list: ContainerList,
    ) -> &mut List<Container, { limits::CONTAINERS + 1 }> {
        match list {
            ContainerList::Containers => &mut self.containers,
            ContainerList::InitContainers => &mut self.init_containers,
        }
    }
}

/// A workload's own fields the policy reads.
#[derive(Debug, Clone, Default)]
pub struct WorkloadSpec {
    pub replicas: Option<i64>,
    /// A Job's, or a CronJob's job template's.
    pub parallelism: Option<i64>,
    pub concurrency_policy: Option<String>,
    pub strategy: Strategy,
    pub volume_claim_templates: List<ClaimTemplate, { limits::VOLUMES + 1 }>,
}

/// The typed view of one workload object.
#[derive(Debug, Clone)]
pub struct Workload {
    pub kind: Kind,
    /// `metadata.name`, else `metadata.generateName`, else empty.
    pub name: String,
    /// Named only by `generateName`: every object made from it differs.
    pub generate_name_only: bool,
    pub namespace: Option<String>,
    /// `metadata` is an object (a fix can record itself there).
    pub metadata_shape: Shape,
    pub annotations: Annotations,
    pub template_annotations: Annotations,
    pub owners: List<OwnerReference, { limits::OWNERS }>,
    pub spec: WorkloadSpec,
    pub pod: PodSpec,
    /// Elements of all its lists, kept or only counted.
    pub list_elements: usize,
}

/// An object as the policy sees it.
#[derive(Debug, Clone)]
pub enum Object {
    /// A kind pvc-guard judges.
    Workload(Box<Workload>),
    /// Any other kind: allowed untouched.
    Other,
}

impl Object {
    /// Reads an object's JSON text in one pass.
    pub fn from_slice(bytes: &[u8]) -> Result<Result<Object, Unreadable>, serde_json::Error> {
        let raw: CountedObject = serde_json::from_slice(bytes)?;
        Ok(Object::from_raw(raw))
    }

    /// Reads an object already parsed as JSON (a manifest).
    pub fn from_value(value: &serde_json::Value) -> Result<Object, Unreadable> {
        let raw = <CountedObject as Lenient>::read(value).expect("a JSON value reads leniently");
        Object::from_raw(raw)
    }

    pub fn from_raw(raw: CountedObject) -> Result<Object, Unreadable> {
        Workload::from_raw(raw).map(|w| match w {
            Some(w) => Object::Workload(Box::new(w)),
            None => Object::Other,
        })
    }

    pub fn workload(&self) -> Option<&Workload> {
        match self {
            Object::Workload(w) => Some(w),
            Object::Other => None,
        }
    }
}

impl Workload {
    /// `Ok(None)` for kinds pvc-guard does not judge.
    fn from_raw(counted: CountedObject) -> Result<Option<Workload>, Unreadable> {
        let (raw, list_elements) = (counted.value, counted.list_elements);
        let Some(kind_name) = raw.kind.as_deref() else {
            return Err(Unreadable(
                match raw.shape {
                    Shape::Present => "the object has no kind",
                    Shape::Null => "the object is null",
                    _ => "the object is not a JSON object",
                }
                .into(),
            ));
        };
        let Some(kind) = Kind::from_kind(kind_name) else {
            return Ok(None);
        };
        let RawObject { metadata, spec, .. } = raw;
        let generate_name_only = metadata.name.is_none() && metadata.generate_name.is_some();
        let name = metadata.name.or(metadata.generate_name).unwrap_or_default();
        let missing = || {
            Unreadable(format!(
                "{} {} has no pod spec at {}",
                kind.as_str(),
                if name.is_empty() { "(unnamed)" } else { &name },
                kind.pod_spec_pointer()
                    .trim_start_matches('/')
                    .replace('/', ".")
            ))
        };
        if !spec.shape.is_present() {
            return Err(missing());
        }
        let RawSpec {
            containers,
            init_containers,
            volumes,
            security_context,
            replicas,
            parallelism,
            concurrency_policy,
            strategy,
            volume_claim_templates,
            template,
            job_template,
            ..
        } = spec;
        let mut workload_spec = WorkloadSpec {
            replicas,
            parallelism,
            concurrency_policy,
            strategy,
            volume_claim_templates,
        };
        let (pod, template_annotations) = match kind {
            Kind::Pod => {
                workload_spec.parallelism = None;
                (
                    RawSpec {
                        shape: Shape::Present,
                        containers,
                        init_containers,
                        volumes,
                        security_context,
                        ..RawSpec::default()
                    },
                    Annotations::default(),
                )
            }
            Kind::CronJob => {
                let job = job_template
                    .and_then(|t| t.spec)
                    .filter(|s| s.shape.is_present())
                    .ok_or_else(missing)?;
                workload_spec.parallelism = job.parallelism;
                let t = job
                    .template
                    .filter(|t| t.shape.is_present())
                    .ok_or_else(missing)?;
                (*t.spec.ok_or_else(missing)?, t.metadata.annotations)
            }
            _ => {
                if kind != Kind::Job {
                    workload_spec.parallelism = None;
                }
                let t = template
                    .filter(|t| t.shape.is_present())
                    .ok_or_else(missing)?;
                (*t.spec.ok_or_else(missing)?, t.metadata.annotations)
            }
        };
        if !pod.shape.is_present() {
            return Err(missing());
        }
        for (key, shape) in [
            ("containers", pod.containers.shape),
            ("initContainers", pod.init_containers.shape),
            ("volumes", pod.volumes.shape),
        ] {
            if shape == Shape::Other {
                return Err(Unreadable(format!(
                    "{} {name}: {key} is not a list",
                    kind.as_str()
                )));
            }
        }
        let mut pod = PodSpec {
            containers: pod.containers,
            init_containers: pod.init_containers,
            volumes: pod.volumes,
            security_context: pod.security_context,
        };
        for c in pod
            .containers
            .items
            .iter_mut()
            .chain(pod.init_containers.items.iter_mut())
        {
            for m in &mut c.volume_mounts.items {
                if let Some(p) = &mut m.mount_path {
                    *p = k8s::normalize_path(p);
                }
            }
            // Compared with a directory for every data path.
            if let Some(wd) = c.working_dir.as_mut().filter(|wd| wd.starts_with('/')) {
                *wd = k8s::normalize_path(wd);
            }
        }
        Ok(Some(Workload {
            kind,
            name,
            generate_name_only,
            namespace: metadata.namespace,
            metadata_shape: metadata.shape,
            annotations: metadata.annotations,
            template_annotations,
            owners: metadata.owner_references,
            spec: workload_spec,
            pod,
            list_elements,
        }))
    }

    /// "Deployment shop/orders-db", as messages name it.
    pub fn display(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind.as_str(), self.name),
            None => format!("{} {}", self.kind.as_str(), self.name),
        }
    }

    /// An annotation on the workload, or else on its pod template.
    pub fn annotation(&self, which: Annotation) -> Option<&str> {
        self.annotations
            .get(which)
            .or_else(|| self.template_annotations.get(which))
    }

    /// The `pvc-guard.io/mutated` record's text, on the workload itself.
    pub fn mutated(&self) -> Option<&str> {
        self.annotations.mutated.as_deref()
    }

    /// Containers and native sidecars, then ordinary init containers, in
    /// the order of their lists.
    pub fn containers(&self) -> impl Iterator<Item = ContainerRef<'_>> {
        [ContainerList::Containers, ContainerList::InitContainers]
            .into_iter()
            .flat_map(move |list| {
                self.pod
                    .list(list)
                    .items
                    .iter()
                    .enumerate()
                    .map(move |(index, container)| ContainerRef {
                        list,
                        index,
                        container,
                        sidecar: list == ContainerList::InitContainers
                            && container.restart_policy.as_deref() == Some("Always"),
                    })
            })
    }

    /// The first container (of either list) named `name`.
    pub fn container_named(&self, name: &str) -> Option<ContainerRef<'_>> {
        self.containers()
            .find(|c| c.container.shape.is_present() && c.container.name.as_deref() == Some(name))
    }

    /// Pod volumes by name; the first of a repeated name, as a lookup finds it.
    pub fn volumes_by_name(&self) -> HashMap<&str, &Volume> {
        let mut map = HashMap::with_capacity(self.pod.volumes.items.len());
        for v in &self.pod.volumes.items {
            if let Some(name) = v.name.as_deref() {
                map.entry(name).or_insert(v);
            }
        }
        map
    }

    /// A StatefulSet's `volumeClaimTemplates` entry of that name.
    pub fn has_claim_template(&self, name: &str) -> bool {
        self.kind == Kind::StatefulSet && self.claim_template_names().any(|t| t == name)
    }

    /// The names of the claim templates (of whatever kind holds them).
    pub fn claim_template_names(&self) -> impl Iterator<Item = &str> {
        self.spec
            .volume_claim_templates
            .iter()
            .filter_map(|t| t.metadata.name.as_deref())
    }

    /// How many pods run at once from this object, as far as the object says.
    pub fn replicas(&self) -> i64 {
        match self.kind {
            Kind::Pod => 1,
            Kind::Job | Kind::CronJob => self.spec.parallelism.unwrap_or(1),
            Kind::DaemonSet => i64::MAX,
            _ => self.spec.replicas.unwrap_or(1),
        }
    }

    /// The controlling ownerReference, if any.
    pub fn controller_owner(&self) -> Option<&OwnerReference> {
        self.owners.iter().find(|o| o.controller == Some(true))
    }

    /// Claims the pod's volumes mount, by name.
    pub fn claim_names(&self) -> impl Iterator<Item = &str> {
        self.pod.volumes.iter().filter_map(Volume::claim)
    }

    /// Which hard cap the object exceeds, if any: (what, how many, the cap).
    pub fn exceeded_limit(&self) -> Option<(&'static str, usize, usize)> {
        let p = &self.pod;
        let all = || p.containers.iter().chain(p.init_containers.iter());
        let len = |s: &Option<String>| s.as_deref().map_or(0, str::len);
        let containers = p.containers.len + p.init_containers.len;
        let mounts: usize = all().map(|c| c.volume_mounts.len).sum();
        let per_container = all().map(|c| c.volume_mounts.len).max().unwrap_or(0);
        let longest_name = all()
            .map(|c| len(&c.name))
            .chain([self.name.len(), len(&self.namespace)])
            .max()
            .unwrap_or(0);
        let longest_path = all()
            .flat_map(|c| {
                c.mounts()
                    .flat_map(|m| [len(&m.mount_path), len(&m.sub_path), len(&m.sub_path_expr)])
                    .chain([len(&c.working_dir)])
            })
            .max()
            .unwrap_or(0);
        let longest_image = all().map(|c| len(&c.image)).max().unwrap_or(0);
        // A value the fix parses or quotes for each data path it fixes.
        let longest_value = [&self.annotations, &self.template_annotations]
            .into_iter()
            .flat_map(|a| {
                [
                    &a.data_owner,
                    &a.allow_ephemeral,
                    &a.claim_name,
                    &a.claim_size,
                    &a.claim_storage_class,
                    &a.claim_access_mode,
                    &a.default_container,
                ]
            })
            .map(len)
            .chain(p.volumes.iter().flat_map(|v| {
                let t = &v.ephemeral.volume_claim_template.spec;
                [
                    len(&v.empty_dir.size_limit),
                    len(&t.resources.requests.storage),
                    len(&t.storage_class_name),
                ]
            }))
            .max()
            .unwrap_or(0);
        // Every word of a script is a string of its own, so a script of
        // `a;` costs about fifty times its bytes while detection reads it.
        let commands: usize = all()
            .map(|c| c.command().chain(c.args()).map(str::len).sum::<usize>())
            .sum();
        [
            (
                "containers and init containers",
                containers,
                limits::CONTAINERS,
            ),
            ("volumes", p.volumes.len, limits::VOLUMES),
            (
                "volume mounts in one container",
                per_container,
                limits::MOUNTS_PER_CONTAINER,
            ),
            ("volume mounts", mounts, limits::MOUNTS),
            (
                "volumeClaimTemplates",
                self.spec.volume_claim_templates.len,
                limits::VOLUMES,
            ),
            (
                "list elements (containers, volumes, mounts, variables, arguments, items and the like)",
                self.list_elements,
                limits::LIST_ELEMENTS,
            ),
            (
                "bytes in its longest name (the object's name or namespace, or a container's name)",
                longest_name,
                limits::NAME_BYTES,
            ),
            (
                "bytes in its longest image reference",
                longest_image,
                limits::IMAGE_BYTES,
            ),
            (
                "bytes in its longest workingDir, mountPath or subPath",
                longest_path,
                limits::PATH_BYTES,
            ),
            (
                "bytes in its longest pvc-guard.io annotation value (but data-paths) or volume size, class or sizeLimit",
                longest_value,
                limits::PATH_BYTES,
            ),
            (
                "bytes of command and args in all containers",
                commands,
                limits::COMMAND_BYTES,
            ),
        ]
        .into_iter()
        .find(|(_, n, cap)| n > cap)
    }
}

impl Container {
    /// Reads a container from JSON (a container the mutation adds).
    pub fn from_value(value: &serde_json::Value) -> Container {
        <Container as Lenient>::read(value).expect("a JSON value reads leniently")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn workload(v: serde_json::Value) -> Workload {
        match Object::from_value(&v).unwrap() {
            Object::Workload(w) => *w,
            Object::Other => panic!("not a workload"),
        }
    }

    #[test]
    fn reads_what_the_policy_needs_and_skips_the_rest() {
        let w = workload(json!({
            "kind": "Deployment",
            "metadata": {"name": "db", "namespace": "shop", "managedFields": [{"big": true}],
                "annotations": {"pvc-guard.io/claim-size": "5Gi", "other": "x"}},
            "spec": {"replicas": 2, "template": {"metadata": {"annotations": {"pvc-guard.io/data-owner": "1:1"}},
                "spec": {"containers": [{"name": "pg", "image": "postgres:16", "ports": [1],
                    "env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}],
                    "volumeMounts": [{"name": "d", "mountPath": "/var/lib/../lib/pg/"}]}, 7],
                    "volumes": [{"name": "d", "x": 1, "emptyDir": {"sizeLimit": "1Gi"}}]}}},
            "status": {"replicas": 2}
        }));
        assert_eq!(w.kind, Kind::Deployment);
        assert_eq!(w.display(), "Deployment shop/db");
        assert_eq!(w.annotation(Annotation::ClaimSize), Some("5Gi"));
        assert_eq!(w.annotation(Annotation::DataOwner), Some("1:1"));
        assert_eq!(w.replicas(), 2);
        let c = &w.pod.containers.items[0];
        assert_eq!(
            w.pod.containers.items.len(),
            2,
            "a non-object keeps its index"
        );
        assert_eq!(
            c.env("A").unwrap().value.as_deref(),
            Some("2"),
            "the last wins"
        );
        assert_eq!(
            c.volume_mounts.items[0].mount_path.as_deref(),
            Some("/var/lib/pg")
        );
        let v = &w.pod.volumes.items[0];
        assert_eq!(v.source(), "emptyDir");
        assert_eq!(v.empty_dir.size_limit.as_deref(), Some("1Gi"));
    }

    #[test]
    fn wrong_types_read_as_absent_and_repeated_keys_take_the_last() {
        let text = br#"{"kind":"Pod","metadata":{"name":1,"name":"p"},
            "spec":{"containers":[{"name":"c","image":42,"command":"sh","volumeMounts":null}]}}"#;
        let Object::Workload(w) = Object::from_slice(text).unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(w.name, "p");
        let c = &w.pod.containers.items[0];
        assert_eq!(c.image(), None);
        assert!(!c.has_command());
        assert_eq!(c.volume_mounts.shape, Shape::Null);
    }

    #[test]
    fn unreadable_objects_say_why() {
        let e = |v: serde_json::Value| Object::from_value(&v).unwrap_err().0;
        assert_eq!(e(json!(null)), "the object is null");
        assert_eq!(e(json!({"metadata": {}})), "the object has no kind");
        assert_eq!(
            e(json!({"kind": "Deployment", "metadata": {"name": "x"}, "spec": {}})),
            "Deployment x has no pod spec at spec.template.spec"
        );
        assert_eq!(
            e(json!({"kind": "Pod", "spec": {"volumes": "x"}})),
            "Pod : volumes is not a list"
        );
        assert!(matches!(
            Object::from_value(&json!({"kind": "ConfigMap"})),
            Ok(Object::Other)
        ));
    }

    #[test]
    fn lists_beyond_their_cap_are_counted_not_kept() {
        let volumes: Vec<_> = (0..limits::VOLUMES + 50)
            .map(|i| json!({"name": format!("v{i}"), "emptyDir": {}}))
            .collect();
        let w = workload(json!({"kind": "Pod", "spec": {"containers": [], "volumes": volumes}}));
        assert_eq!(w.pod.volumes.len, limits::VOLUMES + 50);
        assert_eq!(w.pod.volumes.items.len(), limits::VOLUMES + 1);
        assert_eq!(
            w.exceeded_limit(),
            Some(("volumes", limits::VOLUMES + 50, limits::VOLUMES))
        );
    }

    #[test]
    fn all_lists_of_an_object_together_keep_at_most_the_list_element_cap() {
        let n = limits::LIST_ELEMENTS + 100;
        // The first container's lists use up the cap; the second container
        // is then only counted, unread, as an element of `containers`.
        let first = json!({"name": "a", "env": vec![json!({}); n], "args": vec!["x"; 5]});
        let second = json!({"name": "b", "env": vec![json!({"name": "X"}); 10]});
        let w = workload(json!({"kind": "Pod", "spec": {"containers": [first, second]}}));
        assert_eq!(w.list_elements, 2 + n + 5);
        assert_eq!(w.pod.containers.len, 2);
        assert_eq!(w.pod.containers.items.len(), 1);
        let a = &w.pod.containers.items[0];
        assert_eq!((a.env.len, a.args.len), (n, 5));
        assert_eq!(
            1 + a.env.items.len() + a.args.items.len(),
            limits::LIST_ELEMENTS
        );
        let (what, count, cap) = w.exceeded_limit().unwrap();
        assert!(what.starts_with("list elements"), "{what}");
        assert_eq!((count, cap), (2 + n + 5, limits::LIST_ELEMENTS));
    }

    #[test]
    fn a_read_that_fails_half_way_leaves_no_count_behind() {
        let mut text = br#"{"kind": "Pod", "spec": {"containers": [{"env": ["#.to_vec();
        text.extend(std::iter::repeat_n(&b"{},"[..], limits::LIST_ELEMENTS + 5).flatten());
        assert!(Object::from_slice(&text).is_err(), "cut off mid-list");
        // A container read on its own, outside any object, is bounded by
        // its lists' own caps only.
        let env = vec![json!({}); limits::LIST_ELEMENTS + 5];
        let c = Container::from_value(&json!({"name": "c", "env": env}));
        assert_eq!(c.env.items.len(), limits::LIST_ELEMENTS + 5);
    }
}
