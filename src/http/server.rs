//! The one HTTP server of nexusd. Every listener (the skills API, `/metrics`, `nexusd proxy`)
//! accepts its connections here and serves them with hyper's HTTP/1.1, so each connection gets
//! the limits of [`HttpConfig`]:
//!
//! - a new connection must deliver its first request's headers within the header timeout, and so
//!   must a later request once its first byte has arrived;
//! - a keep-alive connection idle between requests for longer than the idle timeout is closed;
//! - at most `max_connections` are served at once: one more gets a minimal 503 JSON answer and is
//!   closed at once — it never waits for a slot and never holds a descriptor for long;
//! - on shutdown the listener closes, idle connections close, and requests in flight finish
//!   (the caller bounds how long it waits, as `app.rs` does).
//!
//! hyper's own `header_read_timeout` is not used: it restarts as soon as a response is written,
//! so an idle keep-alive connection would be closed after the header timeout and the idle timeout
//! could never be longer. One watchdog per connection enforces both, from what the connection
//! does: bytes read (the socket is wrapped), requests begun and finished (the service and the
//! response body are wrapped). While a request is being handled the watchdog stays out of the
//! way: reading the body has its own deadline ([`super::body`]) and the skills theirs.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::HttpConfig;

/// Refused connections answered and drained at once; past that they are closed without an answer.
const REJECTING_AT_ONCE: usize = 4;
/// How long a refused connection may take to send its request, and then to close after its 503
/// (drained meanwhile, so the client reads the answer instead of a reset).
const REJECT_LINGER: Duration = Duration::from_millis(500);
/// Descriptors kept back from the connection cap for the pool, logs, backups and outbound calls.
const FD_RESERVE: u64 = 128;
/// A listener is never capped below this, whatever the descriptor limit.
const MIN_CAP: usize = 16;
/// At most one "connection limit reached" warning per this interval.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

const BUSY_BODY: &str = r#"{"success": false, "error": "Too many connections: try again shortly"}"#;

/// Serves `app` on `listener` until `shutdown`, then waits for the open connections to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: HttpConfig,
    shutdown: CancellationToken,
) {
    let cap = connection_cap(config.max_connections);
    let permits = Arc::new(Semaphore::new(cap));
    let rejecting = Arc::new(Semaphore::new(REJECTING_AT_ONCE));
    let mut refusals = Refusals::default();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        accept_failed(e).await;
                        continue;
                    }
                };
                match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let (app, shutdown) = (app.clone(), shutdown.clone());
                        connections.spawn(connection(stream, peer, app, config, shutdown, permit));
                    }
                    Err(_) => {
                        refusals.count(cap);
                        reject(stream, &rejecting);
                    }
                }
            }
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// The configured cap, lowered when the process's descriptor limit could not hold it: each
/// listener gets at most half of what the limit leaves after [`FD_RESERVE`], so a flood of
/// connections cannot starve the pool of descriptors.
fn connection_cap(configured: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return configured;
    };
    let room = usize::try_from(soft.saturating_sub(FD_RESERVE) / 2)
        .unwrap_or(usize::MAX)
        .max(MIN_CAP);
    if configured > room {
        tracing::warn!(
            configured,
            cap = room,
            descriptor_limit = soft,
            "NEXUSD_HTTP_MAX_CONNECTIONS is more than the descriptor limit allows; lowered"
        );
        return room;
    }
    configured
}

/// Counts refused connections and warns about them now and then, never once per connection.
#[derive(Default)]
struct Refusals {
    since_warning: u64,
    warned: Option<Instant>,
}

impl Refusals {
    fn count(&mut self, cap: usize) {
        self.since_warning += 1;
        if self
            .warned
            .is_none_or(|at| at.elapsed() >= REFUSAL_LOG_INTERVAL)
        {
            tracing::warn!(
                cap,
                refused = self.since_warning,
                "connection limit reached (NEXUSD_HTTP_MAX_CONNECTIONS): answering 503"
            );
            self.since_warning = 0;
            self.warned = Some(Instant::now());
        }
    }
}

/// A connection that failed before it was accepted is skipped; anything else (out of
/// descriptors, out of memory) is logged and retried after a pause rather than in a busy loop,
/// since closing connections may free what is missing.
async fn accept_failed(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(250)).await;
}

