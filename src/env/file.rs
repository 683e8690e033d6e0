//! The environment file every command reads, as systemd's `EnvironmentFile=` does for the unit
//! (systemd.exec(5)): `KEY=VALUE` lines, `#` and `;` comments, values in single quotes (taken
//! literally) or double quotes (`\"`, `\\`, `` \` `` and `\$` escaped), a backslash at the end of
//! a line continuing it, no variable expansion. Lines that are not assignments are ignored with a
//! warning, as systemd does, so a file the unit accepts never stops a command.
//!
//! `--env-file PATH` names the file; without it `/etc/nexusd/nexusd.env` is read when it exists.
//! The process environment wins over the file. What was read (or not found) is kept for the
//! messages that say where nexusd looked for its configuration.

use std::fmt;
use std::path::{Path, PathBuf};

/// The file the systemd unit reads (`EnvironmentFile=` in `systemd/nexusd.service`).
pub const DEFAULT_ENV_FILE: &str = "/etc/nexusd/nexusd.env";

/// Which environment file a command's configuration came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EnvFile {
    /// Nothing was read (configurations built in tests).
    #[default]
    None,
    /// The file was read.
    Read(PathBuf),
    /// The default file does not exist.
    NotFound(PathBuf),
    /// The default file is the unit's `EnvironmentFile=`, which systemd already applied as root;
    /// the service's own user may not read it (the provisioning writes it 0600).
    AppliedBySystemd(PathBuf),
}

impl fmt::Display for EnvFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvFile::None => f.write_str("no environment file read"),
            EnvFile::Read(path) => write!(f, "read {}", path.display()),
            EnvFile::NotFound(path) => write!(f, "{} does not exist", path.display()),
            EnvFile::AppliedBySystemd(path) => {
                write!(
                    f,
                    "{} applied by systemd (EnvironmentFile=)",
                    path.display()
                )
            }
        }
    }
}

/// The assignments of an environment file, in order, and a warning per line ignored.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub vars: Vec<(String, String)>,
    pub warnings: Vec<String>,
}

/// Reads the environment file: `explicit` (which must exist), else the default one when it
/// exists. An unreadable file is an error naming it and the fix.
pub fn load(explicit: Option<&Path>) -> Result<(EnvFile, Parsed), String> {
    load_as(explicit, std::env::var_os("INVOCATION_ID").is_some())
}

/// [`load`], told whether systemd started this process (it sets `INVOCATION_ID` for every unit
/// it runs): then the default file that cannot be read is the unit's `EnvironmentFile=`, already
/// in the environment, and not an error — the service runs as a user that cannot read it.
fn load_as(explicit: Option<&Path>, under_systemd: bool) -> Result<(EnvFile, Parsed), String> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => {
            let default = PathBuf::from(DEFAULT_ENV_FILE);
            if !default.exists() {
                return Ok((EnvFile::NotFound(default), Parsed::default()));
            }
            default
        }
    };
    match std::fs::read(&path) {
        Ok(bytes) => Ok((EnvFile::Read(path), parse(&String::from_utf8_lossy(&bytes)))),
        Err(e) => unreadable(path, &e, explicit.is_none() && under_systemd),
    }
}

/// What an unreadable environment file means. `unit_file`: it is the default file and systemd
/// started nexusd, so the file is the unit's `EnvironmentFile=` and already applied.
fn unreadable(
    path: PathBuf,
    e: &std::io::Error,
    unit_file: bool,
) -> Result<(EnvFile, Parsed), String> {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied if unit_file => {
            Ok((EnvFile::AppliedBySystemd(path), Parsed::default()))
        }
        std::io::ErrorKind::PermissionDenied => Err(format!(
            "cannot read the environment file {} (permission denied): run the command with sudo \
             (as the service does), or pass --env-file PATH (--env-file /dev/null reads none)",
            path.display()
        )),
        _ => Err(format!(
            "cannot read the environment file {}: {e}; pass --env-file PATH (--env-file \
             /dev/null reads none)",
            path.display()
        )),
    }
}

/// Parses an environment file's text as systemd does.
pub fn parse(text: &str) -> Parsed {
    let mut lexer = Lexer::default();
    for c in text.chars() {
        lexer.take(c);
    }
    lexer.take('\n');
    lexer.parsed
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    PreKey,
    Key,
    PreValue,
    Value,
    ValueEscape,
    Single,
    Double,
    DoubleEscape,
    Comment,
    CommentEscape,
}

/// systemd's state machine (`src/basic/env-file.c`), one character at a time.
#[derive(Default)]
struct Lexer {
    state: State,
    key: String,
    value: String,
    /// Length of `value` without the trailing whitespace of an unquoted part.
    value_end: usize,
    /// Lines read so far (the current line is `line + 1`).
    line: usize,
    parsed: Parsed,
}

