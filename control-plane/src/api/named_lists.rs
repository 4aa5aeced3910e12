//! Create, replace and remove for the config's named lists (`upstreams`,
//! `routes`): the same edit of the newest config whatever the list.

use super::auth::Principal;
use super::error::ApiError;
use super::writes::{
    answer, change_request, document, items, name_of, named, position, rebuild, WriteParams,
};
use super::AppState;
use crate::configs::ChangeError;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;

/// One named list of the config, and how its changes are audited.
pub struct Kind {
    /// The config field, e.g. `upstreams`.
    pub key: &'static str,
    /// One element, e.g. `upstream`.
    pub noun: &'static str,
    /// Audit actions.
    pub create: &'static str,
    /// Audit action of a replace.
    pub put: &'static str,
    /// Audit action of a removal.
    pub delete: &'static str,
}

/// Upstreams.
pub const UPSTREAMS: Kind = Kind {
    key: "upstreams",
    noun: "upstream",
    create: "upstream.create",
    put: "upstream.put",
    delete: "upstream.delete",
};

/// Routes.
pub const ROUTES: Kind = Kind {
    key: "routes",
    noun: "route",
    create: "route.create",
    put: "route.put",
    delete: "route.delete",
};

impl Kind {
    /// The error for a name that is not in the list.
    pub fn missing(&self, name: &str) -> ChangeError {
        ChangeError::NotFound(format!("{} {name:?} not found", self.noun))
    }
}

/// Adds `body` at the end of the list; 409 when its name is taken.
pub async fn create(
    kind: &Kind,
    state: &AppState,
    who: &Principal,
    headers: &HeaderMap,
    params: &WriteParams,
    body: Value,
) -> Result<Response, ApiError> {
    let name = name_of(&body, kind.noun)?;
    let req = change_request(who, headers, params, kind.create, &name)?;
    let outcome = state
        .configs
        .change(req, |cur| {
            let mut doc = document(cur)?;
            let list = items(&mut doc, kind.key)?;
            if position(list, &name).is_some() {
                return Err(ChangeError::Exists(format!(
                    "{} {name:?} exists",
                    kind.noun
                )));
            }
            list.push(body);
            rebuild(&doc)
        })
        .await?;
    Ok(answer(outcome, StatusCode::CREATED))
}

/// Replaces the element `name` in place, or adds it at the end (201).
pub async fn replace(
    kind: &Kind,
    state: &AppState,
    who: &Principal,
    headers: &HeaderMap,
    name: &str,
    params: &WriteParams,
    body: Value,
) -> Result<Response, ApiError> {
    let body = named(body, name, kind.noun)?;
    let req = change_request(who, headers, params, kind.put, name)?;
    let mut created = false;
    let outcome = state
        .configs
        .change(req, |cur| {
            let mut doc = document(cur)?;
            let list = items(&mut doc, kind.key)?;
            match position(list, name) {
                Some(i) => list[i] = body,
                None => {
                    created = true;
                    list.push(body)
                }
            }
            rebuild(&doc)
        })
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(answer(outcome, status))
}

/// Removes the element `name`; 404 when there is none.
pub async fn remove(
    kind: &Kind,
    state: &AppState,
    who: &Principal,
    headers: &HeaderMap,
    name: &str,
    params: &WriteParams,
) -> Result<Response, ApiError> {
    let req = change_request(who, headers, params, kind.delete, name)?;
    let outcome = state
        .configs
        .change(req, |cur| {
            let mut doc = document(cur)?;
            let list = items(&mut doc, kind.key)?;
            let i = position(list, name).ok_or_else(|| kind.missing(name))?;
            list.remove(i);
            rebuild(&doc)
        })
        .await?;
    Ok(answer(outcome, StatusCode::OK))
}
