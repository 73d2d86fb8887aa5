//! Families, students, teachers, rooms, progress notes and enrollment requests, with the
//! ownership rules of `docs/auth.md`: admins see everything, parents their own family,
//! teachers their own students; anything else is 404 in single reads and lists alike.

pub mod demo;
pub(crate) mod enrollments;
pub(crate) mod families;
mod progress;
mod rooms;
pub mod service;
pub(crate) mod students;
mod teachers;

use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::CurrentUser;
use crate::db::{Constraint, ConstraintKind};

pub use crate::time::WeeklyWindow;

pub fn router() -> OpenApiRouter<AppState> {
    families::router()
        .merge(students::router())
        .merge(progress::router())
        .merge(teachers::router())
        .merge(rooms::router())
        .merge(enrollments::router())
}

pub static CONSTRAINTS: &[Constraint] = &[
    Constraint {
        name: "teachers_email_key",
        sqlite_columns: "teachers.email",
        kind: ConstraintKind::Unique,
        field: "email",
        message: "A teacher with this email address already exists",
    },
    Constraint {
        name: "rooms_name_key",
        sqlite_columns: "rooms.name",
        kind: ConstraintKind::Unique,
        field: "name",
        message: "A room with this name already exists",
    },
    Constraint {
        name: "users_teacher_id_key",
        sqlite_columns: "users.teacher_id",
        kind: ConstraintKind::Unique,
        field: "user_id",
        message: "This account is already linked to another teacher",
    },
    Constraint {
        name: "students_family_id_fkey",
        sqlite_columns: "",
        kind: ConstraintKind::ForeignKey,
        field: "family_id",
        message: "No such family",
    },
    Constraint {
        name: "students_teacher_id_fkey",
        sqlite_columns: "",
        kind: ConstraintKind::ForeignKey,
        field: "teacher_id",
        message: "No such teacher",
    },
    Constraint {
        name: "enrollments_assigned_teacher_id_fkey",
        sqlite_columns: "",
        kind: ConstraintKind::ForeignKey,
        field: "teacher_id",
        message: "No such teacher",
    },
    Constraint {
        name: "users_family_id_fkey",
        sqlite_columns: "",
        kind: ConstraintKind::ForeignKey,
        field: "family_id",
        message: "No such family",
    },
    Constraint {
        name: "users_teacher_id_fkey",
        sqlite_columns: "",
        kind: ConstraintKind::ForeignKey,
        field: "teacher_id",
        message: "No such teacher",
    },
];

/// The secret-bearing calendar feed URL of a family or teacher.
pub(crate) fn calendar_url(state: &AppState, token: &str) -> String {
    format!("{}/v1/calendars/{token}.ics", state.settings.public_url)
}

pub(crate) fn new_calendar_token() -> String {
    crate::auth::store::new_secret_token().0
}

/// 404 unless the teacher exists.
pub async fn teacher_exists(db: &crate::db::Db, id: Uuid) -> crate::error::ApiResult<()> {
    teachers::find(db, id).await.map(|_| ())
}

/// 404 unless the student exists and `user` may see them.
pub async fn student_visible(db: &crate::db::Db, user: &CurrentUser, id: Uuid) -> crate::error::ApiResult<()> {
    students::find_visible(db, user, id).await.map(|_| ())
}
