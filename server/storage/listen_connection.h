// The storage boundary for LISTEN/NOTIFY: one connection that only LISTENs
// and reads notifications, and the factory that opens one. The core's
// NotificationHub (core/notify) drives it from its listener thread; the libpq
// adapter (pq_listen_connection.h) and the unit-test fakes implement it.
//
// Thread safety: a ListenConnection is used by one thread at a time. A
// ListenConnector is thread-safe.
#ifndef SESSIONBROKER_SERVER_STORAGE_LISTEN_CONNECTION_H_
#define SESSIONBROKER_SERVER_STORAGE_LISTEN_CONNECTION_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sessionbroker::storage {

// One NOTIFY as PostgreSQL delivered it.
struct Notification {
  std::string channel;
  std::string payload;
  int sender_pid = 0;
};

class ListenConnection {
 public:
  virtual ~ListenConnection() = default;

  // LISTEN / UNLISTEN `channel`, used exactly as given: quoted as an
  // identifier, never folded to lower case. Blocks for one round trip.
  // UNAVAILABLE when the connection is lost (then IsBroken()).
  virtual absl::Status Listen(absl::string_view channel) = 0;
  virtual absl::Status Unlisten(absl::string_view channel) = 0;

  // Reads whatever the server has sent without blocking and appends the
  // notifications received so far (including those read while Listen or
  // Unlisten waited for their answer). UNAVAILABLE when the connection is
  // lost; notifications read before that are appended all the same.
  virtual absl::Status Consume(std::vector<Notification>* out) = 0;

  // The descriptor to poll() for readability; -1 once broken.
  virtual int Socket() const = 0;
  virtual bool IsBroken() const = 0;
  // The server process id (pg_stat_activity, pg_terminate_backend).
  virtual int BackendPid() const = 0;
};

class ListenConnector {
 public:
  virtual ~ListenConnector() = default;
  // UNAVAILABLE when the database cannot be reached (the message names the
  // address, never a password).
  virtual absl::StatusOr<std::unique_ptr<ListenConnection>> ConnectListener() = 0;
};

}  // namespace sessionbroker::storage

#endif  // SESSIONBROKER_SERVER_STORAGE_LISTEN_CONNECTION_H_
