// The libpqxx adapter: PqxxConnector opens PostgreSQL connections with the
// broker's baseline session settings (DateStyle ISO/YMD, IntervalStyle
// iso_8601, TimeZone UTC, extra_float_digits 3); each connection it returns is
// a PqxxConnection (defined in the .cc, so that no libpqxx type leaks out of
// this file pair) implementing DbConnection on one pqxx::connection.
//
// What callers may rely on:
//  - Statements go over the extended protocol with text-format parameters
//    (never spliced into the SQL), so one Execute runs exactly one statement.
//  - A connection never reconnects by itself: once lost it stays broken
//    (IsBroken) and every call on it returns UNAVAILABLE.
//  - ExecuteBatch runs in its own BEGIN/COMMIT, so it must not be called while
//    the session has a transaction open (its COMMIT would end that one too).
//  - Errors follow sql_error.h; a lost connection is UNAVAILABLE whatever the
//    SQLSTATE, and a COMMIT whose outcome is unknown is UNKNOWN.
//
// Ownership: Connect() hands the caller a connection it owns. Connections
// share the connector's cache of type names through a shared_ptr, so they may
// outlive the connector.
// Thread safety: PqxxConnector is thread-safe. A connection follows
// DbConnection's contract: one thread at a time, plus Cancel() from any thread
// while the owner runs a statement. Cancel() must not be called once the
// connection's destruction has begun (a Cancel() already running is waited for).
#ifndef SESSIONBROKER_SERVER_STORAGE_PQXX_CONNECTION_H_
#define SESSIONBROKER_SERVER_STORAGE_PQXX_CONNECTION_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/storage/db_connection.h"

namespace sessionbroker::storage {

class PqxxTypeCache;

class PqxxConnector final : public DbConnector {
 public:
  struct Options {
    // Used as libpq's connect_timeout unless the conninfo sets one: without a
    // timeout a host that drops packets blocks Connect() for minutes, and no
    // deadline of the broker can interrupt it.
    int connect_timeout_seconds = 10;
  };

  // `conninfo` is a libpq connection string: a URL
  // (postgresql://user:password@host:port/dbname?sslmode=require) or
  // key=value pairs. It is not checked here; Connect() reports problems.
  explicit PqxxConnector(std::string conninfo);
  PqxxConnector(std::string conninfo, Options options);
  ~PqxxConnector() override;

  PqxxConnector(const PqxxConnector&) = delete;
  PqxxConnector& operator=(const PqxxConnector&) = delete;

  // UNAVAILABLE when the server cannot be reached or refuses the connection;
  // the message names the host, port, database and user (never the password)
  // and says what to check.
  absl::StatusOr<std::unique_ptr<DbConnection>> Connect() override;

 private:
  // Set once by the constructor.
  std::string conninfo_;  // as given, plus connect_timeout
  std::string redacted_;  // for messages: without the password
  std::string password_;  // scrubbed from libpq's messages, never shown
  const std::shared_ptr<PqxxTypeCache> types_;
};

}  // namespace sessionbroker::storage

#endif  // SESSIONBROKER_SERVER_STORAGE_PQXX_CONNECTION_H_
