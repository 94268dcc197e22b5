//! `tessera health`: asks a running server's `/health` and exits 0 when it
//! answers 200 (ok, or degraded but serving), 1 otherwise — a container
//! HEALTHCHECK that needs no curl in the image.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

#[derive(Args)]
pub struct HealthArgs {
    /// The server's address (a listen address of 0.0.0.0 is asked on 127.0.0.1).
    #[arg(long, env = "TESSERA_HOST", default_value = "127.0.0.1")]
    host: String,
    /// The server's port.
    #[arg(long, env = "TESSERA_PORT", default_value_t = 8080, value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// Seconds to wait for the answer, from 1 to 3600.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
}

pub fn run(args: HealthArgs) -> anyhow::Result<()> {
    let host = match args.host.as_str() {
        "0.0.0.0" | "" => "127.0.0.1",
        "::" => "::1",
        other => other,
    };
    let timeout = Duration::from_secs(args.timeout.max(1));
    let address = (host, args.port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .with_context(|| format!("nothing answers on {address}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(
        format!("GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .with_context(|| format!("no answer from {address} within {}s", args.timeout))?;
    let status = answer.split(' ').nth(1).unwrap_or("");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    println!("{status} {}", body.trim());
    if status != "200" {
        bail!("{address} is not healthy (status {status})");
    }
    Ok(())
}
