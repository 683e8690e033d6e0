//! Logging: `tracing` to stderr, filtered by `NEXUSD_LOG`, as text or as one JSON object per line
//! (`NEXUSD_LOG_FORMAT=json`, the fields Cloud Logging reads: [`json`]). When stderr is the
//! journal (`JOURNAL_STREAM`), every line starts with its syslog priority (`<3>` error … `<7>`
//! debug) so `journalctl -p err` finds nexusd's errors. Also owns how long commands show their
//! progress ([`progress`]).
//!
//! Why `<N>` prefixes rather than the native journal protocol: journald parses them by default on
//! the stream it already captures (`SyslogLevelPrefix=yes`), so nexusd's lines, PostgreSQL's lines
//! forwarded through it and anything a child writes stay one stream in one order, `systemctl
//! status` shows them as before, and nothing needs the journal's socket inside the unit's sandbox.
//! Structured fields are what `NEXUSD_LOG_FORMAT=json` is for.

mod json;
pub mod progress;
pub mod trace;

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::cli::Command;
use crate::env::{Env, Var};

/// The variables read here, as `nexusd --help` lists them.
pub const VARIABLES: &[Var] = &[
    Var {
        name: "NEXUSD_LOG",
        default: "warn,nexusd=info",
        meaning: "log filter, e.g. nexusd=debug; other crates log warnings only by default. One-off commands in a terminal log warnings only unless it is set",
    },
    Var {
        name: "NEXUSD_LOG_FORMAT",
        default: "text",
        meaning: "text or json (one object per line with severity, message, time and the fields, as Cloud Logging reads them). Under systemd each line carries its journal priority",
    },
    Var {
        name: "GOOGLE_CLOUD_PROJECT",
        default: "-",
        meaning: "the project of Cloud Trace: JSON log lines of a traced request then name projects/<it>/traces/<id>, so Cloud Logging links them to the trace",
    },
    Var {
        name: "JOURNAL_STREAM",
        default: "-",
        meaning: "set by systemd, not by hand: when it names stderr, each log line starts with its journal priority (<3> error … <7> debug)",
    },
];

/// nexusd's own messages at info; other crates (sqlx's per-statement notices, the scheduler's
/// chatter) only when something is wrong.
pub const DEFAULT_LOG_FILTER: &str = "warn,nexusd=info";

/// The filter of a one-off command in a terminal: its result is printed on stdout, and the
/// info-level story of how it got there would only repeat it.
const TERMINAL_COMMAND_FILTER: &str = "warn";

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `NEXUSD_LOG`: a tracing filter such as `info` or `nexusd=debug,sqlx=warn`.
    pub filter: String,
    /// Whether `NEXUSD_LOG` was set (it then applies to one-off commands in a terminal too).
    pub filter_set: bool,
    /// `NEXUSD_LOG_FORMAT`: `text` (default) or `json`.
    pub format: LogFormat,
    /// `GOOGLE_CLOUD_PROJECT`: the project trace names are in (JSON lines only).
    pub project: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Who is logging, which decides the default verbosity in a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `serve` and `proxy`: logs are their output.
    Daemon,
    /// `bootstrap`, `backup …`, `embed`, …: the result goes to stdout, logs say what went wrong.
    Command,
}

impl Role {
    pub fn of(command: &Command) -> Role {
        match command {
            Command::Serve | Command::Proxy => Role::Daemon,
            _ => Role::Command,
        }
    }
}

impl LogConfig {
    pub fn from_env(env: &mut Env<'_>) -> LogConfig {
        log_config(env)
    }
}

