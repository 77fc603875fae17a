//! The `ACHVY_*` environment variables beyond the settings' own (each setting declares
//! its variable in [`SETTINGS`](crate::config::SETTINGS)): the config file, the
//! connection prefixes, and the check that warns about variables nobody reads.

/// The config file path when `--config-file` is not given (default `./config.yaml`).
pub const CONFIG_FILE: &str = "ACHVY_CONFIG_FILE";
/// The prefix of connection variables: `ACHVY_CNXN__<ID>__<ATTR>` or `ACHVY_CNXN__<ATTR>`.
pub const CNXN_PREFIX: &str = "ACHVY_CNXN__";
/// A misspelt connection prefix seen in the original README; accepted with a warning.
pub const CNXN_PREFIX_TYPO: &str = "ANCHY_CNXN__";

/// Every `ACHVY_*` variable that is a setting or picks the config file (not the
/// connection prefixes): the settings' own come from their declarations
/// ([`SETTINGS`](crate::config::SETTINGS)).
pub fn all() -> impl Iterator<Item = &'static str> {
    crate::config::SETTINGS
        .iter()
        .map(|s| s.env)
        .chain([CONFIG_FILE])
}

/// Variables the core reads beyond the settings (tests and crash drills).
const OTHER: &[&str] = &[crate::failpoint::VAR];

/// Warnings for `ACHVY_*` variables that are no setting (a typo such as
/// `ACHVY_BATCHSIZE`), each naming the closest known variable.
pub fn unknown<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    vars.into_iter()
        .map(|(k, _)| k)
        .filter(|k| {
            k.starts_with("ACHVY_")
                && !k.starts_with(CNXN_PREFIX)
                && !all().any(|a| a == *k)
                && !OTHER.contains(k)
        })
        .map(|k| {
            let lower: Vec<String> = all().map(|a| a.to_ascii_lowercase()).collect();
            let hint = crate::config::closest(k, lower.iter().map(String::as_str))
                .map(|m| format!("; did you mean {}?", m.to_ascii_uppercase()))
                .unwrap_or_default();
            format!("{k} is set but is no anchovies setting, so it is ignored{hint}")
        })
        .collect()
}
