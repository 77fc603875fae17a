//! The one incremental file source every file-like downloader runs.
//!
//! `files.*`, `sftp.*` and `blob.*` differ only in their [`Transport`] (how files are
//! listed, opened, checked and tidied) and their default [`InputFormat`]. Everything
//! else lives here, once:
//!
//! - **Listing and change detection.** A table's `path:` lists its files, sorted by
//!   name. A file whose checkpoint `<table>:<name>` ([`EntryState`]) still matches its
//!   listing (size, and mtime or etag) is skipped; a new or changed file is read whole.
//! - **The growing-file rule.** A file that changed between the listing and its read
//!   is skipped this run ([`Opened::Changed`]); one that changes *while* it is read
//!   fails the table (nothing of it is committed; the next run reads it again).
//! - **Budgets.** Before each file, once one file is behind the task, a spent run
//!   budget (`-t`, rows, bytes) stops the table; the next run resumes at that file.
//! - **Read-ahead and resume.** On a network transport (one that can resume: SFTP,
//!   object stores) a thread reads the file in 1 MiB chunks while the format parses the
//!   previous ones, and a read that fails mid-file reconnects and goes on at the byte
//!   where it stopped (3 times, with back-off), every byte handed out exactly once.
//!   Local files are parsed straight from the file (the OS reads ahead).
//! - **Decompression** by the name's `.gz`/`.zst`, then the table's `format:`
//!   ([`crate::formats`]), with bad records going to the table's quarantine.
//! - **In-band checkpoints.** A file's checkpoint is emitted after its rows, so both
//!   commit together; budgets are spent and progress shown per file.
//! - **After load.** `after_load: delete | move:<dir>` acts at XCLOSE on the files
//!   whose checkpoints are committed (a crash before the commit leaves them; after it,
//!   the next run finishes the job).
//!
//! Memory stays flat: one bounded channel of batches ([`READ_AHEAD`]) and a few
//! recycled chunk buffers per table task.

pub mod chunks;
pub mod transport;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anchovy_core::{
    BoxError, Emitter, Operator, OptionGroup, SessionCtx, Source, TableOptions, TaskCtx, TaskType,
    Tbl, async_trait,
};

pub use self::transport::{Counters, Entry, EntryState, Opened, Transport, TransportSpec};
use crate::error::PluginError;
use crate::formats::{self, InputFormat};

/// Batches that may wait between a table's reader thread and the pipeline.
pub const READ_AHEAD: usize = 2;

/// Bytes a read-ahead chunk holds.
const READ_CHUNK: usize = 1 << 20;

/// Times a read that failed mid-file is resumed before the table fails.
pub const READ_RETRIES: u32 = 3;

/// Bounded, doubling waits between attempts: the one retry policy of the file sources
/// (SFTP connections, reads resumed mid-file).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    first: Duration,
    retries: u32,
    failures: u32,
}

impl Backoff {
    /// At most `retries` retries, the first after `first`, each wait twice the last.
    pub const fn new(first: Duration, retries: u32) -> Backoff {
        Backoff {
            first,
            retries,
            failures: 0,
        }
    }

