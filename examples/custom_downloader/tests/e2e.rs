//! The custom downloader binary: the SDK features it uses, a source that never ends
//! under the execution timeout, missing connections, and secret redaction.

use std::path::Path;
use std::time::{Duration, Instant};

const URI: &str = "https://bot:Sup3r-S3cret-Passw0rd@tickets.example.com/v2";
const TOKEN: &str = "tok-9f8e7d6c5b4a-SECRET";

fn cmd(dir: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("custom_downloader").unwrap();
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir.join("home"))
        .env("USER", "tester")
        .env("ACHVY_CNXN__TICKETS__URI", URI)
        .env("ACHVY_CNXN__TICKETS__TOKEN", TOKEN)
        .current_dir(dir)
        .timeout(Duration::from_secs(60));
    c
}

fn results(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

fn tbl_task(r: &serde_json::Value) -> serde_json::Value {
    r["batches"][0]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_type"] == "TBL")
        .unwrap()
        .clone()
}

fn checkpoint(dir: &Path, key: &str) -> serde_json::Value {
    let out = cmd(dir)
        .args(["checkpoints", "--id", "tickets", "--json", key])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["value"].clone()
}

/// Committed data rows per table, counted from the data files the commits list.
fn committed_rows(dir: &Path) -> std::collections::BTreeMap<String, u64> {
    let commits = dir.join("home/.anchovies/tester/tickets/$commits");
    let mut out = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(commits).unwrap() {
        let rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
        for f in rec["files"].as_array().unwrap() {
            *out.entry(f["tbl"].as_str().unwrap().to_string())
                .or_default() += f["rows"].as_u64().unwrap();
        }
    }
    out
}

#[test]
fn source_sink_chain_hooks_and_cursor_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = cmd(d)
        .args([
            "start",
            "-op",
            "example.TicketsDownloader",
            "--id",
            "tickets",
            "--config",
            "{tbls: {tickets: {pages: 3}}}",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = results(&out);
    let xopen = &r["batches"][0]["tasks"][0];
    assert_eq!(xopen["task_type"], "XOPEN");
    assert_eq!(xopen["data"]["api_version"], "v2");
    let t = tbl_task(&r);
    assert_eq!(t["data"]["tables"]["tickets"]["rows"], 15);
    // Odd ids carry one tag, even ids two: 8 + 7 * 2.
    assert_eq!(t["data"]["tables"]["ticket_tags"]["rows"], 22);
    assert_eq!(checkpoint(d, "tickets.cursor"), 3);
    // The API grows to 5 pages: only pages 4 and 5 are read.
    let out = cmd(d)
        .args([
            "start",
            "-op",
            "example.TicketsDownloader",
            "--id",
            "tickets",
            "--config",
            "{tbls: {tickets: {pages: 5}}}",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        tbl_task(&results(&out))["data"]["tables"]["tickets"]["rows"],
        10
    );
    assert_eq!(committed_rows(d)["tickets"], 25);
    assert_eq!(checkpoint(d, "tickets.cursor"), 5);
    // The sink's derived column and table reached the datastore.
    let tables = d.join("home/.anchovies/tester/tickets/$tables");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tables.join("tickets.json")).unwrap()).unwrap();
    assert_eq!(meta["columns"]["priority_label"], "str");
    assert_eq!(meta["columns"]["opened"], "date");
    assert_eq!(meta["columns"]["tags"], "object");
    assert!(tables.join("ticket_tags.json").is_file());
}

#[test]
fn a_source_that_never_ends_is_stopped_by_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t0 = Instant::now();
    let out = cmd(d)
        .args([
            "start",
            "-op",
            "example.TicketsDownloader",
            "--id",
            "tickets",
            "-t",
            "1",
            "--commit-interval",
            "100ms",
            "--config",
            "{tbls: {tickets: {pages: 0, page_delay_ms: 10}}}",
        ])
        .output()
        .unwrap();
    let took = t0.elapsed();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let r = results(&out);
    assert_eq!(r["status"], "ERR");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .starts_with("AnchovyExecutionTimeout")
    );
    let tasks: Vec<(String, String)> = r["batches"][0]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["task_type"].as_str().unwrap().into(),
                t["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        tasks,
        vec![
            ("XOPEN".into(), "OK".into()),
            ("TBL".into(), "ERR".into()),
            ("ERROR".into(), "ERR".into()),
            ("XCLOSE".into(), "OK".into())
        ]
    );
    assert!(
        tbl_task(&r)["error"]
            .as_str()
            .unwrap()
            .contains("execution timeout of 1s")
    );
    // What was committed before the timeout is consistent: the cursor covers exactly the rows.
    let cursor = checkpoint(d, "tickets.cursor").as_u64().unwrap();
    assert!(cursor > 0, "some pages committed before the timeout");
    assert_eq!(committed_rows(d)["tickets"], cursor * 5);
}

