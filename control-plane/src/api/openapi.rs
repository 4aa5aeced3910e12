//! The OpenAPI document's shared parts: info, security and the schemas of
//! bodies that handlers build as JSON. Paths come from the handlers'
//! `#[utoipa::path]` attributes, so the document follows the real routes.

use utoipa::openapi::path::{HttpMethod, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::openapi::{ObjectBuilder, Required, Type};
use utoipa::{Modify, OpenApi, ToSchema};

/// The document's fixed parts.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Isame control plane",
        description = "Versioned configuration of Isame data planes. Every write is \
            validated, creates an immutable version and is audited. Reads need a viewer or \
            admin token, writes an admin token (`Authorization: Bearer ...`)."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(ErrorBody, ValidationErrorBody, FieldError, ProblemKind, Change, ApplyResult))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// An error.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// What went wrong.
    error: String,
}

/// A config that failed validation.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ValidationErrorBody {
    /// `invalid config`.
    error: String,
    /// Every problem, with its path.
    errors: Vec<FieldError>,
}

/// One validation problem.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct FieldError {
    /// Where, e.g. `upstreams[0].backends[1].url`.
    path: String,
    /// What is wrong.
    message: String,
    /// `schema`: the document breaks a rule the published JSON Schema
    /// (`GET /api/v1/schema`) states, so an editor using it shows it too;
    /// `rule`: a rule the schema cannot state (across fields, or about
    /// what a value means).
    kind: ProblemKind,
}

/// Which kind of rule a problem breaks.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "snake_case")]
pub enum ProblemKind {
    /// One the published JSON Schema states.
    Schema,
    /// One it cannot state.
    Rule,
}

/// What happened to one thing.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "snake_case")]
pub enum ChangeOp {
    /// It is new.
    Added,
    /// It is gone.
    Removed,
    /// Its value changed.
    Changed,
    /// The order of a list changed.
    Reordered,
}

/// One difference between two configs.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Change {
    /// What happened.
    op: ChangeOp,
    /// Where, e.g. `upstreams[api].backends[http://10.0.0.1:8080].weight`.
    path: String,
    /// The value before (absent for `added`).
    #[schema(value_type = Object, nullable)]
    old: Option<serde_json::Value>,
    /// The value after (absent for `removed`).
    #[schema(value_type = Object, nullable)]
    new: Option<serde_json::Value>,
}

/// The result of a write.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ApplyResult {
    /// The newest version after the write (unchanged for a dry run or a
    /// write that changed nothing).
    version: u64,
    /// Whether a new version was created.
    created: bool,
    /// Whether this was a dry run.
    dry_run: bool,
    /// What changed (or would change).
    changes: Vec<Change>,
}

/// A document in the config model (YAML or JSON): the whole config, an
/// upstream, a backend or a route, as the README's config reference describes.
#[derive(ToSchema)]
#[schema(value_type = Object)]
#[allow(dead_code)]
pub struct Resource(serde_json::Value);

/// Adds the headers every write reads and the answers every operation can give (bad parameters, no token, a
/// viewer writing, a body too large or of the wrong type, a database that
/// does not answer), so that each operation's document is complete.
pub fn complete_operations(doc: &mut utoipa::openapi::OpenApi) {
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    for item in doc.paths.paths.values_mut() {
        let ops = [
            (HttpMethod::Get, &mut item.get),
            (HttpMethod::Put, &mut item.put),
            (HttpMethod::Post, &mut item.post),
            (HttpMethod::Delete, &mut item.delete),
            (HttpMethod::Patch, &mut item.patch),
        ];
        for (method, op) in ops {
            let Some(op) = op.as_mut() else { continue };
            if method != HttpMethod::Get {
                let params = op.parameters.get_or_insert_with(Vec::new);
                for (name, description) in [
                    (
                        "If-Match",
                        "Only change if this version (`\"3\"`) is the newest; `*`: any",
                    ),
                    (
                        "X-Isame-Message",
                        "Why (percent-encoded UTF-8); kept with the version and in the audit log",
                    ),
                ] {
                    if params.iter().any(|p| p.name == name) {
                        continue;
                    }
                    params.push(
                        ParameterBuilder::new()
                            .name(name)
                            .parameter_in(ParameterIn::Header)
                            .required(Required::False)
                            .description(Some(description))
                            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                            .build(),
                    );
                }
            }
            let responses = &mut op.responses.responses;
            let mut add = |code: &str, description: &str| {
                responses
                    .entry(code.to_string())
                    .or_insert_with(|| error(description).into());
            };
            add("400", "Malformed parameters, headers or body");
            add("401", "No valid bearer token");
            add("503", "The database does not answer");
            if method != HttpMethod::Get {
                add("403", "The token may only read");
                add("404", "Nothing to change, or no such resource");
                add("412", "`If-Match` is not the newest version");
                add("413", "Body over the limit");
                add("415", "Body type not JSON or YAML");
                add("422", "The result would be an invalid config");
            } else {
                add("404", "No such resource");
            }
        }
    }
}

