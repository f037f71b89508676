//! Recursive-descent parser. Precedence, loosest first: OR, AND, NOT, then parentheses,
//! functions and the predicates (comparators, IN, BETWEEN), which do not chain.

use std::cmp::Ordering;

use super::eval::{order, size};
use super::lex::{tokens, Spanned, Token};
use super::reserved::is_reserved;
use super::update::{SetOperand, SetValue, Update};
use super::{
    Comparator, Condition, ExprError, Operand, Path, PathElement, Placeholders, EXPRESSION_BYTES_MAX, IN_OPERANDS_MAX,
    NESTING_LEVELS_MAX, OPERATORS_MAX, PATH_ELEMENTS_MAX,
};
use crate::value::AttributeValue;

/// Functions that are conditions by themselves.
const CONDITION_FUNCTIONS: [&str; 5] =
    ["attribute_exists", "attribute_not_exists", "attribute_type", "begins_with", "contains"];
/// Type names `attribute_type` accepts.
const TYPE_NAMES: [&str; 10] = ["S", "SS", "N", "NS", "B", "BS", "BOOL", "NULL", "L", "M"];

pub(crate) struct Parser<'p, 'a, 't> {
    kind: &'static str,
    tokens: Vec<Spanned>,
    next: usize,
    /// Levels descended (`NESTING_LEVELS_MAX`).
    depth: usize,
    /// The expression as written (at most 4 KB), which a syntax error quotes around its token.
    text: &'t str,
    placeholders: &'p mut Placeholders<'a>,
}

