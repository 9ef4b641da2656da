#include "server/storage/pq_connection.h"

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "server/storage/conninfo.h"
#include "server/storage/pq_codec.h"
#include "server/storage/pq_error.h"
#include "server/storage/sql_error.h"
#include "server/storage/statement_cache.h"
#include "server/storage/value_text.h"

namespace sessionbroker::storage {

// Names (and, for arrays, element types) of the types that are not built in,
// as the server reported them. Shared by every connection of a connector; a
// type's OID names the same type for the life of the database.
// Thread-safe.
class PqTypeCache final {
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

// What a reset runs after a statement, each item one statement (in pipeline
// mode every statement is its own message). DISCARD ALL would do all of it in
// one, but it also deallocates the broker's prepared statements (which would
// cost a PREPARE on each one's next use) and is refused inside a transaction
// block, so it could not share the statement's round trip. The last one puts
// the baseline back, releases advisory locks and reports the prepared
// statements: how many came from the protocol (the broker's own PQprepare)
// and the DEALLOCATE commands for those a caller made with SQL PREPARE.
// Everything is schema-qualified: RESET ALL has restored search_path, but
// the role's default may still name a schema a caller can write to. The
// statements go unnamed (parsed and planned on every reset), so the last one
// reads the prepared statements in one aggregate over the set-returning
// function itself, not twice through the pg_prepared_statements view: parsing
// and planning that view twice was the largest part of what the reset cost
// the server (docs/benchmarks.md, "The session reset of issue 13"). With no
// GROUP BY the aggregate gives exactly one row, in which the other calls run
// once. The statements are not prepared: a caller can DEALLOCATE a named
// statement and PREPARE its own under the name, which the reset would then
// run in its place.
constexpr const char* kResetStatements[] = {
    "CLOSE ALL",
    "SET SESSION AUTHORIZATION DEFAULT",
    "RESET ALL",
    "UNLISTEN *",
    "DISCARD TEMP",
    "DISCARD SEQUENCES",
    "SELECT pg_catalog.pg_advisory_unlock_all(), "
    "pg_catalog.set_config('DateStyle', 'ISO, YMD', false), "
    "pg_catalog.set_config('IntervalStyle', 'iso_8601', false), "
    "pg_catalog.set_config('TimeZone', 'UTC', false), "
    "pg_catalog.set_config('extra_float_digits', '3', false), "
    "pg_catalog.count(*) FILTER (WHERE NOT p.from_sql), "
    "pg_catalog.string_agg('DEALLOCATE ' OPERATOR(pg_catalog.||) "
    "pg_catalog.quote_ident(p.name), '; ') FILTER (WHERE p.from_sql) "
    "FROM pg_catalog.pg_prepared_statement() p",
};
constexpr int kResetStatementCount = sizeof(kResetStatements) / sizeof(kResetStatements[0]);
// Columns of the last reset statement's row.
constexpr int kResetProtocolStatementsColumn = 5;
constexpr int kResetDeallocateColumn = 6;
// A connection that received a row larger than this is closed after the call
// (ShedBuffersIfLarge), to give libpq's grown input buffer back.
constexpr size_t kShedBuffersAfterRowBytes = size_t{16} << 20;

// The OID of a type named as SQL spells it (Value.type), NULL if there is no
// such type; an error for text that does not parse as a type name.
constexpr char kTypeByNameSql[] =
    "SELECT pg_catalog.to_regtype($1::pg_catalog.text)::pg_catalog.oid";

// The server's farewell (e.g. 57P01 for a terminated session) does not
// always reach the caller before libpq sees the socket close ("server closed
// the connection unexpectedly"), so the message lists the usual causes.
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

// The search_path a transaction's settings set, "" if they set none: the
// key under which parameter types named without a schema are looked up.
std::string SearchPathOf(const TransactionOptions& options) {
  std::string out;
  for (const auto& [name, value] : options.settings) {
    if (absl::EqualsIgnoreCase(name, "search_path")) out = value;
  }
  return out;
}

// `conninfo` as given, plus each default of `options` it does not set, in
// its own syntax (URL query parameters or key=value pairs). The caller's text
// is kept as it is, so that libpq reads its options exactly as before.
std::string WithDefaults(const std::string& conninfo, const Conninfo& parsed,
                         const PqConnector::Options& options) {
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

struct PgConnDeleter {
  void operator()(PGconn* conn) const { PQfinish(conn); }
};
// Owns a PGconn until a PqConnection takes it over.
using PgConn = std::unique_ptr<PGconn, PgConnDeleter>;

// Notices and warnings (e.g. "there is no transaction in progress" from a
// reset's ROLLBACK) would otherwise go to stderr, libpq's default.
void DiscardNotice(void*, const char*) {}

// The one-line text of the error libpq has on `pg`.
std::string ConnectionErrorText(const PGconn* pg) {
  const char* message = pg == nullptr ? nullptr : PQerrorMessage(pg);
  return ParseErrorText(message == nullptr ? "" : message).message;
}

// One PostgreSQL connection. See pq_connection.h for the contract.
class PqConnection final : public DbConnection {
 public:
  // `conn` is open, in blocking mode, with verbose errors, notices discarded
  // and the baseline settings applied.
  PqConnection(PgConn conn, std::shared_ptr<PqTypeCache> types, int statement_cache_size)
      : pg_(conn.release()),
        cancel_(PQgetCancel(pg_)),
        types_(std::move(types)),
        statements_(statement_cache_size),
        backend_pid_(PQbackendPID(pg_)) {}

  ~PqConnection() override {
    {
      // Waits for a Cancel() in progress; none starts afterwards.
      absl::MutexLock lock(&close_mu_);
      closed_ = true;
    }
    if (pg_ != nullptr) PQfinish(pg_);
    if (cancel_ != nullptr) PQfreeCancel(cancel_);
  }

  PqConnection(const PqConnection&) = delete;
  PqConnection& operator=(const PqConnection&) = delete;

  absl::StatusOr<QueryResult> ExecuteStatement(const Statement& statement,
                                               const ExecuteOptions& options) {
    if (IsBroken()) return BrokenError();
    absl::StatusOr<PqParams> params = EncodeParams(statement.params);
    if (!params.ok()) return params.status();
    if (Cancelled()) return CancelledError();
    // Inside a session's transaction a failed type lookup must not abort the
    // caller's transaction: it runs under a savepoint there.
    const LookupMode mode =
        options.in_transaction ? LookupMode::kUnderSavepoint : LookupMode::kPlain;
    absl::Status typed = ResolveParamTypes(
        statement, mode, options.in_transaction ? session_search_path_ : "", &params->types);
    if (!typed.ok()) return typed;
    const std::string key = CacheKey(statement, *params);
    if (!options.in_transaction) {
      // DEALLOCATE runs outside any transaction (never inside one that may be
      // aborted).
      if (absl::Status room = MakeRoomToPrepare(statement, key); !room.ok()) return room;
    }
    bool stale = false;
    const bool pipeline_reset = options.reset_session_after && !options.in_transaction;
    absl::StatusOr<QueryResult> out =
        ExecuteOnce(statement, *params, key, options, pipeline_reset, &stale);
    if (stale && !options.in_transaction && !Cancelled() && !IsBroken()) {
      // The failed statement did nothing; autocommit lets it run again, now
      // unprepared (it is prepared afresh on its next use), and reset again.
      out = ExecuteOnce(statement, *params, key, options, /*pipeline_reset=*/false, &stale);
      reset_in_pipeline_ = false;
    }
    if (close_after_call_) MarkBroken();
    if (!options.in_transaction) ShedBuffersIfLarge();
    return out;
  }

  absl::StatusOr<QueryResult> ExecuteStream(const Statement& statement,
                                            const ExecuteOptions& options, RowSink& sink) override {
    if (IsBroken()) return BrokenError();
    absl::StatusOr<PqParams> params = EncodeParams(statement.params);
    if (!params.ok()) return params.status();
    if (Cancelled()) return CancelledError();
    const bool in_transaction = options.in_transaction;
    absl::Status typed = ResolveParamTypes(
        statement, in_transaction ? LookupMode::kUnderSavepoint : LookupMode::kPlain,
        in_transaction ? session_search_path_ : "", &params->types);
    if (!typed.ok()) return typed;
    absl::StatusOr<QueryResult> out = StreamOnce(statement, *params, options, sink);
    if (close_after_call_) MarkBroken();
    if (!options.in_transaction) ShedBuffersIfLarge();
    return out;
  }

  // ExecuteStream's work. The columns must go out before the first row, and
  // naming a type PostgreSQL has not told this broker about takes a query,
  // which cannot run while the statement's rows are being read: so the
  // statement is prepared (unnamed) and described first, one round trip
  // more than Execute, which a result worth streaming does not notice.
  absl::StatusOr<QueryResult> StreamOnce(const Statement& statement, const PqParams& params,
                                         const ExecuteOptions& options, RowSink& sink) {
    const bool in_transaction = options.in_transaction;
    auto prepare = [&]() -> absl::Status {
      PgResult prepared(
          PQprepare(pg_, "", statement.sql.c_str(), params.count(), params.types.data()));
      return CheckResult(prepared.get());
    };
    if (absl::Status ok = prepare(); !ok.ok()) {
      ForgetLookedUpTypes(statement);
      return ok;
    }
    PgResult described(PQdescribePrepared(pg_, ""));
    if (absl::Status ok = CheckResult(described.get()); !ok.ok()) return ok;
    ResultShape shape = ShapeOf(described.get());
    described.reset();
    if (!shape.all_named && !NameFromCache(&shape)) {
      if (absl::Status named = NameUnknownTypes(in_transaction, &shape); !named.ok()) return named;
      // The lookup ran as the unnamed statement, replacing this one.
      if (absl::Status ok = prepare(); !ok.ok()) return ok;
    }
    if (absl::Status s = sink.Columns(shape.columns); !s.ok()) return s;
    if (Cancelled()) return CancelledError();
    if (PQsendQueryPrepared(pg_, "", params.count(), params.values.data(), params.lengths.data(),
                            params.formats.data(), 0) != 1) {
      return CheckResult(nullptr);
    }
    PQsetSingleRowMode(pg_);
    const size_t max_row = options.max_result_bytes;
    absl::StatusOr<PgResult> last = ReadRows([&](PgResult row) -> absl::Status {
      std::vector<std::vector<Value>> rows;
      size_t bytes = 0;
      absl::Status decoded = AppendRows(row.get(), shape, in_transaction, max_row, &bytes, &rows);
      if (decoded.code() == absl::StatusCode::kResourceExhausted) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "a row of the result is over ", max_row,
            " bytes (BROKER_MAX_RESULT_BYTES), the most one message of the stream may carry; "
            "select fewer or smaller columns",
            in_transaction ? "; its transaction was rolled back"
                           : "; the statement was cancelled"));
      }
      if (!decoded.ok()) return decoded;
      row.reset();  // before the sink may block: one row at a time
      return sink.Row(std::move(rows.front()), bytes);
    });
    if (!last.ok()) {
      ForgetLookedUpTypes(statement);
      return last.status();
    }
    QueryResult out;
    out.columns = std::move(shape.columns);
    SetCommandTag(last->get(), &out);
    return out;
  }

