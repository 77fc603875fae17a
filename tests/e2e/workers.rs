//! Workers (`--workers`): N processes of one anchovy share its tables on the
//! filesystem, Azurite and moto datastores, statically and dynamically; uploader
//! workers load different tables into one target; a worker killed with SIGKILL has its
//! tables taken over after the claim's TTL; a paused worker is fenced out when it
//! wakes; and kills across workers leave every row exactly once.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use anchovy_core::Value;
use anchovy_core::testutil::Rng;

use crate::upload::{Target, fetch};
use crate::{Env, need};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Store {
    Fs,
    Azurite,
    Moto,
}

/// How the workers split the tables.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Static,
    Auto,
}

/// An anchovy whose tables `t00..` read CSV files under `in/`, and what they hold.
pub struct Job {
    pub env: Env,
    pub ds: String,
    pub id: String,
    pub vars: Vec<(String, String)>,
    tables: usize,
    /// Table -> every id its files hold.
    pub rows: BTreeMap<String, Vec<i64>>,
    next: i64,
}

impl Job {
    pub fn new(store: Store, tables: usize) -> Job {
        Job::with_parts(store, tables, 1)
    }

    /// [`Job::new`] with every table split into `parts` parts (`parts:`).
    pub fn with_parts(store: Store, tables: usize, parts: u32) -> Job {
        let env = Env::new();
        let id = format!("wk_{}", env.nonce());
        let ds = match store {
            Store::Fs => format!("file://{}/ds", env.path().display()),
            Store::Azurite => format!("az://{}/workers/{}", need("AZURE_CONTAINER"), env.nonce()),
            Store::Moto => format!("s3://{}/workers/{}", need("S3_BUCKET"), env.nonce()),
        };
        let vars = crate::store_vars(&ds, "2s");
        let mut cfg = String::from("config:\n  commit_interval: 0\n  batch_size: 100\ntbls:\n");
        let root = env.path().join("in");
        for t in 0..tables {
            cfg.push_str(&format!(
                "  t{t:02}:\n    path: {}/t{t:02}_*.csv\n    columns: {{id: int}}\n",
                root.display()
            ));
            if parts > 1 {
                cfg.push_str(&format!("    parts: {parts}\n"));
            }
        }
        env.write("config.yaml", cfg);
        Job {
            env,
            ds,
            id,
            vars,
            tables,
            rows: BTreeMap::new(),
            next: 0,
        }
    }

    /// Claims that live `ttl` instead of 2 s, for a test that kills no worker: on a
    /// loaded machine a worker starved of CPU (or a starved Azurite) can miss 2 s of
    /// renewals and lose its claims, which is right and fails that worker.
    pub fn ttl(mut self, ttl: &str) -> Job {
        for (k, v) in &mut self.vars {
            if k == "ACHVY_LEASE_TTL" {
                *v = ttl.into();
            }
        }
        self
    }

    /// Adds `files` files of `rows` rows to every table (ids unique within a table).
    pub fn add_files(&mut self, round: usize, files: usize, rows: usize) {
        let root = self.env.path().join("in");
        std::fs::create_dir_all(&root).unwrap();
        for t in 0..self.tables {
            let name = format!("t{t:02}");
            for f in 0..files {
                let mut s = String::from("id,note\n");
                for _ in 0..rows {
                    s.push_str(&format!("{},\"r{round}, \"\"f{f}\"\"\"\n", self.next));
                    self.rows.entry(name.clone()).or_default().push(self.next);
                    self.next += 1;
                }
                let tmp = root.join(format!(".{name}_{round}_{f}.tmp"));
                std::fs::write(&tmp, s).unwrap();
                std::fs::rename(tmp, root.join(format!("{name}_{round}_{f}.csv"))).unwrap();
            }
        }
    }

    /// `anchovy start` as worker `i` of `n` (or a dynamic one), in the background.
    pub fn spawn(
        &self,
        mode: Mode,
        n: usize,
        i: usize,
        extra: &[(&str, &str)],
    ) -> std::process::Child {
        let workers = match mode {
            Mode::Static => n.to_string(),
            Mode::Auto => "auto".into(),
        };
        let num = i.to_string();
        let mut args = vec![
            "start",
            "-op",
            "files.CsvDownloader",
            "--id",
            &self.id,
            "--workers",
            &workers,
        ];
        if mode == Mode::Static {
            args.extend(["--worker-num", &num]);
        }
        let mut vars: Vec<(&str, &str)> = self
            .vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        vars.extend_from_slice(extra);
        self.env.spawn(&args, &vars)
    }

