//! Reading a whole request body within the size limit and the body deadline, and saying why it
//! could not be read: too large (413), malformed or cut off (400), or too slow (408) — so a
//! client learns what to fix instead of being told "too large" for everything.
//!
//! What hyper refuses before a handler runs (an unparseable request line or header: 400, a URI
//! too long: 414, headers too large: 431) it answers itself with an empty body; those answers
//! cannot be shaped as JSON here.

use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// More than the limit arrived.
    TooLarge,
    /// The body broke off or is not valid HTTP framing (a bad chunk, the client closed early).
    Malformed(String),
    /// The whole body did not arrive within the deadline.
    TimedOut(Duration),
}

/// Reads `body` whole: at most `limit` bytes, all of them within `deadline`.
pub async fn read_body(body: Body, limit: usize, deadline: Duration) -> Result<Bytes, BodyError> {
    let read = async {
        let mut body = body;
        let mut out = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Malformed(describe(&e)))?;
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > limit {
                    return Err(BodyError::TooLarge);
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(out.freeze())
    };
    tokio::time::timeout(deadline, read)
        .await
        .unwrap_or(Err(BodyError::TimedOut(deadline)))
}

/// An error and its causes, each said once (axum's error repeats hyper's message as its source).
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limit_deadline_and_framing_errors_are_told_apart() {
        let ok = read_body(Body::from("{}"), 10, Duration::from_secs(1)).await;
        assert_eq!(ok, Ok(Bytes::from_static(b"{}")));
        let big = read_body(Body::from("x".repeat(11)), 10, Duration::from_secs(1)).await;
        assert_eq!(big, Err(BodyError::TooLarge));

        let stalled = Body::from_stream(futures_util::stream::pending::<Result<Bytes, String>>());
        let slow = read_body(stalled, 10, Duration::from_millis(50)).await;
        assert_eq!(slow, Err(BodyError::TimedOut(Duration::from_millis(50))));

        let broken = Body::from_stream(futures_util::stream::iter([
            Ok(Bytes::from_static(b"{")),
            Err("connection reset".to_string()),
        ]));
        let broken = read_body(broken, 10, Duration::from_secs(1)).await;
        assert_eq!(
            broken,
            Err(BodyError::Malformed("connection reset".to_string()))
        );
    }
}
