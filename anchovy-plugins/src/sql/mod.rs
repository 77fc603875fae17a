//! `sql.Uploader`: merges what upstream downloaders committed into PostgreSQL,
//! MySQL/MariaDB or SQLite, every committed row exactly once.
//!
//! - **Tables.** One TBL task per upstream table, named `<upstream id>.<table>`, from
//!   the upstream `$tables/` merged with `tbls:` of config.yaml (an entry named
//!   `<table>` applies to that table of every upstream; `<upstream>.<table>` to one).
//! - **Where.** Upstream id `U` loads into schema `U` (PostgreSQL), database `U` (MySQL)
//!   or tables prefixed `U__` (SQLite). `ACHVY_CNXN__SCHEMAS__<U>=<name>` renames it;
//!   for any user but `prod` the schema gets a `__<user>` suffix.
//! - **Exactly once.** The position (last upstream commit loaded) of each target table
//!   lives in `_anchovies_positions` in the target and advances in the same transaction
//!   as the merge. It is keyed by the target table, not the uploader id: two uploaders
//!   loading one upstream into the same target share it (the second loads only what
//!   the first has not; at the same moment, one waits for the other's transaction and
//!   then stops that table). Commits are loaded in order; files not in a commit are
//!   never read.
//! - **Merge.** no keys: append; `unique_by`: upsert; `+ sort_by`: the first row by
//!   `sort_by` wins, within the data and against stored rows; `set_by`: the incoming
//!   sets replace the stored ones. Everything is staged (COPY on PostgreSQL) and merged
//!   with set-based statements.

pub mod collate;
pub mod copy_binary;
pub mod db;
pub mod dialect;
mod load;
pub mod source;
pub mod stage;

use std::sync::Arc;

use anchovy_core::destination;
use anchovy_core::operator::OperatorKind;
use anchovy_core::{
    BoxError, Emitter, Operator, OperatorSpec, OptionDoc, SessionCtx, Source, TaskCtx, TaskType,
    Tbl, async_trait,
};

use self::db::Db;
use self::load::SqlDestination;
use crate::error::PluginError;

pub use anchovy_core::destination::UNIT_ROWS;

/// The registry entry.
pub const SPEC: OperatorSpec = OperatorSpec {
    name: "sql.Uploader",
    description: "Merges the tables of upstream downloaders (-U) from the datastore into PostgreSQL, MySQL/MariaDB or SQLite (ACHVY_CNXN__DB__URI, required; sqlite:// alone is the embedded SQLite file in the datastore), every committed row exactly once.",
    kind: OperatorKind::Uploader,
    connections: &[anchovy_core::ConnectionSpec {
        id: "db",
        required_any: &["uri"],
        optional: &[],
        description: "the target database: postgres://, mysql:// or sqlite:// URL (URL is accepted for URI)",
    }],
    env_vars: &[
        OptionDoc {
            key: "ACHVY_CNXN__DB__URI",
            doc: "postgres://, mysql:// or sqlite:// URL of the target (required; `ACHVY_CNXN__DB__URL` is accepted too); `sqlite://` alone means the embedded SQLite file <datastore>/<user>/warehouse.sqlite",
        },
        OptionDoc {
            key: "ACHVY_CNXN__SCHEMAS__<UPSTREAM>",
            doc: "load upstream <UPSTREAM> into this schema instead of its id",
        },
    ],
    table_options: &[anchovy_core::OptionGroup {
        title: "",
        options: <load::SqlOptions as anchovy_core::TableOptions>::DOCS,
    }],
    build: |_| Ok(Arc::new(Uploader::default())),
};

/// The operator.
#[derive(Default)]
pub struct Uploader {
    db: Arc<tokio::sync::OnceCell<Db>>,
}

