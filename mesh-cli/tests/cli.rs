//! The built `mesh` binary against real nodes started in this process, discovering through
//! a `redis-server` each test spawns on a free loopback port (the seeds and the no-discovery
//! paths too). Every wait is bounded; nothing asserts on time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Output, Stdio};

use mesh_core::prelude::*;
use mesh_core::rpc::{AccessRule, TOOLS_SERVICE};
use mesh_core::{Discovery, Mesh};
use mesh_tests::mesh::{LIMIT, TICK, redis_node};
use mesh_tests::redis::RedisServer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

/// The error of `Calc::root`.
#[derive(Debug, Serialize, Deserialize)]
pub enum CalcError {
    /// No root of a negative number.
    Negative(i64),
}

/// The service the tool calls.
#[mesh_service(id = 5000)]
pub trait Calc {
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn root(&self, x: i64) -> Result<i64, CalcError>;
    #[mesh(oneway)]
    async fn note(&self, text: String);
    /// Answers `ms` after waiting that long.
    async fn pause(&self, ms: u64) -> u64;
}

struct Impl(mpsc::UnboundedSender<String>);

impl Calc for Impl {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn root(&self, x: i64) -> Result<i64, CalcError> {
        if x < 0 {
            Err(CalcError::Negative(x))
        } else {
            Ok(x.isqrt())
        }
    }
    async fn note(&self, text: String) {
        let _ = self.0.send(text);
    }
    async fn pause(&self, ms: u64) -> u64 {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        ms
    }
}

/// A shared object the tool lists and reads.
#[derive(SharedObject, Clone, Default, Debug)]
pub struct Room {
    players: i64,
    name: String,
}

/// A spawned redis-server and a prefix of its own.
struct Cluster {
    redis: RedisServer,
    prefix: String,
}

impl Cluster {
    fn start(prefix: &str) -> Cluster {
        Cluster {
            redis: RedisServer::start().expect("redis-server starts"),
            prefix: prefix.to_string(),
        }
    }

    /// A node of `node_type` serving `Calc`; its notes come out of the receiver.
    async fn calc_node(&self, node_type: &str) -> (Mesh, mpsc::UnboundedReceiver<String>) {
        let m = redis_node(&self.redis.url(), &self.prefix, node_type).await;
        let (tx, rx) = mpsc::unbounded_channel();
        m.serve(CalcServer::new(Impl(tx))).unwrap().forever();
        (m, rx)
    }

    /// Runs `mesh --redis URL --prefix P args...`.
    async fn mesh(&self, args: &[&str]) -> Output {
        let url = self.redis.url();
        let mut all = vec!["--redis", url.as_str(), "--prefix", &self.prefix];
        all.extend_from_slice(args);
        mesh(&all).await
    }
}

