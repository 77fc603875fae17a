//! `anchovy plugins`: every operator of this binary, generated from the registry: what
//! it does, the connections and variables it reads, and its table options.

use std::process::ExitCode;

use anchovy_core::Registry;
use anchovy_core::connection::var_name;
use anchovy_core::error::exit;
use anchovy_core::operator::OperatorKind;

use crate::args::PluginsArgs;

/// Prints the registry as text or JSON.
pub fn run(registry: &Registry, args: &PluginsArgs) -> ExitCode {
    let specs = registry.specs();
    if args.json {
        let all: Vec<serde_json::Value> = specs
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "kind": kind(s.kind),
                    "description": s.description,
                    "connections": s.connections.iter().map(|c| serde_json::json!({
                        "id": c.id,
                        "required_any": c.required_any.iter().map(|a| var_name(c.id, a)).collect::<Vec<_>>(),
                        "optional": c.optional.iter().map(|a| var_name(c.id, a)).collect::<Vec<_>>(),
                        "description": c.description,
                    })).collect::<Vec<_>>(),
                    "env_vars": s.env_vars.iter().map(|o| serde_json::json!({"name": o.key, "doc": o.doc})).collect::<Vec<_>>(),
                    "table_options": Registry::table_options(s).iter().flat_map(|g| g.options.iter().map(|o| serde_json::json!({"key": o.key, "doc": o.doc, "group": g.title}))).collect::<Vec<_>>(),
                })
            })
            .collect();
        crate::outln!("{}", serde_json::Value::Array(all));
        return ExitCode::from(exit::OK);
    }
    let mut out = String::new();
    for s in specs {
        out.push_str(&format!(
            "{}  ({})\n  {}\n",
            s.name,
            kind(s.kind),
            s.description
        ));
        for c in s.connections {
            let vars: Vec<String> = c.required_any.iter().map(|a| var_name(c.id, a)).collect();
            out.push_str(&format!(
                "  connection `{}` (required: {}): {}\n",
                c.id,
                if vars.is_empty() {
                    "any attribute".to_string()
                } else {
                    vars.join(" or ")
                },
                c.description
            ));
            for a in c.optional {
                out.push_str(&format!("      optional {}\n", var_name(c.id, a)));
            }
        }
        if !s.env_vars.is_empty() {
            out.push_str("  environment:\n");
            for o in s.env_vars {
                out.push_str(&format!("    {:<44} {}\n", o.key, o.doc));
            }
        }
        out.push_str("  table options (tbls.<name>.*):\n");
        for g in Registry::table_options(s) {
            if !g.title.is_empty() {
                out.push_str(&format!("   {}:\n", g.title));
            }
            for o in g.options {
                out.push_str(&format!("    {:<20} {}\n", o.key, o.doc));
            }
        }
        out.push('\n');
    }
    crate::out!("{out}");
    ExitCode::from(exit::OK)
}

fn kind(k: OperatorKind) -> &'static str {
    match k {
        OperatorKind::Downloader => "downloader",
        OperatorKind::Uploader => "uploader",
    }
}
