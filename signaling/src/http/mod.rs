//! The thin HTTP layer: WebSocket signaling, WHIP, WHEP and the room/token/layout/cue API, as
//! an axum [`Router`] over the shared [`Signaling`] hub ([`crate::hub`]). Each transport parses,
//! authorizes and calls the hub; room logic lives in [`crate::room`], media in the
//! [`crate::backend::MediaBackend`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;

use crate::protocol::MAX_MESSAGE_BYTES;

mod api;
mod error;
mod extract;
mod whip;
mod ws;

use crate::hub::*;
pub use crate::hub::{media_events, Config, RateLimit, Signaling, SignalingMetrics};
pub use api::json_body;
use api::*;
use error::*;
pub use error::{ApiError, Caller};
pub use extract::{Admin, HostOf, Member};
use whip::*;
use ws::*;

/// The signaling routes: `/ws`, `/whip/...`, `/whep/...`, `/api/tokens`, `/api/rooms...`.
pub fn router(state: Arc<Signaling>) -> Router {
    Router::new()
        .route("/ws", get(ws_handler))
        .route("/whip/{room}", post(whip_post).options(sdp_options))
        .route(
            "/whip/{room}/{identity}",
            axum::routing::delete(whip_delete).patch(whip_patch),
        )
        .route("/whep/{room}", post(whep_program_post).options(sdp_options))
        .route(
            "/whep/{room}/{identity}",
            post(whep_post).options(sdp_options_cohost),
        )
        .route(
            "/whep/{room}/{identity}/{session}",
            axum::routing::delete(whep_delete).patch(whep_patch),
        )
        .route("/api/tokens", post(mint_token))
        .route("/api/rooms", post(create_room).get(list_rooms))
        .route("/api/rooms/{room}", get(get_room).delete(delete_room))
        .route("/api/rooms/{room}/layout", put(put_layout))
        .route("/api/rooms/{room}/cues", post(post_cue))
        .layer(DefaultBodyLimit::max(MAX_MESSAGE_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            credentials_first,
        ))
        .with_state(state)
}

