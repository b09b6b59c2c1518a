//! A read-only view of a workload object: where its pod template is, its
//! containers, replicas and annotations. Everything is read from the raw
//! `serde_json::Value`, so fields this program does not know are never lost.

use serde_json::Value;

/// Workload kinds pvc-guard judges. Any other kind is allowed untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    pub fn from_kind(kind: &str) -> Option<Kind> {
        Some(match kind {
            "Deployment" => Kind::Deployment,
            "StatefulSet" => Kind::StatefulSet,
            "DaemonSet" => Kind::DaemonSet,
            "ReplicaSet" => Kind::ReplicaSet,
            "ReplicationController" => Kind::ReplicationController,
            "Job" => Kind::Job,
            "CronJob" => Kind::CronJob,
            "Pod" => Kind::Pod,
            _ => return None,
        })
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

    /// JSON pointer of the pod template (its `metadata` and `spec`).
    pub fn template_pointer(self) -> &'static str {
        match self {
            Kind::Pod => "",
            Kind::CronJob => "/spec/jobTemplate/spec/template",
            _ => "/spec/template",
        }
    }

    pub fn pod_spec_pointer(self) -> &'static str {
        match self {
            Kind::Pod => "/spec",
            Kind::CronJob => "/spec/jobTemplate/spec/template/spec",
            _ => "/spec/template/spec",
        }
    }
}

/// Why an object of a workload kind cannot be judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable(pub String);

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
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

#[derive(Debug, Clone, Copy)]
pub struct Container<'a> {
    pub list: ContainerList,
    pub index: usize,
    pub name: &'a str,
    pub value: &'a Value,
    /// An init container with `restartPolicy: Always` (a native sidecar).
    pub sidecar: bool,
}

impl<'a> Container<'a> {
    pub fn image(&self) -> Option<&'a str> {
        self.value.get("image").and_then(Value::as_str)
    }

    pub fn strings(&self, key: &str) -> Vec<&'a str> {
        self.value
            .get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    pub fn has_command(&self) -> bool {
        self.value
            .get("command")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    }

    pub fn env(&self) -> &'a [Value] {
        self.value
            .get("env")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub fn has_env_from(&self) -> bool {
        self.value
            .get("envFrom")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    }

    pub fn mounts(&self) -> &'a [Value] {
        self.value
            .get("volumeMounts")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub fn working_dir(&self) -> Option<&'a str> {
        self.value
            .get("workingDir")
            .and_then(Value::as_str)
            .filter(|s| s.starts_with('/'))
    }

    pub fn security_context(&self, key: &str) -> Option<&'a Value> {
        self.value.get("securityContext").and_then(|s| s.get(key))
    }
}

#[derive(Debug, Clone)]
pub struct Workload<'a> {
    pub kind: Kind,
    pub object: &'a Value,
    pub name: String,
    pub namespace: Option<String>,
    pub pod_spec: &'a serde_json::Map<String, Value>,
}

