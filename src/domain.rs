//! Value types shared by every slice, below them all: the [`text_enum!`] macro that gives a
//! status or kind one spelling in Rust, JSON, OpenAPI and both databases, and the languages
//! the school writes in.

/// Declares an enum stored and sent as text:
/// `text_enum! { pub enum LessonStatus { Scheduled = "scheduled", Cancelled = "cancelled" } }`.
/// It serialises as its text, documents itself in OpenAPI as a string enum, binds and decodes
/// as TEXT on SQLite and PostgreSQL (an unknown value in the database is a decode error), and
/// parses with [`TextEnum::parse`] so handlers can report a bad value on the field it came in.
#[macro_export]
macro_rules! text_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        $vis enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        // Written by hand: the schema lists the texts on the wire, not the variant names.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl $crate::domain::TextEnum for $name {
            const ALL: &'static [Self] = &[$(Self::$variant),+];

            fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                <Self as $crate::domain::TextEnum>::as_str(self)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        $crate::text_enum!(@sqlx $name, sqlx::Sqlite);
        $crate::text_enum!(@sqlx $name, sqlx::Postgres);
    };
    (@sqlx $name:ident, $db:ty) => {
        impl sqlx::Type<$db> for $name {
            fn type_info() -> <$db as sqlx::Database>::TypeInfo {
                <str as sqlx::Type<$db>>::type_info()
            }

            fn compatible(ty: &<$db as sqlx::Database>::TypeInfo) -> bool {
                <str as sqlx::Type<$db>>::compatible(ty)
            }
        }

        impl<'q> sqlx::Encode<'q, $db> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut <$db as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, $db>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, $db> for $name {
            fn decode(value: <$db as sqlx::Database>::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<'r, $db>>::decode(value)?;
                <Self as $crate::domain::TextEnum>::parse(text)
                    .ok_or_else(|| format!("{text:?} is not a {}", stringify!($name)).into())
            }
        }
    };
}

/// What [`text_enum!`] gives every such enum.
pub trait TextEnum: Sized + Copy + 'static {
    const ALL: &'static [Self];

    fn as_str(self) -> &'static str;

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == text)
    }

    /// `a, b, c`, for error messages.
    fn names() -> String {
        Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
    }
}

text_enum! {
    /// The languages Cedar writes to families in.
    pub enum Language {
        English = "en",
        French = "fr",
    }
}

/// An amount of money in integer cents (of the invoice's currency, `CAD`). A type of its own so
/// an amount cannot be mixed up with a count, a rate or a number of days; arithmetic between
/// amounts is plain, scaling goes through [`Cents::ratio`] with its rounding rule.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    sqlx::Type,
    utoipa::ToSchema,
)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct Cents(pub i64);

impl Cents {
    pub const ZERO: Self = Self(0);

    /// `self × numerator ÷ denominator`, rounded half away from zero (0 when dividing by 0).
    pub fn ratio(self, numerator: i64, denominator: i64) -> Self {
        if denominator == 0 {
            return Self::ZERO;
        }
        let product = i128::from(self.0) * i128::from(numerator);
        let denominator = i128::from(denominator);
        let rounded = (product.abs() * 2 + denominator.abs()) / (denominator.abs() * 2);
        let negative = (product < 0) != (denominator < 0);
        Self((if negative { -rounded } else { rounded }) as i64)
    }

    /// `percent` % of the amount.
    pub fn percent(self, percent: i64) -> Self {
        self.ratio(percent, 100)
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// `$1,234.50`.
    pub fn format_cad(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let cents = self.0.abs();
        let dollars = (cents / 100).to_string();
        let mut grouped = String::new();
        for (i, c) in dollars.chars().enumerate() {
            if i > 0 && (dollars.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        format!("{sign}${grouped}.{:02}", cents % 100)
    }
}

impl Cents {
    /// `1 234,50 $` (Canadian French: space-grouped, decimal comma, sign after).
    pub fn format_cad_fr(self) -> String {
        let english = Self(self.0.abs()).format_cad();
        let digits = english.trim_start_matches('$').replace(',', "\u{a0}").replace('.', ",");
        format!("{}{digits}\u{a0}$", if self.0 < 0 { "-" } else { "" })
    }

    /// The amount as a family reading `language` (`en` or `fr`) writes it.
    pub fn format_in(self, language: &str) -> String {
        if language == "fr" { self.format_cad_fr() } else { self.format_cad() }
    }
}

impl std::fmt::Display for Cents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::ops::Add for Cents {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self(self.0 + other.0)
    }
}

impl std::ops::Sub for Cents {
    type Output = Self;
    fn sub(self, other: Self) -> Self {
        Self(self.0 - other.0)
    }
}

impl std::ops::Neg for Cents {
    type Output = Self;
    fn neg(self) -> Self {
        Self(-self.0)
    }
}

impl std::ops::AddAssign for Cents {
    fn add_assign(&mut self, other: Self) {
        self.0 += other.0;
    }
}

impl std::ops::SubAssign for Cents {
    fn sub_assign(&mut self, other: Self) {
        self.0 -= other.0;
    }
}

impl std::iter::Sum for Cents {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        Self(iter.map(|c| c.0).sum())
    }
}

/// An amount times a count (lessons, months).
impl std::ops::Mul<i64> for Cents {
    type Output = Self;
    fn mul(self, count: i64) -> Self {
        Self(self.0 * count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_naturally_in_both_languages() {
        assert_eq!(Cents(123_450).format_in("en"), "$1,234.50");
        assert_eq!(Cents(123_450).format_in("fr"), "1\u{a0}234,50\u{a0}$");
        assert_eq!(Cents(-5).format_in("fr"), "-0,05\u{a0}$");
    }
}
