//! sftp.CsvDownloader against the real OpenSSH server script/test starts on 127.0.0.1
//! (its own config, host key and user). A missing server fails the test.

use std::path::PathBuf;

use anchovy_core::Value;

use crate::{Env, committed, results, tbl_data};

struct Server {
    port: String,
    user: String,
    password: String,
    key: String,
    known_hosts: String,
    dir: PathBuf,
}

/// SFTP tests run one at a time: one of them kills every session of the test user.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub(crate) fn lock() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn server() -> Server {
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set: run the tests with script/test, which starts an SFTP server (script/services.sh)"))
    };
    Server {
        port: var("SFTP_PORT"),
        user: var("SFTP_USER"),
        password: var("SFTP_PASSWORD"),
        key: var("SFTP_KEY"),
        known_hosts: var("SFTP_KNOWN_HOSTS"),
        dir: PathBuf::from(var("SFTP_DIR")),
    }
}

impl Server {
    /// A fresh remote folder for one test; returns its absolute path.
    fn folder(&self, env: &Env) -> PathBuf {
        let d = self.dir.join(env.nonce());
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn put(&self, path: &std::path::Path, content: impl AsRef<[u8]>) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn uri(&self, with_password: bool) -> String {
        if with_password {
            format!(
                "sftp://{}:{}@127.0.0.1:{}",
                self.user, self.password, self.port
            )
        } else {
            format!("sftp://{}@127.0.0.1:{}", self.user, self.port)
        }
    }
}

/// The environment of a key-authenticated connection to the test server.
fn key_env(s: &Server) -> Vec<(&'static str, String)> {
    vec![
        ("ACHVY_CNXN__URI", s.uri(false)),
        ("ACHVY_CNXN__PPK_PATH", s.key.clone()),
        ("ACHVY_CNXN__KNOWN_HOSTS", s.known_hosts.clone()),
    ]
}

/// `base` plus `extra`, as the borrowed pairs [`Env::spawn`] takes.
fn with<'a>(
    base: &'a [(&'static str, String)],
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    base.iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(extra.iter().copied())
        .collect()
}

fn run_key(env: &Env, s: &Server, id: &str) -> std::process::Output {
    env.cmd()
        .args(["start", "-op", "sftp.CsvDownloader", "--id", id])
        .env("ACHVY_CNXN__URI", s.uri(false))
        .env("ACHVY_CNXN__PPK_PATH", &s.key)
        .env("ACHVY_CNXN__KNOWN_HOSTS", &s.known_hosts)
        .output()
        .unwrap()
}

