//! Sources, sinks and the pipeline that connects them inside one table task.
//!
//! A [`Source`] produces rows for the tables matching its wildcard; a [`Sink`] consumes
//! batches of the tables matching its wildcard and may emit batches (for the same or
//! other tables). Routing, for every batch a node emits:
//!
//! 1. it goes to every sink declared *after* that node whose wildcard matches the
//!    batch's table (the source comes before all sinks): one source can feed several
//!    sinks, and a sink can feed later sinks (chains); cycles are impossible;
//! 2. a batch no later sink consumes goes to the default sink, which writes the
//!    datastore. A sink that wants its input kept re-emits it.
//!
//! The source runs concurrently with the rest of the pipeline and hands batches over a
//! bounded channel ([`CHANNEL_BATCHES`] batches of `batch_size` rows), so a fast source
//! waits for a slow writer and memory stays flat. Sinks run inline, one batch at a
//! time, so when a checkpoint marker arrives every batch emitted before it has already
//! reached the default sink: that is why a checkpoint can never get ahead of the data.
//!
//! **Cancellation**: a task is cancelled by dropping its future (timeout, RAISE, signal).
//! Sources must not hold work outside their future; blocking readers must stop when
//! their channel's receiver is gone ([`Emitter`] sends fail with
//! [`Error::Cancelled`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::context::TaskCtx;
use crate::error::{BoxError, Error, Result};
use crate::row::{Batch, BatchBuilder, Value};

/// Batches that may wait in the channel between a source and the pipeline.
pub const CHANNEL_BATCHES: usize = 2;

/// What travels from a source (or sink) to the next stage.
#[derive(Debug)]
pub enum Msg {
    /// Rows for one table.
    Batch(Batch),
    /// Checkpoint updates covering every row emitted before (`None` deletes a key).
    Checkpoint(BTreeMap<String, Option<serde_json::Value>>),
}

/// Produces rows for tables.
///
/// Contract: `run` is called once per table task, for a table matching [`Source::tables`]
/// (never put secrets into checkpoints: they are stored exactly as given)
/// (the task's table is `ctx.tbl()`). It emits rows with `out.push(...)` /
/// `out.send_batch(...)` and records its position with `out.checkpoint(...)` after the
/// rows it covers; the position is committed together with those rows. Returning an
/// error fails the table task and discards everything emitted since the last commit.
#[async_trait]
pub trait Source: Send + Sync {
    /// A wildcard (`*`, `sales`, `sales_*`) of the tables this source produces.
    fn tables(&self) -> &str {
        "*"
    }

    /// Produces the rows of `ctx.tbl()`.
    async fn run(&self, ctx: &TaskCtx, out: &mut Emitter) -> Result<(), BoxError>;
}

/// Consumes batches and may emit batches.
///
/// Contract: `write` is called with each batch of a table matching [`Sink::tables`], in
/// order. Anything it emits through `out` is routed on (see the module docs). `flush` is
/// called before every checkpoint commit and at the end of the task: a sink that buffers
/// rows across calls must emit or persist them there, or a crash may lose them. A sink is
/// shared by concurrent table tasks: keep per-table state keyed by `ctx.tbl_name()`.
#[async_trait]
pub trait Sink: Send + Sync {
    /// A wildcard of the tables this sink consumes.
    fn tables(&self) -> &str;

    /// Consumes one batch.
    async fn write(&self, ctx: &TaskCtx, batch: Batch, out: &mut Emitter) -> Result<(), BoxError>;

    /// Emits or persists anything buffered.
    async fn flush(&self, _ctx: &TaskCtx, _out: &mut Emitter) -> Result<(), BoxError> {
        Ok(())
    }
}

enum Target {
    Channel(tokio::sync::mpsc::Sender<Msg>),
    Collect(Vec<Msg>),
}

/// Where a source or sink emits rows and checkpoints. Rows are grouped into batches of
/// `batch_size` per table before they travel.
pub struct Emitter {
    default_table: Arc<str>,
    builders: Vec<BatchBuilder>,
    batch_size: usize,
    target: Target,
    ctx: Arc<TaskCtx>,
}

impl Emitter {
    pub(crate) fn channel(ctx: Arc<TaskCtx>, tx: tokio::sync::mpsc::Sender<Msg>) -> Emitter {
        Emitter::new(ctx, Target::Channel(tx))
    }

    pub(crate) fn collecting(ctx: Arc<TaskCtx>) -> Emitter {
        Emitter::new(ctx, Target::Collect(Vec::new()))
    }

    fn new(ctx: Arc<TaskCtx>, target: Target) -> Emitter {
        Emitter {
            default_table: Arc::from(ctx.tbl_name()),
            builders: Vec::new(),
            batch_size: ctx.session.settings.batch_size,
            target,
            ctx,
        }
    }

    fn builder(&mut self, table: &str) -> usize {
        match self.builders.iter().position(|b| b.table() == table) {
            Some(i) => i,
            None => {
                self.builders.push(BatchBuilder::new(table.to_string()));
                self.builders.len() - 1
            }
        }
    }

