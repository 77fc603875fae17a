//! Settings: CLI > environment > config.yaml `config:` map > defaults, in one combine step.
//!
//! Each source is turned into a [`Layer`] (canonical key -> JSON value); [`Settings::resolve`]
//! takes, for every known key, the value of the first layer that has it and parses it
//! once. Unknown keys in `config:` are errors that suggest the closest known key.
//! The config document itself ([`ConfigDoc`]) is YAML or JSON with two top-level maps:
//! `config:` (these settings) and `tbls:` (tables).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::tbl::{Tbl, TblSet};

/// What a failing table does to its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum BatchPolicy {
    /// Log the table as ERR and let the others finish (default).
    Continue,
    /// Stop the batch at the first failed table.
    Raise,
}

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (default).
    Text,
    /// One JSON object per line.
    Json,
}

mod doc;
mod keys;
mod layer;
mod setting;
#[cfg(test)]
mod tests;
mod values;

pub use self::doc::ConfigDoc;
pub use self::keys::{SETTINGS, STORE_CLS, Settings};
pub use self::layer::{Layer, closest};
pub use self::setting::{Flag, Kind, Resolver, Setting, Unset, Value, readme_table};
use self::values::*;
pub use self::values::{MAX_DURATION, human_duration, parse_duration};

/// The scheduler this process runs under, when its environment says so (the variables
/// Kubernetes, ECS and AWS Batch set in every container): where a host name is a pod's
/// or a task's, new on every run.
pub fn scheduler(vars: &BTreeMap<String, String>) -> Option<&'static str> {
    [
        ("KUBERNETES_SERVICE_HOST", "Kubernetes"),
        ("ECS_CONTAINER_METADATA_URI_V4", "Amazon ECS"),
        ("ECS_CONTAINER_METADATA_URI", "Amazon ECS"),
        ("AWS_BATCH_JOB_ID", "AWS Batch"),
    ]
    .into_iter()
    .find(|(v, _)| vars.contains_key(*v))
    .map(|(_, engine)| engine)
}

/// The outcomes `exit_zero_on` may name, and their exit codes.
pub const EXIT_ZERO_OUTCOMES: &[(&str, u8)] = &[
    ("locked", crate::error::exit::LOCKED),
    ("pending", crate::error::exit::PENDING),
];

impl Settings {
    /// Combines layers, earlier layers winning (pass CLI, env, file in that order), and
    /// fills defaults: every declared setting ([`SETTINGS`]) parsed and range-checked
    /// once, where it is read. `vars` supplies `HOME`/`USER` for the defaults.
    ///
    /// # Errors
    /// [`Error::Config`] naming the key, its origin and the accepted values.
    pub fn resolve(layers: &[&Layer], vars: &BTreeMap<String, String>) -> Result<Settings> {
        let settings = Settings::from_resolver(&Resolver::new(layers, vars))?;
        for o in &settings.exit_zero_on {
            if !EXIT_ZERO_OUTCOMES.iter().any(|(n, _)| n == o) {
                return Err(Error::config(
                    "exit_zero_on",
                    format!("`{o}` is not an outcome; use locked (exit 5) and/or pending (exit 6)"),
                ));
            }
        }
        // A SAS signature or a password in a store URL is a secret like any other.
        for url in [
            &settings.datastore,
            &settings.task_store_cls,
            &settings.tbl_store_cls,
        ] {
            for s in crate::connection::uri_secrets(url) {
                crate::secret::register(&s);
            }
        }
        Ok(settings)
    }

    /// Service mode (`-S`, `is_task_executor: false`): loop batches until stopped.
    pub fn service(&self) -> bool {
        !self.is_task_executor
    }

    /// The process exit code for a run's `code`: 0 where `exit_zero_on` names its
    /// outcome, the code itself otherwise.
    pub fn exit_code(&self, code: u8) -> u8 {
        let soft = EXIT_ZERO_OUTCOMES
            .iter()
            .any(|(n, c)| *c == code && self.exit_zero_on.iter().any(|o| o == n));
        if soft { crate::error::exit::OK } else { code }
    }

    /// This process as a worker (`workers`), or `None` for the single-process default.
    ///
    /// # Errors
    /// [`Error::Config`] when `workers` and `worker_num` do not fit together.
    pub fn worker(&self) -> Result<Option<crate::worker::Worker>> {
        crate::worker::Worker::from_settings(self)
    }
}
