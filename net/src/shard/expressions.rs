//! A request's expressions parsed on the coordinating core: a read's `ReadPlan` (key
//! condition, filter, projection, Select) and a write's condition and update.

use std::collections::HashMap;

use tessera_engine::expr::{self, Condition, KeyCondition, Path, Placeholders, Update};
use tessera_engine::{AttributeValue, Item, KeySchema};
use tessera_wire::{Expressions, ReadExpressions, Response, Select, WireError};

use super::{engine_error, invalid};
use crate::messages;

/// A read's parsed expressions (ReadExpressions).
pub(super) struct ReadPlan {
    pub(super) key: Option<KeyCondition>,
    pub(super) filter: Option<Condition>,
    projection: Option<Vec<Path>>,
    count_only: bool,
}

impl ReadPlan {
    /// `schema` is the table's key schema for a Query (whose key condition it parses).
    pub(super) fn parse(read: &ReadExpressions, schema: Option<&KeySchema>) -> Result<ReadPlan, WireError> {
        let (names, values) = placeholder_maps(&read.names, &read.values)?;
        let mut placeholders = Placeholders::new(&names, &values);
        let key = match schema {
            Some(schema) => parse_optional(read.key_condition.as_deref(), |text| {
                expr::parse_key_condition(text, &mut placeholders, schema)
            })?,
            None => None,
        };
        let filter = parse_optional(read.filter.as_deref(), |text| expr::parse_filter(text, &mut placeholders))?;
        let projection =
            parse_optional(read.projection.as_deref(), |text| expr::parse_projection(text, &mut placeholders))?;
        match (read.select, &projection) {
            (Select::SpecificAttributes, None) => {
                return Err(invalid(
                    "Must specify the AttributesToGet or ProjectionExpression when choosing to get SPECIFIC_ATTRIBUTES",
                ))
            }
            (Select::Count, Some(_)) => {
                return Err(invalid("Cannot specify the ProjectionExpression when choosing to get only the Count"))
            }
            _ => {}
        }
        placeholders.check_all_used().map_err(invalid)?;
        Ok(ReadPlan { key, filter, projection, count_only: read.select == Select::Count })
    }

    /// The plan of a read by key (GetItem, BatchGetItem), which takes a projection only.
    pub(super) fn projection_only(read: &ReadExpressions, operation: &str) -> Result<ReadPlan, WireError> {
        if read.filter.is_some() || read.key_condition.is_some() || read.select != Select::AllAttributes {
            return Err(invalid(format!("{operation} takes a ProjectionExpression only")));
        }
        ReadPlan::parse(read, None)
    }

    pub(super) fn project(&self, item: Item) -> Item {
        match &self.projection {
            Some(paths) => expr::project(&item, paths),
            None => item,
        }
    }

    /// A Query or Scan page: the items read, filtered (after the page was read, as DynamoDB
    /// does: ScannedCount counts them all), projected, or only counted.
    pub(super) fn page(&self, items: Vec<Item>, last_evaluated_key: Option<Item>) -> Response {
        let scanned_count = items.len() as u32;
        let matched: Vec<Item> =
            items.into_iter().filter(|item| self.filter.as_ref().is_none_or(|filter| filter.evaluate(item))).collect();
        let count = matched.len() as u32;
        let items =
            if self.count_only { Vec::new() } else { matched.into_iter().map(|item| self.project(item)).collect() };
        Response::Items { items, scanned_count, count, last_evaluated_key }
    }
}

/// Parses a write's ConditionExpression and, for UpdateItem, its UpdateExpression, with the
/// request's placeholders, all of which must be used.
pub(super) fn parse_write_expressions(
    expressions: &Expressions,
    update: Option<&str>,
) -> Result<(Option<Condition>, Option<Update>), WireError> {
    let (names, values) = placeholder_maps(&expressions.names, &expressions.values)?;
    let mut placeholders = Placeholders::new(&names, &values);
    let update =
        parse_optional(update.filter(|text| !text.is_empty()), |text| expr::parse_update(text, &mut placeholders))?;
    let condition =
        parse_optional(expressions.condition.as_deref(), |text| expr::parse_condition(text, &mut placeholders))?;
    placeholders.check_all_used().map_err(invalid)?;
    Ok((condition, update))
}

type PlaceholderMaps = (HashMap<String, String>, HashMap<String, AttributeValue>);

/// A request's ExpressionAttributeNames and ExpressionAttributeValues as the parser takes them;
/// each name must be one an item could have (MESSAGES.md 12e, 12f).
fn placeholder_maps(
    names: &[(String, String)],
    values: &[(String, AttributeValue)],
) -> Result<PlaceholderMaps, WireError> {
    for (key, name) in names {
        if name.is_empty() {
            return Err(invalid(messages::empty_placeholder_name(key)));
        }
        tessera_engine::check_name_length(name).map_err(engine_error)?;
    }
    Ok((names.iter().cloned().collect(), values.iter().cloned().collect()))
}

/// Parses an expression the request may leave out; a parse error is a ValidationException.
fn parse_optional<T>(
    text: Option<&str>,
    parse: impl FnOnce(&str) -> Result<T, expr::ExprError>,
) -> Result<Option<T>, WireError> {
    text.map(parse).transpose().map_err(|error| invalid(error.to_string()))
}
