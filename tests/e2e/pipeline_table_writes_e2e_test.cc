// Table writes on the catalog's word (BROKER_PIPELINE_TABLE_WRITES): a
// simple INSERT, UPDATE or DELETE on a table whose writes run no user code
// goes through the engine once the catalog has shown it (with rows_affected,
// alone or in an atomic ExecuteBatch with proved reads, the pgbench-like
// transaction of three statements), and without the engine skips the reset
// on its pooled connection. A write that may run user code is refused and
// leaks nothing to the next caller of the same backend (a pool of one
// connection, no engine): a trigger, a default, a generated column, a check
// constraint or an expression index calling set_config through a user
// function; a serial or identity column (currval/lastval); row-level
// security, a rule; a trigger on one partition or on an inheritance child.
// A trigger created after a proof is seen within the refresh. Counters come
// from /metrics; conditions are polled, never timed.
#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/support/broker_fixture.h"

namespace sessionbroker::testing {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr char kProved[] = "sessionbroker_pipeline_catalog_proved_total";
constexpr char kRefused[] = "sessionbroker_pipeline_catalog_refused_total";

struct BatchResult {
  grpc::Status status;
  v1::ExecuteBatchResponse response;
};

class PipelineTableWritesE2eTest : public BrokerFixture {
 protected:
  void SetUp() override {
    BrokerFixture::SetUp();
    suffix_ = app_name_;
    absl::StrReplaceAll({{"-", "_"}}, &suffix_);
    Admin(absl::StrCat("CREATE SCHEMA ", Schema()));
    // A user function that leaves a setting behind on the session, marked
    // IMMUTABLE so that generated columns and index expressions take it.
    Admin(absl::StrCat("CREATE FUNCTION ", Name("leak"),
                       "(int) RETURNS int LANGUAGE sql IMMUTABLE AS ",
                       "$$ SELECT $1 + 0 * length(set_config('e2e.leak', 'x', false)) $$"));
    Admin(absl::StrCat("CREATE FUNCTION ", Name("leak_trigger"),
                       "() RETURNS trigger LANGUAGE plpgsql AS ",
                       "$$ BEGIN PERFORM set_config('e2e.leak', 'trigger', false); RETURN NEW; "
                       "END $$"));
  }

  void TearDown() override {
    broker_.reset();
    Admin(absl::StrCat("DROP SCHEMA IF EXISTS ", Schema(), " CASCADE"));
    Admin(absl::StrCat("DROP ROLE IF EXISTS e2e_writer_", suffix_));
    BrokerFixture::TearDown();
  }

  // One engine connection; a short refresh so DDL is seen soon.
  void StartWithEngine(std::map<std::string, std::string> more = {}) {
    std::map<std::string, std::string> env = {{"BROKER_PIPELINE_CONNECTIONS", "1"},
                                              {"DB_POOL_SIZE", "3"},
                                              {"DB_MAX_OVERFLOW", "0"},
                                              {"BROKER_PIPELINE_CATALOG_REFRESH", "0.2"}};
    for (auto& [k, v] : more) env[k] = v;
    StartBroker(env);
  }

  // No engine, one pooled connection: every call and the catalog lookup
  // share one backend.
  void StartPooled(std::map<std::string, std::string> more = {}) {
    std::map<std::string, std::string> env = {{"BROKER_PIPELINE_CONNECTIONS", "0"},
                                              {"DB_POOL_SIZE", "1"},
                                              {"DB_MAX_OVERFLOW", "0"},
                                              {"BROKER_PIPELINE_CATALOG_REFRESH", "0.2"}};
    for (auto& [k, v] : more) env[k] = v;
    StartBroker(env);
  }

  int64_t BackendPid() {
    const CallResult r = Execute("SELECT pg_catalog.pg_backend_pid()");
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
    if (!r.status.ok() || r.response.rows_size() != 1) return -1;
    return r.response.rows(0).values(0).int64_value();
  }

