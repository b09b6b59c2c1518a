//! The policy configuration: the YAML file `--config FILE` reads, shared by
//! the CLI, the server and the claim controller. Every field has a default,
//! so an empty file (or no file) is the built-in policy. Data types only; a
//! leaf beside [`crate::k8s`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::k8s;
use crate::rule::Rule;

/// Why a config (or a catalog entry in it) is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("{0}")]
    Invalid(String),
}

/// What validation does with findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deny findings reject the object; warn findings become warnings.
    #[default]
    Enforce,
    /// Every finding becomes a warning.
    Warn,
    /// Nothing is returned; findings are only logged and counted.
    Audit,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "enforce" => Some(Mode::Enforce),
            "warn" => Some(Mode::Warn),
            "audit" => Some(Mode::Audit),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
            Mode::Audit => "audit",
        }
    }
}

/// What a rule's findings do, set per rule in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleSetting {
    /// The rule finds nothing, and the mutation fixes nothing for it.
    Off,
    /// Its findings are warnings.
    Warn,
    /// Its findings deny (in enforce mode).
    Deny,
}

/// How the mutation makes a new claim writable for the database's user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Permissions {
    /// Decide from the image and the pod: nothing, an init container or fsGroup.
    #[default]
    Auto,
    InitContainer,
    FsGroup,
    None,
}

/// Storage class of an inline CSI driver's volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CsiClass {
    Persistent,
    ReadOnlySource,
    Ephemeral,
    NodeLocal,
    Unknown,
}

/// The access modes a claim pvc-guard makes may have.
pub const ACCESS_MODES: [&str; 3] = ["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ClaimDefaults {
    /// Size of a claim the mutation introduces when nothing else says.
    pub size: String,
    /// Storage class; unset means the cluster's default class.
    pub storage_class: Option<String>,
    pub access_mode: String,
    /// Claim name; `{workload}` and `{container}` are replaced.
    pub name_template: String,
    /// The largest size a `pvc-guard.io/claim-size` annotation may ask for,
    /// and the claim controller will create.
    pub max_size: String,
    /// When non-empty, the only classes `pvc-guard.io/claim-storage-class`
    /// may name.
    pub allowed_storage_classes: Vec<String>,
    /// The access modes `pvc-guard.io/claim-access-mode` may ask for.
    pub allowed_access_modes: Vec<String>,
}

