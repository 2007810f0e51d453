//! The remediator's HTTP endpoint: the approvals API and a small status page (server-rendered
//! HTML, no external assets). Loopback by default; bound elsewhere it requires a token.
//!
//! - `GET /` — open incidents, pending approvals with approve and deny buttons, recent decisions.
//! - `GET /api/pending` — pending approvals as JSON.
//! - `POST /api/approvals` — a JSON approval `{"incident", "step", "decision", "who", "why"}`.
//! - `POST /approve` — the same from the page's form (form-encoded), answered with a redirect.
//!
//! With a token, requests must carry `Authorization: Bearer <token>` (the form carries it as a
//! hidden field when the page was loaded with it).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::machine::IncidentView;

/// What the page shows, refreshed by the remediator's loop.
#[derive(Debug, Default)]
pub struct Status {
    /// Open incidents.
    pub incidents: Vec<IncidentView>,
    /// The latest decisions, newest last.
    pub recent: VecDeque<Value>,
    /// What each step did per kind of anomaly ([`crate::machine::Machine::rates`]).
    pub rates: Vec<Value>,
}

/// Most decisions the page keeps.
pub const RECENT: usize = 50;

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(status: &Status, token: Option<&str>) -> String {
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>telltale remediator</title>\
         <style>body{font:14px sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}\
         td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}</style></head><body>\
         <h1>telltale remediator</h1><h2>Pending approvals</h2><table><tr><th>incident</th>\
         <th>policy</th><th>series</th><th>step</th><th></th></tr>",
    );
    let hidden = token.map_or(String::new(), |t| {
        format!(
            "<input type=\"hidden\" name=\"token\" value=\"{}\">",
            escape(t)
        )
    });
    for i in status.incidents.iter().filter(|i| i.pending) {
        html.push_str(&format!(
            "<tr id=\"pending-{id}\"><td>{id}</td><td>{policy}</td><td>{series} {labels}</td><td>{step}</td><td>\
             <form method=\"post\" action=\"/approve\">{hidden}\
             <input type=\"hidden\" name=\"incident\" value=\"{id}\"><input type=\"hidden\" name=\"step\" value=\"{step}\">\
             <input name=\"who\" placeholder=\"who\" value=\"\"><input name=\"why\" placeholder=\"why\" value=\"\">\
             <button name=\"decision\" value=\"approve\">approve</button>\
             <button name=\"decision\" value=\"deny\">deny</button></form></td></tr>",
            id = escape(&i.id),
            policy = escape(&i.policy),
            series = escape(&i.series),
            labels = escape(&i.labels),
            step = escape(&i.step),
        ));
    }
    html.push_str("</table><h2>Open incidents</h2><table><tr><th>incident</th><th>policy</th><th>series</th><th>step</th><th>state</th></tr>");
    for i in &status.incidents {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td></tr>",
            escape(&i.id),
            escape(&i.policy),
            escape(&i.series),
            escape(&i.labels),
            escape(&i.step),
            i.phase
        ));
    }
    html.push_str("</table><h2>What each step did</h2><table><tr><th>policy</th><th>kind of anomaly</th><th>step</th><th>runs</th><th>fixed</th><th>rate</th></tr>");
    for r in &status.rates {
        let (runs, fixed) = (
            r["runs"].as_u64().unwrap_or(0),
            r["fixed"].as_u64().unwrap_or(0),
        );
        html.push_str(&format!(
            "<tr class=\"rate\"><td>{}</td><td>{}</td><td>{}</td><td>{runs}</td><td>{fixed}</td><td>{:.0} %</td></tr>",
            escape(r["policy"].as_str().unwrap_or_default()),
            escape(r["kind"].as_str().unwrap_or_default()),
            escape(r["step"].as_str().unwrap_or_default()),
            if runs > 0 { 100.0 * fixed as f64 / runs as f64 } else { 0.0 }
        ));
    }
    html.push_str("</table><h2>Recent decisions</h2><table><tr><th>at</th><th>incident</th><th>decision</th><th>detail</th></tr>");
    for r in status.recent.iter().rev() {
        let detail = ["step", "why", "outcome", "who", "detail"]
            .iter()
            .filter_map(|k| r[*k].as_str().map(|v| format!("{k}: {v}")))
            .collect::<Vec<_>>()
            .join("; ");
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td class=\"decision\">{}</td><td>{}</td></tr>",
            r["at"],
            escape(r["incident"].as_str().unwrap_or_default()),
            escape(r["decision"].as_str().unwrap_or_default()),
            escape(&detail)
        ));
    }
    html.push_str("</table></body></html>");
    html
}

