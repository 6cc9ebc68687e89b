//! `GET /openapi.json`: the HTTP API described for tools. Kept beside the
//! routes; a test checks that every route in the router is described, and
//! CI runs schemathesis against a running hub with it (no 500, no answer
//! outside the document, no error that is not JSON).

use axum::Json;
use serde_json::{Value, json};

fn error(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn error_retry(description: &str) -> Value {
    let mut e = error(description);
    e["headers"] = json!({"Retry-After": {"$ref": "#/components/headers/RetryAfter"}});
    e
}

/// A failure inside the hub: the body names a reference, not the cause.
fn internal() -> Value {
    error(
        "internal: the hub failed (its store, say); the message is only a reference to the hub's log",
    )
}

/// The errors every client route may answer.
fn client_errors() -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("400".into(), error("A malformed path or query"));
    m.insert("401".into(), error("Missing or unknown client key"));
    m.insert("403".into(), error("This client may not use this account"));
    m.insert(
        "404".into(),
        error("No such account, or the account does not keep this credential"),
    );
    m.insert(
        "503".into(),
        error_retry(
            "No valid credential and none could be fetched in time (over_budget: the caller budget is spent); see Retry-After and the message",
        ),
    );
    m
}

/// The errors of a route with a JSON body.
fn body_errors(m: &mut serde_json::Map<String, Value>) {
    m.insert(
        "400".into(),
        error("Not a JSON object with the route's fields; the message names the field"),
    );
    m.insert("413".into(), error("The body is larger than 64 KiB"));
    m.insert(
        "415".into(),
        error("The body is not sent as application/json"),
    );
}

fn json_body(required: &[&str], properties: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": {
        "type": "object", "required": required, "additionalProperties": false, "properties": properties
    }}}})
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn cred_paths(name: &str, field: &str, summary: &str) -> [(String, Value); 2] {
    let served = json!({
        "type": "object", "required": [field, "expires_at", "expires_in"],
        "properties": {
            field: {"type": "string"},
            "expires_at": {"type": "integer", "description": "Unix seconds: cache it until then, no longer"},
            "expires_in": {"type": "integer"}
        }
    });
    let mut get = client_errors();
    get.insert(
        "200".into(),
        ok("The credential to use now", served.clone()),
    );
    let mut reported = served;
    reported["required"] = json!([field, "expires_at", "expires_in", "outcome"]);
    reported["properties"]["outcome"] = json!({
        "type": "string",
        "enum": ["already_replaced", "still_valid", "replaced", "over_budget"],
        "description": "already_replaced: the reported value was no longer current; still_valid: the platform accepts it (the error was not about it); replaced: the platform rejected it and the hub replaced it; over_budget: refreshes callers may trigger are used up, the current value is served anyway"
    });
    reported["properties"]["budget"] = json!({
        "type": "object", "required": ["reason", "retry_after"],
        "properties": {"reason": {"type": "string"}, "retry_after": {"type": "integer"}}
    });
    let mut inv = client_errors();
    body_errors(&mut inv);
    inv.insert(
        "200".into(),
        ok(
            "The credential to use now, and what the report led to",
            reported,
        ),
    );
    inv.insert(
        "429".into(),
        error_retry("This client reports faster than its invalidate limit"),
    );
    let body_field = if field == "access_token" {
        "access_token"
    } else {
        "ticket"
    };
    [
        (
            format!("/v1/apps/{{appid}}/{name}"),
            json!({"get": {"summary": summary, "security": [{"client": []}], "parameters": [{"$ref": "#/components/parameters/appid"}], "responses": get}}),
        ),
        (
            format!("/v1/apps/{{appid}}/{name}/invalidate"),
            json!({"post": {
                "summary": format!("Report a {field} the platform rejected: confirmed with the platform first, replaced only if it is dead and still current, once however many report it, within the caller budget"),
                "security": [{"client": []}],
                "parameters": [{"$ref": "#/components/parameters/appid"}],
                "requestBody": json_body(&[body_field], json!({body_field: {"type": "string", "minLength": 1}})),
                "responses": inv
            }}),
        ),
    ]
}