  absl::StatusOr<QueryResult> Execute(const Statement& statement,
                                      const ExecuteOptions& options) override {
    reset_in_pipeline_ = false;
    absl::StatusOr<QueryResult> out = ExecuteStatement(statement, options);
    // Whatever happened before or instead of the pipelined reset (a refused
    // parameter, a failed type lookup, a retried stale statement): reset now.
    if (options.reset_session_after && !reset_in_pipeline_ && !IsBroken()) {
      ResetSession().IgnoreError();  // a failed reset breaks the connection
    }
    return out;
  }

  // One attempt of Execute. Sets *stale when it failed only because the
  // connection's prepared copy of the statement was stale (now forgotten).
  absl::StatusOr<QueryResult> ExecuteOnce(const Statement& statement, const PqParams& params,
                                          const std::string& key, const ExecuteOptions& options,
                                          bool pipeline_reset, bool* stale) {
    size_t result_bytes = 0;
    return RunStatement(statement, params, key, options.in_transaction, pipeline_reset,
                        options.max_result_bytes, &result_bytes, stale);
  }

  // Runs one statement with libpq: through the connection's prepared copy
  // when it has one or the statement is due to get one, else as an unnamed
  // statement (PQsendQueryParams). Both use the extended protocol even
  // without parameters, so the server refuses a string holding several
  // statements. With `pipeline_reset` (autocommit only) the session reset
  // goes out in the statement's own pipeline (SendPipelinedWithReset) and is
  // read after the statement's rows (FinishPipelinedReset). The result is
  // read row by row (single-row mode, which libpq allows per query in a
  // pipeline too) and decoded as it arrives, counted against `max_bytes` in
  // *used_bytes (see ExecuteOptions::max_result_bytes): an oversized result
  // is abandoned (the statement cancelled) as soon as it is over, and never
  // held whole by libpq. Rows of types nobody has named yet are kept as
  // libpq gave them (still counted) and decoded once the statement (and its
  // pipeline) is over and their names can be looked up. Sets *stale when it
  // failed only because the prepared copy was stale (it is forgotten then).
  // A statement that used types looked up by name and failed drops those
  // names from the lookup cache (the type may have been dropped and created
  // again under another OID).
  absl::StatusOr<QueryResult> RunStatement(const Statement& statement, const PqParams& params,
                                           const std::string& key, bool in_transaction,
                                           bool pipeline_reset, size_t max_bytes,
                                           size_t* used_bytes, bool* stale) {
    *stale = false;
    const std::string* name = nullptr;
    bool prepare = false;
    if (statement.cacheable) {
      const StatementCache::Plan plan = statements_.Use(key);
      name = plan.name;
      prepare = plan.prepare;
    }
    if (pipeline_reset) {
      if (absl::Status sent = SendPipelinedWithReset(statement, params, name, prepare);
          !sent.ok()) {
        return sent;
      }
      if (prepare) {
        PgResult prepared;
        if (!NextPipelined(&prepared)) return PipelineLost("reading a PREPARE in a pipeline");
        if (absl::Status ok = CheckResult(prepared.get()); !ok.ok()) {
          // The statement was skipped (its part of the pipeline aborted);
          // the reset after the Sync ran all the same.
          PgResult skipped;
          if (!NextPipelined(&skipped)) return PipelineLost("reading a statement in a pipeline");
          if (absl::Status reset = FinishPipelinedReset(); !reset.ok()) return reset;
          statements_.Forget(key);
          ForgetLookedUpTypes(statement);
          return ok;
        }
      }
    } else {
      if (prepare) {
        PgResult prepared(PQprepare(pg_, name->c_str(), statement.sql.c_str(), params.count(),
                                    params.types.data()));
        if (absl::Status ok = CheckResult(prepared.get()); !ok.ok()) {
          statements_.Forget(key);  // the server has no such statement
          ForgetLookedUpTypes(statement);
          return ok;
        }
      }
      const int sent =
          name != nullptr
              ? PQsendQueryPrepared(pg_, name->c_str(), params.count(), params.values.data(),
                                    params.lengths.data(), params.formats.data(), 0)
              : PQsendQueryParams(pg_, statement.sql.c_str(), params.count(), params.types.data(),
                                  params.values.data(), params.lengths.data(),
                                  params.formats.data(), 0);
      if (sent != 1) return CheckResult(nullptr);
    }
    // Before the statement's first PQgetResult, in a pipeline as outside one.
    PQsetSingleRowMode(pg_);

    ResultShape shape;
    bool have_shape = false;
    bool deferred = false;  // rows kept undecoded until their types are named
    std::vector<PgResult> undecoded;
    QueryResult out;
    absl::StatusOr<PgResult> last = ReadRows([&](PgResult row) -> absl::Status {
      if (!have_shape) {
        shape = ShapeOf(row.get());
        have_shape = true;
        deferred = !shape.all_named && !NameFromCache(&shape);
      }
      if (deferred) {
        *used_bytes += RawRowBytes(row.get(), 0);
        if (max_bytes > 0 && *used_bytes > max_bytes) {
          return ResultTooLarge(max_bytes, in_transaction);
        }
        undecoded.push_back(std::move(row));
        return absl::OkStatus();
      }
      return AppendRows(row.get(), shape, in_transaction, max_bytes, used_bytes, &out.rows);
    });
    if (pipeline_reset) {
      // The reset runs whether the statement failed or not (the Sync between
      // them ended the statement's implicit transaction either way). The
      // statement's own failure is what the caller hears first.
      absl::Status reset = FinishPipelinedReset();
      if (!reset.ok() && last.ok()) return reset;
    }
    if (!last.ok()) {
      const absl::Status& ok = last.status();
      if (name != nullptr && !IsBroken() &&
          IsStalePreparedStatement(SqlStateOf(ok).value_or(""), ok.message())) {
        statements_.Forget(key);  // its server side goes with the next reset or close
        *stale = true;
      }
      ForgetLookedUpTypes(statement);
      return ok;
    }
    if (!have_shape) {
      // No rows: the final result describes the columns.
      shape = ShapeOf(last->get());
      deferred = !shape.all_named && !NameFromCache(&shape);
    }
    if (deferred) {
      if (absl::Status named = NameUnknownTypes(in_transaction, &shape); !named.ok()) return named;
      // Counted again, decoded this time.
      *used_bytes = 0;
      for (const PgResult& row : undecoded) {
        if (absl::Status appended =
                AppendRows(row.get(), shape, in_transaction, max_bytes, used_bytes, &out.rows);
            !appended.ok()) {
          return appended;
        }
      }
    }
    out.columns = std::move(shape.columns);
    SetCommandTag(last->get(), &out);
    *used_bytes += ResultHeaderBytes(out);
    if (max_bytes > 0 && *used_bytes > max_bytes) return ResultTooLarge(max_bytes, in_transaction);
    return out;
  }

