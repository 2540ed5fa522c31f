//! `mesh`: the mesh's command-line tool. It joins the mesh as a guest (it sends and is
//! not listed), through the same discovery settings as the library (`--redis`, `--seeds`,
//! ..., `--config FILE`, the `MESH_*` variables), and pings nodes, lists and watches
//! them, calls their methods with JSON (through server reflection), and reads shared
//! objects.

mod out;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use mesh_core::config::{DiscoverySpec, MeshConfig, duration};
use mesh_core::dashboard::{Dashboard, DashboardError};
use mesh_core::rpc::{MethodDescription, Reflection, ToolRefusal};
use mesh_core::shared::{ObjectId, Refusal, SharedError};
use mesh_core::watch::record_json;
use mesh_core::{CallError, Discovery, LocalRegistry, Mesh, NodeRecord, Target, WatchEvent};
use serde_json::{Value as Json, json};

const EXIT_CODES: &str = "\
Exit codes:
  0  done (every ping answered, the call returned)
  1  a call failed (the CallError kind is printed: Timeout, Unreachable, Forbidden, Remote
     for the method's own error, Disabled when the node has reflection turned off, ...),
     or discovery could not be reached
  2  usage: bad options, configuration, address, or JSON arguments the method refused
  3  no such node, service, method or shared object

Discovery: --redis, --sentinel, --cluster or --seeds, or MESH_REDIS_URL, MESH_SENTINELS,
MESH_CLUSTER_NODES, MESH_SEEDS and the other MESH_* variables, or --config FILE (TOML or
JSON, as the library reads it). Flags override variables, which override the file.";

/// The mesh command-line tool.
#[derive(Debug, Parser)]
#[command(name = "mesh", version, about, after_help = EXIT_CODES)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
struct Global {
    /// Discover through Redis standalone at URL (redis://host:port[/db]).
    #[arg(long, global = true, value_name = "URL")]
    redis: Option<String>,
    /// Discover through Redis Sentinel: the sentinels' URLs, comma-separated.
    #[arg(long, global = true, value_name = "URLS", value_delimiter = ',')]
    sentinel: Vec<String>,
    /// The master name the sentinels watch (default mymaster).
    #[arg(long, global = true, value_name = "NAME")]
    master: Option<String>,
    /// Discover through Redis Cluster: some nodes' URLs, comma-separated.
    #[arg(long, global = true, value_name = "URLS", value_delimiter = ',')]
    cluster: Vec<String>,
    /// Discover through static seeds: host:port of the seed nodes, comma-separated.
    #[arg(long, global = true, value_name = "ADDRS", value_delimiter = ',')]
    seeds: Vec<String>,
    /// The namespace in a shared backend (default mesh).
    #[arg(long, global = true)]
    prefix: Option<String>,
    /// A configuration file (.toml or .json), as the library reads it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Machine-readable JSON output instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Deadline of each call (250ms, 2s, ...; default the configuration's request_timeout).
    #[arg(long, global = true, value_name = "DURATION")]
    timeout: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Round trips to a node: min/median/max over N pings; exit 0 only if all answered.
    Ping {
        /// The node: ADDR:PORT, HOST:PORT or a node id ADDR:PORT#INCARNATION.
        addr: String,
        /// How many pings.
        #[arg(short = 'n', long = "count", default_value_t = 3)]
        count: u32,
        /// Pause between pings.
        #[arg(long, default_value = "200ms", value_name = "DURATION")]
        interval: String,
    },
    /// The nodes in the view: address, incarnation, type, role, status, services, values, age.
    Nodes {
        /// Only nodes of this type.
        #[arg(long = "type", value_name = "TYPE")]
        node_type: Option<String>,
        /// Only nodes with this role.
        #[arg(long)]
        role: Option<String>,
    },
    /// Live joins, leaves, updates, restarts, reachability and health until Ctrl-C.
    Watch {
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long = "for", value_name = "SECS")]
        for_secs: Option<f64>,
    },
    /// Calls Service.method on a node with JSON arguments and prints its JSON result.
    Call {
        /// The node: ADDR:PORT, HOST:PORT or a node id.
        addr: String,
        /// The method, as Service.method.
        method: String,
        /// The arguments: a JSON array in order or an object by name (none: no arguments).
        args: Option<String>,
    },
    /// Sends Service.method to a node one-way with JSON arguments (nothing comes back).
    Send {
        /// The node: ADDR:PORT, HOST:PORT or a node id.
        addr: String,
        /// The method, as Service.method.
        method: String,
        /// The arguments: a JSON array in order or an object by name.
        args: Option<String>,
    },
    /// What a node serves: services, methods, command ids, fingerprints and types.
    Describe {
        /// The node: ADDR:PORT, HOST:PORT or a node id.
        addr: String,
    },
    /// What a node counted since it started: messaging, transport, shared objects, and
    /// per command and per peer figures where the node has them.
    Stats {
        /// The node: ADDR:PORT, HOST:PORT or a node id.
        addr: String,
    },
    /// Serves the live cluster page (nodes, events, RPC rates, peer RTT and loss) until
    /// Ctrl-C.
    Dashboard {
        /// Where to serve it: a loopback or private ADDR:PORT.
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
        listen: String,
        /// Serve on a public address too (the page has no login).
        #[arg(long)]
        allow_public: bool,
    },
    /// Shared objects.
    #[command(subcommand)]
    Shared(SharedCommand),
}

