//! Two nodes on 127.0.0.1 exchange reliable messages, one large message and an unreliable
//! datagram over the mesh transport, then print what happened and the counters.
//!
//! Run: `cargo run --example ping`

use std::time::Instant;

use bytes::Bytes;
use mesh_core::transport::{Transport, TransportConfig, TransportError};

#[tokio::main]
async fn main() -> Result<(), TransportError> {
    let a = Transport::bind(TransportConfig::default()).await?;
    let b = Transport::bind(TransportConfig::default()).await?;
    println!("node a on {}, node b on {}", a.local_addr(), b.local_addr());

    // b echoes whatever arrives on channel 0.
    let echo = b.clone();
    tokio::spawn(async move {
        while let Ok(m) = echo.recv().await {
            if m.channel == Some(0) {
                let _ = echo.queue(m.from, 0, m.data).await;
            }
        }
    });

    for i in 0..3 {
        let t = Instant::now();
        a.send(b.local_addr(), 0, Bytes::from(format!("ping {i}")))
            .await?;
        let reply = a.recv().await?;
        println!(
            "{} -> {:?} in {:?}",
            reply.from,
            String::from_utf8_lossy(&reply.data),
            t.elapsed()
        );
    }

    let big = Bytes::from(vec![42u8; 10 * 1024 * 1024]);
    let t = Instant::now();
    a.send(b.local_addr(), 0, big).await?;
    let reply = a.recv().await?;
    println!(
        "10 MB echoed ({} bytes back) in {:?}",
        reply.data.len(),
        t.elapsed()
    );

    a.send_unreliable(b.local_addr(), Bytes::from_static(b"fire and forget"))?;
    let c = a.counters();
    println!(
        "a: {} datagrams out, {} in, {} packets lost and resent, {} drops",
        c.datagrams_out,
        c.datagrams_in,
        c.packets_lost,
        c.drops.total()
    );
    Ok(())
}
