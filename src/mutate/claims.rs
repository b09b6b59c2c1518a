//! Claim names for the claims a fix adds. One claim backs one volume: a
//! name is never one the pod already mounts or one this fix gave another
//! volume, never a claim the cluster holds for another workload, and the
//! default name is never the same for two workloads.

use std::collections::{HashMap, HashSet};

use crate::config::Config;
use crate::k8s::{is_dns_subdomain, short_hash, shorten};
use crate::model::{Annotation, Kind, Workload};
use crate::policy::ClusterFacts;

/// Hands out claim names for one workload, across both planning passes.
pub struct ClaimNames {
    /// Claims the pod mounts, and names already handed out.
    taken: HashSet<String>,
    /// `Kind/name`, as `pvc-guard.io/created-for` names a workload.
    owner: String,
    /// How many names were handed out.
    made: usize,
    /// Per wanted name, the suffix to try next (1: the name itself). The
    /// names before it were not free when last asked, and a name once
    /// taken stays taken, so asking again resumes there: a container with
    /// many claims costs one step per claim, not a walk from `-2` each.
    next: HashMap<String, usize>,
}

impl ClaimNames {
    pub fn new(workload: &Workload) -> ClaimNames {
        ClaimNames {
            taken: workload.claim_names().map(str::to_string).collect(),
            owner: format!("{}/{}", workload.kind.as_str(), workload.name),
            made: 0,
            next: HashMap::new(),
        }
    }

    /// The name the config and annotations ask for, for a claim of
    /// `container` in `workload`.
    fn wanted(&self, config: &Config, workload: &Workload, container: &str) -> String {
        // Only a name the validating webhook accepts: it denies the rest,
        // and making one out of a long value cost its length per claim.
        if let Some(name) = workload
            .annotation(Annotation::ClaimName)
            .map(str::trim)
            .filter(|s| is_dns_subdomain(s))
        {
            return if self.made == 0 {
                shorten(name, 253)
            } else {
                shorten(&format!("{name}-{container}"), 253)
            };
        }
        let template = &config.claims.name_template;
        let workload_name = workload.name.trim_end_matches('-');
        let mut name = template
            .replace("{workload}", workload_name)
            .replace("{container}", container);
        // The plain name is kept only where it cannot be another
        // workload's: a Deployment (the kind people fix most, and names are
        // unique per kind) with a container name that holds no separator.
        // Otherwise `orders` + `db-postgres` and `orders-db` + `postgres`,
        // or a Pod and a Deployment of one name, would share a claim: the
        // workload's own hash tells them apart.
        if workload.kind != Kind::Deployment || container.contains(['-', '.']) {
            name.push('-');
            name.push_str(&short_hash(&format!(
                "{}/{workload_name}/{container}",
                workload.kind.as_str()
            )));
        }
        shorten(&name, 253)
    }

    /// A claim name for `container`'s new claim: the wanted one, or the
    /// first of `-2`, `-3`, ... that no other volume or workload holds.
    pub fn allocate(
        &mut self,
        config: &Config,
        workload: &Workload,
        facts: &ClusterFacts,
        container: &str,
    ) -> String {
        let wanted = self.wanted(config, workload, container);
        self.made += 1;
        let free = |name: &str| {
            !self.taken.contains(name)
                && facts
                    .claim_created_for(name)
                    .is_none_or(|owner| owner == self.owner)
        };
        let mut n = self.next.get(&wanted).copied().unwrap_or(1);
        let name = loop {
            let name = if n == 1 {
                wanted.clone()
            } else {
                shorten(&format!("{wanted}-{n}"), 253)
            };
            n += 1;
            if free(&name) {
                break name;
            }
        };
        self.next.insert(wanted, n);
        self.taken.insert(name.clone());
        name
    }
}
