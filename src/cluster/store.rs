//! The fleet in Redis: node records with a TTL and an index by free capacity, room leases
//! claimed atomically under an increasing epoch, renewed by their owner.
//!
//! Keys (prefix `cohost:`):
//! - `node:{id}` — the node's [`NodeInfo`] as JSON, `PX` node TTL, rewritten every heartbeat;
//! - `nodes` — sorted set, member = node id, score = free program slots (a claim takes one
//!   at once, the next heartbeat sets the true figure); members whose record expired are
//!   dropped when seen;
//! - `room:{room}` — `"{node}|{epoch}"`, `PX` lease, renewed by the owner only while the value
//!   is still its own (compare-and-expire in Lua);
//! - `epoch:{room}` — the room's last epoch (`INCR`), so every claim gets a larger one;
//! - `state:{room}` — a room created through the API: its mix, layout and outputs (stream
//!   keys sealed, see `seal.rs`), written by the owner only while the lease is its own
//!   (compare-and-set in Lua), read by the next owner when the room comes back; deleted when
//!   the room ends here (deleted through the API).
//! - `images` — hash, image name → SHA-256 of its file; `image:{name}` — the file (PNG or
//!   JPEG, at most 4 MiB); `images:version` — `INCR`ed at every change, so a node's heartbeat
//!   reads the index only when something changed and fetches only the files it lacks.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tracing::{info, warn};

use super::lease::Leases;
use super::{
    free_slots, unix_ms, Cluster, ClusterConfig, ClusterError, NodeHooks, NodeInfo, NodeState,
    Placement,
};

const NODES: &str = "cohost:nodes";
const IMAGES: &str = "cohost:images";
const IMAGES_VERSION: &str = "cohost:images:version";

fn image_key(name: &str) -> String {
    format!("cohost:image:{name}")
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
/// Nodes considered for a new room: the best few by free slots, two of them at random.
const CANDIDATES: isize = 4;
/// How long another node's record read from Redis is used again.
const RECORD_CACHE: Duration = Duration::from_secs(1);
/// Longest a Redis call may take before the request gets a `503`.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Takes the room for `ARGV[1]` unless someone holds it; the holder's value either way.
const CLAIM: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then return cur end
local e = redis.call('INCR', KEYS[2])
local v = ARGV[1] .. '|' .. e
redis.call('SET', KEYS[1], v, 'PX', ARGV[2])
redis.call('ZINCRBY', KEYS[3], -1, ARGV[1])
return v
";

/// For each room `i` (`KEYS[2i-1]` its lease, `KEYS[2i]` its epoch counter, `ARGV[2i]` this
/// node's value `node|epoch`, `ARGV[2i+1]` the epoch; `ARGV[1]` the lease in ms): extends
/// the lease while it is still this node's; takes back a lease nobody holds (Redis restarted
/// empty, or this node was paused past it and no one took the room), keeping the epoch
/// counter at least at ours; reports a lease someone else holds as lost (0).
const RENEW: &str = r"
local out = {}
for i = 1, #KEYS / 2 do
  local lease, counter = KEYS[2 * i - 1], KEYS[2 * i]
  local mine, epoch = ARGV[2 * i], ARGV[2 * i + 1]
  local cur = redis.call('GET', lease)
  if cur == mine then
    redis.call('PEXPIRE', lease, ARGV[1])
    out[i] = 1
  elseif cur then
    out[i] = 0
  else
    redis.call('SET', lease, mine, 'PX', ARGV[1])
    local e = tonumber(redis.call('GET', counter) or '0')
    if e < tonumber(epoch) then redis.call('SET', counter, epoch) end
    out[i] = 1
  end
end
return out
";

/// Writes the room's state only while the lease is still `ARGV[1]` (the epoch fences it).
const SAVE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[2], ARGV[2]) return 1 end
return 0
";

/// Gives the lease back only while it is still `ARGV[1]`.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

fn node_key(id: &str) -> String {
    format!("cohost:node:{id}")
}
fn room_key(room: &str) -> String {
    format!("cohost:room:{room}")
}
fn epoch_key(room: &str) -> String {
    format!("cohost:epoch:{room}")
}
fn state_key(room: &str) -> String {
    format!("cohost:state:{room}")
}

/// A lease value `node|epoch`.
fn parse_lease(v: &str) -> Option<(&str, u64)> {
    let (node, epoch) = v.rsplit_once('|')?;
    Some((node, epoch.parse().ok()?))
}

