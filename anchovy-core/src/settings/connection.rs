//! Connections: `ACHVY_CNXN__<ID>__<ATTR>` environment variables -> named [`Connection`]s.
//!
//! - `ACHVY_CNXN__<ATTR>` sets an attribute of the default connection (id `default`),
//!   as in the README's `ACHVY_CNXN__URI='sftp://user:password@host:22'`.
//! - `ACHVY_CNXN__<ID>__<ATTR>` sets an attribute of connection `<id>`.
//! - `ACHVY_CNXN__<ID>__JSONDATA` (or `ACHVY_CNXN__JSONDATA`) supplies attributes as a
//!   JSON object; single variables win over JSONDATA keys.
//!
//! Ids and attribute names are case-insensitive (stored lowercase). Attributes whose
//! names look secret, and passwords inside URIs, are kept as [`Secret`]s and registered
//! for redaction. Operators declare the connections they need as [`ConnectionSpec`]s;
//! [`Connections::require`] fails with the exact variable names to set.

use std::collections::BTreeMap;

use crate::env;
use crate::error::{Error, Result};
use crate::secret::{self, Secret};

/// The id of the connection configured by `ACHVY_CNXN__<ATTR>`.
pub const DEFAULT_ID: &str = "default";

/// One attribute value.
#[derive(Clone, Debug)]
pub enum Attr {
    /// A value safe to print.
    Plain(String),
    /// A value that is never printed.
    Secret(Secret),
}

impl Attr {
    /// The raw value (to hand to a client library).
    pub fn expose(&self) -> &str {
        match self {
            Attr::Plain(s) => s,
            Attr::Secret(s) => s.expose(),
        }
    }
}

/// A named connection: lowercase attribute -> value.
#[derive(Clone, Debug, Default)]
pub struct Connection {
    /// The lowercase id (`default` for the unnamed one).
    pub id: String,
    attrs: BTreeMap<String, Attr>,
}

impl Connection {
    /// An attribute's value (secret or not). Attribute names are case-insensitive.
    pub fn get(&self, attr: &str) -> Option<&str> {
        self.attrs.get(&attr.to_ascii_lowercase()).map(Attr::expose)
    }

    /// An attribute's value, or an error naming the variable to set.
    ///
    /// # Errors
    /// [`Error::MissingConnection`] listing the variable.
    pub fn require(&self, attr: &str) -> Result<&str> {
        self.get(attr).ok_or_else(|| Error::MissingConnection {
            id: self.id.clone(),
            needed_by: None,
            vars: vec![var_name(&self.id, attr)],
            hint: String::new(),
        })
    }

    /// Attribute names, sorted.
    pub fn attr_names(&self) -> impl Iterator<Item = &str> {
        self.attrs.keys().map(String::as_str)
    }

    /// Attributes with secrets shown as `***`, for logs and healthchecks.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .attrs
            .iter()
            .map(|(k, v)| match v {
                Attr::Plain(s) => format!("{k}={}", secret::redact(s)),
                Attr::Secret(_) => format!("{k}=***"),
            })
            .collect();
        format!("{}: {}", self.id, parts.join(" "))
    }

    fn set(&mut self, attr: &str, value: String) {
        let attr = attr.to_ascii_lowercase();
        for pw in uri_secrets(&value) {
            secret::register(&pw);
        }
        let v = if secret::is_secret_attr(&attr) {
            Attr::Secret(Secret::new(value))
        } else {
            Attr::Plain(value)
        };
        self.attrs.insert(attr, v);
    }
}

/// Every secret inside a URI-like value, as written and percent-decoded, whether or not
/// the URI parses: the password of `scheme://user:password@host` (also when it holds
/// unencoded `#`, `/`, `?` or `@`, which break parsers), and the values of secret-looking
/// query parameters (`password=`, `sslpassword=`, `pwd=`, `token=`, `sig=` ...).
pub fn uri_secrets(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |raw: &str| {
        if !raw.is_empty() {
            out.push(raw.to_string());
            let decoded = percent_decode(raw);
            if decoded != raw {
                out.push(decoded);
            }
        }
    };
    let Some((_, rest)) = value.split_once("://") else {
        return out;
    };
    // As a parser reads it: the authority ends at the first `/`, `?` or `#`.
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if let Some((userinfo, _)) = authority.rsplit_once('@')
        && let Some((_, pw)) = userinfo.split_once(':')
    {
        add(pw);
    }
    // As a user meant it: the password runs to the last `@` before the host (an `@`
    // after a `name=` belongs to the query).
    let host_at = rest
        .char_indices()
        .rev()
        .find(|(i, c)| *c == '@' && !rest[..*i].contains('='))
        .map(|(i, _)| i);
    if let Some(at) = host_at
        && let Some((_, pw)) = rest[..at].split_once(':')
    {
        add(pw);
    }
    if let Some((_, query)) = rest.split_once('?') {
        for pair in query.split(['&', ';']) {
            if let Some((k, v)) = pair.split_once('=') {
                let k = percent_decode(k).to_ascii_lowercase();
                if secret::is_secret_attr(&k) || matches!(k.as_str(), "sig" | "signature") {
                    add(v.split('#').next().unwrap_or(v));
                }
            }
        }
    }
    out
}

