//! Links in emails that open a page without signing in (a printable invoice, its pay page, a
//! progress report): the path plus `expires` (Unix seconds) and `sig`, an HMAC-SHA256 of
//! both under a secret the database keeps (`server_secrets`), so every Cedar process signs
//! and checks alike. A link names one page of one record and stops working at `expires`
//! (`CEDAR_EMAIL_LINK_DAYS`).

use chrono::{Duration, Utc};
use uuid::Uuid;

use crate::db::Db;
use crate::{on_db, on_tx};

/// The signing key, read (or created, once) from the database on first use.
#[derive(Default)]
pub struct LinkKey(tokio::sync::OnceCell<Vec<u8>>);

impl LinkKey {
    pub async fn get(&self, db: &Db) -> Result<&[u8], sqlx::Error> {
        self.0
            .get_or_try_init(|| async {
                const INSERT: &str = "INSERT INTO server_secrets (name, value, created_at) VALUES ('email_links', $1, $2) \
                    ON CONFLICT (name) DO NOTHING";
                const READ: &str = "SELECT value FROM server_secrets WHERE name = 'email_links'";
                let mut fresh = vec![0u8; 32];
                getrandom::fill(&mut fresh).expect("the OS has randomness");
                let mut tx = db.begin().await?;
                on_tx!(&mut tx, conn => sqlx::query(INSERT).bind(&fresh).bind(Utc::now()).execute(&mut **conn).await.map(|_| ()))?;
                tx.commit().await?;
                on_db!(db, pool => sqlx::query_scalar::<_, Vec<u8>>(READ).fetch_one(pool).await)
            })
            .await
            .map(Vec::as_slice)
    }
}

fn signature(key: &[u8], page: &str, id: Uuid, expires: i64) -> String {
    let message = format!("{page}\n{id}\n{expires}");
    hex::encode(crate::billing::stripe::hmac_sha256(key, message.as_bytes()))
}

/// `{public_url}/v1/{collection}/{id}/{page}?expires=…&sig=…`, valid `days` days.
pub async fn link(state: &crate::app::AppState, collection: &str, id: Uuid, page: &str) -> Result<String, sqlx::Error> {
    let key = state.link_key.get(&state.db).await?;
    let days = i64::from(state.settings.school_year.email_link_days);
    let expires = (Utc::now() + Duration::days(days)).timestamp();
    let name = format!("{collection}/{page}");
    let sig = signature(key, &name, id, expires);
    Ok(format!("{}/v1/{collection}/{id}/{page}?expires={expires}&sig={sig}", state.settings.public_url))
}

/// Why a link does not open its page.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkError {
    /// Not signed by Cedar for this page (altered or made up).
    Invalid,
    /// Signed, but past its `expires`.
    Expired,
}

/// Checks `sig` and `expires` for the page `collection/page` of `id`.
pub async fn check(
    state: &crate::app::AppState,
    collection: &str,
    id: Uuid,
    page: &str,
    expires: i64,
    sig: &str,
) -> Result<Result<(), LinkError>, sqlx::Error> {
    let key = state.link_key.get(&state.db).await?;
    let expected = signature(key, &format!("{collection}/{page}"), id, expires);
    let same = crate::http::constant_time_eq(expected.as_bytes(), sig.as_bytes());
    Ok(if !same {
        Err(LinkError::Invalid)
    } else if expires < Utc::now().timestamp() {
        Err(LinkError::Expired)
    } else {
        Ok(())
    })
}

/// The query string of a signed link.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Signed {
    /// Unix seconds after which the link stops working.
    pub expires: i64,
    /// The link's signature.
    pub sig: String,
}
