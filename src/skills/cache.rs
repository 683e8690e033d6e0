//! The read skills' response cache: answers of the skills whose answer is a function of the
//! knowledge base and the input alone, kept in memory under a byte budget (LRU) and dropped, all
//! of them, whenever the knowledge base changes.
//!
//! How a change is learnt: every write to a knowledge-base table — a skill, `import-json`, the
//! embedder, SQL typed in psql — fires a trigger that takes a new generation and notifies the
//! channel `nexusd_kb` in the writing transaction (`migrations/0004_kb_generation.sql`);
//! PostgreSQL delivers it when that transaction commits. Each replica holds one connection
//! `LISTEN`ing on the channel ([`spawn_listener`]).
//!
//! A notifying commit holds a database-wide lock across its WAL flush, which serialises
//! concurrent writers, so `serve`'s own writes skip the notification when no other replica
//! listens (`migrations/0007_kb_notify_peers.sql`): its skills' pool is named
//! `nexusd serve <replica>` ([`SessionNames`]), each replica's listener registers in
//! `kb_listeners` and holds an advisory lock while it lives ([`register`]), and the trigger
//! notifies for such a session only while a listener of another replica is alive. This process
//! learns of its own writes without the notification: the write skills
//! (`mod.rs`), the workflow worker and the embedder's backfill call [`SkillCache::invalidate`]
//! after they commit. A listener that has just connected may have been missed by a write still
//! in flight that looked for listeners before it came, or by a session still trusting such a look
//! (for a second: `migrations/0008_kb_alone_for_a_second.sql`); so it waits out that second, then
//! for every transaction in progress to end, before its replica caches anything ([`listen`]).
//!
//! The rule kept: an answer is served from memory only while nothing has been heard since it was
//! computed. `epoch` counts what this process has heard: every notification, every loss and
//! every re-establishment of the listening connection bumps it and empties the cache. A call
//! reads the epoch *before* its handler reads the database, and stores its answer under that
//! epoch only if the epoch has not moved meanwhile; an entry is served only while its epoch is
//! the current one. So an answer computed before a write committed is never served once this
//! replica has heard of the write. While the listener is not connected nothing is cached or
//! served (every call reads through); a reconnect cannot tell what it missed, hence the bump.
//! Write skills run through this replica also bump the epoch as soon as they finish (in their
//! own task, so also when the client left or was answered by the timeout), so a client reading
//! after its own write through the same replica never waits on a notification.
//! Through another replica, the one window left is PostgreSQL's delivery of the notification to
//! that replica's listener (on the same host, well under a millisecond), which starts before the
//! writer's commit is acknowledged.
//!
//! What is stored is the skill's own answer, serialised; `success`, `timestamp` and
//! `execution_time_ms` are added fresh to every response (`mod.rs`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hashlink::LinkedHashMap;
use serde_json::{Map, Value};
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bootstrap::Readiness;
use crate::db::Database;
use crate::metrics::CacheStats;

/// The channel the knowledge-base triggers notify.
pub const CHANNEL: &str = "nexusd_kb";

/// Skills whose answer depends only on the knowledge base and the input: no clock, no random
/// ids, no GitHub, no other agent, no embedding provider. (`get_pattern_health` counts issues of
/// the last N days, so its answer changes with time alone; the component skills stamp their
/// answers; `query_patterns` with `query` asks the embedding provider, see [`class`].)
pub(crate) const CACHED: &[&str] = &[
    "query_patterns",
    "get_cross_repo_patterns",
    "get_repository_list",
    "get_deployment_info",
    "query_known_issues",
    "get_recent_actions",
    // The web frontend's (`pattern_history` has the generation trigger too, migration 0005).
    "list_components",
    "get_pattern_history",
];

/// Whether `skill` only reads (cached or not): it may run on a read replica.
pub(crate) fn reads_only(skill: &str) -> bool {
    CACHED.contains(&skill) || READS.contains(&skill)
}

