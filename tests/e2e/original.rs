//! Drop-in with the original Python anchovies (`ORIGINAL_ANCHOVY`, installed by
//! script/test from ../shared/reference/anchovies-py): its downloader, written here
//! with its SDK, feeds this project's uploader; both uploaders load the same datastore
//! and their tables are compared value for value; its command lines and its
//! datastore's task logs, tables and checkpoints work with this binary.

use std::path::{Path, PathBuf};
use std::process::Output;

use anchovy_core::testutil::Rng;

use crate::{Env, need, results, tbl_data};

/// A downloader written with the original's SDK: it yields the rows of the JSON lines
/// file named by `COMPAT_ROWS`, with `{"$date"}`, `{"$dt"}` and `{"$dec"}` values
/// turned into `date`, `datetime` and float (the original cannot write a `Decimal`).
const PLUGIN: &str = r#"
import json, os
from datetime import date, datetime
from anchovies.sdk import Downloader as BaseDownloader, source, session


def decode(v):
    if isinstance(v, dict):
        if '$date' in v: return date.fromisoformat(v['$date'])
        if '$dt' in v: return datetime.fromisoformat(v['$dt'])
        if '$dec' in v: return float(v['$dec'])
    return v


class Downloader(BaseDownloader):
    @source('items')
    def items(self, **kwds):
        last = None
        with open(os.environ['COMPAT_ROWS']) as f:
            for line in f:
                row = {k: decode(v) for k, v in json.loads(line).items()}
                last = row['id']
                yield row
        # A checkpoint of its own, as SDK downloaders keep them.
        session().datastore.checkpoints['items', 'last_id'] = str(last)
"#;

/// Dumps a SQLite table as JSON rows (column -> value as SQLite holds it).
const DUMP: &str = r#"
import json, sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.row_factory = sqlite3.Row
rows = [dict(r) for r in c.execute(sys.argv[2])]
print(json.dumps(rows, default=str))
"#;

struct Original<'a> {
    env: &'a Env,
    exe: String,
    plugins: PathBuf,
}

impl<'a> Original<'a> {
    fn new(env: &'a Env) -> Original<'a> {
        let plugins = env.path().join("py");
        let file = plugins.join("anchovies/plugins/compat_test.py");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, PLUGIN).unwrap();
        Original {
            env,
            exe: need("ORIGINAL_ANCHOVY"),
            plugins,
        }
    }

