#include "server/core/auth/statement_policy.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/core/sql/sql_classifier.h"

namespace sessionbroker::core {

bool ConstrainsStatements(const ClientPolicy& policy) {
  return !policy.database_role.empty() || policy.read_only ||
         !policy.allowed_statement_kinds.empty();
}

absl::Status CheckStatementsAllowed(const ClientPolicy& policy,
                                    const std::vector<absl::string_view>& sqls) {
  if (!ConstrainsStatements(policy)) return absl::OkStatus();
  for (size_t i = 0; i < sqls.size(); ++i) {
    const std::string which =
        sqls.size() == 1 ? std::string("the statement") : absl::StrCat("statements[", i, "]");
    const SqlInfo info = ClassifySql(sqls[i]);
    if (!policy.database_role.empty() && info.changes_role) {
      return absl::PermissionDeniedError(absl::StrCat(
          which, " may change the database role, and client \"", policy.id, "\" runs as role \"",
          policy.database_role,
          "\" (clients file: database_role): SET ROLE, RESET ROLE, SET SESSION AUTHORIZATION, "
          "set_config('role', ...), RESET ALL and DISCARD ALL are refused"));
    }
    for (const std::string& kind : info.statement_kinds) {
      if (policy.read_only && kind == "set") {
        return absl::PermissionDeniedError(
            absl::StrCat(which, " is a SET or RESET, and client \"", policy.id,
                         "\" is read-only (clients file: read_only): it could make its transaction "
                         "read-write; give settings at BeginSession instead"));
      }
      const auto& allowed = policy.allowed_statement_kinds;
      if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), kind) == allowed.end()) {
        return absl::PermissionDeniedError(absl::StrCat(
            which, " is of kind ", kind, ", which client \"", policy.id,
            "\" may not run (clients file: allowed_statement_kinds: ", absl::StrJoin(allowed, ", "),
            ")"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace sessionbroker::core
