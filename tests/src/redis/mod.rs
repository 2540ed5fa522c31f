//! Real Redis setups for integration tests: standalone servers, a master/replica pair watched by
//! sentinels, and a Redis Cluster, each spawned on free `127.0.0.1` ports and stopped on drop.
//!
//! Every process is a `redis-server` child (from `PATH`; `redis-server --sentinel` for the
//! sentinels) bound to `127.0.0.1` only, with its own fresh temporary directory holding its log
//! (and config file or `nodes.conf`), no RDB/AOF persistence and no daemonizing. Dropping a
//! handle SIGKILLs and reaps its processes and removes their directories, also when a test
//! panics (but not if the test process itself is killed).
//!
//! Every wait is bounded ([`WAIT`]) and polls every 20 ms; failures are `io::Error`s whose
//! message carries the tail of the server's log.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use mesh_tests::redis::RedisServer;
//! let server = RedisServer::start()?;
//! let client = redis::Client::open(server.url()).map_err(std::io::Error::other)?;
//! # drop(client);
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod cluster;
mod sentinel;

pub use cluster::RedisCluster;
pub use sentinel::SentinelSetup;

/// The bound on every wait of this module (a server answering, a replica syncing, the sentinels
/// seeing each other, the cluster turning `ok`).
pub const WAIT: Duration = Duration::from_secs(10);

/// The master name the sentinels of a [`SentinelSetup`] watch.
pub const MASTER_NAME: &str = "mymaster";

const POLL: Duration = Duration::from_millis(20);
const START_TRIES: usize = 5;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const IO_TIMEOUT: Duration = Duration::from_secs(2);
const LOG_TAIL_LINES: usize = 20;
const CLUSTER_SLOTS: usize = 16384;
const CLUSTER_BUS_OFFSET: u16 = 10000;
const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Ports handed out by [`free_port`] in this process, never handed out twice.
static RESERVED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
static DIR_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A currently free `127.0.0.1` TCP port whose `port + 10000` (the cluster bus port) is free as
/// well, and which this process has not handed out before.
///
/// Another process may still take it before it is used; the `start` functions of this module
/// retry on another port when that happens.
pub fn free_port() -> io::Result<u16> {
    for _ in 0..1000 {
        let port = TcpListener::bind((LOCALHOST, 0))?.local_addr()?.port();
        let Some(bus) = port.checked_add(CLUSTER_BUS_OFFSET) else {
            continue;
        };
        if TcpListener::bind((LOCALHOST, port)).is_err()
            || TcpListener::bind((LOCALHOST, bus)).is_err()
        {
            continue;
        }
        let mut reserved = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
        if reserved.insert(port) {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        "no free 127.0.0.1 port pair (port, port + 10000) found in 1000 tries",
    ))
}

/// What a [`RedisServer`] runs as.
#[derive(Debug)]
enum Mode {
    /// A data server; the arguments come after the common ones.
    Server(Vec<String>),
    /// A sentinel; the config file (written on each fresh start, rewritten by the sentinel
    /// itself) minus its `port` line, which is given on the command line.
    Sentinel(String),
}

/// How a start attempt failed.
enum StartError {
    /// The process exited or someone else answers on the port: try another port.
    PortLost(io::Error),
    /// Anything else: give up.
    Fatal(io::Error),
}

/// One `redis-server` child process on `127.0.0.1`, with its own temporary directory and no
/// persistence. Dropping it SIGKILLs the process, waits for it and removes the directory.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    mode: Mode,
    password: Option<String>,
    /// The master this server replicates from when started, waited for on every start.
    master: Option<u16>,
}

impl RedisServer {
    /// Starts a standalone server on a free port and waits until it answers `PING`.
    pub fn start() -> io::Result<RedisServer> {
        Self::launch(Mode::Server(Vec::new()), None, None)
    }

    /// Starts a server with `requirepass pw` and waits until it answers an authenticated `PING`.
    pub fn with_password(pw: &str) -> io::Result<RedisServer> {
        let args = vec!["--requirepass".to_owned(), pw.to_owned()];
        Self::launch(Mode::Server(args), Some(pw.to_owned()), None)
    }

