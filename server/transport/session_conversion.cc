#include "server/transport/session_conversion.h"

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"

namespace sessionbroker::transport {

void TimeToProto(absl::Time t, google::protobuf::Timestamp* out) {
  const int64_t seconds = absl::ToUnixSeconds(t);
  out->set_seconds(seconds);
  out->set_nanos(
      static_cast<int32_t>(absl::ToInt64Nanoseconds(t - absl::FromUnixSeconds(seconds))));
}

void DurationToProto(absl::Duration d, google::protobuf::Duration* out) {
  const int64_t seconds = absl::IDivDuration(d, absl::Seconds(1), &d);
  out->set_seconds(seconds);
  out->set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(d)));
}

absl::StatusOr<absl::Duration> DurationFromProto(const google::protobuf::Duration& d,
                                                 absl::string_view field) {
  if (d.seconds() < 0 || d.nanos() < 0 || d.nanos() > 999'999'999) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(field), " must be a non-negative duration (e.g. \"30s\")"));
  }
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

absl::StatusOr<core::Isolation> IsolationFromProto(int level, absl::string_view field) {
  switch (level) {
    case v1::ISOLATION_LEVEL_UNSPECIFIED:
      return core::Isolation::kDefault;
    case v1::READ_COMMITTED:
      return core::Isolation::kReadCommitted;
    case v1::REPEATABLE_READ:
      return core::Isolation::kRepeatableRead;
    case v1::SERIALIZABLE:
      return core::Isolation::kSerializable;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          std::string(field), " = ", level,
          " is not an isolation level: use READ_COMMITTED, REPEATABLE_READ or SERIALIZABLE"));
  }
}

v1::IsolationLevel IsolationToProto(core::Isolation isolation) {
  switch (isolation) {
    case core::Isolation::kReadCommitted:
      return v1::READ_COMMITTED;
    case core::Isolation::kRepeatableRead:
      return v1::REPEATABLE_READ;
    case core::Isolation::kSerializable:
      return v1::SERIALIZABLE;
    case core::Isolation::kDefault:
      break;
  }
  return v1::ISOLATION_LEVEL_UNSPECIFIED;
}

void SessionToProto(const core::SessionInfo& info, v1::Session* out) {
  out->set_name(info.name);
  TimeToProto(info.create_time, out->mutable_create_time());
  TimeToProto(info.expire_time, out->mutable_expire_time());
  out->set_label(info.label);
  out->set_read_only(info.read_only);
  out->set_isolation(IsolationToProto(info.isolation));
  out->set_in_transaction(info.in_transaction);
  out->set_transaction_aborted(info.transaction_aborted);
  out->set_abort_reason(info.abort_reason);
  if (info.transaction_start_time != absl::InfinitePast()) {
    TimeToProto(info.transaction_start_time, out->mutable_transaction_start_time());
  }
  DurationToProto(info.ttl, out->mutable_ttl());
  TimeToProto(info.max_expire_time, out->mutable_max_expire_time());
  for (const auto& [name, value] : info.settings) (*out->mutable_settings())[name] = value;
  out->set_client_id(info.client_id);
  out->set_held_by_stream(info.held_by_stream);
  out->set_queued_calls(info.queued_calls);
}

}  // namespace sessionbroker::transport
