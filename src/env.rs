//! Reading the environment: [`Env`] parses variables into typed values and collects every
//! problem, each naming its variable and what was expected, so an operator fixes them all at
//! once. Each capability parses its own section with it (`backup::BackupConfig::from_env`, …);
//! `config.rs` composes them. [`Var`] is how a capability documents the variables it reads:
//! `nexusd --help` and the README's table are made from those lists. [`file`] reads the
//! environment file (`--env-file`, `/etc/nexusd/nexusd.env`) every command starts from.

pub mod file;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// One documented variable: its name, its default as shown to an operator, and its meaning.
#[derive(Debug, Clone, Copy)]
pub struct Var {
    pub name: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

/// One configuration problem: the variable, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

/// Every problem found in one pass, so a user fixes them all at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads variables, trimming them and treating empty values as unset, and collects errors.
pub struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
    /// Every variable asked for, so a test can hold them against the documented list.
    read: std::cell::RefCell<std::collections::BTreeSet<&'static str>>,
}

impl<'a> Env<'a> {
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Env {
            lookup,
            errors: Vec::new(),
            read: Default::default(),
        }
    }

    /// `value` when no variable was bad, else every problem found.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, ConfigErrors> {
        match value {
            Some(value) if self.errors.is_empty() => Ok(value),
            _ => Err(ConfigErrors(self.errors)),
        }
    }

    /// The variables read so far.
    pub fn read(&self) -> Vec<&'static str> {
        self.read.borrow().iter().copied().collect()
    }

    /// The trimmed value of `var`; empty counts as unset.
    pub fn get(&self, var: &'static str) -> Option<String> {
        self.read.borrow_mut().insert(var);
        (self.lookup)(var)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    pub fn error(&mut self, var: &'static str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            var,
            message: message.into(),
        });
    }

    /// Parses `var` (or `default` when unset); on failure records "expected …" and returns None.
    pub fn parse_or<T: FromStr>(
        &mut self,
        var: &'static str,
        default: &str,
        expected: &str,
    ) -> Option<T> {
        let raw = self.get(var);
        let value = raw.as_deref().unwrap_or(default);
        match value.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                self.error(var, format!("{value:?} is not valid: expected {expected}"));
                None
            }
        }
    }

    /// A comma-separated list, entries trimmed, empty entries dropped.
    pub fn list(&self, var: &'static str) -> Option<Vec<String>> {
        self.get(var).map(|v| split_list(&v))
    }

    /// An http(s) URL without a trailing slash.
    pub fn url(&mut self, var: &'static str) -> Option<String> {
        let raw = self.get(var)?;
        match url::Url::parse(&raw) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {
                Some(raw.trim_end_matches('/').to_string())
            }
            _ => {
                self.error(
                    var,
                    format!("{raw:?} is not valid: expected an http:// or https:// URL"),
                );
                None
            }
        }
    }

    pub fn bool(&mut self, var: &'static str) -> Option<bool> {
        let raw = self.get(var)?;
        match parse_bool(&raw) {
            Some(b) => Some(b),
            None => {
                self.error(var, format!("{raw:?} is not valid: expected true or false"));
                None
            }
        }
    }

    /// A whole number in `lo..=hi` (`default` when unset); out of range or unparsable is an
    /// error naming `what` was expected, and gives `default`.
    pub fn bounded(
        &mut self,
        var: &'static str,
        default: u32,
        lo: u32,
        hi: u32,
        what: &str,
    ) -> u32 {
        match self.parse_or::<u32>(var, &default.to_string(), what) {
            Some(v) if (lo..=hi).contains(&v) => v,
            Some(v) => {
                self.error(var, format!("{v} is out of range: expected {what}"));
                default
            }
            None => default,
        }
    }
}

/// Splits a comma-separated value, trimming entries and dropping empty ones.
pub fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `true/false`, `1/0`, `yes/no`, `on/off`, in any case.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// `path` made absolute against the current directory (kept as it is if that fails).
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// A URL with its password replaced by `***`; something unparseable is not echoed at all.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                // Cannot fail for URLs that already carry a password.
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<unparseable URL>".to_string(),
    }
}

pub fn redact_text(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() => text.replace(s, "***"),
        _ => text.to_string(),
    }
}
