//! A small, safe template language for action arguments: `{{series}}` (the metric name),
//! `{{label.NAME}}`, `{{value}}`, `{{expected}}`, `{{score}}`, `{{id}}` (the anomaly id),
//! `{{severity}}`, `{{chain}}`, `{{state}}`. Nothing else: no expressions, no loops. Each
//! argument of a command is expanded on its own and passed as one argv element, so an event's
//! label can never become a shell command, an option boundary or a second argument.

use serde_json::Value;

/// Expands `template` with the fields of `event` (an anomaly event as JSON). Unknown names and
/// missing labels are errors (a misspelt field must not silently become an empty argument).
pub fn expand(template: &str, event: &Value) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("`{{{{` without `}}}}` in `{template}`"))?;
        let name = after[..end].trim();
        out.push_str(&field(name, event)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks that `template` names only known fields (labels are checked when expanded).
pub fn check(template: &str) -> Result<(), String> {
    let probe = serde_json::json!({
        "id": "", "state": "", "chain": "", "severity": "", "value": 0, "expected": 0,
        "score": 0, "series": {"name": "", "labels": {}},
    });
    match expand(template, &probe) {
        Err(e) if !e.starts_with("no label") => Err(e),
        _ => Ok(()),
    }
}

fn field(name: &str, event: &Value) -> Result<String, String> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    match name {
        "series" => Ok(text(&event["series"]["name"])),
        "id" | "state" | "chain" | "severity" | "value" | "expected" | "score" => {
            Ok(text(&event[name]))
        }
        _ => match name.strip_prefix("label.") {
            Some(label) => event["series"]["labels"]
                .get(label)
                .map(text)
                .ok_or_else(|| format!("no label `{label}` on this series")),
            None => Err(format!(
                "unknown template field `{name}` (series, label.NAME, value, expected, score, id, severity, chain, state)"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Value {
        serde_json::json!({
            "id": "b792832047e556ad", "state": "open", "chain": "default", "severity": "critical",
            "value": 736.5, "expected": 694.2, "score": 1.0,
            "series": {"name": "llm_latency_p99_ms", "labels": {"model": "llama3-8b; rm -rf /"}},
        })
    }

    #[test]
    fn fields_expand_in_place_and_a_label_stays_one_string() {
        let e = event();
        assert_eq!(
            expand("restart {{label.model}} at {{value}}", &e).unwrap(),
            "restart llama3-8b; rm -rf / at 736.5"
        );
        assert_eq!(
            expand("{{series}}/{{id}}", &e).unwrap(),
            "llm_latency_p99_ms/b792832047e556ad"
        );
        assert_eq!(expand("no fields", &e).unwrap(), "no fields");
    }

    #[test]
    fn unknown_fields_and_missing_labels_are_errors() {
        let e = event();
        assert!(
            expand("{{seires}}", &e)
                .unwrap_err()
                .contains("unknown template field")
        );
        assert!(
            expand("{{label.region}}", &e)
                .unwrap_err()
                .contains("no label `region`")
        );
        assert!(expand("{{value", &e).is_err());
        assert!(check("{{label.anything}} {{score}}").is_ok());
        assert!(check("{{sh -c}}").is_err());
    }
}
