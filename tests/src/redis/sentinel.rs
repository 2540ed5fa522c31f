//! A master, a replica and sentinels watching them.

use super::*;

/// A master, one replica and N sentinels (3 by default) watching the master as
/// [`MASTER_NAME`], tuned for fast failover: `down-after-milliseconds 300`,
/// `failover-timeout 2000`, quorum a majority of the sentinels (2 of 3).
#[derive(Debug)]
pub struct SentinelSetup {
    // Sentinels first so that they are dropped before the servers.
    sentinels: Vec<RedisServer>,
    servers: Vec<RedisServer>,
}

impl SentinelSetup {
    /// [`SentinelSetup::with_sentinels`] with 3 sentinels.
    pub fn start() -> io::Result<SentinelSetup> {
        Self::with_sentinels(3)
    }

    /// Starts a master, its replica and `n` (at least 1) sentinels, and waits until every
    /// sentinel sees the master, the replica with its link up, and all the other sentinels.
    pub fn with_sentinels(n: usize) -> io::Result<SentinelSetup> {
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a sentinel setup needs at least one sentinel",
            ));
        }
        let master = RedisServer::start()?;
        let replica = RedisServer::replica_of(&master)?;
        let ports = (0..n)
            .map(|_| free_port())
            .collect::<io::Result<Vec<_>>>()?;
        let ids: Vec<String> = (0..n).map(|_| sentinel_id()).collect();
        let mut sentinels = Vec::with_capacity(n);
        for i in 0..n {
            // Each sentinel knows the replica and the other sentinels from the start, so the
            // setup does not wait for the 2 s hello period; the waits below check the truth.
            let dir = fresh_dir()?;
            let mut conf = String::new();
            let _ = writeln!(conf, "bind {LOCALHOST}");
            let _ = writeln!(conf, "daemonize no");
            // Quoted: the config parser takes the escapes `{:?}` writes for `"` and `\`.
            let _ = writeln!(conf, "dir {:?}", path_str(&dir)?);
            let _ = writeln!(conf, "logfile {:?}", path_str(&dir.join("sentinel.log"))?);
            let _ = writeln!(conf, "sentinel myid {}", ids[i]);
            let _ = writeln!(conf, "sentinel announce-ip {LOCALHOST}");
            let _ = writeln!(
                conf,
                "sentinel monitor {MASTER_NAME} {LOCALHOST} {} {}",
                master.port,
                n / 2 + 1
            );
            let _ = writeln!(conf, "sentinel down-after-milliseconds {MASTER_NAME} 300");
            let _ = writeln!(conf, "sentinel failover-timeout {MASTER_NAME} 2000");
            let _ = writeln!(conf, "sentinel parallel-syncs {MASTER_NAME} 1");
            let _ = writeln!(
                conf,
                "sentinel known-replica {MASTER_NAME} {LOCALHOST} {}",
                replica.port
            );
            for j in (0..n).filter(|&j| j != i) {
                let _ = writeln!(
                    conf,
                    "sentinel known-sentinel {MASTER_NAME} {LOCALHOST} {} {}",
                    ports[j], ids[j]
                );
            }
            let mut sentinel = RedisServer::unstarted(dir, Mode::Sentinel(conf), None, None);
            sentinel.start_fresh(Some(ports[i]))?;
            sentinels.push(sentinel);
        }
        let setup = SentinelSetup {
            sentinels,
            servers: vec![master, replica],
        };
        setup.wait_ready()?;
        Ok(setup)
    }

    fn wait_ready(&self) -> io::Result<()> {
        let (master, replica) = (self.servers[0].port, self.servers[1].port);
        let all: BTreeSet<u16> = self.sentinels.iter().map(|s| s.port).collect();
        for sentinel in &self.sentinels {
            let mut others = all.clone();
            others.remove(&sentinel.port);
            wait_until(
                &format!("sentinel on port {} to see the setup", sentinel.port),
                || {
                    let m = fields(sentinel.query::<Vec<String>>(
                        redis::cmd("SENTINEL").arg("MASTER").arg(MASTER_NAME),
                    )?);
                    let master_ok = m.get("flags").map(String::as_str) == Some("master")
                        && m.get("port") == Some(&master.to_string());
                    let replicas: Vec<HashMap<String, String>> = sentinel
                        .query::<Vec<Vec<String>>>(
                            redis::cmd("SENTINEL").arg("REPLICAS").arg(MASTER_NAME),
                        )?
                        .into_iter()
                        .map(fields)
                        .collect();
                    let replica_ok = replicas.iter().any(|r| {
                        r.get("port") == Some(&replica.to_string())
                            && r.get("flags").map(String::as_str) == Some("slave")
                            && r.get("master-link-status").map(String::as_str) == Some("ok")
                    });
                    let peers: Vec<HashMap<String, String>> = sentinel
                        .query::<Vec<Vec<String>>>(
                            redis::cmd("SENTINEL").arg("SENTINELS").arg(MASTER_NAME),
                        )?
                        .into_iter()
                        .map(fields)
                        .collect();
                    let seen: BTreeSet<u16> = peers
                        .iter()
                        .filter(|p| p.get("flags").map(String::as_str) == Some("sentinel"))
                        .filter_map(|p| p.get("port")?.parse().ok())
                        .collect();
                    let ok = master_ok && replica_ok && seen == others && peers.len() == seen.len();
                    Ok(ok.then_some(()).ok_or_else(|| {
                        format!("master {m:?}, replicas {replicas:?}, sentinels {peers:?}")
                    }))
                },
            )
            .map_err(|e| sentinel.error(&e.to_string()))?;
        }
        Ok(())
    }

    /// The master name the sentinels watch, [`MASTER_NAME`].
    pub fn master_name(&self) -> &str {
        MASTER_NAME
    }

    /// `redis://127.0.0.1:PORT/` of each sentinel.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(RedisServer::url).collect()
    }

    /// The master's address as the first answering sentinel reports it now.
    pub fn master_addr(&self) -> io::Result<SocketAddr> {
        let mut last = io::Error::other("no sentinel");
        for sentinel in &self.sentinels {
            match sentinel_master_addr(sentinel) {
                Ok(addr) => return Ok(addr),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// SIGKILLs the server the sentinels report as master now, and returns its address.
    pub fn kill_master(&mut self) -> io::Result<SocketAddr> {
        let addr = self.master_addr()?;
        let server = self.server_mut(addr).ok_or_else(|| {
            io::Error::other(format!("the sentinels report an unknown master {addr}"))
        })?;
        server.kill();
        Ok(addr)
    }

    /// Waits (at most `timeout`) until every running sentinel reports the same master, other
    /// than `old`, and that server answers as a master (`role:master`); returns its address.
    pub fn wait_failover(&self, old: SocketAddr, timeout: Duration) -> io::Result<SocketAddr> {
        wait_until_for(&format!("a failover away from {old}"), timeout, || {
            let reports: Vec<SocketAddr> = self
                .sentinels
                .iter()
                .filter_map(|s| sentinel_master_addr(s).ok())
                .collect();
            let Some(&new) = reports.first() else {
                return Ok(Err("no sentinel answers".to_owned()));
            };
            if new == old || reports.iter().any(|&r| r != new) {
                return Ok(Err(format!("the sentinels report {reports:?}")));
            }
            let role = self
                .servers
                .iter()
                .find(|s| s.addr() == new)
                .map(|s| s.info("replication"));
            match role {
                Some(Ok(info)) if info_field(&info, "role") == Some("master") => Ok(Ok(new)),
                other => Ok(Err(format!(
                    "the sentinels report {new}, which is not a master yet: {other:?}"
                ))),
            }
        })
    }

    /// The master or replica server at `addr` (e.g. the old master, to restart it).
    pub fn server_mut(&mut self, addr: SocketAddr) -> Option<&mut RedisServer> {
        self.servers.iter_mut().find(|s| s.addr() == addr)
    }

    /// The sentinels, in the order of [`SentinelSetup::sentinel_urls`].
    pub fn sentinels_mut(&mut self) -> &mut [RedisServer] {
        &mut self.sentinels
    }
}

/// `SENTINEL GET-MASTER-ADDR-BY-NAME` on one sentinel.
fn sentinel_master_addr(sentinel: &RedisServer) -> io::Result<SocketAddr> {
    let (ip, port): (String, u16) = sentinel.query(
        redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER_NAME),
    )?;
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|e| io::Error::other(format!("sentinel reports master ip {ip:?}: {e}")))?;
    Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
}
/// A random 40-hex-digit sentinel run id.
pub(super) fn sentinel_id() -> String {
    format!(
        "{:032x}{:08x}",
        rand::random::<u128>(),
        rand::random::<u32>()
    )
}
