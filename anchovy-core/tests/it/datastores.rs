//! One conformance suite for every datastore backend: the local filesystem, Azure Blob
//! (Azurite) and S3 (moto), the last two started on 127.0.0.1 by script/test. A
//! missing server fails the test; it never passes silently.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anchovy_core::Datastore;
use anchovy_core::commit::{CommitMeta, Committer, read_commits};
use anchovy_core::error::Error;
use anchovy_core::lease::{LEASE_KEY, Lease};
use bytes::Bytes;

fn need(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests with script/test, which starts Azurite and moto (script/services.sh)")
    })
}

/// A fresh, empty datastore URL on each backend.
pub fn backends(dir: &std::path::Path) -> Vec<String> {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    need("AZURITE_BLOB_STORAGE_URL");
    need("AWS_ENDPOINT");
    vec![
        format!("file://{}/{nonce}", dir.display()),
        format!("az://{}/conformance/{nonce}", need("AZURE_CONTAINER")),
        format!("s3://{}/conformance/{nonce}", need("S3_BUCKET")),
    ]
}

#[tokio::test]
async fn every_backend_passes_the_datastore_contract() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let ds = Datastore::open(&url)
            .unwrap_or_else(|e| panic!("{url}: {e}"))
            .for_anchovy("me", "conf");
        let at = |what: &str| format!("{url}: {what}");
        // Round trip, missing key, overwrite.
        assert!(
            ds.get("$tables/none.json").await.unwrap().is_none(),
            "{}",
            at("missing")
        );
        ds.put("$tables/a.json", Bytes::from_static(b"{\"v\":1}"))
            .await
            .unwrap();
        ds.put("$tables/a.json", Bytes::from_static(b"{\"v\":2}"))
            .await
            .unwrap();
        let v: serde_json::Value = ds.get_json("$tables/a.json").await.unwrap().unwrap();
        assert_eq!(v["v"], 2, "{}", at("overwrite"));
        // Listing by prefix: only that folder, sorted, keys relative to the area.
        ds.put("$tables/b.json", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        ds.put("$tablesX/c.json", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        ds.put("data/t/f1.ndjson.gz", Bytes::from_static(b"x"))
            .await
            .unwrap();
        let keys: Vec<String> = ds
            .list("$tables")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(
            keys,
            vec!["$tables/a.json", "$tables/b.json"],
            "{}",
            at("list")
        );
        let data = ds.list("data").await.unwrap();
        assert_eq!(data.len(), 1);
        assert_eq!(data[0].size, 1, "{}", at("size"));
        // Conditional create: exactly one of eight racers wins.
        let wins = futures::future::join_all((0..8).map(|i| {
            let ds = ds.clone();
            async move {
                ds.create("$commits/race.json", Bytes::from(format!("{i}")))
                    .await
                    .unwrap()
            }
        }))
        .await;
        assert_eq!(
            wins.iter().filter(|w| **w).count(),
            1,
            "{}",
            at("create race")
        );
        ds.delete("$commits/race.json").await.unwrap();
        ds.delete("$commits/race.json").await.unwrap(); // missing is fine
        // Commit records: sequence order, and a stale writer is refused.
        let meta = CommitMeta {
            anchovy_id: "conf".into(),
            anchovy_user: "me".into(),
            session_id: "s".into(),
            batch_id: 1,
            tbl: None,
            worker: None,
            claim: None,
        };
        let (cps, last) =
            anchovy_core::commit::load_checkpoints(&ds, anchovy_core::commit::LoadAs::SoleWriter)
                .await
                .unwrap();
        let c = Committer::new(ds.clone(), Arc::new(cps), last);
        for i in 0..12 {
            let mut cp = BTreeMap::new();
            cp.insert("k".to_string(), Some(serde_json::json!(i)));
            c.commit(&meta, vec![], cp).await.unwrap();
        }
        let seqs: Vec<u64> = read_commits(&ds, 0)
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, (1..=12).collect::<Vec<_>>(), "{}", at("commit order"));
        assert_eq!(
            read_commits(&ds, 10).await.unwrap().len(),
            2,
            "{}",
            at("list after")
        );
        let (cps, _) =
            anchovy_core::commit::load_checkpoints(&ds, anchovy_core::commit::LoadAs::SoleWriter)
                .await
                .unwrap();
        let stale = Committer::new(ds.clone(), Arc::new(cps), 5);
        let e = stale
            .commit(&meta, vec![], BTreeMap::new())
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::CommitConflict { seq: 6, .. }),
            "{}: {e}",
            at("stale")
        );
        // Keys a table name cannot escape from.
        let evil = ds.child(&["../../x"]);
        evil.put("y", Bytes::from_static(b"1")).await.unwrap();
        let all = Datastore::open(&url).unwrap().list("").await.unwrap();
        assert!(
            all.iter().all(|e| e.key.starts_with("me/conf/")),
            "{}: {all:?}",
            at("escape")
        );
        ds.probe().await.unwrap();
    }
}

