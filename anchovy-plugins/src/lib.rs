//! # anchovy-plugins: the built-in operators
//!
//! Each operator lives in its own folder behind a cargo feature and is added to the
//! [`registry`] with one line: that list is the only place a plugin is registered, and
//! `anchovy plugins`, `--help` and the README's operator table follow it.
//!
//! | operator | feature | what it does |
//! |----------|---------|--------------|
//! | `files.CsvDownloader` | `files` | CSV/TSV files on the local filesystem |
//! | `sftp.CsvDownloader` | `sftp` | CSV/TSV files on SFTP servers |
//! | `blob.CsvDownloader`, `blob.JsonDownloader` | `blob` | CSV and JSON objects on S3, Azure Blob, GCS |
//! | `sql.Downloader` | `sql` | tables and queries of PostgreSQL, MySQL/MariaDB, SQLite -> datastore |
//! | `rest.Downloader` | `rest` | HTTP JSON APIs declared in YAML -> datastore |
//! | `process.Downloader` | `process` | any program: Singer taps, NDJSON writers -> datastore |
//! | `sql.Uploader` | `sql` | datastore -> PostgreSQL, MySQL/MariaDB, SQLite |

#[cfg(feature = "blob")]
pub mod blob;
pub mod error;
#[cfg(feature = "files")]
pub mod files;
#[cfg(feature = "files")]
pub mod formats;
#[cfg(feature = "process")]
pub mod process;
#[cfg(feature = "rest")]
pub mod rest;
#[cfg(feature = "sftp")]
pub mod sftp;
#[cfg(feature = "files")]
pub mod source;
#[cfg(feature = "sql")]
pub mod sql;

pub use error::PluginError;

use anchovy_core::Registry;

/// Every built-in operator. Add a plugin here, one line each.
pub fn registry() -> Registry {
    let r = Registry::new();
    #[cfg(feature = "files")]
    let r = r.with(files::SPEC);
    #[cfg(feature = "sftp")]
    let r = r.with(sftp::SPEC);
    #[cfg(feature = "blob")]
    let r = r.with(blob::CSV_SPEC).with(blob::JSON_SPEC);
    #[cfg(feature = "rest")]
    let r = r.with(rest::SPEC);
    #[cfg(feature = "process")]
    let r = r.with(process::SPEC);
    #[cfg(feature = "sql")]
    let r = r.with(sql::SPEC).with(sql::source::SPEC);
    r
}

#[cfg(all(test, feature = "files", feature = "sftp", feature = "blob"))]
mod tests {
    use super::*;

    /// Each file-like operator accepts (and documents) every option of every format
    /// and of the shared source: a format that gains an option cannot be refused as
    /// an unknown key by one operator's startup check.
    #[test]
    fn every_file_operator_lists_every_format_option() {
        for spec in [files::SPEC, sftp::SPEC, blob::CSV_SPEC, blob::JSON_SPEC] {
            let keys: Vec<&str> = anchovy_core::Registry::table_options(&spec)
                .iter()
                .flat_map(|g| g.options.iter().map(|o| o.key))
                .collect();
            let shared = ["path", "format", "after_load", "columns", "on_bad_record"];
            let of_formats = formats::FORMATS
                .iter()
                .flat_map(|f| f.options.options.iter().map(|o| o.key));
            for k in shared.into_iter().chain(of_formats) {
                assert!(keys.contains(&k), "{} does not list `{k}`", spec.name);
            }
        }
    }

    /// Every option every operator documents is one key, documented once per group.
    #[test]
    fn every_option_is_one_documented_key() {
        for spec in registry().specs() {
            for g in anchovy_core::Registry::table_options(spec) {
                for o in g.options {
                    assert!(
                        !o.key.contains([',', ' ']) && !o.doc.trim().is_empty(),
                        "{}: `{}` ({})",
                        spec.name,
                        o.key,
                        o.doc
                    );
                }
            }
        }
    }
}
