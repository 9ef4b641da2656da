#include "server/core/base/invariant.h"

#include <cstdlib>

#include "spdlog/spdlog.h"

namespace sessionbroker::core {

void InvariantFailed(const char* condition, const char* file, int line) {
  // Flushed here: abort() skips the logger's own flush at exit.
  spdlog::critical("invariant failed: {} at {}:{}", condition, file, line);
  spdlog::default_logger()->flush();
  std::abort();
}

}  // namespace sessionbroker::core
