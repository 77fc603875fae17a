//! The whole settings resolution on arbitrary input: command-line arguments, `ACHVY_*`
//! variables and a config document (NUL-separated: the document, then `ACHVY_X=v`
//! variables and arguments). A configuration error or settings, never a panic.
#![no_main]
use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.split('\0');
    let doc = parts.next().unwrap_or_default();
    let mut argv: Vec<std::ffi::OsString> = vec!["anchovy".into(), "start".into()];
    let mut vars = BTreeMap::new();
    for p in parts {
        match p.split_once('=') {
            Some((k, v)) if k.starts_with("ACHVY_") => {
                vars.insert(k.to_string(), v.to_string());
            }
            _ => argv.push(p.into()),
        }
    }
    use clap::Parser;
    let Ok(cli) = anchovy_cli::args::Cli::try_parse_from(anchovy_cli::args::rewrite_args(argv)) else {
        return;
    };
    if let anchovy_cli::args::Command::Start(mut a) = cli.command {
        a.config.config = Some(doc.to_string());
        let _ = anchovy_cli::load(&a.config, &vars);
    }
});
