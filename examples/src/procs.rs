//! Child processes that cannot outlive the example that started them, and `redis-server`s on
//! free loopback ports.
//!
//! Every child gets a pipe as its stdin and nothing else writes to it: when the parent exits,
//! however it exits (a return, a panic, Ctrl-C, even `kill -9`), the kernel closes the pipe and
//! the child reads end-of-file. A node child ([`parent_gone`]) stops its mesh and exits then;
//! a program that does not watch its stdin (`redis-server`) runs under a *keeper*: the
//! example's own binary re-executed with [`KEEPER_FLAG`], which starts the program, waits for
//! end-of-file on its stdin and then kills it. An example that starts keepers calls
//! [`run_keeper_if_asked`] first thing in `main`.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt as _;
use tokio::process::{Child, ChildStdin, Command};

/// The first argument that makes an example binary run as a keeper (see the module docs).
pub const KEEPER_FLAG: &str = "--keep-with-parent";

/// The environment variable naming a directory a keeper removes once its program is gone.
pub const KEEPER_CLEANUP_ENV: &str = "MESH_EXAMPLE_KEEPER_CLEANUP";

/// How long [`Redis::start`] and friends wait for a server to answer.
pub const REDIS_WAIT: Duration = Duration::from_secs(10);

const POLL: Duration = Duration::from_millis(20);

/// If this process was started as a keeper (its first argument is [`KEEPER_FLAG`], the rest
/// a program and its arguments), runs the program until it exits or this process's stdin
/// reaches end-of-file (then kills it), and exits; otherwise returns at once.
pub async fn run_keeper_if_asked() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(KEEPER_FLAG.as_ref()) {
        return;
    }
    let Some(program) = args.next() else {
        eprintln!("{KEEPER_FLAG} needs a program to run");
        std::process::exit(2);
    };
    let mut child = match Command::new(&program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keeper: cannot start {}: {e}", program.to_string_lossy());
            std::process::exit(1);
        }
    };
    let code = tokio::select! {
        status = child.wait() => status.ok().and_then(|s| s.code()).unwrap_or(1),
        () = parent_gone() => {
            let _ = child.kill().await;
            0
        }
    };
    // The parent may be gone (killed) and unable to remove its program's directory.
    if let Some(dir) = std::env::var_os(KEEPER_CLEANUP_ENV) {
        let _ = std::fs::remove_dir_all(dir);
    }
    // Exit at once: the runtime's blocking stdin reader may still be waiting.
    std::process::exit(code);
}

/// Resolves when this process's stdin reaches end-of-file (or fails): the parent that holds
/// the other end closed it or is gone. A child started with [`Supervised::spawn`] awaits this
/// and stops.
pub async fn parent_gone() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 256];
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// A child process whose stdin is a pipe held by this handle (see the module docs): closing
/// it ([`Supervised::stop`], or dropping the handle) tells the child to stop.
#[derive(Debug)]
pub struct Supervised {
    child: Child,
    stdin: Option<ChildStdin>,
    name: String,
}

impl Supervised {
    /// Spawns `cmd` with a piped stdin. With `kill_on_drop`, dropping the handle also sends
    /// SIGKILL (for children that stop on end-of-file themselves, a safety net); without it,
    /// dropping only closes the pipe (for a keeper, which must live long enough to kill its
    /// program).
    pub fn spawn(
        name: impl Into<String>,
        mut cmd: Command,
        kill_on_drop: bool,
    ) -> io::Result<Self> {
        let name = name.into();
        // A process group of its own: Ctrl-C in a terminal reaches the parent only, which
        // then stops its children in order.
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::piped())
            .kill_on_drop(kill_on_drop)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {name}: {e}")))?;
        let stdin = child.stdin.take();
        Ok(Supervised { child, stdin, name })
    }

    /// Spawns `program args..` under a keeper: this binary re-executed with [`KEEPER_FLAG`]
    /// (its `main` must call [`run_keeper_if_asked`]). The program's stdout and stderr are
    /// discarded; `cleanup`, if given, is a directory the keeper removes once the program is
    /// gone (also when this process was killed).
    pub fn keep(
        name: impl Into<String>,
        program: &str,
        args: &[String],
        cleanup: Option<&Path>,
    ) -> io::Result<Self> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg(KEEPER_FLAG)
            .arg(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(dir) = cleanup {
            cmd.env(KEEPER_CLEANUP_ENV, dir);
        }
        Self::spawn(name, cmd, false)
    }

    /// What it was called at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's process id (`None` once it was reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether the child has exited.
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Mutable access to the child (for its piped stdout, say).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Closes the child's stdin and waits for it to exit, at most `grace`; then kills it.
    /// Returns its exit status and whether it had to be killed.
    pub async fn stop(&mut self, grace: Duration) -> io::Result<(ExitStatus, bool)> {
        drop(self.stdin.take());
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => Ok((status?, false)),
            Err(_) => {
                self.child.kill().await?;
                Ok((self.child.wait().await?, true))
            }
        }
    }
}

