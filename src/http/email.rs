//! A validated, normalised email address.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Trims and lower-cases; checks the shape `local@domain.tld` without spaces. Whether the
    /// mailbox exists is for email delivery to find out.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let email = raw.trim().to_lowercase();
        if email.len() > 254 {
            return Err("is longer than 254 characters");
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err("is not an email address");
        };
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '.');
        if local.is_empty()
            || local.len() > 64
            || !domain_ok
            || email.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("is not an email address");
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Email;

    #[test]
    fn normalises_and_rejects() {
        assert_eq!(Email::parse("  Hélène.Côté@Example.CA ").unwrap().as_str(), "hélène.côté@example.ca");
        for bad in ["", "no-at", "a@b", "a b@example.com", "@example.com", "a@.example.com", "a@example..com"] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }
}
