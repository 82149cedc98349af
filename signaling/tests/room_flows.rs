//! The pure room state machine, tested by exact effect sequences: roles, every co-host path,
#![allow(clippy::unwrap_used)]
//! errors. No sockets, no clock.

use serde_json::json;
use signaling::auth::Role;
use signaling::protocol::{ClientMessage as C, MediaKind, ParticipantInfo, ServerMessage as S};
use signaling::room::{Effect, MediaCommand as M, Room, RoomError, RoomLimits, Via};

fn info(id: &str, role: Role, on_air: bool) -> ParticipantInfo {
    ParticipantInfo {
        identity: id.into(),
        name: id.into(),
        role,
        on_air,
        publishing: false,
        audio_muted: false,
        video_muted: false,
        tracks: Vec::new(),
    }
}

fn send(to: &str, msg: S) -> Effect {
    Effect::Send { to: to.into(), msg }
}

/// A room with host `h` (conn 1) and guest `g` (conn 2) and viewer `v` (conn 3).
fn room() -> Room {
    let mut r = Room::new("r");
    r.join("h", "h", Role::Host, Via::Ws(1)).unwrap();
    r.join("g", "g", Role::Guest, Via::Ws(2)).unwrap();
    r.join("v", "v", Role::Viewer, Via::Ws(3)).unwrap();
    r
}

#[test]
fn join_announces_to_others_and_answers_joined() {
    let mut r = Room::new("r");
    let fx = r.join("h", "Hostess", Role::Host, Via::Ws(1)).unwrap();
    let mut h = info("h", Role::Host, true);
    h.name = "Hostess".into();
    assert_eq!(
        fx,
        vec![send(
            "h",
            S::Joined {
                room: "r".into(),
                you: h.clone(),
                participants: vec![],
                ice_servers: vec![]
            }
        )]
    );
    let fx = r.join("g", "g", Role::Guest, Via::Ws(2)).unwrap();
    let g = info("g", Role::Guest, false);
    assert_eq!(
        fx,
        vec![
            send(
                "h",
                S::ParticipantJoined {
                    participant: g.clone()
                }
            ),
            send(
                "g",
                S::Joined {
                    room: "r".into(),
                    you: g,
                    participants: vec![h],
                    ice_servers: vec![]
                }
            ),
        ]
    );
}

#[test]
fn viewer_request_accepted_becomes_guest_on_air() {
    let mut r = room();
    assert_eq!(
        r.handle("v", C::RequestCohost).unwrap(),
        vec![send(
            "h",
            S::CohostRequest {
                identity: "v".into(),
                name: "v".into()
            }
        )]
    );
    // Asking twice is one request.
    assert_eq!(r.handle("v", C::RequestCohost).unwrap(), vec![]);
    let fx = r
        .handle(
            "h",
            C::AcceptRequest {
                identity: "v".into(),
            },
        )
        .unwrap();
    let v = info("v", Role::Guest, true);
    assert_eq!(
        fx,
        vec![
            send("v", S::OnAir),
            send(
                "g",
                S::ParticipantUpdated {
                    participant: v.clone()
                }
            ),
            send(
                "h",
                S::ParticipantUpdated {
                    participant: v.clone()
                }
            ),
            send("v", S::ParticipantUpdated { participant: v }),
        ]
    );
    // Now v may publish.
    assert_eq!(
        r.handle("v", C::Publish { sdp: "o".into() }).unwrap(),
        vec![Effect::Media(M::Publish {
            identity: "v".into(),
            sdp: "o".into()
        })]
    );
    // Nothing pending any more.
    assert_eq!(
        r.handle(
            "h",
            C::AcceptRequest {
                identity: "v".into()
            }
        ),
        Err(RoomError::NothingPending("request"))
    );
}

#[test]
fn request_refused_and_cancelled() {
    let mut r = room();
    r.handle("g", C::RequestCohost).unwrap();
    assert_eq!(
        r.handle(
            "h",
            C::RefuseRequest {
                identity: "g".into(),
                reason: Some("later".into())
            }
        )
        .unwrap(),
        vec![send(
            "g",
            S::CohostRefused {
                reason: Some("later".into())
            }
        )]
    );
    assert!(!r.participant("g").unwrap().on_air);
    r.handle("g", C::RequestCohost).unwrap();
    assert_eq!(
        r.handle("g", C::CancelRequest).unwrap(),
        vec![send(
            "h",
            S::CohostRequestCancelled {
                identity: "g".into()
            }
        )]
    );
    assert_eq!(
        r.handle("g", C::CancelRequest),
        Err(RoomError::NothingPending("request"))
    );
}

