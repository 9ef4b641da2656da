// CatalogGuard with fake catalog answers and a fake clock: what it answers
// before, during and after a lookup, how long an answer is trusted, and that
// failures and a full cache keep it conservative. Its lookup on a pooled
// connection (ThroughPool) against a fake database: where it runs, how many
// places in the pool's queue it takes, and how it fails.
#include "server/core/exec/catalog_guard.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "server/core/base/timer_queue.h"
#include "server/core/pool/connection_pool.h"
#include "tests/support/fake_db.h"

namespace sessionbroker::core {
namespace {

using ::sessionbroker::testing::FakeConnector;
using ::sessionbroker::testing::ManualExecutor;
using Verdict = CatalogGuard::Verdict;

CatalogDependencies Reads(std::string relation) {
  CatalogDependencies d;
  d.relations = {std::move(relation)};
  d.operators = {"="};
  return d;
}

// Lookups wait here until the test answers them.
struct FakeCatalog {
  struct Pending {
    CatalogDependencies needs;
    CatalogGuard::LookupDone done;
  };
  std::vector<Pending> pending;

  CatalogGuard::Lookup AsLookup() {
    return [this](const CatalogDependencies& needs, CatalogGuard::LookupDone done) {
      pending.push_back({needs, std::move(done)});
    };
  }
  void AnswerAll(absl::StatusOr<bool> answer) {
    std::vector<Pending> now = std::move(pending);
    pending.clear();
    for (Pending& p : now) std::move(p.done)(answer);
  }
};

class CatalogGuardTest : public ::testing::Test {
 protected:
  CatalogGuard::Options Options() {
    CatalogGuard::Options o;
    o.refresh = absl::Seconds(1);
    return o;
  }
  FakeClock clock_;
  FakeCatalog catalog_;
};

TEST_F(CatalogGuardTest, FirstCheckIsUnknownAndStartsOneLookup) {
  CatalogGuard guard(Options(), clock_, catalog_.AsLookup());
  EXPECT_EQ(guard.Check(Reads("\"t\"")), Verdict::kUnknown);
  EXPECT_EQ(guard.Check(Reads("\"t\"")), Verdict::kUnknown);
  ASSERT_EQ(catalog_.pending.size(), 1u);
  EXPECT_EQ(catalog_.pending[0].needs, Reads("\"t\""));
  EXPECT_EQ(guard.stats().lookups, 1u);
  EXPECT_EQ(guard.stats().unknown, 2u);
}

TEST_F(CatalogGuardTest, AnswerIsUsedUntilTheRefreshIntervalPasses) {
  CatalogGuard guard(Options(), clock_, catalog_.AsLookup());
  guard.Check(Reads("\"t\""));
  catalog_.AnswerAll(true);
  EXPECT_EQ(guard.Check(Reads("\"t\"")), Verdict::kStateless);
  clock_.Advance(absl::Milliseconds(999));
  EXPECT_EQ(guard.Check(Reads("\"t\"")), Verdict::kStateless);
  EXPECT_TRUE(catalog_.pending.empty());
  clock_.Advance(absl::Milliseconds(1));
  // Expired: not trusted any more, and asked again.
  EXPECT_EQ(guard.Check(Reads("\"t\"")), Verdict::kUnknown);
  EXPECT_EQ(catalog_.pending.size(), 1u);
  EXPECT_EQ(guard.stats().proved, 2u);
}

TEST_F(CatalogGuardTest, RefreshSeesACatalogChange) {
  CatalogGuard guard(Options(), clock_, catalog_.AsLookup());
  guard.Check(Reads("\"t\""));
  catalog_.AnswerAll(true);
  ASSERT_EQ(guard.Check(Reads("\"t\"")), Verdict::kStateless);
  // ENABLE ROW LEVEL SECURITY happens; the next refresh says so.
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(guard.Check(Reads("\"t\"")), Verdict::kUnknown);
  catalog_.AnswerAll(false);
  EXPECT_EQ(guard.Check(Reads("\"t\"")), Verdict::kStateful);
  EXPECT_EQ(guard.stats().refused, 1u);
}

TEST_F(CatalogGuardTest, AnAnswerAgesFromWhenItsLookupStarted) {
  CatalogGuard guard(Options(), clock_, catalog_.AsLookup());
  guard.Check(Reads("\"t\""));
  clock_.Advance(absl::Milliseconds(800));  // a slow lookup
  catalog_.AnswerAll(true);
  EXPECT_EQ(guard.Check(Reads("\"t\"")), Verdict::kStateless);
  clock_.Advance(absl::Milliseconds(200));
  EXPECT_EQ(guard.Check(Reads("\"t\"")), Verdict::kUnknown);
}

TEST_F(CatalogGuardTest, FailedLookupLeavesItUnknownAndTheNextCheckAsksAgain) {
  CatalogGuard guard(Options(), clock_, catalog_.AsLookup());
  guard.Check(Reads("\"t\""));
  catalog_.AnswerAll(absl::UnavailableError("engine down"));
  EXPECT_EQ(guard.Check(Reads("\"t\"")), Verdict::kUnknown);
  EXPECT_EQ(catalog_.pending.size(), 1u);
  EXPECT_EQ(guard.stats().lookup_failures, 1u);
  EXPECT_EQ(guard.stats().proved, 0u);
}

TEST_F(CatalogGuardTest, DifferentDependencySetsHaveTheirOwnAnswers) {
  CatalogGuard guard(Options(), clock_, catalog_.AsLookup());
  guard.Check(Reads("\"plain\""));
  guard.Check(Reads("\"secured\""));
  ASSERT_EQ(catalog_.pending.size(), 2u);
  std::move(catalog_.pending[0].done)(true);
  std::move(catalog_.pending[1].done)(false);
  catalog_.pending.clear();
  EXPECT_EQ(guard.Check(Reads("\"plain\"")), Verdict::kStateless);
  EXPECT_EQ(guard.Check(Reads("\"secured\"")), Verdict::kStateful);
  // Same relation, another operator: another question.
  CatalogDependencies other = Reads("\"plain\"");
  other.operators = {"~~"};
  EXPECT_EQ(guard.Check(other), Verdict::kUnknown);
}

TEST_F(CatalogGuardTest, NamesAreNotConfusedAcrossLists) {
  CatalogGuard guard(Options(), clock_, catalog_.AsLookup());
  CatalogDependencies a;
  a.functions = {"lower"};
  CatalogDependencies b;
  b.types = {"lower"};
  guard.Check(a);
  catalog_.AnswerAll(true);
  EXPECT_EQ(guard.Check(b), Verdict::kUnknown);
}

TEST_F(CatalogGuardTest, AReadsAnswerIsNotAWritesAnswer) {
  // Writing a table runs more of its code (triggers, defaults) than reading
  // it: the proof of a read does not carry over to a write of the same names.
  CatalogGuard guard(Options(), clock_, catalog_.AsLookup());
  guard.Check(Reads("\"t\""));
  catalog_.AnswerAll(true);
  CatalogDependencies write = Reads("\"t\"");
  write.written = {"\"t\""};
  EXPECT_EQ(guard.Check(write), Verdict::kUnknown);
  ASSERT_EQ(catalog_.pending.size(), 1u);
  EXPECT_EQ(catalog_.pending[0].needs.written, std::vector<std::string>{"\"t\""});
  catalog_.AnswerAll(false);
  EXPECT_EQ(guard.Check(write), Verdict::kStateful);
  EXPECT_EQ(guard.Check(Reads("\"t\"")), Verdict::kStateless);
}

TEST_F(CatalogGuardTest, FullCacheStartsOverAndStaysConservative) {
  CatalogGuard::Options o = Options();
  o.max_entries = 2;
  CatalogGuard guard(o, clock_, catalog_.AsLookup());
  guard.Check(Reads("\"a\""));
  guard.Check(Reads("\"b\""));
  catalog_.AnswerAll(true);
  ASSERT_EQ(guard.Check(Reads("\"a\"")), Verdict::kStateless);
  guard.Check(Reads("\"c\""));  // full: the cache starts over
  EXPECT_EQ(guard.Check(Reads("\"a\"")), Verdict::kUnknown);
}

TEST_F(CatalogGuardTest, LookupAnsweringAfterTheGuardIsGoneIsHarmless) {
  std::optional<CatalogGuard> guard;
  guard.emplace(Options(), clock_, catalog_.AsLookup());
  guard->Check(Reads("\"t\""));
  guard.reset();
  catalog_.AnswerAll(true);
  EXPECT_TRUE(catalog_.pending.empty());
}

TEST_F(CatalogGuardTest, LookupAnsweringInlineIsUsedAtTheNextCheck) {
  CatalogGuard guard(
      Options(), clock_,
      [](const CatalogDependencies&, CatalogGuard::LookupDone done) { std::move(done)(true); });
  EXPECT_EQ(guard.Check(Reads("\"t\"")), Verdict::kUnknown);
  EXPECT_EQ(guard.Check(Reads("\"t\"")), Verdict::kStateless);
}

// The catalog's one boolean.
storage::QueryResult Answer(bool stateless) {
  storage::QueryResult result;
  result.columns.push_back(storage::Column{"?column?", 16, "bool"});
  result.rows.push_back({storage::Value::Bool(stateless)});
  return result;
}

constexpr char kLookupSql[] = "pg_catalog.to_regclass";

// A pool of one connection over a fake database, on a manual executor.
class PoolLookupTest : public ::testing::Test {
 protected:
  PoolLookupTest() {
    PoolOptions options;
    options.pool_size = 1;
    options.max_overflow = 0;
    options.pre_ping = false;
    pool_ = std::make_unique<ConnectionPool>(options, connector_, executor_, timers_, clock_);
  }
  ~PoolLookupTest() override {
    pool_->Close();
    executor_.RunAll();
  }

