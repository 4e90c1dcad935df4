//! Password hashes (argon2id with the crate's memory-hard defaults: 19 MiB, 2 passes) and the
//! checks on user names and passwords that the CLI and the login form share.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Why a user name or password is refused, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct CredentialError {
    /// `name` or `password`.
    pub field: &'static str,
    /// What is wrong.
    pub problem: String,
}

/// Shortest password taken.
pub const MIN_PASSWORD: usize = 12;
/// Longest password taken (argon2 would take more; a bound keeps a login cheap to refuse).
pub const MAX_PASSWORD: usize = 1024;

/// A user name: 1 to 64 of letters, digits, `.`, `-`, `_`, `@`.
pub fn check_name(name: &str) -> Result<(), CredentialError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(CredentialError {
            field: "name",
            problem: format!("{name:?} must be 1 to 64 letters, digits, '.', '-', '_' or '@'"),
        })
    }
}

/// A new password: `MIN_PASSWORD` to `MAX_PASSWORD` characters, not all blank.
pub fn check_password(password: &str) -> Result<(), CredentialError> {
    let n = password.chars().count();
    let problem = if n < MIN_PASSWORD {
        format!("{n} characters; at least {MIN_PASSWORD} are needed")
    } else if password.len() > MAX_PASSWORD {
        format!("longer than {MAX_PASSWORD} octets")
    } else if password.trim().is_empty() {
        "only blanks".to_string()
    } else {
        return Ok(());
    };
    Err(CredentialError {
        field: "password",
        problem,
    })
}

/// The argon2id hash of a password, in PHC form.
pub fn hash(password: &str) -> Result<String, CredentialError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| CredentialError {
            field: "password",
            problem: format!("cannot hash: {e}"),
        })
}

/// Whether `password` matches a stored hash (false for a hash that does not parse).
pub fn verify(password: &str, stored: &str) -> bool {
    if password.len() > MAX_PASSWORD {
        return false;
    }
    PasswordHash::new(stored).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A hash no password matches, verified for unknown user names so that a login takes the
/// same time whether the name exists or not.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash("decoy password, never a user's").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("correct horse battery", &h));
        assert!(!verify("correct horse batterY", &h));
        assert!(!verify("anything", "not a hash"));
    }

    #[test]
    fn bad_names_and_passwords_name_their_field() {
        assert_eq!(check_name("").unwrap_err().field, "name");
        assert_eq!(check_name("a b").unwrap_err().field, "name");
        assert!(check_name("ops.alice@acme").is_ok());
        assert_eq!(check_password("short").unwrap_err().field, "password");
        assert_eq!(
            check_password("            ").unwrap_err().field,
            "password"
        );
        assert!(check_password("long enough passphrase").is_ok());
    }
}
