//! Who is calling, and what they may do: argon2 password hashes, random tokens stored only as
//! SHA-256 hashes (sessions and API tokens), the login middleware, CSRF checks and roles.
//!
//! A request is authenticated by `Authorization: Bearer <api token>` (scripts; no CSRF token
//! needed, a browser never sends one on its own) or by the session cookie (browsers; every
//! POST must carry the session's CSRF token, as the form field `csrf_token` or the header
//! `X-CSRF-Token`). Secrets never reach a log: tokens, passwords and hashes are not traced.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use sha2::{Digest, Sha256};
use updraft_metadata::{Role, User};

use crate::AppState;
use crate::error::{AppError, PageError};

/// The cookie that holds a browser's session token.
pub const SESSION_COOKIE: &str = "updraft_session";
/// The cookie that holds the login form's CSRF token (there is no session yet to hold it).
pub const LOGIN_CSRF_COOKIE: &str = "updraft_login_csrf";
/// The form field and header that carry a CSRF token.
pub const CSRF_FIELD: &str = "csrf_token";
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a login lasts.
pub const SESSION_LIFETIME: chrono::Duration = chrono::Duration::hours(12);
/// The largest form body the CSRF check reads.
const FORM_LIMIT: usize = 1 << 20;

/// An argon2id PHC string of `password`, with a random salt.
pub fn hash_password(password: &str) -> Result<String, AppError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|error| AppError::Internal(format!("cannot hash a password: {error}")))
}

/// Whether `password` matches a PHC string made by [`hash_password`]. A malformed hash
/// matches nothing.
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A new random token: 32 bytes from the operating system, in hex.
pub fn new_token() -> Result<String, AppError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|error| AppError::Internal(format!("no randomness: {error}")))?;
    Ok(hex(&bytes))
}

/// How a token (session or API) is stored: its SHA-256 in hex. Tokens are random and long, so
/// a fast hash is enough; passwords, chosen by people, get argon2.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equality that takes the same time wherever the strings differ.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The authenticated caller of a request, put in its extensions by [`require_login`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    /// The session's CSRF token, for the forms of the page; `None` for an API token.
    pub csrf_token: Option<String>,
}

