//! The login page, logging in (a new session) and logging out. Logins are throttled per user
//! name and per client address (`throttle`), and every failed one is in the event log (the
//! name tried and the address, never the password).

use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use askama::Template;
use askama_web::WebTemplate;
use axum::Form;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use chrono::Utc;
use serde::Deserialize;
use updraft_metadata::{NewEvent, USERNAME_MAX};

use crate::AppState;
use crate::auth::{
    LOGIN_CSRF_COOKIE, SESSION_COOKIE, SESSION_LIFETIME, cookie, hash_password, new_token,
    same_secret, set_cookie, token_hash, verify_password,
};
use crate::error::PageError;
use crate::pages::Layout;
use crate::throttle::Key;

/// A hash no password matches, verified against when the user does not exist, so that a login
/// takes as long for an unknown name as for a wrong password.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_password("no user has this password").unwrap_or_default());

#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
pub struct LoginPage {
    layout: Layout,
    next: String,
    csrf: String,
    error: Option<String>,
    username: String,
}

#[derive(Debug, Deserialize)]
pub struct Next {
    next: Option<String>,
}

/// Where to go after logging in: a path of this site, never another site (`//host`, `http:`).
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => {
            path.to_owned()
        }
        _ => "/dags".to_owned(),
    }
}

fn login_page(
    headers: &HeaderMap,
    next: String,
    error: Option<String>,
    username: String,
) -> Result<Response, PageError> {
    let csrf = new_token()?;
    let page = LoginPage {
        layout: Layout::anonymous("Log in"),
        next,
        csrf: csrf.clone(),
        error,
        username,
    };
    let cookie = set_cookie(headers, LOGIN_CSRF_COOKIE, &csrf, 3600);
    Ok(([(header::SET_COOKIE, cookie)], page).into_response())
}

/// `GET /login`.
pub async fn show(headers: HeaderMap, Query(query): Query<Next>) -> Result<Response, PageError> {
    login_page(
        &headers,
        local_path(query.next.as_deref()),
        None,
        String::new(),
    )
}

#[derive(Deserialize)]
pub struct Credentials {
    username: String,
    password: String,
    csrf_token: String,
    next: Option<String>,
}

/// The client's address: the TCP peer's, or, when the peer is a proxy on this host or a
/// private network and says whom it forwards (`X-Forwarded-For`), the last address it added.
/// `None` when the server was not told the peer (tests calling the router directly).
pub fn client_address(extensions: &Extensions, headers: &HeaderMap) -> Option<IpAddr> {
    let peer = extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip();
    let proxy = match peer {
        IpAddr::V4(ip) => ip.is_loopback() || ip.is_private(),
        IpAddr::V6(ip) => ip.is_loopback() || ip.is_unique_local(),
    };
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .next_back()
        .and_then(|last| last.trim().parse().ok());
    Some(forwarded.filter(|_| proxy).unwrap_or(peer))
}

/// `POST /login`: checks the form's CSRF token against its cookie, the throttle of the user
/// name and the client address, and the password against its hash; then starts a session and
/// sets its cookie. A refused attempt answers 429 with `Retry-After`, its password unread.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: Extensions,
    Form(form): Form<Credentials>,
) -> Result<Response, PageError> {
    let next = local_path(form.next.as_deref());
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same_secret(&form.csrf_token, &expected) {
        return Err(PageError(crate::error::AppError::Forbidden(
            "missing or wrong CSRF token: reload the login page".to_owned(),
        )));
    }
    let username = form.username.trim();
    let address = client_address(&extensions, &headers);
    let mut keys = vec![Key::User(username.to_owned())];
    keys.extend(address.map(Key::Address));
    let started = Instant::now();
    let allowed = state.throttle().attempt(&keys, started);
    if let Err(wait) = allowed {
        return throttled(&headers, next, form.username, wait);
    }
    let user = state.store.get_user(username).await?;
    let hash = user
        .as_ref()
        .map_or(DUMMY_HASH.as_str(), |u| &u.password_hash);
    let password = form.password;
    let hash = hash.to_owned();
    let verified = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let user = match user {
        Some(user) if verified => user,
        _ => {
            tracing::info!(username = %form.username.escape_debug(), "failed login");
            record_failure(&state, username, address).await?;
            let mut response = login_page(
                &headers,
                next,
                Some("wrong user name or password".to_owned()),
                form.username,
            )?;
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            return Ok(response);
        }
    };
    state.throttle().succeeded(&keys, started);
    let token = new_token()?;
    let csrf = new_token()?;
    let now = Utc::now();
    state
        .store
        .create_session(
            user.id,
            &token_hash(&token),
            &csrf,
            now,
            now + SESSION_LIFETIME,
        )
        .await?;
    tracing::info!(username = %user.username, "login");
    let cookie = set_cookie(
        &headers,
        SESSION_COOKIE,
        &token,
        SESSION_LIFETIME.num_seconds(),
    );
    let clear_login = set_cookie(&headers, LOGIN_CSRF_COOKIE, "", 0);
    Ok((
        AppendHeaders([
            (header::SET_COOKIE, cookie),
            (header::SET_COOKIE, clear_login),
        ]),
        Redirect::to(&next),
    )
        .into_response())
}

/// The login page again with 429 and `Retry-After` (whole seconds, rounded up).
fn throttled(
    headers: &HeaderMap,
    next: String,
    username: String,
    wait: Duration,
) -> Result<Response, PageError> {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut response = login_page(
        headers,
        next,
        Some(format!("too many failed logins: try again in {seconds} s")),
        username,
    )?;
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    Ok(response)
}

/// A failed login in the event log: the name tried (at most as long as a user name may be)
/// and the client's address; never the password.
async fn record_failure(
    state: &AppState,
    username: &str,
    address: Option<IpAddr>,
) -> Result<(), PageError> {
    let tried: String = username.chars().take(USERNAME_MAX).collect();
    state
        .store
        .append_event(&NewEvent {
            at: Utc::now(),
            actor: "anonymous".to_owned(),
            dag_id: None,
            run_id: None,
            task_id: None,
            event: "login_failed".to_owned(),
            details: serde_json::json!({
                "username": tried,
                "address": address.map(|address| address.to_string()),
            }),
        })
        .await?;
    Ok(())
}

/// `POST /logout` (behind the login middleware, so with the session's CSRF token): ends the
/// session and clears its cookie.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        state.store.delete_session(&token_hash(&token)).await?;
    }
    Ok((
        [(
            header::SET_COOKIE,
            set_cookie(&headers, SESSION_COOKIE, "", 0),
        )],
        Redirect::to("/login"),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_a_path_of_this_site() {
        assert_eq!(local_path(Some("/dags/x?tab=grid")), "/dags/x?tab=grid");
        assert_eq!(local_path(Some("//evil.example/")), "/dags");
        assert_eq!(local_path(Some("/\\evil.example/")), "/dags");
        assert_eq!(local_path(Some("https://evil.example/")), "/dags");
        assert_eq!(local_path(None), "/dags");
    }
}
