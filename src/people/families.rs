//! `/v1/families`: a household, its guardians (parent accounts linked by `users.family_id`) and
//! the guardian who pays.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{calendar_url, new_calendar_token};
use crate::app::AppState;
use crate::auth::{AdminUser, CurrentUser, Role};
use crate::db::{CommitMark, Db, Tx};
use crate::error::{ApiError, ApiResult};
use crate::http::pagination::{Page, PageParams};
use crate::http::validate::Errors;
use crate::http::{Json, Query, nullable};
use crate::privacy::audit::{self, AuditEvent};
use crate::{on_db, on_tx};

use crate::domain::Language;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_families, create_family)).routes(routes!(
        get_family,
        update_family,
        delete_family
    ))
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct FamilyRow {
    pub id: Uuid,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub preferred_language: Language,
    pub payee_user_id: Option<Uuid>,
    pub address_line1: Option<String>,
    pub address_line2: Option<String>,
    pub city: Option<String>,
    pub province: Option<String>,
    pub postal_code: Option<String>,
    pub notes: Option<String>,
    pub ai_consent: bool,
    pub calendar_token: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "f.id, f.name, f.email, f.phone, f.preferred_language, f.payee_user_id, f.address_line1, \
    f.address_line2, f.city, f.province, f.postal_code, f.notes, \
    COALESCE((SELECT c.granted FROM consents c WHERE c.family_id = f.id AND c.kind = 'ai_processing' \
    ORDER BY c.recorded_at DESC, c.id DESC LIMIT 1), FALSE) AS ai_consent, f.calendar_token, f.created_at, f.updated_at";

/// Which families a scope may see: its own (parent) or those of its students (teacher).
const VISIBLE: &str = concat!(
    "($1 IS NULL OR f.id = $1) AND ($2 IS NULL OR EXISTS (SELECT 1 FROM students s WHERE s.family_id = f.id AND ",
    super::students::taught_by_2!(),
    "))"
);

#[derive(Debug, Serialize, ToSchema)]
pub struct Guardian {
    id: Uuid,
    email: String,
    display_name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Family {
    id: Uuid,
    name: String,
    email: Option<String>,
    phone: Option<String>,
    /// The language of everything the school sends.
    preferred_language: Language,
    /// The guardian who receives and pays the invoices.
    payee_user_id: Option<Uuid>,
    address_line1: Option<String>,
    address_line2: Option<String>,
    city: Option<String>,
    province: Option<String>,
    postal_code: Option<String>,
    /// Office notes (admins only).
    #[serde(skip_serializing_if = "Option::is_none")]
    notes: Option<String>,
    /// Whether the family agreed that its data may be sent to an external AI provider. Without
    /// it, workflows use Cedar's offline drafts for this family.
    ai_consent: bool,
    /// iCalendar feed of the family's lessons (secret URL).
    calendar_url: Option<String>,
    /// Parent accounts of this family (single reads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    guardians: Option<Vec<Guardian>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

fn present(state: &AppState, user: &CurrentUser, row: FamilyRow, guardians: Option<Vec<Guardian>>) -> Family {
    Family {
        // The feed shows every lesson of the family with every teacher and never expires:
        // only the family's parents and the office get it.
        calendar_url: (user.role != crate::auth::Role::Teacher).then(|| calendar_url(state, &row.calendar_token)),
        id: row.id,
        name: row.name,
        email: row.email,
        phone: row.phone,
        preferred_language: row.preferred_language,
        payee_user_id: row.payee_user_id,
        address_line1: row.address_line1,
        address_line2: row.address_line2,
        city: row.city,
        province: row.province,
        postal_code: row.postal_code,
        notes: if user.is_admin() { row.notes } else { None },
        ai_consent: row.ai_consent,
        guardians,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

pub(crate) async fn find_visible(db: &Db, user: &CurrentUser, id: Uuid) -> ApiResult<FamilyRow> {
    let (family, teacher) = user.row_filter().ok_or(ApiError::NotFound)?;
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM families f WHERE {VISIBLE} AND f.id = $3"));
    let row = on_db!(db, pool => sqlx::query_as::<_, FamilyRow>(sql).bind(family).bind(teacher).bind(id)
        .fetch_optional(pool).await)?;
    row.ok_or(ApiError::NotFound)
}

async fn guardians(db: &Db, family_id: Uuid) -> ApiResult<Vec<Guardian>> {
    const SQL: &str = "SELECT id, email, display_name FROM users WHERE family_id = $1 AND role = 'parent' ORDER BY id";
    let rows: Vec<(Uuid, String, Option<String>)> =
        on_db!(db, pool => sqlx::query_as(SQL).bind(family_id).fetch_all(pool).await)?;
    Ok(rows.into_iter().map(|(id, email, display_name)| Guardian { id, email, display_name }).collect())
}

/// Families the caller may see (admins: all; parents: their own; teachers: their students').
#[utoipa::path(get, path = "/v1/families", tag = "families", params(PageParams), security(("bearer" = [])),
    responses((status = 200, body = inline(Page<Family>)), (status = 401)))]
async fn list_families(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<Family>>> {
    let Some((family, teacher)) = user.row_filter() else {
        return Ok(Json(Page { items: vec![], next_cursor: None }));
    };
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM families f WHERE {VISIBLE} AND ($3 IS NULL OR f.id > $3) ORDER BY f.id LIMIT $4"
    ));
    let rows = on_db!(&state.db, pool => sqlx::query_as::<_, FamilyRow>(sql)
        .bind(family).bind(teacher).bind(page.after()?).bind(page.fetch_limit()?).fetch_all(pool).await)?;
    let page = Page::from_rows(rows, &page, |f| f.id)?;
    Ok(Json(Page {
        items: page.items.into_iter().map(|row| present(&state, &user, row, None)).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFamily {
    name: String,
    email: Option<String>,
    phone: Option<String>,
    /// `en` (default) or `fr`.
    preferred_language: Option<String>,
    address_line1: Option<String>,
    address_line2: Option<String>,
    city: Option<String>,
    province: Option<String>,
    postal_code: Option<String>,
    /// Office notes (admins only).
    notes: Option<String>,
    /// Parent accounts to link (admins only; a parent creating a family is linked themselves).
    guardian_ids: Option<Vec<Uuid>>,
    /// Must be one of the guardians; defaults to the first.
    payee_user_id: Option<Uuid>,
}

/// Contact fields as validated.
struct Contact {
    email: Option<String>,
    phone: Option<String>,
    preferred_language: String,
    address_line1: Option<String>,
    address_line2: Option<String>,
    city: Option<String>,
    province: Option<String>,
    postal_code: Option<String>,
}

/// Creates a family. Admins create any family and link its guardians; a parent without a
/// family creates their own and becomes its guardian and payee.
#[utoipa::path(post, path = "/v1/families", tag = "families", request_body = CreateFamily, security(("bearer" = [])),
    responses((status = 201, body = Family), (status = 401), (status = 403), (status = 409), (status = 422)))]
async fn create_family(
    State(state): State<AppState>,
    user: CurrentUser,
    Json(input): Json<CreateFamily>,
) -> ApiResult<(StatusCode, Json<Family>)> {
    user.require(&[Role::Admin, Role::Parent])?;
    let mut errors = Errors::default();
    let name = errors.name("name", &input.name);
    let contact = Contact {
        email: errors.optional_email("email", input.email.as_deref()),
        phone: errors.optional_phone("phone", input.phone.as_deref()),
        preferred_language: input.preferred_language.clone().unwrap_or_else(|| "en".into()),
        address_line1: errors.optional_name("address_line1", input.address_line1.as_deref()),
        address_line2: errors.optional_name("address_line2", input.address_line2.as_deref()),
        city: errors.optional_name("city", input.city.as_deref()),
        province: errors.optional_name("province", input.province.as_deref()),
        postal_code: errors.optional_name("postal_code", input.postal_code.as_deref()),
    };
    errors.choice::<Language>("preferred_language", &contact.preferred_language);
    let notes = errors.optional_text("notes", input.notes.as_deref());
    let guardian_ids = if user.is_admin() {
        input.guardian_ids.clone().unwrap_or_default()
    } else {
        if input.guardian_ids.is_some() || input.payee_user_id.is_some() || notes.is_some() {
            errors.add("guardian_ids", "only the school office can set guardians, payee or notes");
        }
        if user.family_id.is_some() {
            return Err(ApiError::conflict("You already belong to a family"));
        }
        vec![user.id]
    };
    let payee = input.payee_user_id.or_else(|| guardian_ids.first().copied());
    if let Some(payee) = payee
        && !guardian_ids.contains(&payee)
    {
        errors.add("payee_user_id", "must be one of the guardians");
    }
    errors.into_result()?;

    const INSERT: &str = "INSERT INTO families (id, name, email, phone, preferred_language, payee_user_id, \
        address_line1, address_line2, city, province, postal_code, notes, calendar_token, created_at, updated_at) \
        VALUES ($1, $2, $3, $4, $5, NULL, $6, $7, $8, $9, $10, $11, $12, $13, $13)";
    let id = Uuid::now_v7();
    let mut tx = state.db.begin().await?;
    on_tx!(&mut tx, conn => sqlx::query(INSERT)
        .bind(id).bind(&name).bind(&contact.email).bind(&contact.phone).bind(&contact.preferred_language)
        .bind(&contact.address_line1).bind(&contact.address_line2).bind(&contact.city).bind(&contact.province)
        .bind(&contact.postal_code).bind(&notes).bind(new_calendar_token()).bind(Utc::now())
        .execute(&mut **conn).await.map(|_| ()))?;
    set_guardians(&mut tx, &user, id, &guardian_ids, payee).await?;
    audit::record_tx(
        &mut tx,
        AuditEvent::new("family.created").by(&user).subject("family", id).details(json!({"guardians": guardian_ids})),
    )
    .await?;
    CommitMark::answer_is(201, format!("/v1/families/{id}"));
    tx.commit().await?;
    for guardian in &guardian_ids {
        state.auth.forget_user(*guardian);
    }
    let row = find_any(&state.db, id).await?;
    let guardians = guardians(&state.db, id).await?;
    let user = CurrentUser { family_id: Some(id), ..user };
    Ok((StatusCode::CREATED, Json(present(&state, &user, row, Some(guardians)))))
}

async fn find_any(db: &Db, id: Uuid) -> ApiResult<FamilyRow> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM families f WHERE f.id = $1"));
    on_db!(db, pool => sqlx::query_as::<_, FamilyRow>(sql).bind(id).fetch_optional(pool).await)?
        .ok_or(ApiError::NotFound)
}

/// Makes exactly `guardian_ids` the family's parent accounts and sets the payee. An account
/// joins only once its owner has confirmed the address (`by` may always link itself): else
/// anyone could sign up with a parent's address before them and be linked to the family.
async fn set_guardians(
    tx: &mut Tx,
    by: &CurrentUser,
    family_id: Uuid,
    guardian_ids: &[Uuid],
    payee: Option<Uuid>,
) -> ApiResult<()> {
    const UNLINK: &str = "UPDATE users SET family_id = NULL WHERE family_id = $1";
    const LINK: &str = "UPDATE users SET family_id = $1, updated_at = $3 WHERE id = $2 AND role = 'parent' \
        AND (email_confirmed_at IS NOT NULL OR $4)";
    const CURRENT: &str = "SELECT id FROM users WHERE family_id = $1";
    const UNCONFIRMED: &str =
        "SELECT COUNT(*) FROM users WHERE id = $1 AND role = 'parent' AND email_confirmed_at IS NULL";
    const PAYEE: &str = "UPDATE families SET payee_user_id = $2 WHERE id = $1";
    let current: Vec<Uuid> =
        on_tx!(tx, conn => sqlx::query_scalar(CURRENT).bind(family_id).fetch_all(&mut **conn).await)?;
    on_tx!(tx, conn => sqlx::query(UNLINK).bind(family_id).execute(&mut **conn).await.map(|_| ()))?;
    let mut errors = Errors::default();
    for (i, guardian) in guardian_ids.iter().enumerate() {
        let vouched = *guardian == by.id || current.contains(guardian);
        let linked = on_tx!(tx, conn => sqlx::query(LINK).bind(family_id).bind(guardian).bind(Utc::now()).bind(vouched)
            .execute(&mut **conn).await.map(|r| r.rows_affected()))?;
        if linked == 0 {
            let unconfirmed: i64 =
                on_tx!(tx, conn => sqlx::query_scalar(UNCONFIRMED).bind(guardian).fetch_one(&mut **conn).await)?;
            let why = if unconfirmed > 0 {
                "has not confirmed its email address yet (the sign-up confirmation email has the link)"
            } else {
                "is not a parent account"
            };
            errors.add(format!("guardian_ids[{i}]"), why);
        }
    }
    errors.into_result()?;
    on_tx!(tx, conn => sqlx::query(PAYEE).bind(family_id).bind(payee).execute(&mut **conn).await.map(|_| ()))?;
    Ok(())
}

/// One family, with its guardians.
#[utoipa::path(get, path = "/v1/families/{id}", tag = "families", security(("bearer" = [])),
    responses((status = 200, body = Family), (status = 401), (status = 404)))]
async fn get_family(State(state): State<AppState>, user: CurrentUser, Path(id): Path<Uuid>) -> ApiResult<Json<Family>> {
    let row = find_visible(&state.db, &user, id).await?;
    let guardians = guardians(&state.db, id).await?;
    crate::privacy::audit::record_read(&state, &user, "family", id).await?;
    Ok(Json(present(&state, &user, row, Some(guardians))))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateFamily {
    /// Admins only.
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    email: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    phone: Option<Option<String>>,
    preferred_language: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    address_line1: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    address_line2: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    city: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    province: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    postal_code: Option<Option<String>>,
    /// Admins only.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    notes: Option<Option<String>>,
    /// Consent to AI processing by an external provider (parents of the family or admins).
    ai_consent: Option<bool>,
    /// Admins only: replaces the guardians.
    guardian_ids: Option<Vec<Uuid>>,
    /// Admins only: one of the guardians.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    payee_user_id: Option<Option<Uuid>>,
}

/// Updates a family. Parents may change their own family's contact details; everything else
/// is for admins.
#[utoipa::path(patch, path = "/v1/families/{id}", tag = "families", request_body = UpdateFamily, security(("bearer" = [])),
    responses((status = 200, body = Family), (status = 401), (status = 404), (status = 422)))]
