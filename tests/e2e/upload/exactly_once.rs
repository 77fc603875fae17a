//! Exactly once under kills, resets, cut files and a target changed by hand.

use super::*;

#[test]
fn exactly_once_when_killed_at_any_load_point() {
    for target in ALL {
        let env = Env::new();
        let up = format!("kill_{target:?}_{}", env.nonce()).to_lowercase();
        // Append-only: a doubled row would show as a duplicate id.
        env.write(
            "config.yaml",
            "tbls:\n  ev:\n    path: in/*.csv\n    columns: {id: int}\n",
        );
        env.write("upload.yaml", "tbls:\n  ev:\n    max_rows_per_load: 250\n");
        for f in 0..8 {
            let mut body = String::from("id\n");
            for i in 0..100 {
                body.push_str(&format!("{}\n", f * 100 + i));
            }
            env.write(&format!("in/{f}.csv"), body);
            // One downloader run per file: one upstream commit each.
            download(&env, &up);
        }
        for (n, fp) in [
            "upload.staged_file:2",
            "upload.before_commit:2",
            "upload.after_commit:1",
            "upload.before_commit:1",
        ]
        .iter()
        .enumerate()
        {
            let out = upload(&env, target, "wh", &up, &[("ACHVY_FAILPOINT", fp)]);
            assert_eq!(
                out.status.code(),
                Some(86),
                "{target:?} {fp} (kill {n}) did not fire: {}",
                crate::stderr(&out)
            );
        }
        upload_ok(&env, target, "wh", &up);
        let ids = fetch(
            target,
            &env,
            &format!(
                "SELECT {} FROM {} ORDER BY id",
                target.text("id"),
                target.table(&up, "ev")
            ),
        );
        let mut ids: Vec<i64> = ids
            .iter()
            .map(|r| r[0].as_deref().unwrap().parse().unwrap())
            .collect();
        ids.sort();
        assert_eq!(
            ids,
            (0..800).collect::<Vec<_>>(),
            "{target:?}: rows lost or doubled"
        );
        // Running the same upload again changes nothing.
        upload_ok(&env, target, "wh", &up);
        let n = fetch(
            target,
            &env,
            &format!(
                "SELECT {} FROM {}",
                target.text("COUNT(*)"),
                target.table(&up, "ev")
            ),
        );
        assert_eq!(n[0][0], s("800"));
    }
}

/// SIGKILL at random moments of many loads, then a clean run: every row exactly once.
#[test]
fn exactly_once_when_killed_at_random() {
    let target = Target::Pg;
    let env = Env::new();
    let up = format!("rnd_{}", env.nonce());
    env.write(
        "config.yaml",
        "tbls:\n  ev:\n    path: in/*.csv\n    columns: {id: int}\n",
    );
    env.write("upload.yaml", "tbls:\n  ev:\n    max_rows_per_load: 500\n");
    // 40 upstream commits of 500 rows: 40 separate loads (transactions) per full run.
    for f in 0..40 {
        let mut body = String::from("id,pad\n");
        for i in 0..500 {
            body.push_str(&format!("{},{}\n", f * 500 + i, "x".repeat(40)));
        }
        env.write(&format!("in/{f:02}.csv"), body);
        download(&env, &up);
    }
    // Deterministic "random" delays (an LCG seeded by the test's directory name).
    let mut seed: u64 = env
        .nonce()
        .bytes()
        .fold(7, |a, b| a.wrapping_mul(31).wrapping_add(b as u64));
    let url = target.url().unwrap();
    let mut killed = 0;
    for _ in 0..12 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = std::time::Duration::from_millis(5 + (seed >> 33) % 60);
        let mut child = env.spawn(&upload_args("wh", &up), &[("ACHVY_CNXN__DB__URI", &url)]);
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
    }
    upload_ok(&env, target, "wh", &up);
    let rows = fetch(
        target,
        &env,
        &format!(
            "SELECT COUNT(*)::text, COUNT(DISTINCT id)::text FROM {}",
            target.table(&up, "ev")
        ),
    );
    assert_eq!(
        rows[0],
        vec![s("20000"), s("20000")],
        "rows lost or doubled after {killed} kills"
    );
    assert!(killed > 0, "no run was killed: the test proves nothing");
}

