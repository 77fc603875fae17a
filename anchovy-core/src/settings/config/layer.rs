//! One source of settings (command line, environment, `config:`) as a layer of values.

use super::*;

/// Values for some settings from one source.
#[derive(Debug, Clone, Default)]
pub struct Layer {
    /// Where the values came from (`command line`, `environment`, `config: of ./config.yaml`).
    pub origin: String,
    values: BTreeMap<&'static str, serde_json::Value>,
}

impl Layer {
    /// An empty layer.
    pub fn new(origin: impl Into<String>) -> Layer {
        Layer {
            origin: origin.into(),
            values: BTreeMap::new(),
        }
    }

    /// Sets a known key.
    ///
    /// # Panics
    /// When `key` is not declared in [`SETTINGS`] (a programming error).
    pub fn set(&mut self, key: &str, value: impl Into<serde_json::Value>) -> &mut Self {
        let def = Setting::find(key).unwrap_or_else(|| panic!("unknown settings key {key}"));
        self.values.insert(def.key, value.into());
        self
    }

    /// Sets a key when `value` is `Some` (lists: when non-empty).
    pub fn set_opt<V: Into<serde_json::Value>>(
        &mut self,
        key: &str,
        value: Option<V>,
    ) -> &mut Self {
        if let Some(v) = value {
            let v = v.into();
            if !matches!(&v, serde_json::Value::Array(a) if a.is_empty()) {
                self.set(key, v);
            }
        }
        self
    }

    /// The layer of the `ACHVY_*` variables in `vars`.
    pub fn from_env<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Layer {
        let mut l = Layer::new("environment");
        let vars: BTreeMap<&str, &str> = vars.into_iter().collect();
        for def in SETTINGS {
            if let Some(v) = vars.get(def.env) {
                if matches!(def.kind, Kind::List) {
                    let items: Vec<serde_json::Value> = v
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| s.into())
                        .collect();
                    l.values.insert(def.key, items.into());
                } else {
                    l.values.insert(def.key, (*v).into());
                }
            }
        }
        l
    }

    /// The layer of a `config:` map; unknown keys are errors with a suggestion.
    ///
    /// # Errors
    /// [`Error::UnknownKey`].
    pub fn from_map(
        map: &serde_json::Map<String, serde_json::Value>,
        origin: &str,
    ) -> Result<Layer> {
        let mut l = Layer::new(format!("config: of {origin}"));
        for (k, v) in map {
            match Setting::find(k) {
                Some(def) => {
                    l.values.insert(def.key, v.clone());
                }
                None => {
                    return Err(Error::UnknownKey {
                        key: k.clone(),
                        place: format!("the config: map of {origin}"),
                        suggestion: closest(k, SETTINGS.iter().map(|d| d.key)),
                    });
                }
            }
        }
        Ok(l)
    }

    /// The value this layer gives `key` (canonical key), if any.
    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.values.get(key)
    }
}

/// The closest candidate to `word`, if it is close enough to be a plausible typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let w = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&w, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.to_string())
}