#[derive(Debug, Subcommand)]
enum SharedCommand {
    /// The shared objects a node owns.
    List {
        /// The node: ADDR:PORT, HOST:PORT or a node id.
        node: String,
    },
    /// One shared object, read at its owner: its fields and versions.
    Get {
        /// The object id, OWNER/SERIAL (as `mesh shared list` shows it).
        id: String,
    },
}

/// How the tool ends: an exit code and what to say.
#[derive(Debug)]
struct Failure {
    code: u8,
    kind: String,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            kind: "Usage".into(),
            message: message.into(),
        }
    }

    fn missing(kind: &str, message: impl Into<String>) -> Failure {
        Failure {
            code: 3,
            kind: kind.into(),
            message: message.into(),
        }
    }

    fn call<E: std::fmt::Debug>(e: &CallError<E>) -> Failure
    where
        CallError<E>: std::fmt::Display,
    {
        Failure {
            code: 1,
            kind: e.kind().to_string(),
            message: e.to_string(),
        }
    }

    /// A reflection or JSON call's failure, by what the node said.
    fn tool(e: &CallError<ToolRefusal>) -> Failure {
        let (code, kind) = match e {
            CallError::Remote(r) => match r {
                ToolRefusal::Disabled => (1, "Disabled"),
                ToolRefusal::NoMethod { .. } => (3, "NoMethod"),
                ToolRefusal::NoJsonEntry { .. } => (3, "NoJsonEntry"),
                ToolRefusal::Forbidden { .. } => (1, "Forbidden"),
                ToolRefusal::BadArguments { .. } => (2, "BadArguments"),
                ToolRefusal::TooLarge { .. } => (2, "TooLarge"),
                ToolRefusal::MethodError { .. } => (1, "Remote"),
                _ => (1, "Remote"),
            },
            CallError::NoHandler { .. } => (1, "NoHandler"),
            other => (1, other.kind()),
        };
        let message = match e {
            CallError::Remote(ToolRefusal::MethodError { error }) => {
                format!("the method returned an error: {error}")
            }
            CallError::Remote(r) => r.to_string(),
            other => other.to_string(),
        };
        Failure {
            code,
            kind: kind.to_string(),
            message,
        }
    }
}

type Outcome = Result<(), Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.global.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mesh: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("mesh: {}: {}", f.kind, f.message);
            if json {
                println!(
                    "{}",
                    json!({ "error": { "kind": f.kind, "message": f.message, "exit": f.code } })
                );
            }
            ExitCode::from(f.code)
        }
    }
}

