//! The XML-RPC codec of the Odoo client: a `methodCall` from JSON values, and a
//! `methodResponse` (value or fault) back to JSON. Odoo speaks XML-RPC with `allow_none`
//! (`<nil/>`), and big integers arrive as `<int>` or `<i8>` text; numbers are kept exact.

use quick_xml::events::Event;
use quick_xml::Reader;
use serde_json::{Map, Value};

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            c => out.push(c),
        }
    }
    out
}

fn encode_value(v: &Value, out: &mut String) {
    out.push_str("<value>");
    match v {
        Value::Null => out.push_str("<nil/>"),
        Value::Bool(b) => out.push_str(&format!("<boolean>{}</boolean>", u8::from(*b))),
        Value::Number(n) => {
            let text = n.to_string();
            if text.contains(['.', 'e', 'E']) {
                out.push_str(&format!("<double>{text}</double>"));
            } else {
                out.push_str(&format!("<int>{text}</int>"));
            }
        }
        Value::String(s) => out.push_str(&format!("<string>{}</string>", escape(s))),
        Value::Array(items) => {
            out.push_str("<array><data>");
            for i in items {
                encode_value(i, out);
            }
            out.push_str("</data></array>");
        }
        Value::Object(m) => {
            out.push_str("<struct>");
            for (k, v) in m {
                out.push_str(&format!("<member><name>{}</name>", escape(k)));
                encode_value(v, out);
                out.push_str("</member>");
            }
            out.push_str("</struct>");
        }
    }
    out.push_str("</value>");
}

/// A `methodCall` document.
pub fn encode_call(method: &str, params: &[Value]) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\"?>\n<methodCall><methodName>{}</methodName><params>",
        escape(method)
    );
    for p in params {
        out.push_str("<param>");
        encode_value(p, &mut out);
        out.push_str("</param>");
    }
    out.push_str("</params></methodCall>");
    out
}

#[derive(Debug, Default)]
struct Node {
    name: String,
    text: String,
    children: Vec<Node>,
}