  // The next caller on backend `pid` sees no e2e.leak setting and no
  // sequence state (lastval() fails with 55000 on a session that has not
  // called nextval, or whose sequences were discarded).
  void ExpectNoLeakOn(int64_t pid) {
    const CallResult look =
        Execute("SELECT pg_catalog.current_setting('e2e.leak', true), pg_catalog.pg_backend_pid()");
    ASSERT_TRUE(look.status.ok()) << look.status.error_message();
    ASSERT_EQ(look.response.rows_size(), 1);
    EXPECT_EQ(look.response.rows(0).values(1).int64_value(), pid);
    const v1::Value& leaked = look.response.rows(0).values(0);
    EXPECT_TRUE(leaked.has_null_value() || leaked.string_value().empty()) << leaked.DebugString();
    const CallResult last = Execute("SELECT pg_catalog.lastval(), pg_catalog.pg_backend_pid()");
    EXPECT_EQ(last.sqlstate, "55000") << "lastval() answered: " << last.status.error_message();
  }

  std::string Schema() const { return absl::StrCat("e2e_writes_", suffix_); }
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

  BatchResult Batch(const std::vector<std::pair<std::string, std::vector<v1::Value>>>& statements) {
    v1::ExecuteBatchRequest request;
    for (const auto& [sql, params] : statements) {
      v1::Statement* s = request.add_statements();
      s->set_sql(sql);
      for (const v1::Value& p : params) *s->add_params() = p;
    }
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    BatchResult out;
    out.status = stub_->ExecuteBatch(&context, request, &out.response);
    return out;
  }

  // Runs `sql` (which must succeed) until `counter` moves.
  bool RunUntil(const std::string& sql, const std::vector<v1::Value>& params,
                const std::string& counter) {
    const double before = Metric(counter);
    return Eventually([&] {
      const CallResult r = Execute(sql, params);
      EXPECT_TRUE(r.status.ok()) << sql << ": " << r.status.error_message();
      return !r.status.ok() || Metric(counter) > before;
    });
  }

  // A write the catalog must refuse: refused, run a few times (each with
  // the reset), and the next caller on the same backend sees nothing of it.
  void ExpectRefusedWithoutLeak(const std::string& write,
                                const std::vector<v1::Value>& params = {}) {
    SCOPED_TRACE(write);
    const int64_t pid = BackendPid();
    ASSERT_TRUE(RunUntil(write, params, kRefused));
    const double proved = Metric(kProved);
    const double resets = Metric("sessionbroker_session_resets_total");
    for (int i = 0; i < 3; ++i) {
      const CallResult r = Execute(write, params);
      ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    }
    EXPECT_EQ(Metric(kProved), proved);
    EXPECT_EQ(Metric("sessionbroker_session_resets_total"), resets + 3);
    ExpectNoLeakOn(pid);
  }

  void CreateAccounts() {
    Admin(absl::StrCat("CREATE TABLE ", Name("accounts"),
                       " (aid int PRIMARY KEY, bid int, abalance int, filler char(84))"));
    Admin(absl::StrCat("INSERT INTO ", Name("accounts"), " VALUES (1, 1, 10, ''), (2, 1, 20, '')"));
    Admin(
        absl::StrCat("CREATE TABLE ", Name("history"),
                     " (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22))"));
  }

  std::string Update() const {
    return absl::StrCat("UPDATE ", Name("accounts"),
                        " SET abalance = abalance + $1 WHERE aid = $2");
  }
  std::string Select() const {
    return absl::StrCat("SELECT abalance FROM ", Name("accounts"), " WHERE aid = $1");
  }
  std::string Insert() const {
    return absl::StrCat(
        "INSERT INTO ", Name("history"),
        " (tid, bid, aid, delta, mtime) VALUES ($3, $4, $2, $1, CURRENT_TIMESTAMP)");
  }

  int64_t Balance(int aid) {
    return AdminCount(
        absl::StrCat("SELECT abalance::int8 FROM ", Name("accounts"), " WHERE aid = ", aid));
  }

