// Conversions between the session messages of the proto and the core's
// session types: times and durations (google.protobuf.Timestamp/Duration),
// isolation levels, Session. Pure functions; thread-safe.
#ifndef SESSIONBROKER_SERVER_TRANSPORT_SESSION_CONVERSION_H_
#define SESSIONBROKER_SERVER_TRANSPORT_SESSION_CONVERSION_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "server/core/session/session_manager.h"
#include "sessionbroker/v1/broker.pb.h"

namespace sessionbroker::transport {

void TimeToProto(absl::Time t, google::protobuf::Timestamp* out);
void DurationToProto(absl::Duration d, google::protobuf::Duration* out);
// INVALID_ARGUMENT naming `field` for a negative or malformed duration.
absl::StatusOr<absl::Duration> DurationFromProto(const google::protobuf::Duration& d,
                                                 absl::string_view field);

absl::StatusOr<core::Isolation> IsolationFromProto(int level, absl::string_view field);
v1::IsolationLevel IsolationToProto(core::Isolation isolation);

void SessionToProto(const core::SessionInfo& info, v1::Session* out);

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_SESSION_CONVERSION_H_
