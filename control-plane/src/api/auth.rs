//! Bearer-token authentication and the admin/viewer roles.
//!
//! Reads (GET, HEAD) need any valid token; everything else needs an admin
//! token. There is no anonymous access: before the first token exists every
//! request is refused.

use super::error::ApiError;
use super::AppState;
use crate::store::Role;
use crate::tokens;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{header, request::Parts, Method};
use axum::middleware::Next;
use axum::response::Response;
use std::net::SocketAddr;

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Token name (`local` while the API is open).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The client's address.
    pub remote_addr: String,
}

fn bearer(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let Some(v) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| ApiError::Unauthorized)?;
    let (scheme, token) = v.split_once(' ').ok_or(ApiError::Unauthorized)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::Unauthorized);
    }
    Ok(Some(token.trim()))
}

/// Resolves the caller, checks its role against the method, and records it
/// in the request for handlers.
pub async fn authenticate(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let remote_addr = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let store = state.configs.store();
    let principal = match bearer(&parts)? {
        Some(token) => {
            let record = store
                .token(&tokens::hash(token))
                .await?
                .ok_or(ApiError::Unauthorized)?;
            Principal {
                name: record.name,
                role: record.role,
                remote_addr,
            }
        }
        None => return Err(ApiError::Unauthorized),
    };
    if principal.role == Role::Node {
        return Err(ApiError::NodeToken);
    }
    let reads = parts.method == Method::GET || parts.method == Method::HEAD;
    if !reads && principal.role != Role::Admin {
        return Err(ApiError::Forbidden);
    }
    parts.extensions.insert(principal);
    Ok(next.run(Request::from_parts(parts, body)).await)
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(ApiError::Unauthorized)
    }
}
