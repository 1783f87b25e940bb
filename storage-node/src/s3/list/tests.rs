//! Property tests of listing pagination over an in-memory key source that orders keys as the
//! catalog does (binary UTF-8 order): arbitrary keys (with U+10FFFF, delimiters inside, empty
//! segments), prefixes, delimiters, start points and small pages. Paging must end, never
//! repeat an entry, and give exactly the entries a direct computation gives. A smaller run
//! does the same through the catalog's queries, so the catalog orders keys as the in-memory
//! source does.

use std::collections::{BTreeSet, HashSet};
use std::ops::Bound;

use proptest::prelude::*;

use super::*;

/// Keys in memory; records where each read started.
#[derive(Default)]
struct Memory {
    keys: BTreeSet<String>,
    reads: Vec<Cursor>,
}

impl KeySource for Memory {
    async fn fetch(&mut self, cursor: &Cursor, prefix: &str, limit: i64) -> S3Result<Vec<ListedObject>> {
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
            .map(|key| ListedObject {
                key: key.clone(),
                etag: String::new(),
                size: 0,
                last_modified: time::OffsetDateTime::UNIX_EPOCH,
            })
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

/// One arbitrary listing: keys, prefix, delimiter, start point and page size.
type Case = (BTreeSet<String>, String, Option<String>, Option<String>, usize);

fn cases() -> impl Strategy<Value = Case> {
    (
        prop::collection::btree_set(text(6).prop_filter("keys are not empty", |k| !k.is_empty()), 0..40),
        text(2),
        delimiter(),
        prop::option::of(text(4)),
        1usize..4,
    )
}

/// Pages through `case` with `list` and checks the listing against the reference: it ends,
/// repeats nothing, and lists exactly the entries after the start point.
async fn check<L, F>(case: &Case, mut list: L) -> Result<(), TestCaseError>
where
    L: FnMut(String) -> F,
    F: std::future::Future<Output = Result<Listing, TestCaseError>>,
{
    let (keys, _, _, start_after, max) = case;
    let (prefix, delimiter) = (&case.1, case.2.as_deref());
    let expected: Vec<String> = reference(keys, prefix, delimiter)
        .into_iter()
        .filter(|entry| start_after.as_ref().is_none_or(|after| entry > after))
        .collect();
    let mut listed = Vec::new();
    let mut seen = HashSet::new();
    let mut after = start_after.clone().unwrap_or_default();
    let mut pages = 0;
    loop {
        pages += 1;
        prop_assert!(pages <= expected.len() + 2, "paging does not end: {listed:?}");
        let page = list(after.clone()).await?;
        let mut entries: Vec<String> = page.objects.iter().map(|o| o.key.clone()).collect();
        entries.extend(page.prefixes.iter().cloned());
        entries.sort();
        prop_assert!(entries.len() <= *max);
        for entry in &entries {
            prop_assert!(
                entry.as_str() > after.as_str() || (after.is_empty() && start_after.is_none()),
                "{entry:?} is not after {after:?}"
            );
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
    Ok(())
}

fn failed(err: s3s::S3Error) -> TestCaseError {
    TestCaseError::fail(format!("{err:?}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn paging_with_a_delimiter_ends_repeats_nothing_and_lists_every_entry(case in cases()) {
        let source = std::rc::Rc::new(std::cell::RefCell::new(Memory { keys: case.0.clone(), reads: Vec::new() }));
        let (prefix, delimiter, max) = (case.1.clone(), case.2.clone(), case.4);
        run(check(&case, |after| {
            let (source, prefix, delimiter) = (source.clone(), prefix.clone(), delimiter.clone());
            async move {
                // Out of the cell while the listing runs, back in after.
                let mut memory = source.take();
                memory.reads.clear();
                let page = paginate(&mut memory, &prefix, delimiter.as_deref(), &after, max).await.map_err(failed)?;
                let forward = memory.reads.windows(2).all(|pair| position(&pair[0]) < position(&pair[1]));
                prop_assert!(forward, "a read went back: {:?}", memory.reads);
                source.replace(memory);
                Ok(page)
            }
        }))?;
    }
}

/// The same property through the catalog's queries (fewer cases: each one writes its keys).
#[test]
fn paging_through_the_catalog_matches_the_reference() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let fx = runtime.block_on(crate::s3::tests::fixture("s3_list_prop"));
    let tenant = runtime.block_on(crate::catalog::tenants::create(&fx.pool, "lister", None)).expect("tenant");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(16));
    let n = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(&cases(), |case| {
            let bucket = format!("case-{}", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            runtime.block_on(async {
                let client = fx.pool.get().await.expect("client");
                let id: i64 = client
                    .query_one(
                        "INSERT INTO buckets (name, tenant_id) VALUES ($1, $2) RETURNING id",
                        &[&bucket, &tenant.0],
                    )
                    .await
                    .expect("bucket")
                    .get(0);
                for key in &case.0 {
                    client
                        .execute(
                            "WITH o AS (INSERT INTO objects (tenant_id, size, chunk_count) VALUES ($3, 0, 0) RETURNING id) \
                             INSERT INTO s3_objects (bucket, key, object_id, etag) SELECT $1, $2, id, '' FROM o",
                            &[&bucket, key, &tenant.0],
                        )
                        .await
                        .expect("key");
                }
                let (prefix, delimiter, max) = (case.1.clone(), case.2.clone(), case.4);
                check(&case, |after| {
                    let (s3, bucket, prefix, delimiter) = (&fx.s3, &bucket, &prefix, &delimiter);
                    async move {
                        s3.list_keys(bucket, id, prefix, delimiter.as_deref(), &after, max).await.map_err(failed)
                    }
                })
                .await
            })
        })
        .expect("the catalog lists as the reference does");
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
    assert_eq!(listing.objects.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), ["q"]);
    assert!(!listing.truncated);
}
