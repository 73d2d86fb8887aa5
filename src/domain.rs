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
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        $vis enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

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
