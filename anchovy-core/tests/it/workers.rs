//! Workers sharing one anchovy on every datastore backend: claims with one winner,
//! takeover after the TTL with fencing, and commits of several writers in one dense
//! sequence ([`anchovy_core::worker`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anchovy_core::Datastore;
use anchovy_core::commit::{Claim, CommitMeta, Committer, LoadAs, load_checkpoints, read_commits};
use anchovy_core::error::Error;
use anchovy_core::lease::{Lease, Spot, Taken};

use crate::datastores::backends;

fn meta(session: &str, tbl: &str, claim: Option<Claim>) -> CommitMeta {
    CommitMeta {
        anchovy_id: "w".into(),
        anchovy_user: "me".into(),
        session_id: session.into(),
        batch_id: 1,
        tbl: Some(tbl.into()),
        worker: Some(session.into()),
        claim,
    }
}

async fn shared(ds: &Datastore) -> Arc<Committer> {
    let (cps, last) = load_checkpoints(ds, LoadAs::Shared).await.unwrap();
    Arc::new(Committer::new(ds.clone(), Arc::new(cps), last).shared())
}

/// Eight workers race for one table's claim, three rounds: exactly one wins each, its
/// token one more than the last; a claim released after a round began is done for it.
#[tokio::test]
async fn one_of_eight_racing_workers_wins_a_claim() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let ds = Datastore::open(&url).unwrap().for_anchovy("me", "race");
        let ttl = Duration::from_secs(30);
        for round in 1..=3u64 {
            let takers = (0..8).map(|i| {
                let ds = ds.clone();
                tokio::spawn(async move {
                    let w = format!("w{i}");
                    Lease::take(&ds, Spot::table("sales.orders"), &w, ttl, Some(&w), None)
                        .await
                        .unwrap()
                })
            });
            let got: Vec<_> = futures::future::join_all(takers)
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
            let winners: Vec<&Arc<Lease>> = got.iter().filter_map(|r| r.as_ref().ok()).collect();
            assert_eq!(winners.len(), 1, "{url}: round {round}");
            assert_eq!(winners[0].token(), round, "{url}");
            for r in &got {
                if let Err(t) = r {
                    assert!(matches!(t, Taken::Busy(_)), "{url}: {t:?}");
                }
            }
            let began = chrono::Utc::now() - chrono::Duration::seconds(5);
            winners[0].release().await.unwrap();
            drop(got);
            // Released after `began`: done in that round...
            let again = Lease::take(
                &ds,
                Spot::table("sales.orders"),
                "late",
                ttl,
                Some("late"),
                Some(began),
            )
            .await
            .unwrap();
            assert!(matches!(again, Err(Taken::Done(_))), "{url}: {again:?}");
        }
        // ...and the claims are listed with their holder.
        let claims = anchovy_core::lease::claims(&ds).await.unwrap();
        assert_eq!(claims.len(), 1, "{url}");
        assert_eq!(claims[0].0, "sales.orders");
        assert!(claims[0].1.released, "{url}");
    }
}

/// Six writers commit at once, fifteen commits each: one dense sequence, each writer's
/// commits in its own order, and every writer's state at its last commit equal to the
/// fold of all commits up to it (the reference model).
#[tokio::test]
async fn shared_committers_keep_one_dense_sequence() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let ds = Datastore::open(&url).unwrap().for_anchovy("me", "dense");
        let writers = (0..6).map(|i| {
            let ds = ds.clone();
            tokio::spawn(async move {
                let c = shared(&ds).await;
                let mut last = 0;
                for j in 0..15u64 {
                    let cps = BTreeMap::from([(format!("t{i}:next"), Some(j.into()))]);
                    last = c
                        .commit(&meta(&format!("w{i}"), &format!("t{i}"), None), vec![], cps)
                        .await
                        .unwrap()
                        .seq;
                }
                (c, last)
            })
        });
        let done: Vec<(Arc<Committer>, u64)> = futures::future::join_all(writers)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let all = read_commits(&ds, 0).await.unwrap();
        let seqs: Vec<u64> = all.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=90).collect::<Vec<_>>(), "{url}");
        for i in 0..6 {
            let mine: Vec<u64> = all
                .iter()
                .filter(|r| r.tbl.as_deref() == Some(&format!("t{i}")))
                .map(|r| {
                    r.checkpoints
                        .values()
                        .next()
                        .unwrap()
                        .as_ref()
                        .unwrap()
                        .as_u64()
                        .unwrap()
                })
                .collect();
            assert_eq!(mine, (0..15).collect::<Vec<_>>(), "{url}: writer {i}");
        }
        for (c, last) in &done {
            let mut model: BTreeMap<String, serde_json::Value> = BTreeMap::new();
            for r in all.iter().filter(|r| r.seq <= *last) {
                for (k, v) in &r.checkpoints {
                    model.insert(k.clone(), v.clone().unwrap());
                }
            }
            let state: BTreeMap<String, serde_json::Value> = c
                .checkpoints()
                .list("*")
                .into_iter()
                .map(|e| (e.key, e.value))
                .collect();
            assert_eq!(state, model, "{url}: the state at commit {last}");
        }
        // A start sees the whole state, whichever writer's snapshot is stored.
        for (c, _) in &done {
            c.checkpoints().snapshot().await;
        }
        let (cps, last) = load_checkpoints(&ds, LoadAs::SoleWriter).await.unwrap();
        assert_eq!(last, 90);
        assert_eq!(cps.list("*").len(), 6);
        assert!(cps.list("*").iter().all(|e| e.value == 14), "{url}");
    }
}