/// The tool's command with no `MESH_*` variable from the test's environment but a short
/// discovery interval.
fn command(args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_mesh"));
    for v in mesh_core::config::ENV_VARS {
        c.env_remove(v);
    }
    c.env("MESH_UPDATE_INTERVAL", "100ms")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// Runs the tool to its end (bounded).
async fn mesh(args: &[&str]) -> Output {
    let run = command(args).output();
    tokio::time::timeout(LIMIT, run)
        .await
        .unwrap_or_else(|_| panic!("mesh {args:?} did not end"))
        .expect("mesh runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The exit code, with what the tool printed when it is not `want`.
#[track_caller]
fn expect_code(o: &Output, want: i32) {
    assert_eq!(
        o.status.code(),
        Some(want),
        "stdout:\n{}\nstderr:\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
}

/// An address nobody listens on (a UDP port bound, then freed).
fn dead_addr() -> String {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let a = s.local_addr().unwrap();
    drop(s);
    a.to_string()
}

#[tokio::test]
async fn help_lists_subcommands_and_exit_codes() {
    let o = mesh(&["--help"]).await;
    expect_code(&o, 0);
    let out = text(&o.stdout);
    for s in [
        "ping",
        "nodes",
        "watch",
        "call",
        "send",
        "shared",
        "Exit codes:",
        "3  no such",
    ] {
        assert!(out.contains(s), "{s} missing from:\n{out}");
    }
    let o = mesh(&["ping"]).await;
    expect_code(&o, 2);
    let o = mesh(&["nodes"]).await;
    expect_code(&o, 2);
    assert!(text(&o.stderr).contains("needs discovery"));
}

#[tokio::test]
async fn ping_a_live_node_and_a_dead_address() {
    let c = Cluster::start("cli-ping");
    let (node, _notes) = c.calc_node("calc").await;
    let addr = node.addr().to_string();
    let o = c
        .mesh(&["ping", &addr, "-n", "3", "--interval", "10ms"])
        .await;
    expect_code(&o, 0);
    let out = text(&o.stdout);
    assert!(out.contains("3 sent, 3 answered"), "{out}");
    assert!(out.contains("rtt min/median/max ="), "{out}");
    assert_eq!(out.matches("reply from").count(), 3, "{out}");

    let o = c
        .mesh(&["--json", "ping", &addr, "-n", "2", "--interval", "0ms"])
        .await;
    expect_code(&o, 0);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["answered"], 2);
    assert!(j["rtt_ms"]["median"].as_f64().is_some());

    // Nobody there: the session never opens (exit 1, the kind printed). Without discovery.
    let o = mesh(&["--timeout", "3s", "ping", &dead_addr(), "-n", "1"]).await;
    expect_code(&o, 1);
    let err = text(&o.stderr);
    assert!(
        err.contains("mesh: Unreachable:") || err.contains("mesh: Timeout:"),
        "{err}"
    );
    assert!(text(&o.stdout).contains("1 sent, 0 answered"));

    // A node id the view does not list: no such node.
    let gone = format!("{addr}#00000000000000aa");
    let o = c.mesh(&["ping", &gone]).await;
    expect_code(&o, 3);
    assert!(text(&o.stderr).contains("NoSuchNode"));
    node.stop().await;
}

#[tokio::test]
async fn nodes_as_a_table_and_as_json() {
    let c = Cluster::start("cli-nodes");
    let (a, _na) = c.calc_node("calc").await;
    a.set_value("region", "eu-west").unwrap();
    let b = redis_node(&c.redis.url(), &c.prefix, "lobby").await;
    a.wait_for_latest_view().await.unwrap();
    let o = c.mesh(&["nodes"]).await;
    expect_code(&o, 0);
    let out = text(&o.stdout);
    let header = out.lines().next().unwrap_or_default();
    for col in [
        "ADDRESS",
        "INCARNATION",
        "TYPE",
        "ROLE",
        "STATUS",
        "SERVICES",
        "VALUES",
        "AGE",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert_eq!(out.lines().count(), 3, "{out}");
    let row = out
        .lines()
        .find(|l| l.contains(&a.addr().to_string()))
        .unwrap();
    assert!(
        row.contains("calc") && row.contains("online") && row.contains("Calc"),
        "{row}"
    );
    assert!(row.contains("region=eu-west"), "{row}");
    // Columns line up: every row's TYPE starts where the header's does.
    let at = header.find("TYPE").unwrap();
    for l in out.lines().skip(1) {
        assert!(
            l[at..].starts_with("calc") || l[at..].starts_with("lobby"),
            "{out}"
        );
    }

    let o = c.mesh(&["nodes", "--type", "lobby"]).await;
    expect_code(&o, 0);
    let out = text(&o.stdout);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains(&b.addr().to_string()));

    let o = c.mesh(&["--json", "nodes"]).await;
    expect_code(&o, 0);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let list = j.as_array().unwrap();
    assert_eq!(list.len(), 2, "the tool itself is a guest, not listed: {j}");
    let calc = list.iter().find(|n| n["type"] == "calc").unwrap();
    assert_eq!(calc["address"], a.addr().to_string());
    assert_eq!(calc["services"]["Calc"], 5000);
    assert_eq!(calc["values"]["region"], "eu-west");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn call_results_errors_and_unknown_methods() {
    let c = Cluster::start("cli-call");
    let (node, _notes) = c.calc_node("calc").await;
    let addr = node.addr().to_string();

    let o = c.mesh(&["call", &addr, "Calc.add", "[2, 40]"]).await;
    expect_code(&o, 0);
    assert_eq!(text(&o.stdout).trim(), "42");
    let o = c
        .mesh(&["--json", "call", &addr, "Calc.add", r#"{"a": 1, "b": 2}"#])
        .await;
    expect_code(&o, 0);
    assert_eq!(text(&o.stdout).trim(), "3");

    // The handler's own error: exit 1, kind Remote, the error as JSON.
    let o = c.mesh(&["call", &addr, "Calc.root", "[-9]"]).await;
    expect_code(&o, 1);
    let err = text(&o.stderr);
    assert!(
        err.contains("mesh: Remote:") && err.contains(r#"{"Negative":-9}"#),
        "{err}"
    );

    // No such method / service: exit 3, what there is named.
    let o = c.mesh(&["call", &addr, "Calc.mul", "[1, 2]"]).await;
    expect_code(&o, 3);
    let err = text(&o.stderr);
    assert!(
        err.contains("NoSuchMethod") && err.contains("add, root, note"),
        "{err}"
    );
    let o = c.mesh(&["call", &addr, "Nope.add", "[]"]).await;
    expect_code(&o, 3);
    assert!(text(&o.stderr).contains("NoSuchService"));

    // Arguments of the wrong type or not JSON: usage.
    let o = c.mesh(&["call", &addr, "Calc.add", r#"["x", 1]"#]).await;
    expect_code(&o, 2);
    assert!(text(&o.stderr).contains("BadArguments"));
    let o = c.mesh(&["call", &addr, "Calc.add", "[1,"]).await;
    expect_code(&o, 2);

    // Reflection lists the method with its types.
    let o = c.mesh(&["describe", &addr]).await;
    expect_code(&o, 0);
    let out = text(&o.stdout);
    assert!(
        out.contains("Calc.root") && out.contains("(x: i64) -> Result<i64, CalcError>"),
        "{out}"
    );

    // A dead address: the call fails (exit 1).
    let o = mesh(&[
        "--timeout",
        "3s",
        "call",
        &dead_addr(),
        "Calc.add",
        "[1, 2]",
    ])
    .await;
    expect_code(&o, 1);
    node.stop().await;
}

#[tokio::test]
async fn send_is_one_way_and_runs_the_method() {
    let c = Cluster::start("cli-send");
    let (node, mut notes) = c.calc_node("calc").await;
    let o = c
        .mesh(&[
            "send",
            &node.addr().to_string(),
            "Calc.note",
            r#"["hello"]"#,
        ])
        .await;
    expect_code(&o, 0);
    assert!(text(&o.stdout).contains("sent Calc.note (command 5002)"));
    let got = tokio::time::timeout(LIMIT, notes.recv()).await.unwrap();
    assert_eq!(got.as_deref(), Some("hello"));
    node.stop().await;
}

#[tokio::test]
async fn call_through_seeds_discovery() {
    // A seed node on the seeds backend; the tool joins through it.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let seed = Mesh::builder()
        .node_type("calc")
        .port(port)
        .discovery(Discovery::seeds([format!("127.0.0.1:{port}")]))
        .update_interval(TICK)
        .start()
        .await
        .unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let _s = seed.serve(CalcServer::new(Impl(tx))).unwrap();
    let addr = seed.addr().to_string();
    let o = mesh(&["--seeds", &addr, "call", &addr, "Calc.add", "[5, 6]"]).await;
    expect_code(&o, 0);
    assert_eq!(text(&o.stdout).trim(), "11");
    seed.stop().await;
}

#[tokio::test]
async fn watch_prints_joins_and_leaves_then_ends() {
    let c = Cluster::start("cli-watch");
    let first = redis_node(&c.redis.url(), &c.prefix, "calc").await;
    let url = c.redis.url().to_string();
    let mut child = command(&[
        "--redis", &url, "--prefix", &c.prefix, "watch", "--count", "2",
    ])
    .spawn()
    .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    // Subscribed once it says so.
    let line = tokio::time::timeout(LIMIT, stderr.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap_or_default();
    assert!(line.contains("watching 1 nodes"), "{line}");
    let joiner = redis_node(&c.redis.url(), &c.prefix, "lobby").await;
    let id = joiner.id().to_string();
    joiner.stop().await;
    let o = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    expect_code(&o, 0);
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains("joined") && lines[0].contains(&id) && lines[0].contains("type=lobby"),
        "{out}"
    );
    assert!(
        lines[1].contains("left") && lines[1].contains(&id) && lines[1].contains("graceful"),
        "{out}"
    );

    // Bounded by time with nothing happening, as JSON.
    let o = c.mesh(&["--json", "watch", "--for", "0.2"]).await;
    expect_code(&o, 0);
    assert!(o.stdout.is_empty(), "{}", text(&o.stdout));
    first.stop().await;
}

#[tokio::test]
async fn shared_list_and_get() {
    let c = Cluster::start("cli-shared");
    let owner = redis_node(&c.redis.url(), &c.prefix, "game").await;
    let room = owner
        .shared()
        .create(Room {
            players: 7,
            name: "blue".into(),
        })
        .await
        .unwrap();
    let id = room.id().to_string();
    let o = c.mesh(&["shared", "list", &owner.addr().to_string()]).await;
    expect_code(&o, 0);
    let out = text(&o.stdout);
    assert!(out.starts_with("ID"), "{out}");
    let row = out
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("Room"), "{row}");

    let o = c.mesh(&["--json", "shared", "get", &id]).await;
    expect_code(&o, 0);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["id"], id);
    assert_eq!(j["fields"]["players"], 7);
    let o = c.mesh(&["shared", "get", &id]).await;
    expect_code(&o, 0);
    let out = text(&o.stdout);
    assert!(
        out.contains("FIELD") && out.contains("players") && out.contains('7'),
        "{out}"
    );

    // An object the owner does not have: no such object.
    let missing = format!("{}/ffff", owner.id());
    let o = c.mesh(&["shared", "get", &missing]).await;
    expect_code(&o, 3);
    let o = c.mesh(&["shared", "get", "not-an-id"]).await;
    expect_code(&o, 2);
    owner.stop().await;
}

#[tokio::test]
async fn reflection_turned_off_is_refused() {
    let c = Cluster::start("cli-off");
    let node = Mesh::builder()
        .node_type("calc")
        .discovery(Discovery::redis(c.redis.url()))
        .prefix(&c.prefix)
        .update_interval(TICK)
        .reflection(false)
        .start()
        .await
        .unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let _s = node.serve(CalcServer::new(Impl(tx))).unwrap();
    let addr = node.addr().to_string();
    let o = c.mesh(&["call", &addr, "Calc.add", "[1, 2]"]).await;
    expect_code(&o, 1);
    assert!(
        text(&o.stderr).contains("mesh: Disabled:"),
        "{}",
        text(&o.stderr)
    );
    // Ping still answers.
    let o = c.mesh(&["ping", &addr, "-n", "1"]).await;
    expect_code(&o, 0);
    node.stop().await;
}

#[tokio::test]
async fn the_access_schema_refuses_the_tool() {
    let c = Cluster::start("cli-access");
    let start = |rules: Vec<AccessRule>| {
        let mut b = Mesh::builder()
            .node_type("calc")
            .discovery(Discovery::redis(c.redis.url()))
            .prefix(&c.prefix)
            .update_interval(TICK);
        for r in rules {
            b = b.allow(r);
        }
        b.start()
    };
    // Tools may ask what it serves, and call `add` only.
    let open = start(vec![
        AccessRule::service("*", TOOLS_SERVICE),
        AccessRule::commands("*", 5000..=5000),
    ])
    .await
    .unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let _s = open.serve(CalcServer::new(Impl(tx))).unwrap();
    let addr = open.addr().to_string();
    let o = c.mesh(&["call", &addr, "Calc.add", "[1, 2]"]).await;
    expect_code(&o, 0);
    let o = c.mesh(&["call", &addr, "Calc.root", "[4]"]).await;
    expect_code(&o, 1);
    assert!(
        text(&o.stderr).contains("mesh: Forbidden:"),
        "{}",
        text(&o.stderr)
    );
    // No rule for the tools at all: even reflection is refused.
    let closed = start(vec![AccessRule::service("lobby", "Calc")])
        .await
        .unwrap();
    let (tx, _rx2) = mpsc::unbounded_channel();
    let _s2 = closed.serve(CalcServer::new(Impl(tx))).unwrap();
    let o = c
        .mesh(&["call", &closed.addr().to_string(), "Calc.add", "[1, 2]"])
        .await;
    expect_code(&o, 1);
    assert!(
        text(&o.stderr).contains("mesh: Forbidden:"),
        "{}",
        text(&o.stderr)
    );
    // A refused ping is still an answer.
    let o = c
        .mesh(&["ping", &closed.addr().to_string(), "-n", "1"])
        .await;
    expect_code(&o, 0);
    assert!(text(&o.stdout).contains("(forbidden)"));
    open.stop().await;
    closed.stop().await;
}

/// The discovery settings come from `MESH_*` variables or a configuration file as well as
/// flags; a bad value is a usage error naming it; with `--json` a failure is JSON too.
#[tokio::test]
async fn discovery_from_the_environment_and_a_config_file() {
    let c = Cluster::start("cli-env");
    let node = redis_node(&c.redis.url(), &c.prefix, "calc").await;
    let addr = node.addr().to_string();
    let url = c.redis.url();

    let run = |mut cmd: tokio::process::Command| async move {
        tokio::time::timeout(LIMIT, cmd.output())
            .await
            .expect("mesh ended")
            .expect("mesh runs")
    };
    let mut by_env = command(&["nodes"]);
    by_env
        .env("MESH_REDIS_URL", &url)
        .env("MESH_PREFIX", &c.prefix);
    let o = run(by_env).await;
    expect_code(&o, 0);
    let out = text(&o.stdout);
    assert!(out.contains(&addr), "{out}");
    assert!(
        !out.contains('\x1b'),
        "no colours when stdout is not a terminal"
    );

    let dir = std::env::temp_dir().join(format!("mesh-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mesh.toml");
    std::fs::write(
        &file,
        format!(
            "prefix = \"{}\"\n[discovery]\nbackend = \"redis\"\nurl = \"{url}\"\n",
            c.prefix
        ),
    )
    .unwrap();
    let o = mesh(&["--config", file.to_str().unwrap(), "--json", "nodes"]).await;
    expect_code(&o, 0);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j[0]["address"], addr);

    // A flag overrides the file: another prefix sees nobody.
    let o = mesh(&[
        "--config",
        file.to_str().unwrap(),
        "--prefix",
        "cli-env-empty",
        "--json",
        "nodes",
    ])
    .await;
    expect_code(&o, 0);
    assert_eq!(text(&o.stdout).trim(), "[]");
    std::fs::remove_dir_all(&dir).unwrap();

    let mut bad = command(&["nodes"]);
    bad.env("MESH_REDIS_URL", &url)
        .env("MESH_REFLECTION", "maybe");
    let o = run(bad).await;
    expect_code(&o, 2);
    assert!(text(&o.stderr).contains("MESH_REFLECTION"));

    let o = c.mesh(&["--json", "call", &addr, "Calc.nothing"]).await;
    expect_code(&o, 3);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["error"]["kind"], "NoSuchService");
    assert_eq!(j["error"]["exit"], 3);
    node.stop().await;
}

/// A node of `node_type` serving `Calc`, discovering through `discovery`.
async fn calc_on(discovery: Discovery, prefix: &str) -> Mesh {
    let m = Mesh::builder()
        .node_type("calc")
        .discovery(discovery)
        .prefix(prefix)
        .update_interval(TICK)
        .start()
        .await
        .unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    m.serve(CalcServer::new(Impl(tx))).unwrap().forever();
    m.wait_for_latest_view().await.unwrap();
    m
}

/// `nodes` and `call` find a node by its type through `mesh nodes`, then call it.
async fn list_and_call(args: &[&str], node: &Mesh) {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--json", "nodes"]);
    let o = mesh(&all).await;
    expect_code(&o, 0);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let list = j.as_array().unwrap();
    assert_eq!(list.len(), 1, "{j}");
    assert_eq!(list[0]["address"], node.addr().to_string());
    let addr = node.addr().to_string();
    let mut all = args.to_vec();
    all.extend_from_slice(&["call", &addr, "Calc.add", "[40, 2]"]);
    let o = mesh(&all).await;
    expect_code(&o, 0);
    assert_eq!(text(&o.stdout).trim(), "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_and_calls_through_sentinel_and_cluster() {
    use mesh_tests::redis::{RedisCluster, SentinelSetup};

    let setup = SentinelSetup::start().expect("a sentinel setup starts");
    let sentinels = setup.sentinel_urls();
    let node = calc_on(
        Discovery::sentinel(sentinels.clone(), setup.master_name()),
        "cli-sentinel",
    )
    .await;
    let joined = sentinels.join(",");
    list_and_call(
        &[
            "--sentinel",
            &joined,
            "--master",
            setup.master_name(),
            "--prefix",
            "cli-sentinel",
        ],
        &node,
    )
    .await;
    node.stop().await;

    let cluster = RedisCluster::start(3).expect("a redis cluster starts");
    let urls = cluster.urls();
    let node = calc_on(Discovery::cluster(urls.clone()), "cli-cluster").await;
    let joined = urls.join(",");
    list_and_call(&["--cluster", &joined, "--prefix", "cli-cluster"], &node).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_waits_past_a_second_shows_progress() {
    let c = Cluster::start("cli-progress");
    let (node, _notes) = c.calc_node("calc").await;
    let addr = node.addr().to_string();
    // The handler itself takes 1.5 s, so the tool waits past its one-second mark.
    let o = c
        .mesh(&["--timeout", "10s", "call", &addr, "Calc.pause", "[1500]"])
        .await;
    expect_code(&o, 0);
    assert_eq!(text(&o.stdout).trim(), "1500");
    let err = text(&o.stderr);
    assert!(
        err.contains("mesh: waiting for") && err.contains("to answer Calc.pause"),
        "{err}"
    );
    node.stop().await;
}

#[tokio::test]
async fn stats_of_a_node_as_a_table_and_as_json() {
    let c = Cluster::start("cli-stats");
    let (node, _notes) = c.calc_node("calc").await;
    let addr = node.addr().to_string();
    let o = c.mesh(&["call", &addr, "Calc.add", "[1, 2]"]).await;
    expect_code(&o, 0);
    let o = c.mesh(&["stats", &addr]).await;
    expect_code(&o, 0);
    let out = text(&o.stdout);
    assert!(out.starts_with("COUNTER"), "{out}");
    assert!(out.contains("transport.messages_received"), "{out}");
    let o = c.mesh(&["--json", "stats", &addr]).await;
    expect_code(&o, 0);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        j["transport"]["messages_received"].as_u64().unwrap() >= 1,
        "{j}"
    );
    let o = c.mesh(&["stats", &dead_addr(), "--timeout", "300ms"]).await;
    expect_code(&o, 1);
    node.stop().await;
}
