//! The `anchovy` binary: the CLI with every built-in plugin.

/// Rows are many small allocations (a string per cell, a vector per row) made on one
/// thread and freed on another; mimalloc's thread-local free lists take 15-20% off a
/// download's CPU compared with glibc malloc (measured with `script/bench sftp`).
/// Built with `no_thp`: otherwise mimalloc asks for transparent huge pages on its
/// arenas, and on a kernel whose THP mode is `madvise` (the common default) every
/// touched 2 MiB of them is resident: 60 -> 43 MiB peak for a million-row download,
/// 35 -> 18 MiB for a small one, at the same speed (`script/bench mem`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    anchovy_cli::main_with(anchovy_plugins::registry())
}
