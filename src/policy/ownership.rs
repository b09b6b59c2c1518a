//! Whether a controller ownerReference relaxes the policy. Anyone can write
//! an ownerReference, so ownership counts only together with who wrote the
//! object: the control plane's controllers for built-in owner kinds, the
//! operators the config names for their own kinds. Every other write is
//! judged in full, whatever it claims to be owned by. The webhook
//! configurations' `matchConditions` encode the same test
//! (manifests/base/webhooks.yaml), so the API server does not even call the
//! webhook for what controllers write.

use crate::config::Config;
use crate::model::{Kind, Workload};

/// Who is writing the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller<'a> {
    /// A request's `userInfo.username`.
    User(&'a str),
    /// No request: a manifest checked offline, or what `audit` reads back
    /// from the cluster. Ownership is taken at its word, as these objects
    /// were admitted (or will be) by a request this function judged.
    Offline,
}

/// What a workload's ownership means for the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// No controller ownerReference.
    Unowned,
    /// Written by the control plane's controller for a built-in owner: its
    /// owner was judged, so this object is not.
    Controller,
    /// Written by a listed operator for a kind of its own: validated in
    /// warn mode (the operator decides storage) and never mutated.
    Operator,
    /// Claims an owner, but the writer is neither: judged in full, never
    /// mutated (a real controller would fight the change).
    Claimed,
}

impl Ownership {
    /// A fix may be made: nothing owns the object.
    pub fn mutable(self) -> bool {
        self == Ownership::Unowned
    }
}

/// The control plane's controller identity: kube-controller-manager, or
/// one of its per-controller service accounts in kube-system.
pub fn is_control_plane(username: &str) -> bool {
    username == "system:kube-controller-manager"
        || username.starts_with("system:serviceaccount:kube-system:")
}

/// An ownerReference to a built-in workload kind that creates pods or
/// their controllers (a Deployment's ReplicaSets, a ReplicaSet's Pods,
/// a CronJob's Jobs, ...).
pub fn builtin_owner(api_version: &str, kind: &str) -> bool {
    let group = api_version.split_once('/').map_or("", |(g, _)| g);
    Kind::from_kind(kind).is_some_and(|k| k != Kind::Pod && k.group() == group)
}

pub fn ownership(workload: &Workload, caller: Caller<'_>, config: &Config) -> Ownership {
    let Some(owner) = workload.controller_owner() else {
        return Ownership::Unowned;
    };
    let builtin = builtin_owner(
        owner.api_version.as_deref().unwrap_or(""),
        owner.kind.as_deref().unwrap_or(""),
    );
    match (caller, builtin) {
        (Caller::Offline, true) => Ownership::Controller,
        (Caller::Offline, false) => Ownership::Operator,
        (Caller::User(user), true) if is_control_plane(user) => Ownership::Controller,
        (Caller::User(user), false) if config.is_operator(user) => Ownership::Operator,
        (Caller::User(_), _) => Ownership::Claimed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Object;
    use serde_json::json;

    fn pod_owned_by(api_version: &str, kind: &str) -> Workload {
        let v = json!({"kind": "Pod", "metadata": {"name": "p", "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "x"},
            {"apiVersion": api_version, "kind": kind, "name": "o", "controller": true}]},
            "spec": {"containers": []}});
        Object::from_value(&v).unwrap().workload().unwrap().clone()
    }

    #[test]
    fn ownership_counts_only_with_the_writer_that_may_claim_it() {
        let config = Config {
            operator_service_accounts: vec!["cnpg-system/cnpg-manager".into()],
            ..Config::default()
        };
        let rs = pod_owned_by("apps/v1", "ReplicaSet");
        let cluster = pod_owned_by("postgresql.cnpg.io/v1", "Cluster");
        let fake = pod_owned_by("v1", "ConfigMap");
        let kcm = Caller::User("system:kube-controller-manager");
        let rs_controller = Caller::User("system:serviceaccount:kube-system:replicaset-controller");
        let admin = Caller::User("admin");
        let cnpg = Caller::User("system:serviceaccount:cnpg-system:cnpg-manager");
        let cases = [
            (&rs, kcm, Ownership::Controller),
            (&rs, rs_controller, Ownership::Controller),
            (&rs, admin, Ownership::Claimed),
            (&rs, cnpg, Ownership::Claimed),
            (&rs, Caller::Offline, Ownership::Controller),
            (&cluster, cnpg, Ownership::Operator),
            (&cluster, admin, Ownership::Claimed),
            (&cluster, kcm, Ownership::Claimed),
            (&cluster, Caller::Offline, Ownership::Operator),
            (&fake, rs_controller, Ownership::Claimed),
        ];
        for (w, caller, want) in cases {
            assert_eq!(ownership(w, caller, &config), want, "{caller:?}");
        }
        let apps_job = pod_owned_by("apps/v1", "Job");
        assert_eq!(ownership(&apps_job, kcm, &config), Ownership::Claimed);
        let unowned = Object::from_value(&json!({"kind": "Pod", "spec": {}})).unwrap();
        assert_eq!(
            ownership(unowned.workload().unwrap(), admin, &config),
            Ownership::Unowned
        );
    }
}
