//! # anchovy-core: the anchovies SDK
//!
//! An *anchovy* is one small executor of a data pipeline: a **downloader** copies data
//! as-is from a source system into the **datastore**, an **uploader** merges what
//! downloaders committed into a database. This crate is everything they share and
//! nothing specific to SFTP, SQL or clouds:
//!
//! - [`settings`]: [`config`] (settings layered CLI > env > config.yaml > defaults;
//!   the config doc), [`connection`] (`ACHVY_CNXN__<ID>__<ATTR>`), [`secret`] redaction;
//! - [`model`]: [`row`] and [`tbl`] (typed values, batches, tables, the typed NDJSON
//!   codec), [`reject`] (bad records);
//! - [`pipeline`]: [`stream`] (the [`Source`]/[`Sink`] traits and the pipeline of a
//!   table task), [`operator`] (the [`Operator`] trait and the [`Registry`]),
//!   [`session`] (the lifecycle STARTUP -> XOPEN -> TBL... -> XCLOSE -> SHUTDOWN);
//! - [`store`]: [`datastore`], [`data`] (data file formats), [`commit`],
//!   [`checkpoint`], [`lease`], [`tbl_store`], [`results`]: what is stored, and the
//!   commit record that makes it exactly-once;
//! - [`http`]: the HTTP client of HTTP-based operators (retries, `Retry-After`,
//!   rate limits, secret-free URLs);
//! - [`destination`]: the uploader loop and the seam a destination implements.
//!
//! A minimal downloader:
//!
//! ```
//! use std::sync::Arc;
//! use anchovy_core::{async_trait, BoxError, Emitter, Operator, Source, TaskCtx, Value};
//!
//! struct Numbers;
//!
//! #[async_trait]
//! impl Source for Numbers {
//!     fn tables(&self) -> &str { "numbers" }
//!     async fn run(&self, ctx: &TaskCtx, out: &mut Emitter) -> Result<(), BoxError> {
//!         let start = ctx.checkpoint("numbers.next").and_then(|v| v.as_i64()).unwrap_or(0);
//!         for i in start..start + 10 {
//!             out.push([("n", Value::Int(i))]).await?;
//!         }
//!         out.checkpoint("numbers.next", start + 10).await?; // committed with the rows
//!         Ok(())
//!     }
//! }
//!
//! struct NumbersDownloader;
//! impl Operator for NumbersDownloader {
//!     fn sources(&self) -> Vec<Arc<dyn Source>> { vec![Arc::new(Numbers)] }
//! }
//! ```

pub mod destination;
pub mod error;
pub mod failpoint;
pub mod http;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod settings;
pub mod store;
pub mod testutil;

// The modules under their short paths (`anchovy_core::row`, `crate::commit`, ...).
pub use model::{reject, row, tbl};
pub use pipeline::{buffer, context, operator, options, session, stream, task, worker};
pub use settings::{config, connection, env, secret};
pub use store::{checkpoint, commit, data, datastore, gc, lease, original, results, tbl_store};

pub use async_trait::async_trait;
pub use chrono;
pub use config::{BatchPolicy, ConfigDoc, Layer, LogFormat, Settings};
pub use connection::{Connection, ConnectionSpec, Connections};
pub use context::{SessionCtx, TaskCtx};
pub use datastore::Datastore;
pub use error::{BoxError, Error, Result};
pub use operator::{Operator, OperatorKind, OperatorSpec, Registry};
pub use options::{OptionDoc, OptionGroup, TableOptions};
pub use row::{Batch, BatchBuilder, Schema, Value};
pub use session::Session;
pub use stream::{Emitter, Sink, Source};
pub use task::{Status, TaskLog, TaskType};
pub use tbl::{ColType, Tbl, TblSet};
pub use tokio_util::sync::CancellationToken;
