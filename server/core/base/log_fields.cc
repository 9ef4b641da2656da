#include "server/core/base/log_fields.h"

#include <atomic>

#include "server/core/base/escape.h"

namespace sessionbroker::core {
namespace {

std::atomic<LogFieldStyle> g_style{LogFieldStyle::kText};

}  // namespace

void SetLogFieldStyle(LogFieldStyle style) { g_style.store(style, std::memory_order_relaxed); }

LogFieldStyle GetLogFieldStyle() { return g_style.load(std::memory_order_relaxed); }

std::string Quoted(absl::string_view value) {
  std::string out;
  if (GetLogFieldStyle() == LogFieldStyle::kText) {
    out.reserve(value.size() + 2);
    out.push_back('"');
    out += EscapeForLogText(value);
    out.push_back('"');
    return out;
  }
  out.reserve(value.size() + 2);
  out.push_back(kLogFieldBegin);
  for (const char c : value) {
    out.push_back(c == kLogFieldBegin || c == kLogFieldEnd ? '?' : c);
  }
  out.push_back(kLogFieldEnd);
  return out;
}

}  // namespace sessionbroker::core
