//! What the kinds that call a binding's URL share (`webhook`, `remote`, and a task author's
//! kinds, such as examples/sms-receipt): the checked URL, the HTTP client, the timeout
//! setting, and which failures another attempt can help.

use std::time::Duration;

use reqwest::{Response, StatusCode, Url, header};

use crate::{ConfigError, TargetPolicy, TaskError};

/// How long a call may take when the binding does not say.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most of an answer an error quotes.
const EXCERPT_BYTES: usize = 200;

/// An HTTP client that reaches only what `targets` allows and follows no redirect.
pub(crate) fn client(targets: &TargetPolicy) -> reqwest::Client {
    crate::install_crypto_provider();
    reqwest::Client::builder()
        .user_agent(concat!("postsub/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .dns_resolver(targets.resolver())
        // A redirect could lead anywhere, the private network included: the URL a binding
        // names answers for itself, and a 3xx is its answer.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("the HTTP client has a crypto provider and no bad settings")
}

/// A binding's `url`: http(s), and a target `targets` allows.
pub(crate) fn target_url(text: &str, targets: &TargetPolicy) -> Result<Url, ConfigError> {
    let url = Url::parse(text)
        .map_err(|err| ConfigError(format!("url: `{text}` does not parse: {err}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError(format!(
            "url: `{url}` must start with http:// or https://"
        )));
    }
    targets
        .check_url(&url)
        .map_err(|refused| ConfigError(format!("url: `{url}`: {refused}")))?;
    Ok(url)
}

/// A binding's optional `timeout` (whole seconds like `10s`), or [`DEFAULT_TIMEOUT`].
pub(crate) fn timeout(text: Option<&str>) -> Result<Duration, ConfigError> {
    let Some(text) = text else {
        return Ok(DEFAULT_TIMEOUT);
    };
    text.strip_suffix('s')
        .and_then(|seconds| seconds.parse::<u64>().ok())
        .filter(|seconds| *seconds > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| {
            ConfigError(format!(
                "timeout: `{text}` does not parse: write whole seconds like `10s`"
            ))
        })
}

/// The error of a `method` call to `url` that got no answer: fatal when the target checks
/// refused the address (another attempt would be refused the same way), retryable
/// otherwise (a timeout, a refused or broken connection).
pub fn send_error(method: &str, url: &Url, err: &reqwest::Error) -> TaskError {
    match crate::targets::refused_in(err) {
        Some(refused) => TaskError::fatal(format!("{method} {url} refused: {refused}")),
        None => TaskError::retryable(format!(
            "{method} {url} failed: {}",
            crate::error_chain(err)
        )),
    }
}

/// Whether an answer of `status` is worth another attempt: 429 (rate limited) and 5xx.
pub fn status_retries(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// `message` as an error: retryable, no sooner than `retry_after` when the other side said,
/// if `retryable`; fatal otherwise.
pub fn error(retryable: bool, message: String, retry_after: Option<Duration>) -> TaskError {
    if retryable {
        TaskError::Retryable {
            message,
            retry_after,
        }
    } else {
        TaskError::fatal(message)
    }
}

/// `Retry-After` in seconds, when the answer has one.
pub fn retry_after(response: &Response) -> Option<Duration> {
    response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The start of an answer's body, as an error quotes it.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let end = body.len().min(EXCERPT_BYTES);
    // Cut on a character boundary: a multi-byte character split at the limit is dropped.
    let text = String::from_utf8_lossy(&body[..end]);
    text.trim_end_matches(char::REPLACEMENT_CHARACTER)
        .to_owned()
}

/// The whole body of `response`, refused past `limit` bytes (read no further than that).
pub(crate) async fn body_within(
    mut response: Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Why [`body_within`] has no body.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The connection failed while reading.
    Read(reqwest::Error),
    /// More than the limit.
    TooLarge,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_excerpt_is_the_first_200_bytes_cut_on_a_character() {
        assert_eq!(excerpt(b"short"), "short");
        let long = "é".repeat(150);
        let cut = excerpt(long.as_bytes());
        assert_eq!(cut, "é".repeat(100));
    }

    #[test]
    fn timeouts_are_whole_seconds() {
        assert_eq!(timeout(None).unwrap(), DEFAULT_TIMEOUT);
        assert_eq!(timeout(Some("3s")).unwrap(), Duration::from_secs(3));
        for bad in ["0s", "soon", "3", "1.5s"] {
            assert!(
                timeout(Some(bad)).unwrap_err().0.starts_with("timeout: "),
                "{bad}"
            );
        }
    }
}