/// The configuration: the file, then `MESH_*` variables, then the flags; always a guest.
fn config(g: &Global) -> Result<MeshConfig, Failure> {
    let base = match &g.config {
        Some(p) => MeshConfig::from_file(p).map_err(|e| Failure::usage(e.to_string()))?,
        None => MeshConfig::default(),
    };
    let mut c = base.with_env().map_err(|e| Failure::usage(e.to_string()))?;
    if let Some(url) = &g.redis {
        c.discovery = DiscoverySpec::Redis { url: url.clone() };
    }
    if !g.sentinel.is_empty() {
        c.discovery = DiscoverySpec::Sentinel {
            sentinels: g.sentinel.clone(),
            master_name: g.master.clone().unwrap_or_else(|| "mymaster".into()),
            password: None,
            db: 0,
        };
    }
    if !g.cluster.is_empty() {
        c.discovery = DiscoverySpec::Cluster {
            nodes: g.cluster.clone(),
        };
    }
    if !g.seeds.is_empty() {
        c.discovery = DiscoverySpec::Seeds {
            seeds: g.seeds.clone(),
        };
    }
    if let Some(p) = &g.prefix {
        c.prefix = p.clone();
    }
    if let Some(t) = &g.timeout {
        c.request_timeout =
            duration::parse(t).map_err(|e| Failure::usage(format!("--timeout {t:?}: {e}")))?;
    }
    c.guest = true;
    c.shutdown_timeout = Duration::from_millis(500);
    Ok(c)
}

/// Starts the tool's guest node; `need_view`: the subcommand needs discovery.
async fn join(g: &Global, need_view: bool) -> Result<(Mesh, bool), Failure> {
    let c = config(g)?;
    let has_discovery = c.discovery != DiscoverySpec::Local;
    if need_view && !has_discovery {
        return Err(Failure::usage(
            "this subcommand needs discovery: give --redis URL, --seeds ADDRS, --sentinel, --cluster, --config FILE or MESH_REDIS_URL / MESH_SEEDS",
        ));
    }
    let mut b = Mesh::builder().config(c);
    if !has_discovery {
        // Nothing to discover: a private registry, so calls by address work.
        b = b.discovery(Discovery::local_registry(&LocalRegistry::new()));
    }
    match out::waiting("discovery", b.start()).await {
        Ok(m) => Ok((m, has_discovery)),
        Err(mesh_core::MeshError::Config(e)) => Err(Failure::usage(e.to_string())),
        Err(e) => Err(Failure {
            code: 1,
            kind: "Start".into(),
            message: e.to_string(),
        }),
    }
}

async fn run(cli: Cli) -> Outcome {
    let g = &cli.global;
    let need_view = matches!(
        cli.command,
        Command::Nodes { .. } | Command::Watch { .. } | Command::Dashboard { .. }
    );
    let (mesh, has_view) = join(g, need_view).await?;
    let r = match cli.command {
        Command::Ping {
            addr,
            count,
            interval,
        } => ping(&mesh, has_view, g.json, &addr, count, &interval).await,
        Command::Nodes { node_type, role } => {
            nodes(&mesh, g.json, node_type.as_deref(), role.as_deref())
        }
        Command::Watch { count, for_secs } => watch(&mesh, g.json, count, for_secs).await,
        Command::Call { addr, method, args } => {
            call(
                &mesh,
                has_view,
                g.json,
                &addr,
                &method,
                args.as_deref(),
                false,
            )
            .await
        }
        Command::Send { addr, method, args } => {
            call(
                &mesh,
                has_view,
                g.json,
                &addr,
                &method,
                args.as_deref(),
                true,
            )
            .await
        }
        Command::Describe { addr } => describe(&mesh, has_view, g.json, &addr).await,
        Command::Dashboard {
            listen,
            allow_public,
        } => dashboard(&mesh, &listen, allow_public).await,
        Command::Stats { addr } => stats(&mesh, has_view, g.json, &addr).await,
        Command::Shared(SharedCommand::List { node }) => {
            shared_list(&mesh, has_view, g.json, &node).await
        }
        Command::Shared(SharedCommand::Get { id }) => shared_get(&mesh, g.json, &id).await,
    };
    mesh.stop().await;
    r
}

/// The node an argument names; a node id the view does not list is no such node.
fn target(mesh: &Mesh, has_view: bool, addr: &str) -> Result<Target, Failure> {
    if addr.is_empty() {
        return Err(Failure::usage("an empty address"));
    }
    let t = Target::from(addr);
    if let Target::HostPort(s) = &t
        && s.rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
    {
        return Err(Failure::usage(format!(
            "{addr:?} is not a node: expected ADDR:PORT, HOST:PORT or ADDR:PORT#INCARNATION"
        )));
    }
    if has_view && matches!(t, Target::Node(_)) && !mesh.exists(&t) {
        return Err(Failure::missing(
            "NoSuchNode",
            format!("no node {addr} in the view (it left, or restarted with another incarnation)"),
        ));
    }
    Ok(t)
}

