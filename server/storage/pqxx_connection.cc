#include "server/storage/pqxx_connection.h"

#include <poll.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "server/storage/conninfo.h"
#include "server/storage/pq_error.h"
#include "server/storage/pqxx_internals.h"
#include "server/storage/sql_error.h"
#include "server/storage/statement_cache.h"
#include "server/storage/value_text.h"

namespace sessionbroker::storage {

// Names (and, for arrays, element types) of the types that are not built in,
// as the server reported them. Shared by every connection of a connector; a
// type's OID names the same type for the life of the database.
// Thread-safe.
class PqxxTypeCache final {
 public:
  struct Entry {
    std::string name;          // pg_type.typname; empty if the server did not know the OID
    uint32_t element_oid = 0;  // for array types: the element type (a domain's base type)
  };

  std::optional<Entry> Find(uint32_t oid) const {
    absl::MutexLock lock(&mu_);
    const auto it = entries_.find(oid);
    if (it == entries_.end()) return std::nullopt;
    return it->second;
  }

  void Insert(uint32_t oid, Entry entry) {
    absl::MutexLock lock(&mu_);
    entries_.insert_or_assign(oid, std::move(entry));
  }

 private:
  mutable absl::Mutex mu_;
  std::unordered_map<uint32_t, Entry> entries_ ABSL_GUARDED_BY(mu_);
};

namespace {

// Makes every connection render values the same way, whatever the server's or
// role's defaults: ISO dates, ISO 8601 intervals, UTC timestamps, and floats
// printed with the shortest text that round-trips exactly. One round trip
// (simple protocol, several statements).
constexpr char kBaselineSettingsSql[] =
    "SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'iso_8601'; SET TimeZone = 'UTC'; "
    "SET extra_float_digits = 3";

// Names a result's non-built-in types. For arrays it also gives the element
// type to decode with (a domain's base type, since the server reports domain
// values with their base type's OID anyway). Every name is qualified, also the
// operators, so that nothing on the session's search_path can change what it
// runs.
constexpr char kTypeLookupSql[] =
    "SELECT t.oid, t.typname, "
    "CASE WHEN t.typcategory OPERATOR(pg_catalog.=) 'A' "
    "AND t.typelem OPERATOR(pg_catalog.<>) 0::pg_catalog.oid "
    "THEN CASE WHEN e.typtype OPERATOR(pg_catalog.=) 'd' THEN e.typbasetype ELSE e.oid END "
    "ELSE 0::pg_catalog.oid END "
    "FROM pg_catalog.pg_type t LEFT JOIN pg_catalog.pg_type e "
    "ON e.oid OPERATOR(pg_catalog.=) t.typelem "
    "WHERE t.oid OPERATOR(pg_catalog.=) ANY($1::pg_catalog.oid[])";

// libpqxx 6.4 often reports a lost connection only as "not connected" (the
// server's own farewell, e.g. 57P01 for a terminated session, does not reach
// the exception), so the message lists the usual causes.
absl::Status LostConnection(const absl::Status& cause) {
  return Recode(cause, absl::StatusCode::kUnavailable,
                "lost the connection to PostgreSQL (server restart, terminated session or "
                "network failure); a write that was running may or may not have been applied: ");
}

absl::Status BrokenError() {
  return absl::UnavailableError(
      "this PostgreSQL connection is broken (it was lost or left in an unknown state by an "
      "earlier failure) and cannot be used again");
}

// Parameter texts; nullopt is SQL NULL.
using ParamTexts = std::vector<std::optional<std::string>>;

absl::StatusOr<ParamTexts> EncodeParams(const std::vector<Value>& params) {
  ParamTexts out;
  out.reserve(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    absl::StatusOr<std::optional<std::string>> text = ParameterText(params[i]);
    if (!text.ok()) return WithPrefix(text.status(), absl::StrCat("parameter $", i + 1, ": "));
    out.push_back(*std::move(text));
  }
  return out;
}

// The list exec_params takes: libpqxx sends each `const char*` as a
// text-format parameter, and a null pointer as SQL NULL. Valid while `texts`
// is neither changed nor destroyed.
std::vector<const char*> Pointers(const ParamTexts& texts) {
  std::vector<const char*> out;
  out.reserve(texts.size());
  for (const std::optional<std::string>& text : texts) {
    out.push_back(text.has_value() ? text->c_str() : nullptr);
  }
  return out;
}

// `conninfo` as given, plus each default of `options` it does not set, in
// its own syntax (URL query parameters or key=value pairs). The caller's text
// is kept as it is, so that libpq reads its options exactly as before.
std::string WithDefaults(const std::string& conninfo, const Conninfo& parsed,
                         const PqxxConnector::Options& options) {
  const std::pair<const char*, int> defaults[] = {
      {"connect_timeout", options.connect_timeout_seconds},
      {"keepalives", 1},
      {"keepalives_idle", options.keepalives_idle_seconds},
      {"keepalives_interval", options.keepalives_interval_seconds},
      {"keepalives_count", options.keepalives_count},
      {"tcp_user_timeout", options.tcp_user_timeout_ms},
  };
  std::string out = conninfo;
  for (const auto& [key, value] : defaults) {
    if (value <= 0 || parsed.IsSet(key)) continue;
    if (parsed.is_url()) {
      const char* separator = "&";
      if (out.find('?') == std::string::npos) {
        separator = "?";
      } else if (out.back() == '?' || out.back() == '&') {
        separator = "";
      }
      absl::StrAppend(&out, separator, key, "=", value);
    } else {
      absl::StrAppend(&out, out.empty() ? "" : " ", key, "=", value);
    }
  }
  return out;
}

// libpq does not echo passwords in its messages once the connection string
// has parsed; this is the belt to that pair of braces. Very short secrets are
// left alone so that a message is not shredded by them.
std::string ScrubSecrets(std::string message, const std::vector<std::string>& secrets) {
  constexpr size_t kMinScrubbedLength = 4;
  for (const std::string& secret : secrets) {
    if (secret.size() >= kMinScrubbedLength) absl::StrReplaceAll({{secret, "********"}}, &message);
  }
  return message;
}

void ApplyBaselineSettings(pqxx::connection_base& conn) {
  pqxx::nontransaction tx(conn);
  tx.exec(kBaselineSettingsSql);
}

// One PostgreSQL connection. See pqxx_connection.h for the contract.
class PqxxConnection final : public DbConnection {
 public:
  // `conn` is open, with reactivation inhibited, verbose errors and the
  // baseline settings applied; `quiet` is registered on it.
  PqxxConnection(std::unique_ptr<pqxx::connection> conn,
                 std::unique_ptr<pqxx::quiet_errorhandler> quiet,
                 std::shared_ptr<PqxxTypeCache> types, int statement_cache_size)
      : conn_(std::move(conn)),
        quiet_(std::move(quiet)),
        types_(std::move(types)),
        statements_(statement_cache_size),
        backend_pid_(conn_->backendpid()) {}

