//! Parsing and range-checking setting values: booleans, numbers, durations, names.

use super::*;

pub(super) fn as_string(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub(super) fn parse_bool(v: &serde_json::Value, key: &str, origin: &str) -> Result<bool> {
    match v {
        serde_json::Value::Bool(b) => Ok(*b),
        other => match as_string(other).trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "y" | "on" => Ok(true),
            "0" | "false" | "no" | "n" | "off" | "" => Ok(false),
            s => Err(Error::config(
                key,
                format!("`{s}` from {origin} is not a boolean; use true or false"),
            )),
        },
    }
}

/// The longest duration any setting takes: one year. Longer values are typos (a
/// duration in milliseconds given as seconds) and would overflow deadlines.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

/// Parses a duration setting and checks it against `range` (inclusive).
pub(super) fn duration_in(
    key: &str,
    text: &str,
    origin: &str,
    range: (Duration, Duration),
) -> Result<Duration> {
    let (min, max) = range;
    let show = human_duration;
    match duration_secs(text) {
        Some(secs) if secs >= min.as_secs_f64() && secs <= max.as_secs_f64() => {
            Ok(Duration::from_secs_f64(secs))
        }
        Some(_) => Err(Error::config(
            key,
            format!(
                "`{}` from {origin} is out of range; use a duration from {} to {}",
                printable(text),
                show(min),
                show(max)
            ),
        )),
        None => Err(Error::config(
            key,
            format!(
                "`{}` from {origin} is not a duration; use seconds (300) or 90s, 15m, 2h, 1d \
                 (from {} to {})",
                printable(text),
                show(min),
                show(max)
            ),
        )),
    }
}

/// Parses a whole-number setting (`_` separators allowed) and checks it against `range`.
pub(super) fn number_in(key: &str, text: &str, origin: &str, range: (u64, u64)) -> Result<u64> {
    let (min, max) = range;
    let bounds = if max == u64::MAX {
        format!("{min} or more")
    } else {
        format!("from {min} to {max}")
    };
    match text.trim().replace('_', "").parse::<u64>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        Ok(_) => Err(Error::config(
            key,
            format!(
                "`{}` from {origin} is out of range; use a whole number {bounds}",
                printable(text)
            ),
        )),
        Err(_) => Err(Error::config(
            key,
            format!(
                "`{}` from {origin} is not a whole number; use one {bounds}",
                printable(text)
            ),
        )),
    }
}

/// A user's value quoted in a message: control characters escaped, long values cut.
pub(super) fn printable(text: &str) -> String {
    let escaped: String = text.chars().flat_map(char::escape_debug).collect();
    if escaped.chars().count() > 60 {
        format!("{}...", escaped.chars().take(60).collect::<String>())
    } else {
        escaped
    }
}

/// `error`..`trace`, or a tracing filter (`info,anchovy_plugins=debug`): directives of
/// `target=level` separated by commas. Anything else is refused here rather than
/// silently logging at `info`.
pub(super) fn check_log_level(level: String) -> Result<String> {
    const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
    let ok = !level.trim().is_empty()
        && level.split(',').all(|d| {
            let d = d.trim();
            let (target, lvl) = match d.rsplit_once('=') {
                Some((t, l)) => (t, Some(l)),
                None if LEVELS.contains(&d.to_ascii_lowercase().as_str()) => ("", None),
                None => (d, None),
            };
            let target_ok = target
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-' | '.'));
            let level_ok =
                lvl.is_none_or(|l| LEVELS.contains(&l.trim().to_ascii_lowercase().as_str()));
            !d.is_empty() && target_ok && level_ok
        });
    if ok {
        Ok(level)
    } else {
        Err(Error::config(
            "log_level",
            format!(
                "`{}` is not a log level; use error, warn, info, debug or trace, or a filter \
                 such as info,anchovy_plugins=debug",
                printable(&level)
            ),
        ))
    }
}

