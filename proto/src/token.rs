//! The bearer token of `authorization: Bearer <token>`, as core, the
//! processor and the monitor hold it: given on the command line, in the
//! environment, or in a file (the `-file` form of every token flag, so that
//! no token needs to sit in a process listing), and never printed.

use std::convert::Infallible;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A bearer token. `Debug` shows no part of it, so a token inside a
/// configuration struct never reaches a log; [`Token::expose`] is the one
/// way to its text.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The token's text, for the `authorization` header and comparisons.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a token from a file: its text without one trailing newline
    /// (`\n` or `\r\n`, as `echo` and editors leave them). An empty token is
    /// refused here; other defects are for [`Token::defect`].
    pub fn read_file(path: &Path) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(&text);
        if text.is_empty() {
            return Err(TokenFileError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Self(text.to_string()))
    }

    /// What makes this token unusable as `authorization: Bearer <token>`,
    /// if anything: it is empty, or it holds something other than visible
    /// ASCII (a header value is ASCII, and a space or a control character
    /// in a token is a copy-and-paste accident). The message never quotes
    /// the token.
    pub fn defect(&self) -> Option<&'static str> {
        if self.0.is_empty() {
            Some("is empty")
        } else if !self.0.bytes().all(|b| b.is_ascii_graphic()) {
            Some("must be visible ASCII (no spaces, control characters or non-ASCII letters)")
        } else {
            None
        }
    }

    /// The value of the `authorization` metadata that carries this token.
    #[cfg(feature = "grpc")]
    pub fn authorization(
        &self,
    ) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>, TokenDefect> {
        if let Some(why) = self.defect() {
            return Err(TokenDefect(why));
        }
        format!("Bearer {}", self.0)
            .parse()
            .map_err(|_| TokenDefect("must be visible ASCII"))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl FromStr for Token {
    type Err = Infallible;

    /// Any text: checks come later, with messages that do not repeat it
    /// (a parser's error would quote the value).
    fn from_str(s: &str) -> Result<Self, Infallible> {
        Ok(Self(s.to_string()))
    }
}

impl From<&str> for Token {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

impl From<String> for Token {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// Why a token cannot be sent (see [`Token::defect`]).
#[derive(Debug, thiserror::Error)]
#[error("the token {0}")]
pub struct TokenDefect(pub &'static str);

/// Why a token file gave no token.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no token (the file is empty, or only a newline)")]
    Empty { path: PathBuf },
}

/// The token of a token flag (`flag`, e.g. `--admin-token`) and its `-file`
/// form, which clap keeps mutually exclusive: the file's, read now, else
/// the flag's; either way checked with [`Token::defect`]. Errors name the
/// flag, never the token.
pub fn from_flag_or_file(
    flag: &str,
    token: Option<&Token>,
    file: Option<&Path>,
) -> Result<Option<Token>, String> {
    let (token, source) = match (token, file) {
        (_, Some(path)) => (
            Token::read_file(path).map_err(|e| format!("{flag}-file: {e}"))?,
            format!("{flag}-file {}", path.display()),
        ),
        (Some(token), None) => (token.clone(), flag.to_string()),
        (None, None) => return Ok(None),
    };
    match token.defect() {
        Some(why) => Err(format!("the token of {source} {why}")),
        None => Ok(Some(token)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_loses_one_trailing_newline_and_may_not_be_empty() {
        let dir = std::env::temp_dir().join(format!("ackflow-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let read = |path: &Path| Token::read_file(path).map(|t| t.expose().to_string());
        assert_eq!(read(&write("plain", "abc")).unwrap(), "abc");
        assert_eq!(read(&write("lf", "abc\n")).unwrap(), "abc");
        assert_eq!(read(&write("crlf", "abc\r\n")).unwrap(), "abc");
        // Only one newline goes; what is left is refused by defect().
        let two = Token::read_file(&write("two", "abc\n\n")).unwrap();
        assert!(two.defect().is_some());
        for empty in ["", "\n", "\r\n"] {
            let err = Token::read_file(&write("empty", empty)).unwrap_err();
            assert!(matches!(err, TokenFileError::Empty { .. }), "{empty:?}");
        }
        let missing = Token::read_file(&dir.join("missing")).unwrap_err();
        assert!(matches!(missing, TokenFileError::Read { .. }));

        let file = write("good", "file-token-0123456789\n");
        let flag = Token::from("flag-token");
        assert_eq!(
            from_flag_or_file("--token", None, Some(&file))
                .unwrap()
                .unwrap()
                .expose(),
            "file-token-0123456789"
        );
        assert_eq!(
            from_flag_or_file("--token", Some(&flag), None).unwrap(),
            Some(flag)
        );
        assert_eq!(from_flag_or_file("--token", None, None).unwrap(), None);
        let err = from_flag_or_file("--token", None, Some(&write("e", "\n"))).unwrap_err();
        assert!(
            err.starts_with("--token-file: ") && err.contains("no token"),
            "{err}"
        );
        let err = from_flag_or_file("--token", Some(&Token::from("")), None).unwrap_err();
        assert_eq!(err, "the token of --token is empty");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tokens_are_never_printed() {
        let token = Token::from("s3cret-token-value");
        assert!(!format!("{token:?}").contains("s3cret"));
    }

    #[cfg(feature = "grpc")]
    #[test]
    fn the_authorization_value_never_prints_the_token() {
        let err = Token::from("s3cret token").authorization().unwrap_err();
        assert!(!err.to_string().contains("s3cret"));
        assert_eq!(
            Token::from("abc")
                .authorization()
                .unwrap()
                .to_str()
                .unwrap(),
            "Bearer abc"
        );
    }
}
