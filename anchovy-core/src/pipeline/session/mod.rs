//! The lifecycle: STARTUP -> (XOPEN -> TBL tasks -> XCLOSE)+ -> SHUTDOWN, ERROR on failure.
//!
//! [`Session::open`] does every startup check that can fail before anything runs
//! (operator, connections, datastore, checkpoint replay); [`Session::run`] runs the
//! phases. Table tasks run concurrently up to `max_concurrency`, each in its own tokio
//! task inside a `JoinSet` (nothing detached). Under CONTINUE a failed table is logged
//! as ERR and the others finish; under RAISE the first failure aborts the rest. The
//! execution timeout covers XOPEN and the table tasks of a batch: when it fires the
//! batch's futures are dropped (cancelled), every unfinished task is logged as ERR with
//! the timeout message, ERROR and XCLOSE run, and the run ends with exit code 3.
//! XCLOSE and SHUTDOWN always run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::buffer::DatastoreSink;
use crate::checkpoint::Checkpoints;
use crate::commit::{Claim, Committer, LoadAs};
use crate::config::{BatchPolicy, ConfigDoc, Settings};
use crate::connection::Connections;
use crate::context::{SessionCtx, TaskCtx};
use crate::datastore::{Datastore, layout};
use crate::error::{Error, Result, exit};
use crate::lease::{Lease, Spot, Taken};
use crate::operator::{Operator, OperatorSpec, Registry};
use crate::results::{BatchResult, SessionResult};
use crate::stream::{Sink, Source, run_pipeline, wrap};
use crate::task::{Status, TaskLog, TaskStore, TaskType};
use crate::tbl::{Tbl, TblSet};
use crate::tbl_store::TblStore;

mod table;

use self::table::{Claimed, claim, make_log, release, run_table};

/// The longest pause between batches after repeated failures in service mode.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A prepared run.
pub struct Session {
    ctx: Arc<SessionCtx>,
    operator: Arc<dyn Operator>,
    tasks: TaskStore,
    lease: Option<Arc<Lease>>,
    /// Renews the run lease; stops renewing when dropped.
    keep_alive: Option<crate::lease::KeepAlive>,
    /// A worker's entry into its anchovy (`--workers`): held for the session's life.
    _entry: Option<crate::lease::WorkerEntry>,
    /// Tables the operator discovered, and when (reused for `discovery_ttl`).
    discovered: std::sync::Mutex<Option<(Instant, Option<Vec<Tbl>>)>>,
    /// `anchovy rejects replay`: table tasks read their quarantined records again
    /// instead of the source ([`crate::reject::ReplaySource`]).
    replay_rejects: bool,
}

type Inflight = Arc<Mutex<BTreeMap<(u8, String), Instant>>>;

/// Microseconds, so task logs sort in execution order even within one millisecond.
fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn new_session_id() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string()
}

fn task_order(t: TaskType) -> u8 {
    t as u8
}

/// Opens the datastore area of an anchovy and replays its checkpoints: the part of a
/// session every command needs (`start`, `healthcheck`, `checkpoints`).
///
/// # Errors
/// [`Error::Config`]/[`Error::Io`] for the location, [`Error::Datastore`] for I/O.
pub async fn open_store(
    settings: &Settings,
    connections: &Connections,
) -> Result<(Datastore, Datastore, Arc<Checkpoints>, u64)> {
    let root = open_datastore(settings, connections)?;
    let store = root.for_anchovy(&settings.user, &settings.id);
    // A reader: writers of the anchovy may be running beside it.
    let (cps, last) = crate::commit::load_checkpoints(&store, LoadAs::Shared).await?;
    Ok((root, store, Arc::new(cps), last))
}

/// The connection whose attributes, when set, carry the datastore's credentials
/// (`ACHVY_CNXN__DATASTORE__ACCESS_KEY_ID`, `..__ACCOUNT_KEY`, ...).
pub const DATASTORE_CONNECTION: &str = "datastore";