fn print(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes());
    let _ = o.flush();
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn ping(
    mesh: &Mesh,
    has_view: bool,
    json: bool,
    addr: &str,
    count: u32,
    interval: &str,
) -> Outcome {
    let t = target(mesh, has_view, addr)?;
    let pause = duration::parse(interval)
        .map_err(|e| Failure::usage(format!("--interval {interval:?}: {e}")))?;
    if count == 0 {
        return Err(Failure::usage("-n must be at least 1"));
    }
    let mut rtts: Vec<Duration> = Vec::new();
    let mut last_error: Option<Failure> = None;
    let mut replies = Vec::new();
    if !json {
        print(&format!("PING {t}\n"));
    }
    for seq in 1..=count {
        if seq > 1 {
            tokio::time::sleep(pause).await;
        }
        let start = std::time::Instant::now();
        let r = out::waiting(&format!("{t} to answer ping {seq}"), mesh.ping(t.clone())).await;
        let rtt = start.elapsed();
        // A refusal is an answer too: the node is alive.
        let answered = match &r {
            Ok(_) => Some("ok"),
            Err(CallError::Forbidden { .. }) => Some("forbidden"),
            Err(CallError::NoHandler { .. }) => Some("no ping handler"),
            Err(_) => None,
        };
        match (answered, r) {
            (Some(how), _) => {
                rtts.push(rtt);
                let ms = rtt.as_secs_f64() * 1e3;
                replies.push(json!({ "seq": seq, "rtt_ms": ms, "answer": how }));
                if !json {
                    let note = if how == "ok" {
                        String::new()
                    } else {
                        format!(" ({how})")
                    };
                    print(&format!(
                        "reply from {t}: seq={seq} time={ms:.3} ms{note}\n"
                    ));
                }
            }
            (None, Err(e)) => {
                replies.push(json!({ "seq": seq, "error": e.kind(), "message": e.to_string() }));
                if !json {
                    print(&format!("no reply from {t}: seq={seq} {}: {e}\n", e.kind()));
                }
                last_error = Some(Failure::call(&e));
            }
            (None, Ok(_)) => {}
        }
    }
    rtts.sort();
    let ms = |d: Option<&Duration>| d.map(|d| d.as_secs_f64() * 1e3);
    let (min, median, max) = (
        ms(rtts.first()),
        ms(rtts.get(rtts.len() / 2)),
        ms(rtts.last()),
    );
    if json {
        print(&format!(
            "{}\n",
            json!({
                "target": t.to_string(),
                "sent": count,
                "answered": rtts.len(),
                "rtt_ms": { "min": min, "median": median, "max": max },
                "replies": replies,
            })
        ));
    } else {
        let mut s = format!("{count} sent, {} answered", rtts.len());
        if let (Some(a), Some(b), Some(c)) = (min, median, max) {
            s.push_str(&format!("; rtt min/median/max = {a:.3}/{b:.3}/{c:.3} ms"));
        }
        print(&format!("{s}\n"));
    }
    match last_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn nodes(mesh: &Mesh, json: bool, node_type: Option<&str>, role: Option<&str>) -> Outcome {
    let mut list: Vec<NodeRecord> = mesh
        .nodes()
        .into_iter()
        .filter(|r| node_type.is_none_or(|t| r.node_type == t))
        .filter(|r| role.is_none_or(|x| r.role == x))
        .collect();
    list.sort_by(|a, b| (&a.node_type, a.id).cmp(&(&b.node_type, b.id)));
    let now = now_ms();
    if json {
        let all: Vec<Json> = list.iter().map(|r| record_json(r, now)).collect();
        print(&format!("{}\n", Json::Array(all)));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            let services: Vec<&str> = r.services.keys().map(String::as_str).collect();
            let values: Vec<String> = r
                .values
                .iter()
                .map(|(k, v)| format!("{k}={}", out::plain(v)))
                .collect();
            vec![
                r.id.addr.to_string(),
                format!("{:016x}", r.id.incarnation),
                r.node_type.clone(),
                r.role.clone(),
                r.status.to_string(),
                services.join(","),
                values.join(" "),
                out::age(now.saturating_sub(r.started_at_ms)),
            ]
        })
        .collect();
    print(&out::table(
        &[
            "ADDRESS",
            "INCARNATION",
            "TYPE",
            "ROLE",
            "STATUS",
            "SERVICES",
            "VALUES",
            "AGE",
        ],
        &rows,
        Some(4),
    ));
    Ok(())
}

