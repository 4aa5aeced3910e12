//! `/whoami`: the caller's token name and role, so that a client such as the
//! dashboard can show what the token may do without trying a write.

use super::auth::Principal;
use super::openapi::Resource;
use axum::Json;
use serde_json::{json, Value};

/// The token this request was made with: its name and role (`admin` or `viewer`).
#[utoipa::path(get, path = "/whoami", tag = "tokens",
    responses((status = 200, description = "`{name, role}`", body = Resource)))]
pub async fn whoami(who: Principal) -> Json<Value> {
    Json(json!({"name": who.name, "role": who.role.as_str()}))
}
