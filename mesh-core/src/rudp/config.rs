//! Protocol configuration, validated before use.

use std::time::Duration;

/// Tunables of the reliable-UDP protocol. The defaults suit a LAN or a data centre.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Cluster id carried in every packet; packets of another cluster are refused. See
    /// [`cluster_id`].
    pub cluster_id: u32,
    /// Largest UDP payload sent, header included (default 1200: safe on any path).
    pub max_datagram_size: usize,
    /// Largest reliable message (default 10 MiB); larger ones are refused on both ends.
    pub max_message_size: usize,
    /// Number of independent ordered channels (default 4; 0 = latency, 1 = bulk, 2.. = yours).
    pub channels: u8,
    /// Flow-control window per channel in bytes (default 64 KiB).
    pub channel_window: usize,
    /// Receive memory one peer may hold (credit), default 24 MiB; at least one max message.
    pub max_peer_buffer: usize,
    /// Receive memory all peers together may hold, default 128 MiB.
    pub max_total_buffer: usize,
    /// Receive memory that large messages from peers at one IP address may hold together
    /// (default 48 MiB; at least `max_peer_buffer`): peers on one box that announce large
    /// messages and never finish them cannot take the whole `max_total_buffer`.
    pub max_buffer_per_ip: usize,
    /// Bytes queued (unsent or unacknowledged) to one peer before `send` reports full
    /// (default 32 MiB; one message is always accepted into an empty queue).
    pub max_send_queue: usize,
    /// Peers with a session at once (default 4096).
    pub max_sessions: usize,
    /// Sessions opened by peers (their `Hello`) from one IP address at once (default 128):
    /// one box cannot take every session. Sessions we open are not counted.
    pub max_sessions_per_ip: usize,
    /// Unreliable datagrams queued per peer (send side) and in total (receive side).
    pub max_datagram_queue: usize,
    /// A peer silent this long while anything is in flight to it is unreachable (default 1 s).
    pub peer_timeout: Duration,
    /// RTT assumed before the first sample (default 1 ms: LAN-sized).
    pub initial_rtt: Duration,
    /// Lower bound of the retransmission timeout (default 3 ms).
    pub min_rto: Duration,
    /// Longest we delay an acknowledgement (default 1 ms).
    pub max_ack_delay: Duration,
    /// Acknowledge at once after this many ack-eliciting packets (default 8).
    pub ack_frequency: u32,
    /// Initial congestion window in bytes (default 64 datagrams).
    pub initial_window: usize,
    /// Largest congestion window in bytes (default 512 KiB: deep enough for a LAN, shallow enough that a bulk transfer adds little queueing delay).
    pub max_window: usize,
    /// Bytes of bulk data (channels other than 0) in flight while channel 0 is in use
    /// (default 16 KiB): a bulk transfer yields so small messages do not queue behind it.
    pub latency_window: usize,
    /// Loss percentage within an epoch above which loss is taken as congestion (default 15).
    pub loss_threshold_pct: u8,
    /// Optional coalescing delay before queued data is sent (default zero: send at once).
    pub send_interval: Duration,
    /// The cluster keys (default none). With a keyring, every packet is authenticated and
    /// every data packet encrypted; packets without the key are dropped and counted.
    pub keyring: Option<super::Keyring>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cluster_id: cluster_id("default"),
            max_datagram_size: 1200,
            max_message_size: 10 * 1024 * 1024,
            channels: 4,
            channel_window: 64 * 1024,
            max_peer_buffer: 24 * 1024 * 1024,
            max_total_buffer: 128 * 1024 * 1024,
            max_buffer_per_ip: 48 * 1024 * 1024,
            max_send_queue: 32 * 1024 * 1024,
            max_sessions: 4096,
            max_sessions_per_ip: 128,
            max_datagram_queue: 1024,
            peer_timeout: Duration::from_secs(1),
            initial_rtt: Duration::from_millis(1),
            min_rto: Duration::from_millis(3),
            max_ack_delay: Duration::from_millis(1),
            ack_frequency: 8,
            initial_window: 64 * 1200,
            max_window: 512 * 1024,
            latency_window: 16 * 1024,
            loss_threshold_pct: 15,
            send_interval: Duration::ZERO,
            keyring: None,
        }
    }
}

