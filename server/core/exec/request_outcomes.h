// RequestOutcomes: the durable record of one-shot calls (Execute,
// ExecuteBatch outside a session) that carried a request_id, kept in a table
// the broker owns (BROKER_REQUEST_OUTCOMES_TABLE; docs/operations.md, "The
// request outcomes table"), so "did my write happen?" has an answer across a
// broker restart and across replicas.
//
// The runner writes the row in the same transaction as the call's
// statements (StatementRunner, RunRequest::durable):
//   BEGIN; claim the id (INSERT ... ON CONFLICT: waits for a concurrent
//   attempt with the same id, takes over an expired row); the statements;
//   store the serialized response; COMMIT.
// A claim that finds a live row rolls back (nothing ran) and reads the row
// instead: the caller gets the first outcome. A failed attempt rolls back its
// claim with everything else, so its retry runs again.
//
// This file builds the SQL (no libpq: the runner runs it through
// DbConnection) and the errors of request ids. Thread-safe.
#ifndef SESSIONBROKER_SERVER_CORE_EXEC_REQUEST_OUTCOMES_H_
#define SESSIONBROKER_SERVER_CORE_EXEC_REQUEST_OUTCOMES_H_

#include <atomic>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/storage/value.h"

namespace sessionbroker::core {

// The longest request_id (bytes), and its alphabet: what a UUID, a ULID or a
// "job-42:attempt" needs, and nothing that would need escaping in logs.
inline constexpr size_t kMaxRequestIdBytes = 128;

// OK for "" (no id) and for a well-formed id; INVALID_ARGUMENT naming the
// limit otherwise.
absl::Status ValidateRequestId(absl::string_view request_id);

// The request_id was used before, within the window, for a different request.
absl::Status RequestIdReusedError(absl::string_view request_id);
// The first call with the request_id is still running.
absl::Status RequestIdRunningError(absl::string_view request_id);
// The first call succeeded but its response was too large to keep.
absl::Status OutcomeOmittedError(absl::string_view request_id, size_t max_outcome_bytes);

// What a one-shot call with a request_id needs on top of its statements.
// Created by the transport, filled by the runner; read back by the
// transport once the call's callback runs (which orders it after the
// runner's writes).
struct DurableRequest {
  std::string client_id;
  std::string request_id;
  // A hash of the request's body (method and fields): a retry must match.
  std::string fingerprint;
  // Serializes the call's response from its results; the runner stores it
  // (or, over max_outcome_bytes, only that it was omitted).
  absl::AnyInvocable<std::string(const std::vector<storage::QueryResult>&)> serialize;

  // The row an earlier attempt left, when the claim found one (the call's
  // statements then did not run).
  struct Stored {
    bool same_request = false;
    bool omitted = false;
    std::string response;
  };
  std::optional<Stored> replayed;
};

struct RequestOutcomesOptions {
  // schema.table, both lower-case SQL identifiers (checked by config).
  std::string table = "sessionbroker.request_outcomes";
  absl::Duration window = absl::Hours(24);
  size_t max_outcome_bytes = 64 << 10;
};

class RequestOutcomes final {
 public:
  explicit RequestOutcomes(RequestOutcomesOptions options);
  RequestOutcomes(const RequestOutcomes&) = delete;
  RequestOutcomes& operator=(const RequestOutcomes&) = delete;

  const RequestOutcomesOptions& options() const { return options_; }

  // CREATE TABLE / INDEX IF NOT EXISTS, in order, each in autocommit.
  std::vector<storage::Statement> CreateStatements() const;
  // Whether CreateStatements() have succeeded once in this process.
  bool created() const { return created_.load(std::memory_order_acquire); }
  void MarkCreated() { created_.store(true, std::memory_order_release); }

  // In the call's transaction: claims the id; one row back = claimed, none =
  // a live row of an earlier attempt exists (committed: the claim waited for
  // it).
  storage::Statement Claim(const DurableRequest& request, absl::Time now) const;
  // In the call's transaction, after its statements: stores the response.
  storage::Statement Store(const DurableRequest& request, std::string response, bool omitted) const;
  // Autocommit, after a claim found a live row: that row (request_same
  // bool, rows_omitted bool, response bytea), or no row if it vanished
  // meanwhile.
  storage::Statement Lookup(const DurableRequest& request) const;
  // Autocommit: deletes the rows older than the window.
  storage::Statement Prune(absl::Time now) const;

 private:
  const RequestOutcomesOptions options_;
  // Quoted "schema"."table", and the index's own (unqualified) name.
  const std::string table_;
  const std::string index_;
  std::atomic<bool> created_{false};
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_EXEC_REQUEST_OUTCOMES_H_