#[test]
fn invite_accepted_and_declined() {
    let mut r = room();
    assert_eq!(
        r.handle(
            "h",
            C::Invite {
                identity: "g".into()
            }
        )
        .unwrap(),
        vec![send("g", S::Invited { by: "h".into() })]
    );
    assert_eq!(
        r.handle("g", C::DeclineInvite).unwrap(),
        vec![send(
            "h",
            S::InviteAnswered {
                identity: "g".into(),
                accepted: false
            }
        )]
    );
    assert_eq!(
        r.handle("g", C::AcceptInvite),
        Err(RoomError::NothingPending("invitation"))
    );
    r.handle(
        "h",
        C::Invite {
            identity: "g".into(),
        },
    )
    .unwrap();
    let fx = r.handle("g", C::AcceptInvite).unwrap();
    let g = info("g", Role::Guest, true);
    assert_eq!(
        fx,
        vec![
            send(
                "h",
                S::InviteAnswered {
                    identity: "g".into(),
                    accepted: true
                }
            ),
            send("g", S::OnAir),
            send(
                "g",
                S::ParticipantUpdated {
                    participant: g.clone()
                }
            ),
            send(
                "h",
                S::ParticipantUpdated {
                    participant: g.clone()
                }
            ),
            send("v", S::ParticipantUpdated { participant: g }),
        ]
    );
    assert_eq!(
        r.handle(
            "h",
            C::Invite {
                identity: "g".into()
            }
        ),
        Err(RoomError::AlreadyOnAir)
    );
    assert_eq!(
        r.handle(
            "h",
            C::Invite {
                identity: "h".into()
            }
        ),
        Err(RoomError::TargetIsHost)
    );
    assert_eq!(
        r.handle(
            "h",
            C::Invite {
                identity: "nobody".into()
            }
        ),
        Err(RoomError::UnknownParticipant("nobody".into()))
    );
}

#[test]
fn host_removes_and_mutes() {
    let mut r = room();
    r.handle(
        "h",
        C::Invite {
            identity: "g".into(),
        },
    )
    .unwrap();
    r.handle("g", C::AcceptInvite).unwrap();
    r.set_publishing("g", true, Vec::new());
    let fx = r
        .handle(
            "h",
            C::Mute {
                identity: "g".into(),
                kind: MediaKind::Audio,
                muted: true,
            },
        )
        .unwrap();
    let mut g = info("g", Role::Guest, true);
    g.publishing = true;
    g.audio_muted = true;
    assert_eq!(
        fx[0],
        Effect::Media(M::SetMuted {
            identity: "g".into(),
            kind: MediaKind::Audio,
            muted: true
        })
    );
    assert_eq!(
        fx[1..],
        [
            send(
                "g",
                S::ParticipantUpdated {
                    participant: g.clone()
                }
            ),
            send(
                "h",
                S::ParticipantUpdated {
                    participant: g.clone()
                }
            ),
            send(
                "v",
                S::ParticipantUpdated {
                    participant: g.clone()
                }
            )
        ]
    );
    // Muting again changes nothing.
    assert_eq!(
        r.handle(
            "h",
            C::Mute {
                identity: "g".into(),
                kind: MediaKind::Audio,
                muted: true
            }
        )
        .unwrap(),
        vec![]
    );
    let fx = r
        .handle(
            "h",
            C::Remove {
                identity: "g".into(),
            },
        )
        .unwrap();
    g.on_air = false;
    g.publishing = false;
    assert_eq!(
        fx,
        vec![
            Effect::Media(M::Unpublish {
                identity: "g".into()
            }),
            send("g", S::Removed),
            send(
                "g",
                S::ParticipantUpdated {
                    participant: g.clone()
                }
            ),
            send(
                "h",
                S::ParticipantUpdated {
                    participant: g.clone()
                }
            ),
            send("v", S::ParticipantUpdated { participant: g }),
        ]
    );
    // Off air: no publishing; removing again is an error.
    assert_eq!(
        r.handle("g", C::Publish { sdp: "o".into() }),
        Err(RoomError::NotOnAir)
    );
    assert_eq!(
        r.handle(
            "h",
            C::Remove {
                identity: "g".into()
            }
        ),
        Err(RoomError::NotOnAir)
    );
    assert_eq!(
        r.handle(
            "h",
            C::Remove {
                identity: "h".into()
            }
        ),
        Err(RoomError::TargetIsHost)
    );
}