/// The README's getting-started example, as written (a key through the README's own
/// `ANCHY_CNXN__PPK_PATH` spelling, a TSV with `delimiter: /t`), then with a password.
#[test]
fn the_readme_example_with_key_and_with_password() {
    let _one = lock();
    let s = server();
    let env = Env::new();
    let dir = s.folder(&env);
    s.put(&dir.join("sales/2024-06.tsv"), "order_num\ttrans_num\tline_item_num\tupdated_at\n5001\t1\t1\t2024-06-01\n5001\t1\t2\t2024-06-01\n");
    env.write(
        "config.yaml",
        format!(
            "tbls: \n  sales: \n    # sftp plugin settings\n    path: {}/sales/*.tsv\n    delimiter: /t\n    # general settings\n    autodiscover: true # future functionality\n    set_by: order_num\n    sort_by: -trans_num, line_item_num, -updated_at\n",
            dir.display()
        ),
    );
    let out = env
        .cmd()
        .args(["start", "-op", "sftp.CsvDownloader", "--id", "sales_sftp"])
        .env("ACHVY_CNXN__URI", s.uri(false))
        .env("ANCHY_CNXN__PPK_PATH", &s.key)
        .env("ACHVY_CNXN__KNOWN_HOSTS", &s.known_hosts)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::stderr(&out));
    assert_eq!(tbl_data(&results(&out), "sales")["rows"], 2);
    let rows = committed(&env.home(), "tester", "sales_sftp");
    // `autodiscover: true` types what writes back as the same text.
    assert_eq!(rows["sales"][1]["line_item_num"], Value::Int(2));
    assert_eq!(
        rows["sales"][1]["updated_at"],
        Value::Date("2024-06-01".parse().unwrap())
    );
    // A rerun reads nothing.
    let out = run_key(&env, &s, "sales_sftp");
    assert!(out.status.success());
    assert_eq!(tbl_data(&results(&out), "sales")["files_read"], 0);
    // Password authentication.
    let out = env
        .cmd()
        .args(["start", "-op", "sftp.CsvDownloader", "--id", "sales_pw"])
        .env("ACHVY_CNXN__URI", s.uri(true))
        .env("ACHVY_CNXN__KNOWN_HOSTS", &s.known_hosts)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::stderr(&out));
    assert_eq!(tbl_data(&results(&out), "sales")["rows"], 2);
    assert!(
        !crate::stderr(&out).contains(&s.password),
        "the password leaked into the logs"
    );
    // A wrong password is refused with a clear message.
    let out = env
        .cmd()
        .args(["start", "-op", "sftp.CsvDownloader", "--id", "sales_bad"])
        .env(
            "ACHVY_CNXN__URI",
            s.uri(false).replacen('@', ":Wrong-Passw0rd@", 1),
        )
        .env("ACHVY_CNXN__KNOWN_HOSTS", &s.known_hosts)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = crate::stderr(&out);
    assert!(err.contains("authentication failed for sftp://"), "{err}");
    assert!(!err.contains("Wrong-Passw0rd"), "{err}");
}

#[test]
fn unknown_and_changed_host_keys_are_refused() {
    let _one = lock();
    let s = server();
    let env = Env::new();
    let dir = s.folder(&env);
    s.put(&dir.join("a.csv"), "id\n1\n");
    env.write(
        "config.yaml",
        format!("tbls:\n  t:\n    path: {}/*.csv\n", dir.display()),
    );
    let run = |kh: &str| {
        env.cmd()
            .args(["start", "-op", "sftp.CsvDownloader", "--id", "hk"])
            .env("ACHVY_CNXN__URI", s.uri(true))
            .env("ACHVY_CNXN__KNOWN_HOSTS", kh)
            .output()
            .unwrap()
    };
    let empty = env.write("empty_known_hosts", "");
    let out = run(empty.to_str().unwrap());
    assert_eq!(out.status.code(), Some(1));
    let err = crate::stderr(&out);
    assert!(
        err.contains("unknown host key for 127.0.0.1")
            && err.contains("SHA256:")
            && err.contains("ssh-keyscan -p"),
        "{err}"
    );
    // Another key for the same host: "changed".
    let other = env.path().join("other_key");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(st.success());
    let pubkey = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let mut parts = pubkey.split_whitespace();
    let line = format!(
        "[127.0.0.1]:{} {} {}\n",
        s.port,
        parts.next().unwrap(),
        parts.next().unwrap()
    );
    let changed = env.write("changed_known_hosts", line);
    let out = run(changed.to_str().unwrap());
    assert_eq!(out.status.code(), Some(1));
    let err = crate::stderr(&out);
    assert!(err.contains("CHANGED"), "{err}");
    assert!(
        committed(&env.home(), "tester", "hk").is_empty(),
        "nothing was downloaded"
    );
    // The explicit opt-out works, and says so.
    let out = run("insecure-skip");
    assert!(out.status.success(), "{}", crate::stderr(&out));
    assert!(crate::stderr(&out).contains("host key NOT verified"));
}

