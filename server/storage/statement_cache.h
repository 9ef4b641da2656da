// The bookkeeping of one connection's prepared statement cache: which SQL
// texts have a prepared statement on the connection and under which name,
// which of them the server still has prepared, and which to deallocate when
// the cache is full. It sends nothing itself: the connection does the
// PREPARE, DEALLOCATE and execution it decides on, so any client library can
// use it (the pooled libpq connections, pq_connection.h).
//
// The policy:
//  - Only SQL that repeats is worth a PREPARE round trip: a text is prepared
//    the second time it runs. The tally of texts run once is bounded (four
//    times the capacity); when it fills up it starts over.
//  - A full cache never evicts by itself (Use runs a new text unprepared):
//    eviction needs a DEALLOCATE, which a connection can only send outside a
//    transaction (an aborted one would refuse it), so it asks EvictFor first
//    when it may. The victim is the least recently used statement.
//  - A statement the server lost or whose plan went stale is forgotten
//    (Forget) and earns its place again like a new one.
//  - DISCARD ALL deallocates every statement on the server: after
//    MarkAllUnprepared each is prepared again, under the same name, on its
//    next use.
// A capacity of 0 (or less) turns the cache off: every text runs unprepared.
//
// Not thread-safe: owned by its connection and used by the connection's
// owner thread only.
#ifndef SESSIONBROKER_SERVER_STORAGE_STATEMENT_CACHE_H_
#define SESSIONBROKER_SERVER_STORAGE_STATEMENT_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"

namespace sessionbroker::storage {

class StatementCache final {
 public:
  explicit StatementCache(int capacity);

  StatementCache(const StatementCache&) = delete;
  StatementCache& operator=(const StatementCache&) = delete;

  // How to run a statement now.
  struct Plan {
    // The prepared statement to execute; nullptr to run the SQL unprepared.
    // Valid until the next non-const call.
    const std::string* name = nullptr;
    // The server does not have *name prepared (it is new, or was discarded):
    // prepare it before executing. From then on the cache counts it as
    // prepared on the server.
    bool prepare = false;
  };

  // Counts one use of `sql` (a cacheable statement's text) and says how to
  // run it: prepared if it has a statement, newly prepared if this is its
  // second use and there is room, else unprepared.
  Plan Use(const std::string& sql);

  // When `sql` would be prepared on this use but the cache is full: removes
  // the least recently used statement and returns its name, for the caller to
  // DEALLOCATE. nullopt when no room needs making. Call only where the
  // connection can deallocate (outside any transaction).
  std::optional<std::string> EvictFor(const std::string& sql);

  // Drops `sql`'s statement (its prepared copy failed: stale, or gone) and
  // returns its name, whose server side the caller may deallocate later;
  // nullopt if `sql` has none.
  std::optional<std::string> Forget(const std::string& sql);

  // The server deallocated every prepared statement (DISCARD ALL): each is
  // prepared again on its next use.
  void MarkAllUnprepared();

  // Statements the cache counts as prepared on the server.
  size_t PreparedCount() const;

  // Statements held (prepared on the server or due to be again).
  size_t size() const { return statements_.size(); }

 private:
  struct Statement {
    std::string name;
    uint64_t last_use = 0;
    bool prepared = false;  // on the server, as far as the cache knows
  };

  bool Full() const { return statements_.size() >= capacity_; }

  const size_t capacity_;                                   // 0: off
  absl::flat_hash_map<std::string, Statement> statements_;  // by SQL text
  absl::flat_hash_set<std::string> seen_once_;              // texts run once, not prepared
  uint64_t names_issued_ = 0;
  uint64_t use_clock_ = 0;
};

}  // namespace sessionbroker::storage

#endif  // SESSIONBROKER_SERVER_STORAGE_STATEMENT_CACHE_H_
