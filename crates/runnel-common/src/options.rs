//! The `WITH (…)` option map of a table, with typed access that names
//! unknown, missing and malformed keys.

use std::collections::BTreeMap;

/// A problem with a table's options; the message names the key and the fix.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OptionError {
    /// A key the connector does not know.
    #[error("unknown option '{key}' for connector '{connector}'; known options: {known}")]
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

/// Options of one `CREATE TABLE … WITH (…)`, keys lower-cased as written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    map: BTreeMap<String, String>,
}

impl Options {
    /// Builds from key/value pairs.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            map: pairs.into_iter().collect(),
        }
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
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
                    known: known.join(", "),
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
            "unknown option 'pth' for connector 'file'; known options: path, format"
        );
    }
}