#[test]
fn globs_incremental_reruns_and_changed_files() {
    let _one = lock();
    let s = server();
    let env = Env::new();
    let dir = s.folder(&env);
    s.put(&dir.join("2024/01/a.csv"), "id,v\n1,x\n");
    s.put(&dir.join("2024/02/b.csv"), "id,v\n2,y\n");
    s.put(&dir.join("2024/02/c.txt"), "not csv\n");
    env.write(
        "config.yaml",
        format!(
            "tbls:\n  t:\n    path: {}/**/[ab].csv\n    provenance: true\n",
            dir.display()
        ),
    );
    let out = run_key(&env, &s, "g");
    assert!(out.status.success(), "{}", crate::stderr(&out));
    assert_eq!(tbl_data(&results(&out), "t")["files_read"], 2);
    let out = run_key(&env, &s, "g");
    assert_eq!(tbl_data(&results(&out), "t")["files_read"], 0);
    // A new file and a modified one (SFTP mtimes have whole seconds: move it on).
    s.put(&dir.join("2024/03/a.csv"), "id,v\n3,z\n");
    s.put(&dir.join("2024/01/a.csv"), "id,v\n1,x2\n");
    let st = std::process::Command::new("touch")
        .args(["-m", "-d", "+10 seconds"])
        .arg(dir.join("2024/01/a.csv"))
        .status()
        .unwrap();
    assert!(st.success());
    let out = run_key(&env, &s, "g");
    assert_eq!(tbl_data(&results(&out), "t")["files_read"], 2);
    let rows = committed(&env.home(), "tester", "g");
    let vs: Vec<Value> = rows["t"].iter().map(|r| r["v"].clone()).collect();
    assert_eq!(
        vs,
        vec![
            Value::from("x"),
            Value::from("y"),
            Value::from("x2"),
            Value::from("z")
        ]
    );
    assert!(matches!(&rows["t"][0]["_file"], Value::String(f) if f.ends_with("2024/01/a.csv")));
}

#[test]
fn csv_edge_cases_over_sftp() {
    let _one = lock();
    let s = server();
    let env = Env::new();
    let dir = s.folder(&env);
    s.put(
        &dir.join("ok/q.csv"),
        "\u{feff}id,note\n1,\"a, \"\"b\"\"\nc\"\n",
    );
    s.put(&dir.join("ok/l.csv"), b"id,note\n2,caf\xe9\n");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, b"id,note\n3,zipped\n").unwrap();
    s.put(&dir.join("gz/z.csv.gz"), gz.finish().unwrap());
    s.put(&dir.join("bad/r.csv"), "id,note\n1,a\n2\n");
    env.write(
        "config.yaml",
        format!(
            "tbls:\n  q:\n    path: {d}/ok/q.csv\n  l:\n    path: {d}/ok/l.csv\n    encoding: latin-1\n  z:\n    path: {d}/gz/*.gz\n  bad:\n    path: {d}/bad/*.csv\n",
            d = dir.display()
        ),
    );
    let out = run_key(&env, &s, "e");
    assert_eq!(
        out.status.code(),
        Some(1),
        "the ragged file fails its table"
    );
    let r = results(&out);
    let bad = crate::tbl_task(&r, "bad");
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .contains("bad/r.csv:3: the row has 1 fields"),
        "{bad}"
    );
    let rows = committed(&env.home(), "tester", "e");
    assert_eq!(rows["q"][0]["note"], Value::from("a, \"b\"\nc"));
    assert!(rows["q"][0].contains_key("id"), "the BOM was stripped");
    assert_eq!(rows["l"][0]["note"], Value::from("café"));
    assert_eq!(rows["z"][0]["note"], Value::from("zipped"));
    assert!(!rows.contains_key("bad"));
    // The same ragged file under quarantine: its good row lands, the bad one is kept.
    env.write(
        "config.yaml",
        format!(
            "tbls:\n  bad:\n    path: {d}/bad/*.csv\n    on_bad_record: quarantine\n",
            d = dir.display()
        ),
    );
    let out = run_key(&env, &s, "e");
    assert!(out.status.success(), "{}", crate::stderr(&out));
    let rows = committed(&env.home(), "tester", "e");
    assert_eq!(rows["bad"].len(), 1);
    let q = &rows["$rejects/bad"];
    assert_eq!(
        (q.len(), q[0]["raw"].text().into_owned()),
        (1, "2".to_string())
    );
    assert!(q[0]["source"].text().ends_with("bad/r.csv"), "{q:?}");
}