    /// Runs the original `anchovy` with `args`; it must succeed.
    fn run(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut c = std::process::Command::new(&self.exe);
        c.args(args)
            .current_dir(self.env.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.env.path().join("home"))
            .env("PYTHONPATH", &self.plugins);
        for (k, v) in envs {
            c.env(k, v);
        }
        let out = c.output().expect("run the original anchovy");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && !text.contains("\"status\": \"ERR\""),
            "original {args:?} failed:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs its downloader of the test (`test/dl`, config.yaml) over the rows in `file`.
    fn download(&self, ds: &str, file: &str) {
        self.run(
            &[
                "run",
                "-op",
                "compat_test.Downloader",
                "--id",
                "dl",
                "-u",
                "test",
                "--datastore",
                ds,
                "-f",
                "config.yaml",
            ],
            &[("COMPAT_ROWS", file)],
        );
    }

    /// Writes `n` seeded source rows and `config` (its config.yaml), runs its downloader
    /// over them into a datastore of the scratch directory, and returns that datastore.
    fn downloaded(&self, seed: u64, n: u64, config: &str) -> String {
        let ds = self.env.path().join("ds").to_str().unwrap().to_string();
        let mut rng = Rng(seed);
        let rows: Vec<_> = (1..=n).map(|id| row(&mut rng, id, 1)).collect();
        let file = self.env.write("rows.jsonl", jsonl(&rows));
        self.env.write("config.yaml", config);
        self.download(&ds, file.to_str().unwrap());
        ds
    }

    /// Runs its SQL uploader `id` over upstream `dl` into the SQLite `url` as its README
    /// runs it there (no schema names).
    fn upload(&self, ds: &str, id: &str, url: &str) {
        self.run(
            &[
                "run",
                "-op",
                "core.sql.Uploader",
                "--id",
                id,
                "-u",
                "test",
                "--datastore",
                ds,
                "-up",
                "dl",
            ],
            &[
                ("ACHVY_CNXN__DB__URL", url),
                ("ACHVY_SQL_NO_SCHEMA_NAME", "true"),
            ],
        );
    }

    /// The python of its venv (for [`DUMP`]).
    fn python(&self) -> PathBuf {
        Path::new(&self.exe).with_file_name("python")
    }

    fn dump(&self, db: &Path, sql: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
        let out = std::process::Command::new(self.python())
            .args(["-c", DUMP, db.to_str().unwrap(), sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// Text that CSV and JSON writers get wrong: commas, quotes, newlines, emoji.
const NOTES: &[&str] = &[
    "plain",
    "a, b, c",
    "she said \"hi\"",
    "two\nlines",
    "🐟 anchovy",
    "",
    "tab\there",
    "back\\slash",
];

/// One source row (the plugin's tagged JSON) and the values a faithful load holds.
fn row(rng: &mut Rng, id: u64, version: u64) -> serde_json::Value {
    let cents = rng.below(1_000_000);
    let note = NOTES[rng.below(NOTES.len() as u64) as usize];
    let day = 1 + rng.below(28);
    let (h, m, s) = (rng.below(24), rng.below(60), rng.below(60));
    let micros = if rng.below(2) == 0 {
        String::new()
    } else {
        format!(".{:06}", rng.below(1_000_000))
    };
    let offset = ["+00:00", "+02:00", "-05:30", "+09:00"][rng.below(4) as usize];
    serde_json::json!({
        "id": id,
        "version": version,
        "amount": {"$dec": format!("{}.{:02}", cents / 100, cents % 100)},
        "note": format!("{note} #{id}.{version}"),
        "empty": if rng.below(2) == 0 { serde_json::json!("") } else { serde_json::Value::Null },
        "born": {"$date": format!("2020-02-{day:02}")},
        "local_ts": {"$dt": format!("2024-05-{day:02}T{h:02}:{m:02}:{s:02}{micros}")},
        "event_ts": {"$dt": format!("2024-05-{day:02}T{h:02}:{m:02}:{s:02}{micros}{offset}")},
    })
}

/// Two seeded batches: 2,000 rows, then updates of 500 of them and 500 new rows.
fn two_batches(seed: u64) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let mut rng = Rng(seed);
    let first: Vec<_> = (1..=2000).map(|id| row(&mut rng, id, 1)).collect();
    let mut second: Vec<_> = (1..=500).map(|i| row(&mut rng, i * 4 - 1, 2)).collect();
    second.extend((2001..=2500).map(|id| row(&mut rng, id, 1)));
    (first, second)
}

fn jsonl(rows: &[serde_json::Value]) -> String {
    rows.iter().map(|r| format!("{r}\n")).collect()
}

/// A datetime as SQLite holds it, normalised to `YYYY-MM-DDTHH:MM:SS.ffffff` (naive)
/// or the same in UTC for a value with an offset.
fn norm_ts(v: &serde_json::Value) -> String {
    let s = v.as_str().unwrap_or_else(|| panic!("not a datetime: {v}"));
    let t = s.replace(' ', "T");
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(&t) {
        return d
            .with_timezone(&chrono::Utc)
            .naive_utc()
            .format("%Y-%m-%dT%H:%M:%S%.6f")
            .to_string();
    }
    let n = chrono::NaiveDateTime::parse_from_str(&t, "%Y-%m-%dT%H:%M:%S%.f")
        .unwrap_or_else(|e| panic!("`{s}`: {e}"));
    n.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// The original uploader's current rows and this uploader's rows hold the newest
/// version of every source row (`first`, then `second`), value for value: ids,
/// versions, amounts (as floats: the original has no exact decimal), the text columns
/// `texts`, dates, naive datetimes; a datetime with an offset is its instant here and
/// its wall time without the offset in the original's table.
fn assert_same_tables(
    orig: &[serde_json::Map<String, serde_json::Value>],
    rust: &[serde_json::Map<String, serde_json::Value>],
    first: &[serde_json::Value],
    second: &[serde_json::Value],
    texts: &[&str],
) {
    let mut want = std::collections::BTreeMap::new();
    for r in first.iter().chain(second) {
        want.insert(r["id"].as_u64().unwrap(), r.clone());
    }
    assert_eq!(
        orig.len(),
        want.len(),
        "the original uploader's current rows"
    );
    assert_eq!(rust.len(), want.len(), "this uploader's rows");
    let num = |v: &serde_json::Value| {
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    };
    for ((o, r), (id, w)) in orig.iter().zip(rust).zip(&want) {
        assert_eq!(num(&o["id"]), Some(*id as f64), "{o:?}");
        assert_eq!(r["id"].as_u64(), Some(*id), "{r:?}");
        for got in [&o["version"], &r["version"]] {
            assert_eq!(num(got), w["version"].as_f64(), "version of {id}");
        }
        let amount: f64 = w["amount"]["$dec"].as_str().unwrap().parse().unwrap();
        for got in [&o["amount"], &r["amount"]] {
            assert!(
                (num(got).unwrap() - amount).abs() < 1e-9,
                "{got} != {amount}"
            );
        }
        for col in texts {
            assert_eq!(o[*col], w[*col], "original {col} of {id}");
            assert_eq!(r[*col], w[*col], "this {col} of {id}");
        }
        let born = w["born"]["$date"].as_str().unwrap();
        assert_eq!(&o["born"].as_str().unwrap()[..10], born);
        assert_eq!(&r["born"].as_str().unwrap()[..10], born);
        let local = norm_ts(&w["local_ts"]["$dt"]);
        assert_eq!(norm_ts(&o["local_ts"]), local, "original local_ts of {id}");
        assert_eq!(norm_ts(&r["local_ts"]), local, "this local_ts of {id}");
        let src = w["event_ts"]["$dt"].as_str().unwrap();
        assert_eq!(
            norm_ts(&o["event_ts"]),
            norm_ts(&serde_json::json!(&src[..src.len() - 6])),
            "original event_ts of {id}"
        );
        assert_eq!(
            norm_ts(&r["event_ts"]),
            norm_ts(&w["event_ts"]["$dt"]),
            "this event_ts of {id}"
        );
    }
}

/// The original downloader (two runs: 2,000 rows, then 500 updates and 500 new rows)
/// feeds both uploaders; the original's current rows and this project's rows agree
/// value for value (the original drops a datetime's offset and keeps the wall time:
/// checked as such), every row is there once, and a third load moves nothing.
#[test]
fn the_original_downloader_feeds_this_uploader_with_equal_tables() {
    let env = Env::new();
    let py = Original::new(&env);
    let ds = env.path().join("ds");
    let ds = ds.to_str().unwrap();
    let (first, second) = two_batches(0x0419);
    env.write("config.yaml", "tbls:\n  items:\n    unique_by: id\n");
    let py_db = env.path().join("original.sqlite");
    let rs_db = env.path().join("rust.sqlite");
    let py_url = format!("sqlite:///{}", py_db.display());
    let rs_url = format!("sqlite://{}", rs_db.display());
    let load = |_round: usize| {
        // The original uploader, as its README runs it on SQLite.
        py.upload(ds, "up_py", &py_url);
        ours(
            &env,
            &[UPLOAD, &["--datastore", ds, "--original-settle", "0s"]].concat(),
            &[
                ("ACHVY_CNXN__DB__URI", &rs_url),
                ("ACHVY_SQL_NO_SCHEMA_NAME", "true"),
            ],
        )
    };
    for (round, rows) in [&first, &second].into_iter().enumerate() {
        let file = env.write(&format!("rows{round}.jsonl"), jsonl(rows));
        py.download(ds, file.to_str().unwrap());
        // A file named in this second is not settled for a zero settle time yet.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let r = load(round);
        let d = tbl_data(&r, "dl.items");
        assert_eq!(d["original_layout"], true, "{d}");
        assert_eq!(
            d["rows_inserted"],
            if round == 0 { 2000 } else { 500 },
            "{d}"
        );
        assert_eq!(d["rows_updated"], if round == 0 { 0 } else { 500 }, "{d}");
    }
    // Nothing new: nothing moves.
    let again = load(2);
    let d = tbl_data(&again, "dl.items");
    assert_eq!(d["rows_inserted"].as_u64().unwrap_or(0), 0, "{d}");
    assert_eq!(d["rows_updated"].as_u64().unwrap_or(0), 0, "{d}");

    let orig = py.dump(&py_db, "SELECT * FROM items WHERE _del IS NULL ORDER BY id");
    let rust = py.dump(&rs_db, "SELECT * FROM items ORDER BY id");
    assert_same_tables(&orig, &rust, &first, &second, &["note", "empty"]);
}

/// `anchovy logs`, `tables` and `checkpoints` read what the original wrote: its task
/// logs (`batch_id` a string or null), its `$tables` (`cols` as text) and its
/// checkpoints (raw values without an extension).
#[test]
fn this_binary_reads_the_originals_logs_tables_and_checkpoints() {
    let env = Env::new();
    let py = Original::new(&env);
    let ds = &py.downloaded(
        7,
        20,
        "tbls:\n  items:\n    unique_by: id\n    cols: 'id int, note str'\n",
    );
    let db = format!("sqlite:///{}", env.path().join("o.sqlite").display());
    py.upload(ds, "up_py", &db);
    let run = |args: &[&str]| {
        let out = env
            .cmd()
            .args(args)
            .args(["-u", "test", "--datastore", ds])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let logs = run(&["logs", "--id", "dl", "--json"]);
    let tbl: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &serde_json::Value| l["task_type"] == "TBL")
        .collect();
    assert_eq!(tbl.len(), 1, "{logs}");
    assert_eq!(tbl[0]["tbl"], "items");
    assert_eq!(tbl[0]["data"]["rows"], 20, "{logs}");
    let tables = run(&["tables", "--id", "dl", "--json"]);
    let items: serde_json::Value = tables
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|t| t["table"]["name"] == "items")
        .unwrap_or_else(|| panic!("{tables}"));
    assert_eq!(items["table"]["unique_by"], "id", "{tables}");
    assert_eq!(items["table"]["columns"]["id"], "int", "{tables}");
    assert_eq!(items["last_load"]["status"], "OK", "{tables}");
    let cps = run(&["checkpoints", "--id", "up_py", "--json"]);
    let c: serde_json::Value = serde_json::from_str(&cps).unwrap();
    let ts = c
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == "dl.items.last.timestamp")
        .unwrap_or_else(|| panic!("{cps}"));
    assert!(ts["value"].as_str().unwrap().starts_with("20"), "{cps}");
    let table = run(&["checkpoints", "--id", "up_py"]);
    assert!(table.contains("dl.items.last.timestamp"), "{table}");
    // A downloader of this binary takes over the original downloader's checkpoints.
    let plan = run(&[
        "migrate",
        "-op",
        "files.CsvDownloader",
        "--id",
        "dl",
        "--dry-run",
    ]);
    assert!(
        plan.contains("items.last_id") && plan.contains("would set"),
        "{plan}"
    );
    run(&["migrate", "-op", "files.CsvDownloader", "--id", "dl"]);
    let cps = run(&["checkpoints", "--id", "dl", "--json"]);
    let c: serde_json::Value = serde_json::from_str(&cps).unwrap();
    let ours: Vec<&serde_json::Value> = c
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["key"] == "items.last_id")
        .collect();
    assert!(
        ours.iter().any(|c| c["value"] == 20 && c["commit"] != 0),
        "committed as this project's: {cps}"
    );
    let again = run(&["migrate", "-op", "files.CsvDownloader", "--id", "dl"]);
    assert!(again.contains("kept"), "{again}");
}

/// The original's command lines run unchanged against this binary: `run`, `-up`,
/// `--enabled`, `-c` with YAML text and `-f` with a file, its `*_cls` values, its
/// `ACHVY_CNXN__DB__URL`, and a school file in its form (a list of command lines);
/// what is deliberately not supported exits 2 naming it and the replacement.
#[test]
fn the_originals_command_lines_run_unchanged() {
    let env = Env::new();
    let py = Original::new(&env);
    let ds = &py.downloaded(11, 30, "tbls:\n  items:\n    unique_by: id\n");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let db = format!("sqlite://{}", env.path().join("t.sqlite").display());
    let out = env
        .cmd()
        .args([
            "run",
            "-op",
            "core.sql.Uploader",
            "--id",
            "up",
            "-u",
            "test",
            "--datastore",
            ds,
            "-up",
            "dl",
            "--enabled",
            "dl.*",
            "--disabled",
            "dl.nothing",
            "-c",
            "config:\n  original_settle: 0s\n",
            "--checkpoint-cls",
            "CachedCheckpoint",
            "--task-store-cls",
            "TaskStore",
            "--tbl-store-cls",
            "anchovies.sdk.TblStore",
            "--data-buffer-cls",
            "core.io.StatisticsBuffer",
        ])
        .env("ACHVY_CNXN__DB__URL", &db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tbl_data(&results(&out), "dl.items")["rows_inserted"], 30);
    // -f with a file, in a school file of the original's form (run one at a time).
    env.write("up.yaml", "config:\n  original_settle: 0s\n");
    let school = format!(
        "- run -op core.sql.Uploader --id up2 -u test --datastore {ds} -up dl -f up.yaml\n- [run, -op, core.sql.Uploader, --id, up3, -u, test, --datastore, {ds}, -up, dl, -f, up.yaml]\n"
    );
    env.write("school.yaml", &school);
    for how in [
        ["--school-file", "school.yaml"],
        ["--school-data", school.as_str()],
    ] {
        let out = env
            .cmd()
            .args(["school", "run"])
            .args(how)
            .env("ACHVY_CNXN__DB__URL", &db)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{how:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("up2") && text.contains("up3"), "{text}");
    }
    // Deliberately not supported: exit 2, naming it and what to do instead.
    for (args, says) in [
        (
            vec![
                "run",
                "-op",
                "core.sql.Uploader",
                "--id",
                "x",
                "--task-store-cls",
                "NothingTaskStore",
            ],
            "NothingTaskStore",
        ),
        (
            vec![
                "school",
                "run",
                "-f",
                "school.yaml",
                "--anchovy-executable",
                "/usr/bin/anchovy",
            ],
            "--anchovy-executable",
        ),
        (
            vec![
                "run",
                "-op",
                "core.sql.Uploader",
                "--id",
                "x",
                "-c",
                "missing.yaml",
            ],
            "-f <path>",
        ),
    ] {
        let out = env.cmd().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// A migration mid-stream: the original downloader and uploader run, then this
/// uploader takes over the original's target (its table name, its history layout)
/// with `anchovy migrate` and continues with the next file: every version of every row
/// lands once, nothing is loaded twice or skipped.
#[test]
fn a_migration_mid_stream_loads_every_row_once() {
    let env = Env::new();
    let py = Original::new(&env);
    let ds = env.path().join("ds");
    let ds = ds.to_str().unwrap();
    let mut rng = Rng(0x1918);
    let first: Vec<_> = (1..=1000).map(|id| row(&mut rng, id, 1)).collect();
    let mut second: Vec<_> = (1..=500).map(|i| row(&mut rng, i * 2, 2)).collect();
    second.extend((1001..=1500).map(|id| row(&mut rng, id, 1)));
    env.write("config.yaml", "tbls:\n  items:\n    unique_by: id\n");
    env.write("up.yaml", "tbls:\n  items:\n    history: true\n");
    let db = env.path().join("wh.sqlite");
    let py_url = format!("sqlite:///{}", db.display());
    let download = |n: usize, rows: &[serde_json::Value]| {
        let file = env.write(&format!("rows{n}.jsonl"), jsonl(rows));
        py.download(ds, file.to_str().unwrap());
    };
    download(0, &first);
    py.upload(ds, "up", &py_url);
    download(1, &second);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // This project's uploader under the original uploader's id, on its target.
    let uploader = |verb: &[&str]| {
        let args = [
            verb,
            &UPLOAD[1..3],
            &["--id", "up", "-u", "test", "-U", "dl", "--datastore", ds],
            &["-f", "up.yaml", "--original-settle", "0s"],
        ]
        .concat();
        let r = ours(
            &env,
            &args,
            &[
                ("ACHVY_CNXN__DB__URL", &py_url),
                ("ACHVY_SQL_NO_SCHEMA_NAME", "true"),
            ],
        );
        tbl_data(&r, "dl.items")
    };
    let files: Vec<String> = std::fs::read_dir(env.path().join("ds/test/dl/data/items"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    let mut sorted = files.clone();
    sorted.sort();
    let first_seq = anchovy_core::original::file_seq(&sorted[0]).unwrap();
    // The dry run says what it would set and sets nothing.
    let plan = uploader(&["migrate", "--dry-run"]);
    assert_eq!(plan["migrate_position"], first_seq, "{plan}");
    assert_eq!(plan["migrate_files_loaded"], 1, "{plan}");
    assert_eq!(plan["migrate_files_left"], 1, "{plan}");
    assert_eq!(plan["migrate_applied"], false, "{plan}");
    let applied = uploader(&["migrate"]);
    assert_eq!(applied["migrate_applied"], true, "{applied}");
    // Again: the same position, nothing to change.
    assert_eq!(uploader(&["migrate"])["migrate_applied"], true);
    let d = uploader(&["start"]);
    assert_eq!(
        d["files_consumed"], 1,
        "only the file the original did not load: {d}"
    );
    assert_eq!(d["target"], "\"items\"", "{d}");
    let d = uploader(&["start"]);
    assert_eq!(d["files_consumed"].as_u64().unwrap_or(0), 0, "{d}");

    let current = py.dump(&db, "SELECT * FROM items WHERE _del IS NULL ORDER BY id");
    let all = py.dump(&db, "SELECT id, version, _del FROM items ORDER BY id, _seq");
    let mut want = std::collections::BTreeMap::new();
    for r in first.iter().chain(&second) {
        want.insert(r["id"].as_u64().unwrap(), r.clone());
    }
    assert_eq!(current.len(), 1500, "one current version per key");
    assert_eq!(
        all.len(),
        2000,
        "every version once: 1,000 + 500 updates + 500 new"
    );
    for (c, (id, w)) in current.iter().zip(&want) {
        assert_eq!(c["id"].as_f64(), Some(*id as f64), "{c:?}");
        assert_eq!(c["version"].as_f64(), w["version"].as_f64(), "{c:?}");
        assert_eq!(c["note"], w["note"], "{c:?}");
    }
    // A superseded version is stamped as the original stamps it: epoch microseconds.
    let now_us = chrono::Utc::now().timestamp_micros() as f64;
    let stamped: Vec<f64> = all.iter().filter_map(|r| r["_del"].as_f64()).collect();
    assert_eq!(stamped.len(), 500, "{:?}", &all[..4]);
    assert!(
        stamped.iter().all(|d| (now_us - d).abs() < 600e6),
        "{:?}",
        &stamped[..3]
    );
}

/// Source rows as CSV for this project's files.CsvDownloader.
fn csv(rows: &[serde_json::Value]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "id", "version", "amount", "note", "born", "local_ts", "event_ts",
    ])
    .unwrap();
    for r in rows {
        w.write_record([
            r["id"].to_string(),
            r["version"].to_string(),
            r["amount"]["$dec"].as_str().unwrap().to_string(),
            r["note"].as_str().unwrap().to_string(),
            r["born"]["$date"].as_str().unwrap().to_string(),
            r["local_ts"]["$dt"].as_str().unwrap().to_string(),
            r["event_ts"]["$dt"].as_str().unwrap().to_string(),
        ])
        .unwrap();
    }
    String::from_utf8(w.into_inner().unwrap()).unwrap()
}

/// This project's downloader of the CSV tests, writing for the original.
const DOWNLOAD: &[&str] = &[
    "start",
    "-op",
    "files.CsvDownloader",
    "--id",
    "dl",
    "-u",
    "test",
    "--data-buffer-cls",
    "original",
];

/// This project's uploader of the CSV tests.
const UPLOAD: &[&str] = &[
    "start",
    "-op",
    "sql.Uploader",
    "--id",
    "up_rs",
    "-u",
    "test",
    "-U",
    "dl",
];

/// Runs this binary with `args` and `envs`; it must succeed; returns its run results.
fn ours(env: &Env, args: &[&str], envs: &[(&str, &str)]) -> serde_json::Value {
    let mut c = env.cmd();
    c.args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    results(&out)
}

const CSV_CONFIG: &str = "tbls:\n  items:\n    path: in/*.csv\n    unique_by: id\n    columns: {id: int, version: int, amount: decimal, born: date, local_ts: datetime, event_ts: datetime}\n";

/// This project's downloader with `data_buffer_cls: original` (two runs: 2,000 rows,
/// then 500 updates and 500 new rows) feeds the original uploader and this one; their
/// tables agree value for value with the source (the original keeps a datetime's wall
/// time without its offset; a decimal reaches both as a float: the original cannot
/// hold an exact one).
#[test]
fn this_downloader_feeds_the_original_uploader_with_equal_tables() {
    let env = Env::new();
    let py = Original::new(&env);
    let ds = env.path().join("ds");
    let ds = ds.to_str().unwrap();
    let (first, second) = two_batches(0x0191);
    env.write("config.yaml", CSV_CONFIG);
    let py_db = env.path().join("original.sqlite");
    let rs_db = env.path().join("rust.sqlite");
    let py_url = format!("sqlite:///{}", py_db.display());
    let rs_url = format!("sqlite://{}", rs_db.display());
    for (n, rows) in [&first, &second].into_iter().enumerate() {
        env.write(&format!("in/{n}.csv"), csv(rows));
        ours(&env, &[DOWNLOAD, &["--datastore", ds]].concat(), &[]);
        py.upload(ds, "up_py", &py_url);
        ours(
            &env,
            &[UPLOAD, &["--datastore", ds, "--sql-no-schema-name"]].concat(),
            &[("ACHVY_CNXN__DB__URI", &rs_url)],
        );
    }
    // The original's $tables entry reads as the original reads it.
    let t: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.path().join("ds/test/dl/$tables/items.json")).unwrap(),
    )
    .unwrap();
    assert!(t.get("path").is_none() && t.get("columns").is_none(), "{t}");
    assert!(t["cols"].as_str().unwrap().contains("born date"), "{t}");

    let orig = py.dump(&py_db, "SELECT * FROM items WHERE _del IS NULL ORDER BY id");
    let rust = py.dump(&rs_db, "SELECT * FROM items ORDER BY id");
    let versions = py.dump(&py_db, "SELECT COUNT(*) AS n FROM items");
    assert_eq!(
        versions[0]["n"], 3000,
        "every version once in the original's history"
    );
    // CSV has no NULL text: an empty field is an empty string on both sides.
    assert_same_tables(&orig, &rust, &first, &second, &["note"]);
}

/// `original` files are visible to the original's uploader only once committed: a run
/// killed before its commit leaves a staged file it never lists; one killed after its
/// commit but before the rename is loaded by this uploader at once (from where it was
/// staged) and published by the downloader's next start; every row lands once on both
/// sides.
#[test]
fn original_files_are_published_only_after_their_commit() {
    let env = Env::new();
    let py = Original::new(&env);
    let ds = env.path().join("ds");
    let ds = ds.to_str().unwrap();
    let mut rng = Rng(5);
    let rows: Vec<_> = (1..=40).map(|id| row(&mut rng, id, 1)).collect();
    env.write("config.yaml", CSV_CONFIG);
    env.write("in/1.csv", csv(&rows[..20]));
    let py_db = env.path().join("original.sqlite");
    let py_url = format!("sqlite:///{}", py_db.display());
    let rs_url = format!("sqlite://{}", env.path().join("rust.sqlite").display());
    let download = |failpoint: Option<&str>| {
        let mut c = env.cmd();
        c.args(DOWNLOAD).args(["--datastore", ds]);
        if let Some(f) = failpoint {
            c.env("ACHVY_FAILPOINT", f);
        }
        c.output().unwrap()
    };
    let names = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(env.path().join("ds/test/dl/data/items"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let original_load = || {
        py.upload(ds, "up_py", &py_url);
        if py_db.exists() {
            py.dump(
                &py_db,
                "SELECT name FROM sqlite_master WHERE name = 'items'",
            )
            .first()
            .map(|_| {
                py.dump(&py_db, "SELECT id FROM items WHERE _del IS NULL")
                    .len()
            })
            .unwrap_or(0)
        } else {
            0
        }
    };
    let published = |n: &[String]| n.iter().filter(|f| !f.starts_with("_staged.")).count();
    assert!(download(None).status.success());
    assert_eq!(published(&names()), 1);
    assert_eq!(original_load(), 20);
    env.write("in/2.csv", csv(&rows[20..]));
    // Killed before the commit: an orphan the original never lists.
    assert_eq!(download(Some("commit.before")).status.code(), Some(86));
    let n = names();
    assert_eq!((n.len(), published(&n)), (2, 1), "{n:?}");
    assert_eq!(original_load(), 20);
    // Killed after the commit, before the rename: committed, still staged.
    assert_eq!(download(Some("commit.after")).status.code(), Some(86));
    let n = names();
    assert_eq!((n.len(), published(&n)), (3, 1), "{n:?}");
    assert_eq!(original_load(), 20);
    let r = ours(
        &env,
        &[UPLOAD, &["--datastore", ds]].concat(),
        &[("ACHVY_CNXN__DB__URI", &rs_url)],
    );
    assert_eq!(tbl_data(&r, "dl.items")["rows_inserted"], 40);
    // The next start publishes it; the source is not read again (its checkpoint was
    // committed with it).
    let out = download(None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = names();
    assert_eq!(
        (n.len(), published(&n)),
        (3, 2),
        "the orphan stays staged: {n:?}"
    );
    assert_eq!(original_load(), 40);
    assert_eq!(original_load(), 40, "loaded once");
}

/// `kill -9` at the download's failpoints and at random moments while this downloader
/// writes for the original (new source files arriving between kills, the original
/// uploader loading between them); after a clean run both uploaders hold every row
/// once: the original's history has one version per row (nothing published twice),
/// and staged orphans are never listed. `ORIGINAL_KILLS` sets the number of kills
/// (default 12); `CHAOS_SEED` replays a run.
#[test]
fn kills_while_writing_for_the_original_lose_and_double_nothing() {
    use crate::chaos::{DOWNLOAD_POINTS, draw, kills_and_seed, run, run_to_completion};
    let (kills, seed) = kills_and_seed("ORIGINAL_KILLS", 12);
    eprintln!("original chaos: {kills} kills, CHAOS_SEED={seed}");
    let env = Env::new();
    let py = Original::new(&env);
    let ds = env.path().join("ds");
    let ds = ds.to_str().unwrap();
    let mut rng = Rng(seed);
    env.write("config.yaml", CSV_CONFIG);
    let args = [DOWNLOAD, &["--datastore", ds]].concat();
    let py_db = env.path().join("original.sqlite");
    let py_url = format!("sqlite:///{}", py_db.display());
    let (mut next_id, mut files) = (1u64, 0);
    let mut add_file = |rng: &mut Rng| {
        let rows: Vec<_> = (next_id..next_id + 300).map(|id| row(rng, id, 1)).collect();
        next_id += 300;
        env.write(&format!("in/{files:03}.csv"), csv(&rows));
        files += 1;
    };
    for _ in 0..3 {
        add_file(&mut rng);
    }
    let typical = run_to_completion(&env, &args, &[], "the first run").took;
    let mut landed = 0;
    for k in 0..kills {
        if rng.chance(50) {
            add_file(&mut rng);
        }
        let kill = draw(&mut rng, DOWNLOAD_POINTS, typical);
        let r = run(&env, &args, &[], Some(&kill));
        landed += r.killed as u32;
        assert!(
            r.killed || r.code == Some(0),
            "kill {k} ({}): exit {:?}: {}",
            kill.label(),
            r.code,
            r.stderr
        );
        if rng.chance(30) {
            py.upload(ds, "up_py", &py_url);
        }
    }
    run_to_completion(&env, &args, &[], "the kills");
    py.upload(ds, "up_py", &py_url);
    let total = next_id - 1;
    let current = py.dump(
        &py_db,
        "SELECT COUNT(DISTINCT id) AS n FROM items WHERE _del IS NULL",
    );
    let versions = py.dump(&py_db, "SELECT COUNT(*) AS n FROM items");
    let listing = || {
        let mut v: Vec<String> = std::fs::read_dir(env.path().join("ds/test/dl/data/items"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let m = e.metadata().unwrap().modified().unwrap();
                let m: chrono::DateTime<chrono::Utc> = m.into();
                let mut text = String::new();
                let _ = std::io::Read::read_to_string(
                    &mut flate2::read::MultiGzDecoder::new(std::fs::File::open(e.path()).unwrap()),
                    &mut text,
                );
                let ids: Vec<u64> = text
                    .lines()
                    .filter_map(|l| {
                        serde_json::from_str::<serde_json::Value>(l).ok()?["id"].as_u64()
                    })
                    .collect();
                format!(
                    "{} {} rows {} ids {:?}..{:?}",
                    e.file_name().to_string_lossy(),
                    m.to_rfc3339(),
                    ids.len(),
                    ids.iter().min(),
                    ids.iter().max()
                )
            })
            .collect();
        v.sort();
        let cp = std::fs::read_to_string(
            env.path()
                .join("ds/test/up_py/$checkpoints/dl.items.last.timestamp"),
        )
        .unwrap_or_default();
        format!("{v:#?}\noriginal's checkpoint {cp}")
    };
    assert_eq!(
        current[0]["n"],
        total,
        "seed {seed}: every row in the original's target; files:\n{}",
        listing()
    );
    assert_eq!(versions[0]["n"], total, "seed {seed}: none published twice");
    let r = ours(
        &env,
        &[UPLOAD, &["--datastore", ds]].concat(),
        &[("ACHVY_CNXN__DB__URI", "sqlite://")],
    );
    let d = tbl_data(&r, "dl.items");
    assert_eq!(d["rows_inserted"], total, "seed {seed}: {d}");
    eprintln!("original chaos: {landed} of {kills} kills landed before the run ended");
}
