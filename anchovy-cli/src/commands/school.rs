//! `anchovy school run -f school.yaml`: a set of anchovies run as a DAG.
//!
//! ```yaml
//! parallel: 2              # anchovies at the same time (default 4)
//! policy: CONTINUE         # or RAISE: after a failure start nothing new
//! env: {ACHVY_HOME: /data} # for every member (each member can add its own)
//! anchovies:
//!   - start -op files.CsvDownloader --id quickstart
//!   - run: start -op sql.Uploader --id warehouse -U quickstart
//!     env: {ACHVY_CNXN__DB__URI: "postgres://..."}
//! ```
//!
//! Each member is an `anchovy start` command line (a string, or `run:` with `env:`),
//! or any other program: a `run:` whose first word is not `start`, `run` or a flag
//! (`run: dbt build --select staging`), with an optional `id:` (default: the program's
//! name) and `after:` (the ids it waits for; default: every member listed before it),
//! so a dbt step follows its loads. A program's output goes to stderr; it succeeds
//! when it exits 0.
//! A member waits for the members whose ids it names with `-U` (its upstreams) or
//! `after:`; the others run side by side up to `parallel`. Every member is its own process of this
//! binary, so each has its run lease, logs and results. A member whose upstream failed
//! is skipped. Under `RAISE` nothing new starts after a failure. The summary table goes
//! to stdout (`--json` for JSON); the exit code is 0 when every member succeeded (or
//! stopped on a budget, 6), else 1; 2 for a bad school file.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Instant;

use anchovy_core::Error;
use anchovy_core::config::BatchPolicy;
use anchovy_core::error::exit;
use clap::Parser;
use serde::Deserialize;

use crate::args::{Cli, Command, SchoolArgs, SchoolCommand};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchoolFile {
    #[serde(default)]
    parallel: Option<usize>,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    anchovies: Vec<Member>,
}

#[derive(Debug)]
enum Member {
    Line(String),
    /// The original tool's form of a member: its command line as a list of words.
    Words(Vec<String>),
    Entry {
        run: String,
        env: BTreeMap<String, String>,
        /// A program member's id.
        id: Option<String>,
        /// The members it waits for (besides its `-U` upstreams).
        after: Option<Vec<String>>,
    },
}

/// A member is a command line, or `{run: <command line>, env: {NAME: value}}`; any
/// other shape is refused with a sentence saying which.
impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let shape = "each entry of `anchovies:` is a command line (`-op files.CsvDownloader --id sales`) or a map with `run:` (an anchovy command line, or any program's: `dbt build`) and optional `env:` (NAME: value), `id:` and `after:` (ids to wait for)";
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(Member::Line(s)),
            serde_json::Value::Array(words) => words
                .into_iter()
                .map(|w| match w {
                    serde_json::Value::String(s) => Ok(s),
                    serde_json::Value::Number(n) => Ok(n.to_string()),
                    _ => Err(D::Error::custom(format!(
                        "a member given as a list holds words (text); {shape}"
                    ))),
                })
                .collect::<Result<_, _>>()
                .map(Member::Words),
            serde_json::Value::Object(mut m) => {
                let run = match m.remove("run") {
                    Some(serde_json::Value::String(r)) => r,
                    Some(_) => {
                        return Err(D::Error::custom(format!("`run:` must be text; {shape}")));
                    }
                    None => return Err(D::Error::custom(format!("a map without `run:`; {shape}"))),
                };
                let env = match m.remove("env") {
                    None | Some(serde_json::Value::Null) => BTreeMap::new(),
                    Some(serde_json::Value::Object(e)) => e
                        .into_iter()
                        .map(|(k, v)| match v {
                            serde_json::Value::String(s) => Ok((k, s)),
                            serde_json::Value::Number(n) => Ok((k, n.to_string())),
                            serde_json::Value::Bool(b) => Ok((k, b.to_string())),
                            _ => Err(D::Error::custom(format!(
                                "`env: {k}:` must be a single value"
                            ))),
                        })
                        .collect::<Result<_, _>>()?,
                    Some(_) => {
                        return Err(D::Error::custom(format!(
                            "`env:` must be a map of NAME: value; {shape}"
                        )));
                    }
                };
                let id = match m.remove("id") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(s)) => Some(s),
                    Some(_) => {
                        return Err(D::Error::custom(format!("`id:` must be text; {shape}")));
                    }
                };
                let after = match m.remove("after") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(s)) => Some(vec![s]),
                    Some(serde_json::Value::Array(a)) => Some(
                        a.into_iter()
                            .map(|v| match v {
                                serde_json::Value::String(s) => Ok(s),
                                _ => Err(D::Error::custom(format!(
                                    "`after:` lists member ids (text); {shape}"
                                ))),
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                    Some(_) => {
                        return Err(D::Error::custom(format!(
                            "`after:` is an id or a list of ids; {shape}"
                        )));
                    }
                };
                if let Some(k) = m.keys().next() {
                    return Err(D::Error::custom(format!(
                        "unknown key `{k}` in a member; {shape}"
                    )));
                }
                Ok(Member::Entry {
                    run,
                    env,
                    id,
                    after,
                })
            }
            _ => Err(D::Error::custom(shape)),
        }
    }
}