/// A file that grows between the listing and the read is skipped, then read next run.
#[test]
fn a_file_still_being_written_is_skipped_then_read() {
    let _one = lock();
    let s = server();
    let env = Env::new();
    let dir = s.folder(&env);
    let f = dir.join("in/growing.csv");
    s.put(&f, "id\n1\n");
    s.put(&dir.join("in/done.csv"), "id\n9\n");
    env.write(
        "config.yaml",
        format!("tbls:\n  t:\n    path: {}/in/*.csv\n", dir.display()),
    );
    let child = env.spawn(
        &["start", "-op", "sftp.CsvDownloader", "--id", "grow"],
        // Hold the reader between the listing and the reads.
        &with(
            &key_env(&s),
            &[("ACHVY_FAILPOINT", "sftp.listed:sleep-1500")],
        ),
    );
    std::thread::sleep(std::time::Duration::from_millis(700));
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .unwrap()
        .write_all(b"2\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", crate::stderr(&out));
    let d = tbl_data(&results(&out), "t");
    assert_eq!(
        (
            d["files_read"].as_u64(),
            d["files_skipped_in_progress"].as_u64()
        ),
        (Some(1), Some(1)),
        "{d}"
    );
    let out = run_key(&env, &s, "grow");
    assert_eq!(tbl_data(&results(&out), "t")["files_read"], 1);
    let ids: Vec<Value> = committed(&env.home(), "tester", "grow")["t"]
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(
        ids,
        vec![Value::from("9"), Value::from("1"), Value::from("2")]
    );
}

/// A 600k-row CSV of ~27 MiB in `<dir>/big/`, and a config reading it.
fn big_file(s: &Server, env: &Env) {
    let dir = s.folder(env);
    let mut body = String::with_capacity(40 << 20);
    body.push_str("id,pad\n");
    for i in 0..600_000 {
        body.push_str(&format!("{i},{}\n", "p".repeat(40)));
    }
    s.put(&dir.join("big/big.csv"), body);
    env.write(
        "config.yaml",
        format!(
            "tbls:\n  t:\n    path: {}/big/*.csv\n    columns: {{id: int}}\n",
            dir.display()
        ),
    );
}

/// Every id of [`big_file`] committed exactly once.
fn assert_big_file_once(env: &Env, id: &str) {
    let rows = committed(&env.home(), "tester", id);
    let mut ids: Vec<i64> = rows["t"]
        .iter()
        .map(|r| match r.get("id") {
            Some(Value::Int(i)) => *i,
            other => panic!("id {other:?}"),
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids.len(), 600_000);
    assert!(
        ids.iter().enumerate().all(|(n, i)| *i == n as i64),
        "ids lost or doubled"
    );
}

/// Kills the server side of every session of the test user (not the listener).
fn kill_sessions(s: &Server) -> bool {
    std::process::Command::new("pkill")
        .args(["-9", "-u", &s.user])
        .status()
        .unwrap()
        .success()
}

/// The connection drops mid-file while the server stays up: the read resumes on a
/// new connection at the byte where it stopped; every row lands exactly once.
#[test]
fn a_connection_dropped_mid_file_resumes_exactly_once() {
    let _one = lock();
    let s = server();
    let env = Env::new();
    big_file(&s, &env);
    // 100 ms after each MiB read: the kill lands mid-file, deterministically.
    let child = env.spawn(
        &["start", "-op", "sftp.CsvDownloader", "--id", "drop"],
        &with(&key_env(&s), &[("ACHVY_FAILPOINT", "sftp.chunk:sleep-100")]),
    );
    std::thread::sleep(std::time::Duration::from_millis(800));
    let killed = kill_sessions(&s);
    let out = child.wait_with_output().unwrap();
    assert!(killed, "no session to kill: the download ended too early");
    let err = crate::stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("read resumed on a new connection"), "{err}");
    assert_big_file_once(&env, "drop");
}