    /// Runs `n` workers at once to the end; returns each one's output.
    pub fn run_workers(&self, mode: Mode, n: usize) -> Vec<std::process::Output> {
        let kids: Vec<_> = (0..n).map(|i| self.spawn(mode, n, i, &[])).collect();
        kids.into_iter()
            .map(|k| k.wait_with_output().unwrap())
            .collect()
    }

    /// Every committed id per table.
    pub fn committed(&self) -> BTreeMap<String, Vec<i64>> {
        crate::committed(std::path::Path::new(&self.ds), "tester", &self.id)
            .into_iter()
            .map(|(t, rows)| {
                let mut ids: Vec<i64> = rows
                    .iter()
                    .map(|r| match &r["id"] {
                        Value::Int(i) => *i,
                        o => panic!("not an int: {o:?}"),
                    })
                    .collect();
                ids.sort_unstable();
                (t, ids)
            })
            .collect()
    }

    /// The datastore holds every source row exactly once.
    pub fn check(&self, what: &str) {
        let got = self.committed();
        for (t, want) in &self.rows {
            let ids = got.get(t).cloned().unwrap_or_default();
            let dup = ids.windows(2).find(|w| w[0] == w[1]);
            assert!(
                dup.is_none(),
                "{what}: table {t}: id {dup:?} committed twice"
            );
            assert_eq!(&ids, want, "{what}: table {t}: rows lost");
        }
    }

    /// The TBL tasks (table, worker) of every worker's results in this datastore.
    fn tbl_tasks(outputs: &[std::process::Output]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for o in outputs {
            let r = crate::results(o);
            for b in r["batches"].as_array().unwrap() {
                for t in b["tasks"].as_array().unwrap() {
                    if t["task_type"] == "TBL" {
                        out.push((
                            t["tbl"].as_str().unwrap().to_string(),
                            t["worker"].as_str().unwrap_or("").to_string(),
                        ));
                    }
                }
            }
        }
        out.sort();
        out
    }
}

fn ok_all(outs: &[std::process::Output], what: &str) {
    for o in outs {
        assert!(
            o.status.success(),
            "{what}: a worker failed: {}",
            crate::output(o)
        );
    }
}

/// N workers (2, 4, 8), static and dynamic, on the three datastores: every table
/// loaded, every row once; a static worker runs exactly its shard, each table once.
#[test]
fn workers_share_one_anchovy_s_tables_exactly_once() {
    let plans = [
        (Store::Fs, Mode::Static, 2),
        (Store::Fs, Mode::Auto, 4),
        (Store::Fs, Mode::Static, 8),
        (Store::Azurite, Mode::Static, 4),
        (Store::Azurite, Mode::Auto, 8),
        (Store::Moto, Mode::Auto, 2),
        (Store::Moto, Mode::Static, 4),
    ];
    for (store, mode, n) in plans {
        let what = format!("{store:?}, {mode:?}, {n} workers");
        let mut job = Job::new(store, 12).ttl("15s");
        for round in 0..2 {
            job.add_files(round, 2, 40);
            let outs = job.run_workers(mode, n);
            ok_all(&outs, &what);
            job.check(&format!("{what}, round {round}"));
            let tasks = Job::tbl_tasks(&outs);
            if mode == Mode::Static {
                // Each table ran once, on the worker its hash names.
                let names: Vec<&str> = tasks.iter().map(|(t, _)| t.as_str()).collect();
                let want: Vec<String> = (0..12).map(|t| format!("t{t:02}")).collect();
                assert_eq!(names, want, "{what}");
                for (t, w) in &tasks {
                    let shard = anchovy_core::worker::shard(t, n as u32);
                    assert_eq!(w, &format!("{shard}-of-{n}"), "{what}: {t}");
                }
            } else {
                // Each table ran at least once (a worker that began its round after
                // another finished a table may run it again: it finds nothing new).
                let mut names: Vec<&str> = tasks.iter().map(|(t, _)| t.as_str()).collect();
                names.dedup();
                assert_eq!(names.len(), 12, "{what}: {tasks:?}");
            }
        }
        if store == Store::Fs {
            let area = std::path::Path::new(&job.ds["file://".len()..])
                .join("tester")
                .join(&job.id);
            let results = std::fs::read_dir(area.join("$results/workers"))
                .unwrap()
                .count();
            assert!(results >= n.min(2), "{what}: {results} worker results");
            assert!(!area.join("$results/anchovy_run_results.json").exists());
        }
    }
}

