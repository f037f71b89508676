//! Expression text from ASTs: conditions, updates and projections built in code (from the
//! legacy parameters) written back as DynamoDB's expression language, every attribute name and
//! value a placeholder (`#n0`, `:v0`), so that they travel and are checked as any expression
//! is. Parsing the text gives the AST back (checked over the expression corpus).

use super::{Condition, Operand, Path, PathElement, SetOperand, SetValue, Update};
use crate::value::AttributeValue;

/// Expression text being written, with the placeholders it defines.
#[derive(Debug, Default)]
pub struct Unparser {
    /// ExpressionAttributeNames: (`#n0`, name).
    pub names: Vec<(String, String)>,
    /// ExpressionAttributeValues: (`:v0`, value).
    pub values: Vec<(String, AttributeValue)>,
}

/// Binding strength: NOT over AND over OR.
fn precedence(condition: &Condition) -> u8 {
    match condition {
        Condition::Or(..) => 1,
        Condition::And(..) => 2,
        Condition::Not(..) => 3,
        _ => 4,
    }
}

impl Unparser {
    fn name(&mut self, name: &str) -> String {
        if let Some((placeholder, _)) = self.names.iter().find(|(_, known)| known == name) {
            return placeholder.clone();
        }
        let placeholder = format!("#n{}", self.names.len());
        self.names.push((placeholder.clone(), name.to_string()));
        placeholder
    }

    fn value(&mut self, value: &AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.push((placeholder.clone(), value.clone()));
        placeholder
    }

    pub fn path(&mut self, path: &Path) -> String {
        let mut text = String::new();
        for (i, element) in path.0.iter().enumerate() {
            match element {
                PathElement::Name(name) => {
                    if i > 0 {
                        text.push('.');
                    }
                    text += &self.name(name);
                }
                PathElement::Index(index) => text += &format!("[{index}]"),
            }
        }
        text
    }

    /// A ProjectionExpression of `paths`.
    pub fn projection(&mut self, paths: &[Path]) -> String {
        paths.iter().map(|path| self.path(path)).collect::<Vec<_>>().join(", ")
    }

    fn operand(&mut self, operand: &Operand) -> String {
        match operand {
            Operand::Path(path) => self.path(path),
            Operand::Value(value) => self.value(value),
            Operand::Size(path) => format!("size({})", self.path(path)),
        }
    }

    /// `child` as an operand of a connective binding at `strength` (`right`: its right side,
    /// where an equal strength needs parentheses to keep the tree's shape).
    fn part(&mut self, child: &Condition, strength: u8, right: bool) -> String {
        let text = self.condition(child);
        let inner = precedence(child);
        if inner < strength || (right && inner == strength) {
            format!("({text})")
        } else {
            text
        }
    }

    /// A condition (ConditionExpression, FilterExpression or KeyConditionExpression).
    pub fn condition(&mut self, condition: &Condition) -> String {
        match condition {
            Condition::Compare(left, comparator, right) => {
                format!("{} {} {}", self.operand(left), comparator.symbol(), self.operand(right))
            }
            Condition::Between(operand, low, high) => {
                format!("{} BETWEEN {} AND {}", self.operand(operand), self.operand(low), self.operand(high))
            }
            Condition::In(operand, list) => {
                let operand = self.operand(operand);
                let list: Vec<String> = list.iter().map(|item| self.operand(item)).collect();
                format!("{operand} IN ({})", list.join(", "))
            }
            Condition::Exists(path) => format!("attribute_exists({})", self.path(path)),
            Condition::NotExists(path) => format!("attribute_not_exists({})", self.path(path)),
            Condition::Type(path, type_name) => {
                let path = self.path(path);
                format!("attribute_type({path}, {})", self.value(&AttributeValue::S(type_name.clone())))
            }
            Condition::BeginsWith(left, right) => {
                format!("begins_with({}, {})", self.operand(left), self.operand(right))
            }
            Condition::Contains(left, right) => format!("contains({}, {})", self.operand(left), self.operand(right)),
            Condition::And(left, right) => format!("{} AND {}", self.part(left, 2, false), self.part(right, 2, true)),
            Condition::Or(left, right) => format!("{} OR {}", self.part(left, 1, false), self.part(right, 1, true)),
            Condition::Not(inner) => format!("NOT {}", self.part(inner, 3, true)),
        }
    }

    fn set_operand(&mut self, operand: &SetOperand) -> String {
        match operand {
            SetOperand::Path(path) => self.path(path),
            SetOperand::Value(value) => self.value(value),
            SetOperand::IfNotExists(path, fallback) => {
                let path = self.path(path);
                format!("if_not_exists({path}, {})", self.set_operand(fallback))
            }
            SetOperand::ListAppend(left, right) => {
                let left = self.set_operand(left);
                format!("list_append({left}, {})", self.set_operand(right))
            }
        }
    }

