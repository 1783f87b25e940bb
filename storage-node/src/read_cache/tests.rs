//! The read cache's rules: no lease, no answer; an invalidation wins over a lookup that raced
//! with it; a lapsed lease or a moved fence empties the cache; entries that name packs expire;
//! a write dropped after its commit was sent still invalidates (with a real catalog); a
//! bucket's access goes with the bucket's invalidation, not with its keys'.

use std::time::Instant;

use time::OffsetDateTime;

use super::broadcast::{Pending, SETTLE};
use super::{Invalidation, ReadCache, lease::LEASE};
use crate::TenantId;
use crate::model::bucket::{BucketAccess, CannedAcl};
use crate::model::object::{Lookup, ObjectHeaders, ObjectRow};
use crate::store::{ManifestHead, ObjectId};

fn lookup(object: i64) -> (Lookup, ManifestHead) {
    let tenant = TenantId(1);
    let row = ObjectRow {
        object: ObjectId(object),
        tenant,
        etag: format!("etag-{object}"),
        size: 0,
        last_modified: OffsetDateTime::UNIX_EPOCH,
        headers: ObjectHeaders::default(),
    };
    let bucket = BucketAccess { id: 1, tenant, acl: CannedAcl::Private };
    (Lookup { bucket, object: Some(row) }, ManifestHead::of_empty_object(ObjectId(object)))
}

fn put(cache: &ReadCache, bucket: &str, key: &str, object: i64) {
    let (found, head) = lookup(object);
    cache.fill(cache.ticket(bucket, key), bucket, key, &found, Some(&head));
}

fn cached_object(cache: &ReadCache, bucket: &str, key: &str) -> Option<i64> {
    cache.get(bucket, key).and_then(|hit| hit.lookup.object.as_ref().map(|row| row.object.0))
}

#[test]
fn without_a_lease_nothing_is_kept_or_answered() {
    let cache = ReadCache::new(1 << 20, super::MAX_AGE);
    put(&cache, "shop", "a", 1);
    assert_eq!(cached_object(&cache, "shop", "a"), None);
    cache.renewed(Instant::now(), 0);
    put(&cache, "shop", "a", 1);
    assert_eq!(cached_object(&cache, "shop", "a"), Some(1));
    cache.unleased();
    assert_eq!(cached_object(&cache, "shop", "a"), None);
    cache.renewed(Instant::now(), 0);
    assert_eq!(cached_object(&cache, "shop", "a"), None, "giving up the lease emptied the cache");
}

fn access(id: i64) -> BucketAccess {
    BucketAccess { id, tenant: TenantId(1), acl: CannedAcl::Private }
}

#[test]
fn a_buckets_access_is_kept_under_a_lease_until_the_bucket_is_invalidated() {
    let cache = ReadCache::new(1 << 20, super::MAX_AGE);
    cache.fill_bucket(cache.bucket_ticket(), "shop", access(1));
    assert_eq!(cache.bucket("shop"), None, "no lease, nothing kept");
    cache.renewed(Instant::now(), 0);
    cache.fill_bucket(cache.bucket_ticket(), "shop", access(1));
    cache.fill_bucket(cache.bucket_ticket(), "shop2", access(2));
    assert_eq!(cache.bucket("shop"), Some(access(1)));
    cache.invalidate(&Invalidation::key("shop", "a"));
    assert_eq!(cache.bucket("shop"), Some(access(1)), "a key's write leaves its bucket's access");
    cache.invalidate(&Invalidation::bucket("shop"));
    assert_eq!(cache.bucket("shop"), None, "deleted, or its ACL changed");
    assert_eq!(cache.bucket("shop2"), Some(access(2)));
    // A lookup that began before a bucket's invalidation is not kept, whichever bucket it was.
    let ticket = cache.bucket_ticket();
    cache.invalidate(&Invalidation::bucket("other"));
    cache.fill_bucket(ticket, "shop", access(1));
    assert_eq!(cache.bucket("shop"), None);
    // Nor one that began before the cache was emptied, and an emptied cache holds none.
    let ticket = cache.bucket_ticket();
    cache.unleased();
    cache.renewed(Instant::now(), 0);
    cache.fill_bucket(ticket, "shop", access(1));
    assert_eq!(cache.bucket("shop"), None);
    assert_eq!(cache.bucket("shop2"), None);
    cache.unleased();
    assert_eq!(cache.bucket("shop2"), None, "no lease, no answer");
}

