//! What a setting is ([`Setting`]: key, type and range, default, environment variable,
//! command-line flag, aliases, help) and the one generic step that resolves it
//! ([`Resolver`]). Every setting is declared once, in `keys.rs`, with [`settings!`]; the
//! [`Settings`] struct, the config-key and env-var parsing, precedence, the CLI flags
//! and their `--help`, and the README table are all built from that declaration.

use std::cell::RefCell;

use super::*;

/// The process environment as the resolver sees it (`HOME`, `USER` for defaults).
pub type Vars = BTreeMap<String, String>;

/// How a setting is given on the command line.
#[derive(Debug, Clone, Copy)]
pub enum Flag {
    /// Takes one value: the spellings (`-t/--execution-timeout`) and the value's name.
    Value(&'static str, &'static str),
    /// Takes a value and may repeat (`-U a -U b`); a comma list in the environment.
    Repeat(&'static str, &'static str),
    /// A switch without a value that sets the setting to this boolean (`-S/--service`
    /// sets `is_task_executor` to false).
    Switch(&'static str, bool),
}

impl Flag {
    /// The spellings as written in the declaration (`-op/--operator`).
    pub fn spelling(&self) -> &'static str {
        match self {
            Flag::Value(f, _) | Flag::Repeat(f, _) | Flag::Switch(f, _) => f,
        }
    }

    /// The one-letter short flag (`t` of `-t`), the long name (`execution-timeout`) and
    /// a several-letter single-dash spelling (`-op`, the original tool's), which the
    /// command line rewrites to the long one before parsing.
    pub fn names(&self) -> (Option<char>, Option<&'static str>, Option<&'static str>) {
        let (mut short, mut long, mut dash) = (None, None, None);
        for part in self.spelling().split('/') {
            if let Some(l) = part.strip_prefix("--") {
                long.get_or_insert(l);
            } else if let Some(s) = part.strip_prefix('-') {
                let mut chars = s.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => short = Some(c),
                    _ => dash = Some(part),
                }
            }
        }
        (short, long, dash)
    }

    /// Further long spellings after the first (`--enabled` of `-e/--enable/--enabled`,
    /// the original tool's), accepted as aliases.
    pub fn long_aliases(&self) -> impl Iterator<Item = &'static str> {
        self.spelling()
            .split('/')
            .filter_map(|p| p.strip_prefix("--"))
            .skip(1)
    }
}

/// The type and range of a setting's value.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Text (checked by the declaration's `check`, if any).
    Text,
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    Bool,
    /// A list: a YAML list, or a comma-separated string.
    List,
    /// A duration (`300`, `90s`, `15m`, `2h`, `1d`) within this inclusive range.
    Duration(Duration, Duration),
    /// A whole number within this inclusive range.
    Count(u64, u64),
    /// One of these names (case-insensitive; the declaration's type may accept more
    /// spellings, such as the original tool's class names).
    Choice(&'static [&'static str]),
}

/// What a setting is when no place sets it.
#[derive(Clone, Copy)]
pub enum Unset {
    /// Nothing: `None`, an empty list, `false`.
    Empty,
    /// This value, parsed and checked like a given one.
    Value(&'static str),
    /// Computed when resolving (the host name, `$USER`): what it is, for the docs, and
    /// how to compute it.
    Computed(&'static str, fn(&Resolver<'_>) -> Result<String>),
}

impl std::fmt::Debug for Unset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unset::Empty => f.write_str("Empty"),
            Unset::Value(v) => write!(f, "Value({v:?})"),
            Unset::Computed(doc, _) => write!(f, "Computed({doc:?})"),
        }
    }
}

/// A check (and normalization) of a text value, after its type is parsed: returns the
/// value to use, or the configuration error naming the setting and the fix.
pub type Check = fn(&Setting, String, &Vars) -> Result<String>;

/// One setting, declared once.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The key in the `config:` map, and the field of [`Settings`].
    pub key: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// The command-line flag.
    pub flag: Flag,
    /// The value's type and range.
    pub kind: Kind,
    /// The value when nothing sets it.
    pub unset: Unset,
    /// Other accepted `config:` keys (the original README's spellings).
    pub aliases: &'static [&'static str],
    /// When this (boolean) setting is true in a place, it also sets another setting to
    /// a value in that same place, winning over that setting there (`prod` sets `user`
    /// to `prod`).
    pub implies: Option<(&'static str, &'static str)>,
    /// Extra checks of a text value.
    pub check: Option<Check>,
    /// What it does: the doc comment of the declaration.
    pub help: &'static str,
}

