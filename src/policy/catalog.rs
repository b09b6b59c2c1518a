//! The image catalog: data, not code branches. The built-in table is
//! `catalog.yaml`, embedded at build time; config entries extend or replace
//! it. Lookups run for every container of every request, so each compares
//! in place and allocates nothing it does not return.

use crate::config::{CatalogEntry, TagVersion, parse_owner};

const BUILT_IN: &str = include_str!("catalog.yaml");

/// An image reference taken apart: `[registry/]repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry stripped, `docker.io/library/` normalised away.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// A repository by name alone: what a family revealed by other means
    /// (server-only variables, a distinctive mount) is looked up as.
    pub fn named(repository: &str) -> ImageRef {
        ImageRef {
            repository: repository.to_string(),
            tag: None,
            digest: None,
        }
    }

    pub fn parse(image: &str) -> ImageRef {
        let image = image.trim();
        let (rest, digest) = match image.split_once('@') {
            Some((r, d)) => (r, Some(d.to_string())),
            None => (image, None),
        };
        // A colon after the last slash is the tag; one before it is a port.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        let mut parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).collect();
        if parts.len() > 1 {
            let first = parts[0];
            if first.contains('.') || first.contains(':') || first == "localhost" {
                parts.remove(0);
            }
        }
        if parts.len() > 1 && parts[0] == "library" {
            parts.remove(0);
        }
        let repository = parts
            .iter()
            .map(|p| match *p {
                "bitnamilegacy" | "bitnamisecure" => "bitnami".to_string(),
                p => p.to_ascii_lowercase(),
            })
            .collect::<Vec<_>>()
            .join("/");
        ImageRef {
            repository,
            tag: tag.filter(|t| !t.is_empty()),
            digest,
        }
    }
}

/// What the catalog says about one container's image, with the version applied.
#[derive(Debug, Clone)]
pub struct ImageFacts<'c> {
    pub entry: &'c CatalogEntry,
    pub data_paths: Vec<String>,
    pub volumes: Vec<String>,
    pub mount_path: Option<String>,
    pub user: Option<(i64, i64)>,
    pub fixes_ownership: bool,
    /// The version could not be read (digest only): the newest layout is assumed.
    pub version_assumed_from_digest: bool,
}

#[derive(Debug, Clone)]
pub struct Catalog {
    entries: Vec<CatalogEntry>,
}

impl Catalog {
    pub fn built_in() -> Catalog {
        let entries: Vec<CatalogEntry> =
            serde_yaml_ng::from_str(BUILT_IN).expect("the embedded catalog.yaml is valid");
        Catalog { entries }
    }

    /// The built-in table with config entries added; same name replaces.
    pub fn with_overrides(overrides: &[CatalogEntry]) -> Catalog {
        let mut catalog = Catalog::built_in();
        for entry in overrides {
            match catalog.entries.iter_mut().find(|e| e.name == entry.name) {
                Some(existing) => *existing = entry.clone(),
                None => catalog.entries.push(entry.clone()),
            }
        }
        catalog
    }

    pub fn entries(&self) -> &[CatalogEntry] {
        &self.entries
    }

    pub fn by_name(&self, name: &str) -> Option<&CatalogEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The first entry of a family: what a derived image of it behaves like.
    pub fn by_family(&self, family: &str) -> Option<&CatalogEntry> {
        self.entries.iter().find(|e| e.family == family)
    }

    /// The entry whose repository is the longest whole-component suffix.
    /// Runs for every container of every request: compares in place
    /// rather than splitting each catalog repository into a new Vec.
    pub fn lookup(&self, image: &ImageRef) -> Option<&CatalogEntry> {
        let mut best: Option<(usize, &CatalogEntry)> = None;
        for entry in &self.entries {
            for repo in &entry.repositories {
                if let Some(len) = component_suffix(&image.repository, repo)
                    && best.is_none_or(|(l, _)| len > l)
                {
                    best = Some((len, entry));
                }
            }
        }
        best.map(|(_, e)| e)
    }

    /// The entry whose distinctive paths include `mount_path`.
    pub fn by_distinctive_path(&self, mount_path: &str) -> Option<&CatalogEntry> {
        self.entries
            .iter()
            .find(|e| e.distinctive_paths.iter().any(|p| p == mount_path))
    }
}

/// How many components `suffix` has, if it is a whole-component suffix of
/// `repository` (`bitnami/postgresql` of `docker.io/bitnami/postgresql`,
/// but not `sql` of `mysql`).
fn component_suffix(repository: &str, suffix: &str) -> Option<usize> {
    let rest = repository.strip_suffix(suffix)?;
    (rest.is_empty() || rest.ends_with('/')).then(|| suffix.split('/').count())
}