    /// Starts a replica of `master` (`replicaof`, and `masterauth` when the master has a
    /// password; the replica then requires the same password) and waits until its link to the
    /// master is up, that is until the initial sync is done.
    pub fn replica_of(master: &RedisServer) -> io::Result<RedisServer> {
        let mut args = vec![
            "--replicaof".to_owned(),
            LOCALHOST.to_string(),
            master.port.to_string(),
            "--replica-announce-ip".to_owned(),
            LOCALHOST.to_string(),
        ];
        if let Some(pw) = &master.password {
            args.extend(["--masterauth", pw, "--requirepass", pw].map(str::to_owned));
        }
        Self::launch(
            Mode::Server(args),
            master.password.clone(),
            Some(master.port),
        )
    }

    /// Starts a cluster node (`cluster-enabled yes`, node timeout 1 s, announcing
    /// `127.0.0.1`) with no slots and knowing no other node.
    fn cluster_node() -> io::Result<RedisServer> {
        let dir = fresh_dir()?;
        let args = vec![
            "--cluster-enabled".to_owned(),
            "yes".to_owned(),
            "--cluster-config-file".to_owned(),
            path_str(&dir.join("nodes.conf"))?,
            "--cluster-node-timeout".to_owned(),
            "1000".to_owned(),
            "--cluster-announce-ip".to_owned(),
            LOCALHOST.to_string(),
        ];
        let mut server = RedisServer::unstarted(dir, Mode::Server(args), None, None);
        server.start_fresh(None)?;
        Ok(server)
    }

    /// A handle owning `dir` with no process yet.
    fn unstarted(
        dir: PathBuf,
        mode: Mode,
        password: Option<String>,
        master: Option<u16>,
    ) -> RedisServer {
        RedisServer {
            child: None,
            port: 0,
            dir,
            mode,
            password,
            master,
        }
    }

    /// Creates the directory and the handle, then starts the process on a free port.
    fn launch(
        mode: Mode,
        password: Option<String>,
        master: Option<u16>,
    ) -> io::Result<RedisServer> {
        let mut server = RedisServer::unstarted(fresh_dir()?, mode, password, master);
        server.start_fresh(None)?;
        Ok(server)
    }

