//! Settings precedence, parsing and the config document.

use super::*;

fn vars() -> BTreeMap<String, String> {
    [("HOME", "/home/me"), ("USER", "me")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn precedence_cli_env_file_default() {
    let doc = ConfigDoc::parse(
        "config:\n  id: from_file\n  user: fileuser\n  execution_timeout: 60\n  batch_policy: raise\n  enabled: [a, b]\n",
        "config.yaml",
    )
    .unwrap();
    let file = doc.layer().unwrap();
    let env = Layer::from_env([
        ("ACHVY_ID", "from_env"),
        ("ACHVY_EXECUTION_TIMEOUT", "2m"),
        ("ACHVY_UPSTREAM", "x, y"),
    ]);
    let mut cli = Layer::new("command line");
    cli.set("id", "from_cli");
    let s = Settings::resolve(&[&cli, &env, &file], &vars()).unwrap();
    assert_eq!(s.id, "from_cli");
    assert_eq!(s.user, "fileuser");
    assert_eq!(s.execution_timeout, Some(Duration::from_secs(120)));
    assert_eq!(s.batch_policy, BatchPolicy::Raise);
    assert_eq!(s.enabled, vec!["a", "b"]);
    assert_eq!(s.upstream, vec!["x", "y"]);
    assert_eq!(s.datastore, "/home/me/.anchovies");
    assert_eq!(s.origins["id"], "command line");
    assert_eq!(s.origins["execution_timeout"], "environment");
    let s = Settings::resolve(&[&env, &file], &vars()).unwrap();
    assert_eq!(s.id, "from_env");
    let s = Settings::resolve(&[&file], &vars()).unwrap();
    assert_eq!(s.id, "from_file");
    let s = Settings::resolve(&[], &vars()).unwrap();
    assert_eq!(s.user, "me");
    assert_eq!(s.batch_policy, BatchPolicy::Continue);
    assert!(!s.service());
}

#[test]
fn prod_wins_over_user_in_its_layer() {
    let env = Layer::from_env([("ACHVY_USER", "bob"), ("ACHVY_PROD", "true")]);
    assert_eq!(Settings::resolve(&[&env], &vars()).unwrap().user, "prod");
    let mut cli = Layer::new("command line");
    cli.set("user", "alice");
    assert_eq!(
        Settings::resolve(&[&cli, &env], &vars()).unwrap().user,
        "alice"
    );
}

#[test]
fn unknown_config_key_suggests_the_closest() {
    let doc = ConfigDoc::parse("config:\n  executon_timeout: 5\n", "./config.yaml").unwrap();
    let e = doc.layer().unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown key `executon_timeout` in the config: map of ./config.yaml; did you mean `execution_timeout`?"
    );
    let e = ConfigDoc::parse("tbl:\n  a: {}\n", "c.yaml").unwrap_err();
    assert!(e.to_string().contains("did you mean `tbls`?"), "{e}");
}

#[test]
fn the_readme_typo_is_accepted() {
    let doc =
        ConfigDoc::parse(r#"{"config": {"checpoint_cls": "datastore"}}"#, "--config").unwrap();
    let s = Settings::resolve(&[&doc.layer().unwrap()], &vars()).unwrap();
    assert_eq!(s.checkpoint_cls, "datastore");
    let doc = ConfigDoc::parse(r#"{"config": {"checkpoint_cls": "redis"}}"#, "--config").unwrap();
    let e = Settings::resolve(&[&doc.layer().unwrap()], &vars()).unwrap_err();
    assert!(e.to_string().contains("built-in: datastore"), "{e}");
}

#[test]
fn bad_values_name_key_and_origin() {
    let env = Layer::from_env([("ACHVY_EXECUTION_TIMEOUT", "soon")]);
    let e = Settings::resolve(&[&env], &vars()).unwrap_err();
    assert!(
        e.to_string()
            .contains("`soon` from environment is not a duration"),
        "{e}"
    );
    let env = Layer::from_env([("ACHVY_ID", "../etc")]);
    assert!(Settings::resolve(&[&env], &vars()).is_err());
    let env = Layer::from_env([("ACHVY_MAX_CONCURRENCY", "many")]);
    assert!(
        Settings::resolve(&[&env], &vars())
            .unwrap_err()
            .to_string()
            .contains("not a whole number")
    );
}

#[test]
fn yaml_merge_keys_and_syntax_errors() {
    let doc = ConfigDoc::parse(
        "defaults: &d\n  delimiter: ';'\ntbls:\n  a:\n    <<: *d\n    path: /x/*.csv\n",
        "c.yaml",
    );
    // `defaults` is not a top-level key: anchors must live inside known maps.
    assert!(doc.is_err());
    let doc = ConfigDoc::parse(
        "tbls:\n  a: &d\n    delimiter: ';'\n    path: /x/*.csv\n  b:\n    <<: *d\n    path: /y/*.csv\n",
        "c.yaml",
    )
    .unwrap();
    assert_eq!(doc.tbls["b"].option_str("delimiter").unwrap(), ";");
    assert_eq!(doc.tbls["b"].option_str("path").unwrap(), "/y/*.csv");
    let e = ConfigDoc::parse("tbls:\n  a: [\n", "bad.yaml").unwrap_err();
    assert!(e.to_string().starts_with("cannot parse bad.yaml"), "{e}");
}

/// The parser limits leave room for big real configs: 2,000 tables sharing one
/// anchored entry of options by merge key.
#[test]
fn a_big_config_with_anchors_fits_the_parser_limits() {
    let mut y = String::from(
        "tbls:\n  t0: &base\n    path: /in/0/*.csv\n    delimiter: ';'\n    unique_by: id\n    sort_by: -updated_at\n    columns: {id: int, qty: int, price: decimal, updated_at: datetime}\n",
    );
    for i in 1..2000 {
        y.push_str(&format!(
            "  t{i}:\n    <<: *base\n    path: /in/{i}/*.csv\n"
        ));
    }
    let doc = ConfigDoc::parse(&y, "big.yaml").unwrap();
    assert_eq!(doc.tbls.len(), 2000);
    assert_eq!(doc.tbls["t1999"].option_str("delimiter").unwrap(), ";");
}

#[test]
fn durations() {
    assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("1.5m"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
    assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
    assert_eq!(parse_duration("-1"), None);
    assert_eq!(parse_duration("x"), None);
    for hostile in [
        "1e30",
        "99999999999999999999",
        "NaN",
        "inf",
        "",
        "1e30s",
        "-0.5",
        "5 s s",
    ] {
        assert_eq!(parse_duration(hostile), None, "{hostile}");
    }
    assert_eq!(human_duration(Duration::from_millis(100)), "100ms");
    assert_eq!(human_duration(MAX_DURATION), "366d");
}

/// Under a scheduler the host name is a pod's or a task's, new on every run: the id must
/// be set there; elsewhere it defaults to the host name. Without `$USER` (containers) the
/// user is `default`.
#[test]
fn the_id_is_required_where_host_names_change_with_every_run() {
    let mut k8s = vars();
    k8s.insert("KUBERNETES_SERVICE_HOST".into(), "10.0.0.1".into());
    let e = Settings::resolve(&[], &k8s).unwrap_err();
    assert_eq!(e.exit_code(), crate::error::exit::CONFIG);
    let text = e.to_string();
    assert!(
        text.contains("--id") && text.contains("Kubernetes"),
        "{text}"
    );
    let mut cli = Layer::new("command line");
    cli.set("id", "orders");
    assert_eq!(Settings::resolve(&[&cli], &k8s).unwrap().id, "orders");
    let mut batch: BTreeMap<String, String> = BTreeMap::new();
    batch.insert("AWS_BATCH_JOB_ID".into(), "j".into());
    assert!(
        Settings::resolve(&[], &batch)
            .unwrap_err()
            .to_string()
            .contains("AWS Batch")
    );
    let s = Settings::resolve(&[&cli], &batch).unwrap();
    assert_eq!(s.user, "default");
    assert!(!Settings::resolve(&[], &vars()).unwrap().id.is_empty());
}