/// Decodes `%XX` escapes (as in URI user names and passwords); invalid escapes stay.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(h) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(h);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The env var that sets `attr` of connection `id`.
pub fn var_name(id: &str, attr: &str) -> String {
    if id == DEFAULT_ID {
        format!("{}{}", env::CNXN_PREFIX, attr.to_ascii_uppercase())
    } else {
        format!(
            "{}{}__{}",
            env::CNXN_PREFIX,
            id.to_ascii_uppercase(),
            attr.to_ascii_uppercase()
        )
    }
}

/// Why [`substitute`] could not fill in a text.
#[derive(Debug)]
pub enum Missing {
    /// The attribute is not set ([`Error::MissingConnection`], naming its variable).
    Conn(Error),
    /// The text itself is wrong (`${` without `}`, `${}`): the message.
    Syntax(String),
}

/// `text` with each `${name}` replaced by attribute `name` of connection `id` (the
/// variable `ACHVY_CNXN__<ID>__<NAME>`); replaced values are registered as secrets
/// when `secret` or when the attribute's name says it is one. The one `${name}`
/// mechanism of operators' options (`rest.Downloader`'s endpoints,
/// `process.Downloader`'s environment and config).
///
/// # Errors
/// [`Missing`]: an attribute that is not set, or a malformed placeholder.
pub fn substitute(
    text: &str,
    id: &str,
    conn: Option<&Connection>,
    secret: bool,
) -> std::result::Result<String, Missing> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| Missing::Syntax(format!("`${{` without `}}` in `{text}`")))?;
        let name = after[..end].trim();
        if name.is_empty() {
            return Err(Missing::Syntax(format!(
                "`${{}}` names no attribute in `{text}`"
            )));
        }
        let value = conn.and_then(|c| c.get(name)).ok_or_else(|| {
            Missing::Conn(Error::MissingConnection {
                id: id.to_string(),
                needed_by: Some(format!("`${{{name}}}`")),
                vars: vec![var_name(id, name)],
                hint: String::new(),
            })
        })?;
        if secret || secret::is_secret_attr(name) {
            secret::register(value);
        }
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// [`substitute`] over every string of a JSON value.
///
/// # Errors
/// As [`substitute`].
pub fn substitute_tree(
    v: &serde_json::Value,
    id: &str,
    conn: Option<&Connection>,
    secret: bool,
) -> std::result::Result<serde_json::Value, Missing> {
    Ok(match v {
        serde_json::Value::String(s) => serde_json::Value::String(substitute(s, id, conn, secret)?),
        serde_json::Value::Object(m) => {
            let mut o = serde_json::Map::new();
            for (k, v) in m {
                o.insert(k.clone(), substitute_tree(v, id, conn, secret)?);
            }
            serde_json::Value::Object(o)
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(
            a.iter()
                .map(|x| substitute_tree(x, id, conn, secret))
                .collect::<std::result::Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

/// A connection an operator needs: its id and the attributes it reads.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionSpec {
    /// The connection id (`default` for `ACHVY_CNXN__<ATTR>`).
    pub id: &'static str,
    /// Attributes of which at least one must be set (e.g. `["uri"]`).
    pub required_any: &'static [&'static str],
    /// Attributes the operator also reads (documentation).
    pub optional: &'static [&'static str],
    /// What the connection is for.
    pub description: &'static str,
}

/// All connections configured in the environment.
#[derive(Clone, Debug, Default)]
pub struct Connections {
    by_id: BTreeMap<String, Connection>,
    /// Warnings found while parsing (e.g. the `ANCHY_` typo prefix), for the log.
    pub warnings: Vec<String>,
}

impl Connections {
    /// Parses connections from environment variables.
    ///
    /// # Errors
    /// [`Error::ConnectionAttr`] when a JSONDATA variable is not a JSON object, or a
    /// variable name has more than two `__`-separated parts.
    pub fn from_env<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Connections> {
        let mut out = Connections::default();
        let mut singles: Vec<(String, String, String)> = Vec::new();
        let mut json: Vec<(String, String)> = Vec::new();
        for (k, v) in vars {
            let rest = if let Some(r) = k.strip_prefix(env::CNXN_PREFIX) {
                r
            } else if let Some(r) = k.strip_prefix(env::CNXN_PREFIX_TYPO) {
                out.warnings.push(format!(
                    "{k} uses the misspelt prefix ANCHY_; it is accepted, but rename it to {}{r}",
                    env::CNXN_PREFIX
                ));
                r
            } else {
                continue;
            };
            let parts: Vec<&str> = rest.split("__").collect();
            let (id, attr) = match parts.as_slice() {
                [attr] => (DEFAULT_ID.to_string(), attr.to_ascii_lowercase()),
                [id, attr] => (id.to_ascii_lowercase(), attr.to_ascii_lowercase()),
                _ => {
                    return Err(Error::ConnectionAttr {
                        id: parts[0].to_ascii_lowercase(),
                        attr: rest.to_string(),
                        message: format!(
                            "{k}: use ACHVY_CNXN__<ID>__<ATTR> (one `__` between id and attribute)"
                        ),
                    });
                }
            };
            if id.is_empty() || attr.is_empty() {
                return Err(Error::ConnectionAttr {
                    id,
                    attr,
                    message: format!("{k}: empty id or attribute"),
                });
            }
            if attr == "jsondata" {
                json.push((id, v.to_string()));
            } else {
                singles.push((id, attr, v.to_string()));
            }
        }
        for (id, text) in json {
            let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
                .map_err(|e| Error::ConnectionAttr {
                    id: id.clone(),
                    attr: "jsondata".into(),
                    message: format!("{} is not a JSON object: {e}", var_name(&id, "jsondata")),
                })?;
            let c = out.entry(&id);
            for (k, v) in obj {
                let s = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                c.set(&k, s);
            }
        }
        for (id, attr, v) in singles {
            out.entry(&id).set(&attr, v);
        }
        // `URL` is the original tool's spelling of `URI`.
        for c in out.by_id.values_mut() {
            if !c.attrs.contains_key("uri")
                && let Some(u) = c.attrs.get("url").cloned()
            {
                c.attrs.insert("uri".into(), u);
            }
        }
        Ok(out)
    }

    fn entry(&mut self, id: &str) -> &mut Connection {
        self.by_id
            .entry(id.to_string())
            .or_insert_with(|| Connection {
                id: id.to_string(),
                attrs: BTreeMap::new(),
            })
    }

    /// The connection with this id (case-insensitive).
    pub fn get(&self, id: &str) -> Option<&Connection> {
        self.by_id.get(&id.to_ascii_lowercase())
    }

    /// The connection a spec describes, checked for its required attributes.
    ///
    /// # Errors
    /// [`Error::MissingConnection`] with the exact variable names to set.
    pub fn require(&self, spec: &ConnectionSpec, operator: &str) -> Result<&Connection> {
        let missing = || {
            let vars: Vec<String> = spec
                .required_any
                .iter()
                .map(|a| var_name(spec.id, a))
                .chain(std::iter::once(var_name(spec.id, "JSONDATA")))
                .collect();
            Error::MissingConnection {
                id: spec.id.to_string(),
                needed_by: Some(operator.to_string()),
                hint: self.near_miss(&vars),
                vars,
            }
        };
        let c = self.get(spec.id).ok_or_else(missing)?;
        if !spec.required_any.is_empty() && !spec.required_any.iter().any(|a| c.get(a).is_some()) {
            return Err(missing());
        }
        Ok(c)
    }

    /// A configured variable that looks like a typo of one of `wanted` (e.g.
    /// `ACHVY_CNXN__DB_URI`, one underscore short, for `ACHVY_CNXN__DB__URI`), as a
    /// hint for a missing-connection error; empty when there is none.
    fn near_miss(&self, wanted: &[String]) -> String {
        let lower: Vec<String> = wanted.iter().map(|w| w.to_ascii_lowercase()).collect();
        for c in self.by_id.values() {
            for a in c.attr_names() {
                let set = var_name(&c.id, a);
                if wanted.contains(&set) {
                    continue;
                }
                if let Some(m) = crate::config::closest(&set, lower.iter().map(String::as_str)) {
                    return format!(" ({set} is set: did you mean {}?)", m.to_ascii_uppercase());
                }
            }
        }
        String::new()
    }

    /// Warnings for attributes of `spec`'s connection that the operator does not read
    /// (a typo such as `ACHVY_CNXN__DB__URL2`), naming the closest one it does read.
    pub fn unknown_attrs(&self, spec: &ConnectionSpec) -> Vec<String> {
        let Some(c) = self.get(spec.id) else {
            return Vec::new();
        };
        let known: Vec<&str> = spec
            .required_any
            .iter()
            .chain(spec.optional)
            .copied()
            .collect();
        c.attr_names()
            .filter(|a| !known.contains(a) && *a != "url")
            .map(|a| {
                let hint = crate::config::closest(a, known.iter().copied())
                    .map(|k| format!("; did you mean {}?", var_name(spec.id, &k)))
                    .unwrap_or_default();
                format!(
                    "{} is set, but the connection \"{}\" has no attribute `{a}` (it reads {}){hint}",
                    var_name(spec.id, a),
                    spec.id,
                    known.join(", ")
                )
            })
            .collect()
    }

    /// All connections, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Connection> {
        self.by_id.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_found_in_uris_that_do_not_parse() {
        let has = |uri: &str, want: &str| {
            let found = uri_secrets(uri);
            assert!(found.iter().any(|f| f == want), "{uri}: {found:?}");
        };
        has("postgres://u:Pg#Passw0rd@127.0.0.1:5432/wh", "Pg#Passw0rd");
        has("postgres://u:pa/ss?w@rd@h:5432/wh", "pa/ss?w@rd");
        has("mysql://u:a@b#c@h/db", "a@b#c");
        has("postgres://u:p%23w%2Fd@h/db", "p#w/d");
        has(
            "postgres://u@h/db?password=S3cr3t&sslmode=require",
            "S3cr3t",
        );
        has(
            "postgres://u@h/db?sslmode=require&sslpassword=K3yPass",
            "K3yPass",
        );
        has("mysql://u@h/db?pwd=My%20Pw&x=1", "My Pw");
        has(
            "https://acct.blob.core.windows.net/c?sv=2022&sig=AbC%2BdEf%3D",
            "AbC+dEf=",
        );
        has("sftp://u:Pw:With:Colons@h:22", "Pw:With:Colons");
        // A query with an address in it is no password.
        assert!(uri_secrets("postgres://h/db?application_name=a@b").is_empty());
        assert!(uri_secrets("sqlite:///tmp/x.db").is_empty());
    }

    #[test]
    fn default_named_and_jsondata() {
        let c = Connections::from_env([
            ("ACHVY_CNXN__URI", "sftp://bob:s3cr3t-pw@example.com:22"),
            ("ANCHY_CNXN__PPK_PATH", "/k"),
            ("ACHVY_CNXN__Db__Uri", "postgres://x"),
            ("achvy_ignored", "x"),
            (
                "ACHVY_CNXN__API__JSONDATA",
                r#"{"Token": "tok-123456", "base_url": "https://api", "retries": 3}"#,
            ),
            ("ACHVY_CNXN__API__BASE_URL", "https://override"),
            ("PATH", "/bin"),
        ])
        .unwrap();
        let d = c.get("default").unwrap();
        assert_eq!(d.get("URI").unwrap(), "sftp://bob:s3cr3t-pw@example.com:22");
        assert_eq!(d.get("ppk_path").unwrap(), "/k");
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(c.get("DB").unwrap().get("uri").unwrap(), "postgres://x");
        let api = c.get("api").unwrap();
        assert_eq!(api.get("token").unwrap(), "tok-123456");
        assert_eq!(api.get("retries").unwrap(), "3");
        assert_eq!(api.get("base_url").unwrap(), "https://override");
        assert!(api.describe().contains("token=***"));
        assert!(!api.describe().contains("tok-123456"));
        // The URI password is redacted wherever it appears.
        assert_eq!(
            crate::secret::redact(&d.describe()),
            "default: ppk_path=/k uri=sftp://bob:***@example.com:22"
        );
    }

    #[test]
    fn missing_connection_names_the_variables() {
        let c = Connections::from_env([]).unwrap();
        let spec = ConnectionSpec {
            id: "db",
            required_any: &["uri"],
            optional: &[],
            description: "",
        };
        let e = c.require(&spec, "sql.Uploader").unwrap_err();
        assert_eq!(
            e.to_string(),
            "connection \"db\" is not configured (needed by sql.Uploader); set ACHVY_CNXN__DB__URI or ACHVY_CNXN__DB__JSONDATA"
        );
        let spec = ConnectionSpec {
            id: "default",
            ..spec
        };
        let e = c.require(&spec, "x").unwrap_err();
        assert!(
            e.to_string()
                .contains("set ACHVY_CNXN__URI or ACHVY_CNXN__JSONDATA"),
            "{e}"
        );
    }

    #[test]
    fn bad_jsondata_is_named() {
        let e = Connections::from_env([("ACHVY_CNXN__X__JSONDATA", "{nope")]).unwrap_err();
        assert!(
            e.to_string()
                .contains("ACHVY_CNXN__X__JSONDATA is not a JSON object"),
            "{e}"
        );
    }
}