/// Restarts the test sshd if a test stopped it (also when the test fails).
struct Restart(PathBuf);

impl Drop for Restart {
    fn drop(&mut self) {
        let root = &self.0;
        let pid = std::fs::read_to_string(root.join("sshd.pid")).unwrap_or_default();
        let alive = !pid.trim().is_empty()
            && std::path::Path::new(&format!("/proc/{}", pid.trim())).exists();
        if !alive {
            let ok = std::process::Command::new("/usr/sbin/sshd")
                .arg("-f")
                .arg(root.join("sshd_config"))
                .arg("-E")
                .arg(root.join("sshd.log"))
                .status()
                .unwrap()
                .success();
            assert!(ok, "could not restart the test sshd");
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    }
}

/// The server goes away mid-file (listener and sessions): resuming fails after its
/// retries, the table fails with a clear error naming the file, nothing of it is
/// committed; once the server is back the rerun loads it exactly once.
#[test]
fn the_server_stopped_mid_file_fails_cleanly_and_the_rerun_loads_once() {
    let _one = lock();
    let s = server();
    let env = Env::new();
    big_file(&s, &env);
    let root = s.dir.parent().unwrap().parent().unwrap().to_path_buf();
    let child = env.spawn(
        &["start", "-op", "sftp.CsvDownloader", "--id", "down"],
        &with(&key_env(&s), &[("ACHVY_FAILPOINT", "sftp.chunk:sleep-100")]),
    );
    std::thread::sleep(std::time::Duration::from_millis(800));
    let restart = Restart(root.clone());
    let pid = std::fs::read_to_string(root.join("sshd.pid")).unwrap();
    let stopped = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap()
        .success();
    assert!(stopped, "could not stop the test sshd");
    assert!(
        kill_sessions(&s),
        "no session to kill: the download ended too early"
    );
    let out = child.wait_with_output().unwrap();
    drop(restart);
    let err = crate::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("table t") && err.contains("big.csv"), "{err}");
    assert!(err.contains("attempts to resume"), "{err}");
    assert!(
        committed(&env.home(), "tester", "down").is_empty(),
        "a partial file was committed"
    );
    let out = run_key(&env, &s, "down");
    assert!(out.status.success(), "{}", crate::stderr(&out));
    assert_big_file_once(&env, "down");
}

#[test]
fn after_load_deletes_or_moves_only_committed_files() {
    let _one = lock();
    let s = server();
    let env = Env::new();
    let dir = s.folder(&env);
    s.put(&dir.join("del/a.csv"), "id\n1\n");
    s.put(&dir.join("mv/b.csv"), "id\n2\n");
    std::fs::create_dir_all(dir.join("done")).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    for d in ["del", "mv", "done"] {
        std::fs::set_permissions(
            dir.join(d),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
    }
    env.write(
        "config.yaml",
        format!(
            "tbls:\n  d:\n    path: {p}/del/*.csv\n    after_load: delete\n  m:\n    path: {p}/mv/*.csv\n    after_load: move:{p}/done\n",
            p = dir.display()
        ),
    );
    // A crash before the commit: the files stay where they are.
    let out = run_key_with(&env, &s, "al", &[("ACHVY_FAILPOINT", "commit.before")]);
    assert_eq!(out.status.code(), Some(86));
    assert!(dir.join("del/a.csv").exists() && dir.join("mv/b.csv").exists());
    let out = run_key(&env, &s, "al");
    assert!(out.status.success(), "{}", crate::stderr(&out));
    assert!(!dir.join("del/a.csv").exists(), "a.csv was not deleted");
    assert!(
        !dir.join("mv/b.csv").exists() && dir.join("done/b.csv").exists(),
        "b.csv was not moved"
    );
    let rows = committed(&env.home(), "tester", "al");
    assert_eq!((rows["d"].len(), rows["m"].len()), (1, 1));
    // A later file of the same name never overwrites the archived one.
    s.put(&dir.join("mv/b.csv"), "id\n3\n");
    let out = run_key(&env, &s, "al");
    assert!(out.status.success(), "{}", crate::stderr(&out));
    let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap();
    assert_eq!(read("done/b.csv"), "id\n2\n");
    assert_eq!(read("done/b.1.csv"), "id\n3\n");
    // A bad value is named.
    env.write(
        "config.yaml",
        format!(
            "tbls:\n  d:\n    path: {}/del/*.csv\n    after_load: archive\n",
            dir.display()
        ),
    );
    let out = run_key(&env, &s, "al");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        crate::stderr(&out).contains("`archive` is not keep, delete or move:<dir>"),
        "{}",
        crate::stderr(&out)
    );
}

