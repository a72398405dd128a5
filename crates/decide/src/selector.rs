//! Equality- and set-based label selectors, as `kubectl -l` accepts them:
//! `a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x,y)`, comma-separated.
//! The empty selector matches everything.

use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    /// Values sorted and without duplicates.
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

const EXAMPLES: &str = r#"valid forms are "key=value", "key==value", "key!=value", "key", "!key", "key in (v1,v2)" and "key notin (v1,v2)", separated by commas"#;

impl Selector {
    /// Matches everything.
    pub fn everything() -> Self {
        Selector::default()
    }

    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        Parser {
            text,
            chars: text.chars().collect(),
            pos: 0,
        }
        .selector()
        .map_err(|e| SelectorError(format!("invalid label selector {text:?}: {e}")))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
        })
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match r {
                Requirement::Equals(k, v) => write!(f, "{k}={v}")?,
                Requirement::NotEquals(k, v) => write!(f, "{k}!={v}")?,
                Requirement::Exists(k) => write!(f, "{k}")?,
                Requirement::NotExists(k) => write!(f, "!{k}")?,
                Requirement::In(k, vs) => write!(f, "{k} in ({})", vs.join(","))?,
                Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", vs.join(","))?,
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

struct Parser<'a> {
    text: &'a str,
    chars: Vec<char>,
    pos: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, s: &str) -> bool {
        let n = s.chars().count();
        let matches = self.chars.len() >= self.pos + n
            && self.chars[self.pos..self.pos + n]
                .iter()
                .copied()
                .eq(s.chars());
        if matches {
            self.pos += n;
        }
        matches
    }

    fn word(&mut self) -> String {
        let start = self.pos;
        while self.peek().is_some_and(is_word_char) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    /// Describes what is at the current position, for error messages.
    fn here(&self) -> String {
        match self.peek() {
            None => "the end of the selector".to_string(),
            Some(_) => {
                let rest: String = self.chars[self.pos..].iter().collect();
                format!("{rest:?} (at character {})", self.pos + 1)
            }
        }
    }

    fn selector(mut self) -> Result<Selector, String> {
        let mut requirements = Vec::new();
        if self.text.trim().is_empty() {
            return Ok(Selector { requirements });
        }
        loop {
            self.skip_ws();
            if matches!(self.peek(), None | Some(',')) {
                return Err(format!(
                    "empty requirement at {}: {EXAMPLES}, with no empty entries",
                    self.here()
                ));
            }
            requirements.push(self.requirement()?);
            self.skip_ws();
            match self.peek() {
                None => return Ok(Selector { requirements }),
                Some(',') => self.pos += 1,
                Some(_) => {
                    return Err(format!(
                        "unexpected {} after the requirement \"{}\": expected \",\" or the end; {EXAMPLES}",
                        self.here(),
                        Selector {
                            requirements: vec![requirements.pop().expect("just pushed")]
                        }
                    ));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        if self.eat("!") {
            self.skip_ws();
            let key = self.key()?;
            return Ok(Requirement::NotExists(key));
        }
        let key = self.key()?;
        let before_ws = self.pos;
        self.skip_ws();
        if self.eat("!=") {
            self.skip_ws();
            let value = self.value(&key, "!=")?;
            return Ok(Requirement::NotEquals(key, value));
        }
        if self.eat("==") || self.eat("=") {
            self.skip_ws();
            let value = self.value(&key, "=")?;
            return Ok(Requirement::Equals(key, value));
        }
        if self.pos > before_ws {
            // Only a set operator may follow the key after whitespace.
            let word_start = self.pos;
            let word = self.word();
            match word.as_str() {
                "in" => return Ok(Requirement::In(key.clone(), self.set(&key, "in")?)),
                "notin" => return Ok(Requirement::NotIn(key.clone(), self.set(&key, "notin")?)),
                _ => self.pos = word_start,
            }
        }
        if matches!(self.peek(), None | Some(',')) || self.pos > before_ws {
            // `key` alone; anything else after the whitespace is reported by the caller.
            return Ok(Requirement::Exists(key));
        }
        Err(format!(
            "unexpected {} after the label key {key:?}: expected \"=\", \"==\", \"!=\", \" in (…)\", \" notin (…)\", \",\" or the end",
            self.here()
        ))
    }

    fn key(&mut self) -> Result<String, String> {
        let start = self.pos;
        let key = self.word();
        if key.is_empty() {
            return Err(format!(
                "expected a label key at {}; {EXAMPLES}",
                self.here()
            ));
        }
        if let Err(why) = validate_key(&key) {
            self.pos = start;
            return Err(format!("{key:?} is not a valid label key: {why}"));
        }
        Ok(key)
    }

    fn value(&mut self, key: &str, op: &str) -> Result<String, String> {
        let value = self.word();
        if let Err(why) = validate_value(&value) {
            return Err(format!(
                "{value:?} (after \"{key}{op}\") is not a valid label value: {why}"
            ));
        }
        Ok(value)
    }

    fn set(&mut self, key: &str, op: &str) -> Result<Vec<String>, String> {
        self.skip_ws();
        if !self.eat("(") {
            return Err(format!(
                "expected \"(\" after \"{key} {op}\" but found {}: write \"{key} {op} (v1,v2)\"",
                self.here()
            ));
        }
        let mut values = Vec::new();
        loop {
            self.skip_ws();
            if values.is_empty() && self.peek() == Some(')') {
                return Err(format!(
                    "the set after \"{key} {op}\" is empty: give at least one value, e.g. \"{key} {op} (v1,v2)\""
                ));
            }
            let value = self.word();
            if value.is_empty() {
                return Err(format!(
                    "empty value at {} in the set after \"{key} {op}\": set values must be non-empty, e.g. \"{key} {op} (v1,v2)\"",
                    self.here()
                ));
            }
            if let Err(why) = validate_value(&value) {
                return Err(format!(
                    "{value:?} in the set after \"{key} {op}\" is not a valid label value: {why}"
                ));
            }
            values.push(value);
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(')') => {
                    self.pos += 1;
                    break;
                }
                _ => {
                    return Err(format!(
                        "unexpected {} in the set after \"{key} {op}\": expected \",\" or \")\", e.g. \"{key} {op} (v1,v2)\"",
                        self.here()
                    ));
                }
            }
        }
        values.sort();
        values.dedup();
        Ok(values)
    }
}

const NAME_RULE: &str = "at most 63 characters, beginning and ending with a letter or digit, with only letters, digits, \"-\", \"_\" and \".\" between";

fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(NAME_RULE.to_string())
    }
}

