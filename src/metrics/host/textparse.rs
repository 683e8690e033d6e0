//! A small, strict parser of the Prometheus text format (0.0.4) for the textfile collector: it
//! accepts what node_exporter's parser accepts and rejects the rest with the line and the
//! reason, so a broken file is skipped whole rather than half-read. Histograms and summaries
//! keep their `_bucket`/`_sum`/`_count` samples under their family, as in the format.

use std::collections::HashMap;

use crate::metrics::exposition::Kind;

/// A sample's label pairs, in the file's order.
type Labels = Vec<(String, String)>;

/// One sample: the suffix it carries after the family's name, its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::metrics) struct TextSample {
    pub(in crate::metrics) suffix: &'static str,
    pub(in crate::metrics) labels: Labels,
    pub(in crate::metrics) value: f64,
    /// Whether the line carried a timestamp (which node_exporter refuses in textfiles).
    pub(in crate::metrics) timestamp: bool,
}

/// One family as the file gives it.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::metrics) struct TextFamily {
    pub(in crate::metrics) name: String,
    pub(in crate::metrics) help: Option<String>,
    pub(in crate::metrics) kind: Kind,
    pub(in crate::metrics) samples: Vec<TextSample>,
}

/// Every family of `text`, in the order first named; the first problem as `line N: why`.
pub(in crate::metrics) fn parse(text: &str) -> Result<Vec<TextFamily>, String> {
    let mut parser = Parser::default();
    for (n, line) in text.lines().enumerate() {
        parser
            .line(line)
            .map_err(|e| format!("line {}: {e}", n + 1))?;
    }
    Ok(parser.families)
}

#[derive(Default)]
struct Parser {
    families: Vec<TextFamily>,
    index: HashMap<String, usize>,
    /// Families that had a `# TYPE` line.
    typed: Vec<bool>,
}

const BLANKS: [char; 2] = [' ', '\t'];

impl Parser {
    fn line(&mut self, line: &str) -> Result<(), String> {
        let line = line.trim_matches(BLANKS);
        if line.is_empty() {
            return Ok(());
        }
        match line.strip_prefix('#') {
            Some(comment) => self.comment(comment),
            None => self.sample(line),
        }
    }

    fn family(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        self.families.push(TextFamily {
            name: name.to_string(),
            help: None,
            kind: Kind::Untyped,
            samples: Vec::new(),
        });
        self.typed.push(false);
        self.index.insert(name.to_string(), self.families.len() - 1);
        self.families.len() - 1
    }

    /// `# HELP name text` and `# TYPE name type`; any other comment is ignored.
    fn comment(&mut self, comment: &str) -> Result<(), String> {
        let comment = comment.trim_start_matches(BLANKS);
        let (keyword, rest) = comment.split_once(BLANKS).unwrap_or((comment, ""));
        if keyword != "HELP" && keyword != "TYPE" {
            return Ok(());
        }
        let rest = rest.trim_start_matches(BLANKS);
        let (name, rest) = rest.split_once(BLANKS).unwrap_or((rest, ""));
        if !valid_metric_name(name) {
            return Err(format!("invalid metric name {name:?} in {keyword} line"));
        }
        let rest = rest.trim_start_matches(BLANKS);
        let i = self.family(name);
        if keyword == "HELP" {
            if self.families[i].help.is_some() {
                return Err(format!("second HELP line for metric name {name:?}"));
            }
            self.families[i].help = Some(unescape_help(rest)?);
            return Ok(());
        }
        if self.typed[i] || !self.families[i].samples.is_empty() {
            return Err(format!(
                "second TYPE line for metric name {name:?}, or TYPE reported after samples"
            ));
        }
        self.families[i].kind = match rest {
            "counter" => Kind::Counter,
            "gauge" => Kind::Gauge,
            "untyped" => Kind::Untyped,
            "histogram" => Kind::Histogram,
            "summary" => Kind::Summary,
            other => return Err(format!("unknown metric type {other:?}")),
        };
        self.typed[i] = true;
        Ok(())
    }

