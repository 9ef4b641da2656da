// The pooled connections, on libpq in blocking mode: PqConnector opens
// PostgreSQL connections with the broker's baseline session settings
// (DateStyle ISO/YMD, IntervalStyle iso_8601, TimeZone UTC,
// extra_float_digits 3); each connection it returns is a PqConnection
// (defined in the .cc) implementing DbConnection on one PGconn. Everything
// runs with libpq itself: the callers' statements through pq_codec.h
// (PQexecParams, PQprepare, PQsendQueryPrepared, pipeline mode for the reset
// that follows a statement), the fixed ones (baseline, BEGIN/COMMIT/ROLLBACK,
// SET ROLE, ping, reset) with PQexec. A connection blocks the thread that
// calls it (the pool's worker threads do); the pipelined engine
// (pq_pipeline_loop.h) is the same driver used without blocking.
//
// What callers may rely on:
//  - Statements go over the extended protocol with text-format parameters
//    (never spliced into the SQL), so one Execute runs exactly one statement.
//    Each parameter is sent with the type Statement::param_types names
//    (built-in names from a static table, others looked up once per
//    connection and search_path with to_regtype; an unknown name is
//    INVALID_ARGUMENT naming the parameter) or, unnamed, the type its kind
//    implies (value_text.h ImpliedTypeOid).
//  - An error PostgreSQL reported carries its fields (sql_error.h
//    SqlErrorFields); a batch's failing statement sets statement_index.
//  - A connection never reconnects by itself: once lost it stays broken
//    (IsBroken) and every call on it returns UNAVAILABLE.
//  - ExecuteBatch runs in its own BEGIN/COMMIT, so it must not be called while
//    the session has a transaction open (its COMMIT would end that one too).
//    It returns OK only if PostgreSQL answered its COMMIT with COMMIT; a
//    statement of the batch that ends the transaction itself (COMMIT,
//    ROLLBACK, PREPARE TRANSACTION) fails the batch. After a failed batch the
//    session is outside any transaction (a ROLLBACK is sent), or the
//    connection is broken.
//  - Cancel() is sticky, as DbConnection says: after it, Execute and
//    ExecuteBatch fail with SQLSTATE 57014 before starting any statement or
//    COMMIT, until ClearCancel().
//  - A statement whose result has no command tag (COPY ... FROM STDIN / TO
//    STDOUT, or an empty statement) fails with UNIMPLEMENTED and leaves the
//    connection broken: libpq may be in the middle of a COPY, which the next
//    call would have to drain or abort.
//  - Ping() runs SELECT 1, so a session stuck in a failed transaction fails
//    it (and the connection is then broken).
//  - Notices and warnings from the server (e.g. "there is no transaction in
//    progress" from a reset's ROLLBACK) are discarded: libpq's default would
//    write them to stderr.
//  - Errors follow sql_error.h; a lost connection is UNAVAILABLE whatever the
//    SQLSTATE, and a COMMIT whose outcome is unknown is UNKNOWN.
//
// Ownership: Connect() hands the caller a connection it owns. Connections
// share the connector's cache of type names through a shared_ptr, so they may
// outlive the connector.
// Thread safety: PqConnector is thread-safe. A connection follows
// DbConnection's contract: one thread at a time, plus Cancel() from any thread
// while the owner runs a statement. Cancel() must not be called once the
// connection's destruction has begun (a Cancel() already running is waited for).
#ifndef SESSIONBROKER_SERVER_STORAGE_PQ_CONNECTION_H_
#define SESSIONBROKER_SERVER_STORAGE_PQ_CONNECTION_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/storage/db_connection.h"

namespace sessionbroker::storage {

class PqTypeCache;

class PqConnector final : public DbConnector {
 public:
  // Defaults added to the conninfo, each only if the conninfo does not set
  // that parameter itself; 0 (or less) adds nothing for it. keepalives=1
  // (libpq's own default) is added too, to state what the others rely on.
  struct Options {
    // libpq's connect_timeout: without a timeout a host that drops packets
    // blocks Connect() for minutes, and no deadline of the broker can
    // interrupt it.
    int connect_timeout_seconds = 10;
    // TCP keepalive (libpq's keepalives=1, keepalives_idle,
    // keepalives_interval, keepalives_count) and tcp_user_timeout (libpq 12+,
    // milliseconds; Linux). A server that vanished without closing the socket
    // (host down, network partition, a NAT or load balancer that forgot the
    // flow) otherwise leaves a read blocked until the kernel gives up: over
    // two hours with Linux's keepalive defaults, about 15 minutes of
    // retransmissions for unacknowledged data. The blocked read holds its
    // worker and connection past every deadline of the broker, whose cancel
    // request cannot reach the server either. With these defaults a dead
    // peer is noticed within about a minute (30 s idle, then 3 probes 10 s
    // apart; data unacknowledged for 60 s), the call fails with UNAVAILABLE
    // and the connection is broken. A long statement on a live server is not
    // affected: the server's kernel answers the probes. Ignored for
    // Unix-domain sockets.
    int keepalives_idle_seconds = 30;
    int keepalives_interval_seconds = 10;
    int keepalives_count = 3;
    int tcp_user_timeout_ms = 60000;
    // Prepared statements kept per connection (BROKER_STATEMENT_CACHE_SIZE;
    // 0 = none). A cacheable statement (Statement::cacheable) whose SQL text
    // runs a second time on a connection with the same parameter types (a
    // prepared statement's types are fixed) is prepared there (Parse once) and
    // from then on only bound and executed, which saves PostgreSQL the
    // parsing and planning of every call. Past the limit the least recently
    // used one is deallocated. A statement whose cached plan went stale (its
    // result type changed, SQLSTATE 0A000) is dropped and, outside a
    // session's transaction, run again unprepared.
    int statement_cache_size = 100;
  };

  // `conninfo` is a libpq connection string: a URL
  // (postgresql://user:password@host:port/dbname?sslmode=require) or
  // key=value pairs, read by libpq's own parser. It is not checked here;
  // Connect() reports problems (one that does not parse: UNAVAILABLE with
  // libpq's explanation, showing nothing of the string).
  explicit PqConnector(std::string conninfo);
  PqConnector(std::string conninfo, Options options);
  ~PqConnector() override;

  PqConnector(const PqConnector&) = delete;
  PqConnector& operator=(const PqConnector&) = delete;

  // UNAVAILABLE when the server cannot be reached or refuses the connection;
  // the message names the host, port, database and user (never the password)
  // and says what to check.
  absl::StatusOr<std::unique_ptr<DbConnection>> Connect() override;

 private:
  // Set once by the constructor.
  std::string conninfo_;              // ConninfoWithDefaults(as given, options)
  std::string redacted_;              // for messages: secrets shown as ***
  std::vector<std::string> secrets_;  // scrubbed from libpq's messages, never shown
  absl::Status conninfo_error_;       // why the conninfo does not parse, if it does not
  int statement_cache_size_ = 0;
  const std::shared_ptr<PqTypeCache> types_;
};

// The connection string Connect() gives libpq: `conninfo` plus each default of
// `options` it does not set itself, in its own syntax (URL query parameters or
// key=value pairs); `conninfo` unchanged if it does not parse. It holds the
// password if `conninfo` does, so it is for tests, never for messages or logs.
std::string ConninfoWithDefaults(const std::string& conninfo, const PqConnector::Options& options);

}  // namespace sessionbroker::storage

#endif  // SESSIONBROKER_SERVER_STORAGE_PQ_CONNECTION_H_
