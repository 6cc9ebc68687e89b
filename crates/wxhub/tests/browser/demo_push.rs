//! Issue 12: on `wxhub dev`, a newcomer presses one button on the demo
//! page and sees a follow arrive through the hub's push gateway, with the
//! follower's profile, within seconds: simulated platform → /push/{appid}
//! (safe mode) → the demo page as the subscriber.

use std::time::{Duration, Instant};

use crate::driver::{Browser, ONE_BROWSER};
use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_shows_on_the_demo_page_with_its_profile() {
    if support::skipped("a_follow_shows_on_the_demo_page_with_its_profile") {
        return;
    }
    let _one = ONE_BROWSER.lock().await;
    let any = "127.0.0.1:0".parse().expect("socket address");
    let env = wxhub::dev::start(any, any, any)
        .await
        .expect("wxhub dev starts");
    let mut b = Browser::start().await;
    b.goto(&env.demo_url).await;
    let link = b.wait_for("#messages").await;
    b.click(&link).await;
    let button = b.wait_for("#follow").await;
    let pressed = Instant::now();
    b.click(&button).await;
    // The page comes back after the platform's delivery was answered; the
    // delivery to the demo page follows at once.
    let shown = loop {
        let found = b.find_all("li.push[data-event=subscribe]").await;
        if let Some(e) = found.first() {
            break b.text(e).await;
        }
        assert!(
            pressed.elapsed() < Duration::from_secs(10),
            "no follow shown"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.goto(&format!("{}/messages", env.demo_url)).await;
    };
    assert!(shown.contains("event subscribe"), "{shown}");
    assert!(shown.contains("via ADD_SCENE"), "with the profile: {shown}");
    assert!(pressed.elapsed() < Duration::from_secs(10));
    b.screenshot("push-1-follow").await;
    b.quit().await;
    drop(b);
    let wxhub::dev::DevEnv { sim, hub, .. } = env;
    hub.shutdown().await;
    sim.shutdown().await;
}