async fn watch(mesh: &Mesh, json: bool, count: Option<u64>, for_secs: Option<f64>) -> Outcome {
    let until = match for_secs {
        Some(s) if s.is_finite() && s >= 0.0 => {
            Some(tokio::time::Instant::now() + Duration::from_secs_f64(s.min(1e9)))
        }
        Some(s) => return Err(Failure::usage(format!("--for {s}: expected seconds"))),
        None => None,
    };
    let mut events = mesh.events();
    eprintln!(
        "mesh: watching {} nodes (Ctrl-C to stop)",
        mesh.nodes().len()
    );
    let on = out::colour();
    let mut seen = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    while count.is_none_or(|c| seen < c) {
        let next = tokio::select! {
            e = events.recv() => e,
            _ = &mut ctrl_c => break,
            () = async {
                match until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => break,
        };
        let e = match next {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                eprintln!("mesh: {n} events missed (the tool fell behind)");
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        };
        seen += 1;
        let w = WatchEvent::from_event(&e, now_ms());
        if json {
            print(&format!("{}\n", w.json));
        } else {
            print(&w.line_with(|kind| out::paint(on, out::tone(&w.kind), kind)));
        }
    }
    Ok(())
}

/// Reflection of `t`, refusals typed.
async fn reflect(mesh: &Mesh, t: &Target) -> Result<Reflection, Failure> {
    out::waiting(&format!("{t} to describe itself"), mesh.reflect(t.clone()))
        .await
        .map_err(|e| Failure::tool(&e))
}

/// `Service.method` in a reflection, or what is there instead.
fn find<'r>(r: &'r Reflection, t: &Target, name: &str) -> Result<&'r MethodDescription, Failure> {
    let Some((service, method)) = name.rsplit_once('.') else {
        return Err(Failure::usage(format!(
            "{name:?}: name the method as Service.method"
        )));
    };
    let named: Vec<&str> = r
        .services
        .iter()
        .filter(|s| !s.name.is_empty())
        .map(|s| s.name.as_str())
        .collect();
    let Some(s) = r.service(service) else {
        return Err(Failure::missing(
            "NoSuchService",
            format!(
                "{t} serves no service {service:?} (it serves: {})",
                if named.is_empty() {
                    "none".to_string()
                } else {
                    named.join(", ")
                }
            ),
        ));
    };
    s.methods.iter().find(|m| m.name == method).ok_or_else(|| {
        let methods: Vec<&str> = s.methods.iter().map(|m| m.name.as_str()).collect();
        Failure::missing(
            "NoSuchMethod",
            format!(
                "service {service} on {t} has no method {method:?} (it has: {})",
                methods.join(", ")
            ),
        )
    })
}

async fn call(
    mesh: &Mesh,
    has_view: bool,
    json: bool,
    addr: &str,
    name: &str,
    args: Option<&str>,
    oneway: bool,
) -> Outcome {
    let t = target(mesh, has_view, addr)?;
    let args = args.unwrap_or("");
    if !args.trim().is_empty()
        && let Err(e) = serde_json::from_str::<Json>(args)
    {
        return Err(Failure::usage(format!("the arguments are not JSON: {e}")));
    }
    let r = reflect(mesh, &t).await?;
    let m = find(&r, &t, name)?;
    if !m.json {
        return Err(Failure::missing(
            "NoJsonEntry",
            format!(
                "{name} (command {}) cannot be called with JSON: it is not a #[mesh_service] method",
                m.id
            ),
        ));
    }
    if oneway {
        out::waiting(
            &format!("{t} to acknowledge {name}"),
            mesh.send_json(t.clone(), m.id, args),
        )
        .await
        .map_err(|e| Failure::call(&e))?;
        if json {
            print(&format!(
                "{}\n",
                json!({ "sent": name, "command": m.id, "target": t.to_string() })
            ));
        } else {
            print(&format!("sent {name} (command {}) to {t}\n", m.id));
        }
        return Ok(());
    }
    let answer = out::waiting(
        &format!("{t} to answer {name}"),
        mesh.call_json(t.clone(), m.id, args),
    )
    .await
    .map_err(|e| Failure::tool(&e))?;
    let value: Json = serde_json::from_str(&answer).unwrap_or(Json::String(answer));
    if json {
        print(&format!("{value}\n"));
    } else {
        let pretty = serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string());
        print(&format!("{pretty}\n"));
    }
    Ok(())
}

