use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anchovy_core::{
    Batch, BoxError, Emitter, Operator, Sink, Source, Status, TaskCtx, TaskType, Tbl, Value,
    async_trait,
};

use crate::{Harness, tasks};

/// Emits `n` rows `{i}` for its table, a checkpoint every `every` rows, then fails
/// after `fail_after` rows if set, or panics if `panic` is set.
struct Counter {
    n: i64,
    every: i64,
    fail_after: Option<i64>,
    panic_table: Option<&'static str>,
}

#[async_trait]
impl Source for Counter {
    async fn run(&self, ctx: &TaskCtx, out: &mut Emitter) -> Result<(), BoxError> {
        if self.panic_table == Some(ctx.tbl_name()) {
            panic!("boom in {}", ctx.tbl_name());
        }
        let start = ctx
            .checkpoint(ctx.tbl_name())
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        for i in start..self.n {
            if self.fail_after == Some(i) {
                return Err("the source broke".into());
            }
            out.push([("i", Value::Int(i))]).await?;
            if (i + 1) % self.every == 0 {
                out.checkpoint(ctx.tbl_name(), i + 1).await?;
            }
        }
        Ok(())
    }
}

/// Doubles `i` into `j`, and emits a derived table `<t>_odd` for odd rows.
struct Doubler;

#[async_trait]
impl Sink for Doubler {
    fn tables(&self) -> &str {
        "nums"
    }
    async fn write(&self, _ctx: &TaskCtx, batch: Batch, out: &mut Emitter) -> Result<(), BoxError> {
        for r in 0..batch.len() {
            let Value::Int(i) = batch.get(r, "i") else {
                panic!()
            };
            out.push([("i", Value::Int(*i)), ("j", Value::Int(i * 2))])
                .await?;
            if i % 2 == 1 {
                out.push_to("nums_odd", [("i", Value::Int(*i))]).await?;
            }
        }
        Ok(())
    }
}

/// Consumes `nums_odd` without emitting (a terminal sink), counting rows.
struct Counting(Arc<AtomicUsize>);

#[async_trait]
impl Sink for Counting {
    fn tables(&self) -> &str {
        "*_odd"
    }
    async fn write(
        &self,
        _ctx: &TaskCtx,
        batch: Batch,
        _out: &mut Emitter,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(batch.len(), Ordering::SeqCst);
        Ok(())
    }
}

/// Buffers everything until flush (the contract: flush before every checkpoint commit).
struct Buffering(Mutex<Vec<Batch>>);

#[async_trait]
impl Sink for Buffering {
    fn tables(&self) -> &str {
        "buffered"
    }
    async fn write(
        &self,
        _ctx: &TaskCtx,
        batch: Batch,
        _out: &mut Emitter,
    ) -> Result<(), BoxError> {
        self.0.lock().unwrap().push(batch);
        Ok(())
    }
    async fn flush(&self, _ctx: &TaskCtx, out: &mut Emitter) -> Result<(), BoxError> {
        let held: Vec<Batch> = std::mem::take(&mut *self.0.lock().unwrap());
        for mut b in held {
            b.table = "buffered_out".into();
            out.send_batch(b).await?;
        }
        Ok(())
    }
}

struct Op {
    source: Arc<dyn Source>,
    sinks: Vec<Arc<dyn Sink>>,
    phases: Arc<Mutex<Vec<String>>>,
    fail_xopen: bool,
    discovered: Option<Vec<Tbl>>,
    discover_calls: Arc<AtomicUsize>,
}

impl Op {
    fn new(source: impl Source + 'static) -> Op {
        Op {
            source: Arc::new(source),
            sinks: vec![],
            phases: Arc::default(),
            fail_xopen: false,
            discovered: None,
            discover_calls: Arc::default(),
        }
    }
}

#[async_trait]
impl Operator for Op {
    fn sources(&self) -> Vec<Arc<dyn Source>> {
        vec![self.source.clone()]
    }
    fn sinks(&self) -> Vec<Arc<dyn Sink>> {
        self.sinks.clone()
    }
    async fn on_task(&self, ctx: &TaskCtx) -> Result<(), BoxError> {
        self.phases
            .lock()
            .unwrap()
            .push(ctx.task_type.phase().to_string());
        if ctx.task_type == TaskType::Xopen && self.fail_xopen {
            return Err("cannot connect".into());
        }
        Ok(())
    }
    async fn discover_tbls(&self, _ctx: &TaskCtx) -> Result<Option<Vec<Tbl>>, BoxError> {
        self.discover_calls.fetch_add(1, Ordering::SeqCst);
        Ok(self.discovered.clone())
    }
}

fn ints(rows: &[std::collections::BTreeMap<String, Value>], col: &str) -> Vec<i64> {
    rows.iter()
        .map(|r| match &r[col] {
            Value::Int(i) => *i,
            v => panic!("{v:?}"),
        })
        .collect()
}

