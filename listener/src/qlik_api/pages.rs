//! Qlik's list endpoints, read to the end.
//!
//! Why: Qlik's lists come in pages (the default sizes are small: 20 webhooks a page) and promise
//! no order (design.md §2). A check that reads one page, or stops where it expects older items
//! to begin, misses what is on the next page: the watched webhook on page 2, a long reload that
//! failed behind many newer ones.
//!
//! Promises:
//! - every page is read, following `links.next.href`, up to `max_pages`; a listing that stops
//!   early says so ([`Listing::incomplete`]) rather than passing for the whole list;
//! - a next link is followed only when it is a path under `/api/` on the tenant's own origin
//!   (scheme, host and port of the configured `tenantUrl`); anything else (another host, a
//!   scheme-relative `//host/…`, a path outside the API) is refused with one warning, so the
//!   API key is never sent elsewhere.

use super::{ApiError, QlikApi};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// A list as read: its items, and why it may lack some.
#[derive(Debug)]
pub struct Listing<T> {
    pub items: Vec<T>,
    /// `None` when every page was read.
    pub incomplete: Option<String>,
}

#[derive(Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct Page<T> {
    #[serde(default = "Vec::new")]
    data: Vec<T>,
    #[serde(default)]
    links: Links,
}

#[derive(Deserialize, Default)]
struct Links {
    next: Option<Link>,
}

#[derive(Deserialize)]
struct Link {
    href: String,
}

/// The path and query to request for a `links.next.href`, if it stays under `/api/` on `base`'s
/// origin; else why not. Pure.
pub fn next_path(base: &url::Url, href: &str) -> Result<String, String> {
    let url = base
        .join(href)
        .map_err(|e| format!("next link {href:?} is not a URL: {e}"))?;
    let same_origin = url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default();
    if !same_origin {
        return Err(format!(
            "next link {href:?} leaves the tenant ({}): not followed",
            url.origin().ascii_serialization()
        ));
    }
    if !url.path().starts_with("/api/") || url.username() != "" || url.password().is_some() {
        return Err(format!(
            "next link {href:?} is not a path under /api/: not followed"
        ));
    }
    Ok(match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    })
}

impl QlikApi {
    /// Every item of the list at `first` (a path with its query), page after page, at most
    /// `max_pages` pages.
    pub(crate) async fn list_all<T: DeserializeOwned>(
        &self,
        first: &str,
        max_pages: usize,
    ) -> Result<Listing<T>, ApiError> {
        let mut items = Vec::new();
        let mut path = first.to_owned();
        for _ in 0..max_pages {
            let page: Page<T> = self.get_json(&path).await?;
            items.extend(page.data);
            let Some(next) = page.links.next else {
                return Ok(Listing {
                    items,
                    incomplete: None,
                });
            };
            match next_path(&self.base, &next.href) {
                Ok(next) => path = next,
                Err(why) => {
                    tracing::warn!(list = %first, reason = %why, "Qlik Cloud's list gave a next link that is refused; the rest of the list is not read");
                    return Ok(Listing {
                        items,
                        incomplete: Some(why),
                    });
                }
            }
        }
        Ok(Listing {
            items,
            incomplete: Some(format!("more than {max_pages} pages")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_next_link_is_followed_only_under_api_on_the_tenants_origin() {
        let base = url::Url::parse("https://acme.eu.qlikcloud.com/").unwrap();
        let ok = |href: &str| next_path(&base, href);
        assert_eq!(
            ok("https://acme.eu.qlikcloud.com/api/v1/reloads?next=abc").as_deref(),
            Ok("/api/v1/reloads?next=abc")
        );
        assert_eq!(
            ok("/api/v1/reloads?next=x&limit=100").as_deref(),
            Ok("/api/v1/reloads?next=x&limit=100")
        );
        assert_eq!(
            ok("https://acme.eu.qlikcloud.com:443/api/core/webhooks?page=2").as_deref(),
            Ok("/api/core/webhooks?page=2")
        );
        for refused in [
            "https://evil.example.com/api/v1/reloads?next=abc",
            "//evil.example.com/api/v1/reloads",
            "///evil.example.com/api/v1/reloads",
            "http://acme.eu.qlikcloud.com/api/v1/reloads",
            "https://acme.eu.qlikcloud.com:8443/api/v1/reloads",
            "https://acme.eu.qlikcloud.com.evil.example.com/api/v1/reloads",
            "https://user:pw@acme.eu.qlikcloud.com/api/v1/reloads",
            "/api/../login?next=1",
            "/console/webhooks",
            "\\\\evil.example.com/api/v1/reloads",
            "javascript:alert(1)",
        ] {
            assert!(
                ok(refused).is_err(),
                "{refused} must be refused: {:?}",
                ok(refused)
            );
        }
        let said = ok("//evil.example.com/api/v1/reloads").unwrap_err();
        assert!(
            said.contains("leaves the tenant (https://evil.example.com)"),
            "{said}"
        );
    }
}
