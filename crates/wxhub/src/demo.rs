//! The demo business page `wxhub dev` serves: a stand-in for a business
//! server that signs people in through the hub and redeems the hand-over
//! ticket with its client key, as a real one would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Html;
use axum::routing::get;

struct Demo {
    hub: String,
    appid: String,
    key: String,
    own: String,
    // The simulator, for the follow button of the messages page.
    sim: String,
    // Signs the hub's deliveries to /push.
    push_secret: String,
    // The latest deliveries, newest last; a bounded list.
    pushes: std::sync::Mutex<std::collections::VecDeque<serde_json::Value>>,
    http: reqwest::Client,
    // Tickets already redeemed, with their result, as a real business
    // server keeps a session: a reload or Back shows the same page instead
    // of redeeming a used ticket again.
    redeemed: std::sync::Mutex<HashMap<String, serde_json::Value>>,
}

/// Results kept for reloads; the oldest are dropped beyond this.
const REMEMBERED: usize = 1000;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>wxhub demo shop</title>\
<style>body{{font-family:-apple-system,sans-serif;margin:32px;max-width:520px}}a.btn{{display:block;padding:12px;margin:10px 0;background:#07c160;color:#fff;text-align:center;border-radius:6px;text-decoration:none}}</style>\
</head><body><h1>wxhub demo shop</h1>{body}</body></html>"
    ))
}

async fn index(State(d): State<Arc<Demo>>) -> Html<String> {
    let link = |scope: &str| {
        let q = serde_urlencoded::to_string([
            ("scope", scope),
            ("return_to", &format!("{}/welcome", d.own)),
        ])
        .unwrap_or_default();
        format!("{}/oauth/{}/authorize?{q}", d.hub, d.appid)
    };
    page(&format!(
        "<p>This page stands for your business server. It signs people in through wxhub and never sees a code or a secret.</p>\
<a class=\"btn\" id=\"login-base\" href=\"{}\">Sign in (openid only, silent)</a>\
<a class=\"btn\" id=\"login-profile\" href=\"{}\">Sign in with my WeChat profile</a>\
<p><a id=\"messages\" href=\"/messages\">Messages from followers</a> (the hub's push gateway delivers them here)</p>",
        esc(&link("base")),
        esc(&link("userinfo"))
    ))
}

async fn welcome(
    State(d): State<Arc<Demo>>,
    Query(q): Query<HashMap<String, String>>,
) -> Html<String> {
    if q.get("wxhub_error").map(String::as_str) == Some("access_denied") {
        return page(
            "<p id=\"refused\">You refused access: we did not get your WeChat identity. <a href=\"/\">Back</a></p>",
        );
    }
    let Some(ticket) = q.get("wxhub_ticket") else {
        return page("<p id=\"error\">No sign-in result. <a href=\"/\">Back</a></p>");
    };
    let known = d
        .redeemed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(ticket)
        .cloned();
    if let Some(v) = known {
        return signed_in(&v);
    }
    let resp = d
        .http
        .post(format!("{}/v1/oauth/tickets/redeem", d.hub))
        .bearer_auth(&d.key)
        .json(&serde_json::json!({"ticket": ticket}))
        .send()
        .await;
    let v: serde_json::Value = match resp {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(e) => {
            return page(&format!(
                "<p id=\"error\">Cannot reach the hub: {}</p>",
                esc(&e.without_url().to_string())
            ));
        }
    };
    if let Some(msg) = v["error"]["message"].as_str() {
        return page(&format!(
            "<p id=\"error\">{}</p><a href=\"/\">Back</a>",
            esc(msg)
        ));
    }
    {
        let mut seen = d.redeemed.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= REMEMBERED {
            seen.clear();
        }
        seen.insert(ticket.clone(), v.clone());
    }
    signed_in(&v)
}

fn signed_in(v: &serde_json::Value) -> Html<String> {
    let nickname = v["profile"]["nickname"].as_str().unwrap_or("");
    let greeting = if nickname.is_empty() {
        "Signed in (no profile asked for)".to_string()
    } else {
        format!("Hello, <b id=\"nickname\">{}</b>", esc(nickname))
    };
    page(&format!(
        "<p>{greeting}</p><p>openid <code id=\"openid\">{}</code>, scope <code id=\"scope\">{}</code></p><a href=\"/\">Back</a>",
        esc(v["openid"].as_str().unwrap_or("")),
        esc(v["scope"].as_str().unwrap_or(""))
    ))
}

