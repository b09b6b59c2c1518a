//! The image catalog: data, not code branches. The built-in table is
//! `catalog.yaml`, embedded at build time; config entries extend or replace
//! it. Lookups run for every container of every request: the patterns are
//! parsed once, when the catalog is built, and a lookup takes the image's
//! reference apart once and compares in place.

use crate::config::{CatalogEntry, TagVersion, parse_owner};

const BUILT_IN: &str = include_str!("catalog.yaml");

/// An image reference taken apart: `[registry/]repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry host (`quay.io`, `localhost:5000`), lower-cased; none
    /// for Docker Hub's short form.
    pub registry: Option<String>,
    /// The path after the registry, lower-cased, `bitnamilegacy` and
    /// `bitnamisecure` read as `bitnami`; a leading `library/` kept.
    pub path: String,
    /// The path with a leading `library/` normalised away: what the
    /// repository is called in messages.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// A repository by name alone: what a family revealed by other means
    /// (server-only variables, a distinctive mount) is looked up as.
    pub fn named(repository: &str) -> ImageRef {
        ImageRef {
            registry: None,
            path: repository.to_string(),
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
        let registry = (parts.len() > 1 && is_registry(parts[0]))
            .then(|| parts.remove(0).to_ascii_lowercase());
        let path = parts
            .iter()
            .map(|p| match *p {
                "bitnamilegacy" | "bitnamisecure" => "bitnami".to_string(),
                p => p.to_ascii_lowercase(),
            })
            .collect::<Vec<_>>()
            .join("/");
        let repository = match path.strip_prefix("library/") {
            Some(r) if !r.is_empty() => r.to_string(),
            _ => path.clone(),
        };
        ImageRef {
            registry,
            path,
            repository,
            tag: tag.filter(|t| !t.is_empty()),
            digest,
        }
    }

    /// Registry and path, as the publisher named it (no tag or digest).
    pub fn full_name(&self) -> String {
        match &self.registry {
            Some(r) => format!("{r}/{}", self.path),
            None => self.path.clone(),
        }
    }

    /// The last path component: the name the image goes by.
    pub fn short_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }
}

/// A first path component that names a registry rather than a namespace.
fn is_registry(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

/// A registry with a port (or `localhost`): a private mirror in front of
/// Docker Hub or of the registry named next in the path.
fn is_private_mirror(registry: &str) -> bool {
    registry.contains(':') || registry == "localhost"
}

/// Registries that serve Docker Hub's repositories under their own names.
const HUB: &[&str] = &[
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "mirror.gcr.io",
];

/// The registry and path components an image is published under, with
/// the well-known mirrors of Docker Hub read as Docker Hub (`None`).
fn publisher(image: &ImageRef) -> (Option<&str>, Vec<&str>) {
    let mut registry = image.registry.as_deref();
    let mut path: Vec<&str> = image.path.split('/').filter(|p| !p.is_empty()).collect();
    if registry.is_some_and(is_private_mirror) {
        registry = None;
        // `localhost:5000/quay.io/fedora/postgresql-16`: a mirror of quay.io.
        if path.len() > 1 && is_registry(path[0]) {
            registry = Some(path.remove(0));
        }
    }
    if registry.is_some_and(|r| HUB.contains(&r)) {
        registry = None;
    }
    // Amazon's copy of the Docker Official Images.
    if registry == Some("public.ecr.aws") && path.len() > 2 && path[..2] == ["docker", "library"] {
        registry = None;
        path.remove(0);
    }
    (registry, path)
}

/// One `repositories` entry of the catalog taken apart, once, when the
/// catalog is built.
#[derive(Debug, Clone)]
struct Pattern {
    /// Index of its entry.
    entry: usize,
    registry: Option<String>,
    components: Vec<String>,
    tag: Option<String>,
}

impl Pattern {
    fn parse(entry: usize, pattern: &str) -> Pattern {
        let mut components: Vec<String> = pattern
            .split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        let registry =
            (components.len() > 1 && is_registry(&components[0])).then(|| components.remove(0));
        let mut tag = None;
        if let Some(last) = components.last_mut()
            && let Some((name, t)) = last.split_once(':')
        {
            tag = Some(t.to_string());
            *last = name.to_string();
        }
        Pattern {
            entry,
            registry,
            components,
            tag,
        }
    }

    /// How specific a match with this pattern is; the most specific wins.
    fn weight(&self) -> usize {
        let mut w = self.components.len();
        if self.registry.is_some() {
            w += 100;
        }
        if self.tag.is_some() {
            w += 1000;
        }
        w
    }

    /// The Docker Official Image's name, when the pattern is one.
    fn official_name(&self) -> Option<&str> {
        match (&self.registry, &self.tag, self.components.as_slice()) {
            (None, None, [name]) if !name.contains('*') => Some(name),
            _ => None,
        }
    }

    /// Does an image published at `registry`/`path` (as [`publisher`]
    /// reads it) with `tag` come from this pattern's repository?
    ///
    /// - `registry/path` (`gcr.io/google-samples/cassandra`): that registry
    ///   and path exactly;
    /// - `owner/name` (`bitnami/redis`): those components at the end of the
    ///   path, under any registry (the owner names the publisher, and
    ///   mirrors such as `mcr.microsoft.com/oss/bitnami/redis` keep it);
    /// - `name` (`postgres`): the Docker Official Image, as `name` or
    ///   `library/name` on Docker Hub or its mirrors, or `.../library/name`
    ///   on any registry (a proxy of Docker Hub's `library` namespace).
    ///
    /// `*` in the last component matches any text; `:tag` only that tag.
    fn matches(&self, registry: Option<&str>, path: &[&str], tag: Option<&str>) -> bool {
        if self.tag.as_deref().is_some_and(|t| tag != Some(t)) {
            return false;
        }
        let comps = &self.components;
        let ends_with = || {
            path.len() >= comps.len()
                && path[path.len() - comps.len()..]
                    .iter()
                    .zip(comps)
                    .enumerate()
                    .all(|(i, (p, c))| {
                        if i + 1 == comps.len() {
                            glob(c, p)
                        } else {
                            p == c
                        }
                    })
        };
        match (&self.registry, comps.as_slice()) {
            (Some(r), _) => {
                registry == Some(r.as_str()) && path.len() == comps.len() && ends_with()
            }
            (None, [name]) => {
                let hub = registry.is_none()
                    && (path.len() == 1 || (path.len() == 2 && path[0] == "library"));
                let library_proxy = path.len() >= 2 && path[path.len() - 2] == "library";
                (hub || library_proxy) && path.last().is_some_and(|p| glob(name, p))
            }
            (None, _) => ends_with(),
        }
    }
}

/// `pattern` with `*` matching any text, against `text`.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.len() >= head.len() + tail.len()
                && text.starts_with(head)
                && glob_rest(tail, &text[head.len()..])
        }
    }
}