  ~PqxxConnection() override {
    // Waits for a Cancel() in progress; the members then close the connection.
    absl::MutexLock lock(&close_mu_);
    closed_ = true;
  }

  PqxxConnection(const PqxxConnection&) = delete;
  PqxxConnection& operator=(const PqxxConnection&) = delete;

  absl::StatusOr<QueryResult> Execute(const Statement& statement,
                                      const ExecuteOptions& options) override {
    if (IsBroken()) return BrokenError();
    absl::StatusOr<ParamTexts> params = EncodeParams(statement.params);
    if (!params.ok()) return params.status();
    if (Cancelled()) return CancelledError();
    if (!options.in_transaction) {
      // DEALLOCATE runs on the connection itself, before any transaction
      // object exists (and never inside a transaction that may be aborted).
      if (absl::Status room = MakeRoomToPrepare(statement); !room.ok()) return room;
    }
    bool stale = false;
    absl::StatusOr<QueryResult> out = ExecuteOnce(statement, *params, options, &stale);
    if (stale && !options.in_transaction && !Cancelled()) {
      // The failed statement did nothing; autocommit lets it run again, now
      // unprepared (it is prepared afresh on its next use).
      out = ExecuteOnce(statement, *params, options, &stale);
    }
    // Only now that no transaction object uses the connection.
    if (close_after_call_) MarkBroken();
    return out;
  }

  // One attempt of Execute. Sets *stale when it failed only because the
  // connection's prepared copy of the statement was stale (now forgotten).
  absl::StatusOr<QueryResult> ExecuteOnce(const Statement& statement, const ParamTexts& params,
                                          const ExecuteOptions& options, bool* stale) {
    *stale = false;
    bool prepared = false;
    size_t result_bytes = 0;
    try {
      pqxx::nontransaction tx(*conn_);
      const pqxx::result result = Run(tx, statement, params, &prepared);
      return ConvertResult(tx, result, /*in_batch=*/options.in_transaction,
                           options.max_result_bytes, &result_bytes);
    } catch (const pqxx::sql_error& e) {
      if (prepared && IsStalePreparedStatement(e.sqlstate(), e.what())) {
        ForgetPrepared(statement.sql);
        *stale = true;
      }
      return StatusFromException();
    } catch (...) {
      return StatusFromException();
    }
  }

  // Runs one statement on `tx`: through the connection's prepared copy when
  // it has one or the statement is due to get one (*prepared is then true),
  // else as an unnamed statement. Both use the extended protocol even without
  // parameters, so the server refuses a string holding several statements.
  pqxx::result Run(pqxx::transaction_base& tx, const Statement& statement, const ParamTexts& params,
                   bool* prepared) {
    *prepared = false;
    if (const std::string* name = PreparedNameFor(statement)) {
      *prepared = true;
      return tx.exec_prepared(*name, pqxx::prepare::make_dynamic_params(Pointers(params)));
    }
    return tx.exec_params(statement.sql, pqxx::prepare::make_dynamic_params(Pointers(params)));
  }