/// Operations whose JSON bodies are documents of the config model: the
/// model's own schemas stand in for the generic object there.
/// (method, path, schema, in the request body or in the 200 response).
const MODEL_BODIES: &[(&str, &str, &str, Body)] = &[
    ("put", "/api/v1/config", "Config", Body::Request),
    ("get", "/api/v1/config", "Config", Body::Response),
    ("post", "/api/v1/upstreams", "Upstream", Body::Request),
    (
        "put",
        "/api/v1/upstreams/{name}",
        "UpstreamNamedByPath",
        Body::Request,
    ),
    (
        "get",
        "/api/v1/upstreams/{name}",
        "Upstream",
        Body::Response,
    ),
    (
        "post",
        "/api/v1/upstreams/{name}/backends",
        "Backend",
        Body::Request,
    ),
    ("post", "/api/v1/routes", "Route", Body::Request),
    (
        "put",
        "/api/v1/routes/{name}",
        "RouteNamedByPath",
        Body::Request,
    ),
    ("get", "/api/v1/routes/{name}", "Route", Body::Response),
];

#[derive(Clone, Copy)]
enum Body {
    Request,
    Response,
}

/// The served document: the generated one with the config model's JSON
/// Schema in `components.schemas`, referenced by the bodies that carry
/// config documents, and `GET /api/v1/schema`.
pub fn with_config_schema(doc: &utoipa::openapi::OpenApi) -> serde_json::Value {
    use serde_json::{json, Value};
    let mut v = serde_json::to_value(doc).unwrap_or_else(|_| json!({}));
    if let Some(schemas) = v
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        schemas.extend(isame_proto::config::schema::components());
        // A PUT to `/upstreams/{name}` or `/routes/{name}` takes its name
        // from the path: the body may leave `name` out.
        for kind in ["Upstream", "Route"] {
            if let Some(mut s) = schemas.get(kind).cloned() {
                if let Some(Value::Array(required)) = s.get_mut("required") {
                    required.retain(|r| r != "name");
                }
                schemas.insert(format!("{kind}NamedByPath"), s);
            }
        }
    }
    for (method, path, name, body) in MODEL_BODIES {
        let Some(op) = v
            .get_mut("paths")
            .and_then(|p| p.get_mut(*path))
            .and_then(|p| p.get_mut(*method))
        else {
            continue;
        };
        let content = match body {
            Body::Request => op.pointer_mut("/requestBody/content"),
            Body::Response => op.pointer_mut("/responses/200/content"),
        };
        if let Some(Value::Object(content)) = content {
            for (media, c) in content.iter_mut() {
                // A YAML body is text to the document; its parsed form is the same schema.
                if media.ends_with("json") || matches!(body, Body::Request) {
                    c["schema"] = json!({"$ref": format!("#/components/schemas/{name}")});
                }
            }
        }
    }
    if let Some(paths) = v.get_mut("paths").and_then(Value::as_object_mut) {
        paths.insert(
            "/api/v1/schema".into(),
            json!({"get": {
                "tags": ["config"],
                "summary": "The JSON Schema of a config document",
                "description": "Generated from the config model; editors can use it (`# yaml-language-server: $schema=URL`). Needs no token.",
                "operationId": "schema",
                "security": [],
                "responses": {"200": {
                    "description": "A JSON Schema (draft 2020-12)",
                    "content": {"application/schema+json": {"schema": {"type": "object"}}},
                }},
            }}),
        );
    }
    v
}

/// `GET /api/v1/schema`: the published JSON Schema.
pub async fn schema() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "application/schema+json")],
        isame_proto::config::schema::document_text(),
    )
        .into_response()
}
