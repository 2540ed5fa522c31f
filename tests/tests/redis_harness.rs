//! Tests of the Redis harness itself (`mesh_tests::redis`): each spawns real `redis-server`
//! processes on free loopback ports.

use std::collections::BTreeSet;
use std::error::Error;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use mesh_tests::redis::{RedisCluster, RedisServer, SentinelSetup, free_port};
use redis::Commands as _;

type TestResult = Result<(), Box<dyn Error>>;

#[test]
fn free_ports_are_distinct_and_have_a_free_bus_port() -> TestResult {
    let ports: Vec<u16> = (0..20).map(|_| free_port()).collect::<Result<_, _>>()?;
    assert_eq!(ports.iter().collect::<BTreeSet<_>>().len(), ports.len());
    for port in ports {
        TcpListener::bind(("127.0.0.1", port))?;
        TcpListener::bind(("127.0.0.1", port + 10000))?;
    }
    Ok(())
}

#[test]
fn standalone_set_get_then_kill_and_restart_comes_back_empty() -> TestResult {
    let mut server = RedisServer::start()?;
    assert_eq!(
        server.url(),
        format!("redis://127.0.0.1:{}/", server.port())
    );
    assert_eq!(server.addr().port(), server.port());
    assert!(server.dir().is_dir());

    let mut con = redis::Client::open(server.url())?.get_connection()?;
    let () = con.set("greeting", "hello")?;
    let got: String = con.get("greeting")?;
    assert_eq!(got, "hello");
    assert!(server.info("commandstats")?.contains("cmdstat_set:calls=1"));
    // No persistence configured.
    assert!(server.info("persistence")?.contains("aof_enabled:0"));

    let port = server.port();
    server.kill();
    assert!(!server.is_running());
    server.kill(); // idempotent
    assert!(server.connection().is_err());

    server.restart()?;
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    let got: Option<String> = server.connection()?.get("greeting")?;
    assert_eq!(got, None);

    let dir = server.dir().to_owned();
    drop(server);
    assert!(!dir.exists());
    assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
    Ok(())
}

#[test]
#[allow(clippy::panic)]
fn a_panicking_test_leaves_no_server_running() -> TestResult {
    let mut addr = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let Ok(server) = RedisServer::start() else {
            return;
        };
        addr = Some(server.addr());
        panic!("intentional panic while a RedisServer is alive");
    }));
    assert!(result.is_err());
    let addr = addr.ok_or("the server did not start")?;
    assert!(std::net::TcpStream::connect(addr).is_err());
    Ok(())
}

#[test]
fn password_is_required() -> TestResult {
    let server = RedisServer::with_password("s3cret: @/%")?;
    assert_eq!(server.password(), Some("s3cret: @/%"));

    let mut anonymous = redis::Client::open(server.url())?.get_connection()?;
    let denied: redis::RedisResult<String> = redis::cmd("PING").query(&mut anonymous);
    assert!(denied.is_err(), "{denied:?}");

    let mut con = redis::Client::open(server.url_with_password())?.get_connection()?;
    let () = con.set("k", 1)?;
    let got: i64 = con.get("k")?;
    assert_eq!(got, 1);
    assert!(server.info("server")?.contains("redis_version:"));
    Ok(())
}

#[test]
fn replica_follows_its_master() -> TestResult {
    let master = RedisServer::start()?;
    let replica = RedisServer::replica_of(&master)?;
    assert!(replica.info("replication")?.contains("role:slave"));
    let () = master.connection()?.set("k", "v")?;
    let mut con = replica.connection()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got: Option<String> = con.get("k")?;
        if got.as_deref() == Some("v") {
            return Ok(());
        }
        assert!(
            Instant::now() < deadline,
            "the write did not reach the replica"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sentinel_failover_moves_the_master_to_the_replica() -> TestResult {
    let started = Instant::now();
    let mut setup = SentinelSetup::start()?;
    let ready = started.elapsed();
    assert_eq!(setup.master_name(), "mymaster");
    assert_eq!(setup.sentinel_urls().len(), 3);
    let old = setup.master_addr()?;
    assert!(setup.server_mut(old).is_some());

    // A client through the sentinels reaches the master.
    let mut via_sentinel = redis::sentinel::SentinelClient::build(
        setup.sentinel_urls(),
        setup.master_name().to_owned(),
        None,
        redis::sentinel::SentinelServerType::Master,
    )?;
    let () = via_sentinel.get_connection()?.set("before", 1)?;

    let killed = Instant::now();
    assert_eq!(setup.kill_master()?, old);
    let new = setup.wait_failover(old, Duration::from_secs(12))?;
    let failover = killed.elapsed();
    eprintln!("sentinel setup ready in {ready:?}, failover took {failover:?}");
    assert_ne!(new, old);
    assert_eq!(setup.master_addr()?, new);

    let server = setup
        .server_mut(new)
        .ok_or("the new master is not the replica")?;
    let mut con = server.connection()?;
    let () = con.set("after", 2)?;
    let got: i64 = con.get("after")?;
    assert_eq!(got, 2);
    // Through the sentinels as well.
    let got: i64 = via_sentinel.get_connection()?.get("after")?;
    assert_eq!(got, 2);

    // The old master can come back (empty); dropping the setup stops every process.
    setup
        .server_mut(old)
        .ok_or("the old master is gone")?
        .restart()?;
    let sentinels = setup.sentinel_urls();
    drop(setup);
    for url in sentinels
        .iter()
        .map(String::as_str)
        .chain([&*old.to_string(), &*new.to_string()])
    {
        let addr = url.trim_start_matches("redis://").trim_end_matches('/');
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "{addr} still answers"
        );
    }
    Ok(())
}

#[test]
fn cluster_client_writes_and_reads_keys_over_all_nodes() -> TestResult {
    let cluster = RedisCluster::start(3)?;
    assert_eq!(cluster.urls().len(), 3);
    let client = redis::cluster::ClusterClient::new(cluster.urls())?;
    let mut con = client.get_connection()?;
    for i in 0..100 {
        let () = con.set(format!("key:{i}"), i)?;
    }
    for i in 0..100 {
        let got: i64 = con.get(format!("key:{i}"))?;
        assert_eq!(got, i);
    }
    // The keys landed on every node.
    for node in cluster.nodes() {
        let keys: i64 = redis::cmd("DBSIZE").query(&mut node.connection()?)?;
        assert!(keys > 0, "node {} holds no key", node.addr());
    }
    Ok(())
}