  std::string suffix_;
};

TEST_F(PipelineTableWritesE2eTest, ProvedWritesRunOnTheEngineAndReportRowsAffected) {
  CreateAccounts();
  StartWithEngine();
  ASSERT_TRUE(RunUntil(Update(), {Int(1), Int(1)}, kProved));
  const int64_t balance = Balance(1);
  // Proved calls (the answer may expire meanwhile: count those) are
  // pipelined and skip the reset; every call reports its row count.
  const double proved = Metric(kProved);
  const double pipelined = Metric("sessionbroker_pipeline_statements_total");
  const double resets = Metric("sessionbroker_session_resets_total");
  const int ran = 10;
  for (int i = 0; i < ran; ++i) {
    const CallResult r = Execute(Update(), {Int(5), Int(1)});
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.response.rows_affected(), 1);
    EXPECT_EQ(r.response.command_tag(), "UPDATE 1");
  }
  const double proved_now = Metric(kProved) - proved;
  EXPECT_GE(proved_now, 1);
  EXPECT_GE(Metric("sessionbroker_pipeline_statements_total") - pipelined, proved_now);
  EXPECT_EQ(Metric("sessionbroker_session_resets_total") - resets, ran - proved_now);
  EXPECT_EQ(Balance(1), balance + 5 * ran);

  // Several rows, none, an INSERT and a DELETE.
  const std::string all = absl::StrCat("UPDATE ", Name("accounts"), " SET bid = $1 WHERE bid = 1");
  ASSERT_TRUE(RunUntil(all, {Int(1)}, kProved));
  const CallResult two = Execute(all, {Int(1)});
  ASSERT_TRUE(two.status.ok()) << two.status.error_message();
  EXPECT_EQ(two.response.rows_affected(), 2);
  const CallResult none = Execute(Update(), {Int(1), Int(99)});
  ASSERT_TRUE(none.status.ok()) << none.status.error_message();
  EXPECT_EQ(none.response.rows_affected(), 0);
  ASSERT_TRUE(RunUntil(Insert(), {Int(1), Int(1), Int(1), Int(1)}, kProved));
  const std::string remove = absl::StrCat("DELETE FROM ", Name("history"), " WHERE aid = $1");
  ASSERT_TRUE(RunUntil(remove, {Int(7)}, kProved));
  const int64_t rows = AdminCount(absl::StrCat("SELECT count(*) FROM ", Name("history")));
  const CallResult removed = Execute(remove, {Int(1)});
  ASSERT_TRUE(removed.status.ok()) << removed.status.error_message();
  EXPECT_EQ(removed.response.rows_affected(), rows);
  EXPECT_EQ(removed.response.command_tag(), absl::StrCat("DELETE ", rows));
}