/// A table split into parts (`parts: 6`, 18 files): its parts are units of their own,
/// claimed by any worker (static and dynamic) or run side by side in one process; every
/// row once, each part's files read by that part only, and a rerun reads nothing again.
#[test]
fn parts_of_one_table_are_shared_by_workers() {
    for (store, mode, n) in [
        (Store::Fs, None, 1),
        (Store::Fs, Some(Mode::Static), 3),
        (Store::Azurite, Some(Mode::Auto), 4),
        (Store::Moto, Some(Mode::Auto), 3),
    ] {
        let what = format!("{store:?}, {mode:?}, {n} workers");
        let mut job = Job::with_parts(store, 2, 6);
        for round in 0..2 {
            job.add_files(round, 9, 20);
            let outs: Vec<std::process::Output> = match mode {
                Some(m) => job.run_workers(m, n),
                None => vec![
                    job.env
                        .cmd()
                        .args(["start", "-op", "files.CsvDownloader", "--id", &job.id])
                        .envs(job.vars.iter().cloned())
                        .output()
                        .unwrap(),
                ],
            };
            ok_all(&outs, &what);
            job.check(&format!("{what}, round {round}"));
            // Every part ran, and read only its own files.
            let mut parts: Vec<(String, String, u64)> = Vec::new();
            for o in &outs {
                let r = crate::results(o);
                for b in r["batches"].as_array().unwrap() {
                    for t in b["tasks"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|t| t["task_type"] == "TBL")
                    {
                        let d = &t["data"];
                        assert!(t["status"] == "OK", "{what}: {t}");
                        parts.push((
                            t["tbl"].as_str().unwrap().to_string(),
                            d["part"].as_str().unwrap().to_string(),
                            d["files_read"].as_u64().unwrap_or(0),
                        ));
                    }
                }
            }
            parts.sort();
            let mut units: Vec<(String, String)> = parts
                .iter()
                .map(|(t, p, _)| (t.clone(), p.clone()))
                .collect();
            units.dedup();
            assert_eq!(units.len(), 12, "{what}: {parts:?}");
            let read: u64 = parts.iter().map(|p| p.2).sum();
            assert_eq!(read, 18, "{what}: files read in round {round}: {parts:?}");
        }
        // `$tables` holds the table once, with its column.
        let out = job
            .env
            .cmd()
            .args(["tables", "--id", &job.id, "--json"])
            .envs(job.vars.iter().cloned())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(text.lines().count(), 2, "{what}: {text}");
        assert!(text.contains("\"id\":\"int\""), "{what}: {text}");
    }
}

/// Uploader workers load different tables into one PostgreSQL target in parallel,
/// every row once; `anchovy tables` names each table's last holder.
#[test]
fn uploader_workers_load_every_table_once() {
    for (store, mode) in [(Store::Fs, Mode::Static), (Store::Azurite, Mode::Auto)] {
        let what = format!("{store:?}, {mode:?}");
        let mut job = Job::new(store, 6);
        job.add_files(0, 2, 30);
        ok_all(&job.run_workers(Mode::Auto, 3), &what);
        job.env.write("upload.yaml", "config:\n  batch_size: 100\n");
        let wh = format!("wh_{}", job.env.nonce());
        let mut vars = job.vars.clone();
        vars.push(("ACHVY_CNXN__DB__URI".into(), Target::Pg.url().unwrap()));
        let run = |job: &Job, round: usize| {
            let kids: Vec<_> = (0..3)
                .map(|i| {
                    let num = i.to_string();
                    let mut args = vec![
                        "start",
                        "-op",
                        "sql.Uploader",
                        "--id",
                        &wh,
                        "-U",
                        &job.id,
                        "-c",
                        "upload.yaml",
                    ];
                    match mode {
                        Mode::Static => args.extend(["--workers", "3", "--worker-num", &num]),
                        Mode::Auto => args.extend(["--workers", "auto"]),
                    }
                    let v: Vec<(&str, &str)> =
                        vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    job.env.spawn(&args, &v)
                })
                .collect();
            let outs: Vec<_> = kids
                .into_iter()
                .map(|k| k.wait_with_output().unwrap())
                .collect();
            ok_all(&outs, &format!("{what}: upload round {round}"));
        };
        run(&job, 0);
        job.add_files(1, 1, 30);
        ok_all(&job.run_workers(Mode::Auto, 2), &what);
        run(&job, 1);
        for (t, want) in &job.rows {
            let mut ids: Vec<i64> = fetch(
                Target::Pg,
                &job.env,
                &format!(
                    "SELECT {} FROM {}",
                    Target::Pg.text("id"),
                    Target::Pg.table(&job.id, t)
                ),
            )
            .iter()
            .map(|r| r[0].as_deref().unwrap().parse().unwrap())
            .collect();
            ids.sort_unstable();
            assert_eq!(&ids, want, "{what}: target table {t}");
        }
        // `anchovy tables` shows who held each table last.
        let out = job
            .env
            .cmd()
            .args(["tables", "--id", &job.id])
            .envs(job.vars.iter().cloned())
            .output()
            .unwrap();
        let text = crate::output(&out);
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("CLAIM") && text.contains("released by "),
            "{what}: {text}"
        );
    }
}

