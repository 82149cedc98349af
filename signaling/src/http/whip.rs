//! WHIP and WHEP over HTTP: offers and answers, trickle ICE and ICE restarts (`PATCH`), `DELETE`, session ids and `Location`s.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tracing::{info_span, Instrument};

use crate::auth::{AuthError, Role};
use crate::backend::MediaError;
use crate::room::{Room, Via};

use super::*;
use crate::hub::*;

/// Trickle ICE on a WHIP/WHEP session (RFC 9725 §4.3): `pc` names the session's peer
/// connection for the backend (`publish`, `subscribe:<target>` or `program`), `who` its
/// subscriber or publisher key. Checks, in order: the fragment's media type (`415`), the
/// session (`404`), `If-Match` against its entity tag (`412`), the fragment (`400`, nothing
/// applied). An ICE restart (a new ufrag) restarts the session's ICE: `200` with the server's
/// new credentials and candidates. Then every candidate is handed to the session's ICE agent:
/// `204` (or that `200`).
pub(crate) async fn trickle_patch(
    s: &Signaling,
    headers: &HeaderMap,
    body: &Bytes,
    room: &str,
    who: &str,
    pc: &str,
) -> Result<Response, ApiError> {
    require_content_type(headers, crate::trickle::SDPFRAG)?;
    let Some((ours, theirs)) = s.backend.ice_ufrags(room, who, pc).await else {
        return Err(ApiError::new(404, "not_found", "no such session"));
    };
    let tag = crate::trickle::etag(&ours);
    if let Some(m) = headers.get(header::IF_MATCH) {
        let m = m.to_str().unwrap_or("");
        if !crate::trickle::if_match(m, &tag) {
            return Err(ApiError::new(
                412,
                "precondition_failed",
                "If-Match does not match the session (it restarted or ended)",
            ));
        }
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::new(400, "bad_request", "the fragment is not UTF-8"))?;
    let frag = crate::trickle::parse(text)
        .map_err(|e| ApiError::new(400, "bad_request", e.to_string()))?;
    let mut restarted = None;
    if frag.is_restart(&theirs) {
        // RFC 9725 §4.4: the server restarts too and answers its new credentials and
        // candidates (`200`, a fragment); the client's new candidates are then added.
        let (Some(ufrag), Some(pwd)) = (frag.ufrag.as_deref(), frag.pwd.as_deref()) else {
            return Err(ApiError::new(
                400,
                "bad_request",
                "an ICE restart needs a=ice-ufrag and a=ice-pwd",
            ));
        };
        let answer = s
            .backend
            .restart_ice(room, who, pc, ufrag, pwd)
            .await
            .map_err(ApiError::from)?;
        let body = crate::trickle::restart_fragment(&answer).ok_or_else(|| {
            ApiError::new(
                500,
                "internal",
                "the restarted answer has no ICE credentials",
            )
        })?;
        let tag = crate::trickle::sdp_ufrag(&answer)
            .map(crate::trickle::etag)
            .unwrap_or_default();
        restarted = Some((body, tag));
    }
    for c in frag.candidates {
        let init = serde_json::json!({
            "candidate": c.candidate,
            "sdpMid": c.mid,
            "sdpMLineIndex": c.mline_index,
        });
        s.backend
            .add_candidate(room, who, pc, init)
            .await
            .map_err(ApiError::from)?;
    }
    if let Some((body, tag)) = restarted {
        return Ok((
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, crate::trickle::SDPFRAG.to_owned()),
                (header::ETAG, tag),
            ],
            body,
        )
            .into_response());
    }
    Ok((StatusCode::NO_CONTENT, [(header::ETAG, tag)]).into_response())
}

