//! The crash matrix: `kill -9` at every named failpoint and at random moments of the
//! whole pipeline (download, commit, checkpoint, task logs, shutdown, upload), on the
//! filesystem and Azurite datastores, into SQLite and PostgreSQL, from local files and
//! (every third trial) from the SFTP server; after each kill the run is repeated until
//! it succeeds, and the datastore and the target are checked against the source: no
//! row lost, none doubled, every update applied.
//!
//! `CHAOS_KILLS` sets how many kills to land (default 24: CI's quick sample);
//! `script/chaos [N]` runs the long version. `CHAOS_SEED` replays a run (the seed is
//! printed at the start).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use anchovy_core::Value;
use anchovy_core::testutil::Rng;

use crate::Env;
use crate::need;
use crate::upload::{Target, fetch, upload_args};

/// Named failpoints of a download, with how many times each is hit at least in one
/// round of the scenario below (the hit to stop at is drawn from 1..=n).
pub(crate) const DOWNLOAD_POINTS: &[(&str, u64)] = &[
    ("source.batch", 8),
    ("datafile.finish", 4),
    ("commit.before", 4),
    ("commit.after", 4),
    ("checkpoint.mirrors", 1),
    ("tasklog.write", 4),
    ("session.shutdown", 1),
];

/// The extra failpoints of an SFTP download (listing, and after each read chunk).
const SFTP_POINTS: &[(&str, u64)] = &[("sftp.listed", 2), ("sftp.chunk", 4)];

/// Named failpoints of an upload.
const UPLOAD_POINTS: &[(&str, u64)] = &[
    ("upload.staged_file", 3),
    ("upload.before_commit", 3),
    ("upload.after_commit", 3),
    ("tasklog.write", 4),
    ("session.shutdown", 1),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Store {
    Fs,
    Azurite,
}

/// Where the kill lands.
#[derive(Debug, Clone)]
pub(crate) enum Kill {
    /// `kill -9` when the process reports it reached the n-th hit of this failpoint.
    At(&'static str, u64),
    /// `kill -9` this long after the start.
    After(Duration),
}

impl Kill {
    pub(crate) fn label(&self) -> String {
        match self {
            Kill::At(n, _) => (*n).to_string(),
            Kill::After(_) => "random moment".into(),
        }
    }
}

pub(crate) struct Run {
    /// Killed by us with SIGKILL while it ran.
    pub(crate) killed: bool,
    pub(crate) code: Option<i32>,
    pub(crate) stderr: String,
    pub(crate) took: Duration,
}

/// Runs `anchovy args` and kills it with SIGKILL as `kill` says (if it gets there).
pub(crate) fn run(env: &Env, args: &[&str], vars: &[(String, String)], kill: Option<&Kill>) -> Run {
    let mut vars: Vec<(String, String)> = vars.to_vec();
    if let Some(Kill::At(name, n)) = kill {
        vars.push(("ACHVY_FAILPOINT".into(), format!("{name}:pause@{n}")));
    }
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let t0 = Instant::now();
    let mut child = env.spawn(args, &pairs);
    let err = child.stderr.take().unwrap();
    // The run results on stdout are drained too, so a full pipe never blocks the run.
    let mut stdout = child.stdout.take().unwrap();
    let drain = std::thread::spawn(move || {
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    });
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines() {
            let Ok(l) = line else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let deadline = match kill {
        Some(Kill::After(d)) => Some(t0 + *d),
        _ => None,
    };
    let mut stderr = String::new();
    let mut kill_now = false;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if kill_now || deadline.is_some_and(|d| Instant::now() >= d) {
            child.kill().unwrap();
            break child.wait().unwrap();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "anchovy {args:?} hangs:\n{stderr}"
        );
        match rx.recv_timeout(Duration::from_millis(2)) {
            Ok(l) => {
                kill_now = l.starts_with("anchovy failpoint ") && l.ends_with(" paused");
                stderr.push_str(&l);
                stderr.push('\n');
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(2))
            }
        }
    };
    let _ = reader.join();
    let _ = drain.join();
    stderr.extend(rx.try_iter().map(|l| l + "\n"));
    Run {
        killed: status.signal() == Some(9),
        code: status.code(),
        stderr,
        took: t0.elapsed(),
    }
}

/// Reruns until the run succeeds. Exit 5 (the killed run's lease on an object store
/// has not expired yet) is waited out; anything else is a failure of the test.
pub(crate) fn run_to_completion(
    env: &Env,
    args: &[&str],
    vars: &[(String, String)],
    after: &str,
) -> Run {
    let t0 = Instant::now();
    loop {
        let r = run(env, args, vars, None);
        match r.code {
            Some(0) => return r,
            Some(5) if t0.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(300))
            }
            _ => panic!(
                "the rerun after {after} failed ({:?}): {}",
                r.code, r.stderr
            ),
        }
    }
}

