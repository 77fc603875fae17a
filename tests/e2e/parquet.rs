//! Parquet both ways: the datastore written as Parquet (`data_buffer_cls: parquet`)
//! is read by DuckDB value for value and uploads exactly as NDJSON does; one anchovy
//! with files of both formats reads them all; Parquet source files (written by
//! pyarrow) are read by the file downloaders (`format: parquet`). DuckDB and pyarrow
//! come from PyPI (script/services.sh `install_parquet_py`, `PARQUET_PYTHON`).

use std::path::{Path, PathBuf};

use crate::upload::{Target, fetch, upload};
use crate::{Env, committed, need, results, tbl_data};

/// Runs a Python snippet with DuckDB and pyarrow; returns its stdout.
fn python(code: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(need("PARQUET_PYTHON"))
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The data files of a table in an anchovy's area with this extension, sorted.
fn data_files(area: &Path, tbl: &str, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(area.join("data").join(tbl))
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.to_string_lossy().ends_with(ext));
    v.sort();
    v
}

const CONFIG: &str = "tbls:\n  orders:\n    path: or/*.csv\n    unique_by: id\n    columns: {id: int, qty: int, price: decimal, at: datetime, at_tz: datetime, day: date, t: time, ok: bool, score: float}\n";
const ROWS: &str = "id,qty,price,at,at_tz,day,t,ok,score,note\n\
1,3,12.50,2024-05-11T09:38:53,2024-05-11T09:38:53+02:00,2024-05-11,09:30:00,true,1.5,\"plain\"\n\
2,,-3.10,2024-05-12T00:00:00.123456,2024-05-12T23:59:59Z,2024-02-29,23:59:59.5,false,-0.25,\"a, \"\"quoted\"\"\nline 🐟\"\n\
3,7,0.00,,,,,,,\n";

fn download(env: &Env, id: &str, format: &str) -> std::process::Output {
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", id])
        .env("ACHVY_DATA_BUFFER_CLS", format)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::stderr(&out));
    out
}

#[test]
fn parquet_data_files_read_by_duckdb_and_upload_like_ndjson() {
    let env = Env::new();
    env.write("config.yaml", CONFIG);
    env.write("or/1.csv", ROWS);
    // Ids of their own: PostgreSQL outlives the test.
    let (pq, nd) = (format!("pq{}", env.nonce()), format!("nd{}", env.nonce()));
    download(&env, &pq, "parquet");
    download(&env, &nd, "ndjson.gz");
    let files = data_files(&env.area("tester", &pq), "orders", ".parquet");
    assert_eq!(files.len(), 1, "one Parquet file: {files:?}");
    assert!(data_files(&env.area("tester", &pq), "orders", ".ndjson.gz").is_empty());

    // DuckDB reads the file as it is: its types, then every value as DuckDB prints it.
    let code = r#"
import duckdb, json, sys
con = duckdb.connect()
con.execute("SET TimeZone='UTC'")
rel = con.sql(f"SELECT * FROM read_parquet('{sys.argv[1]}') ORDER BY id")
print(json.dumps(dict(zip(rel.columns, [str(t) for t in rel.types]))))
cols = ", ".join(f'CAST("{c}" AS VARCHAR)' for c in rel.columns)
for row in con.sql(f"SELECT {cols} FROM read_parquet('{sys.argv[1]}') ORDER BY id").fetchall():
    print(json.dumps(row, ensure_ascii=False))
"#;
    let out = python(code, &[files[0].to_str().unwrap()]);
    let mut lines = out.lines();
    let types: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(
        types,
        serde_json::json!({
            "id": "BIGINT", "qty": "BIGINT", "price": "DECIMAL(38,2)", "at": "TIMESTAMP",
            "at_tz": "TIMESTAMP WITH TIME ZONE", "day": "DATE", "t": "TIME", "ok": "BOOLEAN",
            "score": "DOUBLE", "note": "VARCHAR"
        }),
        "{out}"
    );
    let rows: Vec<serde_json::Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(
        rows,
        vec![
            serde_json::json!([
                "1",
                "3",
                "12.50",
                "2024-05-11 09:38:53",
                "2024-05-11 07:38:53+00",
                "2024-05-11",
                "09:30:00",
                "true",
                "1.5",
                "plain"
            ]),
            serde_json::json!([
                "2",
                null,
                "-3.10",
                "2024-05-12 00:00:00.123456",
                "2024-05-12 23:59:59+00",
                "2024-02-29",
                "23:59:59.5",
                "false",
                "-0.25",
                "a, \"quoted\"\nline 🐟"
            ]),
            serde_json::json!(["3", "7", "0.00", null, null, null, null, null, null, ""]),
        ],
        "{out}"
    );

    // The same rows through the commit record, from both formats: equal (the one
    // documented difference, an offset kept as the UTC instant, compares equal).
    assert_eq!(
        committed(&env.home(), "tester", &pq),
        committed(&env.home(), "tester", &nd)
    );

    // Uploaded, both give the same table, value for value.
    env.write("upload.yaml", "tbls: {}\n");
    for target in [Target::Sqlite, Target::Pg] {
        let mut tables = Vec::new();
        for up in [pq.as_str(), nd.as_str()] {
            let out = upload(
                &env,
                target,
                &format!("{up}_{target:?}_{}", env.nonce()).to_lowercase(),
                up,
                &[],
            );
            assert!(out.status.success(), "{}", crate::stderr(&out));
            let cols: Vec<String> = [
                "id", "qty", "price", "at", "at_tz", "day", "t", "ok", "score", "note",
            ]
            .iter()
            .map(|c| target.text(&target.q(c)))
            .collect();
            tables.push(fetch(
                target,
                &env,
                &format!(
                    "SELECT {} FROM {} ORDER BY 1",
                    cols.join(", "),
                    target.table(up, "orders")
                ),
            ));
        }
        assert_eq!(tables[0].len(), 3, "{target:?}");
        // `at_tz` (column 4) holds the same instant; SQLite keeps text, so the offset
        // written by NDJSON shows there and Parquet's UTC form here.
        let instant = |v: &Option<String>| {
            v.as_ref().map(|s| {
                chrono::DateTime::parse_from_rfc3339(s)
                    .map(|d| d.timestamp_micros())
                    .ok()
            })
        };
        for (p, n) in tables[0].iter().zip(&tables[1]) {
            assert_eq!(instant(&p[4]), instant(&n[4]), "{target:?}");
            let strip = |r: &[Option<String>]| [&r[..4], &r[5..]].concat();
            assert_eq!(
                strip(p),
                strip(n),
                "{target:?}: Parquet and NDJSON loads differ"
            );
        }
    }
}