#[tokio::test]
async fn the_run_lease_admits_one_run_and_fences_a_stale_one() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let ds = Datastore::open(&url).unwrap().for_anchovy("me", "lease");
        let ttl = Duration::from_secs(2);
        let first = Lease::acquire(&ds, "s1", ttl).await.unwrap();
        assert_eq!(first.token(), 1);
        let e = Lease::acquire(&ds, "s2", ttl).await.unwrap_err();
        assert!(matches!(e, Error::Locked { .. }), "{url}: {e}");
        assert_eq!(e.exit_code(), 5);
        if url.starts_with("file://") {
            // The OS lock is held until the holder goes; then the next run takes it.
            drop(first);
            let next = Lease::acquire(&ds, "s3", ttl).await.unwrap();
            assert_eq!(next.token(), 2);
            continue;
        }
        // The holder renews; a clean release lets the next run in at once.
        first.renew().await.unwrap();
        first.release().await.unwrap();
        let second = Lease::acquire(&ds, "s3", ttl).await.unwrap();
        assert_eq!(second.token(), 2, "{url}");
        // The holder goes silent (a paused VM): after the TTL another run takes over...
        tokio::time::sleep(ttl + Duration::from_millis(300)).await;
        let third = Lease::acquire(&ds, "s4", ttl).await.unwrap();
        assert_eq!(third.token(), 3, "{url}");
        // ...and the stale holder can neither renew nor commit.
        let e = second.renew().await.unwrap_err();
        assert!(matches!(e, Error::LeaseLost { token: 2, .. }), "{url}: {e}");
        assert!(second.is_lost());
        let (cps, last) =
            anchovy_core::commit::load_checkpoints(&ds, anchovy_core::commit::LoadAs::SoleWriter)
                .await
                .unwrap();
        let stale = Committer::new(ds.clone(), Arc::new(cps), last).with_lease(second.clone());
        let meta = CommitMeta {
            anchovy_id: "lease".into(),
            anchovy_user: "me".into(),
            session_id: "s3".into(),
            batch_id: 1,
            tbl: None,
            worker: None,
            claim: None,
        };
        let e = stale
            .commit(&meta, vec![], BTreeMap::new())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::LeaseLost { .. }), "{url}: {e}");
        assert!(
            read_commits(&ds, 0).await.unwrap().is_empty(),
            "{url}: the stale run committed"
        );
        // The live holder commits, stamped with its token.
        let (cps, last) =
            anchovy_core::commit::load_checkpoints(&ds, anchovy_core::commit::LoadAs::SoleWriter)
                .await
                .unwrap();
        let live = Committer::new(ds.clone(), Arc::new(cps), last).with_lease(third.clone());
        let r = live.commit(&meta, vec![], BTreeMap::new()).await.unwrap();
        assert_eq!(r.lease_token, Some(3));
        let doc: serde_json::Value = ds.get_json(LEASE_KEY).await.unwrap().unwrap();
        assert_eq!(doc["token"], 3);
    }
}
