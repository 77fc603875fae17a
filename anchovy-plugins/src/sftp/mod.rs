//! `sftp.CsvDownloader`: CSV/TSV files on SFTP servers, read incrementally, over `ssh2`.
//!
//! The README's example works as written:
//!
//! ```text
//! export ACHVY_CNXN__URI='sftp://user:password@example.com:22'
//! export ACHVY_CNXN__PPK_PATH='/path/to/keyfile'
//! anchovy start -op sftp.CsvDownloader --id sales_sftp
//! ```
//!
//! - **Connection** (`connection:` table option, default `default`): `URI`
//!   `sftp://user[:password]@host[:port]`, `PPK_PATH` (private key) and `PASSPHRASE`,
//!   `PASSWORD`, `KNOWN_HOSTS` (default `~/.ssh/known_hosts`), `CONNECT_TIMEOUT`
//!   (default 15s). Host keys are verified: an unknown or changed key is refused with
//!   its SHA256 fingerprint and the command to trust it. `KNOWN_HOSTS=insecure-skip`
//!   turns verification off, and every connection then logs a warning.
//! - **Tables**: `path:` is a remote glob (`*`, `?`, `**`, `[a-z]`; relative paths start
//!   at the login directory) plus every CSV option of `files.CsvDownloader`.
//! - **Incremental**: a checkpoint `<table>:<path>` = `{size, mtime_ns, rows}` per file,
//!   committed with the file's rows. A file whose size or mtime changed between the
//!   listing and the read is still being written: it is skipped this run. A file that
//!   changes while it is read, or a connection that drops mid-file, fails the table:
//!   nothing of that file is committed, and the next run reads it again.
//! - **After load**: `after_load: delete` or `move:<dir>` acts at XCLOSE on the files
//!   whose checkpoints are committed (a crash before the commit leaves them untouched;
//!   after it, the next run finishes the job).
//! - **Streaming**: ssh2 is blocking, so one thread per table task owns the session and
//!   hands batches out through a bounded channel; memory stays flat.

pub mod conn;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use anchovy_core::operator::OperatorKind;
use anchovy_core::{
    BoxError, Emitter, Operator, OperatorSpec, OptionDoc, SessionCtx, Source, TaskCtx, TaskType,
    Tbl, async_trait,
};
use serde::Deserialize;

use self::conn::{RemoteFile, SftpTarget};
use crate::delimited::{CsvFormat, CsvOptions};
use crate::error::PluginError;
use crate::files::FileState;

/// Batches that may wait between the SFTP reader thread and the pipeline.
const READ_AHEAD: usize = 4;

/// The registry entry.
pub const SPEC: OperatorSpec = OperatorSpec {
    name: "sftp.CsvDownloader",
    description: "Downloads CSV/TSV files from SFTP servers (remote glob per table), incrementally, with verified host keys.",
    kind: OperatorKind::Downloader,
    connections: &[],
    env_vars: &[
        OptionDoc {
            key: "ACHVY_CNXN__URI",
            doc: "sftp://user[:password]@host[:port] of the default connection (ACHVY_CNXN__<ID>__URI for `connection: <id>`)",
        },
        OptionDoc {
            key: "ACHVY_CNXN__PPK_PATH, ACHVY_CNXN__PASSPHRASE",
            doc: "private key file and its passphrase (or a password in the URI / ACHVY_CNXN__PASSWORD)",
        },
        OptionDoc {
            key: "ACHVY_CNXN__KNOWN_HOSTS",
            doc: "known_hosts file (default ~/.ssh/known_hosts); `insecure-skip` turns host-key checks off",
        },
        OptionDoc {
            key: "ACHVY_CNXN__CONNECT_TIMEOUT",
            doc: "connect and read timeout (default 15s)",
        },
    ],
    table_options: &[
        OptionDoc {
            key: "path",
            doc: "remote glob, e.g. /sales/*.tsv or data/**/*.csv (required)",
        },
        OptionDoc {
            key: "connection",
            doc: "connection id (default: the default connection, ACHVY_CNXN__URI)",
        },
        OptionDoc {
            key: "after_load",
            doc: "keep (default), delete, or move:<remote dir>; done only once the file's rows are committed",
        },
        OptionDoc {
            key: "delimiter, quote, header, names, skip_lines, encoding, empty_as_null, provenance, rename, columns, autodiscover",
            doc: "as files.CsvDownloader",
        },
    ],
    build: |_| Ok(Arc::new(SftpDownloader::default())),
};

