//! blob.CsvDownloader and blob.JsonDownloader against Azurite and moto (started on
//! 127.0.0.1 by script/test), and the chat-logs example end to end into SQLite and
//! PostgreSQL.

use std::io::Write;
use std::sync::Arc;

use anchovy_core::Value;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::upload::{Target, fetch};
use crate::{Env, PASS, committed, need, results, tbl_data};

/// A store at `url` (`az://container`, `s3://bucket`) for seeding objects.
struct Bucket {
    store: Arc<dyn ObjectStore>,
    rt: tokio::runtime::Runtime,
}

impl Bucket {
    fn new(url: &str) -> Bucket {
        let o = anchovy_core::datastore::url::open(url, None).unwrap();
        Bucket {
            store: o.store,
            rt: tokio::runtime::Runtime::new().unwrap(),
        }
    }

    fn put(&self, key: &str, body: impl Into<Vec<u8>>) {
        let body: Vec<u8> = body.into();
        self.rt
            .block_on(self.store.put(&Path::from(key), PutPayload::from(body)))
            .unwrap();
    }

    fn delete(&self, key: &str) {
        self.rt
            .block_on(self.store.delete(&Path::from(key)))
            .unwrap();
    }

    fn exists(&self, key: &str) -> bool {
        self.rt.block_on(self.store.head(&Path::from(key))).is_ok()
    }

    /// Deletes every object under the folder `prefix`.
    fn clear(&self, prefix: &str) {
        self.rt.block_on(async {
            use futures::StreamExt;
            let keys: Vec<_> = self
                .store
                .list(Some(&Path::from(prefix)))
                .map(|m| m.unwrap().location)
                .collect()
                .await;
            for k in keys {
                self.store.delete(&k).await.unwrap();
            }
        });
    }
}

fn gzip(text: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap()
}