  // The name of the statement's prepared copy on this connection, defining
  // one in libpqxx (which prepares it on first use) when the cache says so;
  // nullptr to run it unprepared.
  const std::string* PreparedNameFor(const Statement& statement) {
    if (!statement.cacheable) return nullptr;
    const StatementCache::Plan plan = statements_.Use(statement.sql);
    // Also after DISCARD ALL, where libpqxx already has the same definition
    // (unregistered by ResetSession): defining it again changes nothing.
    if (plan.prepare) conn_->prepare(*plan.name, statement.sql);
    return plan.name;
  }

  // Deallocates the least recently used prepared statement if the cache is
  // full and `statement` would be prepared now. Outside any transaction.
  absl::Status MakeRoomToPrepare(const Statement& statement) {
    if (!statement.cacheable) return absl::OkStatus();
    const std::optional<std::string> evicted = statements_.EvictFor(statement.sql);
    if (!evicted.has_value()) return absl::OkStatus();
    try {
      conn_->unprepare(*evicted);  // DEALLOCATE, if PostgreSQL has it
      return absl::OkStatus();
    } catch (...) {
      return WithPrefix(StatusFromException(), "deallocating a cached prepared statement: ");
    }
  }

  // Drops the statement's prepared copy from the cache. Its server side stays
  // until the connection is reset or closed (DEALLOCATE could fail now: the
  // transaction may be aborted).
  void ForgetPrepared(const std::string& sql) {
    if (const std::optional<std::string> name = statements_.Forget(sql)) {
      pqxx_internals::ForgetPrepared(*conn_, *name);
    }
  }

  absl::StatusOr<std::vector<QueryResult>> ExecuteBatch(absl::Span<const Statement> statements,
                                                        const ExecuteOptions& options) override {
    if (IsBroken()) return BrokenError();
    const size_t n = statements.size();
    std::vector<ParamTexts> params;
    params.reserve(n);
    for (size_t k = 0; k < n; ++k) {
      absl::StatusOr<ParamTexts> p = EncodeParams(statements[k].params);
      if (!p.ok()) return WithPrefix(p.status(), StatementPrefix(k, n));
      params.push_back(*std::move(p));
    }
    if (Cancelled()) return WithPrefix(CancelledError(), StatementPrefix(0, n));
    bool stale = false;
    absl::StatusOr<std::vector<QueryResult>> results =
        RunBatch(statements, params, options, &stale);
    if (!results.ok()) EndFailedBatch();
    if (stale && !IsBroken() && !Cancelled()) {
      // Nothing of the batch was applied (it was rolled back): run it again,
      // the stale statement unprepared.
      results = RunBatch(statements, params, options, &stale);
      if (!results.ok()) EndFailedBatch();
    }
    return results;
  }

  absl::Status Begin(const TransactionOptions& options) override {
    if (IsBroken()) return BrokenError();
    if (Cancelled()) return WithPrefix(CancelledError(), "BEGIN: ");
    try {
      pqxx::nontransaction tx(*conn_);
      tx.exec(BeginSql(tx, options));
      return absl::OkStatus();
    } catch (...) {
      const absl::Status status = StatusFromException();
      // A failed setting leaves the transaction open and aborted.
      EndFailedBatch();
      return WithPrefix(status, "BEGIN: ");
    }
  }

  absl::Status Commit() override {
    if (IsBroken()) return BrokenError();
    if (Cancelled()) {
      EndFailedBatch();
      return WithPrefix(CancelledError(), "COMMIT: ");
    }
    // A transaction whose connection the server closed while it sat idle
    // (pg_terminate_backend, idle_in_transaction_session_timeout, a restart)
    // is rolled back already, and COMMIT would only find that out as "lost
    // during COMMIT, outcome unknown", which is true only of a connection lost
    // after COMMIT went out.
    if (ServerClosedConnection()) {
      MarkBroken();
      return absl::AbortedError(
          "COMMIT: PostgreSQL closed the connection while the transaction was idle (terminated "
          "session, idle_in_transaction_session_timeout or server restart), before COMMIT was "
          "sent, and rolled the transaction back; nothing of the transaction was applied");
    }
    try {
      pqxx::nontransaction tx(*conn_);
      const pqxx::result commit = tx.exec("COMMIT");
      if (pqxx_internals::CommandTag(commit) != "COMMIT") {
        return absl::AbortedError(
            "COMMIT: PostgreSQL rolled the transaction back instead of committing it (an earlier "
            "statement had failed and aborted it); nothing of the transaction was applied");
      }
      return absl::OkStatus();
    } catch (...) {
      const absl::Status status = StatusFromException();
      if (IsBroken() && status.code() == absl::StatusCode::kUnavailable) {
        return Recode(status, absl::StatusCode::kUnknown,
                      "COMMIT: the connection was lost during COMMIT, so whether the transaction "
                      "was applied is unknown; check before retrying: ");
      }
      // A failed COMMIT (a deferred constraint, a serialization failure) has
      // ended the transaction; the ROLLBACK only makes sure.
      EndFailedBatch();
      return WithPrefix(status, "COMMIT: ");
    }
  }

