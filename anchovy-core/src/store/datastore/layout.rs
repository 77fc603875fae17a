//! Keys of an anchovy's area in the datastore. Names that come from users (tables,
//! checkpoint keys) are percent-encoded into a single path segment, so `../x` or `a/b`
//! can never leave their folder.

use object_store::path::PathPart;

/// Folder of table metadata.
pub const TABLES: &str = "$tables";
/// Folder of checkpoint mirrors.
pub const CHECKPOINTS: &str = "$checkpoints";
/// The marker of the last commit whose checkpoints the mirrors reflect.
pub const CHECKPOINTS_APPLIED: &str = "$checkpoints/_applied";
/// Every checkpoint in one object, and the last commit it reflects: what a start reads
/// (no `.json`, so no checkpoint key's mirror can be named so).
pub const CHECKPOINTS_STATE: &str = "$checkpoints/_state";
/// Folder of the commit record.
pub const COMMITS: &str = "$commits";
/// `$commits/_base.json`: what `anchovy gc` left of the commits it collected
/// ([`crate::commit::Base`]).
pub const COMMITS_BASE: &str = "$commits/_base.json";
/// Folder of task logs.
pub const TASK_LOGS: &str = "$task_logs";
/// Folder of each table's last load: one small object per table, rewritten by every TBL
/// task ([`crate::task::TaskStore::write`]), so freshness and `anchovy tables` read one
/// object per table instead of the task logs.
pub const LAST_LOADS: &str = "$last_loads";
/// Folder of run results.
pub const RESULTS: &str = "$results";
/// The run results file.
pub const RUN_RESULTS: &str = "$results/anchovy_run_results.json";
/// `$results/workers/<worker>.json`: the run results of one worker (`--workers`).
pub fn worker_results_key(worker: &str) -> String {
    format!("{RESULTS}/workers/{}", segment(&format!("{worker}.json")))
}

/// Folder of data files.
pub const DATA: &str = "data";
/// Quarantined records, per table, committed like data files.
pub const REJECTS: &str = "$rejects";

/// One user-supplied name as a single safe path segment.
pub fn segment(name: &str) -> String {
    if name.is_empty() {
        // Never an empty path segment (a key `data//x` does not parse).
        return "%00".to_string();
    }
    PathPart::from(name).as_ref().to_string()
}

/// `$tables/<tbl>.json`.
pub fn table_key(tbl: &str) -> String {
    format!("{TABLES}/{}", segment(&format!("{tbl}.json")))
}

/// `$checkpoints/<key>.json`.
pub fn checkpoint_key(key: &str) -> String {
    format!("{CHECKPOINTS}/{}", segment(&format!("{key}.json")))
}

/// `$last_loads/<tbl>.json`.
pub fn last_load_key(tbl: &str) -> String {
    format!("{LAST_LOADS}/{}", segment(&format!("{tbl}.json")))
}

/// `$commits/<seq, 20 digits>.json`: zero-padded so keys sort in commit order.
pub fn commit_key(seq: u64) -> String {
    format!("{COMMITS}/{seq:020}.json")
}

/// The sequence number of a commit key.
pub fn commit_seq(key: &str) -> Option<u64> {
    key.strip_prefix(COMMITS)?
        .strip_prefix('/')?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

/// `$rejects/<tbl>/<name>`: the quarantined records of a table ([`crate::reject`]).
pub fn rejects_key(tbl: &str, name: &str) -> String {
    format!("{REJECTS}/{}/{}", segment(tbl), segment(name))
}

/// `data/<tbl>/<name>`.
pub fn data_key(tbl: &str, name: &str) -> String {
    format!("{DATA}/{}/{}", segment(tbl), segment(name))
}

/// `$task_logs/<batch>.<timestamp>.<rand>.json`.
pub fn task_log_key(session_id: &str, batch_id: u64, ts: &str, rand: &str) -> String {
    format!(
        "{TASK_LOGS}/{}",
        segment(&format!("{session_id}.{batch_id:06}.{ts}.{rand}.json"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape() {
        assert_eq!(table_key("sales"), "$tables/sales.json");
        for evil in ["../x", "a/b", "..", "/", "$x", "a\\b", "x#y"] {
            let k = table_key(evil);
            assert_eq!(k.matches('/').count(), 1, "{k}");
            let seg = &k["$tables/".len()..];
            assert!(seg != ".." && seg != ".", "{k}");
        }
        // Found by fuzz/datastore_keys: an empty name made an empty path segment.
        let k = data_key("", "f.ndjson.gz");
        assert!(object_store::path::Path::parse(&k).is_ok(), "{k}");
        assert_eq!(commit_seq(&commit_key(42)), Some(42));
        assert!(commit_key(9) < commit_key(10));
    }
}