fn run_key_with(env: &Env, s: &Server, id: &str, extra: &[(&str, &str)]) -> std::process::Output {
    let mut c = env.cmd();
    c.args(["start", "-op", "sftp.CsvDownloader", "--id", id])
        .env("ACHVY_CNXN__URI", s.uri(false))
        .env("ACHVY_CNXN__PPK_PATH", &s.key)
        .env("ACHVY_CNXN__KNOWN_HOSTS", &s.known_hosts);
    for (k, v) in extra {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// A passphrase-protected key on a named per-table connection; the healthcheck
/// connects, verifies the host key and lists; a wrong passphrase is a clear error.
#[test]
fn passphrase_keys_named_connections_and_healthcheck() {
    let _one = lock();
    let s = server();
    let env = Env::new();
    let dir = s.folder(&env);
    s.put(&dir.join("p/a.csv"), "id\n1\n");
    let key = env.path().join("partner_key");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "correct horse battery", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    // Authorize it on the test server (script/services.sh keeps authorized_keys beside the client key).
    let authorized = std::path::Path::new(&s.key).with_file_name("authorized_keys");
    let mut auth = std::fs::read_to_string(&authorized).unwrap();
    auth.push_str(&std::fs::read_to_string(key.with_extension("pub")).unwrap());
    std::fs::write(&authorized, auth).unwrap();
    env.write(
        "config.yaml",
        format!(
            "tbls:\n  t:\n    path: {}/p/*.csv\n    connection: partner\n",
            dir.display()
        ),
    );
    let run = |verb: &str, passphrase: &str| {
        env.cmd()
            .args([verb, "-op", "sftp.CsvDownloader", "--id", "named"])
            .env("ACHVY_CNXN__PARTNER__URI", s.uri(false))
            .env("ACHVY_CNXN__PARTNER__PPK_PATH", &key)
            .env("ACHVY_CNXN__PARTNER__PASSPHRASE", passphrase)
            .env("ACHVY_CNXN__PARTNER__KNOWN_HOSTS", &s.known_hosts)
            .output()
            .unwrap()
    };
    let out = run("healthcheck", "correct horse battery");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("ok   table t: host key verified; 1 files match"),
        "{text}"
    );
    let out = run("start", "correct horse battery");
    assert!(out.status.success(), "{}", crate::stderr(&out));
    assert_eq!(committed(&env.home(), "tester", "named")["t"].len(), 1);
    let out = run("start", "wrong passphrase");
    assert_eq!(out.status.code(), Some(1));
    let err = crate::stderr(&out);
    assert!(
        err.contains("authentication failed") && !err.contains("wrong passphrase"),
        "{err}"
    );
    // A missing named connection names its variables, before anything runs.
    let out = env
        .cmd()
        .args(["start", "-op", "sftp.CsvDownloader", "--id", "named2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        crate::stderr(&out).contains("ACHVY_CNXN__PARTNER__URI"),
        "{}",
        crate::stderr(&out)
    );
}

/// A second sshd (the test server's config and host key on the next port) that takes
/// passwords only through keyboard-interactive (PAM), as many appliance servers do.
/// Stopped when dropped.
struct KbdServer {
    pid_file: PathBuf,
    port: u16,
    known_hosts: PathBuf,
    log: PathBuf,
}

impl KbdServer {
    fn start(s: &Server, env: &Env) -> KbdServer {
        let root = s.dir.parent().unwrap().parent().unwrap();
        let port: u16 = s.port.parse::<u16>().unwrap() + 7;
        let pid_file = env.path().join("kbd.pid");
        let conf: Vec<String> = std::fs::read_to_string(root.join("sshd_config"))
            .unwrap()
            .lines()
            .map(|l| match l.split_whitespace().next() {
                Some("Port") => format!("Port {port}"),
                Some("PidFile") => format!("PidFile {}", pid_file.display()),
                Some("UsePAM") => "UsePAM yes".into(),
                Some("PasswordAuthentication") => "PasswordAuthentication no".into(),
                Some("PubkeyAuthentication") => "PubkeyAuthentication no".into(),
                Some("KbdInteractiveAuthentication") => "KbdInteractiveAuthentication yes".into(),
                _ => l.to_string(),
            })
            .collect();
        let config = env.write("kbd_sshd_config", conf.join("\n") + "\n");
        let log = env.path().join("kbd_sshd.log");
        let ok = std::process::Command::new("/usr/sbin/sshd")
            .arg("-f")
            .arg(&config)
            .arg("-E")
            .arg(&log)
            .status()
            .unwrap()
            .success();
        assert!(ok, "could not start the keyboard-interactive sshd");
        // Same host key, so the known_hosts line only changes its port.
        let kh = std::fs::read_to_string(&s.known_hosts)
            .unwrap()
            .replace(&format!("]:{}", s.port), &format!("]:{port}"));
        let known_hosts = env.write("kbd_known_hosts", kh);
        std::thread::sleep(std::time::Duration::from_millis(300));
        KbdServer {
            pid_file,
            port,
            known_hosts,
            log,
        }
    }
}

impl Drop for KbdServer {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pid_file) {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
        }
    }
}

