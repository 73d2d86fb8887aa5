//! Privacy (PIPEDA): the audit trail now; consents, access requests, erasure and retention
//! follow in their own issue.

pub mod audit;

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    audit::router()
}