impl Default for ClaimDefaults {
    fn default() -> Self {
        ClaimDefaults {
            size: "10Gi".into(),
            storage_class: None,
            access_mode: "ReadWriteOnce".into(),
            name_template: "{workload}-{container}-data".into(),
            max_size: "16Ti".into(),
            allowed_storage_classes: Vec::new(),
            allowed_access_modes: vec!["ReadWriteOnce".into(), "ReadWriteOncePod".into()],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Config {
    pub mode: Mode,
    /// The mutating webhook fixes what it can; `false` turns it off.
    pub mutate: bool,
    pub permissions: Permissions,
    /// Image of the `pvc-guard-permissions` init container.
    pub permissions_image: String,
    pub claims: ClaimDefaults,
    /// Namespaces pvc-guard never looks at (besides the webhook's selector).
    pub excluded_namespaces: Vec<String>,
    /// When non-empty, `pvc-guard.io/allow-ephemeral` is honoured only here.
    pub opt_out_namespaces: Vec<String>,
    /// Cache-like images (by catalog entry name) that hold durable data here.
    pub durable_images: Vec<String>,
    /// Inline CSI drivers by name; merged over the built-in table.
    pub csi_drivers: BTreeMap<String, CsiClass>,
    /// Catalog entries that extend or (same `name`) replace built-in ones.
    pub catalog: Vec<CatalogEntry>,
    /// A claim controller (`pvc-guard controller`) runs in the cluster, so
    /// the claims a record names will be created: `serve` then does not
    /// warn that they are missing. Read by `serve` at start.
    pub create_claims: bool,
    /// Service accounts of database operators (`namespace/name`): objects
    /// they write with a controller ownerReference to a kind of their own
    /// are validated in warn mode and never mutated.
    pub operator_service_accounts: Vec<String>,
    /// Per rule id: `off`, `warn` or `deny`, over the rule's own severity.
    pub rules: BTreeMap<String, RuleSetting>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Enforce,
            mutate: true,
            permissions: Permissions::Auto,
            permissions_image: "docker.io/library/busybox:1.37".into(),
            claims: ClaimDefaults::default(),
            excluded_namespaces: Vec::new(),
            opt_out_namespaces: Vec::new(),
            durable_images: Vec::new(),
            csi_drivers: BTreeMap::new(),
            catalog: Vec::new(),
            create_claims: false,
            operator_service_accounts: Vec::new(),
            rules: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Parses the YAML config file's text. An empty document is the default.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let config: Config = serde_yaml_ng::from_str(text)?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |s: String| Err(ConfigError::Invalid(s));
        let c = &self.claims;
        for (key, size) in [("claims.size", &c.size), ("claims.maxSize", &c.max_size)] {
            if !k8s::parse_quantity(size).is_some_and(|q| q > 0.0) {
                return invalid(format!("{key} {size:?} is not a storage size such as 10Gi"));
            }
        }
        if k8s::parse_quantity(&c.size) > k8s::parse_quantity(&c.max_size) {
            return invalid(format!(
                "claims.size {:?} is larger than claims.maxSize {:?}",
                c.size, c.max_size
            ));
        }
        for mode in std::iter::once(&c.access_mode).chain(&c.allowed_access_modes) {
            if !ACCESS_MODES.contains(&mode.as_str()) {
                return invalid(format!(
                    "claims access mode {mode:?} must be one of {}",
                    ACCESS_MODES.join(", ")
                ));
            }
        }
        if !c.allowed_access_modes.contains(&c.access_mode) {
            return invalid(format!(
                "claims.accessMode {:?} is not in claims.allowedAccessModes",
                c.access_mode
            ));
        }
        if let Some(class) = &c.storage_class
            && !c.allowed_storage_classes.is_empty()
            && !c.allowed_storage_classes.contains(class)
        {
            return invalid(format!(
                "claims.storageClass {class:?} is not in claims.allowedStorageClasses"
            ));
        }
        for sa in &self.operator_service_accounts {
            match sa.split_once('/') {
                Some((ns, name)) if k8s::is_dns_label(ns) && k8s::is_dns_subdomain(name) => {}
                _ => {
                    return invalid(format!(
                        "operatorServiceAccounts entry {sa:?} is not namespace/name"
                    ));
                }
            }
        }
        let unknown: Vec<&str> = self
            .rules
            .keys()
            .filter(|id| Rule::from_id(id).is_none())
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return invalid(format!(
                "rules: unknown rule ids {}; the rules are {}",
                unknown.join(", "),
                Rule::ALL.map(Rule::id).join(", ")
            ));
        }
        for entry in &self.catalog {
            entry.check()?;
        }
        Ok(())
    }

    /// The setting of `rule`, if the config sets one.
    pub fn rule_setting(&self, rule: Rule) -> Option<RuleSetting> {
        self.rules.get(rule.id()).copied()
    }

    /// Is `username` (from `request.userInfo`) one of the operators' accounts?
    pub fn is_operator(&self, username: &str) -> bool {
        username
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(ns, name)| {
                self.operator_service_accounts
                    .iter()
                    .any(|sa| sa.split_once('/') == Some((ns, name)))
            })
    }
}