fn glob_rest(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => text.ends_with(pattern),
        Some((part, rest)) => (0..=text.len())
            .filter(|&i| text.is_char_boundary(i) && text[i..].starts_with(part))
            .any(|i| glob_rest(rest, &text[i + part.len()..])),
    }
}

/// How an image matched a catalog entry.
#[derive(Debug, Clone, Copy)]
pub struct Match<'c> {
    pub entry: &'c CatalogEntry,
    /// The entry covers the image's publisher. When false, only the
    /// image's short name is an official image's name: a guess.
    pub publisher: bool,
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
    /// The image's VOLUMEs are not known (an unknown publisher's image, or
    /// an entry that does not say): none is assumed, none is named.
    pub volumes_unknown: bool,
    /// The version could not be read (digest only): the newest layout is assumed.
    pub version_assumed_from_digest: bool,
}

#[derive(Debug, Clone)]
pub struct Catalog {
    entries: Vec<CatalogEntry>,
    /// Every entry's `repositories`, parsed once.
    patterns: Vec<Pattern>,
}

impl Catalog {
    fn new(entries: Vec<CatalogEntry>) -> Catalog {
        let patterns = entries
            .iter()
            .enumerate()
            .flat_map(|(i, e)| e.repositories.iter().map(move |r| Pattern::parse(i, r)))
            .collect();
        Catalog { entries, patterns }
    }

    pub fn built_in() -> Catalog {
        let entries: Vec<CatalogEntry> =
            serde_yaml_ng::from_str(BUILT_IN).expect("the embedded catalog.yaml is valid");
        Catalog::new(entries)
    }

    /// The built-in table with config entries added; same name replaces.
    pub fn with_overrides(overrides: &[CatalogEntry]) -> Catalog {
        let mut entries = Catalog::built_in().entries;
        for entry in overrides {
            match entries.iter_mut().find(|e| e.name == entry.name) {
                Some(existing) => *existing = entry.clone(),
                None => entries.push(entry.clone()),
            }
        }
        Catalog::new(entries)
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

    /// The entry that covers the image's publisher, the most specific
    /// pattern winning (a tag, then a registry, then more path
    /// components); else the first entry whose official image's name is
    /// the image's short name, as a guess (`Match::publisher` false).
    pub fn lookup(&self, image: &ImageRef) -> Option<Match<'_>> {
        let (registry, path) = publisher(image);
        let tag = image.tag.as_deref();
        let best = self
            .patterns
            .iter()
            .filter(|p| p.matches(registry, &path, tag))
            // The first of equally specific patterns, in catalog order.
            .min_by_key(|p| (usize::MAX - p.weight(), p.entry));
        if let Some(p) = best {
            return Some(Match {
                entry: &self.entries[p.entry],
                publisher: true,
            });
        }
        let name = image.short_name();
        self.patterns
            .iter()
            .find(|p| p.official_name() == Some(name))
            .map(|p| Match {
                entry: &self.entries[p.entry],
                publisher: false,
            })
    }