/// Workers and a single-process run of the same anchovy exclude each other (exit 5,
/// naming who holds it), on the filesystem and an object store.
#[test]
fn workers_and_a_single_run_exclude_each_other() {
    for store in [Store::Fs, Store::Azurite] {
        let what = format!("{store:?}");
        let mut job = Job::new(store, 2);
        job.add_files(0, 1, 20);
        let slow = [("ACHVY_FAILPOINT", "source.batch:sleep-2500")];
        let vars: Vec<(String, String)> = job.vars.clone();
        let plain = |job: &Job| {
            job.env
                .cmd()
                .args(["start", "-op", "files.CsvDownloader", "--id", &job.id])
                .envs(vars.iter().cloned())
                .output()
                .unwrap()
        };
        // A worker in its table: a plain run is refused.
        let mut w = job.spawn(Mode::Auto, 1, 0, &slow);
        let mut err = std::io::BufReader::new(w.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("sleeping") {
            line.clear();
            assert!(
                std::io::BufRead::read_line(&mut err, &mut line).unwrap() > 0,
                "{what}"
            );
        }
        let o = plain(&job);
        assert_eq!(o.status.code(), Some(5), "{what}: {}", crate::output(&o));
        assert!(
            crate::stderr(&o).contains("workers"),
            "{what}: {}",
            crate::stderr(&o)
        );
        assert!(w.wait().unwrap().success());
        // A plain run in progress (on new files): a worker is refused.
        job.add_files(1, 1, 20);
        let mut p = job.env.spawn(
            &["start", "-op", "files.CsvDownloader", "--id", &job.id],
            &vars
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .chain(slow)
                .collect::<Vec<_>>(),
        );
        let mut err = std::io::BufReader::new(p.stderr.take().unwrap());
        line.clear();
        while !line.contains("sleeping") {
            line.clear();
            assert!(
                std::io::BufRead::read_line(&mut err, &mut line).unwrap() > 0,
                "{what}"
            );
        }
        let o = job.spawn(Mode::Auto, 1, 0, &[]).wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(5), "{what}: {}", crate::output(&o));
        assert!(
            crate::stderr(&o).contains("single-process run"),
            "{what}: {}",
            crate::stderr(&o)
        );
        assert!(p.wait().unwrap().success());
        job.check(&what);
    }
}