/// The source: append-only events (ids unique over all rounds) and orders whose
/// newest version (highest `v`) must win.
#[derive(Default)]
struct Source {
    events: Vec<i64>,
    orders: BTreeMap<i64, i64>,
    order_rows: usize,
}

impl Source {
    fn add_round(&mut self, root: &std::path::Path, round: i64) {
        let write = |name: String, body: String| {
            std::fs::create_dir_all(root).unwrap();
            // Whole files only: written aside, then renamed into the glob.
            let tmp = root.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, body).unwrap();
            std::fs::rename(tmp, root.join(name)).unwrap();
        };
        for f in 0..3 {
            let mut s = String::from("id,note\n");
            for _ in 0..250 {
                let id = self.events.len() as i64;
                self.events.push(id);
                s.push_str(&format!("{id},\"r{round} f{f}, \"\"quoted\"\"\"\n"));
            }
            write(format!("ev_{round}_{f}.csv"), s);
        }
        let mut s = String::from("id,v\n");
        for id in round * 60..round * 60 + 120 {
            s.push_str(&format!("{id},{round}\n"));
            self.orders.insert(id, round);
            self.order_rows += 1;
        }
        write(format!("od_{round}.csv"), s);
    }
}

/// The downloader's config, its files under `root`.
fn config(root: &std::path::Path) -> String {
    let r = root.display();
    format!(
        "config:\n  commit_interval: 0\n  batch_size: 200\ntbls:\n  ev:\n    path: {r}/ev_*.csv\n    columns: {{id: int}}\n  od:\n    path: {r}/od_*.csv\n    unique_by: id\n    sort_by: -v\n    columns: {{id: int, v: int}}\n"
    )
}
const UPLOAD: &str = "config:\n  batch_size: 200\ntbls:\n  ev:\n    max_rows_per_load: 300\n  od:\n    max_rows_per_load: 100\n";

/// The datastore holds every source row exactly once.
fn check_datastore(ds: &str, up: &str, src: &Source, what: &str) {
    let rows = crate::committed(std::path::Path::new(ds), "tester", up);
    let mut ids: Vec<i64> = rows
        .get("ev")
        .map(|r| r.iter().map(|r| int(&r["id"])).collect())
        .unwrap_or_default();
    ids.sort_unstable();
    let dup = ids.windows(2).find(|w| w[0] == w[1]);
    assert!(dup.is_none(), "{what}: event {dup:?} committed twice");
    assert_eq!(ids, src.events, "{what}: events lost in the datastore");
    let od = rows.get("od").map_or(0, Vec::len);
    assert_eq!(od, src.order_rows, "{what}: order rows lost or doubled");
}

/// The target holds every event once and the newest version of every order.
fn check_target(env: &Env, target: Target, up: &str, src: &Source, what: &str) {
    let q = |sql: String| fetch(target, env, &sql);
    let mut ids: Vec<i64> = q(format!(
        "SELECT {} FROM {}",
        target.text("id"),
        target.table(up, "ev")
    ))
    .iter()
    .map(|r| r[0].as_deref().unwrap().parse().unwrap())
    .collect();
    ids.sort_unstable();
    let dup = ids.windows(2).find(|w| w[0] == w[1]);
    assert!(dup.is_none(), "{what}: event {dup:?} loaded twice");
    assert_eq!(ids, src.events, "{what}: events lost in the target");
    let orders: BTreeMap<i64, i64> = q(format!(
        "SELECT {}, {} FROM {}",
        target.text("id"),
        target.text("v"),
        target.table(up, "od")
    ))
    .iter()
    .map(|r| {
        (
            r[0].as_deref().unwrap().parse().unwrap(),
            r[1].as_deref().unwrap().parse().unwrap(),
        )
    })
    .collect();
    assert_eq!(orders, src.orders, "{what}: orders lost or stale");
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        o => panic!("not an int: {o:?}"),
    }
}

