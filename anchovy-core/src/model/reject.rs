//! Bad records: fail the table, skip them, or quarantine them.
//!
//! Every downloader reads through a format reader (CSV, JSON) that hands each record
//! it cannot parse or type to a [`Rejects`], together with where it came from (file
//! and line, object and record), its raw text and the reason. What happens is the
//! table's `on_bad_record` option ([`OnBadRecord`]):
//!
//! - `fail` (the default): the table fails with the reason, nothing of the run is
//!   committed, the next run meets the same record. Loud and safe for data that must
//!   be complete.
//! - `skip`: the record is dropped and counted (task log `rejected`, metric
//!   `anchovy_rejected_records_total`).
//! - `quarantine`: the record is written, with its source, raw text and reason, into
//!   the rejects of the table (`$rejects/<table>/` data files) **in the same commit**
//!   as the good rows around it and the checkpoint that covers them: it is counted once,
//!   never lost, listed by `anchovy rejects`, and can be loaded by the uploader into a
//!   `<table>__rejects` table.
//!
//! `max_rejects` (a count, `100`, or a share of the records read, `5%`) fails the
//! table when the data is mostly bad, whatever the policy.
//!
//! Reject rows travel through the pipeline as batches of the table
//! [`rejects_table`]`(<table>)`, a name no user table can have; the default sink
//! stores them under `$rejects/` and never registers them in `$tables`.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::row::{Batch, Schema, Value};
use crate::tbl::Tbl;

crate::table_options! {
    /// The bad-record options every downloader reads.
    pub struct RejectOptions {
        /// fail (default), skip or quarantine a record that cannot be read (ragged, bad
        /// value, bad encoding, no key)
        #[serde(default)]
        pub on_bad_record: OnBadRecord,
        /// fail the table past this many rejected records (100) or this share of those
        /// read (5%)
        #[serde(default, deserialize_with = "max_rejects")]
        pub max_rejects: Option<MaxRejects>,
    }
}

/// The bad-record options, as `anchovy plugins` lists them for every downloader.
pub const OPTIONS: crate::options::OptionGroup = crate::options::OptionGroup {
    title: "bad records (every downloader)",
    options: <RejectOptions as crate::options::TableOptions>::DOCS,
};

fn max_rejects<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<MaxRejects>, D::Error> {
    use serde::de::Error as _;
    let v = <serde_json::Value as serde::Deserialize>::deserialize(d)?;
    let text = match &v {
        serde_json::Value::Null => return Ok(None),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    parse_max(&text).map(Some).ok_or_else(|| {
        D::Error::custom(format!(
            "`{text}` is not a limit; use a count (100) or a share of the records read (5%)"
        ))
    })
}

/// The prefix of the pipeline table that carries a table's rejects.
pub const REJECTS_PREFIX: &str = "$rejects/";

/// The columns of a reject row, in order.
pub const COLUMNS: [&str; 7] = [
    "source", "line", "reason", "raw", "header", "table", "format",
];

/// `format` of a record rejected after parsing (a row without its key): `raw` is the
/// row as a data-file JSON line, replayed as a row, without the source's reader.
pub const ROW_FORMAT: &str = "row";

/// The pipeline table of `table`'s rejects (`$rejects/<table>`).
pub fn rejects_table(table: &str) -> String {
    format!("{REJECTS_PREFIX}{table}")
}

/// The user table whose rejects `pipeline_table` carries, if it is a rejects table.
pub fn rejected_table(pipeline_table: &str) -> Option<&str> {
    pipeline_table.strip_prefix(REJECTS_PREFIX)
}

/// What a table does with a record it cannot read (`on_bad_record`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBadRecord {
    /// Fail the table (default).
    #[default]
    Fail,
    /// Drop the record, count it.
    Skip,
    /// Keep the record in `$rejects/<table>/`, committed with the good rows.
    Quarantine,
}

/// The most rejects a table run takes before it fails (`max_rejects`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum MaxRejects {
    /// At most this many rejected records.
    Count(u64),
    /// At most this share (0-1) of the records read (good + rejected); checked once
    /// 100 records are read, and at the end.
    Share(f64),
}