/// What happens to a remote file once its rows are committed.
#[derive(Debug, Clone, PartialEq)]
pub enum AfterLoad {
    /// Leave it (default).
    Keep,
    /// Delete it.
    Delete,
    /// Move it into this remote directory.
    Move(String),
}

/// A remote file to delete or move once its checkpoint is committed.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    connection: String,
    key: String,
    pub(crate) file: RemoteFile,
    pub(crate) action: AfterLoad,
}

/// The operator.
#[derive(Default)]
pub struct SftpDownloader {
    /// Files read (or found committed) this batch whose `after_load` is due at XCLOSE.
    pending: Arc<Mutex<Vec<Pending>>>,
}

/// The table options: the SFTP keys, then the shared CSV options (checked strictly).
#[derive(Debug, Deserialize)]
struct RawOptions {
    #[serde(default)]
    connection: Option<String>,
    #[serde(default)]
    after_load: Option<String>,
    #[serde(flatten)]
    csv: serde_json::Map<String, serde_json::Value>,
}

struct TableOptions {
    connection: String,
    after_load: AfterLoad,
    csv: CsvOptions,
}

fn options(tbl: &Tbl) -> Result<TableOptions, PluginError> {
    let o: RawOptions = tbl.plugin_options()?;
    let csv: CsvOptions =
        serde_json::from_value(serde_json::Value::Object(o.csv)).map_err(|e| {
            PluginError::Option {
                key: format!("tbls.{}", tbl.name),
                message: e.to_string(),
            }
        })?;
    let after_load = match o.after_load.as_deref() {
        None | Some("keep") => AfterLoad::Keep,
        Some("delete") => AfterLoad::Delete,
        Some(m) if m.starts_with("move:") && m.len() > 5 => {
            AfterLoad::Move(m[5..].trim_end_matches('/').to_string())
        }
        Some(other) => {
            return Err(PluginError::Option {
                key: "after_load".into(),
                message: format!("`{other}` is not keep, delete or move:<remote dir>"),
            });
        }
    };
    Ok(TableOptions {
        connection: o
            .connection
            .unwrap_or_else(|| anchovy_core::connection::DEFAULT_ID.to_string()),
        after_load,
        csv,
    })
}

fn committed_state(ctx: &SessionCtx, key: &str) -> Option<FileState> {
    ctx.checkpoint(key)
        .and_then(|v| serde_json::from_value(v).ok())
}

#[async_trait]
impl Operator for SftpDownloader {
    fn sources(&self) -> Vec<Arc<dyn Source>> {
        vec![Arc::new(SftpSource {
            pending: self.pending.clone(),
        })]
    }

    fn record_reader(
        &self,
        tbl: &Tbl,
    ) -> Result<Option<Arc<dyn anchovy_core::reject::RecordReader>>, BoxError> {
        let o = options(tbl)?;
        Ok(Some(Arc::new(CsvFormat::new(&o.csv, &tbl.columns)?)))
    }

