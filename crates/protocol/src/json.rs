//! Strict JSON: the only way documents enter this crate.
//!
//! Two parsers that disagree about a document are how signed-what-you-saw schemes break, so
//! input that standard parsers read differently is refused outright: duplicate object keys
//! (first-wins vs last-wins), integers beyond ±(2^53−1) (JavaScript and many JSON libraries
//! round them, and RFC 8785 serialises them rounded, so two amounts would hash alike), overlong
//! documents and deep nesting. Typed documents must also round-trip: re-serialising the parsed
//! value must give back the input value, so no field is silently dropped, defaulted or
//! normalised between what is shown, what is hashed and what is signed.

use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserializer, Serialize};
use serde_json::{Map, Number, Value};

use crate::error::ParseError;

/// Largest integer every IEEE-754 double reader represents exactly.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Size limits for one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted document, in bytes.
    pub max_bytes: usize,
    /// Deepest accepted nesting of arrays and objects (the top level is depth 1).
    pub max_depth: usize,
}

impl Limits {
    /// Limits for a pending action or a presented tool call: 256 KiB, 32 levels.
    pub const ACTION: Self = Self {
        max_bytes: 256 * 1024,
        max_depth: 32,
    };
    /// Limits for a grant payload: 64 KiB, 32 levels.
    pub const GRANT: Self = Self {
        max_bytes: 64 * 1024,
        max_depth: 32,
    };
    /// Limits for an approver registry document: 4 MiB, 16 levels.
    pub const REGISTRY: Self = Self {
        max_bytes: 4 * 1024 * 1024,
        max_depth: 16,
    };
}

/// Parses `bytes` into a JSON value, refusing anything ambiguous (see the module docs).
pub fn parse_value(bytes: &[u8], limits: Limits) -> Result<Value, ParseError> {
    if bytes.len() > limits.max_bytes {
        return Err(ParseError::TooLarge {
            limit: limits.max_bytes,
            actual: bytes.len(),
        });
    }
    let failure = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // Our own depth accounting replaces serde_json's fixed recursion limit of 128.
    let seed = StrictSeed {
        depth: 1,
        limits,
        failure: &failure,
    };
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(value) => Ok(value),
        Err(err) => Err(failure
            .into_inner()
            .unwrap_or_else(|| ParseError::Json(err.to_string()))),
    }
}

/// Parses a typed document strictly: [`parse_value`], then the schema (types use
/// `deny_unknown_fields`), then the round-trip check.
pub fn from_slice<T: DeserializeOwned + Serialize>(
    bytes: &[u8],
    limits: Limits,
) -> Result<T, ParseError> {
    from_value(&parse_value(bytes, limits)?)
}

/// The schema and round-trip steps of [`from_slice`], for a value that was parsed strictly.
pub fn from_value<T: DeserializeOwned + Serialize>(value: &Value) -> Result<T, ParseError> {
    let typed: T = T::deserialize(value).map_err(|e| ParseError::Schema(e.to_string()))?;
    let back = serde_json::to_value(&typed).map_err(|e| ParseError::Schema(e.to_string()))?;
    if let Some(path) = first_difference(value, &back, String::new()) {
        return Err(ParseError::NotCanonical(format!(
            "`{path}` would not survive re-encoding (null for an absent member, or a default \
             spelled out)"
        )));
    }
    Ok(typed)
}

/// The schema step of [`from_value`] alone, for documents whose every byte is covered by a
/// signature and a hash computed over the received form (grant claims): re-encoding can then
/// change nothing that was signed, and the round trip would only cost time.
pub fn schema_only<T: DeserializeOwned>(value: &Value) -> Result<T, ParseError> {
    T::deserialize(value).map_err(|e| ParseError::Schema(e.to_string()))
}