/// An upstream whose datastore area was wiped and written again restarts its commit
/// numbers: the uploader refuses (it would otherwise skip the new commits as already
/// loaded), names the fix, and after it loads the new history.
#[test]
fn a_reset_upstream_is_refused_not_skipped() {
    let env = Env::new();
    let up = format!("reset_{}", env.nonce());
    env.write(
        "config.yaml",
        "tbls:\n  t:\n    path: in/*.csv\n    columns: {id: int}\n",
    );
    env.write("upload.yaml", "tbls: {}\n");
    env.write("in/1.csv", "id\n1\n2\n");
    download(&env, &up);
    upload_ok(&env, Target::Sqlite, "wh", &up);
    std::fs::remove_dir_all(env.area("tester", &up)).unwrap();
    std::fs::remove_file(env.path().join("in/1.csv")).unwrap();
    env.write("in/2.csv", "id\n3\n");
    download(&env, &up);
    let out = upload(&env, Target::Sqlite, "wh", &up, &[]);
    let err = crate::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("was reset") && err.contains("_anchovies_positions"),
        "{err}"
    );
    let ids = |env: &Env| {
        fetch(
            Target::Sqlite,
            env,
            &format!(
                "SELECT CAST(id AS TEXT) FROM {} ORDER BY id",
                Target::Sqlite.table(&up, "t")
            ),
        )
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&env),
        ["1", "2"],
        "the refused upload changed the target"
    );
    // The fix the error names: forget the position, then the new history loads.
    fetch(
        Target::Sqlite,
        &env,
        &format!("DELETE FROM _anchovies_positions WHERE upstream = 'tester/{up}'"),
    );
    upload_ok(&env, Target::Sqlite, "wh", &up);
    assert_eq!(ids(&env), ["1", "2", "3"]);
}

/// A target whose `_anchovies_positions` has the layout of older builds (keyed by
/// uploader id) is refused with the migration to do, before anything loads.
#[test]
fn a_positions_table_of_the_old_layout_is_refused_with_the_fix() {
    let env = Env::new();
    let up = format!("old_{}", env.nonce());
    env.write("config.yaml", "tbls:\n  t:\n    path: in/*.csv\n");
    env.write("upload.yaml", "tbls: {}\n");
    env.write("in/1.csv", "id\n1\n");
    download(&env, &up);
    upload_ok(&env, Target::Sqlite, "wh", &up);
    fetch(Target::Sqlite, &env, "DROP TABLE _anchovies_positions");
    fetch(
        Target::Sqlite,
        &env,
        "CREATE TABLE _anchovies_positions (uploader TEXT NOT NULL, upstream TEXT NOT NULL, tbl TEXT NOT NULL, seq BIGINT NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (uploader, upstream, tbl))",
    );
    let out = upload(&env, Target::Sqlite, "wh", &up, &[]);
    let err = crate::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("older layout") && err.contains("rename it"),
        "{err}"
    );
}

