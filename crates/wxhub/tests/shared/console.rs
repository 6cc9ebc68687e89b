//! The console in shared mode: a session started on one instance is good
//! on every other, and signing out on one ends it everywhere.

use crate::cluster::{APPID, Cluster, Setup};

async fn browse(c: &Cluster, i: usize, path: &str, cookie: &str) -> (u16, String) {
    let r = c
        .http
        .get(format!("{}{path}", c.hub(i).base))
        .header("accept", "text/html")
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.text().await.unwrap())
}

async fn post(
    c: &Cluster,
    i: usize,
    path: &str,
    form: &[(&str, &str)],
    cookie: Option<&str>,
) -> reqwest::Response {
    let base = &c.hub(i).base;
    let mut req = c
        .http
        .post(format!("{base}{path}"))
        .header("origin", base.as_str())
        .form(form);
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_session_is_good_on_every_instance_until_signed_out_on_any() {
    let c = Cluster::start(Setup {
        instances: 2,
        ..Setup::default()
    })
    .await;
    let r = post(&c, 0, "/console/sign-in", &[("key", &c.admin)], None).await;
    assert_eq!(r.status().as_u16(), 303);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    // The other instance knows the session.
    let (s, page) = browse(&c, 1, "/", &cookie).await;
    assert_eq!(s, 200, "{page}");
    assert!(page.contains(APPID), "the overview on hub 1");
    assert!(!page.contains(&c.admin), "no admin key in the page");
    // Signing out on hub 1 ends it on hub 0 too.
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the sign-out form's token")
        .to_string();
    let r = post(
        &c,
        1,
        "/console/sign-out",
        &[("csrf", &csrf)],
        Some(&cookie),
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    let (s, page) = browse(&c, 0, "/", &cookie).await;
    assert!(
        s == 401 || !page.contains(APPID),
        "signed out everywhere: {s} {page}"
    );
    assert!(
        page.contains("Sign in") || page.contains("sign in"),
        "the sign-in page: {page}"
    );
}