async fn update_family(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
    Json(input): Json<UpdateFamily>,
) -> ApiResult<Json<Family>> {
    let current = find_visible(&state.db, &user, id).await?;
    if user.role == Role::Teacher {
        return Err(ApiError::Forbidden);
    }
    let mut errors = Errors::default();
    if !user.is_admin() {
        for (field, present) in [
            ("name", input.name.is_some()),
            ("notes", input.notes.is_some()),
            ("guardian_ids", input.guardian_ids.is_some()),
            ("payee_user_id", input.payee_user_id.is_some()),
        ] {
            if present {
                errors.add(field, "only the school office can change this");
            }
        }
    }
    let name = match &input.name {
        Some(name) => errors.name("name", name),
        None => current.name.clone(),
    };
    let pick = |new: &Option<Option<String>>, old: &Option<String>| match new {
        Some(value) => value.clone(),
        None => old.clone(),
    };
    let email = errors.optional_email("email", pick(&input.email, &current.email).as_deref());
    let phone = errors.optional_phone("phone", pick(&input.phone, &current.phone).as_deref());
    let language = match input.preferred_language.as_deref() {
        Some(text) => errors.choice::<Language>("preferred_language", text).unwrap_or(current.preferred_language),
        None => current.preferred_language,
    };
    let line1 = errors.optional_name("address_line1", pick(&input.address_line1, &current.address_line1).as_deref());
    let line2 = errors.optional_name("address_line2", pick(&input.address_line2, &current.address_line2).as_deref());
    let city = errors.optional_name("city", pick(&input.city, &current.city).as_deref());
    let province = errors.optional_name("province", pick(&input.province, &current.province).as_deref());
    let postal_code = errors.optional_name("postal_code", pick(&input.postal_code, &current.postal_code).as_deref());
    let notes = errors.optional_text("notes", pick(&input.notes, &current.notes).as_deref());
    let guardian_ids = match &input.guardian_ids {
        Some(ids) => ids.clone(),
        None => guardians(&state.db, id).await?.into_iter().map(|g| g.id).collect(),
    };
    let payee = match input.payee_user_id {
        Some(payee) => payee,
        None if guardian_ids.contains(&current.payee_user_id.unwrap_or_default()) => current.payee_user_id,
        None => guardian_ids.first().copied(),
    };
    if let Some(payee) = payee
        && !guardian_ids.contains(&payee)
    {
        errors.add("payee_user_id", "must be one of the guardians");
    }
    errors.into_result()?;
    let ai_consent = input.ai_consent.unwrap_or(current.ai_consent);

    const UPDATE: &str = "UPDATE families SET name = $2, email = $3, phone = $4, preferred_language = $5, \
        address_line1 = $6, address_line2 = $7, city = $8, province = $9, postal_code = $10, notes = $11, \
        updated_at = $12 WHERE id = $1";
    let mut tx = state.db.begin().await?;
    on_tx!(&mut tx, conn => sqlx::query(UPDATE)
        .bind(id).bind(&name).bind(&email).bind(&phone).bind(language).bind(&line1).bind(&line2).bind(&city)
        .bind(&province).bind(&postal_code).bind(&notes).bind(Utc::now())
        .execute(&mut **conn).await.map(|_| ()))?;
    let before: Vec<Uuid> = guardians_in_tx(&mut tx, id).await?;
    if user.is_admin() {
        set_guardians(&mut tx, &user, id, &guardian_ids, payee).await?;
    }
    if name != current.name {
        super::students::refresh_search_text_for_family(&mut tx, id, &name).await?;
    }
    audit::record_tx(&mut tx, AuditEvent::new("family.updated").by(&user).subject("family", id)).await?;
    if ai_consent != current.ai_consent {
        // The flag is a view of the consent register: a change is a new register entry.
        use crate::privacy::consents::{self, ConsentKind, ConsentMethod};
        let method = if user.is_admin() { ConsentMethod::Office } else { ConsentMethod::App };
        let note = "set on the family record";
        consents::record(&mut tx, id, ConsentKind::AiProcessing, ai_consent, Some(user.id), method, Some(note)).await?;
        let event = AuditEvent::new("family.ai_consent_changed").by(&user).subject("family", id);
        audit::record_tx(&mut tx, event.details(serde_json::json!({"granted": ai_consent}))).await?;
    }
    tx.commit().await?;
    for guardian in before.iter().chain(guardian_ids.iter()) {
        state.auth.forget_user(*guardian);
    }
    let row = find_any(&state.db, id).await?;
    let guardians = guardians(&state.db, id).await?;
    Ok(Json(present(&state, &user, row, Some(guardians))))
}

