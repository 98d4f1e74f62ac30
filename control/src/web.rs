//! The public web endpoints (`[web] listen`) that links in campaign messages
//! point at, apart from the admin API: nothing here takes a token or shows
//! anything but the page asked for.
//!
//! - `GET /u/TOKEN`: a page with one button that unsubscribes (mail scanners
//!   follow links, so a GET never does); works without JavaScript.
//! - `POST /u/TOKEN` with the body `List-Unsubscribe=One-Click` (RFC 8058, as
//!   mailbox providers send it; the page's button sends the same): suppresses
//!   the address for the campaign's sending domain, answers `200` (no
//!   redirect). Repeating it is harmless.
//! - `GET /c/TOKEN`: records the click once per recipient and link and answers
//!   `302` to the template's URL for that link (never a URL from the request).
//! - `GET /o/TOKEN`: records the open once and answers a 1×1 GIF.
//! - `GET /s/LIST`: a list's subscribe form (the address and the list's form
//!   fields); `POST /s/LIST` records the request (bounded per client address,
//!   [`crate::plane::subscriptions`]) and says to check the inbox; `GET
//!   /s/confirm/TOKEN`, the link of the confirmation message, confirms it
//!   (double opt-in): the address joins the list with the next bulk.
//!
//! A token that is malformed, forged, altered, for another endpoint or naming
//! nobody gets `404` and changes nothing; a bad signature is logged as a
//! warning with the client's address.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use volley_queue::link::{LinkError, LinkKind, LinkSigner};

use crate::bounded::{BoundedListener, Bounds, ClientAddr};
use crate::plane::engagement::LinkRecipient;
use crate::plane::subscriptions::{ConfirmLinks, Requested};
use crate::plane::{Plane, PlaneError};
use crate::store::engagements::Who;

/// Largest request body read (the one-click body is 26 bytes).
const MAX_BODY: usize = 4096;

/// What every handler gets.
#[derive(Clone)]
struct WebState {
    plane: Arc<Plane>,
    signer: Arc<LinkSigner>,
}

/// The public endpoints' routes, checking tokens with `signer`.
pub fn router(plane: Arc<Plane>, signer: Arc<LinkSigner>) -> Router {
    Router::new()
        .route("/u/{token}", get(unsubscribe_page).post(unsubscribe))
        .route("/c/{token}", get(click))
        .route("/o/{token}", get(open))
        .route("/s/{list}", get(subscribe_page).post(subscribe))
        .route("/s/confirm/{token}", get(confirm))
        .fallback(|| async { not_found() })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(WebState { plane, signer })
}

/// Serves `router` on `listener` (handlers see the client's address) until
/// `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        BoundedListener::new(listener, Bounds::default()),
        router.into_make_service_with_connect_info::<ClientAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

type Client = ConnectInfo<ClientAddr>;

/// A handler's answer; the error side is a refusal (`404`, `503`) already made.
type Answer = Result<Response, Response>;

/// The recipient a token names, or the response that refuses it.
async fn resolve(
    state: &WebState,
    kind: LinkKind,
    token: &str,
    client: SocketAddr,
) -> Result<(LinkRecipient, u16), Response> {
    let target = match state.signer.verify(kind, token) {
        Ok(target) => target,
        Err(e) => {
            if e == LinkError::Forged {
                tracing::warn!(%client, path = kind.path(), "refused a forged or altered link token");
            } else {
                tracing::debug!(%client, path = kind.path(), "refused a malformed link token");
            }
            return Err(not_found());
        }
    };
    let who = Who {
        campaign: target.campaign as i64,
        batch: target.batch as i64,
        idx: i64::from(target.index),
    };
    match state.plane.link_recipient(who).await {
        Ok(Some(r)) => Ok((r, target.link)),
        Ok(None) => {
            tracing::warn!(%client, campaign = who.campaign, batch = who.batch, recipient = who.idx, "a signed link names no recipient");
            Err(not_found())
        }
        Err(e) => Err(unavailable(&e)),
    }
}