/// A table's bad-record policy, from its options.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct RejectPolicy {
    /// What to do with a bad record.
    pub on_bad_record: OnBadRecord,
    /// When to give up.
    pub max_rejects: Option<MaxRejects>,
}

impl RejectPolicy {
    /// The policy of `tbl` (`on_bad_record`, `max_rejects`).
    ///
    /// # Errors
    /// [`Error::Config`] naming the table and the option.
    pub fn of(tbl: &Tbl) -> Result<RejectPolicy> {
        let o = <RejectOptions as crate::options::TableOptions>::of(tbl)?;
        Ok(RejectPolicy {
            on_bad_record: o.on_bad_record,
            max_rejects: o.max_rejects,
        })
    }

    /// Whether `rejected` of `read` records (good + rejected) is over the limit.
    /// `done` is true at the end of a run (a share is judged on any number then).
    pub fn over(&self, rejected: u64, read: u64, done: bool) -> bool {
        match self.max_rejects {
            None => false,
            Some(MaxRejects::Count(n)) => rejected > n,
            Some(MaxRejects::Share(s)) => {
                (done || read >= 100) && read > 0 && rejected as f64 > s * read as f64
            }
        }
    }

    /// The limit as written, for messages.
    pub fn limit_text(&self) -> String {
        match self.max_rejects {
            None => "none".into(),
            Some(MaxRejects::Count(n)) => n.to_string(),
            Some(MaxRejects::Share(s)) => format!("{}%", s * 100.0),
        }
    }
}

fn parse_max(v: &str) -> Option<MaxRejects> {
    let v = v.trim();
    if let Some(p) = v.strip_suffix('%') {
        let p: f64 = p.trim().parse().ok()?;
        return (p.is_finite() && (0.0..=100.0).contains(&p))
            .then_some(MaxRejects::Share(p / 100.0));
    }
    if let Ok(n) = v.parse::<u64>() {
        return Some(MaxRejects::Count(n));
    }
    let f: f64 = v.parse().ok()?;
    (f.is_finite() && (0.0..1.0).contains(&f)).then_some(MaxRejects::Share(f))
}

/// One record a reader could not take.
#[derive(Debug, Clone)]
pub struct Reject<'a> {
    /// The file or object it came from (as in `_file`).
    pub source: &'a str,
    /// Its line (or record position for formats without lines).
    pub line: u64,
    /// Why it was refused, as a sentence.
    pub reason: String,
    /// The record as read (re-encoded as one line of the source format).
    pub raw: String,
    /// The header it was read under (CSV), for replaying it.
    pub header: Option<String>,
    /// What `raw` is: `csv`, `json`, or [`ROW_FORMAT`].
    pub format: &'static str,
}

/// Collects one reader's bad records under a table's policy. A reader calls
/// [`Rejects::reject`] for each record it cannot take, and [`Rejects::take_batch`] to
/// send the quarantined ones on with its good rows (in the same stream, before the
/// checkpoint that covers them).
#[derive(Debug)]
pub struct Rejects {
    policy: RejectPolicy,
    table: Arc<str>,
    pipeline_table: Arc<str>,
    schema: Arc<Schema>,
    rows: Vec<Vec<Value>>,
    /// Records rejected (skipped or quarantined) so far by this reader.
    pub count: u64,
    /// The table task's total, shared by its readers (for `max_rejects`).
    total: Arc<std::sync::atomic::AtomicU64>,
}

impl Rejects {
    /// A collector for `table` under `policy`.
    pub fn new(table: &str, policy: RejectPolicy) -> Rejects {
        Rejects::with_total(table, policy, Arc::default())
    }

    /// A collector whose count also adds to `total` (a table task's running total,
    /// which `max_rejects` counts against).
    pub fn with_total(
        table: &str,
        policy: RejectPolicy,
        total: Arc<std::sync::atomic::AtomicU64>,
    ) -> Rejects {
        Rejects {
            policy,
            table: Arc::from(table),
            pipeline_table: Arc::from(rejects_table(table)),
            schema: Arc::new(Schema::new(COLUMNS)),
            rows: Vec::new(),
            count: 0,
            total,
        }
    }