  absl::Status Rollback() override {
    if (IsBroken()) return BrokenError();
    EndFailedBatch();
    if (IsBroken()) {
      return absl::UnavailableError(
          "ROLLBACK failed and the connection was closed; the server rolls the transaction back "
          "when its connection closes, so nothing of it was applied");
    }
    return absl::OkStatus();
  }

  absl::Status Ping() override {
    if (IsBroken()) return BrokenError();
    try {
      // A real statement rather than an empty query: it fails in a session
      // stuck in a failed transaction (25P02), which would fail every
      // statement of the connection's next user.
      pqxx::nontransaction tx(*conn_);
      tx.exec("SELECT 1");
      return absl::OkStatus();
    } catch (...) {
      const absl::Status status = StatusFromException();
      MarkBroken();
      return WithPrefix(status, "ping failed: ");
    }
  }

  absl::Status ResetSession() override {
    if (IsBroken()) return BrokenError();
    try {
      pqxx::nontransaction tx(*conn_);
      // Always: the broker cannot see whether a caller's BEGIN left a
      // transaction open (libpqxx 6.4 does not expose PQtransactionStatus).
      // Without one the server only warns, and the warning is discarded.
      tx.exec("ROLLBACK");
      // Refused inside a transaction block or a multi-statement string,
      // hence its own round trip.
      tx.exec("DISCARD ALL");
      // DISCARD ALL deallocated the cached prepared statements too: libpqxx
      // prepares each again when it is next used.
      pqxx_internals::MarkAllUnprepared(*conn_);
      statements_.MarkAllUnprepared();
      tx.exec(kBaselineSettingsSql);
      return absl::OkStatus();
    } catch (...) {
      const absl::Status status = StatusFromException();
      MarkBroken();
      return WithPrefix(status, "resetting the session failed: ");
    }
  }

  void Cancel() override {
    // First, so that a request reaching the server between two statements
    // (where PostgreSQL ignores it) still stops the next one.
    cancelled_.store(true, std::memory_order_release);
    absl::MutexLock lock(&close_mu_);
    if (closed_) return;
    try {
      conn_->cancel_query();
    } catch (...) {
      // Best effort: the flag stops the next step, and the statement's
      // deadline still ends the wait for this one.
    }
  }

  void ClearCancel() override { cancelled_.store(false, std::memory_order_release); }

  bool IsBroken() const override { return broken_.load(std::memory_order_acquire); }

  int BackendPid() const override { return backend_pid_; }

 private:
  static std::string StatementPrefix(size_t k, size_t n) {
    return absl::StrCat("statement ", k + 1, " of ", n, ": ");
  }

  bool Cancelled() const { return cancelled_.load(std::memory_order_acquire); }

  // Whether the server has closed its end of the connection, seen without a
  // round trip: a backend that exits (terminated, restarted) closes the
  // socket, and nothing sent afterwards reaches a transaction.
  bool ServerClosedConnection() const {
    pollfd p{conn_->sock(), POLLRDHUP, 0};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
  }

  // One simple-protocol string (one round trip): BEGIN with the transaction's
  // characteristics, then its settings as SET LOCAL would set them. Names were
  // checked against the allow-list by the caller; both names and values go in
  // as quoted literals, so neither can change what runs.
  static std::string BeginSql(pqxx::transaction_base& tx, const TransactionOptions& options) {
    std::string sql = "BEGIN";
    switch (options.isolation) {
      case TransactionOptions::Isolation::kDefault:
        break;
      case TransactionOptions::Isolation::kReadCommitted:
        sql += " ISOLATION LEVEL READ COMMITTED";
        break;
      case TransactionOptions::Isolation::kRepeatableRead:
        sql += " ISOLATION LEVEL REPEATABLE READ";
        break;
      case TransactionOptions::Isolation::kSerializable:
        sql += " ISOLATION LEVEL SERIALIZABLE";
        break;
    }
    if (options.read_only) sql += " READ ONLY";
    if (options.deferrable) sql += " DEFERRABLE";
    if (!options.settings.empty()) {
      sql += "; SELECT ";
      const char* sep = "";
      for (const auto& [name, value] : options.settings) {
        absl::StrAppend(&sql, sep, "pg_catalog.set_config(", tx.quote(name), ", ", tx.quote(value),
                        ", true)");
        sep = ", ";
      }
    }
    return sql;
  }

