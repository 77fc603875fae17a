//! Every operator, run with known secret values (connection passwords, keys, object
//! store account keys, a wrong password that ends in an error), leaves none of them in
//! stdout, stderr, task logs, run results, checkpoints, commit records or metrics.

use std::path::Path;

use crate::{Env, need};

/// The Azurite account key (public, but a secret to us: it must never be printed).
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Every text file under `dir` (metadata, logs, results; data files are gzip).
fn texts(dir: &Path, out: &mut Vec<(String, String)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            texts(&p, out);
        } else if let Ok(t) = std::fs::read_to_string(&p) {
            out.push((p.display().to_string(), t));
        }
    }
}

fn assert_clean(env: &Env, outputs: &[std::process::Output], secrets: &[&str]) {
    let mut all: Vec<(String, String)> = vec![];
    for (i, o) in outputs.iter().enumerate() {
        all.push((
            format!("stdout {i}"),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        ));
        all.push((
            format!("stderr {i}"),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ));
    }
    texts(env.path(), &mut all);
    assert!(all.len() > outputs.len() * 2, "no files to check");
    for (what, text) in &all {
        for s in secrets {
            assert!(!text.contains(s), "the secret `{s}` leaked into {what}");
        }
    }
}

#[test]
fn no_operator_leaks_a_secret_anywhere() {
    let env = Env::new();
    let pw = "Pw-0f-The-Day-4711";
    let wrong = "Wr0ng-Pa55-9931";
    let token = "tok_live_5ecret_abc123";
    env.write("in/a.csv", "id\n1\n2\n");
    env.write("config.yaml", "tbls:\n  t:\n    path: in/*.csv\n");
    let metrics = env.path().join("m.prom");
    let mut outs = vec![];
    // files.CsvDownloader with secrets in unrelated connections, and a metrics file.
    outs.push(
        env.cmd()
            .args([
                "start",
                "-op",
                "files.CsvDownloader",
                "--id",
                "f",
                "--metrics-file",
            ])
            .arg(&metrics)
            .env("ACHVY_CNXN__API__TOKEN", token)
            .env(
                "ACHVY_CNXN__DB__URI",
                format!("postgres://u:{pw}@127.0.0.1:1/db"),
            )
            .output()
            .unwrap(),
    );
    // sql.Uploader: a wrong password (the error path), then SQLite with a token around.
    let pg = need("PG_URL");
    let bad = pg.replacen(":anchovies@", &format!(":{wrong}@"), 1);
    outs.push(
        env.cmd()
            .args([
                "start",
                "-op",
                "sql.Uploader",
                "--id",
                "u",
                "-U",
                "f",
                "--config",
                "{}",
            ])
            .env("ACHVY_CNXN__DB__URI", &bad)
            .output()
            .unwrap(),
    );
    assert_eq!(
        outs[1].status.code(),
        Some(1),
        "{}",
        crate::stderr(&outs[1])
    );
    outs.push(
        env.cmd()
            .args([
                "start",
                "-op",
                "sql.Uploader",
                "--id",
                "u2",
                "-U",
                "f",
                "--config",
                "{}",
            ])
            .env("ACHVY_CNXN__DB__URI", "sqlite://")
            .env("ACHVY_CNXN__API__TOKEN", token)
            .output()
            .unwrap(),
    );
    // sftp.CsvDownloader with a password URI, and with a wrong one.
    let sftp_pw = need("SFTP_PASSWORD");
    let dir = std::path::PathBuf::from(need("SFTP_DIR")).join(env.nonce());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("s.csv"), "id\n1\n").unwrap();
    env.write(
        "sftp.yaml",
        format!("tbls:\n  s:\n    path: {}/*.csv\n", dir.display()),
    );
    for p in [sftp_pw.as_str(), wrong] {
        outs.push(
            env.cmd()
                .args([
                    "start",
                    "-op",
                    "sftp.CsvDownloader",
                    "--id",
                    "s",
                    "-c",
                    "sftp.yaml",
                ])
                .env(
                    "ACHVY_CNXN__URI",
                    format!(
                        "sftp://{}:{p}@127.0.0.1:{}",
                        need("SFTP_USER"),
                        need("SFTP_PORT")
                    ),
                )
                .env("ACHVY_CNXN__KNOWN_HOSTS", need("SFTP_KNOWN_HOSTS"))
                .output()
                .unwrap(),
        );
    }
    // blob.JsonDownloader with the account key in a named connection.
    let container = need("AZURE_CONTAINER");
    env.write(
        "blob.yaml",
        format!(
            "tbls:\n  b:\n    path: az://{container}/secrets-none/*.json\n    connection: lake\n"
        ),
    );
    outs.push(
        env.cmd()
            .args([
                "start",
                "-op",
                "blob.JsonDownloader",
                "--id",
                "b",
                "-c",
                "blob.yaml",
            ])
            .env("ACHVY_CNXN__LAKE__ACCOUNT_NAME", "devstoreaccount1")
            .env("ACHVY_CNXN__LAKE__ACCOUNT_KEY", AZURITE_KEY)
            .env("ACHVY_CNXN__LAKE__USE_EMULATOR", "true")
            .env("AZURITE_BLOB_STORAGE_URL", need("AZURITE_BLOB_STORAGE_URL"))
            .output()
            .unwrap(),
    );
    // The healthcheck and the history verbs print connections and logs.
    for args in [
        vec!["healthcheck", "-op", "files.CsvDownloader", "--id", "f"],
        vec!["logs", "--id", "u"],
        vec!["tables", "--id", "f", "--json"],
    ] {
        outs.push(
            env.cmd()
                .args(&args)
                .env("ACHVY_CNXN__API__TOKEN", token)
                .env("ACHVY_CNXN__DB__URI", &bad)
                .output()
                .unwrap(),
        );
    }
    assert!(metrics.exists());
    // The runs did what they were meant to: the secrets were really used.
    assert!(outs[0].status.success() && outs[2].status.success());
    assert!(
        outs[3].status.success(),
        "sftp: {}",
        crate::stderr(&outs[3])
    );
    assert_eq!(outs[4].status.code(), Some(1), "a refused sftp password");
    assert!(
        outs[5].status.success(),
        "blob: {}",
        crate::stderr(&outs[5])
    );
    assert!(
        crate::stderr(&outs[1]).contains("***"),
        "the failed login is reported, redacted"
    );
    assert_clean(&env, &outs, &[pw, wrong, token, &sftp_pw, AZURITE_KEY]);
}

