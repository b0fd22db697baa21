//! The layer's settings and their defaults, with the reasons for each.
//!
//! | setting | default | why |
//! |---|---|---|
//! | cookie name | `id` | says nothing about the framework behind it (OWASP) |
//! | `Secure` | on | the ID must never travel over plain HTTP |
//! | `HttpOnly` | on | scripts cannot read the ID, so XSS cannot steal it |
//! | `SameSite` | `Lax` | cross-site POSTs do not carry the session (CSRF) |
//! | `Path` | `/` | one session for the whole site |
//! | `Domain` | none | the cookie stays on the host that set it |
//! | `__Host-` prefix | off | turn on when the site is HTTPS-only: the browser then refuses the cookie from subdomains or without `Secure` |
//! | idle timeout | 30 min | OWASP ASVS level 2 |
//! | absolute timeout | 12 h | OWASP ASVS level 2 |
//! | remember-me idle / absolute | 30 days / 30 days | a long-lived login the user asked for |
//! | idle refresh step | idle timeout / 30 | see below |
//! | header transport | `x-session-id`, on | for clients without cookies |
//! | store timeout | 5 s | a slow store becomes a 503, not a hung request |
//! | rotation grace | 10 s | see below |
//! | events | logged through `tracing` | see [`event`](crate::event) |
//!
//! ## Sliding expiry without a write on every read
//! A session used at least once every *idle timeout* never idles out, and reading a session
//! does not cost a store write each time. Both hold because when a request extends the idle
//! deadline it sets it to *now + idle timeout + refresh step*, and a later request extends
//! it again only once less than one idle timeout remains, which is at most once per refresh
//! step. The price is precision on the other side: a session unused for *idle timeout* is
//! gone by *idle timeout + refresh step* at the latest (31 minutes with the defaults).
//! Set the step to zero to extend on every request.
//!
//! ## Requests that race a rotation
//! After a login (or any rotation) the old ID is dead, but the client may still send it
//! for a moment: requests it sent before the response with the new ID arrived. Such a
//! request that wants to start a new session is refused (409, no cookie), since the new
//! session's cookie would overwrite the rotated one and silently log the user out. That
//! holds for requests that arrived before the rotation or up to the *rotation grace* after
//! it. A request that arrives later with the old ID comes from a client that never got
//! the new one (its response was lost): it is served a new session instead, rather than
//! refused until the store forgets the rotation
//! ([`ROTATION_TOMBSTONE`](crate::store::ROTATION_TOMBSTONE), 5 minutes).
//!
//! ## Changing the timeouts
//! The timeouts in force are the ones configured now, not the ones a session was stored
//! under: after lowering the idle or absolute timeout (say, in a redeploy), a request
//! finds that a stored session unused, or alive, for longer than the new limit (the idle
//! one plus a refresh step) has ended, and the others slide under the new idle timeout
//! from their next request. Store listings and counts go by the deadlines stored until
//! then. Raising a timeout reaches a session when its deadline next moves.

use std::sync::Arc;

use http::HeaderName;
use time::Duration;

use crate::error::Error;
use crate::event::{log_event, EventSink};
use crate::id::Id;

/// The `SameSite` attribute of the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// Sent only with same-site requests.
    Strict,
    /// Sent with same-site requests and top-level cross-site navigations (the default).
    Lax,
    /// Sent with all requests; requires `Secure`.
    None,
}

impl SameSite {
    fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

/// A custom error response: how a [`SessionLayer`](crate::SessionLayer) turns an
/// [`Error`] into the response the client sees.
pub type ErrorHandler = Arc<dyn Fn(&Error) -> http::Response<String> + Send + Sync>;

/// Idle and absolute timeouts for one kind of session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeouts {
    pub(crate) idle: Duration,
    pub(crate) absolute: Duration,
}