impl Setting {
    /// The defaults of a declaration's optional parts.
    pub const DEFAULT: Setting = Setting {
        key: "",
        env: "",
        flag: Flag::Value("", ""),
        kind: Kind::Text,
        unset: Unset::Empty,
        aliases: &[],
        implies: None,
        check: None,
        help: "",
    };

    /// The declaration of `key` (canonical or alias).
    pub fn find(key: &str) -> Option<&'static Setting> {
        SETTINGS
            .iter()
            .find(|s| s.key == key || s.aliases.contains(&key))
    }

    /// The help text on one line.
    pub fn help(&self) -> String {
        self.help.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// The default, for docs: `4`, `5s`, `the host name`; `None` when unset is empty.
    pub fn default_doc(&self) -> Option<String> {
        match self.unset {
            Unset::Empty => None,
            Unset::Value(v) => Some(format!("`{v}`")),
            Unset::Computed(doc, _) => Some(doc.to_string()),
        }
    }

    /// The accepted range or values, for docs (`1 to 1024`, `at least 100ms`).
    pub fn range_doc(&self) -> Option<String> {
        match self.kind {
            Kind::Duration(min, max) => match (min.is_zero(), max == MAX_DURATION) {
                (true, true) => None,
                (false, true) => Some(format!("at least {}", human_duration(min))),
                _ => Some(format!(
                    "{} to {}",
                    human_duration(min),
                    human_duration(max)
                )),
            },
            Kind::Count(0, u64::MAX) => None,
            Kind::Count(min, max) => Some(format!("{min} to {max}")),
            Kind::Choice(names) => Some(format!("one of {}", names.join(", "))),
            Kind::Text | Kind::Bool | Kind::List => None,
        }
    }

    /// The line under `--help`: what it does, the variable, the default and the range.
    pub fn help_line(&self) -> String {
        let env = match self.flag {
            Flag::Switch(_, v) => format!("{}={v}", self.env),
            Flag::Repeat(..) => format!("{}, comma separated", self.env),
            Flag::Value(..) => self.env.to_string(),
        };
        let mut line = format!("{} [env: {env}]", self.help());
        if let (_, Some(long), Some(dash)) = self.flag.names() {
            line = format!("{line} (`{dash}` is `--{long}`)");
        }
        line.push_str(&self.notes().replace('`', ""));
        line
    }

    /// ` (default: ...; range)`, or nothing when the setting has neither.
    fn notes(&self) -> String {
        let notes: Vec<String> = [
            self.default_doc().map(|d| format!("default: {d}")),
            self.range_doc(),
        ]
        .into_iter()
        .flatten()
        .collect();
        if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join("; "))
        }
    }

    /// The setting's row of the README's table.
    pub fn readme_row(&self) -> String {
        let (cli, env) = match self.flag {
            Flag::Repeat(f, _) => (
                format!("`{f}` (repeat)"),
                format!("`{}` (comma list)", self.env),
            ),
            Flag::Switch(f, v) if !v => (format!("`{f}`"), format!("`{}={v}`", self.env)),
            f => (format!("`{}`", f.spelling()), format!("`{}`", self.env)),
        };
        let mut key = format!("`{}`", self.key);
        if !self.aliases.is_empty() {
            let a: Vec<String> = self.aliases.iter().map(|a| format!("`{a}`")).collect();
            key.push_str(&format!(" ({} accepted)", a.join(", ")));
        }
        format!(
            "| {cli} | {env} | {key} | {}{} |",
            self.help(),
            self.notes()
        )
    }
}

/// The README's settings table, generated from [`SETTINGS`] (a test keeps the README's
/// copy in step).
pub fn readme_table() -> String {
    let mut t = String::from(
        "| CLI | env | `config:` key | meaning |\n|-----|-----|---------------|---------|\n",
    );
    for s in SETTINGS {
        t.push_str(&s.readme_row());
        t.push('\n');
    }
    t
}