/// Opens the datastore the settings name, with the `datastore` connection's
/// credentials when one is configured.
///
/// # Errors
/// As [`Datastore::open`].
pub fn open_datastore(settings: &Settings, connections: &Connections) -> Result<Datastore> {
    Datastore::open_with(&settings.datastore, connections.get(DATASTORE_CONNECTION))
}

impl Session {
    /// Startup checks and construction: the operator exists, its connections are
    /// configured, the datastore opens and checkpoints load.
    ///
    /// # Errors
    /// [`Error::UnknownOperator`], [`Error::MissingConnection`], datastore errors, or
    /// the operator's own construction error.
    pub async fn open(
        registry: &Registry,
        settings: Settings,
        doc: ConfigDoc,
        connections: Connections,
    ) -> Result<Session> {
        Session::open_inner(registry, settings, doc, connections, true).await
    }

    /// [`Session::open`] for checks (`anchovy healthcheck`): takes no run lease, so it
    /// works while the anchovy runs. Such a session must not be run.
    ///
    /// # Errors
    /// As [`Session::open`] (never [`Error::Locked`]).
    pub async fn open_for_check(
        registry: &Registry,
        settings: Settings,
        doc: ConfigDoc,
        connections: Connections,
    ) -> Result<Session> {
        Session::open_inner(registry, settings, doc, connections, false).await
    }

