//! pvc-guard: a Kubernetes admission webhook that keeps database data off
//! storage that dies with the pod.
//!
//! A pure core ([`policy`], [`mutate`], [`admission`]) and a thin shell
//! ([`server`], [`cli`], [`cluster`]) around it.

pub mod admission;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod config_file;
pub mod convert;
pub mod flags;
pub mod install;
pub mod k8s;
pub mod laws;
pub mod logging;
pub mod manifest;
pub mod model;
pub mod mutate;
pub mod plain_http;
pub mod policy;
pub mod record;
pub mod report;
pub mod rule;
pub mod server;
pub mod telemetry;
