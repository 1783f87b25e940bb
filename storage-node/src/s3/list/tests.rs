//! Property tests of listing pagination over an in-memory key source that orders keys as the
//! catalog does (binary UTF-8 order): arbitrary keys (with U+10FFFF, delimiters inside, empty
//! segments), prefixes, delimiters, start points and small pages. Paging must end, never
//! repeat an entry, and give exactly the entries a direct computation gives.

use std::collections::{BTreeSet, HashSet};
use std::ops::Bound;

use proptest::prelude::*;

use super::*;

/// Keys in memory; records where each read started.
struct Memory {
    keys: BTreeSet<String>,
    reads: Vec<Cursor>,
}

impl KeySource for Memory {
    async fn fetch(&mut self, cursor: &Cursor, prefix: &str, limit: i64) -> S3Result<Vec<Item>> {
        self.reads.push(cursor.clone());
        let lower = match cursor {
            Cursor::After(key) => Bound::Excluded(key.clone()),
            Cursor::From(key) => Bound::Included(key.clone()),
        };
        Ok(self
            .keys
            .range::<String, _>((lower, Bound::Unbounded))
            .filter(|key| key.as_str() >= prefix)
            .take(limit as usize)
            .map(|key| (key.clone(), String::new(), 0, 0.0))
            .collect())
    }
}

/// The entries of a listing, computed directly: every key under `prefix`, folded into its
/// common prefix where the rest holds the delimiter; sorted, each once.
fn reference(keys: &BTreeSet<String>, prefix: &str, delimiter: Option<&str>) -> Vec<String> {
    let mut entries = BTreeSet::new();
    for key in keys {
        let Some(rest) = key.strip_prefix(prefix) else { continue };
        let folded = match delimiter.filter(|d| !d.is_empty()).and_then(|d| rest.find(d).map(|at| (at, d))) {
            Some((at, d)) => format!("{prefix}{}", &rest[..at + d.len()]),
            None => key.clone(),
        };
        entries.insert(folded);
    }
    entries.into_iter().collect()
}

fn text(max_len: usize) -> impl Strategy<Value = String> {
    let alphabet = prop::sample::select(vec!['a', 'b', '/', '-', 'é', '\u{D7FF}', '\u{E000}', '\u{10FFFF}']);
    prop::collection::vec(alphabet, 0..=max_len).prop_map(|chars| chars.into_iter().collect())
}

fn delimiter() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::sample::select(vec!["/", "-", "//", "a/", "\u{10FFFF}", "é\u{10FFFF}"]))
        .prop_map(|d| d.map(str::to_string))
}

/// Where an entry sits: a cursor read position, for checking reads only move forward.
fn position(cursor: &Cursor) -> (&str, bool) {
    match cursor {
        Cursor::From(key) => (key, false),
        Cursor::After(key) => (key, true),
    }
}

fn run<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(future)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn paging_with_a_delimiter_ends_repeats_nothing_and_lists_every_entry(
        keys in prop::collection::btree_set(text(6).prop_filter("keys are not empty", |k| !k.is_empty()), 0..40),
        prefix in text(2),
        delimiter in delimiter(),
        start_after in prop::option::of(text(4)),
        max in 1usize..4,
    ) {
        let expected: Vec<String> = reference(&keys, &prefix, delimiter.as_deref())
            .into_iter()
            .filter(|entry| start_after.as_ref().is_none_or(|after| entry > after))
            .collect();
        let mut source = Memory { keys, reads: Vec::new() };
        let mut listed = Vec::new();
        let mut seen = HashSet::new();
        let mut after = start_after.clone().unwrap_or_default();
        let mut pages = 0;
        loop {
            pages += 1;
            prop_assert!(pages <= expected.len() + 2, "paging does not end: {listed:?}");
            source.reads.clear();
            let page = run(paginate(&mut source, &prefix, delimiter.as_deref(), &after, max))
                .map_err(|err| TestCaseError::fail(format!("{err:?}")))?;
            for pair in source.reads.windows(2) {
                prop_assert!(position(&pair[0]) < position(&pair[1]), "a read went back: {:?}", source.reads);
            }
            let mut entries: Vec<String> = page.objects.iter().map(|o| o.0.clone()).collect();
            entries.extend(page.prefixes.iter().cloned());
            entries.sort();
            prop_assert!(entries.len() <= max);
            for entry in &entries {
                prop_assert!(entry.as_str() > after.as_str() || (after.is_empty() && start_after.is_none()),
                    "{entry:?} is not after {after:?}");
                prop_assert!(seen.insert(entry.clone()), "{entry:?} listed twice");
            }
            prop_assert_eq!(page.last.as_ref(), entries.last());
            listed.extend(entries);
            if !page.truncated {
                break;
            }
            after = page.last.clone().expect("a truncated page names where it ended");
        }
        prop_assert_eq!(listed, expected);
    }
}

#[test]
fn successors_bound_every_string_with_the_prefix() {
    assert_eq!(successor("p/").as_deref(), Some("p0"));
    assert_eq!(successor("a\u{10FFFF}").as_deref(), Some("b"));
    assert_eq!(successor("\u{D7FF}").as_deref(), Some("\u{E000}"));
    assert_eq!(successor("\u{10FFFF}\u{10FFFF}"), None);
    assert_eq!(successor(""), None);
    for key in ["p/\u{10FFFF}", "p/\u{10FFFF}\u{10FFFF}x", "p/zzz"] {
        assert!(key < successor("p/").expect("successor").as_str(), "{key:?}");
    }
}

#[test]
fn a_common_prefix_followed_by_u10ffff_keys_is_listed_once() {
    let keys: BTreeSet<String> = ["p/\u{10FFFF}", "p/\u{10FFFF}\u{10FFFF}", "p/\u{10FFFF}a", "q"]
        .into_iter()
        .map(String::from)
        .collect();
    let mut source = Memory { keys, reads: Vec::new() };
    let listing = run(paginate(&mut source, "", Some("/"), "", 10)).expect("list");
    assert_eq!(listing.prefixes, ["p/"]);
    assert_eq!(listing.objects.iter().map(|o| o.0.as_str()).collect::<Vec<_>>(), ["q"]);
    assert!(!listing.truncated);
}
