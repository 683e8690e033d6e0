//! A TCP proxy on 127.0.0.1 that delays every byte the server sends by a fixed latency (the
//! client's bytes pass at once): a slow network between nexusd and PostgreSQL, so each round
//! trip — a `BEGIN` among them — stays in flight long enough for a test to cut it off. Bytes keep
//! their order and throughput; only their arrival is late. Stopped when dropped.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

pub struct LatencyProxy {
    pub port: u16,
    task: JoinHandle<()>,
}

impl LatencyProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `127.0.0.1:target`.
    pub async fn start(target: u16, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the latency proxy cannot listen");
        let port = listener.local_addr().expect("its address").port();
        let task = tokio::spawn(async move {
            // Dropped with the task: every link ends with the proxy.
            let mut links = JoinSet::new();
            loop {
                if let Ok((client, _)) = listener.accept().await {
                    links.spawn(link(client, target, delay));
                }
                while links.try_join_next().is_some() {}
            }
        });
        LatencyProxy { port, task }
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn link(client: TcpStream, target: u16, delay: Duration) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    };
    let (late, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let from_server = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = server_read.read(&mut buf).await {
            if n == 0
                || late
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
            {
                break;
            }
        }
    };
    let to_client = async move {
        while let Some((at, bytes)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if client_write.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream, from_server, to_client);
}