fn proxy_path() -> Value {
    let mut proxy = client_errors();
    proxy.insert(
        "default".into(),
        json!({"description": "The platform's answer, passed through", "content": {"*/*": {}}}),
    );
    proxy.insert(
        "400".into(),
        error("A path that is not forwarded: sns/* (a person's token), the token endpoints, component calls, or anything but a plain API path"),
    );
    proxy.insert(
        "404".into(),
        error("No such account, or not a path of the platform's API host"),
    );
    proxy.insert("413".into(), error("The body is larger than 10 MiB"));
    proxy.insert(
        "429".into(),
        error_retry("This client calls faster than its proxy limit"),
    );
    proxy.insert(
        "502".into(),
        error("The platform could not be reached or did not answer in time"),
    );
    json!({
        "parameters": [
            {"$ref": "#/components/parameters/appid"},
            {"name": "path", "in": "path", "required": true, "schema": {"type": "string"}, "description": "API path on api.weixin.qq.com, e.g. cgi-bin/user/info"}
        ],
        "get": {"summary": "Call the platform with the account's token injected; on 40001/40014/42001 report it (confirmed before anything is refreshed) and retry once", "security": [{"client": []}], "responses": proxy.clone()},
        "post": {"summary": "As GET, with the body forwarded", "security": [{"client": []}], "responses": proxy}
    })
}

fn oauth_paths(paths: &mut serde_json::Map<String, Value>) {
    authorize_path(paths);
    callback_path(paths);
    redeem_path(paths);
    user_path(paths);
}

fn authorize_path(paths: &mut serde_json::Map<String, Value>) {
    let mut authorize = serde_json::Map::new();
    authorize.insert(
        "302".into(),
        json!({"description": "To WeChat's authorize page, with a signed state", "headers": {"Location": {"schema": {"type": "string"}}}}),
    );
    authorize.insert(
        "400".into(),
        error("A scope the account cannot do, or a return_to that is not an allowed origin or is longer than 2048 bytes"),
    );
    authorize.insert(
        "403".into(),
        error("Web authorization is not enabled for this account"),
    );
    authorize.insert("404".into(), error("No such account"));
    authorize.insert(
        "429".into(),
        error_retry("Too many requests from this client address"),
    );
    authorize.insert(
        "503".into(),
        error_retry("too_many_sign_ins: too many sign-ins in progress for this account"),
    );
    authorize.insert("500".into(), internal());
    paths.insert("/oauth/{appid}/authorize".into(), json!({"get": {
        "summary": "Start web authorization for a page: silent snsapi_base first, snsapi_userinfo only when a profile is needed and no grant is on file; back to return_to with wxhub_ticket or wxhub_error",
        "parameters": [
            {"$ref": "#/components/parameters/appid"},
            {"name": "scope", "in": "query", "required": true, "schema": {"type": "string", "enum": ["base", "userinfo", "login", "snsapi_base", "snsapi_userinfo", "snsapi_login"]}},
            {"name": "return_to", "in": "query", "required": true, "schema": {"type": "string", "minLength": 1, "maxLength": 2048}}
        ],
        "responses": authorize
    }}));
}

fn callback_path(paths: &mut serde_json::Map<String, Value>) {
    let html = |d: &str| json!({"description": d, "content": {"text/html": {"schema": {"type": "string"}}}});
    let mut callback = serde_json::Map::new();
    callback.insert(
        "302".into(),
        json!({"description": "Back to return_to (wxhub_ticket, or wxhub_error=access_denied / already_used), or on to WeChat for consent", "headers": {"Location": {"schema": {"type": "string"}}}}),
    );
    for (status, d) in [
        (
            "400",
            "A page for the person, its code in data-code: invalid_state (missing, forged or unknown), expired_state, code_used, code_expired",
        ),
        ("404", "A page for the person: not_found, no such account"),
        (
            "500",
            "A page for the person: internal, the hub failed; the message is a reference to its log",
        ),
        (
            "502",
            "A page for the person: upstream_error, the platform did not complete the sign-in",
        ),
        (
            "503",
            "A page for the person: in_progress (the sign-in is still being completed) or too_many_sign_ins",
        ),
    ] {
        callback.insert(status.into(), html(d));
    }
    callback.insert(
        "429".into(),
        error_retry("Too many requests from this client address"),
    );
    paths.insert(
        "/oauth/{appid}/callback".into(),
        json!({"get": {
            "summary": "WeChat's redirect back (the redirect_uri); not called by clients",
            "parameters": [
                {"$ref": "#/components/parameters/appid"},
                {"name": "code", "in": "query", "required": false, "schema": {"type": "string"}},
                {"name": "state", "in": "query", "required": false, "schema": {"type": "string"}}
            ],
            "responses": callback
        }}),
    );
}

