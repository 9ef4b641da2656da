// CatalogGuard: decides whether a SELECT that reads relations (or uses
// unqualified operators, function calls or casts) leaves no session state,
// from facts the catalog gave recently. SqlInfo::stateless_if (the
// classifier) lists what the text's proof depends on; the guard asks
// PostgreSQL whether each of those names resolves to something that runs no
// user code, and caches the answer for a bounded time (`refresh`), so DDL
// that changes the answer (CREATE OPERATOR, ENABLE ROW LEVEL SECURITY,
// CREATE RULE, ALTER TABLE ... TYPE, a view replacing a table) is seen
// within that bound plus one lookup.
//
// What counts as "runs no user code" (the lookup's SQL, kVerdictSql in the
// .cc, written with pg_catalog-qualified names and operators throughout so
// it is itself stateless and pipelinable):
//  - each relation resolves (to_regclass, with the asking connection's
//    search_path) to a table, partitioned table or materialized view
//    (relkind r, p, m: never a view or a foreign table), and so do all its
//    inheritance children and partitions, none with row-level security
//    enabled or rules;
//  - every column type of those, followed through domains (which must carry
//    no constraint) and arrays, is built in (oid < 16384, FirstNormalObjectId)
//    or a base type or enum, with built-in input, output, receive, send and
//    typmod functions; cast-to types likewise;
//  - no operator of a listed name and no function of a listed name exists
//    outside the built-ins (pg_operator / pg_proc oid >= 16384), and, when
//    the statement has operators, function calls with arguments or casts,
//    no user-defined cast with a function exists (pg_cast oid >= 16384).
//  - for written relations (CatalogDependencies::written) also what a write
//    runs: relkind r or p only, no trigger but internal ones with built-in
//    functions (foreign keys), no identity column, no sequence or user code
//    (function, operator, operator class, access method) that a default,
//    generated column, constraint, index or partition key depends on, only
//    allow-listed built-ins called in their stored expressions, no foreign
//    key cascading into them, no domain default, no user cast at all
//    (assignment casts); see docs/security.md.
// Anything else, a name that does not resolve, or a failed lookup, is
// "stateful": the statement takes the pooled path and its reset.
//
// Check() never blocks and never waits for the database: an answer not in
// the cache (or older than `refresh`) is kUnknown, and a lookup for it
// starts (one at a time per dependency set); the caller runs the statement
// on the reset path meanwhile.
//
// The runner uses one guard for both paths a one-shot table read may take:
// a proof lets it run on the pipelined engine, or, without an engine, on a
// pooled connection without the session reset. The lookup runs where the
// proof is used: through the engine when there is one (ThroughEngine),
// otherwise on a pooled connection (ThroughPool).
//
// Ownership: the guard owns its cache; lookups' callbacks hold the cache
// alive (shared), so they may finish after the guard is gone.
// Thread safety: all methods are thread-safe; the lookup is started outside
// the guard's lock and its callback may run on any thread, also inline.
#ifndef SESSIONBROKER_SERVER_CORE_EXEC_CATALOG_GUARD_H_
#define SESSIONBROKER_SERVER_CORE_EXEC_CATALOG_GUARD_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/core/base/clock.h"
#include "server/core/pool/connection_pool.h"
#include "server/core/sql/sql_classifier.h"
#include "server/storage/pipeline_engine.h"

namespace sessionbroker::core {

class CatalogGuard {
 public:
  enum class Verdict { kStateless, kStateful, kUnknown };

  // Answers whether `needs` resolve to nothing that runs user code (true),
  // or not (false), or that it could not tell (an error). `done` runs
  // exactly once, on any thread.
  using LookupDone = absl::AnyInvocable<void(absl::StatusOr<bool>) &&>;
  using Lookup = std::function<void(const CatalogDependencies& needs, LookupDone done)>;

  struct Options {
    // How long an answer stays trusted (BROKER_PIPELINE_CATALOG_REFRESH),
    // counted from when its lookup started.
    absl::Duration refresh = absl::Seconds(1);
    // Dependency sets remembered; when full the cache starts over.
    size_t max_entries = 1024;
  };

  struct Stats {
    uint64_t proved = 0;   // Check() answered kStateless
    uint64_t refused = 0;  // Check() answered kStateful
    uint64_t unknown = 0;  // Check() answered kUnknown
    uint64_t lookups = 0;  // lookups started
    uint64_t lookup_failures = 0;
  };

  // `clock` must outlive the guard.
  CatalogGuard(Options options, const Clock& clock, Lookup lookup);
  ~CatalogGuard();

  CatalogGuard(const CatalogGuard&) = delete;
  CatalogGuard& operator=(const CatalogGuard&) = delete;

  Verdict Check(const CatalogDependencies& needs);

  Stats stats() const;

  // The lookup as one catalog query through `engine` (it reads only
  // pg_catalog, so it leaves no state and pipelines with callers'
  // statements: no connection of its own). `engine` must outlive every
  // lookup started.
  static Lookup ThroughEngine(storage::PipelineEngine& engine);

  // The lookup as the same catalog query on a connection taken from `pool`
  // (no engine): the query blocks a pool executor thread, where Acquire's
  // callback runs, and the connection goes straight back (the query leaves
  // no state: no reset). The connection is waited for like a caller's,
  // bounded by `wait` (and the pool's timeout): under load every released
  // connection goes to a queued caller first, so a request that may not
  // wait would never get one and the proofs would lapse exactly when they
  // pay. To take at most one place in the waiter queue (which callers are
  // bounded by, DB_POOL_MAX_WAITERS), lookups that start while one waits
  // for its connection join it and run on the same connection. A failed
  // acquire or query fails every lookup it carried. `pool` and `clock` must
  // outlive every lookup started (the pool's executor runs them).
  static Lookup ThroughPool(ConnectionPool& pool, const Clock& clock,
                            absl::Duration wait = absl::Seconds(5));

 private:
  struct Shared;
  const Options options_;
  const Clock& clock_;
  const Lookup lookup_;
  std::shared_ptr<Shared> shared_;
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_EXEC_CATALOG_GUARD_H_