  // Reads the results of the statement just sent in single-row mode until
  // libpq has none left: each row (a PGRES_SINGLE_TUPLE result) goes to
  // `on_row`; returns the final result (PGRES_TUPLES_OK or
  // PGRES_COMMAND_OK), or the statement's error. When `on_row` fails, the
  // statement is cancelled on the server and the rest of its output read
  // and dropped (libpq holds one row at a time meanwhile), and that failure
  // is returned.
  absl::StatusOr<PgResult> ReadRows(absl::FunctionRef<absl::Status(PgResult)> on_row) {
    absl::Status stopped;  // on_row's failure
    absl::Status error;    // the statement's
    bool error_says_lost = false;
    PgResult last;
    while (true) {
      PgResult result(PQgetResult(pg_));
      if (result == nullptr) break;
      const ExecStatusType status = PQresultStatus(result.get());
      if (status == PGRES_SINGLE_TUPLE) {
        if (RawRowBytes(result.get(), 0) > kShedBuffersAfterRowBytes) shed_after_call_ = true;
        if (!stopped.ok() || !error.ok()) continue;
        stopped = on_row(std::move(result));
        if (!stopped.ok()) CancelOnServer();
        continue;
      }
      absl::Status ok = CheckResult(result.get());
      if (!ok.ok()) {
        if (error.ok()) {
          error = std::move(ok);
          error_says_lost = IsBroken();
        }
        // A lost connection has nothing more to read; libpq would answer a
        // COPY state again on every call.
        if (IsBroken() || close_after_call_) break;
        continue;
      }
      last = std::move(result);
    }
    if (!error.ok() && !error_says_lost && (IsBroken() || PQstatus(pg_) == CONNECTION_BAD)) {
      // The server's farewell (57P01, a terminated session) came as a
      // result before libpq saw the socket close.
      MarkBroken();
      error = LostConnection(error);
    }
    if (!stopped.ok()) return stopped;
    if (!error.ok()) return error;
    if (last == nullptr) return CheckResult(nullptr);
    return last;
  }

  // Closes the connection once no transaction is open if a row larger than
  // kShedBuffersAfterRowBytes went through it: libpq keeps its input buffer
  // as large as the largest message it ever received (a whole row), for as
  // long as the connection lives, and the pool would keep that memory.
  void ShedBuffersIfLarge() {
    if (!shed_after_call_) return;
    shed_after_call_ = false;
    MarkBroken();
  }

