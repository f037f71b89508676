//! Tokens of DynamoDB's expression language. Positions are byte offsets into the expression,
//! reported 1-based in errors.

use super::ExprError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    /// A bare word: an attribute name, a keyword (AND, OR, NOT, BETWEEN, IN, SET, ...) or a
    /// function name; which one is the parser's call.
    Word(String),
    /// `#name`: an expression attribute name.
    Name(String),
    /// `:value`: an expression attribute value.
    Value(String),
    /// Digits, only meaningful as a list index (`a[3]`).
    Integer(String),
    /// `( ) [ ] , . + -` and the comparators `= <> < <= > >=`.
    Symbol(&'static str),
}

impl Token {
    /// The token as written, for error messages.
    pub(crate) fn text(&self) -> String {
        match self {
            Token::Word(word) | Token::Integer(word) => word.clone(),
            Token::Name(name) => format!("#{name}"),
            Token::Value(value) => format!(":{value}"),
            Token::Symbol(symbol) => (*symbol).to_string(),
        }
    }

    /// Whether this is the keyword `keyword` (keywords are case-insensitive).
    pub(crate) fn is_keyword(&self, keyword: &str) -> bool {
        matches!(self, Token::Word(word) if word.eq_ignore_ascii_case(keyword))
    }
}

/// A token and the byte offset where it starts.
#[derive(Clone, Debug)]
pub(crate) struct Spanned {
    pub(crate) token: Token,
    pub(crate) at: usize,
}

const SYMBOLS: [&str; 14] = ["<>", "<=", ">=", "(", ")", "[", "]", ",", ".", "+", "-", "=", "<", ">"];

/// A name in an expression starts with a letter (an underscore or a digit is DynamoDB's
/// syntax error); after `#` or `:` any word character may come first.
fn is_word_start(c: char) -> bool {
    c.is_ascii_alphabetic()
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Splits `text` into tokens; `kind` names the expression in errors.
pub(crate) fn tokens(kind: &'static str, text: &str) -> Result<Vec<Spanned>, ExprError> {
    let mut out = Vec::new();
    let mut rest = text.char_indices().peekable();
    while let Some(&(at, c)) = rest.peek() {
        if c.is_whitespace() {
            rest.next();
            continue;
        }
        let run = |start: usize, skip: usize, keep: fn(char) -> bool| {
            let body = &text[start + skip..];
            let len = body.find(|c: char| !keep(c)).unwrap_or(body.len());
            (&body[..len], start + skip + len)
        };
        let (token, end) = if is_word_start(c) {
            let (word, end) = run(at, 0, is_word_char);
            (Token::Word(word.to_string()), end)
        } else if c.is_ascii_digit() {
            let (digits, end) = run(at, 0, |c| c.is_ascii_digit());
            (Token::Integer(digits.to_string()), end)
        } else if c == '#' || c == ':' {
            let (body, end) = run(at, 1, is_word_char);
            if body.is_empty() {
                // A sigil with no placeholder name.
                return Err(unexpected(kind, text, &out, at, c));
            }
            let token = if c == '#' { Token::Name(body.to_string()) } else { Token::Value(body.to_string()) };
            (token, end)
        } else if let Some(symbol) = SYMBOLS.iter().find(|symbol| text[at..].starts_with(**symbol)) {
            (Token::Symbol(symbol), at + symbol.len())
        } else {
            return Err(unexpected(kind, text, &out, at, c));
        };
        out.push(Spanned { token, at });
        while rest.peek().is_some_and(|&(next, _)| next < end) {
            rest.next();
        }
    }
    Ok(out)
}

/// A character no token starts with (or a sigil with no name after it), as DynamoDB reports
/// it: a syntax error whose token is the character, near the text from the token before it.
fn unexpected(kind: &'static str, text: &str, before: &[Spanned], at: usize, c: char) -> ExprError {
    let from = before.last().map_or(at, |before| before.at);
    // Through the word that follows it, if one does at once (`SET _123`: near "SET _123").
    let after = &text[at + c.len_utf8()..];
    let to = text.len() - after.len() + after.find(|c: char| !is_word_char(c)).unwrap_or(after.len());
    let near = &text[from..to];
    ExprError::new(kind, at, format!("Syntax error; token: \"{c}\", near: \"{near}\""))
}