#[tokio::test]
async fn sinks_chain_fan_out_and_the_rest_reaches_the_datastore() {
    let h = Harness::new();
    let count = Arc::new(AtomicUsize::new(0));
    let mut op = Op::new(Counter {
        n: 10,
        every: 4,
        fail_after: None,
        panic_table: None,
    });
    op.sinks = vec![Arc::new(Doubler), Arc::new(Counting(count.clone()))];
    let r = h.run(Arc::new(op), "tbls: {nums: {}}", &[]).await;
    assert_eq!(r.status, Status::Ok, "{:?}", r.error);
    let rows = h.committed().await;
    // The source's `nums` went to Doubler only; Doubler's `nums` output reached the datastore.
    assert_eq!(ints(&rows["nums"], "i"), (0..10).collect::<Vec<_>>());
    assert_eq!(
        ints(&rows["nums"], "j"),
        (0..10).map(|i| i * 2).collect::<Vec<_>>()
    );
    // `nums_odd` was consumed by the terminal sink, so it is not in the datastore.
    assert!(!rows.contains_key("nums_odd"));
    assert_eq!(count.load(Ordering::SeqCst), 5);
    assert_eq!(h.checkpoints().await["nums"], 8);
}

#[tokio::test]
async fn a_failing_source_keeps_exactly_what_its_checkpoints_cover() {
    let h = Harness::new();
    let op = Op::new(Counter {
        n: 100,
        every: 10,
        fail_after: Some(35),
        panic_table: None,
    });
    let r = h.run(Arc::new(op), "tbls: {t: {}}", &[]).await;
    assert_eq!(r.status, Status::Err);
    let err = r.batches[0]
        .tasks
        .iter()
        .find(|t| t.task_type == TaskType::Tbl)
        .unwrap()
        .error
        .clone()
        .unwrap();
    assert!(err.contains("table t: source: the source broke"), "{err}");
    // Rows 30..35 were emitted after the last checkpoint: not committed.
    assert_eq!(
        ints(&h.committed().await["t"], "i"),
        (0..30).collect::<Vec<_>>()
    );
    assert_eq!(h.checkpoints().await["t"], 30);
    // The rerun resumes at 30: every row exactly once.
    let op = Op::new(Counter {
        n: 100,
        every: 10,
        fail_after: None,
        panic_table: None,
    });
    let r = h.run(Arc::new(op), "tbls: {t: {}}", &[]).await;
    assert_eq!(r.status, Status::Ok);
    assert_eq!(
        ints(&h.committed().await["t"], "i"),
        (0..100).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_buffering_sink_is_flushed_before_each_checkpoint() {
    let h = Harness::new();
    let mut op = Op::new(Counter {
        n: 25,
        every: 10,
        fail_after: Some(23),
        panic_table: None,
    });
    op.sinks = vec![Arc::new(Buffering(Mutex::default()))];
    let r = h.run(Arc::new(op), "tbls: {buffered: {}}", &[]).await;
    assert_eq!(r.status, Status::Err);
    // Everything before the checkpoint at 20 was flushed and committed with it.
    assert_eq!(
        ints(&h.committed().await["buffered_out"], "i"),
        (0..20).collect::<Vec<_>>()
    );
    assert_eq!(h.checkpoints().await["buffered"], 20);
}

#[tokio::test]
async fn hooks_run_in_order_and_error_runs_when_xopen_fails() {
    let h = Harness::new();
    let op = Op::new(Counter {
        n: 1,
        every: 1,
        fail_after: None,
        panic_table: None,
    });
    let phases = op.phases.clone();
    h.run(Arc::new(op), "tbls: {t: {}}", &[]).await;
    assert_eq!(
        *phases.lock().unwrap(),
        vec!["startup", "xopen", "xclose", "shutdown"]
    );

    let mut op = Op::new(Counter {
        n: 1,
        every: 1,
        fail_after: None,
        panic_table: None,
    });
    op.fail_xopen = true;
    let phases = op.phases.clone();
    let r = h.run(Arc::new(op), "tbls: {t: {}}", &[]).await;
    assert_eq!(
        *phases.lock().unwrap(),
        vec!["startup", "xopen", "error", "xclose", "shutdown"]
    );
    assert_eq!(r.status, Status::Err);
    assert_eq!(r.exit_code, 1);
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .contains("opening the batch: cannot connect")
    );
    let t: Vec<_> = tasks(&r).into_iter().map(|t| (t.0, t.2)).collect();
    assert_eq!(
        t,
        vec![
            ("STARTUP".into(), "OK".into()),
            ("XOPEN".into(), "ERR".into()),
            ("ERROR".into(), "ERR".into()),
            ("XCLOSE".into(), "OK".into()),
            ("SHUTDOWN".into(), "OK".into())
        ]
    );
}

#[tokio::test]
async fn discovered_tables_merge_with_config_which_wins() {
    let h = Harness::new();
    let mut op = Op::new(Counter {
        n: 2,
        every: 1,
        fail_after: None,
        panic_table: None,
    });
    let mut d1 = Tbl::named("disc_a");
    d1.unique_by = anchovy_core::tbl::ColSelect::parse("x");
    op.discovered = Some(vec![d1, Tbl::named("disc_b")]);
    let r = h
        .run(
            Arc::new(op),
            "tbls: {disc_a: {unique_by: i}, cfg_only: {}}",
            &[("disabled", "disc_b".into())],
        )
        .await;
    let tbls: Vec<String> = tasks(&r).into_iter().filter_map(|t| t.1).collect();
    // With discovery, config-only tables are not run (they were not discovered).
    assert_eq!(tbls, vec!["disc_a"]);
    let ds = anchovy_core::Datastore::open(h.dir.path().to_str().unwrap())
        .unwrap()
        .for_anchovy("tester", "it");
    let t = anchovy_core::tbl_store::TblStore::new(ds)
        .get("disc_a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.unique_by.0, vec!["i"]);
    assert_eq!(t.columns["i"], anchovy_core::ColType::Int);
}

#[tokio::test]
async fn a_panicking_table_fails_alone() {
    let h = Harness::new();
    let op = Op::new(Counter {
        n: 3,
        every: 1,
        fail_after: None,
        panic_table: Some("b"),
    });
    let r = h
        .run(Arc::new(op), "tbls: {a: {}, b: {}, c: {}}", &[])
        .await;
    let t: Vec<_> = tasks(&r)
        .into_iter()
        .filter(|t| t.0 == "TBL")
        .map(|t| (t.1.unwrap(), t.2))
        .collect();
    assert_eq!(t.len(), 3);
    assert!(t.contains(&("b".into(), "ERR".into())));
    assert!(t.contains(&("a".into(), "OK".into())) && t.contains(&("c".into(), "OK".into())));
    let b = r.batches[0]
        .tasks
        .iter()
        .find(|t| t.tbl.as_deref() == Some("b"))
        .unwrap();
    assert!(
        b.error.as_deref().unwrap().contains("panicked"),
        "{:?}",
        b.error
    );
    assert_eq!(h.committed().await.len(), 2);
}

#[tokio::test]
async fn a_table_without_a_source_is_a_clear_error() {
    struct OnlySales;
    #[async_trait]
    impl Source for OnlySales {
        fn tables(&self) -> &str {
            "sales*"
        }
        async fn run(&self, _ctx: &TaskCtx, _out: &mut Emitter) -> Result<(), BoxError> {
            Ok(())
        }
    }
    let h = Harness::new();
    let r = h
        .run(Arc::new(Op::new(OnlySales)), "tbls: {stock: {}}", &[])
        .await;
    let e = r.batches[0].tasks[1].error.clone().unwrap();
    assert_eq!(
        e,
        "table `stock` has no source in operator test.Op; its sources serve: sales*"
    );
}

#[tokio::test]
async fn data_files_rotate_by_size_and_commit_together() {
    let h = Harness::new();
    let op = Op::new(Counter {
        n: 5000,
        every: 100_000,
        fail_after: None,
        panic_table: None,
    });
    let r = h
        .run(
            Arc::new(op),
            "tbls: {t: {}}",
            &[("file_max_bytes", 4096.into()), ("batch_size", 100.into())],
        )
        .await;
    assert_eq!(r.status, Status::Ok);
    let data = &r.batches[0].tasks[1].data;
    assert!(data["files"].as_u64().unwrap() >= 10, "{data:?}");
    assert_eq!(data["commits"], 1);
    assert_eq!(
        ints(&h.committed().await["t"], "i"),
        (0..5000).collect::<Vec<_>>()
    );
}

/// In service mode discovered tables are reused for `discovery_ttl`; with no TTL the
/// operator discovers every batch.
#[tokio::test]
async fn service_mode_reuses_discovered_tables_for_their_ttl() {
    for (ttl, many) in [("1h", false), ("0s", true)] {
        let h = Harness::new();
        let mut op = Op::new(Counter {
            n: 1,
            every: 1,
            fail_after: None,
            panic_table: None,
        });
        op.discovered = Some(vec![Tbl::named("nums")]);
        let calls = op.discover_calls.clone();
        let r = h
            .run_for(
                Arc::new(op),
                "tbls: {}",
                &[
                    ("is_task_executor", false.into()),
                    ("service_pause", "20ms".into()),
                    ("discovery_ttl", ttl.into()),
                ],
                Some(std::time::Duration::from_millis(400)),
            )
            .await;
        assert!(r.batches.len() >= 3, "{}", r.batches.len());
        let n = calls.load(Ordering::SeqCst);
        if many {
            assert_eq!(n, r.batches.len(), "once per batch without a TTL");
        } else {
            assert_eq!(n, 1, "once within the TTL");
        }
    }
}
