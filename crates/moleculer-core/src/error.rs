//! The wire error, `MoleculerError`, that travels in RESPONSE packets and round-trips with Node.js.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// An error as Moleculer puts it on the wire: name, message, code, type, data, retryable and the
/// node it came from.
///
/// One constructor per kind mirrors Moleculer's error classes, with the same names, codes and
/// types, so a Node.js peer recreates the same class. The details are boxed so that
/// `Result<Value, MoleculerError>` stays small on the call path; fields are read through
/// `Deref` (`err.code`, `err.message`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MoleculerError(Box<ErrorDetails>);

impl std::ops::Deref for MoleculerError {
    type Target = ErrorDetails;
    fn deref(&self) -> &ErrorDetails {
        &self.0
    }
}

impl std::ops::DerefMut for MoleculerError {
    fn deref_mut(&mut self) -> &mut ErrorDetails {
        &mut self.0
    }
}

impl std::fmt::Display for MoleculerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

impl std::error::Error for MoleculerError {}

/// The fields of a [`MoleculerError`]. Field order follows Moleculer's `extractPlainError`,
/// so the JSON looks the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetails {
    /// Error class name, e.g. `ServiceNotFoundError`.
    pub name: String,
    /// Human-readable message.
    pub message: String,
    /// The node where the error was raised.
    #[serde(rename = "nodeID", default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Numeric code (HTTP-like: 4xx caller errors, 5xx server errors).
    #[serde(default = "default_code")]
    pub code: u16,
    /// Machine-readable type, e.g. `SERVICE_NOT_FOUND`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Whether a retry may succeed (Moleculer's retry middleware acts on this).
    #[serde(default)]
    pub retryable: bool,
    /// Stack trace text, when the peer sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// Structured details.
    #[serde(default)]
    pub data: Value,
}

fn default_code() -> u16 {
    500
}

/// Well-known error class names, as Moleculer's `errors.js` exports them.
pub mod names {
    /// Base class.
    pub const MOLECULER_ERROR: &str = "MoleculerError";
    /// A retryable error.
    pub const RETRYABLE: &str = "MoleculerRetryableError";
    /// A server-side error (retryable).
    pub const SERVER: &str = "MoleculerServerError";
    /// A caller-side error.
    pub const CLIENT: &str = "MoleculerClientError";
    /// No endpoint registered for the action.
    pub const SERVICE_NOT_FOUND: &str = "ServiceNotFoundError";
    /// Endpoints exist but none is available.
    pub const SERVICE_NOT_AVAILABLE: &str = "ServiceNotAvailableError";
    /// The request timed out.
    pub const REQUEST_TIMEOUT: &str = "RequestTimeoutError";
    /// The request was skipped because the distributed deadline had passed.
    pub const REQUEST_SKIPPED: &str = "RequestSkippedError";
    /// The request was rejected because the target node left.
    pub const REQUEST_REJECTED: &str = "RequestRejectedError";
    /// Too many pending requests.
    pub const QUEUE_IS_FULL: &str = "QueueIsFullError";
    /// Params failed validation.
    pub const VALIDATION: &str = "ValidationError";
    /// Nested call depth exceeded `maxCallLevel`.
    pub const MAX_CALL_LEVEL: &str = "MaxCallLevelError";
    /// Bad service definition.
    pub const SERVICE_SCHEMA: &str = "ServiceSchemaError";
    /// Bad broker options.
    pub const BROKER_OPTIONS: &str = "BrokerOptionsError";
    /// Stopping took too long.
    pub const GRACEFUL_STOP_TIMEOUT: &str = "GracefulStopTimeoutError";
    /// A packet came with another protocol version.
    pub const PROTOCOL_VERSION_MISMATCH: &str = "ProtocolVersionMismatchError";
    /// A packet could not be decoded.
    pub const INVALID_PACKET_DATA: &str = "InvalidPacketDataError";
    /// The transporter is not connected.
    pub const BROKER_DISCONNECTED: &str = "BrokerDisconnectedError";
}

impl MoleculerError {
    /// A generic `MoleculerError` (not retryable).
    pub fn new(
        message: impl Into<String>,
        code: u16,
        kind: impl Into<String>,
        data: Value,
    ) -> Self {
        Self::build(
            names::MOLECULER_ERROR,
            message,
            code,
            Some(kind.into()),
            false,
            data,
        )
    }

    /// A caller-side `MoleculerClientError` (not retryable), code 400 unless given.
    pub fn client(
        message: impl Into<String>,
        code: u16,
        kind: impl Into<String>,
        data: Value,
    ) -> Self {
        Self::build(names::CLIENT, message, code, Some(kind.into()), false, data)
    }

