//! Service mode (`start -S`): batches loop with a pause, back off after failures, and a
//! stop signal lets the current batch finish (or cancels it after the grace period);
//! either way the service exits 0 and nothing is lost or doubled.

use std::time::{Duration, Instant};

use crate::{Env, commit_count, committed, results};

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn term(child: &std::process::Child) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn ids(env: &Env, id: &str) -> Vec<String> {
    let mut v: Vec<String> = committed(&env.home(), "tester", id)
        .get("t")
        .map(|rows| rows.iter().map(|r| format!("{:?}", r["id"])).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn new_files_across_batches_and_sigterm_mid_batch_finishes_it() {
    let env = Env::new();
    env.write("in/a.csv", "id\n1\n");
    env.write("config.yaml", "tbls:\n  t:\n    path: in/*.csv\n");
    // Each batch of rows takes 1.5 s: a signal can land mid-batch on purpose.
    let child = env.spawn(
        &[
            "start",
            "-op",
            "files.CsvDownloader",
            "--id",
            "svc",
            "-S",
            "--service-pause",
            "100ms",
        ],
        &[("ACHVY_FAILPOINT", "source.batch:sleep-1500")],
    );
    let area = env.area("tester", "svc");
    wait_for("the first commit", || commit_count(&area) >= 1);
    env.write("in/b.csv", "id\n2\n");
    // The next batch picks b.csv up; stop it while it sleeps inside that batch.
    std::thread::sleep(Duration::from_millis(700));
    term(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", crate::stderr(&out));
    let err = crate::stderr(&out);
    assert!(err.contains("finishing the current batch"), "{err}");
    let r = results(&out);
    assert!(r["batches"].as_array().unwrap().len() >= 2);
    assert_eq!(ids(&env, "svc"), vec!["String(\"1\")", "String(\"2\")"]);
    // A rerun finds nothing missing and nothing new.
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", "svc"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(ids(&env, "svc").len(), 2);
}

#[test]
fn past_the_grace_period_the_batch_is_cancelled_and_redone_by_the_next_run() {
    let env = Env::new();
    env.write("in/a.csv", "id\n1\n");
    env.write("config.yaml", "tbls:\n  t:\n    path: in/*.csv\n");
    let child = env.spawn(
        &[
            "start",
            "-op",
            "files.CsvDownloader",
            "--id",
            "g",
            "-S",
            "--stop-grace",
            "300ms",
        ],
        &[("ACHVY_FAILPOINT", "source.batch:sleep-5000")],
    );
    std::thread::sleep(Duration::from_millis(800));
    let t0 = Instant::now();
    term(&child);
    let out = child.wait_with_output().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "the grace period was not enforced"
    );
    assert_eq!(out.status.code(), Some(0), "{}", crate::stderr(&out));
    assert!(crate::stderr(&out).contains("grace period over"));
    assert!(ids(&env, "g").is_empty(), "a cancelled batch committed");
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", "g"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(ids(&env, "g"), vec!["String(\"1\")"]);
}

#[test]
fn failed_batches_back_off() {
    let env = Env::new();
    env.write("in/bad.csv", "id,x\n1\n");
    env.write("config.yaml", "tbls:\n  t:\n    path: in/*.csv\n");
    let child = env.spawn(
        &[
            "start",
            "-op",
            "files.CsvDownloader",
            "--id",
            "b",
            "-S",
            "--service-pause",
            "100ms",
        ],
        &[],
    );
    std::thread::sleep(Duration::from_millis(1200));
    term(&child);
    let out = child.wait_with_output().unwrap();
    let err = crate::stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("failures=1 pause_s=0.2"), "{err}");
    assert!(err.contains("failures=2 pause_s=0.4"), "{err}");
}

/// A free local port for a service's endpoint.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` over plain HTTP/1.1: (status, body).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// Every sample line is `name{labels} value`, every family has HELP and TYPE.
fn parse_prometheus(text: &str) -> Vec<(String, String, f64)> {
    let mut out = vec![];
    let mut typed = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut p = rest.split_whitespace();
            let name = p.next().unwrap();
            assert!(matches!(p.next(), Some("counter" | "gauge")), "{line}");
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name in {line}"
        );
        assert!(labels.ends_with('}'), "{line}");
        assert!(typed.contains(name), "{name} has no TYPE");
        out.push((name.to_string(), labels.to_string(), value.parse().unwrap()));
    }
    out
}

