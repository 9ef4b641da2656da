#include "server/core/auth/client_directory.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/core/auth/token_hash.h"

namespace sessionbroker::core {
namespace {

constexpr absl::string_view kKnownRoles[] = {kRoleAdmin, kRoleMonitor};
constexpr int kMaxWeight = 1000;
constexpr int kMaxCount = 1'000'000;

absl::Status Bad(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("clients file: ", where, ": ", what));
}

std::string Where(size_t index, absl::string_view id, absl::string_view field = "") {
  std::string where =
      id.empty() ? absl::StrCat("clients[", index, "]") : absl::StrCat("client \"", id, "\"");
  if (!field.empty()) absl::StrAppend(&where, ".", field);
  return where;
}

bool ValidId(absl::string_view id) {
  if (id.empty() || id.size() > kMaxClientIdLength) return false;
  for (char c : id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      return false;
    }
  }
  return true;
}

absl::StatusOr<std::string> Scalar(const YAML::Node& node, const std::string& where) {
  if (!node.IsScalar()) return Bad(where, "expected a string");
  return node.Scalar();
}

absl::StatusOr<std::vector<std::string>> Strings(const YAML::Node& node, const std::string& where) {
  if (!node.IsSequence()) return Bad(where, "expected a list of strings");
  std::vector<std::string> out;
  for (size_t i = 0; i < node.size(); ++i) {
    if (!node[i].IsScalar() || node[i].Scalar().empty()) {
      return Bad(absl::StrCat(where, "[", i, "]"), "expected a non-empty string");
    }
    out.push_back(node[i].Scalar());
  }
  return out;
}

absl::StatusOr<bool> Bool(const YAML::Node& node, const std::string& where) {
  bool value;
  if (!node.IsScalar() || !YAML::convert<bool>::decode(node, value)) {
    return Bad(where, "expected true or false");
  }
  return value;
}

absl::StatusOr<int> Int(const YAML::Node& node, const std::string& where, int min, int max) {
  long long value;
  if (!node.IsScalar() || !YAML::convert<long long>::decode(node, value) || value < min ||
      value > max) {
    return Bad(where, absl::StrCat("expected an integer from ", min, " to ", max));
  }
  return static_cast<int>(value);
}

absl::StatusOr<absl::Duration> Seconds(const YAML::Node& node, const std::string& where) {
  double value;
  if (!node.IsScalar() || !YAML::convert<double>::decode(node, value) || !std::isfinite(value) ||
      value < 0 || value > 7 * 86400) {
    return Bad(where, "expected a number of seconds from 0 to 604800 (0: no ceiling)");
  }
  return absl::Seconds(value);
}

