//! Connection rate: opens TOTAL MQTT 5 connections, PARALLEL at a time, each
//! a TCP connect, CONNECT and CONNACK and then a DISCONNECT, and prints
//! connects/s and the CONNECT-to-CONNACK latency percentiles. With a
//! username and token every connection authenticates as that identity
//! (client ids `<username>:bench-N`). Used by `benches/connect.sh`.
//!
//!     cargo run --release -p swarmq-worker --example connect_bench -- \
//!         127.0.0.1:1883 5000 50 [USERNAME TOKEN]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u16).to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// An MQTT 5 CONNECT, encoded by hand: the client side must cost far less
/// than the broker's, or the bench measures itself (rumqttc's event loop per
/// connection halved the rate on this 2-core machine).
fn connect_packet(client_id: &str, creds: Option<&(String, String)>) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, "MQTT");
    body.push(5); // protocol level
    let mut flags = 0x02; // clean start
    if creds.is_some() {
        flags |= 0xC0; // username and password
    }
    body.push(flags);
    body.extend_from_slice(&30u16.to_be_bytes()); // keep alive
    body.push(0); // no properties
    put_str(&mut body, client_id);
    if let Some((u, p)) = creds {
        put_str(&mut body, u);
        put_str(&mut body, p);
    }
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

/// One connection: returns the time from the TCP connect to the CONNACK, in ms.
async fn connect_once(
    addr: &str,
    id: String,
    creds: Option<&(String, String)>,
) -> Result<f64, String> {
    let packet = connect_packet(&id, creds);
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream.write_all(&packet).await.map_err(|e| e.to_string())?;
    let mut head = [0u8; 5];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut head))
        .await
        .map_err(|_| "no CONNACK within 10 s".to_string())?
        .map_err(|e| e.to_string())?;
    // 0x20, remaining length (one byte here), flags, reason code.
    if read < 4 || head[0] != 0x20 {
        return Err(format!("not a CONNACK: {:?}", &head[..read]));
    }
    if head[3] != 0 {
        return Err(format!("refused with reason code {:#04x}", head[3]));
    }
    let took = started.elapsed().as_secs_f64() * 1000.0;
    let _ = stream.write_all(&[0xE0, 0x00]).await; // DISCONNECT
    Ok(took)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .get(1)
        .cloned()
        .ok_or("usage: connect_bench HOST:PORT TOTAL PARALLEL [USERNAME TOKEN]")?;
    let total: usize = args.get(2).map_or(Ok(5000), |s| s.parse())?;
    let parallel: usize = args.get(3).map_or(Ok(50), |s| s.parse())?;
    let creds = match (args.get(4), args.get(5)) {
        (Some(u), Some(p)) => Some((u.clone(), p.clone())),
        _ => None,
    };
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let (next, addr, creds) = (next.clone(), addr.clone(), creds.clone());
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            let mut failures = 0usize;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return (times, failures);
                }
                let id = match &creds {
                    Some((u, _)) => format!("{u}:bench-{n}"),
                    None => format!("bench-{n}"),
                };
                match connect_once(&addr, id, creds.as_ref()).await {
                    Ok(ms) => times.push(ms),
                    Err(e) => {
                        if failures == 0 {
                            eprintln!("connection {n} failed: {e}");
                        }
                        failures += 1;
                    }
                }
            }
        }));
    }
    let mut times = Vec::new();
    let mut failures = 0;
    for t in tasks {
        let (mut ts, f) = t.await?;
        times.append(&mut ts);
        failures += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    println!(
        "{} connects in {:.2} s ({:.0} connects/s), {} failed, {}; CONNACK after p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        times.len(),
        elapsed,
        times.len() as f64 / elapsed,
        failures,
        if creds.is_some() {
            "token authentication"
        } else {
            "anonymous"
        },
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().copied().unwrap_or(f64::NAN),
    );
    Ok(())
}
