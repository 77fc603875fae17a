//! Operators and the registry.
//!
//! An [`Operator`] is what `anchovy start -op <name>` runs: it provides [`Source`]s,
//! optional [`Sink`]s, `on_task` hooks for each phase and optional table discovery. An
//! [`OperatorSpec`] describes one operator (name, description, connections, table
//! options) and builds it; a [`Registry`] is the explicit list of specs a binary knows.

use std::sync::Arc;

use async_trait::async_trait;

use crate::connection::ConnectionSpec;
use crate::context::{SessionCtx, TaskCtx};
use crate::error::{BoxError, Error, Result};
pub use crate::options::{OptionDoc, OptionGroup};
use crate::stream::{Sink, Source};
use crate::tbl::Tbl;

/// A downloader or uploader.
#[async_trait]
pub trait Operator: Send + Sync {
    /// The sources, in order. A table uses the first source whose wildcard matches it.
    fn sources(&self) -> Vec<Arc<dyn Source>>;

    /// The sinks, in routing order (see [`crate::stream`]).
    fn sinks(&self) -> Vec<Arc<dyn Sink>> {
        Vec::new()
    }

    /// Called at each phase (`ctx.task_type`): STARTUP, XOPEN, XCLOSE, ERROR, SHUTDOWN
    /// (the README's `@on_task`). XCLOSE and SHUTDOWN always run; ERROR only when an
    /// unhandled error stopped processing. An error here fails that task.
    async fn on_task(&self, _ctx: &TaskCtx) -> Result<(), BoxError> {
        Ok(())
    }

    /// Lists every table the source system has (dynamic discovery), or `None` to use
    /// only the tables of config.yaml. Config entries win over discovered ones.
    async fn discover_tbls(&self, _ctx: &TaskCtx) -> Result<Option<Vec<Tbl>>, BoxError> {
        Ok(None)
    }

    /// True when a config entry stands for the tables discovery expands it to (a
    /// selector with `include:` patterns, a spec file), not for a table of its name: no
    /// "not discovered" warning is given for it.
    fn is_selector(&self, _cfg: &Tbl) -> bool {
        false
    }

    /// What the source offers (`anchovy tables --discover`): every table the operator
    /// could read, named as the source names it, with its key (`unique_by`), column
    /// types and any facts worth showing in its options (a row estimate); `None` when
    /// the operator cannot list its source.
    async fn catalog(&self, _ctx: &SessionCtx) -> Result<Option<Vec<Tbl>>, BoxError> {
        Ok(None)
    }

    /// The reader that reads a table's quarantined records again with its current
    /// options (`anchovy rejects replay`); `None` when the operator quarantines
    /// nothing.
    fn record_reader(
        &self,
        _tbl: &Tbl,
    ) -> Result<Option<Arc<dyn crate::reject::RecordReader>>, BoxError> {
        Ok(None)
    }

    /// Into how many parts a table's work splits ([`crate::worker::Part`]): each part
    /// is a task of its own (a unit a worker claims; in one process parts run side by
    /// side up to `max_concurrency`), and the source reads only its part
    /// ([`TaskCtx::part`]). 1 (the default): the table is one unit.
    fn parts(&self, _tbl: &Tbl) -> u32 {
        1
    }

    /// Operator-specific health checks (`anchovy healthcheck`): `(name, result)`.
    async fn healthcheck(&self, _ctx: &SessionCtx) -> Vec<(String, Result<String, String>)> {
        Vec::new()
    }
}

pub use crate::context::OperatorKind;

/// Builds an operator once its connections are checked.
pub type BuildFn = fn(&Arc<SessionCtx>) -> Result<Arc<dyn Operator>>;

/// One registered operator.
#[derive(Clone)]
pub struct OperatorSpec {
    /// The name used with `-op` (`files.CsvDownloader`).
    pub name: &'static str,
    /// One paragraph for `--help` and `anchovy plugins`.
    pub description: &'static str,
    /// Downloader or uploader.
    pub kind: OperatorKind,
    /// The connections it needs (checked at startup).
    pub connections: &'static [ConnectionSpec],
    /// The table options it reads beyond those every operator of its kind reads
    /// ([`Registry::table_options`]), each group declared once with
    /// [`table_options!`](crate::table_options).
    pub table_options: &'static [OptionGroup],
    /// Environment variables it reads beyond the settings (optional connections,
    /// credentials), for `anchovy plugins`; `key` is the variable.
    pub env_vars: &'static [OptionDoc],
    /// The constructor.
    pub build: BuildFn,
}

impl std::fmt::Debug for OperatorSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorSpec")
            .field("name", &self.name)
            .finish()
    }
}

