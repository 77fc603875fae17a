//! Cancel is prompt: `-t` and SIGTERM end an upload within about 2 s of firing even
//! while the target database blocks it on a lock another session holds (PostgreSQL
//! `LOCK TABLE`, MariaDB `LOCK TABLES ... WRITE`, SQLite `BEGIN EXCLUSIVE`), nothing
//! of the stopped load is committed, and the rerun after the lock loads every row once.

use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::Env;
use crate::upload::{Target, download, fetch, upload_args};

/// Holds a write lock on `table` of `target` in a session of its own until `release`
/// receives (or is dropped).
fn hold_lock(
    target: Target,
    env: &Env,
    table: &str,
) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (release, wait) = mpsc::channel::<()>();
    let (locked, is_locked) = mpsc::channel::<()>();
    let url = match target {
        Target::Sqlite => target.sqlite_file(env),
        _ => target.url().unwrap(),
    };
    let table = table.to_string();
    let h = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            use sqlx::Connection;
            match target {
                Target::Pg => {
                    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                    sqlx::raw_sql("BEGIN").execute(&mut c).await.unwrap();
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
                    )))
                    .execute(&mut c)
                    .await
                    .unwrap();
                    locked.send(()).unwrap();
                    let _ = tokio::task::spawn_blocking(move || wait.recv()).await;
                    sqlx::raw_sql("COMMIT").execute(&mut c).await.unwrap();
                }
                Target::My => {
                    let mut c = sqlx::MySqlConnection::connect(&url).await.unwrap();
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("LOCK TABLES {table} WRITE")))
                        .execute(&mut c)
                        .await
                        .unwrap();
                    locked.send(()).unwrap();
                    let _ = tokio::task::spawn_blocking(move || wait.recv()).await;
                    sqlx::raw_sql("UNLOCK TABLES")
                        .execute(&mut c)
                        .await
                        .unwrap();
                }
                Target::Sqlite => {
                    let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&url).unwrap();
                    let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
                    sqlx::raw_sql("BEGIN EXCLUSIVE")
                        .execute(&mut c)
                        .await
                        .unwrap();
                    locked.send(()).unwrap();
                    let _ = tokio::task::spawn_blocking(move || wait.recv()).await;
                    sqlx::raw_sql("COMMIT").execute(&mut c).await.unwrap();
                }
            }
        });
    });
    is_locked
        .recv_timeout(Duration::from_secs(30))
        .expect("the lock is taken");
    (release, h)
}

fn cancel_under_lock(target: Target) {
    let env = Env::new();
    let id = format!("cx{}", env.nonce());
    env.write("in/a.csv", "id,v\n1,a\n2,b\n");
    env.write(
        "config.yaml",
        "tbls:\n  t:\n    path: in/*.csv\n    unique_by: id\n",
    );
    env.write("upload.yaml", "{}\n");
    download(&env, &id);
    let up = format!("{id}up");
    let run = |extra: &[&str]| {
        let mut c = env.cmd();
        c.args(upload_args(&up, &id)).args(extra);
        c.env("ACHVY_CNXN__DB__URI", target.url().unwrap());
        c
    };
    let out = run(&[]).output().unwrap();
    assert!(out.status.success(), "{}", crate::stderr(&out));
    env.write("in/b.csv", "id,v\n2,B\n3,c\n");
    download(&env, &id);
    let table = target.table(&id, "t");
    let (release, holder) = hold_lock(target, &env, &table);

    // -t 2s: exit 3 within about 2 s of the timeout, not when the lock goes.
    let t0 = Instant::now();
    let out = run(&["-t", "2s"]).output().unwrap();
    let took = t0.elapsed();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{target:?}: {}",
        crate::stderr(&out)
    );
    assert!(
        took < Duration::from_secs(6),
        "{target:?}: -t 2s took {took:?} under a held lock: {}",
        crate::stderr(&out)
    );
    // The table's log says why it will be cut off again, and what to do.
    let tbl = crate::results(&out)["batches"][0]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_type"] == "TBL")
        .cloned()
        .unwrap();
    let why = tbl["error"].as_str().unwrap();
    assert!(
        why.contains("cut off the same way on every run") && why.contains("--max-duration"),
        "{why}"
    );

    // SIGTERM while blocked: exit 130 within about 2 s of the signal.
    let url = target.url().unwrap();
    let child = env.spawn(&upload_args(&up, &id), &[("ACHVY_CNXN__DB__URI", &url)]);
    std::thread::sleep(Duration::from_millis(1500));
    let t0 = Instant::now();
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let out = child.wait_with_output().unwrap();
    let took = t0.elapsed();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{target:?}: {}",
        crate::stderr(&out)
    );
    assert!(
        took < Duration::from_secs(4),
        "{target:?}: SIGTERM took {took:?} under a held lock: {}",
        crate::stderr(&out)
    );

    // Nothing of the stopped loads is there; after the lock, everything once.
    release.send(()).unwrap();
    holder.join().unwrap();
    let rows = |env: &Env| {
        fetch(
            target,
            env,
            &format!(
                "SELECT {}, {} FROM {table} ORDER BY 1",
                target.text("id"),
                target.text("v")
            ),
        )
    };
    assert_eq!(
        rows(&env).len(),
        2,
        "{target:?}: the stopped loads left nothing"
    );
    let out = run(&[]).output().unwrap();
    assert!(out.status.success(), "{}", crate::stderr(&out));
    let got: Vec<(String, String)> = rows(&env)
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
    let want: Vec<(String, String)> = [("1", "a"), ("2", "B"), ("3", "c")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got, want, "{target:?}");
}

