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
<a class=\"btn\" id=\"login-profile\" href=\"{}\">Sign in with my WeChat profile</a>",
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

/// Serves the demo page on a bound listener until the returned task is aborted.
pub fn serve(
    listener: tokio::net::TcpListener,
    hub: String,
    appid: String,
    key: String,
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
        http: reqwest::Client::new(),
        redeemed: std::sync::Mutex::new(HashMap::new()),
    });
    let app = Router::new()
        .route("/", get(index))
        .route("/welcome", get(welcome))
        .with_state(demo);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}