async fn guardians_in_tx(tx: &mut Tx, family_id: Uuid) -> ApiResult<Vec<Uuid>> {
    const SQL: &str = "SELECT id FROM users WHERE family_id = $1";
    Ok(on_tx!(tx, conn => sqlx::query_scalar::<_, Uuid>(SQL).bind(family_id).fetch_all(&mut **conn).await)?)
}

/// Deletes a family that has no students (admin); its guardians stay, unlinked.
#[utoipa::path(delete, path = "/v1/families/{id}", tag = "families", security(("bearer" = [])),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 409)))]
async fn delete_family(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    const SQL: &str = "DELETE FROM families WHERE id = $1";
    let mut tx = state.db.begin().await?;
    let guardians = guardians_in_tx(&mut tx, id).await?;
    let deleted =
        on_tx!(&mut tx, conn => sqlx::query(SQL).bind(id).execute(&mut **conn).await.map(|r| r.rows_affected()))
            .map_err(crate::db::still_referenced("The family still has students; withdraw or move them first"))?;
    if deleted == 0 {
        return Err(ApiError::NotFound);
    }
    audit::record_tx(&mut tx, AuditEvent::new("family.deleted").by(&admin).subject("family", id)).await?;
    tx.commit().await?;
    for guardian in guardians {
        state.auth.forget_user(guardian);
    }
    Ok(StatusCode::NO_CONTENT)
}
