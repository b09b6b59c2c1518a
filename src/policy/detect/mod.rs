//! Finding database containers and their data paths (docs/architecture.md,
//! "Detection"), in three steps per container:
//!
//! 1. [`identify`]: which program runs (the image's catalog entry when it
//!    runs its server, else the family server-only variables reveal);
//! 2. gather: one function per source of data paths (the
//!    `pvc-guard.io/data-paths` annotation, server flags, `PGDATA`, SQLite
//!    files, the catalog, mounts at distinctive paths);
//! 3. [`resolve`]: the precedence among them, encoded once.

mod command;
mod sqlite;

use std::collections::HashMap;

pub use command::{Word, command_words};
pub use sqlite::{SqlitePath, sqlite_paths};

use super::catalog::{Catalog, ImageFacts, ImageRef, facts_for};
use crate::config::{CatalogEntry, parse_owner};
use crate::k8s::{normalize_path, path_contains};
use crate::model::{Annotation, ContainerList, ContainerRef, Workload};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Annotation,
    Flag,
    Pgdata,
    Sqlite,
    Catalog,
    ServerEnv,
    DistinctiveMount,
}

impl Source {
    /// Detected from what the container runs, not only declared by people.
    pub fn is_database(self) -> bool {
        !matches!(self, Source::Annotation)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPath {
    pub path: String,
    pub source: Source,
    /// A SQLite (or DuckDB) file rather than a directory.
    pub file: bool,
}

/// Why a container's data path could not be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// A relative SQLite path and no `workingDir`.
    RelativeSqlite { path: String },
    /// A SQLite path behind a `$(VAR)` the kubelet expands.
    UnexpandedSqlite { path: String },
    /// A family known only from variables clients set too.
    ClientEnv {
        var: &'static str,
        family: &'static str,
    },
    /// A postgres image pinned by digest only.
    Digest { image: String, layout: String },
}

/// A path the detector could not place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    pub path: String,
    pub why: Why,
}

#[derive(Debug, Clone)]
pub struct DbContainer<'w, 'c> {
    pub container: ContainerRef<'w>,
    pub image: &'w str,
    /// Catalog facts for the image, or for the family its environment,
    /// flags or mounts reveal.
    pub facts: Option<ImageFacts<'c>>,
    pub paths: Vec<DataPath>,
    pub unresolved: Vec<Unresolved>,
    /// Cache-like image not declared durable: ephemeral storage is a warning.
    pub cache_like: bool,
    /// `PGDATA` may come from `envFrom`, `valueFrom` or a `$(VAR)`:
    /// validated with the image default, never mutated.
    pub pgdata_hidden: bool,
    /// `PGDATA` as the postgres server will see it, when known.
    pub pgdata: Option<String>,
}

impl DbContainer<'_, '_> {
    pub fn family(&self) -> Option<&str> {
        self.facts.as_ref().map(|f| f.entry.family.as_str())
    }

    pub fn is_postgres(&self) -> bool {
        self.family() == Some("postgres")
    }

    pub fn name(&self) -> &str {
        self.container.name()
    }
}

/// Image families known from variables only their server reads.
const SERVER_ENV: &[(&str, &str)] = &[
    ("MYSQL_ROOT_PASSWORD", "mysql"),
    ("MYSQL_ALLOW_EMPTY_PASSWORD", "mysql"),
    ("MYSQL_RANDOM_ROOT_PASSWORD", "mysql"),
    ("MARIADB_ROOT_PASSWORD", "mariadb"),
    ("MARIADB_ALLOW_EMPTY_ROOT_PASSWORD", "mariadb"),
    ("MONGO_INITDB_ROOT_USERNAME", "mongo"),
    ("POSTGRES_INITDB_ARGS", "postgres"),
    ("POSTGRES_HOST_AUTH_METHOD", "postgres"),
];

