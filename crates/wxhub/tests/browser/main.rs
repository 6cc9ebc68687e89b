//! Headless Chromium signs in on `wxhub dev`'s demo page: demo page → hub →
//! simulated WeChat (person picker, consent page) → hub → demo page, every
//! step a real browser navigation with real cookies and redirects.
//!
//! Needs Chromium and chromedriver (`bash .ci/run` installs them). A missing
//! one fails the test unless `WXHUB_SKIP_EXTERNAL=1` says explicitly to skip.
//! Paths: `WXHUB_CHROMIUM` (default `/usr/bin/chromium`) and
//! `WXHUB_CHROMEDRIVER` (default `/usr/bin/chromedriver`). Each test leaves a
//! screenshot of its last page in `$TMPDIR/wxhub-browser/`.

/// The simulator's external-test support, shared rather than copied: the
/// tool lookup, the explicit-skip rule and the loopback HTTP client. The
/// rest of it (its own world, business server and landing page) is for
/// wx-sim's tests and unused here.
#[path = "../../../wx-sim/tests/external/support.rs"]
#[allow(dead_code)]
mod support;

/// The WebDriver client, also shared with the simulator's browser tests.
#[path = "../../../wx-sim/tests/external/browser.rs"]
#[allow(dead_code)]
mod driver;

mod component;
mod console;
mod demo_login;
mod demo_push;