#[test]
fn one_anchovy_with_both_formats_reads_them_all() {
    let env = Env::new();
    env.write("config.yaml", CONFIG);
    env.write("or/1.csv", ROWS);
    download(&env, "mix", "ndjson.gz");
    env.write("or/2.csv", "id,qty,price,note\n4,1,9.99,later\n");
    let out = download(&env, "mix", "parquet");
    assert_eq!(tbl_data(&results(&out), "orders")["files_read"], 1);
    let area = env.area("tester", "mix");
    assert_eq!(data_files(&area, "orders", ".ndjson.gz").len(), 1);
    assert_eq!(data_files(&area, "orders", ".parquet").len(), 1);
    // Each file's format is in its commit record.
    let records: Vec<serde_json::Value> = std::fs::read_dir(area.join("$commits"))
        .unwrap()
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect();
    let formats: Vec<Option<String>> = records
        .iter()
        .flat_map(|r| r["files"].as_array().cloned().unwrap_or_default())
        .map(|f| f["format"].as_str().map(String::from))
        .collect();
    assert!(formats.contains(&Some("parquet".into())), "{records:?}");
    assert!(
        formats.contains(&None),
        "ndjson.gz is the default, left out: {records:?}"
    );
    assert_eq!(committed(&env.home(), "tester", "mix")["orders"].len(), 4);
    env.write("upload.yaml", "tbls: {}\n");
    let out = upload(&env, Target::Sqlite, "mixup", "mix", &[]);
    assert!(out.status.success(), "{}", crate::stderr(&out));
    let n = fetch(
        Target::Sqlite,
        &env,
        &format!(
            "SELECT CAST(COUNT(*) AS TEXT), CAST(SUM(qty) AS TEXT) FROM {}",
            Target::Sqlite.table("mix", "orders")
        ),
    );
    assert_eq!(n, vec![vec![Some("4".into()), Some("11".into())]]);
}

