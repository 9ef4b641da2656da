// What a client's policy allows it to run, checked before any database work
// (the transport calls it for every Execute and ExecuteBatch, one-shot or in
// a session): PostgreSQL's own parser (ClassifySql) tells the statement kinds
// and whether a statement may change the role.
//
//  * A client bound to a database role may not change it: SET ROLE, RESET
//    ROLE, SET SESSION AUTHORIZATION, set_config('role', ...) and anything
//    else SqlInfo::changes_role reports answer PERMISSION_DENIED.
//  * A client with allowed_statement_kinds runs only those kinds;
//    PERMISSION_DENIED names the kind refused.
//  * A read-only client may not run SET or RESET (kind "set"): SET
//    TRANSACTION READ WRITE or SET transaction_read_only as the first
//    statement of a transaction would make it read-write. Session settings
//    (BeginSession) remain available.
//
// Pure functions; thread-safe.
#ifndef SESSIONBROKER_SERVER_CORE_AUTH_STATEMENT_POLICY_H_
#define SESSIONBROKER_SERVER_CORE_AUTH_STATEMENT_POLICY_H_

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/core/auth/client_policy.h"

namespace sessionbroker::core {

// Whether the policy constrains statements at all (then parsing is skipped).
bool ConstrainsStatements(const ClientPolicy& policy);

// OK, or PERMISSION_DENIED naming the statement (in a batch, its index) and
// the rule.
absl::Status CheckStatementsAllowed(const ClientPolicy& policy,
                                    const std::vector<absl::string_view>& sqls);

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_AUTH_STATEMENT_POLICY_H_
