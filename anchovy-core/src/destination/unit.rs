//! Units of a load, and reading their data files.

use std::sync::Arc;

use crate::commit::CommitRecord;
use crate::data::FileEntry;
use crate::datastore::Datastore;
use crate::error::Error;
use crate::row::Batch;
use crate::tbl::{ColType, Tbl};

/// Consecutive commits loaded in one transaction.
#[derive(Debug, Clone)]
pub struct Unit {
    /// The table's files with the upstream commit each belongs to, in commit order.
    pub files: Vec<(u64, FileEntry)>,
    /// The last commit of the unit: the position once it is loaded.
    pub end: u64,
    /// Commits in the unit.
    pub commits: u64,
}

/// Splits the commits after the position into units of at most `max_rows` rows
/// (a single bigger commit is one unit). The last unit ends at the last commit, even
/// when the table has no files in it, so the position moves past unrelated commits.
pub fn units(commits: &[CommitRecord], tbl: &str, last: u64, max_rows: u64) -> Vec<Unit> {
    let empty = || Unit {
        files: vec![],
        end: 0,
        commits: 0,
    };
    let mut out: Vec<Unit> = Vec::new();
    let mut cur = empty();
    let mut rows = 0u64;
    for c in commits {
        let files: Vec<(u64, FileEntry)> = c
            .files
            .iter()
            .filter(|f| f.tbl == tbl)
            .map(|f| (c.seq, f.clone()))
            .collect();
        let n: u64 = files.iter().map(|(_, f)| f.rows).sum();
        if rows > 0 && rows + n > max_rows {
            out.push(std::mem::replace(&mut cur, empty()));
            rows = 0;
        }
        rows += n;
        cur.files.extend(files);
        cur.end = c.seq;
        cur.commits += 1;
    }
    cur.end = last;
    out.push(cur);
    out
}

/// The columns of a unit in first-seen order, typed: declared type, else inferred.
pub fn unit_columns(unit: &Unit, tbl: &Tbl) -> Vec<(String, ColType)> {
    let mut cols: Vec<(String, ColType)> = Vec::new();
    for (_, f) in &unit.files {
        for (c, t) in &f.columns {
            match cols.iter_mut().find(|(n, _)| n == c) {
                Some((_, e)) => *e = e.widen(*t),
                None => cols.push((c.clone(), *t)),
            }
        }
    }
    for (c, t) in cols.iter_mut() {
        if let Some(declared) = tbl.columns.get(c) {
            *t = *declared;
        }
    }
    // A declared column whose values were all NULL in this unit is still a column.
    for (c, t) in &tbl.columns {
        if !cols.iter().any(|(n, _)| n == c) {
            cols.push((c.clone(), *t));
        }
    }
    cols
}

/// Batches of a unit's files, each with the upstream commit it belongs to.
pub type UnitBatches = tokio::sync::mpsc::Receiver<Result<(u64, Batch), Error>>;

/// What a destination does to each batch before it is handed out (rename columns,
/// refuse rows): `(batch, file key, commit, rows of the file before it)`.
pub type BatchMap = Arc<dyn Fn(Batch, &str, u64, u64) -> Result<Batch, Error> + Send + Sync>;

/// Reads and decodes the unit's files (each verified against its commit record, in
/// its own format) in their own task, handing batches over a bounded channel, so the
/// destination ingests while the next batch is decoded. The first error ends the
/// stream. Abort the handle when done with the receiver early.
pub fn read_unit(
    ds: &Datastore,
    unit: &Unit,
    batch_size: usize,
    map: BatchMap,
) -> (UnitBatches, tokio::task::JoinHandle<()>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<(u64, Batch), Error>>(4);
    let ds = ds.clone();
    let files: Vec<(u64, FileEntry)> = unit.files.clone();
    let reader = tokio::spawn(async move {
        for (seq, f) in files {
            let mut row0 = 0u64;
            let mut r = match crate::data::open_committed(&ds, &f, seq, batch_size).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            loop {
                match r.next_batch().await {
                    Ok(Some(b)) => {
                        let n = b.rows.len() as u64;
                        let b = match map(b, &f.key, seq, row0) {
                            Ok(b) => b,
                            Err(e) => {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                        };
                        row0 += n;
                        if tx.send(Ok((seq, b))).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            if let Err(e) = crate::failpoint::hit("upload.staged_file") {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    });
    (rx, reader)
}