/// Starts beside running writers (a worker starting late, `anchovy healthcheck`) read
/// the state of a whole prefix of commits: four writers commit fifteen times (each a new key, some
/// deleting an older one of theirs, seeded), while three starts load again and again,
/// each after removing the snapshot, so that every load reads the per-key mirrors the
/// writers are writing meanwhile. Each loaded state must equal the reference model,
/// the fold of commits 1..=last; and the starts write no `_applied` (a start once did,
/// after its listing of the mirrors, and the next start then skipped a commit it
/// believed mirrored: a file read twice).
#[tokio::test]
async fn starts_beside_writers_read_a_whole_prefix_of_commits() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let ds = Datastore::open(&url).unwrap().for_anchovy("me", "prefix");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers = (0..4u64).map(|i| {
            let ds = ds.clone();
            tokio::spawn(async move {
                let c = shared(&ds).await;
                let mut rng = anchovy_core::testutil::Rng(0x5eed + i);
                for j in 0..15u64 {
                    let mut cps = BTreeMap::from([(format!("t{i}:f{j}"), Some(j.into()))]);
                    if j > 0 && rng.below(4) == 0 {
                        cps.insert(format!("t{i}:f{}", rng.below(j)), None);
                    }
                    c.commit(&meta(&format!("w{i}"), &format!("t{i}"), None), vec![], cps)
                        .await
                        .unwrap();
                }
            })
        });
        let starts = (0..3).map(|_| {
            let ds = ds.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    ds.delete("$checkpoints/_state").await.unwrap();
                    let (cps, last) = load_checkpoints(&ds, LoadAs::Shared).await.unwrap();
                    let state: BTreeMap<String, serde_json::Value> = cps
                        .list("*")
                        .into_iter()
                        .map(|e| (e.key, e.value))
                        .collect();
                    seen.push((last, state));
                }
                seen
            })
        });
        let starts: Vec<_> = starts.collect();
        for w in futures::future::join_all(writers).await {
            w.unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let all = read_commits(&ds, 0).await.unwrap();
        assert_eq!(all.len(), 60, "{url}");
        let mut loads = 0;
        for s in futures::future::join_all(starts).await {
            for (last, state) in s.unwrap() {
                let mut model: BTreeMap<String, serde_json::Value> = BTreeMap::new();
                for r in all.iter().filter(|r| r.seq <= last) {
                    for (k, v) in &r.checkpoints {
                        match v {
                            Some(v) => model.insert(k.clone(), v.clone()),
                            None => model.remove(k),
                        };
                    }
                }
                assert_eq!(state, model, "{url}: a start's state at commit {last}");
                loads += 1;
            }
        }
        assert!(loads >= 3, "{url}: {loads} loads");
        assert!(
            ds.get("$checkpoints/_applied").await.unwrap().is_none(),
            "{url}: a shared start wrote `_applied`"
        );
    }
}