/// Applies the image's version to a catalog entry.
pub fn facts_for<'c>(entry: &'c CatalogEntry, image: &ImageRef) -> ImageFacts<'c> {
    let mut facts = ImageFacts {
        entry,
        data_paths: entry.data_paths.clone(),
        volumes: entry.volumes.clone(),
        mount_path: entry.mount_path.clone(),
        user: entry.user.as_deref().and_then(parse_owner),
        fixes_ownership: entry.fixes_ownership,
        version_assumed_from_digest: false,
    };
    if entry.versioned_paths.is_empty() {
        return facts;
    }
    let major = image
        .tag
        .as_deref()
        .and_then(|t| tag_major(t, entry.tag_version));
    if major.is_none() && image.tag.is_none() && image.digest.is_some() {
        facts.version_assumed_from_digest = true;
    }
    let newest = entry.newest_major.unwrap_or(u32::MAX);
    let major = major.unwrap_or(newest);
    let layout = entry
        .versioned_paths
        .iter()
        .find(|v| major <= v.until_major)
        .or(entry.versioned_paths.last())
        .expect("versioned_paths is not empty");
    let with_major = |p: &String| p.replace("{major}", &major.to_string());
    facts.data_paths = layout.data_paths.iter().map(with_major).collect();
    facts.volumes = layout.volumes.iter().map(with_major).collect();
    facts.mount_path = Some(with_major(&layout.mount_path));
    if let Some(user) = layout.user.as_deref().and_then(parse_owner) {
        facts.user = Some(user);
    }
    if let Some(fixes) = layout.fixes_ownership {
        facts.fixes_ownership = fixes;
    }
    facts
}

/// The major version a tag names, if it names one.
fn tag_major(tag: &str, how: TagVersion) -> Option<u32> {
    let digits = |s: &str| -> Option<u32> {
        let d: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
        d.parse().ok()
    };
    match how {
        TagVersion::Leading => digits(tag.strip_prefix('v').unwrap_or(tag)),
        TagVersion::PgSuffix => tag
            .match_indices("pg")
            .find_map(|(i, _)| digits(&tag[i + 2..])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_refs_normalise_registry_library_and_bitnami_aliases() {
        let r = ImageRef::parse("docker.io/library/postgres:16.4@sha256:abc");
        assert_eq!(r.repository, "postgres");
        assert_eq!(r.tag.as_deref(), Some("16.4"));
        assert_eq!(r.digest.as_deref(), Some("sha256:abc"));
        let r = ImageRef::parse("localhost:5000/team/db:1");
        assert_eq!(r.repository, "team/db");
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(
            ImageRef::parse("bitnamilegacy/redis:7").repository,
            "bitnami/redis"
        );
        assert_eq!(ImageRef::parse("postgres").tag, None);
    }

    #[test]
    fn longest_whole_component_suffix_wins() {
        let c = Catalog::built_in();
        let name = |img: &str| c.lookup(&ImageRef::parse(img)).map(|e| e.name.clone());
        assert_eq!(
            name("mcr.microsoft.com/oss/bitnami/redis:7").as_deref(),
            Some("bitnami/redis")
        );
        assert_eq!(name("registry.k8s.io/redis:e2e").as_deref(), Some("redis"));
        assert_eq!(
            name("bitnamisecure/postgresql:17").as_deref(),
            Some("bitnami/postgresql")
        );
        assert_eq!(name("example/redis-exporter:1"), None);
        assert_eq!(name("myredis:1"), None);
    }

    #[test]
    fn postgres_layout_follows_the_tag() {
        let c = Catalog::built_in();
        let facts = |img: &str| {
            let r = ImageRef::parse(img);
            let f = facts_for(c.lookup(&r).unwrap(), &r);
            (
                f.data_paths[0].clone(),
                f.mount_path.clone().unwrap(),
                f.version_assumed_from_digest,
            )
        };
        assert_eq!(facts("postgres:17.2").1, "/var/lib/postgresql/data");
        assert_eq!(facts("postgres:18").0, "/var/lib/postgresql/18/docker");
        assert_eq!(facts("postgres:latest").1, "/var/lib/postgresql");
        assert_eq!(facts("postgres").1, "/var/lib/postgresql");
        assert!(facts("postgres@sha256:0123").2);
        assert_eq!(
            facts("pgvector/pgvector:0.8.0-pg16").1,
            "/var/lib/postgresql/data"
        );
        assert_eq!(
            facts("timescale/timescaledb:2.17.2-pg18").0,
            "/var/lib/postgresql/18/docker"
        );
        assert_eq!(facts("influxdb:1.11").0, "/var/lib/influxdb");
        assert_eq!(facts("influxdb:3-core").0, "/home/influxdb3/.influxdb3");
    }

    #[test]
    fn every_built_in_entry_is_well_formed() {
        for entry in Catalog::built_in().entries() {
            entry.check().unwrap();
        }
    }
}