#[test]
fn a_lookup_that_raced_with_an_invalidation_is_not_kept() {
    let cache = ReadCache::new(1 << 20, super::MAX_AGE);
    cache.renewed(Instant::now(), 0);
    let ticket = cache.ticket("shop", "a");
    cache.invalidate(&Invalidation::key("shop", "a"));
    let (found, head) = lookup(1);
    cache.fill(ticket, "shop", "a", &found, Some(&head));
    assert_eq!(cached_object(&cache, "shop", "a"), None);
}

#[test]
fn invalidations_drop_a_key_or_a_whole_bucket_and_nothing_else() {
    let cache = ReadCache::new(1 << 20, super::MAX_AGE);
    cache.renewed(Instant::now(), 0);
    for (bucket, key, object) in [("shop", "a", 1), ("shop", "b", 2), ("shop2", "a", 3), ("shop", "dir/a", 4)]
    {
        put(&cache, bucket, key, object);
    }
    cache.invalidate(&Invalidation::key("shop", "a"));
    assert_eq!(cached_object(&cache, "shop", "a"), None);
    assert_eq!(cached_object(&cache, "shop", "b"), Some(2));
    cache.invalidate(&Invalidation::bucket("shop"));
    assert_eq!(cached_object(&cache, "shop", "b"), None);
    assert_eq!(cached_object(&cache, "shop", "dir/a"), None);
    assert_eq!(cached_object(&cache, "shop2", "a"), Some(3), "a bucket whose name starts alike stays");
    let stats = cache.stats();
    assert_eq!((stats.invalidations, stats.entries), (2, 1));
}

#[test]
fn a_moved_fence_or_a_lapsed_lease_empties_the_cache_at_the_next_renewal() {
    let cache = ReadCache::new(1 << 20, super::MAX_AGE);
    cache.renewed(Instant::now(), 7);
    put(&cache, "shop", "a", 1);
    cache.renewed(Instant::now(), 7);
    assert_eq!(cached_object(&cache, "shop", "a"), Some(1), "the same fence, no lapse: kept");
    cache.renewed(Instant::now(), 8);
    assert_eq!(cached_object(&cache, "shop", "a"), None, "a writer fenced this node");

    put(&cache, "shop", "a", 1);
    // A renewal sent a whole lease ago: the lease it grants is already over.
    let long_ago = Instant::now().checked_sub(LEASE * 2).expect("a past instant");
    cache.renewed(long_ago, 8);
    assert!(!cache.leased());
    assert_eq!(cached_object(&cache, "shop", "a"), None, "no lease, no answer");
    cache.renewed(Instant::now(), 8);
    assert_eq!(cached_object(&cache, "shop", "a"), None, "writers stopped asking a lapsed node: emptied");
}

#[test]
fn only_objects_with_their_whole_manifest_are_kept() {
    let cache = ReadCache::new(1 << 20, super::MAX_AGE);
    cache.renewed(Instant::now(), 0);
    let (mut found, head) = lookup(1);
    if let Some(row) = found.object.as_mut() {
        row.size = 10; // the head has no entry for these bytes
    }
    cache.fill(cache.ticket("shop", "a"), "shop", "a", &found, Some(&head));
    cache.fill(cache.ticket("shop", "b"), "shop", "b", &found, None);
    let absent = Lookup { object: None, ..found };
    cache.fill(cache.ticket("shop", "c"), "shop", "c", &absent, Some(&head));
    assert_eq!(cache.stats().entries, 0);
}

#[test]
fn an_object_kept_whole_in_the_catalog_is_kept_whatever_the_age_limit() {
    // No chunk in a pack: nothing in the entry can move, so even a zero age limit (a store that
    // deletes retired packs at once) keeps it.
    let cache = ReadCache::new(1 << 20, std::time::Duration::ZERO);
    cache.renewed(Instant::now(), 0);
    put(&cache, "shop", "a", 1);
    assert_eq!(cached_object(&cache, "shop", "a"), Some(1));
}

#[test]
fn a_write_of_one_key_leaves_the_lookups_of_others_in_flight_alone() {
    let cache = ReadCache::new(1 << 20, super::MAX_AGE);
    cache.renewed(Instant::now(), 0);
    // A key of another stripe than "a"'s.
    let other = (0..).map(|n| format!("k{n}")).find(|key| {
        super::stripe_of(&super::entry_key("shop", key)) != super::stripe_of(&super::entry_key("shop", "a"))
    });
    let other = other.expect("a key of another stripe");
    let ticket = cache.ticket("shop", &other);
    cache.invalidate(&Invalidation::key("shop", "a"));
    let (found, head) = lookup(2);
    cache.fill(ticket, "shop", &other, &found, Some(&head));
    assert_eq!(cached_object(&cache, "shop", &other), Some(2), "kept: the write was of another key");
    // A whole bucket's invalidation drops every lookup in flight of it.
    let ticket = cache.ticket("shop", "b");
    cache.invalidate(&Invalidation::bucket("shop"));
    cache.fill(ticket, "shop", "b", &found, Some(&head));
    assert_eq!(cached_object(&cache, "shop", "b"), None);
}

