//! DynamoDB's expression language, pure (no I/O): an expression is parsed once into an AST
//! with its `#name` and `:value` placeholders resolved, then evaluated against any number of
//! items.
//!
//! Built so far: update expressions (SET with `+`, `-`, `if_not_exists`, `list_append`;
//! REMOVE; ADD; DELETE) applied with exact decimal arithmetic, key conditions (for Query),
//! condition and filter expressions, the legacy parameters older SDKs send (`legacy`) (comparators, BETWEEN, IN, AND/OR/NOT,
//! parentheses, `attribute_exists`, `attribute_not_exists`, `attribute_type`, `begins_with`,
//! `contains`, `size`), document paths (`a.b[3].c`), projection expressions, and DynamoDB's
//! checks (reserved words, undefined and unused placeholders, expression size, operator count,
//! operand types of literal values).
//!
//! Semantics that DynamoDB documents loosely, and the choice made here (matching the behaviour
//! of the dynalite emulator, whose tests were written against DynamoDB): an operand that does
//! not resolve (a missing attribute, a path through the wrong type, `size` of a number) makes
//! every comparison false except `<>`, which is true when either side is missing (both too); `NOT` is
//! plain negation. `size` of a string counts its UTF-8 bytes. `((...))` is refused as redundant
//! parentheses, as DynamoDB does.

pub(crate) mod codec;
mod eval;
mod key;
pub mod legacy;
mod lex;
mod parse;
mod reserved;
mod returns;
mod unparse;
mod update;

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use crate::value::AttributeValue;

pub use eval::project;
pub use key::{KeyCondition, SortCondition};
pub use returns::{parse_on_condition_failure, ReturnValues};
pub use unparse::Unparser;
pub use update::{SetOperand, SetValue, Update};

/// Longest expression accepted, in bytes (DynamoDB's 4 KB limit).
pub const EXPRESSION_BYTES_MAX: usize = 4096;
/// Most elements in one document path (DynamoDB's 32 levels of nesting).
pub const PATH_ELEMENTS_MAX: usize = 32;
/// Most operators in one expression (DynamoDB's limit; `parse::operator_count` says what
/// counts).
pub const OPERATORS_MAX: usize = 300;
/// How deep the parser descends: parentheses, NOTs and function calls, one level each. Every
/// expression DynamoDB takes fits (each level but a redundant parenthesis costs an operator,
/// and a NOT with its parenthesis two levels: at most 2 * `OPERATORS_MAX`); deeper ones, which
/// only redundant or unclosed parentheses make, are refused as syntax errors rather than
/// recursing until the executor's stack overflows.
pub const NESTING_LEVELS_MAX: usize = 2 * OPERATORS_MAX + 8;
/// Most operands on the right of `IN`.
pub const IN_OPERANDS_MAX: usize = 100;

/// Why an expression was refused: DynamoDB's `ValidationException`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExprError {
    /// Which expression: "ConditionExpression", "ProjectionExpression", ...; empty for a
    /// legacy parameter (Expected, ScanFilter, ...), whose messages DynamoDB does not prefix.
    pub expression: &'static str,
    /// 1-based character position the error refers to, when there is one (for a client
    /// that wants it: DynamoDB's message does not carry it).
    pub position: Option<usize>,
    pub reason: String,
}

impl ExprError {
    pub(crate) fn new(expression: &'static str, at: usize, reason: impl Into<String>) -> ExprError {
        ExprError { expression, position: Some(at + 1), reason: reason.into() }
    }

    pub(crate) fn whole(expression: &'static str, reason: impl Into<String>) -> ExprError {
        ExprError { expression, position: None, reason: reason.into() }
    }
}