    /// A `MoleculerServerError` (retryable).
    pub fn server(
        message: impl Into<String>,
        code: u16,
        kind: impl Into<String>,
        data: Value,
    ) -> Self {
        Self::build(names::SERVER, message, code, Some(kind.into()), true, data)
    }

    /// A `MoleculerRetryableError`.
    pub fn retryable(
        message: impl Into<String>,
        code: u16,
        kind: impl Into<String>,
        data: Value,
    ) -> Self {
        Self::build(
            names::RETRYABLE,
            message,
            code,
            Some(kind.into()),
            true,
            data,
        )
    }

    /// `ServiceNotFoundError` (404): nothing is registered under `action` (on `node_id`, when given).
    pub fn service_not_found(action: &str, node_id: Option<&str>) -> Self {
        let message = match node_id {
            Some(node) => format!("Service '{action}' is not found on '{node}' node."),
            None => format!("Service '{action}' is not found."),
        };
        Self::build(
            names::SERVICE_NOT_FOUND,
            message,
            404,
            Some("SERVICE_NOT_FOUND".into()),
            true,
            json!({ "action": action, "nodeID": node_id }),
        )
    }

    /// `ServiceNotAvailableError` (404): endpoints exist but none can take the call.
    pub fn service_not_available(action: &str, node_id: Option<&str>) -> Self {
        let message = match node_id {
            Some(node) => format!("Service '{action}' is not available on '{node}' node."),
            None => format!("Service '{action}' is not available."),
        };
        Self::build(
            names::SERVICE_NOT_AVAILABLE,
            message,
            404,
            Some("SERVICE_NOT_AVAILABLE".into()),
            true,
            json!({ "action": action, "nodeID": node_id }),
        )
    }

    /// `RequestTimeoutError` (504, retryable).
    pub fn request_timeout(action: &str, node_id: &str) -> Self {
        Self::build(
            names::REQUEST_TIMEOUT,
            format!("Request is timed out when call '{action}' action on '{node_id}' node."),
            504,
            Some("REQUEST_TIMEOUT".into()),
            true,
            json!({ "action": action, "nodeID": node_id }),
        )
    }

    /// `RequestSkippedError` (514, not retryable): the parent's deadline has already passed.
    pub fn request_skipped(action: &str, node_id: &str) -> Self {
        Self::build(
            names::REQUEST_SKIPPED,
            format!("Calling '{action}' is skipped because timeout reached on '{node_id}' node."),
            514,
            Some("REQUEST_SKIPPED".into()),
            false,
            json!({ "action": action, "nodeID": node_id }),
        )
    }

    /// `RequestRejectedError` (503, retryable): the target node left while the request was pending.
    pub fn request_rejected(action: &str, node_id: &str) -> Self {
        Self::build(
            names::REQUEST_REJECTED,
            format!("Request is rejected when call '{action}' action on '{node_id}' node."),
            503,
            Some("REQUEST_REJECTED".into()),
            true,
            json!({ "action": action, "nodeID": node_id }),
        )
    }

    /// `QueueIsFullError` (429, retryable).
    pub fn queue_is_full(action: &str, node_id: &str, size: usize, limit: usize) -> Self {
        Self::build(
            names::QUEUE_IS_FULL,
            format!("Queue is full. Request '{action}' action on '{node_id}' node is rejected."),
            429,
            Some("QUEUE_FULL".into()),
            true,
            json!({ "action": action, "nodeID": node_id, "size": size, "limit": limit }),
        )
    }

    /// `ValidationError` (422, not retryable) with Moleculer's `VALIDATION_ERROR` type.
    pub fn validation(message: impl Into<String>, data: Value) -> Self {
        Self::build(
            names::VALIDATION,
            message,
            422,
            Some("VALIDATION_ERROR".into()),
            false,
            data,
        )
    }

    /// `MaxCallLevelError` (500, not retryable).
    pub fn max_call_level(node_id: &str, level: u32) -> Self {
        Self::build(
            names::MAX_CALL_LEVEL,
            format!("Request level is reached the limit ({level}) on '{node_id}' node."),
            500,
            Some("MAX_CALL_LEVEL".into()),
            false,
            json!({ "level": level, "nodeID": node_id }),
        )
    }

    /// `ServiceSchemaError` (500): a service definition is invalid.
    pub fn service_schema(message: impl Into<String>, data: Value) -> Self {
        Self::build(
            names::SERVICE_SCHEMA,
            message,
            500,
            Some("SERVICE_SCHEMA_ERROR".into()),
            false,
            data,
        )
    }