TEST_F(PipelineTableWritesE2eTest, PgbenchTransactionBatchRunsOnTheEngineAllOrNothing) {
  CreateAccounts();
  Admin(absl::StrCat("ALTER TABLE ", Name("history"), " ADD PRIMARY KEY (tid)"));
  StartWithEngine();
  int tid = 0;
  auto tx3 = [&](int delta, int aid, int at_tid) {
    return Batch({{Update(), {Int(delta), Int(aid)}},
                  {Select(), {Int(aid)}},
                  {Insert(), {Int(delta), Int(aid), Int(at_tid), Int(1)}}});
  };
  const double before = Metric(kProved);
  ASSERT_TRUE(Eventually([&] {
    const BatchResult r = tx3(1, 2, ++tid);
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
    return !r.status.ok() || Metric(kProved) > before;
  }));
  const int64_t balance = Balance(2);
  const double batches = Metric("sessionbroker_pipeline_batches_total");
  const BatchResult ok = tx3(3, 2, ++tid);
  ASSERT_TRUE(ok.status.ok()) << ok.status.error_message();
  ASSERT_EQ(ok.response.results_size(), 3);
  EXPECT_EQ(ok.response.results(0).rows_affected(), 1);
  ASSERT_EQ(ok.response.results(1).rows_size(), 1);
  EXPECT_EQ(ok.response.results(1).rows(0).values(0).int64_value(), balance + 3);
  EXPECT_EQ(ok.response.results(2).command_tag(), "INSERT 0 1");
  EXPECT_EQ(ok.response.results(2).rows_affected(), 1);
  // The third statement's unique violation rolls the first two back, with
  // the pooled path's status, statement index and SQLSTATE.
  const BatchResult bad = tx3(100, 2, tid);
  EXPECT_EQ(bad.status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(bad.status.error_message(), AllOf(HasSubstr("statement 3 of 3"), HasSubstr("23505")));
  EXPECT_EQ(Balance(2), balance + 3);
  // Both went through the engine (unless the answer expired in between,
  // which the proved counter then shows).
  EXPECT_GE(Metric("sessionbroker_pipeline_batches_total") - batches, 1);
}

TEST_F(PipelineTableWritesE2eTest, ForeignKeysAndBuiltinDefaultsDoNotStopTheProof) {
  Admin(absl::StrCat("CREATE TABLE ", Name("parent"), " (id int PRIMARY KEY)"));
  Admin(absl::StrCat("INSERT INTO ", Name("parent"), " VALUES (1)"));
  Admin(absl::StrCat("CREATE TABLE ", Name("child"), " (id int, p int REFERENCES ", Name("parent"),
                     ", at timestamptz DEFAULT now(), u uuid DEFAULT gen_random_uuid(),",
                     " v varchar(10) DEFAULT 'x' CHECK (v <> ''))"));
  StartWithEngine();
  ASSERT_TRUE(RunUntil(absl::StrCat("INSERT INTO ", Name("child"), " (id, p) VALUES ($1, 1)"),
                       {Int(1)}, kProved));
  // The foreign key still holds, with its SQLSTATE.
  const CallResult orphan =
      Execute(absl::StrCat("INSERT INTO ", Name("child"), " (id, p) VALUES ($1, 2)"), {Int(1)});
  EXPECT_EQ(orphan.sqlstate, "23503") << orphan.status.error_message();
}

TEST_F(PipelineTableWritesE2eTest, SwitchedOffTableWritesAlwaysTakeTheReset) {
  CreateAccounts();
  StartWithEngine({{"BROKER_PIPELINE_TABLE_WRITES", "off"}});
  const double resets = Metric("sessionbroker_session_resets_total");
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Execute(Update(), {Int(1), Int(1)}).status.ok());
  EXPECT_GE(Metric("sessionbroker_session_resets_total"), resets + 3);
  EXPECT_EQ(Metric("sessionbroker_pipeline_catalog_lookups_total"), 0);
  EXPECT_EQ(Metric(kProved), 0);
  // Reads are still proved.
  EXPECT_TRUE(RunUntil(Select(), {Int(1)}, kProved));
}

TEST_F(PipelineTableWritesE2eTest, WithoutTheEngineAProvedWriteSkipsTheResetOnThePool) {
  CreateAccounts();
  StartPooled();
  ASSERT_TRUE(RunUntil(Update(), {Int(1), Int(1)}, kProved));
  const double resets = Metric("sessionbroker_session_resets_total");
  const double proved = Metric(kProved);
  const int ran = 10;
  for (int i = 0; i < ran; ++i) {
    const CallResult r = Execute(Update(), {Int(1), Int(1)});
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.response.rows_affected(), 1);
  }
  const double proved_now = Metric(kProved) - proved;
  EXPECT_GE(proved_now, 1);
  EXPECT_EQ(Metric("sessionbroker_session_resets_total") - resets, ran - proved_now);
}

// ---- refusals: each leaves nothing behind for the next caller ----

TEST_F(PipelineTableWritesE2eTest, UserTriggerCallingSetConfigIsRefusedAndLeaksNothing) {
  Admin(absl::StrCat("CREATE TABLE ", Name("t"), " (id int)"));
  Admin(absl::StrCat("CREATE TRIGGER t BEFORE INSERT ON ", Name("t"),
                     " FOR EACH ROW EXECUTE FUNCTION ", Name("leak_trigger"), "()"));
  StartPooled();
  ExpectRefusedWithoutLeak(absl::StrCat("INSERT INTO ", Name("t"), " VALUES ($1)"), {Int(1)});
}