    /// The entry whose distinctive paths include `mount_path`.
    pub fn by_distinctive_path(&self, mount_path: &str) -> Option<&CatalogEntry> {
        self.entries
            .iter()
            .find(|e| e.distinctive_paths.iter().any(|p| p == mount_path))
    }
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
        volumes_unknown: entry.volumes_unknown,
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
        assert_eq!(r.registry.as_deref(), Some("localhost:5000"));
        assert_eq!(r.full_name(), "localhost:5000/team/db");
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(
            ImageRef::parse("bitnamilegacy/redis:7").repository,
            "bitnami/redis"
        );
        assert_eq!(ImageRef::parse("postgres").tag, None);
    }

    /// Which entry an image gets, and whether by its publisher.
    fn matched(c: &Catalog, img: &str) -> Option<(String, bool)> {
        c.lookup(&ImageRef::parse(img))
            .map(|m| (m.entry.name.clone(), m.publisher))
    }

    #[test]
    fn the_official_image_and_its_mirrors_are_the_official_image() {
        let c = Catalog::built_in();
        for img in [
            "postgres:16",
            "library/postgres:16",
            "docker.io/library/postgres:16",
            "docker.io/postgres:16",
            "index.docker.io/library/postgres:16",
            "mirror.gcr.io/library/postgres:16",
            "public.ecr.aws/docker/library/postgres:16",
            "localhost:5000/postgres:16",
            "registry.local:5000/library/postgres:16",
            "registry.local:5000/docker.io/library/postgres:16",
            "harbor.example.com/dockerhub/library/postgres:16",
        ] {
            assert_eq!(matched(&c, img), Some(("postgres".into(), true)), "{img}");
        }
    }

    #[test]
    fn a_short_name_of_an_unknown_publisher_is_only_a_guess() {
        let c = Catalog::built_in();
        for img in [
            "registry.k8s.io/redis:e2e",
            "example/redis:7",
            "123456789.dkr.ecr.us-east-1.amazonaws.com/postgres:16",
            "quay.io/someone/cassandra:4",
        ] {
            let (_, publisher) = matched(&c, img).unwrap();
            assert!(!publisher, "{img}");
        }
        // Not even a guess: the short name is not an official image's.
        assert_eq!(matched(&c, "example/redis-exporter:1"), None);
        assert_eq!(matched(&c, "myredis:1"), None);
        assert_eq!(matched(&c, "example/postgresql:1"), None);
    }

    #[test]
    fn a_publishers_own_repository_wins_over_the_short_name() {
        let c = Catalog::built_in();
        let name = |img: &str| matched(&c, img).filter(|(_, p)| *p).map(|(n, _)| n);
        assert_eq!(
            name("mcr.microsoft.com/oss/bitnami/redis:7").as_deref(),
            Some("bitnami/redis")
        );
        assert_eq!(
            name("bitnamisecure/postgresql:17").as_deref(),
            Some("bitnami/postgresql")
        );
        assert_eq!(
            name("gcr.io/google-samples/cassandra:v13").as_deref(),
            Some("google-samples/cassandra")
        );
        assert_eq!(
            name("quay.io/fedora/postgresql-16@sha256:0123").as_deref(),
            Some("sclorg/postgresql")
        );
        assert_eq!(
            name("quay.io/sclorg/postgresql-15-c9s").as_deref(),
            Some("sclorg/postgresql")
        );
        // A tag-qualified repository covers that tag only.
        assert_eq!(
            name("registry.k8s.io/redis:v1").as_deref(),
            Some("kubernetes/redis")
        );
        assert_eq!(name("registry.k8s.io/redis:e2e"), None);
        assert_eq!(
            name("registry.k8s.io/etcd:3.5.15-0").as_deref(),
            Some("registry.k8s.io/etcd")
        );
        assert_eq!(name("quay.io/coreos/etcd:v3.5.0").as_deref(), Some("etcd"));
        assert_eq!(name("quay.io/minio/minio").as_deref(), Some("minio"));
        // A registry-qualified pattern is that registry only.
        assert_eq!(name("example.com/google-samples/cassandra:v13"), None);
    }

    #[test]
    fn postgres_layout_follows_the_tag() {
        let c = Catalog::built_in();
        let facts = |img: &str| {
            let r = ImageRef::parse(img);
            let f = facts_for(c.lookup(&r).unwrap().entry, &r);
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