pub(crate) async fn whip_patch(
    State(s): State<Arc<Signaling>>,
    Path((room, identity)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    s.whip_session_access(&headers, &room, &identity)?;
    trickle_patch(&s, &headers, &body, &room, &identity, "publish").await
}

pub(crate) async fn whep_patch(
    State(s): State<Arc<Signaling>>,
    Path((room, identity, session)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    s.whep_session_access(&headers, &room, &session)?;
    // A co-host may be called `program`: the program viewer is tried first.
    if identity == "program"
        && s.backend
            .ice_ufrags(&room, &session, "program")
            .await
            .is_some()
    {
        return trickle_patch(&s, &headers, &body, &room, &session, "program").await;
    }
    let pc = format!("subscribe:{identity}");
    trickle_patch(&s, &headers, &body, &room, &session, &pc).await
}

/// `415` unless the request's `Content-Type` is `media_type` (parameters allowed).
pub(crate) fn require_content_type(headers: &HeaderMap, media_type: &str) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.trim().to_ascii_lowercase().starts_with(media_type) {
        return Err(ApiError::new(
            415,
            "unsupported_media_type",
            format!("Content-Type must be {media_type}"),
        ));
    }
    Ok(())
}

pub(crate) fn require_sdp(headers: &HeaderMap) -> Result<(), ApiError> {
    require_content_type(headers, "application/sdp")
}

pub(crate) fn sdp_created(location: String, answer: String, links: Vec<String>) -> Response {
    let mut r = (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_owned()),
            (header::LOCATION, location),
            (
                header::HeaderName::from_static("accept-patch"),
                crate::trickle::SDPFRAG.to_owned(),
            ),
        ],
        answer.clone(),
    )
        .into_response();
    if let Some(tag) = crate::trickle::sdp_ufrag(&answer)
        .map(crate::trickle::etag)
        .and_then(|t| header::HeaderValue::from_str(&t).ok())
    {
        r.headers_mut().insert(header::ETAG, tag);
    }
    add_links(&mut r, links);
    r
}

pub(crate) fn body_text(body: Bytes) -> Result<String, ApiError> {
    String::from_utf8(body.to_vec()).map_err(|_| ApiError::new(400, "bad_sdp", "SDP must be UTF-8"))
}

