//! Real clients nobody here wrote (wechatpy, headless Chromium) against the simulator.
