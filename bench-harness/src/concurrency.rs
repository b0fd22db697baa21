//! The lost-update case: 50 concurrent requests on one session, each setting a different
//! key; afterwards, how many of the 50 keys the session holds. Repeated on fresh sessions.

use std::net::SocketAddr;

use crate::client;

pub const KEYS: usize = 50;
pub const TRIALS: usize = 30;

/// Keys that survived, one entry per trial.
pub async fn run_trials(addr: SocketAddr) -> Vec<usize> {
    let mut survivors = Vec::with_capacity(TRIALS);
    for trial in 0..TRIALS {
        survivors.push(one_trial(addr, trial).await);
    }
    survivors
}

async fn one_trial(addr: SocketAddr, trial: usize) -> usize {
    let first = client::get(addr, "/incr", None)
        .await
        .expect("start a session");
    assert_eq!(first.status, 200, "starting a session: {}", first.body);
    let cookie = first.cookie_header();
    let keys: Vec<String> = (0..KEYS).map(|i| format!("t{trial}k{i}")).collect();

    // Connect all 50 first and only then send, so the requests really overlap instead of
    // trickling in behind their own TCP handshakes.
    let mut prepared = Vec::with_capacity(KEYS);
    for key in &keys {
        prepared.push(
            client::prepare(addr, &format!("/set/{key}"), Some(&cookie))
                .await
                .expect("connect"),
        );
    }
    // Collected, not a lazy iterator: every request is spawned before the first is awaited.
    let sends: Vec<_> = prepared
        .into_iter()
        .map(|request| tokio::spawn(request.send()))
        .collect();
    for send in sends {
        let response = send.await.expect("task").expect("set request");
        assert_eq!(
            response.status, 200,
            "set request failed: {}",
            response.body
        );
    }

    let mut present = 0;
    for key in &keys {
        let response = client::get(addr, &format!("/get/{key}"), Some(&cookie))
            .await
            .expect("get request");
        if response.body.trim() == "1" {
            present += 1;
        }
    }
    present
}