#[derive(Clone)]
pub(crate) struct Config {
    /// The name the user chose, without a prefix.
    pub(crate) cookie_name: String,
    pub(crate) host_prefix: bool,
    /// The name on the wire, prefix included; derived from the two above.
    pub(crate) full_cookie_name: Arc<str>,
    pub(crate) secure: bool,
    pub(crate) http_only: bool,
    pub(crate) same_site: SameSite,
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    pub(crate) header: Option<HeaderName>,
    pub(crate) standard: Timeouts,
    pub(crate) remember_me: Timeouts,
    /// `None` until set: then a thirtieth of the idle timeout in force.
    pub(crate) refresh_step: Option<Duration>,
    pub(crate) store_timeout: Option<std::time::Duration>,
    /// See the module docs, "Requests that race a rotation".
    pub(crate) rotation_grace: Duration,
    pub(crate) error_handler: Option<ErrorHandler>,
    pub(crate) event_sink: EventSink,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cookie_name: "id".to_owned(),
            host_prefix: false,
            full_cookie_name: "id".into(),
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            path: "/".to_owned(),
            domain: None,
            header: Some(HeaderName::from_static("x-session-id")),
            standard: Timeouts {
                idle: Duration::minutes(30),
                absolute: Duration::hours(12),
            },
            remember_me: Timeouts {
                idle: Duration::days(30),
                absolute: Duration::days(30),
            },
            refresh_step: None,
            store_timeout: Some(std::time::Duration::from_secs(5)),
            rotation_grace: Duration::seconds(10),
            error_handler: None,
            event_sink: Arc::new(log_event),
        }
    }
}

impl Config {
    /// Sets the cookie's name and whether it carries the `__Host-` prefix.
    pub(crate) fn set_cookie_name(&mut self, name: &str, host_prefix: bool) {
        self.cookie_name = name.to_owned();
        self.host_prefix = host_prefix;
        self.full_cookie_name = if host_prefix {
            format!("__Host-{name}").into()
        } else {
            name.into()
        };
    }

    /// The cookie's full name, prefix included.
    pub(crate) fn full_cookie_name(&self) -> Arc<str> {
        self.full_cookie_name.clone()
    }

    pub(crate) fn timeouts(&self, remember_me: bool) -> Timeouts {
        if remember_me {
            self.remember_me
        } else {
            self.standard
        }
    }

    pub(crate) fn refresh_step(&self, timeouts: Timeouts) -> Duration {
        self.refresh_step.unwrap_or(timeouts.idle / 30)
    }

    /// Checks the combination of settings, naming the first problem found.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        // Browsers enforce a prefix matched case-insensitively (RFC 6265bis), whether it came
        // from `with_host_prefix` or was written into the name itself.
        let has_prefix = |prefix: &str| {
            self.full_cookie_name
                .get(..prefix.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
        };
        let host = self.host_prefix || has_prefix("__Host-");
        if host && (!self.secure || self.domain.is_some() || self.path != "/") {
            return Err(Error::config(
                "a __Host- cookie must be Secure, have Path=/ and no Domain",
            ));
        }
        if has_prefix("__Secure-") && !self.secure {
            return Err(Error::config("a __Secure- cookie must be Secure"));
        }
        if self.same_site == SameSite::None && !self.secure {
            return Err(Error::config("a SameSite=None cookie must be Secure"));
        }
        for timeouts in [self.standard, self.remember_me] {
            if !timeouts.idle.is_positive() || !timeouts.absolute.is_positive() {
                return Err(Error::config("session timeouts must be positive"));
            }
        }
        if self.refresh_step.is_some_and(|step| step.is_negative()) {
            return Err(Error::config("the idle refresh step cannot be negative"));
        }
        if self.rotation_grace.is_negative() {
            return Err(Error::config("the rotation grace cannot be negative"));
        }
        Ok(())
    }

    /// The `Set-Cookie` value that hands `id` to the client. `max_age` makes it a
    /// persistent cookie (remember-me); `None` makes it a browser-session cookie.
    pub(crate) fn set_cookie(&self, id: &Id, max_age: Option<Duration>) -> String {
        use std::fmt::Write as _;
        let mut cookie = String::with_capacity(160);
        cookie.push_str(&self.full_cookie_name);
        cookie.push('=');
        id.push_secret(&mut cookie);
        if let Some(max_age) = max_age {
            // Writing to a String cannot fail.
            let _ = write!(cookie, "; Max-Age={}", max_age.whole_seconds().max(0));
        }
        self.push_attributes(&mut cookie);
        cookie
    }

    /// The `Set-Cookie` value that makes the client forget its session cookie.
    pub(crate) fn removal_cookie(&self) -> String {
        let mut cookie = self.full_cookie_name.to_string();
        cookie.push_str("=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT");
        self.push_attributes(&mut cookie);
        cookie
    }

