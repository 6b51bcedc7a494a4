//! The login page, logging in (a new session) and logging out.

use std::sync::LazyLock;

use askama::Template;
use askama_web::WebTemplate;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use chrono::Utc;
use serde::Deserialize;

use crate::AppState;
use crate::auth::{
    LOGIN_CSRF_COOKIE, SESSION_COOKIE, SESSION_LIFETIME, cookie, hash_password, new_token,
    same_secret, set_cookie, token_hash, verify_password,
};
use crate::error::PageError;
use crate::pages::Layout;

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

/// `POST /login`: checks the form's CSRF token against its cookie and the password against
/// its hash, then starts a session and sets its cookie.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<Credentials>,
) -> Result<Response, PageError> {
    let next = local_path(form.next.as_deref());
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same_secret(&form.csrf_token, &expected) {
        return Err(PageError(crate::error::AppError::Forbidden(
            "missing or wrong CSRF token: reload the login page".to_owned(),
        )));
    }
    let user = state.store.get_user(form.username.trim()).await?;
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
            tracing::info!(username = %form.username, "failed login");
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