impl<'p, 'a, 't> Parser<'p, 'a, 't> {
    pub(crate) fn new(
        kind: &'static str,
        text: &'t str,
        placeholders: &'p mut Placeholders<'a>,
    ) -> Result<Parser<'p, 'a, 't>, ExprError> {
        if text.len() > EXPRESSION_BYTES_MAX {
            return Err(ExprError::whole(
                kind,
                format!("expression size has exceeded the maximum allowed size; expression size: {}", text.len()),
            ));
        }
        if text.trim().is_empty() {
            return Err(ExprError::whole(kind, "The expression can not be empty;"));
        }
        let tokens = tokens(kind, text)?;
        let operators = operator_count(kind, &tokens);
        if operators > OPERATORS_MAX {
            return Err(ExprError::whole(
                kind,
                format!("The expression contains too many operators; operator count: {operators}"),
            ));
        }
        Ok(Parser { kind, tokens, next: 0, depth: 0, text, placeholders })
    }

    pub(crate) fn condition_expression(mut self) -> Result<Condition, ExprError> {
        let condition = self.or()?;
        self.finish()?;
        Ok(condition)
    }

    pub(crate) fn projection_expression(mut self) -> Result<Vec<Path>, ExprError> {
        let mut paths = vec![(self.at(), self.path()?)];
        while self.eat_symbol(",") {
            paths.push((self.at(), self.path()?));
        }
        self.finish()?;
        self.check_disjoint(&paths)?;
        Ok(paths.into_iter().map(|(_, path)| path).collect())
    }

    pub(crate) fn update_expression(mut self) -> Result<Update, ExprError> {
        let mut update = Update::default();
        let mut seen: Vec<&'static str> = Vec::new();
        let mut targets: Vec<(usize, Path)> = Vec::new();
        while self.next < self.tokens.len() {
            let at = self.at();
            let Some(section) =
                ["SET", "REMOVE", "ADD", "DELETE"].into_iter().find(|section| self.eat_keyword(section))
            else {
                return Err(self.syntax_error("expected SET, REMOVE, ADD or DELETE"));
            };
            if seen.contains(&section) {
                return Err(self
                    .error_at(at, format!("the \"{section}\" section can only be used once in an update expression")));
            }
            seen.push(section);
            loop {
                let path_at = self.at();
                let path = self.path()?;
                targets.push((path_at, path.clone()));
                match section {
                    "SET" => {
                        self.expect_symbol("=")?;
                        let value = self.set_value()?;
                        update.set.push((path, value));
                    }
                    "REMOVE" => update.remove.push(path),
                    _ => {
                        let value_at = self.at();
                        let value = match self.operand()? {
                            Operand::Value(value) => value,
                            other => return Err(self.error_at(value_at, incorrect_operand(section, &other))),
                        };
                        let fits =
                            matches!(value, AttributeValue::Ss(_) | AttributeValue::Ns(_) | AttributeValue::Bs(_))
                                || (section == "ADD" && matches!(value, AttributeValue::N(_)));
                        if !fits {
                            return Err(self.error_at(value_at, incorrect_operand(section, &Operand::Value(value))));
                        }
                        if section == "ADD" {
                            update.add.push((path, value))
                        } else {
                            update.delete.push((path, value))
                        }
                    }
                }
                if !self.eat_symbol(",") {
                    break;
                }
            }
        }
        self.check_disjoint(&targets)?;
        Ok(update)
    }

    /// DynamoDB refuses two paths of one expression where one contains the other ("overlap")
    /// or where one indexes a list and the other names a map key at the same place
    /// ("conflict").
    fn check_disjoint(&self, paths: &[(usize, Path)]) -> Result<(), ExprError> {
        for (i, (at, path)) in paths.iter().enumerate() {
            for (_, other) in &paths[..i] {
                let common = path.0.iter().zip(&other.0).take_while(|(a, b)| a == b).count();
                let problem = if common == path.0.len().min(other.0.len()) {
                    "overlap"
                } else if matches!(
                    (&path.0[common], &other.0[common]),
                    (PathElement::Name(_), PathElement::Index(_)) | (PathElement::Index(_), PathElement::Name(_))
                ) {
                    "conflict"
                } else {
                    continue;
                };
                return Err(self.error_at(
                    *at,
                    format!("two document paths {problem} with each other; must remove or rewrite one of these paths; path one: [{other}], path two: [{path}]"),
                ));
            }
        }
        Ok(())
    }

    fn set_value(&mut self) -> Result<SetValue, ExprError> {
        let left_at = self.at();
        let left = self.set_operand()?;
        let operator = if self.eat_symbol("+") {
            "+"
        } else if self.eat_symbol("-") {
            "-"
        } else {
            return Ok(SetValue::Operand(left));
        };
        let right_at = self.at();
        let right = self.set_operand()?;
        for (operand, at) in [(&left, left_at), (&right, right_at)] {
            if let SetOperand::Value(value) = operand {
                if !matches!(value, AttributeValue::N(_)) {
                    return Err(self.error_at(at, incorrect_operand(operator, &Operand::Value(value.clone()))));
                }
            }
        }
        Ok(if operator == "+" { SetValue::Plus(left, right) } else { SetValue::Minus(left, right) })
    }

    fn set_operand(&mut self) -> Result<SetOperand, ExprError> {
        let at = self.at();
        match self.function_name().as_deref() {
            Some("if_not_exists") => {
                self.descend()?;
                self.next += 2;
                let path = self.path()?;
                self.expect_symbol(",")?;
                let fallback = self.set_operand()?;
                self.expect_symbol(")")?;
                self.depth -= 1;
                Ok(SetOperand::IfNotExists(path, Box::new(fallback)))
            }
            Some("list_append") => {
                self.descend()?;
                self.next += 2;
                let mut parts = Vec::new();
                for separator in [",", ")"] {
                    let part_at = self.at();
                    let part = self.set_operand()?;
                    // DynamoDB takes if_not_exists inside list_append, not list_append
                    // (MESSAGES.md 10c, Alternator test_update_expression.py:661-693).
                    if let SetOperand::ListAppend(..) = &part {
                        return Err(ExprError::whole(
                            self.kind,
                            "The function is not allowed to be used this way in an expression; function: list_append",
                        ));
                    }
                    if let SetOperand::Value(value) = &part {
                        if !matches!(value, AttributeValue::L(_)) {
                            return Err(self
                                .error_at(part_at, incorrect_operand("list_append", &Operand::Value(value.clone()))));
                        }
                    }
                    parts.push(part);
                    self.expect_symbol(separator)?;
                }
                let right = parts.pop().expect("two parts");
                let left = parts.pop().expect("two parts");
                self.depth -= 1;
                Ok(SetOperand::ListAppend(Box::new(left), Box::new(right)))
            }
            Some(function) => {
                let reason = if CONDITION_FUNCTIONS.contains(&function) || function == "size" {
                    format!("the function is not allowed in an update expression; function: {function}")
                } else {
                    format!("invalid function name; function: {function}")
                };
                Err(self.error_at(at, reason))
            }
            None => match self.operand()? {
                Operand::Path(path) => Ok(SetOperand::Path(path)),
                Operand::Value(value) => Ok(SetOperand::Value(value)),
                Operand::Size(_) => unreachable!("size( is a function name, handled above"),
            },
        }
    }

    fn finish(&self) -> Result<(), ExprError> {
        match self.tokens.get(self.next) {
            None => Ok(()),
            Some(_) => Err(self.syntax_error("the end of the expression")),
        }
    }

    // Conditions.

    fn or(&mut self) -> Result<Condition, ExprError> {
        let mut left = self.and()?;
        while self.eat_keyword("OR") {
            left = Condition::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Condition, ExprError> {
        let mut left = self.not()?;
        while self.eat_keyword("AND") {
            left = Condition::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Condition, ExprError> {
        if self.eat_keyword("NOT") {
            self.descend()?;
            let negated = Condition::Not(Box::new(self.not()?));
            self.depth -= 1;
            return Ok(negated);
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Condition, ExprError> {
        if self.peek_symbol("(") {
            self.check_redundant_parentheses()?;
            // A parenthesized operand (`(a) = :v`) is followed by a comparator, BETWEEN or IN;
            // anything else in parentheses is a condition.
            let operand_first = self.closing(self.next).is_some_and(|close| self.predicate_at(close + 1));
            if !operand_first {
                self.descend()?;
                self.next += 1;
                let inner = self.or()?;
                self.expect_symbol(")")?;
                self.depth -= 1;
                return Ok(inner);
            }
        }
        if let Some(function) = self.function_name().filter(|name| CONDITION_FUNCTIONS.contains(&name.as_str())) {
            let at = self.at();
            let condition = self.condition_function(&function)?;
            if self.predicate_follows() {
                return Err(self.error_at(
                    at,
                    format!("the function is not allowed to be used this way in an expression; function: {function}"),
                ));
            }
            return Ok(condition);
        }
        self.predicate()
    }

    /// `operand comparator operand`, `operand BETWEEN operand AND operand`, `operand IN (...)`.
    fn predicate(&mut self) -> Result<Condition, ExprError> {
        let at = self.at();
        let left = self.operand()?;
        if let Some(comparator) = self.comparator() {
            let right_at = self.at();
            let right = self.operand()?;
            if !matches!(comparator, Comparator::Eq | Comparator::Ne) {
                self.check_ordered(comparator.symbol(), &left, at)?;
                self.check_ordered(comparator.symbol(), &right, right_at)?;
            }
            self.check_distinct(comparator.symbol(), &left, [&right], at)?;
            return Ok(Condition::Compare(left, comparator, right));
        }
        if self.eat_keyword("BETWEEN") {
            let low_at = self.at();
            let low = self.operand()?;
            if !self.eat_keyword("AND") {
                return Err(self.syntax_error("BETWEEN needs AND between its bounds"));
            }
            let high_at = self.at();
            let high = self.operand()?;
            self.check_ordered("BETWEEN", &left, at)?;
            self.check_ordered("BETWEEN", &low, low_at)?;
            self.check_ordered("BETWEEN", &high, high_at)?;
            if let (Operand::Value(low), Operand::Value(high)) = (&low, &high) {
                match order(low, high) {
                    None => {
                        return Err(self.error_at(
                            low_at,
                            format!("the BETWEEN operator requires same data type for lower and upper bounds; lower bound operand type: {}, upper bound operand type: {}", low.type_name(), high.type_name()),
                        ))
                    }
                    Some(Ordering::Greater) => {
                        return Err(self.error_at(low_at, "the BETWEEN operator requires upper bound to be greater than or equal to lower bound"))
                    }
                    Some(_) => {}
                }
            }
            return Ok(Condition::Between(left, low, high));
        }
        if self.eat_keyword("IN") {
            self.expect_symbol("(")?;
            let mut list = vec![self.operand()?];
            while self.eat_symbol(",") {
                list.push(self.operand()?);
            }
            self.expect_symbol(")")?;
            if list.len() > IN_OPERANDS_MAX {
                return Err(self.error_at(
                    at,
                    format!(
                        "the IN operator takes at most {IN_OPERANDS_MAX} operands on its right; found {}",
                        list.len()
                    ),
                ));
            }
            return Ok(Condition::In(left, list));
        }
        match &left {
            Operand::Size(_) => {
                Err(self
                    .error_at(at, "the function is not allowed to be used this way in an expression; function: size"))
            }
            _ => Err(self.syntax_error("expected a comparator (= <> < <= > >=), BETWEEN or IN after the operand")),
        }
    }

    fn condition_function(&mut self, function: &str) -> Result<Condition, ExprError> {
        let at = self.at();
        self.next += 2; // the name and "("
        let mut arguments = vec![(self.at(), self.operand()?)];
        while self.eat_symbol(",") {
            arguments.push((self.at(), self.operand()?));
        }
        self.expect_symbol(")")?;
        let wanted = if function.starts_with("attribute_") && function != "attribute_type" { 1 } else { 2 };
        if arguments.len() != wanted {
            return Err(self.error_at(
                at,
                format!("incorrect number of operands for operator or function; operator or function: {function}, number of operands: {}", arguments.len()),
            ));
        }
        let mut arguments = arguments.into_iter();
        let (first_at, first) = arguments.next().expect("one argument at least");
        let second = arguments.next();
        let path = |parser: &Self| match &first {
            Operand::Path(path) => Ok(path.clone()),
            _ => Err(parser.error_at(
                first_at,
                format!("operator or function requires a document path; operator or function: {function}"),
            )),
        };
        match function {
            "attribute_exists" => Ok(Condition::Exists(path(self)?)),
            "attribute_not_exists" => Ok(Condition::NotExists(path(self)?)),
            "attribute_type" => {
                let path = path(self)?;
                let (type_at, type_operand) = second.expect("two arguments");
                match type_operand {
                    Operand::Value(AttributeValue::S(name)) if TYPE_NAMES.contains(&name.as_str()) => {
                        Ok(Condition::Type(path, name))
                    }
                    Operand::Value(AttributeValue::S(name)) => Err(self.error_at(
                        type_at,
                        format!(
                            "invalid attribute type name found; type: {name}, valid types: {{B,NULL,SS,BOOL,L,BS,N,NS,S,M}}"
                        ),
                    )),
                    other => Err(self.error_at(type_at, incorrect_operand(function, &other))),
                }
            }
            _ => {
                let (second_at, second) = second.expect("two arguments");
                for (index, (operand, operand_at)) in [(&first, first_at), (&second, second_at)].into_iter().enumerate()
                {
                    if let Operand::Value(value) = operand {
                        // begins_with takes strings and binaries; contains searches a string, a
                        // set or a list, for anything.
                        let fits = match function {
                            "begins_with" => matches!(value, AttributeValue::S(_) | AttributeValue::B(_)),
                            _ => {
                                index == 1
                                    || matches!(
                                        value,
                                        AttributeValue::S(_)
                                            | AttributeValue::L(_)
                                            | AttributeValue::Ss(_)
                                            | AttributeValue::Ns(_)
                                            | AttributeValue::Bs(_)
                                    )
                            }
                        };
                        if !fits {
                            return Err(self.error_at(operand_at, incorrect_operand(function, operand)));
                        }
                    }
                }
                self.check_distinct(function, &first, [&second], first_at)?;
                Ok(if function == "begins_with" {
                    Condition::BeginsWith(first, second)
                } else {
                    Condition::Contains(first, second)
                })
            }
        }
    }

    /// Refuses a literal that `operator` cannot order (only N, S and B order).
    fn check_ordered(&self, operator: &str, operand: &Operand, at: usize) -> Result<(), ExprError> {
        match operand {
            Operand::Value(AttributeValue::N(_) | AttributeValue::S(_) | AttributeValue::B(_))
            | Operand::Path(_)
            | Operand::Size(_) => Ok(()),
            other => Err(self.error_at(at, incorrect_operand(operator, other))),
        }
    }

    /// DynamoDB refuses an operator whose first operand is the same path as another operand.
    fn check_distinct<'o>(
        &self,
        operator: &str,
        first: &Operand,
        rest: impl IntoIterator<Item = &'o Operand>,
        at: usize,
    ) -> Result<(), ExprError> {
        if let Operand::Path(path) = first {
            if rest.into_iter().any(|other| other == first) {
                return Err(self.error_at(
                    at,
                    format!("the first operand must be distinct from the remaining operands for this operator or function; operator: {operator}, first operand: [{path}]"),
                ));
            }
        }
        Ok(())
    }

    // Operands and paths.

    fn operand(&mut self) -> Result<Operand, ExprError> {
        let at = self.at();
        if let Some(function) = self.function_name() {
            if function != "size" {
                let reason = if CONDITION_FUNCTIONS.contains(&function.as_str()) {
                    format!("the function is not allowed to be used this way in an expression; function: {function}")
                } else {
                    format!("invalid function name; function: {function}")
                };
                return Err(self.error_at(at, reason));
            }
            self.descend()?;
            self.next += 2;
            let argument_at = self.at();
            let argument = self.operand()?;
            self.depth -= 1;
            if self.eat_symbol(",") {
                return Err(self.error_at(at, "incorrect number of operands for operator or function; operator or function: size, number of operands: 2"));
            }
            self.expect_symbol(")")?;
            // The size of a literal is known now.
            return match argument {
                Operand::Path(path) => Ok(Operand::Size(path)),
                Operand::Value(value) => match size(&value) {
                    Some(size) => Ok(Operand::Value(size)),
                    None => Err(self.error_at(argument_at, incorrect_operand("size", &Operand::Value(value)))),
                },
                Operand::Size(_) => Err(self.error_at(argument_at, incorrect_operand("size", &argument))),
            };
        }
        if self.peek_symbol("(") {
            self.check_redundant_parentheses()?;
            self.descend()?;
            self.next += 1;
            let inner = self.operand()?;
            self.expect_symbol(")")?;
            self.depth -= 1;
            return Ok(inner);
        }
        match self.tokens.get(self.next).map(|spanned| spanned.token.clone()) {
            Some(Token::Value(name)) => {
                self.next += 1;
                Ok(Operand::Value(self.placeholders.value(self.kind, at, &name)?))
            }
            _ => Ok(Operand::Path(self.path()?)),
        }
    }

    fn path(&mut self) -> Result<Path, ExprError> {
        let mut elements = vec![PathElement::Name(self.path_name()?)];
        loop {
            let at = self.at();
            if self.eat_symbol(".") {
                elements.push(PathElement::Name(self.path_name()?));
            } else if self.eat_symbol("[") {
                let index = match self.tokens.get(self.next).map(|spanned| &spanned.token) {
                    Some(Token::Integer(digits)) => {
                        digits.parse::<usize>().ok().filter(|index| *index <= u32::MAX as usize)
                    }
                    _ => return Err(self.syntax_error("a list index must be a non-negative integer")),
                };
                let index = index.ok_or_else(|| self.error_at(at, "a list index is too large"))?;
                self.next += 1;
                self.expect_symbol("]")?;
                elements.push(PathElement::Index(index));
            } else {
                break;
            }
            if elements.len() > PATH_ELEMENTS_MAX {
                return Err(self.error_at(
                    at,
                    format!("the document path has too many nesting levels; at most {PATH_ELEMENTS_MAX} elements"),
                ));
            }
        }
        Ok(Path(elements))
    }

    /// A name step of a path: a bare attribute name (not a reserved word) or `#placeholder`.
    fn path_name(&mut self) -> Result<String, ExprError> {
        let at = self.at();
        match self.tokens.get(self.next).map(|spanned| spanned.token.clone()) {
            Some(Token::Word(word)) if is_reserved(&word) => {
                Err(self.error_at(at, format!("attribute name is a reserved keyword; reserved keyword: {word}")))
            }
            Some(Token::Word(word)) => {
                self.next += 1;
                Ok(word)
            }
            Some(Token::Name(name)) => {
                self.next += 1;
                self.placeholders.name(self.kind, at, &name)
            }
            _ => Err(self.syntax_error("expected an attribute name or a #name placeholder")),
        }
    }

    // Tokens.

    /// One level deeper (the caller returns up it on success; an error ends the parse).
    fn descend(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > NESTING_LEVELS_MAX {
            return Err(self.syntax_error("nesting within NESTING_LEVELS_MAX"));
        }
        Ok(())
    }

    /// The byte offset of the next token (the end of the text when there is none).
    fn at(&self) -> usize {
        self.tokens.get(self.next).map_or(self.text.len(), |spanned| spanned.at)
    }

    /// The name of a function call starting at the next token (a word followed by "(").
    fn function_name(&self) -> Option<String> {
        match (self.tokens.get(self.next), self.tokens.get(self.next + 1)) {
            (Some(Spanned { token: Token::Word(word), .. }), Some(Spanned { token: Token::Symbol("("), .. })) => {
                Some(word.clone())
            }
            _ => None,
        }
    }

    fn comparator(&mut self) -> Option<Comparator> {
        let comparator = match self.tokens.get(self.next).map(|spanned| &spanned.token) {
            Some(Token::Symbol("=")) => Comparator::Eq,
            Some(Token::Symbol("<>")) => Comparator::Ne,
            Some(Token::Symbol("<")) => Comparator::Lt,
            Some(Token::Symbol("<=")) => Comparator::Le,
            Some(Token::Symbol(">")) => Comparator::Gt,
            Some(Token::Symbol(">=")) => Comparator::Ge,
            _ => return None,
        };
        self.next += 1;
        Some(comparator)
    }

    fn predicate_follows(&self) -> bool {
        self.predicate_at(self.next)
    }

    /// Whether token `index` starts the rest of a predicate (a comparator, BETWEEN or IN).
    fn predicate_at(&self, index: usize) -> bool {
        self.tokens.get(index).is_some_and(|spanned| {
            matches!(spanned.token, Token::Symbol("=" | "<>" | "<" | "<=" | ">" | ">="))
                || spanned.token.is_keyword("BETWEEN")
                || spanned.token.is_keyword("IN")
        })
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let found = self.tokens.get(self.next).is_some_and(|spanned| spanned.token.is_keyword(keyword));
        self.next += usize::from(found);
        found
    }

    fn peek_symbol(&self, symbol: &str) -> bool {
        matches!(self.tokens.get(self.next), Some(Spanned { token: Token::Symbol(s), .. }) if *s == symbol)
    }

    /// DynamoDB refuses `((...))`: a parenthesized part wrapped in a second pair directly.
    fn check_redundant_parentheses(&self) -> Result<(), ExprError> {
        let (Some(outer), Some(inner)) = (self.closing(self.next), self.closing(self.next + 1)) else { return Ok(()) };
        if self.peek_symbol("(") && inner + 1 == outer {
            return Err(self.error_at(self.at(), "the expression has redundant parentheses"));
        }
        Ok(())
    }

    /// The index of the ")" matching a "(" at token `open`.
    fn closing(&self, open: usize) -> Option<usize> {
        if !matches!(self.tokens.get(open), Some(Spanned { token: Token::Symbol("("), .. })) {
            return None;
        }
        let mut depth = 0usize;
        for (index, spanned) in self.tokens.iter().enumerate().skip(open) {
            match spanned.token {
                Token::Symbol("(") => depth += 1,
                Token::Symbol(")") => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(index);
                    }
                }
                _ => {}
            }
        }
        None
    }

    fn eat_symbol(&mut self, symbol: &str) -> bool {
        let found = matches!(self.tokens.get(self.next), Some(Spanned { token: Token::Symbol(s), .. }) if *s == symbol);
        self.next += usize::from(found);
        found
    }

    fn expect_symbol(&mut self, symbol: &str) -> Result<(), ExprError> {
        if self.eat_symbol(symbol) {
            Ok(())
        } else {
            Err(self.syntax_error(&format!("expected \"{symbol}\"")))
        }
    }

    /// A syntax error at the next token, as DynamoDB words it (MESSAGES.md 15c): the token
    /// (`<EOF>` at the end) and the text near it, from the token before it through the one
    /// after. `expected` says what the grammar wanted there; DynamoDB does not say, so it is
    /// only for the reader of this code.
    // Cold and out of line: inlined into the recursive descent, its formatting would widen
    // every level's stack frame, and the deepest expressions the limits allow would overflow.
    #[cold]
    #[inline(never)]
    fn syntax_error(&self, expected: &str) -> ExprError {
        debug_assert!(!expected.is_empty());
        syntax_error(self.kind, self.text, &self.tokens, self.next)
    }

    fn error_at(&self, at: usize, reason: impl Into<String>) -> ExprError {
        ExprError::new(self.kind, at, reason)
    }
}

/// DynamoDB's syntax error at `tokens[next]` of `text`: `Syntax error; token: "T", near: "N"`,
/// T the token as written (`<EOF>` past the last), N the text from the start of the token
/// before it to the end of the token after it (as the moto project models DynamoDB's answer).
#[cold]
#[inline(never)]
pub(crate) fn syntax_error(kind: &'static str, text: &str, tokens: &[Spanned], next: usize) -> ExprError {
    let end = |spanned: &Spanned| spanned.at + spanned.token.text().len();
    let from = next.checked_sub(1).and_then(|before| tokens.get(before)).map_or(0, |before| before.at);
    let (token, to) = match tokens.get(next) {
        Some(spanned) => (spanned.token.text(), tokens.get(next + 1).map_or(end(spanned), end)),
        None => ("<EOF>".to_string(), text.len()),
    };
    let at = tokens.get(next).map_or(text.len(), |spanned| spanned.at);
    ExprError::new(kind, at, format!("Syntax error; token: \"{token}\", near: \"{}\"", &text[from..to]))
}

/// The operators of an expression as DynamoDB counts them against its limit of 300: the
/// comparators, AND, OR, NOT, BETWEEN (its AND is part of it), IN, and in an update the
/// arithmetic `+` and `-`; parentheses, function calls and SET's `=` are not operators
/// (MESSAGES.md 15b: Alternator test_limits.py:605-720, against DynamoDB; the Developer
/// Guide's expression limits). Counted before parsing, this also bounds how deep conditions
/// nest (a parenthesis directly in another is refused as redundant); the 4 KB size bounds
/// the rest.
fn operator_count(kind: &str, tokens: &[Spanned]) -> usize {
    let mut count = 0;
    let mut between_open = false;
    for spanned in tokens {
        let counted = match &spanned.token {
            Token::Symbol("=") => kind != "UpdateExpression",
            Token::Symbol("<>" | "<" | "<=" | ">" | ">=" | "+" | "-") => true,
            token if token.is_keyword("BETWEEN") => {
                between_open = true;
                true
            }
            token if token.is_keyword("AND") && between_open => {
                between_open = false;
                false
            }
            token => ["AND", "OR", "NOT", "IN"].iter().any(|keyword| token.is_keyword(keyword)),
        };
        count += usize::from(counted);
    }
    count
}

fn incorrect_operand(operator: &str, operand: &Operand) -> String {
    let kind = match operand {
        Operand::Value(value) => value.type_name().to_string(),
        Operand::Path(path) => format!("path [{path}]"),
        Operand::Size(_) => "N (size)".to_string(),
    };
    format!("incorrect operand type for operator or function; operator or function: {operator}, operand type: {kind}")
}
