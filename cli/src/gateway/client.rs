//! The gateway's client of the control planes' gateway protocol
//! ([`volley_control::fleet::wire`]): each call goes to the control plane
//! that answered last and, when it cannot be reached (or answers 5xx), to the
//! next of `[gateway] control` in turn.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use volley_control::fleet::wire::{LeaseRequest, LeaseResponse, ReportRequest, ReportResponse};

/// Clients of the control planes at `urls`.
pub struct ControlClient {
    urls: Vec<String>,
    token: String,
    http: reqwest::Client,
    current: AtomicUsize,
}

/// How one call went.
pub enum Answer<T> {
    /// 2xx.
    Ok(T),
    /// 409 (a report on stale batches): the body.
    Conflict(T),
}

/// How long a lease request may take (it waits for work up to 30 s).
const LEASE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long any other request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

impl ControlClient {
    /// A client of `urls` with `token`.
    pub fn new(urls: Vec<String>, token: String) -> Result<ControlClient> {
        if urls.is_empty() {
            bail!("[gateway] control names no control plane (e.g. control = [\"http://127.0.0.1:8025\"])");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .context("cannot make an HTTP client")?;
        Ok(ControlClient {
            urls,
            token,
            http,
            current: AtomicUsize::new(0),
        })
    }

    /// Sends `request` to `path` of each control plane in turn until one
    /// answers (not 5xx): its answer.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&(impl Serialize + Sync)>,
    ) -> Result<reqwest::Response> {
        // Only a lease request waits (its long poll); anything else that
        // takes this long is lost in the network.
        let timeout = if path == "/v1/leases" {
            LEASE_TIMEOUT
        } else {
            TIMEOUT
        };
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for k in 0..self.urls.len() {
            let i = (start + k) % self.urls.len();
            let url = format!("{}{path}", self.urls[i]);
            let mut req = self
                .http
                .request(method.clone(), &url)
                .timeout(timeout)
                .bearer_auth(&self.token);
            if let Some(body) = body {
                req = req.json(body);
            }
            match req.send().await {
                Ok(r) if !r.status().is_server_error() => {
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(r);
                }
                Ok(r) => last = Some(anyhow!("{url}: {}", r.status())),
                Err(e) => last = Some(anyhow!("{url}: {e}")),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no control plane")))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &(impl Serialize + Sync),
    ) -> Result<Answer<T>> {
        let r = self.call(reqwest::Method::POST, path, Some(body)).await?;
        let status = r.status();
        if status == StatusCode::CONFLICT {
            return Ok(Answer::Conflict(r.json().await.context("a 409 answer")?));
        }
        if !status.is_success() {
            let text = r.text().await.unwrap_or_default();
            bail!("{path}: {status}: {text}");
        }
        Ok(Answer::Ok(
            r.json()
                .await
                .with_context(|| format!("{path}: the answer"))?,
        ))
    }

    /// `POST /v1/leases`.
    pub async fn lease(&self, req: &LeaseRequest) -> Result<LeaseResponse> {
        match self.json("/v1/leases", req).await? {
            Answer::Ok(r) | Answer::Conflict(r) => Ok(r),
        }
    }

    /// `POST /v1/reports`.
    pub async fn report(&self, req: &ReportRequest) -> Result<Answer<ReportResponse>> {
        self.json("/v1/reports", req).await
    }

    /// `POST /v1/releases` abandoning every lease of `gateway` (at start).
    pub async fn abandon_all(&self, gateway: &str) -> Result<()> {
        self.releases(&serde_json::json!({ "gateway": gateway, "abandon_all": true }))
            .await
    }

    /// `POST /v1/releases`.
    pub async fn release(&self, gateway: &str, batches: &[(i64, i64, i64)]) -> Result<()> {
        self.releases(&serde_json::json!({ "gateway": gateway, "batches": batches }))
            .await
    }

    async fn releases(&self, body: &serde_json::Value) -> Result<()> {
        let r = self
            .call(reqwest::Method::POST, "/v1/releases", Some(body))
            .await?;
        if !r.status().is_success() {
            bail!("/v1/releases: {}", r.status());
        }
        Ok(())
    }

    /// `GET /v1/content/HASH`.
    pub async fn content(&self, hash: &str) -> Result<Vec<u8>> {
        let path = format!("/v1/content/{hash}");
        let r = self.call(reqwest::Method::GET, &path, None::<&()>).await?;
        if !r.status().is_success() {
            bail!("{path}: {}", r.status());
        }
        Ok(r.bytes().await.context("content")?.to_vec())
    }
}
