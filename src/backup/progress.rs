//! Progress of the backup jobs an operator runs by hand (`backup run`, `backup verify`,
//! `restore`), on stderr: on a terminal one line per stage, redrawn twice a second with the bytes
//! done, the percent, the rate and the time left; when stderr is not a terminal (a pipe, the
//! journal) one plain line as each stage starts. The jobs `serve` schedules show none (they log).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the terminal line is redrawn.
const TICK: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Off,
    Lines,
    Terminal,
}

/// Where a job reports its stages.
#[derive(Debug, Clone)]
pub struct Progress {
    mode: Mode,
    /// What the job works on, e.g. `restore dev-nexus-20261124_020000.sql.gz`.
    label: String,
}

impl Progress {
    /// No progress (scheduled jobs).
    pub fn off() -> Self {
        Progress {
            mode: Mode::Off,
            label: String::new(),
        }
    }

    /// Progress on stderr: redrawn on a terminal, one line per stage otherwise.
    pub fn stderr(label: impl Into<String>) -> Self {
        let mode = if std::io::stderr().is_terminal() {
            Mode::Terminal
        } else {
            Mode::Lines
        };
        Progress {
            mode,
            label: label.into(),
        }
    }

    /// The same progress under another label (once the job knows its backup's name).
    pub fn relabel(&self, label: impl Into<String>) -> Self {
        Progress {
            mode: self.mode,
            label: label.into(),
        }
    }

    /// Starts a stage of `total` bytes (unknown: `None`); the job adds to its counter.
    pub fn stage(&self, name: &str, total: Option<u64>) -> Stage {
        self.start(name, total, false)
    }

    /// Starts a stage whose size is only estimated (a backup's dump: the previous backup's
    /// size), shown as "about"; the percent stops at 100 and the time left goes when the
    /// estimate is passed.
    pub fn estimated_stage(&self, name: &str, estimate: Option<u64>) -> Stage {
        self.start(name, estimate, true)
    }

    fn start(&self, name: &str, total: Option<u64>, estimated: bool) -> Stage {
        let about = if estimated { "about " } else { "" };
        let shared = Arc::new(Shared {
            label: self.label.clone(),
            name: name.to_string(),
            total,
            about,
            started: Instant::now(),
            done: Arc::new(AtomicU64::new(0)),
            note: Mutex::new(None),
        });
        let ticker = match self.mode {
            Mode::Off => None,
            Mode::Lines => {
                let size = total
                    .map(|t| format!(" ({about}{})", megabytes(t)))
                    .unwrap_or_default();
                eprintln!("{}: {name}{size}", self.label);
                None
            }
            Mode::Terminal => {
                let shared = shared.clone();
                Some(tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(TICK).await;
                        eprint!("\r\x1b[K{}", shared.line(false));
                    }
                }))
            }
        };
        Stage {
            shared,
            ticker,
            mode: self.mode,
        }
    }
}

/// What a stage's redraws read.
#[derive(Debug)]
struct Shared {
    label: String,
    name: String,
    total: Option<u64>,
    /// `"about "` when `total` is an estimate.
    about: &'static str,
    started: Instant,
    done: Arc<AtomicU64>,
    note: Mutex<Option<String>>,
}

impl Shared {
    /// `restore x: load  45.2% 12.1 of 26.8 MB, 4.0 MB/s, 0:04 left`; when `finished`, what the
    /// stage did and how fast.
    fn line(&self, finished: bool) -> String {
        let done = self.done.load(Ordering::Relaxed);
        let seconds = self.started.elapsed().as_secs_f64();
        let rate = done as f64 / seconds.max(0.001);
        let head = format!("{}: {}", self.label, self.name);
        if finished {
            return format!(
                "{head} {} in {seconds:.1} s ({}/s)",
                megabytes(done),
                megabytes(rate as u64)
            );
        }
        let note = self.note.lock().ok().and_then(|n| n.clone());
        let mut line = match self.total {
            Some(total) if total > 0 => {
                let pct = (done as f64 * 100.0 / total as f64).min(100.0);
                format!(
                    "{head} {pct:5.1}% {} of {}{}",
                    megabytes(done),
                    self.about,
                    megabytes(total)
                )
            }
            _ => format!("{head} {}", megabytes(done)),
        };
        line.push_str(&format!(", {}/s", megabytes(rate as u64)));
        match (note, self.total) {
            (Some(note), _) => line.push_str(&format!(", {note}")),
            (None, Some(total)) if rate > 0.0 && done < total => {
                let left = ((total - done) as f64 / rate) as u64;
                line.push_str(&format!(", {}:{:02} left", left / 60, left % 60));
            }
            _ => {}
        }
        line
    }
}

/// One stage of a job: count its bytes with [`Stage::add`], end it with [`Stage::finish`].
#[derive(Debug)]
pub struct Stage {
    shared: Arc<Shared>,
    ticker: Option<tokio::task::JoinHandle<()>>,
    mode: Mode,
}

impl Stage {
    /// `bytes` more are done.
    pub fn add(&self, bytes: u64) {
        self.shared.done.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The stage's byte counter, for work that counts on other threads.
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.shared.done.clone()
    }

    /// What the stage is doing now, shown instead of the time left.
    pub fn note(&self, text: String) {
        if let Ok(mut note) = self.shared.note.lock() {
            *note = Some(text);
        }
    }

    /// A new phase of the stage (building indexes after the data): on a terminal it becomes
    /// the note, otherwise it gets a line of its own.
    pub fn phase(&self, text: String) {
        if self.mode == Mode::Lines {
            eprintln!("{}: {}: {text}", self.shared.label, self.shared.name);
        }
        self.note(text);
    }

    /// Ends the stage; on a terminal, its line stays with what it did.
    pub fn finish(mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
            eprintln!("\r\x1b[K{}", self.shared.line(true));
        }
    }
}

impl Drop for Stage {
    /// A stage abandoned by an error clears its line, so the error starts a clean one.
    fn drop(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
            if self.mode == Mode::Terminal {
                eprint!("\r\x1b[K");
            }
        }
    }
}

/// `12.3 MB`.
pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(total: Option<u64>, done: u64, seconds: u64, note: Option<&str>) -> Shared {
        Shared {
            label: "restore x".into(),
            name: "load".into(),
            total,
            about: "",
            started: Instant::now() - Duration::from_secs(seconds),
            done: Arc::new(AtomicU64::new(done)),
            note: Mutex::new(note.map(str::to_string)),
        }
    }

    #[test]
    fn a_line_shows_percent_rate_and_time_left() {
        let line = shared(Some(40_000_000), 10_000_000, 5, None).line(false);
        assert_eq!(
            line,
            "restore x: load  25.0% 10.0 MB of 40.0 MB, 2.0 MB/s, 0:15 left"
        );
    }

    #[test]
    fn a_note_replaces_the_time_left_and_unknown_totals_show_bytes() {
        let line = shared(Some(100), 100, 1, Some("index 3 of 7")).line(false);
        assert!(line.ends_with(", index 3 of 7"), "{line}");
        let line = shared(None, 3_000_000, 2, None).line(false);
        assert_eq!(line, "restore x: load 3.0 MB, 1.5 MB/s");
        let mut estimated = shared(Some(4_000_000), 1_000_000, 1, None);
        estimated.about = "about ";
        assert_eq!(
            estimated.line(false),
            "restore x: load  25.0% 1.0 MB of about 4.0 MB, 1.0 MB/s, 0:03 left"
        );
        let line = shared(None, 3_000_000, 2, None).line(true);
        assert_eq!(line, "restore x: load 3.0 MB in 2.0 s (1.5 MB/s)");
    }
}
