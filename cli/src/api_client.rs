//! A client of the control plane's HTTP API, for the commands that are thin
//! clients of it (`volley campaign`, `volley send` handing a campaign to a
//! running daemon). Errors carry the API's problem detail.

use anyhow::{bail, Context, Result};
use volley_conf::Config;

/// Where the API is and the token to call it with.
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// The API's base URL: `--api`, else `http://` + `[control] listen`.
pub fn base_url(api: Option<&str>, config: &Config) -> Result<String> {
    if let Some(url) = api {
        return Ok(url.trim_end_matches('/').to_owned());
    }
    match config.control.listen {
        Some(addr) => Ok(format!("http://{addr}")),
        None => bail!("no API address: [control] listen is \"\"; pass --api URL"),
    }
}

/// The token: `--token`, else `$VOLLEY_TOKEN`, else `[control] token_file`.
pub fn token(flag: Option<&str>, config: &Config) -> Result<String> {
    if let Some(t) = flag {
        return Ok(t.trim().to_owned());
    }
    if let Ok(t) = std::env::var("VOLLEY_TOKEN") {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_owned());
        }
    }
    if let Some(path) = &config.control.token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read [control] token_file {}", path.display()))?;
        return Ok(text.trim().to_owned());
    }
    bail!("no API token: pass --token, set $VOLLEY_TOKEN or [control] token_file (make one with volley token create)")
}

/// A token made in the store for one command's calls (`what` names it), when
/// none was given; revoked by [`Minted::revoke`].
pub struct Minted {
    store: volley_control::store::Store,
    name: String,
}

impl Minted {
    /// Revokes the token (best effort: a leftover is listed by `volley token
    /// list` under its name).
    pub fn revoke(self, runtime: &tokio::runtime::Runtime) {
        let _ = runtime.block_on(self.store.revoke_token(&self.name));
    }
}

/// The token to call the API with (`--token`, `$VOLLEY_TOKEN`, `[control]
/// token_file`), else one of `role` made in the store for this command,
/// named `volley-WHAT-PID-TIME`.
pub fn token_or_mint(
    flag: Option<&str>,
    config: &Config,
    runtime: &tokio::runtime::Runtime,
    what: &str,
    role: volley_control::store::tokens::Role,
) -> Result<(String, Option<Minted>)> {
    if let Ok(t) = token(flag, config) {
        return Ok((t, None));
    }
    let name = format!(
        "volley-{what}-{}-{}",
        std::process::id(),
        volley_control::store::now()
    );
    let store = runtime.block_on(crate::control::open_store(config))?;
    let (_, secret) = runtime.block_on(store.create_token(&name, role))?;
    Ok((secret, Some(Minted { store, name })))
}

impl ApiClient {
    /// A client of the API at `base` with `token`.
    pub fn new(base: String, token: String) -> Result<ApiClient> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .context("cannot make an HTTP client")?;
        Ok(ApiClient { base, token, http })
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn answer(
        &self,
        what: &str,
        response: reqwest::Result<reqwest::Response>,
    ) -> Result<serde_json::Value> {
        let response =
            response.with_context(|| format!("cannot reach the API at {} ({what})", self.base))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .with_context(|| format!("{what}: the answer was cut short"))?;
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(
            |_| serde_json::json!({"detail": String::from_utf8_lossy(&body).into_owned()}),
        );
        if !status.is_success() {
            let detail = value
                .get("detail")
                .and_then(|d| d.as_str())
                .unwrap_or("no detail");
            bail!("{what}: {status}: {detail}");
        }
        Ok(value)
    }

    /// GET `path` (with its query).
    pub async fn get(&self, path: &str) -> Result<serde_json::Value> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await;
        self.answer(&format!("GET {path}"), r).await
    }

    /// GET `path` as text (`/metrics`).
    pub async fn get_text(&self, path: &str) -> Result<String> {
        let what = format!("GET {path}");
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the API at {} ({what})", self.base))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("{what}: the answer was cut short"))?;
        if !status.is_success() {
            bail!("{what}: {status}");
        }
        Ok(text)
    }

    /// POST `body` as JSON to `path`.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await;
        self.answer(&format!("POST {path}"), r).await
    }

    /// POST the file at `path` as the body of `api_path`, streamed.
    pub async fn post_file(
        &self,
        api_path: &str,
        path: &std::path::Path,
    ) -> Result<serde_json::Value> {
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("cannot open {}", path.display()))?;
        let stream = file_chunks(file);
        let r = self
            .http
            .post(format!("{}{api_path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "text/csv")
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await;
        self.answer(&format!("POST {api_path}"), r).await
    }
}

/// A file as a stream of chunks (64 KiB), never read whole.
fn file_chunks(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> {
    use tokio::io::AsyncReadExt;
    futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 64 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
}
