// RequestFingerprint: what a retry with the same request_id must match — a
// SHA-256 of the request's type and its fields, request_id itself left out,
// serialized deterministically (map fields in key order), so the same
// request hashes the same in every broker process and release (the durable
// record outlives the process that wrote it). Stateless; thread-safe.
#ifndef SESSIONBROKER_SERVER_TRANSPORT_REQUEST_FINGERPRINT_H_
#define SESSIONBROKER_SERVER_TRANSPORT_REQUEST_FINGERPRINT_H_

#include <string>

#include "google/protobuf/message.h"

namespace sessionbroker::transport {

// 32 raw bytes.
std::string RequestFingerprint(const google::protobuf::Message& request);

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_REQUEST_FINGERPRINT_H_