fn redeem_path(paths: &mut serde_json::Map<String, Value>) {
    let mut redeem = client_errors();
    body_errors(&mut redeem);
    redeem.insert(
        "200".into(),
        ok(
            "The sign-in's result",
            json!({"type": "object", "required": ["appid", "openid", "scope"], "properties": {
                "appid": {"type": "string"}, "openid": {"type": "string"}, "unionid": {"type": "string"},
                "scope": {"type": "string"}, "snapshot": {"type": "boolean"}, "profile": {"type": "object"},
                "profile_error": {"type": "string"}
            }}),
        ),
    );
    redeem.insert("404".into(), error("Unknown, used or expired ticket"));
    redeem.insert("500".into(), internal());
    paths.insert("/v1/oauth/tickets/redeem".into(), json!({"post": {
        "summary": "Redeem a hand-over ticket, once",
        "security": [{"client": []}],
        "requestBody": json_body(&["ticket"], json!({"ticket": {"type": "string", "minLength": 1}})),
        "responses": redeem
    }}));
}

fn user_path(paths: &mut serde_json::Map<String, Value>) {
    let mut user = client_errors();
    user.insert(
        "200".into(),
        ok(
            "The stored profile",
            json!({"type": "object", "required": ["appid", "openid", "scope"]}),
        ),
    );
    user.insert(
        "404".into(),
        error("No such account, or no usable grant from this person (the message says how to get one)"),
    );
    user.insert("502".into(), error("The platform did not answer"));
    user.insert("500".into(), internal());
    paths.insert(
        "/v1/apps/{appid}/users/{openid}".into(),
        json!({"get": {
            "summary": "A person's profile, refreshed through their grant",
            "security": [{"client": []}],
            "parameters": [
                {"$ref": "#/components/parameters/appid"},
                {"name": "openid", "in": "path", "required": true, "schema": {"type": "string"}}
            ],
            "responses": user
        }}),
    );
}

