//! `ReturnValues` and `ReturnValuesOnConditionCheckFailure`: what a write gives back.

use super::{project, Path};
use crate::value::Item;

/// What a write returns (`ReturnValues`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReturnValues {
    #[default]
    None,
    AllOld,
    UpdatedOld,
    AllNew,
    UpdatedNew,
}

impl ReturnValues {
    /// Parses DynamoDB's name for `operation` ("PutItem", "UpdateItem", "DeleteItem"), which
    /// decides what is allowed: PutItem and DeleteItem take NONE and ALL_OLD only.
    pub fn parse(name: &str, operation: &str) -> Result<ReturnValues, String> {
        let value = match name {
            "NONE" => ReturnValues::None,
            "ALL_OLD" => ReturnValues::AllOld,
            "UPDATED_OLD" => ReturnValues::UpdatedOld,
            "ALL_NEW" => ReturnValues::AllNew,
            "UPDATED_NEW" => ReturnValues::UpdatedNew,
            other => {
                return Err(format!(
                    "1 validation error detected: Value '{other}' at 'returnValues' failed to satisfy constraint: Member must satisfy enum value set: [ALL_NEW, UPDATED_OLD, ALL_OLD, NONE, UPDATED_NEW]"
                ))
            }
        };
        if operation != "UpdateItem" && !matches!(value, ReturnValues::None | ReturnValues::AllOld) {
            return Err(format!("ReturnValues can only be ALL_OLD or NONE for {operation}"));
        }
        Ok(value)
    }

    /// The attributes to return, given the item before and after the write and, for the
    /// UPDATED_ forms, the paths the update wrote or removed. None when nothing is returned.
    pub fn select(self, old: Option<&Item>, new: Option<&Item>, targets: &[Path]) -> Option<Item> {
        let item = match self {
            ReturnValues::None => return None,
            ReturnValues::AllOld => old?.clone(),
            ReturnValues::AllNew => new?.clone(),
            ReturnValues::UpdatedOld => project(old?, targets),
            ReturnValues::UpdatedNew => project(new?, targets),
        };
        (!item.is_empty()).then_some(item)
    }
}

/// Whether a failed condition returns the item as it was (`ReturnValuesOnConditionCheckFailure`).
pub fn parse_on_condition_failure(name: &str) -> Result<bool, String> {
    match name {
        "NONE" => Ok(false),
        "ALL_OLD" => Ok(true),
        other => Err(format!(
            "1 validation error detected: Value '{other}' at 'returnValuesOnConditionCheckFailure' failed to satisfy constraint: Member must satisfy enum value set: [ALL_OLD, NONE]"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_operation_takes_what_dynamodb_allows() {
        assert_eq!(ReturnValues::parse("ALL_OLD", "PutItem"), Ok(ReturnValues::AllOld));
        assert_eq!(ReturnValues::parse("UPDATED_NEW", "UpdateItem"), Ok(ReturnValues::UpdatedNew));
        assert!(ReturnValues::parse("ALL_NEW", "DeleteItem").unwrap_err().contains("ALL_OLD or NONE for DeleteItem"));
        assert!(ReturnValues::parse("SOME", "UpdateItem").unwrap_err().contains("Value 'SOME' at 'returnValues'"));
        assert_eq!(parse_on_condition_failure("ALL_OLD"), Ok(true));
        assert!(parse_on_condition_failure("ALL_NEW").is_err());
    }
}