TEST_F(PipelineTableWritesE2eTest, DefaultCallingAUserFunctionIsRefusedAndLeaksNothing) {
  Admin(absl::StrCat("CREATE TABLE ", Name("t"), " (id int, v int DEFAULT ", Name("leak"), "(1))"));
  StartPooled();
  ExpectRefusedWithoutLeak(absl::StrCat("INSERT INTO ", Name("t"), " (id) VALUES ($1)"), {Int(1)});
}

TEST_F(PipelineTableWritesE2eTest, DefaultCallingAStatefulBuiltinIsRefusedAndLeaksNothing) {
  // No dependency on a built-in is recorded: the default's own calls are read.
  Admin(absl::StrCat("CREATE TABLE ", Name("t"),
                     " (id int, v text DEFAULT set_config('e2e.leak', 'default', false))"));
  StartPooled();
  ExpectRefusedWithoutLeak(absl::StrCat("INSERT INTO ", Name("t"), " (id) VALUES ($1)"), {Int(1)});
}

TEST_F(PipelineTableWritesE2eTest, SerialColumnIsRefusedAndLeavesNoSequenceState) {
  Admin(absl::StrCat("CREATE TABLE ", Name("t"), " (id serial, v int)"));
  StartPooled();
  ExpectRefusedWithoutLeak(absl::StrCat("INSERT INTO ", Name("t"), " (v) VALUES ($1)"), {Int(1)});
}

TEST_F(PipelineTableWritesE2eTest, IdentityColumnIsRefusedAndLeavesNoSequenceState) {
  Admin(absl::StrCat("CREATE TABLE ", Name("t"), " (id int GENERATED ALWAYS AS IDENTITY, v int)"));
  StartPooled();
  ExpectRefusedWithoutLeak(absl::StrCat("INSERT INTO ", Name("t"), " (v) VALUES ($1)"), {Int(1)});
}

TEST_F(PipelineTableWritesE2eTest, GeneratedColumnWithAUserFunctionIsRefusedAndLeaksNothing) {
  Admin(absl::StrCat("CREATE TABLE ", Name("t"), " (id int, g int GENERATED ALWAYS AS (",
                     Name("leak"), "(id)) STORED)"));
  StartPooled();
  ExpectRefusedWithoutLeak(absl::StrCat("INSERT INTO ", Name("t"), " (id) VALUES ($1)"), {Int(1)});
}

TEST_F(PipelineTableWritesE2eTest, CheckConstraintWithAUserFunctionIsRefusedAndLeaksNothing) {
  Admin(absl::StrCat("CREATE TABLE ", Name("t"), " (id int CHECK (", Name("leak"), "(id) > 0))"));
  StartPooled();
  ExpectRefusedWithoutLeak(absl::StrCat("INSERT INTO ", Name("t"), " VALUES ($1)"), {Int(1)});
}

TEST_F(PipelineTableWritesE2eTest, ExpressionIndexWithAUserFunctionIsRefusedAndLeaksNothing) {
  Admin(absl::StrCat("CREATE TABLE ", Name("t"), " (id int)"));
  Admin(absl::StrCat("CREATE INDEX ON ", Name("t"), " (", Name("leak"), "(id))"));
  StartPooled();
  ExpectRefusedWithoutLeak(absl::StrCat("INSERT INTO ", Name("t"), " VALUES ($1)"), {Int(1)});
}

TEST_F(PipelineTableWritesE2eTest, PartialIndexWithAUserFunctionIsRefusedAndLeaksNothing) {
  Admin(absl::StrCat("CREATE TABLE ", Name("t"), " (id int)"));
  Admin(absl::StrCat("CREATE INDEX ON ", Name("t"), " (id) WHERE ", Name("leak"), "(id) > 0"));
  StartPooled();
  ExpectRefusedWithoutLeak(absl::StrCat("INSERT INTO ", Name("t"), " VALUES ($1)"), {Int(1)});
}