/// Runs dynamic workers one after another until the datastore holds every row (a
/// claim of a killed worker blocks its table until the TTL passes).
fn finish(job: &Job, what: &str) {
    let t0 = Instant::now();
    loop {
        let o = job.spawn(Mode::Auto, 1, 0, &[]).wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "{what}: the rerun failed: {}",
            crate::output(&o)
        );
        let got = job.committed();
        if job
            .rows
            .iter()
            .all(|(t, w)| got.get(t).map_or(0, Vec::len) >= w.len())
        {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "{what}: never finished"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A worker stopped (SIGSTOP) while it holds a table, past its claim's TTL: another
/// takes the table over and loads it; the stopped one, continued, commits nothing
/// (it says it lost the table) and the rows are there once.
#[test]
fn a_paused_worker_is_fenced_out() {
    for store in [Store::Azurite, Store::Moto] {
        let what = format!("{store:?}");
        let mut job = Job::new(store, 1);
        job.add_files(0, 1, 50);
        let mut a = job.spawn(
            Mode::Auto,
            1,
            0,
            &[("ACHVY_FAILPOINT", "commit.before:sleep-1000")],
        );
        let mut err = std::io::BufReader::new(a.stderr.take().unwrap());
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            use std::io::BufRead;
            assert!(err.read_line(&mut line).unwrap() > 0, "{what}: {seen}");
            seen.push_str(&line);
            if line.contains("anchovy failpoint commit.before sleeping") {
                break;
            }
        }
        let pid = a.id();
        signal(pid, "STOP");
        finish(&job, &what);
        signal(pid, "CONT");
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
        let st = a.wait().unwrap();
        assert_ne!(
            st.code(),
            Some(0),
            "{what}: the fenced worker must fail: {rest}"
        );
        assert!(rest.contains("lost table t00"), "{what}: {rest}");
        job.check(&what);
    }
}

fn signal(pid: u32, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -{sig} {pid}");
}

/// Kills across workers: several workers run at once, random ones are killed with
/// SIGKILL at random moments or failpoints; after each round dynamic workers finish the
/// work (after the TTL where a killed one held claims) and every row is there once.
/// `WORKER_KILLS` sets how many kills to land (default 12 for CI; `script/chaos`
/// runs 200); `CHAOS_SEED` replays.
#[test]
fn no_row_lost_or_doubled_when_workers_are_killed() {
    let (want, seed) = crate::chaos::kills_and_seed("WORKER_KILLS", 12);
    eprintln!("worker chaos: {want} kills, CHAOS_SEED={seed}");
    let mut rng = Rng(seed);
    const POINTS: &[(&str, u64)] = &[
        ("claim.taken", 3),
        ("source.batch", 6),
        ("datafile.finish", 3),
        ("commit.before", 3),
        ("commit.after", 3),
        ("tasklog.write", 3),
    ];
    let (mut landed, mut trial) = (0usize, 0usize);
    let mut per_point: BTreeMap<String, usize> = BTreeMap::new();
    let t0 = Instant::now();
    while landed < want {
        let store = [Store::Fs, Store::Azurite, Store::Moto][trial % 3];
        let mode = if trial % 2 == 0 {
            Mode::Auto
        } else {
            Mode::Static
        };
        trial += 1;
        // Every third trial splits its tables into parts (units within a table).
        let parts = if trial % 3 == 1 { 3 } else { 1 };
        let mut job = Job::with_parts(store, 6, parts);
        for round in 0..2 {
            job.add_files(round, 3, 30);
            let n = 2 + rng.below(3) as usize;
            let victims: Vec<bool> = (0..n).map(|_| rng.below(2) == 0).collect();
            let mut kids = Vec::new();
            let mut labels = Vec::new();
            for (i, v) in victims.iter().enumerate() {
                let (fp, label) = if *v && rng.below(3) > 0 {
                    let (name, k) = POINTS[rng.below(POINTS.len() as u64) as usize];
                    (
                        Some(format!("{name}:{}", 1 + rng.below(k))),
                        name.to_string(),
                    )
                } else {
                    (None, "random moment".to_string())
                };
                let extra: Vec<(&str, &str)> =
                    fp.iter().map(|f| ("ACHVY_FAILPOINT", f.as_str())).collect();
                kids.push(job.spawn(mode, n, i, &extra));
                labels.push(label);
            }
            // Victims without a failpoint die at a random moment.
            std::thread::sleep(Duration::from_millis(rng.below(400)));
            for (i, k) in kids.iter_mut().enumerate() {
                if victims[i] && labels[i] == "random moment" {
                    let _ = k.kill();
                }
            }
            for (i, k) in kids.into_iter().enumerate() {
                let o = k.wait_with_output().unwrap();
                let died = o.status.signal() == Some(9) || o.status.code() == Some(86);
                if died {
                    landed += 1;
                    *per_point.entry(labels[i].clone()).or_default() += 1;
                } else {
                    assert!(
                        o.status.success(),
                        "trial {trial} ({store:?}, {mode:?}) round {round}: worker {i} failed: {}",
                        crate::output(&o)
                    );
                }
            }
            let what = format!(
                "trial {trial} ({store:?}, {mode:?}, {n} workers, {parts} parts) round {round}"
            );
            finish(&job, &what);
            job.check(&what);
        }
    }
    eprintln!(
        "worker chaos: {landed} kills in {trial} trials in {:.0} s; 0 rows lost, 0 doubled",
        t0.elapsed().as_secs_f64()
    );
    for (k, n) in &per_point {
        eprintln!("  {n:4}  {k}");
    }
}

/// The worker number read from the scheduler's variable runs that worker's shard; a
/// number out of range, a missing variable or a number without `--workers` exits 2 and
/// says what to pass.
#[test]
fn worker_numbers_come_from_the_scheduler_and_bad_ones_exit_2() {
    let mut job = Job::new(Store::Fs, 8);
    job.add_files(0, 1, 10);
    let kids: Vec<_> = (0..3)
        .map(|i| {
            let idx = i.to_string();
            let mut vars: Vec<(&str, &str)> = job
                .vars
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            vars.push(("AWS_BATCH_JOB_ARRAY_INDEX", &idx));
            let args = [
                "start",
                "-op",
                "files.CsvDownloader",
                "--id",
                &job.id,
                "--workers",
                "3",
                "--worker-num",
                "AWS_BATCH_JOB_ARRAY_INDEX",
            ];
            job.env.spawn(&args, &vars)
        })
        .collect();
    let outs: Vec<_> = kids
        .into_iter()
        .map(|k| k.wait_with_output().unwrap())
        .collect();
    ok_all(&outs, "AWS_BATCH_JOB_ARRAY_INDEX");
    for (t, w) in Job::tbl_tasks(&outs) {
        assert_eq!(
            w,
            format!("{}-of-3", anchovy_core::worker::shard(&t, 3)),
            "{t}"
        );
    }
    job.check("array job");
    for (args, env, says) in [
        (
            vec!["--workers", "2", "--worker-num", "2"],
            vec![],
            "workers are numbered from 0 to 1",
        ),
        (
            vec!["--workers", "4"],
            vec![],
            "--worker-num JOB_COMPLETION_INDEX",
        ),
        (vec!["--worker-num", "1"], vec![], "without `workers`"),
        (
            vec!["--workers", "auto", "--worker-num", "0"],
            vec![],
            "dynamic workers have no number",
        ),
        (
            vec!["--workers", "4", "--worker-num", "JOB_COMPLETION_INDEX"],
            vec![],
            "Indexed Job",
        ),
        (
            vec!["--workers", "0"],
            vec![],
            "neither `auto` nor a number",
        ),
        (
            vec!["--workers", "2", "--worker-num", "job_completion_index"],
            vec![("JOB_COMPLETION_INDEX", "x")],
            "not a worker number",
        ),
        (
            vec!["--exit-zero-on", "failed"],
            vec![],
            "use locked (exit 5) and/or pending (exit 6)",
        ),
    ] {
        let o = job
            .env
            .cmd()
            .args(["start", "-op", "files.CsvDownloader", "--id", &job.id])
            .args(&args)
            .envs(job.vars.iter().cloned())
            .envs(env)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", crate::output(&o));
        assert!(
            crate::stderr(&o).contains(says),
            "{args:?}: {}",
            crate::stderr(&o)
        );
    }
}

/// `--exit-zero-on locked`: a run refused because workers hold the anchovy exits 0 (for
/// schedulers that would restart it), and still says why on stderr.
#[test]
fn exit_zero_on_turns_a_refusal_into_exit_0() {
    let mut job = Job::new(Store::Fs, 1);
    job.add_files(0, 1, 20);
    let mut w = job.spawn(
        Mode::Auto,
        1,
        0,
        &[("ACHVY_FAILPOINT", "source.batch:sleep-2000")],
    );
    let mut err = std::io::BufReader::new(w.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("sleeping") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut err, &mut line).unwrap() > 0);
    }
    for (flag, code) in [(None, 5), (Some("locked,pending"), 0)] {
        let mut c = job.env.cmd();
        c.args(["start", "-op", "files.CsvDownloader", "--id", &job.id])
            .envs(job.vars.iter().cloned());
        if let Some(f) = flag {
            c.env("ACHVY_EXIT_ZERO_ON", f);
        }
        let o = c.output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(code),
            "{flag:?}: {}",
            crate::output(&o)
        );
        assert!(crate::stderr(&o).contains("another run of this anchovy is in progress"));
    }
    assert!(w.wait().unwrap().success());
    job.check("exit-zero-on");
}