    async fn open_inner(
        registry: &Registry,
        settings: Settings,
        doc: ConfigDoc,
        connections: Connections,
        take_lease: bool,
    ) -> Result<Session> {
        let name = settings.operator_cls.clone().ok_or_else(|| {
            Error::config(
                "operator_cls",
                format!(
                    "no operator given; pass -op <name> or set ACHVY_OPERATOR_CLS (known: {})",
                    registry
                        .specs()
                        .iter()
                        .map(|s| s.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        let spec: OperatorSpec = registry.find(&name)?.clone();
        registry.check_table_options(&spec, &doc)?;
        for c in spec.connections {
            connections.require(c, spec.name)?;
            for w in connections.unknown_attrs(c) {
                tracing::warn!("{w}");
            }
        }
        let root = open_datastore(&settings, &connections)?;
        if take_lease {
            root.check_writable()?;
        }
        let store = root.for_anchovy(&settings.user, &settings.id);
        // Metadata a user asked to keep apart from the data (task logs, table metadata).
        let apart = |cls: &str| -> Result<Datastore> {
            if cls == "datastore" {
                Ok(root.clone())
            } else {
                Datastore::open_with(cls, connections.get(DATASTORE_CONNECTION))
            }
        };
        let task_root = apart(&settings.task_store_cls)?;
        let tbl_root = apart(&settings.tbl_store_cls)?;
        let session_id = new_session_id();
        let worker = if take_lease { settings.worker()? } else { None };
        if worker.is_some() && settings.data_buffer_cls == crate::data::DataFormat::Original {
            return Err(Error::config(
                "data_buffer_cls",
                "`original` files are named by the second they start, as the original tool names them, so several workers writing one table could pick the same name; run this downloader as one process (without --workers), or use ndjson.gz",
            ));
        }
        // The lease first: a second run of this anchovy stops here, having written nothing.
        // A worker takes no run lease (its tables' claims fence it), but enters only
        // while no single-process run holds it.
        let (lease, entry) = match (take_lease, &worker) {
            (false, _) => (None, None),
            (true, None) => (
                Some(Lease::acquire(&store, &session_id, settings.lease_ttl).await?),
                None,
            ),
            (true, Some(_)) => (None, Some(crate::lease::enter_as_worker(&store).await?)),
        };
        let keep_alive = lease.as_ref().map(Lease::keep_alive);
        let settings_for_budget = settings.clone();
        let worker_name = worker.as_ref().map(|w| w.name.clone());
        let built = async {
            let load_as = if lease.is_some() {
                LoadAs::SoleWriter
            } else {
                LoadAs::Shared
            };
            let (cps, last) = crate::commit::load_checkpoints(&store, load_as).await?;
            if take_lease && settings.data_buffer_cls == crate::data::DataFormat::Original {
                crate::data::publish_staged(&store).await?;
            }
            let committer = Committer::new(store.clone(), Arc::new(cps), last);
            let committer = Arc::new(match (&lease, &worker) {
                (Some(l), _) => committer.with_lease(l.clone()),
                (None, Some(_)) => committer.shared(),
                (None, None) => committer,
            });
            let ctx = Arc::new(SessionCtx {
                operator: spec.name.to_string(),
                kind: spec.kind,
                session_id,
                config_tbls: registry.own_tables(&spec, &doc),
                settings,
                connections,
                datastore: root,
                tbl_root,
                store: store.clone(),
                committer,
                worker,
                budget: crate::context::Budget::new(&settings_for_budget),
                progress: std::sync::OnceLock::new(),
                migrate: std::sync::OnceLock::new(),
                metrics: crate::metrics::Metrics::new(
                    &settings_for_budget.id,
                    &settings_for_budget.user,
                    spec.name,
                )
                .for_worker(worker_name.as_deref()),
            });
            let operator = (spec.build)(&ctx)?;
            Ok::<_, Error>((ctx, operator))
        }
        .await;
        let (ctx, operator) = match built {
            Ok(b) => b,
            Err(e) => {
                // Nothing ran: hand the lease back so the next start need not wait.
                if let (Some(k), Some(l)) = (&keep_alive, &lease) {
                    k.stop().await;
                    let _ = l.release().await;
                }
                return Err(e);
            }
        };
        let tasks = TaskStore::new(task_root.for_anchovy(&ctx.settings.user, &ctx.settings.id));
        Ok(Session {
            ctx,
            operator,
            tasks,
            lease,
            keep_alive,
            _entry: entry,
            discovered: std::sync::Mutex::new(None),
            replay_rejects: false,
        })
    }

    /// True while this session holds its run lease, or is a worker (which needs none:
    /// its claims are per table); always false for check sessions.
    pub fn lease_held(&self) -> bool {
        match &self.lease {
            Some(l) => !l.is_lost(),
            None => self._entry.is_some(),
        }
    }

    /// Makes the table tasks read the tables' quarantined records again instead of
    /// their sources (`anchovy rejects replay`); everything else runs as `start` does.
    pub fn replaying_rejects(mut self) -> Session {
        self.replay_rejects = true;
        self
    }

    /// The session context.
    pub fn ctx(&self) -> &Arc<SessionCtx> {
        &self.ctx
    }

    /// The operator.
    pub fn operator(&self) -> &Arc<dyn Operator> {
        &self.operator
    }

    /// Runs the lifecycle until done (task mode), or until `cancel` (service mode).
    /// Never fails: errors become ERR tasks and the result's status and exit code.
    pub async fn run(&self, cancel: CancellationToken) -> SessionResult {
        self.run_with(CancellationToken::new(), cancel).await
    }

    /// [`Session::run`] with a graceful stop as well: once `stop` fires, a service
    /// finishes its current batch and starts no other (then exits 0); `cancel` cancels
    /// the work in flight at once (uncommitted work is redone by the next run).
    pub async fn run_with(
        &self,
        stop: CancellationToken,
        cancel: CancellationToken,
    ) -> SessionResult {
        let started = Instant::now();
        let started_at = now_rfc3339();
        let empty = Arc::new(TblSet::default());
        let mut session_tasks: Vec<TaskLog> = Vec::new();
        let mut batches: Vec<BatchResult> = Vec::new();
        let mut batches_omitted = 0u64;
        let mut fatal: Option<Error> = None;
        let (log, err) = self.hook_task(TaskType::Startup, 0, empty.clone()).await;
        session_tasks.push(log);
        if let Some(e) = err {
            fatal = Some(e);
        } else {
            self.ctx.metrics.set_started();
            let mut batch_id = 0;
            let mut failures = 0u32;
            loop {
                batch_id += 1;
                let (b, stopped) = self.run_batch(batch_id, &cancel).await;
                failures = if b.status == Status::Ok {
                    0
                } else {
                    failures + 1
                };
                self.ctx.metrics.record_batch(&b);
                batches.push(b);
                if batches.len() > crate::results::KEPT_BATCHES {
                    batches.remove(0);
                    batches_omitted += 1;
                }
                if let Some(e) = stopped {
                    let cancelled = matches!(e, Error::Cancelled { .. });
                    if !self.ctx.settings.service() || cancelled {
                        fatal = Some(e);
                        break;
                    }
                    tracing::warn!(batch = batch_id, error = %e.chain(), "batch stopped; the service goes on");
                }
                if !self.ctx.settings.service() || cancel.is_cancelled() || stop.is_cancelled() {
                    break;
                }
                if self.lease.as_ref().is_some_and(|l| l.is_lost()) {
                    tracing::error!(
                        "the run lease was taken over by another run: this service stops (exit 5)"
                    );
                    break;
                }
                // After failed batches the pause doubles (a database down, a server
                // throttling), up to MAX_BACKOFF; one good batch resets it.
                let base = self.ctx.settings.service_pause;
                let pause = if failures == 0 {
                    base
                } else {
                    (base * 2u32.saturating_pow(failures.min(16))).min(MAX_BACKOFF.max(base))
                };
                if failures > 0 {
                    tracing::warn!(
                        failures,
                        pause_s = pause.as_secs_f64(),
                        "batch failed; backing off before the next one"
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = cancel.cancelled() => break,
                    _ = stop.cancelled() => break,
                }
            }
        }
        if fatal.is_some() && batches.is_empty() {
            // STARTUP failed: ERROR runs at session level.
            let e = fatal.as_ref().map(|e| e.chain()).unwrap_or_default();
            let (mut log, _) = self.hook_task(TaskType::Error, 0, empty.clone()).await;
            log.status = Status::Err;
            log.error = Some(e);
            session_tasks.push(log);
        }
        let (log, _) = self.hook_task(TaskType::Shutdown, 0, empty).await;
        session_tasks.push(log);
        // The next start reads the checkpoints in one request.
        self.ctx.committer.checkpoints().snapshot().await;
        // Between SHUTDOWN and the lease release: a crash here leaves a held lease.
        let _ = crate::failpoint::hit("session.shutdown");
        if let Some(k) = &self.keep_alive {
            k.stop().await;
        }
        if let Some(l) = &self.lease
            && !l.is_lost()
            && let Err(e) = l.release().await
        {
            tracing::warn!(error = %e.chain(), "releasing the run lease failed; it expires on its own");
        }

        let all_ok = session_tasks.iter().all(|t| t.status == Status::Ok)
            && batches.iter().all(|b| b.status == Status::Ok);
        let exit_code = match &fatal {
            _ if self.lease.as_ref().is_some_and(|l| l.is_lost()) => exit::LOCKED,
            // A service stopped by a signal: a clean stop, whatever the last batch did.
            _ if self.ctx.settings.service() && stop.is_cancelled() => exit::OK,
            Some(e) => e.exit_code().max(exit::FAILED),
            None if all_ok && self.ctx.budget.pending() => exit::PENDING,
            None if all_ok => exit::OK,
            None => exit::FAILED,
        };
        let result = SessionResult {
            anchovy_id: self.ctx.settings.id.clone(),
            anchovy_user: self.ctx.settings.user.clone(),
            session_id: self.ctx.session_id.clone(),
            operator: self.ctx.operator.clone(),
            more_work_pending: self.ctx.budget.pending(),
            status: if exit_code == exit::OK || exit_code == exit::PENDING {
                Status::Ok
            } else {
                Status::Err
            },
            exit_code,
            started_at,
            finished_at: now_rfc3339(),
            duration: started.elapsed().as_millis() as u64,
            error: fatal.as_ref().map(|e| e.chain()),
            datastore: self.ctx.store.location(),
            tasks: session_tasks,
            batches,
            batches_omitted,
        };
        let results_key = match &self.ctx.worker {
            Some(w) => layout::worker_results_key(&w.name),
            None => layout::RUN_RESULTS.to_string(),
        };
        if let Err(e) = self
            .ctx
            .store
            .put_json_redacted(&results_key, &result)
            .await
        {
            tracing::error!(error = %e.chain(), "cannot write run results");
        }
        result
    }

    /// One batch. Returns its result and the error that stopped it, if any.
    async fn run_batch(
        &self,
        batch_id: u64,
        cancel: &CancellationToken,
    ) -> (BatchResult, Option<Error>) {
        let started = Instant::now();
        let inflight: Inflight = Arc::default();
        let done: Arc<Mutex<Vec<TaskLog>>> = Arc::default();
        let body = self.batch_body(batch_id, inflight.clone(), done.clone());
        let outcome: Result<()> = match self.ctx.settings.execution_timeout {
            Some(t) => tokio::select! {
                r = tokio::time::timeout(t, body) => r.unwrap_or_else(|_| Err(Error::ExecutionTimeout { batch_id, seconds: t.as_secs_f64() })),
                _ = cancel.cancelled() => Err(Error::Cancelled { reason: "interrupted by a signal".into() }),
            },
            None => tokio::select! {
                r = body => r,
                _ = cancel.cancelled() => Err(Error::Cancelled { reason: "interrupted by a signal".into() }),
            },
        };
        let mut tasks = std::mem::take(&mut *done.lock().unwrap_or_else(|p| p.into_inner()));
        // Tasks the stop left unfinished (or never started) are logged as ERR.
        if let Err(e) = &outcome {
            let left: Vec<((u8, String), Instant)> =
                std::mem::take(&mut *inflight.lock().unwrap_or_else(|p| p.into_inner()))
                    .into_iter()
                    .collect();
            for ((kind, tbl), since) in left {
                let task_type = if kind == task_order(TaskType::Xopen) {
                    TaskType::Xopen
                } else {
                    TaskType::Tbl
                };
                let mut log = self.make_log(
                    batch_id,
                    task_type,
                    (!tbl.is_empty()).then_some(tbl),
                    since.elapsed(),
                    Default::default(),
                );
                log.status = Status::Err;
                log.error = Some(match e {
                    Error::ExecutionTimeout { .. } if task_type == TaskType::Tbl => format!(
                        "{}; this table's work since its last commit is not kept, and the next run starts again from that commit: a file or load that takes longer than -t is cut off the same way on every run (raise -t, or bound the run with --max-duration, which stops between files and keeps what is done)",
                        e.chain()
                    ),
                    Error::ExecutionTimeout { .. } | Error::Cancelled { .. } => e.chain(),
                    other => format!(
                        "cancelled: another task failed under batch policy RAISE: {}",
                        other.chain()
                    ),
                });
                self.write_log(&log).await;
                tasks.push(log);
            }
        }
        let stop = outcome.err();
        let empty = Arc::new(TblSet::default());
        if let Some(e) = &stop {
            tracing::error!(batch = batch_id, error = %e.chain(), "batch stopped");
            let (mut log, _) = self
                .hook_task(TaskType::Error, batch_id, empty.clone())
                .await;
            log.status = Status::Err;
            log.error = Some(match log.error.take() {
                Some(hook_err) => format!("{}; the error hook also failed: {hook_err}", e.chain()),
                None => e.chain(),
            });
            self.write_log(&log).await;
            tasks.push(log);
        }
        let (log, _) = self.hook_task(TaskType::Xclose, batch_id, empty).await;
        tasks.push(log);
        let status = if stop.is_none() && tasks.iter().all(|t| t.status == Status::Ok) {
            Status::Ok
        } else {
            Status::Err
        };
        (
            BatchResult {
                batch_id,
                status,
                duration: started.elapsed().as_millis() as u64,
                tasks,
            },
            stop,
        )
    }

    /// XOPEN, discovery and the table tasks: everything the execution timeout covers.
    async fn batch_body(
        &self,
        batch_id: u64,
        inflight: Inflight,
        done: Arc<Mutex<Vec<TaskLog>>>,
    ) -> Result<()> {
        let s = &self.ctx.settings;
        // A worker skips the tables released after this instant: done in this round.
        let round = chrono::Utc::now();
        let xctx = Arc::new(TaskCtx::new(
            self.ctx.clone(),
            batch_id,
            TaskType::Xopen,
            Arc::new(TblSet::default()),
            None,
        ));
        let key = (task_order(TaskType::Xopen), String::new());
        inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), Instant::now());
        let t0 = Instant::now();
        let xopen: Result<TblSet> = async {
            self.operator
                .on_task(&xctx)
                .await
                .map_err(|e| wrap(TaskType::Xopen.doing().into(), e))?;
            // In service mode discovered tables may be reused for `discovery_ttl`.
            let ttl = if s.service() { s.discovery_ttl } else { Duration::ZERO };
            let cached = self
                .discovered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .filter(|(at, _)| !ttl.is_zero() && at.elapsed() < ttl)
                .map(|(_, t)| t.clone());
            let discovered = match cached {
                Some(t) => t,
                None => {
                    let found = self
                        .operator
                        .discover_tbls(&xctx)
                        .await
                        .map_err(|e| wrap("discover_tbls".into(), e))?;
                    *self.discovered.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((Instant::now(), found.clone()));
                    found
                }
            };
            let mut tbls: BTreeMap<String, Tbl> = BTreeMap::new();
            match discovered {
                // With discovery the discovered tables are the tables; config entries of
                // the same name refine them (config wins).
                Some(found) => {
                    for t in found {
                        let merged = match self.ctx.config_tbls.get(&t.name) {
                            Some(cfg) => cfg.merged_over(&t),
                            None => t,
                        };
                        tbls.insert(merged.name.clone(), merged);
                    }
                    // A selector entry stands for the tables discovery expanded it to,
                    // not for a table of its name (the operator says which are).
                    for t in self.ctx.config_tbls.iter().filter(|t| !self.operator.is_selector(t)) {
                        let used = tbls.contains_key(&t.name) || tbls.keys().any(|k| k.ends_with(&format!(".{}", t.name)));
                        if !used {
                            matched_nothing(
                                s,
                                "tbls",
                                format!("table `{}` of the config file was not discovered by the operator; it is skipped", t.name),
                            )?;
                        }
                    }
                }
                None => {
                    for t in self.ctx.config_tbls.iter() {
                        tbls.insert(t.name.clone(), t.clone());
                    }
                }
            }
            let all = TblSet::new(tbls.into_values());
            for (what, patterns) in [("--enable", &s.enabled), ("--disable", &s.disabled)] {
                let unmatched = all.unmatched(patterns);
                if !unmatched.is_empty() {
                    let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
                    matched_nothing(
                        s,
                        what,
                        format!(
                            "{} matches no table; tables: {}",
                            unmatched.join(", "),
                            if names.is_empty() { "none".to_string() } else { names.join(", ") }
                        ),
                    )?;
                }
            }
            Ok(all.filter(&s.enabled, &s.disabled))
        }
        .await;
        inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        let mut data = xctx.take_data();
        let tbls = match xopen {
            Ok(t) => {
                data.insert(
                    "tables".into(),
                    t.iter().map(|t| t.name.clone()).collect::<Vec<_>>().into(),
                );
                let log = self.make_log(batch_id, TaskType::Xopen, None, t0.elapsed(), data);
                self.write_log(&log).await;
                done.lock().unwrap_or_else(|p| p.into_inner()).push(log);
                Arc::new(t)
            }
            Err(e) => {
                let mut log = self.make_log(batch_id, TaskType::Xopen, None, t0.elapsed(), data);
                log.status = Status::Err;
                log.error = Some(e.chain());
                self.write_log(&log).await;
                done.lock().unwrap_or_else(|p| p.into_inner()).push(log);
                return Err(e);
            }
        };
        if tbls.is_empty() {
            tracing::warn!(
                "no tables to run: add tables under `tbls:` in config.yaml, or check -e/-d"
            );
        }

        let sources: Vec<Arc<dyn crate::stream::Source>> = if self.replay_rejects {
            vec![Arc::new(crate::reject::ReplaySource {
                operator: self.operator.clone(),
            })]
        } else {
            self.operator.sources()
        };
        let sinks = self.operator.sinks();
        // The units of work: each table, or each part of a table that splits
        // ([`Operator::parts`]), named `<table>#<part>`.
        let mut units: Vec<(String, Tbl, Option<crate::worker::Part>)> = Vec::new();
        for t in tbls.iter() {
            let count = self.operator.parts(t).clamp(1, crate::worker::MAX_PARTS);
            if count == 1 {
                units.push((t.name.clone(), t.clone(), None));
            } else {
                for index in 0..count {
                    let part = crate::worker::Part { index, count };
                    units.push((part.unit(&t.name), t.clone(), Some(part)));
                }
            }
        }
        // A worker runs its share of them, in its order ([`crate::worker`]).
        if let Some(w) = &self.ctx.worker {
            units = w.order(units, |u| u.0.as_str());
        }
        // The parts of split tables first (a table is split because it is big): the
        // longest work starts early instead of trailing at the end of the batch.
        units.sort_by_key(|u| u.2.is_none());
        // Every unit is "in flight" until it finishes: if the batch stops, the ones left
        // (running or never started) are logged as ERR by run_batch.
        for (unit, _, _) in &units {
            inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((task_order(TaskType::Tbl), unit.clone()), Instant::now());
        }
        let mut pending = units.into_iter();
        let mut set = tokio::task::JoinSet::new();
        let mut names: std::collections::HashMap<tokio::task::Id, String> = Default::default();
        let mut first_err: Option<Error> = None;
        loop {
            // Start units in order, up to the concurrency limit.
            while first_err.is_none() && set.len() < s.max_concurrency {
                let Some((unit, tbl, part)) = pending.next() else {
                    break;
                };
                let key = (task_order(TaskType::Tbl), unit.clone());
                let (ctx, tbls, sources, sinks, inflight, tasks) = (
                    self.ctx.clone(),
                    tbls.clone(),
                    sources.clone(),
                    sinks.clone(),
                    inflight.clone(),
                    self.tasks.clone(),
                );
                let name = unit.clone();
                let span = tracing::info_span!("table", table = %name, batch = batch_id);
                let handle = set.spawn(tracing::Instrument::instrument(
                    async move {
                        let asked = Instant::now();
                        let claimed = match &ctx.worker {
                            None => Ok(None),
                            Some(w) => claim(&ctx, w, &unit, round).await.map(Some),
                        };
                        let (claim, keep) = match claimed {
                            Ok(None) => (None, None),
                            Ok(Some(Claimed::Mine(c, k))) => (Some(c), Some(k)),
                            Ok(Some(Claimed::Skip(why))) => {
                                tracing::info!(table = %unit, "skipped: {why}");
                                inflight
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .remove(&key);
                                return None;
                            }
                            Err(e) => {
                                let mut log = make_log(
                                    &ctx,
                                    batch_id,
                                    TaskType::Tbl,
                                    Some(tbl.name.clone()),
                                    Duration::ZERO,
                                    Default::default(),
                                );
                                log.status = Status::Err;
                                log.error = Some(format!("claiming the table: {}", e.chain()));
                                if let Err(e) = tasks.write(&log).await {
                                    tracing::error!(error = %e.chain(), "cannot write task log");
                                }
                                inflight
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .remove(&key);
                                return Some((log, Some(e)));
                            }
                        };
                        let claim_ms = asked.elapsed().as_secs_f64() * 1000.0;
                        inflight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(key.clone(), Instant::now());
                        let (mut log, err) = run_table(
                            ctx,
                            batch_id,
                            tbls,
                            tbl,
                            &sources,
                            &sinks,
                            claim.clone(),
                            part,
                        )
                        .await;
                        if claim.is_some() {
                            // What taking the claim and catching up cost (coordination).
                            log.data.insert(
                                "claim_ms".into(),
                                ((claim_ms * 10.0).round() / 10.0).into(),
                            );
                        }
                        if let Err(e) = tasks.write(&log).await {
                            tracing::error!(error = %e.chain(), "cannot write task log");
                        }
                        if let (Some(c), Some(k)) = (claim, keep) {
                            release(c, k).await;
                        }
                        inflight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&key);
                        Some((log, err))
                    },
                    span,
                ));
                names.insert(handle.id(), name);
            }
            let Some(joined) = set.join_next_with_id().await else {
                break;
            };
            let (log, err) = match joined {
                Ok((_, Some(r))) => r,
                // Another worker's table.
                Ok((_, None)) => continue,
                // Aborted under RAISE: run_batch logs it from `inflight`.
                Err(e) if e.is_cancelled() => continue,
                Err(e) => {
                    // A panic in operator code fails the table; the process lives on.
                    let name = names.get(&e.id()).cloned().unwrap_or_default();
                    inflight
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&(task_order(TaskType::Tbl), name.clone()));
                    let err = Error::operator(
                        format!("table {name}"),
                        format!("the table task panicked: {e}"),
                    );
                    let mut log = self.make_log(
                        batch_id,
                        TaskType::Tbl,
                        Some(name),
                        Duration::ZERO,
                        Default::default(),
                    );
                    log.status = Status::Err;
                    log.error = Some(err.chain());
                    self.write_log(&log).await;
                    (log, Some(err))
                }
            };
            done.lock().unwrap_or_else(|p| p.into_inner()).push(log);
            if let Some(e) = err
                && s.batch_policy == BatchPolicy::Raise
                && first_err.is_none()
            {
                first_err = Some(e);
                set.abort_all();
            }
        }
        match first_err {
            // The stopping error keeps its own exit code (a config error stays 2).
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn hook_task(
        &self,
        task_type: TaskType,
        batch_id: u64,
        tbls: Arc<TblSet>,
    ) -> (TaskLog, Option<Error>) {
        let ctx = TaskCtx::new(self.ctx.clone(), batch_id, task_type, tbls, None);
        let t0 = Instant::now();
        let r = self
            .operator
            .on_task(&ctx)
            .await
            .map_err(|e| wrap(task_type.doing().to_string(), e));
        let mut log = self.make_log(batch_id, task_type, None, t0.elapsed(), ctx.take_data());
        let err = r.err();
        if let Some(e) = &err {
            log.status = Status::Err;
            log.error = Some(e.chain());
        }
        if task_type != TaskType::Error {
            self.write_log(&log).await;
        }
        (log, err)
    }

    fn make_log(
        &self,
        batch_id: u64,
        task_type: TaskType,
        tbl: Option<String>,
        took: Duration,
        data: serde_json::Map<String, serde_json::Value>,
    ) -> TaskLog {
        make_log(&self.ctx, batch_id, task_type, tbl, took, data)
    }

    async fn write_log(&self, log: &TaskLog) {
        if let Err(e) = self.tasks.write(log).await {
            tracing::error!(error = %e.chain(), "cannot write task log");
        }
    }
}

/// A pattern or an upstream that matched nothing: a warning, or with `--strict` a
/// configuration error (exit 2) so that a cron job notices the typo.
///
/// # Errors
/// [`Error::Config`] under `--strict`.
pub fn matched_nothing(settings: &Settings, what: &str, message: String) -> Result<()> {
    if settings.strict {
        Err(Error::config(what, format!("{message} (--strict)")))
    } else {
        tracing::warn!("{what}: {message}");
        Ok(())
    }
}
