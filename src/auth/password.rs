//! Password hashing: argon2id with OWASP's recommended parameters (19 MiB, 2 passes, 1 lane).
//! Hashing runs on the blocking pool so it never stalls the async workers.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

pub const MIN_LENGTH: usize = 8;
pub const MAX_LENGTH: usize = 256;

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("static argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Why a password is refused, in words for the person choosing it.
pub fn weakness(password: &str) -> Option<String> {
    let chars = password.chars().count();
    if chars < MIN_LENGTH {
        return Some(format!("Password should be at least {MIN_LENGTH} characters"));
    }
    if password.len() > MAX_LENGTH {
        return Some(format!("Password should be at most {MAX_LENGTH} bytes"));
    }
    if password.trim().is_empty() {
        return Some("Password should not be only spaces".to_owned());
    }
    None
}

/// At most this many argon2 computations run at once (19 MiB and ~25 ms of a core each);
/// the rest queue, so a burst of sign-ins cannot take the machine's memory or every core.
const CONCURRENT_HASHES: usize = 4;

fn permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(CONCURRENT_HASHES);
    &PERMITS
}

pub async fn hash(password: String) -> anyhow::Result<String> {
    let _permit = permits().acquire().await?;
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
        argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
    })
    .await?
}

/// Checks `password` against a stored hash. With no hash (unknown account, or an account
/// without a password) it still spends the same work on a dummy hash, so response timing does
/// not reveal whether the account exists.
pub async fn verify(password: String, stored: Option<String>) -> bool {
    let Ok(_permit) = permits().acquire().await else { return false };
    tokio::task::spawn_blocking(move || {
        let (hash, real) = match stored {
            Some(hash) => (hash, true),
            None => (dummy_hash().to_owned(), false),
        };
        let Ok(parsed) = PasswordHash::new(&hash) else {
            return false;
        };
        let matches = argon2().verify_password(password.as_bytes(), &parsed).is_ok();
        real && matches
    })
    .await
    .unwrap_or(false)
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::encode_b64(b"cedar-dummy-salt").expect("static salt");
        argon2().hash_password(b"not a real password", &salt).expect("static hash").to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let hash = hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(verify("correct horse".into(), Some(hash.clone())).await);
        assert!(!verify("wrong horse".into(), Some(hash)).await);
        assert!(!verify("anything".into(), None).await);
    }

    #[test]
    fn weak_passwords_are_named() {
        assert!(weakness("short").is_some());
        assert!(weakness("        ").is_some());
        assert!(weakness(&"x".repeat(300)).is_some());
        assert!(weakness("eight ch").is_none());
    }
}
