//! Field validation shared by the people slice: each check appends to a list of field errors
//! so that one 422 names every problem at once.

use unicode_normalization::UnicodeNormalization;

use super::email::Email;
use crate::domain::TextEnum;
use crate::error::FieldError;
pub use crate::time::{WeeklyWindow, parse_hhmm};

pub const MAX_NAME: usize = 100;
pub const MAX_TEXT: usize = 5_000;

#[derive(Debug, Default)]
pub struct Errors(pub Vec<FieldError>);

impl Errors {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    pub fn into_result(self) -> Result<(), crate::error::ApiError> {
        if self.0.is_empty() { Ok(()) } else { Err(crate::error::ApiError::Validation(self.0)) }
    }

    /// A required name: trimmed, 1 to 100 characters.
    pub fn name(&mut self, field: &str, value: &str) -> String {
        let trimmed = value.trim();
        if trimmed.is_empty() {
            self.add(field, "must not be empty");
        } else if trimmed.chars().count() > MAX_NAME {
            self.add(field, format!("must be at most {MAX_NAME} characters"));
        }
        trimmed.to_owned()
    }

    /// An optional short text: trimmed, empty becomes absent.
    pub fn optional_name(&mut self, field: &str, value: Option<&str>) -> Option<String> {
        let trimmed = value.map(str::trim).filter(|v| !v.is_empty())?;
        if trimmed.chars().count() > MAX_NAME {
            self.add(field, format!("must be at most {MAX_NAME} characters"));
        }
        Some(trimmed.to_owned())
    }

    /// An optional long text (notes, bio).
    pub fn optional_text(&mut self, field: &str, value: Option<&str>) -> Option<String> {
        let trimmed = value.map(str::trim).filter(|v| !v.is_empty())?;
        if trimmed.chars().count() > MAX_TEXT {
            self.add(field, format!("must be at most {MAX_TEXT} characters"));
        }
        Some(trimmed.to_owned())
    }

    pub fn optional_email(&mut self, field: &str, value: Option<&str>) -> Option<String> {
        let raw = value.map(str::trim).filter(|v| !v.is_empty())?;
        match Email::parse(raw) {
            Ok(email) => Some(email.as_str().to_owned()),
            Err(why) => {
                self.add(field, why);
                None
            }
        }
    }

    pub fn email(&mut self, field: &str, value: &str) -> String {
        match Email::parse(value) {
            Ok(email) => email.as_str().to_owned(),
            Err(why) => {
                self.add(field, why);
                String::new()
            }
        }
    }

