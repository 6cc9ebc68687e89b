//! `wxhub accounts …`, `wxhub clients …` and `wxhub audit`: the admin API
//! from a shell. The admin key comes from the environment, and secrets from
//! the environment or a file, never from the command line (which other
//! users of the machine can read in the process list).

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Map, Value, json};

/// Where the hub is and how to sign in to it.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The hub's URL.
    #[arg(long, default_value = "http://127.0.0.1:8780", env = "WXHUB_URL")]
    pub hub: String,
    /// Name of the environment variable holding the admin key.
    #[arg(long, default_value = "WXHUB_ADMIN_KEY")]
    pub admin_key_env: String,
}

/// `wxhub accounts`.
#[derive(Debug, Subcommand)]
pub enum Accounts {
    /// A page of accounts and their state.
    List {
        /// Only those whose AppID or name contains this.
        #[arg(long)]
        q: Option<String>,
        /// Only `ok` or `problem` accounts.
        #[arg(long)]
        state: Option<String>,
        /// How many to skip.
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// How many at most (up to 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One account's configuration (without secrets).
    Show {
        /// The AppID.
        appid: String,
    },
    /// Adds an account, or replaces one with a whole definition.
    Put {
        /// The AppID.
        appid: String,
        /// Only if the account is still this version (`etag` of `show`).
        #[arg(long)]
        if_match: Option<String>,
        #[command(flatten)]
        fields: Fields,
    },
    /// Changes the fields given, keeping the rest (after a secret reset on
    /// the platform: `--secret-env NEW_SECRET`).
    Set {
        /// The AppID.
        appid: String,
        /// Only if the account is still this version (`etag` of `show`):
        /// a change made meanwhile by someone else is not undone.
        #[arg(long)]
        if_match: Option<String>,
        #[command(flatten)]
        fields: Fields,
    },
    /// Removes an account: its refreshes stop and its credentials are
    /// forgotten.
    Remove {
        /// The AppID.
        appid: String,
        /// Only if the account is still this version (`etag` of `show`).
        #[arg(long)]
        if_match: Option<String>,
    },
}

/// An account's fields on the command line.
#[derive(Debug, clap::Args)]
pub struct Fields {
    /// A JSON file with the fields of an `[[accounts]]` entry (secrets
    /// inline); the flags below are applied over it.
    #[arg(long, value_name = "FILE")]
    pub from: Option<std::path::PathBuf>,
    /// Name of the environment variable holding the AppSecret.
    #[arg(long, value_name = "VAR")]
    pub secret_env: Option<String>,
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
    /// `stable` or `classic`.
    #[arg(long)]
    pub token_mode: Option<String>,
    /// Tickets kept fresh, comma-separated (`jsapi,wx_card`; empty for none).
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    pub tickets: Option<Vec<String>>,
    /// JS-SDK domains, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub jssdk_domains: Option<Vec<String>>,
    /// Web authorization return origins, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub oauth_return_origins: Option<Vec<String>>,
    /// `true` stops the account's fetches (its stored values are served
    /// while valid); `false` resumes them.
    #[arg(long, value_name = "true|false")]
    pub paused: Option<bool>,
}

impl Fields {
    fn body(self) -> anyhow::Result<Value> {
        let mut map = match &self.from {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--from: cannot read {}", path.display()))?;
                match serde_json::from_str(&text)
                    .with_context(|| format!("--from {}: not JSON", path.display()))?
                {
                    Value::Object(m) => m,
                    _ => bail!("--from {}: an account is a JSON object", path.display()),
                }
            }
            None => Map::new(),
        };
        if let Some(var) = self.secret_env {
            let secret = std::env::var(&var)
                .map_err(|_| anyhow::anyhow!("--secret-env: {var} is not set"))?;
            map.insert("secret".into(), Value::String(secret));
        }
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                map.insert(k.into(), v);
            }
        };
        put("name", self.name.map(Value::from));
        put("token_mode", self.token_mode.map(Value::from));
        let list = |v: Vec<String>| {
            Value::from(v.into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>())
        };
        put("tickets", self.tickets.map(list));
        put("jssdk_domains", self.jssdk_domains.map(list));
        put("oauth_return_origins", self.oauth_return_origins.map(list));
        put("paused", self.paused.map(Value::from));
        Ok(Value::Object(map))
    }
}

/// `wxhub clients`.
#[derive(Debug, Subcommand)]
pub enum Clients {
    /// Every client in force.
    List,
    /// Creates a client and prints its key, once.
    Create {
        /// Its name (in logs and metrics).
        name: String,
        /// AppIDs it may use, comma-separated (`*` for all).
        #[arg(long, value_delimiter = ',', required = true)]
        apps: Vec<String>,
    },
    /// Revokes a client: its key stops working at once.
    Revoke {
        /// Its name.
        name: String,
    },
}

async fn call(
    t: &Target,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    call_if(t, method, path, body, None).await
}