    /// Emits a row for the task's table, given as `(column, value)` pairs.
    ///
    /// # Errors
    /// [`Error::Cancelled`] when the pipeline has stopped.
    pub async fn push<K: AsRef<str>>(
        &mut self,
        pairs: impl IntoIterator<Item = (K, Value)>,
    ) -> Result<()> {
        let t = self.default_table.clone();
        self.push_to(&t, pairs).await
    }

    /// Emits a row for another table.
    ///
    /// # Errors
    /// [`Error::Cancelled`] when the pipeline has stopped.
    pub async fn push_to<K: AsRef<str>>(
        &mut self,
        table: &str,
        pairs: impl IntoIterator<Item = (K, Value)>,
    ) -> Result<()> {
        let i = self.builder(table);
        self.builders[i].push_pairs(pairs);
        if self.builders[i].len() >= self.batch_size {
            let b = self.builders[i].take();
            self.send(Msg::Batch(b)).await?;
        }
        Ok(())
    }

    /// Emits a whole batch (after any rows of its table still buffered here); a batch
    /// of fewer than half `batch_size` rows joins the rows buffered here instead.
    ///
    /// # Errors
    /// [`Error::Cancelled`] when the pipeline has stopped.
    pub async fn send_batch(&mut self, batch: Batch) -> Result<()> {
        if batch.rows.is_empty() {
            return Ok(());
        }
        let i = self.builder(&batch.table);
        // Small batches (an API's pages, a few rows at a time) travel together: one
        // message per `batch_size` rows, not one per page.
        if batch.rows.len() < self.batch_size / 2 {
            self.builders[i].append(batch);
            if self.builders[i].len() >= self.batch_size {
                let b = self.builders[i].take();
                self.send(Msg::Batch(b)).await?;
            }
            return Ok(());
        }
        if !self.builders[i].is_empty() {
            let b = self.builders[i].take();
            self.send(Msg::Batch(b)).await?;
        }
        self.send(Msg::Batch(batch)).await
    }

    /// Records a checkpoint covering every row emitted so far. It is committed with
    /// those rows (never before them); `ctx.checkpoint(key)` sees it at once.
    ///
    /// # Errors
    /// [`Error::Cancelled`] when the pipeline has stopped.
    pub async fn checkpoint(&mut self, key: &str, value: impl serde::Serialize) -> Result<()> {
        let v =
            serde_json::to_value(value).map_err(|e| Error::json(format!("checkpoint {key}"), e))?;
        self.checkpoints([(key.to_string(), Some(v))].into()).await
    }

    /// Deletes a checkpoint, in-band like [`Emitter::checkpoint`]: the deletion is
    /// committed with the rows emitted before it, and `ctx.checkpoint(key)` sees `None`
    /// at once.
    ///
    /// # Errors
    /// [`Error::Cancelled`] when the pipeline has stopped.
    pub async fn forget(&mut self, key: &str) -> Result<()> {
        self.checkpoints([(key.to_string(), None)].into()).await
    }

    async fn checkpoints(
        &mut self,
        updates: BTreeMap<String, Option<serde_json::Value>>,
    ) -> Result<()> {
        self.flush().await?;
        self.ctx.stage_checkpoints(&updates);
        self.send(Msg::Checkpoint(updates)).await
    }

    /// Sends every buffered row on.
    ///
    /// # Errors
    /// [`Error::Cancelled`] when the pipeline has stopped.
    pub async fn flush(&mut self) -> Result<()> {
        for i in 0..self.builders.len() {
            if !self.builders[i].is_empty() {
                let b = self.builders[i].take();
                self.send(Msg::Batch(b)).await?;
            }
        }
        Ok(())
    }

    async fn send(&mut self, msg: Msg) -> Result<()> {
        match &mut self.target {
            Target::Channel(tx) => tx.send(msg).await.map_err(|_| Error::Cancelled {
                reason: "the table task stopped".into(),
            }),
            Target::Collect(v) => {
                v.push(msg);
                Ok(())
            }
        }
    }

    fn into_msgs(mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        for b in &mut self.builders {
            if !b.is_empty() {
                out.push(Msg::Batch(b.take()));
            }
        }
        match self.target {
            Target::Collect(mut v) => {
                v.extend(out);
                v
            }
            Target::Channel(_) => Vec::new(),
        }
    }
}

/// The default sink's side of the pipeline: where unconsumed batches and checkpoint
/// markers end up.
#[async_trait]
pub(crate) trait Terminal: Send {
    async fn write(&mut self, batch: Batch) -> Result<()>;
    async fn checkpoint(
        &mut self,
        updates: BTreeMap<String, Option<serde_json::Value>>,
    ) -> Result<()>;
}

