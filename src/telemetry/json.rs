//! `NEXUSD_LOG_FORMAT=json`: one JSON object per line with the keys Cloud Logging (and the Ops
//! Agent's JSON parser) give a meaning to — `severity` under its own names (`DEBUG`, `INFO`,
//! `WARNING`, `ERROR`), `message`, `time` in RFC 3339 — then `target`, the event's fields and the
//! fields of the spans around it (`spans`, outermost first). Inside a request with a trace
//! ([`super::trace`]), also `logging.googleapis.com/trace`, `…/spanId` and `…/trace_sampled`.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;

/// The JSON line format; with `journal`, each line also starts with its journal priority.
pub(super) struct CloudLogging {
    pub journal: bool,
    /// `GOOGLE_CLOUD_PROJECT`: trace names are `projects/<it>/traces/<id>`; the bare id without.
    pub project: Option<String>,
}

/// Cloud Logging's `LogSeverity` name for a tracing level (it has no TRACE).
pub(super) fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

impl<S, N> FormatEvent<S, N> for CloudLogging
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut line = Map::new();
        line.insert("severity".into(), severity(meta.level()).into());
        line.insert("message".into(), fields.message.unwrap_or_default().into());
        line.insert(
            "time".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        // Records of the `log` crate (sqlx) carry their real target as a field.
        let target = fields
            .log_target
            .unwrap_or_else(|| meta.target().to_string());
        line.insert("target".into(), target.into());
        for (key, value) in fields.values {
            line.entry(key).or_insert(value);
        }
        let spans = super::span_fields(ctx);
        self.trace_keys(&spans, &mut line);
        if !spans.is_empty() {
            line.insert("spans".into(), Value::Array(spans));
        }
        if self.journal {
            write!(writer, "<{}>", super::syslog_priority(meta.level()))?;
        }
        // serde_json escapes newlines: one event is always one line.
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

impl CloudLogging {
    /// Cloud Logging's trace keys from the innermost span that carries a trace.
    fn trace_keys(&self, spans: &[Value], line: &mut Map<String, Value>) {
        use super::trace::{SAMPLED, SPAN_ID, TRACE_ID};
        let Some(span) = spans.iter().rev().find(|s| s[TRACE_ID].is_string()) else {
            return;
        };
        let id = span[TRACE_ID].as_str().unwrap_or_default();
        let trace = match &self.project {
            Some(project) => format!("projects/{project}/traces/{id}"),
            None => id.to_string(),
        };
        line.insert("logging.googleapis.com/trace".into(), trace.into());
        line.insert(
            "logging.googleapis.com/spanId".into(),
            span[SPAN_ID].clone(),
        );
        line.insert(
            "logging.googleapis.com/trace_sampled".into(),
            span[SAMPLED].as_bool().unwrap_or(false).into(),
        );
    }
}

/// An event's fields as JSON values; `message` and the `log` crate's bookkeeping apart.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    log_target: Option<String>,
    values: Vec<(String, Value)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        match field.name() {
            "message" => {
                self.message = Some(match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
            }
            "log.target" => self.log_target = value.as_str().map(str::to_string),
            name if name.starts_with("log.") => {}
            name => self.values.push((name.to_string(), value)),
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(super::error_chain(value)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_are_cloud_loggings() {
        assert_eq!(severity(&Level::ERROR), "ERROR");
        assert_eq!(severity(&Level::WARN), "WARNING");
        assert_eq!(severity(&Level::INFO), "INFO");
        assert_eq!(severity(&Level::DEBUG), "DEBUG");
        assert_eq!(severity(&Level::TRACE), "DEBUG");
    }
}