/// Skills that write nothing to the knowledge base and are not cached. Any skill not named here
/// or in [`CACHED`] is taken as a writer: it empties the cache when it finishes.
pub(crate) const READS: &[&str] = &[
    "health_check_external",
    "check_documentation_standards",
    "validate_documentation_update",
    "get_pattern_health",
    "validate_repository_architecture",
    "check_specific_standard",
    "suggest_improvements",
    "detect_misplaced_components",
    "analyze_component_centrality",
    "recommend_consolidation_plan",
    "find_similar_patterns",
    "get_backup_status",
    // The stored complexity is read with its age in days, which changes with time alone.
    "get_repository_complexity_details",
    // Counts workflows queued and running, which are not in the knowledge base's generation.
    "get_workflow_metadata",
    // The web frontend's: their answers carry the time or depend on it.
    "suggest_pattern_from_component",
    "get_component_dependencies",
    "get_dashboard_overview",
    "get_pattern_adoption_trends",
    "get_pattern_health_summary",
    "get_repository_activity_summary",
    "get_component_duplication_stats",
];

/// What the cache does with a call of a skill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Served from and stored in the cache.
    Cached,
    /// Neither: it reads, or reads elsewhere.
    Read,
    /// May write the knowledge base: the cache is emptied when it finishes.
    Write,
}

/// How the cache treats `skill` called with `input`.
pub fn class(skill: &str, input: &Map<String, Value>) -> Class {
    if CACHED.contains(&skill) {
        // Free-text search embeds the query through the configured provider, which may be
        // remote and may fail over to another mode: not a function of the knowledge base.
        if skill == "query_patterns" && input.get("query").is_some_and(|q| !q.is_null()) {
            return Class::Read;
        }
        Class::Cached
    } else if READS.contains(&skill) {
        Class::Read
    } else {
        Class::Write
    }
}

/// Bytes counted per entry on top of its key and answer (map node, entry, allocations).
const ENTRY_OVERHEAD: usize = 96;

/// A cacheable call: its key, and the epoch read before the handler ran.
pub struct Ticket {
    key: String,
    epoch: u64,
}

struct Entry {
    epoch: u64,
    body: Bytes,
}

#[derive(Default)]
struct Lru {
    map: LinkedHashMap<String, Entry>,
    bytes: usize,
}

/// The cache of one process. With a budget of 0 it is off: no call gets a [`Ticket`].
pub struct SkillCache {
    budget: usize,
    epoch: AtomicU64,
    connected: AtomicBool,
    lru: Mutex<Lru>,
    stats: Arc<CacheStats>,
}

impl SkillCache {
    pub fn new(budget: usize, stats: Arc<CacheStats>) -> Self {
        SkillCache {
            budget,
            epoch: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            lru: Mutex::new(Lru::default()),
            stats,
        }
    }

    pub fn enabled(&self) -> bool {
        self.budget > 0
    }

