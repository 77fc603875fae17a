//! # anchovy-cli: the `anchovy` command line
//!
//! [`main_with`] is the whole program for a given [`Registry`]: the stock `anchovy`
//! binary passes the built-in plugins; a user's own binary passes them plus its own
//! operators (see `examples/custom_downloader`). One file per verb under `commands/`.

pub mod args;
pub mod commands;
pub mod logging;

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
    eprintln!("anchovy: error: {}", e.chain());
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
        Command::Start(a) => &a.config,
        Command::Healthcheck(a) => &a.config,
        Command::Checkpoints(a) => &a.config,
    };
    let loaded = match load(config, &vars) {
        Ok(l) => l,
        Err(e) => return report(&e),
    };
    logging::init(&loaded.settings.log_level, loaded.settings.log_format);
    for w in &loaded.connections.warnings {
        tracing::warn!("{w}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("anchovy: error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Start(a) => commands::start::run(&registry, loaded, &a).await,
            Command::Healthcheck(_) => commands::healthcheck::run(&registry, loaded).await,
            Command::Checkpoints(a) => commands::checkpoints::run(loaded, &a).await,
        }
    });
    // Blocking readers notice their closed channel and stop; do not wait on them forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    code
}