    fn push_attributes(&self, cookie: &mut String) {
        cookie.push_str("; Path=");
        cookie.push_str(&self.path);
        if let Some(domain) = &self.domain {
            cookie.push_str("; Domain=");
            cookie.push_str(domain);
        }
        if self.secure {
            cookie.push_str("; Secure");
        }
        if self.http_only {
            cookie.push_str("; HttpOnly");
        }
        cookie.push_str("; SameSite=");
        cookie.push_str(self.same_site.as_str());
    }
}

/// Whether `text` can be a cookie name (an HTTP token, RFC 6265).
pub(crate) fn is_cookie_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `text` can be a cookie attribute value (`Path`, `Domain`).
pub(crate) fn is_attribute_value(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b';')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_secure_ones() {
        let config = Config::default();
        let id = Id::random().unwrap();
        let cookie = config.set_cookie(&id, None);
        let want = format!(
            "id={}; Path=/; Secure; HttpOnly; SameSite=Lax",
            id.expose_secret()
        );
        assert_eq!(cookie, want);
        assert_eq!(config.standard.idle, Duration::minutes(30));
        assert_eq!(config.standard.absolute, Duration::hours(12));
        assert_eq!(config.refresh_step(config.standard), Duration::minutes(1));
        assert!(config.validate().is_ok());
    }

    #[test]
    fn persistent_and_removal_cookies() {
        let mut config = Config::default();
        config.set_cookie_name("id", true);
        let id = Id::random().unwrap();
        assert_eq!(
            config.set_cookie(&id, Some(Duration::days(30))),
            format!(
                "__Host-id={}; Max-Age=2592000; Path=/; Secure; HttpOnly; SameSite=Lax",
                id.expose_secret()
            )
        );
        config.set_cookie_name("id", false);
        config.domain = Some("example.com".into());
        assert_eq!(
            config.removal_cookie(),
            "id=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/; \
             Domain=example.com; Secure; HttpOnly; SameSite=Lax"
        );
    }

    #[test]
    fn inconsistent_settings_are_refused() {
        let host_insecure = Config {
            host_prefix: true,
            secure: false,
            ..Config::default()
        };
        assert!(host_insecure.validate().is_err());
        let host_with_domain = Config {
            host_prefix: true,
            domain: Some("example.com".into()),
            ..Config::default()
        };
        assert!(host_with_domain.validate().is_err());
        let none_insecure = Config {
            same_site: SameSite::None,
            secure: false,
            ..Config::default()
        };
        assert!(none_insecure.validate().is_err());
        let zero_idle = Config {
            standard: Timeouts {
                idle: Duration::ZERO,
                absolute: Duration::hours(1),
            },
            ..Config::default()
        };
        assert!(zero_idle.validate().is_err());
    }

    #[test]
    fn a_prefix_written_into_the_name_is_held_to_its_rules() {
        // Browsers silently refuse a cookie whose name promises what its attributes break:
        // every session would be lost. Such settings must fail when the layer is built.
        let mut host_with_path = Config {
            path: "/app".into(),
            ..Config::default()
        };
        host_with_path.set_cookie_name("__Host-sid", false);
        assert!(host_with_path.validate().is_err());
        let mut host_any_case = Config {
            domain: Some("example.com".into()),
            ..Config::default()
        };
        host_any_case.set_cookie_name("__host-sid", false);
        assert!(host_any_case.validate().is_err());
        let mut secure_prefix = Config {
            secure: false,
            ..Config::default()
        };
        secure_prefix.set_cookie_name("__Secure-sid", false);
        assert!(secure_prefix.validate().is_err());
        let mut fine = Config::default();
        fine.set_cookie_name("__Host-sid", false);
        assert!(fine.validate().is_ok());
        fine.set_cookie_name("__Secure-sid", false);
        fine.path = "/app".into();
        assert!(fine.validate().is_ok());
    }

    #[test]
    fn cookie_names_and_values_are_checked() {
        assert!(is_cookie_name("id"));
        assert!(is_cookie_name("my_session-1"));
        assert!(!is_cookie_name(""));
        assert!(!is_cookie_name("a b"));
        assert!(!is_cookie_name("a=b"));
        assert!(!is_cookie_name("a;b"));
        assert!(is_attribute_value("/app"));
        assert!(!is_attribute_value("/a;b"));
        assert!(!is_attribute_value("/a b"));
    }
}
