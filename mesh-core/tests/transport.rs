//! The transport over real UDP sockets on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use mesh_core::rudp::{Failure, UnreachableReason};
use mesh_core::transport::{PeerEvent, Transport, TransportConfig, TransportError};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);

async fn pair() -> (Transport, Transport) {
    let a = Transport::bind(TransportConfig::default()).await.unwrap();
    let b = Transport::bind(TransportConfig::default()).await.unwrap();
    (a, b)
}

#[tokio::test]
async fn ten_thousand_messages_in_order() {
    let (a, b) = pair().await;
    let to = b.local_addr();
    let sender = tokio::spawn(async move {
        let mut last = None;
        for i in 0..10_000u32 {
            let d = a
                .queue(to, (i % 2) as u8, Bytes::copy_from_slice(&i.to_be_bytes()))
                .await
                .unwrap();
            last = Some(d);
        }
        last.unwrap().await.unwrap();
        a
    });
    let mut next = [0u32, 1u32];
    for _ in 0..10_000 {
        let m = timeout(LIMIT, b.recv())
            .await
            .expect("message arrives")
            .unwrap();
        let ch = usize::from(m.channel.unwrap());
        let i = u32::from_be_bytes(m.data[..].try_into().unwrap());
        assert_eq!(i, next[ch], "channel {ch} out of order");
        next[ch] += 2;
    }
    let a = timeout(LIMIT, sender).await.unwrap().unwrap();
    assert_eq!(a.counters().messages_sent, 10_000);
    assert!(
        timeout(Duration::from_millis(200), b.recv()).await.is_err(),
        "no duplicates"
    );
}

#[tokio::test]
async fn ten_megabyte_message() {
    let (a, b) = pair().await;
    let big: Bytes = (0..10 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let to = b.local_addr();
    let big2 = big.clone();
    let send = tokio::spawn(async move { a.send(to, 1, big2).await.map(|_| a) });
    let m = timeout(LIMIT, b.recv()).await.unwrap().unwrap();
    assert!(m.data == big, "10 MB message intact");
    timeout(LIMIT, send).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn unreliable_and_too_large() {
    let (a, b) = pair().await;
    a.send_unreliable(b.local_addr(), Bytes::from_static(b"u"))
        .unwrap();
    let m = timeout(LIMIT, b.recv()).await.unwrap().unwrap();
    assert_eq!(m.channel, None);
    let err = a
        .send_unreliable(b.local_addr(), Bytes::from(vec![0u8; 5000]))
        .unwrap_err();
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
    let err = a
        .try_queue(
            b.local_addr(),
            0,
            Bytes::from(vec![0u8; 10 * 1024 * 1024 + 1]),
        )
        .unwrap_err();
    assert!(matches!(err, TransportError::Send(_)), "{err}");
}

#[tokio::test]
async fn closed_peer_is_unreachable_once() {
    let (a, b) = pair().await;
    let to = b.local_addr();
    a.send(to, 0, Bytes::from_static(b"hi")).await.unwrap();
    let _ = b.recv().await.unwrap();
    let mut events = a.events();
    b.close();
    drop(b);
    let d = a
        .queue(to, 0, Bytes::from_static(b"into the void"))
        .await
        .unwrap();
    let err = timeout(LIMIT, d).await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Failed {
                failure: Failure::Unreachable(UnreachableReason::Timeout),
                ..
            }
        ),
        "{err}"
    );
    let ev = timeout(LIMIT, async {
        loop {
            if let Ok(PeerEvent::Unreachable { peer, .. }) = events.recv().await {
                return peer;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ev, to);
}

/// Request/response where the receiving task reads the socket itself, on a multi-threaded
/// runtime (the driver and the receivers may run on different threads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_pong_multi_thread() {
    let (a, b) = pair().await;
    let server = b.clone();
    let echo = tokio::spawn(async move {
        for _ in 0..2000 {
            let m = server.recv().await.unwrap();
            drop(server.queue(m.from, 0, m.data).await.unwrap());
        }
    });
    for i in 0..2000u32 {
        let d = a
            .queue(b.local_addr(), 0, Bytes::copy_from_slice(&i.to_be_bytes()))
            .await
            .unwrap();
        let m = timeout(LIMIT, a.recv()).await.expect("reply").unwrap();
        assert_eq!(&m.data[..], &i.to_be_bytes());
        // Every request is acknowledged (the reply carries the acknowledgement).
        timeout(LIMIT, d).await.expect("delivery").unwrap();
    }
    timeout(LIMIT, echo).await.unwrap().unwrap();
}

/// Several tasks receive from one transport at once: every message arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_receivers() {
    let (a, b) = pair().await;
    let n = 3000u32;
    let to = b.local_addr();
    let sender = tokio::spawn(async move {
        for i in 0..n {
            drop(
                a.queue(to, (i % 3) as u8, Bytes::copy_from_slice(&i.to_be_bytes()))
                    .await
                    .unwrap(),
            );
        }
        a
    });
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (b, got) = (b.clone(), got.clone());
        tasks.push(tokio::spawn(async move {
            while let Ok(Ok(m)) = timeout(Duration::from_millis(500), b.recv()).await {
                let i = u32::from_be_bytes(m.data[..].try_into().unwrap());
                got.lock().unwrap().push(i);
            }
        }));
    }
    for t in tasks {
        timeout(LIMIT, t).await.unwrap().unwrap();
    }
    let _a = timeout(LIMIT, sender).await.unwrap().unwrap();
    let mut got = got.lock().unwrap().clone();
    got.sort_unstable();
    assert_eq!(got, (0..n).collect::<Vec<_>>(), "each message exactly once");
}

