//! Secrets: a [`Secret`] string type that never prints, and a process-wide redactor.
//!
//! Connection attributes whose names look secret (password, key, token, sas, secret, ...)
//! and passwords embedded in URIs are registered here when connections are parsed.
//! Every output boundary (log lines, task logs, results, checkpoints, error messages)
//! passes its text through [`redact`], so a secret that leaks into an error message from
//! a library still never reaches a user-visible file or terminal.

use std::borrow::Cow;
use std::sync::RwLock;

/// Secrets shorter than this are not registered for redaction (redacting every `a`
/// would make logs unreadable). Documented in the README.
pub const MIN_REDACTED_LEN: usize = 3;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// A string that prints as `***` in `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value and registers it for redaction.
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        register(&value);
        Secret(value)
    }

    /// The secret value, for handing to a client library. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Registers a value so that [`redact`] masks it (and its JSON-escaped and
/// percent-encoded forms) everywhere.
pub fn register(value: &str) {
    if value.chars().count() < MIN_REDACTED_LEN {
        return;
    }
    let mut forms = vec![value.to_string()];
    let escaped = serde_json::to_string(value).unwrap_or_default();
    let escaped = escaped.trim_matches('"').to_string();
    if escaped != value {
        forms.push(escaped);
    }
    let pct = percent_encode(value);
    if pct != value {
        forms.push(pct);
    }
    let mut guard = SECRETS.write().unwrap_or_else(|p| p.into_inner());
    for f in forms {
        if !guard.contains(&f) {
            guard.push(f);
        }
    }
    // Longest first, so a secret that contains another is masked whole.
    guard.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Replaces every registered secret in `text` with `***`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let guard = SECRETS.read().unwrap_or_else(|p| p.into_inner());
    if guard.is_empty() || !guard.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in guard.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "***");
        }
    }
    Cow::Owned(out)
}

/// Replaces every registered secret in the strings of a JSON value (table metadata
/// that carries an operator's options, which may hold a credential written inline).
pub fn redact_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => {
            if let Cow::Owned(r) = redact(s) {
                *s = r;
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(redact_json),
        serde_json::Value::Object(m) => m.values_mut().for_each(redact_json),
        _ => {}
    }
}

/// True when the attribute name looks like it holds a secret.
pub fn is_secret_attr(attr: &str) -> bool {
    const MARKERS: [&str; 10] = [
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "token",
        "sas",
        "credential",
        "apikey",
        "api_key",
    ];
    let a = attr.to_ascii_lowercase();
    if MARKERS.iter().any(|m| a.contains(m)) {
        return true;
    }
    // `key`, `account_key`, `private_key`: but not `key_path`/`ppk_path` (a file path).
    (a == "key" || a.ends_with("_key") || a.ends_with("key_data")) && !a.ends_with("path")
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(
            redact("login with hunter2-very-secret failed"),
            "login with *** failed"
        );
        assert_eq!(redact("nothing here"), "nothing here");
    }

    #[test]
    fn json_escaped_and_percent_encoded_forms_are_redacted() {
        register("p\"a:s/s");
        assert_eq!(redact(r#"{"pw":"p\"a:s/s"}"#), r#"{"pw":"***"}"#);
        assert_eq!(redact("sftp://u:p%22a%3As%2Fs@h"), "sftp://u:***@h");
    }

    #[test]
    fn secret_attr_names() {
        for a in [
            "password",
            "PASSWORD",
            "sas_token",
            "account_key",
            "key",
            "api_key",
        ] {
            assert!(is_secret_attr(a), "{a}");
        }
        for a in ["uri", "ppk_path", "known_hosts", "user", "host"] {
            assert!(!is_secret_attr(a), "{a}");
        }
    }
}
