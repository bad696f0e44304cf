//! A fault-injecting TCP proxy, in process, for the link between the
//! processor and core.
//!
//! Every accepted connection is forwarded to the target in both directions.
//! Faults apply to the connections open when they are injected:
//!
//! * **latency**: each chunk is held for a delay before it is written (a
//!   delay line per direction, so throughput is kept, only latency added);
//! * **reset**: every open connection is closed with a TCP RST on both sides
//!   (`SO_LINGER` 0), as a crashed middlebox or a flapping link would;
//! * **half-open**: every open connection stops forwarding in both
//!   directions *without closing*: the peers see a silent link, which only
//!   HTTP/2 keepalive can detect. The frozen sockets are closed after a hold
//!   time (or at the next reset).
//!
//! New connections after a fault are forwarded normally, so a client that
//! notices the fault and reconnects gets through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Counters of what the proxy did.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections closed with a reset.
    pub resets: AtomicU64,
    /// Connections frozen (half-open).
    pub frozen: AtomicU64,
    /// Bytes forwarded, both directions.
    pub bytes: AtomicU64,
}

/// Commands to the open connections. Each is an epoch: a connection acts
/// when the number grows past the value it saw when it was accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Epochs {
    reset: u64,
    freeze: u64,
}

/// A running proxy; dropping it stops accepting and closes every connection.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// What the proxy did so far.
    pub stats: Arc<ProxyStats>,
    /// Latency added to every chunk, in microseconds.
    latency_us: Arc<AtomicU64>,
    /// How long a frozen connection is held before it is closed.
    hold: Duration,
    epochs_tx: watch::Sender<Epochs>,
    cancel: CancellationToken,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`. Frozen
    /// connections are held for `hold`, then closed.
    pub async fn start(target: SocketAddr, hold: Duration) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(ProxyStats::default());
        let latency_us = Arc::new(AtomicU64::new(0));
        let (epochs_tx, epochs_rx) = watch::channel(Epochs::default());
        let cancel = CancellationToken::new();
        let accept = Accept {
            listener,
            target,
            stats: stats.clone(),
            latency_us: latency_us.clone(),
            hold,
            epochs_rx,
            cancel: cancel.clone(),
        };
        tokio::spawn(accept.run());
        Ok(Self {
            addr,
            stats,
            latency_us,
            hold,
            epochs_tx,
            cancel,
        })
    }

    /// The URL a gRPC client uses to go through the proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets the latency added to each chunk (0 to turn it off).
    pub fn set_latency(&self, latency: Duration) {
        self.latency_us
            .store(latency.as_micros() as u64, Ordering::Relaxed);
    }

    /// Resets every open connection (RST on both sides).
    pub fn reset_all(&self) {
        self.epochs_tx.send_modify(|e| e.reset += 1);
    }

    /// Freezes every open connection: nothing is forwarded any more, but
    /// nothing is closed until the hold time has passed.
    pub fn freeze_all(&self) {
        self.epochs_tx.send_modify(|e| e.freeze += 1);
    }

    /// How long frozen connections are held open.
    pub fn hold(&self) -> Duration {
        self.hold
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

struct Accept {
    listener: TcpListener,
    target: SocketAddr,
    stats: Arc<ProxyStats>,
    latency_us: Arc<AtomicU64>,
    hold: Duration,
    epochs_rx: watch::Receiver<Epochs>,
    cancel: CancellationToken,
}

impl Accept {
    async fn run(self) {
        loop {
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                _ = self.cancel.cancelled() => return,
            };
            let Ok((client, _)) = accepted else {
                continue;
            };
            self.stats.connections.fetch_add(1, Ordering::Relaxed);
            let conn = Conn {
                target: self.target,
                stats: self.stats.clone(),
                latency_us: self.latency_us.clone(),
                hold: self.hold,
                epochs_rx: self.epochs_rx.clone(),
                cancel: self.cancel.clone(),
            };
            tokio::spawn(conn.run(client));
        }
    }
}

struct Conn {
    target: SocketAddr,
    stats: Arc<ProxyStats>,
    latency_us: Arc<AtomicU64>,
    hold: Duration,
    epochs_rx: watch::Receiver<Epochs>,
    cancel: CancellationToken,
}

impl Conn {
    async fn run(mut self, client: TcpStream) {
        let Ok(server) = TcpStream::connect(self.target).await else {
            // Core is down: the client sees its connection closed.
            reset(&client);
            return;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let born = *self.epochs_rx.borrow_and_update();
        let (client_rd, client_wr) = client.into_split();
        let (server_rd, server_wr) = server.into_split();
        let stop = CancellationToken::new();
        let up = tokio::spawn(pump(
            client_rd,
            server_wr,
            self.latency_us.clone(),
            self.stats.clone(),
            stop.clone(),
        ));
        let down = tokio::spawn(pump(
            server_rd,
            client_wr,
            self.latency_us.clone(),
            self.stats.clone(),
            stop.clone(),
        ));
        let (up_abort, down_abort) = (up.abort_handle(), down.abort_handle());
        let mut pumps = tokio::spawn(async move {
            let (a, b) = tokio::join!(up, down);
            (a.ok().flatten(), b.ok().flatten())
        });
        // Wait for the connection to end by itself, or for a fault.
        let fault = loop {
            tokio::select! {
                _ = &mut pumps => return,
                _ = self.cancel.cancelled() => break Fault::Reset,
                changed = self.epochs_rx.changed() => {
                    if changed.is_err() {
                        break Fault::Reset;
                    }
                    let now = *self.epochs_rx.borrow_and_update();
                    if now.reset > born.reset {
                        break Fault::Reset;
                    }
                    if now.freeze > born.freeze {
                        break Fault::Freeze;
                    }
                }
            }
        };
        // Stop both pumps and take the socket halves back.
        stop.cancel();
        let (client_half, server_half) = match (&mut pumps).await {
            Ok(halves) => halves,
            Err(_) => {
                up_abort.abort();
                down_abort.abort();
                return;
            }
        };
        let (Some((client_rd, server_wr)), Some((server_rd, client_wr))) =
            (client_half, server_half)
        else {
            return;
        };
        let (Ok(client), Ok(server)) = (client_rd.reunite(client_wr), server_rd.reunite(server_wr))
        else {
            return;
        };
        if fault == Fault::Freeze {
            self.stats.frozen.fetch_add(1, Ordering::Relaxed);
            // Silent: nothing read, nothing written, nothing closed.
            let until = Instant::now() + self.hold;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    _ = self.cancel.cancelled() => break,
                    changed = self.epochs_rx.changed() => {
                        if changed.is_err() || self.epochs_rx.borrow_and_update().reset > born.reset {
                            break;
                        }
                    }
                }
            }
        }
        self.stats.resets.fetch_add(1, Ordering::Relaxed);
        reset(&client);
        reset(&server);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Reset,
    Freeze,
}

/// Makes dropping the socket send a RST instead of a FIN.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

type Halves = (
    tokio::net::tcp::OwnedReadHalf,
    tokio::net::tcp::OwnedWriteHalf,
);

/// Copies `rd` to `wr` through a delay line. Returns the halves when told to
/// stop (so the caller can freeze or reset them), `None` when the
/// connection ended by itself.
async fn pump(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    latency_us: Arc<AtomicU64>,
    stats: Arc<ProxyStats>,
    stop: CancellationToken,
) -> Option<Halves> {
    // The reader stamps chunks with their due time; the writer waits for it.
    let (line_tx, mut line_rx) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let reader_stop = stop.clone();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = tokio::select! {
                n = rd.read(&mut buf) => n,
                _ = reader_stop.cancelled() => return (rd, false),
            };
            match n {
                Ok(0) | Err(_) => return (rd, true),
                Ok(n) => {
                    let due =
                        Instant::now() + Duration::from_micros(latency_us.load(Ordering::Relaxed));
                    tokio::select! {
                        sent = line_tx.send((due, buf[..n].to_vec())) => if sent.is_err() { return (rd, true) },
                        _ = reader_stop.cancelled() => return (rd, false),
                    }
                }
            }
        }
    };
    let writer = async move {
        loop {
            // Stop first: when told to stop, the reader has also stopped and
            // dropped its end of the line, and that must not be taken for the
            // end of the stream (which would pass a FIN on to a link that is
            // meant to freeze).
            let next = tokio::select! {
                biased;
                _ = stop.cancelled() => return (wr, false),
                next = line_rx.recv() => next,
            };
            let Some((due, chunk)) = next else {
                // The reader saw the end: pass the FIN on.
                let _ = wr.shutdown().await;
                return (wr, true);
            };
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = stop.cancelled() => return (wr, false),
            }
            let written = tokio::select! {
                w = wr.write_all(&chunk) => w,
                _ = stop.cancelled() => return (wr, false),
            };
            if written.is_err() {
                return (wr, true);
            }
            stats.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    };
    let ((rd, rd_ended), (wr, wr_ended)) = tokio::join!(reader, writer);
    if rd_ended && wr_ended {
        None
    } else {
        Some((rd, wr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free port.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).await?;
        Ok(buf)
    }

    #[tokio::test]
    async fn forwards_resets_and_freezes() {
        // The hold is long against the silence checked below, so a loaded
        // machine cannot make the test see the close as a message.
        let proxy = Proxy::start(echo().await, Duration::from_secs(2))
            .await
            .unwrap();
        let mut a = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(roundtrip(&mut a, b"hello").await.unwrap(), b"hello");

        // A reset closes the open connection; a new one goes through.
        proxy.reset_all();
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(5), a.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
        let mut b = TcpStream::connect(proxy.addr).await.unwrap();
        proxy.set_latency(Duration::from_millis(50));
        let started = Instant::now();
        assert_eq!(roundtrip(&mut b, b"slow").await.unwrap(), b"slow");
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "two delayed hops"
        );
        proxy.set_latency(Duration::ZERO);

        // Frozen: the write succeeds, no answer comes, the socket stays
        // open until the hold time has passed, then it is reset.
        proxy.freeze_all();
        tokio::time::timeout(Duration::from_secs(5), async {
            while proxy.stats.frozen.load(Ordering::Relaxed) == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the connection froze");
        b.write_all(b"lost").await.unwrap();
        let silent = tokio::time::timeout(Duration::from_millis(300), b.read(&mut buf)).await;
        assert!(silent.is_err(), "a frozen link said something: {silent:?}");
        let closed = tokio::time::timeout(Duration::from_secs(10), b.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(roundtrip(&mut c, b"again").await.unwrap(), b"again");
        assert_eq!(proxy.stats.frozen.load(Ordering::Relaxed), 1);
    }
}