/// Deliveries the messages page keeps.
const PUSHES_KEPT: usize = 50;

/// `POST /push`: the hub delivers a message, as it would to a business
/// server: checked by its HMAC, kept for the messages page.
async fn push_hook(
    State(d): State<Arc<Demo>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    use hmac::Mac;
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(d.push_secret.as_bytes()) else {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
    };
    mac.update(h("x-wxhub-timestamp").as_bytes());
    mac.update(b".");
    mac.update(&body);
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        want.as_bytes(),
        h("x-wxhub-signature").as_bytes(),
    )) {
        return axum::http::StatusCode::UNAUTHORIZED;
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return axum::http::StatusCode::BAD_REQUEST;
    };
    let mut list = d.pushes.lock().unwrap_or_else(|e| e.into_inner());
    // The delivery id makes a retried delivery harmless.
    if !list.iter().any(|x| x["delivery_id"] == v["delivery_id"]) {
        if list.len() >= PUSHES_KEPT {
            list.pop_front();
        }
        list.push_back(v);
    }
    axum::http::StatusCode::OK
}

/// `GET /messages`: what followers did, newest first.
async fn messages(State(d): State<Arc<Demo>>) -> Html<String> {
    let list: Vec<serde_json::Value> = d
        .pushes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .rev()
        .cloned()
        .collect();
    let mut rows = String::new();
    for v in &list {
        let what = match v["event"].as_str() {
            Some(e) => format!("event {e}"),
            None => v["msg_type"].as_str().unwrap_or_default().to_string(),
        };
        let profile = &v["follower"]["profile"];
        let detail = if profile.is_object() {
            format!(
                "follows since {} via {}",
                profile["subscribe_time"],
                profile["subscribe_scene"].as_str().unwrap_or("?")
            )
        } else {
            v["fields"].to_string()
        };
        rows.push_str(&format!(
            "<li class=\"push\" data-event=\"{}\"><b>{}</b> from <code>{}</code>: {}</li>",
            esc(v["event"].as_str().unwrap_or_default()),
            esc(&what),
            esc(v["from_user_name"].as_str().unwrap_or_default()),
            esc(&detail)
        ));
    }
    page(&format!(
        "<p>Messages and events the hub delivered to this page (its push subscriber). Follow the account as a simulated person and watch it arrive:</p>\
<form method=\"post\" action=\"/messages/follow\"><button id=\"follow\" type=\"submit\">Bob follows the account</button></form>\
<ul id=\"pushes\">{rows}</ul><p><a href=\"/messages\">Refresh</a> · <a href=\"/\">Back</a></p>"
    ))
}

/// `POST /messages/follow`: asks the simulator to make Bob follow (or, if
/// he does, unfollow and follow again), then shows the messages page.
async fn follow(State(d): State<Arc<Demo>>) -> axum::response::Redirect {
    let act = |what: &'static str| {
        d.http
            .post(format!("{}/_sim/people/bob/{what}", d.sim))
            .json(&serde_json::json!({"appid": d.appid, "wait": true}))
            .send()
    };
    if let Ok(r) = act("follow").await
        && let Ok(v) = r.json::<serde_json::Value>().await
        && v["changed"] == false
    {
        let _ = act("unfollow").await;
        let _ = act("follow").await;
    }
    axum::response::Redirect::to("/messages")
}

/// Serves the demo page on a bound listener until the returned task is aborted.
pub fn serve(
    listener: tokio::net::TcpListener,
    hub: String,
    sim: String,
    appid: String,
    key: String,
    push_secret: String,
) -> tokio::task::JoinHandle<()> {
    let own = listener
        .local_addr()
        .map(|a: SocketAddr| format!("http://{a}"))
        .unwrap_or_default();
    let demo = Arc::new(Demo {
        hub,
        appid,
        key,
        own,
        sim,
        push_secret,
        pushes: std::sync::Mutex::new(std::collections::VecDeque::new()),
        http: reqwest::Client::new(),
        redeemed: std::sync::Mutex::new(HashMap::new()),
    });
    let app = Router::new()
        .route("/", get(index))
        .route("/welcome", get(welcome))
        .route("/push", axum::routing::post(push_hook))
        .route("/messages", get(messages))
        .route("/messages/follow", axum::routing::post(follow))
        .with_state(demo);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}