    /// An UpdateExpression.
    pub fn update(&mut self, update: &Update) -> String {
        let mut clauses = Vec::new();
        if !update.set.is_empty() {
            let actions: Vec<String> = update
                .set
                .iter()
                .map(|(path, value)| {
                    let path = self.path(path);
                    let value = match value {
                        SetValue::Operand(operand) => self.set_operand(operand),
                        SetValue::Plus(left, right) => {
                            format!("{} + {}", self.set_operand(left), self.set_operand(right))
                        }
                        SetValue::Minus(left, right) => {
                            format!("{} - {}", self.set_operand(left), self.set_operand(right))
                        }
                    };
                    format!("{path} = {value}")
                })
                .collect();
            clauses.push(format!("SET {}", actions.join(", ")));
        }
        if !update.remove.is_empty() {
            clauses.push(format!("REMOVE {}", self.projection(&update.remove)));
        }
        for (keyword, actions) in [("ADD", &update.add), ("DELETE", &update.delete)] {
            if !actions.is_empty() {
                let actions: Vec<String> =
                    actions.iter().map(|(path, value)| format!("{} {}", self.path(path), self.value(value))).collect();
                clauses.push(format!("{keyword} {}", actions.join(", ")));
            }
        }
        clauses.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::expr::{parse_condition, parse_update, Placeholders};

    fn reparse_condition(condition: &Condition) -> Condition {
        let mut unparser = Unparser::default();
        let text = unparser.condition(condition);
        let names: HashMap<_, _> = unparser.names.into_iter().collect();
        let values: HashMap<_, _> = unparser.values.into_iter().collect();
        let mut placeholders = Placeholders::new(&names, &values);
        let parsed = parse_condition(&text, &mut placeholders).unwrap_or_else(|error| panic!("{text}: {error}"));
        assert_eq!(placeholders.check_all_used(), Ok(()), "{text}");
        parsed
    }

    #[test]
    fn conditions_keep_their_shape() {
        let names = HashMap::from([("#a".to_string(), "a".to_string()), ("#b".to_string(), "size".to_string())]);
        let values = HashMap::from([(":x".to_string(), AttributeValue::S("x".into()))]);
        for text in [
            "#a = :x",
            "#a = :x OR #b <> :x AND NOT #a < :x",
            "(#a = :x OR #b = :x) AND #a.c[2].d BETWEEN :x AND :x",
            "#a = :x AND (#b = :x AND #a = :x)",
            "#a = :x OR (#b = :x OR #a = :x)",
            "NOT (#a = :x OR #b = :x)",
            "NOT NOT attribute_exists(#a)",
            "size(#a) IN (:x, :x, :x) AND begins_with(#b, :x) AND contains(#a, :x)",
            "attribute_type(#a, :x) OR attribute_not_exists(#b[0])",
        ] {
            let values = if text.contains("attribute_type") {
                HashMap::from([(":x".to_string(), AttributeValue::S("SS".into()))])
            } else {
                values.clone()
            };
            let mut placeholders = Placeholders::new(&names, &values);
            let condition = parse_condition(text, &mut placeholders).unwrap_or_else(|error| panic!("{text}: {error}"));
            assert_eq!(reparse_condition(&condition), condition, "{text}");
        }
    }

    #[test]
    fn updates_keep_their_shape() {
        let names = HashMap::from([("#a".to_string(), "a".to_string()), ("#b".to_string(), "b".to_string())]);
        let values = HashMap::from([
            (":n".to_string(), AttributeValue::N(crate::Number::from(1))),
            (":l".to_string(), AttributeValue::L(vec![])),
            (":s".to_string(), AttributeValue::Ss(["x".to_string()].into_iter().collect())),
        ]);
        let text = "SET #a = #a + :n, #b.c = list_append(if_not_exists(#b.c, :l), :l), #a2 = :n - #a REMOVE #r[1], #q.d ADD #n :n DELETE #s :s";
        let names = names
            .into_iter()
            .chain(
                [("#a2", "a2"), ("#n", "n"), ("#s", "s"), ("#r", "r"), ("#q", "q")]
                    .map(|(placeholder, name)| (placeholder.into(), name.into())),
            )
            .collect();
        let mut placeholders = Placeholders::new(&names, &values);
        let update = parse_update(text, &mut placeholders).unwrap();
        let mut unparser = Unparser::default();
        let written = unparser.update(&update);
        let names: HashMap<_, _> = unparser.names.into_iter().collect();
        let values: HashMap<_, _> = unparser.values.into_iter().collect();
        let mut placeholders = Placeholders::new(&names, &values);
        assert_eq!(parse_update(&written, &mut placeholders).unwrap(), update, "{written}");
    }
}