#[test]
fn health_ready_and_metrics_endpoints() {
    let env = Env::new();
    env.write("in/a.csv", "id\n1\n2\n");
    env.write("config.yaml", "tbls:\n  t:\n    path: in/*.csv\n");
    let port = free_port();
    let p = port.to_string();
    let child = env.spawn(
        &[
            "start",
            "-op",
            "files.CsvDownloader",
            "--id",
            "m",
            "-S",
            "--service-pause",
            "200ms",
            "--port",
            &p,
        ],
        &[],
    );
    wait_for("the endpoint", || {
        get(port, "/healthz").is_some_and(|(s, _)| s == 200)
    });
    wait_for("readiness", || {
        get(port, "/readyz").is_some_and(|(s, _)| s == 200)
    });
    // Ready (started, lease held) can come before the first batch has finished.
    wait_for("the first batch's rows in the metrics", || {
        get(port, "/metrics").is_some_and(|(_, b)| {
            b.lines()
                .any(|l| l.starts_with("anchovy_rows_total{") && l.contains("table=\"t\""))
        })
    });
    let (status, body) = get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    let samples = parse_prometheus(&body);
    let rows = samples
        .iter()
        .find(|(n, l, _)| n == "anchovy_rows_total" && l.contains("table=\"t\""))
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(rows.2, 2.0);
    // Bytes by meaning: a downloader writes (as stored), reads none from a datastore.
    let bytes = |name: &str| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l.contains("table=\"t\""))
            .map(|s| s.2)
    };
    assert!(
        bytes("anchovy_bytes_written_total").unwrap() > 0.0,
        "{body}"
    );
    assert_eq!(bytes("anchovy_bytes_read_total"), Some(0.0), "{body}");
    assert!(
        samples
            .iter()
            .any(|(n, _, v)| n == "anchovy_lease_held" && *v == 1.0)
    );
    assert!(
        samples
            .iter()
            .any(|(n, _, _)| n == "anchovy_last_success_timestamp_seconds")
    );
    assert_eq!(get(port, "/nope").unwrap().0, 404);
    // A failing batch makes the service not ready; it stays alive.
    env.write("in/b.csv", "id,x\n1\n");
    wait_for("not ready after a failed batch", || {
        get(port, "/readyz").is_some_and(|(s, b)| s == 503 && b.contains("the last batch failed"))
    });
    assert_eq!(get(port, "/healthz").unwrap().0, 200);
    let body = get(port, "/metrics").unwrap().1;
    assert!(
        parse_prometheus(&body)
            .iter()
            .any(|(n, l, v)| n == "anchovy_batches_total"
                && l.contains("status=\"err\"")
                && *v >= 1.0)
    );
    term(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", crate::stderr(&out));
}

