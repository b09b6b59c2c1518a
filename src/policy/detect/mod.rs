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

use std::collections::{HashMap, HashSet};

pub use command::{Word, command_words};
pub use sqlite::{SqlitePath, sqlite_paths};

use super::catalog::{Catalog, ImageFacts, ImageRef, facts_for};
use crate::config::{CatalogEntry, parse_owner};
use crate::k8s::{PathIndex, normalize_path, path_contains};
use crate::model::{Annotation, ContainerList, ContainerRef, Workload, limits};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Annotation,
    Flag,
    /// A `KEY=/path` setting the catalog names (`dataDir=` of zookeeper).
    Setting,
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
    /// The image runs a database the catalog knows, but not where this
    /// image keeps its data (and the manifest does not say).
    UnknownDataPath {
        family: String,
        /// Only the image's short name says it runs `family`.
        guessed: bool,
        /// How the server is told where its data goes.
        hint: Option<String>,
        /// A variable that moved the data where pvc-guard cannot follow.
        moved_by: Option<String>,
    },
}

/// A path the detector could not place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    pub path: String,
    pub why: Why,
}

/// Where a container's layout (data paths, VOLUMEs, user) comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The image's own catalog entry: its publisher is known.
    Image,
    /// A variable only the official image's entrypoint reads: the image is
    /// built on it and inherits its VOLUMEs.
    ServerEnv { var: &'static str, entry: String },
    /// The manifest names the data (a server flag, `PGDATA`, a setting, a
    /// mount where the family keeps data), and the image is not the
    /// catalog's: its VOLUMEs and user are unknown.
    Manifest,
    /// Only the image's short name is an official image's: the official
    /// layout is assumed, findings are warnings, and they say so.
    Guess { entry: String },
}

/// Why ephemeral storage is only a warning for this container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Soft {
    /// A cache by default (redis): `pvc-guard.io/data-paths` or
    /// `--appendonly yes` say otherwise.
    Cache,
    /// Configuration comes from a mount (grafana's provisioning), so only
    /// state made at run time is lost.
    Provisioned { mount: String },
}

#[derive(Debug, Clone)]
pub struct DbContainer<'w, 'c> {
    pub container: ContainerRef<'w>,
    pub image: &'w str,
    /// Catalog facts for the image, or for the family its environment,
    /// flags or mounts reveal.
    pub facts: Option<ImageFacts<'c>>,
    /// Where those facts come from (none: only an annotation or SQLite).
    pub origin: Option<Origin>,
    /// It runs a database server, however its paths were found (the
    /// annotation may name them): what `database-in-deployment` asks.
    pub server: bool,
    pub paths: Vec<DataPath>,
    pub unresolved: Vec<Unresolved>,
    /// Ephemeral storage is a warning, and why.
    pub soft: Option<Soft>,
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

    /// The official image whose layout is assumed, when only a guess.
    pub fn guess(&self) -> Option<&str> {
        match &self.origin {
            Some(Origin::Guess { entry }) => Some(entry),
            _ => None,
        }
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
    /// The catalog entry the image matched, by publisher or by name,
    /// whether or not it runs the server.
    entry: Option<&'c CatalogEntry>,
    facts: Option<ImageFacts<'c>>,
    origin: Option<Origin>,
    /// The facts come from the image's match (its own entry or a guess)
    /// running its server: args belong to that server.
    runs_image_server: bool,
}

impl Identity<'_, '_> {
    fn layout_from_env(&self) -> bool {
        matches!(self.origin, Some(Origin::ServerEnv { .. }))
    }
}

/// Facts whose image is not the catalog's: its VOLUMEs, user and
/// entrypoint are unknown, so none is assumed.
fn without_image<'c>(mut f: ImageFacts<'c>) -> ImageFacts<'c> {
    f.volumes.clear();
    f.volumes_unknown = true;
    f.user = None;
    f.fixes_ownership = false;
    f
}

/// ConfigMaps by name, each key to its text.
pub type ConfigMaps =
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>;

