//! Errors reported while parsing and validating a declarative config.
//!
//! Validation never stops at the first problem: every error found is
//! collected into [`ConfigErrors`] so an operator can fix a file in one go.

use std::fmt;

/// One problem found in a declarative config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Singular entity type ("route", "service", "keyauth_credential", ...);
    /// empty for errors about the document itself (e.g. `_format_version`).
    pub entity: String,
    /// The entity's name (or username, ...) if it has one, else its id, else
    /// `#N` (1-based position in its list) when it has neither.
    pub ident: String,
    /// Dotted path of the offending field (`paths.1`, `healthchecks.active.timeout`),
    /// or `@entity` for checks spanning several fields.
    pub field: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(
        entity: impl Into<String>,
        ident: impl Into<String>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ConfigError {
            entity: entity.into(),
            ident: ident.into(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An error about the document rather than one entity.
    pub fn top(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::new("", "", field, reason)
    }

    /// DAO table name of the entity type, as Kong words its messages
    /// ("routes", "ca_certificates"). Every Kong entity name pluralises with `s`.
    pub fn table(&self) -> String {
        format!("{}s", self.entity)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entity.is_empty() {
            if self.field.is_empty() {
                return write!(f, "declarative config: {}", self.reason);
            }
            return write!(
                f,
                "declarative config: field '{}': {}",
                self.field, self.reason
            );
        }
        write!(f, "in '{}' entity '{}': ", self.table(), self.ident)?;
        if self.field == "@entity" || self.field.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "field '{}': {}", self.field, self.reason)
        }
    }
}

/// All problems found in a declarative config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub fn single(e: ConfigError) -> Self {
        ConfigErrors { errors: vec![e] }
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_documented_shape() {
        let e = ConfigError::new(
            "route",
            "my-route",
            "paths.1",
            "should start with: / (fixed path) or ~/ (regex path)",
        );
        assert_eq!(
            e.to_string(),
            "in 'routes' entity 'my-route': field 'paths.1': should start with: / (fixed path) or ~/ (regex path)"
        );
        let t = ConfigError::top("_format_version", "required field missing");
        assert_eq!(
            t.to_string(),
            "declarative config: field '_format_version': required field missing"
        );
        let all = ConfigErrors { errors: vec![e, t] };
        assert_eq!(all.to_string().lines().count(), 2);
        let ent = ConfigError::new("consumer", "#1", "@entity", "x");
        assert_eq!(ent.to_string(), "in 'consumers' entity '#1': x");
    }
}
