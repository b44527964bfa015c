//! The `WITH (…)` option map of a table, with typed access that names
//! unknown, missing and malformed keys.

use std::collections::BTreeMap;

/// Where something was written in a script: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely
/// typo (at most a third of the word's length, and at least 1 edit, away).
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// ` (did you mean 'x'?)` when `word` looks like a typo of a candidate, else empty.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(word, candidates)
        .map(|c| format!("; did you mean '{c}'?"))
        .unwrap_or_default()
}

/// A problem with a table's options; the message names the key and the fix.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OptionError {
    /// A key the connector does not know.
    #[error(
        "unknown option '{key}' for connector '{connector}'{hint}; known options: {known}",
        hint = did_you_mean(.key, .known.split(", "))
    )]
    Unknown {
        /// The connector name.
        connector: String,
        /// The offending key.
        key: String,
        /// The valid keys, comma separated.
        known: String,
    },
    /// A required key is absent.
    #[error("connector '{connector}' needs option '{key}'")]
    Missing {
        /// The connector name.
        connector: String,
        /// The missing key.
        key: String,
    },
    /// A value that does not parse.
    #[error("option '{key}' = '{value}' of connector '{connector}': {reason}")]
    Invalid {
        /// The connector name.
        connector: String,
        /// The key.
        key: String,
        /// The value as written.
        value: String,
        /// What was expected.
        reason: String,
    },
}

impl OptionError {
    /// The option key the problem is about.
    pub fn key(&self) -> &str {
        match self {
            OptionError::Unknown { key, .. }
            | OptionError::Missing { key, .. }
            | OptionError::Invalid { key, .. } => key,
        }
    }
}

/// Options of one `CREATE TABLE … WITH (…)`, keys lower-cased as written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    map: BTreeMap<String, String>,
    positions: BTreeMap<String, Position>,
}

impl Options {
    /// Builds from key/value pairs.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            map: pairs.into_iter().collect(),
            positions: BTreeMap::new(),
        }
    }

    /// Builds from key/value pairs with where each key was written.
    pub fn with_positions(pairs: impl IntoIterator<Item = (String, String, Position)>) -> Self {
        let mut o = Self::default();
        for (k, v, p) in pairs {
            o.positions.insert(k.clone(), p);
            o.map.insert(k, v);
        }
        o
    }

    /// Where `key` was written in the script, when known.
    pub fn position(&self, key: &str) -> Option<Position> {
        self.positions.get(key).copied()
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    /// Sets `key` (no position: not written by the user).
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.map.insert(key.to_string(), value.into());
    }

    /// All keys and values.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The `connector` option.
    pub fn connector(&self) -> Option<&str> {
        self.get("connector")
    }

    /// Fails on the first key not in `known` (the `connector` key is always allowed).
    pub fn check_known(&self, connector: &str, known: &[&str]) -> Result<(), OptionError> {
        for key in self.map.keys() {
            if key != "connector" && !known.contains(&key.as_str()) {
                return Err(OptionError::Unknown {
                    connector: connector.to_string(),
                    key: key.clone(),
                    known: if known.is_empty() {
                        "none besides 'connector'".to_string()
                    } else {
                        known.join(", ")
                    },
                });
            }
        }
        Ok(())
    }

    /// The value of a required key.
    pub fn required(&self, connector: &str, key: &str) -> Result<&str, OptionError> {
        self.get(key).ok_or_else(|| OptionError::Missing {
            connector: connector.to_string(),
            key: key.to_string(),
        })
    }

    /// An optional key parsed with `parse`; `reason` says what was expected.
    pub fn parsed<T>(
        &self,
        connector: &str,
        key: &str,
        reason: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, OptionError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => parse(v).map(Some).ok_or_else(|| OptionError::Invalid {
                connector: connector.to_string(),
                key: key.to_string(),
                value: v.to_string(),
                reason: reason.to_string(),
            }),
        }
    }

    /// An optional key that must be one of `choices`.
    pub fn choice<'a>(
        &'a self,
        connector: &str,
        key: &str,
        choices: &[&str],
    ) -> Result<Option<&'a str>, OptionError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) if choices.contains(&v) => Ok(Some(v)),
            Some(v) => Err(OptionError::Invalid {
                connector: connector.to_string(),
                key: key.to_string(),
                value: v.to_string(),
                reason: format!("expected one of {}", choices.join(", ")),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_list_the_known_ones() {
        let o = Options::new([
            ("connector".into(), "file".into()),
            ("pth".into(), "x".into()),
        ]);
        let err = o.check_known("file", &["path", "format"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown option 'pth' for connector 'file'; did you mean 'path'?; known options: path, format"
        );
    }

    #[test]
    fn closest_finds_typos_only() {
        let keys = ["execution.checkpointing.interval", "parallelism.default"];
        assert_eq!(
            closest("execution.checkpointing.intervall", keys),
            Some("execution.checkpointing.interval")
        );
        assert_eq!(
            closest("paralelism.default", keys),
            Some("parallelism.default")
        );
        assert_eq!(closest("colour", keys), None);
    }
}
