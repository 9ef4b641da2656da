// The libpq adapter of ListenConnection: PqListenConnector opens a plain libpq
// connection of its own (the listener poll()s the socket and reads
// notifications with PQconsumeInput/PQnotifies without blocking).
// LISTEN/UNLISTEN quote the channel with PQescapeIdentifier. Notices are
// discarded (they would go to stderr).
//
// Ownership: ConnectListener() hands the caller the connection.
// Thread safety: the connector is thread-safe; a connection is used by one
// thread at a time (ListenConnection's contract).
#ifndef SESSIONBROKER_SERVER_STORAGE_PQ_LISTEN_CONNECTION_H_
#define SESSIONBROKER_SERVER_STORAGE_PQ_LISTEN_CONNECTION_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/storage/listen_connection.h"

namespace sessionbroker::storage {

class PqListenConnector final : public ListenConnector {
 public:
  // `conninfo`: a libpq connection string, with the pool's defaults already
  // added (ConninfoWithDefaults: connect_timeout, TCP keepalives), so that a
  // vanished server is noticed by the listener as by the pool.
  explicit PqListenConnector(std::string conninfo);

  absl::StatusOr<std::unique_ptr<ListenConnection>> ConnectListener() override;

 private:
  std::string conninfo_;
  std::string redacted_;              // for messages
  std::vector<std::string> secrets_;  // scrubbed from libpq's messages
};

}  // namespace sessionbroker::storage

#endif  // SESSIONBROKER_SERVER_STORAGE_PQ_LISTEN_CONNECTION_H_
