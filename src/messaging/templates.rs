//! Email templates: defaults built in (`defaults.rs`), overrides in the `templates` table,
//! rendered by minijinja with strict undefined variables. `GET/PUT/DELETE /v1/templates/{name}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use minijinja::{Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::defaults::{self, TEMPLATES};
use crate::app::AppState;
use crate::auth::AdminUser;
use crate::db::Tx;
use crate::error::{ApiError, ApiResult};
use crate::http::Json;
use crate::http::pagination::Page;
use crate::http::validate::Errors;
use crate::privacy::audit::{self, AuditEvent};
use crate::{on_db, on_tx};

use crate::domain::Language;

pub const SCHOOL: &str = "Cedar Heights Music Academy";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_templates)).routes(routes!(get_template, put_template, reset_template))
}

/// A rendered email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
}

/// Renders `subject` and `body` with `vars` (plus `school`); an unknown variable is an error.
pub fn render(subject: &str, body: &str, vars: &Value) -> Result<Rendered, (&'static str, String)> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    let mut vars = vars.clone();
    if let Some(map) = vars.as_object_mut() {
        map.entry("school").or_insert_with(|| json!(SCHOOL));
    }
    let describe = |e: minijinja::Error| {
        let mut text = e.to_string();
        if let Some(detail) = e.detail() {
            text = format!("{text} ({detail})");
        }
        text
    };
    let subject = env.render_str(subject, &vars).map_err(|e| ("subject", describe(e)))?;
    let body = env.render_str(body, &vars).map_err(|e| ("body", describe(e)))?;
    Ok(Rendered { subject: subject.lines().collect::<Vec<_>>().join(" ").trim().to_owned(), body })
}

/// The template source in force for `name` and `language` (an override, else the default).
pub async fn source(tx: &mut Tx, name: &str, language: &str) -> Result<Option<(String, String)>, sqlx::Error> {
    const SQL: &str = "SELECT subject, body FROM templates WHERE name = $1 AND language = $2";
    let custom: Option<(String, String)> =
        on_tx!(tx, conn => sqlx::query_as(SQL).bind(name).bind(language).fetch_optional(&mut **conn).await)?;
    Ok(custom.or_else(|| {
        defaults::find(name).map(|d| {
            let (subject, body) = if language == "fr" { d.fr } else { d.en };
            (subject.to_owned(), body.to_owned())
        })
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Template {
    name: &'static str,
    /// `transactional` (always sent) or `notification` (recipients may opt out).
    category: &'static str,
    /// The variables the template receives, with sample values.
    #[schema(value_type = Object)]
    sample_data: Value,
    variants: Vec<Variant>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Variant {
    /// `en` or `fr`: the recipient's preferred language picks it.
    language: &'static str,
    subject: String,
    body: String,
    /// True when the school changed the built-in text.
    overridden: bool,
    updated_at: Option<DateTime<Utc>>,
}

async fn view(state: &AppState, default: &'static defaults::Default) -> ApiResult<Template> {
    const SQL: &str = "SELECT language, subject, body, updated_at FROM templates WHERE name = $1";
    let overrides: Vec<(String, String, String, DateTime<Utc>)> =
        on_db!(&state.db, pool => sqlx::query_as(SQL).bind(default.name).fetch_all(pool).await)?;
    let variants = [("en", default.en), ("fr", default.fr)]
        .into_iter()
        .map(|(language, (subject, body))| match overrides.iter().find(|o| o.0 == language) {
            Some((_, subject, body, at)) => Variant {
                language,
                subject: subject.clone(),
                body: body.clone(),
                overridden: true,
                updated_at: Some(*at),
            },
            None => {
                Variant { language, subject: subject.into(), body: body.into(), overridden: false, updated_at: None }
            }
        })
        .collect();
    Ok(Template { name: default.name, category: default.category, sample_data: sample(default), variants })
}

fn sample(default: &defaults::Default) -> Value {
    let mut data = (default.sample)();
    data["name"] = json!("Marie Côté");
    data["school"] = json!(SCHOOL);
    data
}

fn find(name: &str) -> ApiResult<&'static defaults::Default> {
    defaults::find(name).ok_or(ApiError::NotFound)
}

/// Every template with its English and French text (admin).
#[utoipa::path(get, path = "/v1/templates", tag = "messaging", security(("bearer" = [])),
    responses((status = 200, body = inline(Page<Template>)), (status = 401), (status = 403)))]
async fn list_templates(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
) -> ApiResult<Json<Page<Template>>> {
    let mut items = Vec::new();
    for default in TEMPLATES {
        items.push(view(&state, default).await?);
    }
    Ok(Json(Page { items, next_cursor: None }))
}

/// One template (admin).
#[utoipa::path(get, path = "/v1/templates/{name}", tag = "messaging", security(("bearer" = [])),
    responses((status = 200, body = Template), (status = 401), (status = 403), (status = 404)))]