  // Asks the server to cancel the statement now running on this connection,
  // without setting the cancel flag (the call goes on: it reads what is left
  // and reports its own error).
  void CancelOnServer() {
    absl::MutexLock lock(&close_mu_);
    if (closed_) return;
    // Best effort: the rest of the output is read and dropped anyway.
    SendCancelRequest();
  }

  // Sends PostgreSQL a cancel request for this connection's backend (a
  // connection of its own, opened and closed by PQcancel); failures are
  // ignored. PQcancel only reads cancel_, which does not change after
  // construction; close_mu_ keeps it from racing the close.
  void SendCancelRequest() ABSL_EXCLUSIVE_LOCKS_REQUIRED(close_mu_) {
    if (cancel_ == nullptr) return;
    char error[256];
    PQcancel(cancel_, error, sizeof(error));
  }

  // Enters pipeline mode and sends the statement (prepared first if
  // `prepare`), a Sync, the reset statements and a Sync, for one round trip.
  // The caller reads the statement's results (and the PREPARE's), then
  // FinishPipelinedReset the rest.
  absl::Status SendPipelinedWithReset(const Statement& statement, const PqParams& params,
                                      const std::string* name, bool prepare) {
    if (pg_ == nullptr || PQenterPipelineMode(pg_) != 1)
      return PipelineLost("entering pipeline mode");
    bool sent = true;
    if (prepare) {
      sent = sent && PQsendPrepare(pg_, name->c_str(), statement.sql.c_str(), params.count(),
                                   params.types.data()) == 1;
    }
    if (name != nullptr) {
      sent = sent && PQsendQueryPrepared(pg_, name->c_str(), params.count(), params.values.data(),
                                         params.lengths.data(), params.formats.data(), 0) == 1;
    } else {
      sent = sent && PQsendQueryParams(pg_, statement.sql.c_str(), params.count(),
                                       params.types.data(), params.values.data(),
                                       params.lengths.data(), params.formats.data(), 0) == 1;
    }
    sent = sent && PQpipelineSync(pg_) == 1;
    for (const char* sql : kResetStatements) {
      sent = sent && PQsendQueryParams(pg_, sql, 0, nullptr, nullptr, nullptr, nullptr, 0) == 1;
    }
    sent = sent && PQpipelineSync(pg_) == 1;
    if (!sent) return PipelineLost("sending a pipeline");
    return absl::OkStatus();
  }

  // The connection is lost or in a state no pipeline can continue from.
  absl::Status PipelineLost(absl::string_view what) {
    // Read before MarkBroken closes the connection (and frees its message).
    const std::string message = pg_ == nullptr ? "" : PQerrorMessage(pg_);
    MarkBroken();
    return LostConnection(absl::UnavailableError(absl::StrCat(what, ": ", message)));
  }