/// One member, parsed.
#[derive(Debug, Clone)]
struct Job {
    id: String,
    operator: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    upstream: Vec<String>,
    /// Any other program (`run: dbt build`): `args` is its command line, not anchovy's.
    program: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Ok,
    Pending,
    Failed(i32),
    Skipped(String),
}

impl Outcome {
    fn label(&self) -> String {
        match self {
            Outcome::Ok => "OK".into(),
            Outcome::Pending => "OK (more work pending)".into(),
            Outcome::Failed(c) => format!("FAILED (exit {c})"),
            Outcome::Skipped(why) => format!("SKIPPED ({why})"),
        }
    }
    fn good(&self) -> bool {
        matches!(self, Outcome::Ok | Outcome::Pending)
    }
}

/// Runs `anchovy school ...`.
pub async fn run(args: &SchoolArgs) -> ExitCode {
    let SchoolCommand::Run(r) = &args.command;
    if r.anchovy_executable.is_some() {
        return crate::report(&Error::config(
            "--anchovy-executable",
            "the original tool's --anchovy-executable is not supported: every member runs as a process of this binary; drop the flag",
        ));
    }
    let source = match (&r.file, &r.data) {
        (Some(f), _) => Source::File(f),
        (None, Some(d)) => Source::Text(d),
        (None, None) => Source::Text(""),
    };
    let (jobs, parallel, policy, env) = match load(source, r.parallel, r.policy.as_deref()) {
        Ok(x) => x,
        Err(e) => return crate::report(&e),
    };
    let results = execute(&jobs, parallel, policy, &env).await;
    let all_good = results.values().all(|(o, _, _)| o.good());
    if r.json {
        let v: Vec<serde_json::Value> = jobs
            .iter()
            .map(|j| {
                let (o, ms, rows) = &results[&j.id];
                serde_json::json!({"id": j.id, "operator": j.operator, "outcome": o.label(), "ok": o.good(), "duration_ms": ms, "rows": rows})
            })
            .collect();
        crate::outln!("{}", serde_json::Value::Array(v));
    } else {
        let rows: Vec<Vec<String>> = jobs
            .iter()
            .map(|j| {
                let (o, ms, rows) = &results[&j.id];
                vec![
                    j.id.clone(),
                    j.operator.clone(),
                    j.upstream.join(","),
                    o.label(),
                    format!("{:.1}", *ms as f64 / 1000.0),
                    rows.map(|r| r.to_string()).unwrap_or_default(),
                ]
            })
            .collect();
        crate::out!(
            "{}",
            super::table(
                &[
                    "ANCHOVY", "OPERATOR", "UPSTREAM", "OUTCOME", "SECONDS", "ROWS"
                ],
                &rows
            )
        );
    }
    ExitCode::from(if all_good { exit::OK } else { exit::FAILED })
}