/// Connection values that do not parse still never leak: unencoded `#`, `/`, `@` in
/// passwords, passwords in query parameters, for PostgreSQL, MySQL, SFTP and an object
/// store; through a task run, a service, a healthcheck, logs, results and metrics.
#[test]
fn malformed_connection_values_never_leak() {
    let env = Env::new();
    env.write("in/a.csv", "id\n1\n");
    env.write("config.yaml", "tbls:\n  t:\n    path: in/*.csv\n");
    let dl = env
        .cmd()
        .args(["start", "-op", "files.CsvDownloader", "--id", "f"])
        .output()
        .unwrap();
    assert!(dl.status.success());
    let pg = need("PG_URL");
    let my = need("MYSQL_URL");
    let hostport = |url: &str| {
        let after = url.split_once('@').unwrap().1;
        after.split('/').next().unwrap().to_string()
    };
    let (pgh, myh) = (hostport(&pg), hostport(&my));
    let secrets = [
        "Pg#Passw0rd-1",
        "Pg/Passw0rd-2",
        "Pg-Query-Pw-3",
        "Pg-SslPw-4",
        "My#Passw0rd-5",
        "My-Query-Pw-6",
        "Sf#tp/Pw-7",
        "Sas-Sig-Secret-8",
    ];
    let uris = [
        format!("postgres://anchovies:{}@{pgh}/anchovies", secrets[0]),
        format!("postgres://anchovies:{}@{pgh}/anchovies", secrets[1]),
        format!(
            "postgres://anchovies@{pgh}/anchovies?password={}",
            secrets[2]
        ),
        format!(
            "postgres://anchovies@{pgh}/anchovies?sslmode=disable&sslpassword={}",
            secrets[3]
        ),
        format!("mysql://anchovies:{}@{myh}/anchovies", secrets[4]),
        format!("mysql://anchovies@{myh}/anchovies?password={}", secrets[5]),
    ];
    let metrics = env.path().join("m.prom");
    let mut outs = vec![dl];
    for (i, uri) in uris.iter().enumerate() {
        outs.push(
            env.cmd()
                .args([
                    "start",
                    "-op",
                    "sql.Uploader",
                    "--id",
                    &format!("u{i}"),
                    "-U",
                    "f",
                ])
                .args(["--config", "{}", "--metrics-file"])
                .arg(&metrics)
                .env("ACHVY_CNXN__DB__URI", uri)
                .output()
                .unwrap(),
        );
        assert_ne!(
            outs.last().unwrap().status.code(),
            Some(0),
            "{uri} cannot work"
        );
        outs.push(
            env.cmd()
                .args([
                    "healthcheck",
                    "-op",
                    "sql.Uploader",
                    "--id",
                    &format!("u{i}"),
                    "-U",
                    "f",
                ])
                .env("ACHVY_CNXN__DB__URI", uri)
                .output()
                .unwrap(),
        );
        outs.push(
            env.cmd()
                .args(["logs", "--id", &format!("u{i}")])
                .env("ACHVY_CNXN__DB__URI", uri)
                .output()
                .unwrap(),
        );
    }
    // A service with a broken URI: its batches fail, its endpoint and logs stay clean.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port().to_string()
    };
    let child = env.spawn(
        &[
            "start",
            "-op",
            "sql.Uploader",
            "--id",
            "svc",
            "-U",
            "f",
            "-S",
            "--port",
            &port,
            "--service-pause",
            "200ms",
            "--config",
            "{}",
        ],
        &[("ACHVY_CNXN__DB__URI", &uris[0])],
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let mut body = String::new();
    for path in ["/metrics", "/readyz", "/healthz"] {
        if let Ok(mut s) = std::net::TcpStream::connect(format!("127.0.0.1:{port}")) {
            use std::io::{Read, Write};
            let _ = write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            );
            let _ = s.read_to_string(&mut body);
        }
    }
    sigterm(child.id());
    outs.push(child.wait_with_output().unwrap());
    // SFTP with a `#` and a `/` in the password, and an object store SAS.
    outs.push(
        env.cmd()
            .args(["start", "-op", "sftp.CsvDownloader", "--id", "s"])
            .env(
                "ACHVY_CNXN__URI",
                format!(
                    "sftp://{}:{}@127.0.0.1:{}",
                    need("SFTP_USER"),
                    secrets[6],
                    need("SFTP_PORT")
                ),
            )
            .env("ACHVY_CNXN__KNOWN_HOSTS", need("SFTP_KNOWN_HOSTS"))
            .output()
            .unwrap(),
    );
    outs.push(
        env.cmd()
            .args([
                "start",
                "-op",
                "files.CsvDownloader",
                "--id",
                "sas",
                "--datastore",
            ])
            .arg(format!(
                "https://devstoreaccount1.blob.core.windows.net/none/p?sv=2022-11-02&sig={}",
                secrets[7]
            ))
            .output()
            .unwrap(),
    );
    std::fs::write(env.path().join("service-endpoint.txt"), &body).unwrap();
    assert_clean(&env, &outs, &secrets);
}

fn sigterm(pid: u32) {
    let _ = std::process::Command::new("kill")
        .arg(pid.to_string())
        .status();
}