fn log_config(env: &mut Env<'_>) -> LogConfig {
    let set = env.get("NEXUSD_LOG");
    let filter_set = set.is_some();
    let filter = set.unwrap_or_else(|| DEFAULT_LOG_FILTER.to_string());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&filter) {
        env.error(
            "NEXUSD_LOG",
            format!("{filter:?} is not a valid log filter ({e}): expected e.g. info or nexusd=debug,sqlx=warn"),
        );
    }
    let format = match env
        .get("NEXUSD_LOG_FORMAT")
        .as_deref()
        .map(str::to_ascii_lowercase)
    {
        None => LogFormat::Text,
        Some(f) if f == "text" => LogFormat::Text,
        Some(f) if f == "json" => LogFormat::Json,
        Some(other) => {
            env.error(
                "NEXUSD_LOG_FORMAT",
                format!("{other:?} is not valid: expected text or json"),
            );
            LogFormat::Text
        }
    };
    let project = env.get("GOOGLE_CLOUD_PROJECT").filter(|p| !p.is_empty());
    LogConfig {
        filter,
        filter_set,
        format,
        project,
    }
}

/// The format chosen at [`init`], for code that writes to stderr besides the log (progress).
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Whether stderr carries JSON log lines only (so progress must be log events, not plain text).
pub fn json_output() -> bool {
    FORMAT.get() == Some(&LogFormat::Json)
}

/// Installs the global subscriber. Safe to call once; later calls are ignored.
pub fn init(config: &LogConfig, role: Role) {
    let terminal = std::io::stderr().is_terminal();
    let filter = if role == Role::Command && terminal && !config.filter_set {
        TERMINAL_COMMAND_FILTER
    } else {
        config.filter.as_str()
    };
    // The filter was validated when the configuration was parsed.
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let journal = stderr_is_journal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(json::CloudLogging {
                journal,
                project: config.project.clone(),
            })
            .try_init(),
        // journald stamps every line itself.
        LogFormat::Text if journal => builder
            .with_ansi(false)
            .event_format(JournalPriority(format::Format::default().without_time()))
            .try_init(),
        LogFormat::Text => builder.with_ansi(terminal).try_init(),
    };
    // An already installed subscriber (tests) is fine.
    if result.is_ok() {
        let _ = FORMAT.set(config.format);
    }
}

/// Whether stderr is the journal: systemd sets `JOURNAL_STREAM` to its `device:inode`, and a
/// child that inherited the variable but not the stream (a shell in a unit, `sudo -E`) must not
/// prefix its terminal lines.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(wanted) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    wanted.to_string_lossy() == format!("{}:{}", meta.dev(), meta.ino())
}

/// The syslog priority journald reads from a `<N>` prefix (sd-daemon(3)).
fn syslog_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// A text format with the journal priority on every line, continuation lines of a multi-line
/// message included (journald splits on newlines, and an unprefixed line would be info).
struct JournalPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for JournalPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut text = String::new();
        self.0.format_event(ctx, Writer::new(&mut text), event)?;
        let priority = syslog_priority(event.metadata().level());
        for line in text.trim_end_matches('\n').split('\n') {
            writeln!(writer, "<{priority}>{line}")?;
        }
        Ok(())
    }
}

/// The fields of the spans around an event, outermost first, as JSON objects (the subscriber
/// formats span fields with [`JsonFields`] in JSON mode).
fn span_fields<S, N>(ctx: &FmtContext<'_, S, N>) -> Vec<serde_json::Value>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    let Some(scope) = ctx.event_scope() else {
        return Vec::new();
    };
    scope
        .from_root()
        .map(|span| {
            let mut object = span
                .extensions()
                .get::<FormattedFields<N>>()
                .and_then(|f| serde_json::from_str::<serde_json::Value>(&f.fields).ok())
                .and_then(|v| v.as_object().cloned())
                .unwrap_or_default();
            object.insert("name".into(), span.name().into());
            serde_json::Value::Object(object)
        })
        .collect()
}

/// "error sending request: … : connection refused": an error and every cause, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_are_syslogs() {
        assert_eq!(syslog_priority(&Level::ERROR), 3);
        assert_eq!(syslog_priority(&Level::WARN), 4);
        assert_eq!(syslog_priority(&Level::INFO), 6);
        assert_eq!(syslog_priority(&Level::DEBUG), 7);
        assert_eq!(syslog_priority(&Level::TRACE), 7);
    }
}
