//! PostgreSQL's own output, forwarded into nexusd's log (target `nexusd::postgres`) at the level
//! PostgreSQL gave each line: DEBUGn → debug; LOG, INFO, NOTICE → the routine level (info under
//! `serve`, debug for a cluster a one-off command starts for itself); WARNING → warn; ERROR, FATAL,
//! PANIC → error. The messages that only mean a client was told to go away — nexusd's own
//! readiness probe during start-up, sessions ended by our own stop — are routine too, so a clean
//! shutdown logs no error.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tracing::Level;

/// Lines of server output kept to explain a failed start.
const LOG_TAIL: usize = 30;

const TARGET: &str = "nexusd::postgres";

/// Where one server's output goes, shared by the forwarders of its stdout and stderr.
#[derive(Debug, Clone)]
pub(super) struct LogSink {
    /// The last lines, for error messages.
    pub tail: Arc<Mutex<VecDeque<String>>>,
    /// The level of routine lines.
    routine: Level,
    /// Set once nexusd asked the server to stop: the sessions it then ends are expected.
    pub stopping: Arc<AtomicBool>,
}

impl LogSink {
    pub fn new(routine: Level) -> Self {
        LogSink {
            tail: Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL))),
            routine,
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn tail_text(&self) -> String {
        self.tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// Copies one output stream of the server into our log until it closes.
    pub async fn forward(self, stream: impl AsyncRead + Unpin) {
        let mut lines = BufReader::new(stream).lines();
        // DETAIL, HINT, STATEMENT… lines and unprefixed continuation lines go with their message.
        let mut current = Weight::Routine;
        while let Ok(Some(line)) = lines.next_line().await {
            let parsed = parse(&line);
            if let Some(level) = parsed.level
                && !is_auxiliary(level)
            {
                current = weigh(level, parsed.text, self.stopping.load(Ordering::Relaxed));
            }
            self.emit(current, parsed.pid, parsed.message);
            if let Ok(mut tail) = self.tail.lock() {
                if tail.len() == LOG_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
    }

    fn emit(&self, weight: Weight, pid: Option<u32>, message: &str) {
        macro_rules! event {
            ($level:expr) => {
                match pid {
                    Some(pid) => tracing::event!(target: TARGET, $level, pid, "{message}"),
                    None => tracing::event!(target: TARGET, $level, "{message}"),
                }
            };
        }
        match weight {
            Weight::Error => event!(Level::ERROR),
            Weight::Warning => event!(Level::WARN),
            Weight::Routine if self.routine == Level::INFO => event!(Level::INFO),
            Weight::Routine | Weight::Debug => event!(Level::DEBUG),
        }
    }
}

/// How much a line matters to an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Weight {
    Debug,
    Routine,
    Warning,
    Error,
}

/// A line as the server writes it with `log_line_prefix = '[%p] '`: `[1234] LOG:  message`.
#[derive(Debug, PartialEq, Eq)]
struct Line<'a> {
    pid: Option<u32>,
    /// `LOG`, `FATAL`, `DETAIL`…; `None` for a continuation line.
    level: Option<&'a str>,
    /// What follows the level.
    text: &'a str,
    /// The line without the PID prefix: what the log shows.
    message: &'a str,
}

const LEVELS: &[&str] = &[
    "DEBUG1", "DEBUG2", "DEBUG3", "DEBUG4", "DEBUG5", "LOG", "INFO", "NOTICE", "WARNING", "ERROR",
    "FATAL", "PANIC",
];
const AUXILIARY: &[&str] = &[
    "DETAIL",
    "HINT",
    "QUERY",
    "CONTEXT",
    "LOCATION",
    "STATEMENT",
];

fn is_auxiliary(level: &str) -> bool {
    AUXILIARY.contains(&level)
}

fn parse(line: &str) -> Line<'_> {
    let (pid, message) = line
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("] "))
        .and_then(|(pid, rest)| Some((Some(pid.parse().ok()?), rest)))
        .unwrap_or((None, line));
    let (level, text) = match message.split_once(":  ") {
        Some((level, text)) if LEVELS.contains(&level) || is_auxiliary(level) => {
            (Some(level), text)
        }
        _ => (None, message),
    };
    Line {
        pid,
        level,
        text,
        message,
    }
}

/// The weight of a message at `level` saying `text`; `stopping` when nexusd stops the server.
fn weigh(level: &str, text: &str, stopping: bool) -> Weight {
    match level {
        "ERROR" | "FATAL" if routine_failure(text, stopping) => Weight::Routine,
        "ERROR" | "FATAL" | "PANIC" => Weight::Error,
        "WARNING" => Weight::Warning,
        l if l.starts_with("DEBUG") => Weight::Debug,
        _ => Weight::Routine,
    }
}

/// FATALs that end one session as part of normal operation: a client connecting while the
/// server starts or stops (nexusd's readiness probe), a client that went away, and — when nexusd
/// itself asked for the stop — sessions and workers ended by it.
fn routine_failure(text: &str, stopping: bool) -> bool {
    const ALWAYS: &[&str] = &[
        "the database system is starting up",
        "the database system is shutting down",
        "the database system is not yet accepting connections",
        "the database system is not accepting connections",
        "connection to client lost",
    ];
    ALWAYS.iter().any(|m| text.starts_with(m))
        || (stopping && text.contains("due to administrator command"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_into_pid_level_and_text() {
        assert_eq!(
            parse("[4242] LOG:  database system is ready to accept connections"),
            Line {
                pid: Some(4242),
                level: Some("LOG"),
                text: "database system is ready to accept connections",
                message: "LOG:  database system is ready to accept connections",
            }
        );
        let continuation = parse("\tFROM patterns");
        assert_eq!((continuation.pid, continuation.level), (None, None));
        assert_eq!(parse("[7] STATEMENT:  SELECT 1").level, Some("STATEMENT"));
        assert_eq!(parse("[x] LOG:  odd").pid, None);
    }

    #[test]
    fn postgres_levels_map_to_ours() {
        assert_eq!(weigh("LOG", "checkpoint starting", false), Weight::Routine);
        assert_eq!(weigh("NOTICE", "extension exists", false), Weight::Routine);
        assert_eq!(weigh("DEBUG2", "x", false), Weight::Debug);
        assert_eq!(weigh("WARNING", "x", false), Weight::Warning);
        assert_eq!(
            weigh("ERROR", "relation does not exist", false),
            Weight::Error
        );
        assert_eq!(
            weigh("FATAL", "password authentication failed", false),
            Weight::Error
        );
        assert_eq!(weigh("PANIC", "could not write", true), Weight::Error);
    }

    #[test]
    fn sessions_ended_by_a_clean_stop_are_not_errors() {
        let terminated = "terminating connection due to administrator command";
        assert_eq!(weigh("FATAL", terminated, true), Weight::Routine);
        assert_eq!(weigh("FATAL", terminated, false), Weight::Error);
        assert_eq!(
            weigh("FATAL", "the database system is starting up", false),
            Weight::Routine
        );
        assert_eq!(
            weigh("FATAL", "the database system is shutting down", false),
            Weight::Routine
        );
        assert_eq!(
            weigh(
                "LOG",
                "could not receive data from client: Connection reset by peer",
                false
            ),
            Weight::Routine
        );
    }
}