#[test]
fn only_the_host_controls() {
    let mut r = room();
    for m in [
        C::AcceptRequest {
            identity: "v".into(),
        },
        C::RefuseRequest {
            identity: "v".into(),
            reason: None,
        },
        C::Invite {
            identity: "v".into(),
        },
        C::Remove {
            identity: "v".into(),
        },
        C::Mute {
            identity: "h".into(),
            kind: MediaKind::Video,
            muted: true,
        },
        C::SetLayout {
            layout: json!({"template": "grid"}),
        },
        C::Cue {
            id: "c".into(),
            data: json!({}),
            repeat: None,
            at_capture_ms: None,
        },
    ] {
        assert_eq!(r.handle("g", m.clone()), Err(RoomError::NotHost), "{m:?}");
        assert_eq!(r.handle("v", m.clone()), Err(RoomError::NotHost), "{m:?}");
    }
    assert_eq!(
        r.handle("v", C::Publish { sdp: "o".into() }),
        Err(RoomError::ViewerCannotPublish)
    );
    assert_eq!(
        r.handle(
            "h",
            C::Cue {
                id: "c".into(),
                data: json!({"k": 1}),
                repeat: None,
                at_capture_ms: Some(5.0)
            }
        )
        .unwrap(),
        vec![Effect::Media(M::Cue {
            identity: "h".into(),
            id: "c".into(),
            data: json!({"k": 1}),
            repeat: 3,
            at_capture_ms: Some(5.0)
        })]
    );
}

#[test]
fn subscribe_rules() {
    let mut r = room();
    assert_eq!(
        r.handle(
            "g",
            C::Subscribe {
                identity: "g".into(),
                sdp: "o".into()
            }
        ),
        Err(RoomError::SelfSubscribe)
    );
    assert_eq!(
        r.handle(
            "g",
            C::Subscribe {
                identity: "h".into(),
                sdp: "o".into()
            }
        ),
        Err(RoomError::NotPublishing("h".into()))
    );
    let fx = r.set_publishing("h", true, Vec::new());
    assert_eq!(fx.len(), 3);
    assert_eq!(
        r.set_publishing("h", true, Vec::new()),
        vec![],
        "no duplicate update"
    );
    assert_eq!(
        r.handle(
            "g",
            C::Subscribe {
                identity: "h".into(),
                sdp: "o".into()
            }
        )
        .unwrap(),
        vec![Effect::Media(M::Subscribe {
            identity: "g".into(),
            target: "h".into(),
            sdp: "o".into()
        })]
    );
    // Viewers watch the program: a co-host's own tracks are refused, as over WHEP.
    assert_eq!(
        r.handle(
            "v",
            C::Subscribe {
                identity: "h".into(),
                sdp: "o".into()
            }
        ),
        Err(RoomError::ViewerCannotSubscribe)
    );
    // Once on air (the host accepted its request) a viewer co-hosts and may.
    r.handle("v", C::RequestCohost).unwrap();
    r.handle(
        "h",
        C::AcceptRequest {
            identity: "v".into(),
        },
    )
    .unwrap();
    assert!(r
        .handle(
            "v",
            C::Subscribe {
                identity: "h".into(),
                sdp: "o".into()
            }
        )
        .is_ok());
}

#[test]
fn seats_are_per_role_so_viewers_never_take_the_hosts() {
    let mut r = Room::with_limits(
        "r",
        RoomLimits {
            hosts: 1,
            guests: 2,
            viewers: 3,
        },
    );
    for i in 0..3 {
        r.join(&format!("v{i}"), "v", Role::Viewer, Via::Ws(10 + i))
            .unwrap();
    }
    assert_eq!(
        r.join("v9", "v", Role::Viewer, Via::Ws(19)),
        Err(RoomError::Full(3, "viewer"))
    );
    // The host and the guests still have their seats.
    r.join("h", "h", Role::Host, Via::Ws(1)).unwrap();
    r.join("g1", "g", Role::Guest, Via::Ws(2)).unwrap();
    r.join("g2", "g", Role::Guest, Via::Ws(3)).unwrap();
    assert_eq!(
        r.join("g3", "g", Role::Guest, Via::Ws(4)),
        Err(RoomError::Full(2, "guest"))
    );
    // Rejoining (a reconnect replacing its session) needs no new seat.
    assert!(r.join("g2", "g", Role::Guest, Via::Ws(5)).is_ok());
}