/// DynamoDB's form: `Invalid <expression>: <Reason>`, the reason capitalized as DynamoDB
/// writes it, and without the position (DynamoDB gives none; a syntax error names the text
/// near it instead). A legacy parameter's message is DynamoDB's text as it stands.
impl fmt::Display for ExprError {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.expression.is_empty() {
            return write!(out, "{}", self.reason);
        }
        let mut reason = self.reason.chars();
        let first = reason.next().map(|first| first.to_ascii_uppercase()).map(String::from).unwrap_or_default();
        write!(out, "Invalid {}: {first}{}", self.expression, reason.as_str())
    }
}

impl std::error::Error for ExprError {}

/// One step of a document path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathElement {
    Name(String),
    Index(usize),
}

/// A document path: a top-level attribute name, then map keys and list indexes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Path(pub Vec<PathElement>);

impl fmt::Display for Path {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, element) in self.0.iter().enumerate() {
            match element {
                PathElement::Name(name) if i == 0 => write!(out, "{name}")?,
                PathElement::Name(name) => write!(out, ".{name}")?,
                PathElement::Index(index) => write!(out, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Something a condition compares: an attribute, a literal value, or `size(path)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operand {
    Path(Path),
    Value(AttributeValue),
    Size(Path),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparator {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Comparator {
    pub fn symbol(self) -> &'static str {
        match self {
            Comparator::Eq => "=",
            Comparator::Ne => "<>",
            Comparator::Lt => "<",
            Comparator::Le => "<=",
            Comparator::Gt => ">",
            Comparator::Ge => ">=",
        }
    }
}

/// A parsed condition or filter expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    Compare(Operand, Comparator, Operand),
    Between(Operand, Operand, Operand),
    In(Operand, Vec<Operand>),
    Exists(Path),
    NotExists(Path),
    /// `attribute_type(path, :t)`; the type name is checked at parse time.
    Type(Path, String),
    BeginsWith(Operand, Operand),
    Contains(Operand, Operand),
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
    Not(Box<Condition>),
}

/// The placeholders of one request (`ExpressionAttributeNames`, `ExpressionAttributeValues`),
/// shared by all its expressions, with a record of which were used: DynamoDB refuses a
/// request that defines a placeholder none of its expressions uses (`check_all_used`).
pub struct Placeholders<'a> {
    names: &'a HashMap<String, String>,
    values: &'a HashMap<String, AttributeValue>,
    used_names: BTreeSet<String>,
    used_values: BTreeSet<String>,
}

impl<'a> Placeholders<'a> {
    /// Keys are written with their sigil, as in DynamoDB requests: `#n`, `:v`.
    pub fn new(names: &'a HashMap<String, String>, values: &'a HashMap<String, AttributeValue>) -> Placeholders<'a> {
        Placeholders { names, values, used_names: BTreeSet::new(), used_values: BTreeSet::new() }
    }

    fn name(&mut self, kind: &'static str, at: usize, name: &str) -> Result<String, ExprError> {
        let what = "an expression attribute name used in the document path is not defined; attribute name";
        lookup(self.names, &mut self.used_names, format!("#{name}"), what)
            .map_err(|reason| ExprError::new(kind, at, reason))
    }

    fn value(&mut self, kind: &'static str, at: usize, name: &str) -> Result<AttributeValue, ExprError> {
        let what = "an expression attribute value used in expression is not defined; attribute value";
        lookup(self.values, &mut self.used_values, format!(":{name}"), what)
            .map_err(|reason| ExprError::new(kind, at, reason))
    }

    /// After every expression of the request is parsed: refuses placeholders none used.
    pub fn check_all_used(&self) -> Result<(), String> {
        let unused = |defined: Vec<&String>, used: &BTreeSet<String>| {
            let mut unused: Vec<&str> =
                defined.into_iter().filter(|key| !used.contains(*key)).map(String::as_str).collect();
            unused.sort_unstable();
            unused.join(", ")
        };
        let names = unused(self.names.keys().collect(), &self.used_names);
        if !names.is_empty() {
            return Err(format!("Value provided in ExpressionAttributeNames unused in expressions: keys: {{{names}}}"));
        }
        let values = unused(self.values.keys().collect(), &self.used_values);
        if !values.is_empty() {
            return Err(format!(
                "Value provided in ExpressionAttributeValues unused in expressions: keys: {{{values}}}"
            ));
        }
        Ok(())
    }
}

/// The placeholder `key` from `defined`, recorded as used; `missing` starts the error.
fn lookup<T: Clone>(
    defined: &HashMap<String, T>,
    used: &mut BTreeSet<String>,
    key: String,
    missing: &str,
) -> Result<T, String> {
    let value = defined.get(&key).cloned().ok_or_else(|| format!("{missing}: {key}"))?;
    used.insert(key);
    Ok(value)
}

/// Parses a ConditionExpression.
pub fn parse_condition(text: &str, placeholders: &mut Placeholders<'_>) -> Result<Condition, ExprError> {
    parse::Parser::new("ConditionExpression", text, placeholders)?.condition_expression()
}

/// Parses a FilterExpression (the same language as a condition).
pub fn parse_filter(text: &str, placeholders: &mut Placeholders<'_>) -> Result<Condition, ExprError> {
    parse::Parser::new("FilterExpression", text, placeholders)?.condition_expression()
}

/// Parses an UpdateExpression: SET, REMOVE, ADD and DELETE sections, each at most once.
pub fn parse_update(text: &str, placeholders: &mut Placeholders<'_>) -> Result<Update, ExprError> {
    parse::Parser::new("UpdateExpression", text, placeholders)?.update_expression()
}

/// Parses a KeyConditionExpression for a table whose primary key is `schema`.
pub fn parse_key_condition(
    text: &str,
    placeholders: &mut Placeholders<'_>,
    schema: &crate::key::KeySchema,
) -> Result<KeyCondition, ExprError> {
    let condition = parse::Parser::new("KeyConditionExpression", text, placeholders)?.condition_expression()?;
    key::key_condition(condition, schema, "KeyConditionExpression")
}

/// Parses a ProjectionExpression: document paths separated by commas, none overlapping.
pub fn parse_projection(text: &str, placeholders: &mut Placeholders<'_>) -> Result<Vec<Path>, ExprError> {
    parse::Parser::new("ProjectionExpression", text, placeholders)?.projection_expression()
}

impl Condition {
    /// Whether `item` satisfies the condition (an absent item is an empty one).
    pub fn evaluate(&self, item: &crate::value::Item) -> bool {
        eval::condition(self, item)
    }

