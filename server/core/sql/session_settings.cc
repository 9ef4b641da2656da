#include "server/core/sql/session_settings.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/core/base/escape.h"

namespace sessionbroker::core {
namespace {

bool IsIdentifierPart(absl::string_view part) {
  if (part.empty() || part.size() > 63) return false;
  if (!(absl::ascii_isalpha(static_cast<unsigned char>(part[0])) || part[0] == '_')) return false;
  return std::all_of(part.begin(), part.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

// "prefix.name" (or deeper): a custom setting, which PostgreSQL accepts under
// any prefix that no extension has claimed.
bool IsCustomSettingName(absl::string_view name) {
  if (name.find('.') == absl::string_view::npos) return false;
  size_t start = 0;
  while (true) {
    const size_t dot = name.find('.', start);
    const absl::string_view part =
        name.substr(start, dot == absl::string_view::npos ? absl::string_view::npos : dot - start);
    if (!IsIdentifierPart(part)) return false;
    if (dot == absl::string_view::npos) return true;
    start = dot + 1;
  }
}

}  // namespace

const std::vector<std::string>& AllowedSessionSettings() {
  static const auto* const kAllowed = new std::vector<std::string>{
      // Name resolution, time, text search.
      "search_path", "timezone", "default_text_search_config",
      // Limits the caller picks for its own statements.
      "statement_timeout", "lock_timeout", "work_mem", "temp_file_limit",
      // Identification in pg_stat_activity and logs.
      "application_name",
      // Durability per transaction.
      "synchronous_commit",
      // Security policies.
      "row_security",
      // Planner knobs.
      "enable_bitmapscan", "enable_hashagg", "enable_hashjoin", "enable_indexonlyscan",
      "enable_indexscan", "enable_material", "enable_memoize", "enable_mergejoin",
      "enable_nestloop", "enable_parallel_append", "enable_parallel_hash",
      "enable_partition_pruning", "enable_partitionwise_aggregate", "enable_partitionwise_join",
      "enable_seqscan", "enable_sort", "enable_incremental_sort", "enable_tidscan",
      "random_page_cost", "seq_page_cost", "cpu_tuple_cost", "cpu_index_tuple_cost",
      "cpu_operator_cost", "effective_cache_size", "effective_io_concurrency",
      "default_statistics_target", "from_collapse_limit", "join_collapse_limit",
      "cursor_tuple_fraction", "plan_cache_mode", "jit", "geqo", "geqo_threshold",
      "max_parallel_workers_per_gather", "parallel_setup_cost", "parallel_tuple_cost",
      "constraint_exclusion", "hash_mem_multiplier"};
  return *kAllowed;
}

absl::StatusOr<SessionSettings> NormalizeSessionSettings(SessionSettings settings) {
  if (settings.size() > static_cast<size_t>(kMaxSessionSettings)) {
    return absl::InvalidArgumentError(absl::StrCat("too many settings (", settings.size(),
                                                   "); a session may carry at most ",
                                                   kMaxSessionSettings));
  }
  const std::vector<std::string>& allowed = AllowedSessionSettings();
  for (auto& [name, value] : settings) {
    name = absl::AsciiStrToLower(name);
    const bool builtin = std::find(allowed.begin(), allowed.end(), name) != allowed.end();
    if (!builtin && !IsCustomSettingName(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "setting \"", Abbreviated(name),
          "\" cannot be set per session: allowed are custom settings with a dotted name "
          "(app.tenant_id) and ",
          absl::StrJoin(allowed, ", "), " (docs/sessions.md says why the others are not)"));
    }
    if (value.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("setting \"", Abbreviated(name), "\": the value contains a NUL byte"));
    }
    if (value.size() > kMaxSettingValueBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("setting \"", Abbreviated(name), "\": the value is ", value.size(),
                       " bytes; at most ", kMaxSettingValueBytes, " are allowed"));
    }
  }
  std::sort(settings.begin(), settings.end());
  for (size_t i = 1; i < settings.size(); ++i) {
    if (settings[i].first == settings[i - 1].first) {
      return absl::InvalidArgumentError(
          absl::StrCat("setting \"", Abbreviated(settings[i].first), "\" is given more than once"));
    }
  }
  return settings;
}

}  // namespace sessionbroker::core