/// Does a config file that the command names, mounted from a ConfigMap,
/// set what `phrase` sets (`--appendonly yes` is the line `appendonly yes`
/// of redis.conf; the last line of that setting wins, as redis reads it)?
/// Only a file the command names counts: a server reads no config file it
/// is not given. Linear: the words are indexed by directory once, and each
/// mounted file is read once.
fn mounted_config_says(
    workload: &Workload,
    c: &ContainerRef<'_>,
    maps: &ConfigMaps,
    words: &[Word],
    phrase: &str,
) -> bool {
    let mut wanted = phrase
        .trim_start_matches('-')
        .split_whitespace()
        .map(str::to_ascii_lowercase);
    let Some(setting) = wanted.next() else {
        return false;
    };
    let value: Vec<String> = wanted.collect();
    // Every word that is a path, under each directory above it:
    // "/etc/redis/redis.conf" is redis.conf under /etc/redis, and
    // redis/redis.conf under /etc.
    // Only the container's mount directories are asked about, so each
    // word is indexed under those above it, found in time linear in the
    // word (hashing every directory above a deep path cost its square).
    let dirs: Vec<&str> = c
        .container
        .mounts()
        .filter_map(|m| m.mount_path.as_deref())
        .map(|mp| mp.trim_end_matches('/'))
        .collect();
    let dir_index: HashMap<&str, usize> = dirs.iter().enumerate().map(|(i, d)| (*d, i)).collect();
    let containing = PathIndex::new(dirs.iter().map(|d| (*d, (dir_index[d], d.len()))));
    let mut under: HashMap<usize, HashSet<&str>> = HashMap::new();
    let mut files: HashSet<&str> = HashSet::new();
    for w in words {
        let text = w.text.as_str();
        if !text.starts_with('/') {
            continue;
        }
        files.insert(text);
        for (dir, len) in containing.containing(text) {
            if len > 0 && len < text.len() {
                under.entry(dir).or_default().insert(&text[len + 1..]);
            }
        }
    }
    if files.is_empty() {
        return false;
    }
    let says_it = |text: &str| {
        let mut last = None;
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut tokens = line.split_whitespace().map(str::to_ascii_lowercase);
            if tokens.next().as_deref() == Some(setting.as_str()) {
                last = Some(tokens.eq(value.iter().cloned()));
            }
        }
        last == Some(true)
    };
    let volumes = workload.volumes_by_name();
    c.container.mounts().any(|m| {
        let Some(volume) = m.name.as_deref().and_then(|n| volumes.get(n)) else {
            return false;
        };
        let (Some(name), Some(at)) = (volume.config_map.name.as_deref(), m.mount_path.as_deref())
        else {
            return false;
        };
        let Some(data) = maps.get(name).filter(|_| volume.source() == "configMap") else {
            return false;
        };
        let items = &volume.config_map.items;
        if !items.complete() {
            return false;
        }
        // The text of the ConfigMap key behind the volume's file at `rel`.
        let text_at = |rel: &str| -> Option<&String> {
            if items.items.is_empty() {
                return data.get(rel);
            }
            items
                .iter()
                .filter(|i| i.path.as_deref() == Some(rel))
                .find_map(|i| data.get(i.key.as_deref()?))
        };
        let named: Vec<&str> = match m.sub_path() {
            Some(sub) if files.contains(at) => vec![sub],
            Some(_) => vec![],
            None => dir_index
                .get(at.trim_end_matches('/'))
                .and_then(|i| under.get(i))
                .map(|rels| rels.iter().copied().collect())
                .unwrap_or_default(),
        };
        named
            .into_iter()
            .filter_map(text_at)
            .any(|text| says_it(text))
    })
}

/// Does a word, or a run of consecutive words, spell `phrase`
/// (`--appendonly yes`, or the config line `appendonly yes` in one word)?
fn says(words: &[Word], phrase: &str) -> bool {
    let tokens: Vec<&str> = phrase.split_whitespace().collect();
    words.iter().any(|w| w.text.trim() == phrase)
        || words
            .windows(tokens.len().max(1))
            .any(|run| run.iter().zip(&tokens).all(|(w, t)| w.text == *t))
}