async fn unsubscribe_page(
    State(state): State<WebState>,
    ConnectInfo(ClientAddr(client)): Client,
    Path(token): Path<String>,
) -> Answer {
    let (r, _) = resolve(&state, LinkKind::Unsubscribe, &token, client).await?;
    let domain = escape(&r.campaign.sender_domain);
    Ok(page(
        StatusCode::OK,
        "Unsubscribe",
        &format!(
            "<p>Stop receiving mail from <b>{domain}</b>?</p>\
             <form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
             <button type=\"submit\">Unsubscribe</button></form>"
        ),
    ))
}

async fn unsubscribe(
    State(state): State<WebState>,
    ConnectInfo(ClientAddr(client)): Client,
    Path(token): Path<String>,
    body: Bytes,
) -> Answer {
    let (r, _) = resolve(&state, LinkKind::Unsubscribe, &token, client).await?;
    if !one_click(&body) {
        return Err(page(
            StatusCode::BAD_REQUEST,
            "Unsubscribe",
            "<p>The request must carry the form field List-Unsubscribe=One-Click (RFC 8058): use the button on this page.</p>",
        ));
    }
    state
        .plane
        .unsubscribe(&r)
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(page(
        StatusCode::OK,
        "Unsubscribed",
        &format!(
            "<p>You will get no more mail from <b>{}</b>.</p>",
            escape(&r.campaign.sender_domain)
        ),
    ))
}

/// Whether a POST body holds `List-Unsubscribe=One-Click`, as a form field
/// (urlencoded, or a multipart part whose name and value say so).
fn one_click(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    if text
        .split('&')
        .any(|pair| pair.trim() == "List-Unsubscribe=One-Click")
    {
        return true;
    }
    // multipart/form-data: a part named List-Unsubscribe whose value is One-Click.
    text.contains("name=\"List-Unsubscribe\"") && text.contains("\r\n\r\nOne-Click\r\n")
}

async fn click(
    State(state): State<WebState>,
    ConnectInfo(ClientAddr(client)): Client,
    Path(token): Path<String>,
) -> Answer {
    let (r, link) = resolve(&state, LinkKind::Click, &token, client).await?;
    let url = state
        .plane
        .click(&r, i64::from(link))
        .await
        .map_err(|e| unavailable(&e))?
        .ok_or_else(not_found)?;
    let location = HeaderValue::from_str(&ascii_url(&url)).map_err(|_| not_found())?;
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(response)
}

/// A transparent 1×1 GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

