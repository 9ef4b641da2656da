// Table reads on the pipelined engine (BROKER_PIPELINE_TABLE_READS): a plain
// read of a table goes through the engine once the catalog has shown it runs
// no user code; reads of an RLS-enabled table, a view, a table with a
// user-defined type, and reads in a database with a user `=` operator do
// not, and DDL that makes a read unsafe is seen after the refresh. A view or
// a row-level security policy calling set_config does not leak its setting
// to the next caller, and ALTER
// TABLE under a SELECT * the engine prepared keeps working. Without the
// engine (BROKER_PIPELINE_CONNECTIONS=0) the same proofs spare pooled
// connections the reset, on a pool of one connection so that the next caller
// gets the same backend, and the same views and policies leak nothing there.
// Counters come from /metrics; conditions are polled, never timed.
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/support/broker_fixture.h"

namespace sessionbroker::testing {
namespace {

class PipelineTableReadsE2eTest : public BrokerFixture {
 protected:
  void SetUp() override {
    BrokerFixture::SetUp();
    suffix_ = app_name_;
    absl::StrReplaceAll({{"-", "_"}}, &suffix_);
    Admin(absl::StrCat("CREATE SCHEMA ", Schema()));
  }

  void TearDown() override {
    broker_.reset();
    Admin(absl::StrCat("DROP SCHEMA IF EXISTS ", Schema(), " CASCADE"));
    Admin(absl::StrCat("DROP ROLE IF EXISTS e2e_reader_", suffix_));
    BrokerFixture::TearDown();
  }

  // One engine connection, so what it holds (prepared statements, settings)
  // can be looked at through the engine; a short refresh so DDL is seen soon.
  void StartWithEngine() {
    StartBroker({{"BROKER_PIPELINE_CONNECTIONS", "1"},
                 {"DB_POOL_SIZE", "3"},
                 {"DB_MAX_OVERFLOW", "0"},
                 {"BROKER_PIPELINE_CATALOG_REFRESH", "0.2"}});
  }

  // No engine, one pooled connection: every call and the catalog lookup
  // share one backend.
  void StartPooled() {
    StartBroker({{"BROKER_PIPELINE_CONNECTIONS", "0"},
                 {"DB_POOL_SIZE", "1"},
                 {"DB_MAX_OVERFLOW", "0"},
                 {"BROKER_PIPELINE_CATALOG_REFRESH", "0.2"}});
  }

  // The backend serving the next pooled call.
  int64_t BackendPid() {
    const CallResult r = Execute("SELECT pg_catalog.pg_backend_pid()");
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
    if (!r.status.ok() || r.response.rows_size() != 1) return -1;
    return r.response.rows(0).values(0).int64_value();
  }

  // What e2e.leak holds on the pooled backend `pid` (which must serve it).
  void ExpectNoLeakOn(int64_t pid) {
    const CallResult look =
        Execute("SELECT pg_catalog.current_setting('e2e.leak', true), pg_catalog.pg_backend_pid()");
    ASSERT_TRUE(look.status.ok()) << look.status.error_message();
    ASSERT_EQ(look.response.rows_size(), 1);
    EXPECT_EQ(look.response.rows(0).values(1).int64_value(), pid);
    const v1::Value& leaked = look.response.rows(0).values(0);
    EXPECT_TRUE(leaked.has_null_value() || leaked.string_value().empty()) << leaked.DebugString();
  }

  std::string Schema() const { return absl::StrCat("e2e_reads_", suffix_); }
  std::string Name(const std::string& what) const { return absl::StrCat(Schema(), ".", what); }

  double Metric(const std::string& name) {
    httplib::Client http(absl::StrCat("http://", broker_->metrics_address()));
    httplib::Result metrics = http.Get("/metrics");
    EXPECT_TRUE(metrics) << "no /metrics";
    if (!metrics) return -1;
    for (absl::string_view line : absl::StrSplit(metrics->body, '\n')) {
      if (absl::ConsumePrefix(&line, name + " ")) {
        double v;
        if (absl::SimpleAtod(line, &v)) return v;
      }
    }
    return -1;
  }

  // Runs `sql` (which must succeed) until the catalog's answer for it is
  // `counter` (…_proved_total or …_refused_total) moving.
  bool RunUntil(const std::string& sql, const std::string& counter) {
    const double before = Metric(counter);
    return Eventually([&] {
      const CallResult r = Execute(sql);
      EXPECT_TRUE(r.status.ok()) << sql << ": " << r.status.error_message();
      return !r.status.ok() || Metric(counter) > before;
    });
  }

