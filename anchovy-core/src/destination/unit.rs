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
    /// `mode: replace`: the unit's rows are the table's whole new content (the target
    /// is emptied first, in the same transaction), even when there are none.
    pub replace: bool,
}

/// Splits the commits after the position into units of at most `max_rows` rows
/// (a single bigger commit is one unit). The last unit ends at the last commit, even
/// when the table has no files in it, so the position moves past unrelated commits.
pub fn units(commits: &[CommitRecord], tbl: &str, last: u64, max_rows: u64) -> Vec<Unit> {
    let empty = || Unit {
        files: vec![],
        end: 0,
        commits: 0,
        replace: false,
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

/// `mode: replace`: one unit ending at `last` that holds the newest snapshot among the
/// commits: the newest commit that delivers files of `tbl` or carries a snapshot
/// marker for `name` (a full read of `sql.Downloader`, which may be empty). Older
/// commits are passed over: their rows are superseded. No such commit: a unit that
/// only moves the position.
pub fn snapshot_unit(commits: &[CommitRecord], tbl: &str, name: &str, last: u64) -> Unit {
    let newest = commits.iter().rev().find(|c| {
        c.files.iter().any(|f| f.tbl == tbl)
            || c.checkpoints
                .get(name)
                .and_then(|v| v.as_ref())
                .is_some_and(|v| v.get("snapshot").is_some())
    });
    Unit {
        files: newest
            .map(|c| {
                c.files
                    .iter()
                    .filter(|f| f.tbl == tbl)
                    .map(|f| (c.seq, f.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        end: last,
        commits: commits.len() as u64,
        replace: newest.is_some(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(seq: u64, files: &[(&str, u64)], snapshot_of: Option<&str>) -> CommitRecord {
        CommitRecord {
            seq,
            anchovy_id: "up".into(),
            anchovy_user: "u".into(),
            session_id: "s".into(),
            batch_id: seq,
            tbl: None,
            worker: None,
            committed_at: "2024-01-01T00:00:00Z".into(),
            files: files
                .iter()
                .map(|(t, rows)| FileEntry {
                    tbl: t.to_string(),
                    key: format!("data/{t}/{seq}"),
                    rows: *rows,
                    bytes: 1,
                    raw_bytes: 1,
                    columns: vec![],
                    crc32: None,
                    format: Default::default(),
                    staged: None,
                })
                .collect(),
            checkpoints: snapshot_of
                .map(|t| {
                    [(
                        t.to_string(),
                        Some(serde_json::json!({"snapshot": "s", "rows": 0})),
                    )]
                    .into_iter()
                    .collect()
                })
                .unwrap_or_default(),
            lease_token: None,
        }
    }

    /// The newest snapshot wins, even an empty one; other tables' commits only move
    /// the position; with none, the unit replaces nothing.
    #[test]
    fn a_replace_unit_is_the_newest_snapshot() {
        let c = vec![
            commit(1, &[("t", 5)], Some("t")),
            commit(2, &[("t", 7), ("o", 1)], Some("t")),
            commit(3, &[("o", 2)], None),
        ];
        let u = snapshot_unit(&c, "t", "t", 3);
        assert!(u.replace);
        assert_eq!(u.end, 3);
        assert_eq!(
            u.files
                .iter()
                .map(|(s, f)| (*s, f.rows))
                .collect::<Vec<_>>(),
            vec![(2, 7)]
        );
        // An empty snapshot (a full read of an empty source table) empties the table.
        let mut c = c;
        c.push(commit(4, &[], Some("t")));
        let u = snapshot_unit(&c, "t", "t", 4);
        assert!(u.replace && u.files.is_empty());
        let u = snapshot_unit(&c[2..3], "t", "t", 3);
        assert!(!u.replace && u.files.is_empty() && u.end == 3);
    }

    /// Seeded: random histories of commits (this table's rows, another table's,
    /// empty snapshots, nothing) against the model "the replace unit holds exactly the
    /// files of the newest commit that has rows of the table or a snapshot marker, and
    /// ends at the last commit"; and `units(.., 0)` puts each commit with rows alone.
    #[test]
    fn replace_and_range_units_match_their_model_on_random_histories() {
        let seed = std::env::var("UNITS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        let mut rng = crate::testutil::Rng(seed);
        for _ in 0..500 {
            let n = rng.below(8) as u64 + 1;
            let c: Vec<CommitRecord> = (1..=n)
                .map(|seq| match rng.below(4) {
                    0 => commit(seq, &[("t", rng.below(5) + 1)], Some("t")),
                    1 => commit(seq, &[("t", rng.below(5) + 1), ("o", 1)], None),
                    2 => commit(seq, &[], Some("t")),
                    _ => commit(seq, &[("o", 2)], None),
                })
                .collect();
            let newest = c
                .iter()
                .rev()
                .find(|c| c.files.iter().any(|f| f.tbl == "t") || c.checkpoints.contains_key("t"));
            let u = snapshot_unit(&c, "t", "t", n);
            assert_eq!(u.end, n, "seed {seed}");
            assert_eq!(u.replace, newest.is_some(), "seed {seed}");
            let want: Vec<u64> = newest
                .map(|c| {
                    c.files
                        .iter()
                        .filter(|f| f.tbl == "t")
                        .map(|_| c.seq)
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(
                u.files.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
                want,
                "seed {seed}"
            );
            let per = units(&c, "t", n, 0);
            assert_eq!(per.last().unwrap().end, n, "seed {seed}");
            for u in &per {
                let mut seqs: Vec<u64> = u.files.iter().map(|(s, _)| *s).collect();
                seqs.dedup();
                assert!(seqs.len() <= 1, "seed {seed}: {seqs:?}");
            }
            let all: usize = per.iter().map(|u| u.files.len()).sum();
            let want_all = c
                .iter()
                .flat_map(|c| &c.files)
                .filter(|f| f.tbl == "t")
                .count();
            assert_eq!(all, want_all, "seed {seed}: files lost or doubled");
        }
    }

    /// With no row limit (replace_where), every commit with rows is a unit of its own.
    #[test]
    fn a_zero_row_limit_makes_one_unit_per_commit() {
        let c = vec![
            commit(1, &[("t", 5)], None),
            commit(2, &[("o", 5)], None),
            commit(3, &[("t", 1)], None),
        ];
        let u = units(&c, "t", 3, 0);
        let files: Vec<Vec<u64>> = u
            .iter()
            .map(|u| u.files.iter().map(|(s, _)| *s).collect())
            .collect();
        assert!(files.iter().all(|f| f.len() <= 1), "{files:?}");
        assert_eq!(files.concat(), vec![1, 3]);
        assert_eq!(u.last().unwrap().end, 3);
    }
}