    /// A collector that fails on the first bad record (tests, tools).
    pub fn failing(table: &str) -> Rejects {
        Rejects::new(table, RejectPolicy::default())
    }

    /// Takes a bad record: `Err(reason at source:line)` under `fail` or past a count
    /// limit, otherwise counts it (and keeps it under `quarantine`).
    ///
    /// # Errors
    /// The record's location and reason, for the caller's error type.
    pub fn reject(&mut self, r: Reject<'_>) -> std::result::Result<(), (String, String)> {
        let location = format!("{}:{}", r.source, r.line);
        if self.policy.on_bad_record == OnBadRecord::Fail {
            return Err((location, r.reason));
        }
        self.count += 1;
        let total = self
            .total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if let Some(MaxRejects::Count(n)) = self.policy.max_rejects
            && total > n
        {
            return Err((
                location,
                format!(
                    "{}; that is {total} rejected records in this table's run, over max_rejects {n}: the data looks mostly bad, so the table fails (fix the source or the table's options, or raise max_rejects)",
                    r.reason
                ),
            ));
        }
        tracing::debug!(table = %self.table, at = %location, reason = %r.reason, "bad record");
        if self.policy.on_bad_record == OnBadRecord::Quarantine {
            self.rows.push(vec![
                Value::String(r.source.to_string()),
                Value::Int(r.line.min(i64::MAX as u64) as i64),
                Value::String(r.reason),
                Value::String(r.raw),
                r.header.map(Value::String).unwrap_or(Value::Null),
                Value::String(self.table.to_string()),
                Value::String(r.format.to_string()),
            ]);
        }
        Ok(())
    }

    /// The quarantined records not yet sent, as a batch of the rejects table.
    pub fn take_batch(&mut self) -> Option<Batch> {
        if self.rows.is_empty() {
            return None;
        }
        Some(Batch {
            table: self.pipeline_table.clone(),
            schema: self.schema.clone(),
            rows: std::mem::take(&mut self.rows),
        })
    }

    /// Quarantined records waiting to be sent.
    pub fn pending(&self) -> usize {
        self.rows.len()
    }

    /// Where the collector stands, for [`Rejects::rollback`].
    pub fn mark(&self) -> RejectsMark {
        RejectsMark {
            rows: self.rows.len(),
            count: self.count,
        }
    }