    /// `name{labels} value [timestamp]`
    fn sample(&mut self, line: &str) -> Result<(), String> {
        let end = line
            .find(|c: char| c == '{' || BLANKS.contains(&c))
            .unwrap_or(line.len());
        let (name, rest) = line.split_at(end);
        if !valid_metric_name(name) {
            return Err(format!("invalid metric name {name:?}"));
        }
        let rest = rest.trim_start_matches(BLANKS);
        let (labels, rest) = match rest.strip_prefix('{') {
            Some(body) => parse_labels(body)?,
            None => (Vec::new(), rest),
        };
        let mut tokens = rest.split(BLANKS).filter(|t| !t.is_empty());
        let value = tokens.next().ok_or("expected a value")?;
        let value =
            parse_value(value).ok_or_else(|| format!("expected float as value, got {value:?}"))?;
        let timestamp = match tokens.next() {
            Some(t) => {
                t.parse::<i64>()
                    .map_err(|_| format!("expected integer as timestamp, got {t:?}"))?;
                true
            }
            None => false,
        };
        if let Some(extra) = tokens.next() {
            return Err(format!("unexpected {extra:?} after the sample"));
        }
        let (i, suffix) = self.family_of(name);
        check_sample(&self.families[i], suffix, &labels)?;
        self.families[i].samples.push(TextSample {
            suffix,
            labels,
            value,
            timestamp,
        });
        Ok(())
    }

    /// The family a sample named `name` belongs to: its own, or the histogram or summary whose
    /// `_bucket`, `_sum` or `_count` it is.
    fn family_of(&mut self, name: &str) -> (usize, &'static str) {
        if let Some(&i) = self.index.get(name) {
            return (i, "");
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            let Some(base) = name.strip_suffix(suffix) else {
                continue;
            };
            if let Some(&i) = self.index.get(base) {
                let kind = self.families[i].kind;
                if kind == Kind::Histogram || (kind == Kind::Summary && suffix != "_bucket") {
                    return (i, suffix);
                }
            }
        }
        (self.family(name), "")
    }
}

/// The rules on labels that depend on the family's type.
fn check_sample(
    family: &TextFamily,
    suffix: &str,
    labels: &[(String, String)],
) -> Result<(), String> {
    let label = |name: &str| {
        labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    match (family.kind, suffix) {
        (Kind::Histogram, "") => Err(format!(
            "histogram {:?} takes only _bucket, _sum and _count samples",
            family.name
        )),
        (Kind::Histogram, "_bucket") => match label("le").map(parse_value) {
            Some(Some(_)) => Ok(()),
            _ => Err(format!(
                "a bucket of {:?} without a numeric le label",
                family.name
            )),
        },
        (Kind::Summary, "") => match label("quantile").map(parse_value) {
            Some(Some(_)) => Ok(()),
            _ => Err(format!(
                "a sample of summary {:?} without a numeric quantile label",
                family.name
            )),
        },
        _ => Ok(()),
    }
}

/// `a="1",b="x\"y"}` → the labels and what follows the `}`.
fn parse_labels(body: &str) -> Result<(Labels, &str), String> {
    let mut labels: Labels = Vec::new();
    let mut rest = body.trim_start_matches(BLANKS);
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or("unterminated label set")?;
        let (name, after) = rest.split_at(end);
        if !valid_label_name(name) {
            return Err(format!("invalid label name {name:?}"));
        }
        if name == "__name__" {
            return Err("label name \"__name__\" is reserved".to_string());
        }
        if labels.iter().any(|(n, _)| n == name) {
            return Err(format!("duplicate label name {name:?}"));
        }
        let after = after.trim_start_matches(BLANKS);
        let after = after
            .strip_prefix('=')
            .ok_or_else(|| format!("expected '=' after label name {name:?}"))?;
        let after = after.trim_start_matches(BLANKS);
        let after = after
            .strip_prefix('"')
            .ok_or_else(|| format!("expected a quoted value for label {name:?}"))?;
        let (value, after) = quoted(after)?;
        labels.push((name.to_string(), value));
        let after = after.trim_start_matches(BLANKS);
        rest = match after.strip_prefix(',') {
            Some(next) => next.trim_start_matches(BLANKS),
            None if after.starts_with('}') => after,
            None => return Err("expected ',' or '}' after a label".to_string()),
        };
    }
}