  bool RunUntilPipelined(const std::string& sql) {
    return RunUntil(sql, "sessionbroker_pipeline_catalog_proved_total");
  }
  bool RunUntilRefused(const std::string& sql) {
    return RunUntil(sql, "sessionbroker_pipeline_catalog_refused_total");
  }

  std::string suffix_;
};

TEST_F(PipelineTableReadsE2eTest, PlainTableReadRunsOnTheEngineWithoutAReset) {
  Admin(absl::StrCat("CREATE TABLE ", Name("accounts"), " (aid int PRIMARY KEY, abalance int)"));
  Admin(absl::StrCat("INSERT INTO ", Name("accounts"), " VALUES (1, 10), (2, 20)"));
  StartWithEngine();
  const std::string read =
      absl::StrCat("SELECT abalance FROM ", Name("accounts"), " WHERE aid = $1");
  ASSERT_TRUE(Eventually([&] {
    const double before = Metric("sessionbroker_pipeline_catalog_proved_total");
    const CallResult r = Execute(read, {Int(2)});
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
    return Metric("sessionbroker_pipeline_catalog_proved_total") > before;
  }));
  const double resets = Metric("sessionbroker_session_resets_total");
  const double proved = Metric("sessionbroker_pipeline_catalog_proved_total");
  const double pipelined = Metric("sessionbroker_pipeline_statements_total");
  // The answer may expire meanwhile (one call then takes the reset path and
  // a lookup): count only the calls the catalog proved.
  int ran = 0;
  for (int i = 0; i < 10; ++i) {
    const CallResult r = Execute(read, {Int(1)});
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    ASSERT_EQ(r.response.rows_size(), 1);
    EXPECT_EQ(r.response.rows(0).values(0).int64_value(), 10);
    ++ran;
  }
  const double proved_now = Metric("sessionbroker_pipeline_catalog_proved_total") - proved;
  EXPECT_GE(proved_now, 1);
  EXPECT_GE(Metric("sessionbroker_pipeline_statements_total") - pipelined, proved_now);
  // The proved calls skipped the reset.
  EXPECT_LT(Metric("sessionbroker_session_resets_total") - resets, ran);
}

TEST_F(PipelineTableReadsE2eTest, ReadsThatMayRunUserCodeAreNotPipelined) {
  Admin(absl::StrCat("CREATE TABLE ", Name("secured"), " (id int)"));
  Admin(absl::StrCat("ALTER TABLE ", Name("secured"), " ENABLE ROW LEVEL SECURITY"));
  Admin(absl::StrCat("CREATE TABLE ", Name("base"), " (id int)"));
  Admin(absl::StrCat("CREATE VIEW ", Name("shown"), " AS SELECT id FROM ", Name("base")));
  Admin(absl::StrCat("CREATE TYPE ", Name("pair"), " AS (a int, b int)"));
  Admin(absl::StrCat("CREATE TABLE ", Name("typed"), " (id int, p ", Name("pair"), ")"));
  Admin(absl::StrCat("CREATE TABLE ", Name("ruled"), " (id int)"));
  Admin(absl::StrCat("CREATE RULE r AS ON INSERT TO ", Name("ruled"), " DO ALSO NOTIFY x"));
  StartWithEngine();
  for (const std::string& sql : {
           absl::StrCat("SELECT * FROM ", Name("secured")),
           absl::StrCat("SELECT * FROM ", Name("shown")),
           absl::StrCat("SELECT id FROM ", Name("typed")),
           absl::StrCat("SELECT * FROM ", Name("ruled")),
       }) {
    SCOPED_TRACE(sql);
    ASSERT_TRUE(RunUntilRefused(sql));
    const double proved = Metric("sessionbroker_pipeline_catalog_proved_total");
    const double resets = Metric("sessionbroker_session_resets_total");
    ASSERT_TRUE(Execute(sql).status.ok());
    EXPECT_EQ(Metric("sessionbroker_pipeline_catalog_proved_total"), proved);
    EXPECT_GE(Metric("sessionbroker_session_resets_total"), resets + 1);
  }
}

TEST_F(PipelineTableReadsE2eTest, UserEqualsOperatorInTheDatabaseKeepsEqualityReadsOffTheEngine) {
  Admin(absl::StrCat("CREATE TABLE ", Name("t"), " (id int)"));
  StartWithEngine();
  const std::string read = absl::StrCat("SELECT id FROM ", Name("t"), " WHERE id = 1");
  ASSERT_TRUE(RunUntilPipelined(read));
  Admin(absl::StrCat("CREATE FUNCTION ", Name("eq"),
                     "(int, text) RETURNS bool LANGUAGE sql AS $$ SELECT true $$"));
  Admin(absl::StrCat("CREATE OPERATOR ", Schema(), ".= (LEFTARG = int, RIGHTARG = text, ",
                     "FUNCTION = ", Name("eq"), ")"));
  // Seen after the refresh: the same read is refused from then on.
  ASSERT_TRUE(RunUntilRefused(read));
  // A read without `=` is not affected.
  EXPECT_TRUE(RunUntilPipelined(absl::StrCat("SELECT id FROM ", Name("t"))));
}

TEST_F(PipelineTableReadsE2eTest, EnablingRowLevelSecurityIsSeenAfterTheRefresh) {
  Admin(absl::StrCat("CREATE TABLE ", Name("t"), " (id int)"));
  StartWithEngine();
  const std::string read = absl::StrCat("SELECT * FROM ", Name("t"));
  ASSERT_TRUE(RunUntilPipelined(read));
  Admin(absl::StrCat("ALTER TABLE ", Name("t"), " ENABLE ROW LEVEL SECURITY"));
  EXPECT_TRUE(RunUntilRefused(read));
}

TEST_F(PipelineTableReadsE2eTest, ViewCallingSetConfigLeaksNothingToTheNextCaller) {
  Admin(absl::StrCat("CREATE TABLE ", Name("t"), " (id int)"));
  Admin(absl::StrCat("INSERT INTO ", Name("t"), " VALUES (1)"));
  Admin(absl::StrCat("CREATE VIEW ", Name("leaky"),
                     " AS SELECT id, set_config('e2e.leak', 'view', false) AS s FROM ", Name("t")));
  StartWithEngine();
  const std::string read = absl::StrCat("SELECT * FROM ", Name("leaky"));
  ASSERT_TRUE(RunUntilRefused(read));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Execute(read).status.ok());
  // Provable from its text: it runs on the engine's one connection.
  const double pipelined = Metric("sessionbroker_pipeline_statements_total");
  const CallResult look = Execute("SELECT pg_catalog.current_setting('e2e.leak', true)");
  ASSERT_TRUE(look.status.ok()) << look.status.error_message();
  EXPECT_GT(Metric("sessionbroker_pipeline_statements_total"), pipelined);
  ASSERT_EQ(look.response.rows_size(), 1);
  const v1::Value& leaked = look.response.rows(0).values(0);
  EXPECT_TRUE(leaked.has_null_value() || leaked.string_value().empty()) << leaked.DebugString();
}

// Row-level security binds only non-superusers: the broker logs in as a
// role of the test's own (trust authentication, as scripts/pg sets up).
TEST_F(PipelineTableReadsE2eTest, RowLevelSecurityPolicyCallingSetConfigLeaksNothing) {
  const std::string reader = absl::StrCat("e2e_reader_", suffix_);
  Admin(absl::StrCat("CREATE ROLE ", reader, " LOGIN NOSUPERUSER"));
  Admin(absl::StrCat("GRANT USAGE ON SCHEMA ", Schema(), " TO ", reader));
  Admin(absl::StrCat("CREATE TABLE ", Name("t"), " (id int)"));
  Admin(absl::StrCat("INSERT INTO ", Name("t"), " VALUES (1)"));
  Admin(absl::StrCat("GRANT SELECT ON ", Name("t"), " TO ", reader));
  Admin(absl::StrCat("ALTER TABLE ", Name("t"), " ENABLE ROW LEVEL SECURITY"));
  Admin(absl::StrCat("CREATE POLICY leak ON ", Name("t"),
                     " FOR SELECT USING (set_config('e2e.leak', 'policy', false) IS NOT NULL)"));
  broker_url_ = absl::StrCat(broker_url_, "&user=", reader);
  StartWithEngine();
  const std::string read = absl::StrCat("SELECT id FROM ", Name("t"));
  ASSERT_TRUE(RunUntilRefused(read));
  for (int i = 0; i < 5; ++i) {
    const CallResult r = Execute(read);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.response.rows_size(), 1);  // the policy ran, and let the row through
  }
  const double pipelined = Metric("sessionbroker_pipeline_statements_total");
  const CallResult look = Execute("SELECT pg_catalog.current_setting('e2e.leak', true)");
  ASSERT_TRUE(look.status.ok()) << look.status.error_message();
  EXPECT_GT(Metric("sessionbroker_pipeline_statements_total"), pipelined);
  ASSERT_EQ(look.response.rows_size(), 1);
  const v1::Value& leaked = look.response.rows(0).values(0);
  EXPECT_TRUE(leaked.has_null_value() || leaked.string_value().empty()) << leaked.DebugString();
}