/// A setting's type: how a given value (or the declared default) is parsed.
pub trait Value: Sized {
    /// Parses `raw` from `origin` for setting `s`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the setting, the origin and what is accepted.
    fn parse(raw: &serde_json::Value, s: &Setting, origin: &str, vars: &Vars) -> Result<Self>;

    /// The value when nothing sets it and the declaration says [`Unset::Empty`].
    ///
    /// # Errors
    /// [`Error::Config`] for types that need a value (a declaration without a default).
    fn empty(s: &Setting) -> Result<Self> {
        Err(Error::config(
            s.key,
            "is not set and has no default; set it",
        ))
    }
}

impl Value for String {
    fn parse(raw: &serde_json::Value, s: &Setting, origin: &str, vars: &Vars) -> Result<Self> {
        let text = as_string(raw);
        let text = match s.kind {
            Kind::Choice(names) => match names.iter().find(|n| n.eq_ignore_ascii_case(&text)) {
                Some(n) => n.to_string(),
                None => return Err(not_a_choice(s, &text, origin, names)),
            },
            _ => text,
        };
        match s.check {
            Some(check) => check(s, text, vars),
            None => Ok(text),
        }
    }
}

impl Value for bool {
    fn parse(raw: &serde_json::Value, s: &Setting, origin: &str, _: &Vars) -> Result<Self> {
        parse_bool(raw, s.key, origin)
    }
    fn empty(_: &Setting) -> Result<Self> {
        Ok(false)
    }
}

impl Value for Vec<String> {
    fn parse(raw: &serde_json::Value, _: &Setting, _: &str, _: &Vars) -> Result<Self> {
        Ok(match raw {
            serde_json::Value::Array(a) => a.iter().map(as_string).collect(),
            v => as_string(v)
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        })
    }
    fn empty(_: &Setting) -> Result<Self> {
        Ok(Vec::new())
    }
}

impl Value for Duration {
    fn parse(raw: &serde_json::Value, s: &Setting, origin: &str, _: &Vars) -> Result<Self> {
        let range = match s.kind {
            Kind::Duration(min, max) => (min, max),
            _ => (Duration::ZERO, MAX_DURATION),
        };
        duration_in(s.key, &as_string(raw), origin, range)
    }
}

impl Value for u64 {
    fn parse(raw: &serde_json::Value, s: &Setting, origin: &str, _: &Vars) -> Result<Self> {
        let range = match s.kind {
            Kind::Count(min, max) => (min, max),
            _ => (0, u64::MAX),
        };
        number_in(s.key, &as_string(raw), origin, range)
    }
}

/// Narrower whole numbers: parsed as `u64` within the declared range, which must fit.
macro_rules! narrow_count {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn parse(raw: &serde_json::Value, s: &Setting, origin: &str, vars: &Vars) -> Result<Self> {
                let n = u64::parse(raw, s, origin, vars)?;
                <$t>::try_from(n).map_err(|_| Error::config(s.key, format!("{n} is too large")))
            }
        }
    )*};
}
narrow_count!(usize, u16);

impl<T: Value> Value for Option<T> {
    fn parse(raw: &serde_json::Value, s: &Setting, origin: &str, vars: &Vars) -> Result<Self> {
        T::parse(raw, s, origin, vars).map(Some)
    }
    fn empty(_: &Setting) -> Result<Self> {
        Ok(None)
    }
}

/// A type whose values are named (`CONTINUE`, `json`, `parquet`): parsed by
/// `from_name`, refused with the declared [`Kind::Choice`] names.
macro_rules! named_value {
    ($($t:ty => $from_name:expr),* $(,)?) => {$(
        impl Value for $t {
            fn parse(raw: &serde_json::Value, s: &Setting, origin: &str, _: &Vars) -> Result<Self> {
                let text = as_string(raw);
                let from_name: fn(&str) -> Option<$t> = $from_name;
                from_name(text.trim()).ok_or_else(|| {
                    let names = match s.kind {
                        Kind::Choice(n) => n,
                        _ => &[],
                    };
                    not_a_choice(s, &text, origin, names)
                })
            }
        }
    )*};
}
named_value!(
    BatchPolicy => |t| match t.to_ascii_uppercase().as_str() {
        "CONTINUE" => Some(BatchPolicy::Continue),
        "RAISE" => Some(BatchPolicy::Raise),
        _ => None,
    },
    LogFormat => |t| match t.to_ascii_lowercase().as_str() {
        "text" | "pretty" => Some(LogFormat::Text),
        "json" => Some(LogFormat::Json),
        _ => None,
    },
    crate::data::DataFormat => crate::data::DataFormat::parse,
);

