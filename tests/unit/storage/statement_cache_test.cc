#include "server/storage/statement_cache.h"

#include <optional>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sessionbroker::storage {
namespace {

using ::testing::Optional;

// The name Use() gives, or "" for unprepared.
std::string NameOf(const StatementCache::Plan& plan) {
  return plan.name == nullptr ? std::string() : *plan.name;
}

// Runs `sql` until it holds a prepared statement (its second use); returns
// the statement's name.
std::string Prepare(StatementCache& cache, const std::string& sql) {
  cache.Use(sql);
  const StatementCache::Plan plan = cache.Use(sql);
  EXPECT_NE(plan.name, nullptr) << sql;
  EXPECT_TRUE(plan.prepare) << sql;
  return NameOf(plan);
}

TEST(StatementCacheTest, TheFirstUseRunsUnprepared) {
  StatementCache cache(10);
  const StatementCache::Plan plan = cache.Use("SELECT 1");
  EXPECT_EQ(plan.name, nullptr);
  EXPECT_FALSE(plan.prepare);
  EXPECT_EQ(cache.size(), 0u);
}

TEST(StatementCacheTest, TheSecondUsePreparesAndLaterUsesReuseIt) {
  StatementCache cache(10);
  cache.Use("SELECT 1");
  const StatementCache::Plan second = cache.Use("SELECT 1");
  ASSERT_NE(second.name, nullptr);
  EXPECT_TRUE(second.prepare);
  const std::string name = *second.name;
  for (int i = 0; i < 3; ++i) {
    const StatementCache::Plan later = cache.Use("SELECT 1");
    EXPECT_EQ(NameOf(later), name);
    EXPECT_FALSE(later.prepare);
  }
  EXPECT_EQ(cache.size(), 1u);
}

TEST(StatementCacheTest, EachTextGetsANameOfItsOwn) {
  StatementCache cache(10);
  const std::string a = Prepare(cache, "SELECT 1");
  const std::string b = Prepare(cache, "SELECT 2");
  EXPECT_NE(a, b);
  EXPECT_EQ(NameOf(cache.Use("SELECT 1")), a);
  EXPECT_EQ(NameOf(cache.Use("SELECT 2")), b);
}

TEST(StatementCacheTest, AFullCacheRunsNewTextsUnpreparedWithoutEvicting) {
  StatementCache cache(2);
  const std::string a = Prepare(cache, "SELECT 1");
  const std::string b = Prepare(cache, "SELECT 2");
  // What a connection inside a transaction sees: it cannot deallocate, so it
  // never asks EvictFor.
  for (int i = 0; i < 3; ++i) {
    const StatementCache::Plan plan = cache.Use("SELECT 3");
    EXPECT_EQ(plan.name, nullptr);
    EXPECT_FALSE(plan.prepare);
  }
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(NameOf(cache.Use("SELECT 1")), a);
  EXPECT_EQ(NameOf(cache.Use("SELECT 2")), b);
}

TEST(StatementCacheTest, EvictForRemovesTheLeastRecentlyUsedStatement) {
  StatementCache cache(2);
  const std::string a = Prepare(cache, "SELECT 1");
  const std::string b = Prepare(cache, "SELECT 2");
  cache.Use("SELECT 1");  // b is now the least recently used
  cache.Use("SELECT 3");  // seen once: due to be prepared on its next use
  EXPECT_THAT(cache.EvictFor("SELECT 3"), Optional(b));
  EXPECT_EQ(cache.size(), 1u);
  const StatementCache::Plan plan = cache.Use("SELECT 3");
  ASSERT_NE(plan.name, nullptr);
  EXPECT_TRUE(plan.prepare);
  const std::string c = *plan.name;
  EXPECT_NE(c, b);
  EXPECT_EQ(NameOf(cache.Use("SELECT 1")), a);  // "SELECT 3" is now the oldest
  // The evicted text starts over: seen once, then due to be prepared again.
  EXPECT_EQ(cache.Use("SELECT 2").name, nullptr);
  EXPECT_THAT(cache.EvictFor("SELECT 2"), Optional(c));
}

TEST(StatementCacheTest, EvictionsFollowTheOrderOfLastUse) {
  StatementCache cache(3);
  const std::string a = Prepare(cache, "SELECT 1");
  const std::string b = Prepare(cache, "SELECT 2");
  const std::string c = Prepare(cache, "SELECT 3");
  cache.Use("SELECT 2");
  cache.Use("SELECT 1");  // last uses, oldest first: c, b, a
  cache.Use("SELECT 4");
  EXPECT_THAT(cache.EvictFor("SELECT 4"), Optional(c));
  cache.Use("SELECT 4");
  cache.Use("SELECT 5");
  EXPECT_THAT(cache.EvictFor("SELECT 5"), Optional(b));
  cache.Use("SELECT 5");
  cache.Use("SELECT 6");
  EXPECT_THAT(cache.EvictFor("SELECT 6"), Optional(a));
}

TEST(StatementCacheTest, EvictForMakesNoRoomThatIsNotNeeded) {
  StatementCache cache(2);
  Prepare(cache, "SELECT 1");
  cache.Use("SELECT 2");
  // Not full.
  EXPECT_EQ(cache.EvictFor("SELECT 2"), std::nullopt);
  ASSERT_NE(cache.Use("SELECT 2").name, nullptr);
  // Full, but: already prepared; never seen (it will not be prepared on this
  // use).
  EXPECT_EQ(cache.EvictFor("SELECT 1"), std::nullopt);
  EXPECT_EQ(cache.EvictFor("SELECT 9"), std::nullopt);
  EXPECT_EQ(cache.size(), 2u);
}

TEST(StatementCacheTest, AForgottenStatementEarnsItsPlaceAgain) {
  StatementCache cache(10);
  const std::string a = Prepare(cache, "SELECT 1");
  EXPECT_THAT(cache.Forget("SELECT 1"), Optional(a));
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.Use("SELECT 1").name, nullptr);
  const StatementCache::Plan again = cache.Use("SELECT 1");
  ASSERT_NE(again.name, nullptr);
  EXPECT_TRUE(again.prepare);
  EXPECT_NE(*again.name, a);  // the old name may still exist on the server
  EXPECT_EQ(cache.Forget("SELECT 9"), std::nullopt);
}