    /// `BrokerOptionsError` (500): broker options are invalid.
    pub fn broker_options(message: impl Into<String>, data: Value) -> Self {
        Self::build(
            names::BROKER_OPTIONS,
            message,
            500,
            Some("BROKER_OPTIONS_ERROR".into()),
            false,
            data,
        )
    }

    /// `BrokerDisconnectedError` (502, retryable): the transporter is not connected.
    pub fn broker_disconnected() -> Self {
        Self::build(
            names::BROKER_DISCONNECTED,
            "The broker's transporter has disconnected. Please try again when a connection is reestablished.",
            502,
            Some("BAD_GATEWAY".into()),
            true,
            Value::Null,
        )
    }

    /// `ProtocolVersionMismatchError` (500): a packet came with another protocol version.
    pub fn protocol_version_mismatch(node_id: &str, actual: &str, received: &str) -> Self {
        Self::build(
            names::PROTOCOL_VERSION_MISMATCH,
            "Protocol version mismatch.",
            500,
            Some("PROTOCOL_VERSION_MISMATCH".into()),
            false,
            json!({ "nodeID": node_id, "actual": actual, "received": received }),
        )
    }

    /// `InvalidPacketDataError` (500): a packet could not be decoded.
    pub fn invalid_packet_data(kind: &str, reason: impl Into<String>) -> Self {
        Self::build(
            names::INVALID_PACKET_DATA,
            "Invalid packet data.",
            500,
            Some("INVALID_PACKET_DATA".into()),
            false,
            json!({ "type": kind, "reason": reason.into() }),
        )
    }

    /// `BrokerDisconnectedError` (502, retryable) for a request that could not be sent to
    /// `node_id`, keeping the transporter's reason.
    pub fn request_not_sent(action: &str, node_id: &str, reason: &str) -> Self {
        Self::build(
            names::BROKER_DISCONNECTED,
            format!("Cannot send the request for '{action}' to '{node_id}' node: {reason}."),
            502,
            Some("BAD_GATEWAY".into()),
            true,
            json!({ "action": action, "nodeID": node_id, "reason": reason }),
        )
    }

    /// `MoleculerServerError` (500, `WAITFOR_SERVICES`): `wait_for_services` ran out of time.
    /// `missing` lists the services that never appeared.
    pub fn services_wait_timeout(services: &[&str], missing: &[&str]) -> Self {
        let statuses: Vec<Value> = services
            .iter()
            .map(|n| json!({ "name": n, "available": !missing.contains(n) }))
            .collect();
        Self::build(
            names::SERVER,
            format!(
                "Services waiting is timed out. Missing: {}",
                missing.join(", ")
            ),
            500,
            Some("WAITFOR_SERVICES".into()),
            true,
            json!({ "services": services, "statuses": statuses }),
        )
    }

    /// `MoleculerServerError` (500, `BAD_REPLY`): a reply does not fit the type the caller
    /// asked for.
    pub fn bad_reply(action: &str, reason: impl std::fmt::Display) -> Self {
        Self::build(
            names::SERVER,
            format!("reply of '{action}' does not fit the expected type: {reason}"),
            500,
            Some("BAD_REPLY".into()),
            true,
            Value::Null,
        )
    }

    /// `MoleculerServerError` (500, `SERIALIZATION_ERROR`): a handler's result cannot be
    /// turned into JSON.
    pub fn unserializable_result(reason: impl std::fmt::Display) -> Self {
        Self::build(
            names::SERVER,
            format!("the handler's result cannot be serialized: {reason}"),
            500,
            Some("SERIALIZATION_ERROR".into()),
            true,
            Value::Null,
        )
    }

    /// `MoleculerError` (500, `UNKNOWN`): a RESPONSE said it failed but carried no error.
    pub fn unknown_remote_error() -> Self {
        Self::build(
            names::MOLECULER_ERROR,
            "Unknown error from the remote node",
            500,
            Some("UNKNOWN".into()),
            false,
            Value::Null,
        )
    }

    /// `MoleculerClientError` (400, `STREAMS_NOT_SUPPORTED`): a streamed request reached a
    /// node that does not take streams.
    pub fn streams_not_supported(action: &str) -> Self {
        Self::build(
            names::CLIENT,
            "Streams are not supported by this node",
            400,
            Some("STREAMS_NOT_SUPPORTED".into()),
            false,
            json!({ "action": action }),
        )
    }

