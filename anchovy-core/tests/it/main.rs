//! Integration tests of the core, in process: routing between sources and sinks,
//! checkpoints against data, hooks and discovery, failures and panics.
#![allow(missing_docs)]

mod datastores;
mod pipeline;
mod workers;

use std::collections::BTreeMap;
use std::sync::Arc;

use anchovy_core::operator::OperatorKind;
use anchovy_core::results::SessionResult;
use anchovy_core::{
    CancellationToken, ConfigDoc, Connections, Layer, Operator, OperatorSpec, Registry, Session,
    Settings, Value,
};

/// A session over a temp datastore with `op` registered as `test.Op`.
pub struct Harness {
    pub dir: tempfile::TempDir,
}

static CURRENT: std::sync::Mutex<Option<Arc<dyn Operator>>> = std::sync::Mutex::new(None);

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

impl Harness {
    pub fn new() -> Harness {
        Harness {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn settings(&self, extra: &[(&str, serde_json::Value)]) -> Settings {
        let mut l = Layer::new("test");
        l.set("id", "it")
            .set("user", "tester")
            .set("operator_cls", "test.Op")
            .set("commit_interval", "0s");
        l.set("datastore", self.dir.path().to_str().unwrap());
        for (k, v) in extra {
            l.set(k, v.clone());
        }
        Settings::resolve(&[&l], &BTreeMap::new()).unwrap()
    }

    /// Runs `op` once with the config document `yaml`.
    pub async fn run(
        &self,
        op: Arc<dyn Operator>,
        yaml: &str,
        extra: &[(&str, serde_json::Value)],
    ) -> SessionResult {
        self.run_for(op, yaml, extra, None).await
    }

    /// [`Harness::run`], cancelled after `stop_after` (for service mode).
    pub async fn run_for(
        &self,
        op: Arc<dyn Operator>,
        yaml: &str,
        extra: &[(&str, serde_json::Value)],
        stop_after: Option<std::time::Duration>,
    ) -> SessionResult {
        // Specs take a plain fn, so hand the operator over through a static.
        let _guard = LOCK.lock().await;
        *CURRENT.lock().unwrap() = Some(op);
        let spec = OperatorSpec {
            name: "test.Op",
            description: "test",
            kind: OperatorKind::Downloader,
            connections: &[],
            table_options: &[],
            env_vars: &[],
            build: |_| Ok(CURRENT.lock().unwrap().clone().unwrap()),
        };
        let registry = Registry::new().with(spec);
        let doc = ConfigDoc::parse(yaml, "test.yaml").unwrap();
        let session = Session::open(&registry, self.settings(extra), doc, Connections::default())
            .await
            .unwrap();
        let stop = CancellationToken::new();
        if let Some(d) = stop_after {
            let s = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                s.cancel();
            });
        }
        session.run_with(stop, CancellationToken::new()).await
    }

    /// Committed rows by table.
    pub async fn committed(&self) -> BTreeMap<String, Vec<BTreeMap<String, Value>>> {
        let ds = anchovy_core::Datastore::open(self.dir.path().to_str().unwrap())
            .unwrap()
            .for_anchovy("tester", "it");
        let mut out: BTreeMap<String, Vec<BTreeMap<String, Value>>> = BTreeMap::new();
        for (tbl, b) in anchovy_core::commit::read_committed(&ds, 0).await.unwrap() {
            for rec in b.records() {
                out.entry(tbl.clone())
                    .or_default()
                    .push(rec.into_iter().collect());
            }
        }
        out
    }

    pub async fn checkpoints(&self) -> BTreeMap<String, serde_json::Value> {
        let ds = anchovy_core::Datastore::open(self.dir.path().to_str().unwrap())
            .unwrap()
            .for_anchovy("tester", "it");
        let (c, _) =
            anchovy_core::commit::load_checkpoints(&ds, anchovy_core::commit::LoadAs::SoleWriter)
                .await
                .unwrap();
        c.list("*").into_iter().map(|e| (e.key, e.value)).collect()
    }
}

static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `(task_type, tbl, status)` in execution order.
pub fn tasks(r: &SessionResult) -> Vec<(String, Option<String>, String)> {
    r.all_tasks()
        .into_iter()
        .map(|t| {
            (
                serde_json::to_value(t.task_type)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
                t.tbl.clone(),
                serde_json::to_value(t.status)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect()
}