    /// A ticket for a cacheable call while the listener is connected; `None` means read through.
    /// The epoch is read here, before the handler reads anything.
    pub fn ticket(&self, skill: &str, input: &Map<String, Value>) -> Option<Ticket> {
        if !self.enabled() || class(skill, input) != Class::Cached {
            return None;
        }
        if !self.connected.load(Ordering::SeqCst) {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let epoch = self.epoch.load(Ordering::SeqCst);
        let mut key = String::with_capacity(64);
        key.push_str(skill);
        key.push('\n');
        write_object(&mut key, input);
        Some(Ticket { key, epoch })
    }

    /// The stored answer for `ticket`, if it was computed in the current epoch.
    pub fn get(&self, ticket: &Ticket) -> Option<Bytes> {
        let found = self.lru.lock().ok().and_then(|mut lru| {
            let current = self.epoch.load(Ordering::SeqCst);
            match lru.map.to_back(&ticket.key) {
                Some(entry) if entry.epoch == current => Some(entry.body.clone()),
                _ => None,
            }
        });
        let counter = if found.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores an answer computed with `ticket`, unless the epoch moved while it was computed
    /// (it may predate a write) or it alone exceeds the budget; evicts the least recently used
    /// entries to stay within the budget.
    pub fn put(&self, ticket: Ticket, output: &Map<String, Value>) {
        let Ok(body) = serde_json::to_vec(output) else {
            return;
        };
        let size = ticket.key.len() + body.len() + ENTRY_OVERHEAD;
        if size > self.budget {
            return;
        }
        let Ok(mut lru) = self.lru.lock() else {
            return;
        };
        if ticket.epoch != self.epoch.load(Ordering::SeqCst) {
            return;
        }
        let entry = Entry {
            epoch: ticket.epoch,
            body: Bytes::from(body),
        };
        if let Some(old) = lru.map.insert(ticket.key.clone(), entry) {
            lru.bytes -= ticket.key.len() + old.body.len() + ENTRY_OVERHEAD;
        }
        lru.bytes += size;
        while lru.bytes > self.budget {
            let Some((key, old)) = lru.map.pop_front() else {
                break;
            };
            lru.bytes -= key.len() + old.body.len() + ENTRY_OVERHEAD;
            self.stats.evictions.fetch_add(1, Ordering::Relaxed);
        }
        self.publish(&lru);
    }

    /// Something may have changed: no answer stored so far is served again.
    pub fn invalidate(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut lru) = self.lru.lock() {
            lru.map.clear();
            lru.bytes = 0;
            self.publish(&lru);
        }
    }

    fn publish(&self, lru: &Lru) {
        self.stats.bytes.store(lru.bytes as u64, Ordering::Relaxed);
        self.stats
            .entries
            .store(lru.map.len() as u64, Ordering::Relaxed);
    }

    /// The listener is listening: what happened before is unknown, so start from nothing.
    fn listening(&self) {
        self.invalidate();
        self.connected.store(true, Ordering::SeqCst);
    }

    /// The listener lost its connection: read through until it is back.
    fn deaf(&self) {
        self.connected.store(false, Ordering::SeqCst);
        self.invalidate();
    }
}

/// Empties the cache it holds when dropped: held by whatever may have written the knowledge base
/// for as long as it runs, however it ends.
pub struct EmptiesOnDrop(pub Arc<SkillCache>);

impl Drop for EmptiesOnDrop {
    fn drop(&mut self) {
        self.0.invalidate();
    }
}

/// Writes `value` as compact JSON with every object's keys sorted, so inputs that differ only in
/// key order share an entry.
fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Object(map) => write_object(out, map),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        // Writing to a String cannot fail.
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// [`write_canonical`] for an object.
fn write_object(out: &mut String, map: &Map<String, Value>) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by_key(|&(key, _)| key);
    out.push('{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(key.clone()).to_string());
        out.push(':');
        write_canonical(out, value);
    }
    out.push('}');
}

/// How long to wait before listening again after the connection failed or was lost.
const RETRY: Duration = Duration::from_secs(1);
/// How often a new listener looks whether the transactions in progress when it started
/// listening have ended.
const SETTLE_POLL: Duration = Duration::from_millis(20);
/// How long a `nexusd serve` session trusts its last look that found no other replica listening
/// (one second of the server's clock: migration 0008), with a margin.
const ALONE_TRUSTED: Duration = Duration::from_millis(1200);

/// How migration 0007's trigger tells this replica's sessions and listener from others'.
pub struct SessionNames {
    /// This replica in `kb_listeners`.
    pub replica: String,
    /// The skills' pool's `application_name`: writes through it skip the notification when no
    /// other replica listens.
    pub pool: String,
    /// The listening connection's `application_name`.
    pub listener: String,
    /// Where the listener starts looking for a free advisory lock key (random per process).
    first_key: i32,
}