/// `datastore`, or a datastore URL/path of its own for this kind of metadata.
pub(super) fn store_cls(key: &str, v: String) -> Result<String> {
    if v.contains("://") || v.starts_with('/') {
        Ok(v)
    } else {
        one_of(key, original_store_cls(key, v)?, STORE_CLS)
    }
}

/// The original tool's store classes, which this project's `datastore` stores replace
/// (with or without a module path: `anchovies.sdk.CachedCheckpoint`): `Checkpoint`
/// and `CachedCheckpoint` for `checkpoint_cls`, `TaskStore` for `task_store_cls`,
/// `TblStore` for `tbl_store_cls`. Its `NothingTaskStore` (no task logs) is refused
/// by name: task logs are how runs are audited here.
pub(super) fn original_store_cls(key: &str, v: String) -> Result<String> {
    let class = v.rsplit('.').next().unwrap_or(&v);
    let same = match key {
        "checkpoint_cls" => matches!(class, "Checkpoint" | "CachedCheckpoint"),
        "task_store_cls" => class == "TaskStore",
        "tbl_store_cls" => class == "TblStore",
        _ => false,
    };
    if same {
        return Ok("datastore".into());
    }
    if key == "task_store_cls" && matches!(class, "NothingTaskStore" | "HiveTaskStore") {
        return Err(Error::config(
            key,
            format!(
                "the original tool's `{v}` is not supported: task logs always go to `$task_logs/` (use `datastore`, or a datastore URL to keep them apart)"
            ),
        ));
    }
    Ok(v)
}

pub(super) fn one_of(key: &str, v: String, allowed: &[&str]) -> Result<String> {
    if allowed.contains(&v.as_str()) {
        Ok(v)
    } else {
        Err(not_one_of(key, &v, allowed))
    }
}

pub(super) fn not_one_of(key: &str, v: &str, allowed: &[&str]) -> Error {
    Error::config(
        key,
        format!(
            "`{v}` is not available; built-in: {}{}",
            allowed.join(", "),
            closest(v, allowed.iter().copied())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default()
        ),
    )
}

/// Ids and users become datastore path segments: keep them to safe characters.
pub(super) fn check_name(key: &str, v: &str) -> Result<()> {
    let ok = !v.is_empty()
        && v != "."
        && v != ".."
        && v.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(Error::config(
            key,
            format!("`{v}` is not a valid {key}; use letters, digits, '-', '_', '.' or '@'"),
        ))
    }
}

/// Parses `300`, `1.5`, `90s`, `500ms`, `15m`, `2h`, `7d`. `None` for anything else,
/// including anything over 100 years, so that adding the result to a clock or a
/// deadline can never overflow.
pub fn parse_duration(s: &str) -> Option<Duration> {
    const CENTURY: f64 = 100.0 * 366.0 * 86_400.0;
    duration_secs(s)
        .filter(|n| *n <= CENTURY)
        .map(Duration::from_secs_f64)
}

/// The seconds a duration text stands for (finite, not negative), unbounded.
pub(super) fn duration_secs(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix('d') {
        (n, 86_400.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let num = num.trim();
    // Digits, one dot, an exponent: no `inf`, `nan` or `+` spellings.
    if num.is_empty()
        || !num
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-'))
    {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let secs = n * mult;
    (secs.is_finite() && secs >= 0.0).then_some(secs)
}

/// `250ms`, `90s`, `15m`, `2h`, `366d`: the largest unit that divides evenly.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, name) in [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ] {
        if ms >= unit && ms.is_multiple_of(unit) {
            return format!("{}{name}", ms / unit);
        }
    }
    format!("{ms}ms")
}

pub(super) fn expand_home(p: &str, vars: &BTreeMap<String, String>) -> PathBuf {
    match p.strip_prefix("~/").or_else(|| (p == "~").then_some("")) {
        Some(rest) => {
            PathBuf::from(vars.get("HOME").cloned().unwrap_or_else(|| "/".into())).join(rest)
        }
        None => PathBuf::from(p),
    }
}