#[test]
fn keyboard_interactive_when_the_server_asks_for_it() {
    let _one = lock();
    let s = server();
    let env = Env::new();
    let kbd = KbdServer::start(&s, &env);
    let dir = s.folder(&env);
    s.put(&dir.join("k/a.csv"), "id,name\n1,alpha\n2,beta\n");
    env.write(
        "config.yaml",
        format!("tbls:\n  k:\n    path: {}/k/*.csv\n", dir.display()),
    );
    let run = |id: &str, password: &str| {
        env.cmd()
            .args(["start", "-op", "sftp.CsvDownloader", "--id", id])
            .env(
                "ACHVY_CNXN__URI",
                format!("sftp://{}:{password}@127.0.0.1:{}", s.user, kbd.port),
            )
            .env("ACHVY_CNXN__KNOWN_HOSTS", &kbd.known_hosts)
            .output()
            .unwrap()
    };
    let out = run("kbd", &s.password);
    assert!(out.status.success(), "{}", crate::stderr(&out));
    assert_eq!(tbl_data(&results(&out), "k")["rows"], 2);
    let log = std::fs::read_to_string(&kbd.log).unwrap();
    assert!(log.contains("Accepted keyboard-interactive"), "{log}");
    // A wrong password through keyboard-interactive is refused, and never shown.
    let out = run("kbd_bad", "Wrong-Passw0rd");
    assert_eq!(out.status.code(), Some(1));
    let err = crate::stderr(&out);
    assert!(err.contains("authentication failed for sftp://"), "{err}");
    assert!(err.contains("keyboard-interactive"), "{err}");
    assert!(!err.contains("Wrong-Passw0rd"), "{err}");
}