async fn get_template(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Path(name): Path<String>,
) -> ApiResult<Json<Template>> {
    Ok(Json(view(&state, find(&name)?).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateOverride {
    /// `en` or `fr`.
    language: String,
    /// minijinja syntax, e.g. `Invoice {{ number }}`.
    subject: String,
    body: String,
}

/// Overrides one language of a template (admin). It must render with the sample data, or
/// the engine's error comes back as 422.
#[utoipa::path(put, path = "/v1/templates/{name}", tag = "messaging", request_body = TemplateOverride, security(("bearer" = [])),
    responses((status = 200, body = Template), (status = 401), (status = 403), (status = 404), (status = 422)))]
async fn put_template(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(name): Path<String>,
    Json(input): Json<TemplateOverride>,
) -> ApiResult<Json<Template>> {
    let default = find(&name)?;
    let mut errors = Errors::default();
    errors.choice::<Language>("language", &input.language);
    if input.subject.trim().is_empty() || input.subject.len() > 300 {
        errors.add("subject", "must be 1 to 300 characters");
    }
    if input.body.trim().is_empty() || input.body.len() > 20_000 {
        errors.add("body", "must be 1 to 20000 characters");
    }
    errors.into_result()?;
    if let Err((field, error)) = render(&input.subject, &input.body, &sample(default)) {
        return Err(ApiError::invalid(field, format!("does not render with the sample data: {error}")));
    }
    const SQL: &str = "INSERT INTO templates (name, language, subject, body, updated_by, updated_at) \
        VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name, language) DO UPDATE SET subject = excluded.subject, \
        body = excluded.body, updated_by = excluded.updated_by, updated_at = excluded.updated_at";
    let mut tx = state.db.begin().await?;
    on_tx!(&mut tx, conn => sqlx::query(SQL).bind(default.name).bind(&input.language).bind(&input.subject)
        .bind(&input.body).bind(admin.id).bind(Utc::now()).execute(&mut **conn).await.map(|_| ()))?;
    let event = AuditEvent::new("template.updated").by(&admin).subject("template", default.name);
    audit::record_tx(&mut tx, event.details(json!({"language": input.language}))).await?;
    tx.commit().await?;
    Ok(Json(view(&state, default).await?))
}

/// Restores the built-in text in both languages (admin).
#[utoipa::path(delete, path = "/v1/templates/{name}", tag = "messaging", security(("bearer" = [])),
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
async fn reset_template(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let default = find(&name)?;
    let mut tx = state.db.begin().await?;
    on_tx!(&mut tx, conn => sqlx::query("DELETE FROM templates WHERE name = $1").bind(default.name)
        .execute(&mut **conn).await.map(|_| ()))?;
    audit::record_tx(&mut tx, AuditEvent::new("template.reset").by(&admin).subject("template", default.name)).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_renders_with_its_sample_in_both_languages() {
        for default in TEMPLATES {
            for (subject, body) in [default.en, default.fr] {
                let rendered = render(subject, body, &sample(default));
                assert!(rendered.is_ok(), "{} does not render: {rendered:?}", default.name);
            }
        }
    }

    #[test]
    fn unknown_variables_and_syntax_errors_are_reported() {
        let (field, error) = render("Hi {{ nobody }}", "x", &json!({})).unwrap_err();
        assert_eq!(field, "subject");
        assert!(error.contains("undefined"), "{error}");
        let (field, _) = render("ok", "{% if %}", &json!({})).unwrap_err();
        assert_eq!(field, "body");
    }
}
