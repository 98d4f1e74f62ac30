//! The operator's dashboard, served by the control plane at `/` on its API
//! listener: sign in with an API token, then pages of campaigns, one
//! campaign, sites, gateways and suppressions, updated live by polling the
//! API. No build step: the page, its script and its style are compiled into
//! the binary (`page.html`, `app.js`, `app.css` beside this file).
//!
//! Sessions ([`crate::api::session`]): signing in trades the token for a
//! random session id in an `HttpOnly; SameSite=Strict` cookie (the token
//! never reaches the page's script). The API accepts the cookie in place of
//! `Authorization`; any call but GET must also carry the session's CSRF
//! token in `X-CSRF-Token` (the page has it; another site's form cannot send
//! a header), and the sign-in form is refused from another origin. Sessions
//! are kept in the store (their ids hashed): any control plane serves them,
//! and revoking the token ends them.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use crate::api::problem::Problem;
use crate::api::session::{self, COOKIE, SESSION_TTL};
use crate::api::AppState;

const PAGE: &str = include_str!("page.html");
const SIGN_IN: &str = include_str!("sign_in.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// Whether a form post comes from this site: no `Origin` (an old browser,
/// a same-origin navigation in some) or one whose host is the `Host`.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or_default();
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

/// Security headers of every page: no framing, no sniffing, scripts and
/// styles from this origin only.
fn page(html: String) -> Response {
    let mut r = Html(html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn sign_in_page(error: &str) -> Response {
    let error = if error.is_empty() {
        String::new()
    } else {
        format!("<p class=\"error\" id=\"error\">{}</p>", escape(error))
    };
    page(SIGN_IN.replace("{{error}}", &error))
}

/// `GET /`: the dashboard, or the sign-in form.
pub async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let signed_in = match session::of(state.plane.store(), &headers).await {
        Ok(s) => s,
        Err(p) => return p.into_response(),
    };
    match signed_in {
        Some((token, csrf)) => page(
            PAGE.replace("{{csrf}}", &escape(&csrf))
                .replace("{{name}}", &escape(&token.name))
                .replace("{{role}}", token.role.name()),
        ),
        None => sign_in_page(""),
    }
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct SignIn {
    token: String,
}

/// `POST /login`: a session for a valid admin or sender token.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    if !same_origin(&headers) {
        return (
            StatusCode::FORBIDDEN,
            "sign in from the dashboard's own page",
        )
            .into_response();
    }
    let token = match state.plane.store().authenticate(form.token.trim()).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            tracing::warn!("dashboard sign-in with a token that is not valid");
            let mut r = sign_in_page("That token is not valid (mistyped, or revoked).");
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            return r;
        }
        Err(err) => return Problem::from(err).into_response(),
    };
    if token.role == crate::store::tokens::Role::Gateway {
        let mut r = sign_in_page("A gateway token cannot sign in: use an admin or sender token.");
        *r.status_mut() = StatusCode::FORBIDDEN;
        return r;
    }
    let name = token.name.clone();
    let id = match session::open(state.plane.store(), &token).await {
        Ok(id) => id,
        Err(p) => return p.into_response(),
    };
    tracing::info!(token = %name, "dashboard sign-in");
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /logout`: ends the session (CSRF-checked like the API's calls, by
/// the form's hidden field).
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let store = state.plane.store();
    if let Ok(Some((_, csrf))) = session::of(store, &headers).await {
        if form.get("csrf").map(String::as_str) != Some(csrf.as_str()) || !same_origin(&headers) {
            return (
                StatusCode::FORBIDDEN,
                "sign out from the dashboard's own page",
            )
                .into_response();
        }
        if let Err(p) = session::close(store, &headers).await {
            return p.into_response();
        }
    }
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("volley_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    r
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /ui/app.js`.
pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /ui/app.css`.
pub async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// The dashboard's routes, for [`crate::api::Extras::pages`].
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/ui/app.js", get(app_js))
        .route("/ui/app.css", get(app_css))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn cookies_are_found_among_others() {
        use crate::api::session::cookie;
        let h = headers(&[("cookie", "a=1; volley_session=xyz; b=2")]);
        assert_eq!(cookie(&h, COOKIE), Some("xyz"));
        assert_eq!(cookie(&headers(&[]), COOKIE), None);
    }

    #[test]
    fn only_the_same_origin_may_post() {
        let table = [
            (vec![("host", "127.0.0.1:8025")], true),
            (
                vec![
                    ("host", "127.0.0.1:8025"),
                    ("origin", "http://127.0.0.1:8025"),
                ],
                true,
            ),
            (
                vec![("host", "127.0.0.1:8025"), ("origin", "http://evil.test")],
                false,
            ),
            (vec![("host", "127.0.0.1:8025"), ("origin", "null")], false),
        ];
        for (h, want) in table {
            assert_eq!(same_origin(&headers(&h)), want, "{h:?}");
        }
    }

    #[test]
    fn pages_escape_what_they_show() {
        assert_eq!(
            escape("<a href=\"x\">&"),
            "&lt;a href=&quot;x&quot;&gt;&amp;"
        );
    }
}
