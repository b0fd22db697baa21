//! The demo app, shared by the examples: a visit counter, login and logout, remember-me,
//! the session's metadata and the user's other devices, on whatever store it is given.
//!
//! Routes: `GET /` (an HTML page), `GET /api/me` (the same as JSON), and the form posts
//! `/count`, `/login`, `/logout`, `/remember`, `/revoke-others`.

use axum::extract::Form;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use sessionware::{Error, Key, Session, SessionLayer, SessionStore};

const VISITS: Key<u64> = Key::new("visits");

/// Logs to the terminal and serves `app` on `DEMO_ADDR` (default 127.0.0.1:3000), with the
/// client's address available to the session metadata. `store` names the store in the log.
pub(crate) async fn serve(app: Router, store: &str) -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sessionware=debug".into()),
        )
        .init();
    let addr = std::env::var("DEMO_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!(
        "demo on {store}, listening on http://{}",
        listener.local_addr()?
    );
    let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service).await?;
    Ok(())
}

/// The demo's routes behind a `SessionLayer` over `store`.
pub(crate) fn router(store: impl SessionStore) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/me", get(me))
        .route("/count", post(count))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/remember", post(remember))
        .route("/revoke-others", post(revoke_others))
        .layer(SessionLayer::new(store))
}

async fn count(session: Session) -> Result<Redirect, Error> {
    let visits = VISITS.get(&session).await?.unwrap_or(0) + 1;
    VISITS.insert(&session, &visits).await?;
    Ok(Redirect::to("/"))
}

#[derive(Deserialize)]
struct Login {
    username: String,
}

async fn login(session: Session, Form(form): Form<Login>) -> Result<Response, Error> {
    let username = form.username.trim();
    if username.is_empty() || username.len() > 64 {
        return Ok((
            http::StatusCode::BAD_REQUEST,
            "a username of 1 to 64 characters",
        )
            .into_response());
    }
    // A real app checks a password here. The login rotates the session ID.
    session.login(username).await?;
    Ok(Redirect::to("/").into_response())
}

async fn logout(session: Session) -> Result<Redirect, Error> {
    session.logout().await?;
    Ok(Redirect::to("/"))
}

#[derive(Deserialize)]
struct Remember {
    #[serde(default)]
    remember: Option<String>,
}

async fn remember(session: Session, Form(form): Form<Remember>) -> Result<Redirect, Error> {
    session.set_remember_me(form.remember.is_some()).await?;
    Ok(Redirect::to("/"))
}

async fn revoke_others(session: Session) -> Result<Redirect, Error> {
    session.revoke_other_sessions().await?;
    Ok(Redirect::to("/"))
}

async fn me(session: Session) -> Result<Json<serde_json::Value>, Error> {
    Ok(Json(json!({
        "visits": VISITS.get(&session).await?.unwrap_or(0),
        "user": session.user_id().await?,
        "session": session.info().await?,
        "devices": session.user_sessions().await?,
    })))
}

async fn page(session: Session) -> Result<Html<String>, Error> {
    let visits = VISITS.get(&session).await?.unwrap_or(0);
    let user = session.user_id().await?;
    let info = session.info().await?;
    let mut html = String::from(
        "<!doctype html><meta charset=utf-8><title>sessionware demo</title>\
         <style>body{font:16px system-ui;max-width:46em;margin:2em auto}\
         td,th{padding:.2em .6em;text-align:left}</style><h1>sessionware demo</h1>",
    );
    html += &format!(
        "<p>Visits counted in this session: <b>{visits}</b></p>\
         <form method=post action=/count><button>Count a visit</button></form>"
    );
    match &user {
        Some(user) => {
            html += &format!("<p>Logged in as <b>{}</b>.</p>", escape(user));
            html += "<form method=post action=/logout><button>Log out</button></form>\
                     <form method=post action=/remember><label><input type=checkbox \
                     name=remember value=1 onchange=this.form.submit()";
            if session.remember_me().await? {
                html += " checked";
            }
            html += "> Remember me on this device</label></form>";
        }
        None => {
            html += "<form method=post action=/login><input name=username \
                     placeholder=username required maxlength=64> <button>Log in</button></form>";
        }
    }
    if let Some(info) = info {
        html += "<h2>This session</h2><table>";
        for (name, value) in [
            ("created", info.created_at.to_string()),
            ("last seen", info.last_seen.to_string()),
            ("expires", info.expires_at.to_string()),
            ("IP", info.ip.clone().unwrap_or_default()),
            ("user agent", info.user_agent.clone().unwrap_or_default()),
        ] {
            html += &format!("<tr><th>{name}<td>{}", escape(&value));
        }
        html += "</table>";
    }
    if user.is_some() {
        let devices = session.user_sessions().await?;
        html += &format!("<h2>Your sessions ({})</h2><table>", devices.len());
        html += "<tr><th>device<th>IP<th>last seen";
        for device in devices {
            html += &format!(
                "<tr><td>{}<td>{}<td>{}",
                escape(device.user_agent.as_deref().unwrap_or("?")),
                escape(device.ip.as_deref().unwrap_or("?")),
                device.last_seen
            );
        }
        html += "</table><form method=post action=/revoke-others>\
                 <button>Log out everywhere else</button></form>";
    }
    Ok(Html(html))
}

/// Escapes text for HTML: user names and user agents are attacker-controlled.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            _ => escaped.push(c),
        }
    }
    escaped
}