  // Reads one query's whole result in a pipeline (a PREPARE's, or a skipped
  // statement's): false when there is none or it is not a plain one.
  bool NextPipelined(PgResult* into) {
    into->reset(PQgetResult(pg_));
    if (into->get() == nullptr) return false;
    const ExecStatusType st = PQresultStatus(into->get());
    if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) return false;
    PgResult end(PQgetResult(pg_));
    return end.get() == nullptr;
  }

  // After the statement's results were read: the Sync, the reset's results,
  // the second Sync; leaves pipeline mode and reconciles the prepared
  // statements. A failed reset breaks the connection (it is not reused).
  // Sets reset_in_pipeline_ once the reset is through.
  absl::Status FinishPipelinedReset() {
    if (IsBroken() || close_after_call_) return PipelineLost("reading a statement in a pipeline");
    auto sync = [&] {
      PgResult r(PQgetResult(pg_));
      return r.get() != nullptr && PQresultStatus(r.get()) == PGRES_PIPELINE_SYNC;
    };
    if (!sync()) return PipelineLost("reading a pipeline");
    PgResult reset;
    absl::Status reset_status;
    for (int i = 0; i < kResetStatementCount; ++i) {
      if (!NextPipelined(&reset)) return PipelineLost("reading the session reset in a pipeline");
      if (reset_status.ok()) reset_status = CheckResult(reset.get());
    }
    if (!sync()) return PipelineLost("reading a pipeline");
    if (PQexitPipelineMode(pg_) != 1) return PipelineLost("leaving pipeline mode");
    if (!reset_status.ok()) {
      // Also when the cancel of an over-cap result reached the reset.
      MarkBroken();
      return WithPrefix(reset_status, "resetting the session failed: ");
    }
    if (absl::Status kept = ReconcilePreparedStatements(reset.get()); !kept.ok()) return kept;
    reset_in_pipeline_ = true;
    return absl::OkStatus();
  }

  // After a reset: deallocates what callers PREPAREd, and when the server's
  // protocol-level statements are not the ones the cache counts (a caller
  // deallocated one of the broker's, perhaps to PREPARE its own under that
  // name), deallocates everything and starts the cache over. `row` is the
  // last reset statement's result.
  absl::Status ReconcilePreparedStatements(const PGresult* row) {
    // The reset ran SET SESSION AUTHORIZATION DEFAULT and RESET ALL: the
    // connection is back to the login role, whatever UseRole set.
    role_.clear();
    if (PQntuples(row) != 1) {
      MarkBroken();
      return absl::InternalError("resetting the session failed: no prepared-statement count");
    }
    size_t protocol = 0;
    const bool counted =
        absl::SimpleAtoi(PQgetvalue(row, 0, kResetProtocolStatementsColumn), &protocol);
    std::string deallocate;
    if (!PQgetisnull(row, 0, kResetDeallocateColumn)) {
      deallocate = PQgetvalue(row, 0, kResetDeallocateColumn);
    }
    if (!deallocate.empty()) {
      if (absl::Status s = ExecSimple(deallocate.c_str()); !s.ok()) {
        MarkBroken();
        return WithPrefix(s, "resetting the session failed: ");
      }
    }
    if (!counted || protocol != statements_.PreparedCount()) {
      if (absl::Status s = ExecSimple("DEALLOCATE ALL"); !s.ok()) {
        MarkBroken();
        return WithPrefix(s, "resetting the session failed: ");
      }
      statements_.MarkAllUnprepared();
    }
    return absl::OkStatus();
  }

  // OK for a result that completed a statement. Otherwise the error: the
  // server's (with its fields) or libpq's; a lost connection is marked broken
  // and reported as such. COPY FROM STDIN / TO STDOUT and an empty statement
  // are refused after the fact, and the connection closed once the call is
  // done (libpq may be in the middle of a COPY, which the next call would
  // have to drain or abort).
  absl::Status CheckResult(const PGresult* result) {
    const ExecStatusType status = result == nullptr ? PGRES_FATAL_ERROR : PQresultStatus(result);
    switch (status) {
      case PGRES_COMMAND_OK:
      case PGRES_TUPLES_OK:
        return absl::OkStatus();
      case PGRES_COPY_IN:
      case PGRES_COPY_OUT:
      case PGRES_COPY_BOTH:
      case PGRES_EMPTY_QUERY:
        close_after_call_ = true;
        return absl::UnimplementedError(
            "COPY FROM STDIN / TO STDOUT is not supported through the broker (use INSERT ... "
            "VALUES or SELECT), and neither is an empty statement; the statement produced no "
            "command tag, so its connection was closed");
      case PGRES_FATAL_ERROR:
        break;
      default:
        // A response libpq could not make sense of: the protocol state is
        // unknown.
        MarkBroken();
        return absl::InternalError(absl::StrCat(
            "unexpected result from libpq (", PQresStatus(status), "); the connection was closed"));
    }
    PGconn* const pg = pg_;
    absl::Status error;
    if (result != nullptr) {
      error = StatusOfErrorResult(result);
    } else {
      // Out of memory, or the connection is gone.
      error = ToStatus(ParseErrorText(pg == nullptr ? "" : PQerrorMessage(pg)));
    }
    if (pg == nullptr || PQstatus(pg) == CONNECTION_BAD) {
      MarkBroken();
      return LostConnection(error);
    }
    return error;
  }

  // Runs `sql` (no parameters; may hold several statements: the simple
  // protocol) on the libpq connection.
  absl::Status ExecSimple(const char* sql) {
    PgResult result = Exec(sql);
    return CheckResult(result.get());
  }

  // PQexec, then drops the notifications libpq collected meanwhile: a
  // session that ran LISTEN receives them until the reset's UNLISTEN *, and
  // nothing on this connection delivers them (the Listen RPC has a
  // connection of its own), so they would pile up in libpq's queue.
  PgResult Exec(const char* sql) {
    PgResult result(PQexec(pg_, sql));
    while (PGnotify* notify = PQnotifies(pg_)) PQfreemem(notify);
    return result;
  }

  // How a failed lookup affects the transaction around it.
  enum class LookupMode {
    kPlain,           // autocommit, or a batch's transaction that fails anyway
    kUnderSavepoint,  // a session's transaction, which must survive it
  };

  // Fills `types` in for the parameters that name their type
  // (Statement::param_types): built-in names from value_text's table, any
  // other once per connection and search_path with to_regtype.
  // INVALID_ARGUMENT naming the parameter and the type when the server does
  // not know the name.
  absl::Status ResolveParamTypes(const Statement& statement, LookupMode mode,
                                 const std::string& search_path, std::vector<Oid>* types) {
    const size_t n = std::min(statement.param_types.size(), types->size());
    for (size_t i = 0; i < n; ++i) {
      const std::string& name = statement.param_types[i];
      if (name.empty()) continue;
      const uint32_t builtin = BuiltinTypeOid(name);
      if (builtin != 0) {
        (*types)[i] = builtin;
        continue;
      }
      absl::StatusOr<uint32_t> oid = LookUpType(name, mode, search_path);
      if (!oid.ok()) return WithPrefix(oid.status(), absl::StrCat("parameter $", i + 1, ": "));
      (*types)[i] = *oid;
    }
    return absl::OkStatus();
  }

  // The OID of the type `name` names under `search_path` (a session's
  // search_path setting, "" for the connection's own).
  absl::StatusOr<uint32_t> LookUpType(const std::string& name, LookupMode mode,
                                      const std::string& search_path) {
    std::string key = absl::StrCat(search_path, absl::string_view("\0", 1), name);
    if (const auto it = looked_up_types_.find(key); it != looked_up_types_.end()) {
      return it->second;
    }
    const bool savepoint = mode == LookupMode::kUnderSavepoint;
    if (savepoint) {
      if (absl::Status s = ExecSimple("SAVEPOINT sessionbroker_type_lookup"); !s.ok()) return s;
    }
    const char* const values[] = {name.c_str()};
    PgResult result(PQexecParams(pg_, kTypeByNameSql, 1, nullptr, values, nullptr, nullptr, 0));
    absl::Status status = CheckResult(result.get());
    if (IsBroken()) return status;
    if (savepoint) {
      absl::Status undone =
          ExecSimple(status.ok() ? "RELEASE SAVEPOINT sessionbroker_type_lookup"
                                 : "ROLLBACK TO SAVEPOINT sessionbroker_type_lookup; "
                                   "RELEASE SAVEPOINT sessionbroker_type_lookup");
      if (!undone.ok()) return undone;
    }
    if (!status.ok()) {
      // to_regtype refuses a name that does not parse as a type name.
      return absl::InvalidArgumentError(absl::StrCat(
          "type \"", name, "\" (Value.type) is not a valid type name: ", status.message()));
    }
    if (PQntuples(result.get()) != 1 || PQgetisnull(result.get(), 0, 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "type \"", name,
          "\" (Value.type) does not exist; check its spelling, its schema and the search_path, or "
          "leave type empty to send the type the value implies"));
    }
    uint32_t oid = 0;
    if (!absl::SimpleAtoi(PQgetvalue(result.get(), 0, 0), &oid) || oid == 0) {
      return absl::InternalError(absl::StrCat("to_regtype gave no OID for type \"", name, "\""));
    }
    looked_up_types_.emplace(std::move(key), oid);
    return oid;
  }

  // Forgets the lookups of the types `statement` names (the whole cache: it
  // is small, and a failed statement is rare).
  void ForgetLookedUpTypes(const Statement& statement) {
    for (const std::string& name : statement.param_types) {
      if (!name.empty() && BuiltinTypeOid(name) == 0) {
        looked_up_types_.clear();
        return;
      }
    }
  }

  // The statement cache's key (SQL and parameter types); empty for a
  // statement that is not cached.
  static std::string CacheKey(const Statement& statement, const PqParams& params) {
    if (!statement.cacheable) return std::string();
    return PreparedStatementKey(statement.sql, params.types);
  }

  // Deallocates the least recently used prepared statement if the cache is
  // full and `statement` would be prepared now. Outside any transaction.
  absl::Status MakeRoomToPrepare(const Statement& statement, const std::string& key) {
    if (!statement.cacheable) return absl::OkStatus();
    const std::optional<std::string> evicted = statements_.EvictFor(key);
    if (!evicted.has_value()) return absl::OkStatus();
    // The cache's names are plain identifiers (sessionbroker_<n>).
    absl::Status s = ExecSimple(absl::StrCat("DEALLOCATE ", *evicted).c_str());
    return s.ok() ? s : WithPrefix(s, "deallocating a cached prepared statement: ");
  }

  absl::StatusOr<std::vector<QueryResult>> ExecuteBatch(absl::Span<const Statement> statements,
                                                        const ExecuteOptions& options) override {
    if (IsBroken()) return BrokenError();
    const size_t n = statements.size();
    std::vector<PqParams> params;
    params.reserve(n);
    for (size_t k = 0; k < n; ++k) {
      absl::StatusOr<PqParams> p = EncodeParams(statements[k].params);
      if (!p.ok()) return ForStatement(p.status(), k, n);
      params.push_back(*std::move(p));
    }
    if (Cancelled()) return ForStatement(CancelledError(), 0, n);
    bool stale = false;
    absl::StatusOr<std::vector<QueryResult>> results =
        RunBatch(statements, &params, options, &stale);
    if (!results.ok()) EndFailedBatch();
    if (stale && !IsBroken() && !Cancelled()) {
      // Nothing of the batch was applied (it was rolled back): run it again,
      // the stale statement unprepared.
      results = RunBatch(statements, &params, options, &stale);
      if (!results.ok()) EndFailedBatch();
    }
    if (close_after_call_) MarkBroken();
    ShedBuffersIfLarge();
    return results;
  }

  absl::Status Begin(const TransactionOptions& options) override {
    if (IsBroken()) return BrokenError();
    if (Cancelled()) return WithPrefix(CancelledError(), "BEGIN: ");
    absl::StatusOr<std::string> begin = BeginSql(options);
    if (!begin.ok()) return WithPrefix(begin.status(), "BEGIN: ");
    if (absl::Status s = ExecSimple(begin->c_str()); !s.ok()) {
      // A failed setting leaves the transaction open and aborted.
      EndFailedBatch();
      return WithPrefix(s, "BEGIN: ");
    }
    session_search_path_ = SearchPathOf(options);
    return absl::OkStatus();
  }

  absl::Status Commit() override {
    // The transaction ends here, however COMMIT goes.
    session_search_path_.clear();
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
    const PgResult commit = Exec("COMMIT");
    if (absl::Status status = CheckResult(commit.get()); !status.ok()) {
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
    ShedBuffersIfLarge();
    if (absl::string_view(PQcmdStatus(commit.get())) != "COMMIT") {
      return absl::AbortedError(
          "COMMIT: PostgreSQL rolled the transaction back instead of committing it (an earlier "
          "statement had failed and aborted it); nothing of the transaction was applied");
    }
    return absl::OkStatus();
  }

  absl::Status Rollback() override {
    if (IsBroken()) return BrokenError();
    EndFailedBatch();
    ShedBuffersIfLarge();
    if (IsBroken()) {
      return absl::UnavailableError(
          "ROLLBACK failed and the connection was closed; the server rolls the transaction back "
          "when its connection closes, so nothing of it was applied");
    }
    return absl::OkStatus();
  }

  absl::Status Ping() override {
    if (IsBroken()) return BrokenError();
    // A real statement rather than an empty query: it fails in a session
    // stuck in a failed transaction (25P02), which would fail every
    // statement of the connection's next user.
    if (absl::Status status = ExecSimple("SELECT 1"); !status.ok()) {
      MarkBroken();
      return WithPrefix(status, "ping failed: ");
    }
    return absl::OkStatus();
  }

  absl::Status UseRole(const std::string& role) override {
    if (role == role_) return absl::OkStatus();
    if (IsBroken()) return BrokenError();
    absl::Status status;
    if (role.empty()) {
      status = ExecSimple("RESET ROLE");
    } else if (char* quoted = PQescapeIdentifier(pg_, role.data(), role.size())) {
      const std::string sql = absl::StrCat("SET ROLE ", quoted);
      PQfreemem(quoted);
      status = ExecSimple(sql.c_str());
    } else {
      status = absl::InternalError(
          absl::StrCat("cannot quote the role name: ", ConnectionErrorText(pg_)));
    }
    if (!status.ok()) {
      // A failed SET ROLE changes nothing (it runs alone, outside any
      // transaction): role_ still says what the connection runs as.
      return WithPrefix(status, role.empty() ? "RESET ROLE failed: "
                                             : absl::StrCat("SET ROLE ", role, " failed: "));
    }
    role_ = role;
    return absl::OkStatus();
  }

  absl::Status ResetSession() override {
    if (IsBroken()) return BrokenError();
    // One round trip: the simple protocol takes the statements as one
    // string. ROLLBACK first, always: a transaction may be open (a
    // session's, aborted or not); without one the server only warns (the
    // warning is discarded) and the rest runs in a transaction of its own.
    std::string sql = "ROLLBACK";
    for (const char* statement : kResetStatements) absl::StrAppend(&sql, "; ", statement);
    const PgResult result = Exec(sql.c_str());
    if (absl::Status ok = CheckResult(result.get()); !ok.ok()) {
      MarkBroken();
      return WithPrefix(ok, "resetting the session failed: ");
    }
    return ReconcilePreparedStatements(result.get());
  }

  void Cancel() override {
    // First, so that a request reaching the server between two statements
    // (where PostgreSQL ignores it) still stops the next one.
    cancelled_.store(true, std::memory_order_release);
    absl::MutexLock lock(&close_mu_);
    if (closed_) return;
    // Best effort: the flag stops the next step, and the statement's
    // deadline still ends the wait for this one.
    SendCancelRequest();
  }

  void ClearCancel() override { cancelled_.store(false, std::memory_order_release); }

  bool IsBroken() const override { return broken_.load(std::memory_order_acquire); }

  int BackendPid() const override { return backend_pid_; }

 private:
  bool Cancelled() const { return cancelled_.load(std::memory_order_acquire); }

  // Whether the server has closed its end of the connection, seen without a
  // round trip: a backend that exits (terminated, restarted) closes the
  // socket, and nothing sent afterwards reaches a transaction.
  bool ServerClosedConnection() const {
    pollfd p{PQsocket(pg_), POLLRDHUP, 0};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
  }

  // One simple-protocol string (one round trip): BEGIN with the transaction's
  // characteristics, then its settings as SET LOCAL would set them. Names were
  // checked against the allow-list by the caller; both names and values go in
  // as quoted literals, so neither can change what runs.
  absl::StatusOr<std::string> BeginSql(const TransactionOptions& options) {
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
        absl::StatusOr<std::string> quoted_name = QuoteLiteral(name);
        if (!quoted_name.ok()) return quoted_name.status();
        absl::StatusOr<std::string> quoted_value = QuoteLiteral(value);
        if (!quoted_value.ok()) return quoted_value.status();
        absl::StrAppend(&sql, sep, "pg_catalog.set_config(", *quoted_name, ", ", *quoted_value,
                        ", true)");
        sep = ", ";
      }
    }
    return sql;
  }

  // `text` as a string literal for this connection: escaped by
  // PQescapeStringConn (which knows the connection's encoding and
  // standard_conforming_strings) and put in single quotes.
  absl::StatusOr<std::string> QuoteLiteral(const std::string& text) {
    std::string escaped(2 * text.size() + 1, '\0');
    int error = 0;
    const size_t length = PQescapeStringConn(pg_, escaped.data(), text.data(), text.size(), &error);
    if (error != 0) {
      return absl::InternalError(
          absl::StrCat("cannot quote a setting for SQL: ", ConnectionErrorText(pg_)));
    }
    escaped.resize(length);
    return absl::StrCat("'", escaped, "'");
  }

  // What the server would have said had the cancel request hit a statement.
  static absl::Status CancelledError() {
    return SqlError("57014", "canceling statement due to user request");
  }

  // The batch proper: BEGIN, the statements, COMMIT. On failure the
  // transaction may still be open (aborted or not); the caller ends it.
  // BEGIN and COMMIT are plain statements, so that a COMMIT is told from the
  // ROLLBACK PostgreSQL silently answers for an aborted transaction.
  // Parameter types named by name are looked up inside the transaction (its
  // search_path applies); a failed lookup fails the batch. Sets *stale when a
  // statement failed only because the connection's prepared copy of it was
  // stale (now forgotten).
  absl::StatusOr<std::vector<QueryResult>> RunBatch(absl::Span<const Statement> statements,
                                                    std::vector<PqParams>* params,
                                                    const ExecuteOptions& options, bool* stale) {
    *stale = false;
    const size_t n = statements.size();
    const std::string commit_prefix = absl::StrCat("commit of ", n, " statements: ");
    absl::StatusOr<std::string> begin = options.transaction.IsPlain()
                                            ? absl::StatusOr<std::string>("BEGIN")
                                            : BeginSql(options.transaction);
    if (!begin.ok()) return WithPrefix(begin.status(), "BEGIN: ");
    if (absl::Status begun = ExecSimple(begin->c_str()); !begun.ok()) {
      return WithPrefix(begun, "BEGIN: ");
    }
    const std::string search_path = SearchPathOf(options.transaction);
    std::vector<QueryResult> results;
    results.reserve(n);
    size_t result_bytes = 0;
    for (size_t k = 0; k < n; ++k) {
      if (Cancelled()) return ForStatement(CancelledError(), k, n);
      PqParams& p = (*params)[k];
      if (absl::Status typed =
              ResolveParamTypes(statements[k], LookupMode::kPlain, search_path, &p.types);
          !typed.ok()) {
        return ForStatement(typed, k, n);
      }
      absl::StatusOr<QueryResult> converted =
          RunStatement(statements[k], p, CacheKey(statements[k], p), /*in_transaction=*/true,
                       /*pipeline_reset=*/false, options.max_result_bytes, &result_bytes, stale);
      if (!converted.ok()) return ForStatement(converted.status(), k, n);
      if (absl::Status ended = CheckTransactionNotEnded(converted->command_tag); !ended.ok()) {
        return ForStatement(ended, k, n);
      }
      results.push_back(*std::move(converted));
    }
    if (Cancelled()) return WithPrefix(CancelledError(), commit_prefix);
    const PgResult commit = Exec("COMMIT");
    if (absl::Status committed = CheckResult(commit.get()); !committed.ok()) {
      if (IsBroken() && committed.code() == absl::StatusCode::kUnavailable) {
        return Recode(committed, absl::StatusCode::kUnknown,
                      absl::StrCat(commit_prefix,
                                   "the connection was lost during COMMIT, so whether the "
                                   "transaction was applied is unknown; check before "
                                   "retrying: "));
      }
      return WithPrefix(committed, commit_prefix);
    }
    if (absl::string_view(PQcmdStatus(commit.get())) != "COMMIT") {
      // Only an error the adapter did not see can get here; the server has
      // ended the transaction either way.
      return absl::AbortedError(
          absl::StrCat(commit_prefix,
                       "PostgreSQL rolled the transaction back instead of committing it (an "
                       "earlier error had aborted it); nothing of the batch was applied"));
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
    session_search_path_.clear();
    if (close_after_call_) MarkBroken();
    for (int attempt = 0; attempt < 2 && !IsBroken(); ++attempt) {
      // Without an open transaction the server only warns (discarded).
      if (ExecSimple("ROLLBACK").ok()) return;
    }
    MarkBroken();
  }

  // Names the columns of non-built-in types the shared cache knows; true if
  // none is left to look up.
  bool NameFromCache(ResultShape* shape) const {
    bool complete = true;
    for (size_t c = 0; c < shape->columns.size(); ++c) {
      Column& column = shape->columns[c];
      if (!column.type_name.empty()) continue;
      if (std::optional<PqTypeCache::Entry> entry = types_->Find(column.type_oid)) {
        column.type_name = entry->name;
        shape->element_oids[c] = entry->element_oid;
      } else {
        complete = false;
      }
    }
    shape->all_named = complete;
    return complete;
  }

  // Fills in the names of non-built-in types (enums, domains' arrays,
  // composite and extension types) from the shared cache, asking the server
  // for the ones nobody has seen yet. If the lookup fails the names stay
  // empty and the values are still returned (as text): in autocommit the
  // failed lookup is a transaction of its own; inside a transaction it runs
  // under a savepoint, so that its failure does not abort the transaction
  // (whose COMMIT would then roll back). Failing to undo the savepoint is an
  // error.
  absl::Status NameUnknownTypes(bool in_transaction, ResultShape* shape) {
    std::vector<uint32_t> missing;
    for (const Column& column : shape->columns) {
      if (column.type_name.empty() && !types_->Find(column.type_oid).has_value()) {
        missing.push_back(column.type_oid);
      }
    }
    if (!missing.empty()) {
      if (in_transaction) {
        if (absl::Status s = ExecSimple("SAVEPOINT sessionbroker_type_lookup"); !s.ok()) return s;
      }
      const std::string oids = absl::StrCat("{", absl::StrJoin(missing, ","), "}");
      const char* const values[] = {oids.c_str()};
      PgResult found(PQexecParams(pg_, kTypeLookupSql, 1, nullptr, values, nullptr, nullptr, 0));
      const bool failed = !CheckResult(found.get()).ok();
      if (IsBroken()) return LostConnection(BrokenError());
      if (!failed) {
        for (int r = 0; r < PQntuples(found.get()); ++r) {
          uint32_t oid = 0;
          uint32_t element_oid = 0;
          if (absl::SimpleAtoi(PQgetvalue(found.get(), r, 0), &oid) &&
              absl::SimpleAtoi(PQgetvalue(found.get(), r, 2), &element_oid)) {
            types_->Insert(oid, PqTypeCache::Entry{PQgetvalue(found.get(), r, 1), element_oid});
          }
        }
        // Unknown to the server too (dropped since): remember that as well.
        for (const uint32_t oid : missing) {
          if (!types_->Find(oid).has_value()) types_->Insert(oid, PqTypeCache::Entry{});
        }
      }
      if (in_transaction) {
        if (absl::Status s = ExecSimple(failed ? "ROLLBACK TO SAVEPOINT sessionbroker_type_lookup; "
                                                 "RELEASE SAVEPOINT sessionbroker_type_lookup"
                                               : "RELEASE SAVEPOINT sessionbroker_type_lookup");
            !s.ok()) {
          return s;
        }
      }
    }
    shape->all_named = true;
    for (size_t c = 0; c < shape->columns.size(); ++c) {
      Column& column = shape->columns[c];
      if (!column.type_name.empty()) continue;
      if (std::optional<PqTypeCache::Entry> entry = types_->Find(column.type_oid)) {
        column.type_name = entry->name;
        shape->element_oids[c] = entry->element_oid;
      }
    }
    return absl::OkStatus();
  }

  // Closes the socket at once, so the server ends the session (rolling back
  // whatever it held) without waiting for the pool to drop the object.
  void MarkBroken() {
    broken_.store(true, std::memory_order_release);
    absl::MutexLock lock(&close_mu_);
    if (closed_) return;
    closed_ = true;
    PQfinish(pg_);
    pg_ = nullptr;
  }

  // The libpq connection, owned; nullptr once closed (MarkBroken, after
  // which every call fails before using it; libpq also answers a null
  // connection with errors). Written by the owner thread only (MarkBroken,
  // under close_mu_ so that Cancel() sees closed_ first), read by it freely.
  PGconn* pg_;
  // What PQcancel needs to reach the backend (PQgetCancel, once): Cancel()
  // uses it from any thread without touching pg_. Owned; nullptr if libpq
  // could not allocate it (cancel requests are then not sent).
  PGcancel* const cancel_;
  const std::shared_ptr<PqTypeCache> types_;
  // The prepared statement cache (see PqConnector::Options), keyed by SQL
  // and parameter types (PreparedStatementKey). Owner thread only.
  StatementCache statements_;
  // The role set by UseRole; "" = the login role.
  std::string role_;
  // Parameter types named by name (Value.type) and not built in: the OID the
  // server gave, by search_path and name ("<search_path>\0<name>"). Owner
  // thread only.
  absl::flat_hash_map<std::string, uint32_t> looked_up_types_;
  // The search_path the open transaction's settings set (Begin), "" outside
  // one or without. Owner thread only.
  std::string session_search_path_;
  const int backend_pid_;
  std::atomic<bool> broken_{false};
  // Set by Cancel() (any thread), cleared by ClearCancel().
  std::atomic<bool> cancelled_{false};
  // Set when a result may have left libpq in copy mode: the call then closes
  // the connection, once no transaction object uses it. Owner thread only.
  bool close_after_call_ = false;
  // The current Execute's reset went out in the statement's pipeline. Owner
  // thread only.
  bool reset_in_pipeline_ = false;
  // Set when a row over kShedBuffersAfterRowBytes was received; the
  // connection is closed when its transaction (if any) ends. Owner thread
  // only.
  bool shed_after_call_ = false;

  // Orders Cancel() (any thread) against closing the connection (the owner
  // thread, or destruction): cancel_query() reads the libpq connection.
  absl::Mutex close_mu_;
  bool closed_ ABSL_GUARDED_BY(close_mu_) = false;
};

}  // namespace