#[test]
fn mutes_belong_to_the_identity_and_survive_a_rejoin() {
    let mut r = room();
    r.handle(
        "h",
        C::Mute {
            identity: "g".into(),
            kind: MediaKind::Audio,
            muted: true,
        },
    )
    .unwrap();
    r.leave("g", Via::Ws(2));
    r.join("g", "g", Role::Guest, Via::Ws(8)).unwrap();
    assert!(r.participant("g").unwrap().audio_muted);
    // A WHIP publisher posting again is the same identity too.
    r.join("g", "g", Role::Guest, Via::Whip).unwrap();
    assert!(r.participant("g").unwrap().audio_muted);
    assert!(!r.participant("g").unwrap().video_muted);
    r.handle(
        "h",
        C::Mute {
            identity: "g".into(),
            kind: MediaKind::Audio,
            muted: false,
        },
    )
    .unwrap();
    r.join("g", "g", Role::Guest, Via::Ws(9)).unwrap();
    assert!(!r.participant("g").unwrap().audio_muted);
}

#[test]
fn leaving_cancels_requests_and_is_announced() {
    let mut r = room();
    r.handle("v", C::RequestCohost).unwrap();
    let fx = r.leave("v", Via::Ws(3));
    assert_eq!(
        fx,
        vec![
            Effect::Media(M::Leave {
                identity: "v".into()
            }),
            send(
                "h",
                S::CohostRequestCancelled {
                    identity: "v".into()
                }
            ),
            send(
                "g",
                S::ParticipantLeft {
                    identity: "v".into()
                }
            ),
            send(
                "h",
                S::ParticipantLeft {
                    identity: "v".into()
                }
            ),
        ]
    );
    // A stale connection leaving does nothing.
    assert_eq!(r.leave("g", Via::Ws(99)), vec![]);
    assert_eq!(r.leave("nobody", Via::Ws(1)), vec![]);
}

#[test]
fn same_identity_replaces_the_old_session() {
    let mut r = room();
    let fx = r.join("g", "g", Role::Guest, Via::Ws(7)).unwrap();
    // The old connection hears it, not the new one.
    assert_eq!(
        fx[0],
        Effect::SendConn {
            conn: 2,
            msg: S::error("replaced", "the same identity joined elsewhere")
        }
    );
    assert_eq!(fx[1], Effect::Close { conn: 2 });
    assert_eq!(
        fx[2],
        Effect::Media(M::Leave {
            identity: "g".into()
        })
    );
    assert_eq!(r.via("g"), Some(Via::Ws(7)));
    assert_eq!(
        r.join("g", "g", Role::Guest, Via::Ws(7)),
        Err(RoomError::AlreadyJoined)
    );
}

#[test]
fn whip_rules() {
    let mut r = Room::new("r");
    assert_eq!(
        r.join("w", "w", Role::Viewer, Via::Whip),
        Err(RoomError::ViewerCannotPublish)
    );
    r.join("w", "w", Role::Guest, Via::Whip).unwrap();
    assert!(
        r.participant("w").unwrap().on_air,
        "a guest token used with WHIP is on air"
    );
    // Posting again (a publisher reconnecting) replaces the old WHIP session: its media is
    // dropped first, then the new session is announced.
    r.join("o", "o", Role::Guest, Via::Ws(3)).unwrap();
    let fx = r.join("w", "w", Role::Guest, Via::Whip).unwrap();
    let leave = fx
        .iter()
        .position(|e| {
            *e == Effect::Media(M::Leave {
                identity: "w".into(),
            })
        })
        .expect("the old session's media is dropped");
    let joined = fx
        .iter()
        .position(|e| {
            matches!(e, Effect::Send { to, msg: S::ParticipantJoined { participant } }
                if to == "o" && participant.identity == "w")
        })
        .expect("the others see the new session");
    assert!(leave < joined, "{fx:?}");
    assert!(r.participant("w").unwrap().on_air);
}