fn store_err(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Store(e.to_string())
}

/// A node of a fleet kept in Redis.
pub struct RedisCluster {
    cfg: ClusterConfig,
    conn: ConnectionManager,
    leases: Mutex<Leases>,
    state: Mutex<NodeState>,
    claim: redis::Script,
    renew: redis::Script,
    release: redis::Script,
    save: redis::Script,
    /// Given by [`RedisCluster::start`].
    hooks: std::sync::OnceLock<Arc<NodeHooks>>,
    /// Other nodes' records as last read, and when ([`RedisCluster::node_record`]).
    records_seen: Mutex<std::collections::HashMap<String, (NodeInfo, Instant)>>,
    /// The state last saved per room (saved again only when it changes).
    saved: Mutex<std::collections::HashMap<String, serde_json::Value>>,
    /// The fleet's image library as this node has it: the version read last, and each
    /// image's hash.
    images_seen: Mutex<(i64, std::collections::HashMap<String, String>)>,
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("node", &self.cfg.node_id)
            .finish()
    }
}

impl RedisCluster {
    /// Connects to Redis (`cfg.redis_url`); the connection reconnects by itself later.
    pub async fn connect(cfg: ClusterConfig) -> Result<Arc<Self>, ClusterError> {
        let client = redis::Client::open(cfg.redis_url.as_str()).map_err(store_err)?;
        // Short connect/response timeouts and a bounded backoff (at most 1 s between
        // attempts): a Redis back from an outage is used again within a second or two.
        let mc = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(1))
            .set_response_timeout(CALL_TIMEOUT)
            .set_number_of_retries(3)
            .set_max_delay(1000);
        let conn = tokio::time::timeout(
            CALL_TIMEOUT * 3,
            ConnectionManager::new_with_config(client, mc),
        )
        .await
        .map_err(|_| ClusterError::Store(format!("no answer from {}", cfg.redis_url)))?
        .map_err(store_err)?;
        let grace = cfg.lease * 2;
        Ok(Arc::new(RedisCluster {
            cfg,
            conn,
            leases: Mutex::new(Leases::new(grace)),
            state: Mutex::new(NodeState::Serving),
            claim: redis::Script::new(CLAIM),
            renew: redis::Script::new(RENEW),
            release: redis::Script::new(RELEASE),
            save: redis::Script::new(SAVE),
            hooks: std::sync::OnceLock::new(),
            saved: Mutex::new(std::collections::HashMap::new()),
            records_seen: Mutex::new(std::collections::HashMap::new()),
            images_seen: Mutex::new((0, std::collections::HashMap::new())),
        }))
    }

    /// Registers this node and keeps it registered, renewing its leases, every heartbeat;
    /// a lease the store no longer gives this node is reported to `hooks.lost`.
    pub async fn start(self: &Arc<Self>, hooks: NodeHooks) -> tokio::task::JoinHandle<()> {
        let hooks = Arc::new(hooks);
        let _ = self.hooks.set(hooks.clone());
        if let Err(e) = self.heartbeat(&hooks).await {
            warn!(error = %e, "cluster: first heartbeat failed");
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(me.cfg.heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = me.heartbeat(&hooks).await {
                    warn!(error = %e, "cluster heartbeat failed; rooms here go on");
                }
            }
        })
    }

    /// This node's id.
    pub fn node_id_str(&self) -> &str {
        &self.cfg.node_id
    }

    /// Whether this node holds `room`'s lease (as far as it knows).
    pub fn holds(&self, room: &str) -> bool {
        crate::sync::lock(&self.leases).epoch(room).is_some()
    }

    /// This node takes no new rooms from now on: it leaves the index at once (its record
    /// stays, `draining`, while it runs).
    pub async fn set_draining(&self) {
        *crate::sync::lock(&self.state) = NodeState::Draining;
        // The record says so at once (the heartbeat keeps it so).
        let key = node_key(&self.cfg.node_id);
        if let Ok(Some(rec)) = self
            .call::<Option<String>>(redis::cmd("GET").arg(&key))
            .await
        {
            if let Ok(mut n) = serde_json::from_str::<NodeInfo>(&rec) {
                n.state = NodeState::Draining;
                if let Ok(json) = serde_json::to_string(&n) {
                    let ttl = self.cfg.node_ttl.as_millis() as u64;
                    let _: Result<(), _> = self
                        .call(redis::cmd("SET").arg(&key).arg(json).arg("PX").arg(ttl))
                        .await;
                }
            }
        }
        if let Err(e) = self
            .call::<()>(redis::cmd("ZREM").arg(NODES).arg(&self.cfg.node_id))
            .await
        {
            warn!(error = %e, "cluster: could not leave the index");
        }
    }

    /// Gives back every lease and leaves the fleet (the end of a drain).
    pub async fn leave(&self) {
        let held = std::mem::replace(
            &mut *crate::sync::lock(&self.leases),
            Leases::new(self.cfg.lease * 2),
        )
        .held();
        for (room, epoch) in held {
            let mine = format!("{}|{epoch}", self.cfg.node_id);
            let mut inv = self.release.key(room_key(&room));
            inv.arg(&mine);
            let _: Result<i64, _> = self.script(inv).await;
        }
        let _: Result<(), _> = self
            .call(redis::cmd("DEL").arg(node_key(&self.cfg.node_id)))
            .await;
        let _: Result<(), _> = self
            .call(redis::cmd("ZREM").arg(NODES).arg(&self.cfg.node_id))
            .await;
    }

    async fn call<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, ClusterError> {
        let mut c = self.conn.clone();
        tokio::time::timeout(CALL_TIMEOUT, cmd.query_async(&mut c))
            .await
            .map_err(|_| ClusterError::Store("Redis did not answer in time".into()))?
            .map_err(store_err)
    }

    async fn script<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, ClusterError> {
        let mut c = self.conn.clone();
        tokio::time::timeout(CALL_TIMEOUT, inv.invoke_async(&mut c))
            .await
            .map_err(|_| ClusterError::Store("Redis did not answer in time".into()))?
            .map_err(store_err)
    }

    fn record(&self, hooks: &NodeHooks) -> NodeInfo {
        let (rooms, programs, load) = (hooks.load)();
        let held = crate::sync::lock(&self.leases).len();
        NodeInfo {
            id: self.cfg.node_id.clone(),
            url: self.cfg.advertise_url.clone(),
            state: *crate::sync::lock(&self.state),
            rooms: rooms.max(held),
            programs,
            free_slots: free_slots(self.cfg.max_programs, rooms.max(held), programs),
            load,
            updated_ms: unix_ms(),
        }
    }

    async fn heartbeat(&self, hooks: &NodeHooks) -> Result<(), ClusterError> {
        let rec = self.record(hooks);
        let json = serde_json::to_string(&rec).map_err(store_err)?;
        let ttl = self.cfg.node_ttl.as_millis() as u64;
        self.call::<()>(
            redis::cmd("SET")
                .arg(node_key(&rec.id))
                .arg(json)
                .arg("PX")
                .arg(ttl),
        )
        .await?;
        // A draining node leaves the index: it is never chosen for a new room.
        if rec.state == NodeState::Serving {
            self.call::<()>(
                redis::cmd("ZADD")
                    .arg(NODES)
                    .arg(rec.free_slots)
                    .arg(&rec.id),
            )
            .await?;
        } else {
            self.call::<()>(redis::cmd("ZREM").arg(NODES).arg(&rec.id))
                .await?;
        }
        let lease_ms = self.cfg.lease.as_millis() as u64;
        // Every lease in one script call (one round trip, two commands a room).
        let held = crate::sync::lock(&self.leases).held();
        for chunk in held.chunks(256) {
            let mut inv = self.renew.prepare_invoke();
            inv.arg(lease_ms);
            for (room, epoch) in chunk {
                inv.key(room_key(room))
                    .key(epoch_key(room))
                    .arg(format!("{}|{epoch}", self.cfg.node_id))
                    .arg(*epoch);
            }
            let oks: Vec<i64> = self.script(inv).await?;
            for ((room, epoch), ok) in chunk.iter().zip(oks) {
                if ok == 0 && crate::sync::lock(&self.leases).lost(room, *epoch) {
                    warn!(room, epoch, "cluster: lease lost; the room stops here");
                    (hooks.lost)(room.clone());
                }
            }
        }
        let held = crate::sync::lock(&self.leases).held();
        for (room, epoch) in held {
            self.save_state(hooks, &room, epoch).await?;
        }
        let gone =
            crate::sync::lock(&self.leases).to_release(Instant::now(), |r| (hooks.has_room)(r));
        for g in gone {
            let mine = format!("{}|{}", self.cfg.node_id, g.epoch);
            if g.ended {
                // Ended here (deleted, or emptied): nothing to restore elsewhere. Only while
                // the lease is still this node's.
                let lease: Option<String> =
                    self.call(redis::cmd("GET").arg(room_key(&g.room))).await?;
                if lease.as_deref() == Some(mine.as_str()) {
                    let _: () = self.call(redis::cmd("DEL").arg(state_key(&g.room))).await?;
                }
                crate::sync::lock(&self.saved).remove(&g.room);
            }
            let mut inv = self.release.key(room_key(&g.room));
            inv.arg(&mine);
            let _: i64 = self.script(inv).await?;
            info!(room = g.room, epoch = g.epoch, "cluster: room released");
        }
        self.sync_images(hooks).await
    }

    /// Brings this node's image library to the fleet's: reads the index when its version
    /// moved, fetches the files whose hash this node has not seen, removes what is gone.
    async fn sync_images(&self, hooks: &NodeHooks) -> Result<(), ClusterError> {
        let version: Option<i64> = self.call(redis::cmd("GET").arg(IMAGES_VERSION)).await?;
        let version = version.unwrap_or(0);
        if crate::sync::lock(&self.images_seen).0 == version {
            return Ok(());
        }
        let index: std::collections::HashMap<String, String> =
            self.call(redis::cmd("HGETALL").arg(IMAGES)).await?;
        let seen = crate::sync::lock(&self.images_seen).1.clone();
        for (name, hash) in &index {
            if seen.get(name) == Some(hash) {
                continue;
            }
            let file: Option<Vec<u8>> = self.call(redis::cmd("GET").arg(image_key(name))).await?;
            if let Some(file) = file {
                info!(image = %name, bytes = file.len(), "cluster: image from the fleet");
                (hooks.image)(name.clone(), Some(file));
            }
        }
        for name in seen.keys().filter(|n| !index.contains_key(*n)) {
            info!(image = %name, "cluster: image removed by the fleet");
            (hooks.image)(name.clone(), None);
        }
        *crate::sync::lock(&self.images_seen) = (version, index);
        Ok(())
    }

    /// Saves `room`'s state if it has any and it changed since the last save; only while
    /// this node's lease `epoch` holds.
    async fn save_state(
        &self,
        hooks: &NodeHooks,
        room: &str,
        epoch: u64,
    ) -> Result<(), ClusterError> {
        let Some(mut snap) = (hooks.snapshot)(room) else {
            return Ok(());
        };
        // The HLS position moves with every segment: it alone does not make a save (the next
        // owner numbers past it by the clock, see `Programs::restore`).
        let without_hls = |v: &serde_json::Value| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("hls");
            }
            v
        };
        if crate::sync::lock(&self.saved)
            .get(room)
            .is_some_and(|old| without_hls(old) == without_hls(&snap))
        {
            return Ok(());
        }
        let plain = snap.clone();
        if let Some(outs) = snap.get_mut("outputs").and_then(|o| o.as_array_mut()) {
            for o in outs.iter_mut() {
                if let Some(url) = o.get(1).and_then(|u| u.as_str()).map(str::to_owned) {
                    o[1] = serde_json::Value::String(super::seal::seal(&self.cfg.secret, &url));
                }
            }
        }
        let mine = format!("{}|{epoch}", self.cfg.node_id);
        let mut inv = self.save.key(room_key(room));
        inv.key(state_key(room)).arg(&mine).arg(snap.to_string());
        let ok: i64 = self.script(inv).await?;
        if ok == 1 {
            crate::sync::lock(&self.saved).insert(room.to_owned(), plain);
        }
        Ok(())
    }

    /// The state `room`'s previous node saved, stream keys opened.
    async fn load_state(&self, room: &str) -> Result<Option<serde_json::Value>, ClusterError> {
        let v: Option<String> = self.call(redis::cmd("GET").arg(state_key(room))).await?;
        let Some(mut v) = v.and_then(|v| serde_json::from_str::<serde_json::Value>(&v).ok()) else {
            return Ok(None);
        };
        if let Some(outs) = v.get_mut("outputs").and_then(|o| o.as_array_mut()) {
            outs.retain_mut(|o| {
                let url = o
                    .get(1)
                    .and_then(|u| u.as_str())
                    .and_then(|s| super::seal::open(&self.cfg.secret, s));
                match url {
                    Some(u) => {
                        o[1] = serde_json::Value::String(u);
                        true
                    }
                    None => false,
                }
            });
        }
        Ok(Some(v))
    }

    /// Parses node records, dropping (and unindexing) the expired ones.
    async fn records(&self, ids: Vec<String>) -> Result<Vec<NodeInfo>, ClusterError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|i| node_key(i)).collect();
        let vals: Vec<Option<String>> = self.call(redis::cmd("MGET").arg(&keys)).await?;
        let mut out = Vec::new();
        for (id, v) in ids.iter().zip(vals) {
            match v.and_then(|v| serde_json::from_str::<NodeInfo>(&v).ok()) {
                Some(n) => out.push(n),
                None => {
                    let _: Result<(), _> = self.call(redis::cmd("ZREM").arg(NODES).arg(id)).await;
                }
            }
        }
        Ok(out)
    }

    /// The node for a new room: two random choices among the few with the most free slots.
    async fn choose(&self, room: &str) -> Result<String, ClusterError> {
        let top: Vec<(String, f64)> = self
            .call(
                redis::cmd("ZREVRANGE")
                    .arg(NODES)
                    .arg(0)
                    .arg(CANDIDATES - 1)
                    .arg("WITHSCORES"),
            )
            .await?;
        let scores: std::collections::HashMap<String, f64> = top.iter().cloned().collect();
        let live: Vec<NodeInfo> = self
            .records(top.into_iter().map(|(id, _)| id).collect())
            .await?
            .into_iter()
            // Serving, and heard from within one and a half heartbeats: a node that just
            // died is never chosen while its record lives on.
            .filter(|n| {
                n.state == NodeState::Serving
                    && unix_ms().saturating_sub(n.updated_ms)
                        <= self.cfg.heartbeat.as_millis() as u64 * 3 / 2
            })
            .collect();
        let score = |n: &NodeInfo| scores.get(&n.id).copied().unwrap_or(f64::MIN);
        let best = live.iter().map(score).fold(f64::MIN, f64::max);
        // The nodes close to the best: equal when slots are few (one free slot beats none),
        // within a tenth when they are many (no herd on one node between heartbeats).
        let near: Vec<&NodeInfo> = live
            .iter()
            .filter(|n| score(n) >= best - (best.abs() / 10.0).floor().max(0.0))
            .collect();
        let pick = match near.len() {
            0 => return Err(ClusterError::NoNode(room.to_owned())),
            1 => near[0],
            n => {
                // Two random choices, the freer wins.
                let a = near[rand::random::<usize>() % n];
                let b = near[rand::random::<usize>() % n];
                if score(b) > score(a) {
                    b
                } else {
                    a
                }
            }
        };
        Ok(pick.id.clone())
    }

    /// Another node's record, read at most once a second per node (every request for one of
    /// its rooms needs it: audiences' HLS requests among them).
    async fn node_record(&self, node: &str) -> Result<Option<NodeInfo>, ClusterError> {
        if let Some((n, at)) = crate::sync::lock(&self.records_seen).get(node) {
            if at.elapsed() < RECORD_CACHE {
                return Ok(Some(n.clone()));
            }
        }
        let rec: Option<String> = self.call(redis::cmd("GET").arg(node_key(node))).await?;
        let rec = rec.and_then(|r| serde_json::from_str::<NodeInfo>(&r).ok());
        let mut seen = crate::sync::lock(&self.records_seen);
        match &rec {
            Some(n) => {
                seen.insert(node.to_owned(), (n.clone(), Instant::now()));
            }
            None => {
                seen.remove(node);
            }
        }
        Ok(rec)
    }

    /// What a lease value means here.
    async fn resolve(&self, room: &str, lease: &str) -> Result<Placement, ClusterError> {
        let (node, epoch) = parse_lease(lease)
            .ok_or_else(|| ClusterError::Store(format!("bad lease `{lease}` for `{room}`")))?;
        if node == self.cfg.node_id {
            crate::sync::lock(&self.leases).hold(room, epoch, Instant::now());
            return Ok(Placement::Here { epoch });
        }
        // A node two heartbeats late is paused or cut off: do not wait on it.
        let late = |n: &NodeInfo| {
            unix_ms().saturating_sub(n.updated_ms) > self.cfg.heartbeat.as_millis() as u64 * 9 / 4
        };
        match self.node_record(node).await? {
            Some(n) if !late(&n) => Ok(Placement::There {
                node: n.id,
                url: n.url,
            }),
            _ => Err(ClusterError::OwnerGone {
                room: room.to_owned(),
                node: node.to_owned(),
                within_s: self.cfg.lease.as_secs().max(1),
            }),
        }
    }
}