TEST_F(PipelineTableReadsE2eTest, AlterTableUnderAPreparedSelectStarIsRetriedAndDeallocated) {
  Admin(absl::StrCat("CREATE TABLE ", Name("t"), " (a int)"));
  Admin(absl::StrCat("INSERT INTO ", Name("t"), " VALUES (1)"));
  StartWithEngine();
  const std::string read = absl::StrCat("SELECT * FROM ", Name("t"));
  ASSERT_TRUE(RunUntilPipelined(read));
  ASSERT_TRUE(RunUntilPipelined(read));  // prepared on the engine's connection by now
  const double retries = Metric("sessionbroker_pipeline_retries_total");
  Admin(absl::StrCat("ALTER TABLE ", Name("t"), " ADD COLUMN b int DEFAULT 7"));
  // The next pipelined run meets 0A000 "cached plan must not change result
  // type", is prepared afresh and retried; every call succeeds meanwhile.
  ASSERT_TRUE(Eventually([&] {
    const CallResult r = Execute(read);
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
    if (!r.status.ok()) return true;
    EXPECT_EQ(r.response.columns_size(), 2);
    return Metric("sessionbroker_pipeline_retries_total") > retries;
  }));
  const CallResult after = Execute(read);
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  ASSERT_EQ(after.response.rows_size(), 1);
  EXPECT_EQ(after.response.rows(0).values(1).int64_value(), 7);
  // The stale copy was deallocated: one prepared statement for this read
  // on the engine's connection.
  const CallResult prepared = Execute(absl::StrCat(
      "SELECT count(*) FROM pg_catalog.pg_prepared_statements WHERE pg_catalog.strpos(statement, '",
      Name("t"), "') OPERATOR(pg_catalog.>) 0 AND pg_catalog.strpos(statement, ",
      "'pg_prepared_statements') OPERATOR(pg_catalog.=) 0"));
  ASSERT_TRUE(prepared.status.ok()) << prepared.status.error_message();
  ASSERT_EQ(prepared.response.rows_size(), 1);
  EXPECT_EQ(prepared.response.rows(0).values(0).int64_value(), 1);
}

