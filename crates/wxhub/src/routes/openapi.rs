//! `GET /openapi.json`: the HTTP API described for tools. Kept beside the
//! routes; a test checks that every route in the router is described.

use axum::Json;
use serde_json::{Value, json};

fn error_responses() -> Value {
    json!({
        "401": {"description": "Missing or unknown client key", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "403": {"description": "This client may not use this account", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "404": {"description": "No such account", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "503": {"description": "No valid credential and none could be fetched in time; see Retry-After and the message", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    })
}

fn cred_paths(name: &str, field: &str, summary: &str) -> (String, Value, String, Value) {
    let mut ok = error_responses();
    ok["200"] = json!({"description": "The credential to use now", "content": {"application/json": {"schema": {
    "type": "object", "required": [field, "expires_at", "expires_in"],
    "properties": {
        field: {"type": "string"},
        "expires_at": {"type": "integer", "description": "Unix seconds: cache it until then, no longer"},
        "expires_in": {"type": "integer"}
    }}}}});
    let mut inv = ok.clone();
    inv["400"] = json!({"description": "Missing field", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    (
        format!("/v1/apps/{{appid}}/{name}"),
        json!({"get": {"summary": summary, "security": [{"client": []}], "parameters": [{"$ref": "#/components/parameters/appid"}], "responses": ok}}),
        format!("/v1/apps/{{appid}}/{name}/invalidate"),
        json!({"post": {
            "summary": format!("Report a failed {field}: refreshes only if it is still the current one, once however many report it"),
            "security": [{"client": []}],
            "parameters": [{"$ref": "#/components/parameters/appid"}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": [field], "properties": {field: {"type": "string"}}}}}},
            "responses": inv
        }}),
    )
}

/// The OpenAPI 3.0 document.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for (name, field, summary) in [
        (
            "access_token",
            "access_token",
            "The account's global access token",
        ),
        ("jsapi_ticket", "jsapi_ticket", "The JS-SDK ticket"),
        ("wx_card_ticket", "wx_card_ticket", "The card API ticket"),
    ] {
        let (p, v, ip, iv) = cred_paths(name, field, summary);
        paths.insert(p, v);
        paths.insert(ip, iv);
    }
    let mut jssdk = error_responses();
    jssdk["200"] = json!({"description": "Arguments for wx.config", "content": {"application/json": {"schema": {"type": "object",
        "properties": {"appId": {"type": "string"}, "timestamp": {"type": "integer"}, "nonceStr": {"type": "string"}, "signature": {"type": "string"}}}}}});
    jssdk["400"] = json!({"description": "Not an absolute http(s) URL"});
    jssdk["403"] = json!({"description": "The URL's host is not one of the account's JS-SDK domains, or the client may not use the account"});
    paths.insert("/v1/apps/{appid}/jssdk/config".into(), json!({"post": {
        "summary": "Sign a page URL for wx.config (the fragment is dropped)",
        "security": [{"client": []}],
        "parameters": [{"$ref": "#/components/parameters/appid"}],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["url"], "properties": {"url": {"type": "string"}}}}}},
        "responses": jssdk
    }}));
    let mut proxy = error_responses();
    proxy["default"] = json!({"description": "The platform's answer, passed through"});
    proxy["502"] = json!({"description": "The platform could not be reached"});
    paths.insert("/v1/apps/{appid}/proxy/{path}".into(), json!({
        "parameters": [{"$ref": "#/components/parameters/appid"}, {"name": "path", "in": "path", "required": true, "schema": {"type": "string"}, "description": "API path on api.weixin.qq.com, e.g. cgi-bin/user/info"}],
        "get": {"summary": "Call the platform with the token injected; on 40001/40014/42001 refresh (compare-and-refresh) and retry once", "security": [{"client": []}], "responses": proxy.clone()},
        "post": {"summary": "As GET, with the body forwarded", "security": [{"client": []}], "responses": proxy}
    }));
    paths.insert("/v1/apps".into(), json!({"get": {"summary": "Every account's state", "security": [{"admin": []}], "responses": {"200": {"description": "Accounts"}, "401": {"description": "Admin key required"}}}}));
    paths.insert("/".into(), json!({"get": {"summary": "Status page for people", "security": [{"admin": []}], "responses": {"200": {"description": "HTML"}, "401": {"description": "Admin key required"}}}}));
    paths.insert(
        "/healthz".into(),
        json!({"get": {"summary": "Liveness", "responses": {"200": {"description": "ok"}}}}),
    );
    paths.insert("/readyz".into(), json!({"get": {"summary": "Readiness: 503 names each account that needs attention", "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready, with reasons"}}}}));
    paths.insert("/metrics".into(), json!({"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text/plain"}}}}));
    paths.insert("/openapi.json".into(), json!({"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.0"}}}}));
    json!({
        "openapi": "3.0.3",
        "info": {"title": "wxhub", "version": env!("CARGO_PKG_VERSION"), "description": "Central control server for WeChat Official Account tokens and tickets. See docs/API.md."},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "client": {"type": "http", "scheme": "bearer", "description": "A client key; the config holds its SHA-256"},
                "admin": {"type": "http", "scheme": "bearer", "description": "The admin key"}
            },
            "parameters": {"appid": {"name": "appid", "in": "path", "required": true, "schema": {"type": "string"}}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}}
        }
    })
}

/// `GET /openapi.json`.
pub async fn openapi() -> Json<Value> {
    Json(document())
}