/// Variables clients set too: a hint, never enough on their own.
const CLIENT_ENV: &[(&str, &str)] = &[
    ("POSTGRES_PASSWORD", "postgres"),
    ("POSTGRES_USER", "postgres"),
    ("POSTGRES_DB", "postgres"),
    ("MYSQL_DATABASE", "mysql"),
];

/// Which program a container runs, as far as its image and environment say.
struct Identity<'w, 'c> {
    image: &'w str,
    image_ref: ImageRef,
    words: Vec<Word>,
    /// The image's catalog entry, whether or not it runs the server.
    entry: Option<&'c CatalogEntry>,
    facts: Option<ImageFacts<'c>>,
    /// The facts come from the image's own entry (it runs its server).
    from_catalog: bool,
    /// The facts come from server-only variables.
    from_env: bool,
}

/// Step 1: the catalog entry when the image runs its server (no `command`,
/// and `args` empty, a flag, or naming the server), else the family that
/// variables only a server reads reveal (for images built on it).
fn identify<'w, 'c>(c: &ContainerRef<'w>, catalog: &'c Catalog) -> Identity<'w, 'c> {
    let container = c.container;
    let image = container.image().unwrap_or("");
    let image_ref = ImageRef::parse(image);
    let words = command_words(container);
    let entry = (!image.is_empty())
        .then(|| catalog.lookup(&image_ref))
        .flatten();
    let runs_server = entry.is_some_and(|e| {
        if container.has_command() {
            return command::names_server(&words, &e.server_commands);
        }
        match container.args().next() {
            None => true,
            Some(first) if first.starts_with('-') => true,
            Some(_) => command::names_server(&words, &e.server_commands),
        }
    });
    let mut identity = Identity {
        image,
        image_ref,
        words,
        entry,
        facts: None,
        from_catalog: false,
        from_env: false,
    };
    if let (Some(e), true) = (entry, runs_server) {
        identity.facts = Some(facts_for(e, &identity.image_ref));
        identity.from_catalog = true;
    } else if entry.is_none()
        && let Some((_, family)) = SERVER_ENV
            .iter()
            .find(|(var, _)| container.env(var).is_some())
        && let Some(e) = catalog
            .by_name(family)
            .or_else(|| catalog.by_family(family))
    {
        identity.facts = Some(facts_for(e, &ImageRef::named(&e.name)));
        identity.from_env = true;
    }
    identity
}

/// `PGDATA` as the container sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pgdata {
    Unset,
    /// A literal absolute path, normalised.
    Path(String),
    /// Set, but from `valueFrom`, a `$(VAR)` or not a path: unknown.
    Unknown,
}

/// Step 2, one function per source.
mod gather {
    use super::*;

    /// Data paths from server flags, each with the family of its program.
    pub fn flags(id: &Identity<'_, '_>, c: &ContainerRef<'_>) -> Vec<(String, &'static str)> {
        let implicit_program = match &id.facts {
            Some(f) if id.from_catalog && !c.container.has_command() => command::SERVER_FLAGS
                .iter()
                .find(|(_, fam, _)| *fam == f.entry.family)
                .map(|(p, _, _)| *p),
            _ => None,
        };
        command::flag_paths(&id.words, implicit_program)
    }

    pub fn pgdata(c: &ContainerRef<'_>) -> Pgdata {
        match c.container.env("PGDATA") {
            None => Pgdata::Unset,
            Some(e) => match e.value.as_deref() {
                Some(v) if v.contains("$(") => Pgdata::Unknown,
                Some(v) if v.starts_with('/') => Pgdata::Path(normalize_path(v)),
                _ => Pgdata::Unknown,
            },
        }
    }