    /// Forgets the records taken since `mark` (a page read again after its body was
    /// cut short): they leave the count and `max_rejects`'s total, and those not yet
    /// sent are dropped. Records taken out by [`Rejects::take_batch`] meanwhile went
    /// with the rows their caller drops too.
    pub fn rollback(&mut self, mark: RejectsMark) {
        self.rows.truncate(mark.rows);
        let n = self.count.saturating_sub(mark.count);
        self.count = mark.count;
        self.total
            .fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A position of a [`Rejects`] collector.
#[derive(Debug, Clone, Copy)]
pub struct RejectsMark {
    rows: usize,
    count: u64,
}

/// Reads quarantined records again, as the table's format reads them, for
/// `anchovy rejects replay`. An operator that quarantines provides one per table
/// ([`crate::Operator::record_reader`]).
pub trait RecordReader: Send + Sync {
    /// Reads `text` (the record's `header` line, when it has one, then its `raw`
    /// line) for `table`, naming `source` in values and errors, into `emit`; records
    /// that are still bad go to `rejects`. Returns the rows read.
    ///
    /// # Errors
    /// As the format's own reader (a still-bad record under `on_bad_record: fail`).
    fn read(
        &self,
        text: String,
        source: &str,
        table: &str,
        rejects: &mut Rejects,
        emit: &mut dyn FnMut(Batch) -> bool,
    ) -> std::result::Result<u64, crate::BoxError>;
}

/// The checkpoint key that marks a rejects file as replayed (`<table>:$replayed:<key>`).
pub fn replayed_key(table: &str, file_key: &str) -> String {
    format!("{table}:$replayed:{file_key}")
}

/// The source of a replay run: every committed, not yet replayed rejects file of the
/// task's table, its records read again with the table's current options. Rows that
/// now read go to the table; those still bad are rejected again under the table's
/// policy; the file is marked replayed in the same commit, so each quarantined record
/// is replayed exactly once.
pub struct ReplaySource {
    /// The operator whose [`crate::Operator::record_reader`] reads the records.
    pub operator: Arc<dyn crate::Operator>,
}

#[async_trait::async_trait]
impl crate::Source for ReplaySource {
    async fn run(
        &self,
        ctx: &crate::TaskCtx,
        out: &mut crate::Emitter,
    ) -> std::result::Result<(), crate::BoxError> {
        let table = ctx.tbl_name().to_string();
        let pipeline = rejects_table(&table);
        let reader = self.operator.record_reader(ctx.tbl())?;
        let commits = crate::commit::read_commits(&ctx.session.store, 0).await?;
        let (mut files, mut replayed, mut still_bad) = (0u64, 0u64, 0u64);
        for c in &commits {
            for f in c.files.iter().filter(|f| f.tbl == pipeline) {
                let key = replayed_key(&table, &f.key);
                if ctx.checkpoint(&key).is_some() {
                    continue;
                }
                let mut r = crate::data::open_committed(
                    &ctx.session.store,
                    f,
                    c.seq,
                    ctx.session.settings.batch_size,
                )
                .await?;
                while let Some(batch) = r.next_batch().await? {
                    let col = |name: &str| batch.schema.index_of(name);
                    let (Some(src), Some(line), Some(raw)) =
                        (col("source"), col("line"), col("raw"))
                    else {
                        continue;
                    };
                    let (header, format) = (col("header"), col("format"));
                    for row in &batch.rows {
                        let source = row[src].text().into_owned();
                        let at = match &row[line] {
                            Value::Int(n) => *n,
                            _ => 0,
                        };
                        // A parsed row refused later (no key): sent again as a row; the
                        // sink takes or rejects it under the table's current options.
                        if format.is_some_and(|f| row[f].text() == ROW_FORMAT) {
                            let mut b = crate::row::BatchBuilder::new(table.clone());
                            crate::row::decode_row(&row[raw].text(), &mut b, &|| {
                                format!("{source}:{at}")
                            })?;
                            replayed += 1;
                            out.send_batch(b.take()).await?;
                            continue;
                        }
                        let Some(reader) = &reader else {
                            return Err(Error::config(
                                "operator_cls",
                                format!(
                                    "operator {} cannot read quarantined records again; replay them with the downloader that quarantined them (`anchovy rejects replay -op <that operator> --id {}`)",
                                    ctx.session.operator, ctx.session.settings.id
                                ),
                            )
                            .into());
                        };
                        let text = match header.map(|h| &row[h]) {
                            Some(Value::String(h)) => format!("{h}\n{}\n", row[raw].text()),
                            _ => format!("{}\n", row[raw].text()),
                        };
                        let (reader, t, src) = (reader.clone(), table.clone(), source.clone());
                        let mut rejects = ctx.rejects()?;
                        let (n, rejects, got) = tokio::task::spawn_blocking(move || {
                            let mut got: Vec<Batch> = Vec::new();
                            let n = reader.read(text, &src, &t, &mut rejects, &mut |b| {
                                got.push(b);
                                true
                            });
                            (n, rejects, got)
                        })
                        .await
                        .map_err(|e| Error::data(source.clone(), format!("replay failed: {e}")))?;
                        replayed += n?;
                        still_bad += rejects.count;
                        // The record keeps its own line, wherever the replay read it.
                        for mut b in got {
                            let is_reject = rejected_table(&b.table).is_some();
                            let (file, line) = if is_reject {
                                (b.schema.index_of("source"), b.schema.index_of("line"))
                            } else {
                                (b.schema.index_of("_file"), b.schema.index_of("_line"))
                            };
                            for r in &mut b.rows {
                                if let Some(i) = file {
                                    r[i] = Value::String(source.clone());
                                }
                                if let Some(i) = line {
                                    r[i] = Value::Int(at);
                                }
                            }
                            out.send_batch(b).await?;
                        }
                    }
                }
                out.checkpoint(
                    &key,
                    serde_json::json!({"replayed_in": ctx.session.session_id}),
                )
                .await?;
                files += 1;
            }
        }
        ctx.log("rejects_files_replayed", files);
        ctx.log("rows_replayed", replayed);
        ctx.log("still_rejected", still_bad);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tbl(opts: &[(&str, &str)]) -> Tbl {
        let mut t = Tbl::named("t");
        for (k, v) in opts {
            t.options.insert((*k).into(), (*v).into());
        }
        t
    }

    #[test]
    fn policies_and_limits_parse() {
        assert_eq!(
            RejectPolicy::of(&tbl(&[])).unwrap(),
            RejectPolicy::default()
        );
        let p = RejectPolicy::of(&tbl(&[
            ("on_bad_record", "quarantine"),
            ("max_rejects", "5%"),
        ]))
        .unwrap();
        assert_eq!(p.on_bad_record, OnBadRecord::Quarantine);
        assert_eq!(p.max_rejects, Some(MaxRejects::Share(0.05)));
        assert!(!p.over(5, 99, false), "a share waits for 100 records");
        assert!(p.over(6, 100, false));
        assert!(p.over(1, 2, true));
        let p = RejectPolicy::of(&tbl(&[("on_bad_record", "skip"), ("max_rejects", "3")])).unwrap();
        assert_eq!(p.max_rejects, Some(MaxRejects::Count(3)));
        for bad in [
            ("on_bad_record", "ignore"),
            ("max_rejects", "-1"),
            ("max_rejects", "150%"),
            ("max_rejects", "lots"),
        ] {
            let e = RejectPolicy::of(&tbl(&[bad])).unwrap_err().to_string();
            assert!(e.contains(bad.0), "{e}");
        }
    }

    #[test]
    fn a_rollback_forgets_what_was_taken_since_the_mark() {
        let r = |line| Reject {
            source: "p",
            line,
            reason: "bad".into(),
            raw: "{}".into(),
            header: None,
            format: "json",
        };
        let total = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let policy = RejectPolicy {
            on_bad_record: OnBadRecord::Quarantine,
            max_rejects: Some(MaxRejects::Count(2)),
        };
        let mut q = Rejects::with_total("t", policy, total.clone());
        q.reject(r(1)).unwrap();
        let m = q.mark();
        q.reject(r(2)).unwrap();
        q.rollback(m);
        assert_eq!(
            (
                q.count,
                q.pending(),
                total.load(std::sync::atomic::Ordering::Relaxed)
            ),
            (1, 1, 1)
        );
        // The limit counts what stayed: one more fits, a third does not.
        q.reject(r(2)).unwrap();
        assert!(q.reject(r(3)).is_err());
    }

    #[test]
    fn fail_skip_quarantine() {
        let r = || Reject {
            source: "a.csv",
            line: 3,
            reason: "ragged".into(),
            raw: "1,2,3".into(),
            header: Some("a,b".into()),
            format: "csv",
        };
        let mut fail = Rejects::failing("t");
        assert_eq!(fail.reject(r()).unwrap_err().0, "a.csv:3");
        let mut skip = Rejects::new(
            "t",
            RejectPolicy {
                on_bad_record: OnBadRecord::Skip,
                max_rejects: Some(MaxRejects::Count(1)),
            },
        );
        skip.reject(r()).unwrap();
        assert!(skip.take_batch().is_none());
        assert!(
            skip.reject(r())
                .unwrap_err()
                .1
                .contains("over max_rejects 1")
        );
        let mut q = Rejects::new(
            "t",
            RejectPolicy {
                on_bad_record: OnBadRecord::Quarantine,
                max_rejects: None,
            },
        );
        q.reject(r()).unwrap();
        let b = q.take_batch().unwrap();
        assert_eq!(&*b.table, "$rejects/t");
        assert_eq!(b.rows[0][3], Value::String("1,2,3".into()));
        assert_eq!(q.count, 1);
        assert!(q.take_batch().is_none());
    }
}