/// As [`call`], with `If-Match` when a version is given.
async fn call_if(
    t: &Target,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    if_match: Option<&str>,
) -> anyhow::Result<Value> {
    let key = std::env::var(&t.admin_key_env).map_err(|_| {
        anyhow::anyhow!("--admin-key-env: set {} to the admin key", t.admin_key_env)
    })?;
    let url = format!("{}{path}", t.hub.trim_end_matches('/'));
    let mut req = reqwest::Client::new()
        .request(method, &url)
        .bearer_auth(key)
        .header("x-wxhub-actor", whoami());
    if let Some(tag) = if_match {
        req = req.header("if-match", tag);
    }
    if let Some(b) = &body {
        req = req.json(b);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("--hub: cannot reach {}: {}", t.hub, e.without_url()))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let v: Value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).context("the hub's answer is not JSON")?
    };
    if !status.is_success() {
        bail!(
            "{status}: {}",
            v["error"]["message"].as_str().unwrap_or("no message")
        );
    }
    Ok(v)
}

/// The login of whoever runs the command, for the audit log.
fn whoami() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "cli".to_string())
}

fn print(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Runs `wxhub accounts …`.
///
/// # Errors
/// The hub's answer, or what is wrong with a flag.
pub async fn accounts(t: &Target, cmd: Accounts) -> anyhow::Result<()> {
    use reqwest::Method;
    match cmd {
        Accounts::List {
            q,
            state,
            offset,
            limit,
        } => {
            let mut path = format!("/v1/apps?offset={offset}&limit={limit}");
            if let Some(q) = q {
                path.push_str(&format!("&q={}", enc(&q)));
            }
            if let Some(s) = state {
                path.push_str(&format!("&state={}", enc(&s)));
            }
            print(&call(t, Method::GET, &path, None).await?)
        }
        Accounts::Show { appid } => print(
            &call(
                t,
                Method::GET,
                &format!("/v1/admin/accounts/{}", enc(&appid)),
                None,
            )
            .await?,
        ),
        Accounts::Put {
            appid,
            if_match,
            fields,
        } => {
            let body = fields.body()?;
            print(
                &call_if(
                    t,
                    Method::PUT,
                    &format!("/v1/admin/accounts/{}", enc(&appid)),
                    Some(body),
                    if_match.as_deref(),
                )
                .await?,
            )
        }
        Accounts::Set {
            appid,
            if_match,
            fields,
        } => {
            let body = fields.body()?;
            if body.as_object().is_some_and(Map::is_empty) {
                bail!("nothing to change: give --from or a field flag");
            }
            print(
                &call_if(
                    t,
                    Method::PATCH,
                    &format!("/v1/admin/accounts/{}", enc(&appid)),
                    Some(body),
                    if_match.as_deref(),
                )
                .await?,
            )
        }
        Accounts::Remove { appid, if_match } => {
            call_if(
                t,
                Method::DELETE,
                &format!("/v1/admin/accounts/{}", enc(&appid)),
                None,
                if_match.as_deref(),
            )
            .await?;
            println!("removed {appid}");
            Ok(())
        }
    }
}

/// Runs `wxhub clients …`.
///
/// # Errors
/// The hub's answer.
pub async fn clients(t: &Target, cmd: Clients) -> anyhow::Result<()> {
    use reqwest::Method;
    match cmd {
        Clients::List => print(&call(t, Method::GET, "/v1/admin/clients", None).await?),
        Clients::Create { name, apps } => {
            let v = call(
                t,
                Method::POST,
                "/v1/admin/clients",
                Some(json!({"name": name, "apps": apps})),
            )
            .await?;
            println!(
                "client {} created; its key (give it to the business server; it is shown this once): {}",
                v["name"].as_str().unwrap_or(""),
                v["key"].as_str().unwrap_or("")
            );
            Ok(())
        }
        Clients::Revoke { name } => {
            call(
                t,
                Method::DELETE,
                &format!("/v1/admin/clients/{}", enc(&name)),
                None,
            )
            .await?;
            println!("revoked {name}");
            Ok(())
        }
    }
}

/// Runs `wxhub audit`.
///
/// # Errors
/// The hub's answer.
pub async fn audit(t: &Target, limit: usize) -> anyhow::Result<()> {
    let v = call(
        t,
        reqwest::Method::GET,
        &format!("/v1/admin/audit?limit={limit}"),
        None,
    )
    .await?;
    for e in v["entries"].as_array().into_iter().flatten() {
        println!(
            "{}  {}  {} {}  [{}]  by {}",
            e["id"],
            e["at"],
            e["action"].as_str().unwrap_or(""),
            e["target"].as_str().unwrap_or(""),
            e["fields"]
                .as_array()
                .map(|f| f
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","))
                .unwrap_or_default(),
            e["actor"].as_str().unwrap_or(""),
        );
    }
    Ok(())
}