TEST(StatementCacheTest, AfterMarkAllUnpreparedEachIsPreparedAgainUnderItsName) {
  StatementCache cache(10);
  const std::string a = Prepare(cache, "SELECT 1");
  const std::string b = Prepare(cache, "SELECT 2");
  cache.MarkAllUnprepared();
  EXPECT_EQ(cache.size(), 2u);
  const StatementCache::Plan first = cache.Use("SELECT 1");
  EXPECT_EQ(NameOf(first), a);
  EXPECT_TRUE(first.prepare);
  const StatementCache::Plan then = cache.Use("SELECT 1");
  EXPECT_EQ(NameOf(then), a);
  EXPECT_FALSE(then.prepare);
  const StatementCache::Plan other = cache.Use("SELECT 2");
  EXPECT_EQ(NameOf(other), b);
  EXPECT_TRUE(other.prepare);
}

TEST(StatementCacheTest, CapacityZeroPreparesNothing) {
  for (const int capacity : {0, -1}) {
    StatementCache cache(capacity);
    for (int i = 0; i < 3; ++i) {
      const StatementCache::Plan plan = cache.Use("SELECT 1");
      EXPECT_EQ(plan.name, nullptr);
      EXPECT_FALSE(plan.prepare);
    }
    EXPECT_EQ(cache.EvictFor("SELECT 1"), std::nullopt);
    EXPECT_EQ(cache.size(), 0u);
  }
}

TEST(StatementCacheTest, TheTallyOfTextsSeenOnceStartsOverWhenItFillsUp) {
  StatementCache cache(1);
  cache.Use("SELECT 0");
  // Four more texts, once each: the fifth overflows the tally (four times the
  // capacity), which starts over.
  for (int i = 1; i <= 4; ++i) cache.Use("SELECT " + std::to_string(i));
  // "SELECT 0" was forgotten with the rest: its next use counts as its first.
  EXPECT_EQ(cache.Use("SELECT 0").name, nullptr);
  EXPECT_NE(cache.Use("SELECT 0").name, nullptr);
}

}  // namespace
}  // namespace sessionbroker::storage