    /// Starts the process from scratch, on `first_port` or a free port, retrying on another
    /// free port when the port turns out to be taken.
    fn start_fresh(&mut self, first_port: Option<u16>) -> io::Result<()> {
        let mut last = None;
        for attempt in 0..START_TRIES {
            self.port = match (attempt, first_port) {
                (0, Some(port)) => port,
                _ => free_port()?,
            };
            // A failed attempt may have left state behind that names the old port.
            let _ = fs::remove_file(self.dir.join("nodes.conf"));
            if let Mode::Sentinel(conf) = &self.mode {
                fs::write(self.sentinel_conf(), conf)?;
            }
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                Err(StartError::PortLost(e)) => last = Some(e),
                Err(StartError::Fatal(e)) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    /// Spawns the process on `self.port` and waits until it is ready; kills it on failure.
    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        self.kill();
        let result = self.spawn().map_err(StartError::Fatal).and_then(|()| {
            self.wait_ready()?;
            if let Some(master) = self.master {
                self.wait_master_link(master).map_err(StartError::Fatal)?;
            }
            Ok(())
        });
        if result.is_err() {
            self.kill();
        }
        result
    }

    fn spawn(&mut self) -> io::Result<()> {
        let mut cmd = Command::new("redis-server");
        match &self.mode {
            Mode::Server(args) => {
                let log = self.dir.join("redis.log");
                cmd.args(["--port", &self.port.to_string()])
                    .args(["--bind", &LOCALHOST.to_string()])
                    .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                    // Serve a replica's full sync at once, not after the default 5 s delay.
                    .args(["--repl-diskless-sync-delay", "0"])
                    .arg("--dir")
                    .arg(&self.dir)
                    .arg("--logfile")
                    .arg(&log)
                    .args(args);
            }
            Mode::Sentinel(_) => {
                cmd.arg(self.sentinel_conf())
                    .arg("--sentinel")
                    .args(["--port", &self.port.to_string()]);
            }
        }
        let child = cmd
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot spawn redis-server: {e}")))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the process answers `PING` and reports its own pid (so a server of another
    /// process on the same port is not mistaken for it).
    fn wait_ready(&mut self) -> Result<(), StartError> {
        let deadline = Instant::now() + WAIT;
        loop {
            let pid = match self.child.as_mut().map(Child::try_wait) {
                None => return Err(StartError::Fatal(io::Error::other("no child process"))),
                Some(Err(e)) => return Err(StartError::Fatal(e)),
                Some(Ok(Some(status))) => {
                    return Err(StartError::PortLost(self.error(&format!(
                        "redis-server on port {} exited at once ({status})",
                        self.port
                    ))));
                }
                Some(Ok(None)) => self.child.as_ref().map(Child::id),
            };
            if let Ok(info) = self.info("server") {
                let answering = info_field(&info, "process_id").and_then(|p| p.parse().ok());
                if answering == pid {
                    return Ok(());
                }
                return Err(StartError::PortLost(self.error(&format!(
                    "port {} is answered by another redis-server (pid {answering:?})",
                    self.port
                ))));
            }
            if Instant::now() >= deadline {
                return Err(StartError::Fatal(self.error(&format!(
                    "redis-server on port {} did not answer within {WAIT:?}",
                    self.port
                ))));
            }
            thread::sleep(POLL);
        }
    }

    fn wait_master_link(&self, master: u16) -> io::Result<()> {
        wait_until(
            &format!(
                "replica on port {} to sync from master on port {master}",
                self.port
            ),
            || {
                let info = self.info("replication")?;
                let up = info_field(&info, "master_link_status") == Some("up");
                Ok(up.then_some(()).ok_or(info))
            },
        )
        .map_err(|e| self.error(&e.to_string()))
    }

    /// The port it listens on (also after [`RedisServer::restart`], which keeps it).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(LOCALHOST, self.port))
    }

    /// `redis://127.0.0.1:PORT/`, without credentials (see [`RedisServer::url_with_password`]).
    pub fn url(&self) -> String {
        format!("redis://{LOCALHOST}:{}/", self.port)
    }

    /// `redis://:PASSWORD@127.0.0.1:PORT/` (the password percent-encoded), or [`Self::url`] if
    /// the server has no password.
    pub fn url_with_password(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{}@{LOCALHOST}:{}/", percent_encode(pw), self.port),
            None => self.url(),
        }
    }

    /// The `requirepass` password, if any.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The server's temporary directory (its log is `redis.log`, or `sentinel.log` for a
    /// sentinel).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new synchronous connection (authenticated if the server has a password), with
    /// 500 ms connect and 2 s read/write timeouts.
    pub fn connection(&self) -> io::Result<redis::Connection> {
        let client = redis::Client::open(self.url_with_password()).map_err(io::Error::other)?;
        let con = client
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .map_err(io::Error::other)?;
        con.set_read_timeout(Some(IO_TIMEOUT))
            .map_err(io::Error::other)?;
        con.set_write_timeout(Some(IO_TIMEOUT))
            .map_err(io::Error::other)?;
        Ok(con)
    }

    /// Runs one command on a new connection.
    fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> io::Result<T> {
        cmd.query(&mut self.connection()?)
            .map_err(|e| io::Error::other(format!("{e} (from 127.0.0.1:{})", self.port)))
    }

    /// The text of `INFO <section>`, e.g. `"replication"` or `"commandstats"`.
    pub fn info(&self, section: &str) -> io::Result<String> {
        self.query(redis::cmd("INFO").arg(section))
    }

