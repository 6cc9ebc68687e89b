use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn user_info_follows_the_post_2021_rules() {
    let sim = TestSim::start().await;
    let t = sim.token().await;
    let alice = sim.openid(APPID, "alice").await;
    assert_eq!(alice.len(), 28);
    let v = sim
        .get(&format!(
            "/cgi-bin/user/info?access_token={t}&openid={alice}&lang=zh_CN"
        ))
        .await;
    assert_eq!(v["subscribe"], 1);
    assert_eq!(v["openid"], alice);
    assert_eq!(v["unionid"], "oUNION_alice_00000000000000");
    assert!(v["subscribe_time"].as_i64().unwrap() < START);
    assert!(
        v.get("nickname").is_none() && v.get("headimgurl").is_none(),
        "{v}"
    );
    assert!(v.get("sex").is_none() && v.get("city").is_none());

    let bob = sim.openid(APPID, "bob").await;
    let v = sim
        .get(&format!("/cgi-bin/user/info?access_token={t}&openid={bob}"))
        .await;
    assert_eq!(errcode(&v), 0, "not following is not an error");
    assert_eq!(v["subscribe"], 0);
    assert_eq!(v["tagid_list"], json!([]));

    let other = sim.openid(APPID2, "alice").await;
    let v = sim
        .get(&format!(
            "/cgi-bin/user/info?access_token={t}&openid={other}"
        ))
        .await;
    assert_eq!(errcode(&v), 40003, "another account's openid");
    let v = sim
        .get(&format!("/cgi-bin/user/info?access_token={t}"))
        .await;
    assert_eq!(errcode(&v), 41009);
}

#[tokio::test]
async fn batchget_takes_at_most_100_and_wants_json() {
    let sim = TestSim::start().await;
    let t = sim.token().await;
    let alice = sim.openid(APPID, "alice").await;
    let bob = sim.openid(APPID, "bob").await;
    let path = format!("/cgi-bin/user/info/batchget?access_token={t}");
    let v = sim
        .post(
            &path,
            json!({"user_list": [{"openid": alice, "lang": "zh_CN"}, {"openid": bob}]}),
        )
        .await;
    let list = v["user_info_list"].as_array().expect("list");
    assert_eq!(list.len(), 2);
    assert_eq!(
        (list[0]["subscribe"].clone(), list[1]["subscribe"].clone()),
        (json!(1), json!(0))
    );
    let many: Vec<_> = (0..101).map(|_| json!({"openid": alice})).collect();
    assert_eq!(
        errcode(&sim.post(&path, json!({"user_list": many})).await),
        40032
    );
    let v: serde_json::Value = sim
        .http
        .post(sim.url(&path))
        .form(&[("openid", alice.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(errcode(&v), 47001);
}

#[tokio::test]
async fn user_get_pages_through_followers() {
    let extra = "[settings]\nuser_get_page_size = 2";
    let mut w = world(extra);
    for i in 0..3 {
        w.push_str(&format!(
            "\n[[people]]\nid = \"p{i}\"\nfollows = [\"{APPID}\"]\n"
        ));
    }
    let sim = TestSim::with(&w).await;
    let t = sim.token().await;
    let mut seen = Vec::new();
    let mut next = String::new();
    loop {
        let v = sim
            .get(&format!(
                "/cgi-bin/user/get?access_token={t}&next_openid={next}"
            ))
            .await;
        assert_eq!(v["total"], 5, "{v}");
        let page: Vec<String> = v["data"]["openid"]
            .as_array()
            .map(|a| a.iter().map(|o| o.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        assert_eq!(v["count"], page.len());
        seen.extend(page);
        next = v["next_openid"].as_str().unwrap().to_string();
        if next.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(seen[0], sim.openid(APPID, "alice").await, "follow order");
    let v = sim
        .get(&format!(
            "/cgi-bin/user/get?access_token={t}&next_openid=bogus"
        ))
        .await;
    assert_eq!(errcode(&v), 40003);
}
