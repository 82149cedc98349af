//! Every control route with missing or wrong auth, bad JSON, an unknown room, bad RTMP URLs,
//! an over-long cue and a cue flood: each answers its JSON error, and good calls work.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

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
    assert_eq!(
        call(M::POST, ou.clone(), Some(&host), Some("[]".into()))
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
            Some(&host),
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
    // An output to a closed port is accepted and retries (nothing listens there).
    let (st, v) = call(
        M::POST,
        ou.clone(),
        Some(&host),
        Some(json!({"url": "rtmp://127.0.0.1:9/live/secret-key"}).to_string()),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert!(
        !v["url"].as_str().unwrap().contains("secret-key"),
        "the stream key is masked: {v}"
    );
    let id = v["id"].as_str().unwrap().to_owned();
    let (st, v) = call(M::GET, ou.clone(), Some(&host), None).await;
    assert_eq!(st, 200);
    assert_eq!(v["outputs"][0]["id"], id.as_str());
    assert_eq!(
        call(M::DELETE, format!("{ou}/nope"), Some(&host), None)
            .await
            .0,
        404
    );
    assert_eq!(
        call(M::DELETE, format!("{ou}/{id}"), Some(&host), None)
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
    loop {
        let (st, _) = call(
            M::POST,
            cu.clone(),
            Some(&host),
            Some(json!({"id": "first", "data": 1}).to_string()),
        )
        .await;
        if st == 202 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "program never started: {st}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
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
    assert_eq!(again["id"], "first");
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
    assert!(s.metric("cohost_program_cues_total").await >= 20);
}