fn tree(xml: &str) -> Result<Node, String> {
    let mut reader = Reader::from_str(xml);
    let mut stack = vec![Node::default()];
    loop {
        match reader
            .read_event()
            .map_err(|e| format!("invalid xml: {e}"))?
        {
            Event::Start(e) => stack.push(Node {
                name: e.name().as_ref().to_string(),
                ..Node::default()
            }),
            Event::Empty(e) => {
                let n = Node {
                    name: e.name().as_ref().to_string(),
                    ..Node::default()
                };
                stack.last_mut().ok_or("unbalanced xml")?.children.push(n);
            }
            Event::Text(t) => {
                // Entities arrive as separate GeneralRef events: the text is literal.
                stack
                    .last_mut()
                    .ok_or("unbalanced xml")?
                    .text
                    .push_str(&t.into_inner());
            }
            Event::CData(t) => {
                stack
                    .last_mut()
                    .ok_or("unbalanced xml")?
                    .text
                    .push_str(&t.into_inner());
            }
            Event::GeneralRef(r) => {
                let name = r.into_inner().into_owned();
                let ch = match name.as_str() {
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "amp" => Some('&'),
                    "quot" => Some('"'),
                    "apos" => Some('\''),
                    n => n
                        .strip_prefix("#x")
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .or_else(|| n.strip_prefix('#').and_then(|d| d.parse().ok()))
                        .and_then(char::from_u32),
                };
                let ch = ch.ok_or_else(|| format!("unknown entity &{name};"))?;
                stack.last_mut().ok_or("unbalanced xml")?.text.push(ch);
            }
            Event::End(_) => {
                let done = stack.pop().ok_or("unbalanced xml")?;
                stack
                    .last_mut()
                    .ok_or("unbalanced xml")?
                    .children
                    .push(done);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    stack.pop().ok_or_else(|| "empty document".to_string())
}

fn child<'a>(n: &'a Node, name: &str) -> Option<&'a Node> {
    n.children.iter().find(|c| c.name == name)
}

fn decode_value(v: &Node) -> Result<Value, String> {
    let Some(inner) = v.children.first() else {
        // A bare <value>text</value> is a string.
        return Ok(Value::String(v.text.clone()));
    };
    let text = inner.text.trim();
    Ok(match inner.name.as_str() {
        "nil" => Value::Null,
        "boolean" => Value::Bool(text == "1"),
        "int" | "i4" | "i8" | "double" => Value::Number(
            text.parse()
                .map_err(|_| format!("bad number <{}>{text}", inner.name))?,
        ),
        "string" | "dateTime.iso8601" | "base64" => Value::String(inner.text.clone()),
        "array" => {
            let data = child(inner, "data").ok_or("array without data")?;
            Value::Array(
                data.children
                    .iter()
                    .map(decode_value)
                    .collect::<Result<_, _>>()?,
            )
        }
        "struct" => {
            let mut m = Map::new();
            for member in &inner.children {
                let name = child(member, "name")
                    .map(|n| n.text.clone())
                    .unwrap_or_default();
                let value = child(member, "value").ok_or("member without value")?;
                m.insert(name, decode_value(value)?);
            }
            Value::Object(m)
        }
        other => return Err(format!("unknown XML-RPC type <{other}>")),
    })
}

/// What a `methodResponse` carried.
#[derive(Debug, PartialEq)]
pub enum Response {
    /// The return value.
    Value(Value),
    /// A fault: code and string.
    Fault(i64, String),
}

/// Decodes a `methodResponse`.
pub fn decode_response(xml: &str) -> Result<Response, String> {
    let root = tree(xml)?;
    let resp = child(&root, "methodResponse").ok_or("not a methodResponse")?;
    if let Some(fault) = child(resp, "fault") {
        let v = decode_value(child(fault, "value").ok_or("fault without value")?)?;
        let code = v["faultCode"].as_i64().unwrap_or(1);
        let text = v["faultString"].as_str().unwrap_or("").to_string();
        return Ok(Response::Fault(code, text));
    }
    let value = child(resp, "params")
        .and_then(|p| child(p, "param"))
        .and_then(|p| child(p, "value"))
        .ok_or("methodResponse without a value")?;
    Ok(Response::Value(decode_value(value)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_call_encodes_nested_values_and_escapes_text() {
        let xml = encode_call(
            "execute_kw",
            &[
                json!("odoo"),
                json!(2),
                json!([["name", "=", "a<b&c"]]),
                json!({"limit": 1, "x": null, "f": true}),
            ],
        );
        assert!(xml.contains("<methodName>execute_kw</methodName>"));
        assert!(xml.contains("<string>a&lt;b&amp;c</string>"));
        assert!(xml.contains("<member><name>limit</name><value><int>1</int></value></member>"));
        assert!(xml.contains("<nil/>"));
        assert!(xml.contains("<boolean>1</boolean>"));
    }

    #[test]
    fn responses_and_faults_decode() {
        let ok = "<?xml version='1.0'?><methodResponse><params><param><value><array><data>\
                  <value><int>7</int></value><value><string>S&amp;P</string></value>\
                  <value><struct><member><name>id</name><value><int>9007199254740993</int></value></member></struct></value>\
                  <value><boolean>0</boolean></value><value><double>1.5</double></value>\
                  </data></array></value></param></params></methodResponse>";
        assert_eq!(
            decode_response(ok).unwrap(),
            Response::Value(json!([7, "S&P", {"id": 9007199254740993_u64}, false, 1.50]))
        );
        let fault = "<?xml version='1.0'?><methodResponse><fault><value><struct>\
                     <member><name>faultCode</name><value><int>2</int></value></member>\
                     <member><name>faultString</name><value><string>Contacts require a name</string></value></member>\
                     </struct></value></fault></methodResponse>";
        assert_eq!(
            decode_response(fault).unwrap(),
            Response::Fault(2, "Contacts require a name".into())
        );
        assert!(decode_response("<html>502 Bad Gateway</html>").is_err());
    }
}
