//! Who may use the workbench: users from `[[ui.users]]` with Argon2 password hashes, or a token
//! from the environment; sessions kept in memory (a restart logs everybody out), each with its
//! own token every form must carry (no cross-site request can act for a logged-in user).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::http::HeaderMap;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::{Role, Ui};

/// The session cookie's name.
pub const COOKIE: &str = "odoo_cdc_session";

/// A logged-in person.
#[derive(Debug, Clone)]
pub struct Session {
    /// Login name (`token` for the operator token, `viewer-token` for the viewer one).
    pub user: String,
    /// What they may do.
    pub role: Role,
    /// The token every form of this session carries.
    pub csrf: String,
    expires: Instant,
}

impl Session {
    /// Whether this session may act (replay, discard, reconcile).
    pub fn operator(&self) -> bool {
        self.role == Role::Operator
    }

    /// `name (role)`, as the audit trail records the actor.
    pub fn actor(&self) -> String {
        let role = match self.role {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        };
        format!("{} ({role})", self.user)
    }
}

/// Users, tokens and the sessions logged in.
pub struct Auth {
    users: Vec<(String, Role, String)>,
    tokens: Vec<([u8; 32], Role, &'static str)>,
    lifetime: Duration,
    sessions: Mutex<HashMap<String, Session>>,
    /// Mark the cookie `Secure`.
    pub secure_cookie: bool,
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// 32 random bytes, hex.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An Argon2id PHC string for `password` (`odoo-cdc ui hash-password`).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

fn verify(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

impl Auth {
    /// From `[ui]` (environment applied).
    pub fn new(ui: &Ui) -> Self {
        let mut tokens = Vec::new();
        if !ui.token.expose().is_empty() {
            tokens.push((digest(ui.token.expose()), Role::Operator, "token"));
        }
        if !ui.viewer_token.expose().is_empty() {
            tokens.push((
                digest(ui.viewer_token.expose()),
                Role::Viewer,
                "viewer-token",
            ));
        }
        Self {
            users: ui
                .users
                .iter()
                .map(|u| (u.name.clone(), u.role, u.password_hash.expose().to_string()))
                .collect(),
            tokens,
            lifetime: Duration::from_secs(ui.session_hours.saturating_mul(3600)),
            sessions: Mutex::new(HashMap::new()),
            secure_cookie: ui.secure_cookie,
        }
    }

    /// Checks a login (a name and password, or a token); a new session id when it holds.
    pub async fn login(&self, user: &str, password: &str, token: &str) -> Option<String> {
        let found = if !token.is_empty() {
            let d = digest(token);
            self.tokens
                .iter()
                .find(|(t, _, _)| *t == d)
                .map(|(_, role, name)| ((*name).to_string(), *role))
        } else {
            let entry = self.users.iter().find(|(n, _, _)| n == user).cloned();
            // Argon2 is slow on purpose: off the async workers.
            let (hash, role) = match &entry {
                Some((_, role, hash)) => (hash.clone(), Some(*role)),
                None => (String::new(), None),
            };
            let password = password.to_string();
            let ok = tokio::task::spawn_blocking(move || verify(&hash, &password))
                .await
                .unwrap_or(false);
            match (ok, role) {
                (true, Some(role)) => Some((user.to_string(), role)),
                _ => None,
            }
        };
        let Some((user, role)) = found else {
            // A failed login costs the caller time (guessing is slow), not the server.
            tokio::time::sleep(Duration::from_millis(400)).await;
            return None;
        };
        let id = random_token();
        let session = Session {
            user,
            role,
            csrf: random_token(),
            expires: Instant::now() + self.lifetime,
        };
        if let Ok(mut g) = self.sessions.lock() {
            let now = Instant::now();
            g.retain(|_, s| s.expires > now);
            g.insert(id.clone(), session);
        }
        Some(id)
    }

    /// The session the request's cookie names, if it is live.
    pub fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers, COOKIE)?;
        let g = self.sessions.lock().ok()?;
        g.get(&id).filter(|s| s.expires > Instant::now()).cloned()
    }

    /// Ends the request's session.
    pub fn logout(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, COOKIE) {
            if let Ok(mut g) = self.sessions.lock() {
                g.remove(&id);
            }
        }
    }

    /// The `Set-Cookie` value for session `id` (empty `id`: removes the cookie).
    pub fn set_cookie(&self, id: &str) -> String {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        let age = if id.is_empty() {
            "; Max-Age=0".to_string()
        } else {
            format!("; Max-Age={}", self.lifetime.as_secs())
        };
        format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{age}{secure}")
    }
}

/// A cookie's value.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, UiUser};

    fn ui() -> Ui {
        Ui {
            listen: "127.0.0.1:0".into(),
            users: vec![UiUser {
                name: "vera".into(),
                role: Role::Viewer,
                password_hash: Secret(hash_password("correct horse").unwrap()),
            }],
            token: Secret("operator-token-0123456789".into()),
            viewer_token: Secret::default(),
            session_hours: 1,
            secure_cookie: true,
        }
    }

    fn with_cookie(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::COOKIE, v.parse().unwrap());
        h
    }

    #[tokio::test]
    async fn a_password_or_token_logs_in_with_its_role_and_nothing_else_does() {
        let auth = Auth::new(&ui());
        assert!(auth.login("vera", "wrong", "").await.is_none());
        assert!(auth.login("nobody", "correct horse", "").await.is_none());
        assert!(auth.login("", "", "not-the-token").await.is_none());
        let id = auth.login("vera", "correct horse", "").await.unwrap();
        let s = auth
            .session(&with_cookie(&format!("other=1; {COOKIE}={id}")))
            .unwrap();
        assert_eq!((s.user.as_str(), s.operator()), ("vera", false));
        assert_eq!(s.actor(), "vera (viewer)");
        let op = auth
            .login("", "", "operator-token-0123456789")
            .await
            .unwrap();
        let s = auth
            .session(&with_cookie(&format!("{COOKIE}={op}")))
            .unwrap();
        assert!(s.operator());
        assert_ne!(s.csrf, op);
        // A made-up or ended session is nobody.
        assert!(auth
            .session(&with_cookie(&format!("{COOKIE}=abc")))
            .is_none());
        auth.logout(&with_cookie(&format!("{COOKIE}={op}")));
        assert!(auth
            .session(&with_cookie(&format!("{COOKIE}={op}")))
            .is_none());
        let c = auth.set_cookie(&id);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("Secure"));
    }
}
