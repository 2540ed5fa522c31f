//! A Redis Cluster of masters.

use super::*;

/// A Redis Cluster of N masters (no replicas), each a [`RedisServer`] with
/// `cluster-enabled yes` and `cluster-node-timeout 1000`, announcing `127.0.0.1`.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` (at least 1) nodes, gives each an equal range of the 16384 slots,
    /// joins them with `CLUSTER MEET`, and waits until every node knows every node and reports
    /// `cluster_state:ok` (a node holds that back for 2 s after its start).
    pub fn start(masters: usize) -> io::Result<RedisCluster> {
        if masters == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a cluster needs at least one master",
            ));
        }
        let nodes = (0..masters)
            .map(|_| RedisServer::cluster_node())
            .collect::<io::Result<Vec<_>>>()?;
        for (i, node) in nodes.iter().enumerate() {
            let first = i * CLUSTER_SLOTS / masters;
            let last = (i + 1) * CLUSTER_SLOTS / masters - 1;
            node.query::<()>(
                redis::cmd("CLUSTER")
                    .arg("ADDSLOTSRANGE")
                    .arg(first)
                    .arg(last),
            )?;
        }
        for node in &nodes[1..] {
            nodes[0].query::<()>(
                redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg(LOCALHOST.to_string())
                    .arg(node.port),
            )?;
        }
        for node in &nodes {
            wait_until(
                &format!("cluster node on port {} to be ok", node.port),
                || {
                    let info: String = node.query(redis::cmd("CLUSTER").arg("INFO"))?;
                    let ok = info_field(&info, "cluster_state") == Some("ok")
                        && info_field(&info, "cluster_known_nodes") == Some(&masters.to_string())
                        && info_field(&info, "cluster_slots_ok")
                            == Some(&CLUSTER_SLOTS.to_string());
                    Ok(ok.then_some(()).ok_or(info))
                },
            )
            .map_err(|e| node.error(&e.to_string()))?;
        }
        Ok(RedisCluster { nodes })
    }

    /// `redis://127.0.0.1:PORT/` of each node, e.g. for `redis::cluster::ClusterClient::new`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes, in the order of [`RedisCluster::urls`] (node `i` holds the `i`-th slot range).
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// The nodes, in the order of [`RedisCluster::urls`].
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }
}