fn validate_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let ok = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !ok {
            return Err(format!(
                "the prefix {prefix:?} must be a DNS subdomain (lowercase letters, digits, \"-\" and \".\", at most 253 characters), followed by \"/\" and a name of {NAME_RULE}"
            ));
        }
    }
    validate_name(name).map_err(|_| {
        format!("a key is an optional DNS subdomain prefix and \"/\", then a name of {NAME_RULE}")
    })
}

fn validate_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    validate_name(value).map_err(|_| format!("a value is empty or {NAME_RULE}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn err(s: &str) -> String {
        match Selector::parse(s) {
            Ok(x) => panic!("{s:?} parsed as {x:?}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn empty_matches_everything() {
        for s in ["", "   "] {
            let x = sel(s);
            assert!(x.matches(&labels(&[])));
            assert!(x.matches(&labels(&[("a", "b")])));
            assert_eq!(x.to_string(), "");
        }
        assert!(Selector::everything().matches(&labels(&[("x", "y")])));
    }

    #[test]
    fn equality_forms() {
        let l = labels(&[("zone", "a"), ("role", "db")]);
        assert!(sel("zone=a").matches(&l));
        assert!(sel("zone==a").matches(&l));
        assert!(!sel("zone=b").matches(&l));
        assert!(sel("zone!=b").matches(&l));
        assert!(!sel("zone!=a").matches(&l));
        assert!(sel("missing!=a").matches(&l), "!= matches a missing key");
        assert!(!sel("missing=a").matches(&l));
        assert!(sel("zone = a").matches(&l));
        assert!(sel("empty=").matches(&labels(&[("empty", "")])));
        assert!(!sel("empty=").matches(&labels(&[])));
    }

    #[test]
    fn existence_forms() {
        let l = labels(&[("gpu", "")]);
        assert!(sel("gpu").matches(&l));
        assert!(!sel("!gpu").matches(&l));
        assert!(sel("!cpu").matches(&l));
        assert!(!sel("cpu").matches(&l));
        assert!(sel("! cpu").matches(&l));
    }

    #[test]
    fn set_forms() {
        let l = labels(&[("zone", "b")]);
        assert!(sel("zone in (a,b)").matches(&l));
        assert!(sel("zone in ( a , b )").matches(&l));
        assert!(sel("zone in(b)").matches(&l));
        assert!(!sel("zone in (a,c)").matches(&l));
        assert!(!sel("zone notin (a,b)").matches(&l));
        assert!(sel("zone notin (a,c)").matches(&l));
        assert!(!sel("other in (a)").matches(&l), "in needs the key");
        assert!(
            sel("other notin (a)").matches(&l),
            "notin matches a missing key"
        );
    }

    #[test]
    fn conjunction_and_prefixed_keys() {
        let s = sel("node-role.kubernetes.io/worker,kube-fencer.io/exclude!=true,zone in (a,b)");
        assert!(s.matches(&labels(&[
            ("node-role.kubernetes.io/worker", ""),
            ("zone", "a")
        ])));
        assert!(!s.matches(&labels(&[
            ("node-role.kubernetes.io/worker", ""),
            ("zone", "a"),
            ("kube-fencer.io/exclude", "true")
        ])));
        assert!(!s.matches(&labels(&[("zone", "a")])));
    }

    #[test]
    fn display_is_canonical() {
        assert_eq!(sel("a==b").to_string(), "a=b");
        assert_eq!(sel(" a = b , !c ,d").to_string(), "a=b,!c,d");
        assert_eq!(sel("z notin (y, x, y)").to_string(), "z notin (x,y)");
        assert_eq!(sel("k!=").to_string(), "k!=");
    }

    #[test]
    fn errors_name_the_offending_part() {
        let e = err("a=b,");
        assert!(
            e.contains("empty requirement") && e.contains("valid forms"),
            "{e}"
        );
        let e = err(",a");
        assert!(e.contains("empty requirement"), "{e}");
        let e = err("a in x");
        assert!(
            e.contains("expected \"(\" after \"a in\"") && e.contains("\"x\""),
            "{e}"
        );
        let e = err("a in ()");
        assert!(e.contains("empty"), "{e}");
        let e = err("a in (b,)");
        assert!(e.contains("empty value at \")\""), "{e}");
        let e = err("a in (x");
        assert!(e.contains("expected \",\" or \")\""), "{e}");
        let e = err("a@b=c");
        assert!(
            e.contains("\"@b=c\"") && e.contains("after the label key \"a\""),
            "{e}"
        );
        let e = err("-a=b");
        assert!(e.contains("\"-a\" is not a valid label key"), "{e}");
        let e = err("a=-b");
        assert!(e.contains("\"-b\"") && e.contains("label value"), "{e}");
        let e = err("Bad_Prefix/a=b");
        assert!(e.contains("prefix \"Bad_Prefix\""), "{e}");
        let e = err("a b");
        assert!(
            e.contains("\"b\"") && e.contains("expected \",\" or the end"),
            "{e}"
        );
        let e = err("!a=b");
        assert!(e.contains("\"=b\""), "{e}");
        let e = err(&format!("a={}", "x".repeat(64)));
        assert!(e.contains("63"), "{e}");
        assert!(e.starts_with("invalid label selector \"a=xx"), "{e}");
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9._-]{0,6}[a-z0-9])?"
    }

    fn key() -> impl Strategy<Value = String> {
        (
            proptest::option::of("[a-z]{1,5}(\\.[a-z]{1,4}){0,2}"),
            name(),
        )
            .prop_map(|(p, n)| match p {
                Some(p) => format!("{p}/{n}"),
                None => n,
            })
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), name()]
    }

    fn requirement() -> impl Strategy<Value = Requirement> {
        let values = || {
            proptest::collection::btree_set(name(), 1..4)
                .prop_map(|s| s.into_iter().collect::<Vec<_>>())
        };
        prop_oneof![
            (key(), value()).prop_map(|(k, v)| Requirement::Equals(k, v)),
            (key(), value()).prop_map(|(k, v)| Requirement::NotEquals(k, v)),
            key().prop_map(Requirement::Exists),
            key().prop_map(Requirement::NotExists),
            (key(), values()).prop_map(|(k, v)| Requirement::In(k, v)),
            (key(), values()).prop_map(|(k, v)| Requirement::NotIn(k, v)),
        ]
    }

    proptest! {
        #[test]
        fn display_round_trips(reqs in proptest::collection::vec(requirement(), 0..5)) {
            let s = Selector { requirements: reqs };
            prop_assert_eq!(Selector::parse(&s.to_string()), Ok(s));
        }

        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            if let Ok(x) = Selector::parse(&s) {
                prop_assert_eq!(Selector::parse(&x.to_string()), Ok(x));
            }
        }

        #[test]
        fn parse_never_panics_on_selector_like_text(s in "[a-z=!(), /.-]{0,30}|[a-z]{1,3}( (in|notin) )?[(),a-z ]{0,12}") {
            if let Ok(x) = Selector::parse(&s) {
                prop_assert_eq!(Selector::parse(&x.to_string()), Ok(x));
            }
        }
    }
}