#[test]
fn cancel_is_prompt_under_a_postgres_lock() {
    cancel_under_lock(Target::Pg);
}

#[test]
fn cancel_is_prompt_under_a_mariadb_lock() {
    cancel_under_lock(Target::My);
}

#[test]
fn cancel_is_prompt_under_a_sqlite_lock() {
    cancel_under_lock(Target::Sqlite);
}

/// A service blocked on a PostgreSQL lock: a stop signal lets the batch run for
/// `stop_grace`, then cancels it; the process ends within about 2 s of the grace period
/// (a clean stop: exit 0), nothing of the load committed, everything loaded after.
#[test]
fn stop_grace_ends_a_blocked_service_promptly() {
    let target = Target::Pg;
    let env = Env::new();
    let id = format!("sg{}", env.nonce());
    env.write("in/a.csv", "id,v\n1,a\n");
    env.write(
        "config.yaml",
        "tbls:\n  t:\n    path: in/*.csv\n    unique_by: id\n",
    );
    env.write("upload.yaml", "{}\n");
    download(&env, &id);
    let up = format!("{id}up");
    let url = target.url().unwrap();
    let run = || {
        env.cmd()
            .args(upload_args(&up, &id))
            .env("ACHVY_CNXN__DB__URI", &url)
            .output()
            .unwrap()
    };
    assert!(run().status.success());
    env.write("in/b.csv", "id,v\n2,b\n");
    download(&env, &id);
    let table = target.table(&id, "t");
    let (release, holder) = hold_lock(target, &env, &table);
    let args: Vec<&str> = upload_args(&up, &id)
        .into_iter()
        .chain(["-S", "--stop-grace", "1s", "--service-pause", "100ms"])
        .collect();
    let child = env.spawn(&args, &[("ACHVY_CNXN__DB__URI", &url)]);
    std::thread::sleep(Duration::from_millis(1500));
    let t0 = Instant::now();
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let out = child.wait_with_output().unwrap();
    let took = t0.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", crate::stderr(&out));
    assert!(
        took < Duration::from_secs(4),
        "stop_grace 1s took {took:?} under a held lock: {}",
        crate::stderr(&out)
    );
    release.send(()).unwrap();
    holder.join().unwrap();
    let count = || {
        fetch(
            target,
            &env,
            &format!("SELECT {} FROM {table}", target.text("COUNT(*)")),
        )[0][0]
            .clone()
    };
    assert_eq!(
        count().as_deref(),
        Some("1"),
        "the stopped load left nothing"
    );
    assert!(run().status.success());
    assert_eq!(count().as_deref(), Some("2"));
}
