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
use clap::Parser;

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
        ConfigDoc::parse(text, "--config")?
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
    let cli = match Cli::try_parse_from(args::rewrite_args(std::env::args_os())) {
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
            Command::Logs(a) => commands::logs::run(loaded, &a).await,
            Command::Tables(a) => commands::tables::run(loaded, &a).await,
            Command::Rejects(a) => commands::rejects::run(&registry, loaded, &a).await,
            Command::Plugins(_) | Command::School(_) => unreachable!("handled before loading"),
        }
    });
    // Blocking readers notice their closed channel and stop; do not wait on them forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use anchovy_core::config::KEYS;

    /// A CLI flag, an env value and a config-file value for every setting.
    fn samples(key: &str) -> (Vec<&'static str>, &'static str, serde_json::Value) {
        use serde_json::json;
        match key {
            "id" => (vec!["--id", "c"], "e", json!("f")),
            "user" => (vec!["--user", "c"], "e", json!("f")),
            "prod" => (vec!["--prod"], "true", json!(true)),
            "operator_cls" => (vec!["-op", "c"], "e", json!("f")),
            "is_task_executor" => (vec!["-S"], "false", json!(false)),
            "execution_timeout" => (vec!["-t", "1"], "2s", json!(3)),
            "upstream" => (vec!["-U", "c", "-U", "c2"], "e,e2", json!(["f"])),
            "enabled" => (vec!["-e", "c"], "e", json!(["f"])),
            "disabled" => (vec!["-d", "c"], "e", json!("f")),
            "datastore" => (vec!["--datastore", "/tmp/c"], "/tmp/e", json!("/tmp/f")),
            "home" => (vec!["--home", "/tmp/c"], "/tmp/e", json!("/tmp/f")),
            "checkpoint_cls" => (
                vec!["--checkpoint-cls", "datastore"],
                "datastore",
                json!("datastore"),
            ),
            "task_store_cls" => (
                vec!["--task-store-cls", "s3://cli/meta"],
                "az://env/meta",
                json!("gs://file/meta"),
            ),
            "tbl_store_cls" => (
                vec!["--tbl-store-cls", "s3://cli/meta"],
                "az://env/meta",
                json!("gs://file/meta"),
            ),
            "data_buffer_cls" => (
                vec!["--data-buffer-cls", "ndjson.gz"],
                "ndjson.gz",
                json!("ndjson.gz"),
            ),
            "log_level" => (vec!["--log-level", "debug"], "warn", json!("error")),
            "log_format" => (vec!["--log-format", "json"], "text", json!("json")),
            "batch_policy" => (vec!["--batch-policy", "raise"], "RAISE", json!("CONTINUE")),
            "strict" => (vec!["--strict"], "true", json!(false)),
            "max_concurrency" => (vec!["--max-concurrency", "1"], "2", json!(3)),
            "batch_size" => (vec!["--batch-size", "10"], "20", json!(30)),
            "file_max_bytes" => (vec!["--file-max-bytes", "100000"], "200000", json!(300000)),
            "commit_interval" => (vec!["--commit-interval", "1s"], "2s", json!("3s")),
            "lease_ttl" => (vec!["--lease-ttl", "10s"], "20s", json!("30s")),
            "max_duration" => (vec!["--max-duration", "1m"], "2m", json!("3m")),
            "service_pause" => (vec!["--service-pause", "1s"], "2s", json!("3s")),
            "port" => (vec!["--port", "9001"], "9002", json!(9003)),
            "bind" => (vec!["--bind", "0.0.0.0"], "::", json!("127.0.0.2")),
            "metrics_file" => (
                vec!["--metrics-file", "/a.prom"],
                "/b.prom",
                json!("/c.prom"),
            ),
            "stop_grace" => (vec!["--stop-grace", "4s"], "5s", json!("6s")),
            "discovery_ttl" => (vec!["--discovery-ttl", "7s"], "8s", json!("9s")),
            "max_rows" => (vec!["--max-rows", "100"], "200", json!(300)),
            "max_bytes" => (vec!["--max-bytes", "1000"], "2000", json!(3000)),
            other => panic!("no sample for settings key {other}: add one"),
        }
    }

    fn resolve(key: &str, cli: bool, env: bool) -> Settings {
        let (flags, env_value, file_value) = samples(key);
        let def = KEYS.iter().find(|k| k.key == key).unwrap();
        let mut argv = vec!["anchovy", "start"];
        if cli {
            argv.extend(flags);
        }
        let doc = serde_json::json!({ "config": { key: file_value } }).to_string();
        argv.extend(["--config", &doc]);
        let parsed = Cli::try_parse_from(args::rewrite_args(argv.iter().map(Into::into))).unwrap();
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
        for def in KEYS {
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
        assert!(resolve("is_task_executor", false, false).service);
        assert_eq!(resolve("prod", false, false).user, "prod");
        assert_eq!(
            resolve("execution_timeout", false, true).execution_timeout,
            Some(std::time::Duration::from_secs(2))
        );
        assert_eq!(resolve("datastore", true, true).datastore, "/tmp/c");
        assert_eq!(resolve("home", false, true).datastore, "/tmp/e");
    }

    #[test]
    fn the_readme_documents_every_setting_and_env_var() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        for v in anchovy_core::env::ALL {
            assert!(readme.contains(v), "README does not mention {v}");
        }
        for def in KEYS {
            assert!(
                readme.contains(&format!("`{}`", def.key)),
                "README does not document config key {}",
                def.key
            );
        }
    }
}
