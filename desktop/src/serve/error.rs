//! OpenAI-style error answers: `{"error":{"message","type","param","code"}}`
//! with the HTTP status that goes with them.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use edgeloop_core::Error as CoreError;

/// A refused or failed request, as the client will see it.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// `invalid_request_error` for the client's mistakes, `server_error` for ours.
    pub kind: &'static str,
    pub message: String,
    /// The request field at fault (`messages[2].role`), if one is.
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A 400 naming the field at fault.
    pub fn invalid(
        param: impl Into<String>,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
            param: Some(param.into()),
            code: Some(code),
        }
    }

    /// A client error with another status and no field named.
    pub fn request(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind: "invalid_request_error",
            message: message.into(),
            param: None,
            code: Some(code),
        }
    }

    /// Something on the server's side (a full queue, a failed generation).
    pub fn server(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind: "server_error",
            message: message.into(),
            param: None,
            code: Some(code),
        }
    }

    /// The `{"error":{...}}` object (also sent as an event inside a stream).
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, self.body().to_string()).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// The answer to a core error met while generating: the caller's mistakes
/// (context, sampling values, prompts the template refuses) are 400s, the
/// rest 500s.
pub fn from_core(e: CoreError) -> ApiError {
    match e {
        CoreError::ContextOverflow { .. } => {
            ApiError::invalid("max_tokens", "context_length_exceeded", e.to_string())
        }
        CoreError::ZeroMaxTokens => ApiError::invalid("max_tokens", "invalid_value", e.to_string()),
        CoreError::Sampler(s) => ApiError::invalid(s.name, "invalid_value", s.to_string()),
        CoreError::EmptyPrompt | CoreError::Tokenizer(_) => {
            ApiError::invalid("messages", "invalid_value", e.to_string())
        }
        CoreError::MemoryBudget { .. } | CoreError::Invalid(_) => ApiError {
            param: None,
            ..ApiError::invalid("", "invalid_value", e.to_string())
        },
        other => {
            log::error!("generation failed: {other}");
            ApiError::server(
                StatusCode::INTERNAL_SERVER_ERROR,
                "generation_failed",
                format!("generation failed: {other}"),
            )
        }
    }
}
