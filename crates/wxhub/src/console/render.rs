//! HTML and inline SVG for the console: escaped text, durations, the page
//! frame, and the three drawings (a credential's time line, a gauge, a bar
//! chart), each with a `<title>`, a `<desc>` and the same facts in text.

use std::fmt::Write;

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query value.
pub fn query_value(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A duration in words: `1h05m`, `4m10s`, `12s`.
pub fn dur(secs: i64) -> String {
    let (sign, secs) = if secs < 0 { ("-", -secs) } else { ("", secs) };
    if secs >= 86400 {
        format!("{sign}{}d{:02}h", secs / 86400, (secs % 86400) / 3600)
    } else if secs >= 3600 {
        format!("{sign}{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    } else if secs >= 60 {
        format!("{sign}{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{sign}{secs}s")
    }
}

/// A moment relative to `now`: `in 1h05m`, `4m10s ago`.
pub fn rel(at: i64, now: i64) -> String {
    if at == now {
        "now".to_string()
    } else if at > now {
        format!("in {}", dur(at - now))
    } else {
        format!("{} ago", dur(now - at))
    }
}

/// A Unix time as `YYYY-MM-DD HH:MM:SS` Beijing time (the platform's day).
pub fn beijing(at: i64) -> String {
    let t = at + 8 * 3600;
    let (day, secs) = (t.div_euclid(86400), t.rem_euclid(86400));
    let (y, m, d) = civil(day);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

/// A day number (days since 1970-01-01) as `MM-DD`.
pub fn month_day(day: i64) -> String {
    let (_, m, d) = civil(day);
    format!("{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

const STYLE: &str = "\
*{box-sizing:border-box}body{font-family:system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}\
header{background:#1f6f4a;color:#fff;padding:10px 16px;display:flex;flex-wrap:wrap;gap:8px 16px;align-items:center}\
header a{color:#fff}header h1{font-size:1.2em;margin:0}header form{margin:0 0 0 auto}\
main{padding:12px 16px;max-width:1200px;margin:0 auto}\
a{color:#1557a0}code{font-size:.9em}\
.card{background:#fff;border:1px solid #d8dde3;border-radius:6px;padding:10px 12px;margin:10px 0}\
.row{display:flex;flex-wrap:wrap;gap:6px 14px;align-items:baseline}\
.badge{display:inline-block;border-radius:10px;padding:1px 9px;font-size:.85em;font-weight:600}\
.ok{background:#dff3e6;color:#135c33}.degraded{background:#fff1c2;color:#6b4e00}.unhealthy{background:#fbd9d9;color:#8a1111}\
.reason{margin:6px 0;white-space:pre-wrap}.muted{color:#5b6570;font-size:.9em}\
.slots{display:grid;grid-template-columns:repeat(auto-fit,minmax(280px,1fr));gap:8px}\
.gauges{display:flex;flex-wrap:wrap;gap:8px 18px}\
svg{max-width:100%;height:auto;display:block}\
table{border-collapse:collapse;width:100%;background:#fff}td,th{border-bottom:1px solid #e3e6ea;padding:5px 6px;text-align:left;vertical-align:top}\
.scroll{overflow-x:auto}\
input[type=text],input[type=search],input[type=password]{padding:6px;border:1px solid #aab2bb;border-radius:4px;min-width:0;max-width:100%}\
button{padding:6px 12px;border-radius:4px;border:1px solid #1f6f4a;background:#1f6f4a;color:#fff;cursor:pointer}\
header button{background:#fff;color:#1f6f4a}\
.error{background:#fbd9d9;color:#8a1111;padding:8px 10px;border-radius:4px}\
nav.pages{display:flex;gap:12px;margin:12px 0}\
.sr{position:absolute;left:-9999px}\
@media (max-width:600px){main{padding:8px}header{padding:8px}th.wide,td.wide{display:none}}";

/// A whole page: the frame, the header with sign-out (when `csrf` is
/// given) and `body`.
pub fn page(title: &str, csrf: Option<&str>, body: &str) -> String {
    let sign_out = match csrf {
        Some(t) => format!(
            "<form method=\"post\" action=\"/console/sign-out\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button id=\"sign-out\" type=\"submit\">Sign out</button></form>",
            esc(t)
        ),
        None => String::new(),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{} · wxhub</title><style>{STYLE}</style></head><body><header><h1><a href=\"/\">wxhub</a></h1><span>{}</span>{sign_out}</header><main>{body}</main></body></html>",
        esc(title),
        esc(title)
    )
}

/// A credential's time line: fetched, now, the planned refresh, expiry,
/// and in classic mode when the previous token dies, on one axis from the
/// fetch to the expiry.
#[derive(Debug, Clone)]
pub struct Timeline<'a> {
    pub kind: &'a str,
    pub now: i64,
    pub fetched_at: i64,
    pub expires_at: i64,
    pub refresh_at: i64,
    pub previous_dies_at: Option<i64>,
}

impl Timeline<'_> {
    /// The SVG and, beside it, the same facts in words.
    pub fn svg(&self) -> String {
        let (w, h, pad) = (320.0_f64, 56.0_f64, 10.0_f64);
        let start = self.fetched_at.min(self.now);
        let end = self.expires_at.max(self.refresh_at).max(self.now + 1);
        let span = (end - start).max(1) as f64;
        let x = |t: i64| pad + (t - start) as f64 / span * (w - 2.0 * pad);
        let mut marks = String::new();
        let mut mark = |t: i64, color: &str, label: &str, y: f64| {
            let at = x(t);
            // Labels near an end grow inwards, so none is cut off.
            let anchor = if at < 60.0 {
                "start"
            } else if at > w - 60.0 {
                "end"
            } else {
                "middle"
            };
            let _ = write!(
                marks,
                "<line x1=\"{at:.1}\" x2=\"{at:.1}\" y1=\"14\" y2=\"34\" stroke=\"{color}\" stroke-width=\"2\"/><text x=\"{at:.1}\" y=\"{y}\" font-size=\"9\" text-anchor=\"{anchor}\" fill=\"{color}\">{label}</text>"
            );
        };
        mark(self.fetched_at, "#5b6570", "fetched", 10.0);
        mark(self.expires_at, "#8a1111", "expires", 10.0);
        if let Some(d) = self.previous_dies_at {
            mark(d, "#6b4e00", "previous dies", 46.0);
        }
        mark(self.refresh_at, "#1557a0", "refresh", 46.0);
        mark(self.now, "#1b1f24", "now", 54.0);
        let desc = self.words();
        format!(
            "<svg role=\"img\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\"><title>{} time line</title><desc>{}</desc>\
<rect x=\"{pad}\" y=\"20\" width=\"{:.1}\" height=\"8\" rx=\"3\" fill=\"#dff3e6\"/>\
<rect x=\"{pad}\" y=\"20\" width=\"{:.1}\" height=\"8\" rx=\"3\" fill=\"#1f6f4a\" opacity=\".35\"/>{marks}</svg>",
            esc(self.kind),
            esc(&desc),
            x(self.expires_at) - pad,
            (x(self.now) - pad).max(0.0),
        )
    }

    /// The time line in words.
    pub fn words(&self) -> String {
        let mut s = format!(
            "fetched {}, refresh {}, expires {}",
            rel(self.fetched_at, self.now),
            rel(self.refresh_at, self.now),
            rel(self.expires_at, self.now)
        );
        if let Some(d) = self.previous_dies_at {
            let _ = write!(s, "; the previous token dies {}", rel(d, self.now));
        }
        s
    }
}

/// A gauge: `used` of `limit`, as a bar with its numbers.
pub fn gauge(label: &str, used: i64, limit: i64) -> String {
    let limit = limit.max(1);
    let share = (used as f64 / limit as f64).clamp(0.0, 1.0);
    let color = if share >= 0.9 {
        "#c0392b"
    } else if share >= 0.6 {
        "#d39e00"
    } else {
        "#1f6f4a"
    };
    let text = format!("{label}: {used} of {limit} ({:.0} %)", share * 100.0);
    format!(
        "<div class=\"gauge\"><svg role=\"img\" viewBox=\"0 0 160 16\" width=\"160\" height=\"16\"><title>{0}</title><desc>{0}</desc>\
<rect width=\"160\" height=\"16\" rx=\"4\" fill=\"#e3e6ea\"/><rect width=\"{1:.1}\" height=\"16\" rx=\"4\" fill=\"{color}\"/></svg><span class=\"muted\">{0}</span></div>",
        esc(&text),
        160.0 * share
    )
}

/// A bar chart of daily counts with the quota named: `(day, count)`.
pub fn day_chart(title: &str, days: &[(i64, i64)], quota: i64) -> String {
    let (w, h, top, bottom) = (620.0_f64, 170.0_f64, 14.0_f64, 24.0_f64);
    let max = days.iter().map(|d| d.1).max().unwrap_or(0).max(1);
    let scale = (max as f64 * 1.2).max(5.0);
    let bw = w / days.len().max(1) as f64;
    let mut bars = String::new();
    let mut rows = String::new();
    for (i, (day, n)) in days.iter().enumerate() {
        let bh = *n as f64 / scale * (h - top - bottom);
        let x = i as f64 * bw;
        let _ = write!(
            bars,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"#1f6f4a\"><title>{}: {n}</title></rect>",
            x + 1.0,
            h - bottom - bh,
            (bw - 2.0).max(1.0),
            month_day(*day)
        );
        if i % 5 == 0 || i + 1 == days.len() {
            let anchor = if i == 0 {
                "start"
            } else if i + 1 == days.len() {
                "end"
            } else {
                "middle"
            };
            let _ = write!(
                bars,
                "<text x=\"{:.1}\" y=\"{}\" font-size=\"10\" text-anchor=\"{anchor}\" fill=\"#5b6570\">{}</text>",
                if i == 0 {
                    x
                } else if i + 1 == days.len() {
                    x + bw
                } else {
                    x + bw / 2.0
                },
                h - 8.0,
                month_day(*day)
            );
        }
        let _ = write!(rows, "<tr><td>{}</td><td>{n}</td></tr>", month_day(*day));
    }
    let total: i64 = days.iter().map(|d| d.1).sum();
    let desc = format!(
        "{} days, {total} fetches in all, at most {max} a day; the platform's daily quota is {quota}, {:.1} % at the busiest day",
        days.len(),
        max as f64 * 100.0 / quota.max(1) as f64
    );
    format!(
        "<figure><svg role=\"img\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\"><title>{}</title><desc>{}</desc>\
<line x1=\"0\" x2=\"{w}\" y1=\"{base:.1}\" y2=\"{base:.1}\" stroke=\"#c8ced5\"/>{bars}\
<text x=\"2\" y=\"10\" font-size=\"10\" fill=\"#5b6570\">scale {scale:.0} a day; quota {quota} a day</text></svg>\
<figcaption class=\"muted\">{}</figcaption><details><summary>The numbers</summary><table><tr><th>day</th><th>fetches</th></tr>{rows}</table></details></figure>",
        esc(title),
        esc(&desc),
        esc(&desc),
        base = h - bottom,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_text() {
        assert_eq!(beijing(1_700_000_000), "2023-11-15 06:13:20");
        assert_eq!(month_day(crate::clock::beijing_day(1_700_000_000)), "11-15");
        assert_eq!(dur(3725), "1h02m");
        assert_eq!(rel(90, 100), "10s ago");
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn drawings_carry_text_alternatives() {
        let t = Timeline {
            kind: "access_token",
            now: 1000,
            fetched_at: 0,
            expires_at: 7200,
            refresh_at: 6960,
            previous_dies_at: Some(300),
        };
        let svg = t.svg();
        assert!(svg.contains("<title>access_token time line</title>"));
        assert!(svg.contains("previous token dies"));
        assert!(gauge("fetches today", 3, 2000).contains("3 of 2000"));
        let c = day_chart("Fetches", &[(19000, 2), (19001, 5)], 2000);
        assert!(c.contains("<desc>2 days, 7 fetches"));
    }
}