/// Advisory lock class of the listeners' liveness locks (`kb_listeners.lock_key`); "nxkb".
const LISTENER_LOCK_CLASS: i32 = 0x6e78_6b62;

/// This process's [`SessionNames`]: `host:pid` and a random tag, so that two replicas never take
/// each other's listener for their own, even where every instance is `localhost:1`.
pub fn session_names() -> &'static SessionNames {
    static NAMES: std::sync::OnceLock<SessionNames> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".to_string());
        let mut random = [0u8; 4];
        if std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut random))
            .is_err()
        {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
            random = nanos.to_le_bytes();
        }
        let tag = format!(":{}/{:08x}", std::process::id(), u32::from_le_bytes(random));
        // `application_name` keeps 63 bytes; "nexusd listen " takes 14.
        let room = 63 - "nexusd listen ".len() - tag.len();
        let host: String = host.chars().filter(|c| !c.is_whitespace()).collect();
        let host = host.get(..room).unwrap_or(&host);
        let replica = format!("{host}{tag}");
        SessionNames {
            pool: format!("nexusd serve {replica}"),
            listener: format!("nexusd listen {replica}"),
            replica,
            first_key: i32::from_le_bytes(random),
        }
    })
}

/// Keeps a connection of its own `LISTEN`ing on [`CHANNEL`] while the database is ready, and
/// tells `cache` of every notification and of every loss and return of the connection. `None`
/// when the cache is off.
pub fn spawn_listener(
    cache: Arc<SkillCache>,
    db: &Database,
    mut readiness: watch::Receiver<Readiness>,
) -> Option<JoinHandle<()>> {
    if !cache.enabled() {
        return None;
    }
    // A pool of one, apart from the skills' pool: the listening connection is held for good and
    // must not take a slot (or show in the pool's metrics) from the skills.
    let pool = PgPoolOptions::new().max_connections(1).connect_lazy_with(
        db.connect_options()
            .clone()
            .application_name(&session_names().listener),
    );
    Some(tokio::spawn(async move {
        loop {
            if readiness
                .wait_for(|r| matches!(r, Readiness::Ready(_)))
                .await
                .is_err()
            {
                return;
            }
            match listen(&pool).await {
                Ok(mut listener) => {
                    cache.listening();
                    tracing::debug!("skill cache: listening on {CHANNEL}");
                    while let Ok(Some(_)) = listener.try_recv().await {
                        cache.invalidate();
                    }
                    cache.deaf();
                    tracing::info!("skill cache: lost the {CHANNEL} listener; reading through");
                }
                Err(e) => tracing::debug!(error = %e, "skill cache: cannot listen yet"),
            }
            tokio::time::sleep(RETRY).await;
        }
    }))
}