    /// Counts a failure: the wait before the next attempt, or `None` when the retries
    /// are used up.
    pub fn failed(&mut self) -> Option<Duration> {
        self.failures += 1;
        (self.failures <= self.retries).then(|| self.first * (1 << (self.failures - 1).min(16)))
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A success: the next failure waits `first` again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

anchovy_core::table_options! {
    /// The options every file-like source reads; the table's other options belong to
    /// its format.
    pub struct SourceOptions {
        /// what to read (required): a glob of local files (`./in/*.csv`, `/sales/**/*.tsv`),
        /// a remote glob on the SFTP server, or an object URL with a glob
        /// (`s3://bucket/in/**/*.csv`, `az://container/logs/*.json`)
        pub path: String,
        /// the connection id: SFTP (default: the default connection, `ACHVY_CNXN__URI`) or
        /// the object store's credentials (default: the provider's env vars)
        #[serde(default)]
        pub connection: Option<String>,
        /// keep (default), delete, or move:<dir>; done at the end of the batch, only for
        /// files whose rows are committed
        #[serde(default)]
        pub after_load: Option<String>,
        /// csv, json (NDJSON, arrays, documents) or parquet; default: the operator's own
        #[serde(default)]
        pub format: Option<String>,
        /// delete a file's checkpoint once the file has been missing from every listing
        /// for this long (default 7d; `never` keeps them): a file that comes back after
        /// that is read again, as a new file
        #[serde(default)]
        pub forget_after: Option<String>,
        /// split the table into this many parts by a hash of each file's name (2 to
        /// 1024; default 1): each part is a task of its own, run side by side up to
        /// `max_concurrency` and, with `--workers`, claimed by any worker, so the files
        /// of one big table are read by several workers at once
        #[serde(default)]
        pub parts: Option<u32>,
    }
}

/// How long a file may be missing from the listings before its checkpoint is deleted,
/// when the table does not say (`forget_after:`).
pub const FORGET_AFTER: Duration = Duration::from_secs(7 * 86_400);

/// Parses `forget_after:`: a duration, or `never` (`None`).
///
/// # Errors
/// [`PluginError::Option`] naming the value.
pub fn forget_after(table: &str, s: Option<&str>) -> Result<Option<Duration>, PluginError> {
    match s.map(str::trim) {
        None => Ok(Some(FORGET_AFTER)),
        Some("never") => Ok(None),
        Some(t) => anchovy_core::config::parse_duration(t)
            .map(Some)
            .ok_or_else(|| PluginError::Option {
                key: format!("tbls.{table}.forget_after"),
                message: format!("`{t}` is not a duration (90s, 15m, 12h, 30d) or `never`"),
            }),
    }
}

/// Every option a file-like operator reads: the source's, then each format's.
pub const OPTIONS: &[OptionGroup] = &[
    OptionGroup {
        title: "",
        options: <SourceOptions as TableOptions>::DOCS,
    },
    formats::csv::SPEC.options,
    formats::json::SPEC.options,
    formats::parquet::SPEC.options,
];

/// What happens to a file once its rows are committed.
#[derive(Debug, Clone, PartialEq)]
pub enum AfterLoad {
    /// Leave it (default).
    Keep,
    /// Delete it.
    Delete,
    /// Move it into this directory (or prefix), under its own name.
    Move(String),
}

impl AfterLoad {
    /// Parses `after_load:`.
    ///
    /// # Errors
    /// [`PluginError::Option`] for anything but `keep`, `delete`, `move:<dir>`.
    pub fn parse(s: Option<&str>) -> Result<AfterLoad, PluginError> {
        Ok(match s {
            None | Some("keep") => AfterLoad::Keep,
            Some("delete") => AfterLoad::Delete,
            Some(m) if m.starts_with("move:") && m.len() > 5 => {
                AfterLoad::Move(m[5..].trim_end_matches('/').to_string())
            }
            Some(other) => {
                return Err(PluginError::Option {
                    key: "after_load".into(),
                    message: format!("`{other}` is not keep, delete or move:<dir>"),
                });
            }
        })
    }
}

/// How many names `after_load: move` tries for one file before it gives up.
pub const MOVE_NAMES: usize = 1000;

/// The names `after_load: move` tries for a file, in order: its own, then with a
/// counter before its extensions (`export.csv` -> `export.1.csv`, `export.2.csv`, ...;
/// `.hidden` -> `.hidden.1`). An archived file is never overwritten by a later file of
/// the same name (a daily `export.csv`): each transport moves only to a free name.
pub fn move_names(name: &str) -> impl Iterator<Item = String> + '_ {
    let dot = name
        .char_indices()
        .skip(1)
        .find(|(_, c)| *c == '.')
        .map_or(name.len(), |(i, _)| i);
    let (stem, ext) = name.split_at(dot);
    std::iter::once(name.to_string())
        .chain((1..MOVE_NAMES).map(move |n| format!("{stem}.{n}{ext}")))
}

/// The error when every name [`move_names`] offers is taken.
pub fn no_free_name(name: &str, dir: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!(
            "{dir} already holds {name} and {} numbered copies of it; clear the archive",
            MOVE_NAMES - 1
        ),
    )
}