/// Path of the first place where two values differ, if any.
fn first_difference(a: &Value, b: &Value, path: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (key, xv) in x {
                let sub = format!("{path}/{key}");
                match y.get(key) {
                    Some(yv) => {
                        if let Some(p) = first_difference(xv, yv, sub) {
                            return Some(p);
                        }
                    }
                    None => return Some(sub),
                }
            }
            y.keys()
                .find(|k| !x.contains_key(*k))
                .map(|k| format!("{path}/{k}"))
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (xv, yv))| first_difference(xv, yv, format!("{path}/{i}"))),
        _ if a == b => None,
        _ => Some(if path.is_empty() {
            "/".to_owned()
        } else {
            path
        }),
    }
}

struct StrictSeed<'a> {
    depth: usize,
    limits: Limits,
    failure: &'a RefCell<Option<ParseError>>,
}

impl StrictSeed<'_> {
    fn fail<E: serde::de::Error>(&self, err: ParseError) -> E {
        let msg = err.to_string();
        *self.failure.borrow_mut() = Some(err);
        E::custom(msg)
    }

    fn child(&self) -> Self {
        Self {
            depth: self.depth + 1,
            limits: self.limits,
            failure: self.failure,
        }
    }

    fn enter<E: serde::de::Error>(&self) -> Result<(), E> {
        if self.depth > self.limits.max_depth {
            return Err(self.fail(ParseError::TooDeep {
                limit: self.limits.max_depth,
            }));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        if v.unsigned_abs() > MAX_SAFE_INTEGER {
            return Err(self.fail(ParseError::InexactNumber {
                number: v.to_string(),
            }));
        }
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        if v > MAX_SAFE_INTEGER {
            return Err(self.fail(ParseError::InexactNumber {
                number: v.to_string(),
            }));
        }
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self.child())? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(self.fail(ParseError::DuplicateKey { key }));
            }
            let value = map.next_value_seed(self.child())?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_bytes: 1024,
        max_depth: 4,
    };

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let err = parse_value(br#"{"a":{"b":1,"b":2}}"#, L).unwrap_err();
        assert_eq!(err, ParseError::DuplicateKey { key: "b".into() });
    }

    #[test]
    fn unsafe_integers_are_refused_and_safe_ones_kept() {
        assert!(parse_value(b"[9007199254740991,-9007199254740991]", L).is_ok());
        for n in [
            "9007199254740992",
            "-9007199254740992",
            "18446744073709551615",
        ] {
            let err = parse_value(n.as_bytes(), L).unwrap_err();
            assert!(
                matches!(err, ParseError::InexactNumber { .. }),
                "{n}: {err:?}"
            );
        }
        assert!(
            parse_value(b"1e30", L).is_ok(),
            "floats are exact by construction"
        );
    }

    #[test]
    fn depth_and_size_limits_hold() {
        assert!(parse_value(b"[[[[1]]]]", L).is_ok());
        assert_eq!(
            parse_value(b"[[[[[1]]]]]", L),
            Err(ParseError::TooDeep { limit: 4 })
        );
        let big = vec![b' '; 1025];
        assert_eq!(
            parse_value(&big, L),
            Err(ParseError::TooLarge {
                limit: 1024,
                actual: 1025
            })
        );
    }

    #[test]
    fn trailing_garbage_is_malformed() {
        assert!(matches!(parse_value(b"{} {}", L), Err(ParseError::Json(_))));
    }

    #[test]
    fn round_trip_check_names_the_field() {
        #[derive(serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct T {
            #[serde(skip_serializing_if = "Option::is_none")]
            a: Option<u8>,
        }
        assert!(from_slice::<T>(br#"{"a":1}"#, L).is_ok());
        let err = from_slice::<T>(br#"{"a":null}"#, L).err().unwrap();
        assert!(
            matches!(&err, ParseError::NotCanonical(m) if m.contains("/a")),
            "{err}"
        );
        let err = from_slice::<T>(br#"{"b":1}"#, L).err().unwrap();
        assert!(matches!(err, ParseError::Schema(_)));
    }
}
