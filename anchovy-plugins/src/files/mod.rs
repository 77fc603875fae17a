//! `files.CsvDownloader`: files on the local filesystem, read incrementally.
//!
//! Each table's `path:` is a glob (`*`, `?`, `**`, `[a-z]`) walked by [`walk`] (each
//! real file once, symlink loops ended). Everything else is the shared file source
//! ([`crate::source`]): files in path order, a checkpoint `<table>:<path>` = `{size,
//! mtime_ns, rows}` committed with each file's rows, unchanged files skipped, changed
//! files read again whole, a file that changes while it is read failing the table,
//! `format:` csv (default), json or parquet, and `after_load: delete | move:<dir>`.

pub mod walk;

use std::path::Path;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use anchovy_core::OperatorSpec;
use anchovy_core::operator::OperatorKind;

use crate::error::PluginError;
use crate::source::{
    AfterLoad, Counters, Entry, FileDownloader, Opened, Transport, TransportSpec, move_names,
    no_free_name,
};

/// The registry entry.
pub const SPEC: OperatorSpec = OperatorSpec {
    name: "files.CsvDownloader",
    description: "Downloads CSV/TSV (or `format: json | parquet`) files from the local filesystem (glob per table), incrementally: a rerun reads only new or changed files.",
    kind: OperatorKind::Downloader,
    connections: &[],
    env_vars: &[],
    table_options: crate::source::OPTIONS,
    build: |_| Ok(Arc::new(FileDownloader::new(TRANSPORT, "csv"))),
};

/// Moves `from` into `dir` under the first free name of [`move_names`]: a hard link
/// (which never replaces an existing file) then the unlink of the original; where
/// links fail (another filesystem), a rename to a name seen free.
fn move_to_free_name(from: &Path, dir: &str) -> std::io::Result<()> {
    let name = from.file_name().unwrap_or_default().to_string_lossy();
    for candidate in move_names(&name) {
        let to = Path::new(dir).join(candidate);
        match std::fs::hard_link(from, &to) {
            Ok(()) => return std::fs::remove_file(from),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(e),
            Err(_) if to.exists() => continue,
            Err(_) => return std::fs::rename(from, &to),
        }
    }
    Err(no_free_name(&name, dir))
}

/// Local files as a transport.
pub const TRANSPORT: TransportSpec = TransportSpec {
    id: "files",
    counters: Counters {
        noun: "files",
        read: "files_read",
        unchanged: "files_skipped",
        changed: "files_skipped_in_progress",
    },
    connect: |_, o| {
        Ok(Box::new(LocalFiles {
            pattern: o.path.clone(),
        }))
    },
};

/// The files of one table's glob.
struct LocalFiles {
    pattern: String,
}

fn stat(path: &Path) -> Result<(u64, u128), PluginError> {
    let m = std::fs::metadata(path).map_err(|source| PluginError::Io {
        op: "stat",
        path: walk::path_text(path),
        source,
    })?;
    let mtime_ns = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok((m.len(), mtime_ns))
}

fn unchanged(e: &Entry) -> Result<bool, PluginError> {
    let (size, mtime_ns) = stat(&e.location)?;
    Ok(size == e.size && Some(mtime_ns) == e.mtime_ns)
}

impl Transport for LocalFiles {
    fn list(&mut self) -> Result<Vec<Entry>, PluginError> {
        walk::list(&self.pattern)?
            .into_iter()
            .map(|p| {
                let (size, mtime_ns) = stat(&p)?;
                Ok(Entry {
                    name: walk::path_text(&p),
                    location: p,
                    size,
                    mtime_ns: Some(mtime_ns),
                    etag: None,
                    last_modified: None,
                })
            })
            .collect()
    }

    fn open(&mut self, e: &Entry, offset: u64) -> Result<Opened, PluginError> {
        if !unchanged(e)? {
            return Ok(Opened::Changed(
                "it changed since it was listed (still being written?)",
            ));
        }
        let io = |op| {
            move |source| PluginError::Io {
                op,
                path: e.name.clone(),
                source,
            }
        };
        let mut f = std::fs::File::open(&e.location).map_err(io("open"))?;
        if offset > 0 {
            std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset)).map_err(io("seek"))?;
        }
        Ok(Opened::Reader(Box::new(f)))
    }

    fn verify(&mut self, e: &Entry) -> Result<(), PluginError> {
        if unchanged(e)? {
            return Ok(());
        }
        Err(PluginError::Data {
            location: e.name.clone(),
            message: "the file changed while it was being read; nothing of it is committed, it is read again on the next run".into(),
        })
    }

    fn after_load(&mut self, entries: &[Entry], action: &AfterLoad) -> Result<u64, PluginError> {
        let mut n = 0;
        for e in entries {
            let r = match action {
                AfterLoad::Keep => continue,
                AfterLoad::Delete => std::fs::remove_file(&e.location),
                AfterLoad::Move(dir) => {
                    std::fs::create_dir_all(dir).and_then(|()| move_to_free_name(&e.location, dir))
                }
            };
            match r {
                Ok(()) => n += 1,
                // Already gone: an earlier run got to it first.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(PluginError::Io {
                        op: "after_load",
                        path: format!("{} ({action:?})", e.name),
                        source,
                    });
                }
            }
        }
        Ok(n)
    }
}