async fn describe(mesh: &Mesh, has_view: bool, json: bool, addr: &str) -> Outcome {
    let t = target(mesh, has_view, addr)?;
    let r = reflect(mesh, &t).await?;
    if json {
        let text = serde_json::to_string(&r).unwrap_or_default();
        print(&format!("{text}\n"));
        return Ok(());
    }
    let mut rows = Vec::new();
    for s in &r.services {
        for m in &s.methods {
            let args: Vec<String> = m
                .args
                .iter()
                .map(|a| format!("{}: {}", a.name, a.ty))
                .collect();
            let ret = match (&m.output, &m.error) {
                (Some(o), Some(e)) => format!("Result<{o}, {e}>"),
                (Some(o), None) => o.clone(),
                (None, _) => "?".into(),
            };
            let method = if s.name.is_empty() {
                format!("(command {})", m.id)
            } else {
                format!("{}.{}", s.name, m.name)
            };
            rows.push(vec![
                method,
                m.id.to_string(),
                format!("{:#010x}", m.fingerprint),
                m.kind.map(|k| k.to_string()).unwrap_or_else(|| "?".into()),
                format!("({}) -> {ret}", args.join(", ")),
                if m.allowed { "yes" } else { "no" }.into(),
            ]);
        }
    }
    print(&out::table(
        &[
            "METHOD",
            "ID",
            "FINGERPRINT",
            "KIND",
            "SIGNATURE",
            "ALLOWED",
        ],
        &rows,
        None,
    ));
    Ok(())
}

async fn shared_list(mesh: &Mesh, has_view: bool, json: bool, node: &str) -> Outcome {
    let t = target(mesh, has_view, node)?;
    let list = out::waiting(
        &format!("{t} to list its shared objects"),
        mesh.shared().list(t.clone()),
    )
    .await
    .map_err(|e| Failure::call(&e))?;
    if json {
        let all: Vec<Json> = list
            .iter()
            .map(|o| {
                json!({
                    "id": o.id.to_string(),
                    "type": o.type_name,
                    "epoch": o.epoch,
                    "version": o.version,
                    "subscribers": o.subscribers,
                    "backup": o.backup.map(|b| b.to_string()),
                    "bytes": o.bytes,
                })
            })
            .collect();
        print(&format!("{}\n", Json::Array(all)));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|o| {
            vec![
                o.id.to_string(),
                o.type_name.clone(),
                o.epoch.to_string(),
                o.version.to_string(),
                o.subscribers.to_string(),
                o.backup.map_or_else(|| "-".to_string(), |b| b.to_string()),
                o.bytes.to_string(),
            ]
        })
        .collect();
    print(&out::table(
        &[
            "ID", "TYPE", "EPOCH", "VERSION", "REPLICAS", "BACKUP", "BYTES",
        ],
        &rows,
        None,
    ));
    Ok(())
}

async fn shared_get(mesh: &Mesh, json: bool, id: &str) -> Outcome {
    let id: ObjectId = id
        .parse()
        .map_err(|e: mesh_core::shared::ParseObjectIdError| Failure::usage(e.to_string()))?;
    let got = out::waiting(&format!("the owner of {id}"), mesh.shared().inspect(id)).await;
    let inspection = match got {
        Ok(i) => i,
        Err(e) => {
            let gone = matches!(e.refusal(), Some(Refusal::NotFound))
                || matches!(e, SharedError::Removed { .. });
            let kind = match &e {
                SharedError::Call { source, .. } => source.kind().to_string(),
                SharedError::Refused { .. } => "Refused".into(),
                SharedError::Removed { .. } => "Removed".into(),
                _ => "Shared".into(),
            };
            return Err(if gone {
                Failure::missing("NoSuchObject", e.to_string())
            } else {
                Failure {
                    code: 1,
                    kind,
                    message: e.to_string(),
                }
            });
        }
    };
    let j = inspection.to_json();
    if json {
        print(&format!("{j}\n"));
        return Ok(());
    }
    let field = |k: &str| j.get(k).map(out::plain).unwrap_or_default();
    let mut s = format!(
        "{}  {}  epoch {}  version {}  backup {}\n",
        field("id"),
        field("type"),
        field("epoch"),
        field("version"),
        j.get("backup")
            .filter(|b| !b.is_null())
            .map_or_else(|| "-".to_string(), out::plain)
    );
    let rows: Vec<Vec<String>> = j
        .get("fields")
        .and_then(Json::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| vec![k.clone(), out::plain(v)])
                .collect()
        })
        .unwrap_or_default();
    s.push_str(&out::table(&["FIELD", "VALUE"], &rows, None));
    print(&s);
    Ok(())
}