PqConnector::PqConnector(std::string conninfo) : PqConnector(std::move(conninfo), Options()) {}

PqConnector::PqConnector(std::string conninfo, Options options)
    : statement_cache_size_(options.statement_cache_size), types_(std::make_shared<PqTypeCache>()) {
  absl::StatusOr<Conninfo> parsed = Conninfo::Parse(conninfo);
  if (!parsed.ok()) {
    conninfo_error_ = parsed.status();
    return;
  }
  conninfo_ = WithDefaults(conninfo, *parsed, options);
  redacted_ = parsed->Redacted();
  secrets_ = parsed->SecretValues();
}

PqConnector::~PqConnector() = default;

std::string ConninfoWithDefaults(const std::string& conninfo, const PqConnector::Options& options) {
  absl::StatusOr<Conninfo> parsed = Conninfo::Parse(conninfo);
  return parsed.ok() ? WithDefaults(conninfo, *parsed, options) : conninfo;
}

absl::StatusOr<std::unique_ptr<DbConnection>> PqConnector::Connect() {
  if (!conninfo_error_.ok()) {
    return absl::UnavailableError(
        absl::StrCat("cannot connect to PostgreSQL: ", conninfo_error_.message()));
  }
  const std::string where =
      redacted_.empty() ? std::string("the default address (libpq defaults and PG* variables)")
                        : redacted_;
  PgConn conn(PQconnectdb(conninfo_.c_str()));
  if (conn == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot connect to PostgreSQL at ", where,
                                               ": libpq could not allocate a connection"));
  }
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    // The server answered but has no slot left (53300): the pool holds at
    // the connections it has instead of treating the database as down.
    if (PqError error = ParseErrorText(PQerrorMessage(conn.get()));
        absl::StartsWith(error.sqlstate, "53") || IsOutOfConnectionSlots(error.message)) {
      return SqlError(error.sqlstate.empty() ? "53300" : error.sqlstate,
                      ScrubSecrets(absl::StrCat("PostgreSQL at ", where,
                                                " has no connection slot left: ", error.message),
                                   secrets_));
    }
    return absl::UnavailableError(ScrubSecrets(
        absl::StrCat("cannot connect to PostgreSQL at ", where, ": ",
                     ConnectionErrorText(conn.get()),
                     "; check that the server is running and accepts connections at that host "
                     "and port, and that the user, password and database name are right"),
        secrets_));
  }
  // Notices and warnings (e.g. "there is no transaction in progress" from
  // ResetSession) would otherwise go to stderr.
  PQsetNoticeProcessor(conn.get(), DiscardNotice, nullptr);
  // Verbose messages carry the SQLSTATE in the text too, for the errors that
  // come only as text (PQerrorMessage: a lost connection, a failed send),
  // which ParseErrorText reads.
  PQsetErrorVerbosity(conn.get(), PQERRORS_VERBOSE);
  const PgResult baseline(PQexec(conn.get(), kBaselineSettingsSql));
  if (PQresultStatus(baseline.get()) != PGRES_COMMAND_OK) {
    const std::string why = baseline == nullptr
                                ? ConnectionErrorText(conn.get())
                                : ParseErrorText(PQresultErrorMessage(baseline.get())).message;
    return absl::UnavailableError(
        ScrubSecrets(absl::StrCat("connected to PostgreSQL at ", where,
                                  " but could not set up the session: ", why),
                     secrets_));
  }
  return std::unique_ptr<DbConnection>(
      std::make_unique<PqConnection>(std::move(conn), types_, statement_cache_size_));
}

}  // namespace sessionbroker::storage
