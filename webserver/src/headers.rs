//! The security headers of every answer (pages, API, static files, errors, redirects).
//!
//! - `Content-Security-Policy`: scripts, styles, images and requests from this site only; no
//!   inline script or style (the pages have none: `app.js` wires every behaviour, and SVG boxes
//!   are coloured by classes in `app.css`), no plugins, no `<base>`, forms post only here, and
//!   no framing (`frame-ancestors 'none'`, with `X-Frame-Options: DENY` for older browsers).
//! - `X-Content-Type-Options: nosniff`: a log or a DAG's source is never run as a script.
//! - `Referrer-Policy: same-origin`: run ids and searches in URLs do not leave the site.
//! - `Cache-Control: no-store` on everything but the static files (which set their own): pages
//!   and API answers hold what a login shows, and must not stay in a shared or browser cache.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use tower_http::set_header::SetResponseHeaderLayer;

/// The policy: see the module's documentation.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// `router` with the security headers on every answer. A header a handler set itself (the
/// static files' `Cache-Control`) is kept.
pub fn secure<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    let headers: [(HeaderName, &'static str); 5] = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    headers.into_iter().fold(router, |router, (name, value)| {
        router.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ))
    })
}
