//! The live cluster page in a real browser: headless Chromium driven over WebDriver
//! (chromedriver, through fantoccini). A node joins and appears, a click shows its details,
//! a `kill -9` makes it disappear; a screenshot is saved and its path printed. And 200
//! nodes are all listed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use mesh_core::dashboard::Dashboard;
use mesh_core::{Discovery, LocalRegistry, Mesh};
use mesh_tests::node::NodeProcess;
use mesh_tests::redis::RedisServer;

const WAIT: Duration = Duration::from_secs(20);

/// chromedriver on a free loopback port; killed when dropped (a failed test too).
struct Driver {
    child: Child,
    port: u16,
    profile: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn browser() -> (Driver, Client) {
    let port = free_port();
    let child = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (apt-get install chromium chromium-driver)");
    let profile =
        std::env::temp_dir().join(format!("mesh-dash-chromium-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&profile).unwrap();
    let driver = Driver {
        child,
        port,
        profile,
    };
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-quic", "--window-size=1400,900",
                format!("--user-data-dir={}", driver.profile.display()),
            ],
        }),
    );
    let url = format!("http://127.0.0.1:{}", driver.port);
    let deadline = tokio::time::Instant::now() + WAIT;
    let client = loop {
        // chromedriver takes a moment to listen.
        let b = ClientBuilder::rustls()
            .expect("tls roots")
            .capabilities(caps.clone())
            .connect(&url)
            .await;
        match b {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no WebDriver session: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    (driver, client)
}

/// Polls the page until `f` holds (bounded).
async fn until(c: &Client, what: &str, script: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = c.execute(script, vec![]).await.unwrap();
        if v.as_bool() == Some(true) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page never showed {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn row_present(id: &str) -> String {
    format!("return document.querySelector('tr.node[data-id=\"{id}\"]') !== null;")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_appears_shows_its_details_and_disappears_when_killed() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let mesh = Mesh::builder()
        .node_type("ops")
        .discovery(Discovery::redis(url.as_str()))
        .prefix("dash")
        .update_interval(Duration::from_millis(100))
        .expiry(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    let page = Dashboard::serve(mesh.clone(), "127.0.0.1:0".parse::<SocketAddr>().unwrap())
        .await
        .unwrap();
    let (_driver, c) = browser().await;
    c.goto(&page.url()).await.unwrap();
    until(&c, "this node", &row_present(&mesh.id().to_string())).await;

    let mut p = NodeProcess::spawn(&[
        ("MESH_REDIS_URL", url.as_str()),
        ("MESH_PREFIX", "dash"),
        ("MESH_UPDATE_INTERVAL", "100ms"),
        ("MESH_EXPIRY", "300ms"),
    ])
    .unwrap();
    let id = p.id.to_string();
    until(&c, "the spawned node", &row_present(&id)).await;
    c.find(Locator::Css(&format!("tr.node[data-id=\"{id}\"]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "the details of the node",
        &format!(
            "const d = document.querySelector('#detail-body .detail-id'); return d !== null && d.textContent === '{id}';"
        ),
    )
    .await;
    // Its stats arrive in the snapshot within a second or two.
    until(
        &c,
        "the node's stats in its details",
        "return document.querySelector('#detail-body pre').textContent.includes('messages_received');",
    )
    .await;
    let shot_before = c.screenshot().await.unwrap();
    p.kill();
    until(
        &c,
        "the killed node gone",
        &format!(
            "return !({})",
            row_present(&id)
                .trim_start_matches("return ")
                .trim_end_matches(';')
        ),
    )
    .await;
    until(
        &c,
        "its leave in the event log",
        &format!("return document.getElementById('log').textContent.includes('left') && document.getElementById('log').textContent.includes('{id}');"),
    )
    .await;
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dashboard.png");
    std::fs::write(&path, &shot_before).unwrap();
    println!("screenshot: {}", path.display());
    let after = dir.join("dashboard-after-kill.png");
    std::fs::write(&after, c.screenshot().await.unwrap()).unwrap();
    println!("screenshot: {}", after.display());
    c.close().await.unwrap();
    page.stop();
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_nodes_are_all_listed() {
    let registry = LocalRegistry::new();
    let mut nodes = Vec::new();
    for i in 0..200 {
        let m = Mesh::builder()
            .node_type(if i % 2 == 0 { "game" } else { "lobby" })
            .discovery(Discovery::local_registry(&registry))
            .start()
            .await
            .unwrap();
        nodes.push(m);
    }
    let page = Dashboard::serve(nodes[0].clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (_driver, c) = browser().await;
    c.goto(&page.url()).await.unwrap();
    until(
        &c,
        "200 rows",
        "return document.querySelectorAll('tr.node').length === 200;",
    )
    .await;
    // Every id is there, in its type's group.
    let ids: Vec<String> = nodes.iter().map(|m| m.id().to_string()).collect();
    let script = format!(
        "const want = {}; return want.every(id => document.querySelector('tr.node[data-id=\"' + id + '\"]') !== null);",
        serde_json::to_string(&ids).unwrap()
    );
    until(&c, "every node id", &script).await;
    until(
        &c,
        "two type groups",
        "return document.querySelectorAll('#groups .group').length === 2;",
    )
    .await;
    c.close().await.unwrap();
    page.stop();
    for m in nodes {
        m.stop().await;
    }
}
