//! The SQL of forms and submissions: one function per query over a pool.

use sqlx::{PgPool, types::Json};
use uuid::Uuid;

use crate::forms::{Answers, Form, NewForm, Submission};

/// Stores a new form under a fresh id.
pub async fn insert_form(pool: &PgPool, form: &NewForm) -> sqlx::Result<Form> {
    sqlx::query_as(
        "INSERT INTO forms (id, title, questions) VALUES ($1, $2, $3)
         RETURNING id, title, questions, created_at",
    )
    .bind(Uuid::new_v4())
    .bind(&form.title)
    .bind(Json(&form.questions))
    .fetch_one(pool)
    .await
}

/// The form with this id, if any.
pub async fn get_form(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<Form>> {
    sqlx::query_as("SELECT id, title, questions, created_at FROM forms WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Whether a form has this id.
pub async fn form_exists(pool: &PgPool, id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM forms WHERE id = $1)")
        .bind(id)
        .fetch_one(pool)
        .await
}

/// Stores a submission to `form_id` under a fresh id; `None` if there is no such form.
/// One statement, so a form deleted meanwhile cannot slip between a check and the insert.
pub async fn insert_submission(
    pool: &PgPool,
    form_id: Uuid,
    answers: &Answers,
) -> sqlx::Result<Option<Submission>> {
    sqlx::query_as(
        "INSERT INTO submissions (id, form_id, answers)
         SELECT $1, id, $3 FROM forms WHERE id = $2
         RETURNING id, form_id, answers, created_at",
    )
    .bind(Uuid::new_v4())
    .bind(form_id)
    .bind(Json(answers))
    .fetch_optional(pool)
    .await
}

/// Submissions to `form_id`, newest first.
pub async fn list_submissions(pool: &PgPool, form_id: Uuid) -> sqlx::Result<Vec<Submission>> {
    sqlx::query_as(
        "SELECT id, form_id, answers, created_at FROM submissions WHERE form_id = $1
         ORDER BY created_at DESC, id DESC",
    )
    .bind(form_id)
    .fetch_all(pool)
    .await
}
