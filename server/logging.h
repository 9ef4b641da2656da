// Process-wide logging setup: spdlog to stderr, as human-readable text or as
// one JSON object per line (LOG_FORMAT=json) for log shippers.
#ifndef SESSIONBROKER_SERVER_LOGGING_H_
#define SESSIONBROKER_SERVER_LOGGING_H_

#include <string>

namespace sessionbroker {

// `level`: trace|debug|info|warn|error|critical|off; `format`: text|json.
// Call once, before other threads start.
void InitLogging(const std::string& level, const std::string& format);

}  // namespace sessionbroker

#endif  // SESSIONBROKER_SERVER_LOGGING_H_
