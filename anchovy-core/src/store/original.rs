//! The original tool's datastore, read: an uploader whose upstream the original
//! (Python) anchovies wrote, during a migration one process at a time.
//!
//! The original writes no commit record. Its downloader writes each data file of a
//! table as `data/<table>/<YYYYmmddHHMMSS>.<3 hex>.json.gz`, named by the UTC second
//! it was started, visible only when it is complete, and its uploader takes the files
//! of each day in name order. Here each such file stands for one commit of its table,
//! numbered from its name ([`file_seq`]: the second, then the three hex digits), so a
//! position means the same files whatever is listed later (a file removed or added
//! below it moves nothing), and the files load in the original's order.
//!
//! **What exactly-once means for such an upstream** (there is no record to hold the
//! writer to): a file is loaded once, by its name, in name order, and only once its
//! name's time and its modification time are both older than `original_settle`
//! (default ten minutes), as are those of every file named before it
//! ([`Listing::loadable`]): the original names a file when it starts it and shows it
//! only when it is complete, so a file started earlier than a loaded one but shown
//! later would be skipped; the settle time must exceed the original downloader's
//! longest batch. A file is read
//! once to count its rows and take its size and checksum (the record it lacks), and
//! checked against them again as it is loaded, so a file changed in between fails
//! the load instead of loading something else. Files of another naming in `data/`
//! (the original's custom `path:` tables, stray files) are not loaded; the task log
//! counts them (`original_files_ignored`).