    /// SQLite files in env values, command and args, resolved against the
    /// working directory where they are relative.
    pub fn sqlite(c: &ContainerRef<'_>, out: &mut Vec<String>, unresolved: &mut Vec<Unresolved>) {
        let container = c.container;
        let texts = container
            .env
            .iter()
            .filter_map(|e| e.value.as_deref())
            .chain(container.command())
            .chain(container.args());
        for text in texts {
            for found in sqlite_paths(text) {
                let why = match found {
                    SqlitePath::Absolute(path) => {
                        out.push(path);
                        continue;
                    }
                    SqlitePath::Relative(path) => match container.working_dir() {
                        Some(wd) => {
                            out.push(normalize_path(&format!("{wd}/{path}")));
                            continue;
                        }
                        None => Why::RelativeSqlite { path },
                    },
                    SqlitePath::Unexpanded(path) => Why::UnexpandedSqlite { path },
                };
                let path = match &why {
                    Why::RelativeSqlite { path } | Why::UnexpandedSqlite { path } => path.clone(),
                    _ => String::new(),
                };
                if !unresolved.iter().any(|u| u.path == path) {
                    unresolved.push(Unresolved { path, why });
                }
            }
        }
    }

    /// A family named by a variable clients set too.
    pub fn client_env(c: &ContainerRef<'_>) -> Option<(&'static str, &'static str)> {
        CLIENT_ENV
            .iter()
            .find(|(var, _)| c.container.env(var).is_some())
            .copied()
    }

    /// Mounts at a path only one database uses, whatever the image.
    pub fn distinctive<'c>(
        c: &ContainerRef<'_>,
        catalog: &'c Catalog,
    ) -> Vec<(String, &'c CatalogEntry)> {
        c.container
            .mounts()
            .filter_map(|m| {
                let mp = m.mount_path.as_deref()?;
                catalog.by_distinctive_path(mp).map(|e| (mp.to_string(), e))
            })
            .collect()
    }
}

