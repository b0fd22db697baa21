//! Helpers shared by the HTTP-level tests: a store wrapper that counts calls and injects
//! faults around a real store, and small request/response utilities.

#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::Router;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use sessionware::{Delta, Error, IdHash, Record, SessionInfo, SessionStore};
use time::OffsetDateTime;
use tower::ServiceExt;

/// What the wrapped store does when called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    None = 0,
    /// Every call fails as if the store were unreachable.
    Unavailable = 1,
    /// Calls that write fail as if the store were unreachable; reads work.
    WritesUnavailable = 2,
    /// Every call fails with a store-side error.
    Failing = 3,
    /// Every call hangs for a minute.
    Hanging = 4,
    /// Calls that write fail with a store-side error; reads work.
    WritesFailing = 5,
    /// Calls that write hang for a minute (and never reach the store); reads work.
    WritesHanging = 6,
}

#[derive(Default)]
pub struct Counts {
    pub loads: AtomicUsize,
    pub creates: AtomicUsize,
    pub applies: AtomicUsize,
    pub rotates: AtomicUsize,
    pub deletes: AtomicUsize,
    pub others: AtomicUsize,
}

impl Counts {
    pub fn total(&self) -> usize {
        [
            &self.loads,
            &self.creates,
            &self.applies,
            &self.rotates,
            &self.deletes,
            &self.others,
        ]
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .sum()
    }
}

/// A real store with call counters and a fault switch in front of it.
#[derive(Clone)]
pub struct Instrumented<S> {
    pub inner: S,
    pub counts: Arc<Counts>,
    fault: Arc<AtomicU8>,
}

impl<S: SessionStore + Clone> Instrumented<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            counts: Arc::default(),
            fault: Arc::new(AtomicU8::new(Fault::None as u8)),
        }
    }

    pub fn set_fault(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::SeqCst);
    }

    fn fault(&self) -> Fault {
        match self.fault.load(Ordering::SeqCst) {
            1 => Fault::Unavailable,
            2 => Fault::WritesUnavailable,
            3 => Fault::Failing,
            4 => Fault::Hanging,
            5 => Fault::WritesFailing,
            6 => Fault::WritesHanging,
            _ => Fault::None,
        }
    }

    async fn gate(&self, counter: &AtomicUsize, writes: bool) -> Result<(), Error> {
        counter.fetch_add(1, Ordering::SeqCst);
        match self.fault() {
            Fault::None => Ok(()),
            Fault::WritesUnavailable | Fault::WritesFailing | Fault::WritesHanging if !writes => {
                Ok(())
            }
            Fault::Unavailable | Fault::WritesUnavailable => Err(Error::unavailable(
                std::io::Error::other("connection refused by 10.9.8.7:6379"),
            )),
            Fault::Failing | Fault::WritesFailing => {
                Err(Error::store("ERR internal at table sessions_secret"))
            }
            Fault::Hanging | Fault::WritesHanging => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            }
        }
    }
}

#[async_trait]
impl<S: SessionStore + Clone> SessionStore for Instrumented<S> {
    async fn load(&self, key: &IdHash) -> Result<Option<Record>, Error> {
        self.gate(&self.counts.loads, false).await?;
        self.inner.load(key).await
    }
    async fn create(&self, key: &IdHash, record: &Record) -> Result<bool, Error> {
        self.gate(&self.counts.creates, true).await?;
        self.inner.create(key, record).await
    }
    async fn apply(&self, key: &IdHash, delta: &Delta) -> Result<bool, Error> {
        self.gate(&self.counts.applies, true).await?;
        self.inner.apply(key, delta).await
    }
    async fn rotate(&self, from: &IdHash, to: &IdHash, delta: &Delta) -> Result<bool, Error> {
        self.gate(&self.counts.rotates, true).await?;
        self.inner.rotate(from, to, delta).await
    }
    async fn rotated_at(&self, key: &IdHash) -> Result<Option<OffsetDateTime>, Error> {
        self.gate(&self.counts.others, false).await?;
        self.inner.rotated_at(key).await
    }
    async fn delete(&self, key: &IdHash) -> Result<bool, Error> {
        self.gate(&self.counts.deletes, true).await?;
        self.inner.delete(key).await
    }
    async fn list_user(&self, user_id: &str) -> Result<Vec<SessionInfo>, Error> {
        self.gate(&self.counts.others, false).await?;
        self.inner.list_user(user_id).await
    }
    async fn delete_user(&self, user_id: &str, keep: Option<&IdHash>) -> Result<u64, Error> {
        self.gate(&self.counts.deletes, true).await?;
        self.inner.delete_user(user_id, keep).await
    }
    async fn delete_user_session(&self, user_id: &str, key: &IdHash) -> Result<bool, Error> {
        self.gate(&self.counts.deletes, true).await?;
        self.inner.delete_user_session(user_id, key).await
    }
    async fn delete_expired(&self) -> Result<u64, Error> {
        self.gate(&self.counts.deletes, true).await?;
        self.inner.delete_expired().await
    }
    async fn count(&self) -> Result<u64, Error> {
        self.gate(&self.counts.others, false).await?;
        self.inner.count().await
    }
}

/// A response, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// The session ID a `Set-Cookie` of `name` hands out (empty for a removal).
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookie(name)
            .and_then(|c| c.split(';').next().map(str::to_owned))
            .and_then(|pair| pair.split_once('=').map(|(_, v)| v.to_owned()))
    }

    /// The whole `Set-Cookie` header for `name`.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }
}

/// Sends one request through `app` with `oneshot`.
pub async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// A GET of `path` carrying `cookie` (as `id=...`) if given.
pub fn get(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut request = Request::get(path);
    if let Some(id) = cookie {
        request = request.header("cookie", format!("id={id}"));
    }
    request.body(Body::empty()).unwrap()
}
