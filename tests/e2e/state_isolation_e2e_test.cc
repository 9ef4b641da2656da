// End-to-end: no session state crosses callers (issue 13, "No state crosses
// callers, by construction"). The broker binary runs with a one-connection
// pool, so every call lands on the same PostgreSQL backend (asserted with
// pg_backend_pid); each attack below is followed by a look at everything a
// caller can leave on a session, which must be the baseline again.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sessionbroker/v1/broker.grpc.pb.h"
#include "tests/support/broker_fixture.h"

namespace sessionbroker::testing {
namespace {

// What the next caller sees of the session, as one row of text: backend,
// roles, settings a caller could have changed, and counts of the objects a
// caller could have left behind.
constexpr char kLookSql[] =
    "SELECT concat_ws(' | ', pg_backend_pid(), current_user, session_user, "
    "current_setting('search_path'), current_setting('default_transaction_read_only'), "
    "current_setting('TimeZone'), current_setting('DateStyle'), "
    "coalesce(current_setting('e2e.leak', true), ''), "
    "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()), "
    "(SELECT count(*) FROM pg_prepared_statements WHERE from_sql), "
    "(SELECT count(*) FROM pg_cursors), (SELECT count(*) FROM pg_listening_channels()), "
    "(SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()))";

class StateIsolationE2eTest : public BrokerFixture {
 protected:
  void SetUp() override {
    BrokerFixture::SetUp();
    // Objects the attacks use, made by the test's own admin connection
    // (names unique to this test run).
    suffix_ = app_name_;
    absl::StrReplaceAll({{"-", "_"}}, &suffix_);
    role_ = Name("lowpriv");
    Admin(absl::StrCat("CREATE ROLE ", role_));
    Admin(absl::StrCat("GRANT ", role_, " TO CURRENT_USER"));
    Admin(absl::StrCat("CREATE VIEW ", Name("v"),
                       " AS SELECT set_config('search_path', 'evil_view', false) AS x"));
    Admin(absl::StrCat("CREATE FUNCTION ", Name("f"),
                       "() RETURNS text LANGUAGE sql AS "
                       "$$ SELECT set_config('e2e.leak', 'function', false) $$"));
    Admin(absl::StrCat("CREATE FUNCTION ", Name("trg"),
                       "() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                       "PERFORM set_config('e2e.leak', 'trigger', false); RETURN NEW; END $$"));
    Admin(absl::StrCat("CREATE TABLE ", Name("t"),
                       " (a int, b text DEFAULT set_config("
                       "'e2e.leak', 'default', false))"));
    Admin(absl::StrCat("CREATE TRIGGER leak BEFORE UPDATE ON ", Name("t"),
                       " FOR EACH ROW EXECUTE FUNCTION ", Name("trg"), "()"));
    Admin(absl::StrCat("CREATE TABLE ", Name("r"), " (a int)"));
    Admin(absl::StrCat("CREATE RULE leak AS ON INSERT TO ", Name("r"),
                       " DO ALSO SELECT set_config('e2e.leak', 'rule', false)"));
    Admin(absl::StrCat("CREATE SEQUENCE ", Name("seq")));
    Admin(absl::StrCat("CREATE FUNCTION ", Name("op"),
                       "(int, text) RETURNS text LANGUAGE sql AS "
                       "$$ SELECT set_config('e2e.leak', 'operator', false) $$"));
    Admin(absl::StrCat(
        "CREATE OPERATOR #~# (LEFTARG = int, RIGHTARG = text, FUNCTION = ", Name("op"), ")"));
  }

  void TearDown() override {
    broker_.reset();  // its connection goes first
    for (const std::string& sql :
         {absl::StrCat("DROP OPERATOR IF EXISTS #~# (int, text)"),
          absl::StrCat("DROP VIEW IF EXISTS ", Name("v")),
          absl::StrCat("DROP TABLE IF EXISTS ", Name("t"), ", ", Name("r"), ", ", Name("w")),
          absl::StrCat("DROP SEQUENCE IF EXISTS ", Name("seq")),
          absl::StrCat("DROP FUNCTION IF EXISTS ", Name("f"), "(), ", Name("trg"), "(), ",
                       Name("op"), "(int, text)"),
          absl::StrCat("DROP ROLE IF EXISTS ", role_)}) {
      Admin(sql);
    }
    BrokerFixture::TearDown();
  }

  std::string Name(const std::string& what) const {
    return absl::StrCat("e2e_", what, "_", suffix_);
  }

  std::string Look() {
    CallResult r = Execute(kLookSql);
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
    if (!r.status.ok() || r.response.rows_size() != 1) return "";
    return r.response.rows(0).values(0).string_value();
  }

  // Runs `attack` (its outcome does not matter: some fail by design), then
  // checks that the next caller sees the baseline on the same backend.
  void ExpectBaselineAfter(const std::string& attack, std::vector<v1::Value> params = {}) {
    SCOPED_TRACE(attack);
    Execute(attack, std::move(params));
    EXPECT_EQ(Look(), baseline_);
    // A write works: no read-only default was left behind (25006).
    CallResult write = Execute(absl::StrCat("INSERT INTO ", Name("w"), " VALUES (1)"));
    EXPECT_TRUE(write.status.ok()) << write.status.error_message();
    EXPECT_EQ(Look(), baseline_);
  }

  std::string suffix_;
  std::string role_;
  std::string baseline_;
};

TEST_F(StateIsolationE2eTest, EveryAttackLeavesTheNextCallerAtTheBaselineOnTheSameConnection) {
  StartBroker({{"DB_POOL_SIZE", "1"}, {"DB_MAX_OVERFLOW", "0"}});
  Admin(absl::StrCat("CREATE TABLE ", Name("w"), " (a int)"));
  baseline_ = Look();
  ASSERT_FALSE(baseline_.empty());
  // A cached statement of the broker's own, prepared on the connection.
  const std::string cached = "SELECT $1::int8";
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(Execute(cached, {Int(1)}).status.ok());

  const std::string quoted_role = absl::StrCat("''", role_, "''");
  const std::vector<std::string> attacks = {
      // The issue's list.
      R"(SELECT U&"set\005fconfig"('search_path','evil',false))",
      absl::StrCat("SELECT query_to_xml('select set_config(''role'',", quoted_role,
                   ",false)',false,false,'')"),
      R"(CREATE TABLE U&"pg\005ftemp".leak (a int))", R"(SELECT U&"pg\005fadvisory\005flock"(42))",
      absl::StrCat("SELECT * FROM ", Name("v")), absl::StrCat("SELECT ", Name("f"), "()"),
      "SELECT * FROM ts_stat('select to_tsvector(set_config(''search_path'',''evil_ts'',"
      "false))')",
      "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", "PREPARE leak AS SELECT 1",
      "DECLARE leak CURSOR WITH HOLD FOR SELECT 1", "LISTEN leak",
      // More ways in.
      absl::StrCat("SET ROLE ", role_),
      absl::StrCat("SELECT set_config('role', '", role_, "', false)"), "SET search_path = evil_set",
      "SET TimeZone = 'Asia/Tokyo'", "RESET DateStyle",
      "UPDATE pg_settings SET setting = 'evil_settings' WHERE name = 'search_path'",
      absl::StrCat("INSERT INTO ", Name("t"), " (a) VALUES (1)"),  // column default
      absl::StrCat("UPDATE ", Name("t"), " SET a = 2"),            // trigger
      absl::StrCat("INSERT INTO ", Name("r"), " VALUES (1)"),      // rule
      absl::StrCat("SELECT 1 #~# 'x'::text"),                      // user operator
      "DO $$ BEGIN PERFORM set_config('e2e.leak', 'do', false); END $$",
      "DO $$ BEGIN EXECUTE 'PREPARE leak_do AS SELECT 1'; END $$",
      "CREATE TEMP TABLE leak_temp (a int)", "SELECT pg_try_advisory_lock_shared(7)",
      "SELECT * FROM (SELECT set_config('e2e.leak', 'subquery', false)) s",
      "WITH x AS (SELECT set_config('e2e.leak', 'cte', false)) SELECT * FROM x",
      "EXPLAIN ANALYZE SELECT set_config('e2e.leak', 'explain', false)",
      "SELEC set_config('e2e.leak', 'syntax', false)",  // refused by the parser, and by the server
  };
  for (const std::string& attack : attacks) ExpectBaselineAfter(attack);

  // sequence state (currval) does not survive either
  Execute(absl::StrCat("SELECT nextval('", Name("seq"), "')"));
  CallResult currval = Execute(absl::StrCat("SELECT currval('", Name("seq"), "')"));
  EXPECT_EQ(currval.sqlstate, "55000") << currval.status.error_message();

  // A caller replacing the broker's own prepared statement under its name
  // cannot make the next caller run it.
  CallResult names = Execute(
      "SELECT string_agg(name, ',') FROM pg_prepared_statements WHERE NOT from_sql AND "
      "statement = 'SELECT $1::int8'");
  ASSERT_TRUE(names.status.ok()) << names.status.error_message();
  const std::string name = names.response.rows(0).values(0).string_value();
  ASSERT_FALSE(name.empty());
  Execute(absl::StrCat("DEALLOCATE ", name));
  Execute(absl::StrCat("PREPARE ", name, "(int8) AS SELECT 666::int8"));
  CallResult again = Execute(cached, {Int(5)});
  ASSERT_TRUE(again.status.ok()) << again.status.error_message();
  EXPECT_EQ(again.response.rows(0).values(0).int64_value(), 5);
  EXPECT_EQ(Look(), baseline_);
}

TEST_F(StateIsolationE2eTest, TheBrokersPreparedStatementsSurviveTheReset) {
  StartBroker({{"DB_POOL_SIZE", "1"}, {"DB_MAX_OVERFLOW", "0"}});
  const std::string cached = "SELECT $1::int8 AS kept";
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(Execute(cached, {Int(i)}).status.ok());
  ASSERT_TRUE(Execute("SET search_path = elsewhere").status.ok());
  CallResult kept = Execute(
      "SELECT count(*) FROM pg_prepared_statements WHERE statement = 'SELECT $1::int8 AS kept'");
  ASSERT_TRUE(kept.status.ok()) << kept.status.error_message();
  EXPECT_EQ(kept.response.rows(0).values(0).int64_value(), 1);
}

}  // namespace
}  // namespace sessionbroker::testing