/// A configuration value that cannot work, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid transport configuration: `{field}` {problem}")]
#[non_exhaustive]
pub struct ConfigError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it and what would work.
    pub problem: String,
}

fn bad(field: &'static str, problem: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError {
        field,
        problem: problem.into(),
    })
}

/// The smallest datagram size that leaves room for headers and frames.
pub const MIN_DATAGRAM_SIZE: usize = 256;

impl Config {
    /// Largest unreliable payload that fits one datagram.
    pub fn max_unreliable_payload(&self) -> usize {
        // header + packet number (<= 10) + frame type and length (<= 4) + room for an ACK.
        self.max_datagram_size
            .saturating_sub(super::wire::HEADER_LEN + 10 + 4 + 64)
    }

    /// Checks that the values can work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(MIN_DATAGRAM_SIZE..=65_000).contains(&self.max_datagram_size) {
            return bad(
                "max_datagram_size",
                format!("must be between {MIN_DATAGRAM_SIZE} and 65000 bytes"),
            );
        }
        if self.channels == 0 {
            return bad("channels", "must be at least 1");
        }
        if self.max_message_size == 0 || self.max_message_size > (1 << 32) {
            return bad("max_message_size", "must be between 1 byte and 4 GiB");
        }
        if self.channel_window < 1024 {
            return bad("channel_window", "must be at least 1024 bytes");
        }
        let per_peer_min = self.max_message_size + self.channel_window * usize::from(self.channels);
        if self.max_peer_buffer < per_peer_min {
            return bad(
                "max_peer_buffer",
                format!(
                    "must hold one max_message_size plus every channel window ({per_peer_min} bytes)"
                ),
            );
        }
        if self.max_total_buffer < self.max_peer_buffer {
            return bad("max_total_buffer", "must be at least max_peer_buffer");
        }
        if self.max_buffer_per_ip < self.max_peer_buffer {
            return bad("max_buffer_per_ip", "must be at least max_peer_buffer");
        }
        if self.max_send_queue < self.max_message_size {
            return bad("max_send_queue", "must be at least max_message_size");
        }
        if self.max_sessions == 0 {
            return bad("max_sessions", "must be at least 1");
        }
        if self.max_sessions_per_ip == 0 {
            return bad("max_sessions_per_ip", "must be at least 1");
        }
        if self.peer_timeout < Duration::from_millis(10) {
            return bad("peer_timeout", "must be at least 10 ms");
        }
        if self.min_rto.is_zero() || self.min_rto > self.peer_timeout {
            return bad("min_rto", "must be above zero and below peer_timeout");
        }
        if self.ack_frequency == 0 {
            return bad("ack_frequency", "must be at least 1");
        }
        if self.max_window < 4 * self.max_datagram_size {
            return bad("max_window", "must hold at least 4 datagrams");
        }
        if self.latency_window < 2 * self.max_datagram_size {
            return bad("latency_window", "must hold at least 2 datagrams");
        }
        if self.loss_threshold_pct == 0 || self.loss_threshold_pct > 100 {
            return bad("loss_threshold_pct", "must be between 1 and 100");
        }
        Ok(())
    }
}

/// The cluster id for a cluster name (FNV-1a, 32 bits): nodes configured with different
/// names refuse each other's packets.
pub fn cluster_id(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_fields_are_named() {
        assert_eq!(Config::default().validate(), Ok(()));
        let c = Config {
            max_datagram_size: 10,
            ..Config::default()
        };
        assert_eq!(c.validate().map_err(|e| e.field), Err("max_datagram_size"));
        let c = Config {
            max_peer_buffer: 1024,
            ..Config::default()
        };
        assert_eq!(c.validate().map_err(|e| e.field), Err("max_peer_buffer"));
        assert_ne!(cluster_id("a"), cluster_id("b"));
    }
}
