//! Progress of a long one-off command on stderr (stdout is for its result): on a terminal one
//! line redrawn in place with the rate and the time left; otherwise a plain line per step
//! (batch, stage), or an info event per step when the log is JSON, so stderr stays parseable.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// One command's progress display.
pub struct Progress {
    /// What is being done, e.g. `embedding patterns with builtin:hash-ngrams-v1`.
    label: String,
    started: Instant,
    output: Output,
    /// Whether a terminal line is drawn and needs its newline at the end.
    drawn: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Terminal,
    Lines,
    Events,
}

impl Progress {
    /// Starts the clock; the output follows stderr (a terminal or not) and the log format.
    pub fn new(label: impl Into<String>) -> Self {
        let output = if std::io::stderr().is_terminal() {
            Output::Terminal
        } else if super::json_output() {
            Output::Events
        } else {
            Output::Lines
        };
        Progress {
            label: label.into(),
            started: Instant::now(),
            output,
            drawn: false,
        }
    }

    /// Reports `done` of `total` items.
    pub fn update(&mut self, done: u64, total: u64) {
        let elapsed = self.started.elapsed();
        match self.output {
            Output::Terminal => {
                let mut err = std::io::stderr().lock();
                // Trailing spaces wipe what a longer previous line left.
                let _ = write!(err, "\r{}    ", self.line(done, total, elapsed));
                let _ = err.flush();
                self.drawn = true;
            }
            Output::Lines => eprintln!("{}", self.line(done, total, elapsed)),
            Output::Events => {
                let rate = rate(done, elapsed);
                let eta_secs = eta(done, total, elapsed).map(|d| d.as_secs());
                tracing::info!(done, total, rate, eta_secs, "{}", self.label);
            }
        }
    }

    /// Ends the display (the terminal line gets its newline).
    pub fn finish(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }

    /// `label: 40/100 (40.0%), 12/s, ETA 5 s` — no rate before the first item, `done in` at the
    /// end.
    fn line(&self, done: u64, total: u64, elapsed: Duration) -> String {
        let pct = if total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / total as f64
        };
        let mut line = format!("{}: {done}/{total} ({pct:.1}%)", self.label);
        if done > 0 {
            line.push_str(&format!(", {}/s", human_rate(rate(done, elapsed))));
        }
        if done >= total {
            line.push_str(&format!(", done in {}", human_duration(elapsed)));
        } else if let Some(left) = eta(done, total, elapsed) {
            line.push_str(&format!(", ETA {}", human_duration(left)));
        }
        line
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Items per second so far.
fn rate(done: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { done as f64 / secs } else { 0.0 }
}

/// Time left at the rate so far; unknown before the first item.
fn eta(done: u64, total: u64, elapsed: Duration) -> Option<Duration> {
    if done == 0 || done >= total {
        return None;
    }
    let per_item = elapsed.as_secs_f64() / done as f64;
    Some(Duration::from_secs_f64(per_item * (total - done) as f64))
}

fn human_rate(rate: f64) -> String {
    if rate < 10.0 {
        format!("{rate:.1}")
    } else {
        format!("{rate:.0}")
    }
}

/// `0.4 s`, `42 s`, `3 min 05 s`, `2 h 07 min`.
fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..10 => format!("{:.1} s", d.as_secs_f64()),
        10..60 => format!("{secs} s"),
        60..3600 => format!("{} min {:02} s", secs / 60, secs % 60),
        _ => format!("{} h {:02} min", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(label: &str) -> Progress {
        Progress {
            label: label.into(),
            started: Instant::now(),
            output: Output::Lines,
            drawn: false,
        }
    }

    #[test]
    fn a_line_has_the_rate_and_the_time_left() {
        let p = lines("embedding patterns");
        assert_eq!(
            p.line(0, 100, Duration::ZERO),
            "embedding patterns: 0/100 (0.0%)"
        );
        assert_eq!(
            p.line(40, 100, Duration::from_secs(20)),
            "embedding patterns: 40/100 (40.0%), 2.0/s, ETA 30 s"
        );
        assert_eq!(
            p.line(100, 100, Duration::from_secs(125)),
            "embedding patterns: 100/100 (100.0%), 0.8/s, done in 2 min 05 s"
        );
        assert_eq!(
            p.line(0, 0, Duration::from_millis(300)),
            "embedding patterns: 0/0 (100.0%), done in 0.3 s"
        );
    }

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        assert_eq!(
            human_duration(Duration::from_secs(7200 + 420)),
            "2 h 07 min"
        );
        assert_eq!(human_duration(Duration::from_secs(59)), "59 s");
        assert_eq!(human_rate(1234.4), "1234");
    }
}