TEST_F(PipelineTableReadsE2eTest, SwitchedOffTableReadsAlwaysTakeTheReset) {
  Admin(absl::StrCat("CREATE TABLE ", Name("t"), " (id int)"));
  StartBroker({{"BROKER_PIPELINE_CONNECTIONS", "1"},
               {"DB_POOL_SIZE", "3"},
               {"DB_MAX_OVERFLOW", "0"},
               {"BROKER_PIPELINE_TABLE_READS", "off"}});
  const double resets = Metric("sessionbroker_session_resets_total");
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(Execute(absl::StrCat("SELECT * FROM ", Name("t"))).status.ok());
  EXPECT_GE(Metric("sessionbroker_session_resets_total"), resets + 3);
  EXPECT_EQ(Metric("sessionbroker_pipeline_catalog_lookups_total"), 0);
  EXPECT_EQ(Metric("sessionbroker_pipeline_catalog_proved_total"), 0);
}

TEST_F(PipelineTableReadsE2eTest, WithoutTheEngineAProvedTableReadSkipsTheResetOnThePool) {
  Admin(absl::StrCat("CREATE TABLE ", Name("accounts"), " (aid int PRIMARY KEY, abalance int)"));
  Admin(absl::StrCat("INSERT INTO ", Name("accounts"), " VALUES (1, 10), (2, 20)"));
  StartPooled();
  const std::string read =
      absl::StrCat("SELECT abalance FROM ", Name("accounts"), " WHERE aid = $1");
  // The lookup finds a connection in a pool of one: the read gets proved.
  ASSERT_TRUE(Eventually([&] {
    const double before = Metric("sessionbroker_pipeline_catalog_proved_total");
    EXPECT_TRUE(Execute(read, {Int(2)}).status.ok());
    return Metric("sessionbroker_pipeline_catalog_proved_total") > before;
  }));
  const double resets = Metric("sessionbroker_session_resets_total");
  const double proved = Metric("sessionbroker_pipeline_catalog_proved_total");
  const int ran = 10;
  for (int i = 0; i < ran; ++i) {
    const CallResult r = Execute(read, {Int(1)});
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    ASSERT_EQ(r.response.rows_size(), 1);
    EXPECT_EQ(r.response.rows(0).values(0).int64_value(), 10);
  }
  const double proved_now = Metric("sessionbroker_pipeline_catalog_proved_total") - proved;
  EXPECT_GE(proved_now, 1);
  // Every call the catalog proved skipped the reset; the others (an answer
  // that expired meanwhile) took it.
  EXPECT_EQ(Metric("sessionbroker_session_resets_total") - resets, ran - proved_now);
}

