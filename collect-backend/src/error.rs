//! [`ApiError`]: every way a request can fail, mapped to a status and a JSON body in one place.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;
use uuid::Uuid;

/// Why a request failed. The response is `{"error": "<message>"}` with the variant's status;
/// the message says what to change, except for [`ApiError::Unexpected`], whose cause is
/// logged and not shown.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON, or a path segment does not parse (400).
    #[error("{0}")]
    BadRequest(String),
    /// The body is JSON but not the shape or values the route accepts (422).
    #[error("{0}")]
    Invalid(String),
    /// The body was sent without `Content-Type: application/json` (415).
    #[error("send the body as JSON with the header `Content-Type: application/json`")]
    NotJson,
    /// The body is larger than the configured limit (413).
    #[error("the request body is larger than the limit of {limit} bytes; send less data")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// No form has this id (404).
    #[error("no form has the id {0}; create the form first or check the id")]
    FormNotFound(Uuid),
    /// The form has no submission of this id (404).
    #[error("form {form_id} has no submission {submission_id}")]
    SubmissionNotFound {
        /// The form.
        form_id: Uuid,
        /// The submission asked for.
        submission_id: Uuid,
    },
    /// No route matches the method and path (404).
    #[error(
        "no such route; the API serves /forms, /forms/{{id}}, /forms/{{id}}/submit, /forms/{{id}}/submissions, /forms/{{id}}/submissions/{{submission_id}} and /healthz"
    )]
    NoRoute,
    /// Anything else, such as a database error (500).
    #[error("something went wrong on our side; try again later")]
    Unexpected(#[from] anyhow::Error),
}

impl ApiError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::FormNotFound(_) | Self::SubmissionNotFound { .. } | Self::NoRoute => {
                StatusCode::NOT_FOUND
            }
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Unexpected(err) = &self {
            tracing::error!(error = format!("{err:#}"), "request failed");
        }
        (self.status(), Json(json!({"error": self.to_string()}))).into_response()
    }
}