/// A currently free TCP port on 127.0.0.1 (another process may take it before it is used:
/// [`Redis::start`] retries on another port when that happens).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// A new empty directory under the system's temporary directory, removed by [`Redis`]'s drop.
fn fresh_dir(what: &str) -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("mesh-example-{what}-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// One `redis-server` (a data server or a sentinel) on a free 127.0.0.1 port, under a keeper,
/// with its own temporary directory and no persistence. Dropping it stops the server (it
/// dies with this process in any case) and removes the directory.
#[derive(Debug)]
pub struct Redis {
    process: Option<Supervised>,
    port: u16,
    dir: PathBuf,
    sentinel: bool,
}

impl Redis {
    /// Starts a data server (`extra` are more `redis-server` arguments, e.g. `--replicaof`)
    /// and waits until it answers `PING`.
    pub async fn start(extra: &[String]) -> io::Result<Redis> {
        Self::launch(extra, None, None).await
    }

    /// Starts a sentinel from the config text `conf` (without `port`, `bind`, `dir` or
    /// `logfile` lines: those are added) and waits until it answers `PING`.
    pub async fn sentinel(conf: &str) -> io::Result<Redis> {
        Self::launch(&[], Some(conf), None).await
    }

    /// [`Redis::sentinel`] on `port` (from [`free_port`], so that the other sentinels can be
    /// told about it before it starts), or on another free port if that one was taken
    /// meanwhile.
    pub async fn sentinel_on(port: u16, conf: &str) -> io::Result<Redis> {
        Self::launch(&[], Some(conf), Some(port)).await
    }

    async fn launch(
        extra: &[String],
        sentinel_conf: Option<&str>,
        first_port: Option<u16>,
    ) -> io::Result<Redis> {
        let dir = fresh_dir(if sentinel_conf.is_some() {
            "sentinel"
        } else {
            "redis"
        })?;
        let mut redis = Redis {
            process: None,
            port: 0,
            dir,
            sentinel: sentinel_conf.is_some(),
        };
        let mut last = io::Error::other("redis-server did not start");
        for attempt in 0..5 {
            redis.port = match (attempt, first_port) {
                (0, Some(p)) => p,
                _ => free_port()?,
            };
            // A failed attempt's keeper removed the directory.
            std::fs::create_dir_all(&redis.dir)?;
            let args = match sentinel_conf {
                None => {
                    let mut a: Vec<String> = [
                        "--port",
                        &redis.port.to_string(),
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--daemonize",
                        "no",
                        "--repl-diskless-sync-delay",
                        "0",
                        "--dir",
                        path_str(&redis.dir)?,
                        "--logfile",
                        "redis.log",
                    ]
                    .map(str::to_owned)
                    .to_vec();
                    a.extend_from_slice(extra);
                    a
                }
                Some(conf) => {
                    let file = redis.dir.join("sentinel.conf");
                    let text = format!(
                        "port {}\nbind 127.0.0.1\ndaemonize no\ndir {:?}\nlogfile \"redis.log\"\n{conf}",
                        redis.port,
                        path_str(&redis.dir)?,
                    );
                    std::fs::write(&file, text)?;
                    vec![path_str(&file)?.to_owned(), "--sentinel".to_owned()]
                }
            };
            let name = format!("redis-server on port {}", redis.port);
            redis.process = Some(Supervised::keep(
                name,
                "redis-server",
                &args,
                Some(&redis.dir),
            )?);
            match redis.wait_ready().await {
                Ok(()) => return Ok(redis),
                Err(e) => {
                    last = e;
                    redis.kill().await;
                }
            }
        }
        Err(last)
    }

    /// Waits until the server answers `PING`; fails at once if it exited (its port was taken).
    async fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + REDIS_WAIT;
        loop {
            if self.process.as_mut().is_none_or(Supervised::has_exited) {
                return Err(self.error("exited at once"));
            }
            if let Ok(pong) = self.query::<String>(&redis::cmd("PING")).await
                && pong == "PONG"
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.error(&format!("did not answer within {REDIS_WAIT:?}")));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `redis://127.0.0.1:port/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The process id of its keeper.
    pub fn keeper_pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Supervised::pid)
    }

    /// Runs one command on a new connection (1 s timeouts).
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> io::Result<T> {
        let client = redis::Client::open(self.url()).map_err(io::Error::other)?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)));
        let mut con = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(io::Error::other)?;
        cmd.query_async(&mut con).await.map_err(io::Error::other)
    }

    /// The value of `field` in `INFO section`.
    pub async fn info_field(&self, section: &str, field: &str) -> io::Result<Option<String>> {
        let info: String = self.query(redis::cmd("INFO").arg(section)).await?;
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned()))
    }

    /// Kills the server at once (SIGKILL, through its keeper) and waits until it is gone.
    pub async fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.stop(Duration::from_secs(5)).await;
        }
    }

    /// Stops the server cleanly: `SHUTDOWN NOSAVE` (a sentinel: `SHUTDOWN`), then waits for
    /// it to exit (killing it after 5 s).
    pub async fn shutdown(&mut self) -> io::Result<()> {
        let mut cmd = redis::cmd("SHUTDOWN");
        if !self.sentinel {
            cmd.arg("NOSAVE");
        }
        // The server closes the connection instead of answering.
        let _ = self.query::<redis::Value>(&cmd).await;
        if let Some(mut p) = self.process.take() {
            let grace = Duration::from_secs(5);
            match tokio::time::timeout(grace, p.child_mut().wait()).await {
                Ok(status) => {
                    status?;
                }
                Err(_) => {
                    p.stop(grace).await?;
                }
            }
        }
        Ok(())
    }

    fn error(&self, what: &str) -> io::Error {
        let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        io::Error::other(format!(
            "redis-server on port {} {what}; its log ends:\n{}",
            self.port,
            tail.join("\n")
        ))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // Closing the keeper's stdin makes it kill the server.
        drop(self.process.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path_str(p: &Path) -> io::Result<&str> {
    p.to_str()
        .ok_or_else(|| io::Error::other(format!("{} is not UTF-8", p.display())))
}
