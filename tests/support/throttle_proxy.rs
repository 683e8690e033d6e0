//! A TCP proxy in front of the GCS emulator that can slow down what clients send (a slow uplink):
//! with a rate set, every byte a client sends reaches the emulator at that rate, so a request
//! body is still in flight seconds after it started and a test can kill the sender mid-body. The
//! emulator's answers pass at full speed. It counts the bytes clients sent since the rate was
//! last set. It listens on port 80 (google-cloud-storage drops the port from its requests) and
//! runs on its own thread and runtime, so a test may block on a child process while it serves.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct ThrottleProxy {
    pub ip: String,
    link: Arc<Link>,
}

/// What every connection shares: the rate (bytes per second, 0: full speed) and the count.
#[derive(Default)]
struct Link {
    rate: AtomicU64,
    sent: AtomicU64,
}

impl ThrottleProxy {
    /// Listens on `ip:80` and forwards to `upstream_ip:80`.
    pub fn start(ip: &str, upstream_ip: &str) -> Self {
        let link = Arc::new(Link::default());
        let listener = std::net::TcpListener::bind((ip, 80))
            .unwrap_or_else(|e| panic!("the throttle proxy cannot listen on {ip}:80: {e}"));
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let (shared, upstream) = (link.clone(), format!("{upstream_ip}:80"));
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("the proxy's runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("listener");
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(relay(client, upstream.clone(), shared.clone()));
                }
            });
        });
        ThrottleProxy {
            ip: ip.to_string(),
            link,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.ip)
    }

    /// Sets the rate clients' bytes pass at (0: full speed) and restarts the count.
    pub fn throttle(&self, bytes_per_second: u64) {
        self.link.sent.store(0, Ordering::SeqCst);
        self.link.rate.store(bytes_per_second, Ordering::SeqCst);
    }

    /// Bytes clients sent on to the emulator since the last [`ThrottleProxy::throttle`].
    pub fn sent(&self) -> u64 {
        self.link.sent.load(Ordering::SeqCst)
    }
}

async fn relay(client: TcpStream, upstream: String, link: Arc<Link>) {
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let rate = link.rate.load(Ordering::SeqCst);
            // Small steps when slow, so a change of rate applies within a fraction of a second.
            let step = if rate == 0 { buf.len() } else { 1024 };
            let n = match client_read.read(&mut buf[..step]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if rate > 0 {
                tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
            link.sent.fetch_add(n as u64, Ordering::SeqCst);
        }
        // The client is gone (or done): the emulator sees the request end where it stopped.
        let _ = server_write.shutdown().await;
    };
    let down = async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(up, down);
}
