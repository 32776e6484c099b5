//! HTML pieces: escaping, the page frame with its navigation, forms that carry the session's
//! token. Everything the browser needs is in the page (no build chain, nothing fetched).

use super::auth::Session;

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
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

/// Percent-encodes a query value.
pub fn url_enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

const CSS: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}\
header{background:#1d2330;color:#fff;padding:8px 16px;display:flex;gap:18px;align-items:center}\
header a{color:#cfd8ea;text-decoration:none}header a.on{color:#fff;font-weight:600}\
header .who{margin-left:auto;color:#cfd8ea}header form{display:inline}\
main{padding:16px;max-width:1200px}h1{font-size:20px;margin:4px 0 12px}h2{font-size:16px;margin:18px 0 8px}\
table{border-collapse:collapse;background:#fff;width:100%;margin-bottom:10px}\
th,td{border:1px solid #dde1e8;padding:4px 8px;text-align:left;vertical-align:top}\
th{background:#eef1f6;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}\
.ok{color:#1a7f37;font-weight:600}.bad{color:#c62828;font-weight:600}.muted{color:#6b7280}\
.banner{padding:8px 12px;margin:0 0 12px;border-radius:4px}.banner.ok{background:#e6f4ea}.banner.bad{background:#fdecea}\
.flash{background:#fff7d6;padding:8px 12px;border:1px solid #f0d77a;margin-bottom:12px}\
pre{background:#fff;border:1px solid #dde1e8;padding:8px;overflow:auto;max-height:420px}\
form.inline{display:inline}input,select,button{font:inherit}button{cursor:pointer}\
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{margin:0;background:#fff;border:1px solid #dde1e8;padding:6px}\
.chart .bg{fill:#fbfcfe}.chart .line{stroke:#2f6fde;stroke-width:1.5}.chart .grid{stroke:#e3e7ee;stroke-width:1}.chart .axis{font-size:10px;fill:#6b7280}\
.filters{margin-bottom:10px}.filters label{margin-right:10px}";

/// Refreshes the Now page every 15 s unless paused (a little JS; the page works without it).
const JS: &str = "\
(function(){var b=document.getElementById('autorefresh');if(!b)return;var on=localStorage.getItem('odoo-cdc-pause')!=='1';\
function show(){b.textContent=on?'Pause auto-refresh':'Resume auto-refresh';}show();\
b.addEventListener('click',function(){on=!on;localStorage.setItem('odoo-cdc-pause',on?'0':'1');show();});\
setInterval(function(){if(on)location.reload();},15000);})();";

const NAV: [(&str, &str); 5] = [
    ("/", "Now"),
    ("/exceptions", "Exceptions"),
    ("/blocked", "Blocked orders"),
    ("/drift", "Drift"),
    ("/trail", "Order trail"),
];

/// A whole page: navigation, who is logged in (with a logout), an optional flash message.
pub fn page(title: &str, here: &str, session: &Session, flash: Option<&str>, body: &str) -> String {
    let nav: String = NAV
        .iter()
        .map(|(href, name)| {
            let on = if *href == here { " class=\"on\"" } else { "" };
            format!("<a href=\"{href}\"{on}>{name}</a>")
        })
        .collect();
    let flash = flash
        .filter(|f| !f.is_empty())
        .map(|f| format!("<div class=\"flash\" id=\"flash\">{}</div>", esc(f)))
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · odoo-cdc</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><style>{CSS}</style></head><body>\
         <header><strong>odoo-cdc</strong>{nav}<span class=\"who\" id=\"who\">{}</span>\
         <form method=\"post\" action=\"/logout\">{}<button id=\"logout\">Log out</button></form></header>\
         <main><h1>{}</h1>{flash}{body}</main><script>{JS}</script></body></html>",
        esc(title),
        esc(&session.actor()),
        csrf(session),
        esc(title),
    )
}

/// The hidden field every form of `session` carries.
pub fn csrf(session: &Session) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&session.csrf)
    )
}

/// The login page.
pub fn login(message: Option<&str>) -> String {
    let message = message
        .map(|m| {
            format!(
                "<div class=\"banner bad\" id=\"login-error\">{}</div>",
                esc(m)
            )
        })
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Log in · odoo-cdc</title>\
         <style>{CSS}</style></head><body><main><h1>odoo-cdc workbench</h1>{message}\
         <form method=\"post\" action=\"/login\"><table>\
         <tr><th><label for=\"user\">User</label></th><td><input id=\"user\" name=\"user\" autocomplete=\"username\"></td></tr>\
         <tr><th><label for=\"password\">Password</label></th><td><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\"></td></tr>\
         <tr><th><label for=\"token\">or token</label></th><td><input id=\"token\" name=\"token\" type=\"password\"></td></tr>\
         </table><button id=\"login\">Log in</button></form></main></body></html>"
    )
}

/// A table: header cells and rows of already-escaped cells.
pub fn table(id: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("<table id=\"{id}\"><thead><tr>");
    for h in head {
        out.push_str(&format!("<th>{}</th>", esc(h)));
    }
    out.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        out.push_str(&format!(
            "<tr><td colspan=\"{}\" class=\"muted\">none</td></tr>",
            head.len()
        ));
    }
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            out.push_str(&format!("<td>{c}</td>"));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// `ok` or `bad`, as a cell.
pub fn status(ok: bool, text: &str) -> String {
    let class = if ok { "ok" } else { "bad" };
    format!("<span class=\"{class}\">{}</span>", esc(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_outside_cannot_become_markup() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        assert_eq!(url_enc("SKU 1@WH/ü"), "SKU%201%40WH%2F%C3%BC");
    }
}
