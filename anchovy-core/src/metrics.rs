//! Run metrics in the Prometheus text format: served by a service's `/metrics`
//! endpoint, written to a textfile by task-mode runs (`metrics_file`), both from the
//! same state, which the session updates after every batch.
//!
//! An uploader's lag is not a value of its last batch: at every scrape (and before a
//! textfile is written) [`Metrics::refresh_lag`] lists each upstream's commits after the
//! table's loaded position, so an uploader that is stuck, frozen or failing shows a lag
//! that grows with the upstream's unloaded commits, and one that is caught up shows 0.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::results::BatchResult;
use crate::task::{Status, TaskType};

#[derive(Debug, Default, Clone)]
struct TableState {
    rows: u64,
    bytes_written: u64,
    bytes_read: u64,
    files: u64,
    rejected: u64,
    errors: u64,
    last_duration_s: f64,
    last_success: Option<f64>,
    lag_s: Option<f64>,
    /// Uploaders: the upstream commit the table is loaded through.
    position: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    started: bool,
    batches_ok: u64,
    batches_err: u64,
    last_batch_ok: Option<bool>,
    tables: BTreeMap<String, TableState>,
}

/// How long a scrape waits for one upstream's commit listing ([`Metrics::refresh_lag`]);
/// past it the table keeps its last lag.
const LAG_LISTING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The metrics of one run.
#[derive(Debug)]
pub struct Metrics {
    labels: Vec<(&'static str, String)>,
    state: Mutex<State>,
    /// Uploaders: each table's upstream area (commits under `$commits`).
    upstreams: Mutex<BTreeMap<String, crate::Datastore>>,
}

impl Metrics {
    /// Metrics labelled with the anchovy's id, user and operator.
    pub fn new(id: &str, user: &str, operator: &str) -> Metrics {
        Metrics {
            labels: vec![
                ("anchovy", id.to_string()),
                ("user", user.to_string()),
                ("operator", operator.to_string()),
            ],
            state: Mutex::new(State::default()),
            upstreams: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds the `worker` label (`--workers`): each worker's series apart.
    pub fn for_worker(mut self, worker: Option<&str>) -> Metrics {
        if let Some(w) = worker {
            self.labels.push(("worker", w.to_string()));
        }
        self
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// STARTUP succeeded.
    pub fn set_started(&self) {
        self.state().started = true;
    }

    /// Folds one finished batch in.
    pub fn record_batch(&self, b: &BatchResult) {
        let mut s = self.state();
        let ok = b.status == Status::Ok;
        if ok {
            s.batches_ok += 1;
        } else {
            s.batches_err += 1;
        }
        s.last_batch_ok = Some(ok);
        for t in b.tasks.iter().filter(|t| t.task_type == TaskType::Tbl) {
            let Some(name) = &t.tbl else { continue };
            let e = s.tables.entry(name.clone()).or_default();
            let n = |k: &str| t.data.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
            e.rows += n("rows") + n("rows_inserted") + n("rows_updated");
            e.bytes_written += n("bytes_written");
            e.bytes_read += n("bytes_read");
            e.files += n("files") + n("files_consumed");
            e.rejected += n("rejected");
            e.last_duration_s = t.duration as f64 / 1000.0;
            if let Some(l) = t.data.get("lag_seconds").and_then(|v| v.as_f64()) {
                e.lag_s = Some(l);
            }
            if let Some(p) = t.data.get("position").and_then(|v| v.as_u64()) {
                e.position = Some(p);
            }
            if t.status == Status::Ok {
                e.last_success = chrono::DateTime::parse_from_rfc3339(&t.timestamp)
                    .ok()
                    .map(|d| d.timestamp_millis() as f64 / 1000.0);
            } else {
                e.errors += 1;
            }
        }
    }

    /// Uploaders: `table` loads the commits of `upstream` (its lag is refreshed from
    /// them, [`Metrics::refresh_lag`]).
    pub fn lag_from(&self, table: &str, upstream: &crate::Datastore) {
        self.upstreams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(table.to_string(), upstream.clone());
    }

    /// Sets each uploader table's lag to the age of the oldest upstream commit after
    /// its loaded position (0 when there is none): one listing per upstream and
    /// position. A listing that fails or takes longer than 5 s keeps the last value (and
    /// says so at debug level).
    pub async fn refresh_lag(&self) {
        let work: Vec<(String, crate::Datastore, u64)> = {
            let ups = self.upstreams.lock().unwrap_or_else(|p| p.into_inner());
            let s = self.state();
            ups.iter()
                .filter_map(|(t, ds)| Some((t.clone(), ds.clone(), s.tables.get(t)?.position?)))
                .collect()
        };
        let mut oldest: BTreeMap<(String, u64), Option<f64>> = BTreeMap::new();
        let now = chrono::Utc::now();
        for (table, ds, pos) in work {
            let at = (ds.location(), pos);
            let lag = match oldest.get(&at) {
                Some(l) => *l,
                None => {
                    let after = (pos > 0).then(|| crate::datastore::layout::commit_key(pos));
                    // Bounded: a scrape must answer even when the datastore is slow.
                    let listed = tokio::time::timeout(
                        LAG_LISTING_TIMEOUT,
                        ds.list_after(crate::datastore::layout::COMMITS, after.as_deref()),
                    )
                    .await;
                    let l = match listed {
                        Ok(Ok(list)) => Some(
                            list.iter()
                                .find(|e| {
                                    crate::datastore::layout::commit_seq(&e.key)
                                        .is_some_and(|s| s > pos)
                                })
                                .map_or(0.0, |e| {
                                    ((now - e.modified).num_milliseconds() as f64 / 1000.0).max(0.0)
                                }),
                        ),
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e.chain(), table, "the lag is not refreshed: the upstream's commits cannot be listed");
                            None
                        }
                        Err(_) => {
                            tracing::debug!(
                                table,
                                "the lag is not refreshed: listing the upstream's commits took too long"
                            );
                            None
                        }
                    };
                    oldest.insert(at, l);
                    l
                }
            };
            if let Some(l) = lag
                && let Some(t) = self.state().tables.get_mut(&table)
            {
                t.lag_s = Some(l);
            }
        }
    }

    /// Ready: started, and the last batch (if any) succeeded.
    pub fn ready(&self) -> (bool, String) {
        let s = self.state();
        if !s.started {
            return (false, "starting".into());
        }
        match s.last_batch_ok {
            Some(false) => (false, "the last batch failed".into()),
            Some(true) => (true, "ok".into()),
            None => (true, "started; no batch finished yet".into()),
        }
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub fn render(&self, lease_held: bool) -> String {
        let (ready, _) = self.ready();
        let s = self.state();
        let base = label_text(&self.labels, &[]);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {}", num(v));
            }
        };
        metric(
            "anchovy_up",
            "gauge",
            "1 while the anchovy process runs.",
            vec![(base.clone(), 1.0)],
        );
        metric(
            "anchovy_ready",
            "gauge",
            "1 when started, holding its lease, and the last batch succeeded.",
            vec![(base.clone(), f(ready && lease_held))],
        );
        metric(
            "anchovy_lease_held",
            "gauge",
            "1 while this process holds the run lease.",
            vec![(base.clone(), f(lease_held))],
        );
        metric(
            "anchovy_batches_total",
            "counter",
            "Finished batches by outcome.",
            vec![
                (
                    label_text(&self.labels, &[("status", "ok")]),
                    s.batches_ok as f64,
                ),
                (
                    label_text(&self.labels, &[("status", "err")]),
                    s.batches_err as f64,
                ),
            ],
        );
        let per = |get: &dyn Fn(&TableState) -> Option<f64>| -> Vec<(String, f64)> {
            s.tables
                .iter()
                .filter_map(|(t, st)| Some((label_text(&self.labels, &[("table", t)]), get(st)?)))
                .collect()
        };
        metric(
            "anchovy_rows_total",
            "counter",
            "Rows written (downloaders) or merged (uploaders).",
            per(&|t| Some(t.rows as f64)),
        );
        metric(
            "anchovy_bytes_written_total",
            "counter",
            "Downloaders: bytes of data files committed to the datastore, as stored (compressed).",
            per(&|t| Some(t.bytes_written as f64)),
        );
        metric(
            "anchovy_bytes_read_total",
            "counter",
            "Uploaders: bytes of the upstream's data files read, as stored (compressed).",
            per(&|t| Some(t.bytes_read as f64)),
        );
        metric(
            "anchovy_rejected_records_total",
            "counter",
            "Records a downloader could not read and skipped or quarantined (on_bad_record).",
            per(&|t| Some(t.rejected as f64)),
        );
        metric(
            "anchovy_files_total",
            "counter",
            "Data files written or consumed.",
            per(&|t| Some(t.files as f64)),
        );
        metric(
            "anchovy_table_errors_total",
            "counter",
            "Failed table tasks.",
            per(&|t| Some(t.errors as f64)),
        );
        metric(
            "anchovy_task_duration_seconds",
            "gauge",
            "Duration of the table's last task.",
            per(&|t| Some(t.last_duration_s)),
        );
        metric(
            "anchovy_last_success_timestamp_seconds",
            "gauge",
            "When the table last loaded successfully (Unix time).",
            per(&|t| t.last_success),
        );
        metric(
            "anchovy_lag_seconds",
            "gauge",
            "Uploaders: seconds since the oldest upstream commit the table has not loaded yet was committed (0 when loaded through the newest), as of this scrape.",
            per(&|t| t.lag_s),
        );
        out
    }
}

fn f(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// `{a="x",b="y"}` with Prometheus escaping (backslash, quote, newline).
fn label_text(base: &[(&'static str, String)], extra: &[(&str, &str)]) -> String {
    let esc = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let parts: Vec<String> = base
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
        .chain(extra.iter().map(|(k, v)| format!("{k}=\"{}\"", esc(v))))
        .collect();
    format!("{{{}}}", parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_every_sample_line_parses() {
        let m = Metrics::new("a\"b", "u", "op");
        m.set_started();
        let text = m.render(true);
        assert!(text.contains("anchovy=\"a\\\"b\""));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = line.rsplit_once(' ').unwrap();
            v.parse::<f64>().unwrap();
        }
    }
}