// Fills `p` from one entry of `clients`.
absl::Status ParseClient(const YAML::Node& node, size_t index, ClientPolicy& p) {
  if (!node.IsMap()) return Bad(Where(index, ""), "expected a mapping with id, token_hashes, ...");
  if (!node["id"]) return Bad(Where(index, ""), "id is missing");
  absl::StatusOr<std::string> id = Scalar(node["id"], Where(index, "", "id"));
  if (!id.ok()) return id.status();
  if (!ValidId(*id)) {
    return Bad(Where(index, "", "id"),
               absl::StrCat("\"", *id, "\" is not a client id: 1 to ", kMaxClientIdLength,
                            " letters, digits, '-', '_' or '.'"));
  }
  p.id = *id;
  for (const auto& entry : node) {
    if (!entry.first.IsScalar()) return Bad(Where(index, p.id), "keys must be strings");
    const std::string key = entry.first.Scalar();
    const YAML::Node& v = entry.second;
    const std::string where = Where(index, p.id, key);
    absl::Status status;
    if (key == "id") {
      continue;
    } else if (key == "token_hashes") {
      absl::StatusOr<std::vector<std::string>> hashes = Strings(v, where);
      if (!hashes.ok()) return hashes.status();
      for (size_t i = 0; i < hashes->size(); ++i) {
        // Never echo the value: a plain-text token pasted here is a secret.
        if (!LooksLikeTokenHash((*hashes)[i])) {
          return Bad(absl::StrCat(where, "[", i, "]"),
                     "is not an argon2 hash; plain-text tokens are refused: write the output of "
                     "`session-broker hash-token` (token on stdin) here");
        }
      }
      p.token_hashes = *std::move(hashes);
    } else if (key == "spiffe_ids") {
      absl::StatusOr<std::vector<std::string>> ids = Strings(v, where);
      if (!ids.ok()) return ids.status();
      for (const std::string& s : *ids) {
        if (s.rfind("spiffe://", 0) != 0) {
          return Bad(where, absl::StrCat("\"", s, "\" is not a SPIFFE id (spiffe://...)"));
        }
      }
      p.spiffe_ids = *std::move(ids);
    } else if (key == "cert_subjects") {
      absl::StatusOr<std::vector<std::string>> subjects = Strings(v, where);
      if (!subjects.ok()) return subjects.status();
      p.cert_subjects = *std::move(subjects);
    } else if (key == "roles") {
      absl::StatusOr<std::vector<std::string>> roles = Strings(v, where);
      if (!roles.ok()) return roles.status();
      for (const std::string& r : *roles) {
        if (std::find(std::begin(kKnownRoles), std::end(kKnownRoles), r) == std::end(kKnownRoles)) {
          return Bad(where, absl::StrCat("unknown role \"", r, "\"; roles are ",
                                         absl::StrJoin(kKnownRoles, ", ")));
        }
      }
      p.roles = *std::move(roles);
    } else if (key == "database_role") {
      absl::StatusOr<std::string> role = Scalar(v, where);
      if (!role.ok()) return role.status();
      // PostgreSQL's NAMEDATALEN - 1; NUL cannot travel in a statement.
      if (role->empty() || role->size() > 63 || role->find('\0') != std::string::npos) {
        return Bad(where, "expected a PostgreSQL role name of 1 to 63 bytes");
      }
      p.database_role = *std::move(role);
    } else if (key == "read_only") {
      absl::StatusOr<bool> b = Bool(v, where);
      if (!b.ok()) return b.status();
      p.read_only = *b;
    } else if (key == "allowed_statement_kinds") {
      absl::StatusOr<std::vector<std::string>> kinds = Strings(v, where);
      if (!kinds.ok()) return kinds.status();
      for (std::string& k : *kinds) {
        k = absl::AsciiStrToLower(k);
        for (char c : k) {
          if (!absl::ascii_isalpha(static_cast<unsigned char>(c)) && c != '_') {
            return Bad(where, absl::StrCat("\"", k, "\" is not a statement kind (e.g. select)"));
          }
        }
      }
      if (kinds->empty()) return Bad(where, "is empty; leave it out to allow every kind");
      p.allowed_statement_kinds = *std::move(kinds);
    } else if (key == "weight") {
      absl::StatusOr<int> n = Int(v, where, 1, kMaxWeight);
      if (!n.ok()) return n.status();
      p.weight = *n;
    } else if (key == "max_connections" || key == "max_waiters" || key == "max_sessions" ||
               key == "reserved_connections") {
      absl::StatusOr<int> n = Int(v, where, 0, kMaxCount);
      if (!n.ok()) return n.status();
      if (key == "max_connections") p.max_connections = *n;
      if (key == "max_waiters") p.max_waiters = *n;
      if (key == "max_sessions") p.max_sessions = *n;
      if (key == "reserved_connections") p.reserved_connections = *n;
    } else if (key == "statement_timeout_max") {
      absl::StatusOr<absl::Duration> d = Seconds(v, where);
      if (!d.ok()) return d.status();
      p.statement_timeout_max = *d;
    } else {
      return Bad(where,
                 "unknown field; fields are id, token_hashes, spiffe_ids, cert_subjects, roles, "
                 "database_role, read_only, allowed_statement_kinds, weight, max_connections, "
                 "max_waiters, max_sessions, reserved_connections, statement_timeout_max");
    }
  }
  if (p.token_hashes.empty() && p.spiffe_ids.empty() && p.cert_subjects.empty()) {
    return Bad(Where(index, p.id),
               "has no credential: give it token_hashes, spiffe_ids or cert_subjects");
  }
  if (p.max_connections > 0 && p.reserved_connections > p.max_connections) {
    return Bad(Where(index, p.id, "reserved_connections"), "is more than max_connections");
  }
  return absl::OkStatus();
}

}  // namespace