/// Answers a connection over the cap with a 503 and closes it, never waiting for a slot. A few
/// at a time get a polite answer: after their request has begun to arrive (an HTTP client takes
/// an answer that comes before its request for a broken connection), then a brief drain so the
/// client reads the answer rather than a reset. The rest are answered at once, without waiting
/// (the socket's buffer is empty, so the write cannot block), and closed.
fn reject(stream: TcpStream, rejecting: &Arc<Semaphore>) {
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BUSY_BODY}",
        BUSY_BODY.len()
    );
    let Ok(slot) = rejecting.clone().try_acquire_owned() else {
        let _ = stream.try_write(answer.as_bytes());
        return;
    };
    tokio::spawn(async move {
        let _slot = slot;
        let mut stream = stream;
        let mut sink = [0u8; 4096];
        if let Ok(Ok(())) = tokio::time::timeout(REJECT_LINGER, stream.readable()).await {
            let _ = stream.try_read(&mut sink);
        }
        if stream.try_write(answer.as_bytes()).is_err() {
            return;
        }
        let _ = stream.shutdown().await;
        let drain = async {
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(REJECT_LINGER, drain).await;
    });
}

/// Serves one connection until it ends, its watchdog closes it, or shutdown has drained it.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    config: HttpConfig,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let service = Service {
        app,
        peer,
        activity: activity.clone(),
    };
    let conn = http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            why = activity.expired(&config) => {
                tracing::debug!(%peer, why, "closing the connection");
                return;
            }
        }
    }
}

/// Where a connection stands, for its watchdog.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request's first byte since `since`; `first`: no request yet.
    Waiting { since: Instant, first: bool },
    /// A request's headers are arriving; their first byte came at `since`.
    Head { since: Instant },
    /// Requests are being handled or their responses written.
    Busy { requests: usize },
}

/// What one connection does, shared by its socket, its service and its watchdog.
struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            phase: Mutex::new(Phase::Waiting {
                since: Instant::now(),
                first: true,
            }),
            changed: Notify::new(),
        }
    }

    fn update(&self, change: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        *phase = change(*phase);
        drop(phase);
        self.changed.notify_one();
    }

    /// Bytes arrived: if the connection was waiting, a request has begun.
    fn read(&self) {
        let waiting = matches!(
            *self.phase.lock().unwrap_or_else(PoisonError::into_inner),
            Phase::Waiting { .. }
        );
        if waiting {
            self.update(|phase| match phase {
                Phase::Waiting { .. } => Phase::Head {
                    since: Instant::now(),
                },
                other => other,
            });
        }
    }

    fn begin(self: &Arc<Self>) -> RequestGuard {
        self.update(|phase| match phase {
            Phase::Busy { requests } => Phase::Busy {
                requests: requests + 1,
            },
            _ => Phase::Busy { requests: 1 },
        });
        RequestGuard(self.clone())
    }

    fn finish(&self) {
        self.update(|phase| match phase {
            Phase::Busy { requests } if requests > 1 => Phase::Busy {
                requests: requests - 1,
            },
            _ => Phase::Waiting {
                since: Instant::now(),
                first: false,
            },
        });
    }

    /// When the connection is to be closed unless something happens first, and why.
    fn deadline(&self, config: &HttpConfig) -> Option<(Instant, &'static str)> {
        match *self.phase.lock().unwrap_or_else(PoisonError::into_inner) {
            Phase::Waiting { since, first: true } => {
                Some((since + config.header_timeout, "no request headers in time"))
            }
            Phase::Waiting { since, .. } => Some((since + config.idle_timeout, "idle")),
            Phase::Head { since } => Some((since + config.header_timeout, "headers too slow")),
            Phase::Busy { .. } => None,
        }
    }

    /// Resolves once the connection has overstayed its current phase.
    async fn expired(&self, config: &HttpConfig) -> &'static str {
        loop {
            let changed = self.changed.notified();
            match self.deadline(config) {
                None => changed.await,
                Some((at, why)) => {
                    if Instant::now() >= at {
                        return why;
                    }
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = changed => {}
                    }
                }
            }
        }
    }
}

/// Held from the moment a request's headers are parsed until its response body is done.
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// The socket, reporting every read to the watchdog.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.read();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The router as hyper calls it: each request carries its peer's address (`ConnectInfo`, as
/// axum's own server set it) and holds a [`RequestGuard`] until its response body is done.
#[derive(Clone)]
struct Service {
    app: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

type ServiceFuture =
    Pin<Box<dyn Future<Output = Result<Response<GuardedBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<GuardedBody>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let guard = self.activity.begin();
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let mut app = self.app.clone();
        Box::pin(async move {
            // A router's poll_ready is always ready: no need to wait for it first.
            let response = match tower_service::Service::call(&mut app, request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok(response.map(|body| GuardedBody {
                body,
                _guard: guard,
            }))
        })
    }
}

/// A response body that ends its request for the watchdog when hyper is done with it.
struct GuardedBody {
    body: Body,
    _guard: RequestGuard,
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
