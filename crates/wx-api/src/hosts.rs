//! Where the platform lives: the API host and the user-facing open host.
//!
//! Both are configurable so that tests and offline development can point every call at a
//! simulator.

use url::Url;

use crate::error::WxError;

/// The official API host.
pub const DEFAULT_API_BASE: &str = "https://api.weixin.qq.com";
/// The official host of the user-facing authorize pages.
pub const DEFAULT_OPEN_BASE: &str = "https://open.weixin.qq.com";

/// The two base URLs the protocol uses.
///
/// A base may carry a path prefix (`http://127.0.0.1:8080/wx`); endpoint paths are appended to
/// it. It may not carry a query or fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hosts {
    api: Url,
    open: Url,
}

impl Default for Hosts {
    fn default() -> Self {
        Self::new(DEFAULT_API_BASE, DEFAULT_OPEN_BASE).expect("the official base URLs parse")
    }
}

impl Hosts {
    /// The official hosts, `https://api.weixin.qq.com` and `https://open.weixin.qq.com`.
    pub fn official() -> Self {
        Self::default()
    }

    /// Custom API and open bases.
    ///
    /// # Errors
    ///
    /// [`WxError::InvalidInput`] if either is not an absolute `http`/`https` URL with a host and
    /// without query or fragment.
    pub fn new(api: &str, open: &str) -> Result<Self, WxError> {
        Ok(Self {
            api: parse_base(api)?,
            open: parse_base(open)?,
        })
    }

    /// One base for both hosts, as a simulator serves `/cgi-bin`, `/sns` and `/connect` from
    /// one address.
    ///
    /// # Errors
    ///
    /// As for [`Hosts::new`].
    pub fn single(base: &str) -> Result<Self, WxError> {
        Self::new(base, base)
    }

    /// The API base.
    pub fn api_base(&self) -> &Url {
        &self.api
    }

    /// The open (authorize page) base.
    pub fn open_base(&self) -> &Url {
        &self.open
    }

    /// `path` under the API base, with the query pairs appended (form-encoded).
    pub(crate) fn api_url(&self, path: &str, query: &[(&str, &str)]) -> Url {
        join(&self.api, path, query)
    }

    /// `path` under the open base, with no query.
    pub(crate) fn open_url_prefix(&self, path: &str) -> String {
        join(&self.open, path, &[]).into()
    }
}

fn parse_base(s: &str) -> Result<Url, WxError> {
    let url = Url::parse(s).map_err(|_| WxError::invalid_input("base URL does not parse"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(WxError::invalid_input(
            "base URL must be http or https with a host",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(WxError::invalid_input(
            "base URL must not have a query or fragment",
        ));
    }
    Ok(url)
}

fn join(base: &Url, path: &str, query: &[(&str, &str)]) -> Url {
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}{path}"));
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let h = Hosts::default();
        assert_eq!(
            h.api_url("/cgi-bin/token", &[("a", "b c")]).as_str(),
            "https://api.weixin.qq.com/cgi-bin/token?a=b+c"
        );
        assert_eq!(
            h.open_url_prefix("/connect/oauth2/authorize"),
            "https://open.weixin.qq.com/connect/oauth2/authorize"
        );
    }

    #[test]
    fn prefix_and_port() {
        let h = Hosts::single("http://127.0.0.1:40123/wx/").unwrap();
        assert_eq!(
            h.api_url("/sns/auth", &[]).as_str(),
            "http://127.0.0.1:40123/wx/sns/auth"
        );
    }

    #[test]
    fn rejects_bad_bases() {
        for bad in ["", "ftp://x", "http://x/?a=1", "http://x/#f", "/relative"] {
            assert!(Hosts::single(bad).is_err(), "{bad}");
        }
    }
}