#[test]
fn parquet_source_files_are_read_with_their_types() {
    let env = Env::new();
    std::fs::create_dir_all(env.path().join("pq")).unwrap();
    let code = r#"
import pyarrow as pa, pyarrow.parquet as pq, datetime as dt, decimal, sys
t = pa.table({
    "id": pa.array([1, 2, 3], pa.int32()),
    "big": pa.array([2**63 - 1, None, -5], pa.int64()),
    "u": pa.array([2**64 - 1, 0, 7], pa.uint64()),
    "price": pa.array([decimal.Decimal("12.50"), None, decimal.Decimal("-0.01")], pa.decimal128(10, 2)),
    "ratio": pa.array([0.5, float("nan"), None], pa.float32()),
    "name": pa.array(["Zoë", "a,\"b\"\nc", None]),
    "cat": pa.array(["x", "y", "x"]).dictionary_encode(),
    "at": pa.array([dt.datetime(2024, 5, 11, 9, 38, 53, 123456), None, dt.datetime(1969, 12, 31, 23, 59, 59)], pa.timestamp("us")),
    "at_tz": pa.array([dt.datetime(2024, 5, 11, 7, 38, 53, tzinfo=dt.timezone.utc), None, None], pa.timestamp("ms", tz="Europe/Paris")),
    "day": pa.array([dt.date(2024, 2, 29), None, dt.date(1900, 1, 1)], pa.date32()),
    "t": pa.array([dt.time(9, 30, 0, 250000), None, None], pa.time64("us")),
    "ok": pa.array([True, False, None]),
    "raw": pa.array([b"\x00\xff", None, b""], pa.binary()),
    "tags": pa.array([[1, 2], [], None], pa.list_(pa.int64())),
    "obj": pa.array([{"k": "v", "n": 1}, None, {"k": None, "n": 2}], pa.struct([("k", pa.string()), ("n", pa.int64())])),
    "code": pa.array(["2024-01-02", "x", None]),
})
pq.write_table(t, sys.argv[1] + "/a.parquet", compression="snappy", row_group_size=2)
import gzip, io
buf = io.BytesIO()
pq.write_table(t.slice(0, 1), buf, compression="brotli")
open(sys.argv[1] + "/b.parquet.gz", "wb").write(gzip.compress(buf.getvalue()))
"#;
    python(code, &[env.path().join("pq").to_str().unwrap()]);
    env.write(
        "config.yaml",
        "tbls:\n  t:\n    path: pq/*.parquet*\n    format: parquet\n    provenance: true\n    on_bad_record: quarantine\n    columns: {code: date}\n",
    );
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", "src"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::stderr(&out));
    let d = tbl_data(&results(&out), "t");
    assert_eq!(
        (d["files_read"].as_u64(), d["rows_read"].as_u64()),
        (Some(2), Some(4)),
        "{d}"
    );
    // Row 2 of a.parquet has `code: x`, not a date: quarantined, the others flow.
    assert_eq!(d["quarantined"], 1, "{d}");
    let rows = committed(&env.home(), "tester", "src");
    let t = &rows["t"];
    assert_eq!(t.len(), 3);
    let a = t
        .iter()
        .find(|r| {
            r["id"] == anchovy_core::Value::Int(1) && r["_file"].text().ends_with("a.parquet")
        })
        .unwrap();
    let text = |c: &str| a[c].text().into_owned();
    assert_eq!(text("big"), i64::MAX.to_string());
    assert_eq!(a["u"], anchovy_core::Value::Decimal(u64::MAX.to_string()));
    assert_eq!(a["price"], anchovy_core::Value::Decimal("12.50".into()));
    assert_eq!(a["ratio"], anchovy_core::Value::Float(0.5));
    assert_eq!(text("name"), "Zoë");
    assert_eq!(text("cat"), "x");
    assert_eq!(text("at"), "2024-05-11T09:38:53.123456");
    assert_eq!(text("at_tz"), "2024-05-11T07:38:53Z");
    assert_eq!(text("day"), "2024-02-29");
    assert_eq!(text("t"), "09:30:00.250");
    assert_eq!(a["ok"], anchovy_core::Value::Bool(true));
    assert_eq!(a["raw"], anchovy_core::Value::Bytes(vec![0, 255]));
    assert_eq!(a["tags"].to_json(), serde_json::json!([1, 2]));
    assert_eq!(a["obj"].to_json(), serde_json::json!({"k": "v", "n": 1}));
    assert_eq!(text("code"), "2024-01-02");
    assert_eq!(a["_line"], anchovy_core::Value::Int(1));
    let c = t
        .iter()
        .find(|r| r["id"] == anchovy_core::Value::Int(3))
        .unwrap();
    assert_eq!(c["at"].text(), "1969-12-31T23:59:59");
    assert_eq!(c["obj"].to_json(), serde_json::json!({"k": null, "n": 2}));
    assert_eq!(c["raw"], anchovy_core::Value::Bytes(vec![]));
    assert_eq!(c["_line"], anchovy_core::Value::Int(3));
    // A rerun reads nothing new.
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", "src"])
        .output()
        .unwrap();
    assert_eq!(tbl_data(&results(&out), "t")["files_read"], 0);
    // Not Parquet: named, with the file.
    env.write("pq/c.parquet", "id\n1\n");
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", "src"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        crate::stderr(&out).contains("c.parquet: not a readable Parquet file"),
        "{}",
        crate::stderr(&out)
    );
}
