//! Ids parsed at the edge: a malformed id is `INVALID_ARGUMENT` naming the field.

use tonic::Status;
use uuid::Uuid;

/// Parses a UUID from a request field.
pub fn parse_uuid(field: &str, value: &str) -> Result<Uuid, Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is missing")));
    }
    Uuid::parse_str(value)
        .map_err(|_| Status::invalid_argument(format!("{field} `{value}` is not a UUID")))
}

/// Parses an optional UUID filter: empty means "not set".
pub fn parse_optional_uuid(field: &str, value: &str) -> Result<Option<Uuid>, Status> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse_uuid(field, value).map(Some)
    }
}