#[async_trait::async_trait]
impl Cluster for RedisCluster {
    fn node_id(&self) -> &str {
        &self.cfg.node_id
    }

    fn is_local(&self) -> bool {
        false
    }

    async fn locate(&self, room: &str) -> Result<Placement, ClusterError> {
        if let Some(p) = self.owner(room).await? {
            return Ok(p);
        }
        let target = self.choose(room).await?;
        let mut inv = self.claim.key(room_key(room));
        inv.key(epoch_key(room))
            .key(NODES)
            .arg(&target)
            .arg(self.cfg.lease.as_millis() as u64);
        let lease: String = self.script(inv).await?;
        info!(room, lease, "cluster: room placed");
        self.resolve(room, &lease).await
    }

    async fn owner(&self, room: &str) -> Result<Option<Placement>, ClusterError> {
        let lease: Option<String> = self.call(redis::cmd("GET").arg(room_key(room))).await?;
        match lease {
            Some(l) => self.resolve(room, &l).await.map(Some),
            None => Ok(None),
        }
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        let ids: Vec<String> = self
            .call(redis::cmd("ZRANGE").arg(NODES).arg(0).arg(-1))
            .await?;
        let mut all = self.records(ids).await?;
        // A draining node is out of the index but still a node.
        if !all.iter().any(|n| n.id == self.cfg.node_id) {
            let rec: Option<String> = self
                .call(redis::cmd("GET").arg(node_key(&self.cfg.node_id)))
                .await?;
            if let Some(n) = rec.and_then(|r| serde_json::from_str::<NodeInfo>(&r).ok()) {
                all.push(n);
            }
        }
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    fn secret(&self) -> &str {
        &self.cfg.secret
    }

    async fn restore(&self, room: &str) -> bool {
        let hooks = self.hooks.get().cloned();
        let epoch = crate::sync::lock(&self.leases).epoch(room);
        let (Some(hooks), Some(epoch)) = (hooks, epoch) else {
            return false;
        };
        match self.load_state(room).await {
            Ok(Some(state)) => {
                info!(room, epoch, "cluster: room restored from its saved state");
                crate::sync::lock(&self.saved).insert(room.to_owned(), state.clone());
                (hooks.restore)(room.to_owned(), state).await;
                true
            }
            Ok(None) => false,
            Err(e) => {
                warn!(room, error = %e, "cluster: cannot read the room's saved state");
                false
            }
        }
    }

    async fn share_image(&self, name: &str, file: Option<&[u8]>) -> Result<(), ClusterError> {
        match file {
            Some(f) => {
                let hash = sha256_hex(f);
                let _: () = self
                    .call(redis::cmd("SET").arg(image_key(name)).arg(f))
                    .await?;
                let _: () = self
                    .call(redis::cmd("HSET").arg(IMAGES).arg(name).arg(&hash))
                    .await?;
                crate::sync::lock(&self.images_seen)
                    .1
                    .insert(name.to_owned(), hash);
            }
            None => {
                let _: () = self.call(redis::cmd("HDEL").arg(IMAGES).arg(name)).await?;
                let _: () = self.call(redis::cmd("DEL").arg(image_key(name))).await?;
                crate::sync::lock(&self.images_seen).1.remove(name);
            }
        }
        let _: i64 = self.call(redis::cmd("INCR").arg(IMAGES_VERSION)).await?;
        Ok(())
    }

    async fn has_saved_state(&self, room: &str) -> bool {
        self.call::<bool>(redis::cmd("EXISTS").arg(state_key(room)))
            .await
            .unwrap_or(false)
    }

    async fn changed(&self, room: &str) {
        let hooks = self.hooks.get().cloned();
        let epoch = crate::sync::lock(&self.leases).epoch(room);
        let (Some(hooks), Some(epoch)) = (hooks, epoch) else {
            return;
        };
        if let Err(e) = self.save_state(&hooks, room, epoch).await {
            warn!(room, error = %e, "cluster: room state not saved (the next heartbeat saves it)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_values() {
        assert_eq!(parse_lease("node-a|7"), Some(("node-a", 7)));
        assert_eq!(parse_lease("a|b|12"), Some(("a|b", 12)));
        assert_eq!(parse_lease("nobar"), None);
        assert_eq!(parse_lease("x|y"), None);
    }
}
