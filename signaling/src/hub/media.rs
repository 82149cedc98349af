//! The hub's media side: each participant's ordered queue of media work, the interpreter of
//! the rooms' media commands, and the operations the transports call (publish, subscribe,
//! layout, cues, trickle) — each checked against the room state, then handed to the
//! [`MediaBackend`](crate::backend::MediaBackend).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info_span, Instrument};

use crate::auth::{Claims, Role};
use crate::backend::{CueAck, MediaError, PeerConnId, PublishOptions};
use crate::protocol::{MediaKind, ServerMessage};
use crate::room::{Effect, MediaCommand, Via};

use super::{now_s, whep_session_id, whep_session_owner, HubError, Signaling};

/// A piece of media work run in its participant's queue.
pub(crate) type MediaJob = Box<
    dyn FnOnce(Arc<Signaling>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send,
>;

/// A participant's media queue ends after this long without work.
pub(crate) const QUEUE_IDLE: Duration = Duration::from_secs(30);

impl Signaling {
    /// Runs `job` after every media job queued before it for `identity` in `room`, and before
    /// those queued after it. A participant's peer-connection work (publish, unpublish,
    /// subscribe, candidates, mutes, leave) thus happens in the order signaling decided it —
    /// `publish` then `unpublish` is never reordered, and a replaced session's `leave` runs
    /// before the new session's `publish` — while different participants do not wait on
    /// each other. The queue's task ends after [`QUEUE_IDLE`] without work.
    pub(crate) fn enqueue(self: &Arc<Self>, room: &str, identity: &str, job: MediaJob) {
        let key = (room.to_owned(), identity.to_owned());
        let mut g = self.lock();
        // A queue whose task is gone (it panicked) is replaced.
        let job = match g.queues.get(&key) {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(mpsc::error::SendError(job)) => job,
            },
            None => job,
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<MediaJob>();
        let _ = tx.send(job);
        g.queues.insert(key.clone(), tx);
        drop(g);
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                match tokio::time::timeout(QUEUE_IDLE, rx.recv()).await {
                    Ok(Some(job)) => {
                        let Some(s) = weak.upgrade() else { return };
                        job(s).await;
                    }
                    Ok(None) => return,
                    Err(_) => {
                        let Some(s) = weak.upgrade() else { return };
                        // Jobs are sent under the lock: seen empty here, none can follow.
                        let mut g = s.lock();
                        if rx.is_empty() {
                            g.queues.remove(&key);
                            return;
                        }
                    }
                }
            }
        });
    }

    /// Carries out room effects: sends, closes, and media commands (a participant's in its
    /// queue, in order; layout and cues at once).
    pub(crate) fn apply(self: &Arc<Self>, room: &str, fx: Vec<Effect>) {
        for e in fx {
            match e {
                Effect::Send { to, msg } => {
                    let msg = match msg {
                        ServerMessage::Joined {
                            room: r,
                            you,
                            participants,
                            ..
                        } => ServerMessage::Joined {
                            room: r,
                            you,
                            participants,
                            // Minted here: the room is pure, credentials need the clock.
                            ice_servers: self.config.ice.servers(Some(&to), now_s()),
                        },
                        m => m,
                    };
                    self.send_to(room, &to, msg)
                }
                Effect::SendConn { conn, msg } => {
                    let tx = self.lock().conns.get(&conn).cloned();
                    if let Some(tx) = tx {
                        tx.send(msg);
                    }
                }
                Effect::Close { conn } => {
                    let tx = self.lock().conns.get(&conn).cloned();
                    if let Some(tx) = tx {
                        tx.close();
                    }
                }
                Effect::Media(cmd) => {
                    let room = room.to_owned();
                    match &cmd {
                        // The program's work, not a peer connection's: no order to keep.
                        MediaCommand::SetLayout { .. } | MediaCommand::Cue { .. } => {
                            let s = self.clone();
                            tokio::spawn(async move { s.media(&room, cmd).await });
                        }
                        _ => {
                            let who = cmd.identity().to_owned();
                            self.enqueue(
                                &room.clone(),
                                &who,
                                Box::new(move |s| {
                                    Box::pin(async move { s.media(&room, cmd).await })
                                }),
                            );
                        }
                    }
                }
            }
        }
    }

    /// Refuses a new subscription to co-hosts' own tracks for `identity` in `room` when it, or
    /// the room, holds the most allowed.
    pub(crate) async fn check_subscription_caps(
        &self,
        room: &str,
        identity: &str,
    ) -> Result<(), MediaError> {
        let subs = self.backend.subscribers(room).await;
        if subs.len() >= self.config.max_subscriptions_per_room {
            return Err(MediaError::LimitReached(format!(
                "room `{room}` has {} subscriptions to co-hosts' tracks, the most allowed",
                subs.len()
            )));
        }
        let mine = subs
            .iter()
            .filter(|sub| {
                sub.as_str() == identity || whep_session_owner(sub).as_deref() == Some(identity)
            })
            .count();
        if mine >= self.config.max_subscriptions_per_identity {
            return Err(MediaError::LimitReached(format!(
                "{mine} subscriptions to co-hosts' tracks already, the most one identity may hold"
            )));
        }
        Ok(())
    }

    /// How `identity` publishes: its role and the mutes the host has set on it (a new
    /// publication starts with them, so publishing again does not undo a mute).
    pub(crate) fn publish_options(&self, room: &str, identity: &str, whip: bool) -> PublishOptions {
        let g = self.lock();
        let p = g.rooms.get(room).and_then(|r| r.room.participant(identity));
        PublishOptions {
            whip,
            host: p.is_some_and(|p| p.role == Role::Host),
            audio_muted: p.is_some_and(|p| p.audio_muted),
            video_muted: p.is_some_and(|p| p.video_muted),
            name: p.map(|p| p.name.clone()),
        }
    }

    /// A mute the host set while the publication was being set up reached no publication:
    /// apply it now.
    pub(crate) async fn reapply_mutes(&self, room: &str, identity: &str, was: PublishOptions) {
        let now = self.publish_options(room, identity, was.whip);
        if now.audio_muted != was.audio_muted {
            self.backend
                .set_muted(room, identity, MediaKind::Audio, now.audio_muted)
                .await;
        }
        if now.video_muted != was.video_muted {
            self.backend
                .set_muted(room, identity, MediaKind::Video, now.video_muted)
                .await;
        }
    }

    pub(crate) async fn media(self: &Arc<Self>, room: &str, cmd: MediaCommand) {
        let b = &self.backend;
        match cmd {
            MediaCommand::Publish { identity, sdp } => {
                let opts = self.publish_options(room, &identity, false);
                match b.publish(room, &identity, sdp, opts.clone()).await {
                    Ok(sdp) => {
                        self.reapply_mutes(room, &identity, opts).await;
                        self.send_to(
                            room,
                            &identity,
                            ServerMessage::Answer {
                                pc: "publish".into(),
                                sdp,
                            },
                        )
                    }
                    Err(e) => self.send_to(
                        room,
                        &identity,
                        ServerMessage::error(e.code(), e.to_string()),
                    ),
                }
            }
            MediaCommand::Unpublish { identity } => b.unpublish(room, &identity).await,
            MediaCommand::Subscribe {
                identity,
                target,
                sdp,
            } => match async {
                // A new target counts against the caps; answering again does not.
                let again = b.subscribers(room).await.iter().any(|sub| sub == &identity);
                if !again {
                    self.check_subscription_caps(room, &identity).await?;
                }
                b.subscribe(room, &identity, &target, sdp).await
            }
            .await
            {
                Ok(sdp) => self.send_to(
                    room,
                    &identity,
                    ServerMessage::Answer {
                        pc: format!("subscribe:{target}"),
                        sdp,
                    },
                ),
                Err(e) => self.send_to(
                    room,
                    &identity,
                    ServerMessage::error(e.code(), e.to_string()),
                ),
            },
            MediaCommand::Unsubscribe { identity, target } => {
                b.unsubscribe(room, &identity, &target).await;
            }
            MediaCommand::Candidate {
                identity,
                pc,
                candidate,
            } => {
                let res = match PeerConnId::parse(&pc) {
                    Some(pc) => b.add_candidate(room, &identity, &pc, candidate).await,
                    None => Err(MediaError::NotFound(format!("peer connection `{pc}`"))),
                };
                if let Err(e) = res {
                    self.send_to(
                        room,
                        &identity,
                        ServerMessage::error(e.code(), e.to_string()),
                    );
                }
            }
            MediaCommand::SetMuted {
                identity,
                kind,
                muted,
            } => b.set_muted(room, &identity, kind, muted).await,
            MediaCommand::SetLayout { identity, layout } => {
                match b.set_layout(room, layout).await {
                    Ok(applied) => self.layout_applied(room, applied),
                    Err(e) => self.send_to(
                        room,
                        &identity,
                        ServerMessage::error(e.code(), e.to_string()),
                    ),
                }
            }
            MediaCommand::Cue {
                identity,
                id,
                data,
                repeat,
                at_capture_ms,
            } => {
                let msg = match b.cue(room, &id, data, repeat, at_capture_ms).await {
                    Ok(ack) => ServerMessage::CueAccepted {
                        id: ack.id,
                        pts_ms: ack.pts_ms,
                    },
                    Err(e) => ServerMessage::error(e.code(), e.to_string()),
                };
                self.send_to(room, &identity, msg);
            }
            MediaCommand::Leave { identity } => b.leave(room, &identity).await,
        }
    }

    pub(crate) fn layout_applied(self: &Arc<Self>, room: &str, layout: serde_json::Value) {
        let fx = self
            .lock()
            .rooms
            .get(room)
            .map(|r| r.room.layout_changed(layout))
            .unwrap_or_default();
        self.apply(room, fx);
    }

    /// A room created through the API (kept when empty), with an optional mix.
    pub async fn create_room(
        &self,
        name: &str,
        mix: Option<serde_json::Value>,
    ) -> Result<(), HubError> {
        self.backend.create_room(name, mix).await?;
        self.keep_room_state(name);
        Ok(())
    }

    /// A room's participants and its media side (`GET /api/rooms/{room}`).
    pub async fn room_info(&self, room: &str) -> serde_json::Value {
        let participants = self.participants(room).unwrap_or_default();
        let media = self.backend.room_info(room).await;
        let mut info =
            serde_json::json!({"name": room, "participants": participants, "media": media});
        if let Some(node) = &self.config.node {
            info["node"] = serde_json::Value::String(node.clone());
        }
        info
    }

    /// Deletes a room: its WebSocket participants are told and closed, everyone's media ends,
    /// then the room's.
    pub async fn delete_room(&self, room: &str) -> Result<(), HubError> {
        self.end_room(room, "room_closed", "the room was deleted")
            .await
    }

    /// The room moved to another node (this one lost its lease): it ends here at once, its
    /// WebSocket participants told `room_moved` (they reconnect and land on the new node).
    pub async fn evict_room(&self, room: &str) -> bool {
        self.end_room(
            room,
            "room_moved",
            "the room moved to another node; reconnect to join it again",
        )
        .await
        .is_ok()
    }

    async fn end_room(&self, room: &str, code: &str, why: &str) -> Result<(), HubError> {
        let r = self
            .remove_room(room)
            .ok_or_else(|| HubError::UnknownRoom(room.to_owned()))?;
        for p in r.participants() {
            if let Some(Via::Ws(conn)) = r.via(&p.identity) {
                self.close_conn_with(conn, ServerMessage::error(code, why));
            }
            self.backend.leave(room, &p.identity).await;
        }
        self.backend.close_room(room).await;
        Ok(())
    }

    /// Applies a layout to an existing room and tells its participants; returns it as applied.
    pub async fn set_layout(
        self: &Arc<Self>,
        room: &str,
        layout: serde_json::Value,
    ) -> Result<serde_json::Value, HubError> {
        if !self.room_exists(room) {
            return Err(HubError::UnknownRoom(room.to_owned()));
        }
        let applied = self.backend.set_layout(room, layout).await?;
        self.layout_applied(room, applied.clone());
        Ok(applied)
    }

    /// Stamps a cue into an existing room's program.
    pub async fn cue(
        &self,
        room: &str,
        id: &str,
        data: serde_json::Value,
        repeat: u32,
        at_capture_ms: Option<f64>,
    ) -> Result<CueAck, HubError> {
        if !self.room_exists(room) {
            return Err(HubError::UnknownRoom(room.to_owned()));
        }
        Ok(self
            .backend
            .cue(room, id, data, repeat, at_capture_ms)
            .await?)
    }

    /// A WHIP publication: `claims` join the room (replacing an earlier WHIP session of theirs,
    /// whose media is dropped first: both go through the participant's queue) and publish
    /// `offer`; the answer. A publication that fails leaves the room again.
    pub async fn publish_whip(
        self: &Arc<Self>,
        claims: &Claims,
        offer: String,
    ) -> Result<String, HubError> {
        if claims.role == Role::Viewer {
            return Err(crate::auth::AuthError::Forbidden(Role::Viewer).into());
        }
        let (room, me) = (claims.room.clone(), claims.identity.clone());
        let name = claims.name.clone().unwrap_or_else(|| me.clone());
        self.join(&room, &me, &name, claims.role, Via::Whip)?;
        let span = info_span!("participant", room = %room, identity = %me);
        let opts = self.publish_options(&room, &me, true);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (room2, me2) = (room.clone(), me.clone());
        self.enqueue(
            &room,
            &me,
            Box::new(move |s| {
                Box::pin(async move {
                    let res = s.backend.publish(&room2, &me2, offer, opts.clone()).await;
                    if res.is_ok() {
                        s.reapply_mutes(&room2, &me2, opts).await;
                    }
                    let _ = tx.send(res);
                })
            }),
        );
        let res = rx
            .instrument(span)
            .await
            .unwrap_or_else(|_| Err(MediaError::Internal("the publication was dropped".into())));
        res.inspect_err(|_| self.leave(&room, &me, Via::Whip))
            .map_err(HubError::from)
    }

    /// Ends `identity`'s WHIP session (its `DELETE`).
    pub fn end_whip(self: &Arc<Self>, room: &str, identity: &str) {
        self.leave(room, identity, Via::Whip);
    }

    /// A WHEP subscription of `claims` to `target`'s own tracks (viewers only while on air,
    /// one rule with WebSocket `subscribe`): the new session's id and the answer.
    pub async fn subscribe_whep(
        &self,
        claims: &Claims,
        target: &str,
        offer: String,
    ) -> Result<(String, String), HubError> {
        let room = claims.room.as_str();
        self.may_watch_cohosts(claims)?;
        let publishing = self.participant(room, target).is_some_and(|p| p.publishing);
        self.check_subscription_caps(room, &claims.identity).await?;
        if !publishing {
            return Err(HubError::NotPublishing {
                room: room.to_owned(),
                identity: target.to_owned(),
            });
        }
        let session = whep_session_id(&claims.identity);
        let answer = self
            .backend
            .subscribe(room, &session, target, offer)
            .await?;
        Ok((session, answer))
    }

    /// Co-hosts' own tracks are for co-hosts: a viewer watches the program, unless on air.
    pub fn may_watch_cohosts(&self, claims: &Claims) -> Result<(), HubError> {
        let on_air = || {
            self.participant(&claims.room, &claims.identity)
                .is_some_and(|p| p.on_air)
        };
        if claims.role == Role::Viewer && !on_air() {
            return Err(crate::auth::AuthError::Forbidden(Role::Viewer).into());
        }
        Ok(())
    }

    /// A WHEP viewer of the room's program: the session's id and the answer.
    pub async fn subscribe_program(
        &self,
        claims: &Claims,
        offer: String,
    ) -> Result<(String, String), HubError> {
        let viewer = whep_session_id(&claims.identity);
        let answer = self
            .backend
            .subscribe_program(&claims.room, &viewer, offer)
            .await?;
        Ok((viewer, answer))
    }

    /// Ends a WHEP session on `target` (a co-host, or `program`: a co-host may be called so,
    /// its subscriptions are tried after the program's); `false` if there was none.
    pub async fn end_whep(&self, room: &str, target: &str, session: &str) -> bool {
        (target == "program" && self.backend.unsubscribe_program(room, session).await)
            || self.backend.unsubscribe(room, session, target).await
    }

    /// The peer connection a WHEP session on `target` uses: the program viewer's when
    /// `target` is `program` and there is one, else the subscription's.
    pub async fn whep_pc(&self, room: &str, target: &str, session: &str) -> PeerConnId {
        if target == "program"
            && self
                .backend
                .ice_ufrags(room, session, &PeerConnId::Program)
                .await
                .is_some()
        {
            return PeerConnId::Program;
        }
        PeerConnId::Subscribe(target.to_owned())
    }

    /// A session's ICE username fragments (ours, the client's); `None` if there is none.
    pub async fn ice_ufrags(
        &self,
        room: &str,
        who: &str,
        pc: &PeerConnId,
    ) -> Option<(String, String)> {
        self.backend.ice_ufrags(room, who, pc).await
    }

    /// Restarts a session's ICE with the client's new credentials; the server's new local
    /// description.
    pub async fn restart_ice(
        &self,
        room: &str,
        who: &str,
        pc: &PeerConnId,
        ufrag: &str,
        pwd: &str,
    ) -> Result<String, HubError> {
        Ok(self.backend.restart_ice(room, who, pc, ufrag, pwd).await?)
    }

    /// Adds a trickled candidate (`RTCIceCandidateInit` JSON) to a session.
    pub async fn add_candidate(
        &self,
        room: &str,
        who: &str,
        pc: &PeerConnId,
        candidate: serde_json::Value,
    ) -> Result<(), HubError> {
        Ok(self.backend.add_candidate(room, who, pc, candidate).await?)
    }
}