#[test]
fn a_missing_connection_names_the_variables_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let out = cmd(dir.path())
        .env_remove("ACHVY_CNXN__TICKETS__URI")
        .env_remove("ACHVY_CNXN__TICKETS__TOKEN")
        .args([
            "start",
            "-op",
            "example.TicketsDownloader",
            "--id",
            "tickets",
            "--config",
            "{tbls: {tickets: {}}}",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("connection \"tickets\" is not configured (needed by example.TicketsDownloader); set ACHVY_CNXN__TICKETS__URI or ACHVY_CNXN__TICKETS__JSONDATA"),
        "{err}"
    );
    assert!(
        !dir.path()
            .join("home/.anchovies/tester/tickets/$task_logs")
            .exists(),
        "nothing ran"
    );
    // JSONDATA works instead.
    let json = format!(r#"{{"uri": "{URI}"}}"#);
    let out = cmd(dir.path())
        .env_remove("ACHVY_CNXN__TICKETS__URI")
        .env("ACHVY_CNXN__TICKETS__JSONDATA", json)
        .args([
            "start",
            "-op",
            "example.TicketsDownloader",
            "--id",
            "tickets",
            "--config",
            "{tbls: {tickets: {pages: 1}}}",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs every path where a secret could leak (an XOPEN hook that logs the URI, an API
/// error echoing the URL and bearer token, trace logs, JSON logs, healthcheck,
/// checkpoints) and greps everything the runs printed or wrote.
#[test]
fn secrets_never_reach_any_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut outputs: Vec<Vec<u8>> = Vec::new();
    for (fmt, cfg) in [
        ("text", "{tbls: {tickets: {pages: 2}}}"),
        ("json", "{tbls: {tickets: {pages: 3}}}"),
    ] {
        let out = cmd(d)
            .args([
                "start",
                "-op",
                "example.TicketsDownloader",
                "--id",
                "tickets",
                "--log-level",
                "trace",
                "--log-format",
                fmt,
                "--config",
                cfg,
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        outputs.push(out.stdout);
        outputs.push(out.stderr);
    }
    // A table whose API call fails with the credentials in the message.
    let out = cmd(d)
        .args([
            "start",
            "-op",
            "example.TicketsDownloader",
            "--id",
            "tickets",
            "--config",
            "{tbls: {tickets: {pages: 9, fail_page: 4}}}",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("503 Service Unavailable (bearer ***)"),
        "{err}"
    );
    assert!(
        err.contains("https://bot:***@tickets.example.com/v2/tickets?page=4"),
        "{err}"
    );
    outputs.push(out.stdout);
    outputs.push(out.stderr);
    for verb in [
        vec![
            "healthcheck",
            "-op",
            "example.TicketsDownloader",
            "--id",
            "tickets",
        ],
        vec!["checkpoints", "--id", "tickets"],
    ] {
        let out = cmd(d).args(&verb).output().unwrap();
        outputs.push(out.stdout);
        outputs.push(out.stderr);
    }
    let mut files = Vec::new();
    walk(&d.join("home"), &mut files);
    assert!(files.len() > 10);
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let text = if f.extension().is_some_and(|e| e == "gz") {
            use std::io::Read;
            let mut s = String::new();
            flate2::read::MultiGzDecoder::new(&bytes[..])
                .read_to_string(&mut s)
                .unwrap();
            s.into_bytes()
        } else {
            bytes
        };
        outputs.push(text);
    }
    let all = outputs
        .iter()
        .map(|o| String::from_utf8_lossy(o).into_owned())
        .collect::<Vec<_>>()
        .join("\n");
    for secret in ["Sup3r-S3cret-Passw0rd", TOKEN] {
        assert!(!all.contains(secret), "secret {secret} leaked");
    }
    assert!(
        all.contains("bot:***@tickets.example.com"),
        "the redacted URI is still shown"
    );
}

fn walk(p: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(p).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}
