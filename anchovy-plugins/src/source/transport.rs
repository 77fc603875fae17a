//! The transport seam: how a file-like source lists, opens and tidies its files.
//!
//! A [`Transport`] is what differs between local files, SFTP and object stores; the
//! rest (change detection, checkpoints, budgets, read-ahead, decompression, formats,
//! quarantine, progress) is [`super`]'s, written once. A transport is blocking and is
//! used from one reader thread per table task; one that talks to an async client
//! (object_store) blocks on the runtime handle there.

use std::io::Read;
use std::path::PathBuf;

use anchovy_core::SessionCtx;
use serde::{Deserialize, Serialize};

use super::AfterLoad;
use crate::error::PluginError;

/// One file as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The printable name: a path or URL. Checkpoint keys (`<table>:<name>`), `_file`
    /// and messages use it.
    pub name: String,
    /// The transport's own address of the file (a local path, a remote path, an
    /// object key).
    pub location: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Modification time in nanoseconds since the epoch, where the transport has one
    /// that changes with the content (local files, SFTP).
    pub mtime_ns: Option<u128>,
    /// The entity tag, where the transport has one (object stores).
    pub etag: Option<String>,
    /// Last modified (RFC 3339), informative.
    pub last_modified: Option<String>,
}

/// What a file's checkpoint remembers: the listing it was read at and its rows.
///
/// Serialized as `{size, mtime_ns, rows}` for local and SFTP files and `{size, etag,
/// last_modified, rows}` for objects, as before the transports shared this type, so
/// the checkpoints of earlier runs still match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryState {
    /// Size in bytes when read.
    pub size: u64,
    /// Modification time when read (ns since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_ns: Option<u128>,
    /// The entity tag read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Last modified when read (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// Records read from it.
    #[serde(default)]
    pub rows: u64,
    /// When a listing first missed the file (RFC 3339); cleared when it is listed
    /// again. A checkpoint whose file stayed missing for the table's `forget_after` is
    /// deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone_since: Option<String>,
}

impl EntryState {
    /// The state of `e` read with `rows` records.
    pub fn of(e: &Entry, rows: u64) -> EntryState {
        EntryState {
            size: e.size,
            mtime_ns: e.mtime_ns,
            etag: e.etag.clone(),
            last_modified: e.last_modified.clone(),
            rows,
            gone_since: None,
        }
    }

    /// Whether `e` is the file this state was read from: same size, and same mtime
    /// and etag (each compared where the transport has one).
    pub fn matches(&self, e: &Entry) -> bool {
        self.size == e.size && self.mtime_ns == e.mtime_ns && self.etag == e.etag
    }
}

/// A file opened for reading, or the reason it is left for a later run.
pub enum Opened {
    /// Its bytes, from the requested offset.
    Reader(Box<dyn Read + Send>),
    /// It is no longer as listed (still being written, replaced, gone): skipped this
    /// run, read on a later one.
    Changed(&'static str),
}

/// Lists, opens and tidies the files of one table.
pub trait Transport: Send {
    /// The files the table's `path:` matches, sorted by name, each once.
    ///
    /// # Errors
    /// A bad glob, an unreachable server or store, refused credentials.
    fn list(&mut self) -> Result<Vec<Entry>, PluginError>;

    /// Opens `e` at byte `offset`. At offset 0 (a new read) a file that is no longer
    /// as listed is [`Opened::Changed`]. A larger offset resumes a read that failed
    /// mid-file (only when [`Transport::resumable`]): on a fresh connection, and only
    /// if the file is still exactly as listed (an error otherwise).
    ///
    /// # Errors
    /// The file cannot be opened, or changed before a resume.
    fn open(&mut self, e: &Entry, offset: u64) -> Result<Opened, PluginError>;

    /// Checked after the read: `e` is still as listed. An error fails the table (nothing
    /// of the file is committed; it is read again on the next run).
    ///
    /// # Errors
    /// [`PluginError::Data`] when it changed while being read.
    fn verify(&mut self, e: &Entry) -> Result<(), PluginError>;

    /// Whether a read that fails mid-file may be resumed with [`Transport::open`] at
    /// the byte where it stopped.
    fn resumable(&self) -> bool {
        false
    }

    /// Deletes or moves `entries` (whose rows are committed). Returns how many were.
    ///
    /// # Errors
    /// The first delete or move that failed (the next run tries again).
    fn after_load(&mut self, entries: &[Entry], action: &AfterLoad) -> Result<u64, PluginError>;

    /// A note for `anchovy healthcheck` before the count of files (`host key verified;`).
    fn health_note(&self) -> &'static str {
        ""
    }
}

/// Task log field names of a transport's counters.
#[derive(Debug, Clone, Copy)]
pub struct Counters {
    /// What a file is called (`files`, `objects`), in messages.
    pub noun: &'static str,
    /// Files read this run.
    pub read: &'static str,
    /// Files skipped because their checkpoint matches.
    pub unchanged: &'static str,
    /// Files skipped because they changed since listing (read on a later run).
    pub changed: &'static str,
}

/// One registered transport.
#[derive(Clone, Copy)]
pub struct TransportSpec {
    /// Its id, the prefix of its failpoints (`<id>.listed`, `<id>.chunk`).
    pub id: &'static str,
    /// Task log names.
    pub counters: Counters,
    /// Opens a table's transport (no I/O yet: connecting happens in `list`).
    pub connect: Connect,
}

/// Opens a table's transport from the session and the table's source options.
pub type Connect =
    fn(&SessionCtx, &super::SourceOptions) -> Result<Box<dyn Transport>, PluginError>;
