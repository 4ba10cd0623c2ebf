//! JSON Schemas (feature `schema`) for the types whose JSON form is a checked string, so the
//! broker's OpenAPI document is generated from the same Rust types the wire uses.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use crate::action::Timestamp;
use crate::hash::ActionHash;
use crate::spiffe::SpiffeId;

impl JsonSchema for SpiffeId {
    fn schema_name() -> Cow<'static, str> {
        "SpiffeId".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)*$",
            "maxLength": 2048,
            "description": "A SPIFFE ID: spiffe://<trust domain>/<path>"
        })
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339, UTC (ends in Z)"
        })
    }
}

impl JsonSchema for ActionHash {
    fn schema_name() -> Cow<'static, str> {
        "ActionHash".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[A-Za-z0-9_-]{43}$",
            "description": "b64url(SHA-256(JCS({subject, actor, action, resource, context})))"
        })
    }
}
