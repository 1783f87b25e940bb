//! The admin client behind the CLI's service commands (`silo gc`, `silo scrub`, ...): it calls
//! the management API of a running Silo with the admin token.

use std::path::Path;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use serde::de::DeserializeOwned;
use storage_node::data_dir::{ADMIN_TOKEN_SECRET, secret_file};

use crate::secret::Secret;

/// Where the service is and how to authenticate: global flags, given before or after any
/// subcommand.
#[derive(Debug, Args)]
#[command(next_help_heading = "Reaching a running Silo")]
pub struct ClientArgs {
    /// The Silo service URL.
    #[arg(long, global = true, env = "SILO_URL", default_value = "http://127.0.0.1:8420")]
    pub url: String,
    /// The admin token [default: the one kept in ./silo-data/secrets/admin-token].
    #[arg(long, global = true, env = "SILO_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<Secret>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ClientArgs {
    fn token(&self) -> anyhow::Result<Secret> {
        if let Some(token) = &self.token {
            return Ok(token.clone());
        }
        let kept = secret_file(Path::new(crate::config::DEFAULT_DATA_DIR), ADMIN_TOKEN_SECRET);
        std::fs::read_to_string(&kept)
            .map(|token| Secret::from(token.trim().to_string()))
            .map_err(|_| anyhow!("no admin token: set SILO_ADMIN_TOKEN or pass --token"))
    }

    /// Sends `POST path` and decodes the JSON answer; an error status becomes an error with the
    /// service's message.
    pub async fn post<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(reqwest::Method::POST, path, None).await
    }

    /// Sends a request with an optional JSON body and decodes the JSON answer (`null` for an
    /// empty one); an error status becomes an error with the service's message.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<T> {
        self.call_with_headers(method, path, body, &[]).await
    }

    /// [`ClientArgs::call`] with extra request headers.
    pub async fn call_with_headers<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<T> {
        let response = self.send_with_headers(method, path, body, headers).await?;
        let (url, status) = (response.url().clone(), response.status());
        let text = response.text().await.with_context(|| format!("{url} answered {status}"))?;
        let body: serde_json::Value = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| format!("{url} answered {status} with no JSON"))?
        };
        serde_json::from_value(body).with_context(|| format!("unexpected answer from {url}"))
    }

    /// Sends a request and returns the response as it arrives (for streamed answers); an
    /// error status becomes an error with the service's message.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<reqwest::Response> {
        self.send_with_headers(method, path, body, &[]).await
    }

    /// The one sender behind every call: the admin token, extra headers, an optional JSON body.
    async fn send_with_headers(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let token = self.token()?;
        let mut request = reqwest::Client::new().request(method, &url).bearer_auth(token.expose());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("cannot reach Silo at {}", self.url))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            // Not every answer is Silo's JSON (a proxy's page, a plain-text limit): show its start.
            let message = match body["error"]["message"].as_str() {
                Some(message) => message.to_string(),
                None if text.trim().is_empty() => "no message".to_string(),
                None => text.trim().chars().take(200).collect(),
            };
            bail!("{url} answered {status}: {message}");
        }
        Ok(response)
    }
}

/// Runs `future` on a small runtime (for the CLI's one-shot calls).
pub fn block_on<T>(future: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("async runtime")?
        .block_on(future)
}
