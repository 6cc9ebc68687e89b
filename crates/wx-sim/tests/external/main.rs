//! Real clients nobody here wrote (wechatpy, headless Chromium) against the simulator.
//!
//! They need Python with wechatpy and Chromium with chromedriver; `bash .ci/run`
//! installs both. A missing one fails the test, unless `WXHUB_SKIP_EXTERNAL=1`
//! says explicitly to skip. Paths: `WXHUB_PYTHON` (default
//! `.ci/venv/bin/python`), `WXHUB_CHROMIUM` (default `/usr/bin/chromium`),
//! `WXHUB_CHROMEDRIVER` (default `/usr/bin/chromedriver`).

mod support;

// Shared with wxhub's browser tests, each of which uses a different part.
#[allow(dead_code)]
mod browser;

mod chromium;
mod wechatpy;