/// Decodes `application/x-www-form-urlencoded`.
fn form(body: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    match u8::from_str_radix(
                        std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or(""),
                        16,
                    ) {
                        Ok(v) => {
                            out.push(v);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Serves the endpoint on `listen` until the process ends; approvals go to `approvals`.
pub fn serve(
    listen: &str,
    token: Option<String>,
    status: Arc<Mutex<Status>>,
    approvals: std::sync::mpsc::Sender<Value>,
) -> std::io::Result<String> {
    let server = tiny_http::Server::http(listen).map_err(std::io::Error::other)?;
    let addr = server
        .server_addr()
        .to_ip()
        .map_or_else(|| listen.to_owned(), |a| a.to_string());
    std::thread::Builder::new()
        .name("telltale-remediate-http".into())
        .spawn(move || {
            for mut req in server.incoming_requests() {
                let url = req.url().to_owned();
                let (path, query) = url.split_once('?').unwrap_or((&url, ""));
                let bearer = req
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Authorization"))
                    .map(|h| h.value.as_str().trim_start_matches("Bearer ").to_owned());
                let mut body = String::new();
                let _ = req.as_reader().read_to_string(&mut body);
                let query_token = form(query)
                    .into_iter()
                    .find(|(k, _)| k == "token")
                    .map(|(_, v)| v);
                let form_token = form(&body)
                    .into_iter()
                    .find(|(k, _)| k == "token")
                    .map(|(_, v)| v);
                let allowed = token.as_deref().is_none_or(|t| {
                    [&bearer, &query_token, &form_token]
                        .iter()
                        .any(|x| x.as_deref() == Some(t))
                });
                let text = |code: u16, body: String, ctype: &str| {
                    tiny_http::Response::from_string(body).with_status_code(code).with_header(
                        tiny_http::Header::from_bytes("Content-Type", ctype).expect("header"),
                    )
                };
                if !allowed {
                    let _ = req.respond(text(401, "a token is required\n".into(), "text/plain"));
                    continue;
                }
                let method = req.method().as_str().to_owned();
                let response = match (method.as_str(), path) {
                    ("GET", "/") => {
                        let s = status.lock().unwrap_or_else(|e| e.into_inner());
                        text(200, page(&s, query_token.as_deref()), "text/html; charset=utf-8")
                    }
                    ("GET", "/api/pending") => {
                        let s = status.lock().unwrap_or_else(|e| e.into_inner());
                        let pending: Vec<&IncidentView> = s.incidents.iter().filter(|i| i.pending).collect();
                        text(200, json!(pending).to_string(), "application/json")
                    }
                    ("POST", "/api/approvals") => match serde_json::from_str::<Value>(&body) {
                        Ok(v) if v["incident"].is_string() && v["step"].is_string() => {
                            let _ = approvals.send(v);
                            text(202, "{\"accepted\":true}".into(), "application/json")
                        }
                        _ => text(400, "expected {\"incident\", \"step\", \"decision\", \"who\", \"why\"}\n".into(), "text/plain"),
                    },
                    ("POST", "/approve") => {
                        let f = form(&body);
                        let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
                        let _ = approvals.send(json!({
                            "incident": get("incident"), "step": get("step"), "decision": get("decision"),
                            "who": get("who"), "why": get("why"),
                        }));
                        let to = match &query_token {
                            Some(t) => format!("/?token={t}"),
                            None => "/".into(),
                        };
                        text(303, String::new(), "text/plain").with_header(
                            tiny_http::Header::from_bytes("Location", to.as_bytes()).expect("header"),
                        )
                    }
                    _ => text(404, "not found\n".into(), "text/plain"),
                };
                let _ = req.respond(response);
            }
        })?;
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_and_html_is_escaped() {
        assert_eq!(
            form("incident=a1&who=Ana+B&why=ok%2C+go&x"),
            vec![
                ("incident".into(), "a1".into()),
                ("who".into(), "Ana B".into()),
                ("why".into(), "ok, go".into()),
                ("x".into(), String::new()),
            ]
        );
        assert_eq!(
            escape("<script>\"x\"&'"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;"
        );
    }
}