/// The push gateway: the platform's URL, followers, the admin view.
fn directory_paths(paths: &mut serde_json::Map<String, Value>) {
    let account = json!({"type": "object", "required": ["appid", "name", "source", "kind", "token_mode", "tickets"], "properties": {
        "appid": {"type": "string"}, "name": {"type": "string"},
        "source": {"type": "string", "enum": ["file", "api", "file+api"]},
        "kind": {"type": "string", "enum": ["official", "website"]},
        "token_mode": {"type": "string", "enum": ["stable", "classic"]},
        "tickets": {"type": "array", "items": {"type": "string"}},
        "jssdk_domains": {"type": "array", "items": {"type": "string"}},
        "oauth_return_origins": {"type": "array", "items": {"type": "string"}},
        "component": {"type": "string", "nullable": true, "description": "The third-party platform it is authorized to"},
        "revoked_at": {"type": "integer", "nullable": true, "description": "When its administrator revoked the platform"},
        "paused": {"type": "boolean", "description": "An operator stopped its fetches: the stored values are served while valid, nothing is fetched"},
        "push": {"type": ["object", "null"]},
        "etag": {"type": "string", "description": "Its version, as in the ETag header: give it in If-Match"}
    }});
    let definition = json!({"required": true, "content": {"application/json": {"schema": {"type": "object",
        "description": "The fields of an [[accounts]] entry; secrets inline (secret, push.token, ...), never *_env or *_file"}}}});
    let appid = json!([{"$ref": "#/components/parameters/appid"}]);
    let if_match = json!({"name": "If-Match", "in": "header", "required": false, "schema": {"type": "string"},
        "description": "The ETag of a GET (or *): the change is made only if the account is still that version, else 412"});
    let conditional = json!([{"$ref": "#/components/parameters/appid"}, if_match.clone()]);
    let put_conditional = json!([{"$ref": "#/components/parameters/appid"}, if_match,
        {"name": "If-None-Match", "in": "header", "required": false, "schema": {"type": "string"},
         "description": "*: create only; 412 when the account exists"}]);
    let versioned = |description: &str, schema: Value| {
        let mut r = ok(description, schema);
        r["headers"] = json!({"ETag": {"description": "The account's version, for If-Match", "schema": {"type": "string"}}});
        r
    };
    let stale = error(
        "If-Match (or If-None-Match) does not hold: the account was changed since (or exists)",
    );
    let busy = error("Other instances kept changing the account meanwhile; try again");
    paths.insert("/v1/admin/accounts/{appid}".into(), json!({
        "get": {"summary": "An account's configuration, without its secrets, and its version (ETag)", "security": [{"admin": []}], "parameters": appid,
            "responses": {"200": versioned("The account", account.clone()), "401": error("Admin key required"), "404": error("No such account")}},
        "put": {"summary": "Adds or replaces an account with a whole definition; on every instance within a second", "security": [{"admin": []}], "parameters": put_conditional,
            "requestBody": definition,
            "responses": {"200": versioned("Replaced", account.clone()), "201": versioned("Added", account.clone()), "400": error("A field is wrong (named)"), "401": error("Admin key required"), "409": busy.clone(), "412": stale.clone()}},
        "patch": {"summary": "Replaces the fields given (a new secret after a reset on the platform recovers the account)", "security": [{"admin": []}], "parameters": conditional.clone(),
            "requestBody": definition,
            "responses": {"200": versioned("Changed", account), "400": error("A field is wrong (named)"), "401": error("Admin key required"), "404": error("No such account"), "409": busy.clone(), "412": stale.clone()}},
        "delete": {"summary": "Removes an account: no more refreshes, its credentials forgotten, its routes 404", "security": [{"admin": []}], "parameters": conditional,
            "responses": {"204": {"description": "Removed"}, "401": error("Admin key required"), "404": error("No such account"), "409": busy, "412": stale}}
    }));
    let client = json!({"type": "object", "required": ["name", "apps", "source"], "properties": {
        "name": {"type": "string"}, "apps": {"type": "array", "items": {"type": "string"}},
        "components": {"type": "array", "items": {"type": "string"}},
        "source": {"type": "string", "enum": ["file", "api"]}, "limits": {"type": "object"},
        "key": {"type": "string", "description": "Only in the answer to the creation: shown once"}
    }});
    paths.insert("/v1/admin/clients".into(), json!({
        "get": {"summary": "Every client in force, without keys", "security": [{"admin": []}],
            "responses": {"200": ok("Clients", json!({"type": "object", "required": ["clients"], "properties": {"clients": {"type": "array", "items": client}}})), "401": error("Admin key required")}},
        "post": {"summary": "Creates a client ({name, apps, limits}); its key is in the answer, once", "security": [{"admin": []}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["name"]}}}},
            "responses": {"201": ok("Created, with its key", client), "400": error("A field is wrong (named)"), "401": error("Admin key required"), "409": error("The name is taken")}}
    }));
    paths.insert("/v1/admin/clients/{name}".into(), json!({
        "delete": {"summary": "Revokes a client: its key stops working at once", "security": [{"admin": []}],
            "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
            "responses": {"204": {"description": "Revoked"}, "401": error("Admin key required"), "404": error("No such client")}}
    }));
    paths.insert("/v1/admin/audit".into(), json!({
        "get": {"summary": "The audit log of account and client changes, newest first", "security": [{"admin": []}],
            "parameters": [
                {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                {"name": "before", "in": "query", "required": false, "schema": {"type": "integer"}}
            ],
            "responses": {"200": ok("Entries", json!({"type": "object", "required": ["entries"], "properties": {
                "entries": {"type": "array", "items": {"type": "object", "required": ["id", "at", "actor", "action", "target", "fields"]}},
                "next_before": {"type": ["integer", "null"]}}})),
                "400": error("A bad limit"), "401": error("Admin key required")}}
    }));
}

