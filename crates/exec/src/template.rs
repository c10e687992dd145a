//! Argv and env templates: `{name}` is replaced by a validated parameter,
//! `{{` and `}}` are literal braces. Parsed and checked once at start-up;
//! rendered per task. Never a shell: each element stays one argument.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::spec::{ConfigError, ParamSpec, ParamType};

/// One part of a template string.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Param(String),
}

/// A parsed template string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Template {
    pieces: Vec<Piece>,
}

/// Where a template is used, for the checks that differ.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    Command,
    Env,
}

impl Template {
    /// Parses `text`, checking every placeholder against `params`.
    pub(crate) fn parse(
        op: &str,
        key: &str,
        text: &str,
        params: &BTreeMap<String, ParamSpec>,
        place: Place,
    ) -> Result<Template, ConfigError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(ConfigError::new(
                            op,
                            key,
                            format!(
                                "unclosed placeholder in {text:?} (write {{{{ for a literal brace)"
                            ),
                        ));
                    }
                    let Some(spec) = params.get(&name) else {
                        return Err(ConfigError::new(
                            op,
                            key,
                            format!(
                                "placeholder {{{name}}} names no declared parameter (declare [ops.{op}.params.{name}])"
                            ),
                        ));
                    };
                    if spec.secret && place == Place::Command {
                        return Err(ConfigError::new(
                            op,
                            key,
                            format!(
                                "secret parameter {name} may only be used in env values, never in the command (other users can read a process's arguments)"
                            ),
                        ));
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Param(name));
                }
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        let template = Template { pieces };
        for piece in &template.pieces {
            if let Piece::Param(name) = piece
                && params[name].kind == ParamType::Array
                && place == Place::Command
                && template.pieces.len() != 1
            {
                return Err(ConfigError::new(
                    op,
                    key,
                    format!(
                        "array parameter {name} must fill a whole element (\"{{{name}}}\"): it expands to one argument per item"
                    ),
                ));
            }
        }
        Ok(template)
    }

    /// The program name, when the template has no placeholder.
    pub(crate) fn literal(&self) -> Option<String> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Param(_) => return None,
            }
        }
        Some(out)
    }

    /// The rendered strings: none when it names an absent parameter, several
    /// for an array parameter filling the element, else one.
    pub(crate) fn render(&self, params: &Map<String, Value>) -> Vec<String> {
        if let [Piece::Param(name)] = self.pieces.as_slice()
            && let Some(Value::Array(items)) = params.get(name)
        {
            return items.iter().map(render_value).collect();
        }
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Param(name) => match params.get(name) {
                    Some(value) => out.push_str(&render_value(value)),
                    None => return Vec::new(),
                },
            }
        }
        vec![out]
    }
}

impl Template {
    /// One rendered string (an env value): `None` when it names an absent
    /// parameter; arrays render as compact JSON.
    /// The parameters it names.
    pub(crate) fn params(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|piece| match piece {
            Piece::Param(name) => Some(name.as_str()),
            Piece::Text(_) => None,
        })
    }

    pub(crate) fn render_one(&self, params: &Map<String, Value>) -> Option<String> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Param(name) => out.push_str(&render_value(params.get(name)?)),
            }
        }
        Some(out)
    }
}

/// A parameter as argument text: strings as they are, numbers in their JSON
/// text, booleans `true`/`false`, objects (and arrays) as compact JSON.
fn render_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params() -> BTreeMap<String, ParamSpec> {
        let mut params = BTreeMap::new();
        for (name, kind, secret) in [
            ("src", "string", false),
            ("width", "integer", false),
            ("files", "array", false),
            ("key", "string", true),
            ("opts", "object", false),
        ] {
            let text = format!("type = '{kind}'\nsecret = {secret}");
            params.insert(name.to_owned(), toml::from_str(&text).unwrap());
        }
        params
    }

    fn render(text: &str, values: Value) -> Vec<String> {
        let template =
            Template::parse("op", "command[1]", text, &params(), Place::Command).unwrap();
        template.render(values.as_object().unwrap())
    }

    #[test]
    fn replaces_placeholders_and_keeps_braces() {
        assert_eq!(render("--src={src}", json!({"src": "a b"})), ["--src=a b"]);
        assert_eq!(render("{width}px", json!({"width": 800})), ["800px"]);
        assert_eq!(render("{{literal}}", json!({})), ["{literal}"]);
        assert_eq!(render("{opts}", json!({"opts": {"a": 1}})), [r#"{"a":1}"#]);
        assert_eq!(
            render("{files}", json!({"files": ["x", "y z"]})),
            ["x", "y z"]
        );
        assert!(render("--limit={width}", json!({})).is_empty());
    }

    #[test]
    fn refuses_bad_templates() {
        let check = |text: &str| {
            Template::parse("op", "command[1]", text, &params(), Place::Command)
                .unwrap_err()
                .message
        };
        assert!(check("{nope}").contains("names no declared parameter"));
        assert!(check("{src").contains("unclosed"));
        assert!(check("{key}").contains("secret"));
        assert!(check("--files={files}").contains("whole element"));
        assert!(Template::parse("op", "env.K", "{key}", &params(), Place::Env).is_ok());
    }
}
