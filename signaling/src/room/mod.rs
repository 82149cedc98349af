//! The pure room state machine: who is in a room, who is on air, the co-host flow.
//!
//! No sockets, no clock, no media: [`Room`] takes what participants said and returns
//! [`Effect`]s — messages to send and [`MediaCommand`]s for the media backend — so every flow
//! is tested by asserting the exact sequence of effects (see the tests below and
//! `signaling/tests/room_flows.rs`).

use std::collections::{BTreeMap, BTreeSet};

use crate::auth::Role;
use crate::protocol::{ClientMessage, MediaKind, ParticipantInfo, ServerMessage, TrackInfo};

mod effect;
pub use effect::{Effect, MediaCommand, RoomError, RoomLimits, Via};

#[derive(Debug, Clone)]
struct Participant {
    info: ParticipantInfo,
    via: Via,
}

/// One room's state.
#[derive(Debug, Clone)]
pub struct Room {
    name: String,
    limits: RoomLimits,
    participants: BTreeMap<String, Participant>,
    requests: BTreeSet<String>,
    invites: BTreeSet<String>,
    /// Mutes the host set, per identity: they outlive a session, so rejoining or a WHIP
    /// publisher posting again does not undo them.
    mutes: BTreeMap<String, (bool, bool)>,
}

impl Room {
    /// The mutes the host set, per identity (audio, video), for a room that moves to
    /// another node.
    pub fn mutes(&self) -> Vec<(String, bool, bool)> {
        self.mutes
            .iter()
            .map(|(id, (a, v))| (id.clone(), *a, *v))
            .collect()
    }

    /// Mutes carried over from the room's previous node: whoever joins under these
    /// identities starts muted as the host left them.
    pub fn carry_mutes(&mut self, mutes: &[(String, bool, bool)]) {
        for (id, a, v) in mutes {
            if *a || *v {
                self.mutes.insert(id.clone(), (*a, *v));
            }
        }
    }

    /// An empty room with the default seats.
    pub fn new(name: &str) -> Self {
        Room::with_limits(name, RoomLimits::default())
    }

    /// An empty room with these seats.
    pub fn with_limits(name: &str, limits: RoomLimits) -> Self {
        Room {
            name: name.to_owned(),
            limits,
            participants: BTreeMap::new(),
            requests: BTreeSet::new(),
            invites: BTreeSet::new(),
            mutes: BTreeMap::new(),
        }
    }