  // What the server would have said had the cancel request hit a statement.
  static absl::Status CancelledError() {
    return SqlError("57014", "canceling statement due to user request");
  }

  // The batch proper: BEGIN, the statements, COMMIT. On failure the
  // transaction may still be open (aborted or not); the caller ends it.
  //
  // BEGIN and COMMIT are sent as plain statements rather than through
  // pqxx::work, whose commit() cannot tell a COMMIT from the ROLLBACK that
  // PostgreSQL silently answers for an aborted transaction.
  // Sets *stale when a statement failed only because the connection's
  // prepared copy of it was stale (now forgotten).
  absl::StatusOr<std::vector<QueryResult>> RunBatch(absl::Span<const Statement> statements,
                                                    const std::vector<ParamTexts>& params,
                                                    const ExecuteOptions& options, bool* stale) {
    *stale = false;
    const size_t n = statements.size();
    const std::string commit_prefix = absl::StrCat("commit of ", n, " statements: ");
    std::vector<QueryResult> results;
    results.reserve(n);
    size_t result_bytes = 0;
    size_t k = 0;  // the statement running; n while committing
    bool beginning = true;
    bool committing = false;
    try {
      pqxx::nontransaction tx(*conn_);
      tx.exec(options.transaction.IsPlain() ? std::string("BEGIN")
                                            : BeginSql(tx, options.transaction));
      beginning = false;
      for (; k < n; ++k) {
        if (Cancelled()) return WithPrefix(CancelledError(), StatementPrefix(k, n));
        bool prepared = false;
        pqxx::result result;
        try {
          result = Run(tx, statements[k], params[k], &prepared);
        } catch (const pqxx::sql_error& e) {
          if (prepared && IsStalePreparedStatement(e.sqlstate(), e.what())) {
            ForgetPrepared(statements[k].sql);
            *stale = true;
          }
          throw;
        }
        absl::StatusOr<QueryResult> converted =
            ConvertResult(tx, result, /*in_batch=*/true, options.max_result_bytes, &result_bytes);
        if (!converted.ok()) return WithPrefix(converted.status(), StatementPrefix(k, n));
        if (absl::Status ended = CheckTransactionNotEnded(converted->command_tag); !ended.ok()) {
          return WithPrefix(ended, StatementPrefix(k, n));
        }
        results.push_back(*std::move(converted));
      }
      if (Cancelled()) return WithPrefix(CancelledError(), commit_prefix);
      committing = true;
      const pqxx::result commit = tx.exec("COMMIT");
      if (pqxx_internals::CommandTag(commit) != "COMMIT") {
        // Only an error the adapter did not see can get here; the server has
        // ended the transaction either way.
        return absl::AbortedError(
            absl::StrCat(commit_prefix,
                         "PostgreSQL rolled the transaction back instead of committing it (an "
                         "earlier error had aborted it); nothing of the batch was applied"));
      }
    } catch (...) {
      const absl::Status status = StatusFromException();
      if (committing && IsBroken() && status.code() == absl::StatusCode::kUnavailable) {
        return Recode(status, absl::StatusCode::kUnknown,
                      absl::StrCat(commit_prefix,
                                   "the connection was lost during COMMIT, so whether the "
                                   "transaction was applied is unknown; check before retrying: "));
      }
      if (beginning) return WithPrefix(status, "BEGIN: ");
      return WithPrefix(status, k < n ? StatementPrefix(k, n) : commit_prefix);
    }
    return results;
  }