impl Caller {
    /// Actions are for admins; a viewer gets 403.
    pub fn require_admin(&self) -> Result<(), AppError> {
        match self.user.role {
            Role::Admin => Ok(()),
            Role::Viewer => Err(AppError::Forbidden(format!(
                "user '{}' is a viewer: only admins may do this",
                self.user.username
            ))),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }

    /// The CSRF token for the page's forms (empty for API callers, which render no page).
    pub fn csrf(&self) -> &str {
        self.csrf_token.as_deref().unwrap_or("")
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// A `Set-Cookie` value for a response to `headers`: HttpOnly, SameSite=Lax, for the whole
/// site, and `Secure` when the request came through HTTPS (see [`over_https`]).
pub fn set_cookie(headers: &HeaderMap, name: &str, value: &str, max_age_seconds: i64) -> String {
    let secure = if over_https(headers) { "; Secure" } else { "" };
    format!("{name}={value}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age_seconds}{secure}")
}

/// Whether a TLS-terminating proxy in front says the browser spoke HTTPS
/// (`X-Forwarded-Proto: https`). The server itself speaks plain HTTP. A forged header can only
/// make the forger's own cookies `Secure`.
pub fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// Whether the request is for the JSON API (answered with JSON errors, never redirects).
pub fn is_api(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// The middleware in front of every route but `/health`, `/login` and the static files: finds
/// the caller (API token or session) or refuses the request (401 JSON for the API, a redirect
/// to the login page otherwise), and refuses a session's POST without its CSRF token (403).
pub async fn require_login(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let api = is_api(request.uri().path());
    match authenticate(&state, request, api).await {
        Ok(Ok(request)) => next.run(request).await,
        Ok(Err(redirect)) => redirect,
        Err(error) if api => error.into_response(),
        Err(error) => PageError(error).into_response(),
    }
}

/// The request with its [`Caller`] in its extensions, or the redirect to the login page.
async fn authenticate(
    state: &AppState,
    request: Request,
    api: bool,
) -> Result<Result<Request, Response>, AppError> {
    let now = Utc::now();
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token)
        .map(str::to_owned);
    let caller = if let Some(token) = bearer {
        // A bad token is refused even when a session cookie came along: scripts must know.
        let user = state
            .store
            .get_user_by_token(&token_hash(&token), now)
            .await?;
        match user {
            Some(user) => Caller {
                user,
                csrf_token: None,
            },
            None => {
                return Err(AppError::Unauthorized(
                    "invalid, expired or revoked API token".to_owned(),
                ));
            }
        }
    } else {
        let session = match cookie(request.headers(), SESSION_COOKIE) {
            Some(token) => state.store.get_session(&token_hash(&token), now).await?,
            None => None,
        };
        match session {
            Some(session) => Caller {
                user: session.user,
                csrf_token: Some(session.csrf_token),
            },
            None if api => return Err(AppError::Unauthorized("login required".to_owned())),
            None => return Ok(Err(login_redirect(&request))),
        }
    };
    let request = match &caller.csrf_token {
        Some(expected) if request.method() != Method::GET && request.method() != Method::HEAD => {
            check_csrf(request, expected).await?
        }
        _ => request,
    };
    let mut request = request;
    request.extensions_mut().insert(caller);
    Ok(Ok(request))
}

/// The token of an `Authorization: Bearer TOKEN` header. The scheme is case-insensitive
/// (RFC 9110 §11.1), so `bearer` and `BEARER` are read too.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// A redirect to the login page that comes back to this page (GET) or to the site's root.
fn login_redirect(request: &Request) -> Response {
    let back = match *request.method() {
        Method::GET => request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/"),
        _ => "/",
    };
    let query = serde_urlencoded::to_string([("next", back)]).unwrap_or_default();
    axum::response::Redirect::to(&format!("/login?{query}")).into_response()
}

/// Passes the request on when it carries `expected` in the `X-CSRF-Token` header or in the
/// `csrf_token` field of its urlencoded form (the body is read and put back); 403 otherwise.
async fn check_csrf(request: Request, expected: &str) -> Result<Request, AppError> {
    let refused = || AppError::Forbidden("missing or wrong CSRF token".to_owned());
    if let Some(token) = request.headers().get(CSRF_HEADER) {
        return match token.to_str() {
            Ok(token) if same_secret(token, expected) => Ok(request),
            _ => Err(refused()),
        };
    }
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(refused());
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    let too_large = || AppError::PayloadTooLarge(format!("a form is at most {FORM_LIMIT} bytes"));
    if declared.is_some_and(|length| length > FORM_LIMIT) {
        return Err(too_large());
    }
    let (parts, body) = request.into_parts();
    // Without a declared length, the read fails at the limit (or when the client hangs up,
    // and then no one reads the answer).
    let bytes = to_bytes(body, FORM_LIMIT).await.map_err(|_| too_large())?;
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
        .map_err(|error| AppError::BadRequest(format!("malformed form: {error}")))?;
    let matches = fields
        .iter()
        .any(|(name, value)| name == CSRF_FIELD && same_secret(value, expected));
    if !matches {
        return Err(refused());
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct horse!", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
        assert_ne!(hash, hash_password("correct horse").unwrap(), "salted");
    }

    #[test]
    fn tokens_are_random_hex_and_hash_to_hex() {
        let a = new_token().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, new_token().unwrap());
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn cookies_are_read_by_name_and_set_http_only_and_lax() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "a=1; updraft_session=xyz".parse().unwrap());
        headers.append(header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&headers, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&headers, "c"), None);
        assert_eq!(
            set_cookie(&headers, "s", "v", 60),
            "s=v; HttpOnly; SameSite=Lax; Path=/; Max-Age=60"
        );
        headers.insert("x-forwarded-proto", "HTTPS".parse().unwrap());
        assert_eq!(
            set_cookie(&headers, "s", "v", 60),
            "s=v; HttpOnly; SameSite=Lax; Path=/; Max-Age=60; Secure"
        );
    }

    #[test]
    fn secrets_compare_by_content_and_length() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }

    #[test]
    fn api_paths_are_told_apart_from_pages() {
        assert!(is_api("/api/v1/dags"));
        assert!(is_api("/api"));
        assert!(!is_api("/apis"));
        assert!(!is_api("/dags"));
    }
}