/// The body of a quoted label value (after its opening quote) and what follows its closing one.
fn quoted(text: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => value.push('\\'),
                Some((_, '"')) => value.push('"'),
                Some((_, 'n')) => value.push('\n'),
                other => {
                    return Err(format!(
                        "invalid escape sequence '\\{}' in a label value",
                        other.map(|(_, c)| c).unwrap_or(' ')
                    ));
                }
            },
            '\n' => return Err("a label value spans lines".to_string()),
            c => value.push(c),
        }
    }
    Err("unterminated label value".to_string())
}

fn unescape_help(text: &str) -> Result<String, String> {
    let mut help = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            help.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => help.push('\\'),
            Some('n') => help.push('\n'),
            other => {
                return Err(format!(
                    "invalid escape sequence '\\{}' in HELP",
                    other.unwrap_or(' ')
                ));
            }
        }
    }
    Ok(help)
}

/// A float as the format writes it: decimal, `NaN`, `+Inf`, `-Inf`.
fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        t if t
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
            && !t.is_empty() =>
        {
            t.parse().ok()
        }
        _ => None,
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_families_labels_and_special_values() {
        let families = parse(
            "# HELP backup_age_seconds Age of the last \\\\ backup\\nin seconds.\n\
             # TYPE backup_age_seconds gauge\n\
             backup_age_seconds{job=\"cron\",path=\"a \\\"b\\\"\\\\c\"} 12.5\n\
             \n\
             # a plain comment\n\
             untyped_thing NaN\n\
             # TYPE lat histogram\n\
             lat_bucket{le=\"0.5\"} 1\n\
             lat_bucket{le=\"+Inf\",} 2\n\
             lat_sum 0.7\n\
             lat_count 2\n\
             # TYPE q summary\n\
             q{quantile=\"0.9\"} -Inf\n\
             q_count 3\n",
        )
        .unwrap();
        assert_eq!(families.len(), 4);
        assert_eq!(families[0].name, "backup_age_seconds");
        assert_eq!(
            families[0].help.as_deref(),
            Some("Age of the last \\ backup\nin seconds.")
        );
        assert_eq!(families[0].kind, Kind::Gauge);
        assert_eq!(
            families[0].samples[0].labels,
            vec![
                ("job".to_string(), "cron".to_string()),
                ("path".to_string(), "a \"b\"\\c".to_string())
            ]
        );
        assert!(families[1].samples[0].value.is_nan());
        assert_eq!(families[1].kind, Kind::Untyped);
        let suffixes: Vec<&str> = families[2].samples.iter().map(|s| s.suffix).collect();
        assert_eq!(suffixes, ["_bucket", "_bucket", "_sum", "_count"]);
        assert_eq!(families[3].samples[0].value, f64::NEG_INFINITY);
        assert!(parse("a 1 1700000000000\n").unwrap()[0].samples[0].timestamp);
    }

    #[test]
    fn rejects_what_node_exporter_rejects() {
        for (text, why) in [
            ("broken line here {\n", "float"),
            ("a{b=\"1\" 2\n", "','"),
            ("a{b=\"1\",b=\"2\"} 2\n", "duplicate"),
            ("a{__name__=\"x\"} 2\n", "reserved"),
            ("a{b=\"\\x\"} 2\n", "escape"),
            ("a{b=\"open} 2\n", "unterminated"),
            ("9a 1\n", "metric name"),
            ("a 1 2 3\n", "unexpected"),
            ("a 1 soon\n", "timestamp"),
            ("# TYPE a gauge\n# TYPE a gauge\n", "second TYPE"),
            ("a 1\n# TYPE a gauge\n", "after samples"),
            ("# HELP a x\n# HELP a y\n", "second HELP"),
            ("# TYPE a meter\n", "unknown metric type"),
            ("# TYPE h histogram\nh 1\n", "histogram"),
            ("# TYPE h histogram\nh_bucket 1\n", "le"),
            ("# TYPE s summary\ns 1\n", "quantile"),
            ("a\n", "value"),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.contains(why), "{text:?}: {e}");
            assert!(e.starts_with("line "), "{e}");
        }
    }
}
