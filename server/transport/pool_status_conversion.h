// core::PoolSnapshot -> v1::PoolStatus (proto/sessionbroker/v1/monitor.proto).
// Pure function; thread-safe.
#ifndef SESSIONBROKER_SERVER_TRANSPORT_POOL_STATUS_CONVERSION_H_
#define SESSIONBROKER_SERVER_TRANSPORT_POOL_STATUS_CONVERSION_H_

#include "server/core/monitor/pool_snapshot.h"
#include "sessionbroker/v1/monitor.pb.h"

namespace sessionbroker::transport {

void PoolSnapshotToProto(const core::PoolSnapshot& snapshot, v1::PoolStatus* out);

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_POOL_STATUS_CONVERSION_H_