/// Draws a kill: a named failpoint half the time, else a random moment within the
/// duration of the last clean run of the same kind.
pub(crate) fn draw(rng: &mut Rng, points: &[(&'static str, u64)], typical: Duration) -> Kill {
    if rng.below(2) == 0 {
        let (name, n) = points[rng.below(points.len() as u64) as usize];
        Kill::At(name, 1 + rng.below(n))
    } else {
        let ms = typical.as_millis().max(50) as u64;
        Kill::After(Duration::from_millis(rng.below(ms)))
    }
}

/// Removes a trial's SFTP folder (the server's directory outlives the trial).
struct Cleanup(Option<std::path::PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// How many kills to land (`var`, else `default`) and the seed (`CHAOS_SEED`, else the
/// clock): what every chaos test starts from.
pub fn kills_and_seed(var: &str, default: usize) -> (usize, u64) {
    let want = std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let seed = anchovy_core::testutil::seed("CHAOS_SEED");
    (want, seed)
}

#[test]
fn no_row_lost_or_doubled_whatever_the_kill() {
    let (want, seed) = kills_and_seed("CHAOS_KILLS", 24);
    eprintln!("chaos: {want} kills, CHAOS_SEED={seed}");
    let mut rng = Rng(seed);
    let combos = [
        (Store::Fs, Target::Sqlite),
        (Store::Azurite, Target::Pg),
        (Store::Fs, Target::Pg),
        (Store::Azurite, Target::Sqlite),
    ];
    let mut kills: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_combo: BTreeMap<String, usize> = BTreeMap::new();
    let (mut landed, mut missed, mut trial) = (0usize, 0usize, 0usize);
    let mut typical = [Duration::from_millis(400), Duration::from_millis(400)];
    let t0 = Instant::now();
    while landed < want {
        let (store, target) = combos[trial % combos.len()];
        let sftp = trial % 3 == 2;
        trial += 1;
        // SFTP trials run alone: an SFTP test kills every session of the test user.
        let _sftp_lock = sftp.then(crate::sftp::lock);
        let env = Env::new();
        let up = format!("chaos_{}", env.nonce());
        let ds = match store {
            Store::Fs => format!("file://{}/ds", env.path().display()),
            Store::Azurite => format!("az://{}/chaos/{}", need("AZURE_CONTAINER"), env.nonce()),
        };
        let mut vars = crate::store_vars(&ds, "2s");
        vars.push((
            "ACHVY_CNXN__DB__URI".into(),
            match target {
                Target::Sqlite => {
                    std::fs::create_dir_all(env.home().join("tester")).unwrap();
                    target.sqlite_file(&env)
                }
                _ => target.url().unwrap(),
            },
        ));
        let (root, op) = if sftp {
            for (k, v) in [
                (
                    "ACHVY_CNXN__URI",
                    format!(
                        "sftp://{}@127.0.0.1:{}",
                        need("SFTP_USER"),
                        need("SFTP_PORT")
                    ),
                ),
                ("ACHVY_CNXN__PPK_PATH", need("SFTP_KEY")),
                ("ACHVY_CNXN__KNOWN_HOSTS", need("SFTP_KNOWN_HOSTS")),
            ] {
                vars.push((k.into(), v));
            }
            let root =
                std::path::PathBuf::from(need("SFTP_DIR")).join(format!("chaos-{}", env.nonce()));
            (root, "sftp.CsvDownloader")
        } else {
            (env.path().join("in"), "files.CsvDownloader")
        };
        let source = if sftp { "SFTP, " } else { "" };
        env.write("config.yaml", config(&root));
        env.write("upload.yaml", UPLOAD);
        let down: Vec<&str> = vec!["start", "-op", op, "--id", &up];
        let mut down_points: Vec<(&'static str, u64)> = DOWNLOAD_POINTS.to_vec();
        if sftp {
            down_points.extend_from_slice(SFTP_POINTS);
        }
        let upl: Vec<&str> = upload_args("wh", &up).to_vec();
        let mut src = Source::default();
        let _cleanup = Cleanup(sftp.then(|| root.clone()));
        for round in 0..2 {
            src.add_round(&root, round);
            for (step, args, points) in
                [(0, &down, down_points.as_slice()), (1, &upl, UPLOAD_POINTS)]
            {
                let kill = draw(&mut rng, points, typical[step]);
                let what = format!(
                    "trial {trial} ({source}{store:?} -> {target:?}) round {round}: {} killed at {} ({kill:?})",
                    if step == 0 { "download" } else { "upload" },
                    kill.label()
                );
                let r = run(&env, args, &vars, Some(&kill));
                if r.killed {
                    landed += 1;
                    *kills
                        .entry(format!(
                            "{} {}",
                            if step == 0 { "download" } else { "upload" },
                            kill.label()
                        ))
                        .or_default() += 1;
                    *by_combo
                        .entry(format!("{store:?} -> {target:?}"))
                        .or_default() += 1;
                    if sftp {
                        *by_combo.entry("from SFTP".into()).or_default() += 1;
                    }
                } else {
                    // The run ended before the kill point: it must have succeeded.
                    assert_eq!(r.code, Some(0), "{what}: {}", r.stderr);
                    missed += 1;
                }
                let clean = run_to_completion(&env, args, &vars, &what);
                if !r.killed {
                    typical[step] = r.took;
                } else if clean.took > Duration::from_millis(50) {
                    typical[step] = (typical[step] + clean.took) / 2;
                }
                if step == 0 {
                    check_datastore(&ds, &up, &src, &what);
                } else {
                    check_target(&env, target, &up, &src, &what);
                }
            }
        }
    }
    eprintln!(
        "chaos: {landed} kills landed in {trial} trials ({missed} runs finished before their kill point) in {:.0} s; 0 rows lost, 0 doubled",
        t0.elapsed().as_secs_f64()
    );
    for (k, n) in &kills {
        eprintln!("  {n:4}  {k}");
    }
    for (k, n) in &by_combo {
        eprintln!("  {n:4}  {k}");
    }
}
