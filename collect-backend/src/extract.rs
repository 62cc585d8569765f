//! Request extractors whose rejections are [`ApiError`]s, so every failure has a JSON body
//! that says what to fix (axum's own extractors answer in plain text).

use axum::{
    extract::{
        FromRequest, FromRequestParts, Path, Request,
        rejection::{BytesRejection, FailedToBufferBody, JsonRejection},
    },
    http::request::Parts,
};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::ApiError;

/// A JSON request body of type `T`, like [`axum::Json`] but rejecting with [`ApiError`]:
/// malformed JSON is 400, the wrong shape 422, a missing content type 415 and a body over
/// the limit 413.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = request
            .extensions()
            .get::<BodyLimit>()
            .map_or(usize::MAX, |limit| limit.0);
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(JsonRejection::JsonSyntaxError(err)) => Err(ApiError::BadRequest(format!(
                "the request body is not valid JSON ({}); check quotes, commas and brackets",
                innermost(&err)
            ))),
            Err(JsonRejection::JsonDataError(err)) => Err(ApiError::Invalid(format!(
                "the request body does not have the expected shape: {}",
                source_of(&err)
            ))),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::NotJson),
            Err(JsonRejection::BytesRejection(BytesRejection::FailedToBufferBody(
                FailedToBufferBody::LengthLimitError(_),
            ))) => Err(ApiError::TooLarge { limit }),
            Err(other) => Err(ApiError::BadRequest(format!(
                "the request body could not be read: {}",
                other.body_text()
            ))),
        }
    }
}

/// The body limit in force, as a request extension, so [`JsonBody`] can name it in its
/// 413 message. Set by the router next to `DefaultBodyLimit`.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// serde's message, with the field path and position, without axum's generic prefix.
/// The parser's own words: for a syntax error, the field path axum puts before them is the
/// parser's guess at where it was (`answers.?`), not a field of the request.
fn innermost(err: &dyn std::error::Error) -> String {
    let mut cause = err.source();
    while let Some(error) = cause {
        if let Some(located) = error.downcast_ref::<serde_path_to_error::Error<serde_json::Error>>()
        {
            return located.inner().to_string();
        }
        cause = error.source();
    }
    source_of(err)
}

fn source_of(err: &dyn std::error::Error) -> String {
    err.source()
        .map_or_else(|| err.to_string(), ToString::to_string)
}

/// The `{id}` path segment of a form route, parsed as a UUID (400 if it is not one).
#[derive(Debug, Clone, Copy)]
pub struct FormId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for FormId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
        raw.parse().map(Self).map_err(|_| {
            ApiError::BadRequest(format!(
                "`{raw}` is not a form id; form ids are UUIDs such as \
                 67e55044-10b1-426f-9247-bb680e5fe0c8"
            ))
        })
    }
}

/// The `{id}` and `{submission_id}` path segments of a submission route, parsed as UUIDs
/// (400 if one is not).
#[derive(Debug, Clone, Copy)]
pub struct SubmissionPath {
    /// The form.
    pub form_id: Uuid,
    /// The submission.
    pub submission_id: Uuid,
}

impl SubmissionPath {
    /// The error when the form has no such submission.
    pub fn not_found(self) -> ApiError {
        ApiError::SubmissionNotFound {
            form_id: self.form_id,
            submission_id: self.submission_id,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SubmissionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((form, submission)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
        let uuid = |raw: &str, what: &str| {
            raw.parse().map_err(|_| {
                ApiError::BadRequest(format!(
                    "`{raw}` is not a {what} id; ids are UUIDs such as \
                     67e55044-10b1-426f-9247-bb680e5fe0c8"
                ))
            })
        };
        Ok(Self {
            form_id: uuid(&form, "form")?,
            submission_id: uuid(&submission, "submission")?,
        })
    }
}
