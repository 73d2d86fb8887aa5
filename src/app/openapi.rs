//! What every operation of the OpenAPI document must say, applied once after the routes are
//! gathered: its path parameters, and the error answers the shared plumbing can give to any
//! request (malformed input, authentication, size and type limits, validation, the general
//! rate limit, timeouts). Route annotations then only list what is particular to them.

use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Required};

pub fn document_common_answers(api: &mut OpenApi) {
    for (path, item) in api.paths.paths.iter_mut() {
        let names: Vec<&str> =
            path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
            &mut item.trace,
        ];
        // The GoTrue surface answers errors in GoTrue's own JSON shape, not problem+json.
        let gotrue = path.starts_with("/auth/v1/");
        for operation in operations.into_iter().flatten() {
            declare_path_parameters(operation, &names);
            declare_common_answers(operation, !names.is_empty(), gotrue);
        }
    }
}

fn declare_path_parameters(operation: &mut Operation, names: &[&str]) {
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    for name in names {
        let declared = parameters
            .iter()
            .any(|p| matches!(p, RefOr::T(p) if p.name == *name && p.parameter_in == ParameterIn::Path));
        if declared {
            continue;
        }
        let mut schema = ObjectBuilder::new().schema_type(Type::String);
        if *name == "id" {
            schema =
                schema.format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Uuid)));
        }
        let parameter: Parameter = ParameterBuilder::new()
            .name(*name)
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .schema(Some(schema))
            .build();
        parameters.push(RefOr::T(parameter));
    }
}

fn declare_common_answers(operation: &mut Operation, has_path_parameters: bool, gotrue: bool) {
    let has_body = operation.request_body.is_some();
    let has_parameters = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let mut answers = vec![
        ("400", "Malformed request: JSON syntax, query string, header or path segment"),
        ("429", "Over the request rate limit; see `Retry-After`"),
        ("503", "Timed out, or a service it needs is unavailable"),
    ];
    if secured {
        answers.push(("401", "No valid bearer token"));
    }
    if has_path_parameters {
        answers.push(("404", "Not found, or not visible to this user"));
    }
    if has_body {
        answers.push(("413", "The body is larger than the configured limit"));
        answers.push(("415", "The body is not `application/json`"));
    }
    if has_body || has_parameters {
        answers.push(("422", "Invalid input; `errors` names each field"));
    }
    let responses = &mut operation.responses.responses;
    for (status, description) in answers {
        let answer = if gotrue { gotrue_error(description) } else { problem(description) };
        responses.entry(status.to_owned()).or_insert_with(|| RefOr::T(answer));
    }
}

fn problem(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
        )
        .build()
}

/// `{code, error_code, msg}`, as supabase-js expects.
fn gotrue_error(description: &str) -> Response {
    let schema = ObjectBuilder::new()
        .property("code", ObjectBuilder::new().schema_type(Type::Integer))
        .property("error_code", ObjectBuilder::new().schema_type(Type::String))
        .property("msg", ObjectBuilder::new().schema_type(Type::String));
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(schema)).build())
        .build()
}