/// Registers this replica's listener in `kb_listeners` (holding its liveness lock for as long
/// as the session lives), listens on [`CHANNEL`], waits out [`ALONE_TRUSTED`], then waits until
/// every writing transaction on this database that was in progress at that moment has ended.
/// Another replica's session may have looked for listeners before this one registered, found
/// none, and trusts that look for a second (migrations 0007 and 0008): a write it begins within
/// that second does not notify. After the wait every write that begins looks again and sees this
/// listener; every write that began before holds its transaction id, so it is in the list. Once
/// they have ended, whatever they wrote is visible to every read that follows. Until then this
/// replica reads through its cache.
///
/// A writing transaction holds the lock on its own transaction id until it ends, so `pg_locks`
/// names them all. (A snapshot would not: its `xmax` is the newest *completed* id plus one, and
/// the transactions at or past it are in progress but not listed.)
async fn listen(pool: &sqlx::PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.eager_reconnect(false);
    listener.ignore_pool_close_event(true);
    register(&mut listener).await?;
    listener.listen(CHANNEL).await?;
    tokio::time::sleep(ALONE_TRUSTED).await;
    let writing: Vec<String> = sqlx::query_scalar(
        "SELECT l.transactionid::text FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted
            AND a.datname = current_database() AND l.pid <> pg_backend_pid()",
    )
    .fetch_all(&mut listener)
    .await?;
    if writing.is_empty() {
        return Ok(listener);
    }
    tracing::debug!(
        transactions = writing.len(),
        "skill cache: waiting for the writes in flight before caching"
    );
    loop {
        let in_flight: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'transactionid'
                              AND mode = 'ExclusiveLock' AND transactionid::text = ANY($1))",
        )
        .bind(&writing)
        .fetch_one(&mut listener)
        .await?;
        if !in_flight {
            return Ok(listener);
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

/// Takes a free liveness lock for this replica's listener and records it in `kb_listeners`,
/// dropping the registrations whose listener is gone (their lock is free).
async fn register(listener: &mut PgListener) -> Result<(), sqlx::Error> {
    let names = session_names();
    let mut key = names.first_key;
    loop {
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(LISTENER_LOCK_CLASS)
            .bind(key)
            .fetch_one(&mut *listener)
            .await?;
        if taken {
            break;
        }
        // Another live listener has this key.
        key = key.wrapping_add(1);
    }
    sqlx::query(
        "DELETE FROM kb_listeners
          WHERE replica <> $1 AND pg_try_advisory_xact_lock_shared($2, lock_key)",
    )
    .bind(&names.replica)
    .bind(LISTENER_LOCK_CLASS)
    .execute(&mut *listener)
    .await?;
    sqlx::query(
        "INSERT INTO kb_listeners (replica, lock_key) VALUES ($1, $2)
         ON CONFLICT (replica) DO UPDATE SET lock_key = EXCLUDED.lock_key, since = now()",
    )
    .bind(&names.replica)
    .bind(key)
    .execute(&mut *listener)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    fn connected(budget: usize) -> SkillCache {
        let cache = SkillCache::new(budget, Arc::default());
        cache.listening();
        cache
    }

    #[test]
    fn keys_ignore_the_order_of_fields() {
        let cache = connected(1 << 20);
        let a = cache.ticket(
            "get_recent_actions",
            &input(json!({"limit": 5, "offset": 0})),
        );
        let b = cache.ticket(
            "get_recent_actions",
            &input(json!({"offset": 0, "limit": 5})),
        );
        assert_eq!(a.map(|t| t.key), b.map(|t| t.key));
    }

    #[test]
    fn an_answer_computed_across_a_change_is_not_kept() {
        let cache = connected(1 << 20);
        let call = || cache.ticket("get_repository_list", &Map::new()).unwrap();
        let before = call();
        cache.invalidate();
        cache.put(before, &input(json!({"repositories": []})));
        assert!(cache.get(&call()).is_none());
        cache.put(call(), &input(json!({"repositories": []})));
        assert!(cache.get(&call()).is_some());
        cache.deaf();
        assert!(cache.ticket("get_repository_list", &Map::new()).is_none());
    }

    #[test]
    fn the_budget_holds_and_the_oldest_go_first() {
        let cache = connected(4096);
        for i in 0..1000 {
            let t = cache
                .ticket("get_recent_actions", &input(json!({"offset": i})))
                .unwrap();
            cache.put(t, &input(json!({"count": i})));
            assert!(cache.stats.bytes.load(Ordering::Relaxed) <= 4096);
        }
        assert!(cache.stats.evictions.load(Ordering::Relaxed) > 900);
        let last = cache.ticket("get_recent_actions", &input(json!({"offset": 999})));
        assert!(cache.get(&last.unwrap()).is_some());
    }

    #[test]
    fn free_text_search_and_writes_are_not_cached() {
        let q = input(json!({"query": "retry"}));
        assert_eq!(class("query_patterns", &q), Class::Read);
        assert_eq!(class("query_patterns", &Map::new()), Class::Cached);
        assert_eq!(class("add_lesson_learned", &Map::new()), Class::Write);
        assert_eq!(class("a_future_skill", &Map::new()), Class::Write);
    }
}