/// Runs one table task: the source concurrently with inline routing into sinks and the
/// terminal. Returns when the source has finished and everything is flushed into the
/// terminal (the caller commits).
pub(crate) async fn run_pipeline(
    ctx: Arc<TaskCtx>,
    source: Arc<dyn Source>,
    sinks: &[Arc<dyn Sink>],
    terminal: &mut dyn Terminal,
) -> Result<()> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(CHANNEL_BATCHES);
    let src_ctx = ctx.clone();
    let producer = async move {
        let mut out = Emitter::channel(src_ctx.clone(), tx);
        source
            .run(&src_ctx, &mut out)
            .await
            .map_err(|e| wrap(format!("table {}: source", src_ctx.tbl_name()), e))?;
        out.flush().await
    };
    let router = Router {
        sinks: sinks
            .iter()
            .map(|s| (wildmatch::WildMatch::new(s.tables()), s.clone()))
            .collect(),
        ctx: ctx.clone(),
    };
    let consumer = async {
        // Owned here: when routing fails the receiver goes with this future, so the
        // producer's next send fails (Cancelled) instead of waiting on a full channel.
        let mut rx = rx;
        while let Some(msg) = rx.recv().await {
            router.route(0, msg, terminal).await?;
        }
        Ok::<(), Error>(())
    };
    // Both halves run in this task; a failure of either ends the other (the consumer's
    // end closes the channel; the producer's end closes it from the other side).
    let (p, c) = tokio::join!(producer, consumer);
    c?;
    p?;
    // Flush sinks in order; what they emit is routed on from their position.
    for (j, (_, sink)) in router.sinks.iter().enumerate() {
        let mut out = Emitter::collecting(ctx.clone());
        sink.flush(&ctx, &mut out).await.map_err(|e| {
            wrap(
                format!("table {}: sink {} flush", ctx.tbl_name(), sink.tables()),
                e,
            )
        })?;
        for m in out.into_msgs() {
            router.route(j + 1, m, terminal).await?;
        }
    }
    Ok(())
}

struct Router {
    sinks: Vec<(wildmatch::WildMatch, Arc<dyn Sink>)>,
    ctx: Arc<TaskCtx>,
}

impl Router {
    /// Routes one message emitted by node `from` (0 = the source, j+1 = sink j),
    /// depth first, until everything it causes has reached the terminal.
    async fn route(&self, from: usize, msg: Msg, terminal: &mut dyn Terminal) -> Result<()> {
        let mut stack = vec![(from, msg)];
        while let Some((from, msg)) = stack.pop() {
            match msg {
                Msg::Checkpoint(updates) => {
                    // Flush sinks that buffer, so the marker covers what they hold.
                    for (j, (_, sink)) in self.sinks.iter().enumerate().skip(from) {
                        let mut out = Emitter::collecting(self.ctx.clone());
                        sink.flush(&self.ctx, &mut out).await.map_err(|e| {
                            wrap(
                                format!(
                                    "table {}: sink {} flush",
                                    self.ctx.tbl_name(),
                                    sink.tables()
                                ),
                                e,
                            )
                        })?;
                        let msgs = out.into_msgs();
                        if !msgs.is_empty() {
                            Box::pin(self.route_all(j + 1, msgs, terminal)).await?;
                        }
                    }
                    terminal.checkpoint(updates).await?;
                }
                Msg::Batch(batch) => {
                    let targets: Vec<usize> = (from..self.sinks.len())
                        .filter(|j| self.sinks[*j].0.matches(&batch.table))
                        .collect();
                    if targets.is_empty() {
                        crate::failpoint::hit("source.batch")?;
                        terminal.write(batch).await?;
                        continue;
                    }
                    let mut produced: Vec<(usize, Msg)> = Vec::new();
                    let last = targets.len() - 1;
                    let mut batch = Some(batch);
                    for (n, j) in targets.into_iter().enumerate() {
                        let b = if n == last {
                            batch.take().unwrap_or_else(|| unreachable!())
                        } else {
                            batch.clone().unwrap_or_else(|| unreachable!())
                        };
                        let sink = &self.sinks[j].1;
                        let mut out = Emitter::collecting(self.ctx.clone());
                        sink.write(&self.ctx, b, &mut out).await.map_err(|e| {
                            wrap(
                                format!("table {}: sink {}", self.ctx.tbl_name(), sink.tables()),
                                e,
                            )
                        })?;
                        produced.extend(out.into_msgs().into_iter().map(|m| (j + 1, m)));
                    }
                    stack.extend(produced.into_iter().rev());
                }
            }
        }
        Ok(())
    }

    async fn route_all(
        &self,
        from: usize,
        msgs: Vec<Msg>,
        terminal: &mut dyn Terminal,
    ) -> Result<()> {
        for m in msgs {
            self.route(from, m, terminal).await?;
        }
        Ok(())
    }
}

/// Wraps an operator's error with context, keeping anchovy-core errors as they are.
pub(crate) fn wrap(context: String, e: BoxError) -> Error {
    match e.downcast::<Error>() {
        Ok(inner) => match *inner {
            e @ (Error::Cancelled { .. } | Error::ExecutionTimeout { .. }) => e,
            other => Error::operator(context, other),
        },
        Err(e) => Error::operator(context, e),
    }
}
