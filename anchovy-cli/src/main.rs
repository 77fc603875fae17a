//! The `anchovy` binary: the CLI with every built-in plugin.

fn main() -> std::process::ExitCode {
    anchovy_cli::main_with(anchovy_plugins::registry())
}