    /// SIGKILLs the process and waits for it to exit. Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the process if it runs and starts it again on the same port and with the same
    /// settings, waiting until it answers. There is no persistence, so a server comes back
    /// empty (a replica resyncs from its master and waits for that; a cluster node keeps its
    /// `nodes.conf`, so its identity and slots; a sentinel keeps its rewritten config). The
    /// original start settings apply again: a replica restarts as a replica of the master it
    /// was started with. Fails if another process took the port meanwhile.
    pub fn restart(&mut self) -> io::Result<()> {
        match self.spawn_and_wait() {
            Ok(()) => Ok(()),
            Err(StartError::PortLost(e) | StartError::Fatal(e)) => Err(e),
        }
    }

    /// Whether the process is still running (it has not exited nor been killed).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    fn sentinel_conf(&self) -> PathBuf {
        self.dir.join("sentinel.conf")
    }

    /// An error with `msg` and the tail of the server's log.
    fn error(&self, msg: &str) -> io::Error {
        let log = match self.mode {
            Mode::Server(_) => "redis.log",
            Mode::Sentinel(_) => "sentinel.log",
        };
        let text = fs::read_to_string(self.dir.join(log)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        io::Error::other(format!("{msg}; tail of {log}:\n{tail}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// [`wait_until_for`] with [`WAIT`].
fn wait_until<T>(
    what: &str,
    check: impl FnMut() -> io::Result<Result<T, String>>,
) -> io::Result<T> {
    wait_until_for(what, WAIT, check)
}

/// Polls `check` every 20 ms until it returns `Ok(Ok(_))`, for at most `timeout`; `Ok(Err(state))`
/// and `Err(_)` mean not yet, and the last of them goes into the timeout error.
fn wait_until_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> io::Result<Result<T, String>>,
) -> io::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let state = match check() {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(state)) => state,
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("timed out after {timeout:?} waiting for {what}; last state: {state}"),
            ));
        }
        thread::sleep(POLL);
    }
}

/// A new empty directory under the system temporary directory.
fn fresh_dir() -> io::Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    loop {
        let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("mesh-redis-{}-{n}-{nanos:08x}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

fn path_str(path: &Path) -> io::Result<String> {
    path.to_str().map(str::to_owned).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("temporary path {path:?} is not UTF-8"),
        )
    })
}

/// The value of `field:value` in an INFO-style text.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// A flat `[field, value, field, value, ...]` reply as a map.
fn fields(flat: Vec<String>) -> HashMap<String, String> {
    let mut map = HashMap::new();
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        map.insert(k, v);
    }
    map
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A start on a taken port moves on to a free one.
    #[test]
    fn start_retries_when_the_port_is_taken() -> io::Result<()> {
        let listener = TcpListener::bind((LOCALHOST, 0))?;
        let taken = listener.local_addr()?.port();
        let mut server = RedisServer::unstarted(fresh_dir()?, Mode::Server(Vec::new()), None, None);
        server.start_fresh(Some(taken))?;
        assert_ne!(server.port(), taken);
        assert!(server.is_running());

        // Another redis-server answering on the port is not mistaken for ours.
        let other = RedisServer::start()?;
        let mut server = RedisServer::unstarted(fresh_dir()?, Mode::Server(Vec::new()), None, None);
        server.start_fresh(Some(other.port()))?;
        assert_ne!(server.port(), other.port());
        let pid = info_field(&server.info("server")?, "process_id").map(str::to_owned);
        assert_eq!(pid, server.child.as_ref().map(|c| c.id().to_string()));
        Ok(())
    }

    #[test]
    fn helpers() {
        assert_eq!(
            info_field("# S\r\nrole:master\r\nx:1\r\n", "role"),
            Some("master")
        );
        assert_eq!(info_field("role_x:1\r\n", "role"), None);
        assert_eq!(percent_encode("a b/@:%"), "a%20b%2F%40%3A%25");
        let map = fields(["a", "1", "b", "2"].map(str::to_owned).to_vec());
        assert_eq!(map.get("b").map(String::as_str), Some("2"));
        assert_eq!(sentinel::sentinel_id().len(), 40);
    }
}
