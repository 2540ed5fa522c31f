//! Spawning `mesh-node` processes (this package's binary) for multi-process tests.

use std::io::{self, BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use mesh_core::NodeId;

/// A running `mesh-node` process; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct NodeProcess {
    child: Child,
    /// Its node id, from its `READY` line.
    pub id: NodeId,
    stdout: Option<BufReader<ChildStdout>>,
}

/// The path of the `mesh-node` binary next to the running test binary.
pub fn binary() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| io::Error::other("test binary has no directory"))?
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("mesh-node");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(io::Error::other(format!(
            "{} not found: build it with `cargo build -p mesh-tests`",
            bin.display()
        )))
    }
}

impl NodeProcess {
    /// Spawns a node with these `MESH_*` variables (others are cleared) and waits (at most
    /// 10 s) for it to report ready.
    pub fn spawn(env: &[(&str, &str)]) -> io::Result<NodeProcess> {
        let mut cmd = Command::new(binary()?);
        for v in mesh_core::config::ENV_VARS {
            cmd.env_remove(v);
        }
        cmd.envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn()?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut line = String::new();
            let res = r.read_line(&mut line).map(|_| line);
            let _ = tx.send((res, r));
        });
        let (line, reader) = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok((Ok(line), r)) => (line, r),
            Ok((Err(e), _)) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other(
                    "mesh-node did not become ready within 10 s",
                ));
            }
        };
        let id = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                io::Error::other(format!("unexpected first line from mesh-node: {line:?}"))
            });
        match id {
            Ok(id) => Ok(NodeProcess {
                child,
                id,
                stdout: Some(reader),
            }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// `kill -9`: the process dies without deregistering.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Graceful stop: closes its stdin and waits (at most 10 s) for it to print `STOPPED`.
    pub fn stop(&mut self) -> io::Result<()> {
        drop(self.child.stdin.take());
        let mut r = self
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("already stopped"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| io::Error::other("mesh-node did not stop within 10 s"))?;
        let _ = self.child.wait();
        if line.trim() == "STOPPED" {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "unexpected line at stop: {line:?}"
            )))
        }
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