#[test]
fn a_data_file_cut_after_its_commit_is_refused_before_anything_loads() {
    let env = Env::new();
    let up = format!("cut_{}", env.nonce());
    env.write(
        "config.yaml",
        "tbls:\n  ev:\n    path: in/*.csv\n    columns: {n: int}\n",
    );
    env.write("upload.yaml", "tbls: {}\n");
    let mut csv = String::from("n,note\n");
    for i in 0..20_000 {
        csv += &format!("{i},a note long enough to need several gzip members - row {i}\n");
    }
    env.write("in/1.csv", csv);
    download(&env, &up);
    let dir = env.area("tester", &up).join("data/ev");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let whole = std::fs::read(&file).unwrap();
    // Cut at the start of the second gzip member: what is left is a valid gzip stream
    // of fewer rows, which a reader that trusts the file loads without a word.
    let cut = 1 + whole[1..]
        .windows(3)
        .position(|w| w == [0x1f, 0x8b, 0x08])
        .expect("several gzip members");
    std::fs::write(&file, &whole[..cut]).unwrap();
    let out = upload(&env, Target::Sqlite, "wh", &up, &[]);
    let all = crate::output(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("does not match commit record 1")
            && all.contains(&format!("bytes stored, the record says {}", whole.len())),
        "{all}"
    );
    let count = || {
        fetch(
            Target::Sqlite,
            &env,
            &format!(
                "SELECT CAST(COUNT(*) AS TEXT) FROM {}",
                Target::Sqlite.table(&up, "ev")
            ),
        )[0][0]
            .clone()
    };
    assert_eq!(count(), s("0"), "nothing of the cut file is loaded");
    // Same size, one byte changed: the checksum says so.
    let mut flipped = whole.clone();
    flipped[cut + 20] ^= 0x55;
    std::fs::write(&file, &flipped).unwrap();
    let out = upload(&env, Target::Sqlite, "wh", &up, &[]);
    let all = crate::output(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("CRC-32"), "{all}");
    assert_eq!(count(), s("0"));
    // Restored: every row loads once.
    std::fs::write(&file, &whole).unwrap();
    upload_ok(&env, Target::Sqlite, "wh", &up);
    assert_eq!(count(), s("20000"));
}

#[test]
fn the_target_is_checked_not_trusted() {
    for target in [Target::Sqlite, Target::Pg] {
        let env = Env::new();
        let up = format!("chk_{target:?}_{}", env.nonce()).to_lowercase();
        env.write(
            "config.yaml",
            "tbls:\n  ev:\n    path: ev/*.csv\n  cu:\n    path: cu/*.csv\n    unique_by: id\n",
        );
        env.write("upload.yaml", "tbls: {}\n");
        env.write("ev/1.csv", "n\n1\n2\n");
        env.write("cu/1.csv", "id,name\n1,Ada\n");
        download(&env, &up);
        upload_ok(&env, target, "wh", &up);
        env.write("ev/2.csv", "n\n3\n");
        download(&env, &up);
        upload_ok(&env, target, "wh", &up);
        let count = |t: &str| {
            fetch(
                target,
                &env,
                &format!(
                    "SELECT {} FROM {}",
                    target.text("COUNT(*)"),
                    target.table(&up, t)
                ),
            )[0][0]
                .clone()
        };
        assert_eq!(count("ev"), s("3"));
        // Dropped by hand: the next run says so and loads it again, whole.
        fetch(
            target,
            &env,
            &format!("DROP TABLE {}", target.table(&up, "ev")),
        );
        let out = upload(&env, target, "wh", &up, &[]);
        assert!(out.status.success(), "{}", crate::stderr(&out));
        assert!(
            crate::stderr(&out)
                .contains("the target table is missing although commits were loaded into it"),
            "{}",
            crate::stderr(&out)
        );
        assert_eq!(
            tbl_task(&results(&out), &format!("{up}.ev"))["data"]["reloaded_from_start"],
            true
        );
        assert_eq!(count("ev"), s("3"));
        assert_eq!(count("cu"), s("1"));
        // `checkpoints -D` on the uploader starts the table over: rows once, not twice.
        let out = env
            .cmd()
            .args(["checkpoints", "--id", "wh", "-D", "-y", &format!("{up}.ev")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", crate::stderr(&out));
        let out = upload(&env, target, "wh", &up, &[]);
        assert!(out.status.success(), "{}", crate::stderr(&out));
        assert!(crate::stderr(&out).contains("checkpoint of the table was deleted"));
        assert_eq!(count("ev"), s("3"));
        // And only that table.
        let r = results(&out);
        assert!(tbl_task(&r, &format!("{up}.cu"))["data"]["reloaded_from_start"].is_null());
    }
}