/// The target URL: `ACHVY_CNXN__DB__URI` (required; the startup check names it when
/// missing). `sqlite://` (or `sqlite:`) alone opts in to the embedded default, a SQLite
/// file next to the datastore: `<datastore>/<user>/warehouse.sqlite`.
pub fn target_url(ctx: &SessionCtx) -> Result<String, PluginError> {
    let u = ctx.connection("db")?.require("uri")?;
    if !matches!(u.trim(), "sqlite://" | "sqlite:" | "sqlite") {
        return Ok(u.to_string());
    }
    let loc = ctx.datastore.location();
    let root = loc.strip_prefix("file://").ok_or_else(|| PluginError::Option {
        key: "ACHVY_CNXN__DB__URI".into(),
        message: format!("`sqlite://` alone is a SQLite file in a local datastore, and the datastore {loc} is not local; give the file: ACHVY_CNXN__DB__URI=sqlite:///path/to/warehouse.sqlite"),
    })?;
    let dir = std::path::Path::new(root).join(&ctx.settings.user);
    std::fs::create_dir_all(&dir).map_err(|source| PluginError::Io {
        op: "create",
        path: dir.display().to_string(),
        source,
    })?;
    Ok(format!(
        "sqlite://{}",
        dir.join("warehouse.sqlite").display()
    ))
}

/// The schema (or SQLite prefix) of an upstream anchovy: empty under
/// `sql_no_schema_name` (the database's default schema, plain table names).
pub fn schema_for(ctx: &SessionCtx, upstream: &str) -> String {
    if ctx.settings.sql_no_schema_name {
        return String::new();
    }
    let base = ctx
        .connections
        .get("schemas")
        .and_then(|c| c.get(upstream))
        .map(str::to_string)
        .unwrap_or_else(|| upstream.to_string());
    if ctx.settings.user == "prod" {
        base
    } else {
        format!("{base}__{}", ctx.settings.user)
    }
}

/// Connects once per session (at XOPEN) and creates the position table.
async fn connect_once<'a>(
    cell: &'a tokio::sync::OnceCell<Db>,
    ctx: &SessionCtx,
) -> Result<&'a Db, PluginError> {
    cell.get_or_try_init(|| async {
        let url = target_url(ctx)?;
        let db = Db::connect(&url).await?;
        let create = db.dialect().create_positions();
        if let Err(e) = db.exec(&create).await {
            // Another uploader created it at the same moment: it exists now.
            if !e.is_concurrent_ddl() {
                return Err(e);
            }
        }
        db.check_positions().await?;
        tracing::info!(target = %db::display_url(&url), "connected to the target database");
        Ok::<Db, PluginError>(db)
    })
    .await
}

#[async_trait]
impl Operator for Uploader {
    fn sources(&self) -> Vec<Arc<dyn Source>> {
        vec![Arc::new(LoadSource {
            db: self.db.clone(),
        })]
    }

    async fn on_task(&self, ctx: &TaskCtx) -> Result<(), BoxError> {
        match ctx.task_type {
            TaskType::Xopen => {
                connect_once(&self.db, &ctx.session).await?;
            }
            // A timeout, a signal or a failure stopped the batch: its futures are gone,
            // but the statements they sent may still wait on a lock in the server.
            TaskType::Error => {
                if let Some(db) = self.db.get() {
                    db.cancel_running().await;
                }
            }
            TaskType::Shutdown => {
                if let Some(db) = self.db.get() {
                    db.close().await;
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn discover_tbls(&self, ctx: &TaskCtx) -> Result<Option<Vec<Tbl>>, BoxError> {
        Ok(Some(destination::discover(ctx).await?))
    }

    async fn healthcheck(&self, ctx: &SessionCtx) -> Vec<(String, Result<String, String>)> {
        let mut out = Vec::new();
        match connect_once(&self.db, ctx).await {
            Ok(db) => match db.exec("SELECT 1").await {
                Ok(_) => out.push((
                    "target database".into(),
                    Ok(format!("{:?} reachable", db.dialect())),
                )),
                Err(e) => out.push((
                    "target database".into(),
                    Err(anchovy_core::error::render_chain(&e)),
                )),
            },
            Err(e) => out.push((
                "target database".into(),
                Err(anchovy_core::error::render_chain(&e)),
            )),
        }
        out.extend(destination::upstream_health(ctx).await);
        out
    }
}

/// The uploader's only source: it loads its table into the target and emits nothing
/// but its position (mirrored to `$checkpoints` as `<upstream>.<table>`).
struct LoadSource {
    db: Arc<tokio::sync::OnceCell<Db>>,
}

#[async_trait]
impl Source for LoadSource {
    async fn run(&self, ctx: &TaskCtx, out: &mut Emitter) -> Result<(), BoxError> {
        let db = connect_once(&self.db, &ctx.session).await?;
        destination::load(&SqlDestination { db }, ctx, out).await
    }
}
