//! Identity: accounts and roles, Supabase-compatible sign-in (built-in or Supabase Auth),
//! sessions, and the authorization building blocks every slice uses. See `docs/auth.md`.

mod current_user;
pub mod emails;
mod gotrue;
mod keys;
pub mod password;
mod service;
pub mod store;
mod users;
mod verify;

use utoipa_axum::router::OpenApiRouter;

pub use crate::http::Email;
pub use current_user::{AdminUser, AuthFailure, CurrentUser, Role, Scope, authenticate, bearer_token, visible};
pub use service::{Auth, Mode};
pub use users::{create_admin_cli, create_supabase_admin_cli};

use crate::app::AppState;
use crate::db::{Constraint, ConstraintKind};

pub static CONSTRAINTS: &[Constraint] = &[Constraint {
    name: "users_email_key",
    sqlite_columns: "users.email",
    kind: ConstraintKind::Unique,
    field: "email",
    message: "An account with this email address already exists",
}];

pub use emails::jobs;

pub fn router() -> OpenApiRouter<AppState> {
    gotrue::router().merge(users::router())
}
