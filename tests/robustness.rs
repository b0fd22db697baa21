//! Property tests of the rule "bad input gets a clear answer and loses nothing", seen from
//! HTTP: whatever a client puts in its `Cookie` or `x-session-id` headers, a request to a
//! route that reads the session is answered (never a panic, never a 5xx), a malformed ID
//! never reaches the store, and a session sent alongside garbage in other cookies still
//! loads.
//!
//! Cases come from a fixed seed and no regression files are written (see `config`), so
//! CI checks the same inputs on every run; set `PROPTEST_RNG_SEED` (and `PROPTEST_CASES`)
//! to search elsewhere by hand.

mod common;

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use common::{send, Instrumented};
use http::{HeaderValue, Request, StatusCode};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{contextualize_config, Config, RngSeed};
use serde_json::json;
use sessionware::{Id, MemoryStore, Record, Session, SessionLayer, SessionStore};
use time::{Duration, OffsetDateTime};

/// The ID of the session every case starts with. Fixed, so that the cases that change one
/// of its characters are the same on every run.
const GOOD: &str = "Robustness-test_session-id_0123456789abcdEA";

/// What `/get/seed` answers for the session filed under [`GOOD`].
const SEED: &str = "\"0\"";

/// URL-safe base64's symbols: what a session ID is written in.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn config(cases: u32) -> Config {
    contextualize_config(Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x5e55_10a5),
        ..Config::default()
    })
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
}

/// Runs `future` to completion on this test thread's runtime.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    RUNTIME.with(|runtime| runtime.block_on(future))
}

/// A fresh store holding one session, filed under [`GOOD`] with `seed` set, and an app
/// whose `/get/{key}` reads it.
async fn app_with_a_session() -> (Instrumented<MemoryStore>, Router) {
    let store = Instrumented::new(MemoryStore::new());
    let now = OffsetDateTime::now_utc();
    let mut record = Record::new(now, now + Duration::minutes(30), now + Duration::hours(12));
    record.data.insert("seed".into(), json!("0"));
    let id = Id::parse(GOOD.as_bytes()).expect("GOOD is a well-formed ID");
    assert!(store.inner.create(&id.hash(), &record).await.unwrap());
    let app = Router::new()
        .route(
            "/get/{key}",
            get(|session: Session, Path(key): Path<String>| async move {
                session
                    .get::<serde_json::Value>(&key)
                    .await
                    .map(|v| v.map(|v| v.to_string()).unwrap_or_default())
            }),
        )
        .layer(SessionLayer::new(store.clone()));
    (store, app)
}

/// What the app answered and how many loads it asked the store for.
struct Outcome {
    status: StatusCode,
    body: String,
    set_cookie: bool,
    loads: usize,
}

/// Sends `GET /get/seed` with `headers` (name, value) to a fresh app holding [`GOOD`].
fn read_seed(headers: &[(&str, HeaderValue)]) -> Outcome {
    block_on(async {
        let (store, app) = app_with_a_session().await;
        let mut request = Request::get("/get/seed");
        for (name, value) in headers {
            request = request.header(*name, value.clone());
        }
        let reply = send(&app, request.body(Body::empty()).unwrap()).await;
        Outcome {
            status: reply.status,
            body: reply.body,
            set_cookie: reply.headers.contains_key("set-cookie"),
            loads: store.counts.loads.load(Ordering::SeqCst),
        }
    })
}

/// The value of the one cookie named `id` across `headers`, as a cookie string has it
/// (`name=value` pairs separated by `;`, each trimmed of whitespace); `None` when there is
/// none or more than one (which one to trust would be a guess).
fn the_id_cookie(headers: &[&[u8]]) -> Option<Vec<u8>> {
    let mut values = headers
        .iter()
        .flat_map(|header| header.split(|b| *b == b';'))
        .filter_map(|pair| pair.trim_ascii().strip_prefix(b"id="));
    match (values.next(), values.next()) {
        (Some(value), None) => Some(value.to_vec()),
        _ => None,
    }
}

/// A byte a header value may hold: visible ASCII, space, tab, and any byte above ASCII.
fn header_byte() -> impl Strategy<Value = u8> + Clone {
    prop_oneof![
        8 => 0x20u8..=0x7e,
        1 => Just(b'\t'),
        2 => 0x80u8..=0xff,
    ]
}

/// A byte that makes a session ID malformed yet may stand in a header: padding, the
/// standard alphabet's `+` and `/`, separators, quotes, and bytes above ASCII.
fn wrong_symbol() -> impl Strategy<Value = u8> + Clone {
    prop_oneof![
        select(b"+/=.;, \"\\\t%".to_vec()),
        0x80u8..=0xff,
        header_byte().prop_filter("not a symbol", |b| !ALPHABET.contains(b)),
    ]
}

/// Texts that are, or are close to, a session ID: [`GOOD`], [`GOOD`] with one character
/// changed (into a symbol, which may or may not still be a canonical ID, or into a
/// wrong one), [`GOOD`] cut short, lengthened, quoted or padded with spaces, other IDs of
/// the right length, and very long values.
fn id_like() -> impl Strategy<Value = Vec<u8>> + Clone {
    let good = || GOOD.as_bytes().to_vec();
    let changed = (
        any::<Index>(),
        prop_oneof![select(ALPHABET.to_vec()), wrong_symbol()],
    )
        .prop_map(move |(at, byte)| {
            let mut text = good();
            let at = at.index(text.len());
            text[at] = byte;
            text
        });
    prop_oneof![
        2 => Just(good()),
        4 => changed,
        1 => (0..GOOD.len()).prop_map(move |len| good()[..len].to_vec()),
        1 => vec(select(ALPHABET.to_vec()), 1..4).prop_map(move |more| [good(), more].concat()),
        1 => Just([b"\"", GOOD.as_bytes(), b"\""].concat()),
        1 => Just([b" ", GOOD.as_bytes(), b"\t "].concat()),
        2 => vec(select(ALPHABET.to_vec()), 43),
        1 => (1usize..20_000).prop_map(|len| vec![b'A'; len]),
    ]
}

