//! One TBL task: its pipeline (sources -> sinks -> the datastore), its final commit,
//! the table's metadata in `$tables`, and its task log.

use super::*;

pub(super) fn make_log(
    ctx: &SessionCtx,
    batch_id: u64,
    task_type: TaskType,
    tbl: Option<String>,
    took: Duration,
    data: serde_json::Map<String, serde_json::Value>,
) -> TaskLog {
    TaskLog {
        anchovy_id: ctx.settings.id.clone(),
        anchovy_user: ctx.settings.user.clone(),
        session_id: ctx.session_id.clone(),
        batch_id,
        thread_id: tokio::task::try_id()
            .map(|i| i.to_string())
            .unwrap_or_else(|| "main".into()),
        operator: ctx.operator.clone(),
        task_type,
        duration: took.as_millis() as u64,
        timestamp: now_rfc3339(),
        status: Status::Ok,
        tbl,
        data,
        error: None,
        worker: ctx.worker.as_ref().map(|w| w.name.clone()),
    }
}

/// What a worker got when it asked for a table.
pub(super) enum Claimed {
    /// The claim, and the task renewing it until the table task ends.
    Mine(Claim, crate::lease::KeepAlive),
    /// Not this worker's to run now: why.
    Skip(String),
}

/// Takes a worker's claim on `table` ([`crate::worker`]), then brings the checkpoint
/// state up to the present so the table's task reads what the last holder committed.
/// A table released after `round` began was done in this round: skipped.
///
/// # Errors
/// Datastore errors reading or writing the claim or the commits.
pub(super) async fn claim(
    sess: &SessionCtx,
    worker: &crate::worker::Worker,
    table: &str,
    round: chrono::DateTime<chrono::Utc>,
) -> Result<Claimed> {
    let taken = Lease::take(
        &sess.store,
        Spot::table(table),
        &sess.session_id,
        sess.settings.lease_ttl,
        Some(&worker.name),
        Some(round),
    )
    .await?;
    let lease = match taken {
        Ok(l) => l,
        Err(Taken::Busy(d)) => {
            return Ok(Claimed::Skip(format!(
                "held by {}",
                d.map_or("another worker".into(), |d| d.holder())
            )));
        }
        Err(Taken::Done(d)) => {
            return Ok(Claimed::Skip(format!(
                "done in this round by {} at {}",
                d.worker.as_deref().unwrap_or("another worker"),
                d.renewed_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            )));
        }
    };
    crate::failpoint::hit("claim.taken")?;
    match sess.committer.catch_up().await {
        Ok(since) => {
            let keep = lease.keep_alive();
            Ok(Claimed::Mine(Claim { lease, since }, keep))
        }
        Err(e) => {
            let _ = lease.release().await;
            Err(e)
        }
    }
}

/// Lets a claim go when its table task ended (unless it was lost: then it is not ours).
pub(super) async fn release(claim: Claim, keep: crate::lease::KeepAlive) {
    keep.stop().await;
    if claim.lease.is_lost() {
        return;
    }
    if let Err(e) = claim.lease.release().await {
        tracing::warn!(error = %e.chain(), "releasing the table's claim failed; it expires on its own");
    }
}