    /// A handler panicked; the caller gets this instead of a hang.
    pub fn handler_panicked(action: &str, node_id: &str, panic: &str) -> Self {
        Self::build(
            names::SERVER,
            format!("Handler of '{action}' panicked on '{node_id}' node: {panic}"),
            500,
            Some("HANDLER_PANICKED".into()),
            false,
            json!({ "action": action, "nodeID": node_id }),
        )
    }

    /// Sets the node the error came from (builder style).
    #[must_use]
    pub fn with_node_id(mut self, node_id: impl Into<String>) -> Self {
        self.node_id = Some(node_id.into());
        self
    }

    /// The machine-readable type, or `""`.
    pub fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or("")
    }

    fn build(
        name: &str,
        message: impl Into<String>,
        code: u16,
        kind: Option<String>,
        retryable: bool,
        data: Value,
    ) -> Self {
        Self(Box::new(ErrorDetails {
            name: name.to_owned(),
            message: message.into(),
            node_id: None,
            code,
            kind,
            retryable,
            stack: None,
            data,
        }))
    }
}

/// Shorthand for results whose error is a [`MoleculerError`].
pub type Result<T, E = MoleculerError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_types_and_retryable_match_moleculer() {
        let cases = [
            (
                MoleculerError::service_not_found("a.b", None),
                "ServiceNotFoundError",
                404,
                "SERVICE_NOT_FOUND",
                true,
            ),
            (
                MoleculerError::service_not_available("a.b", None),
                "ServiceNotAvailableError",
                404,
                "SERVICE_NOT_AVAILABLE",
                true,
            ),
            (
                MoleculerError::request_timeout("a.b", "n"),
                "RequestTimeoutError",
                504,
                "REQUEST_TIMEOUT",
                true,
            ),
            (
                MoleculerError::request_rejected("a.b", "n"),
                "RequestRejectedError",
                503,
                "REQUEST_REJECTED",
                true,
            ),
            (
                MoleculerError::request_skipped("a.b", "n"),
                "RequestSkippedError",
                514,
                "REQUEST_SKIPPED",
                false,
            ),
            (
                MoleculerError::max_call_level("n", 3),
                "MaxCallLevelError",
                500,
                "MAX_CALL_LEVEL",
                false,
            ),
            (
                MoleculerError::validation("bad", Value::Null),
                "ValidationError",
                422,
                "VALIDATION_ERROR",
                false,
            ),
            (
                MoleculerError::queue_is_full("a.b", "n", 5, 5),
                "QueueIsFullError",
                429,
                "QUEUE_FULL",
                true,
            ),
            (
                MoleculerError::broker_disconnected(),
                "BrokerDisconnectedError",
                502,
                "BAD_GATEWAY",
                true,
            ),
        ];
        for (err, name, code, kind, retryable) in cases {
            assert_eq!(err.name, name);
            assert_eq!(err.code, code, "{name}");
            assert_eq!(err.kind(), kind, "{name}");
            assert_eq!(err.retryable, retryable, "{name}");
        }
    }

    #[test]
    fn message_names_the_action() {
        let err = MoleculerError::service_not_found("posts.find", None);
        assert_eq!(err.message, "Service 'posts.find' is not found.");
        let err = MoleculerError::service_not_found("posts.find", Some("n2"));
        assert!(err.message.contains("'n2'"));
    }

    #[test]
    fn serde_round_trip_keeps_every_field() {
        let err =
            MoleculerError::client("bad", 422, "BAD_THING", json!({"f": 1})).with_node_id("node-b");
        let text = serde_json::to_string(&err).unwrap();
        assert_eq!(
            text,
            r#"{"name":"MoleculerClientError","message":"bad","nodeID":"node-b","code":422,"type":"BAD_THING","retryable":false,"data":{"f":1}}"#
        );
        let back: MoleculerError = serde_json::from_str(&text).unwrap();
        assert_eq!(back, err);
    }

    #[test]
    fn decodes_a_node_js_error_with_extra_fields() {
        let js = r#"{"name":"MoleculerClientError","message":"bad","nodeID":"node-b","code":422,
            "type":"BAD_THING","retryable":false,"stack":"Error: bad\n at x","data":{"f":1},"extra":true}"#;
        let err: MoleculerError = serde_json::from_str(js).unwrap();
        assert_eq!(err.code, 422);
        assert_eq!(err.node_id.as_deref(), Some("node-b"));
        assert!(err.stack.as_deref().unwrap().starts_with("Error: bad"));
    }

    #[test]
    fn missing_fields_take_defaults() {
        let err: MoleculerError =
            serde_json::from_str(r#"{"name":"Error","message":"x"}"#).unwrap();
        assert_eq!(err.code, 500);
        assert!(!err.retryable);
        assert_eq!(err.data, Value::Null);
    }
}
