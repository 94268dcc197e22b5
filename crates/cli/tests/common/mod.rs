//! What the binary's tests share: a `tessera serve` child and the address it
//! prints, and a plain HTTP/1.1 exchange over a socket (no client library).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `host:port` of the first stdout line, `tessera listening on http://…`.
pub fn listening_address(child: &mut Child) -> String {
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout piped"))
        .read_line(&mut first)
        .expect("the listening line");
    first
        .trim()
        .strip_prefix("tessera listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string()
}

/// A `tessera serve` on a free port, killed when dropped.
pub struct Served {
    pub child: Child,
    pub address: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tessera serve --port 0 ARGS` (its log dropped), once `/health` answers 200.
pub fn serve(args: &[&str]) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "--port", "0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve starts");
    let address = listening_address(&mut child);
    let served = Served { child, address };
    let started = Instant::now();
    while request(
        &served.address,
        "GET",
        "/health",
        None,
        Duration::from_secs(5),
    )
    .0 != 200
    {
        assert!(started.elapsed() < Duration::from_secs(60), "never ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    served
}

/// One request with `Connection: close`: the status (0 when the server could
/// not be reached, or went `patience` without a byte of its answer) and the
/// body as JSON (`Null` when it is not JSON).
pub fn request(
    address: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    patience: Duration,
) -> (u16, Value) {
    let exchange = || -> std::io::Result<String> {
        let mut stream = TcpStream::connect(address)?;
        stream.set_read_timeout(Some(patience))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(body.as_bytes())?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    let Ok(text) = exchange() else {
        return (0, Value::Null);
    };
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, json)
}