/// Step 1: the catalog entry when the image runs its server (no `command`,
/// and `args` empty, a flag, or naming the server), else the family that
/// variables only a server reads reveal (for images built on it). An
/// image matched only by its short name is a guess unless such a variable
/// says it is built on the official image.
fn identify<'w, 'c>(c: &ContainerRef<'w>, catalog: &'c Catalog) -> Identity<'w, 'c> {
    let container = c.container;
    let image = container.image().unwrap_or("");
    let image_ref = ImageRef::parse(image);
    let words = command_words(container);
    let matched = (!image.is_empty())
        .then(|| catalog.lookup(&image_ref))
        .flatten();
    let runs_server = matched.is_some_and(|m| {
        let e = m.entry;
        let runs = if container.has_command() {
            command::names_server(&words, &e.server_commands)
        } else {
            match container.args().next() {
                None => true,
                Some(first) if first.starts_with('-') => true,
                Some(_) => command::names_server(&words, &e.server_commands),
            }
        };
        // A server that keeps data only when told to (nats `-js`).
        runs && (e.data_only_with.is_empty() || e.data_only_with.iter().any(|p| says(&words, p)))
    });
    let server_env = SERVER_ENV
        .iter()
        .find(|(var, _)| container.env(var).is_some())
        .and_then(|(var, family)| {
            catalog
                .by_name(family)
                .or_else(|| catalog.by_family(family))
                .map(|e| (*var, e))
        });
    let mut identity = Identity {
        image,
        image_ref,
        words,
        entry: matched.map(|m| m.entry),
        facts: None,
        origin: None,
        runs_image_server: false,
    };
    let env_origin = |var: &'static str, e: &CatalogEntry| Origin::ServerEnv {
        var,
        entry: e.name.clone(),
    };
    match matched {
        Some(m) if runs_server && m.publisher => {
            identity.facts = Some(facts_for(m.entry, &identity.image_ref));
            identity.origin = Some(Origin::Image);
            identity.runs_image_server = true;
        }
        Some(m) if runs_server => match server_env {
            Some((var, e)) => {
                // The tag still reads the version when the variable names
                // the guessed image's own family.
                let r = if e.name == m.entry.name {
                    identity.image_ref.clone()
                } else {
                    ImageRef::named(&e.name)
                };
                identity.facts = Some(facts_for(e, &r));
                identity.origin = Some(env_origin(var, e));
                identity.runs_image_server = e.family == m.entry.family;
            }
            None => {
                identity.facts = Some(without_image(facts_for(m.entry, &identity.image_ref)));
                identity.origin = Some(Origin::Guess {
                    entry: m.entry.name.clone(),
                });
                identity.runs_image_server = true;
            }
        },
        Some(_) => {}
        None => {
            if let Some((var, e)) = server_env {
                identity.facts = Some(facts_for(e, &ImageRef::named(&e.name)));
                identity.origin = Some(env_origin(var, e));
            }
        }
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
    /// Args without a `command` go to the image's own server: a first
    /// word that is not a program pvc-guard knows is that server's
    /// subcommand (`minio` + `server /data`), not a program of its own.
    pub fn flags(id: &Identity<'_, '_>, c: &ContainerRef<'_>) -> Vec<(String, &'static str)> {
        let implicit = match &id.facts {
            Some(f) if id.runs_image_server && !c.container.has_command() => command::SERVER_FLAGS
                .iter()
                .find(|(_, fam, _)| *fam == f.entry.family)
                .map(|(p, _, _)| *p),
            _ => None,
        };
        match implicit {
            Some(program)
                if id
                    .words
                    .first()
                    .is_some_and(|w| !command::is_known_program(&w.text)) =>
            {
                let mut words = Vec::with_capacity(id.words.len() + 1);
                words.push(Word {
                    text: program.to_string(),
                    program: true,
                });
                words.extend(id.words.iter().cloned());
                words[1].program = false;
                command::flag_paths(&words, None)
            }
            _ => command::flag_paths(&id.words, implicit),
        }
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

    /// `KEY=/path` settings the catalog names, in command, args and env
    /// values (a config file written by the container's own script).
    pub fn settings(keys: &[String], id: &Identity<'_, '_>, c: &ContainerRef<'_>) -> Vec<String> {
        if keys.is_empty() {
            return Vec::new();
        }
        let env_values = c.container.env.iter().filter_map(|e| e.value.as_deref());
        let texts = id.words.iter().map(|w| w.text.as_str()).chain(env_values);
        let mut out: Vec<String> = Vec::new();
        // Each path once, by lookup: every env value may hold a setting.
        let mut seen: HashSet<String> = HashSet::new();
        for text in texts {
            for key in keys {
                let value = text
                    .split_whitespace()
                    .find_map(|t| t.strip_prefix(key.as_str())?.strip_prefix('='));
                if let Some(v) = value.map(|v| v.trim_matches(|c| c == '"' || c == '\''))
                    && v.starts_with('/')
                    && !v.contains("$(")
                {
                    let p = normalize_path(v);
                    if seen.insert(p.clone()) {
                        out.push(p);
                    }
                }
            }
        }
        out
    }

    /// SQLite files in env values, command and args, resolved against the
    /// working directory where they are relative.
    ///
    /// Past `cap` files (each counted once) it stops: every one becomes a
    /// finding, and a relative one a copy of the working directory, so
    /// 200,000 short names in one variable were gigabytes. The caller
    /// sees more than `cap` and denies the object.
    pub fn sqlite(
        c: &ContainerRef<'_>,
        out: &mut Vec<String>,
        unresolved: &mut Vec<Unresolved>,
        found: &mut Tally,
        limited: bool,
    ) {
        let container = c.container;
        // Each path once, by lookup rather than a scan of those so far
        // (thousands of variables may name one).
        let mut seen: HashSet<String> = unresolved.iter().map(|u| u.path.clone()).collect();
        let mut files: HashSet<String> = out.iter().cloned().collect();
        for p in out.iter().chain(unresolved.iter().map(|u| &u.path)) {
            found.add(p);
        }
        let texts = container
            .env
            .iter()
            .filter_map(|e| e.value.as_deref())
            .chain(container.command())
            .chain(container.args());
        for text in texts {
            for named in sqlite_paths(text) {
                if limited && found.exceeded().is_some() {
                    return;
                }
                let why = match named {
                    SqlitePath::Absolute(path) => {
                        if files.insert(path.clone()) {
                            found.add(&path);
                            out.push(path);
                        }
                        continue;
                    }
                    SqlitePath::Relative(path) => match container.working_dir() {
                        Some(wd) => {
                            let path = normalize_path(&format!("{wd}/{path}"));
                            if files.insert(path.clone()) {
                                found.add(&path);
                                out.push(path);
                            }
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
                if seen.insert(path.clone()) {
                    found.add(&path);
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

    /// A mount exactly where the guessed family keeps its data (its data
    /// paths, its claim's mount path, its VOLUMEs, its distinctive paths):
    /// the manifest shows where the data goes.
    pub fn usual_mount<'w>(
        c: &ContainerRef<'w>,
        entry: &CatalogEntry,
        facts: &ImageFacts<'_>,
    ) -> Option<&'w str> {
        let usual = |mp: &&str| {
            facts.data_paths.iter().any(|p| p == mp)
                || facts.mount_path.as_deref() == Some(*mp)
                || entry.volumes.iter().any(|v| v == mp)
                || entry.distinctive_paths.iter().any(|p| p == mp)
        };
        c.container
            .mounts()
            .filter_map(|m| m.mount_path.as_deref())
            .find(usual)
    }

    /// A mount at or under one of the entry's provisioning paths.
    pub fn provisioned(c: &ContainerRef<'_>, entry: &CatalogEntry) -> Option<String> {
        c.container
            .mounts()
            .filter_map(|m| m.mount_path.as_deref())
            .find(|mp| entry.provisioned_by.iter().any(|p| path_contains(p, mp)))
            .map(str::to_string)
    }
}

/// The catalog's data paths as this container will use them: the layout
/// its environment picks (`variants`), `{--flag|default}` replaced by the
/// flag's value, relative paths resolved against the container's
/// `workingDir` or else the image's.
fn applied_paths(
    entry: &CatalogEntry,
    facts: &mut ImageFacts<'_>,
    words: &[Word],
    c: &ContainerRef<'_>,
) {
    if let Some(v) = entry.variants.iter().find(|v| {
        v.env.split_once('=').is_some_and(|(name, value)| {
            c.container.env(name).and_then(|e| e.value.as_deref()) == Some(value)
        })
    }) {
        facts.data_paths = v.data_paths.clone();
        if v.mount_path.is_some() {
            facts.mount_path = v.mount_path.clone();
        }
    }
    let working_dir = c.container.working_dir().or(entry.working_dir.as_deref());
    facts.data_paths = facts
        .data_paths
        .iter()
        .filter_map(|p| {
            let p = command::expand_flags(p, words);
            if p.starts_with('/') {
                Some(normalize_path(&p))
            } else {
                working_dir.map(|wd| normalize_path(&format!("{wd}/{p}")))
            }
        })
        .collect();
}

/// Everything gathered for one container, before the precedence.
#[derive(Debug, Default)]
struct Gathered<'c> {
    annotation: Vec<String>,
    flags: Vec<(String, &'static str)>,
    /// `KEY=/path` settings the catalog names.
    settings: Vec<String>,
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
/// - Otherwise: server flags, then settings, then `PGDATA`, then SQLite
///   files; the catalog's own paths only when no flag, setting or
///   `PGDATA` moved them.
/// - Redis run explicitly as a cache keeps no catalog or flag path.
/// - With nothing found, a mount at a distinctive database path.
fn resolve(g: &Gathered<'_>) -> Vec<DataPath> {
    /// The paths in order, each once with its first source. The set makes
    /// each path one lookup: a container may name thousands (SQLite files,
    /// annotation entries), and a scan per path was quadratic in them.
    #[derive(Default)]
    struct Paths<'g> {
        list: Vec<DataPath>,
        seen: HashSet<&'g str>,
    }
    impl<'g> Paths<'g> {
        fn is_empty(&self) -> bool {
            self.list.is_empty()
        }
    }
    fn push<'g>(paths: &mut Paths<'g>, path: &'g str, source: Source, file: bool) {
        if paths.seen.insert(path) {
            paths.list.push(DataPath {
                path: path.to_string(),
                source,
                file,
            });
        }
    }
    let mut paths = Paths::default();
    if !g.annotation.is_empty() {
        for p in &g.annotation {
            push(&mut paths, p, Source::Annotation, false);
        }
        return paths.list;
    }
    if !g.explicit_cache {
        for (p, _) in &g.flags {
            push(&mut paths, p, Source::Flag, false);
        }
        for p in &g.settings {
            push(&mut paths, p, Source::Setting, false);
        }
    }
    if let Some(p) = &g.pgdata {
        push(&mut paths, p, Source::Pgdata, false);
    }
    for p in &g.sqlite {
        push(&mut paths, p, Source::Sqlite, true);
    }
    let moved = !g.flags.is_empty() || !g.settings.is_empty() || g.pgdata.is_some();
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
    paths.list
}

/// Data paths found so far: how many, and their bytes. Each becomes a
/// finding and a fix, and is copied into both, so both are capped
/// (`limits::DATA_PATHS`, `limits::DATA_PATH_BYTES`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub paths: usize,
    pub bytes: usize,
}

impl Tally {
    pub fn add(&mut self, path: &str) {
        self.paths += 1;
        self.bytes += path.len();
    }

    /// The first cap this passes, as (what, count, cap).
    pub fn exceeded(&self) -> Option<(&'static str, usize, usize)> {
        if self.paths > limits::DATA_PATHS {
            Some((
                "data paths (SQLite files, placed or not, and data-paths entries for each container they reach)",
                self.paths,
                limits::DATA_PATHS,
            ))
        } else if self.bytes > limits::DATA_PATH_BYTES {
            Some((
                "bytes of data paths (each counted once for each container it is found in)",
                self.bytes,
                limits::DATA_PATH_BYTES,
            ))
        } else {
            None
        }
    }
}

/// Every database container of a workload with its data paths. With
/// `limited`, detection stops as soon as the data paths (placed or not)
/// pass a cap, and says how far they got.
pub fn detect<'w, 'c>(
    workload: &'w Workload,
    catalog: &'c Catalog,
    durable_images: &[String],
    config_maps: Option<&ConfigMaps>,
    limited: bool,
) -> Result<Vec<DbContainer<'w, 'c>>, Tally> {
    let containers: Vec<ContainerRef<'w>> = workload.containers().collect();
    let mut annotated = annotated_paths(workload, &containers);
    // Past a cap nothing is copied: each of 256 entries can reach each of
    // 256 containers.
    if limited && annotated.fan_out.exceeded().is_some() {
        return Err(annotated.fan_out);
    }
    let mut out = Vec::new();
    // Data paths of the containers so far, placed or not.
    let mut found = Tally::default();
    for (ci, c) in containers.iter().enumerate() {
        let mine = annotated.take(ci);
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
            if let Some(f) = &id.facts {
                g.settings = gather::settings(&f.entry.config_keys, &id, c);
            }
            // A server flag names the family of a program the catalog did
            // not; the image is not that family's, so nothing of its image
            // is assumed.
            if id.facts.is_none()
                && let Some(e) = g.flags.iter().find_map(|(_, f)| catalog.by_family(f))
            {
                id.facts = Some(without_image(facts_for(e, &id.image_ref)));
                id.origin = Some(Origin::Manifest);
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
                        .map(|e| without_image(facts_for(e, &id.image_ref)));
                    id.origin = Some(Origin::Manifest);
                }
            }
            Pgdata::Path(_) | Pgdata::Unknown if is_pg => pgdata_hidden = true,
            Pgdata::Unset if is_pg && c.container.has_env_from() => pgdata_hidden = true,
            _ => {}
        }
        if !annotated_here {
            let mut so_far = found;
            gather::sqlite(c, &mut g.sqlite, &mut unresolved, &mut so_far, limited);
            if limited && so_far.exceeded().is_some() {
                return Err(so_far);
            }
        }
        // The layout this container's environment, flags and working
        // directory pick, and variables that move it out of sight.
        let mut moved_by = None;
        if let Some(f) = id.facts.as_mut() {
            let entry = f.entry;
            applied_paths(entry, f, &id.words, c);
            moved_by = entry
                .unknown_with_env
                .iter()
                .find(|v| c.container.env(v).is_some())
                .cloned();
            if moved_by.is_some() {
                f.data_paths.clear();
            }
        }
        // A guess the manifest confirms (a flag, setting or PGDATA of the
        // family, or a mount where it keeps data) is judged as the
        // manifest shows; only an unconfirmed guess stays a guess.
        if matches!(id.origin, Some(Origin::Guess { .. }))
            && let (Some(f), Some(e)) = (id.facts.as_mut(), id.entry)
        {
            let named = !g.flags.is_empty() || !g.settings.is_empty() || g.pgdata.is_some();
            if named {
                id.origin = Some(Origin::Manifest);
            } else if let Some(mount) = gather::usual_mount(c, e, f) {
                // The data is where the mount is, unless the guessed
                // layout already puts it there (another version's
                // directory is no sign of this one's).
                if !f.data_paths.iter().any(|p| path_contains(mount, p)) {
                    f.data_paths = vec![mount.to_string()];
                }
                id.origin = Some(Origin::Manifest);
            }
        }
        let mut soft = None;
        if let Some(f) = &id.facts {
            if id.origin.is_some() {
                g.catalog = f.data_paths.clone();
                g.catalog_from_env = id.layout_from_env();
                if f.version_assumed_from_digest
                    && f.entry.family == "postgres"
                    && matches!(id.origin, Some(Origin::Image | Origin::ServerEnv { .. }))
                {
                    unresolved.push(Unresolved {
                        path: f.data_paths.first().cloned().unwrap_or_default(),
                        why: Why::Digest {
                            image: id.image.to_string(),
                            layout: f.mount_path.clone().unwrap_or_default(),
                        },
                    });
                }
            }
            let entry = f.entry;
            let durable = durable_images.iter().any(|d| d == &entry.name)
                || entry.durable_with.iter().any(|p| {
                    says(&id.words, p)
                        || config_maps.is_some_and(|maps| {
                            mounted_config_says(workload, c, maps, &id.words, p)
                        })
                });
            if !annotated_here {
                if entry.cache_like && !durable {
                    soft = Some(Soft::Cache);
                } else if let Some(mount) = gather::provisioned(c, entry) {
                    soft = Some(Soft::Provisioned { mount });
                }
            }
            g.explicit_cache =
                entry.family == "redis" && command::explicit_cache(&id.words) && !annotated_here;
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
            id.facts = Some(without_image(facts_for(e, &ImageRef::named(&e.name))));
            id.origin = Some(Origin::Manifest);
        }
        // The image runs a database the catalog knows, but nothing says
        // where this image keeps its data: a warning, never a silent allow.
        if let (Some(f), Some(origin)) = (&id.facts, &id.origin)
            && !annotated_here
            && !g.explicit_cache
            && !matches!(origin, Origin::Manifest)
            && paths.iter().all(|p| p.source == Source::Sqlite)
        {
            unresolved.push(Unresolved {
                path: String::new(),
                why: Why::UnknownDataPath {
                    family: f.entry.family.clone(),
                    guessed: matches!(origin, Origin::Guess { .. }),
                    hint: f.entry.data_hint.clone(),
                    moved_by: moved_by.clone(),
                },
            });
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
        let server = id.facts.is_some()
            && match &id.origin {
                Some(Origin::Image | Origin::ServerEnv { .. }) => true,
                Some(Origin::Manifest) => paths
                    .iter()
                    .any(|p| p.source.is_database() && p.source != Source::Sqlite),
                Some(Origin::Guess { .. }) | None => false,
            };
        for p in paths
            .iter()
            .map(|p| &p.path)
            .chain(unresolved.iter().map(|u| &u.path))
        {
            found.add(p);
        }
        out.push(DbContainer {
            container: *c,
            image: id.image,
            facts: id.facts,
            origin: id.origin,
            server,
            paths,
            unresolved,
            soft,
            pgdata_hidden,
            pgdata,
        });
    }
    // With every source counted: flags and the catalog add paths too.
    if limited && found.exceeded().is_some() {
        return Err(found);
    }
    Ok(out)
}

/// The entries of the `pvc-guard.io/data-paths` annotation.
pub fn data_path_entries(value: &str) -> impl Iterator<Item = &str> {
    value
        .split([';', ',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The `pvc-guard.io/data-paths` entries, normalised once, and the
/// containers each one reaches.
#[derive(Debug, Default)]
struct Annotated {
    paths: Vec<String>,
    /// By the container's position in `containers`: its entries.
    reaches: HashMap<usize, Vec<usize>>,
    /// Entries times the containers each reaches: the data paths the
    /// annotation makes, and their bytes.
    fan_out: Tally,
}

impl Annotated {
    /// The paths the annotation gives the container at `ci`.
    fn take(&mut self, ci: usize) -> Vec<String> {
        self.reaches
            .remove(&ci)
            .unwrap_or_default()
            .into_iter()
            .map(|e| self.paths[e].clone())
            .collect()
    }
}

/// Which container each `pvc-guard.io/data-paths` entry reaches, by the
/// container's position in `containers`. An entry without a container
/// name goes to the container that mounts it, else kubectl's default
/// container, else the first one. Linear: each entry looks up its own
/// parent directories in one index of mount paths.
fn annotated_paths(workload: &Workload, containers: &[ContainerRef<'_>]) -> Annotated {
    let mut out = Annotated::default();
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
    let (mount_paths, mounting_lists): (Vec<&str>, Vec<&Vec<usize>>) =
        mounted_at.iter().map(|(mp, at)| (*mp, at)).unzip();
    let mounts = PathIndex::new(mount_paths.into_iter().zip(0..));
    let default = workload
        .annotation(Annotation::DefaultContainer)
        .and_then(|n| by_name.get(n).copied());
    for item in data_path_entries(value) {
        let (targets, path) = match item.split_once('=') {
            Some((name, path)) => match by_name.get(name.trim()) {
                Some(&i) => (vec![i], normalize_path(path.trim())),
                None => continue,
            },
            None => {
                let path = normalize_path(item);
                if app.len() == 1 {
                    (app.clone(), path)
                } else {
                    let mut mounting: Vec<usize> = mounts
                        .containing(&path)
                        .flat_map(|list| mounting_lists[list].iter().copied())
                        .collect();
                    mounting.sort_unstable();
                    mounting.dedup();
                    if mounting.is_empty() {
                        mounting.extend(default.or(app.first().copied()));
                    }
                    (mounting, path)
                }
            }
        };
        let entry = out.paths.len();
        out.fan_out.paths += targets.len();
        out.fan_out.bytes += targets.len() * path.len();
        out.paths.push(path);
        for i in targets {
            out.reaches.entry(i).or_default().push(entry);
        }
    }
    out
}

/// The user a container starts as: its securityContext, the pod's, the
/// `pvc-guard.io/data-owner` annotation, then the catalog's image default.
pub fn start_user(workload: &Workload, db: &DbContainer<'_, '_>) -> Option<(i64, i64)> {
    let c = &db.container.container.security_context;
    let pod = &workload.pod.security_context;
    let uid = c.run_as_user.or(pod.run_as_user);
    let gid = c.run_as_group.or(pod.run_as_group);
    if let Some(uid) = uid {
        // The API server refuses ids outside 0..=2^31-1: such a pod's user
        // is unknown, never an owner for the init container to chown to.
        let valid = |id: i64| (0..=i64::from(i32::MAX)).contains(&id);
        if !valid(uid) || gid.is_some_and(|g| !valid(g)) {
            return None;
        }
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

/// How many entries the `pvc-guard.io/data-paths` annotation has, and the
/// bytes of its longest.
pub fn data_path_entry_count(workload: &Workload) -> (usize, usize) {
    workload
        .annotation(Annotation::DataPaths)
        .map_or((0, 0), |v| {
            data_path_entries(v).fold((0, 0), |(n, longest), e| (n + 1, longest.max(e.len())))
        })
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
}
