//! Any query's rows as JSON objects, on either backend: the access-request export lists whole
//! records of many tables without a struct per table. Column types are read from the row
//! itself (PostgreSQL's declared types; SQLite's storage class of each value).

use serde_json::{Map, Value};
use sqlx::{Column, Row, TypeInfo, ValueRef};
use uuid::Uuid;

use crate::db::Db;
use crate::error::DomainResult;

/// Columns never exported: secrets and internal tokens.
const WITHHELD: &[&str] = &["password_hash", "calendar_token", "token_hash", "secret", "user_metadata"];

/// Runs `sql` with `id` bound to `$1` and returns each row as a JSON object.
pub async fn rows_as_json(db: &Db, sql: &'static str, id: Uuid) -> DomainResult<Vec<Value>> {
    Ok(match db {
        Db::Sqlite(pool) => {
            let rows = sqlx::query(sql).bind(id).fetch_all(pool).await?;
            rows.iter().map(sqlite_row).collect()
        }
        Db::Postgres(pool) => {
            let rows = sqlx::query(sql).bind(id).fetch_all(pool).await?;
            rows.iter().map(postgres_row).collect()
        }
    })
}

fn sqlite_row(row: &sqlx::sqlite::SqliteRow) -> Value {
    let mut object = Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        if WITHHELD.contains(&column.name()) {
            continue;
        }
        let kind =
            row.try_get_raw(i).map(|v| if v.is_null() { "NULL".to_owned() } else { v.type_info().name().to_owned() });
        let value = match kind.as_deref() {
            Ok("INTEGER") => row.try_get::<i64, _>(i).map(Value::from).unwrap_or(Value::Null),
            Ok("REAL") => row.try_get::<f64, _>(i).map(Value::from).unwrap_or(Value::Null),
            Ok("BLOB") => match row.try_get::<Vec<u8>, _>(i) {
                Ok(bytes) => Uuid::from_slice(&bytes).map(|u| Value::from(u.to_string())).unwrap_or(Value::Null),
                Err(_) => Value::Null,
            },
            Ok("TEXT") => row.try_get::<String, _>(i).map(text).unwrap_or(Value::Null),
            _ => Value::Null,
        };
        object.insert(column.name().to_owned(), value);
    }
    Value::Object(object)
}

fn postgres_row(row: &sqlx::postgres::PgRow) -> Value {
    use chrono::{DateTime, NaiveDate, Utc};
    let mut object = Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        if WITHHELD.contains(&column.name()) {
            continue;
        }
        let value = match column.type_info().name() {
            "UUID" => row.try_get::<Option<Uuid>, _>(i).ok().flatten().map(|u| Value::from(u.to_string())),
            "TIMESTAMPTZ" => {
                row.try_get::<Option<DateTime<Utc>>, _>(i).ok().flatten().map(|t| Value::from(t.to_rfc3339()))
            }
            "DATE" => row.try_get::<Option<NaiveDate>, _>(i).ok().flatten().map(|d| Value::from(d.to_string())),
            "INT8" => row.try_get::<Option<i64>, _>(i).ok().flatten().map(Value::from),
            "INT4" => row.try_get::<Option<i32>, _>(i).ok().flatten().map(Value::from),
            "INT2" => row.try_get::<Option<i16>, _>(i).ok().flatten().map(Value::from),
            "BOOL" => row.try_get::<Option<bool>, _>(i).ok().flatten().map(Value::from),
            "FLOAT8" | "FLOAT4" => row.try_get::<Option<f64>, _>(i).ok().flatten().map(Value::from),
            "JSONB" | "JSON" => row.try_get::<Option<sqlx::types::Json<Value>>, _>(i).ok().flatten().map(|j| j.0),
            _ => row.try_get::<Option<String>, _>(i).ok().flatten().map(Value::from),
        };
        object.insert(column.name().to_owned(), value.unwrap_or(Value::Null));
    }
    Value::Object(object)
}

/// SQLite keeps JSON as text: give it back as JSON when it is an object or array.
fn text(s: String) -> Value {
    let looks_like_json = (s.starts_with('{') && s.ends_with('}')) || (s.starts_with('[') && s.ends_with(']'));
    if looks_like_json && let Ok(parsed) = serde_json::from_str(&s) {
        return parsed;
    }
    Value::from(s)
}
