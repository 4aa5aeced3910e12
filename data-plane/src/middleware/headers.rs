//! `request_headers` and `response_headers`: headers removed, set and added.

use super::{Flow, Middleware, RequestParts};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use isame_proto::config::{HeaderEdits, HeaderField};

/// Header edits, parsed once. Each name appears in only one of the three
/// lists (validation sees to it), so the order they run in changes nothing.
#[derive(Debug)]
pub struct Edits {
    remove: Box<[HeaderName]>,
    set: Box<[(HeaderName, HeaderValue)]>,
    add: Box<[(HeaderName, HeaderValue)]>,
}

impl Edits {
    fn new(e: &HeaderEdits) -> Result<Self, String> {
        let name = |n: &str| {
            HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| format!("{n:?} is not a valid header name"))
        };
        let fields = |list: &[HeaderField]| -> Result<Box<[(HeaderName, HeaderValue)]>, String> {
            list.iter()
                .map(|f| {
                    let value = HeaderValue::from_str(&f.value).map_err(|_| {
                        format!("the value of {} is not a valid header value", f.name)
                    })?;
                    Ok((name(&f.name)?, value))
                })
                .collect()
        };
        Ok(Self {
            remove: e.remove.iter().map(|n| name(n)).collect::<Result<_, _>>()?,
            set: fields(&e.set)?,
            add: fields(&e.add)?,
        })
    }

    /// Removes every value of the `remove` headers, replaces the values of
    /// the `set` ones and appends the `add` ones.
    pub fn apply(&self, h: &mut HeaderMap) {
        for n in &self.remove {
            h.remove(n);
        }
        for (n, v) in &self.set {
            h.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            h.append(n.clone(), v.clone());
        }
    }
}

/// Edits the headers of requests on their way to the backend.
#[derive(Debug)]
pub struct RequestHeaders(Edits);

impl RequestHeaders {
    /// Parses the edits.
    pub fn new(e: &HeaderEdits) -> Result<Self, String> {
        Edits::new(e).map(Self)
    }
}

impl Middleware for RequestHeaders {
    fn on_request(&self, req: &mut RequestParts<'_>) -> Flow {
        self.0.apply(&mut req.head.headers);
        Flow::Continue
    }
}

/// Edits the headers of responses on their way to the client.
#[derive(Debug)]
pub struct ResponseHeaders(Edits);

impl ResponseHeaders {
    /// Parses the edits.
    pub fn new(e: &HeaderEdits) -> Result<Self, String> {
        Edits::new(e).map(Self)
    }
}

impl Middleware for ResponseHeaders {
    fn on_response(&self, headers: &mut HeaderMap) {
        self.0.apply(headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, value: &str) -> HeaderField {
        HeaderField {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn remove_set_and_add() {
        let edits = Edits::new(&HeaderEdits {
            set: vec![field("X-Env", "prod")],
            add: vec![field("x-tag", "b")],
            remove: vec!["X-Debug".into()],
        })
        .expect("valid");
        let mut h = HeaderMap::new();
        h.append("x-env", HeaderValue::from_static("dev"));
        h.append("x-env", HeaderValue::from_static("test"));
        h.append("x-tag", HeaderValue::from_static("a"));
        h.append("x-debug", HeaderValue::from_static("1"));
        h.append("x-debug", HeaderValue::from_static("2"));
        edits.apply(&mut h);
        let all = |n: &str| -> Vec<&str> {
            h.get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap_or("?"))
                .collect()
        };
        assert_eq!(all("x-env"), ["prod"]);
        assert_eq!(all("x-tag"), ["a", "b"]);
        assert!(all("x-debug").is_empty());
    }

    #[test]
    fn invalid_names_and_values_do_not_compile() {
        assert!(Edits::new(&HeaderEdits {
            set: vec![field("X Bad", "x")],
            ..HeaderEdits::default()
        })
        .is_err());
        assert!(Edits::new(&HeaderEdits {
            add: vec![field("x-ok", "a\nb")],
            ..HeaderEdits::default()
        })
        .is_err());
    }
}