impl<'a> Workload<'a> {
    /// `Ok(None)` for kinds pvc-guard does not judge.
    pub fn from_object(object: &'a Value) -> Result<Option<Workload<'a>>, Unreadable> {
        let Some(kind_name) = object.get("kind").and_then(Value::as_str) else {
            return match object {
                Value::Object(_) => Err(Unreadable("the object has no kind".into())),
                Value::Null => Err(Unreadable("the object is null".into())),
                _ => Err(Unreadable("the object is not a JSON object".into())),
            };
        };
        let Some(kind) = Kind::from_kind(kind_name) else {
            return Ok(None);
        };
        let metadata = object.get("metadata");
        let name = metadata
            .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let namespace = metadata
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let pod_spec = at(object, kind.pod_spec_pointer())
            .and_then(Value::as_object)
            .ok_or_else(|| {
                Unreadable(format!(
                    "{} {} has no pod spec at {}",
                    kind.as_str(),
                    if name.is_empty() { "(unnamed)" } else { &name },
                    kind.pod_spec_pointer()
                        .trim_start_matches('/')
                        .replace('/', ".")
                ))
            })?;
        for list in ["containers", "initContainers", "volumes"] {
            match pod_spec.get(list) {
                None | Some(Value::Null) | Some(Value::Array(_)) => {}
                Some(_) => {
                    return Err(Unreadable(format!(
                        "{} {name}: {list} is not a list",
                        kind.as_str()
                    )));
                }
            }
        }
        Ok(Some(Workload {
            kind,
            object,
            name,
            namespace,
            pod_spec,
        }))
    }

    /// "Deployment shop/orders-db", as messages name it.
    pub fn display(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind.as_str(), self.name),
            None => format!("{} {}", self.kind.as_str(), self.name),
        }
    }

    fn metadata_annotation(meta: Option<&'a Value>, key: &str) -> Option<&'a str> {
        meta?.get("annotations")?.get(key)?.as_str()
    }

    /// An annotation on the workload, or else on its pod template.
    pub fn annotation(&self, key: &str) -> Option<&'a str> {
        Self::metadata_annotation(self.object.get("metadata"), key).or_else(|| {
            if self.kind == Kind::Pod {
                return None;
            }
            let template = at(self.object, self.kind.template_pointer())?;
            Self::metadata_annotation(template.get("metadata"), key)
        })
    }

    /// Containers and native sidecars, then ordinary init containers.
    pub fn containers(&self) -> Vec<Container<'a>> {
        let mut out = Vec::new();
        for list in [ContainerList::Containers, ContainerList::InitContainers] {
            let Some(items) = self.pod_spec.get(list.key()).and_then(Value::as_array) else {
                continue;
            };
            for (index, value) in items.iter().enumerate() {
                let name = value.get("name").and_then(Value::as_str).unwrap_or("");
                let sidecar = list == ContainerList::InitContainers
                    && value.get("restartPolicy").and_then(Value::as_str) == Some("Always");
                out.push(Container {
                    list,
                    index,
                    name,
                    value,
                    sidecar,
                });
            }
        }
        out
    }

    pub fn volume(&self, name: &str) -> Option<&'a Value> {
        self.pod_spec
            .get("volumes")?
            .as_array()?
            .iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
    }

    /// A StatefulSet's `volumeClaimTemplates` entry of that name.
    pub fn claim_template(&self, name: &str) -> Option<&'a Value> {
        if self.kind != Kind::StatefulSet {
            return None;
        }
        at(self.object, "/spec/volumeClaimTemplates")?
            .as_array()?
            .iter()
            .find(|t| at(t, "/metadata/name").and_then(Value::as_str) == Some(name))
    }

    /// How many pods run at once from this object, as far as the object says.
    pub fn replicas(&self) -> i64 {
        let int = |p: &str| at(self.object, p).and_then(Value::as_i64);
        match self.kind {
            Kind::Pod => 1,
            Kind::Job => int("/spec/parallelism").unwrap_or(1),
            Kind::CronJob => int("/spec/jobTemplate/spec/parallelism").unwrap_or(1),
            Kind::DaemonSet => i64::MAX,
            _ => int("/spec/replicas").unwrap_or(1),
        }
    }

    /// The `apiVersion` and `kind` of the controlling owner, if any.
    pub fn controller_owner(&self) -> Option<(&'a str, &'a str)> {
        controller_owner(self.object)
    }

    pub fn pod_security_context(&self, key: &str) -> Option<&'a Value> {
        self.pod_spec
            .get("securityContext")
            .and_then(|s| s.get(key))
    }
}

/// The `apiVersion` and `kind` of an object's controlling owner, if any.
pub fn controller_owner(object: &Value) -> Option<(&str, &str)> {
    at(object, "/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
        .map(|o| {
            (
                o.get("apiVersion").and_then(Value::as_str).unwrap_or(""),
                o.get("kind").and_then(Value::as_str).unwrap_or(""),
            )
        })
}

/// `value.pointer(path)` without its two allocations per token: every
/// pointer pvc-guard reads is a literal of plain keys, and this runs for
/// every field the policy looks at. Escaped tokens take serde_json's path.
pub fn at<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    if path.contains('~') {
        return value.pointer(path);
    }
    if path.is_empty() {
        return Some(value);
    }
    let rest = path.strip_prefix('/')?;
    rest.split('/').try_fold(value, |v, token| match v {
        Value::Object(map) => map.get(token),
        Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// Does `outer` contain `inner`, comparing whole path components?
pub fn path_contains(outer: &str, inner: &str) -> bool {
    let outer = outer.trim_end_matches('/');
    if outer.is_empty() {
        return inner.starts_with('/');
    }
    inner == outer || (inner.starts_with(outer) && inner[outer.len()..].starts_with('/'))
}

/// `/a/./b/../c/` as `/a/c`.
pub fn normalize_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_containment_is_by_whole_components() {
        assert!(path_contains("/data", "/data/db"));
        assert!(path_contains("/data/", "/data/db"));
        assert!(path_contains("/data", "/data"));
        assert!(!path_contains("/data", "/database"));
        assert!(path_contains("/", "/anything"));
        assert_eq!(normalize_path("/a/./b/../c/"), "/a/c");
    }
}