#[test]
fn whole_manifests_are_read_two_at_a_time_and_once_per_object_in_a_while() {
    let cache = ReadCache::new(1 << 20, super::MAX_AGE);
    assert!(cache.whole_wanted("video", "a").is_none(), "no lease, nothing would be kept");
    cache.renewed(Instant::now(), 0);
    let first = cache.whole_wanted("video", "a").expect("the first read of a");
    assert!(cache.whole_wanted("video", "a").is_none(), "a was read a moment ago");
    let second = cache.whole_wanted("video", "b").expect("the first read of b");
    assert!(cache.whole_wanted("video", "c").is_none(), "two run already");
    drop(first);
    assert!(cache.whole_wanted("video", "a").is_none(), "a is still recent, though a read ended");
    let third = cache.whole_wanted("video", "c").expect("a read ended: c may go");
    drop((second, third));
    // Many objects at once: the oldest tries are forgotten rather than every new one refused.
    for key in 0..super::WHOLE_TRIES_KEPT + 10 {
        assert!(cache.whole_wanted("many", &key.to_string()).is_some(), "key {key}");
    }
}

#[test]
fn an_entry_with_a_chunk_in_a_pack_expires_at_the_age_limit_and_an_inline_one_later() {
    // GC may move a chunk of a pack without invalidating anything: such an entry lives only as
    // long as the age limit. An inline chunk cannot move: its entry lasts INLINE_MAX_AGE, which
    // only bounds a lost invalidation.
    // Long enough that a busy machine does not expire the entry between its fill and the first
    // check.
    let max_age = std::time::Duration::from_secs(1);
    let cache = ReadCache::new(1 << 20, max_age);
    cache.renewed(Instant::now(), 0);
    for (key, object, located) in [("located", 1, true), ("inline", 2, false)] {
        let (mut found, _) = lookup(object);
        if let Some(row) = found.object.as_mut() {
            row.size = 100;
        }
        let head = ManifestHead::of_one_chunk(ObjectId(object), 100, located);
        cache.fill(cache.ticket("shop", key), "shop", key, &found, Some(&head));
    }
    assert_eq!(cached_object(&cache, "shop", "located"), Some(1));
    assert_eq!(cached_object(&cache, "shop", "inline"), Some(2));
    std::thread::sleep(max_age + std::time::Duration::from_millis(100));
    // The lease is renewed meanwhile, as the node's renewal task does every 500 ms.
    cache.renewed(Instant::now(), 0);
    assert_eq!(cached_object(&cache, "shop", "located"), None, "expired after {max_age:?}");
    assert_eq!(cached_object(&cache, "shop", "inline"), Some(2));
}

#[tokio::test]
async fn a_write_dropped_after_its_commit_was_sent_invalidates_at_once_and_again_after_settling() {
    let fixture = crate::s3::tests::fixture("pending_dropped").await;
    let store = fixture.s3.store();
    let cache = store.read_cache();
    cache.renewed(Instant::now(), 0);
    put(cache, "shop", "a", 1);
    put(cache, "shop", "b", 2);

    // Dropped before its commit was sent: the write changed nothing, and owes nothing.
    drop(Pending::new(store, Invalidation::key("shop", "b")));
    assert_eq!(cached_object(cache, "shop", "b"), Some(2));

    // Dropped after: the key goes at once.
    let pending = Pending::new(store, Invalidation::key("shop", "a"));
    pending.arm();
    drop(pending);
    assert_eq!(cached_object(cache, "shop", "a"), None);

    // A read that ran before the late commit landed kept the old row again; the second
    // invalidation, SETTLE later, drops it. The lease is renewed meanwhile, as the node does.
    put(cache, "shop", "a", 1);
    let refilled = Instant::now();
    let deadline = refilled + SETTLE + std::time::Duration::from_secs(10);
    while cached_object(cache, "shop", "a").is_some() {
        assert!(Instant::now() < deadline, "no second invalidation within {SETTLE:?} and 10 s");
        cache.renewed(Instant::now(), 0);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Not the first invalidation come late: the second one, after SETTLE.
    assert!(refilled.elapsed() >= SETTLE - std::time::Duration::from_millis(500), "{:?}", refilled.elapsed());
    assert_eq!(cached_object(cache, "shop", "b"), Some(2));
}
