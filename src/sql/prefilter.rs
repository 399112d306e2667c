//! The cheap scan that lets most statements skip parsing.
//!
//! Simple-protocol statements carry literals, so their text differs each
//! time and a plan cache keyed by text cannot help; parsing costs more than
//! relaying a whole transaction. A case-insensitive substring scan for the
//! names of protected tables and views decides whether a statement *might*
//! touch protected data. False positives only cost a parse; a false
//! negative would leak, so the match is deliberately loose (substrings, not
//! words) and also fires on `U&"..."` identifiers, which can spell a name
//! without its letters.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// Scanner over the names of protected tables and views.
#[derive(Debug, Clone)]
pub struct Prefilter {
    /// `None` when nothing is protected: no statement can touch anything.
    automaton: Option<AhoCorasick>,
    /// Pattern names in automaton order (the last one is `u&`).
    names: Vec<String>,
}

impl Prefilter {
    /// Builds the scanner over `names` (as from
    /// [`Schema::protected_names`](super::Schema::protected_names)).
    pub fn new(names: &[String]) -> Self {
        let mut patterns: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| !n.is_empty())
            .collect();
        if patterns.is_empty() {
            return Prefilter {
                automaton: None,
                names: Vec::new(),
            };
        }
        patterns.push("u&");
        let automaton = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostFirst)
            .build(&patterns)
            .ok();
        // If the automaton cannot be built, fail closed: everything is
        // analysed (`might_touch` returns true).
        Prefilter {
            automaton: automaton.or_else(|| AhoCorasick::new([""]).ok()),
            names: patterns.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    /// Whether `sql` mentions a protected name, and so must be analysed.
    pub fn might_touch(&self, sql: &str) -> bool {
        match &self.automaton {
            None => false,
            Some(ac) => ac.is_match(sql),
        }
    }

    /// The first protected name `sql` mentions, for messages.
    pub(crate) fn first_match(&self, sql: &str) -> Option<&str> {
        let m = self.automaton.as_ref()?.find(sql)?;
        self.names.get(m.pattern().as_usize()).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_case_insensitively() {
        let p = Prefilter::new(&["guests".to_owned()]);
        assert!(p.might_touch("select * from GUESTS"));
        assert!(p.might_touch("select * from \"Guests\""));
        assert!(!p.might_touch("select * from stays"));
    }

    #[test]
    fn nothing_protected_matches_nothing() {
        let p = Prefilter::new(&[]);
        assert!(!p.might_touch("select * from guests"));
    }

    #[test]
    fn unicode_escaped_identifiers_are_analysed() {
        let p = Prefilter::new(&["guests".to_owned()]);
        assert!(p.might_touch("select * from U&\"\\0067uests\""));
    }
}
