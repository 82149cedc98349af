//! Many nodes: where each room lives, and the seam between one node and a fleet.
//!
//! [`Cluster`] has two implementations. [`LocalCluster`] is one self-contained node (no
//! Redis; every room is here: exactly the single-node behaviour, the default and the demo).
//! [`RedisCluster`] (`--redis-url`) keeps the fleet in Redis: every node registers itself
//! with a TTL, a room is claimed atomically with an increasing epoch (a fencing token) for
//! the node with the most free capacity, the owner renews its lease and stops a room whose
//! lease it lost. [`forward`] is the HTTP side: any node answers every route, forwarding a
//! request for a room owned elsewhere (HTTP proxied, WebSocket relayed), signed with the
//! cluster secret and never forwarded twice.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod forward;
pub mod lease;
mod seal;
mod store;

pub use store::RedisCluster;

/// Why the cluster could not answer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterError {
    /// Redis is unreachable or answered an error.
    #[error("the cluster store (Redis) is unavailable: {0}")]
    Store(String),
    /// No live node can take a new room.
    #[error("no live node can take room `{0}`")]
    NoNode(String),
    /// The room's node stopped answering; the room is placed again when its lease ends.
    #[error("room `{room}`'s node `{node}` is gone; the room is placed again within {within_s} s")]
    OwnerGone {
        /// Room.
        room: String,
        /// Its last owner.
        node: String,
        /// Longest wait before a new placement.
        within_s: u64,
    },
}

/// Whether a node takes new rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Takes new rooms.
    Serving,
    /// Takes no new rooms; its rooms go on until they end (SIGTERM).
    Draining,
}

/// One node as the fleet sees it (`GET /api/nodes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node id (`--node-id`).
    pub id: String,
    /// Base URL other nodes reach it on (`--advertise-url`).
    pub url: String,
    /// Serving or draining.
    pub state: NodeState,
    /// Rooms it holds.
    pub rooms: usize,
    /// Programs it runs.
    pub programs: usize,
    /// Program slots free (`--max-programs` less the rooms and programs it holds; a large
    /// number without a limit).
    pub free_slots: i64,
    /// Share of its mixer workers' time spent mixing, 0..1 (over the last heartbeat).
    pub load: f64,
    /// Unix time (ms) of its last heartbeat.
    pub updated_ms: u64,
}

/// Where a room lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// On this node, under lease `epoch` (0 for a local node).
    Here {
        /// The fencing token of this node's claim.
        epoch: u64,
    },
    /// On another node.
    There {
        /// Its id.
        node: String,
        /// Its base URL.
        url: String,
    },
}

/// What a node reports about itself at each heartbeat, and how the cluster reaches the
/// rest of the server.
pub struct NodeHooks {
    /// (rooms, programs running, mixer load 0..1).
    pub load: Box<dyn Fn() -> (usize, usize, f64) + Send + Sync>,
    /// Whether a room is present on this node (joined, or created through the API).
    pub has_room: Box<dyn Fn(&str) -> bool + Send + Sync>,
    /// This node lost `room`'s lease: stop the room's program and outputs at once, tell its
    /// clients (`room_moved`).
    pub lost: Box<dyn Fn(String) + Send + Sync>,
    /// The state of a room created through the API that must survive this node (mix, layout,
    /// outputs with their URLs), as JSON; `None` for other rooms.
    pub snapshot: SnapshotFn,
    /// Recreates a room here from a snapshot saved by its previous node.
    pub restore: RestoreFn,
    /// An image of the fleet's library was stored (`Some`: the file's bytes) or removed
    /// through another node: apply it to this node's library.
    pub image: Box<dyn Fn(String, Option<Vec<u8>>) + Send + Sync>,
}

/// See [`NodeHooks::snapshot`].
pub type SnapshotFn = Box<dyn Fn(&str) -> Option<serde_json::Value> + Send + Sync>;
/// See [`NodeHooks::restore`].
pub type RestoreFn = Box<
    dyn Fn(String, serde_json::Value) -> futures_util::future::BoxFuture<'static, ()> + Send + Sync,
>;

/// Settings of cluster mode.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://host:port/db`.
    pub redis_url: String,
    /// This node's id.
    pub node_id: String,
    /// Base URL other nodes reach this one on (`http://10.0.0.5:8080`).
    pub advertise_url: String,
    /// The secret forwarded requests are signed with (the API secret, shared by the fleet).
    pub secret: String,
    /// `--max-programs` (0: no limit).
    pub max_programs: usize,
    /// Heartbeat and lease renewal interval.
    pub heartbeat: Duration,
    /// A node record (and so a node) expires this long after its last heartbeat.
    pub node_ttl: Duration,
    /// A room lease expires this long after its last renewal.
    pub lease: Duration,
    /// On SIGTERM, how long the node's rooms may go on before what is left is moved.
    pub drain_timeout: Duration,
}

