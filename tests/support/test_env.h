// What tests learn from their environment. `./scripts/dev test` starts a
// throwaway PostgreSQL and exports SB_TEST_DATABASE_URL; a pg or e2e test that
// runs without it fails (it never skips silently).
#ifndef SESSIONBROKER_TESTS_SUPPORT_TEST_ENV_H_
#define SESSIONBROKER_TESTS_SUPPORT_TEST_ENV_H_

#include <string>

namespace sessionbroker::testing {

// The test database URL; records a fatal failure in the current test if unset.
std::string TestDatabaseUrl();

// A TCP port on 127.0.0.1 that nothing listens on right now.
int FreePort();

// Path of scripts/pg in the source tree.
std::string PgScript();

}  // namespace sessionbroker::testing

#endif  // SESSIONBROKER_TESTS_SUPPORT_TEST_ENV_H_
