//! The Google clients (`google-sheets4`, `google-drive3`, `yup-oauth2` service-account
//! auth) and how their errors map to [`TaskError`]s.

use std::{path::Path, time::Duration};

use google_drive3::DriveHub;
use google_sheets4::{
    Sheets,
    common::{Delegate, Response, Retry},
    hyper_rustls::{HttpsConnector, HttpsConnectorBuilder},
    hyper_util::{
        client::legacy::{Client, connect::HttpConnector},
        rt::TokioExecutor,
    },
    yup_oauth2::{ServiceAccountAuthenticator, read_service_account_key},
};
use serde_json::Value;

use crate::TaskError;

/// Where the Google APIs are; settings so an operator can point them at a proxy, and tests
/// at an emulator. The token endpoint is the key file's `token_uri`.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Sheets API base URL, with the trailing `/` (`https://sheets.googleapis.com/`).
    pub sheets_base_url: String,
    /// Drive API base URL, with the trailing `/` (`https://www.googleapis.com/drive/v3/`).
    pub drive_base_url: String,
}

impl Endpoints {
    /// `GOOGLE_SHEETS_BASE_URL` and `GOOGLE_DRIVE_BASE_URL`, else Google's own.
    pub fn from_env() -> Self {
        let var =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        Self {
            sheets_base_url: var("GOOGLE_SHEETS_BASE_URL", "https://sheets.googleapis.com/"),
            drive_base_url: var(
                "GOOGLE_DRIVE_BASE_URL",
                "https://www.googleapis.com/drive/v3/",
            ),
        }
    }
}

type Connector = HttpsConnector<HttpConnector>;

/// Authenticated Sheets and Drive clients for one service account.
pub struct Google {
    /// The Sheets v4 hub.
    pub sheets: Sheets<Connector>,
    /// The Drive v3 hub (sharing).
    pub drive: DriveHub<Connector>,
}

impl Google {
    /// Reads the service-account key and builds both clients. A key that cannot be read is
    /// fatal: no retry brings a missing file back.
    pub async fn connect(endpoints: &Endpoints, key_path: &Path) -> Result<Self, TaskError> {
        crate::install_crypto_provider();
        let key = read_service_account_key(key_path).await.map_err(|err| {
            TaskError::fatal(format!(
                "cannot read the service-account key `{}`: {err}; point \
                 GOOGLE_APPLICATION_CREDENTIALS (or the binding's credentials_file) at a key file",
                key_path.display()
            ))
        })?;
        let auth = ServiceAccountAuthenticator::builder(key)
            .build()
            .await
            .map_err(|err| {
                TaskError::fatal(format!(
                    "the service-account key `{}` is not usable: {err}",
                    key_path.display()
                ))
            })?;
        let connector = HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|err| TaskError::fatal(format!("no system CA certificates: {err}")))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let mut sheets = Sheets::new(client.clone(), auth.clone());
        sheets.base_url(endpoints.sheets_base_url.clone());
        sheets.root_url(endpoints.sheets_base_url.clone());
        let mut drive = DriveHub::new(client, auth);
        drive.base_url(endpoints.drive_base_url.clone());
        drive.root_url(endpoints.drive_base_url.clone());
        Ok(Self { sheets, drive })
    }
}

/// Keeps the `Retry-After` of a failed call (the client's error value drops the headers);
/// never retries by itself: retries are the worker's.
#[derive(Debug, Default)]
pub struct RetryAfter(pub Option<Duration>);

impl Delegate for RetryAfter {
    fn http_failure(&mut self, response: &Response, _body: Option<&Value>) -> Retry {
        self.0 = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Retry::Abort
    }
}

/// Maps a failed call to a task error: 429 and 5xx (and the network) are retryable,
/// honouring `Retry-After`; any other answer (400 bad range, 403 no permission, 404 no such
/// spreadsheet) fails with Google's message.
pub fn task_error(what: &str, err: google_sheets4::Error, retry_after: RetryAfter) -> TaskError {
    use google_sheets4::Error;
    let (code, message) = match &err {
        Error::BadRequest(body) => (
            body["error"]["code"].as_u64().unwrap_or(400) as u16,
            body["error"]["message"]
                .as_str()
                .map_or_else(|| body.to_string(), str::to_owned),
        ),
        Error::Failure(response) => (response.status().as_u16(), err.to_string()),
        Error::HttpError(_)
        | Error::Io(_)
        | Error::MissingToken(_)
        | Error::JsonDecodeError(..) => {
            return TaskError::Retryable {
                message: format!("{what}: {err}"),
                retry_after: None,
            };
        }
        _ => return TaskError::fatal(format!("{what}: {err}")),
    };
    let message = format!("{what}: Google answered {code}: {message}");
    if code == 429 || code >= 500 {
        TaskError::Retryable {
            message,
            retry_after: retry_after.0,
        }
    } else {
        let hint = match code {
            403 | 404 => {
                "; check the spreadsheet id and that it is shared with the service account"
            }
            _ => "",
        };
        TaskError::fatal(format!("{message}{hint}"))
    }
}