/// One TBL task: the pipeline, the final commit and the table metadata.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_table(
    sess: Arc<SessionCtx>,
    batch_id: u64,
    tbls: Arc<TblSet>,
    tbl: Tbl,
    sources: &[Arc<dyn Source>],
    sinks: &[Arc<dyn Sink>],
    claim: Option<Claim>,
    part: Option<crate::worker::Part>,
) -> (TaskLog, Option<Error>) {
    let name = tbl.name.clone();
    let token = claim.as_ref().map(|c| c.lease.token());
    let ctx = Arc::new(
        TaskCtx::new(sess.clone(), batch_id, TaskType::Tbl, tbls, Some(tbl))
            .with_claim(claim)
            .with_part(part),
    );
    let t0 = Instant::now();
    if let Some(p) = sess.progress.get() {
        p.start(&name);
    }
    let mut sink = DatastoreSink::new(ctx.clone());
    let result: Result<()> = async {
        let source = sources
            .iter()
            .find(|s| wildmatch::WildMatch::new(s.tables()).matches(&name))
            .ok_or_else(|| Error::NoSource {
                table: name.clone(),
                operator: sess.operator.clone(),
                patterns: sources.iter().map(|s| s.tables().to_string()).collect(),
            })?;
        run_pipeline(ctx.clone(), source.clone(), sinks, &mut sink).await?;
        sink.check_reject_share(true)?;
        sink.commit().await?;
        let store = TblStore::new(sess.tbl_store(&sess.settings.id))
            .original(sess.settings.data_buffer_cls == crate::data::DataFormat::Original);
        // A table's rejects are no table of their own.
        let mut written: Vec<String> = sink
            .stats
            .keys()
            .filter(|t| crate::reject::rejected_table(t).is_none())
            .cloned()
            .collect();
        if !written.contains(&name) && !ctx.is_not_a_table() {
            written.push(name.clone());
        }
        // Tables the source declared but wrote no row of yet (an empty stream) are
        // tables too: the uploader creates them with their key and columns.
        for t in ctx.declared_names() {
            if !written.contains(&t) {
                written.push(t);
            }
        }
        for t in written {
            let mut inferred = sink
                .stats
                .get(&t)
                .map(|s| s.columns.clone())
                .unwrap_or_default();
            let configured = ctx.tbls.get(&t).or_else(|| sess.config_tbls.get(&t));
            // config.yaml's entry over what the source declared (its key, its types).
            let declared = ctx.declared(&t).map(|d| {
                for (c, ty) in &d.columns {
                    inferred.entry(c.clone()).or_insert(*ty);
                }
                match configured {
                    Some(c) if c.name == t => c.merged_over(&d),
                    _ => d,
                }
            });
            store
                .update(declared.as_ref().or(configured), &t, &inferred)
                .await?;
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        sink.abort().await;
    }
    if let Some(p) = sess.progress.get() {
        p.finish(&name, result.is_ok());
    }
    let mut data = ctx.take_data();
    if let Some(t) = token {
        data.insert("claim_token".into(), t.into());
    }
    if let Some(p) = part {
        data.insert("part".into(), format!("{}/{}", p.index, p.count).into());
    }
    let (rows, bytes, raw_bytes, files) = sink
        .stats
        .iter()
        .filter(|(t, _)| crate::reject::rejected_table(t).is_none())
        .fold((0, 0, 0, 0), |(r, b, raw, f), (_, s)| {
            (r + s.rows, b + s.bytes, raw + s.raw_bytes, f + s.files)
        });
    let rejected = ctx.rejected();
    if rejected > 0 {
        data.insert("rejected".into(), rejected.into());
        let quarantined: u64 = sink
            .stats
            .iter()
            .filter(|(t, _)| crate::reject::rejected_table(t).is_some())
            .map(|(_, s)| s.rows)
            .sum();
        data.insert("quarantined".into(), quarantined.into());
    }
    // What the default sink wrote to the datastore (an uploader writes only positions).
    if sess.kind == crate::operator::OperatorKind::Downloader || files > 0 {
        data.insert("rows".into(), rows.into());
        data.insert("bytes_written".into(), bytes.into());
        data.insert("raw_bytes_written".into(), raw_bytes.into());
        data.insert("files".into(), files.into());
        data.insert("commits".into(), sink.commits.into());
    }
    if sink
        .stats
        .keys()
        .any(|k| *k != name && crate::reject::rejected_table(k).is_none())
    {
        data.insert(
            "tables".into(),
            serde_json::to_value(&sink.stats).unwrap_or_default(),
        );
    }
    if sink.dropped_rows > 0 {
        data.insert(
            "dropped_rows_disabled_tables".into(),
            sink.dropped_rows.into(),
        );
    }
    let mut log = make_log(
        &sess,
        batch_id,
        TaskType::Tbl,
        Some(name.clone()),
        t0.elapsed(),
        data,
    );
    match &result {
        Ok(()) => {
            tracing::info!(
                table = %name,
                ms = log.duration,
                data = %serde_json::Value::Object(log.data.clone()),
                "table done"
            )
        }
        Err(e) => {
            log.status = Status::Err;
            log.error = Some(e.chain());
            tracing::error!(table = %name, error = %e.chain(), "table failed");
        }
    }
    (log, result.err())
}