impl ClusterConfig {
    /// Settings with the default timings (heartbeat 2 s, node and lease TTL 6 s: a dead
    /// node is out, and its rooms free, within 6–8 s).
    pub fn new(redis_url: &str, node_id: &str, advertise_url: &str, secret: &str) -> Self {
        ClusterConfig {
            redis_url: redis_url.to_owned(),
            node_id: node_id.to_owned(),
            advertise_url: advertise_url.trim_end_matches('/').to_owned(),
            secret: secret.to_owned(),
            max_programs: 0,
            heartbeat: Duration::from_secs(2),
            node_ttl: Duration::from_secs(6),
            lease: Duration::from_secs(6),
            drain_timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// The seam between one node and a fleet.
#[async_trait::async_trait]
pub trait Cluster: Send + Sync + 'static {
    /// This node's id.
    fn node_id(&self) -> &str;
    /// `true` for a single node: nothing is ever forwarded.
    fn is_local(&self) -> bool;
    /// Where `room` lives, placing it (on the node with the most free capacity) if no live
    /// node holds it.
    async fn locate(&self, room: &str) -> Result<Placement, ClusterError>;
    /// Where `room` lives if somewhere; never places it.
    async fn owner(&self, room: &str) -> Result<Option<Placement>, ClusterError>;
    /// The live nodes.
    async fn nodes(&self) -> Result<Vec<NodeInfo>, ClusterError>;
    /// The secret forwarded requests are signed with.
    fn secret(&self) -> &str;
    /// `room` is served here but not present yet: recreate it from the state its previous
    /// node saved, if any. `true` if it was restored.
    async fn restore(&self, _room: &str) -> bool {
        false
    }
    /// `room`'s state changed here (through the API): save it now.
    async fn changed(&self, _room: &str) {}
    /// Whether `room` has state saved by a node it lived on (a read then places it again).
    async fn has_saved_state(&self, _room: &str) -> bool {
        false
    }
    /// An image was stored here (`Some`: the uploaded file) or removed: every other node's
    /// library gets the change (at its next heartbeat). A single node has nothing to do.
    async fn share_image(&self, _name: &str, _file: Option<&[u8]>) -> Result<(), ClusterError> {
        Ok(())
    }
}

/// One self-contained node: every room is here.
pub struct LocalCluster {
    id: String,
    hooks: NodeHooks,
    max_programs: usize,
}

impl LocalCluster {
    /// The single node `id`, reporting its load through `hooks`.
    pub fn new(id: &str, max_programs: usize, hooks: NodeHooks) -> Self {
        LocalCluster {
            id: id.to_owned(),
            hooks,
            max_programs,
        }
    }
}

#[async_trait::async_trait]
impl Cluster for LocalCluster {
    fn node_id(&self) -> &str {
        &self.id
    }
    fn is_local(&self) -> bool {
        true
    }
    async fn locate(&self, _room: &str) -> Result<Placement, ClusterError> {
        Ok(Placement::Here { epoch: 0 })
    }
    async fn owner(&self, room: &str) -> Result<Option<Placement>, ClusterError> {
        Ok((self.hooks.has_room)(room).then_some(Placement::Here { epoch: 0 }))
    }
    async fn nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        let (rooms, programs, load) = (self.hooks.load)();
        Ok(vec![NodeInfo {
            id: self.id.clone(),
            url: String::new(),
            state: NodeState::Serving,
            rooms,
            programs,
            free_slots: free_slots(self.max_programs, rooms, programs),
            load,
            updated_ms: unix_ms(),
        }])
    }
    fn secret(&self) -> &str {
        ""
    }
}

/// Free program slots of a node holding `rooms` rooms and running `programs` programs: a
/// room held will want a program when someone publishes, so it counts as taken.
pub fn free_slots(max_programs: usize, rooms: usize, programs: usize) -> i64 {
    let used = rooms.max(programs) as i64;
    match max_programs {
        0 => 1_000_000 - used,
        n => n as i64 - used,
    }
}

/// Now, in Unix milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A default node id: the host name and a random suffix.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "cohost".into());
    format!("{host}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_rooms_take_slots() {
        assert_eq!(free_slots(1, 0, 0), 1);
        assert_eq!(free_slots(1, 1, 0), 0, "a room held waits for its program");
        assert_eq!(free_slots(2, 1, 2), 0);
        assert_eq!(free_slots(1, 3, 1), -2);
        assert!(free_slots(0, 5, 5) > 1000);
    }
}
