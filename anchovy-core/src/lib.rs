//! # anchovy-core: the anchovies SDK
//!
//! An *anchovy* is one small executor of a data pipeline: a **downloader** copies data
//! as-is from a source system into the **datastore**, an **uploader** merges what
//! downloaders committed into a database. This crate is everything they share and
//! nothing specific to SFTP, SQL or clouds:
//!
//! - [`config`]: settings layered CLI > env > config.yaml > defaults; the config doc;
//! - [`connection`]: `ACHVY_CNXN__<ID>__<ATTR>` connections, [`secret`] redaction;
//! - [`row`] and [`tbl`]: typed values, batches, tables and the typed NDJSON codec;
//! - [`stream`]: the [`Source`]/[`Sink`] traits and the pipeline of a table task;
//! - [`operator`]: the [`Operator`] trait and the [`Registry`];
//! - [`session`]: the lifecycle STARTUP -> XOPEN -> TBL... -> XCLOSE -> SHUTDOWN;
//! - [`datastore`], [`data`], [`commit`], [`checkpoint`], [`task`], [`tbl_store`],
//!   [`results`]: what is stored, and the commit record that makes it exactly-once.
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

pub mod buffer;
pub mod checkpoint;
pub mod commit;
pub mod config;
pub mod connection;
pub mod context;
pub mod data;
pub mod datastore;
pub mod destination;
pub mod env;
pub mod error;
pub mod failpoint;
pub mod lease;
pub mod metrics;
pub mod operator;
pub mod reject;
pub mod results;
pub mod row;
pub mod secret;
pub mod session;
pub mod stream;
pub mod task;
pub mod tbl;
pub mod tbl_store;

pub use async_trait::async_trait;
pub use chrono;
pub use config::{BatchPolicy, ConfigDoc, Layer, LogFormat, Settings};
pub use connection::{Connection, ConnectionSpec, Connections};
pub use context::{SessionCtx, TaskCtx};
pub use datastore::Datastore;
pub use error::{BoxError, Error, Result};
pub use operator::{Operator, OperatorKind, OperatorSpec, OptionDoc, Registry};
pub use row::{Batch, BatchBuilder, Schema, Value};
pub use session::Session;
pub use stream::{Emitter, Sink, Source};
pub use task::{Status, TaskLog, TaskType};
pub use tbl::{ColType, Tbl, TblSet};
pub use tokio_util::sync::CancellationToken;
