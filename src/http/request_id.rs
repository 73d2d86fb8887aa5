//! The id of the request a task is serving, for problem bodies and the audit trail. The
//! request-id middleware (`app::middleware`) sets it; anything below may read it.

use std::future::Future;

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being handled on this task, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Runs `future` with `id` as the current request id.
pub async fn scope<F: Future>(id: String, future: F) -> F::Output {
    CURRENT.scope(id, future).await
}