TEST_F(PipelineTableWritesE2eTest, RuleIsRefusedAndLeaksNothing) {
  Admin(absl::StrCat("CREATE TABLE ", Name("t"), " (id int)"));
  Admin(absl::StrCat("CREATE RULE r AS ON INSERT TO ", Name("t"),
                     " DO ALSO SELECT set_config('e2e.leak', 'rule', false)"));
  StartPooled();
  ExpectRefusedWithoutLeak(absl::StrCat("INSERT INTO ", Name("t"), " VALUES ($1)"), {Int(1)});
}

// Row-level security binds only non-superusers: the broker logs in as a
// role of the test's own.
TEST_F(PipelineTableWritesE2eTest, RowLevelSecurityIsRefusedAndLeaksNothing) {
  const std::string writer = absl::StrCat("e2e_writer_", suffix_);
  Admin(absl::StrCat("CREATE ROLE ", writer, " LOGIN NOSUPERUSER"));
  Admin(absl::StrCat("GRANT USAGE ON SCHEMA ", Schema(), " TO ", writer));
  Admin(absl::StrCat("CREATE TABLE ", Name("t"), " (id int)"));
  Admin(absl::StrCat("GRANT SELECT, INSERT ON ", Name("t"), " TO ", writer));
  Admin(absl::StrCat("ALTER TABLE ", Name("t"), " ENABLE ROW LEVEL SECURITY"));
  Admin(
      absl::StrCat("CREATE POLICY leak ON ", Name("t"),
                   " FOR INSERT WITH CHECK (set_config('e2e.leak', 'policy', false) IS NOT NULL)"));
  broker_url_ = absl::StrCat(broker_url_, "&user=", writer);
  StartPooled();
  ExpectRefusedWithoutLeak(absl::StrCat("INSERT INTO ", Name("t"), " VALUES ($1)"), {Int(1)});
}

TEST_F(PipelineTableWritesE2eTest, TriggerOnOnePartitionIsRefusedAndLeaksNothing) {
  Admin(absl::StrCat("CREATE TABLE ", Name("p"), " (id int) PARTITION BY RANGE (id)"));
  Admin(absl::StrCat("CREATE TABLE ", Name("p1"), " PARTITION OF ", Name("p"),
                     " FOR VALUES FROM (0) TO (100)"));
  Admin(absl::StrCat("CREATE TABLE ", Name("p2"), " PARTITION OF ", Name("p"),
                     " FOR VALUES FROM (100) TO (200)"));
  Admin(absl::StrCat("CREATE TRIGGER t BEFORE INSERT ON ", Name("p2"),
                     " FOR EACH ROW EXECUTE FUNCTION ", Name("leak_trigger"), "()"));
  StartPooled();
  ExpectRefusedWithoutLeak(absl::StrCat("INSERT INTO ", Name("p"), " VALUES ($1)"), {Int(150)});
}

TEST_F(PipelineTableWritesE2eTest, TriggerOnAnInheritanceChildIsRefusedAndLeaksNothing) {
  Admin(absl::StrCat("CREATE TABLE ", Name("parent"), " (id int)"));
  Admin(absl::StrCat("CREATE TABLE ", Name("kid"), " () INHERITS (", Name("parent"), ")"));
  Admin(absl::StrCat("INSERT INTO ", Name("kid"), " VALUES (1)"));
  Admin(absl::StrCat("CREATE TRIGGER t BEFORE UPDATE ON ", Name("kid"),
                     " FOR EACH ROW EXECUTE FUNCTION ", Name("leak_trigger"), "()"));
  StartPooled();
  // Updating the parent updates the child's row: its trigger runs.
  ExpectRefusedWithoutLeak(absl::StrCat("UPDATE ", Name("parent"), " SET id = $1"), {Int(1)});
}