    /// The top-level attribute names the condition reads, in the order it names them.
    pub fn attribute_names(&self) -> Vec<&str> {
        fn operand<'c>(operand: &'c Operand, names: &mut Vec<&'c str>) {
            match operand {
                Operand::Path(path) | Operand::Size(path) => top(path, names),
                Operand::Value(_) => {}
            }
        }
        fn top<'c>(path: &'c Path, names: &mut Vec<&'c str>) {
            if let Some(PathElement::Name(name)) = path.0.first() {
                names.push(name);
            }
        }
        fn walk<'c>(condition: &'c Condition, names: &mut Vec<&'c str>) {
            match condition {
                Condition::Compare(left, _, right)
                | Condition::BeginsWith(left, right)
                | Condition::Contains(left, right) => {
                    operand(left, names);
                    operand(right, names);
                }
                Condition::Between(value, low, high) => [value, low, high].into_iter().for_each(|o| operand(o, names)),
                Condition::In(value, list) => std::iter::once(value).chain(list).for_each(|o| operand(o, names)),
                Condition::Exists(path) | Condition::NotExists(path) | Condition::Type(path, _) => top(path, names),
                Condition::And(left, right) | Condition::Or(left, right) => {
                    walk(left, names);
                    walk(right, names);
                }
                Condition::Not(inner) => walk(inner, names),
            }
        }
        let mut names = Vec::new();
        walk(self, &mut names);
        names
    }
}