TEST_F(PipelineTableReadsE2eTest, WithoutTheEngineAViewCallingSetConfigLeaksNothing) {
  Admin(absl::StrCat("CREATE TABLE ", Name("t"), " (id int)"));
  Admin(absl::StrCat("INSERT INTO ", Name("t"), " VALUES (1)"));
  Admin(absl::StrCat("CREATE VIEW ", Name("leaky"),
                     " AS SELECT id, set_config('e2e.leak', 'view', false) AS s FROM ", Name("t")));
  StartPooled();
  const int64_t pid = BackendPid();
  const std::string read = absl::StrCat("SELECT * FROM ", Name("leaky"));
  ASSERT_TRUE(RunUntilRefused(read));
  const double resets = Metric("sessionbroker_session_resets_total");
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Execute(read).status.ok());
  EXPECT_EQ(Metric("sessionbroker_session_resets_total"), resets + 5);
  ExpectNoLeakOn(pid);
}

TEST_F(PipelineTableReadsE2eTest,
       WithoutTheEngineARowLevelSecurityPolicyCallingSetConfigLeaksNothing) {
  const std::string reader = absl::StrCat("e2e_reader_", suffix_);
  Admin(absl::StrCat("CREATE ROLE ", reader, " LOGIN NOSUPERUSER"));
  Admin(absl::StrCat("GRANT USAGE ON SCHEMA ", Schema(), " TO ", reader));
  Admin(absl::StrCat("CREATE TABLE ", Name("t"), " (id int)"));
  Admin(absl::StrCat("INSERT INTO ", Name("t"), " VALUES (1)"));
  Admin(absl::StrCat("GRANT SELECT ON ", Name("t"), " TO ", reader));
  Admin(absl::StrCat("ALTER TABLE ", Name("t"), " ENABLE ROW LEVEL SECURITY"));
  Admin(absl::StrCat("CREATE POLICY leak ON ", Name("t"),
                     " FOR SELECT USING (set_config('e2e.leak', 'policy', false) IS NOT NULL)"));
  broker_url_ = absl::StrCat(broker_url_, "&user=", reader);
  StartPooled();
  const int64_t pid = BackendPid();
  const std::string read = absl::StrCat("SELECT id FROM ", Name("t"));
  ASSERT_TRUE(RunUntilRefused(read));
  for (int i = 0; i < 5; ++i) {
    const CallResult r = Execute(read);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.response.rows_size(), 1);  // the policy ran, and let the row through
  }
  ExpectNoLeakOn(pid);
}

TEST_F(PipelineTableReadsE2eTest, WithoutTheEngineSwitchedOffTableReadsAlwaysTakeTheReset) {
  Admin(absl::StrCat("CREATE TABLE ", Name("t"), " (id int)"));
  StartBroker({{"BROKER_PIPELINE_CONNECTIONS", "0"},
               {"DB_POOL_SIZE", "1"},
               {"DB_MAX_OVERFLOW", "0"},
               {"BROKER_PIPELINE_TABLE_READS", "off"}});
  const double resets = Metric("sessionbroker_session_resets_total");
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(Execute(absl::StrCat("SELECT * FROM ", Name("t"))).status.ok());
  EXPECT_EQ(Metric("sessionbroker_session_resets_total"), resets + 3);
  EXPECT_EQ(Metric("sessionbroker_pipeline_catalog_lookups_total"), 0);
  EXPECT_EQ(Metric("sessionbroker_pipeline_catalog_proved_total"), 0);
}

}  // namespace
}  // namespace sessionbroker::testing
