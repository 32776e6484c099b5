//! Odoo's faults, classified once: what Odoo refused for a reason (access, validation, a
//! missing record, a bad argument) is permanent and goes to the dead-letter queue with Odoo's
//! text; what may pass (a serialization failure, a lost connection, a 5xx) is retried.

use crate::policy::{Class, SinkError};

/// Classifies an Odoo exception by its qualified name (`odoo.exceptions.ValidationError`,
/// `psycopg2.errors.SerializationFailure`, ...).
pub fn classify_fault(name: &str, message: &str) -> Class {
    let transient_names = [
        "SerializationFailure",
        "TransactionRollbackError",
        "OperationalError",
        "InterfaceError",
        "LockNotAvailable",
        "DeadlockDetected",
        "ConcurrencyError",
    ];
    if transient_names.iter().any(|t| name.contains(t))
        || message.contains("could not serialize access")
        || message.contains("concurrent update")
    {
        return Class::Transient;
    }
    Class::Permanent
}

/// A fault Odoo answered, as a sink error (the reason keeps Odoo's exception name and text).
pub fn fault(what: &str, name: &str, message: &str) -> SinkError {
    let text = format!(
        "{what}: {name}: {}",
        message.chars().take(1000).collect::<String>()
    );
    match classify_fault(name, message) {
        Class::Transient => SinkError::transient(text),
        Class::Permanent => SinkError::permanent(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odoo_faults_are_classified() {
        for (name, msg) in [
            ("odoo.exceptions.AccessDenied", "Access Denied"),
            ("odoo.exceptions.ValidationError", "Contacts require a name"),
            ("odoo.exceptions.UserError", "already confirmed"),
            ("odoo.exceptions.MissingError", "Record does not exist"),
            ("builtins.ValueError", "Invalid field"),
        ] {
            assert_eq!(classify_fault(name, msg), Class::Permanent, "{name}");
        }
        for (name, msg) in [
            ("psycopg2.errors.SerializationFailure", "x"),
            (
                "builtins.Exception",
                "could not serialize access due to concurrent update",
            ),
            ("psycopg2.OperationalError", "server closed the connection"),
        ] {
            assert_eq!(classify_fault(name, msg), Class::Transient, "{name}");
        }
    }
}