async fn stats(mesh: &Mesh, has_view: bool, json: bool, addr: &str) -> Outcome {
    let t = target(mesh, has_view, addr)?;
    let got = out::waiting(
        &format!("{t} to send its stats"),
        mesh.node_stats(t.clone()),
    )
    .await
    .map_err(|e| Failure::tool(&e))?;
    let j = serde_json::to_value(&got).unwrap_or(Json::Null);
    if json {
        print(&format!("{j}\n"));
        return Ok(());
    }
    // Every counter of each part, flattened (`transport.drops.stale`), then the tables.
    fn flat(prefix: &str, v: &Json, rows: &mut Vec<Vec<String>>) {
        match v {
            Json::Object(m) => {
                for (k, v) in m {
                    flat(&format!("{prefix}{k}."), v, rows);
                }
            }
            Json::Array(_) => {}
            other => rows.push(vec![
                prefix.trim_end_matches('.').to_string(),
                out::plain(other),
            ]),
        }
    }
    let mut rows = Vec::new();
    flat("", &j, &mut rows);
    let mut s = out::table(&["COUNTER", "VALUE"], &rows, None);
    let cell = |v: &Json, k: &str| {
        v.get(k)
            .filter(|x| !x.is_null())
            .map_or_else(|| "-".to_string(), out::plain)
    };
    if let Some(list) = j
        .get("commands")
        .and_then(Json::as_array)
        .filter(|l| !l.is_empty())
    {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|c| {
                [
                    "command",
                    "name",
                    "served",
                    "served_errors",
                    "called",
                    "call_errors",
                    "handler_us_total",
                ]
                .iter()
                .map(|k| cell(c, k))
                .collect()
            })
            .collect();
        s.push('\n');
        s.push_str(&out::table(
            &[
                "COMMAND",
                "NAME",
                "SERVED",
                "ERRORS",
                "CALLED",
                "CALL ERRORS",
                "HANDLER US",
            ],
            &rows,
            None,
        ));
    }
    if let Some(list) = j
        .get("peers")
        .and_then(Json::as_array)
        .filter(|l| !l.is_empty())
    {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|p| {
                [
                    "addr",
                    "node",
                    "srtt_us",
                    "rtt_p99_us",
                    "retransmits",
                    "packets_out",
                    "bytes_in",
                    "bytes_out",
                ]
                .iter()
                .map(|k| cell(p, k))
                .collect()
            })
            .collect();
        s.push('\n');
        s.push_str(&out::table(
            &[
                "PEER",
                "NODE",
                "SRTT US",
                "P99 US",
                "RETRANSMITS",
                "PACKETS OUT",
                "BYTES IN",
                "BYTES OUT",
            ],
            &rows,
            None,
        ));
    }
    print(&s);
    Ok(())
}

async fn dashboard(mesh: &Mesh, listen: &str, allow_public: bool) -> Outcome {
    let addr: std::net::SocketAddr = listen
        .parse()
        .map_err(|e| Failure::usage(format!("--listen {listen:?}: {e} (expected ADDR:PORT)")))?;
    let served = if allow_public {
        Dashboard::serve_public(mesh.clone(), addr).await
    } else {
        Dashboard::serve(mesh.clone(), addr).await
    };
    let page = served.map_err(|e| match e {
        DashboardError::NotPrivate(_) => Failure::usage(format!("{e} (--allow-public)")),
        other => Failure {
            code: 1,
            kind: "Listen".into(),
            message: other.to_string(),
        },
    })?;
    eprintln!(
        "mesh: the cluster page is at {} (Ctrl-C to stop)",
        page.url()
    );
    let _ = tokio::signal::ctrl_c().await;
    page.stop();
    Ok(())
}
