//! The tools' JSON Schemas, derived with schemars from the types that parse a call's arguments
//! and that render its answer, so a schema cannot disagree with what the tool does.

use std::sync::Arc;

use rmcp::model::JsonObject;
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use schemars::transform::{Transform, transform_subschemas};
use serde_json::Value;

/// What a tool accepts: the deserialize contract, JSON Schema 2020-12 as MCP asks.
pub(super) fn input_schema<T: JsonSchema>() -> Arc<JsonObject> {
    schema_object::<T>(SchemaSettings::draft2020_12())
}

/// What a tool answers: the serialize contract, without the wrapper type's own title and
/// description, which are noise to a model.
pub(super) fn output_schema<T: JsonSchema>() -> Arc<JsonObject> {
    let mut schema = schema_object::<T>(SchemaSettings::draft2020_12().for_serialize());
    let obj = Arc::make_mut(&mut schema);
    obj.remove("title");
    obj.remove("description");
    schema
}

fn schema_object<T: JsonSchema>(settings: SchemaSettings) -> Arc<JsonObject> {
    let schema = settings
        .with_transform(StandardFormats)
        .into_generator()
        .into_root_schema_for::<T>();
    match schema.to_value() {
        Value::Object(obj) => Arc::new(obj),
        // `true`/`false` schemas are never generated for a struct; an empty object says the
        // same as `true`.
        _ => Arc::new(JsonObject::new()),
    }
}

/// The `format`s JSON Schema 2020-12 defines. schemars adds others for Rust's numbers
/// (`uint32`, `uint64`, `int64`, `double`, …); clients warn on them or reject them, so they
/// go, and an unsigned integer keeps its meaning as a `minimum` (and a `maximum` where one
/// fits a JSON number exactly).
const STANDARD_FORMATS: [&str; 19] = [
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

#[derive(Clone)]
struct StandardFormats;

impl Transform for StandardFormats {
    fn transform(&mut self, schema: &mut schemars::Schema) {
        transform_subschemas(self, schema);
        let Some(obj) = schema.as_object_mut() else {
            return;
        };
        let Some(format) = obj
            .get("format")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return;
        };
        if STANDARD_FORMATS.contains(&format.as_str()) {
            return;
        }
        obj.remove("format");
        let bounds: Option<(i64, Option<i64>)> = match format.as_str() {
            "uint8" => Some((0, Some(u8::MAX.into()))),
            "uint16" => Some((0, Some(u16::MAX.into()))),
            "uint32" => Some((0, Some(u32::MAX.into()))),
            "uint64" | "uint" | "uint128" => Some((0, None)),
            "int8" => Some((i8::MIN.into(), Some(i8::MAX.into()))),
            "int16" => Some((i16::MIN.into(), Some(i16::MAX.into()))),
            "int32" => Some((i32::MIN.into(), Some(i32::MAX.into()))),
            _ => None,
        };
        if let Some((min, max)) = bounds {
            obj.entry("minimum").or_insert(Value::from(min));
            if let Some(max) = max {
                obj.entry("maximum").or_insert(Value::from(max));
            }
        }
    }
}