/// A worker paused past its claim's TTL is fenced out when it wakes (object stores;
/// locally the OS lock cannot be lost), and on every backend a commit that would set a
/// checkpoint another writer changed after the claim was taken is refused: its data
/// was read from a state that is no longer true. Other keys still commit.
#[tokio::test]
async fn a_worker_that_lost_its_table_commits_nothing_of_it() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let ds = Datastore::open(&url).unwrap().for_anchovy("me", "fence");
        let ttl = Duration::from_secs(2);
        let a = shared(&ds).await;
        let b = shared(&ds).await;
        let la = Lease::take(&ds, Spot::table("t"), "a", ttl, Some("a"), None)
            .await
            .unwrap()
            .unwrap();
        let claim_a = Claim {
            lease: la.clone(),
            since: a.catch_up().await.unwrap(),
        };
        let file = |f: &str, v: u64| BTreeMap::from([(format!("t:{f}"), Some(v.into()))]);
        a.commit(
            &meta("a", "t", Some(claim_a.clone())),
            vec![],
            file("f0", 1),
        )
        .await
        .unwrap();
        if !url.starts_with("file://") {
            // A pauses; its claim expires and B takes the table over.
            tokio::time::sleep(ttl + Duration::from_millis(300)).await;
            let lb = Lease::take(&ds, Spot::table("t"), "b", ttl, Some("b"), None)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(lb.token(), 2, "{url}");
            let claim_b = Claim {
                lease: lb.clone(),
                since: b.catch_up().await.unwrap(),
            };
            b.commit(&meta("b", "t", Some(claim_b)), vec![], file("f1", 1))
                .await
                .unwrap();
            let e = a
                .commit(
                    &meta("a", "t", Some(claim_a.clone())),
                    vec![],
                    file("f2", 1),
                )
                .await
                .unwrap_err();
            assert!(matches!(e, Error::ClaimLost { .. }), "{url}: {e}");
            assert!(e.to_string().contains("took it over"), "{e}");
            assert_eq!(e.exit_code(), 5);
            assert!(la.is_lost());
            lb.release().await.unwrap();
        }
        // A writer with a stale view (no claim, as a zombie that renewed just before
        // its pause) commits file f3; the holder, which read f3 before that, may not.
        let lc = Lease::take(&ds, Spot::table("t2"), "c", ttl, Some("c"), None)
            .await
            .unwrap()
            .unwrap();
        let claim_c = Claim {
            lease: lc.clone(),
            since: a.catch_up().await.unwrap(),
        };
        b.commit(
            &meta("zombie", "t2", None),
            vec![],
            BTreeMap::from([("t2:f3".to_string(), Some(7.into()))]),
        )
        .await
        .unwrap();
        let e = a
            .commit(
                &meta("c", "t2", Some(claim_c.clone())),
                vec![],
                BTreeMap::from([("t2:f3".to_string(), Some(8.into()))]),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, Error::ClaimLost { .. }), "{url}: {e}");
        assert!(e.to_string().contains("changed checkpoint `t2:f3`"), "{e}");
        a.commit(
            &meta("c", "t2", Some(claim_c)),
            vec![],
            BTreeMap::from([("t2:f4".to_string(), Some(1.into()))]),
        )
        .await
        .unwrap();
        let (cps, _) = load_checkpoints(&ds, LoadAs::SoleWriter).await.unwrap();
        assert_eq!(cps.get("t2:f3"), Some(7.into()), "{url}");
        assert_eq!(cps.get("t2:f4"), Some(1.into()), "{url}");
        lc.release().await.unwrap();
    }
}

/// Eight writers change one JSON object at once, 10 times each (as parts of a table
/// widen its `$tables` entry): no change is lost on any backend.
#[tokio::test]
async fn concurrent_updates_of_one_object_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let ds = Datastore::open(&url).unwrap().for_anchovy("me", "meta");
        let writers = (0..8).map(|w| {
            let ds = ds.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    ds.update_json("$tables/t.json", |v| {
                        let mut v = v.unwrap_or_else(|| serde_json::json!({"seen": []}));
                        v["seen"]
                            .as_array_mut()
                            .unwrap()
                            .push(format!("{w}.{i}").into());
                        Ok(v)
                    })
                    .await
                    .unwrap();
                }
            })
        });
        for r in futures::future::join_all(writers).await {
            r.unwrap();
        }
        let v: serde_json::Value = ds.get_json("$tables/t.json").await.unwrap().unwrap();
        let mut seen: Vec<String> = v["seen"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        seen.sort();
        assert_eq!(seen.len(), 80, "{url}: changes lost");
        seen.dedup();
        assert_eq!(seen.len(), 80, "{url}: changes doubled");
    }
}

/// A holder that stops renewing and releases at any moment, even in the middle of a
/// renewal, releases cleanly: the next taker gets the lease at once, never "held".
/// (Aborting the renewal task mid-request left a stale version: the release failed its
/// precondition and the claim stayed held for its TTL.)
#[tokio::test]
async fn a_release_right_after_a_renewal_never_leaves_the_lease_held() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()).into_iter().skip(1) {
        let ds = Datastore::open(&url).unwrap().for_anchovy("me", "release");
        // Renewed every 100 ms: releases land in the middle of renewals often.
        let ttl = Duration::from_millis(300);
        for i in 0..30u64 {
            let l = Lease::take(&ds, Spot::table("t"), "a", ttl, Some("a"), None)
                .await
                .unwrap()
                .unwrap_or_else(|t| panic!("{url}: round {i}: {t:?}"));
            let keep = l.keep_alive();
            tokio::time::sleep(Duration::from_millis(90 + (i * 7) % 40)).await;
            keep.stop().await;
            l.release()
                .await
                .unwrap_or_else(|e| panic!("{url}: round {i}: {e}"));
        }
    }
}
