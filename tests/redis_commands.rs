//! What a request costs in Redis commands, measured with `INFO commandstats` around 1000
//! requests of each kind through the real `SessionLayer`, and asserted: loading a session
//! is one round trip, a write-back one more, and a read that need not extend the session's
//! deadline writes nothing. Prints the table kept in BENCHMARKS.md:
//!
//! ```text
//! cargo test --features redis --test redis_commands -- --nocapture
//! ```
//!
//! Runs on a private `redis-server` so that no other test's commands are counted.

#[path = "support/redis.rs"]
mod support;

use std::collections::BTreeMap;

use http::StatusCode;
use sessionware::{RedisStore, SessionLayer};

const REQUESTS: usize = 1000;
/// The commands the client sends; every other command counted runs inside a script.
const CLIENT_COMMANDS: [&str; 3] = ["evalsha", "hgetall", "script|load"];

async fn command_stats(conn: &mut redis::aio::MultiplexedConnection) -> BTreeMap<String, u64> {
    let info = support::info(conn, "commandstats").await;
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

struct Cost {
    request: &'static str,
    client: BTreeMap<String, u64>,
    scripted: BTreeMap<String, u64>,
}

impl Cost {
    fn round_trips(&self) -> f64 {
        self.client.values().sum::<u64>() as f64 / REQUESTS as f64
    }
}

fn per_request(commands: &BTreeMap<String, u64>) -> String {
    if commands.is_empty() {
        return "none".into();
    }
    commands
        .iter()
        .map(|(name, calls)| {
            format!(
                "{} {:.2}",
                name.to_uppercase(),
                *calls as f64 / REQUESTS as f64
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs `requests`, counting the commands Redis executed meanwhile.
async fn measure<F, Fut>(
    conn: &mut redis::aio::MultiplexedConnection,
    request: &'static str,
    run: F,
) -> Cost
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let before = command_stats(conn).await;
    run().await;
    let after = command_stats(conn).await;
    let (mut client, mut scripted) = (BTreeMap::new(), BTreeMap::new());
    for (name, calls) in after {
        let delta = calls - before.get(&name).copied().unwrap_or(0);
        if delta == 0 || name == "info" {
            continue;
        }
        if CLIENT_COMMANDS.contains(&name.as_str()) {
            client.insert(name, delta);
        } else {
            scripted.insert(name, delta);
        }
    }
    Cost {
        request,
        client,
        scripted,
    }
}

#[tokio::test]
async fn commands_per_request_stay_within_budget() {
    let server = support::OwnServer::start_volatile("commands");
    let store = match RedisStore::connect(&server.url()).await {
        Ok(store) => store,
        Err(err) => panic!("cannot reach the private redis-server: {err}"),
    };
    let app = support::app(SessionLayer::new(store));
    let mut conn = support::raw(&server.url()).await;

    // Warm up: the server learns the scripts (SCRIPT LOAD after the first NOSCRIPT).
    let warm = support::send(&app, "/set/n/0", None).await.cookie.unwrap();
    let warm = support::send(&app, "/login/warm", Some(&warm))
        .await
        .cookie
        .unwrap();
    assert_eq!(
        support::send(&app, "/logout", Some(&warm)).await.status,
        StatusCode::OK
    );

    let mut ids = Vec::with_capacity(REQUESTS);
    let mut costs = Vec::new();
    costs.push(
        measure(&mut conn, "new session (first write)", || async {
            for _ in 0..REQUESTS {
                let reply = support::send(&app, "/set/n/1", None).await;
                assert_eq!(reply.status, StatusCode::OK);
                ids.push(reply.cookie.expect("a new session sets a cookie"));
            }
        })
        .await,
    );
    costs.push(
        measure(&mut conn, "read", || async {
            for id in &ids {
                let reply = support::send(&app, "/get/n", Some(id)).await;
                assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "1"));
                assert!(reply.cookie.is_none());
            }
        })
        .await,
    );
    costs.push(
        measure(&mut conn, "write", || async {
            for id in &ids {
                let reply = support::send(&app, "/set/n/2", Some(id)).await;
                assert_eq!(reply.status, StatusCode::OK);
            }
        })
        .await,
    );
    let unknown: Vec<String> = (0..REQUESTS)
        .map(|_| sessionware::Id::random().unwrap().expose_secret())
        .collect();
    costs.push(
        measure(
            &mut conn,
            "write with an unknown or expired ID (new session)",
            || async {
                for id in &unknown {
                    let reply = support::send(&app, "/set/n/1", Some(id)).await;
                    assert_eq!(reply.status, StatusCode::OK);
                    assert!(reply.cookie.is_some_and(|fresh| &fresh != id));
                }
            },
        )
        .await,
    );
    let mut logged_in = Vec::with_capacity(REQUESTS);
    costs.push(
        measure(&mut conn, "login (rotates the ID)", || async {
            for (n, id) in ids.iter().enumerate() {
                let reply = support::send(&app, &format!("/login/user{n}"), Some(id)).await;
                assert_eq!(reply.status, StatusCode::OK);
                logged_in.push(reply.cookie.expect("login issues a new ID"));
            }
        })
        .await,
    );
    costs.push(
        measure(&mut conn, "logout", || async {
            for id in &logged_in {
                let reply = support::send(&app, "/logout", Some(id)).await;
                assert_eq!(reply.status, StatusCode::OK);
            }
        })
        .await,
    );

    println!("\n| request | round trips | client commands per request | commands inside the script per request |");
    println!("|---|---|---|---|");
    for cost in &costs {
        println!(
            "| {} | {:.2} | {} | {} |",
            cost.request,
            cost.round_trips(),
            per_request(&cost.client),
            per_request(&cost.scripted)
        );
    }

    // The unknown-ID write: the load, the rotation-tombstone check, the creation.
    let budget = [1.0, 1.0, 2.0, 3.0, 2.0, 2.0];
    for (cost, budget) in costs.iter().zip(budget) {
        assert_eq!(
            cost.round_trips(),
            budget,
            "{}: {:?}",
            cost.request,
            cost.client
        );
    }
    let read = &costs[1];
    assert_eq!(
        read.client.get("hgetall"),
        Some(&(REQUESTS as u64)),
        "a read is one HGETALL"
    );
    assert!(
        read.scripted.is_empty(),
        "a read wrote: {:?}",
        read.scripted
    );
    // One script per write, and one more to read the rotation tombstone of an unknown ID.
    let scripts = [1, 2, 1, 1];
    for (cost, scripts) in costs[2..].iter().zip(scripts) {
        assert_eq!(
            cost.client.get("evalsha"),
            Some(&(scripts * REQUESTS as u64)),
            "{}: {scripts} script(s)",
            cost.request
        );
    }
}