/// Third-party platforms: the authorization-event URL, the start page and
/// return handler, the component token.
fn component_paths(paths: &mut serde_json::Map<String, Value>) {
    let q = |name: &str, required: bool| json!({"name": name, "in": "query", "required": required, "schema": {"type": "string"}});
    let appid = json!({"name": "appid", "in": "path", "required": true, "description": "The component (third-party platform) AppID", "schema": {"type": "string"}});
    let mut events = serde_json::Map::new();
    events.insert("200".into(), json!({"description": "success", "content": {"text/plain": {"schema": {"type": "string", "enum": ["success"]}}}}));
    events.insert(
        "400".into(),
        error("invalid_push: the body or its plaintext does not parse"),
    );
    events.insert(
        "403".into(),
        error("push_rejected: a bad msg_signature, a key or AppID mismatch"),
    );
    events.insert(
        "404".into(),
        error("No such third-party platform in this hub"),
    );
    events.insert(
        "409".into(),
        error("account_exists: the authorized account is in this hub with its own secret"),
    );
    events.insert("413".into(), error("The body is larger than 16 KiB"));
    events.insert(
        "502".into(),
        error("upstream_error: the platform refused the authorization code"),
    );
    events.insert("503".into(), error_retry("The ticket or authorization could not be stored, or the component has no token yet; the platform sends authorization events again"));
    events.insert("500".into(), internal());
    paths.insert("/component/{appid}/events".into(), json!({"post": {
        "summary": "The platform's pushes to the component's authorization-event URL (授权事件接收URL): component_verify_ticket, authorized, updateauthorized, unauthorized; checked and decrypted with the component's token and key before anything is stored",
        "parameters": [appid, q("signature", false), q("timestamp", false), q("nonce", false), q("encrypt_type", false), q("msg_signature", false)],
        "requestBody": {"required": true, "content": {"text/xml": {"schema": {"type": "string"}}, "application/xml": {"schema": {"type": "string"}}}},
        "responses": events}}));
    let mut token = client_errors();
    token.insert(
        "403".into(),
        error("This client is not granted the component (clients[].components)"),
    );
    token.insert(
        "404".into(),
        error("No such third-party platform in this hub"),
    );
    token.insert("200".into(), ok("The component_access_token", json!({
        "type": "object", "required": ["component_access_token", "expires_at", "expires_in"],
        "properties": {"component_access_token": {"type": "string"}, "expires_at": {"type": "integer"}, "expires_in": {"type": "integer"}}})));
    paths.insert("/v1/components/{appid}/token".into(), json!({"get": {
        "summary": "A third-party platform's component_access_token, for clients granted it (their own component API calls)",
        "security": [{"client": []}], "parameters": [appid], "responses": token}}));
    let redirect = json!({"description": "To the next page", "headers": {"Location": {"schema": {"type": "string"}}}});
    let mut start = serde_json::Map::new();
    start.insert("302".into(), redirect.clone());
    start.insert("400".into(), error("invalid_return: return is missing, not a URL, or not under components[].return_origins"));
    start.insert(
        "404".into(),
        error("No such third-party platform in this hub"),
    );
    start.insert(
        "429".into(),
        error_retry("Too many starts from this address or of this platform (limits.anonymous)"),
    );
    start.insert(
        "502".into(),
        error("upstream_error: the platform gave no pre-auth code"),
    );
    start.insert(
        "503".into(),
        error_retry("The component has no token yet (no verify ticket received)"),
    );
    start.insert("500".into(), internal());
    paths.insert("/component/{appid}/authorize".into(), json!({"get": {
        "summary": "The authorization start page: creates a pre-auth code and sends the account's administrator to the platform's authorization page",
        "parameters": [appid, q("return", true)], "responses": start}}));
    let mut back = serde_json::Map::new();
    back.insert("302".into(), redirect);
    back.insert(
        "400".into(),
        error("invalid_state, invalid_return, or authorization_cancelled (no auth_code)"),
    );
    back.insert(
        "404".into(),
        error("No such third-party platform in this hub"),
    );
    back.insert(
        "409".into(),
        error("account_exists: the account is in this hub with its own secret"),
    );
    back.insert(
        "429".into(),
        error_retry("Too many requests from this address (limits.anonymous)"),
    );
    back.insert(
        "502".into(),
        error("upstream_error: the platform refused the authorization code"),
    );
    back.insert(
        "503".into(),
        error_retry("The component has no token, or the authorization could not be stored"),
    );
    back.insert("500".into(), internal());
    paths.insert("/component/{appid}/return".into(), json!({"get": {
        "summary": "Where the platform sends the administrator back: the code is exchanged (api_query_auth), the account appears, and the browser goes to return with authorizer_appid",
        "parameters": [appid, q("auth_code", false), q("expires_in", false), q("state", true), q("return", true)], "responses": back}}));
}

