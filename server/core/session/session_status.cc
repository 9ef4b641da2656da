#include "server/core/session/session_status.h"

#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "server/core/session/session_types.h"

namespace sessionbroker::core::session_internal {

std::string TimeText(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", t, absl::UTCTimeZone());
}

std::string DurationText(absl::Duration d) {
  return absl::FormatDuration(absl::Trunc(d, absl::Milliseconds(1)));
}

absl::Status WithReason(absl::Status status, absl::string_view token) {
  status.SetPayload(kSessionReasonPayloadUrl, absl::Cord(token));
  return status;
}

absl::Status Fresh(const absl::Status& status, absl::StatusCode code, absl::string_view prefix) {
  absl::Status out(code, absl::StrCat(prefix, status.message()));
  status.ForEachPayload([&out](absl::string_view url, const absl::Cord& payload) {
    out.SetPayload(url, absl::Cord(std::string(payload)));
  });
  return out;
}

absl::Status Detached(const absl::Status& status) { return Fresh(status, status.code(), ""); }

}  // namespace sessionbroker::core::session_internal
