//! The HTTP API. Only the routes that change a submission carry [`PostSubmissionLayer`]
//! (submit, replace, delete): the rest of the backend is unaware of postsub.

use anyhow::Context;
use axum::{
    Extension, Json, Router,
    extract::{DefaultBodyLimit, Query, State},
    http::StatusCode,
    routing::{get, post, put},
};
use postsub::PostSubmissionLayer;
use serde_json::{Value, json};

use crate::{
    ApiError,
    extract::{BodyLimit, FormId, JsonBody, SubmissionPath},
    forms::{
        Answers, CreateForm, Cursor, Form, ListParams, NewForm, Submission, SubmissionPage,
        SubmissionQuery, SubmitBody,
    },
    store::Store,
};

/// The API's router: forms and submissions in `store`, the routes that change a submission
/// wrapped in `post_submission` (which reads the event from the method: POST created, PUT
/// updated, DELETE deleted), request bodies limited to `max_body_bytes`.
pub fn router(store: Store, post_submission: PostSubmissionLayer, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/forms", post(create_form))
        .route("/forms/{id}", get(get_form))
        .route(
            "/forms/{id}/submit",
            post(submit).layer(post_submission.clone()),
        )
        .route("/forms/{id}/submissions", get(list_submissions))
        .route(
            "/forms/{id}/submissions/{submission_id}",
            put(replace_submission)
                .delete(delete_submission)
                .layer(post_submission),
        )
        .fallback(async || ApiError::NoRoute)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(Extension(BodyLimit(max_body_bytes)))
        .with_state(store)
}

/// `GET /healthz`: the process is up and serving (it does not probe the database).
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `POST /forms`: creates a form.
async fn create_form(
    State(store): State<Store>,
    JsonBody(body): JsonBody<CreateForm>,
) -> Result<(StatusCode, Json<Form>), ApiError> {
    let form = NewForm::try_from(body)?;
    let form = store
        .insert_form(&form)
        .await
        .context("storing a new form")?;
    Ok((StatusCode::CREATED, Json(form)))
}

/// `GET /forms/{id}`: one form.
async fn get_form(State(store): State<Store>, FormId(id): FormId) -> Result<Json<Form>, ApiError> {
    store
        .get_form(id)
        .await
        .context("loading a form")?
        .map(Json)
        .ok_or(ApiError::FormNotFound(id))
}

/// `POST /forms/{id}/submit`: stores a submission. [`PostSubmissionLayer`] then adds
/// `post_submission` to the 201 body.
async fn submit(
    State(store): State<Store>,
    FormId(form_id): FormId,
    JsonBody(body): JsonBody<SubmitBody>,
) -> Result<(StatusCode, Json<Submission>), ApiError> {
    let answers = Answers::try_from(body)?;
    let submission = store
        .insert_submission(form_id, &answers)
        .await
        .context("storing a submission")?
        .ok_or(ApiError::FormNotFound(form_id))?;
    Ok((StatusCode::CREATED, Json(submission)))
}

/// `PUT /forms/{id}/submissions/{submission_id}`: replaces a submission's answers (the body
/// is the submit route's), one revision up. [`PostSubmissionLayer`] then runs the bindings
/// taking `updated`.
async fn replace_submission(
    State(store): State<Store>,
    path: SubmissionPath,
    JsonBody(body): JsonBody<SubmitBody>,
) -> Result<Json<Submission>, ApiError> {
    let answers = Answers::try_from(body)?;
    store
        .replace_answers(path.form_id, path.submission_id, &answers)
        .await
        .context("replacing a submission's answers")?
        .map(Json)
        .ok_or_else(|| path.not_found())
}

/// `DELETE /forms/{id}/submissions/{submission_id}`: deletes a submission and answers it as
/// it was (revision one up). [`PostSubmissionLayer`] then runs the bindings taking
/// `deleted`.
async fn delete_submission(
    State(store): State<Store>,
    path: SubmissionPath,
) -> Result<Json<Submission>, ApiError> {
    store
        .delete_submission(path.form_id, path.submission_id)
        .await
        .context("deleting a submission")?
        .map(Json)
        .ok_or_else(|| path.not_found())
}

/// `GET /forms/{id}/submissions?since=&until=&after=&limit=`: one page of the form's
/// submissions, oldest first, and the cursor of the next page (`next`, `null` on the last).
async fn list_submissions(
    State(store): State<Store>,
    FormId(form_id): FormId,
    Query(params): Query<ListParams>,
) -> Result<Json<SubmissionPage>, ApiError> {
    let query = SubmissionQuery::try_from(params)?;
    if !store
        .form_exists(form_id)
        .await
        .context("looking up a form")?
    {
        return Err(ApiError::FormNotFound(form_id));
    }
    // One more than asked tells whether another page follows.
    let mut submissions = store
        .list_submissions(form_id, &query, i64::from(query.limit) + 1)
        .await
        .context("listing submissions")?;
    let next = if submissions.len() > query.limit as usize {
        submissions.truncate(query.limit as usize);
        submissions
            .last()
            .map(|last| Cursor::after(last).to_string())
    } else {
        None
    };
    Ok(Json(SubmissionPage { submissions, next }))
}
