//! Where a secret comes from. Every secret in the file (an account's
//! AppSecret, the state-signing key, the Redis URL with its password) is
//! given the same three ways, under `<name>`, `<name>_env` or
//! `<name>_file`; at most one of them.

use std::path::PathBuf;

use super::ConfigError;

/// One of the three ways a secret is given.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Inline in the file: discouraged, since the file then is a secret.
    Value(String),
    /// The name of an environment variable holding it.
    Env(String),
    /// A file holding it (a mounted Kubernetes or Docker secret); its
    /// surrounding whitespace is ignored.
    File(PathBuf),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Value(_) => f.write_str("Value([redacted])"),
            SecretSource::Env(name) => f.debug_tuple("Env").field(name).finish(),
            SecretSource::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// A secret's three keys as written in a section.
#[derive(Debug, Default)]
pub(crate) struct Given {
    pub value: Option<String>,
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

/// A secret's place in the file: its section (`accounts[0]`, `oauth`,
/// `store`) and name (`secret`, `state_secret`, `url`), for errors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Named<'a> {
    pub at: &'a str,
    pub name: &'a str,
}

impl Given {
    /// The three keys, in the order `<name>`, `<name>_env`, `<name>_file`.
    pub fn new(value: Option<String>, env: Option<String>, file: Option<PathBuf>) -> Given {
        Given { value, env, file }
    }
}

/// The secret `name` of section `at`, if one of its three keys is given.
///
/// # Errors
/// As [`SecretSource::pick`] and [`SecretSource::resolve`].
pub(crate) fn read(
    at: &str,
    name: &str,
    given: Given,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, ConfigError> {
    let named = Named { at, name };
    SecretSource::pick(named, given)?
        .map(|s| s.resolve(named, lookup))
        .transpose()
}

impl Named<'_> {
    /// The dotted key of one of its three forms: `""`, `"_env"`, `"_file"`.
    pub fn key(&self, form: &str) -> String {
        format!("{}.{}{form}", self.at, self.name)
    }
}

impl SecretSource {
    /// The one source given, if any.
    ///
    /// # Errors
    /// When more than one of the three keys is given.
    pub(crate) fn pick(
        named: Named<'_>,
        given: Given,
    ) -> Result<Option<SecretSource>, ConfigError> {
        match (given.value, given.env, given.file) {
            (None, None, None) => Ok(None),
            (Some(v), None, None) => Ok(Some(SecretSource::Value(v))),
            (None, Some(e), None) => Ok(Some(SecretSource::Env(e))),
            (None, None, Some(f)) => Ok(Some(SecretSource::File(f))),
            _ => Err(ConfigError::new(
                named.key("_env"),
                format!("give only one of {0}_env, {0}_file or {0}", named.name),
            )),
        }
    }

    /// The secret itself. `lookup` reads the environment.
    ///
    /// # Errors
    /// An unset variable, an unreadable file or an empty secret, naming the
    /// key (never the value).
    pub(crate) fn resolve(
        &self,
        named: Named<'_>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, ConfigError> {
        let (value, form) = match self {
            SecretSource::Value(v) => (v.clone(), ""),
            SecretSource::Env(name) => {
                let v = lookup(name).ok_or_else(|| {
                    ConfigError::new(
                        named.key("_env"),
                        format!("environment variable {name} is not set"),
                    )
                })?;
                (v, "_env")
            }
            SecretSource::File(path) => {
                let v = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new(named.key("_file"), format!("{}: {e}", path.display()))
                })?;
                (v.trim().to_string(), "_file")
            }
        };
        if value.is_empty() {
            return Err(ConfigError::new(named.key(form), "is empty"));
        }
        Ok(value)
    }
}