/// One `;`-separated part of a cookie string that is not a cookie named `id`: another
/// cookie (names close to `id` included), a bare word, or arbitrary bytes.
fn other_cookie() -> impl Strategy<Value = Vec<u8>> + Clone {
    let no_semicolon = header_byte().prop_filter("no separator", |b| *b != b';');
    let name = prop_oneof![
        select(vec![
            &b"xid"[..],
            b"ID",
            b"Id",
            b"id ",
            b"i d",
            b"sid",
            b"idx",
            b"theme",
            b"",
        ])
        .prop_map(<[u8]>::to_vec),
        vec(no_semicolon.clone(), 0..12),
    ];
    prop_oneof![
        3 => (name, vec(no_semicolon.clone(), 0..64))
            .prop_map(|(name, value)| [name, b"=".to_vec(), value].concat()),
        1 => vec(no_semicolon, 0..64),
    ]
    .prop_filter("not our cookie", |part| {
        !part.trim_ascii().starts_with(b"id=")
    })
}

/// `Cookie` header values: arbitrary bytes, and cookie strings mixing other cookies with
/// zero, one or two `id` cookies whose values are [`id_like`].
fn cookie_header() -> impl Strategy<Value = HeaderValue> {
    let ours = id_like().prop_map(|value| [b"id=".to_vec(), value].concat());
    let part = prop_oneof![3 => other_cookie(), 1 => ours];
    let separator = select(vec![&b";"[..], b"; ", b" ;", b";;", b";\t"]);
    let string = (vec((part, separator), 0..6)).prop_map(|parts| {
        let mut text = Vec::new();
        for (part, separator) in parts {
            text.extend(part);
            text.extend(separator);
        }
        text
    });
    prop_oneof![
        vec(header_byte(), 0..200),
        string.clone(),
        (string, Just(b"id=".to_vec()), id_like()).prop_map(|(a, b, c)| [a, b, c].concat()),
    ]
    .prop_filter_map("a valid header value", |bytes| {
        HeaderValue::from_bytes(&bytes).ok()
    })
}

/// `x-session-id` header values: arbitrary bytes and [`id_like`] text.
fn session_header() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![vec(header_byte(), 0..100), id_like()]
        .prop_filter_map("a valid header value", |bytes| {
            HeaderValue::from_bytes(&bytes).ok()
        })
}

/// Checks what every request in these tests must get: a plain success, the session's data
/// only when the request carried exactly [`GOOD`], and a store load only for a well-formed
/// ID.
fn check(outcome: &Outcome, carried: Option<&[u8]>) -> Result<(), TestCaseError> {
    prop_assert_eq!(outcome.status, StatusCode::OK, "body: {}", outcome.body);
    let well_formed = carried.is_some_and(|id| Id::parse(id).is_some());
    prop_assert_eq!(
        outcome.loads,
        usize::from(well_formed),
        "loads for carried ID {:?}",
        carried.map(String::from_utf8_lossy)
    );
    let expected = if carried == Some(GOOD.as_bytes()) {
        SEED
    } else {
        ""
    };
    prop_assert_eq!(outcome.body.as_str(), expected);
    // A route that only reads never hands out a session.
    prop_assert!(!outcome.set_cookie);
    Ok(())
}

#[test]
fn the_fixed_id_is_well_formed() {
    assert!(Id::parse(GOOD.as_bytes()).is_some());
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn any_cookie_headers_are_answered_and_malformed_ids_never_loaded(
        headers in vec(cookie_header(), 1..3),
    ) {
        let bytes: Vec<&[u8]> = headers.iter().map(HeaderValue::as_bytes).collect();
        let carried = the_id_cookie(&bytes);
        let sent: Vec<(&str, HeaderValue)> =
            headers.iter().map(|value| ("cookie", value.clone())).collect();
        check(&read_seed(&sent), carried.as_deref())?;
    }

    #[test]
    fn any_session_headers_are_answered_and_malformed_ids_never_loaded(
        headers in vec(session_header(), 1..3),
    ) {
        // Two session headers are ambiguous: no ID at all.
        let carried = match &headers[..] {
            [only] => Some(only.as_bytes()),
            _ => None,
        };
        let sent: Vec<(&str, HeaderValue)> =
            headers.iter().map(|value| ("x-session-id", value.clone())).collect();
        check(&read_seed(&sent), carried)?;
    }

    #[test]
    fn a_session_loads_whatever_other_cookies_come_with_it(
        before in vec(other_cookie(), 0..5),
        after in vec(other_cookie(), 0..5),
        split in any::<bool>(),
    ) {
        let ours = format!("id={GOOD}").into_bytes();
        let headers: Vec<Vec<u8>> = if split {
            // HTTP/2 may send each cookie in a header of its own.
            before.into_iter().chain([ours]).chain(after).collect()
        } else {
            vec![before.into_iter().chain([ours]).chain(after).collect::<Vec<_>>().join(&b"; "[..])]
        };
        let sent: Vec<(&str, HeaderValue)> = headers
            .iter()
            .map(|bytes| ("cookie", HeaderValue::from_bytes(bytes).expect("header bytes")))
            .collect();
        check(&read_seed(&sent), Some(GOOD.as_bytes()))?;
    }
}