fn push_paths(paths: &mut serde_json::Map<String, Value>) {
    let q = |name: &str, required: bool| json!({"name": name, "in": "query", "required": required, "schema": {"type": "string"}});
    let text = |d: &str| json!({"description": d, "content": {"text/plain": {"schema": {"type": "string"}}}});
    let refused = |m: &mut serde_json::Map<String, Value>| {
        m.insert("400".into(), error("Malformed XML, a wrong appid inside the ciphertext, undecryptable, or plaintext to a safe-mode account"));
        m.insert("401".into(), error("Bad signature or msg_signature, missing signature parameters, or a timestamp too far from now"));
        m.insert("404".into(), error("The account takes no pushes here"));
    };
    let mut get = serde_json::Map::new();
    get.insert("200".into(), text("The echostr, verbatim"));
    refused(&mut get);
    let mut post = serde_json::Map::new();
    post.insert(
        "200".into(),
        json!({"description": "success, an empty body (encrypted push), or the passive reply XML (encrypted with the key the push came with)",
            "content": {"text/plain": {"schema": {"type": "string"}}, "application/xml": {"schema": {"type": "string"}}}}),
    );
    refused(&mut post);
    post.insert("413".into(), error("The body is larger than 64 KiB"));
    post.insert(
        "503".into(),
        error_retry("unavailable: the push could not be stored; overloaded: push.max_pending_writes pushes already wait for their write. Nothing stored; the platform sends it again"),
    );
    let params = json!([
        {"$ref": "#/components/parameters/appid"},
        q("signature", false), q("timestamp", false), q("nonce", false), q("openid", false),
        q("encrypt_type", false), q("msg_signature", false)
    ]);
    let mut get_params = params.clone();
    if let Some(a) = get_params.as_array_mut() {
        a.push(q("echostr", false));
    }
    paths.insert("/push/{appid}".into(), json!({
        "get": {"summary": "The platform checks the URL (服务器配置): the echostr comes back if the signature is right", "parameters": get_params, "responses": get},
        "post": {"summary": "A message or event from the platform: verified, written, answered within the platform's 5 s, delivered to the account's subscribers",
            "parameters": params,
            "requestBody": {"required": true, "content": {"text/xml": {"schema": {"type": "string"}}, "application/xml": {"schema": {"type": "string"}}}},
            "responses": post}
    }));
    let follower = json!({"type": "object", "required": ["openid", "subscribed"], "properties": {
        "openid": {"type": "string"}, "subscribed": {"type": "boolean"},
        "subscribed_at": {"type": "integer", "nullable": true}, "unsubscribed_at": {"type": "integer", "nullable": true},
        "profile": {"type": "object", "nullable": true}, "profile_fetched_at": {"type": "integer", "nullable": true}
    }});
    let mut list = client_errors();
    list.remove("503");
    list.insert(
        "404".into(),
        error("No such account, or it takes no pushes here"),
    );
    let mut one = list.clone();
    one.insert(
        "404".into(),
        error("No such account, no push here, or no follow of this openid seen"),
    );
    list.insert("400".into(), error("limit is not between 1 and 1000"));
    list.insert("200".into(), ok("Follower records by openid", json!({"type": "object", "required": ["followers", "next"], "properties": {
        "followers": {"type": "array", "items": follower}, "next": {"type": "string", "nullable": true, "description": "Pass as after= for the next page"}}})));
    one.insert("200".into(), ok("The follower record", follower));
    let limit = json!({"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 1000}});
    paths.insert("/v1/apps/{appid}/followers".into(), json!({"get": {
        "summary": "Follow and unfollow records from push events, with profiles", "security": [{"client": []}],
        "parameters": [{"$ref": "#/components/parameters/appid"}, q("after", false), limit], "responses": list}}));
    paths.insert("/v1/apps/{appid}/followers/{openid}".into(), json!({"get": {
        "summary": "One follower record", "security": [{"client": []}],
        "parameters": [{"$ref": "#/components/parameters/appid"}, {"name": "openid", "in": "path", "required": true, "schema": {"type": "string"}}],
        "responses": one}}));
    let admin = |m: &mut serde_json::Map<String, Value>| {
        m.insert("401".into(), error("Admin key required"));
        m.insert("500".into(), internal());
    };
    let mut backlog = serde_json::Map::new();
    backlog.insert(
        "200".into(),
        ok(
            "Queued and parked per subscriber",
            json!({"type": "object", "required": ["subscribers"]}),
        ),
    );
    admin(&mut backlog);
    let mut parked = serde_json::Map::new();
    parked.insert(
        "200".into(),
        ok(
            "Parked deliveries, oldest first",
            json!({"type": "object", "required": ["parked"]}),
        ),
    );
    parked.insert("404".into(), error("The account takes no pushes here"));
    admin(&mut parked);
    let mut replay = parked.clone();
    replay.insert(
        "200".into(),
        ok(
            "Back in its subscriber's queue",
            json!({"type": "object", "required": ["replayed"]}),
        ),
    );
    replay.insert(
        "404".into(),
        error("No such account with push, or no such parked delivery"),
    );
    paths.insert("/v1/push".into(), json!({"get": {"summary": "Every subscriber's backlog", "security": [{"admin": []}], "responses": backlog}}));
    paths.insert("/v1/push/{appid}/parked".into(), json!({"get": {"summary": "Deliveries that failed for their whole retry window",
        "security": [{"admin": []}], "parameters": [{"$ref": "#/components/parameters/appid"}], "responses": parked}}));
    paths.insert("/v1/push/{appid}/parked/{id}/replay".into(), json!({"post": {"summary": "Replay a parked delivery with a new retry window",
        "security": [{"admin": []}], "parameters": [{"$ref": "#/components/parameters/appid"},
            {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}], "responses": replay}}));
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
        for (p, v) in cred_paths(name, field, summary) {
            paths.insert(p, v);
        }
    }
    let mut jssdk = client_errors();
    body_errors(&mut jssdk);
    jssdk.insert(
        "200".into(),
        ok(
            "Arguments for wx.config",
            json!({"type": "object", "required": ["appId", "timestamp", "nonceStr", "signature"],
            "properties": {"appId": {"type": "string"}, "timestamp": {"type": "integer"}, "nonceStr": {"type": "string"}, "signature": {"type": "string"}}}),
        ),
    );
    jssdk.insert(
        "400".into(),
        error("Not a JSON object with url, or url is not an absolute http(s) URL"),
    );
    jssdk.insert(
        "403".into(),
        error("The URL's host is not one of the account's JS-SDK domains, or the client may not use the account"),
    );
    paths.insert(
        "/v1/apps/{appid}/jssdk/config".into(),
        json!({"post": {
            "summary": "Sign a page URL for wx.config (the fragment is dropped)",
            "security": [{"client": []}],
            "parameters": [{"$ref": "#/components/parameters/appid"}],
            "requestBody": json_body(&["url"], json!({"url": {"type": "string", "minLength": 1}})),
            "responses": jssdk
        }}),
    );
    paths.insert("/v1/apps/{appid}/proxy/{path}".into(), proxy_path());
    oauth_paths(&mut paths);
    push_paths(&mut paths);
    component_paths(&mut paths);
    directory_paths(&mut paths);
    paths.insert("/v1/apps".into(), json!({"get": {
        "summary": "A page of accounts' state (AppID order), searched by AppID or name",
        "security": [{"admin": []}],
        "parameters": [
            {"name": "offset", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0}},
            {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
            {"name": "q", "in": "query", "required": false, "schema": {"type": "string"}},
            {"name": "state", "in": "query", "required": false, "schema": {"type": "string", "enum": ["ok", "problem"]}}
        ],
        "responses": {
            "200": ok("Accounts", json!({"type": "object", "required": ["now", "total", "offset", "apps"]})),
            "400": error("A bad offset, limit or state"),
            "401": error("Admin key required")
        }
    }}));
    console_paths(&mut paths);
    paths.insert(
        "/healthz".into(),
        json!({"get": {"summary": "Liveness", "responses": {"200": {"description": "ok", "content": {"text/plain": {"schema": {"type": "string"}}}}}}}),
    );
    let readiness =
        json!({"type": "object", "required": ["ready", "accounts", "unhealthy", "problems"]});
    paths.insert("/readyz".into(), json!({"get": {"summary": "Readiness: 503 names each account that needs attention", "responses": {
        "200": ok("Ready", readiness.clone()),
        "503": ok("Not ready, with reasons", readiness)
    }}}));
    paths.insert("/metrics".into(), json!({"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "The text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}}));
    paths.insert("/openapi.json".into(), json!({"get": {"summary": "This document", "responses": {"200": ok("OpenAPI 3.0", json!({"type": "object"}))}}}));
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
            "headers": {"RetryAfter": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}}
        }
    })
}