/// `OPTIONS` on a WHIP/WHEP endpoint (RFC 9725 §4.2, §4.4): what it takes, and the ICE
/// servers — TURN with credentials only for a caller with a valid token of the room.
pub(crate) async fn sdp_options(
    State(s): State<Arc<Signaling>>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Response {
    let identity = bearer(&headers)
        .ok()
        .and_then(|t| s.auth.verify_for_room(t, &room, now_s()).ok())
        .map(|c| c.identity);
    let mut r = (
        StatusCode::NO_CONTENT,
        [(
            header::HeaderName::from_static("accept-post"),
            "application/sdp",
        )],
    )
        .into_response();
    add_links(&mut r, s.config.ice.links(identity.as_deref(), now_s()));
    r
}

pub(crate) async fn sdp_options_cohost(
    state: State<Arc<Signaling>>,
    Path((room, _)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    sdp_options(state, Path(room), headers).await
}

pub(crate) fn add_links(r: &mut Response, links: Vec<String>) {
    for l in links {
        if let Ok(v) = header::HeaderValue::from_str(&l) {
            r.headers_mut().append(header::LINK, v);
        }
    }
}

/// Every route with a request body needs credentials (the API key or a valid participant
/// token): they are checked before the body is read, so a caller without them cannot hold a
/// connection and a buffer by sending a body slowly. Each handler then checks what exactly
/// the caller may do.
pub(crate) async fn credentials_first(
    State(s): State<Arc<Signaling>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let has_body = matches!(
        *req.method(),
        axum::http::Method::POST | axum::http::Method::PUT | axum::http::Method::PATCH
    );
    if has_body {
        if let Err(e) = s.caller(req.headers()) {
            s.metrics.errors.fetch_add(1, Ordering::Relaxed);
            let mut r = ApiError::from(e).into_response();
            // The body was not read: do not keep the connection for another request.
            r.headers_mut().insert(
                header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            return r;
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    use crate::auth::Auth;
    use crate::backend::CueAck;
    use crate::backend::{MediaBackend, MediaError, PublishOptions};
    use crate::protocol::MediaKind;
    use crate::room::{Effect, MediaCommand};

    fn auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().expect("header"));
        h
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for v in ["Bearer abc", "bearer abc", "BEARER abc", "  Bearer   abc "] {
            assert_eq!(bearer(&auth(v)).ok(), Some("abc"), "{v}");
        }
        for v in ["Basic abc", "Bearer ", "Bearerabc", "abc"] {
            assert!(bearer(&auth(v)).is_err(), "{v}");
        }
        assert!(bearer(&HeaderMap::new()).is_err());
    }

    #[test]
    fn whep_session_ids_name_their_owner_and_differ() {
        for owner in ["alice", "a-1", "OBS Studio/1 \u{fc}", "x.y"] {
            let a = whep_session_id(owner);
            let b = whep_session_id(owner);
            assert_ne!(a, b);
            assert_eq!(whep_session_owner(&a).as_deref(), Some(owner));
            assert!(a.bytes().all(|c| c.is_ascii_hexdigit() || c == b'.'), "{a}");
        }
        for bad in ["", "nodot", "6.x", "zz.00", "ff.00"] {
            assert_eq!(whep_session_owner(bad), None, "{bad}");
        }
    }

    /// Records the calls it gets; `publish` takes a while, as a real one does.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Recorder {
        fn log(&self, s: String) {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push(s);
        }
        fn calls(&self) -> Vec<String> {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
        }
    }

    #[async_trait::async_trait]
    impl MediaBackend for Recorder {
        async fn publish(
            &self,
            _: &str,
            who: &str,
            offer: String,
            _: PublishOptions,
        ) -> Result<String, MediaError> {
            self.log(format!("publish {who} {offer} start"));
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.log(format!("publish {who} {offer} done"));
            Ok("answer".into())
        }
        async fn unpublish(&self, _: &str, who: &str) {
            self.log(format!("unpublish {who}"));
        }
        async fn subscribe(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: String,
        ) -> Result<String, MediaError> {
            Ok(String::new())
        }
        async fn unsubscribe(&self, _: &str, _: &str, _: &str) -> bool {
            false
        }
        async fn add_candidate(
            &self,
            _: &str,
            _: &str,
            _: &crate::backend::PeerConnId,
            _: serde_json::Value,
        ) -> Result<(), MediaError> {
            Ok(())
        }
        async fn restart_ice(
            &self,
            _: &str,
            _: &str,
            _: &crate::backend::PeerConnId,
            _: &str,
            _: &str,
        ) -> Result<String, MediaError> {
            Err(MediaError::Unavailable("no media here".into()))
        }
        async fn set_muted(&self, _: &str, who: &str, _: MediaKind, muted: bool) {
            self.log(format!("mute {who} {muted}"));
        }
        async fn leave(&self, _: &str, who: &str) {
            self.log(format!("leave {who}"));
        }
        async fn create_room(
            &self,
            _: &str,
            _: Option<serde_json::Value>,
        ) -> Result<(), MediaError> {
            Ok(())
        }
        async fn close_room(&self, _: &str) {}
        async fn room_info(&self, _: &str) -> serde_json::Value {
            serde_json::Value::Null
        }
        async fn set_layout(
            &self,
            _: &str,
            l: serde_json::Value,
        ) -> Result<serde_json::Value, MediaError> {
            Ok(l)
        }
        async fn cue(
            &self,
            _: &str,
            _: &str,
            _: serde_json::Value,
            _: u32,
            _: Option<f64>,
        ) -> Result<CueAck, MediaError> {
            Err(MediaError::Unavailable("no program".into()))
        }
        async fn subscribe_program(
            &self,
            _: &str,
            _: &str,
            _: String,
        ) -> Result<String, MediaError> {
            Ok(String::new())
        }
        async fn unsubscribe_program(&self, _: &str, _: &str) -> bool {
            false
        }
        async fn subscribers(&self, _: &str) -> Vec<String> {
            Vec::new()
        }
        async fn room_emptied(&self, _: &str) {}
        async fn ice_ufrags(
            &self,
            _: &str,
            _: &str,
            _: &crate::backend::PeerConnId,
        ) -> Option<(String, String)> {
            None
        }
    }

    #[tokio::test]
    async fn a_participants_media_work_runs_in_order_others_do_not_wait() {
        let rec = Arc::new(Recorder::default());
        let (_tx, rx) = media_events();
        let s = Signaling::new(Auth::new("k", "s"), rec.clone(), Config::default(), rx);
        let cmd = |c: MediaCommand| Effect::Media(c);
        let publish = |who: &str, sdp: &str| {
            cmd(MediaCommand::Publish {
                identity: who.into(),
                sdp: sdp.into(),
            })
        };
        // alice: publish (slow), publish again, unpublish, mute, leave — decided in this order.
        // bob's publish, decided after them, does not wait for alice's.
        s.apply(
            "r",
            vec![
                publish("alice", "1"),
                publish("alice", "2"),
                cmd(MediaCommand::Unpublish {
                    identity: "alice".into(),
                }),
                cmd(MediaCommand::SetMuted {
                    identity: "alice".into(),
                    kind: MediaKind::Audio,
                    muted: true,
                }),
                cmd(MediaCommand::Leave {
                    identity: "alice".into(),
                }),
                publish("bob", "3"),
            ],
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        let calls = rec.calls();
        let alice: Vec<&str> = calls
            .iter()
            .map(String::as_str)
            .filter(|c| c.contains("alice"))
            .collect();
        assert_eq!(
            alice,
            [
                "publish alice 1 start",
                "publish alice 1 done",
                "publish alice 2 start",
                "publish alice 2 done",
                "unpublish alice",
                "mute alice true",
                "leave alice",
            ]
        );
        let pos = |c: &str| calls.iter().position(|x| x == c).expect(c);
        assert!(
            pos("publish bob 3 start") < pos("publish alice 1 done"),
            "bob waited for alice: {calls:?}"
        );
    }

    #[test]
    fn rate_limit_allows_bursts_then_the_rate() {
        let t0 = tokio::time::Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut l = RateLimit::new(10.0, 5.0, t0);
        // A burst of 5 at once, then nothing.
        assert_eq!((0..8).filter(|_| l.allow(t0)).count(), 5);
        // 10 a second: one more after 100 ms, not before.
        assert!(!l.allow(ms(50)));
        assert!(l.allow(ms(100)));
        assert!(!l.allow(ms(100)));
        // A long pause refills only up to the burst.
        assert_eq!((0..20).filter(|_| l.allow(ms(60_000))).count(), 5);
        // A clock going backwards gives nothing.
        assert!(!l.allow(ms(1)));
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(path_segment("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(path_segment("a b/c\u{fc}"), "a%20b%2Fc%C3%BC");
    }
}