/// An uploader's lag is measured when scraped: 0 once it has loaded the upstream's
/// newest commit, then growing while a newer commit waits for it (here the service
/// sleeps for an hour between batches, as a stuck or frozen uploader would): not the
/// small lag of its last load.
#[test]
fn an_uploader_s_lag_grows_while_upstream_commits_wait() {
    let env = Env::new();
    env.write("in/a.csv", "id\n1\n");
    env.write("config.yaml", "tbls:\n  a:\n    path: in/*.csv\n");
    let download = || {
        let out = env
            .cmd()
            .args(["start", "-op", "files.CsvDownloader", "--id", "dl"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", crate::stderr(&out));
    };
    download();
    let port = free_port();
    let p = port.to_string();
    let child = env.spawn(
        &[
            "start",
            "-op",
            "sql.Uploader",
            "--id",
            "up",
            "-U",
            "dl",
            "-S",
            "--service-pause",
            "1h",
            "--port",
            &p,
        ],
        &[("ACHVY_CNXN__DB__URI", "sqlite://")],
    );
    let lag = || -> Option<f64> {
        let body = get(port, "/metrics")?.1;
        parse_prometheus(&body)
            .into_iter()
            .find(|(n, l, _)| n == "anchovy_lag_seconds" && l.contains("table=\"dl.a\""))
            .map(|s| s.2)
    };
    wait_for("the lag of the first load", || lag() == Some(0.0));
    let body = get(port, "/metrics").unwrap().1;
    assert!(
        parse_prometheus(&body)
            .iter()
            .any(|(n, l, v)| n == "anchovy_bytes_read_total"
                && l.contains("table=\"dl.a\"")
                && *v > 0.0),
        "{body}"
    );
    env.write("in/b.csv", "id\n2\n");
    download();
    std::thread::sleep(Duration::from_millis(1500));
    let first = lag().unwrap();
    assert!(first >= 1.0, "lag {first} s while commit 2 waits");
    std::thread::sleep(Duration::from_millis(1000));
    let then = lag().unwrap();
    assert!(then >= first + 0.9, "lag {first} s, then {then} s");
    term(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", crate::stderr(&out));
}

/// A long service's results keep its newest 100 batches and count the ones left out.
#[test]
fn a_long_service_s_results_keep_the_newest_batches() {
    let env = Env::new();
    env.write("in/a.csv", "id\n1\n");
    env.write("config.yaml", "tbls:\n  t:\n    path: in/*.csv\n");
    let child = env.spawn(
        &[
            "start",
            "-op",
            "files.CsvDownloader",
            "--id",
            "long",
            "-S",
            "--service-pause",
            "1ms",
        ],
        &[],
    );
    let logs = env.area("tester", "long").join("$task_logs");
    wait_for("110 batches", || {
        std::fs::read_dir(&logs).map_or(0, |d| d.count()) > 110 * 3
    });
    term(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", crate::stderr(&out));
    let r = results(&out);
    let kept = r["batches"].as_array().unwrap();
    assert_eq!(kept.len(), 100);
    let omitted = r["batches_omitted"].as_u64().unwrap();
    assert!(omitted >= 10, "{omitted}");
    assert_eq!(kept[0]["batch_id"].as_u64().unwrap(), omitted + 1);
}

#[test]
fn task_mode_writes_a_metrics_textfile() {
    let env = Env::new();
    env.write("in/a.csv", "id\n1\n2\n3\n");
    env.write("config.yaml", "tbls:\n  t:\n    path: in/*.csv\n");
    let file = env.path().join("anchovy.prom");
    let out = env
        .cmd()
        .args([
            "start",
            "-op",
            "files.CsvDownloader",
            "--id",
            "tf",
            "--metrics-file",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(&file).unwrap();
    let samples = parse_prometheus(&text);
    assert!(
        samples.iter().any(|(n, l, v)| n == "anchovy_rows_total"
            && l.contains("anchovy=\"tf\"")
            && *v == 3.0)
    );
}

/// `anchovy healthcheck -S` while the service runs: it asks the service's `/readyz`.
#[test]
fn healthcheck_asks_a_running_service() {
    let env = Env::new();
    env.write("in/a.csv", "id\n1\n");
    env.write("config.yaml", "tbls:\n  t:\n    path: in/*.csv\n");
    let p = free_port().to_string();
    let child = env.spawn(
        &[
            "start",
            "-op",
            "files.CsvDownloader",
            "--id",
            "hs",
            "-S",
            "--port",
            &p,
        ],
        &[],
    );
    let port: u16 = p.parse().unwrap();
    wait_for("readiness", || {
        get(port, "/readyz").is_some_and(|(s, _)| s == 200)
    });
    let out = env
        .cmd()
        .args([
            "healthcheck",
            "-op",
            "files.CsvDownloader",
            "--id",
            "hs",
            "-S",
            "--port",
            &p,
        ])
        .output()
        .unwrap();
    term(&child);
    let _ = child.wait_with_output();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok   service: ready"), "{text}");
    // The service is gone: a probe built on `healthcheck -S` must fire.
    let down = |extra: &[&str]| {
        let out = env
            .cmd()
            .args([
                "healthcheck",
                "-op",
                "files.CsvDownloader",
                "--id",
                "hs",
                "-S",
            ])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = down(&["--port", &p]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("FAIL service: no service answers on 127.0.0.1:"),
        "{text}"
    );
    let (code, text) = down(&["--port", "0"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("FAIL service: the endpoint is off"), "{text}");
}

/// Progress bars appear on a terminal (a pty from `script`), never when stderr is not
/// one, and not with `--no-progress`.
#[test]
fn progress_bars_only_on_a_terminal() {
    let env = Env::new();
    env.write("in/a.csv", "id\n1\n2\n");
    env.write("config.yaml", "tbls:\n  t:\n    path: in/*.csv\n");
    let bin = assert_cmd::cargo::cargo_bin("anchovy");
    let on_tty = |extra: &str, id: &str| {
        let log = env.path().join(format!("tty-{id}.out"));
        let cmd = format!(
            "env HOME={} USER=tester ACHVY_PORT=0 {} start -op files.CsvDownloader --id {id} {extra}",
            env.path().join("home").display(),
            bin.display()
        );
        let ok = std::process::Command::new("script")
            .args(["-qec", &cmd])
            .arg(&log)
            .current_dir(env.path())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("`script` (util-linux) runs the command on a pty")
            .success();
        assert!(ok);
        String::from_utf8_lossy(&std::fs::read(log).unwrap()).into_owned()
    };
    let shown = on_tty("", "p1");
    assert!(
        shown.contains("rows/s") && shown.contains("done:"),
        "{shown}"
    );
    let hidden = on_tty("--no-progress", "p2");
    assert!(!hidden.contains("rows/s"), "{hidden}");
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", "p3"])
        .output()
        .unwrap();
    assert!(!crate::stderr(&out).contains("rows/s"));
}
