//! States and kinds of catalog rows as enums on checked text columns: [`text_enum!`](crate::text_enum!)
//! declares one, with its word for the catalog and the API (`ToSql`/`FromSql` over the
//! column's text, serde as the same snake_case word, `Display` and `FromStr`). storage-node's
//! node states and db-manager's states (`db_manager::states`) are declared with it, so the
//! mapping is written once. A crate that uses it depends on `serde`, `tokio-postgres` and
//! `bytes`.

/// An enum stored as one of a fixed set of words in a text column.
#[macro_export]
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $word:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $word)] $variant,)+
        }

        impl $name {
            /// The word the catalog and the API use.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::text_enum::UnknownWord;

            fn from_str(word: &str) -> Result<Self, $crate::text_enum::UnknownWord> {
                match word {
                    $($word => Ok($name::$variant),)+
                    other => Err($crate::text_enum::UnknownWord::new(stringify!($name), other)),
                }
            }
        }

        impl ::tokio_postgres::types::ToSql for $name {
            fn to_sql(
                &self,
                ty: &::tokio_postgres::types::Type,
                out: &mut ::bytes::BytesMut,
            ) -> Result<::tokio_postgres::types::IsNull, Box<dyn ::std::error::Error + Sync + Send>> {
                ::tokio_postgres::types::ToSql::to_sql(&self.as_str(), ty, out)
            }

            fn accepts(ty: &::tokio_postgres::types::Type) -> bool {
                <&str as ::tokio_postgres::types::ToSql>::accepts(ty)
            }

            ::tokio_postgres::types::to_sql_checked!();
        }

        impl<'a> ::tokio_postgres::types::FromSql<'a> for $name {
            fn from_sql(
                ty: &::tokio_postgres::types::Type,
                raw: &'a [u8],
            ) -> Result<Self, Box<dyn ::std::error::Error + Sync + Send>> {
                Ok(<&str as ::tokio_postgres::types::FromSql>::from_sql(ty, raw)?.parse()?)
            }

            fn accepts(ty: &::tokio_postgres::types::Type) -> bool {
                <&str as ::tokio_postgres::types::FromSql>::accepts(ty)
            }
        }
    };
}

/// A word in a state column that no variant names (the column's CHECK makes this a bug).
#[derive(Debug, thiserror::Error)]
#[error("{word:?} is not a {what}")]
pub struct UnknownWord {
    what: &'static str,
    word: String,
}

impl UnknownWord {
    /// `word`, which no variant of the enum `what` names.
    pub fn new(what: &'static str, word: &str) -> Self {
        UnknownWord { what, word: word.to_string() }
    }
}