  // A statement of a batch must not end the batch's transaction: what ran
  // after it would be committed statement by statement (or not at all), and
  // the final COMMIT would succeed with a warning.
  static absl::Status CheckTransactionNotEnded(absl::string_view command_tag) {
    const char* consequence = nullptr;
    if (command_tag == "COMMIT") {
      consequence = "; the statements before it had already been committed by it";
    } else if (command_tag == "PREPARE TRANSACTION") {
      consequence =
          "; the statements before it had been prepared as a two-phase transaction by it (see "
          "pg_prepared_xacts)";
    } else if (command_tag == "ROLLBACK") {
      consequence = "; nothing of the batch was applied";
    } else {
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(absl::StrCat(
        command_tag,
        " is not allowed in a batch: the broker begins and commits a batch's transaction itself, "
        "so the batch was stopped here",
        consequence));
  }

  // Leaves the session outside any transaction after a failed batch, or the
  // connection broken: a session left inside a transaction (aborted or not)
  // would make its next user's statements fail, or join them to this
  // transaction. A second try covers a cancel request that was still on its
  // way when the batch stopped and hit the first ROLLBACK.
  void EndFailedBatch() {
    if (close_after_call_) MarkBroken();
    for (int attempt = 0; attempt < 2 && !IsBroken(); ++attempt) {
      try {
        pqxx::nontransaction tx(*conn_);
        // Without an open transaction the server only warns (discarded).
        tx.exec("ROLLBACK");
        return;
      } catch (...) {
        StatusFromException().IgnoreError();
      }
    }
    MarkBroken();
  }

  // `in_batch`: the statement ran inside the batch's transaction, which a
  // failure of the adapter's own queries must not abort.
  absl::StatusOr<QueryResult> ConvertResult(pqxx::transaction_base& tx, const pqxx::result& result,
                                            bool in_batch, size_t max_bytes, size_t* used_bytes) {
    QueryResult out;
    out.command_tag = pqxx_internals::CommandTag(result);
    if (out.command_tag.empty()) {
      // Every completed statement has a command tag. A result without one is
      // the start of COPY ... FROM STDIN / TO STDOUT (libpq is now in copy
      // mode, which the next call would have to end: draining all of a COPY
      // TO, or failing a COPY FROM) or an empty query; libpqxx 6.4 does not
      // tell them apart. Closing the connection is the one way out that
      // costs nothing now and cannot leave a half-done COPY behind.
      close_after_call_ = true;
      return absl::UnimplementedError(
          "COPY FROM STDIN / TO STDOUT is not supported through the broker (use INSERT ... "
          "VALUES or SELECT), and neither is an empty statement; the statement produced no "
          "command tag, so its connection was closed");
    }
    const pqxx::row::size_type num_columns = result.columns();
    out.columns.resize(num_columns);
    std::vector<uint32_t> element_oids(num_columns);
    bool any_unknown = false;
    for (pqxx::row::size_type c = 0; c < num_columns; ++c) {
      Column& column = out.columns[c];
      column.name = result.column_name(c);
      column.type_oid = result.column_type(c);
      column.type_name = std::string(TypeName(column.type_oid));
      element_oids[c] = ArrayElementType(column.type_oid);
      any_unknown = any_unknown || column.type_name.empty();
    }
    if (any_unknown) NameUnknownTypes(tx, in_batch, &out.columns, &element_oids);

    // Counted as the result is converted, so an oversized one is abandoned
    // early (see value_text.h for why the count bounds the response).
    auto over_cap = [&](size_t bytes) {
      *used_bytes += bytes;
      return max_bytes > 0 && *used_bytes > max_bytes;
    };
    auto too_large = [&] {
      return absl::ResourceExhaustedError(absl::StrCat(
          "result exceeds ", max_bytes,
          " bytes (BROKER_MAX_RESULT_BYTES); add a LIMIT or page with WHERE/ORDER BY",
          in_batch ? "; its transaction was rolled back"
                   : "; the statement itself ran to completion and, outside a batch, its "
                     "changes were committed"));
    };
    if (over_cap(ResultHeaderBytes(out))) return too_large();
    const pqxx::result::size_type num_rows = result.size();
    out.rows.reserve(num_rows);
    for (pqxx::result::size_type r = 0; r < num_rows; ++r) {
      if (over_cap(kResultRowOverheadBytes)) return too_large();
      const pqxx::row row = result[r];
      std::vector<Value> values;
      values.reserve(num_columns);
      for (pqxx::row::size_type c = 0; c < num_columns; ++c) {
        const pqxx::field field = row[c];
        if (field.is_null()) {
          values.push_back(Value::Null());
        } else {
          const absl::string_view text(field.c_str(), field.size());
          absl::StatusOr<Value> value = element_oids[c] != 0
                                            ? ArrayFromText(element_oids[c], text)
                                            : ScalarFromText(out.columns[c].type_oid, text);
          if (!value.ok()) {
            return WithPrefix(value.status(),
                              absl::StrCat("column \"", out.columns[c].name, "\": "));
          }
          values.push_back(*std::move(value));
        }
        if (over_cap(ResultBytes(values.back()))) return too_large();
      }
      out.rows.push_back(std::move(values));
    }
    out.rows_affected = static_cast<int64_t>(result.affected_rows());
    return out;
  }

  // Fills in the names of non-built-in types (enums, domains' arrays,
  // composite and extension types) from the shared cache, asking the server
  // for the ones nobody has seen yet. Runs on the caller's transaction object,
  // as libpqxx allows only one at a time. If the lookup fails the names stay
  // empty and the values are still returned (as text): in autocommit the
  // failed lookup is a transaction of its own; inside a batch it runs under a
  // savepoint, so that its failure does not abort the batch's transaction
  // (whose COMMIT would then roll back). Undoing the savepoint does fail the
  // batch if it fails.
  void NameUnknownTypes(pqxx::transaction_base& tx, bool in_batch, std::vector<Column>* columns,
                        std::vector<uint32_t>* element_oids) {
    std::vector<uint32_t> missing;
    for (const Column& column : *columns) {
      if (column.type_name.empty() && !types_->Find(column.type_oid).has_value()) {
        missing.push_back(column.type_oid);
      }
    }
    if (!missing.empty()) {
      if (in_batch) tx.exec("SAVEPOINT sessionbroker_type_lookup");
      bool failed = false;
      try {
        const pqxx::result found =
            tx.exec_params(kTypeLookupSql, absl::StrCat("{", absl::StrJoin(missing, ","), "}"));
        for (const pqxx::row& row : found) {
          types_->Insert(row[0].as<uint32_t>(),
                         PqxxTypeCache::Entry{row[1].c_str(), row[2].as<uint32_t>()});
        }
        // Unknown to the server too (dropped since): remember that as well.
        for (const uint32_t oid : missing) {
          if (!types_->Find(oid).has_value()) types_->Insert(oid, PqxxTypeCache::Entry{});
        }
      } catch (const pqxx::sql_error&) {
        failed = true;
      } catch (const pqxx::transaction_rollback&) {
        failed = true;
      }
      if (in_batch) {
        tx.exec(failed ? "ROLLBACK TO SAVEPOINT sessionbroker_type_lookup; "
                         "RELEASE SAVEPOINT sessionbroker_type_lookup"
                       : "RELEASE SAVEPOINT sessionbroker_type_lookup");
      }
    }
    for (size_t c = 0; c < columns->size(); ++c) {
      Column& column = (*columns)[c];
      if (!column.type_name.empty()) continue;
      if (std::optional<PqxxTypeCache::Entry> entry = types_->Find(column.type_oid)) {
        column.type_name = entry->name;
        (*element_oids)[c] = entry->element_oid;
      }
    }
  }

  // Turns the exception being handled into a status; marks the connection
  // broken when it is lost or its state is unknown. Call only from a catch
  // block (the transaction objects of the try block are gone by then).
  absl::Status StatusFromException() {
    absl::Status status;
    bool state_unknown = false;
    try {
      throw;
    } catch (const pqxx::in_doubt_error& e) {
      MarkBroken();
      return absl::UnknownError(absl::StrCat(
          "the connection to PostgreSQL was lost during COMMIT, so whether the transaction was "
          "applied is unknown; check before retrying: ",
          ParseErrorText(e.what()).message));
    } catch (const pqxx::broken_connection& e) {
      const PqError error = ParseErrorText(e.what());
      // libpqxx 6.4 throws broken_connection for every class 08 SQLSTATE, also
      // when a healthy connection merely relays the server's complaint (a
      // parameter count mismatch is 08P01): only a closed one is lost.
      if (error.sqlstate.empty() || !conn_->is_open()) {
        MarkBroken();
        return LostConnection(ToStatus(error));
      }
      status = ToStatus(error);
    } catch (const pqxx::sql_error& e) {
      PqError error = ParseErrorText(e.what());
      if (!e.sqlstate().empty()) error.sqlstate = e.sqlstate();
      status = ToStatus(error);
    } catch (const pqxx::serialization_failure& e) {
      status = FromRollback(e.what(), "40001");
    } catch (const pqxx::deadlock_detected& e) {
      status = FromRollback(e.what(), "40P01");
    } catch (const pqxx::statement_completion_unknown& e) {
      status = FromRollback(e.what(), "40003");
    } catch (const pqxx::transaction_rollback& e) {
      status = FromRollback(e.what(), "40000");
    } catch (const pqxx::usage_error& e) {
      // libpqxx's view of the connection no longer matches what the code
      // did with it: do not trust either again.
      state_unknown = true;
      status = absl::InternalError(absl::StrCat("libpqxx usage error: ", e.what()));
    } catch (const pqxx::internal_error& e) {
      state_unknown = true;
      status = absl::InternalError(absl::StrCat("libpqxx internal error: ", e.what()));
    } catch (const pqxx::failure& e) {
      const PqError error = ParseErrorText(e.what());
      status = error.sqlstate.empty()
                   ? absl::InternalError(absl::StrCat("libpqxx: ", error.message))
                   : ToStatus(error);
    } catch (const std::bad_alloc&) {
      status = absl::ResourceExhaustedError("out of memory while handling a PostgreSQL result");
    } catch (const std::exception& e) {
      status = absl::InternalError(absl::StrCat("unexpected error from libpqxx: ", e.what()));
    } catch (...) {
      state_unknown = true;
      status = absl::InternalError("unexpected non-standard exception from libpqxx");
    }
    if (!conn_->is_open()) {
      MarkBroken();
      return LostConnection(status);
    }
    if (state_unknown) MarkBroken();
    return status;
  }

  // libpqxx 6.4's transaction_rollback family carries no SQLSTATE; the
  // verbose message does, and the exception type names it otherwise.
  static absl::Status FromRollback(const char* what, const char* sqlstate_of_type) {
    PqError error = ParseErrorText(what);
    if (error.sqlstate.empty()) error.sqlstate = sqlstate_of_type;
    return ToStatus(error);
  }

  // Closes the socket at once, so the server ends the session (rolling back
  // whatever it held) without waiting for the pool to drop the object.
  void MarkBroken() {
    broken_.store(true, std::memory_order_release);
    absl::MutexLock lock(&close_mu_);
    if (closed_) return;
    closed_ = true;
    conn_->disconnect();
  }

  // Declared before quiet_ so that the error handler is unregistered first.
  const std::unique_ptr<pqxx::connection> conn_;
  const std::unique_ptr<pqxx::quiet_errorhandler> quiet_;
  const std::shared_ptr<PqxxTypeCache> types_;
  // The prepared statement cache (see PqxxConnector::Options). Owner thread
  // only.
  StatementCache statements_;
  const int backend_pid_;
  std::atomic<bool> broken_{false};
  // Set by Cancel() (any thread), cleared by ClearCancel().
  std::atomic<bool> cancelled_{false};
  // Set when a result may have left libpq in copy mode: the call then closes
  // the connection, once no transaction object uses it. Owner thread only.
  bool close_after_call_ = false;

  // Orders Cancel() (any thread) against closing the connection (the owner
  // thread, or destruction): cancel_query() reads the libpq connection.
  absl::Mutex close_mu_;
  bool closed_ ABSL_GUARDED_BY(close_mu_) = false;
};

}  // namespace

PqxxConnector::PqxxConnector(std::string conninfo)
    : PqxxConnector(std::move(conninfo), Options()) {}

PqxxConnector::PqxxConnector(std::string conninfo, Options options)
    : statement_cache_size_(options.statement_cache_size),
      types_(std::make_shared<PqxxTypeCache>()) {
  absl::StatusOr<Conninfo> parsed = Conninfo::Parse(conninfo);
  if (!parsed.ok()) {
    conninfo_error_ = parsed.status();
    return;
  }
  conninfo_ = WithDefaults(conninfo, *parsed, options);
  redacted_ = parsed->Redacted();
  secrets_ = parsed->SecretValues();
}

PqxxConnector::~PqxxConnector() = default;

std::string ConninfoWithDefaults(const std::string& conninfo,
                                 const PqxxConnector::Options& options) {
  absl::StatusOr<Conninfo> parsed = Conninfo::Parse(conninfo);
  return parsed.ok() ? WithDefaults(conninfo, *parsed, options) : conninfo;
}

absl::StatusOr<std::unique_ptr<DbConnection>> PqxxConnector::Connect() {
  if (!conninfo_error_.ok()) {
    return absl::UnavailableError(
        absl::StrCat("cannot connect to PostgreSQL: ", conninfo_error_.message()));
  }
  const std::string where =
      redacted_.empty() ? std::string("the default address (libpq defaults and PG* variables)")
                        : redacted_;
  try {
    auto conn = std::make_unique<pqxx::connection>(conninfo_);
    // A connection that libpqxx silently re-opened would have lost its
    // session state (and any transaction) without anyone noticing.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    conn->inhibit_reactivation(true);
#pragma GCC diagnostic pop
    // Notices and warnings (e.g. "there is no transaction in progress" from
    // ResetSession) would otherwise go to stderr.
    auto quiet = std::make_unique<pqxx::quiet_errorhandler>(*conn);
    // Verbose error messages are the only way to learn the SQLSTATE of the
    // errors libpqxx 6.4 throws without one (broken_connection for every
    // class 08 state, the transaction_rollback family): ParseErrorText reads
    // it from the text.
    conn->set_verbosity(pqxx::connection_base::verbose);
    ApplyBaselineSettings(*conn);
    return std::unique_ptr<DbConnection>(std::make_unique<PqxxConnection>(
        std::move(conn), std::move(quiet), types_, statement_cache_size_));
  } catch (const pqxx::broken_connection& e) {
    // The server answered but has no slot left (53300): the pool holds at
    // the connections it has instead of treating the database as down.
    if (PqError error = ParseErrorText(e.what());
        absl::StartsWith(error.sqlstate, "53") || IsOutOfConnectionSlots(error.message)) {
      return SqlError(error.sqlstate.empty() ? "53300" : error.sqlstate,
                      ScrubSecrets(absl::StrCat("PostgreSQL at ", where,
                                                " has no connection slot left: ", error.message),
                                   secrets_));
    }
    return absl::UnavailableError(ScrubSecrets(
        absl::StrCat("cannot connect to PostgreSQL at ", where, ": ",
                     ParseErrorText(e.what()).message,
                     "; check that the server is running and accepts connections at that host "
                     "and port, and that the user, password and database name are right"),
        secrets_));
  } catch (const std::exception& e) {
    return absl::UnavailableError(ScrubSecrets(
        absl::StrCat("connected to PostgreSQL at ", where,
                     " but could not set up the session: ", ParseErrorText(e.what()).message),
        secrets_));
  }
}

}  // namespace sessionbroker::storage