bool ClientPolicy::HasRole(absl::string_view role) const {
  return std::find(roles.begin(), roles.end(), role) != roles.end();
}

absl::StatusOr<std::shared_ptr<const ClientDirectory>> ClientDirectory::Parse(
    absl::string_view text) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    // The parser's message names a position, not the text (no secret).
    return absl::InvalidArgumentError(absl::StrCat("clients file: not valid YAML or JSON: line ",
                                                   e.mark.line + 1, ", column ", e.mark.column + 1,
                                                   ": ", e.msg));
  }
  if (!root.IsMap() || !root["clients"]) {
    return absl::InvalidArgumentError(
        "clients file: expected a mapping with a `clients` list (docs/security.md)");
  }
  for (const auto& entry : root) {
    if (!entry.first.IsScalar() || entry.first.Scalar() != "clients") {
      return absl::InvalidArgumentError(
          "clients file: unknown top-level field; the only one is `clients`");
    }
  }
  const YAML::Node list = root["clients"];
  if (!list.IsSequence()) {
    return absl::InvalidArgumentError("clients file: `clients` must be a list");
  }
  auto directory = std::shared_ptr<ClientDirectory>(new ClientDirectory());
  absl::flat_hash_set<std::string> hashes;
  try {
    for (size_t i = 0; i < list.size(); ++i) {
      auto policy = std::make_shared<ClientPolicy>();
      if (absl::Status s = ParseClient(list[i], i, *policy); !s.ok()) return s;
      if (!directory->by_id_.emplace(policy->id, policy).second) {
        return Bad(Where(i, policy->id), "the id appears twice");
      }
      for (const std::string& h : policy->token_hashes) {
        if (!hashes.insert(h).second) {
          return Bad(Where(i, policy->id, "token_hashes"),
                     "a hash appears twice (one token would name two clients)");
        }
      }
      for (const std::string& s : policy->spiffe_ids) {
        if (!directory->by_spiffe_.emplace(s, policy).second) {
          return Bad(Where(i, policy->id, "spiffe_ids"),
                     absl::StrCat("\"", s, "\" already names another client"));
        }
      }
      for (const std::string& s : policy->cert_subjects) {
        if (!directory->by_subject_.emplace(s, policy).second) {
          return Bad(Where(i, policy->id, "cert_subjects"),
                     absl::StrCat("\"", s, "\" already names another client"));
        }
      }
      directory->clients_.push_back(std::move(policy));
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("clients file: line ", e.mark.line + 1, ": ", e.msg));
  }
  return std::shared_ptr<const ClientDirectory>(std::move(directory));
}

ClientDirectory::Policy ClientDirectory::Find(absl::string_view id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second;
}

ClientDirectory::Policy ClientDirectory::FindBySpiffeId(absl::string_view spiffe_id) const {
  auto it = by_spiffe_.find(spiffe_id);
  return it == by_spiffe_.end() ? nullptr : it->second;
}

ClientDirectory::Policy ClientDirectory::FindBySubject(absl::string_view subject) const {
  auto it = by_subject_.find(subject);
  return it == by_subject_.end() ? nullptr : it->second;
}

}  // namespace sessionbroker::core
