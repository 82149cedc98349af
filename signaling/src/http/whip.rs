//! WHIP and WHEP over HTTP: offers and answers, trickle ICE and ICE restarts (`PATCH`), `DELETE`, session ids and `Location`s.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::auth::{AuthError, Role};
use crate::backend::PeerConnId;

use super::*;
use crate::hub::*;

/// Trickle ICE on a WHIP/WHEP session (RFC 9725 §4.3): `pc` names the session's peer
/// connection, `who` its subscriber or publisher key. Checks, in order: the fragment's media type (`415`), the
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
    pc: &PeerConnId,
) -> Result<Response, ApiError> {
    require_content_type(headers, crate::trickle::SDPFRAG)?;
    let Some((ours, theirs)) = s.ice_ufrags(room, who, pc).await else {
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
        let answer = s.restart_ice(room, who, pc, ufrag, pwd).await?;
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
        s.add_candidate(room, who, pc, init).await?;
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
    trickle_patch(&s, &headers, &body, &room, &identity, &PeerConnId::Publish).await
}

pub(crate) async fn whep_patch(
    State(s): State<Arc<Signaling>>,
    Path((room, identity, session)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    s.whep_session_access(&headers, &room, &session)?;
    let pc = s.whep_pc(&room, &identity, &session).await;
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
    Member(claims): Member,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if claims.role == Role::Viewer {
        return Err(AuthError::Forbidden(Role::Viewer).into());
    }
    require_sdp(&headers)?;
    let offer = body_text(body)?;
    let answer = s.publish_whip(&claims, offer).await?;
    Ok(sdp_created(
        format!("/whip/{}/{}", claims.room, path_segment(&claims.identity)),
        answer,
        s.config.ice.links(Some(&claims.identity), now_s()),
    ))
}

pub(crate) async fn whip_delete(
    State(s): State<Arc<Signaling>>,
    Path((room, identity)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    s.whip_session_access(&headers, &room, &identity)?;
    s.end_whip(&room, &identity);
    Ok(StatusCode::OK)
}

pub(crate) async fn whep_post(
    State(s): State<Arc<Signaling>>,
    Member(claims): Member,
    Path((room, identity)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    s.may_watch_cohosts(&claims)?;
    require_sdp(&headers)?;
    let offer = body_text(body)?;
    let (session, answer) = s.subscribe_whep(&claims, &identity, offer).await?;
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
    if s.end_whep(&room, &identity, &session).await {
        Ok(StatusCode::OK)
    } else {
        Err(HubError::NoSession("WHEP session").into())
    }
}

pub(crate) async fn whep_program_post(
    State(s): State<Arc<Signaling>>,
    Member(claims): Member,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_sdp(&headers)?;
    let offer = body_text(body)?;
    let room = &claims.room;
    let (viewer, answer) = s.subscribe_program(&claims, offer).await?;
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
        if !self.has_whip_session(room, identity) {
            return Err(HubError::NoSession("WHIP session").into());
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
        let owner = whep_session_owner(session).ok_or(HubError::NoSession("WHEP session"))?;
        if owner != claims.identity && claims.role != Role::Host {
            return Err(AuthError::Forbidden(claims.role).into());
        }
        Ok(())
    }
}