fn not_a_choice(s: &Setting, text: &str, origin: &str, names: &[&str]) -> Error {
    Error::config(
        s.key,
        format!(
            "`{}` from {origin} is not one of {}{}",
            printable(text),
            names.join(", "),
            closest(text, names.iter().copied())
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default()
        ),
    )
}

/// Resolves settings from layers (earlier layers win) and declared defaults, and
/// remembers where each value came from.
pub struct Resolver<'a> {
    layers: &'a [&'a Layer],
    vars: &'a Vars,
    origins: RefCell<BTreeMap<String, String>>,
}

impl<'a> Resolver<'a> {
    /// A resolver over `layers` (command line, environment, config file, in that order).
    pub fn new(layers: &'a [&'a Layer], vars: &'a Vars) -> Resolver<'a> {
        Resolver {
            layers,
            vars,
            origins: RefCell::default(),
        }
    }

    /// The process environment (`HOME`, `USER`).
    pub fn vars(&self) -> &Vars {
        self.vars
    }

    /// Where each resolved value came from, by key.
    pub fn origins(&self) -> BTreeMap<String, String> {
        self.origins.borrow().clone()
    }

    /// The value of `key` from the first layer that sets it (itself, or through a
    /// setting that implies it in that layer), with the layer's origin.
    fn pick(&self, key: &str) -> Option<(serde_json::Value, String)> {
        for l in self.layers {
            for s in SETTINGS {
                if let Some((implied, value)) = s.implies
                    && implied == key
                    && let Some(v) = l.get(s.key)
                    && parse_bool(v, s.key, &l.origin).unwrap_or(false)
                {
                    return Some((value.into(), l.origin.clone()));
                }
            }
            if let Some(v) = l.get(key) {
                return Some((v.clone(), l.origin.clone()));
            }
        }
        None
    }

    /// The typed value of setting `key`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the key, where the value came from and what is accepted.
    ///
    /// # Panics
    /// When `key` is not declared (a programming error the settings tests catch).
    pub fn get<T: Value>(&self, key: &str) -> Result<T> {
        let s = Setting::find(key).unwrap_or_else(|| panic!("setting {key} is not declared"));
        match self.pick(s.key) {
            Some((raw, origin)) => {
                self.origins
                    .borrow_mut()
                    .insert(s.key.to_string(), origin.clone());
                T::parse(&raw, s, &origin, self.vars)
            }
            None => match s.unset {
                Unset::Empty => T::empty(s),
                Unset::Value(v) => T::parse(&v.into(), s, "the default", self.vars),
                Unset::Computed(_, f) => T::parse(&f(self)?.into(), s, "the default", self.vars),
            },
        }
    }
}

/// Declares every setting once: generates the [`Settings`] struct (one documented,
/// typed field per setting), the [`SETTINGS`] table and the typed resolution.
macro_rules! settings {
    ($(
        $(#[doc = $doc:expr])*
        $key:ident: $ty:ty { $($field:ident: $value:expr),* $(,)? }
    )*) => {
        /// The resolved settings of a run: one field per declared setting ([`SETTINGS`]).
        #[derive(Debug, Clone)]
        pub struct Settings {
            $( $(#[doc = $doc])* pub $key: $ty, )*
            /// Which place each value came from (key -> origin).
            pub origins: BTreeMap<String, String>,
        }

        /// Every setting, in README and `--help` order.
        pub const SETTINGS: &[Setting] = &[$(
            Setting {
                key: stringify!($key),
                help: concat!($($doc, " "),*),
                $($field: $value,)*
                ..Setting::DEFAULT
            },
        )*];

        impl Settings {
            /// Every declared setting, typed, from `r`.
            pub(super) fn from_resolver(r: &Resolver<'_>) -> Result<Settings> {
                Ok(Settings {
                    $($key: r.get::<$ty>(stringify!($key))?,)*
                    origins: r.origins(),
                })
            }
        }
    };
}
pub(super) use settings;