  // Takes the pool's one connection and keeps it until the test lets go.
  PooledConnection Hold() {
    std::optional<PooledConnection> held;
    pool_->Acquire(AcquireRequest{}, [&held](absl::StatusOr<PooledConnection> c) {
      if (c.ok()) held = *std::move(c);
    });
    executor_.RunAll();
    EXPECT_TRUE(held.has_value());
    return held.has_value() ? *std::move(held) : PooledConnection();
  }

  CatalogGuard::Options Options() {
    CatalogGuard::Options o;
    o.refresh = absl::Seconds(10);
    return o;
  }

  FakeClock clock_;
  TimerQueue timers_{clock_};
  ManualExecutor executor_;
  FakeConnector connector_;
  std::unique_ptr<ConnectionPool> pool_;
};

TEST_F(PoolLookupTest, AnswerComesFromAPooledConnectionThatGoesBackUnreset) {
  connector_.AnswerSqlContaining(kLookupSql, Answer(true));
  CatalogGuard guard(Options(), clock_, CatalogGuard::ThroughPool(*pool_, clock_));
  EXPECT_EQ(guard.Check(Reads("\"t\"")), Verdict::kUnknown);
  executor_.RunAll();
  EXPECT_EQ(guard.Check(Reads("\"t\"")), Verdict::kStateless);
  EXPECT_EQ(connector_.answered(), 1);
  const PoolStats pool = pool_->Stats();
  EXPECT_EQ(pool.in_use, 0);
  EXPECT_EQ(pool.idle, 1);
  EXPECT_EQ(connector_.connection(1)->resets(), 0);
}

TEST_F(PoolLookupTest, RunsAsTheLoginRoleWhateverTheLastCallerLeftSet) {
  connector_.AnswerSqlContaining(kLookupSql, Answer(true));
  {
    PooledConnection conn = Hold();
    ASSERT_TRUE(conn->UseRole("reader").ok());
  }
  CatalogGuard guard(Options(), clock_, CatalogGuard::ThroughPool(*pool_, clock_));
  guard.Check(Reads("\"t\""));
  executor_.RunAll();
  EXPECT_EQ(guard.Check(Reads("\"t\"")), Verdict::kStateless);
  const std::vector<std::string> log = connector_.connection(1)->log();
  ASSERT_FALSE(log.empty());
  EXPECT_EQ(log.back(), "RESET ROLE");
}

TEST_F(PoolLookupTest, LookupsStartedWhileOneWaitsShareItsPlaceInTheQueue) {
  connector_.AnswerSqlContaining(kLookupSql, Answer(true));
  CatalogGuard guard(Options(), clock_, CatalogGuard::ThroughPool(*pool_, clock_));
  PooledConnection held = Hold();
  guard.Check(Reads("\"a\""));
  guard.Check(Reads("\"b\""));
  guard.Check(Reads("\"c\""));
  executor_.RunAll();
  EXPECT_EQ(pool_->Stats().waiters, 1);
  EXPECT_EQ(connector_.answered(), 0);
  held.Release();
  executor_.RunAll();
  EXPECT_EQ(connector_.answered(), 3);
  EXPECT_EQ(guard.Check(Reads("\"a\"")), Verdict::kStateless);
  EXPECT_EQ(guard.Check(Reads("\"b\"")), Verdict::kStateless);
  EXPECT_EQ(guard.Check(Reads("\"c\"")), Verdict::kStateless);
  EXPECT_EQ(pool_->Stats().waiters, 0);
}

TEST_F(PoolLookupTest, WaitForAConnectionIsBoundedAndThenFailsTheLookup) {
  connector_.AnswerSqlContaining(kLookupSql, Answer(true));
  CatalogGuard guard(Options(), clock_,
                     CatalogGuard::ThroughPool(*pool_, clock_, absl::Seconds(2)));
  PooledConnection held = Hold();
  guard.Check(Reads("\"t\""));
  clock_.Advance(absl::Seconds(2));
  timers_.RunDue();
  executor_.RunAll();
  EXPECT_EQ(guard.stats().lookup_failures, 1u);
  EXPECT_EQ(pool_->Stats().waiters, 0);
  held.Release();
  executor_.RunAll();
  EXPECT_EQ(connector_.answered(), 0);
  // Still unknown: the next check asks again.
  EXPECT_EQ(guard.Check(Reads("\"t\"")), Verdict::kUnknown);
  EXPECT_EQ(guard.stats().lookups, 2u);
}

TEST_F(PoolLookupTest, NoConnectionToBeHadFailsTheLookup) {
  connector_.set_fail_connects(true);
  CatalogGuard guard(Options(), clock_, CatalogGuard::ThroughPool(*pool_, clock_));
  guard.Check(Reads("\"t\""));
  executor_.RunAll();
  timers_.RunDue();
  executor_.RunAll();
  EXPECT_EQ(guard.stats().lookup_failures, 1u);
  EXPECT_EQ(guard.Check(Reads("\"t\"")), Verdict::kUnknown);
}

TEST_F(PoolLookupTest, QueryThatDoesNotAnswerOneBooleanFailsTheLookup) {
  connector_.AnswerSqlContaining(kLookupSql, storage::QueryResult{});
  CatalogGuard guard(Options(), clock_, CatalogGuard::ThroughPool(*pool_, clock_));
  guard.Check(Reads("\"t\""));
  executor_.RunAll();
  EXPECT_EQ(guard.stats().lookup_failures, 1u);
  EXPECT_EQ(pool_->Stats().in_use, 0);
  EXPECT_EQ(guard.Check(Reads("\"t\"")), Verdict::kUnknown);
}

}  // namespace
}  // namespace sessionbroker::core
