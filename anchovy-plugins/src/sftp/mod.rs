//! `sftp.CsvDownloader`: CSV/TSV (or `format: json | parquet`) files on SFTP servers,
//! read incrementally, over `ssh2`: the SFTP [`Transport`] of the shared file source
//! ([`crate::source`]).
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
//! - **Streaming**: ssh2 is blocking; the shared source's reader thread owns the
//!   session, a read-ahead thread overlaps network reads with parsing, and a read that
//!   drops mid-file resumes on a new connection at the byte where it stopped.

pub mod conn;

use std::path::PathBuf;
use std::sync::Arc;

use anchovy_core::operator::OperatorKind;
use anchovy_core::{OperatorSpec, OptionDoc};
use ssh2::{Session, Sftp};

use self::conn::{RemoteFile, SftpTarget};
use crate::error::PluginError;
use crate::source::{AfterLoad, Counters, Entry, FileDownloader, Opened, Transport, TransportSpec};

/// The registry entry.
pub const SPEC: OperatorSpec = OperatorSpec {
    name: "sftp.CsvDownloader",
    description: "Downloads CSV/TSV (or `format: json | parquet`) files from SFTP servers (remote glob per table), incrementally, with verified host keys.",
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
    table_options: crate::source::OPTIONS,
    build: |_| Ok(Arc::new(FileDownloader::new(TRANSPORT, "csv"))),
};

/// SFTP as a transport.
pub const TRANSPORT: TransportSpec = TransportSpec {
    id: "sftp",
    counters: Counters {
        noun: "files",
        read: "files_read",
        unchanged: "files_skipped",
        changed: "files_skipped_in_progress",
    },
    connect: |ctx, o| {
        let id = o
            .connection
            .as_deref()
            .unwrap_or(anchovy_core::connection::DEFAULT_ID);
        Ok(Box::new(SftpFiles {
            target: SftpTarget::from_connection(ctx, id)?,
            pattern: o.path.clone(),
            live: None,
        }))
    },
};

/// The files of one table's remote glob, over one live connection.
struct SftpFiles {
    target: SftpTarget,
    pattern: String,
    /// The live connection; replaced when a read resumes on a new one.
    live: Option<(Session, Sftp)>,
}

impl SftpFiles {
    fn sftp(&mut self) -> Result<&Sftp, PluginError> {
        let live = match self.live.take() {
            Some(l) => l,
            None => self.target.connect()?,
        };
        Ok(&self.live.insert(live).1)
    }
}

fn remote(e: &Entry) -> RemoteFile {
    RemoteFile {
        path: e.name.clone(),
        size: e.size,
        mtime_ns: e.mtime_ns.unwrap_or(0),
    }
}

impl Transport for SftpFiles {
    fn list(&mut self) -> Result<Vec<Entry>, PluginError> {
        let pattern = self.pattern.clone();
        let files = conn::list(self.sftp()?, &pattern)?;
        Ok(files
            .into_iter()
            .map(|f| Entry {
                location: PathBuf::from(&f.path),
                name: f.path,
                size: f.size,
                mtime_ns: Some(f.mtime_ns),
                etag: None,
                last_modified: None,
            })
            .collect())
    }

    fn open(&mut self, e: &Entry, offset: u64) -> Result<Opened, PluginError> {
        let f = remote(e);
        if offset == 0 {
            // Still being written? Its size or mtime moved since the listing.
            let now = conn::stat(self.sftp()?, &f.path)?;
            if now.size != f.size || now.mtime_ns != f.mtime_ns {
                return Ok(Opened::Changed("it is still being written"));
            }
            let file = self
                .sftp()?
                .open(&e.location)
                .map_err(|err| conn::ssh_err(&self.target, &format!("open {}", f.path), err))?;
            return Ok(Opened::Reader(Box::new(file)));
        }
        // A resume: a new connection, the file unchanged, at the byte where it stopped.
        let (session, sftp) = self.target.connect_within(1)?;
        conn::unchanged(&sftp, &f)?;
        let mut file = sftp
            .open(&e.location)
            .map_err(|err| conn::ssh_err(&self.target, &format!("open {}", f.path), err))?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset)).map_err(|source| {
            PluginError::Io {
                op: "seek",
                path: f.path.clone(),
                source,
            }
        })?;
        self.live = Some((session, sftp));
        Ok(Opened::Reader(Box::new(file)))
    }

    fn verify(&mut self, e: &Entry) -> Result<(), PluginError> {
        let location = format!("{}{}", self.target.display(), e.name);
        conn::unchanged(self.sftp()?, &remote(e)).map_err(|err| match err {
            PluginError::Data { message, .. } => PluginError::Data { location, message },
            err => err,
        })
    }

    fn resumable(&self) -> bool {
        true
    }

    fn after_load(&mut self, entries: &[Entry], action: &AfterLoad) -> Result<u64, PluginError> {
        let paths: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        conn::after_load(self.sftp()?, &paths, action)
    }

    fn health_note(&self) -> &'static str {
        "host key verified;"
    }
}
