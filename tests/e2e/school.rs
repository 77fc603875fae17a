//! `anchovy school run`: members ordered by their -U upstreams, independent ones side
//! by side, both policies, and a clear error for a cycle.

use std::time::{Duration, Instant};

use crate::Env;

fn school(env: &Env, yaml: &str, extra: &[&str]) -> std::process::Output {
    env.write("school.yaml", yaml);
    env.cmd()
        .args(["school", "run", "-f", "school.yaml", "--json"])
        .args(extra)
        .output()
        .unwrap()
}

fn summary(out: &std::process::Output) -> Vec<serde_json::Value> {
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", crate::stderr(out)))
        .as_array()
        .unwrap()
        .clone()
}

fn outcome<'a>(s: &'a [serde_json::Value], id: &str) -> &'a str {
    s.iter().find(|m| m["id"] == id).unwrap()["outcome"]
        .as_str()
        .unwrap()
}

fn results_of(env: &Env, id: &str) -> serde_json::Value {
    let p = env
        .area("tester", id)
        .join("$results/anchovy_run_results.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn setup() -> Env {
    let env = Env::new();
    for d in ["a", "b", "c"] {
        env.write(&format!("{d}/x.csv"), "id\n1\n2\n");
    }
    env
}

#[test]
fn upstreams_first_independent_members_in_parallel() {
    let env = setup();
    // Three downloaders that each take >= 1 s, and an uploader of two of them.
    let yaml = r#"
parallel: 3
env: {ACHVY_FAILPOINT: "source.batch:sleep-1000", ACHVY_CNXN__DB__URI: "sqlite://"}
anchovies:
  - start -op sql.Uploader --id wh -U a -U b --config '{}'
  - start -op files.CsvDownloader --id a --config '{"tbls":{"t":{"path":"a/*.csv"}}}'
  - start -op files.CsvDownloader --id b --config '{"tbls":{"t":{"path":"b/*.csv"}}}'
  - start -op files.CsvDownloader --id c --config '{"tbls":{"t":{"path":"c/*.csv"}}}'
"#;
    let t0 = Instant::now();
    let out = school(&env, yaml, &[]);
    let took = t0.elapsed();
    assert!(out.status.success(), "{}", crate::stderr(&out));
    let s = summary(&out);
    for id in ["a", "b", "c", "wh"] {
        assert_eq!(outcome(&s, id), "OK", "{s:?}");
    }
    // a, b, c ran side by side: well under the 3+ s they take one after another.
    assert!(took < Duration::from_millis(2900), "{took:?}");
    // The uploader started only after both its upstreams finished, and loaded both.
    let wh = results_of(&env, "wh");
    for up in ["a", "b"] {
        assert!(wh["started_at"].as_str() > results_of(&env, up)["finished_at"].as_str());
    }
    assert_eq!(s.iter().find(|m| m["id"] == "wh").unwrap()["rows"], 4);
}

#[test]
fn continue_skips_only_dependents_raise_starts_nothing_new() {
    let env = setup();
    env.write("bad/x.csv", "id,x\n1\n");
    let yaml = r#"
parallel: 1
anchovies:
  - start -op files.CsvDownloader --id bad --config '{"tbls":{"t":{"path":"bad/*.csv"}}}'
  - start -op sql.Uploader --id wh -U bad --config '{}'
  - start -op files.CsvDownloader --id a --config '{"tbls":{"t":{"path":"a/*.csv"}}}'
"#;
    let out = school(&env, yaml, &[]);
    assert_eq!(out.status.code(), Some(1));
    let s = summary(&out);
    assert_eq!(outcome(&s, "bad"), "FAILED (exit 1)");
    assert_eq!(outcome(&s, "wh"), "SKIPPED (upstream bad did not succeed)");
    assert_eq!(outcome(&s, "a"), "OK");
    let out = school(&env, yaml, &["--policy", "raise"]);
    assert_eq!(out.status.code(), Some(1));
    let s = summary(&out);
    assert_eq!(outcome(&s, "a"), "SKIPPED (policy RAISE after a failure)");
    // The text summary is a table.
    env.write("school.yaml", yaml);
    let out = env
        .cmd()
        .args(["school", "run", "-f", "school.yaml"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("ANCHOVY") && text.contains("FAILED (exit 1)"),
        "{text}"
    );
}

#[test]
fn a_cycle_or_a_bad_member_is_a_configuration_error() {
    let env = setup();
    let out = school(
        &env,
        "anchovies:\n  - start -op sql.Uploader --id x -U y\n  - start -op sql.Uploader --id y -U x\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        crate::stderr(&out).contains("cycle: x -> y -> x"),
        "{}",
        crate::stderr(&out)
    );
    let out = school(&env, "anchovies:\n  - start -op files.CsvDownloader\n", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(crate::stderr(&out).contains("give every member an --id"));
    // A member of the wrong shape says which shapes work, not serde's jargon.
    for member in ["42", "{runn: start}", "{run: [a]}"] {
        let out = school(&env, &format!("anchovies:\n  - {member}\n"), &[]);
        let err = crate::stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("is a command line"), "{member}: {err}");
        assert!(!err.contains("untagged"), "{err}");
    }
}

/// A member may be any program (`run: dbt build ...`): it runs after the members it
/// names in `after:` (or, without it, after every member listed before it), under the
/// same policy and in the same summary; one that fails skips its dependents, and an
/// `after:` naming nobody is a bad school file.
#[test]
fn programs_run_after_the_loads_they_follow() {
    let env = setup();
    // The "transform" counts the rows the uploader loaded: it must run after it.
    let count = r#"import sqlite3, os, sys; db = os.path.expanduser('~/.anchovies/tester/warehouse.sqlite'); n = sqlite3.connect(db).execute('SELECT COUNT(*) FROM "a__tester__t"').fetchone()[0]; open('count.txt', 'w').write(str(n)); print('transformed', n)"#;
    let yaml = format!(
        r#"
parallel: 4
env: {{ACHVY_CNXN__DB__URI: "sqlite://"}}
anchovies:
  - start -op files.CsvDownloader --id a --config '{{"tbls":{{"t":{{"path":"a/*.csv"}}}}}}'
  - start -op sql.Uploader --id wh -U a --config '{{}}'
  - run: python3 -c "{}"
    id: transform
  - run: sh -c 'exit 3'
    id: broken
    after: [a]
  - run: sh -c 'echo never > never.txt'
    after: broken
"#,
        count.replace('"', "\\\"")
    );
    let out = school(&env, &yaml, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", crate::stderr(&out));
    let s = summary(&out);
    assert_eq!(outcome(&s, "a"), "OK");
    assert_eq!(outcome(&s, "wh"), "OK");
    assert_eq!(outcome(&s, "transform"), "OK", "{}", crate::stderr(&out));
    assert_eq!(outcome(&s, "broken"), "FAILED (exit 3)");
    assert!(
        outcome(&s, "sh").starts_with("SKIPPED (upstream broken"),
        "{s:?}"
    );
    assert_eq!(
        std::fs::read_to_string(env.path().join("count.txt")).unwrap(),
        "2"
    );
    assert!(!env.path().join("never.txt").exists());
    // The program's output went to stderr, not into the summary.
    assert!(crate::stderr(&out).contains("transformed 2"));
    // `after:` must name a member.
    let out = school(
        &env,
        "anchovies:\n  - run: \"true\"\n    after: [nobody]\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        crate::stderr(&out).contains("`after: nobody` names no member"),
        "{}",
        crate::stderr(&out)
    );
}