type Loaded = (Vec<Job>, usize, BatchPolicy, BTreeMap<String, String>);

/// Where the school file comes from.
enum Source<'a> {
    File(&'a std::path::Path),
    Text(&'a str),
}

fn load(
    source: Source<'_>,
    parallel: Option<usize>,
    policy: Option<&str>,
) -> Result<Loaded, Error> {
    let (text, origin) = match source {
        Source::File(path) => (
            std::fs::read_to_string(path).map_err(|source| Error::Io {
                op: "read the school file",
                path: path.to_path_buf(),
                source,
            })?,
            path.display().to_string(),
        ),
        Source::Text(t) => (t.to_string(), "--school-data".to_string()),
    };
    let syntax = |e: serde_saphyr::Error| Error::ConfigSyntax {
        origin: origin.clone(),
        message: e.to_string(),
    };
    // The original tool's school file is a bare list of command lines, run one at a
    // time in order: so is it here (parallel 1 unless asked otherwise).
    let f: SchoolFile = match serde_saphyr::from_str::<serde_json::Value>(&text).map_err(syntax)? {
        serde_json::Value::Array(list) => SchoolFile {
            parallel: Some(1),
            policy: None,
            env: BTreeMap::new(),
            anchovies: serde_json::from_value(serde_json::Value::Array(list))
                .map_err(|e| Error::config(origin.clone(), e.to_string()))?,
        },
        _ => serde_saphyr::from_str(&text).map_err(syntax)?,
    };
    let bad = |m: String| Error::config(origin.clone(), m);
    let policy = match policy
        .or(f.policy.as_deref())
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("CONTINUE") => BatchPolicy::Continue,
        Some("RAISE") => BatchPolicy::Raise,
        Some(p) => return Err(bad(format!("policy `{p}` is not RAISE or CONTINUE"))),
    };
    let parallel = parallel.or(f.parallel).unwrap_or(4).max(1);
    let mut jobs: Vec<Job> = Vec::new();
    // Program members' `after:`, checked once every id is known.
    let mut waits: Vec<(usize, Vec<String>)> = Vec::new();
    for (i, m) in f.anchovies.into_iter().enumerate() {
        let (line, env, given_id, after) = match m {
            Member::Line(l) => (l, BTreeMap::new(), None, None),
            Member::Words(w) => (
                shlex::try_join(w.iter().map(String::as_str))
                    .map_err(|_| bad(format!("anchovies[{i}]: a word holds a NUL byte")))?,
                BTreeMap::new(),
                None,
                None,
            ),
            Member::Entry {
                run,
                env,
                id,
                after,
            } => (run, env, id, after),
        };
        // Split like a POSIX shell would (quotes, escapes), without running one.
        let mut args: Vec<String> = shlex::split(&line)
            .ok_or_else(|| bad(format!("anchovies[{i}] `{line}`: unbalanced quotes")))?;
        let what = format!("anchovies[{i}] `{line}`");
        let anchovy = match args.first().map(String::as_str) {
            Some("anchovy") => {
                args.remove(0);
                true
            }
            Some(w) => w == "start" || w == "run" || w.starts_with('-'),
            None => return Err(bad(format!("{what}: an empty command line"))),
        };
        if !anchovy {
            // Any other program: it waits for `after:`, or for everything before it.
            let program = std::path::Path::new(&args[0])
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| args[0].clone());
            let id = given_id.unwrap_or(program);
            if jobs.iter().any(|j| j.id == id) {
                return Err(bad(format!(
                    "{what}: the id `{id}` is used twice (give the member its own `id:`)"
                )));
            }
            let upstream = match after {
                Some(a) => {
                    waits.push((i, a.clone()));
                    a
                }
                None => jobs.iter().map(|j| j.id.clone()).collect(),
            };
            jobs.push(Job {
                id,
                operator: "(command)".into(),
                args,
                env,
                upstream,
                program: true,
            });
            continue;
        }
        if given_id.is_some() {
            return Err(bad(format!(
                "{what}: an anchovy member's id is its --id, not `id:`"
            )));
        }
        let argv = std::iter::once("anchovy".to_string()).chain(args.iter().cloned());
        let parsed =
            Cli::try_parse_from(crate::args::rewrite_args(argv.map(Into::into))).map_err(|e| {
                bad(format!(
                    "{what}: {}",
                    e.render().to_string().lines().next().unwrap_or_default()
                ))
            })?;
        let Command::Start(a) = parsed.command else {
            return Err(bad(format!(
                "{what}: a member is an `anchovy start` command line"
            )));
        };
        let given = a.config.layer();
        let text = |key: &str| given.get(key).and_then(|v| v.as_str()).map(String::from);
        let id = text("id").ok_or_else(|| bad(format!("{what}: give every member an --id")))?;
        if jobs.iter().any(|j| j.id == id) {
            return Err(bad(format!("{what}: the id `{id}` is used twice")));
        }
        let upstream: Vec<String> = given
            .get("upstream")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|u| u.as_str())
            .flat_map(|u| u.split(',').map(|s| s.trim().to_string()))
            .filter(|s| !s.is_empty())
            .collect();
        let mut upstream = upstream;
        if let Some(a) = after {
            waits.push((i, a.clone()));
            upstream.extend(a);
        }
        jobs.push(Job {
            id,
            operator: text("operator_cls").unwrap_or_default(),
            args,
            env,
            upstream,
            program: false,
        });
    }
    // `after:` names members of this school (an upstream `-U` may be outside it).
    for (i, after) in waits {
        if let Some(u) = after.iter().find(|u| !jobs.iter().any(|j| &j.id == *u)) {
            return Err(bad(format!(
                "anchovies[{i}]: `after: {u}` names no member of this school (its ids: {})",
                jobs.iter()
                    .map(|j| j.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    // Upstreams outside the school are someone else's: not waited for.
    let ids: BTreeSet<String> = jobs.iter().map(|j| j.id.clone()).collect();
    for j in &mut jobs {
        j.upstream.retain(|u| ids.contains(u));
    }
    if let Some(cycle) = find_cycle(&jobs) {
        return Err(bad(format!(
            "the upstreams form a cycle: {}",
            cycle.join(" -> ")
        )));
    }
    Ok((jobs, parallel, policy, f.env))
}

fn find_cycle(jobs: &[Job]) -> Option<Vec<String>> {
    fn visit(
        id: &str,
        jobs: &[Job],
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == id) {
            let mut c = path[i..].to_vec();
            c.push(id.to_string());
            return Some(c);
        }
        if done.contains(id) {
            return None;
        }
        path.push(id.to_string());
        if let Some(j) = jobs.iter().find(|j| j.id == id) {
            for u in &j.upstream {
                if let Some(c) = visit(u, jobs, path, done) {
                    return Some(c);
                }
            }
        }
        path.pop();
        done.insert(id.to_string());
        None
    }
    let mut done = BTreeSet::new();
    jobs.iter()
        .find_map(|j| visit(&j.id, jobs, &mut Vec::new(), &mut done))
}

type Results = BTreeMap<String, (Outcome, u64, Option<u64>)>;

async fn execute(
    jobs: &[Job],
    parallel: usize,
    policy: BatchPolicy,
    env: &BTreeMap<String, String>,
) -> Results {
    let exe = std::env::current_exe().unwrap_or_else(|_| "anchovy".into());
    let mut results: Results = BTreeMap::new();
    let mut running = tokio::task::JoinSet::new();
    let mut raised = false;
    let mut started: BTreeSet<String> = BTreeSet::new();
    loop {
        // Skip members whose upstream did not succeed; start the ready ones.
        for j in jobs {
            if results.contains_key(&j.id) || started.contains(&j.id) {
                continue;
            }
            if let Some(u) = j
                .upstream
                .iter()
                .find(|u| results.get(*u).is_some_and(|(o, _, _)| !o.good()))
            {
                results.insert(
                    j.id.clone(),
                    (
                        Outcome::Skipped(format!("upstream {u} did not succeed")),
                        0,
                        None,
                    ),
                );
            } else if raised {
                results.insert(
                    j.id.clone(),
                    (
                        Outcome::Skipped("policy RAISE after a failure".into()),
                        0,
                        None,
                    ),
                );
            }
        }
        for j in jobs {
            if running.len() >= parallel || raised {
                break;
            }
            let ready = j
                .upstream
                .iter()
                .all(|u| results.get(u).is_some_and(|(o, _, _)| o.good()));
            if results.contains_key(&j.id) || started.contains(&j.id) || !ready {
                continue;
            }
            started.insert(j.id.clone());
            tracing::info!(anchovy = %j.id, "school: starting");
            let mut cmd = if j.program {
                let mut c = tokio::process::Command::new(&j.args[0]);
                c.args(&j.args[1..]);
                // Its output goes to stderr: stdout is the school's summary.
                match std::io::stderr().as_fd().try_clone_to_owned() {
                    Ok(fd) => c.stdout(std::process::Stdio::from(fd)),
                    Err(_) => c.stdout(std::process::Stdio::null()),
                };
                c
            } else {
                let mut c = tokio::process::Command::new(&exe);
                c.args(&j.args)
                    .arg("--compact")
                    .stdout(std::process::Stdio::piped());
                c
            };
            // A member's logs and errors show on the school's stderr.
            cmd.envs(env)
                .envs(&j.env)
                .stderr(std::process::Stdio::inherit())
                .kill_on_drop(true);
            let program = j.program.then(|| j.args[0].clone());
            let id = j.id.clone();
            running.spawn(async move {
                let t0 = Instant::now();
                // spawn, not output(): output() would pipe stderr (and stdout) over what is set.
                let out = match cmd.spawn() {
                    Ok(child) => child.wait_with_output().await,
                    Err(e) => Err(e),
                };
                let ms = t0.elapsed().as_millis() as u64;
                let (outcome, rows) = match out {
                    Ok(o) => {
                        let r: Option<serde_json::Value> = serde_json::from_slice(&o.stdout).ok();
                        let rows = r.as_ref().map(total_rows);
                        let outcome = match o.status.code() {
                            Some(0) => Outcome::Ok,
                            Some(6) if program.is_none() => Outcome::Pending,
                            Some(c) => Outcome::Failed(c),
                            None => Outcome::Failed(-1),
                        };
                        (outcome, rows)
                    }
                    Err(e) => {
                        tracing::error!(anchovy = %id, program = program.as_deref().unwrap_or("anchovy"), error = %e, "school: cannot start the member");
                        (Outcome::Failed(-1), None)
                    }
                };
                (id, outcome, ms, rows)
            });
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        if let Ok((id, outcome, ms, rows)) = done {
            tracing::info!(anchovy = %id, outcome = %outcome.label(), "school: finished");
            if !outcome.good() && policy == BatchPolicy::Raise {
                raised = true;
            }
            results.insert(id, (outcome, ms, rows));
        }
    }
    // Anything never started (cannot happen without a cycle) is reported, not lost.
    for j in jobs {
        results
            .entry(j.id.clone())
            .or_insert((Outcome::Skipped("never ready".into()), 0, None));
    }
    results
}

/// Rows a member moved, from its run results (downloaders: `rows`; uploaders: rows
/// inserted and updated).
fn total_rows(r: &serde_json::Value) -> u64 {
    let mut n = 0;
    for b in r["batches"].as_array().into_iter().flatten() {
        for t in b["tasks"].as_array().into_iter().flatten() {
            let d = &t["data"];
            n += d["rows"].as_u64().unwrap_or(0)
                + d["rows_inserted"].as_u64().unwrap_or(0)
                + d["rows_updated"].as_u64().unwrap_or(0);
        }
    }
    n
}