/// Everything gathered for one container, before the precedence.
#[derive(Debug, Default)]
struct Gathered<'c> {
    annotation: Vec<String>,
    flags: Vec<(String, &'static str)>,
    /// `PGDATA`, when it is a path this container's program reads.
    pgdata: Option<String>,
    sqlite: Vec<String>,
    /// The catalog's data paths for the identified program.
    catalog: Vec<String>,
    /// The catalog paths came from server-only variables, not the image.
    catalog_from_env: bool,
    /// Redis run explicitly as a cache (`--save "" --appendonly no`).
    explicit_cache: bool,
    distinctive: Vec<(String, &'c CatalogEntry)>,
}

/// Step 3: the precedence among sources, in one place.
///
/// - The annotation, when it names paths for this container, is the whole
///   answer.
/// - Otherwise: server flags, then `PGDATA`, then SQLite files; the
///   catalog's own paths only when no flag or `PGDATA` moved them.
/// - Redis run explicitly as a cache keeps no catalog or flag path.
/// - With nothing found, a mount at a distinctive database path.
fn resolve(g: &Gathered<'_>) -> Vec<DataPath> {
    let mut paths: Vec<DataPath> = Vec::new();
    fn push(paths: &mut Vec<DataPath>, path: &str, source: Source, file: bool) {
        if !paths.iter().any(|p| p.path == path) {
            paths.push(DataPath {
                path: path.to_string(),
                source,
                file,
            });
        }
    }
    if !g.annotation.is_empty() {
        for p in &g.annotation {
            push(&mut paths, p, Source::Annotation, false);
        }
        return paths;
    }
    if !g.explicit_cache {
        for (p, _) in &g.flags {
            push(&mut paths, p, Source::Flag, false);
        }
    }
    if let Some(p) = &g.pgdata {
        push(&mut paths, p, Source::Pgdata, false);
    }
    for p in &g.sqlite {
        push(&mut paths, p, Source::Sqlite, true);
    }
    let moved = !g.flags.is_empty() || g.pgdata.is_some();
    if !moved && !g.explicit_cache {
        let source = if g.catalog_from_env {
            Source::ServerEnv
        } else {
            Source::Catalog
        };
        for p in &g.catalog {
            push(&mut paths, p, source, false);
        }
    }
    if paths.is_empty() && !g.explicit_cache {
        for (p, _) in &g.distinctive {
            push(&mut paths, p, Source::DistinctiveMount, false);
        }
    }
    paths
}

/// Every database container of a workload with its data paths.
pub fn detect<'w, 'c>(
    workload: &'w Workload,
    catalog: &'c Catalog,
    durable_images: &[String],
) -> Vec<DbContainer<'w, 'c>> {
    let containers: Vec<ContainerRef<'w>> = workload.containers().collect();
    let mut annotated = annotated_paths(workload, &containers);
    let mut out = Vec::new();
    for (ci, c) in containers.iter().enumerate() {
        let mine = annotated.remove(&ci).unwrap_or_default();
        if c.ordinary_init() && mine.is_empty() {
            continue;
        }
        let mut id = identify(c, catalog);
        let mut unresolved = Vec::new();
        let mut g = Gathered {
            annotation: mine,
            ..Gathered::default()
        };
        let annotated_here = !g.annotation.is_empty();
        if !annotated_here {
            g.flags = gather::flags(&id, c);
            // A server flag names the family of a program the catalog did not.
            if id.facts.is_none()
                && let Some(e) = g.flags.iter().find_map(|(_, f)| catalog.by_family(f))
            {
                id.facts = Some(facts_for(e, &id.image_ref));
            }
        }
        let is_pg = id
            .facts
            .as_ref()
            .is_some_and(|f| f.entry.family == "postgres");
        let mut pgdata = None;
        let mut pgdata_hidden = false;
        match gather::pgdata(c) {
            Pgdata::Path(p) if is_pg || id.entry.is_none() => {
                if !annotated_here {
                    g.pgdata = Some(p.clone());
                }
                pgdata = Some(p);
                if id.facts.is_none() {
                    id.facts = catalog
                        .by_family("postgres")
                        .map(|e| facts_for(e, &id.image_ref));
                }
            }
            Pgdata::Path(_) | Pgdata::Unknown if is_pg => pgdata_hidden = true,
            Pgdata::Unset if is_pg && c.container.has_env_from() => pgdata_hidden = true,
            _ => {}
        }
        if !annotated_here {
            gather::sqlite(c, &mut g.sqlite, &mut unresolved);
        }
        let mut cache_like = false;
        if let Some(f) = &id.facts {
            if id.from_catalog || id.from_env {
                g.catalog = f.data_paths.clone();
                g.catalog_from_env = id.from_env;
                if f.version_assumed_from_digest && f.entry.family == "postgres" {
                    unresolved.push(Unresolved {
                        path: f.data_paths.first().cloned().unwrap_or_default(),
                        why: Why::Digest {
                            image: id.image.to_string(),
                            layout: f.mount_path.clone().unwrap_or_default(),
                        },
                    });
                }
            }
            cache_like = f.entry.cache_like
                && !durable_images.iter().any(|d| d == &f.entry.name)
                && !annotated_here;
            g.explicit_cache =
                f.entry.family == "redis" && command::explicit_cache(&id.words) && !annotated_here;
        }
        if !annotated_here && !g.explicit_cache {
            g.distinctive = gather::distinctive(c, catalog);
        }
        let paths = resolve(&g);
        // Client variables are a hint only where nothing but (at most) a
        // distinctive mount was found.
        if paths.iter().all(|p| p.source == Source::DistinctiveMount)
            && id.entry.is_none()
            && !c.container.has_command()
            && let Some((var, family)) = gather::client_env(c)
        {
            unresolved.push(Unresolved {
                path: String::new(),
                why: Why::ClientEnv { var, family },
            });
        }
        // A mount-revealed family: the image is not the catalog's, so its
        // VOLUMEs, user and entrypoint are unknown.
        if id.facts.is_none()
            && let Some(first) = paths.iter().find(|p| p.source == Source::DistinctiveMount)
            && let Some((_, e)) = g.distinctive.iter().find(|(p, _)| *p == first.path)
        {
            let mut f = facts_for(e, &ImageRef::named(&e.name));
            f.volumes.clear();
            f.user = None;
            f.fixes_ownership = false;
            id.facts = Some(f);
        }
        if paths.is_empty() && unresolved.is_empty() {
            continue;
        }
        let postgres = is_pg
            || id
                .facts
                .as_ref()
                .is_some_and(|f| f.entry.family == "postgres");
        if !postgres {
            pgdata = None;
        } else if pgdata.is_none() && !pgdata_hidden {
            pgdata = id
                .facts
                .as_ref()
                .and_then(|f| f.data_paths.first().cloned());
        }
        out.push(DbContainer {
            container: *c,
            image: id.image,
            facts: id.facts,
            paths,
            unresolved,
            cache_like,
            pgdata_hidden,
            pgdata,
        });
    }
    out
}

/// The entries of the `pvc-guard.io/data-paths` annotation.
pub fn data_path_entries(value: &str) -> impl Iterator<Item = &str> {
    value
        .split([';', ',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Paths the `pvc-guard.io/data-paths` annotation gives each container, by
/// the container's position in `containers`. An entry without a container
/// name goes to the container that mounts it, else kubectl's default
/// container, else the first one. Linear: each entry looks up its own
/// ancestors in one index of mount paths.
fn annotated_paths(
    workload: &Workload,
    containers: &[ContainerRef<'_>],
) -> HashMap<usize, Vec<String>> {
    let mut out: HashMap<usize, Vec<String>> = HashMap::new();
    let Some(value) = workload.annotation(Annotation::DataPaths) else {
        return out;
    };
    let app: Vec<usize> = containers
        .iter()
        .enumerate()
        .filter(|(_, c)| c.list == ContainerList::Containers)
        .map(|(i, _)| i)
        .collect();
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, c) in containers.iter().enumerate() {
        by_name.entry(c.name()).or_insert(i);
    }
    // Which app containers mount each path.
    let mut mounted_at: HashMap<&str, Vec<usize>> = HashMap::new();
    for &i in &app {
        for m in containers[i].container.mounts() {
            if let Some(mp) = m.mount_path.as_deref() {
                let at = mounted_at.entry(mp).or_default();
                if at.last() != Some(&i) {
                    at.push(i);
                }
            }
        }
    }
    let default = workload
        .annotation(Annotation::DefaultContainer)
        .and_then(|n| by_name.get(n).copied());
    for item in data_path_entries(value) {
        match item.split_once('=') {
            Some((name, path)) => {
                if let Some(&i) = by_name.get(name.trim()) {
                    out.entry(i).or_default().push(normalize_path(path.trim()));
                }
            }
            None => {
                let path = normalize_path(item);
                let targets: Vec<usize> = if app.len() == 1 {
                    app.clone()
                } else {
                    let mut mounting: Vec<usize> = ancestors(&path)
                        .filter_map(|a| mounted_at.get(a))
                        .flatten()
                        .copied()
                        .collect();
                    mounting.sort_unstable();
                    mounting.dedup();
                    if mounting.is_empty() {
                        default.or(app.first().copied()).into_iter().collect()
                    } else {
                        mounting
                    }
                };
                for i in targets {
                    out.entry(i).or_default().push(path.clone());
                }
            }
        }
    }
    out
}

/// `/a/b/c`, `/a/b`, `/a`, `/`: every path that contains `path`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(path);
    std::iter::from_fn(move || {
        let current = next?;
        next = match current.rfind('/') {
            Some(0) if current.len() > 1 => Some("/"),
            Some(0) | None => None,
            Some(i) => Some(&current[..i]),
        };
        Some(current)
    })
    .filter(|a| path_contains(a, path))
}

/// The user a container starts as: its securityContext, the pod's, the
/// `pvc-guard.io/data-owner` annotation, then the catalog's image default.
pub fn start_user(workload: &Workload, db: &DbContainer<'_, '_>) -> Option<(i64, i64)> {
    let c = &db.container.container.security_context;
    let pod = &workload.pod.security_context;
    let uid = c.run_as_user.or(pod.run_as_user);
    let gid = c.run_as_group.or(pod.run_as_group);
    if let Some(uid) = uid {
        return Some((uid, gid.unwrap_or(if uid == 0 { 0 } else { uid })));
    }
    if let Some(owner) = workload
        .annotation(Annotation::DataOwner)
        .and_then(parse_owner)
    {
        return Some(owner);
    }
    db.facts.as_ref().and_then(|f| f.user)
}

/// How many entries the data-paths annotation holds.
pub fn data_path_entry_count(workload: &Workload) -> usize {
    workload
        .annotation(Annotation::DataPaths)
        .map_or(0, |v| data_path_entries(v).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(f: impl FnOnce(&mut Gathered<'static>)) -> Vec<(String, Source)> {
        let mut g = Gathered::default();
        f(&mut g);
        resolve(&g)
            .into_iter()
            .map(|p| (p.path, p.source))
            .collect()
    }

    fn s(path: &str, source: Source) -> (String, Source) {
        (path.to_string(), source)
    }

    /// The precedence, one row per rule.
    #[test]
    fn the_precedence_among_sources() {
        use Source::*;
        let entry: &'static CatalogEntry = Box::leak(Box::default());
        // The annotation is the whole answer.
        assert_eq!(
            g(|g| {
                g.annotation = vec!["/a".into()];
                g.flags = vec![("/f".into(), "postgres")];
                g.catalog = vec!["/c".into()];
                g.sqlite = vec!["/s.db".into()];
            }),
            vec![s("/a", Annotation)]
        );
        // Flags and PGDATA move the catalog's paths; SQLite does not.
        assert_eq!(
            g(|g| {
                g.flags = vec![("/f".into(), "postgres")];
                g.pgdata = Some("/p".into());
                g.sqlite = vec!["/s.db".into()];
                g.catalog = vec!["/c".into()];
            }),
            vec![s("/f", Flag), s("/p", Pgdata), s("/s.db", Sqlite)]
        );
        assert_eq!(
            g(|g| {
                g.sqlite = vec!["/s.db".into()];
                g.catalog = vec!["/c".into()];
            }),
            vec![s("/s.db", Sqlite), s("/c", Catalog)]
        );
        // A path named twice keeps its first source.
        assert_eq!(
            g(|g| {
                g.flags = vec![("/p".into(), "postgres")];
                g.pgdata = Some("/p".into());
            }),
            vec![s("/p", Flag)]
        );
        // Server-only variables give the catalog's paths their own source.
        assert_eq!(
            g(|g| {
                g.catalog = vec!["/var/lib/mysql".into()];
                g.catalog_from_env = true;
            }),
            vec![s("/var/lib/mysql", ServerEnv)]
        );
        // Redis run as a cache keeps neither flag nor catalog path.
        assert_eq!(
            g(|g| {
                g.explicit_cache = true;
                g.flags = vec![("/f".into(), "redis")];
                g.catalog = vec!["/data".into()];
                g.distinctive = vec![("/data".into(), entry)];
            }),
            vec![]
        );
        // A distinctive mount only when nothing else is found.
        assert_eq!(
            g(|g| g.distinctive = vec![("/var/lib/mysql".into(), entry)]),
            vec![s("/var/lib/mysql", DistinctiveMount)]
        );
        assert_eq!(
            g(|g| {
                g.catalog = vec!["/c".into()];
                g.distinctive = vec![("/var/lib/mysql".into(), entry)];
            }),
            vec![s("/c", Catalog)]
        );
    }

    #[test]
    fn ancestors_of_a_path() {
        let a: Vec<&str> = ancestors("/a/b/c").collect();
        assert_eq!(a, ["/a/b/c", "/a/b", "/a", "/"]);
        assert_eq!(ancestors("/").collect::<Vec<_>>(), ["/"]);
    }
}
