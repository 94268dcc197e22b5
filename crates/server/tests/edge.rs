//! The edge against slow, oversized and too many clients, over real sockets with
//! raw HTTP/1.1: an announced oversize is refused from its header (413 and
//! `Connection: close`) before any body byte; a body that stops arriving gets
//! 408; headers that never finish, and idle keep-alive connections, are closed
//! after the header timeout (counted in /metrics); at the connection limit new
//! connections wait until one closes, and 2,000 idle connections do not stop
//! the server from answering.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tessera_server::ServerOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn connect(server: &TestServer) -> TcpStream {
    let address = server.base.trim_start_matches("http://");
    TcpStream::connect(address).await.expect("connect")
}

/// Reads until the peer closes or `within` passes; returns what arrived and
/// whether the connection was closed.
async fn read_for(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return (String::from_utf8_lossy(&data).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&data).into_owned(), true),
            Ok(Ok(n)) => data.extend_from_slice(&buffer[..n]),
        }
    }
}

fn short_timeouts() -> ServerOptions {
    ServerOptions {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        ..ServerOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_oversize_is_refused_from_its_header() {
    let server = start(ServerOptions::default()).await;
    for length in [83_886_080u64, 40_000_000] {
        let mut stream = connect(&server).await;
        let head = format!(
            "POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.expect("write");
        let start = Instant::now();
        // No body byte is ever sent: the answer must come from the header alone.
        let (answer, closed) = read_for(&mut stream, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{length}: {answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
        assert!(answer.contains("--max-body-bytes"), "{answer}");
        assert!(closed, "the connection is closed after the 413");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_gets_408() {
    let server = start(short_timeouts()).await;
    let mut stream = connect(&server).await;
    stream
        .write_all(
            b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"query\"",
        )
        .await
        .expect("write");
    let start = Instant::now();
    let (answer, closed) = read_for(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("--body-timeout"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(closed);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    let metrics = server.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "tessera_requests_total{route=\"/v1/rerank\",status=\"408\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_idle_keep_alive_connections_are_closed() {
    let server = start(short_timeouts()).await;
    // A request line and one header, then silence.
    let mut slow = connect(&server).await;
    slow.write_all(b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    // A keep-alive connection after one complete exchange, then idle.
    let mut idle = connect(&server).await;
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let start = Instant::now();
    let (answer, closed) = read_for(&mut idle, Duration::from_millis(500)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!closed, "kept alive after the answer");
    let (nothing, closed) = read_for(&mut slow, Duration::from_secs(4)).await;
    assert!(
        closed,
        "slow headers: still open after {:?}",
        start.elapsed()
    );
    assert!(nothing.is_empty(), "no answer can be given: {nothing}");
    let (nothing, closed) = read_for(&mut idle, Duration::from_secs(4)).await;
    assert!(
        closed,
        "idle keep-alive: still open after {:?}",
        start.elapsed()
    );
    assert!(nothing.is_empty(), "{nothing}");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    // The client sees a connection close just before the server's task for it
    // counts the timeout: give the count a moment to arrive.
    let mut metrics = server.metrics().await;
    for _ in 0..40 {
        if metric(&metrics, "tessera_header_timeouts_total").unwrap_or(0.0) >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        metrics = server.metrics().await;
    }
    let closed_by_timeout = metric(&metrics, "tessera_header_timeouts_total").unwrap_or(0.0);
    assert!(closed_by_timeout >= 2.0, "{metrics}");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_limit_new_connections_wait_for_a_free_slot() {
    let server = start(ServerOptions {
        max_connections: 3,
        ..ServerOptions::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(&server).await;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let (answer, _) = read_for(&mut stream, Duration::from_millis(500)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        held.push(stream);
    }
    // The fourth is accepted by the kernel but not served while three are open.
    let mut waiting = connect(&server).await;
    waiting
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let (answer, _) = read_for(&mut waiting, Duration::from_millis(700)).await;
    assert!(answer.is_empty(), "served past the limit: {answer}");
    drop(held.pop());
    let (answer, _) = read_for(&mut waiting, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(held);
    server.shutdown().await.expect("clean shutdown");
}

/// This process's soft limit on open files (`ulimit -n`), from /proc.
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_do_not_stop_the_answers() {
    // 2,000 idle connections (the limit raised above them), each two descriptors
    // here: client and server side live in this process.
    let wanted = 2_000;
    let idle_count = match open_file_limit() {
        Some(limit) if limit < 2 * wanted + 200 => {
            let fit = limit.saturating_sub(200) / 2;
            println!("ulimit -n is {limit}: {fit} idle connections instead of {wanted}");
            fit
        }
        _ => wanted,
    };
    let server = start(ServerOptions {
        max_connections: wanted + 16,
        ..ServerOptions::default()
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..idle_count {
        idle.push(connect(&server).await);
    }
    let start = Instant::now();
    let (status, _, _) = server.get("/health").await;
    assert_eq!(status, 200);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let metrics = server.metrics().await;
    let open = metric(&metrics, "tessera_connections").expect("gauge");
    assert!(open >= idle_count as f64, "{open} open: {metrics}");
    drop(idle);
    server.shutdown().await.expect("clean shutdown");
}
