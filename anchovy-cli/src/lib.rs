//! # anchovy-cli: the `anchovy` command line
//!
//! [`main_with`] is the whole program for a given [`Registry`]: the stock `anchovy`
//! binary passes the built-in plugins; a user's own binary passes them plus its own
//! operators (see `examples/custom_downloader`). One file per verb under `commands/`.

/// `println!` that never panics: a closed stdout (`anchovy logs | head`) stops the
/// output quietly and the exit code stays the run's own.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `print!` that never panics (see [`outln!`]).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `eprintln!` that never panics on a closed stderr.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

pub mod args;
pub mod commands;
pub mod logging;
pub mod progress;
pub mod serve;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anchovy_core::error::exit;
use anchovy_core::{ConfigDoc, Connections, Error, Layer, Registry, Settings, env};

use crate::args::{Cli, Command, ConfigArgs};

/// Everything a verb needs before it runs.
pub struct Loaded {
    /// Resolved settings.
    pub settings: Settings,
    /// The config document (empty when there is none).
    pub doc: ConfigDoc,
    /// Connections from the environment.
    pub connections: Connections,
}

/// Reads the config document, the environment and the flags, and resolves settings.
///
/// # Errors
/// Configuration errors (exit code 2).
pub fn load(args: &ConfigArgs, vars: &BTreeMap<String, String>) -> Result<Loaded, Error> {
    let doc = if let Some(text) = &args.config {
        // `-c`: text, as the original tool reads it; a path of this project's earlier
        // `-c` when a file of that name exists.
        if !text.contains('\n') && Path::new(text).exists() {
            ConfigDoc::load(Path::new(text))?
        } else {
            ConfigDoc::parse(text, "--config").map_err(|e| {
                if text.contains(['\n', ':', '{']) {
                    e
                } else {
                    Error::config(
                        "-c/--config",
                        format!(
                            "`{text}` is neither an existing file nor a YAML/JSON config document; pass a config file with -f <path>, or the document's text with -c"
                        ),
                    )
                }
            })?
        }
    } else {
        let explicit: Option<PathBuf> = args
            .config_file
            .clone()
            .or_else(|| vars.get(env::CONFIG_FILE).map(PathBuf::from));
        match explicit {
            Some(p) => ConfigDoc::load(&p)?,
            None if Path::new("config.yaml").is_file() => {
                ConfigDoc::load(Path::new("config.yaml"))?
            }
            None if Path::new("config.yml").is_file() => ConfigDoc::load(Path::new("config.yml"))?,
            None => ConfigDoc::default(),
        }
    };
    let cli = args.layer();
    let envl = Layer::from_env(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let file = doc.layer()?;
    let settings = Settings::resolve(&[&cli, &envl, &file], vars)?;
    let connections = Connections::from_env(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    Ok(Loaded {
        settings,
        doc,
        connections,
    })
}

/// Prints an error chain (secrets redacted) and returns its exit code.
pub fn report(e: &Error) -> ExitCode {
    errln!("anchovy: error: {}", e.chain());
    ExitCode::from(e.exit_code())
}

/// The whole `anchovy` program for a registry. Returns the process exit code.
pub fn main_with(registry: Registry) -> ExitCode {
    let cli = match Cli::parse_args(args::rewrite_args(std::env::args_os())) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::CONFIG
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let vars: BTreeMap<String, String> = std::env::vars().collect();
    let config = match &cli.command {
        // Needs no configuration.
        Command::Plugins(a) => return commands::plugins::run(&registry, a),
        Command::Completions(a) => {
            let mut cmd = args::command();
            let mut out = Vec::new();
            clap_complete::generate(a.shell, &mut cmd, "anchovy", &mut out);
            out!("{}", String::from_utf8_lossy(&out));
            return ExitCode::from(exit::OK);
        }
        Command::Man(a) => {
            let root = args::command();
            let page = match &a.verb {
                None => root,
                Some(v) => match root.find_subcommand(v) {
                    // The process ends right after: the name may live for good.
                    Some(sub) => sub
                        .clone()
                        .name(&*format!("anchovy-{}", sub.get_name()).leak()),
                    None => {
                        let verbs: Vec<&str> =
                            root.get_subcommands().map(|c| c.get_name()).collect();
                        return report(&Error::config(
                            "man",
                            format!("no verb `{v}`; one of {}", verbs.join(", ")),
                        ));
                    }
                },
            };
            let mut out = Vec::new();
            return match clap_mangen::Man::new(page).render(&mut out) {
                Ok(()) => {
                    out!("{}", String::from_utf8_lossy(&out));
                    ExitCode::from(exit::OK)
                }
                Err(e) => {
                    errln!("anchovy: error: cannot render the manual page: {e}");
                    ExitCode::from(exit::FAILED)
                }
            };
        }
        Command::School(a) => {
            logging::init("info", anchovy_core::config::LogFormat::Text);
            return match tokio::runtime::Runtime::new() {
                Ok(rt) => rt.block_on(commands::school::run(a)),
                Err(e) => {
                    errln!("anchovy: error: cannot start the async runtime: {e}");
                    ExitCode::from(exit::FAILED)
                }
            };
        }
        Command::Start(a) => &a.config,
        Command::Healthcheck(a) => &a.config,
        Command::Checkpoints(a) => &a.config,
        Command::Logs(a) => &a.config,
        Command::Tables(a) => &a.config,
        Command::Gc(a) => &a.config,
        Command::Migrate(a) => &a.config,
        Command::Rejects(a) => match &a.action {
            Some(args::RejectsAction::Replay(r)) => &r.config,
            None => &a.config,
        },
    };
    let loaded = match load(config, &vars) {
        Ok(l) => l,
        // A healthcheck reports a broken configuration as a failed check.
        Err(e) if matches!(cli.command, Command::Healthcheck(_)) => {
            outln!("FAIL config: {}", e.chain());
            return ExitCode::from(exit::FAILED);
        }
        Err(e) => return report(&e),
    };
    logging::init(&loaded.settings.log_level, loaded.settings.log_format);
    for w in &loaded.connections.warnings {
        tracing::warn!("{w}");
    }
    let unknown = anchovy_core::env::unknown(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if loaded.settings.strict && !unknown.is_empty() {
        return report(&Error::config(
            "strict",
            format!("{} (--strict)", unknown.join("; ")),
        ));
    }
    for w in unknown {
        tracing::warn!("{w}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            errln!("anchovy: error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Start(a) => commands::start::run(&registry, loaded, &a).await,
            Command::Healthcheck(a) => commands::healthcheck::run(&registry, loaded, &a).await,
            Command::Checkpoints(a) => commands::checkpoints::run(loaded, &a).await,
            Command::Logs(a) if a.from_target => {
                commands::logs::from_target(&registry, loaded, &a).await
            }
            Command::Logs(a) => commands::logs::run(loaded, &a).await,
            Command::Tables(a) if a.discover => {
                commands::tables::discover(&registry, loaded, &a).await
            }
            Command::Tables(a) => commands::tables::run(loaded, &a).await,
            Command::Gc(a) => commands::gc::run(loaded, &a).await,
            Command::Rejects(a) => commands::rejects::run(&registry, loaded, &a).await,
            Command::Migrate(a) => commands::start::migrate(&registry, loaded, &a).await,
            Command::Plugins(_)
            | Command::School(_)
            | Command::Completions(_)
            | Command::Man(_) => unreachable!("handled before loading"),
        }
    });
    // Blocking readers notice their closed channel and stop; do not wait on them forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use anchovy_core::config::{Flag, SETTINGS, Setting};
    use clap::Parser;

    /// A command-line value, an env value and a config-file value for every setting
    /// (switches take no command-line value).
    fn samples(key: &str) -> (&'static str, &'static str, serde_json::Value) {
        use serde_json::json;
        match key {
            "id" | "user" | "operator_cls" => ("c", "e", json!("f")),
            "prod" | "strict" | "sql_no_schema_name" => ("", "true", json!(true)),
            "is_task_executor" => ("", "false", json!(false)),
            "execution_timeout" => ("1", "2s", json!(3)),
            "upstream" => ("c", "e,e2", json!(["f"])),
            "enabled" => ("c", "e", json!(["f"])),
            "disabled" => ("c", "e", json!("f")),
            "datastore" | "home" => ("/tmp/c", "/tmp/e", json!("/tmp/f")),
            "checkpoint_cls" => ("datastore", "datastore", json!("datastore")),
            "task_store_cls" | "tbl_store_cls" => {
                ("s3://cli/meta", "az://env/meta", json!("gs://file/meta"))
            }
            "data_buffer_cls" => ("ndjson.gz", "parquet", json!("ndjson.gz")),
            "log_level" => ("debug", "warn", json!("error")),
            "log_format" => ("json", "text", json!("json")),
            "batch_policy" => ("raise", "RAISE", json!("CONTINUE")),
            "max_concurrency" => ("1", "2", json!(3)),
            "batch_size" => ("10", "20", json!(30)),
            "file_max_bytes" => ("100000", "200000", json!(300000)),
            "commit_interval" | "lease_ttl" | "max_duration" | "service_pause" => {
                ("10s", "20s", json!("30s"))
            }
            "port" => ("9001", "9002", json!(9003)),
            "bind" => ("0.0.0.0", "::", json!("127.0.0.2")),
            "metrics_file" => ("/a.prom", "/b.prom", json!("/c.prom")),
            "stop_grace" | "discovery_ttl" | "original_settle" => ("4s", "5s", json!("6s")),
            "max_rows" | "max_bytes" => ("100", "200", json!(300)),
            "workers" => ("2", "auto", json!(4)),
            "worker_num" => ("1", "2", json!(3)),
            "exit_zero_on" => ("locked", "pending", json!(["locked", "pending"])),
            other => panic!("no sample for settings key {other}: add one"),
        }
    }

    /// The command-line words that give setting `s` its sample value, as a user types
    /// them (the first spelling of the declared flag: `-op`, `-t`, `--bind`).
    fn flag_words(s: &Setting, value: &'static str) -> Vec<String> {
        let first = s.flag.spelling().split('/').next().unwrap().to_string();
        match s.flag {
            Flag::Switch(..) => vec![first],
            Flag::Repeat(..) => vec![first.clone(), value.into(), first, format!("{value}2")],
            Flag::Value(..) => vec![first, value.into()],
        }
    }

    fn resolve(key: &str, cli: bool, env: bool) -> Settings {
        let (cli_value, env_value, file_value) = samples(key);
        let def = Setting::find(key).unwrap();
        let mut argv: Vec<String> = vec!["anchovy".into(), "start".into()];
        if cli {
            argv.extend(flag_words(def, cli_value));
        }
        let doc = serde_json::json!({ "config": { key: file_value } }).to_string();
        argv.extend(["--config".to_string(), doc]);
        let parsed = Cli::try_parse_from(args::rewrite_args(argv.iter().map(Into::into)))
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        let Command::Start(a) = parsed.command else {
            unreachable!()
        };
        let mut vars = BTreeMap::new();
        if env {
            vars.insert(def.env.to_string(), env_value.to_string());
        }
        load(&a.config, &vars)
            .unwrap_or_else(|e| panic!("{key}: {e}"))
            .settings
    }

    #[test]
    fn every_setting_works_through_all_three_routes_with_precedence() {
        for def in SETTINGS {
            let key = if def.key == "prod" { "user" } else { def.key };
            let origin = |s: &Settings| s.origins.get(key).cloned().unwrap_or_default();
            let file = resolve(def.key, false, false);
            assert_eq!(
                origin(&file),
                "config: of --config",
                "{} from the file",
                def.key
            );
            let env = resolve(def.key, false, true);
            assert_eq!(
                origin(&env),
                "environment",
                "{} from the environment",
                def.key
            );
            let cli = resolve(def.key, true, true);
            assert_eq!(
                origin(&cli),
                "command line",
                "{} from the command line",
                def.key
            );
        }
        // Spot-check the values themselves.
        assert_eq!(resolve("upstream", true, true).upstream, vec!["c", "c2"]);
        assert_eq!(resolve("upstream", false, true).upstream, vec!["e", "e2"]);
        assert_eq!(resolve("upstream", false, false).upstream, vec!["f"]);
        assert!(resolve("is_task_executor", false, false).service());
        assert!(resolve("is_task_executor", true, false).service());
        assert_eq!(resolve("prod", false, false).user, "prod");
        assert_eq!(resolve("prod", true, false).user, "prod");
        assert_eq!(
            resolve("execution_timeout", false, true).execution_timeout,
            Some(std::time::Duration::from_secs(2))
        );
        assert_eq!(
            resolve("execution_timeout", true, true).execution_timeout,
            Some(std::time::Duration::from_secs(1))
        );
        assert_eq!(
            resolve("operator_cls", true, true).operator_cls.unwrap(),
            "c"
        );
        assert_eq!(resolve("datastore", true, true).datastore, "/tmp/c");
        assert_eq!(resolve("home", false, true).datastore, "/tmp/e");
        assert_eq!(
            resolve("data_buffer_cls", false, true).data_buffer_cls,
            anchovy_core::data::DataFormat::Parquet
        );
        assert_eq!(
            resolve("batch_policy", true, true).batch_policy,
            anchovy_core::BatchPolicy::Raise
        );
        assert_eq!(resolve("port", true, true).port, 9001);
    }

    /// The README's settings table is the one the declarations generate. Run with
    /// `BLESS=1` to write the generated table into the README.
    #[test]
    fn the_readme_settings_table_is_generated_from_the_declarations() {
        const BEGIN: &str =
            "<!-- settings: generated from anchovy-core/src/settings/config/keys.rs -->\n";
        const END: &str = "<!-- end of settings -->";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let start = readme.find(BEGIN).expect("README has the settings markers") + BEGIN.len();
        let end = start
            + readme[start..]
                .find(END)
                .expect("README has the end marker");
        let want = anchovy_core::config::readme_table();
        if readme[start..end] != want {
            if std::env::var_os("BLESS").is_some() {
                let blessed = format!("{}{want}{}", &readme[..start], &readme[end..]);
                std::fs::write(path, blessed).unwrap();
            } else {
                panic!(
                    "the README's settings table is out of date; run \
                     `BLESS=1 cargo test -p anchovy-cli readme` to regenerate it. Expected:\n{want}"
                );
            }
        }
        for v in anchovy_core::env::all() {
            assert!(readme.contains(v), "README does not mention {v}");
        }
    }
}