/// Deliveries still in flight resolve as closed when the transport is closed or dropped.
#[tokio::test]
async fn pending_deliveries_resolve_on_close_and_drop() {
    // A peer that never answers: an unbound port on loopback.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = silent.local_addr().unwrap();
    let a = Transport::bind(TransportConfig::default()).await.unwrap();
    let d1 = a.queue(to, 0, Bytes::from_static(b"x")).await.unwrap();
    let d2 = a.queue(to, 0, Bytes::from_static(b"y")).await.unwrap();
    let waiting = tokio::spawn(d1);
    tokio::time::sleep(Duration::from_millis(10)).await;
    a.close();
    let r = timeout(LIMIT, waiting).await.unwrap().unwrap();
    assert!(matches!(r, Err(TransportError::Closed)), "{r:?}");
    assert!(matches!(
        timeout(LIMIT, d2).await.unwrap(),
        Err(TransportError::Closed)
    ));

    let b = Transport::bind(TransportConfig::default()).await.unwrap();
    let d3 = b.queue(to, 0, Bytes::from_static(b"z")).await.unwrap();
    let waiting = tokio::spawn(d3);
    tokio::time::sleep(Duration::from_millis(10)).await;
    drop(b);
    let r = timeout(LIMIT, waiting).await.unwrap().unwrap();
    assert!(matches!(r, Err(TransportError::Closed)), "{r:?}");
    drop(silent);
}

/// Detached messages (nobody waits for their acknowledgement) arrive once and in order, and
/// a full send queue is refused with an error instead of growing.
#[tokio::test]
async fn detached_messages_arrive_in_order_and_a_full_queue_is_refused() {
    let (a, b) = pair().await;
    for i in 0..500u32 {
        a.try_queue_detached(b.local_addr(), 0, Bytes::from(i.to_be_bytes().to_vec()))
            .unwrap();
    }
    for i in 0..500u32 {
        let m = timeout(LIMIT, b.recv()).await.unwrap().unwrap();
        assert_eq!(&m.data[..], &i.to_be_bytes());
    }
    let mut cfg = TransportConfig::default();
    cfg.protocol.max_send_queue = 64 * 1024;
    cfg.protocol.max_message_size = 64 * 1024;
    let small = Transport::bind(cfg).await.unwrap();
    let big = Bytes::from(vec![1u8; 40 * 1024]);
    small
        .try_queue_detached(b.local_addr(), 1, big.clone())
        .unwrap();
    let full = small.try_queue_detached(b.local_addr(), 1, big);
    assert!(
        matches!(
            full,
            Err(TransportError::Send(
                mesh_core::rudp::SendError::Full { .. }
            ))
        ),
        "{full:?}"
    );
}

/// A message to a peer with nothing else outstanding goes out before the sending task
/// yields (only a stream of messages to a busy peer is left to the driver, to share
/// datagrams).
#[tokio::test]
async fn a_message_to_an_idle_peer_is_written_at_once() {
    let (a, b) = pair().await;
    a.send(b.local_addr(), 0, Bytes::from_static(b"open"))
        .await
        .unwrap();
    let _ = timeout(LIMIT, b.recv()).await.unwrap().unwrap();
    let before = a.counters();
    a.try_queue_detached(b.local_addr(), 0, Bytes::from_static(b"now"))
        .unwrap();
    let after = a.counters();
    assert_eq!(after.datagrams_out, before.datagrams_out + 1);
    // The datagram's bytes are counted too: the message and its headers.
    assert!(
        after.bytes_out > before.bytes_out + 3,
        "bytes_out {} -> {}",
        before.bytes_out,
        after.bytes_out
    );
    let m = timeout(LIMIT, b.recv()).await.unwrap().unwrap();
    assert_eq!(&m.data[..], b"now");
}

#[tokio::test]
async fn a_manual_clock_drives_the_handshake_timers() {
    use mesh_core::transport::Clock;
    let clock = Clock::manual();
    let a = Transport::bind_with_clock(TransportConfig::default(), clock.clone())
        .await
        .unwrap();
    // A peer that never answers: only the clock decides when hellos are resent and when
    // the handshake gives up.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = silent.local_addr().unwrap();
    let mut buf = [0u8; 2048];
    let delivery = a.queue(to, 0, Bytes::from_static(b"x")).await.unwrap();
    tokio::pin!(delivery);
    let (_, from) = timeout(LIMIT, silent.recv_from(&mut buf))
        .await
        .expect("the first hello is sent at once")
        .unwrap();
    assert_eq!(from, a.local_addr());
    assert!(futures::poll!(delivery.as_mut()).is_pending());
    // Each move past the resend backoff (at most 250 ms) brings exactly the next hello.
    for step in 0..3 {
        clock.advance(Duration::from_millis(300));
        let (_, from) = timeout(LIMIT, silent.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("hello {step} resent after the clock moved"))
            .unwrap();
        assert_eq!(from, a.local_addr());
        assert!(futures::poll!(delivery.as_mut()).is_pending());
        // The clock has not moved since: no other hello (real time would have sent several,
        // the first backoffs being a few milliseconds).
        tokio::task::yield_now().await;
        assert!(
            silent.try_recv_from(&mut buf).is_err(),
            "a hello without the clock moving"
        );
    }
    // Far past the handshake timeout: the message fails, as the clock says.
    let mut outcome = None;
    for _ in 0..1000 {
        clock.advance(Duration::from_millis(100));
        if let Ok(r) = timeout(Duration::from_millis(20), delivery.as_mut()).await {
            outcome = Some(r);
            break;
        }
    }
    match outcome {
        Some(Err(TransportError::Failed {
            failure: Failure::Unreachable(UnreachableReason::HandshakeTimeout),
            ..
        })) => {}
        other => panic!("expected a handshake timeout, got {other:?}"),
    }
}