fn run(env: &Env, op: &str, id: &str, extra: &[(&str, &str)]) -> std::process::Output {
    let mut c = env.cmd();
    c.args(["start", "-op", op, "--id", id]);
    for k in PASS {
        if let Ok(v) = std::env::var(k) {
            c.env(k, v);
        }
    }
    for (k, v) in extra {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(out: std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", crate::stderr(&out));
    results(&out)
}

fn ids(env: &Env, id: &str, tbl: &str) -> Vec<i64> {
    let mut v: Vec<i64> = committed(&env.home(), "tester", id)
        .get(tbl)
        .map(|rows| {
            rows.iter()
                .map(|r| match r["id"] {
                    Value::Int(i) => i,
                    ref o => panic!("{o:?}"),
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// Globs across folders, gzip, an incremental rerun that reads nothing, and a
/// rewritten object read again, on Azure Blob (Azurite) and S3 (moto).
#[test]
fn csv_objects_by_glob_incrementally_on_azurite_and_s3() {
    for root in [
        format!("az://{}", need("AZURE_CONTAINER")),
        format!("s3://{}", need("S3_BUCKET")),
    ] {
        let env = Env::new();
        let b = Bucket::new(&root);
        let p = format!("blobtest/{}", env.nonce());
        b.put(&format!("{p}/in/a.csv"), "id,name\n1,alpha\n2,beta\n");
        b.put(&format!("{p}/in/b.csv.gz"), gzip("id,name\n3,gamma\n"));
        b.put(&format!("{p}/in/2024/c.csv"), "id,name\n4,delta\n");
        b.put(&format!("{p}/in/notes.txt"), "not csv");
        env.write(
            "config.yaml",
            format!(
                "tbls:\n  top:\n    path: {root}/{p}/in/*.csv*\n    columns: {{id: int}}\n    provenance: true\n  all:\n    path: {root}/{p}/in/**/*.csv\n    columns: {{id: int}}\n"
            ),
        );
        let r = ok(run(&env, "blob.CsvDownloader", "bl", &[]));
        assert_eq!(tbl_data(&r, "top")["objects_read"], 2, "{root}");
        assert_eq!(ids(&env, "bl", "top"), vec![1, 2, 3]);
        assert_eq!(
            ids(&env, "bl", "all"),
            vec![1, 2, 4],
            "{root}: ** crosses folders"
        );
        let rows = committed(&env.home(), "tester", "bl");
        let file = &rows["top"][0]["_file"];
        assert_eq!(*file, Value::String(format!("{root}/{p}/in/a.csv")));
        // Nothing new: nothing read, nothing committed.
        let r = ok(run(&env, "blob.CsvDownloader", "bl", &[]));
        assert_eq!(tbl_data(&r, "top")["objects_read"], 0);
        assert_eq!(tbl_data(&r, "top")["objects_unchanged"], 2);
        // A rewritten object is read again (its etag changed); the others are not.
        b.put(
            &format!("{p}/in/a.csv"),
            "id,name\n1,alpha\n2,beta\n5,epsilon\n",
        );
        let r = ok(run(&env, "blob.CsvDownloader", "bl", &[]));
        assert_eq!(tbl_data(&r, "top")["objects_read"], 1);
        assert_eq!(tbl_data(&r, "top")["rows_read"], 3);
        b.clear(&p);
    }
}

#[test]
fn json_shapes_and_clear_errors() {
    let root = format!("az://{}", need("AZURE_CONTAINER"));
    let env = Env::new();
    let b = Bucket::new(&root);
    let p = format!("blobtest/{}", env.nonce());
    b.put(
        &format!("{p}/j/a.ndjson"),
        "{\"id\":1}\n{\"id\":2,\"tags\":[1]}\n",
    );
    b.put(&format!("{p}/j/b.json"), "[{\"id\":3},{\"id\":4}]");
    b.put(
        &format!("{p}/j/c.json.gz"),
        gzip("{\n \"id\": 5,\n \"nested\": {\"x\": 1}\n}\n"),
    );
    b.put(&format!("{p}/bad/x.ndjson"), "{\"id\":1}\n{\"id\":\n");
    env.write(
        "config.yaml",
        format!(
            "tbls:\n  j:\n    path: {root}/{p}/j/*\n  bad:\n    path: {root}/{p}/bad/*.ndjson\n"
        ),
    );
    let out = run(&env, "blob.JsonDownloader", "js", &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the bad table fails, the other loads"
    );
    let err = crate::stderr(&out);
    assert!(err.contains(&format!("{root}/{p}/bad/x.ndjson:2")), "{err}");
    assert_eq!(ids(&env, "js", "j"), vec![1, 2, 3, 4, 5]);
    assert!(
        ids(&env, "js", "bad").is_empty(),
        "nothing of a bad file is committed"
    );
    // A path that is not an object URL is a configuration error naming the fix.
    env.write("config.yaml", "tbls:\n  j:\n    path: /local/*.json\n");
    let out = run(&env, "blob.JsonDownloader", "js2", &[]);
    assert!(
        crate::stderr(&out).contains("az://container/prefix"),
        "{}",
        crate::stderr(&out)
    );
    b.clear(&p);
}

/// The chat-logs example as shipped (config.yaml, run.sh): sessions and events land in
/// SQLite and PostgreSQL; a rewritten session updates its row, new events add rows,
/// nothing is doubled.
#[test]
fn chat_logs_example_end_to_end() {
    let b = Bucket::new("az://chat");
    b.clear("sessions");
    b.clear("events");
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/chat-logs");
    let seed = |rel: &str| {
        b.put(
            rel,
            std::fs::read(example.join("sample").join(rel)).unwrap(),
        );
    };
    seed("sessions/2026-11-23/s-0001.json");
    seed("sessions/2026-11-23/s-0002.json");
    seed("events/2026-11-23/10-00.ndjson");
    for target in [Target::Sqlite, Target::Pg] {
        let env = Env::new();
        std::fs::copy(example.join("config.yaml"), env.path().join("config.yaml")).unwrap();
        std::fs::copy(example.join("run.sh"), env.path().join("run.sh")).unwrap();
        let job = || {
            let mut c = std::process::Command::new("bash");
            c.arg(env.path().join("run.sh"))
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap())
                .env("HOME", env.path().join("home"))
                .env("USER", "tester")
                .env("ANCHOVY_BIN", assert_cmd::cargo::cargo_bin("anchovy"));
            for k in PASS {
                if let Ok(v) = std::env::var(k) {
                    c.env(k, v);
                }
            }
            if let Some(u) = target.url() {
                c.env("ACHVY_CNXN__DB__URI", u);
            }
            let out = c.output().unwrap();
            assert!(out.status.success(), "{target:?}: {}", crate::stderr(&out));
        };
        if target == Target::Pg {
            // The shared test database keeps schemas between runs of the suite.
            fetch(
                target,
                &env,
                "DROP SCHEMA IF EXISTS \"chat_logs__tester\" CASCADE",
            );
            fetch(
                target,
                &env,
                "DO $$ BEGIN IF to_regclass('_anchovies_positions') IS NOT NULL THEN \
                 DELETE FROM _anchovies_positions WHERE uploader LIKE '%/chat_warehouse'; \
                 END IF; END $$",
            );
        }
        let sessions = target.table("chat_logs", "sessions");
        let events = target.table("chat_logs", "events");
        job();
        let rows = fetch(
            target,
            &env,
            &format!(
                "SELECT {}, {} FROM {sessions} ORDER BY 1",
                target.text("id"),
                target.text("messages")
            ),
        );
        assert_eq!(
            rows,
            vec![vec![s("s-0001"), s("6")], vec![s("s-0002"), s("2")]],
            "{target:?}"
        );
        assert_eq!(count(target, &env, &events), 4, "{target:?}");
        // The bot rewrites session 1 and writes the next 5-minute events file.
        b.put(
            "sessions/2026-11-23/s-0001.json",
            "{\"id\": \"s-0001\", \"user\": \"u-42\", \"channel\": \"web\", \"started_at\": \"2026-11-23T10:00:03Z\", \"updated_at\": \"2026-11-23T10:06:12Z\", \"ended_at\": \"2026-11-23T10:06:12Z\", \"messages\": 9, \"meta\": {\"locale\": \"en-GB\"}}",
        );
        b.put(
            "events/2026-11-23/10-05.ndjson",
            "{\"id\": \"e-0005\", \"session_id\": \"s-0001\", \"at\": \"2026-11-23T10:05:00Z\", \"kind\": \"user_message\", \"text\": \"thanks\"}\n",
        );
        job();
        let rows = fetch(
            target,
            &env,
            &format!(
                "SELECT {} FROM {sessions} WHERE id = 's-0001'",
                target.text("messages")
            ),
        );
        assert_eq!(
            rows,
            vec![vec![s("9")]],
            "{target:?}: the newest session version wins"
        );
        assert_eq!(count(target, &env, &sessions), 2);
        assert_eq!(
            count(target, &env, &events),
            5,
            "{target:?}: no event doubled"
        );
        // Nothing new: a third run changes nothing.
        job();
        assert_eq!(count(target, &env, &events), 5);
        // Put the first version back for the next target.
        seed("sessions/2026-11-23/s-0001.json");
        b.delete("events/2026-11-23/10-05.ndjson");
    }
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn count(target: Target, env: &Env, table: &str) -> i64 {
    let rows = fetch(
        target,
        env,
        &format!("SELECT {} FROM {table}", target.text("COUNT(*)")),
    );
    rows[0][0].as_ref().unwrap().parse().unwrap()
}

/// Task logs and table metadata kept apart from the data (`task_store_cls`,
/// `tbl_store_cls` as URLs): they land there, and the uploader still finds its
/// upstream's tables and loads them.
#[test]
fn task_logs_and_table_metadata_live_apart_from_the_data() {
    let env = Env::new();
    let nonce = env.nonce();
    let tasks_url = format!("az://{}/meta/{nonce}", need("AZURE_CONTAINER"));
    let tbls_url = format!("s3://{}/meta/{nonce}", need("S3_BUCKET"));
    env.write("in/a.csv", "id,name\n1,alpha\n2,beta\n");
    env.write(
        "config.yaml",
        "tbls:\n  t:\n    path: in/*.csv\n    unique_by: id\n    columns: {id: int}\n",
    );
    let apart = [
        ("ACHVY_TASK_STORE_CLS", tasks_url.as_str()),
        ("ACHVY_TBL_STORE_CLS", tbls_url.as_str()),
    ];
    ok(run(&env, "files.CsvDownloader", "src", &apart));
    let area = env.home().join("tester/src");
    assert!(
        area.join("$commits").exists(),
        "the data stays in the datastore"
    );
    assert!(!area.join("$task_logs").exists() && !area.join("$tables").exists());
    let list = |url: &str, folder: &str| {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            anchovy_core::Datastore::open(url)
                .unwrap()
                .for_anchovy("tester", "src")
                .list(folder)
                .await
                .unwrap()
                .len()
        })
    };
    assert!(list(&tasks_url, "$task_logs") >= 5);
    assert_eq!(list(&tbls_url, "$tables"), 1);
    let mut c = env.cmd();
    c.args(["start", "-op", "sql.Uploader", "--id", "wh", "-U", "src"])
        .env("ACHVY_CNXN__DB__URI", "sqlite://");
    for k in PASS {
        if let Ok(v) = std::env::var(k) {
            c.env(k, v);
        }
    }
    let r = ok(c.envs(apart).output().unwrap());
    assert_eq!(tbl_data(&r, "src.t")["rows_inserted"], 2, "{r}");
    // Checkpoints cannot move away from the commit record: a clear refusal.
    let out = run(
        &env,
        "files.CsvDownloader",
        "src",
        &[("ACHVY_CHECKPOINT_CLS", &tasks_url)],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(crate::stderr(&out).contains("checkpoints cannot live apart"));
}

/// The datastore's credentials from a connection (`ACHVY_CNXN__DATASTORE__*`) instead
/// of the provider's variables; the secret never shows in any output.
#[test]
fn datastore_credentials_from_a_connection() {
    let env = Env::new();
    let url = format!("s3://{}/cnxn/{}", need("S3_BUCKET"), env.nonce());
    env.write("in/a.csv", "id\n1\n2\n");
    env.write("config.yaml", "tbls:\n  t:\n    path: in/*.csv\n");
    let secret = "Sup3r-S3cret-Key-9876";
    let out = env
        .cmd()
        .args([
            "start",
            "-op",
            "files.CsvDownloader",
            "--id",
            "cx",
            "--datastore",
            &url,
        ])
        .env("ACHVY_CNXN__DATASTORE__ACCESS_KEY_ID", "cnxn-key")
        .env("ACHVY_CNXN__DATASTORE__SECRET_ACCESS_KEY", secret)
        .env("ACHVY_CNXN__DATASTORE__ENDPOINT", need("AWS_ENDPOINT"))
        .env("ACHVY_CNXN__DATASTORE__ALLOW_HTTP", "true")
        .env("ACHVY_CNXN__DATASTORE__REGION", "us-east-1")
        .env(
            "ACHVY_CNXN__DATASTORE__VIRTUAL_HOSTED_STYLE_REQUEST",
            "false",
        )
        .output()
        .unwrap();
    let r = ok(out.clone());
    assert_eq!(tbl_data(&r, "t")["rows"], 2);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        crate::stderr(&out)
    );
    assert!(!all.contains(secret), "the secret leaked");
    // An attribute that is no setting of the store is a configuration error naming it.
    let out = env
        .cmd()
        .args([
            "start",
            "-op",
            "files.CsvDownloader",
            "--id",
            "cx2",
            "--datastore",
            &url,
        ])
        .env("ACHVY_CNXN__DATASTORE__ACCES_KEY_ID", "typo")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", crate::stderr(&out));
    assert!(crate::stderr(&out).contains("ACHVY_CNXN__DATASTORE__ACCES_KEY_ID"));
}

/// Quarantine in the object-store reader: a JSON object with a malformed line and a
/// bad typed value commits its good records and quarantines the others in the same
/// commit; replay after the type is fixed lands the typed one exactly once.
#[test]
fn json_objects_quarantine_and_replay() {
    let env = Env::new();
    let root = format!("az://{}", need("AZURE_CONTAINER"));
    let b = Bucket::new(&root);
    let p = format!("blobq/{}", env.nonce());
    b.put(
        &format!("{p}/e.json"),
        "{\"id\": 1, \"at\": \"2024-01-01T00:00:00Z\"}\n{\"id\": 2, \"at\": \"yesterday\"}\n{\"id\": 3,, }\n{\"id\": 4, \"at\": \"2024-01-04T00:00:00Z\"}\n",
    );
    let cfg = |at: &str| {
        format!(
            "tbls:\n  e:\n    path: {root}/{p}/*.json\n    columns: {{id: int, at: {at}}}\n    on_bad_record: quarantine\n"
        )
    };
    env.write("config.yaml", cfg("datetime"));
    let r = ok(run(&env, "blob.JsonDownloader", "bq", &[]));
    assert_eq!(tbl_data(&r, "e")["rejected"], 2, "{r}");
    assert_eq!(ids(&env, "bq", "e"), vec![1, 4]);
    let rows = committed(&env.home(), "tester", "bq");
    let reasons: Vec<String> = rows["$rejects/e"]
        .iter()
        .map(|r| r["reason"].text().into_owned())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("`yesterday` is not a valid datetime")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("malformed JSON")),
        "{reasons:?}"
    );
    assert!(
        rows["$rejects/e"]
            .iter()
            .all(|r| r["source"].text().ends_with("/e.json"))
    );
    env.write("config.yaml", cfg("str"));
    let mut c = env.cmd();
    c.args([
        "rejects",
        "replay",
        "-op",
        "blob.JsonDownloader",
        "--id",
        "bq",
    ]);
    for k in PASS {
        if let Ok(v) = std::env::var(k) {
            c.env(k, v);
        }
    }
    let r = ok(c.output().unwrap());
    assert_eq!(tbl_data(&r, "e")["rows_replayed"], 1, "{r}");
    assert_eq!(tbl_data(&r, "e")["still_rejected"], 1, "{r}");
    assert_eq!(ids(&env, "bq", "e"), vec![1, 2, 4]);
}

/// `format: parquet` objects and `after_load` on both stores: a Parquet object written
/// by pyarrow is read with its types; `delete` and `move:<prefix>` act once the rows
/// are committed (a crash at the commit leaves the objects where they are).
#[test]
fn parquet_objects_and_after_load_on_azurite_and_s3() {
    let py = need("PARQUET_PYTHON");
    for root in [
        format!("az://{}", need("AZURE_CONTAINER")),
        format!("s3://{}", need("S3_BUCKET")),
    ] {
        let env = Env::new();
        let local = env.path().join("t.parquet");
        let out = std::process::Command::new(&py)
            .arg("-c")
            .arg("import pyarrow as pa, pyarrow.parquet as pq, decimal, sys; pq.write_table(pa.table({'id': pa.array([7, 8], pa.int16()), 'price': pa.array([decimal.Decimal('1.50'), None], pa.decimal128(6, 2))}), sys.argv[1])")
            .arg(&local)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let b = Bucket::new(&root);
        let p = format!("blobtest/{}", env.nonce());
        b.put(&format!("{p}/pq/t.parquet"), std::fs::read(&local).unwrap());
        b.put(&format!("{p}/del/a.csv"), "id\n1\n");
        b.put(&format!("{p}/mv/b.csv"), "id\n2\n");
        env.write(
            "config.yaml",
            format!(
                "tbls:\n  pq:\n    path: {root}/{p}/pq/*.parquet\n    format: parquet\n  d:\n    path: {root}/{p}/del/*.csv\n    after_load: delete\n  m:\n    path: {root}/{p}/mv/*.csv\n    after_load: move:{p}/archive\n"
            ),
        );
        let out = run(
            &env,
            "blob.CsvDownloader",
            "pa",
            &[("ACHVY_FAILPOINT", "commit.before")],
        );
        assert_eq!(out.status.code(), Some(86), "{}", crate::stderr(&out));
        assert!(b.exists(&format!("{p}/del/a.csv")) && b.exists(&format!("{p}/mv/b.csv")));
        ok(run(&env, "blob.CsvDownloader", "pa", &[]));
        assert!(
            !b.exists(&format!("{p}/del/a.csv")),
            "{root}: a.csv not deleted"
        );
        assert!(
            !b.exists(&format!("{p}/mv/b.csv")) && b.exists(&format!("{p}/archive/b.csv")),
            "{root}: b.csv not moved"
        );
        let rows = committed(&env.home(), "tester", "pa");
        assert_eq!((rows["d"].len(), rows["m"].len()), (1, 1), "{root}");
        // A later object of the same name never overwrites the archived one.
        b.put(&format!("{p}/mv/b.csv"), "id\n3\n");
        ok(run(&env, "blob.CsvDownloader", "pa", &[]));
        assert!(
            b.exists(&format!("{p}/archive/b.csv")) && b.exists(&format!("{p}/archive/b.1.csv")),
            "{root}: the second b.csv replaced the archived one"
        );
        assert_eq!(
            committed(&env.home(), "tester", "pa")["m"].len(),
            2,
            "{root}"
        );
        let mut pq = rows["pq"].clone();
        pq.sort_by_key(|r| r["id"].text().into_owned());
        assert_eq!(pq[0]["id"], Value::Int(7));
        assert_eq!(pq[0]["price"], Value::Decimal("1.50".into()));
        assert_eq!(pq[1]["price"], Value::Null);
        b.clear(&p);
    }
}