/// The operators a binary knows, in registration order.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    specs: Vec<OperatorSpec>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds an operator (builder style).
    ///
    /// # Panics
    /// When the name is already registered (a programming error).
    pub fn with(mut self, spec: OperatorSpec) -> Registry {
        assert!(
            self.specs.iter().all(|s| s.name != spec.name),
            "operator {} registered twice",
            spec.name
        );
        self.specs.push(spec);
        self
    }

    /// All specs.
    pub fn specs(&self) -> &[OperatorSpec] {
        &self.specs
    }

    /// Every option group `spec` reads: the core's table keys, the spec's own groups,
    /// and those every operator of its kind reads (bad records for downloaders, load
    /// units and rejects for uploaders). `anchovy plugins` prints these.
    pub fn table_options(spec: &OperatorSpec) -> Vec<OptionGroup> {
        let kind = match spec.kind {
            OperatorKind::Downloader => crate::reject::OPTIONS,
            OperatorKind::Uploader => crate::destination::OPTIONS,
        };
        std::iter::once(crate::tbl::OPTIONS)
            .chain(spec.table_options.iter().copied())
            .chain([kind])
            .collect()
    }

    /// The keys of [`Registry::table_options`] of `spec`, in order, once each.
    fn own_keys(spec: &OperatorSpec) -> Vec<&'static str> {
        let mut keys: Vec<&'static str> = Vec::new();
        let groups = Registry::table_options(spec);
        let all = groups
            .iter()
            .flat_map(|g| g.options.iter().map(|o| o.key))
            .chain(crate::tbl::CORE_KEYS.iter().copied());
        for k in all {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        keys
    }

    /// Every table option key some registered operator reads, plus the core keys.
    pub fn table_option_keys(&self) -> Vec<&'static str> {
        let mut keys: Vec<&'static str> = self.specs.iter().flat_map(Registry::own_keys).collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Refuses `tbls:` keys no registered operator reads (a typo such as `delimter:`),
    /// at startup, naming the table and the closest key `spec` reads. Keys of other
    /// operators pass, so one config.yaml can serve a downloader and its uploader.
    ///
    /// # Errors
    /// [`Error::UnknownKey`] (exit 2).
    pub fn check_table_options(&self, spec: &OperatorSpec, doc: &crate::ConfigDoc) -> Result<()> {
        let known = self.table_option_keys();
        let own = Registry::own_keys(spec);
        for (name, tbl) in &doc.tbls {
            if let Some(key) = tbl.options.keys().find(|k| !known.contains(&k.as_str())) {
                return Err(Error::UnknownKey {
                    key: key.clone(),
                    place: format!(
                        "tbls.{name} of {} (table options of {}: {})",
                        doc.origin,
                        spec.name,
                        own.join(", ")
                    ),
                    suggestion: crate::config::closest(key, own.iter().copied())
                        .or_else(|| crate::config::closest(key, known.iter().copied())),
                });
            }
        }
        Ok(())
    }

    /// The config document's tables as `spec` sees them: options that only other
    /// registered operators read are left out, so one config.yaml serves a downloader
    /// and its uploader (`load_rejects:` does not trouble the CSV reader, `delimiter:`
    /// not the uploader).
    pub fn own_tables(&self, spec: &OperatorSpec, doc: &crate::ConfigDoc) -> crate::TblSet {
        let own = Registry::own_keys(spec);
        let foreign: Vec<&str> = self
            .table_option_keys()
            .into_iter()
            .filter(|k| !own.contains(k))
            .collect();
        crate::TblSet::new(doc.tbls.values().map(|t| {
            let mut t = t.clone();
            t.options.retain(|k, _| !foreign.contains(&k.as_str()));
            t
        }))
    }

    /// Finds an operator by name. The original tool's `core.` prefix
    /// (`core.sql.Uploader`) and case differences are accepted.
    ///
    /// # Errors
    /// [`Error::UnknownOperator`] listing the known names.
    pub fn find(&self, name: &str) -> Result<&OperatorSpec> {
        let n = name.trim();
        let n = n.strip_prefix("core.").unwrap_or(n);
        let n = n.strip_prefix("anchovies.plugins.").unwrap_or(n);
        self.specs
            .iter()
            .find(|s| s.name == n)
            .or_else(|| self.specs.iter().find(|s| s.name.eq_ignore_ascii_case(n)))
            .ok_or_else(|| Error::UnknownOperator {
                name: name.to_string(),
                known: self.specs.iter().map(|s| s.name.to_string()).collect(),
            })
    }
}