    async fn on_task(&self, ctx: &TaskCtx) -> Result<(), BoxError> {
        match ctx.task_type {
            // Fail fast when a table's connection is missing or malformed.
            TaskType::Xopen => {
                for t in ctx.session.config_tbls.iter() {
                    let o = options(t)?;
                    SftpTarget::from_connection(&ctx.session, &o.connection)?;
                }
            }
            // Every table task has committed by now: act on the files whose rows are durable.
            TaskType::Xclose => {
                let due: Vec<Pending> =
                    std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
                let mut by_cnxn: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
                for p in due {
                    let durable = committed_state(&ctx.session, &p.key)
                        .is_some_and(|s| s.size == p.file.size && s.mtime_ns == p.file.mtime_ns);
                    if durable {
                        by_cnxn.entry(p.connection.clone()).or_default().push(p);
                    }
                }
                for (cnxn, files) in by_cnxn {
                    let target = SftpTarget::from_connection(&ctx.session, &cnxn)?;
                    let done =
                        tokio::task::spawn_blocking(move || conn::after_load(&target, &files))
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
                let o = options(t)?;
                let target = SftpTarget::from_connection(ctx, &o.connection)?;
                let pattern = o.csv.path.clone();
                let files = tokio::task::spawn_blocking(move || {
                    let (_s, sftp) = target.connect()?;
                    conn::list(&sftp, &pattern)
                })
                .await
                .map_err(|e| PluginError::Data {
                    location: name.clone(),
                    message: e.to_string(),
                })??;
                Ok(format!(
                    "host key verified; {} files match {}",
                    files.len(),
                    o.csv.path
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

/// What the reader thread sends.
enum Item {
    Batch(anchovy_core::Batch),
    /// A file was read whole: checkpoint it (after its rows).
    Done {
        key: String,
        state: FileState,
        file: RemoteFile,
    },
    /// A file an earlier run committed.
    Committed {
        key: String,
        file: RemoteFile,
    },
    /// A file was skipped this run.
    Skipped {
        path: String,
        reason: &'static str,
    },
}

struct SftpSource {
    pending: Arc<Mutex<Vec<Pending>>>,
}

impl SftpSource {
    fn after_load(&self, connection: &str, action: &AfterLoad, key: String, file: RemoteFile) {
        if *action != AfterLoad::Keep {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Pending {
                    connection: connection.to_string(),
                    key,
                    file,
                    action: action.clone(),
                });
        }
    }
}

#[async_trait]
impl Source for SftpSource {
    async fn run(&self, ctx: &TaskCtx, out: &mut Emitter) -> Result<(), BoxError> {
        let tbl = ctx.tbl().clone();
        let TableOptions {
            connection,
            after_load,
            csv,
        } = options(&tbl)?;
        let target = SftpTarget::from_connection(&ctx.session, &connection)?;
        let format = CsvFormat::new(&csv, &tbl.columns)?;
        // What earlier runs committed, so the reader can skip unchanged files.
        let seen: HashMap<String, FileState> = ctx
            .checkpoints_matching(&format!("{}:*", tbl.name))
            .into_iter()
            .filter_map(|(k, v)| Some((k, serde_json::from_value(v).ok()?)))
            .collect();
        let batch_size = ctx.session.settings.batch_size;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Item>(READ_AHEAD);
        let table = tbl.name.clone();
        let pattern = csv.path.clone();
        let session = ctx.session.clone();
        // One collector for every file of the task; each read sends its own rejects.
        let mut rejects = ctx.rejects()?;
        let reader = tokio::task::spawn_blocking(move || -> Result<(), PluginError> {
            let mut read = 0u64;
            // The live connection; replaced when a read resumes on a new one.
            let mut live = target.connect()?;
            let files: Vec<RemoteFile> = conn::list(&live.1, &pattern)?;
            anchovy_core::failpoint::hit("sftp.listed")?;
            if files.is_empty() {
                tracing::warn!(table = %table, path = %pattern, host = %target.host, "no remote file matches the path glob");
            }
            for f in files {
                let key = format!("{table}:{}", f.path);
                if seen
                    .get(&key)
                    .is_some_and(|s| s.size == f.size && s.mtime_ns == f.mtime_ns)
                {
                    // Loaded by an earlier run (its after_load may still be due).
                    if tx.blocking_send(Item::Committed { key, file: f }).is_err() {
                        return Ok(());
                    }
                    continue;
                }
                if session.stop_for_budget(&table, read) {
                    return Ok(());
                }
                // Still being written? Its size or mtime moved since the listing.
                let now = conn::stat(&live.1, &f.path)?;
                if now.size != f.size || now.mtime_ns != f.mtime_ns {
                    if tx
                        .blocking_send(Item::Skipped {
                            path: f.path.clone(),
                            reason: "it is still being written",
                        })
                        .is_err()
                    {
                        return Ok(());
                    }
                    continue;
                }
                let file = live
                    .1
                    .open(std::path::Path::new(&f.path))
                    .map_err(|e| conn::ssh_err(&target, &format!("open {}", f.path), e))?;
                let mut stopped = false;
                let mut resumed = None;
                // Network reads on their own thread, overlapping the parsing.
                let rows = std::thread::scope(|scope| {
                    let (chunks_tx, chunks_rx) =
                        std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(4);
                    let (spare_tx, spare_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
                    let (target, f, resumed) = (&target, &f, &mut resumed);
                    let mut reopen = move |offset: u64| {
                        let (session, sftp) = target.connect_within(1)?;
                        conn::unchanged(&sftp, f)?;
                        let mut file = sftp
                            .open(std::path::Path::new(&f.path))
                            .map_err(|e| conn::ssh_err(target, &format!("open {}", f.path), e))?;
                        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset)).map_err(
                            |source| PluginError::Io {
                                op: "seek",
                                path: f.path.clone(),
                                source,
                            },
                        )?;
                        tracing::info!(file = %f.path, offset, "SFTP read resumed on a new connection");
                        *resumed = Some((session, sftp));
                        Ok(file)
                    };
                    scope.spawn(move || conn::read_ahead(file, &mut reopen, &chunks_tx, &spare_rx));
                    format.read(
                        Box::new(crate::chunks::ChunkReader::new(chunks_rx, spare_tx)),
                        &f.path,
                        &table,
                        batch_size,
                        &mut rejects,
                        &mut |b| {
                            let ok = tx.blocking_send(Item::Batch(b)).is_ok();
                            stopped |= !ok;
                            ok
                        },
                    )
                })?;
                if let Some(l) = resumed {
                    live = l;
                }
                if stopped {
                    return Ok(());
                }
                conn::unchanged(&live.1, &f).map_err(|e| match e {
                    PluginError::Data { message, .. } => PluginError::Data {
                        location: format!("{}{}", target.display(), f.path),
                        message,
                    },
                    e => e,
                })?;
                read += 1;
                session.budget.spend(rows, f.size);
                session.progress(&table, 0, 0, true);
                let state = FileState {
                    size: f.size,
                    mtime_ns: f.mtime_ns,
                    rows,
                };
                if tx
                    .blocking_send(Item::Done {
                        key,
                        state,
                        file: f,
                    })
                    .is_err()
                {
                    return Ok(());
                }
            }
            Ok(())
        });
        let (mut read, mut skipped, mut rows) = (0u64, 0u64, 0u64);
        while let Some(item) = rx.recv().await {
            match item {
                Item::Batch(b) => out.send_batch(b).await?,
                Item::Done { key, state, file } => {
                    rows += state.rows;
                    read += 1;
                    out.checkpoint(&key, &state).await?;
                    self.after_load(&connection, &after_load, key, file);
                }
                Item::Committed { key, file } => {
                    self.after_load(&connection, &after_load, key, file)
                }
                Item::Skipped { path, reason } => {
                    skipped += 1;
                    tracing::info!(table = %ctx.tbl_name(), file = %path, "skipped: {reason}; it is read on a later run");
                }
            }
        }
        reader.await.map_err(|e| PluginError::Data {
            location: ctx.tbl_name().to_string(),
            message: format!("the SFTP reader failed: {e}"),
        })??;
        ctx.log("files_read", read);
        ctx.log("files_skipped_in_progress", skipped);
        ctx.log("rows_read", rows);
        Ok(())
    }
}