TEST_F(PipelineTableWritesE2eTest, WithTheEngineARefusedWriteLeaksNothingOntoItsConnection) {
  Admin(absl::StrCat("CREATE TABLE ", Name("t"), " (id int)"));
  Admin(absl::StrCat("CREATE TRIGGER t BEFORE INSERT ON ", Name("t"),
                     " FOR EACH ROW EXECUTE FUNCTION ", Name("leak_trigger"), "()"));
  Admin(absl::StrCat("CREATE TABLE ", Name("s"), " (id serial)"));
  StartWithEngine();
  const std::string trigger = absl::StrCat("INSERT INTO ", Name("t"), " VALUES ($1)");
  const std::string serial = absl::StrCat("INSERT INTO ", Name("s"), " DEFAULT VALUES");
  ASSERT_TRUE(RunUntil(trigger, {Int(1)}, kRefused));
  ASSERT_TRUE(RunUntil(serial, {}, kRefused));
  // The same batch, too.
  const BatchResult batch = Batch({{trigger, {Int(2)}}, {serial, {}}});
  ASSERT_TRUE(batch.status.ok()) << batch.status.error_message();
  // Provable from its text: it runs on the engine's one connection.
  const double pipelined = Metric("sessionbroker_pipeline_statements_total");
  const CallResult look = Execute("SELECT pg_catalog.current_setting('e2e.leak', true)");
  ASSERT_TRUE(look.status.ok()) << look.status.error_message();
  EXPECT_GT(Metric("sessionbroker_pipeline_statements_total"), pipelined);
  ASSERT_EQ(look.response.rows_size(), 1);
  const v1::Value& leaked = look.response.rows(0).values(0);
  EXPECT_TRUE(leaked.has_null_value() || leaked.string_value().empty()) << leaked.DebugString();
}

TEST_F(PipelineTableWritesE2eTest, OtherWritesThatMayRunUserCodeAreRefused) {
  Admin(absl::StrCat("CREATE TABLE ", Name("parent"), " (id int PRIMARY KEY)"));
  Admin(absl::StrCat("CREATE TABLE ", Name("cascading"), " (p int REFERENCES ", Name("parent"),
                     " ON DELETE CASCADE)"));
  Admin(absl::StrCat("CREATE DOMAIN ", Name("d"), " AS int DEFAULT ", Name("leak"), "(1)"));
  Admin(absl::StrCat("CREATE TABLE ", Name("domained"), " (id int, v ", Name("d"), ")"));
  Admin(absl::StrCat("CREATE TABLE ", Name("base"), " (id int)"));
  Admin(absl::StrCat("CREATE VIEW ", Name("shown"), " AS SELECT id FROM ", Name("base")));
  StartWithEngine();
  for (const std::string& sql : {
           // a cascade writes another table (whose triggers are not checked)
           absl::StrCat("DELETE FROM ", Name("parent"), " WHERE id = 1"),
           // a domain's default runs on insert
           absl::StrCat("INSERT INTO ", Name("domained"), " (id) VALUES (1)"),
           // a view is no table
           absl::StrCat("INSERT INTO ", Name("shown"), " VALUES (1)"),
       }) {
    SCOPED_TRACE(sql);
    const double before = Metric(kRefused);
    ASSERT_TRUE(Eventually([&] {
      EXPECT_TRUE(Execute(sql).status.ok());
      return Metric(kRefused) > before;
    }));
  }
}

TEST_F(PipelineTableWritesE2eTest, TriggerCreatedAfterAProofIsSeenWithinTheRefresh) {
  Admin(absl::StrCat("CREATE TABLE ", Name("t"), " (id int)"));
  StartPooled();
  const std::string write = absl::StrCat("INSERT INTO ", Name("t"), " VALUES ($1)");
  const int64_t pid = BackendPid();
  ASSERT_TRUE(RunUntil(write, {Int(1)}, kProved));
  Admin(absl::StrCat("CREATE TRIGGER t BEFORE INSERT ON ", Name("t"),
                     " FOR EACH ROW EXECUTE FUNCTION ", Name("leak_trigger"), "()"));
  ASSERT_TRUE(RunUntil(write, {Int(1)}, kRefused));
  // Refused from then on: each run takes the reset, which also clears what
  // a run on the expiring answer left.
  ASSERT_TRUE(Execute(write, {Int(1)}).status.ok());
  ExpectNoLeakOn(pid);
}

}  // namespace
}  // namespace sessionbroker::testing