impl Lexer {
    fn take(&mut self, c: char) {
        use State::*;
        let newline = c == '\n' || c == '\r';
        self.state = match (self.state, c) {
            (PreKey, '#' | ';') => Comment,
            (PreKey, _) if c.is_whitespace() => PreKey,
            (PreKey, _) => self.key_char(c),
            (Key, _) if newline => {
                let key = std::mem::take(&mut self.key);
                self.warn(format!("{:?} is not KEY=VALUE", key.trim_end()));
                PreKey
            }
            (Key, '=') => PreValue,
            (Key, _) => self.key_char(c),
            (PreValue | Value, _) if newline => self.assign(),
            (PreValue, '\'') => Single,
            (PreValue, '"') => Double,
            (PreValue | Value, '\\') => ValueEscape,
            (PreValue, _) if c.is_whitespace() => PreValue,
            (PreValue | Value, _) => self.unquoted(c),
            (ValueEscape, _) if newline => Value,
            (ValueEscape, _) => self.unquoted(c),
            (Single, '\'') | (Double, '"') => PreValue,
            (Double, '\\') => DoubleEscape,
            (Single, _) | (Double, _) => self.quoted(c, self.state),
            (DoubleEscape, '"' | '\\' | '`' | '$') => self.quoted(c, Double),
            (DoubleEscape, _) if newline => Double,
            (DoubleEscape, _) => {
                self.value.push('\\');
                self.quoted(c, Double)
            }
            (Comment, '\\') => CommentEscape,
            (Comment, _) if newline => PreKey,
            (Comment, _) | (CommentEscape, _) => Comment,
        };
        if c == '\n' {
            self.line += 1;
        }
    }

    fn key_char(&mut self, c: char) -> State {
        self.key.push(c);
        State::Key
    }

    fn unquoted(&mut self, c: char) -> State {
        self.value.push(c);
        if !c.is_whitespace() {
            self.value_end = self.value.len();
        }
        State::Value
    }

    fn quoted(&mut self, c: char, state: State) -> State {
        self.value.push(c);
        self.value_end = self.value.len();
        state
    }

    /// The end of an assignment: the key must be a valid variable name.
    fn assign(&mut self) -> State {
        let key = std::mem::take(&mut self.key).trim_end().to_string();
        let mut value = std::mem::take(&mut self.value);
        value.truncate(self.value_end);
        self.value_end = 0;
        let valid = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid {
            self.parsed.vars.push((key, value));
        } else {
            self.warn(format!("{key:?} is not a valid variable name"));
        }
        State::PreKey
    }

    fn warn(&mut self, what: String) {
        self.parsed
            .warnings
            .push(format!("line {}: {what}; ignored", self.line + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(text: &str) -> Vec<(String, String)> {
        parse(text).vars
    }

    /// The service runs as `nexusd`, which cannot read the root-only file systemd already
    /// applied: that must not stop it. By hand, the same refusal is an error naming the fix.
    #[test]
    fn an_unreadable_unit_file_is_skipped_only_under_systemd() {
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let path = PathBuf::from(DEFAULT_ENV_FILE);
        let (file, parsed) = unreadable(path.clone(), &denied, true).expect("skipped");
        assert_eq!(file, EnvFile::AppliedBySystemd(path.clone()));
        assert!(parsed.vars.is_empty());
        let by_hand = unreadable(path.clone(), &denied, false).expect_err("refused");
        assert!(
            by_hand.contains("permission denied") && by_hand.contains("sudo"),
            "{by_hand}"
        );
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert!(unreadable(path, &missing, true).is_err());
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn assignments_comments_and_whitespace() {
        let text = "# a comment\n; another\n\nDATABASE_URL=postgresql://u:p@h/db\n  \
                    NEXUSD_LOG = info,nexusd=debug  \nEMPTY=\n";
        assert_eq!(
            vars(text),
            [
                pair("DATABASE_URL", "postgresql://u:p@h/db"),
                pair("NEXUSD_LOG", "info,nexusd=debug"),
                pair("EMPTY", ""),
            ]
        );
    }

    #[test]
    fn quotes_as_systemd_reads_them() {
        let text = "A='single \\d+ $HOME # kept'\nB=\"double \\\"q\\\" \\\\ \\n\"\nC='a''b' \n\
                    D=no $expansion\nE=with\\\n continuation\nF=\"x\" ";
        assert_eq!(
            vars(text),
            [
                pair("A", "single \\d+ $HOME # kept"),
                pair("B", "double \"q\" \\ \\n"),
                pair("C", "ab"),
                pair("D", "no $expansion"),
                pair("E", "with continuation"),
                pair("F", "x"),
            ]
        );
    }

    #[test]
    fn the_last_line_needs_no_newline_and_comments_may_continue() {
        assert_eq!(vars("# x \\\nNOT=a variable\nK=v"), [pair("K", "v")]);
        assert_eq!(vars("K=v"), [pair("K", "v")]);
    }

    #[test]
    fn lines_that_are_not_assignments_are_ignored_with_a_warning() {
        let parsed = parse("export\n1BAD=x\nGOOD=y\n");
        assert_eq!(parsed.vars, [pair("GOOD", "y")]);
        assert_eq!(parsed.warnings.len(), 2, "{:?}", parsed.warnings);
        assert!(parsed.warnings[0].starts_with("line 1: \"export\""));
        assert!(parsed.warnings[1].starts_with("line 2: \"1BAD\""));
    }

    #[test]
    fn a_missing_default_file_is_no_error() {
        let (file, parsed) = load(None).unwrap();
        if !Path::new(DEFAULT_ENV_FILE).exists() {
            assert_eq!(file, EnvFile::NotFound(DEFAULT_ENV_FILE.into()));
            assert!(parsed.vars.is_empty());
        }
        let missing = load(Some(Path::new("/nonexistent/nexusd.env"))).unwrap_err();
        assert!(missing.contains("/nonexistent/nexusd.env") && missing.contains("--env-file"));
    }
}