    /// A phone number: digits with the usual separators, 7 to 15 digits (E.164 allows 15).
    pub fn optional_phone(&mut self, field: &str, value: Option<&str>) -> Option<String> {
        let raw = value.map(str::trim).filter(|v| !v.is_empty())?;
        let digits = raw.chars().filter(char::is_ascii_digit).count();
        let allowed = raw.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c))
            && raw.chars().filter(|c| *c == '+').count() <= 1
            && (!raw.contains('+') || raw.starts_with('+'));
        if !allowed || !(7..=15).contains(&digits) {
            self.add(field, "is not a phone number (7 to 15 digits, e.g. +1 613-555-0199)");
        }
        Some(raw.to_owned())
    }

    /// Instrument names: lower-cased, trimmed, 1 to 50 characters, at most 12, no repeats.
    pub fn instruments(&mut self, field: &str, values: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if values.len() > 12 {
            self.add(field, "lists more than 12 instruments");
        }
        for (i, value) in values.iter().enumerate() {
            let name = value.trim().to_lowercase();
            if name.is_empty() || name.chars().count() > 50 {
                self.add(format!("{field}[{i}]"), "must be 1 to 50 characters");
            } else if !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }

    pub fn instrument(&mut self, field: &str, value: &str) -> String {
        let name = value.trim().to_lowercase();
        if name.is_empty() || name.chars().count() > 50 {
            self.add(field, "must be 1 to 50 characters");
        }
        name
    }

    /// `value` as one of the enum's texts; otherwise a field error listing them.
    pub fn choice<E: TextEnum>(&mut self, field: &str, value: &str) -> Option<E> {
        let parsed = E::parse(value);
        if parsed.is_none() {
            self.add(field, format!("must be one of: {}", E::names()));
        }
        parsed
    }

    /// Like [`Self::choice`] for a value that may be absent.
    pub fn optional_choice<E: TextEnum>(&mut self, field: &str, value: Option<&str>) -> Option<E> {
        value.and_then(|v| self.choice(field, v))
    }

    pub fn windows(&mut self, field: &str, windows: &[WeeklyWindow]) {
        if windows.len() > 50 {
            self.add(field, "lists more than 50 windows");
        }
        for (i, window) in windows.iter().enumerate() {
            if !(1..=7).contains(&window.weekday) {
                self.add(format!("{field}[{i}].weekday"), "must be 1 (Monday) to 7 (Sunday)");
            }
            let start = parse_hhmm(&window.start_time);
            let end = parse_hhmm(&window.end_time);
            if start.is_none() {
                self.add(format!("{field}[{i}].start_time"), "must be a time as HH:MM");
            }
            if end.is_none() {
                self.add(format!("{field}[{i}].end_time"), "must be a time as HH:MM");
            }
            if let (Some(start), Some(end)) = (start, end)
                && start >= end
            {
                self.add(format!("{field}[{i}].end_time"), "must be after start_time");
            }
        }
    }
}

/// Folds text for accent- and case-insensitive search: "Hélène Côté" → "helene cote".
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.nfkd() {
        if unicode_normalization::char::is_combining_mark(c) {
            continue;
        }
        match c {
            'œ' | 'Œ' => out.push_str("oe"),
            'æ' | 'Æ' => out.push_str("ae"),
            'ß' => out.push_str("ss"),
            'ø' | 'Ø' => out.push('o'),
            'ł' | 'Ł' => out.push('l'),
            c => out.extend(c.to_lowercase()),
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `q` → up to three LIKE patterns, one per word, with LIKE's wildcards escaped (`\`).
pub fn search_patterns(q: Option<&str>) -> [Option<String>; 3] {
    let folded = q.map(fold).unwrap_or_default();
    let mut words = folded.split(' ').filter(|w| !w.is_empty()).map(|w| {
        let escaped = w.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        format!("%{escaped}%")
    });
    [words.next(), words.next(), words.next()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_removes_accents_and_case() {
        assert_eq!(fold("Hélène  CÔTÉ"), "helene cote");
        assert_eq!(fold("Zoë Lefèvre-Bœuf"), "zoe lefevre-boeuf");
        assert_eq!(fold("François Ørsted"), "francois orsted");
    }

    #[test]
    fn phone_numbers() {
        let mut e = Errors::default();
        e.optional_phone("phone", Some("+1 (613) 555-0199"));
        e.optional_phone("phone", Some("613.555.0199"));
        assert!(e.0.is_empty());
        e.optional_phone("phone", Some("call me"));
        e.optional_phone("phone", Some("12"));
        e.optional_phone("phone", Some("1+2345678"));
        assert_eq!(e.0.len(), 3);
    }

    #[test]
    fn windows_are_checked() {
        let mut e = Errors::default();
        e.windows(
            "preferred_times",
            &[
                WeeklyWindow { weekday: 1, start_time: "16:00".into(), end_time: "18:00".into() },
                WeeklyWindow { weekday: 8, start_time: "9:00".into(), end_time: "08:00".into() },
            ],
        );
        let fields: Vec<_> = e.0.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["preferred_times[1].weekday", "preferred_times[1].start_time"]);
    }

    #[test]
    fn search_words_are_escaped() {
        assert_eq!(search_patterns(Some("Côté 50%")), [Some("%cote%".into()), Some("%50\\%%".into()), None]);
    }
}