use chrono::{DateTime, NaiveDateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use crate::commit::CommitRecord;
use crate::data::ndjson::DataFileReader;
use crate::datastore::{Datastore, Entry, layout};
use crate::error::Result;

/// The origin of every original upstream's history (see [`crate::commit::origin`]):
/// file numbers come from names, so they mean the same files for any history.
pub const ORIGIN: &str = "the original tool's data files";

/// The commit number of an original data file: its name's UTC second
/// (`YYYYmmddHHMMSS`) times 4096 plus its three hex digits, so numbers sort as the
/// names do. `None` for a name of another form.
pub fn file_seq(name: &str) -> Option<u64> {
    let (ts, rest) = name.split_once('.')?;
    let (hex, ext) = rest.split_once('.')?;
    if ext != "json.gz" || hex.len() != 3 {
        return None;
    }
    file_time(ts)?;
    let ts: u64 = ts.parse().ok()?;
    let hex = u64::from_str_radix(hex, 16).ok()?;
    Some(ts * 4096 + hex)
}

/// The name of the original data file numbered `seq` ([`file_seq`]'s inverse).
pub fn file_name(seq: u64) -> String {
    format!("{:014}.{:03x}.json.gz", seq / 4096, seq % 4096)
}

/// The number of the first file name of `t`'s second (`<second>.000`).
pub fn first_seq_of(t: DateTime<Utc>) -> u64 {
    t.format("%Y%m%d%H%M%S")
        .to_string()
        .parse::<u64>()
        .unwrap_or_default()
        * 4096
}

/// The number after `seq`: its second's next hex digits, or the next second's first.
pub fn next_seq(seq: u64) -> u64 {
    if seq % 4096 < 0xfff {
        return seq + 1;
    }
    file_time(&format!("{:014}", seq / 4096))
        .map_or(seq + 1, |t| first_seq_of(t + chrono::Duration::seconds(1)))
}

/// The UTC second in a name's `YYYYmmddHHMMSS` part.
fn file_time(ts: &str) -> Option<DateTime<Utc>> {
    if ts.len() != 14 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    NaiveDateTime::parse_from_str(ts, "%Y%m%d%H%M%S")
        .ok()
        .map(|t| t.and_utc())
}

/// A table's original data files, as one load sees them.
#[derive(Debug, Default)]
pub struct Listing {
    /// Files named as the original names them, by number (ascending), each with
    /// whether it is settled (its name's time and its modification time older than
    /// the settle time).
    pub files: Vec<(u64, Entry, bool)>,
    /// Files of another naming, not loaded.
    pub ignored: u64,
}

impl Listing {
    /// Whether the table's folder holds files named as the original names them (an
    /// upstream without commit records is then read as the original wrote it).
    pub fn is_original(&self) -> bool {
        !self.files.is_empty()
    }

    /// The files to load after position `after`: those numbered after it, in order, up
    /// to the first that is not settled. A prefix, never a file past one that is still
    /// unsettled: that one would be skipped once the position moved past it.
    pub fn loadable(&self, after: u64) -> impl Iterator<Item = (u64, &Entry)> {
        self.files
            .iter()
            .filter(move |(s, _, _)| *s > after)
            .take_while(|(_, _, settled)| *settled)
            .map(|(s, e, _)| (*s, e))
    }

    /// Files after `after` left for a later load (not settled, or after one that is
    /// not).
    pub fn waiting(&self, after: u64) -> usize {
        self.files.iter().filter(|(s, _, _)| *s > after).count() - self.loadable(after).count()
    }
}

/// Lists the data files of `tbl` in `ds` in number order, settled when both their
/// name's time and their modification time are older than `now - settle`.
///
/// # Errors
/// [`crate::Error::Datastore`] when it cannot be listed.
pub async fn list(
    ds: &Datastore,
    tbl: &str,
    settle: std::time::Duration,
    now: DateTime<Utc>,
) -> Result<Listing> {
    let prefix = format!("{}/{}", layout::DATA, layout::segment(tbl));
    let cutoff = now - chrono::Duration::from_std(settle).unwrap_or(chrono::Duration::MAX);
    let mut out = Listing::default();
    for e in ds.list(&prefix).await? {
        let name = e.key.rsplit('/').next().unwrap_or_default();
        // Only the table's own folder: not a deeper one.
        let direct = e.key.len() == prefix.len() + 1 + name.len();
        match file_seq(name) {
            Some(seq) if direct => {
                let named = name.get(..14).and_then(file_time);
                let settled = named.is_some_and(|t| t < cutoff) && e.modified < cutoff;
                out.files.push((seq, e, settled));
            }
            _ => out.ignored += 1,
        }
    }
    out.files.sort_by_key(|(s, _, _)| *s);
    Ok(out)
}

/// One commit record per file of `listing` to load after `after` ([`Listing::loadable`]), each read
/// once to describe it ([`DataFileReader::survey`]), four at a time, in order.
///
/// # Errors
/// [`crate::Error::Datastore`] or [`crate::Error::Data`] for a file that cannot be read
/// (not gzip, not JSON lines): it names the file.
pub async fn commits(
    ds: &Datastore,
    tbl: &str,
    listing: &Listing,
    after: u64,
) -> Result<Vec<CommitRecord>> {
    // Owned inputs: the stream is polled inside `async_trait` futures, which need it
    // free of borrowed closure arguments.
    let todo: Vec<(u64, String, DateTime<Utc>)> = listing
        .loadable(after)
        .map(|(s, e)| (s, e.key.clone(), e.modified))
        .collect();
    futures::stream::iter(todo)
        .map(|(seq, key, modified)| {
            let (ds, tbl) = (ds.clone(), tbl.to_string());
            async move {
                let entry = DataFileReader::survey(&ds, &tbl, &key).await?;
                Ok::<_, crate::Error>(CommitRecord {
                    seq,
                    anchovy_id: String::new(),
                    anchovy_user: String::new(),
                    session_id: ORIGIN.to_string(),
                    batch_id: 0,
                    tbl: Some(tbl),
                    committed_at: modified.to_rfc3339(),
                    files: vec![entry],
                    checkpoints: Default::default(),
                    lease_token: None,
                    worker: None,
                })
            }
        })
        .buffered(4)
        .try_collect()
        .await
}

/// One checkpoint the original tool wrote: `$checkpoints/<key>`, its value as raw text.
#[derive(Debug, Clone, PartialEq)]
pub struct OriginalCheckpoint {
    /// The key (`dl.items.last.timestamp`).
    pub key: String,
    /// The stored text.
    pub text: String,
    /// Its object's key in the anchovy's area.
    pub object: String,
    /// When it was written.
    pub modified: DateTime<Utc>,
}

/// The checkpoints the original tool wrote in `ds` (objects directly in `$checkpoints/`
/// without this project's `.json` mirrors and markers), in key order. This project's
/// runs do not read them; `anchovy checkpoints` lists (and `-D` deletes) them, and
/// `anchovy migrate` turns an original uploader's into positions.
///
/// # Errors
/// [`crate::Error::Datastore`] when they cannot be listed or read.
pub async fn checkpoints(ds: &Datastore) -> Result<Vec<OriginalCheckpoint>> {
    let prefix = format!("{}/", layout::CHECKPOINTS);
    let mut out = Vec::new();
    for e in ds.list(layout::CHECKPOINTS).await? {
        let Some(name) = e.key.strip_prefix(&prefix) else {
            continue;
        };
        if name.contains('/')
            || name.ends_with(".json")
            || e.key == layout::CHECKPOINTS_APPLIED
            || e.key == layout::CHECKPOINTS_STATE
        {
            continue;
        }
        let Some(bytes) = ds.get(&e.key).await? else {
            continue;
        };
        out.push(OriginalCheckpoint {
            key: name.to_string(),
            text: String::from_utf8_lossy(&bytes).trim_end().to_string(),
            object: e.key.clone(),
            modified: e.modified,
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_invert_and_count_up_across_seconds() {
        for n in ["20261203181926.58a.json.gz", "20240229235959.fff.json.gz"] {
            assert_eq!(file_name(file_seq(n).unwrap()), n);
        }
        let last = file_seq("20241231235959.fff.json.gz").unwrap();
        assert_eq!(file_name(next_seq(last)), "20250101000000.000.json.gz");
        let mid = file_seq("20241231235959.00f.json.gz").unwrap();
        assert_eq!(file_name(next_seq(mid)), "20241231235959.010.json.gz");
        let t = file_time("20241231235959").unwrap();
        assert_eq!(file_name(first_seq_of(t)), "20241231235959.000.json.gz");
    }

    #[test]
    fn numbers_sort_as_names_and_refuse_other_forms() {
        let a = file_seq("20261203181926.58a.json.gz").unwrap();
        let b = file_seq("20261203181926.58b.json.gz").unwrap();
        let c = file_seq("20261203181927.000.json.gz").unwrap();
        assert!(a < b && b < c);
        assert_eq!(c - file_seq("20261203181926.fff.json.gz").unwrap(), 1);
        // Fits a signed 64-bit column (positions are stored as BIGINT).
        assert!(file_seq("99991231235959.fff.json.gz").unwrap() < i64::MAX as u64);
        for bad in [
            "20261203181926.58a.ndjson.gz",
            "20261303181926.58a.json.gz",
            "2026120318192.58a.json.gz",
            "20261203181926.58.json.gz",
            "20261203181926.xyz.json.gz",
            "x.parquet",
            "",
        ] {
            assert_eq!(file_seq(bad), None, "{bad}");
        }
    }

    /// One original data file: a gzip JSON line naming itself.
    fn gz(name: &str) -> Vec<u8> {
        use std::io::Write as _;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        writeln!(e, "{{\"f\":\"{name}\",\"_types\":\"\"}}").unwrap();
        e.finish().unwrap()
    }

    /// The reference model of reading an original upstream, against a simulated
    /// writer: the original starts files at random times (named by that second) and
    /// shows each only when it is complete, up to `WRITE` later; a reader runs at
    /// random moments and loads what [`list`] and [`commits`] give after its position.
    /// With a settle time longer than the longest write, every file loads exactly once
    /// and in name order, whatever the schedule. With a settle time too short the
    /// same schedules lose files: the bound is what the guarantee rests on.
    async fn schedule(seed: u64, settle: u64) -> std::result::Result<(), String> {
        const WRITE: i64 = 120;
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path().to_str().unwrap()).unwrap();
        let folder = dir.path().join("data/t");
        std::fs::create_dir_all(&folder).unwrap();
        let mut rng = crate::testutil::Rng(seed);
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut now = t0;
        // (name, shown at), not shown yet.
        let mut writing: Vec<(String, DateTime<Utc>)> = Vec::new();
        let mut started = std::collections::BTreeSet::new();
        let (mut pos, mut loaded) = (0u64, Vec::<String>::new());
        for round in 0..60 {
            now += chrono::Duration::seconds(1 + rng.below(200) as i64);
            for _ in 0..rng.below(4) {
                let named = now - chrono::Duration::seconds(rng.below(30) as i64);
                let name = loop {
                    let n = format!(
                        "{}.{:03x}.json.gz",
                        named.format("%Y%m%d%H%M%S"),
                        rng.below(4096)
                    );
                    if started.insert(n.clone()) {
                        break n;
                    }
                };
                let shown = named + chrono::Duration::seconds(rng.below(WRITE as u64 + 1) as i64);
                writing.push((name, shown));
            }
            // Files complete by now appear, with their completion as modification time.
            writing.retain(|(name, shown)| {
                if *shown > now {
                    return true;
                }
                let p = folder.join(name);
                std::fs::write(&p, gz(name)).unwrap();
                let f = std::fs::File::options().write(true).open(&p).unwrap();
                f.set_modified(std::time::SystemTime::from(*shown)).unwrap();
                false
            });
            // The reader, now and then; at the end, long after every write.
            let last = round == 59;
            if last {
                now += chrono::Duration::seconds(WRITE + settle as i64 + 10);
                for (name, shown) in writing.drain(..) {
                    let p = folder.join(&name);
                    std::fs::write(&p, gz(&name)).unwrap();
                    let f = std::fs::File::options().write(true).open(&p).unwrap();
                    f.set_modified(std::time::SystemTime::from(shown)).unwrap();
                }
            } else if !rng.chance(40) {
                continue;
            }
            let l = list(&ds, "t", std::time::Duration::from_secs(settle), now)
                .await
                .unwrap();
            for c in commits(&ds, "t", &l, pos).await.unwrap() {
                assert!(c.seq > pos, "numbers only grow");
                pos = c.seq;
                let name = c.files[0].key.rsplit('/').next().unwrap().to_string();
                assert_eq!(c.files[0].rows, 1);
                loaded.push(name);
            }
        }
        let want: Vec<String> = started.into_iter().collect();
        if loaded == want {
            Ok(())
        } else {
            let missing: Vec<&String> = want.iter().filter(|n| !loaded.contains(n)).collect();
            Err(format!(
                "seed {seed}, settle {settle}: {} files, {} loaded, missing {missing:?}",
                want.len(),
                loaded.len()
            ))
        }
    }

    #[tokio::test]
    async fn every_file_loads_once_in_name_order_when_the_settle_time_holds() {
        for seed in 0..40 {
            schedule(seed, 150).await.unwrap();
        }
        // The same schedules with a settle time shorter than the writes: some lose a
        // file (started before one that was loaded, shown after it).
        let mut lost = 0;
        for seed in 0..40 {
            lost += schedule(seed, 5).await.is_err() as u32;
        }
        assert!(
            lost > 0,
            "a settle time below the longest write must be able to lose files"
        );
    }

    #[tokio::test]
    async fn only_settled_files_of_the_table_are_listed_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path().to_str().unwrap()).unwrap();
        for k in [
            "data/t/20240102000000.0a1.json.gz",
            "data/t/20240101000000.fff.json.gz",
            "data/t/20991231000000.000.json.gz",
            "data/t/notes.txt",
            "data/t/deeper/20240101000000.001.json.gz",
            "data/u/20240101000000.002.json.gz",
        ] {
            ds.put(k, bytes::Bytes::from_static(b"x")).await.unwrap();
        }
        let now = Utc::now() + chrono::Duration::hours(1);
        let l = list(&ds, "t", std::time::Duration::from_secs(60), now)
            .await
            .unwrap();
        let names: Vec<&str> = l.loadable(0).map(|(_, e)| e.key.as_str()).collect();
        assert_eq!(
            names,
            [
                "data/t/20240101000000.fff.json.gz",
                "data/t/20240102000000.0a1.json.gz"
            ]
        );
        assert_eq!((l.waiting(0), l.ignored), (1, 2));
        let second = l.files[1].0;
        assert_eq!(l.loadable(second).count(), 0);
        assert!(l.is_original());
        let other = list(&ds, "u2", std::time::Duration::from_secs(60), now)
            .await
            .unwrap();
        assert!(!other.is_original(), "an empty or foreign folder");
        // Written just now: not settled under a settle time longer than an hour.
        let l = list(&ds, "t", std::time::Duration::from_secs(7200), now)
            .await
            .unwrap();
        assert_eq!((l.loadable(0).count(), l.waiting(0)), (0, 3));
    }
}