/// An HTML page of the console.
fn page(description: &str) -> Value {
    json!({"description": description, "content": {"text/html": {"schema": {"type": "string"}}}})
}

/// The operator's console (`docs/API.md`, "Console") and the refresh
/// history it shows, as JSON.
fn console_paths(paths: &mut serde_json::Map<String, Value>) {
    paths.insert("/".into(), json!({"get": {
        "summary": "The console's overview for people: every account's health, time lines and quota gauges, the unhealthy first; a browser without a session gets the sign-in page",
        "security": [{"admin": []}],
        "parameters": [
            {"name": "q", "in": "query", "required": false, "schema": {"type": "string"}},
            {"name": "page", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1}}
        ],
        "responses": {
            "200": page("The overview (or, for Accept: text/html without credentials, the sign-in page)"),
            "400": error("A bad page or an unknown parameter"),
            "401": error("Admin key or a console session required")
        }
    }}));
    paths.insert("/console/apps/{appid}".into(), json!({"get": {
        "summary": "The console's page of one account: refresh history, fetches per day, clients",
        "security": [{"admin": []}],
        "parameters": [{"$ref": "#/components/parameters/appid"}],
        "responses": {
            "200": page("The account's page"),
            "303": {"description": "A browser without a session is sent to sign in"},
            "400": error("A malformed AppID"),
            "401": error("Admin key or a console session required"),
            "404": page("No such account")
        }
    }}));
    let form = |field: &str| {
        json!({"required": true, "content": {"application/x-www-form-urlencoded": {"schema": {
            "type": "object", "properties": {field: {"type": "string"}}
        }}}})
    };
    paths.insert("/console/sign-in".into(), json!({"post": {
        "summary": "Starts a console session with the admin key (HttpOnly, SameSite=Strict cookie)",
        "requestBody": form("key"),
        "responses": {
            "303": {"description": "Signed in: the session cookie is set, on to the overview"},
            "401": page("Not the admin key"),
            "403": page("A cross-site request"),
            "413": error("The body is larger than 8 KiB"),
            "429": {"description": "Too many failed sign-ins from this address", "headers": {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}, "content": {"text/html": {"schema": {"type": "string"}}}}
        }
    }}));
    paths.insert(
        "/console/sign-out".into(),
        json!({"post": {
            "summary": "Ends the console session (the form carries the session's csrf token)",
            // Without a session there is nothing to end and no token to
            // give: the cookie is cleared all the same, so the body is
            // optional.
            "requestBody": {"required": false, "content": form("csrf")["content"].clone()},
            "responses": {
                "303": {"description": "Signed out: the cookie is cleared, on to the sign-in page"},
                "403": page("A cross-site request, or a wrong form token"),
                "413": error("The body is larger than 8 KiB")
            }
        }}),
    );
    let entry = json!({"type": "object", "required": ["at", "kind", "reason", "outcome"], "properties": {
        "at": {"type": "integer"},
        "kind": {"type": "string", "enum": ["access_token", "jsapi_ticket", "wx_card_ticket"]},
        "reason": {"type": "string", "enum": ["schedule", "missing", "report", "takeover", "config", "doomed"]},
        "client": {"type": "string"},
        "outcome": {"type": "string", "enum": ["ok", "failed"]},
        "errcode": {"type": "integer"},
        "error": {"type": "string"},
        "expires_in": {"type": "integer"},
        "instance": {"type": "string"}
    }});
    paths.insert("/v1/apps/{appid}/history".into(), json!({"get": {
        "summary": "An account's refresh history, newest first (kept refresh.history_days)",
        "security": [{"admin": []}],
        "parameters": [
            {"$ref": "#/components/parameters/appid"},
            {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}
        ],
        "responses": {
            "200": ok("The history", json!({"type": "object", "required": ["appid", "now", "retention_days", "entries"], "properties": {
                "appid": {"type": "string"},
                "now": {"type": "integer"},
                "retention_days": {"type": "integer"},
                "entries": {"type": "array", "items": entry}
            }})),
            "400": error("A bad limit or an unknown parameter"),
            "401": error("Admin key required"),
            "404": error("No such account"),
            "503": error_retry("The store did not answer")
        }
    }}));
}

/// `GET /openapi.json`.
pub async fn openapi() -> Json<Value> {
    Json(document())
}
