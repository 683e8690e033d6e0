//! The trace a request belongs to, read from the headers Cloud Run and Google's load balancers
//! set (`traceparent`, W3C Trace Context; `X-Cloud-Trace-Context`, Google's older one). The
//! request's span carries it, so every JSON log line written while serving the request has
//! `logging.googleapis.com/trace`, `…/spanId` and `…/trace_sampled` ([`super::json`]): Cloud
//! Logging groups the lines under their request and links them to Cloud Trace.

/// The span fields the JSON format turns into Cloud Logging's trace keys.
pub(super) const TRACE_ID: &str = "trace_id";
pub(super) const SPAN_ID: &str = "span_id";
pub(super) const SAMPLED: &str = "trace_sampled";

/// A request's place in a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits (Cloud Logging's `spanId` form).
    pub span_id: String,
    pub sampled: bool,
}

impl TraceContext {
    /// From the values of `traceparent` and `X-Cloud-Trace-Context`; the first that parses wins.
    pub fn from_headers(traceparent: Option<&str>, cloud: Option<&str>) -> Option<TraceContext> {
        traceparent
            .and_then(parse_traceparent)
            .or_else(|| cloud.and_then(parse_cloud_trace))
    }
}

/// The span a request is served in: with the trace's fields when it has one, none otherwise.
/// At ERROR level so that no filter that lets an event through drops the span around it.
pub fn request_span(context: Option<&TraceContext>) -> tracing::Span {
    match context {
        Some(c) => tracing::error_span!(
            "request",
            trace_id = %c.trace_id,
            span_id = %c.span_id,
            trace_sampled = c.sampled
        ),
        None => tracing::Span::none(),
    }
}

fn hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `00-<trace id>-<parent id>-<flags>`; all-zero ids are invalid (W3C Trace Context §3.2).
fn parse_traceparent(value: &str) -> Option<TraceContext> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    if trace.bytes().all(|b| b == b'0') || span.bytes().all(|b| b == b'0') {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(TraceContext {
        trace_id: trace.to_ascii_lowercase(),
        span_id: span.to_ascii_lowercase(),
        sampled: flags & 1 == 1,
    })
}

/// `TRACE_ID/SPAN_ID;o=OPTIONS`, the span id in decimal.
fn parse_cloud_trace(value: &str) -> Option<TraceContext> {
    let (trace, rest) = value.trim().split_once('/')?;
    let (span, options) = rest.split_once(';').unwrap_or((rest, ""));
    if !hex(trace, 32) {
        return None;
    }
    let span: u64 = span.parse().ok()?;
    Some(TraceContext {
        trace_id: trace.to_ascii_lowercase(),
        span_id: format!("{span:016x}"),
        sampled: options == "o=1",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_and_cloud_trace_context_are_read() {
        let w3c = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
        assert_eq!(
            TraceContext::from_headers(Some(w3c), Some("ffffffffffffffffffffffffffffffff/1;o=0")),
            Some(TraceContext {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                span_id: "00f067aa0ba902b7".into(),
                sampled: true,
            })
        );
        assert_eq!(
            TraceContext::from_headers(
                Some("garbage"),
                Some("105445aa7843bc8bf206b12000100000/255;o=1")
            ),
            Some(TraceContext {
                trace_id: "105445aa7843bc8bf206b12000100000".into(),
                span_id: "00000000000000ff".into(),
                sampled: true,
            })
        );
        let zero = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        assert_eq!(TraceContext::from_headers(Some(zero), None), None);
        assert_eq!(TraceContext::from_headers(None, Some("abc/1")), None);
    }
}