    /// Room name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// No one is in the room.
    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }

    /// Everyone, in identity order.
    pub fn participants(&self) -> Vec<ParticipantInfo> {
        self.participants.values().map(|p| p.info.clone()).collect()
    }

    /// One participant.
    pub fn participant(&self, identity: &str) -> Option<&ParticipantInfo> {
        self.participants.get(identity).map(|p| &p.info)
    }

    /// The connection a participant is on.
    pub fn via(&self, identity: &str) -> Option<Via> {
        self.participants.get(identity).map(|p| p.via)
    }

    /// `identity` enters with a verified token's `role`. A WHIP publisher with a host or guest
    /// token is on air at once; over signaling only the host is, a guest or viewer goes on air
    /// through the co-host flow. The same identity joining again replaces the old session
    /// (a WHIP publisher posting again, e.g. OBS reconnecting, replaces its old WHIP session);
    /// only the same WebSocket joining twice is an error.
    pub fn join(
        &mut self,
        identity: &str,
        name: &str,
        role: Role,
        via: Via,
    ) -> Result<Vec<Effect>, RoomError> {
        let mut fx = Vec::new();
        if let Some(old) = self.participants.get(identity) {
            if old.via == via && via != Via::Whip {
                return Err(RoomError::AlreadyJoined);
            }
            // Replace: the old session leaves first, exactly as if it had disconnected.
            let old_via = old.via;
            if via == Via::Whip && role == Role::Viewer {
                return Err(RoomError::ViewerCannotPublish);
            }
            if let Via::Ws(conn) = old_via {
                fx.push(Effect::SendConn {
                    conn,
                    msg: ServerMessage::error("replaced", "the same identity joined elsewhere"),
                });
                fx.push(Effect::Close { conn });
            }
            fx.extend(self.leave(identity, old_via));
        }
        if via == Via::Whip && role == Role::Viewer {
            return Err(RoomError::ViewerCannotPublish);
        }
        let (seats, what) = match role {
            Role::Host => (self.limits.hosts, "host"),
            Role::Guest => (self.limits.guests, "guest"),
            Role::Viewer => (self.limits.viewers, "viewer"),
        };
        if self
            .participants
            .values()
            .filter(|p| p.info.role == role)
            .count()
            >= seats
        {
            return Err(RoomError::Full(seats, what));
        }
        let on_air = role == Role::Host || via == Via::Whip;
        let (audio_muted, video_muted) = self.mutes.get(identity).copied().unwrap_or_default();
        let info = ParticipantInfo {
            identity: identity.to_owned(),
            name: name.to_owned(),
            role,
            on_air,
            publishing: false,
            audio_muted,
            video_muted,
            tracks: Vec::new(),
        };
        let others = self.participants();
        for o in &others {
            fx.push(Effect::Send {
                to: o.identity.clone(),
                msg: ServerMessage::ParticipantJoined {
                    participant: info.clone(),
                },
            });
        }
        fx.push(Effect::Send {
            to: identity.to_owned(),
            msg: ServerMessage::Joined {
                room: self.name.clone(),
                you: info.clone(),
                participants: others,
                ice_servers: Vec::new(),
            },
        });
        self.participants
            .insert(identity.to_owned(), Participant { info, via });
        Ok(fx)
    }

    /// `identity`'s session `via` ended (socket closed, `leave`, WHIP DELETE, ICE failure).
    /// A session that was already replaced does nothing.
    pub fn leave(&mut self, identity: &str, via: Via) -> Vec<Effect> {
        match self.participants.get(identity) {
            Some(p) if p.via == via => {}
            _ => return Vec::new(),
        }
        self.participants.remove(identity);
        let mut fx = vec![Effect::Media(MediaCommand::Leave {
            identity: identity.to_owned(),
        })];
        if self.requests.remove(identity) {
            fx.extend(self.to_hosts(ServerMessage::CohostRequestCancelled {
                identity: identity.to_owned(),
            }));
        }
        self.invites.remove(identity);
        fx.extend(self.to_all(ServerMessage::ParticipantLeft {
            identity: identity.to_owned(),
        }));
        fx
    }

    /// The media backend reports that `identity` started (`true`, with its `tracks`) or
    /// stopped publishing. Everyone gets `participant_updated`, then `track_unpublished` for
    /// each track that ended and `track_published` for each new one.
    pub fn set_publishing(
        &mut self,
        identity: &str,
        publishing: bool,
        tracks: Vec<TrackInfo>,
    ) -> Vec<Effect> {
        let tracks = if publishing { tracks } else { Vec::new() };
        let Some(p) = self.participants.get_mut(identity) else {
            return Vec::new();
        };
        if p.info.publishing == publishing && p.info.tracks == tracks {
            return Vec::new();
        }
        let old = std::mem::replace(&mut p.info.tracks, tracks.clone());
        p.info.publishing = publishing;
        let info = p.info.clone();
        let mut fx = self.to_all(ServerMessage::ParticipantUpdated { participant: info });
        for t in old.iter().filter(|t| !tracks.contains(t)) {
            fx.extend(self.to_all(ServerMessage::TrackUnpublished {
                identity: identity.to_owned(),
                kind: t.kind,
            }));
        }
        for t in tracks.iter().filter(|t| !old.contains(t)) {
            fx.extend(self.to_all(ServerMessage::TrackPublished {
                identity: identity.to_owned(),
                track: t.clone(),
            }));
        }
        fx
    }

    /// Handles one message from a joined participant.
    pub fn handle(&mut self, from: &str, msg: ClientMessage) -> Result<Vec<Effect>, RoomError> {
        let me = self
            .participants
            .get(from)
            .ok_or_else(|| RoomError::UnknownParticipant(from.to_owned()))?
            .info
            .clone();
        let is_host = me.role == Role::Host;
        let host_only = || {
            if is_host {
                Ok(())
            } else {
                Err(RoomError::NotHost)
            }
        };
        match msg {
            ClientMessage::Join { .. } => Err(RoomError::AlreadyJoined),
            ClientMessage::Ping { ts } => Ok(vec![self.send(from, ServerMessage::Pong { ts })]),
            ClientMessage::Leave => {
                let via = self.via(from).unwrap_or(Via::Whip);
                let mut fx = self.leave(from, via);
                if let Via::Ws(conn) = via {
                    fx.push(Effect::Close { conn });
                }
                Ok(fx)
            }
            ClientMessage::Publish { sdp } => {
                if me.role == Role::Viewer {
                    return Err(RoomError::ViewerCannotPublish);
                }
                if !me.on_air {
                    return Err(RoomError::NotOnAir);
                }
                Ok(vec![Effect::Media(MediaCommand::Publish {
                    identity: from.to_owned(),
                    sdp,
                })])
            }
            ClientMessage::Unpublish => Ok(vec![Effect::Media(MediaCommand::Unpublish {
                identity: from.to_owned(),
            })]),
            ClientMessage::Subscribe { identity, sdp } => {
                if me.role == Role::Viewer && !me.on_air {
                    return Err(RoomError::ViewerCannotSubscribe);
                }
                if identity == from {
                    return Err(RoomError::SelfSubscribe);
                }
                let target = self
                    .participants
                    .get(&identity)
                    .ok_or_else(|| RoomError::UnknownParticipant(identity.clone()))?;
                if !target.info.publishing {
                    return Err(RoomError::NotPublishing(identity));
                }
                Ok(vec![Effect::Media(MediaCommand::Subscribe {
                    identity: from.to_owned(),
                    target: identity,
                    sdp,
                })])
            }
            ClientMessage::Unsubscribe { identity } => {
                Ok(vec![Effect::Media(MediaCommand::Unsubscribe {
                    identity: from.to_owned(),
                    target: identity,
                })])
            }
            ClientMessage::Candidate { pc, candidate } => {
                Ok(vec![Effect::Media(MediaCommand::Candidate {
                    identity: from.to_owned(),
                    pc,
                    candidate,
                })])
            }
            ClientMessage::RequestCohost => {
                if me.on_air {
                    return Err(RoomError::AlreadyOnAir);
                }
                if !self.requests.insert(from.to_owned()) {
                    return Ok(Vec::new()); // asking twice is one request
                }
                Ok(self.to_hosts(ServerMessage::CohostRequest {
                    identity: from.to_owned(),
                    name: me.name,
                }))
            }
            ClientMessage::CancelRequest => {
                if !self.requests.remove(from) {
                    return Err(RoomError::NothingPending("request"));
                }
                Ok(self.to_hosts(ServerMessage::CohostRequestCancelled {
                    identity: from.to_owned(),
                }))
            }
            ClientMessage::AcceptRequest { identity } => {
                host_only()?;
                if !self.requests.remove(&identity) {
                    return Err(RoomError::NothingPending("request"));
                }
                Ok(self.put_on_air(&identity))
            }
            ClientMessage::RefuseRequest { identity, reason } => {
                host_only()?;
                if !self.requests.remove(&identity) {
                    return Err(RoomError::NothingPending("request"));
                }
                Ok(vec![
                    self.send(&identity, ServerMessage::CohostRefused { reason })
                ])
            }
            ClientMessage::Invite { identity } => {
                host_only()?;
                let target = self
                    .participants
                    .get(&identity)
                    .ok_or_else(|| RoomError::UnknownParticipant(identity.clone()))?;
                if target.info.role == Role::Host {
                    return Err(RoomError::TargetIsHost);
                }
                if target.info.on_air {
                    return Err(RoomError::AlreadyOnAir);
                }
                self.invites.insert(identity.clone());
                Ok(vec![self.send(
                    &identity,
                    ServerMessage::Invited {
                        by: from.to_owned(),
                    },
                )])
            }
            ClientMessage::AcceptInvite | ClientMessage::DeclineInvite => {
                let accepted = matches!(msg, ClientMessage::AcceptInvite);
                if !self.invites.remove(from) {
                    return Err(RoomError::NothingPending("invitation"));
                }
                let mut fx = self.to_hosts(ServerMessage::InviteAnswered {
                    identity: from.to_owned(),
                    accepted,
                });
                if accepted {
                    self.requests.remove(from);
                    fx.extend(self.put_on_air(from));
                }
                Ok(fx)
            }
            ClientMessage::Remove { identity } => {
                host_only()?;
                let target = self
                    .participants
                    .get_mut(&identity)
                    .ok_or_else(|| RoomError::UnknownParticipant(identity.clone()))?;
                if target.info.role == Role::Host {
                    return Err(RoomError::TargetIsHost);
                }
                if !target.info.on_air {
                    return Err(RoomError::NotOnAir);
                }
                target.info.on_air = false;
                target.info.publishing = false;
                let info = target.info.clone();
                let mut fx = vec![
                    Effect::Media(MediaCommand::Unpublish {
                        identity: identity.clone(),
                    }),
                    self.send(&identity, ServerMessage::Removed),
                ];
                fx.extend(self.to_all(ServerMessage::ParticipantUpdated { participant: info }));
                Ok(fx)
            }
            ClientMessage::Mute {
                identity,
                kind,
                muted,
            } => {
                host_only()?;
                let target = self
                    .participants
                    .get_mut(&identity)
                    .ok_or_else(|| RoomError::UnknownParticipant(identity.clone()))?;
                let slot = match kind {
                    MediaKind::Audio => &mut target.info.audio_muted,
                    MediaKind::Video => &mut target.info.video_muted,
                };
                if *slot == muted {
                    return Ok(Vec::new());
                }
                *slot = muted;
                let info = target.info.clone();
                if info.audio_muted || info.video_muted {
                    self.mutes
                        .insert(identity.clone(), (info.audio_muted, info.video_muted));
                } else {
                    self.mutes.remove(&identity);
                }
                let mut fx = vec![Effect::Media(MediaCommand::SetMuted {
                    identity,
                    kind,
                    muted,
                })];
                fx.extend(self.to_all(ServerMessage::ParticipantUpdated { participant: info }));
                Ok(fx)
            }
            ClientMessage::SetLayout { layout } => {
                host_only()?;
                Ok(vec![Effect::Media(MediaCommand::SetLayout {
                    identity: from.to_owned(),
                    layout,
                })])
            }
            ClientMessage::Cue {
                id,
                data,
                repeat,
                at_capture_ms,
            } => {
                host_only()?;
                Ok(vec![Effect::Media(MediaCommand::Cue {
                    identity: from.to_owned(),
                    id,
                    data,
                    repeat: repeat.unwrap_or(3),
                    at_capture_ms,
                })])
            }
        }
    }

    /// Tell everyone the layout changed (after the backend applied it).
    pub fn layout_changed(&self, layout: serde_json::Value) -> Vec<Effect> {
        self.to_all(ServerMessage::LayoutChanged { layout })
    }

    fn put_on_air(&mut self, identity: &str) -> Vec<Effect> {
        let Some(p) = self.participants.get_mut(identity) else {
            return Vec::new();
        };
        p.info.on_air = true;
        if p.info.role == Role::Viewer {
            p.info.role = Role::Guest;
        }
        let info = p.info.clone();
        let mut fx = vec![self.send(identity, ServerMessage::OnAir)];
        fx.extend(self.to_all(ServerMessage::ParticipantUpdated { participant: info }));
        fx
    }

    fn send(&self, to: &str, msg: ServerMessage) -> Effect {
        Effect::Send {
            to: to.to_owned(),
            msg,
        }
    }

    fn to_all(&self, msg: ServerMessage) -> Vec<Effect> {
        self.participants
            .keys()
            .map(|k| self.send(k, msg.clone()))
            .collect()
    }

    fn to_hosts(&self, msg: ServerMessage) -> Vec<Effect> {
        self.participants
            .values()
            .filter(|p| p.info.role == Role::Host)
            .map(|p| self.send(&p.info.identity, msg.clone()))
            .collect()
    }
}