async fn open(
    State(state): State<WebState>,
    ConnectInfo(ClientAddr(client)): Client,
    Path(token): Path<String>,
) -> Answer {
    let (r, _) = resolve(&state, LinkKind::Open, &token, client).await?;
    if let Err(e) = state.plane.open(&r).await {
        // The image is shown all the same; the open is lost.
        tracing::warn!(err = %e, "cannot record an open");
    }
    let mut response = Response::new(Body::from(PIXEL));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/gif"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The list a `/s/LIST` path names, if it has a subscribe form.
async fn form_list(state: &WebState, list: &str) -> Result<crate::store::lists::List, Response> {
    let id: i64 = list.parse().map_err(|_| not_found())?;
    match state.plane.store().list(id).await {
        Ok(Some(l)) if l.from.is_some() => Ok(l),
        Ok(_) => Err(not_found()),
        Err(e) => Err(unavailable(&e)),
    }
}

/// The subscribe form of `list`, with `note` above it.
fn form_page(status: StatusCode, list: &crate::store::lists::List, note: &str) -> Response {
    let mut inputs = String::from(
        "<p><label>E-mail address<br><input type=\"email\" name=\"email\" required autocomplete=\"email\"></label></p>",
    );
    for f in &list.form_fields {
        let f = escape(f);
        inputs.push_str(&format!(
            "<p><label>{label}<br><input type=\"text\" name=\"{f}\"></label></p>",
            label = f.replace('_', " ")
        ));
    }
    page(
        status,
        &format!("Subscribe to {}", escape(&list.name)),
        &format!(
            "{note}<form method=\"post\">{inputs}<button type=\"submit\">Subscribe</button></form>"
        ),
    )
}

async fn subscribe_page(State(state): State<WebState>, Path(list): Path<String>) -> Answer {
    let list = form_list(&state, &list).await?;
    Ok(form_page(StatusCode::OK, &list, ""))
}

async fn subscribe(
    State(state): State<WebState>,
    ConnectInfo(ClientAddr(client)): Client,
    Path(list): Path<String>,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> Answer {
    let list = form_list(&state, &list).await?;
    let email = form.get("email").cloned().unwrap_or_default();
    let fields: serde_json::Map<String, serde_json::Value> = form
        .into_iter()
        .filter(|(k, _)| k != "email")
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    match state
        .plane
        .subscribe_request(list.id, &email, &fields, client.ip())
        .await
    {
        Ok(Requested::Queued | Requested::Dropped) => Ok(page(
            StatusCode::OK,
            "Check your inbox",
            &format!(
                "<p>To finish subscribing to <b>{}</b>, open the link in the message we sent to <b>{}</b>.</p>",
                escape(&list.name),
                escape(email.trim())
            ),
        )),
        Ok(Requested::TooMany) => Err(page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests",
            "<p>Too many subscribe requests came from your network. Please try again in an hour.</p>",
        )),
        Err(PlaneError::BadRequest(why)) => Err(form_page(
            StatusCode::BAD_REQUEST,
            &list,
            &format!("<p><b>{}</b></p>", escape(&why)),
        )),
        Err(PlaneError::NotFound(_)) => Err(not_found()),
        Err(e) => Err(unavailable(&e)),
    }
}

async fn confirm(
    State(state): State<WebState>,
    ConnectInfo(ClientAddr(client)): Client,
    Path(token): Path<String>,
) -> Answer {
    let target = match state.signer.verify(LinkKind::Confirm, &token) {
        Ok(t) => t,
        Err(e) => {
            if e == LinkError::Forged {
                tracing::warn!(%client, path = "s/confirm", "refused a forged or altered link token");
            }
            return Err(not_found());
        }
    };
    let (list, email) = state
        .plane
        .confirm(target.campaign as i64, target.batch as i64)
        .await
        .map_err(|e| unavailable(&e))?
        .ok_or_else(not_found)?;
    Ok(page(
        StatusCode::OK,
        "Subscribed",
        &format!(
            "<p><b>{}</b> is subscribed to <b>{}</b>. Thank you.</p>",
            escape(&email),
            escape(&list.name)
        ),
    ))
}

/// Runs the subscription work every two seconds ([`Plane::subscriptions_step`])
/// as `worker`, until aborted.
pub async fn subscriptions(plane: Arc<Plane>, links: ConfirmLinks, worker: String) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(2));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(err) = plane.subscriptions_step(&links, &worker).await {
            tracing::warn!(%err, "the subscription step failed");
        }
    }
}

fn not_found() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Not found",
        "<p>This link is not valid.</p>",
    )
}

fn unavailable(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(err = %e, "a web request failed");
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again",
        "<p>This did not work just now. Please try again in a minute.</p>",
    )
}

/// A small self-contained HTML page; no scripts, nothing fetched.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>body{{font-family:sans-serif;max-width:32em;margin:3em auto;padding:0 1em}}\
         button{{font-size:1.1em;padding:.5em 1.5em}}</style></head>\
         <body><h1>{title}</h1>{body}</body></html>\n"
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `url` with every byte outside printable ASCII percent-encoded (an IRI's
/// UTF-8), as a `Location` header must be.
fn ascii_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for b in url.bytes() {
        if (0x21..0x7f).contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::{ascii_url, one_click};

    #[test]
    fn locations_are_ascii() {
        assert_eq!(
            ascii_url("https://a.test/é?x=1"),
            "https://a.test/%C3%A9?x=1"
        );
    }

    #[test]
    fn the_one_click_body_in_its_forms() {
        assert!(one_click(b"List-Unsubscribe=One-Click"));
        assert!(one_click(b"x=1&List-Unsubscribe=One-Click"));
        assert!(one_click(
            b"--b\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--b--\r\n"
        ));
        assert!(!one_click(b""));
        assert!(!one_click(b"List-Unsubscribe=Maybe"));
    }
}