/// A table's source, resolved from its options.
pub struct TableSource {
    /// Its options.
    pub options: SourceOptions,
    /// Its format.
    pub format: Arc<dyn InputFormat>,
    /// What to do after load.
    pub after_load: AfterLoad,
    /// How long a file may be missing before its checkpoint is deleted (`None`: never).
    pub forget_after: Option<Duration>,
}

/// A file-like downloader: one transport, a default format.
pub struct FileDownloader {
    transport: TransportSpec,
    format: &'static str,
    /// Files read (or found committed) this batch whose `after_load` is due at XCLOSE.
    pending: Arc<Mutex<Vec<Pending>>>,
}

/// A file to delete or move once its checkpoint is committed.
#[derive(Debug, Clone)]
struct Pending {
    table: String,
    key: String,
    entry: Entry,
}

impl FileDownloader {
    /// The downloader over `transport` whose tables default to `format`.
    pub fn new(transport: TransportSpec, format: &'static str) -> FileDownloader {
        FileDownloader {
            transport,
            format,
            pending: Arc::default(),
        }
    }

    /// Resolves a table's options and format.
    ///
    /// # Errors
    /// [`PluginError::Option`] naming the bad option.
    pub fn table(&self, tbl: &Tbl) -> Result<TableSource, PluginError> {
        let options = SourceOptions::of(tbl).map_err(PluginError::from_option)?;
        let own = <SourceOptions as TableOptions>::DOCS;
        let rest: serde_json::Map<String, serde_json::Value> = tbl
            .options
            .iter()
            .filter(|(k, _)| {
                !own.iter().any(|d| d.key == k.as_str())
                    && !anchovy_core::tbl::CORE_KEYS.contains(&k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let format = formats::build(
            options.format.as_deref().unwrap_or(self.format),
            &tbl.name,
            rest,
            &tbl.columns,
        )?;
        let after_load = AfterLoad::parse(options.after_load.as_deref()).map_err(|e| match e {
            PluginError::Option { message, .. } => PluginError::Option {
                key: format!("tbls.{}.after_load", tbl.name),
                message,
            },
            e => e,
        })?;
        let forget_after = forget_after(&tbl.name, options.forget_after.as_deref())?;
        if let Some(n) = options.parts
            && !(1..=anchovy_core::worker::MAX_PARTS).contains(&n)
        {
            return Err(PluginError::Option {
                key: format!("tbls.{}.parts", tbl.name),
                message: format!(
                    "{n} is not a number of parts from 1 to {}",
                    anchovy_core::worker::MAX_PARTS
                ),
            });
        }
        Ok(TableSource {
            options,
            format,
            after_load,
            forget_after,
        })
    }
}

#[async_trait]
impl Operator for FileDownloader {
    fn sources(&self) -> Vec<Arc<dyn Source>> {
        vec![Arc::new(FileSource {
            downloader: FileDownloader {
                transport: self.transport,
                format: self.format,
                pending: self.pending.clone(),
            },
        })]
    }

    fn record_reader(
        &self,
        tbl: &Tbl,
    ) -> Result<Option<Arc<dyn anchovy_core::reject::RecordReader>>, BoxError> {
        Ok(self.table(tbl)?.format.record_reader())
    }

    /// `parts:` (a bad value: one part, whose task then fails naming the option).
    fn parts(&self, tbl: &Tbl) -> u32 {
        self.table(tbl)
            .ok()
            .and_then(|s| s.options.parts)
            .unwrap_or(1)
    }

    async fn on_task(&self, ctx: &TaskCtx) -> Result<(), BoxError> {
        match ctx.task_type {
            // Fail fast when a table's connection is missing or malformed.
            // A missing or malformed connection fails the batch at once; any other bad
            // option fails only its own table's task (under CONTINUE the others run).
            TaskType::Xopen => {
                for t in ctx.session.config_tbls.iter() {
                    let Ok(options) = SourceOptions::of(t) else {
                        continue;
                    };
                    if let Err(e) = (self.transport.connect)(&ctx.session, &options)
                        && matches!(&e, PluginError::Core(c) if c.exit_code() == anchovy_core::error::exit::CONFIG)
                    {
                        return Err(e.into());
                    }
                }
            }
            // Every table task has committed by now: act on the files whose rows are durable.
            TaskType::Xclose => {
                let due: Vec<Pending> =
                    std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
                let mut by_table: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
                for p in due {
                    let durable = ctx
                        .session
                        .checkpoint(&p.key)
                        .and_then(|v| serde_json::from_value::<EntryState>(v).ok())
                        .is_some_and(|s| s.matches(&p.entry));
                    if durable {
                        by_table.entry(p.table).or_default().push(p.entry);
                    }
                }
                for (table, entries) in by_table {
                    let Some(tbl) = ctx.session.config_tbls.get(&table) else {
                        continue;
                    };
                    let s = self.table(tbl)?;
                    let mut t = (self.transport.connect)(&ctx.session, &s.options)?;
                    let done =
                        tokio::task::spawn_blocking(move || t.after_load(&entries, &s.after_load))
                            .await
                            .map_err(|e| PluginError::Data {
                                location: "after_load".into(),
                                message: e.to_string(),
                            })??;
                    ctx.log_add("files_after_load", done);
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn healthcheck(&self, ctx: &SessionCtx) -> Vec<(String, Result<String, String>)> {
        let mut out = Vec::new();
        for t in ctx.config_tbls.iter() {
            let name = format!("table {}", t.name);
            let r: Result<String, PluginError> = async {
                let s = self.table(t)?;
                let mut transport = (self.transport.connect)(ctx, &s.options)?;
                let note = transport.health_note();
                let files = tokio::task::spawn_blocking(move || transport.list())
                    .await
                    .map_err(|e| PluginError::Data {
                        location: name.clone(),
                        message: e.to_string(),
                    })??;
                Ok(format!(
                    "{note}{}{} {} match {}",
                    if note.is_empty() { "" } else { " " },
                    files.len(),
                    self.transport.counters.noun,
                    s.options.path
                ))
            }
            .await;
            out.push((
                name.clone(),
                r.map_err(|e| anchovy_core::error::render_chain(&e)),
            ));
        }
        out
    }
}

/// What the reader thread sends to the task.
enum Item {
    Batch(anchovy_core::Batch),
    /// A file was read whole: checkpoint it (after its rows).
    Done {
        key: String,
        state: EntryState,
        entry: Entry,
    },
    /// A file an earlier run committed (its after_load may still be due).
    Committed {
        key: String,
        entry: Entry,
    },
    /// A checkpoint changed without rows: a file's `gone_since` set or cleared.
    Mark {
        key: String,
        state: EntryState,
    },
    /// The checkpoint of a file missing for `forget_after`: delete it.
    Forget {
        key: String,
    },
    /// A file was skipped this run.
    Changed {
        name: String,
        reason: &'static str,
    },
}

struct FileSource {
    downloader: FileDownloader,
}

impl FileSource {
    fn after_load(&self, action: &AfterLoad, table: &str, key: String, entry: Entry) {
        if *action != AfterLoad::Keep {
            self.downloader
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Pending {
                    table: table.to_string(),
                    key,
                    entry,
                });
        }
    }
}

#[async_trait]
impl Source for FileSource {
    async fn run(&self, ctx: &TaskCtx, out: &mut Emitter) -> Result<(), BoxError> {
        let tbl = ctx.tbl().clone();
        let spec = self.downloader.transport;
        let TableSource {
            options,
            format,
            after_load,
            forget_after,
        } = self.downloader.table(&tbl)?;
        let transport = (spec.connect)(&ctx.session, &options)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Item>(READ_AHEAD);
        let job = Job {
            table: tbl.name.clone(),
            path: options.path.clone(),
            spec,
            format,
            session: ctx.session.clone(),
            batch_size: ctx.session.settings.batch_size,
            rejects: ctx.rejects()?,
            forget_after,
            part: ctx.part(),
            tx,
        };
        let reader = tokio::task::spawn_blocking(move || job.run(transport));
        let (mut read, mut unchanged, mut changed, mut rows, mut forgotten) =
            (0u64, 0u64, 0u64, 0u64, 0u64);
        while let Some(item) = rx.recv().await {
            match item {
                Item::Batch(b) => out.send_batch(b).await?,
                Item::Done { key, state, entry } => {
                    rows += state.rows;
                    read += 1;
                    out.checkpoint(&key, &state).await?;
                    self.after_load(&after_load, &tbl.name, key, entry);
                }
                Item::Committed { key, entry } => {
                    unchanged += 1;
                    self.after_load(&after_load, &tbl.name, key, entry);
                }
                Item::Mark { key, state } => out.checkpoint(&key, &state).await?,
                Item::Forget { key } => {
                    forgotten += 1;
                    out.forget(&key).await?;
                }
                Item::Changed { name, reason } => {
                    changed += 1;
                    tracing::info!(table = %tbl.name, file = %name, "skipped: {reason}; it is read on a later run");
                }
            }
        }
        reader.await.map_err(|e| PluginError::Data {
            location: tbl.name.clone(),
            message: format!("the reader thread failed: {e}"),
        })??;
        ctx.log(spec.counters.read, read);
        ctx.log(spec.counters.unchanged, unchanged);
        ctx.log(spec.counters.changed, changed);
        ctx.log("rows_read", rows);
        if forgotten > 0 {
            ctx.log("checkpoints_forgotten", forgotten);
        }
        Ok(())
    }
}

/// One table task's reading, on its own blocking thread.
struct Job {
    table: String,
    path: String,
    spec: TransportSpec,
    format: Arc<dyn InputFormat>,
    session: Arc<SessionCtx>,
    batch_size: usize,
    rejects: anchovy_core::reject::Rejects,
    forget_after: Option<Duration>,
    /// The part of the table this task reads (`parts:`), if split.
    part: Option<anchovy_core::worker::Part>,
    tx: tokio::sync::mpsc::Sender<Item>,
}

impl Job {
    /// Lists, then reads each new or changed file; returns early (Ok) when the task
    /// went away or the budget is spent.
    fn run(mut self, mut t: Box<dyn Transport>) -> Result<(), PluginError> {
        let mut files = t.list()?;
        anchovy_core::failpoint::hit(&format!("{}.listed", self.spec.id))?;
        if files.is_empty() && self.part.is_none_or(|p| p.index == 0) {
            tracing::warn!(table = %self.table, path = %self.path, "no {} match the path glob", self.spec.counters.noun);
        }
        if let Some(p) = self.part {
            // The other parts' files are theirs (their own tasks, maybe other workers).
            files.retain(|e| p.holds(&e.name));
        }
        if !self.note_missing(&files) {
            return Ok(());
        }
        let mut read = 0u64;
        for entry in files {
            let key = format!("{}:{}", self.table, entry.name);
            let seen = self
                .session
                .checkpoint(&key)
                .and_then(|v| serde_json::from_value::<EntryState>(v).ok());
            if let Some(seen) = seen.filter(|s| s.matches(&entry)) {
                // Listed again: a later absence starts its clock afresh.
                let back = seen.gone_since.is_some().then(|| Item::Mark {
                    key: key.clone(),
                    state: EntryState {
                        gone_since: None,
                        ..seen
                    },
                });
                if back.is_none_or(|m| self.send(m)) && self.send(Item::Committed { key, entry }) {
                    continue;
                }
                return Ok(());
            }
            if self.session.stop_for_budget(&self.table, read) {
                return Ok(());
            }
            let input = match t.open(&entry, 0)? {
                Opened::Reader(r) => r,
                Opened::Changed(reason) => {
                    let name = entry.name.clone();
                    if self.send(Item::Changed { name, reason }) {
                        continue;
                    }
                    return Ok(());
                }
            };
            let Some(rows) = self.read_file(&mut *t, &entry, input)? else {
                return Ok(());
            };
            t.verify(&entry)?;
            read += 1;
            self.session.budget.spend(rows, entry.size);
            self.session.progress(&self.table, 0, 0, true);
            let state = EntryState::of(&entry, rows);
            if !self.send(Item::Done { key, state, entry }) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The retention of file checkpoints: each checkpoint of this table whose file the
    /// listing missed gets `gone_since` (once), and one missing for `forget_after` is
    /// deleted, so the checkpoint state holds the files that exist plus those gone for
    /// less than `forget_after`, not every file ever read. A listing that misses files
    /// by accident (an empty mount) costs nothing unless it lasts that long. False when
    /// the task went away.
    fn note_missing(&self, files: &[Entry]) -> bool {
        let Some(forget_after) = self.forget_after else {
            return true;
        };
        let listed: std::collections::HashSet<&str> =
            files.iter().map(|e| e.name.as_str()).collect();
        let prefix = format!("{}:", self.table);
        // Table `a`'s prefix `a:` also starts the keys of a table `a:b`: not ours.
        let others: Vec<String> = (self.session.config_tbls.iter())
            .map(|t| format!("{}:", t.name))
            .filter(|p| p.len() > prefix.len() && p.starts_with(&prefix))
            .collect();
        let now = chrono::Utc::now();
        let age = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t).ok().map(|since| {
                now.signed_duration_since(since)
                    .to_std()
                    .unwrap_or_default()
            })
        };
        // Every checkpoint of the table is looked at, each run: those listed or already
        // marked and not yet due are passed over without a copy (the state is locked
        // meanwhile, so the items are sent after).
        let mut items = Vec::new();
        self.session
            .for_each_checkpoint_with_prefix(&prefix, |key, value| {
                let file = &key[prefix.len()..];
                if listed.contains(file)
                    || others.iter().any(|o| key.starts_with(o))
                    || self.part.is_some_and(|p| !p.holds(file))
                {
                    return;
                }
                let gone = value.get("gone_since").and_then(serde_json::Value::as_str);
                if gone
                    .and_then(age)
                    .is_some_and(|missing| missing < forget_after)
                {
                    return;
                }
                // Not a file's state (set by hand): not ours to age.
                let Ok(mut state) = <EntryState as serde::Deserialize>::deserialize(value) else {
                    return;
                };
                let key = key.to_string();
                items.push(match state.gone_since.as_deref().and_then(age) {
                    Some(_) => Item::Forget { key },
                    None => {
                        state.gone_since =
                            Some(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                        Item::Mark { key, state }
                    }
                });
            });
        items.into_iter().all(|item| self.send(item))
    }

    /// Sends to the task; false when it went away.
    fn send(&self, item: Item) -> bool {
        self.tx.blocking_send(item).is_ok()
    }

    /// Reads one file through the format, a read-ahead thread feeding the parser.
    /// `None` when the task went away mid-file.
    fn read_file(
        &mut self,
        t: &mut dyn Transport,
        entry: &Entry,
        input: Box<dyn Read + Send>,
    ) -> Result<Option<u64>, PluginError> {
        let mut stopped = false;
        let chunk_point = format!("{}.chunk", self.spec.id);
        let (tx, format, table, batch_size) =
            (&self.tx, &self.format, &self.table, self.batch_size);
        let rejects = &mut self.rejects;
        let rows = {
            let mut parse = |bytes: Box<dyn Read + Send>| -> Result<u64, PluginError> {
                let input = formats::decompressed(bytes, &entry.name)?;
                format.read(input, &entry.name, table, batch_size, rejects, &mut |b| {
                    let ok = tx.blocking_send(Item::Batch(b)).is_ok();
                    stopped |= !ok;
                    ok
                })
            };
            if !t.resumable() {
                // Local reads: the page cache and the OS's own read-ahead serve them; a
                // thread in between would only copy every byte once more.
                parse(input)?
            } else {
                std::thread::scope(|scope| {
                    let (chunks_tx, chunks_rx) = std::sync::mpsc::sync_channel(4);
                    let (spare_tx, spare_rx) = std::sync::mpsc::sync_channel(4);
                    let chunk_point = &chunk_point;
                    scope.spawn(move || {
                        read_ahead(input, t, entry, chunk_point, &chunks_tx, &spare_rx)
                    });
                    parse(Box::new(chunks::ChunkReader::new(chunks_rx, spare_tx)))
                })?
            }
        };
        Ok((!stopped).then_some(rows))
    }
}

/// Reads `input` in [`READ_CHUNK`]s into `out` until the end, an error, or the
/// receiver going away (the parser stopped).
///
/// A read that fails mid-file (a dropped connection, a timeout) is resumed when the
/// transport can: [`Transport::open`] at the byte where the read stopped (it checks
/// the file is unchanged), so every byte is handed out exactly once. After
/// [`READ_RETRIES`] failed attempts the error goes to the parser, which fails the
/// table (nothing of the file is committed; the next run reads it again). An empty
/// chunk marks the end: a read cut short is never taken for the end of a file.
fn read_ahead(
    mut input: Box<dyn Read + Send>,
    t: &mut dyn Transport,
    entry: &Entry,
    failpoint: &str,
    out: &std::sync::mpsc::SyncSender<std::io::Result<Vec<u8>>>,
    spare: &std::sync::mpsc::Receiver<Vec<u8>>,
) {
    let mut offset = 0u64; // bytes read so far
    let mut backoff = Backoff::new(Duration::from_millis(500), READ_RETRIES);
    loop {
        let mut buf = spare.try_recv().unwrap_or_default();
        buf.resize(READ_CHUNK, 0);
        let mut filled = 0;
        while filled < READ_CHUNK {
            match input.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => {
                    filled += n;
                    offset += n as u64;
                    backoff.succeeded();
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let wait = backoff.failed().filter(|_| t.resumable());
                    let Some(wait) = wait else {
                        let message = if t.resumable() {
                            format!(
                                "{e} (at byte {offset}, after {READ_RETRIES} attempts to resume)"
                            )
                        } else {
                            format!("{e} (at byte {offset})")
                        };
                        let _ = out.send(Err(std::io::Error::new(e.kind(), message)));
                        return;
                    };
                    tracing::warn!(file = %entry.name, error = %e, offset, attempt = backoff.failures(), "read failed mid-file; reconnecting to resume at this byte");
                    std::thread::sleep(wait);
                    match t.open(entry, offset) {
                        Ok(Opened::Reader(r)) => {
                            tracing::info!(file = %entry.name, offset, "read resumed on a new connection");
                            input = r;
                        }
                        Ok(Opened::Changed(reason)) => {
                            tracing::warn!(file = %entry.name, "resuming the read failed: {reason}");
                        }
                        Err(r) => {
                            tracing::warn!(file = %entry.name, error = %r, "resuming the read failed")
                        }
                    }
                }
            }
        }
        buf.truncate(filled);
        let end = filled < READ_CHUNK;
        if !buf.is_empty() && out.send(Ok(buf)).is_err() {
            return;
        }
        if let Err(e) = anchovy_core::failpoint::hit(failpoint) {
            let _ = out.send(Err(std::io::Error::other(e.to_string())));
            return;
        }
        if end {
            let _ = out.send(Ok(Vec::new()));
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn move_names_count_before_the_extensions() {
        let names = |n: &str| move_names(n).take(3).collect::<Vec<_>>();
        assert_eq!(
            names("export.csv"),
            ["export.csv", "export.1.csv", "export.2.csv"]
        );
        assert_eq!(names("a.csv.gz"), ["a.csv.gz", "a.1.csv.gz", "a.2.csv.gz"]);
        assert_eq!(names("README"), ["README", "README.1", "README.2"]);
        assert_eq!(names(".hidden"), [".hidden", ".hidden.1", ".hidden.2"]);
        assert_eq!(move_names("x").count(), MOVE_NAMES);
    }

    #[test]
    fn backoff_doubles_and_stops_after_its_retries() {
        let mut b = Backoff::new(Duration::from_millis(500), 3);
        let waits: Vec<Option<Duration>> = (0..4).map(|_| b.failed()).collect();
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(waits, [ms(500), ms(1000), ms(2000), None]);
        assert_eq!(b.failures(), 4);
        b.succeeded();
        assert_eq!(b.failed(), ms(500));
        assert_eq!(Backoff::new(Duration::from_millis(1), 0).failed(), None);
    }
}
