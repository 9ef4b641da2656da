#include "server/storage/statement_cache.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace sessionbroker::storage {

StatementCache::StatementCache(int capacity)
    : capacity_(capacity > 0 ? static_cast<size_t>(capacity) : 0) {}

StatementCache::Plan StatementCache::Use(const std::string& sql) {
  if (capacity_ == 0) return Plan{};
  ++use_clock_;
  if (auto it = statements_.find(sql); it != statements_.end()) {
    Statement& statement = it->second;
    statement.last_use = use_clock_;
    const bool prepare = !statement.prepared;
    statement.prepared = true;
    return Plan{&statement.name, prepare};
  }
  auto [seen, first] = seen_once_.insert(sql);
  if (first) {
    if (seen_once_.size() > 4 * capacity_) seen_once_.clear();
    return Plan{};
  }
  if (Full()) return Plan{};
  seen_once_.erase(seen);
  auto [it, inserted] = statements_.emplace(
      sql, Statement{absl::StrCat("sessionbroker_", ++names_issued_), use_clock_, true});
  return Plan{&it->second.name, /*prepare=*/true};
}

std::optional<std::string> StatementCache::EvictFor(const std::string& sql) {
  if (capacity_ == 0 || !Full() || statements_.contains(sql) || !seen_once_.contains(sql)) {
    return std::nullopt;
  }
  auto oldest = statements_.begin();
  for (auto it = statements_.begin(); it != statements_.end(); ++it) {
    if (it->second.last_use < oldest->second.last_use) oldest = it;
  }
  std::string name = std::move(oldest->second.name);
  statements_.erase(oldest);
  return name;
}

std::optional<std::string> StatementCache::Forget(const std::string& sql) {
  auto it = statements_.find(sql);
  if (it == statements_.end()) return std::nullopt;
  std::string name = std::move(it->second.name);
  statements_.erase(it);
  return name;
}

size_t StatementCache::PreparedCount() const {
  size_t n = 0;
  for (const auto& [sql, statement] : statements_) n += statement.prepared ? 1 : 0;
  return n;
}

void StatementCache::MarkAllUnprepared() {
  for (auto& [sql, statement] : statements_) statement.prepared = false;
}

}  // namespace sessionbroker::storage
