//! Every control route with missing or wrong auth, bad JSON, an unknown room, bad RTMP URLs,
//! an over-long cue and a cue flood: each answers its JSON error, and good calls work.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use testkit as common;

use common::*;
use serde_json::{json, Value};

async fn call(
    method: reqwest::Method,
    url: String,
    auth: Option<&str>,
    body: Option<String>,
) -> (u16, Value) {
    let mut r = reqwest::Client::new().request(method, url);
    if let Some(a) = auth {
        r = r.bearer_auth(a);
    }
    if let Some(b) = body {
        r = r.header("content-type", "application/json").body(b);
    }
    let resp = r.send().await.unwrap();
    let st = resp.status().as_u16();
    let v = resp.json::<Value>().await.unwrap_or(Value::Null);
    if st >= 400 {
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{st}: {v}"
        );
    }
    (st, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_routes_answer_errors_and_work() {
    use reqwest::Method as M;
    let s = start_server().await;
    let room = "ctl";
    let host = s.token(room, "h", "host").await;
    let guest = s.token(room, "g", "guest").await;
    let other_host = s.token("elsewhere", "x", "host").await;
    let u = |p: &str| s.url(p);

    // Rooms.
    assert_eq!(
        call(
            M::POST,
            u("/api/rooms"),
            None,
            Some(json!({"name": room}).to_string())
        )
        .await
        .0,
        401
    );
    assert_eq!(
        call(
            M::POST,
            u("/api/rooms"),
            Some(&host),
            Some(json!({"name": room}).to_string())
        )
        .await
        .0,
        403
    );
    assert_eq!(
        call(M::POST, u("/api/rooms"), Some(API_KEY), Some("{".into()))
            .await
            .0,
        400
    );
    assert_eq!(
        call(
            M::POST,
            u("/api/rooms"),
            Some(API_KEY),
            Some(json!({"name": "a/b"}).to_string())
        )
        .await
        .0,
        400
    );
    assert_eq!(
        call(
            M::POST,
            u("/api/rooms"),
            Some(API_KEY),
            Some(json!({"name": room, "mix": {"width": 99999}}).to_string())
        )
        .await
        .0,
        400
    );
    let (st, v) = call(
        M::POST,
        u("/api/rooms"),
        Some(API_KEY),
        Some(
            json!({"name": room, "mix": {"width": 640, "height": 360, "layout": "side_by_side"}})
                .to_string(),
        ),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["media"]["program"]["mix"]["width"], 640);
    assert_eq!(
        call(M::GET, u("/api/rooms/nope"), Some(API_KEY), None)
            .await
            .0,
        404
    );
    assert_eq!(
        call(M::GET, u(&format!("/api/rooms/{room}")), Some(&guest), None)
            .await
            .0,
        403
    );
    assert_eq!(
        call(M::GET, u(&format!("/api/rooms/{room}")), Some(&host), None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(M::DELETE, u("/api/rooms/nope"), Some(API_KEY), None)
            .await
            .0,
        404
    );
    let (st, v) = call(M::GET, u("/api/rooms"), Some(API_KEY), None).await;
    assert_eq!(st, 200);
    assert_eq!(v["rooms"][0]["name"], room);

    // Layout.
    let layout = |t: &str| Some(json!({"template": t}).to_string());
    let lu = u(&format!("/api/rooms/{room}/layout"));
    assert_eq!(call(M::PUT, lu.clone(), None, layout("grid")).await.0, 401);
    assert_eq!(
        call(M::PUT, lu.clone(), Some("garbage"), layout("grid"))
            .await
            .0,
        401
    );
    assert_eq!(
        call(M::PUT, lu.clone(), Some(&guest), layout("grid"))
            .await
            .0,
        403
    );
    assert_eq!(
        call(M::PUT, lu.clone(), Some(&other_host), layout("grid"))
            .await
            .0,
        403
    );
    assert_eq!(
        call(M::PUT, lu.clone(), Some(&host), Some("{oops".into()))
            .await
            .0,
        400
    );
    assert_eq!(
        call(M::PUT, lu.clone(), Some(&host), layout("hexagon"))
            .await
            .0,
        400
    );
    assert_eq!(
        call(
            M::PUT,
            u("/api/rooms/nope/layout"),
            Some(API_KEY),
            layout("grid")
        )
        .await
        .0,
        404
    );
    let (st, v) = call(M::PUT, lu.clone(), Some(&host), layout("speaker")).await;
    assert_eq!(st, 200, "{v}");
    let regions =
        json!({"regions": [{"identity": "h", "x": 0, "y": 0, "w": 320, "h": 180, "z": 1}]});
    assert_eq!(
        call(M::PUT, lu.clone(), Some(API_KEY), Some(regions.to_string()))
            .await
            .0,
        200
    );

    // Outputs.
    let ou = u(&format!("/api/rooms/{room}/outputs"));
    assert_eq!(
        call(
            M::POST,
            ou.clone(),
            None,
            Some(json!({"url": "rtmp://127.0.0.1/live/x"}).to_string())
        )
        .await
        .0,
        401
    );
    assert_eq!(
        call(
            M::POST,
            ou.clone(),
            Some(&guest),
            Some(json!({"url": "rtmp://127.0.0.1/live/x"}).to_string())
        )
        .await
        .0,
        403
    );
    // Outputs are the operator's (stream keys, where the program goes): a host token of the
    // room is refused, unlike for layout and cues.
    for (m, url) in [
        (M::POST, ou.clone()),
        (M::GET, ou.clone()),
        (M::DELETE, format!("{ou}/x")),
    ] {
        let body = (m == M::POST).then(|| json!({"url": "rtmp://127.0.0.1/live/x"}).to_string());
        assert_eq!(call(m, url, Some(&host), body).await.0, 403);
    }
    assert_eq!(
        call(M::POST, ou.clone(), Some(API_KEY), Some("[]".into()))
            .await
            .0,
        400
    );
    for bad in [
        "",
        "not a url",
        "http://host/app/key",
        "rtmp://",
        "rtmp://host",
        "rtmp://host/app",
        "rtmp://host:99999/app/key",
    ] {
        let (st, v) = call(
            M::POST,
            ou.clone(),
            Some(API_KEY),
            Some(json!({"url": bad}).to_string()),
        )
        .await;
        assert_eq!(st, 400, "{bad}: {v}");
    }
    assert_eq!(
        call(
            M::POST,
            u("/api/rooms/nope/outputs"),
            Some(API_KEY),
            Some(json!({"url": "rtmp://127.0.0.1/live/x"}).to_string())
        )
        .await
        .0,
        404
    );
    assert_eq!(
        call(M::GET, u("/api/rooms/nope/outputs"), Some(API_KEY), None)
            .await
            .0,
        404
    );
    // An output to a closed port is accepted and retries (nothing listens there).
    let (st, v) = call(
        M::POST,
        ou.clone(),
        Some(API_KEY),
        Some(json!({"url": "rtmp://127.0.0.1:9/live/secret-key"}).to_string()),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert!(
        !v["url"].as_str().unwrap().contains("secret-key"),
        "the stream key is masked: {v}"
    );
    let id = v["id"].as_str().unwrap().to_owned();
    let (st, v) = call(M::GET, ou.clone(), Some(API_KEY), None).await;
    assert_eq!(st, 200);
    assert_eq!(v["outputs"][0]["id"], id.as_str());
    assert_eq!(
        call(M::DELETE, format!("{ou}/nope"), Some(API_KEY), None)
            .await
            .0,
        404
    );
    assert_eq!(
        call(M::DELETE, format!("{ou}/{id}"), Some(API_KEY), None)
            .await
            .0,
        204
    );

    // Cues need a running program: one co-host publishes.
    let cu = u(&format!("/api/rooms/{room}/cues"));
    let (st, v) = call(
        M::POST,
        cu.clone(),
        Some(&host),
        Some(json!({"id": "early"}).to_string()),
    )
    .await;
    assert_eq!(st, 503, "no program yet: {v}");
    let (_p, _r, _stop) = whip_publish(&s, room, "h", "host", 320, 240).await;
    eventually("program running", 10, || true).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let first = loop {
        let (st, v) = call(
            M::POST,
            cu.clone(),
            Some(&host),
            Some(json!({"id": "first", "data": 1}).to_string()),
        )
        .await;
        if st == 202 {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "program never started: {st}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(first["pts_ms"].is_u64(), "{first}");
    assert_eq!(
        call(
            M::POST,
            cu.clone(),
            None,
            Some(json!({"id": "c"}).to_string())
        )
        .await
        .0,
        401
    );
    assert_eq!(
        call(
            M::POST,
            cu.clone(),
            Some(&guest),
            Some(json!({"id": "c"}).to_string())
        )
        .await
        .0,
        403
    );
    assert_eq!(
        call(
            M::POST,
            cu.clone(),
            Some(&other_host),
            Some(json!({"id": "c"}).to_string())
        )
        .await
        .0,
        403
    );
    assert_eq!(
        call(M::POST, cu.clone(), Some(&host), Some("{\"id\":".into()))
            .await
            .0,
        400
    );
    assert_eq!(
        call(
            M::POST,
            cu.clone(),
            Some(&host),
            Some(json!({"id": ""}).to_string())
        )
        .await
        .0,
        400
    );
    assert_eq!(
        call(
            M::POST,
            u("/api/rooms/nope/cues"),
            Some(API_KEY),
            Some(json!({"id": "c"}).to_string())
        )
        .await
        .0,
        404
    );
    let long = json!({"id": "long", "data": {"text": "x".repeat(300)}});
    assert_eq!(
        call(M::POST, cu.clone(), Some(&host), Some(long.to_string()))
            .await
            .0,
        413
    );
    // Idempotent: the same id answers 200 with the first answer.
    let (st, again) = call(
        M::POST,
        cu.clone(),
        Some(&host),
        Some(json!({"id": "first", "data": 2}).to_string()),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(again, first, "the first answer again");
    // Flood: the room's limit (20 per 10 s) answers 429 past it.
    let mut codes = Vec::new();
    for i in 0..25 {
        codes.push(
            call(
                M::POST,
                cu.clone(),
                Some(API_KEY),
                Some(json!({"id": format!("flood-{i}")}).to_string()),
            )
            .await
            .0,
        );
    }
    assert_eq!(codes.iter().filter(|c| **c == 202).count(), 19, "{codes:?}");
    assert!(codes[19..].iter().all(|c| *c == 429), "{codes:?}");
    // A retried id still gets its first answer while new cues are refused.
    let (st, again) = call(
        M::POST,
        cu.clone(),
        Some(&host),
        Some(json!({"id": "first", "data": 3}).to_string()),
    )
    .await;
    assert_eq!((st, &again), (200, &first), "a retry is not a new cue");
    assert!(s.metric("cohost_program_cues_total").await >= 20);
}

/// A room created through the API keeps its mix and layout from one show to the next (a
/// program stops when its co-hosts leave; the next one starts with the room's settings) until
/// it is deleted. A room created by a join forgets them with its program, unless an operator
/// gave it an output: then it stays (listed, deletable) and deleting it ends the outputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_keep_their_settings_between_shows_until_deleted() {
    use reqwest::Method as M;
    let s = start_server_with(|c| c.program.grace = std::time::Duration::from_millis(200)).await;
    let u = |p: &str| s.url(p);
    let mix = json!({"width": 640, "height": 360, "fps": 15, "layout": {"template": "pip"}});
    let (st, v) = call(
        M::POST,
        u("/api/rooms"),
        Some(API_KEY),
        Some(json!({"name": "show", "mix": mix}).to_string()),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let (st, _) = call(
        M::PUT,
        u("/api/rooms/show/layout"),
        Some(API_KEY),
        Some(json!({"template": "speaker"}).to_string()),
    )
    .await;
    assert_eq!(st, 200);
    let program = |v: &Value| v["media"]["program"].clone();
    for show in 0..2 {
        let (_p, res, stop) = whip_publish(&s, "show", "host", "host", 320, 240).await;
        eventually_async("program running", 15, || async {
            program(&s.get_api("/api/rooms/show").await)["frames"]
                .as_u64()
                .is_some_and(|n| n > 0)
        })
        .await;
        let p = program(&s.get_api("/api/rooms/show").await);
        assert_eq!(p["mix"]["width"], 640, "show {show}: {p}");
        assert_eq!(p["mix"]["fps"], 15, "show {show}: {p}");
        assert_eq!(p["layout"]["template"], "speaker", "show {show}: {p}");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            delete(&res, &s.token("show", "host", "host").await).await,
            200
        );
        eventually_async("program stopped", 15, || async {
            s.metric("cohost_programs_running").await == 0
        })
        .await;
        let p = program(&s.get_api("/api/rooms/show").await);
        assert_eq!(p["running"], false, "show {show}: {p}");
        assert_eq!(p["mix"]["height"], 360, "kept after the show: {p}");
        assert_eq!(
            p["layout"]["template"], "speaker",
            "kept after the show: {p}"
        );
    }
    let (st, _) = call(M::DELETE, u("/api/rooms/show"), Some(API_KEY), None).await;
    assert_eq!(st, 204);
    assert_eq!(
        call(M::GET, u("/api/rooms/show"), Some(API_KEY), None)
            .await
            .0,
        404
    );

    // A room made by a join, given an output, outlives its co-hosts.
    let (_p, res, stop) = whip_publish(&s, "adhoc", "host", "host", 320, 240).await;
    let (st, v) = call(
        M::POST,
        u("/api/rooms/adhoc/outputs"),
        Some(API_KEY),
        Some(json!({"url": "rtmp://127.0.0.1:9/live/k"}).to_string()),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        delete(&res, &s.token("adhoc", "host", "host").await).await,
        200
    );
    eventually_async("program stopped", 15, || async {
        s.metric("cohost_programs_running").await == 0
    })
    .await;
    let (st, v) = call(M::GET, u("/api/rooms"), Some(API_KEY), None).await;
    assert_eq!(st, 200);
    assert!(
        v["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "adhoc"),
        "{v}"
    );
    let (st, v) = call(M::GET, u("/api/rooms/adhoc/outputs"), Some(API_KEY), None).await;
    assert_eq!((st, v["outputs"].as_array().map(Vec::len)), (200, Some(1)));
    assert!(
        s.metrics()
            .await
            .contains("cohost_rtmp_output_state{room=\"adhoc\""),
        "the output is in the metrics"
    );
    let (st, _) = call(M::DELETE, u("/api/rooms/adhoc"), Some(API_KEY), None).await;
    assert_eq!(st, 204);
    assert_eq!(
        call(M::GET, u("/api/rooms/adhoc/outputs"), Some(API_KEY), None)
            .await
            .0,
        404
    );
    eventually_async("outputs gone", 10, || async {
        !s.metrics().await.contains("room=\"adhoc\"")
    })
    .await;

    // A room made by a join without outputs is forgotten with its program.
    let (_p, res, stop) = whip_publish(&s, "brief", "host", "host", 320, 240).await;
    eventually_async("program running", 15, || async {
        s.metric("cohost_programs_running").await == 1
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        delete(&res, &s.token("brief", "host", "host").await).await,
        200
    );
    eventually_async("room gone", 15, || async {
        call(M::GET, u("/api/rooms/brief"), Some(API_KEY), None)
            .await
            .0
            == 404
    })
    .await;
}

/// `POST /api/tokens`: the default lifetime is 6 h, `ttl_s` sets it (capped at 30 days), a
/// `name` travels in the token and shows in the room; a token past `expires_at` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_tokens_carry_lifetime_and_name() {
    use reqwest::Method as M;
    let s = start_server().await;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    let mint = |body: Value| {
        call(
            M::POST,
            s.url("/api/tokens"),
            Some(API_KEY),
            Some(body.to_string()),
        )
    };
    let (st, v) = mint(json!({"room": "t", "identity": "a", "role": "guest"})).await;
    assert_eq!(st, 200, "{v}");
    let left = v["expires_at"].as_i64().unwrap() - now();
    assert!(
        (6 * 3600 - 5..=6 * 3600).contains(&left),
        "default lifetime: {left} s"
    );
    let (_, v) =
        mint(json!({"room": "t", "identity": "a", "role": "guest", "ttl_s": 10_000_000_000u64}))
            .await;
    let left = v["expires_at"].as_i64().unwrap() - now();
    assert!(
        (30 * 86400 - 5..=30 * 86400).contains(&left),
        "capped: {left} s"
    );

    // The name shows in the room; a 1 s token is refused once expired.
    let (_, v) =
        mint(json!({"room": "t", "identity": "n", "role": "host", "name": "Ann Lee", "ttl_s": 2}))
            .await;
    let token = v["token"].as_str().unwrap().to_owned();
    let mut ws = Ws::connect(&s, &token).await;
    ws.send(json!({"type": "join"}));
    let j = ws.wait_type("joined").await;
    assert_eq!(j["you"]["name"], "Ann Lee");
    // Expiry is checked with no leeway.
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let (st, v) = call(M::GET, s.url("/api/rooms/t"), Some(&token), None).await;
    assert_eq!(st, 401, "an expired token: {v}");
}
