//! The key cache's bookkeeping: what it keeps, answers and forgets, without a catalog.

use std::time::Instant;

use s3s::auth::SecretKey;

use super::{CachedKey, KeyCache, TRUSTED_FOR};
use crate::TenantId;

fn key(tenant: i64) -> CachedKey {
    CachedKey { tenant: TenantId(tenant), secret: SecretKey::from("secret".to_string()) }
}

fn trusted() -> KeyCache {
    let cache = KeyCache::default();
    cache.confirm(Instant::now(), true);
    cache
}

#[test]
fn a_cache_without_a_listener_never_answers_nor_keeps() {
    let cache = KeyCache::default();
    cache.keep("K", &key(1), 0);
    assert!(!cache.holds("K"));
}

#[test]
fn a_kept_key_answers_until_its_notice() {
    let cache = trusted();
    let generation = cache.state().generation;
    cache.keep("K", &key(1), generation);
    cache.keep("L", &key(2), generation);
    assert!(cache.holds("K"));
    cache.invalidate("key:K");
    assert!(!cache.holds("K"));
    assert!(cache.holds("L"));
}

#[test]
fn a_tenant_notice_drops_that_tenants_keys_and_another_drops_all() {
    let cache = trusted();
    let generation = cache.state().generation;
    for (id, tenant) in [("A", 1), ("B", 1), ("C", 2)] {
        cache.keep(id, &key(tenant), generation);
    }
    cache.invalidate("tenant:1");
    assert!(!cache.holds("A") && !cache.holds("B") && cache.holds("C"));
    cache.invalidate("all");
    assert!(!cache.holds("C"));
}

#[test]
fn an_answer_read_before_a_notice_is_not_kept() {
    let cache = trusted();
    let generation = cache.state().generation;
    cache.invalidate("key:K");
    cache.keep("K", &key(1), generation);
    assert!(!cache.holds("K"));
}

#[test]
fn a_lost_connection_clears_and_a_new_one_refuses_older_answers() {
    let cache = trusted();
    let generation = cache.state().generation;
    cache.keep("K", &key(1), generation);
    cache.lost();
    assert!(!cache.holds("K"));
    let during_the_loss = cache.state().generation;
    cache.confirm(Instant::now(), true);
    cache.keep("K", &key(1), during_the_loss);
    assert!(!cache.holds("K"), "read before the new connection listened");
}

#[test]
fn an_old_confirmation_is_not_trusted() {
    let cache = trusted();
    let generation = cache.state().generation;
    cache.keep("K", &key(1), generation);
    let long_ago = Instant::now().checked_sub(TRUSTED_FOR * 2).expect("an instant a while ago");
    cache.confirm(long_ago, false);
    assert!(!cache.holds("K"));
}

#[test]
fn the_cache_is_bounded() {
    let cache = trusted();
    let generation = cache.state().generation;
    for n in 0..super::MAX_KEYS + 10 {
        cache.keep(&format!("K{n}"), &key(1), generation);
    }
    assert_eq!(cache.state().keys.len(), super::MAX_KEYS);
}

#[test]
fn a_cached_key_never_shows_its_secret() {
    let shown = format!("{:?}", key(1));
    assert!(!shown.contains("secret\""), "{shown}");
    assert!(shown.contains("TenantId(1)"), "{shown}");
}
