//! A deterministic simulated network for protocol tests: seeded loss, duplication, reordering
//! and delay, and simulated time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Config, Endpoint, Event, Incoming};

/// One simulated node.
pub(super) struct Node {
    pub(super) addr: SocketAddr,
    pub(super) ep: Endpoint,
    pub(super) received: Vec<Incoming>,
    pub(super) events: Vec<Event>,
    /// Whether the application takes messages out (false = a stalled receiver).
    pub(super) consume: bool,
    /// Whether the node is up (a down node neither sends nor receives).
    pub(super) up: bool,
}

type InFlight = Reverse<(Instant, u64, usize, SocketAddr, Vec<u8>)>;
type Mangle = Box<dyn FnMut(SocketAddr, SocketAddr, &mut Vec<u8>)>;

/// The network.
pub(super) struct Net {
    pub(super) now: Instant,
    rng: StdRng,
    pub(super) loss: f64,
    pub(super) dup: f64,
    pub(super) delay: Duration,
    pub(super) jitter: Duration,
    queue: BinaryHeap<InFlight>,
    seq: u64,
    pub(super) nodes: Vec<Node>,
    pub(super) mangle: Option<Mangle>,
    pub(super) datagrams: u64,
    /// Uplink rate of every node in bytes per second (`None` = infinite).
    pub(super) rate: Option<u64>,
    /// Longest queue on an uplink before tail drop.
    pub(super) max_queue: Duration,
    link_free: Vec<Instant>,
    buf: Vec<u8>,
    /// When the network was made (traces record times relative to it).
    start: Instant,
    /// With `record`: every datagram delivered, as (time since start, receiver, sender,
    /// bytes).
    pub(super) trace: Vec<(Duration, usize, SocketAddr, Vec<u8>)>,
    /// Whether to fill `trace`.
    pub(super) record: bool,
}

pub(super) fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16))
}

impl Net {
    pub(super) fn new(seed: u64) -> Self {
        let now = Instant::now();
        Net {
            now,
            rng: StdRng::seed_from_u64(seed),
            loss: 0.0,
            dup: 0.0,
            delay: Duration::from_micros(50),
            jitter: Duration::ZERO,
            queue: BinaryHeap::new(),
            seq: 0,
            nodes: Vec::new(),
            mangle: None,
            datagrams: 0,
            rate: None,
            max_queue: Duration::from_millis(5),
            link_free: Vec::new(),
            buf: Vec::new(),
            start: now,
            trace: Vec::new(),
            record: false,
        }
    }

    pub(super) fn add(&mut self, cfg: Config) -> usize {
        let i = self.nodes.len();
        self.link_free.push(self.now);
        let inc = self.rng.random_range(1..u64::MAX);
        let seed = self.rng.random();
        self.nodes.push(Node {
            addr: addr(i),
            ep: Endpoint::new(cfg, inc, seed).unwrap(),
            received: Vec::new(),
            events: Vec::new(),
            consume: true,
            up: true,
        });
        i
    }

    /// Replaces node `i` with a fresh process (new incarnation) at the same address.
    pub(super) fn restart(&mut self, i: usize, cfg: Config) {
        let inc = self.rng.random_range(1..u64::MAX);
        let seed = self.rng.random();
        let n = &mut self.nodes[i];
        n.ep = Endpoint::new(cfg, inc, seed).unwrap();
        n.received.clear();
        n.events.clear();
        n.up = true;
    }

    fn index_of(&self, a: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == a)
    }

    fn flush(&mut self) {
        for i in 0..self.nodes.len() {
            if !self.nodes[i].up {
                continue;
            }
            let from = self.nodes[i].addr;
            let mut buf = std::mem::take(&mut self.buf);
            while let Some(t) = self.nodes[i].ep.poll_transmit(self.now, &mut buf, 16) {
                for seg in buf.chunks(t.segment_size).take(t.segments) {
                    self.datagrams += 1;
                    let mut d = seg.to_vec();
                    if let Some(m) = self.mangle.as_mut() {
                        m(from, t.destination, &mut d);
                    }
                    if self.rng.random_bool(self.loss) {
                        continue;
                    }
                    let mut depart = self.now;
                    if let Some(rate) = self.rate {
                        let free = self.link_free[i].max(self.now);
                        if free - self.now > self.max_queue {
                            continue; // tail drop
                        }
                        let tx = Duration::from_nanos(d.len() as u64 * 1_000_000_000 / rate);
                        self.link_free[i] = free + tx;
                        depart = free + tx;
                    }
                    let copies = if self.rng.random_bool(self.dup) { 2 } else { 1 };
                    for _ in 0..copies {
                        let jitter = if self.jitter.is_zero() {
                            Duration::ZERO
                        } else {
                            self.jitter.mul_f64(self.rng.random::<f64>())
                        };
                        let at = depart + self.delay + jitter;
                        self.seq += 1;
                        let to = self.index_of(t.destination).unwrap_or(usize::MAX);
                        self.queue
                            .push(Reverse((at, self.seq, to, from, d.clone())));
                    }
                }
            }
            self.buf = buf;
        }
    }

    fn drain(&mut self) {
        for n in &mut self.nodes {
            while let Some(e) = n.ep.poll_event() {
                n.events.push(e);
            }
            if n.consume {
                while let Some(m) = n.ep.poll_message() {
                    n.received.push(m);
                }
            }
        }
    }

    /// Advances to the next thing that happens. Returns false when nothing is left to do.
    pub(super) fn step(&mut self) -> bool {
        self.flush();
        self.drain();
        let next_packet = self.queue.peek().map(|Reverse((t, ..))| *t);
        let next_timer = self
            .nodes
            .iter()
            .filter(|n| n.up)
            .filter_map(|n| n.ep.poll_timeout())
            .min();
        let next = match (next_packet, next_timer) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => return false,
        };
        self.now = self.now.max(next);
        while let Some(Reverse((t, ..))) = self.queue.peek() {
            if *t > self.now {
                break;
            }
            let Some(Reverse((_, _, to, from, d))) = self.queue.pop() else {
                break;
            };
            if let Some(n) = self.nodes.get_mut(to)
                && n.up
            {
                n.ep.handle(self.now, from, &d);
                if self.record {
                    self.trace.push((self.now - self.start, to, from, d));
                }
            }
        }
        for n in &mut self.nodes {
            if n.up && n.ep.poll_timeout().is_some_and(|t| t <= self.now) {
                n.ep.handle_timeout(self.now);
            }
        }
        self.flush();
        self.drain();
        true
    }

    /// Steps until `done` holds or simulated time passes `limit`. Returns whether `done` held.
    pub(super) fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Net) -> bool,
    ) -> bool {
        let end = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            if self.now > end || !self.step() {
                return done(self);
            }
        }
    }
}