pub(crate) async fn whip_post(
    State(s): State<Arc<Signaling>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let claims = s.auth.verify_for_room(bearer(&headers)?, &room, now_s())?;
    if claims.role == Role::Viewer {
        return Err(AuthError::Forbidden(Role::Viewer).into());
    }
    require_sdp(&headers)?;
    let offer = body_text(body)?;
    let me = claims.identity.clone();
    let name = claims.name.clone().unwrap_or_else(|| me.clone());
    let fx = {
        let mut g = s.lock();
        let entry = g.rooms.entry(room.clone()).or_insert_with(|| RoomEntry {
            room: Room::with_limits(&room, s.config.room_limits),
            persistent: false,
        });
        entry
            .room
            .join(&me, &name, claims.role, Via::Whip)
            .map_err(|e| ApiError::new(409, e.code(), e.to_string()))?
    };
    // A replaced WHIP session's media is dropped (queued by `join`) before this publication
    // starts: both go through the participant's media queue.
    s.apply(&room, fx);
    let span = info_span!("participant", room = %room, identity = %me);
    let opts = s.publish_options(&room, &me, true);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (room2, me2) = (room.clone(), me.clone());
    s.enqueue(
        &room,
        &me,
        Box::new(move |s| {
            Box::pin(async move {
                let res = s.backend.publish(&room2, &me2, offer, opts).await;
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
    match res {
        Ok(answer) => Ok(sdp_created(
            format!("/whip/{room}/{}", path_segment(&me)),
            answer,
            s.config.ice.links(Some(&me), now_s()),
        )),
        Err(e) => {
            s.leave(&room, &me, Via::Whip);
            Err(e.into())
        }
    }
}

pub(crate) async fn whip_delete(
    State(s): State<Arc<Signaling>>,
    Path((room, identity)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    s.whip_session_access(&headers, &room, &identity)?;
    s.leave(&room, &identity, Via::Whip);
    Ok(StatusCode::OK)
}

pub(crate) async fn whep_post(
    State(s): State<Arc<Signaling>>,
    Path((room, identity)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let claims = s.auth.verify_for_room(bearer(&headers)?, &room, now_s())?;
    // One rule with WebSocket `subscribe`: viewers watch the program, unless on air.
    let viewer_on_air = || {
        s.lock()
            .rooms
            .get(&room)
            .and_then(|r| r.room.participant(&claims.identity).map(|p| p.on_air))
            .unwrap_or(false)
    };
    if claims.role == Role::Viewer && !viewer_on_air() {
        return Err(AuthError::Forbidden(Role::Viewer).into());
    }
    require_sdp(&headers)?;
    let offer = body_text(body)?;
    let publishing = s
        .lock()
        .rooms
        .get(&room)
        .and_then(|r| r.room.participant(&identity).map(|p| p.publishing))
        .unwrap_or(false);
    s.check_subscription_caps(&room, &claims.identity).await?;
    if !publishing {
        return Err(ApiError::new(
            404,
            "not_publishing",
            format!("`{identity}` is not publishing in `{room}`"),
        ));
    }
    let session = whep_session_id(&claims.identity);
    let answer = s
        .backend
        .subscribe(&room, &session, &identity, offer)
        .await?;
    Ok(sdp_created(
        format!("/whep/{room}/{}/{session}", path_segment(&identity)),
        answer,
        s.config.ice.links(Some(&claims.identity), now_s()),
    ))
}

/// `s` as one URL path segment (percent-encoded), so any identity round-trips.
pub(crate) fn path_segment(s: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

pub(crate) async fn whep_delete(
    State(s): State<Arc<Signaling>>,
    Path((room, identity, session)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    s.whep_session_access(&headers, &room, &session)?;
    let not_found = || ApiError::new(404, "not_found", "no such WHEP session");
    // A co-host may be called `program`: its subscriptions are tried after the program's.
    let ended = (identity == "program" && s.backend.unsubscribe_program(&room, &session).await)
        || s.backend.unsubscribe(&room, &session, &identity).await;
    if ended {
        Ok(StatusCode::OK)
    } else {
        Err(not_found())
    }
}

pub(crate) async fn whep_program_post(
    State(s): State<Arc<Signaling>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let claims = s.auth.verify_for_room(bearer(&headers)?, &room, now_s())?;
    require_sdp(&headers)?;
    let offer = body_text(body)?;
    let viewer = whep_session_id(&claims.identity);
    let answer = s.backend.subscribe_program(&room, &viewer, offer).await?;
    Ok(sdp_created(
        format!("/whep/{room}/program/{viewer}"),
        answer,
        s.config.ice.links(Some(&claims.identity), now_s()),
    ))
}

impl Signaling {
    /// May the caller act on `identity`'s WHIP session in `room` (its own, or the host), and is
    /// there one? (`DELETE` and `PATCH` of a WHIP `Location`.)
    pub(crate) fn whip_session_access(
        &self,
        headers: &HeaderMap,
        room: &str,
        identity: &str,
    ) -> Result<(), ApiError> {
        let claims = self.auth.verify_for_room(bearer(headers)?, room, now_s())?;
        if claims.identity != identity && claims.role != Role::Host {
            return Err(AuthError::Forbidden(claims.role).into());
        }
        let present = self
            .lock()
            .rooms
            .get(room)
            .and_then(|r| r.room.via(identity))
            == Some(Via::Whip);
        if !present {
            return Err(ApiError::new(404, "not_found", "no such WHIP session"));
        }
        Ok(())
    }

    /// May the caller act on the WHEP session `session` (its owner, or the host)? An id that
    /// names no owner is `404`.
    pub(crate) fn whep_session_access(
        &self,
        headers: &HeaderMap,
        room: &str,
        session: &str,
    ) -> Result<(), ApiError> {
        let claims = self.auth.verify_for_room(bearer(headers)?, room, now_s())?;
        let owner = whep_session_owner(session)
            .ok_or_else(|| ApiError::new(404, "not_found", "no such WHEP session"))?;
        if owner != claims.identity && claims.role != Role::Host {
            return Err(AuthError::Forbidden(claims.role).into());
        }
        Ok(())
    }
}