#[test]
fn ping_and_leave() {
    let mut r = room();
    assert_eq!(
        r.handle("g", C::Ping { ts: Some(1.5) }).unwrap(),
        vec![send("g", S::Pong { ts: Some(1.5) })]
    );
    let fx = r.handle("g", C::Leave).unwrap();
    assert_eq!(fx.last(), Some(&Effect::Close { conn: 2 }));
    assert!(r.participant("g").is_none());
    assert_eq!(
        r.handle("g", C::Ping { ts: None }),
        Err(RoomError::UnknownParticipant("g".into()))
    );
}

#[test]
fn parse_errors_are_classified() {
    use signaling::protocol::parse_client_message as p;
    use signaling::SignalingError as E;
    assert!(matches!(p("{"), Err(E::BadJson(_))));
    assert!(matches!(p("[]"), Err(E::BadMessage(_))));
    assert_eq!(p(r#"{"type":"nope"}"#), Err(E::UnknownType("nope".into())));
    assert!(matches!(p(r#"{"type":"invite"}"#), Err(E::BadMessage(_))));
    assert!(matches!(
        p(r#"{"type":"join","extra":1}"#),
        Err(E::BadMessage(_))
    ));
    assert!(matches!(p(&" ".repeat(70_000)), Err(E::TooLarge(_))));
    assert_eq!(p(r#"{"type":"join"}"#), Ok(C::Join { name: None }));
}

#[test]
fn track_events_follow_publishing() {
    use signaling::protocol::TrackInfo;
    let mut r = Room::new("r");
    r.join("h", "h", Role::Host, Via::Ws(1)).unwrap();
    r.join("g", "g", Role::Guest, Via::Ws(2)).unwrap();
    let video = TrackInfo {
        kind: MediaKind::Video,
        codec: "video/H264".into(),
    };
    let audio = TrackInfo {
        kind: MediaKind::Audio,
        codec: "audio/opus".into(),
    };
    let fx = r.set_publishing("h", true, vec![video.clone(), audio.clone()]);
    let to_g: Vec<&S> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Send { to, msg } if to == "g" => Some(msg),
            _ => None,
        })
        .collect();
    assert!(
        matches!(to_g[0], S::ParticipantUpdated { participant } if participant.tracks == vec![video.clone(), audio.clone()])
    );
    assert_eq!(
        to_g[1..],
        [
            &S::TrackPublished {
                identity: "h".into(),
                track: video.clone()
            },
            &S::TrackPublished {
                identity: "h".into(),
                track: audio.clone()
            }
        ]
    );
    assert_eq!(r.participant("h").unwrap().tracks.len(), 2);
    // The same state again changes nothing.
    assert!(r
        .set_publishing("h", true, vec![video.clone(), audio.clone()])
        .is_empty());
    // Publishing ends: both tracks are unpublished, the participant has none.
    let fx = r.set_publishing("h", false, vec![video]);
    let ended: Vec<MediaKind> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Send {
                to,
                msg: S::TrackUnpublished { identity, kind },
            } if to == "g" && identity == "h" => Some(*kind),
            _ => None,
        })
        .collect();
    assert_eq!(ended, [MediaKind::Video, MediaKind::Audio]);
    assert!(r.participant("h").unwrap().tracks.is_empty());
    assert!(!r.participant("h").unwrap().publishing);
}

#[test]
fn the_hosts_mutes_travel_to_the_room_on_another_node() {
    let mut r = room();
    r.handle(
        "h",
        C::Invite {
            identity: "g".into(),
        },
    )
    .unwrap();
    r.handle("g", C::AcceptInvite).unwrap();
    r.handle(
        "h",
        C::Mute {
            identity: "g".into(),
            kind: MediaKind::Video,
            muted: true,
        },
    )
    .unwrap();
    let carried = r.mutes();
    assert_eq!(carried, vec![("g".to_string(), false, true)]);
    // The room starts anew elsewhere; the guest joins there and starts as the host left it.
    let mut moved = Room::new("r");
    moved.carry_mutes(&carried);
    moved.join("g", "g", Role::Guest, Via::Ws(7)).unwrap();
    let p = moved.participant("g").unwrap();
    assert!(p.video_muted && !p.audio_muted, "{p:?}");
    // Nothing to carry: nobody starts muted.
    let mut fresh = Room::new("r");
    fresh.carry_mutes(&[("x".into(), false, false)]);
    assert!(fresh.mutes().is_empty());
}
