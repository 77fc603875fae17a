//! Settings through the command line, the environment and config.yaml; error exits.

use crate::{Env, results};

const CSV_TABLE: &str = "tbls:\n  t:\n    path: in/*.csv\n";

fn env_with_table() -> Env {
    let env = Env::new();
    env.write("in/a.csv", "id\n1\n");
    env
}

#[test]
fn id_precedence_cli_over_env_over_file() {
    let env = env_with_table();
    env.write(
        "config.yaml",
        format!("config:\n  id: from_file\n  operator_cls: files.CsvDownloader\n{CSV_TABLE}"),
    );
    let run = |extra_env: Option<&str>, extra_arg: Option<&str>| {
        let mut c = env.cmd();
        c.arg("start");
        if let Some(v) = extra_env {
            c.env("ACHVY_ID", v);
        }
        if let Some(v) = extra_arg {
            c.args(["--id", v]);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", crate::stderr(&out));
        results(&out)["anchovy_id"].as_str().unwrap().to_string()
    };
    assert_eq!(run(None, None), "from_file");
    assert_eq!(run(Some("from_env"), None), "from_env");
    assert_eq!(run(Some("from_env"), Some("from_cli")), "from_cli");
    assert!(env.area("tester", "from_cli").join("$commits").is_dir());
}

#[test]
fn each_route_sets_user_datastore_and_policy() {
    // CLI
    let env = env_with_table();
    env.write("config.yaml", CSV_TABLE);
    let out = env
        .cmd()
        .args([
            "start",
            "-op",
            "files.CsvDownloader",
            "-i",
            "x",
            "--prod",
            "--datastore",
            "ds_cli",
            "--batch-policy",
            "raise",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::stderr(&out));
    assert!(env.path().join("ds_cli/prod/x/$results").is_dir());
    // env
    let out = env
        .cmd()
        .args(["start"])
        .env("ACHVY_OPERATOR_CLS", "files.CsvDownloader")
        .env("ACHVY_ID", "y")
        .env("ACHVY_USER", "envuser")
        .env(
            "ACHVY_DATASTORE",
            "file://".to_string() + env.path().join("ds_env").to_str().unwrap(),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::stderr(&out));
    assert!(env.path().join("ds_env/envuser/y/$results").is_dir());
    // config.yaml `config:` map, and ACHVY_HOME
    env.write(
        "config.yaml",
        format!("config:\n  id: z\n  user: fileuser\n  operator_cls: core.files.CsvDownloader\n  home: ds_file\n{CSV_TABLE}"),
    );
    let out = env.cmd().arg("start").output().unwrap();
    assert!(out.status.success(), "{}", crate::stderr(&out));
    assert!(env.path().join("ds_file/fileuser/z/$results").is_dir());
    let out = env
        .cmd()
        .arg("start")
        .env("ACHVY_HOME", "ds_home")
        .output()
        .unwrap();
    assert!(out.status.success());
    // The file's `home:` loses to ACHVY_HOME.
    assert!(env.path().join("ds_home/fileuser/z/$results").is_dir());
}

#[test]
fn config_text_and_config_file_flags() {
    let env = env_with_table();
    env.write(
        "other.yml",
        format!("config:\n  id: from_other\n{CSV_TABLE}"),
    );
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "-c", "other.yml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::stderr(&out));
    assert_eq!(results(&out)["anchovy_id"], "from_other");
    let json = r#"{"config": {"id": "from_json"}, "tbls": {"t": {"path": "in/*.csv"}}}"#;
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--config", json])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::stderr(&out));
    assert_eq!(results(&out)["anchovy_id"], "from_json");
}

#[test]
fn unknown_config_key_exits_2_with_a_suggestion() {
    let env = env_with_table();
    env.write(
        "config.yaml",
        format!("config:\n  execution_timout: 10\n{CSV_TABLE}"),
    );
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = crate::stderr(&out);
    assert!(
        err.contains("unknown key `execution_timout`")
            && err.contains("did you mean `execution_timeout`?"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_yaml_bad_values_and_unknown_operator_exit_2() {
    let env = env_with_table();
    env.write("config.yaml", "tbls:\n  t: [unclosed\n");
    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        crate::stderr(&out).contains("cannot parse config.yaml"),
        "{}",
        crate::stderr(&out)
    );

    env.write("config.yaml", CSV_TABLE);
    let out = env
        .cmd()
        .args(["start", "-op", "sftp.CsvDownloadr"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        crate::stderr(&out)
            .contains("unknown operator `sftp.CsvDownloadr`; known operators: files.CsvDownloader"),
        "{}",
        crate::stderr(&out)
    );

    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "-t", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(crate::stderr(&out).contains("`soon` from command line is not a duration"));

    let out = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader"])
        .env("ACHVY_MAX_CONCURRENCY", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(crate::stderr(&out).contains("`lots` from environment is not a whole number"));

    let out = env.cmd().args(["start"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(crate::stderr(&out).contains("pass -op <name> or set ACHVY_OPERATOR_CLS"));
}

#[test]
fn every_verb_has_help() {
    let env = Env::new();
    for verb in [
        vec!["--help"],
        vec!["start", "--help"],
        vec!["run", "--help"],
        vec!["healthcheck", "--help"],
        vec!["checkpoints", "--help"],
        vec!["plugins", "--help"],
        vec!["migrate", "--help"],
        vec!["completions", "--help"],
        vec!["man", "--help"],
        vec!["school", "run", "--help"],
        vec!["checkpoint", "--help"],
    ] {
        let out = env.cmd().args(&verb).output().unwrap();
        assert!(out.status.success(), "{verb:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage: anchovy"), "{verb:?}: {text}");
    }
    let out = env.cmd().args(["start", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--id",
        "--user",
        "--prod",
        "--config",
        "--config-file",
        "--operator",
        "--service",
        "--execution-timeout",
        "--upstream",
        "--enable",
        "--disable",
        "--datastore",
        "--batch-policy",
        "--log-format",
        "Exit codes",
    ] {
        assert!(text.contains(flag), "start --help lacks {flag}");
    }
}

/// Each verb's `--help` lists the settings it uses, not the forty flags of a run; the
/// others are still accepted, so a command line or environment shared with `start`
/// works unchanged.
#[test]
fn each_verb_s_help_lists_only_its_own_settings() {
    let env = Env::new();
    let help = |verb: &str| {
        let out = env.cmd().args([verb, "--help"]).output().unwrap();
        assert!(out.status.success(), "{verb}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let run_only = [
        "--batch-size",
        "--max-rows",
        "--execution-timeout",
        "--workers",
        "--commit-interval",
        "--metrics-file",
        "--data-buffer-cls",
    ];
    for verb in ["logs", "tables", "checkpoints", "healthcheck"] {
        let text = help(verb);
        for own in ["--id", "--user", "--datastore", "--config", "--log-format"] {
            assert!(text.contains(own), "{verb} --help lacks {own}:\n{text}");
        }
        for other in run_only {
            assert!(
                !text.contains(other),
                "{verb} --help lists {other}:\n{text}"
            );
        }
    }
    let hc = help("healthcheck");
    for own in ["--operator", "--upstream", "--port", "--service"] {
        assert!(hc.contains(own), "healthcheck --help lacks {own}");
    }
    assert!(help("checkpoints").contains("--lease-ttl"));
    let start = help("start");
    for flag in run_only {
        assert!(start.contains(flag), "start --help lacks {flag}");
    }
    let out = env
        .cmd()
        .args(["tables", "--id", "x", "--batch-size", "5"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::stderr(&out));
}

#[test]
fn healthcheck_passes_and_fails_with_reasons() {
    let env = env_with_table();
    env.write("config.yaml", CSV_TABLE);
    let out = env
        .cmd()
        .args(["healthcheck", "-op", "files.CsvDownloader", "--id", "h"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("ok   datastore: file://") && text.contains("read/write ok"),
        "{text}"
    );
    assert!(
        text.contains("ok   table t: 1 files match in/*.csv"),
        "{text}"
    );
    env.write("not_a_dir", "x");
    let out = env
        .cmd()
        .args([
            "healthcheck",
            "-op",
            "files.CsvDownloader",
            "--id",
            "h",
            "--datastore",
            "not_a_dir",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with(
            "FAIL datastore: the datastore not_a_dir cannot be used: not_a_dir is a file"
        )),
        "{text}"
    );
    env.write("config.yaml", "config:\n  bogus: 1\n");
    let out = env
        .cmd()
        .args(["healthcheck", "--id", "h"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("FAIL config: unknown key `bogus`"),
        "{text}"
    );
}

#[test]
fn json_logs_on_request() {
    let env = env_with_table();
    env.write("config.yaml", CSV_TABLE);
    for out in [
        env.cmd()
            .args([
                "start",
                "-op",
                "files.CsvDownloader",
                "--log-format",
                "json",
            ])
            .output()
            .unwrap(),
        env.cmd()
            .args(["start", "-op", "files.CsvDownloader"])
            .env("ACHVY_LOG_FORMAT", "json")
            .output()
            .unwrap(),
    ] {
        assert!(out.status.success());
        let err = crate::stderr(&out);
        assert!(!err.trim().is_empty());
        let mut done = 0;
        for line in err.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(v.get("level").is_some());
            // A task's data is an object, not an escaped string.
            if v["message"] == "table done" {
                assert!(v["data"]["rows"].as_u64().is_some(), "{line}");
                done += 1;
            }
        }
        assert!(done >= 1, "{err}");
    }
}

/// `anchovy plugins` follows the registry: every operator, as text and as JSON, with
/// the variables and table options it reads.
#[test]
fn plugins_lists_every_operator_from_the_registry() {
    let env = Env::new();
    let names: Vec<&str> = anchovy_plugins::registry()
        .specs()
        .iter()
        .map(|s| s.name)
        .collect();
    assert!(names.len() >= 5);
    let out = env.cmd().arg("plugins").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for n in &names {
        assert!(text.contains(&format!("{n}  (")), "{n} missing:\n{text}");
    }
    assert!(text.contains("ACHVY_CNXN__DB__URI") && text.contains("after_load"));
    let out = env.cmd().args(["plugins", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, names);
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .all(|o| o["table_options"].is_array())
    );
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Route {
    Env,
    File,
    Flag,
}

/// Every setting, through the environment, config.yaml and the command line, with hostile values: the
/// process never panics (101) or dies of a signal; numbers and durations out of range
/// exit 2 before anything runs, with a message naming the setting and its range.
#[test]
fn hostile_values_for_every_setting_exit_2_never_panic() {
    use anchovy_core::config::{Kind, SETTINGS};
    const HOSTILE: &[&str] = &[
        "0",
        "-1",
        "18446744073709551616",
        "99999999999999999999",
        "1e30",
        "1e30s",
        "NaN",
        "ñ€✓",
        "",
        "[[[[",
    ];
    // Numbers and durations, from their declarations; some take 0 (an off switch, no
    // pause, no budget).
    let ranged = |key: &str| {
        SETTINGS
            .iter()
            .any(|s| s.key == key && matches!(s.kind, Kind::Duration(..) | Kind::Count(..)))
    };
    let zero_ok = |key: &str| {
        SETTINGS.iter().any(|s| {
            s.key == key
                && match s.kind {
                    Kind::Duration(min, _) => min.is_zero(),
                    Kind::Count(min, _) => min == 0,
                    _ => false,
                }
        })
    };
    assert!(ranged("batch_size") && zero_ok("port") && !zero_ok("lease_ttl"));
    let env = Env::new();
    std::fs::create_dir_all(env.path().join("in")).unwrap();
    let mut cases = Vec::new();
    for def in SETTINGS {
        for v in HOSTILE {
            // `is_task_executor` false (0, empty) is service mode, which does not end.
            if def.key == "is_task_executor" && matches!(*v, "0" | "") {
                continue;
            }
            cases.push((def, *v, Route::Env));
            if ranged(def.key) {
                cases.push((def, *v, Route::File));
                cases.push((def, *v, Route::Flag));
            }
        }
    }
    let failures = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((def, v, route)) = cases.get(i) else {
                        break;
                    };
                    let mut c = env.cmd();
                    c.args([
                        "start",
                        "-op",
                        "files.CsvDownloader",
                        "-i",
                        &format!("sweep{i}"),
                    ])
                    .timeout(std::time::Duration::from_secs(30));
                    let table = "tbls:\n  t:\n    path: in/*.csv\n";
                    if *route == Route::File {
                        let doc = serde_json::json!({ "config": { def.key: v } }).to_string();
                        // JSON is YAML; the table map is added as a second document key.
                        let doc = format!(
                            "{}, \"tbls\": {{\"t\": {{\"path\": \"in/*.csv\"}}}}}}",
                            &doc[..doc.len() - 1]
                        );
                        // env.cmd() sets ACHVY_PORT, which would win over the file.
                        c.args(["--config", &doc]).env_remove("ACHVY_PORT");
                    } else if *route == Route::Flag {
                        // The long flag (`--batch-size` of `--batch-size`, `-t/--execution-timeout`).
                        let spelling = def.flag.spelling();
                        let flag = spelling.rsplit('/').next().unwrap_or(spelling);
                        c.arg(format!("{flag}={v}")).args(["--config", table]);
                        if def.key == "port" {
                            c.env_remove("ACHVY_PORT");
                        }
                    } else {
                        c.env(def.env, v).args(["--config", table]);
                    }
                    let out = c.output().unwrap();
                    let code = out.status.code();
                    let err = crate::stderr(&out);
                    let route = match route {
                        Route::File => format!("config: {}", def.key),
                        Route::Flag => format!("flag for {}", def.key),
                        Route::Env => def.env.to_string(),
                    };
                    let must_refuse = (ranged(def.key) && !(*v == "0" && zero_ok(def.key)))
                        || (def.key == "log_level" && matches!(*v, "[[[[" | "" | "ñ€✓"));
                    let bad = match code {
                        None | Some(101) => Some("crashed"),
                        _ if err.contains("panicked") => Some("panicked"),
                        Some(2) if must_refuse && !err.contains(def.key) => {
                            Some("refused without naming the setting")
                        }
                        Some(2) => None,
                        _ if must_refuse => Some("accepted an out-of-range value"),
                        _ => None,
                    };
                    if let Some(why) = bad {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{route}={v:?}: {why} (exit {code:?}): {err}"));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `anchovy ... | true`: a closed stdout is no failure; the exit code is the run's own
/// and nothing panics.
#[test]
fn a_closed_pipe_is_no_crash() {
    let env = env_with_table();
    env.write("config.yaml", CSV_TABLE);
    let closed = |args: &[&str]| {
        let mut child = env.spawn(args, &[]);
        drop(child.stdout.take()); // the reader went away
        let out = child.wait_with_output().unwrap();
        (out.status.code(), crate::stderr(&out))
    };
    let (code, err) = closed(&["start", "-op", "files.CsvDownloader", "-i", "p"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for args in [
        &["logs", "-i", "p"][..],
        &["plugins"],
        &["tables", "-i", "p"],
        &["--help"],
    ] {
        let (code, err) = closed(args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // The committed run is there.
    assert_eq!(crate::commit_count(&env.area("tester", "p")), 1);
}

/// `-e`/`-d`/`-U` that match nothing warn; `--strict` (ACHVY_STRICT) makes them exit 2,
/// so that a cron job notices the typo.
#[test]
fn strict_turns_matched_nothing_into_exit_2() {
    let env = env_with_table();
    env.write("config.yaml", CSV_TABLE);
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        let out = env
            .cmd()
            .arg("start")
            .args(args)
            .envs(envs.iter().copied())
            .env("ACHVY_CNXN__DB__URI", "sqlite://")
            .output()
            .unwrap();
        (out.status.code(), crate::stderr(&out))
    };
    let dl = ["-op", "files.CsvDownloader", "-i", "s"];
    let (code, err) = run(&[&dl[..], &["-e", "tt"]].concat(), &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("--enable: tt matches no table; tables: t"),
        "{err}"
    );
    let (code, err) = run(&[&dl[..], &["-e", "tt", "--strict"]].concat(), &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("tt matches no table"), "{err}");
    let (code, err) = run(
        &[&dl[..], &["-d", "nope"]].concat(),
        &[("ACHVY_STRICT", "true")],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--disable: nope matches no table"), "{err}");
    // The table itself still loads under --strict.
    let (code, err) = run(&[&dl[..], &["-e", "t", "--strict"]].concat(), &[]);
    assert_eq!(code, Some(0), "{err}");
    let up = ["-op", "sql.Uploader", "-i", "w"];
    let (code, err) = run(&[&up[..], &["-U", "s", "-U", "sx"]].concat(), &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("the upstream anchovy `sx` has no tables"),
        "{err}"
    );
    let (code, err) = run(
        &[&up[..], &["-U", "s", "-U", "sx", "--strict"]].concat(),
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    // An unknown ACHVY_* variable: a warning, or exit 2 under --strict.
    let (code, err) = run(&dl, &[("ACHVY_BATCHSIZE", "10")]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("did you mean ACHVY_BATCH_SIZE?"), "{err}");
    let (code, err) = run(
        &[&dl[..], &["--strict"]].concat(),
        &[("ACHVY_BATCHSIZE", "10")],
    );
    assert_eq!(code, Some(2), "{err}");
}

/// `tables` and `logs` that find nothing say which anchovy they looked at, where, and
/// which anchovies of the user are there (instead of an empty table and exit 0 alone).
#[test]
fn verbs_that_find_nothing_say_where_they_looked_and_what_is_there() {
    let env = env_with_table();
    env.write("config.yaml", CSV_TABLE);
    for id in ["sales", "crm"] {
        let out = env
            .cmd()
            .args(["start", "-op", "files.CsvDownloader", "--id", id])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", crate::stderr(&out));
    }
    for args in [vec!["tables"], vec!["logs", "--id", "nope"]] {
        let out = env.cmd().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let err = crate::stderr(&out);
        assert!(
            err.contains("no ") && err.contains("for tester/"),
            "{args:?}: {err}"
        );
        assert!(err.contains("pick one with --id"), "{args:?}: {err}");
        assert!(
            err.contains("anchovies of user tester there: crm, sales"),
            "{args:?}: {err}"
        );
    }
    // Found: no hint.
    let out = env
        .cmd()
        .args(["tables", "--id", "sales"])
        .output()
        .unwrap();
    assert!(
        !crate::stderr(&out).contains("pick one"),
        "{}",
        crate::stderr(&out)
    );
}
