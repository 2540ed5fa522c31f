//! Quickstart: three nodes, one service, calls across nodes.
//!
//! Two "math" nodes serve `Greeter`; a "web" node calls them: a plain call, a call that fails
//! with the service's own error, balanced calls, a broadcast that collects every answer, and a
//! one-way announcement sent once through a relay tree. Discovery is the in-process
//! registry unless `REDIS_URL` is set (then every node registers in that Redis under a
//! prefix of its own, so runs never see each other).
//!
//! Run: `cargo run --example quickstart` (or `REDIS_URL=redis://127.0.0.1:6379 cargo run
//! --example quickstart`).

use std::time::Duration;

use mesh_core::MeshError;
use mesh_core::prelude::*;
use serde::{Deserialize, Serialize};

/// What `divide` can fail with; it travels back to the caller as `CallError::Remote`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum MathError {
    /// The divisor was zero.
    #[error("division by zero")]
    DivByZero,
}

/// A small service: methods get command ids 1000, 1001, 1002, 1003.
#[mesh_service(id = 1000)]
pub trait Greeter {
    /// Greets someone, saying which node answered.
    async fn hello(&self, name: String) -> String;
    /// Integer division; dividing by zero is the service's own error.
    async fn divide(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// Who called (the server fills the context in; the caller sends nothing for it).
    async fn caller(&self, ctx: CallContext) -> String;
    /// A one-way announcement: no answer, acknowledged by the transport.
    #[mesh(oneway)]
    async fn announce(&self, ctx: CallContext, news: String);
}

struct MyGreeter {
    name: String,
    /// Where this node reports the announcements it hears (the example prints them).
    heard: tokio::sync::mpsc::UnboundedSender<String>,
}

impl Greeter for MyGreeter {
    async fn hello(&self, name: String) -> String {
        format!("hello, {name}, from {}", self.name)
    }

    async fn divide(&self, a: i64, b: i64) -> Result<i64, MathError> {
        a.checked_div(b).ok_or(MathError::DivByZero)
    }

    async fn caller(&self, ctx: CallContext) -> String {
        format!(
            "{} ({})",
            ctx.sender_addr(),
            ctx.sender_type().unwrap_or("not listed")
        )
    }

    async fn announce(&self, ctx: CallContext, news: String) {
        let _ = self.heard.send(format!(
            "{} heard {news:?} from {}",
            self.name,
            ctx.sender_addr()
        ));
    }
}

async fn node(node_type: &str, discovery: &Discovery, prefix: &str) -> Result<Mesh, MeshError> {
    Mesh::builder()
        .node_type(node_type)
        .discovery(discovery.clone())
        .prefix(prefix)
        .update_interval(Duration::from_millis(200))
        .start()
        .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let prefix = format!("quickstart-{}", std::process::id());
    let discovery = match std::env::var("REDIS_URL") {
        Ok(url) => {
            println!("discovery: Redis at {url} (prefix {prefix})");
            Discovery::redis(url)
        }
        Err(_) => {
            println!("discovery: in-process registry (set REDIS_URL to use Redis)");
            Discovery::local()
        }
    };

    // Three nodes: two serve the Greeter, one calls.
    let math1 = node("math", &discovery, &prefix).await?;
    let math2 = node("math", &discovery, &prefix).await?;
    let web = node("web", &discovery, &prefix).await?;
    let (heard, mut news) = tokio::sync::mpsc::unbounded_channel();
    let _s1 = math1.serve(GreeterServer::new(MyGreeter {
        name: "math-1".into(),
        heard: heard.clone(),
    }))?;
    let _s2 = math2.serve(GreeterServer::new(MyGreeter {
        name: "math-2".into(),
        heard,
    }))?;
    // A sync of each math node publishes its record, which now lists the Greeter; the web
    // node's next sync then sees both (with the in-process registry this is immediate).
    math1.wait_for_latest_view().await?;
    math2.wait_for_latest_view().await?;
    web.wait_for_latest_view().await?;
    println!("web sees {} nodes:", web.nodes().len());
    for n in web.nodes() {
        println!("  {} type={} serves={:?}", n.id, n.node_type, n.services);
    }

    // 1. A plain call to one node.
    let hi = GreeterClient::for_node(math1.id())
        .on(&web)
        .hello("bob".into())
        .await?;
    println!("1. plain call:  {hi}");

    // 2. The service's own error comes back typed.
    match GreeterClient::for_node(math1.addr())
        .on(&web)
        .divide(7, 0)
        .await
    {
        Err(CallError::Remote(e)) => {
            println!("2. remote error: {e:?} (the handler ran: may_have_run)")
        }
        other => return Err(format!("expected a remote error, got {other:?}").into()),
    }
    let q = GreeterClient::for_node(math2.id())
        .on(&web)
        .divide(84, 2)
        .await?;
    println!("   and 84 / 2 = {q}");

    // 3. Balanced: round-robin over the online "math" nodes that serve the method.
    for i in 0..4 {
        let r = GreeterClient::for_type("math")
            .on(&web)
            .hello(format!("call {i}"))
            .await?;
        println!("3. balanced:    {r}");
    }

    // 4. Broadcast: every math node answers.
    let all = GreeterBroadcast::to_type("math")
        .on(&web)
        .with_timeout(Duration::from_secs(1))
        .caller()
        .await?;
    for (target, r) in all {
        println!("4. broadcast:   {target} says the caller is {}", r?);
    }

    // 5. A one-way announcement to every math node: encoded once, sent through a relay tree.
    GreeterBroadcast::to_type("math")
        .on(&web)
        .announce("deploy at noon".into())
        .await?;
    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_secs(2), news.recv()).await {
            Ok(Some(line)) => println!("5. one-way:     {line}"),
            _ => return Err("an announcement did not arrive".into()),
        }
    }

    web.stop().await;
    math2.stop().await;
    math1.stop().await;
    println!("done");
    Ok(())
}