/// One entry of the image catalog (src/policy/catalog.yaml, or the config's
/// `catalog:` list).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CatalogEntry {
    pub name: String,
    pub repositories: Vec<String>,
    pub family: String,
    #[serde(default)]
    pub data_paths: Vec<String>,
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub mount_path: Option<String>,
    /// "uid:gid" the container starts as.
    #[serde(default)]
    pub user: Option<String>,
    /// "uid:gid" the server drops to after the entrypoint (documentation).
    #[serde(default)]
    pub runs_as: Option<String>,
    #[serde(default)]
    pub fixes_ownership: bool,
    #[serde(default)]
    pub server_commands: Vec<String>,
    #[serde(default)]
    pub distinctive_paths: Vec<String>,
    #[serde(default)]
    pub cache_like: bool,
    #[serde(default)]
    pub versioned_paths: Vec<VersionedPaths>,
    #[serde(default)]
    pub newest_major: Option<u32>,
    #[serde(default)]
    pub tag_version: TagVersion,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
    /// The image's VOLUMEs are not known: messages name none, and no
    /// VOLUME is assumed to shadow a mount.
    #[serde(default)]
    pub volumes_unknown: bool,
    /// The image's WORKDIR, against which relative `dataPaths` resolve
    /// when the container sets no `workingDir`.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// Layouts the image picks by an environment variable (`NAME=value`).
    #[serde(default)]
    pub variants: Vec<CatalogVariant>,
    /// Words without which the server keeps no data (`-js`).
    #[serde(default)]
    pub data_only_with: Vec<String>,
    /// Words that make a cache-like server durable (`--appendonly yes`).
    #[serde(default)]
    pub durable_with: Vec<String>,
    /// `KEY=/path` settings in command, args or env that name the data directory.
    #[serde(default)]
    pub config_keys: Vec<String>,
    /// Variables that move the data directory where pvc-guard cannot follow.
    #[serde(default)]
    pub unknown_with_env: Vec<String>,
    /// Mount paths whose presence means configuration is provisioned from
    /// mounts, so only state made at run time is lost: a warning.
    #[serde(default)]
    pub provisioned_by: Vec<String>,
    /// How this server is told where its data goes, for the message when
    /// the catalog cannot say.
    #[serde(default)]
    pub data_hint: Option<String>,
}

/// A layout an image picks by an environment variable.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CatalogVariant {
    /// `NAME=value`, compared with the literal `value` the container sets.
    pub env: String,
    pub data_paths: Vec<String>,
    #[serde(default)]
    pub mount_path: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionedPaths {
    pub until_major: u32,
    pub data_paths: Vec<String>,
    #[serde(default)]
    pub volumes: Vec<String>,
    pub mount_path: String,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub runs_as: Option<String>,
    #[serde(default)]
    pub fixes_ownership: Option<bool>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TagVersion {
    #[default]
    Leading,
    PgSuffix,
}

impl CatalogEntry {
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() || self.repositories.is_empty() || self.family.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "catalog entry {:?} needs name, repositories and family",
                self.name
            )));
        }
        for user in self
            .user
            .iter()
            .chain(self.versioned_paths.iter().filter_map(|v| v.user.as_ref()))
        {
            if parse_owner(user).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "catalog entry {:?}: user {user:?} is not uid[:gid]",
                    self.name
                )));
            }
        }
        for path in self
            .volumes
            .iter()
            .chain(&self.distinctive_paths)
            .chain(&self.provisioned_by)
            .chain(&self.working_dir)
            .chain(self.variants.iter().flat_map(|v| &v.data_paths))
        {
            if !path.starts_with('/') {
                return Err(ConfigError::Invalid(format!(
                    "catalog entry {:?}: {path:?} is not an absolute path",
                    self.name
                )));
            }
        }
        // A relative data path (`{--name|default}.etcd`) needs the image's WORKDIR.
        if let Some(path) = self
            .data_paths
            .iter()
            .find(|p| !p.starts_with('/') && self.working_dir.is_none())
        {
            return Err(ConfigError::Invalid(format!(
                "catalog entry {:?}: {path:?} is not an absolute path and the entry has no workingDir",
                self.name
            )));
        }
        if let Some(v) = self.variants.iter().find(|v| !v.env.contains('=')) {
            return Err(ConfigError::Invalid(format!(
                "catalog entry {:?}: variant env {:?} is not NAME=value",
                self.name, v.env
            )));
        }
        Ok(())
    }
}

/// "uid" or "uid:gid"; a missing gid is the uid.
pub fn parse_owner(s: &str) -> Option<(i64, i64)> {
    let (uid, gid) = match s.trim().split_once(':') {
        Some((u, g)) => (u.trim().parse().ok()?, g.trim().parse().ok()?),
        None => {
            let u: i64 = s.trim().parse().ok()?;
            (u, u)
        }
    };
    let valid = |id: i64| (0..=i64::from(i32::MAX)).contains(&id);
    (valid(uid) && valid(gid)).then_some((uid, gid))
}
