#include "server/logging.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/core/base/escape.h"
#include "server/core/base/log_fields.h"
#include "spdlog/pattern_formatter.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace sessionbroker {
namespace {

bool IsKeyChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
}

// The key of a "key=" that `text` ends with (at its start or after a space),
// or "" if it ends otherwise.
absl::string_view TrailingKey(absl::string_view text) {
  if (text.empty() || text.back() != '=') return {};
  size_t start = text.size() - 1;
  while (start > 0 && IsKeyChar(text[start - 1])) --start;
  if (start == text.size() - 1 || (start > 0 && text[start - 1] != ' ')) return {};
  return text.substr(start, text.size() - 1 - start);
}

// {"ts":"2026-11-26T14:00:00.123456Z","level":"info","thread":123,"msg":"...",
//  <one member per marked field>}
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    std::string line;
    absl::StrAppend(
        &line, "{\"ts\":\"",
        absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::FromChrono(msg.time), absl::UTCTimeZone()),
        "\",\"level\":\"");
    const auto level = spdlog::level::to_string_view(msg.level);
    line.append(level.data(), level.size());
    absl::StrAppend(&line, "\",\"thread\":", msg.thread_id, ",\"msg\":");

    // Marked fields whose "key=" precedes them become members; the text
    // around them stays the message. A field without a usable key (none, a
    // reserved or repeated one) stays in the message as in text logs.
    std::string text;
    std::vector<std::pair<std::string, absl::string_view>> fields;
    absl::string_view rest(msg.payload.data(), msg.payload.size());
    while (!rest.empty()) {
      const size_t begin = rest.find(core::kLogFieldBegin);
      const size_t end =
          begin == absl::string_view::npos ? begin : rest.find(core::kLogFieldEnd, begin + 1);
      if (end == absl::string_view::npos) {
        text.append(rest.data(), rest.size());
        break;
      }
      text.append(rest.data(), begin);
      const absl::string_view value = rest.substr(begin + 1, end - begin - 1);
      rest.remove_prefix(end + 1);
      const std::string key(TrailingKey(text));
      if (key.empty() || IsTaken(key, fields)) {
        absl::StrAppend(&text, "\"", core::EscapeForLogText(value), "\"");
        continue;
      }
      text.resize(text.size() - key.size() - 1);  // the "key="
      if (!text.empty() && text.back() == ' ') {
        text.pop_back();
      } else if (text.empty() && !rest.empty() && rest.front() == ' ') {
        rest.remove_prefix(1);
      }
      fields.emplace_back(key, value);
    }
    core::AppendJsonString(text, &line);
    for (const auto& [key, value] : fields) {
      line.push_back(',');
      core::AppendJsonString(key, &line);
      line.push_back(':');
      core::AppendJsonString(value, &line);
    }
    line.append("}\n");
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }

 private:
  static bool IsTaken(const std::string& key,
                      const std::vector<std::pair<std::string, absl::string_view>>& fields) {
    if (key == "ts" || key == "level" || key == "thread" || key == "msg") return true;
    for (const auto& field : fields) {
      if (field.first == key) return true;
    }
    return false;
  }
};

// The text format: spdlog's pattern, with the message's control characters
// escaped first (newline, carriage return and tab as \n \r \t, others as
// '?', as EscapeForLogText does inside a quoted field), so text from a
// caller that reaches a message unquoted (a label, SQL in the echo) cannot
// start a line that looks like the broker's own. Fields written with Quoted
// hold no control characters and pass through unchanged.
class TextFormatter final : public spdlog::formatter {
 public:
  TextFormatter()
      : pattern_("%Y-%m-%dT%H:%M:%S.%fZ %^%-5l%$ [%t] %v", spdlog::pattern_time_type::utc) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const absl::string_view payload(msg.payload.data(), msg.payload.size());
    if (std::none_of(payload.begin(), payload.end(), IsControl)) {
      pattern_.format(msg, dest);
      return;
    }
    std::string escaped;
    escaped.reserve(payload.size() + 8);
    for (const char c : payload) {
      switch (c) {
        case '\n':
          escaped.append("\\n");
          break;
        case '\r':
          escaped.append("\\r");
          break;
        case '\t':
          escaped.append("\\t");
          break;
        default:
          escaped.push_back(IsControl(c) ? '?' : c);
      }
    }
    spdlog::details::log_msg copy = msg;
    copy.payload = spdlog::string_view_t(escaped.data(), escaped.size());
    pattern_.format(copy, dest);
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<TextFormatter>();
  }

 private:
  static bool IsControl(char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; }

  spdlog::pattern_formatter pattern_;
};

}  // namespace

std::unique_ptr<spdlog::formatter> MakeLogFormatter(const std::string& format) {
  if (format == "json") return std::make_unique<JsonFormatter>();
  return std::make_unique<TextFormatter>();
}

void InitLogging(const std::string& level, const std::string& format) {
  core::SetLogFieldStyle(format == "json" ? core::LogFieldStyle::kMarked
                                          : core::LogFieldStyle::kText);
  auto logger =
      std::make_shared<spdlog::logger>("broker", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  logger->set_formatter(MakeLogFormatter(format));
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace sessionbroker
