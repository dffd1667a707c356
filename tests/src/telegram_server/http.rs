//! The HTTP face of the test Bot API: one fallback handler that checks the token, reads the
//! parameters (query, JSON, form or multipart, as Telegram accepts), applies an injected fault,
//! runs the method and records the call.

use super::methods::{self, ApiError, Params};
use super::{BotCall, Fault, Shared};
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Largest body read (Telegram's own upload limit for photos is 10 MB).
const BODY_LIMIT: usize = 20 << 20;

pub(super) async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let at = std::time::Instant::now();
    let delay = shared.lock().delay;
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let Some((token, method)) = route(req.uri().path()) else {
        return envelope(&Err(ApiError::new(404, "Not Found")));
    };
    let query = req.uri().query().unwrap_or("").to_string();
    let params = if token == shared.token {
        read_params(req, &query).await
    } else {
        // What Telegram answers for a revoked or mistyped token.
        Err(ApiError::new(401, "Unauthorized"))
    };
    let (params, result) = match params {
        Err(e) => (Params::default(), Err(e)),
        Ok(params) => {
            if let Some(fault) = take_fault(&shared, &method) {
                return record_fault(&shared, &method, &params, fault, at);
            }
            let result = methods::run(&shared, &method, &params).await;
            (params, result)
        }
    };
    record(&shared, &method, &params, &result, at);
    envelope(&result)
}

/// `/bot<token>/<method>` → (token, method).
fn route(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/bot")?;
    let (token, method) = rest.split_once('/')?;
    (!method.is_empty() && !method.contains('/')).then(|| (token.to_string(), method.to_string()))
}

async fn read_params(req: Request, query: &str) -> Result<Params, ApiError> {
    let mut params = Params::default();
    form_pairs(query, &mut params.map);
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        read_multipart(req, &mut params).await?;
        return Ok(params);
    }
    let body = axum::body::to_bytes(req.into_body(), BODY_LIMIT)
        .await
        .map_err(|_| ApiError::bad("request body is too big"))?;
    if content_type.starts_with("application/json") && !body.is_empty() {
        let fields: Map<String, Value> =
            serde_json::from_slice(&body).map_err(|_| ApiError::bad("can't parse JSON object"))?;
        params.map.extend(fields);
    } else {
        form_pairs(&String::from_utf8_lossy(&body), &mut params.map);
    }
    Ok(params)
}

async fn read_multipart(req: Request, params: &mut Params) -> Result<(), ApiError> {
    let bad = |_| ApiError::bad("can't parse multipart/form-data");
    let mut form = Multipart::from_request(req, &())
        .await
        .map_err(|_| ApiError::bad("can't parse multipart/form-data"))?;
    while let Some(field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or("").to_string();
        let is_file = field.file_name().is_some();
        let bytes = field.bytes().await.map_err(bad)?;
        if is_file {
            params.files.insert(name, bytes.to_vec());
        } else {
            let text = String::from_utf8_lossy(&bytes).to_string();
            params.map.insert(name, Value::String(text));
        }
    }
    Ok(())
}

/// `a=1&b=x+y` into `map` (values as strings, as a form sends them).
fn form_pairs(text: &str, map: &mut Map<String, Value>) {
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            urlencoding::decode(&s.replace('+', " "))
                .map(|c| c.into_owned())
                .unwrap_or_else(|_| s.to_string())
        };
        map.insert(decode(k), Value::String(decode(v)));
    }
}

fn take_fault(shared: &Shared, method: &str) -> Option<Fault> {
    shared.lock().faults.get_mut(method)?.pop_front()
}

fn record_fault(
    shared: &Shared,
    method: &str,
    params: &Params,
    fault: Fault,
    at: std::time::Instant,
) -> Response {
    let error = match fault {
        Fault::RetryAfter(s) => ApiError {
            status: 429,
            description: format!("Too Many Requests: retry after {s}"),
            retry_after: Some(s),
        },
        Fault::Status(500) => ApiError::new(500, "Internal Server Error"),
        Fault::Status(status) => ApiError::new(status, "Bad Gateway"),
    };
    let result = Err(error);
    record(shared, method, params, &result, at);
    if fault == Fault::Status(502) {
        // The real Bot API's proxy answers a 502 with its own HTML page, not Telegram's JSON.
        let page = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
                    <center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n\
                    </body>\r\n</html>\r\n";
        return (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/html")],
            page,
        )
            .into_response();
    }
    envelope(&result)
}

fn record(
    shared: &Shared,
    method: &str,
    params: &Params,
    result: &Result<Value, ApiError>,
    at: std::time::Instant,
) {
    let text = params.str("text").or_else(|| params.str("caption"));
    let call = BotCall {
        method: method.to_string(),
        chat_id: params.str("chat_id"),
        text,
        parse_mode: params.str("parse_mode"),
        reply_markup: params.json("reply_markup"),
        photo_len: params.files.get("photo").map(Vec::len),
        photo: params.files.get("photo").cloned(),
        params: params.map.clone(),
        status: result.as_ref().map_or_else(|e| e.status, |_| 200),
        description: result.as_ref().err().map(|e| e.description.clone()),
        at,
    };
    shared.lock().calls.push(call);
}

/// Telegram's answer envelope.
fn envelope(result: &Result<Value, ApiError>) -> Response {
    let (status, body) = match result {
        Ok(v) => (200, json!({"ok": true, "result": v})),
        Err(e) => {
            let mut body =
                json!({"ok": false, "error_code": e.status, "description": e.description});
            if let Some(s) = e.retry_after {
                body["parameters"] = json!({"retry_after": s});
            }
            (e.status, body)
        }
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
