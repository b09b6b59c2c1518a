//! The policy configuration: the YAML file `--config FILE` reads, shared by
//! the CLI and the server. Every field has a default, so an empty file (or
//! no file) is the built-in policy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::policy::catalog::CatalogEntry;

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
}

impl Default for ClaimDefaults {
    fn default() -> Self {
        ClaimDefaults {
            size: "10Gi".into(),
            storage_class: None,
            access_mode: "ReadWriteOnce".into(),
            name_template: "{workload}-{container}-data".into(),
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
    /// `serve` runs the claim controller (as `--create-claims`); read at start.
    pub create_claims: bool,
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
        }
    }
}

impl Config {
    /// Parses the YAML config file's text. An empty document is the default.
    pub fn from_yaml(text: &str) -> anyhow::Result<Config> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let config: Config = serde_yaml_ng::from_str(text)?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        if crate::mutate::parse_quantity(&self.claims.size).is_none() {
            anyhow::bail!(
                "claims.size {:?} is not a storage quantity",
                self.claims.size
            );
        }
        if !matches!(
            self.claims.access_mode.as_str(),
            "ReadWriteOnce" | "ReadWriteOncePod" | "ReadWriteMany"
        ) {
            anyhow::bail!(
                "claims.accessMode {:?} must be ReadWriteOnce, ReadWriteOncePod or ReadWriteMany",
                self.claims.access_mode
            );
        }
        for entry in &self.catalog {
            entry.check()?;
        }
        Ok(())
    }
}
