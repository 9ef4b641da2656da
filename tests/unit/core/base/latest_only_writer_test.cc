// Specification of LatestOnlyWriter: one write in flight, one value waiting
// (the newest, or what the merge rule makes of the values offered meanwhile),
// finish exactly once and never under a write.
#include "server/core/base/latest_only_writer.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sessionbroker::core {
namespace {

using ::testing::ElementsAre;

class LatestOnlyWriterTest : public ::testing::Test {
 protected:
  std::shared_ptr<const int> V(int v) { return std::make_shared<const int>(v); }

  std::vector<int> written_;
  int finishes_ = 0;
  LatestOnlyWriter<int> writer_{[this](const int& v) { written_.push_back(v); },
                                [this] { ++finishes_; }};
};

TEST_F(LatestOnlyWriterTest, WritesAtOnceWhenNothingIsInFlight) {
  writer_.Offer(V(1));
  EXPECT_THAT(written_, ElementsAre(1));
  EXPECT_TRUE(writer_.write_in_flight());
  EXPECT_FALSE(writer_.has_pending());
}

TEST_F(LatestOnlyWriterTest, WhileAWriteIsInFlightOnlyTheNewestValueWaits) {
  writer_.Offer(V(1));
  for (int v = 2; v <= 100; ++v) writer_.Offer(V(v));
  EXPECT_THAT(written_, ElementsAre(1)) << "one write in flight";
  EXPECT_TRUE(writer_.has_pending());
  EXPECT_EQ(writer_.superseded(), 98);

  writer_.OnWriteDone(true);
  EXPECT_THAT(written_, ElementsAre(1, 100)) << "the newest, not the next";
  EXPECT_FALSE(writer_.has_pending());
  writer_.OnWriteDone(true);
  EXPECT_FALSE(writer_.write_in_flight());
  EXPECT_EQ(writer_.written(), 2);
}

TEST_F(LatestOnlyWriterTest, AValueStaysAliveUntilItsWriteCompletes) {
  std::weak_ptr<const int> first;
  {
    auto v = V(1);
    first = v;
    writer_.Offer(std::move(v));
  }
  writer_.Offer(V(2));
  writer_.Offer(V(3));
  EXPECT_FALSE(first.expired()) << "being written";
  writer_.OnWriteDone(true);
  EXPECT_TRUE(first.expired());
}

TEST_F(LatestOnlyWriterTest, FinishWhenIdleFinishesAtOnce) {
  writer_.Offer(V(1));
  writer_.OnWriteDone(true);
  writer_.Finish();
  EXPECT_EQ(finishes_, 1);
  writer_.Finish();
  EXPECT_EQ(finishes_, 1) << "exactly once";
}

TEST_F(LatestOnlyWriterTest, FinishWaitsForTheWriteInFlightAndDropsTheWaitingValue) {
  writer_.Offer(V(1));
  writer_.Offer(V(2));
  writer_.Finish();
  EXPECT_EQ(finishes_, 0) << "never while a write is in flight";
  writer_.OnWriteDone(true);
  EXPECT_EQ(finishes_, 1);
  EXPECT_THAT(written_, ElementsAre(1));
}

TEST_F(LatestOnlyWriterTest, AFailedWriteFinishesTheStream) {
  writer_.Offer(V(1));
  writer_.Offer(V(2));
  writer_.OnWriteDone(false);
  EXPECT_EQ(finishes_, 1);
  writer_.Offer(V(3));
  EXPECT_THAT(written_, ElementsAre(1)) << "nothing after the stream broke";
}

TEST_F(LatestOnlyWriterTest, OffersAfterFinishAreIgnored) {
  writer_.Finish();
  writer_.Offer(V(1));
  EXPECT_TRUE(written_.empty());
  EXPECT_EQ(finishes_, 1);
}

// A merge rule of the kind KeepAlive uses: a value is a list of (key, state);
// the merged value keeps the newest state of every key either one names, in
// the order the keys first appeared.
using KeyedStates = std::vector<std::pair<std::string, int>>;
struct KeepEachKeysNewest {
  void operator()(std::shared_ptr<const KeyedStates>& waiting,
                  std::shared_ptr<const KeyedStates> newer) const {
    auto merged = std::make_shared<KeyedStates>(*waiting);
    for (const auto& [key, state] : *newer) {
      bool found = false;
      for (auto& entry : *merged) {
        if (entry.first == key) {
          entry.second = state;
          found = true;
        }
      }
      if (!found) merged->emplace_back(key, state);
    }
    waiting = std::move(merged);
  }
};

class MergingWriterTest : public ::testing::Test {
 protected:
  static std::shared_ptr<const KeyedStates> V(KeyedStates v) {
    return std::make_shared<const KeyedStates>(std::move(v));
  }

  std::vector<KeyedStates> written_;
  int finishes_ = 0;
  LatestOnlyWriter<KeyedStates, KeepEachKeysNewest> writer_{
      [this](const KeyedStates& v) { written_.push_back(v); }, [this] { ++finishes_; }};
};

TEST_F(MergingWriterTest, AValueOfferedWhenIdleIsWrittenAsItIs) {
  writer_.Offer(V({{"a", 1}, {"b", 1}}));
  EXPECT_THAT(written_, ElementsAre(KeyedStates{{"a", 1}, {"b", 1}}));
  EXPECT_EQ(writer_.superseded(), 0);
}

TEST_F(MergingWriterTest, ValuesOfferedDuringAWriteAreMergedByTheRuleIntoOneWaitingValue) {
  writer_.Offer(V({{"a", 1}}));
  writer_.Offer(V({{"b", 1}}));
  EXPECT_EQ(writer_.superseded(), 0) << "the first value to wait is kept as it is";
  writer_.Offer(V({{"a", 2}, {"c", 1}}));
  writer_.Offer(V({{"b", 2}}));
  EXPECT_EQ(writer_.superseded(), 2);
  EXPECT_THAT(written_, ElementsAre(KeyedStates{{"a", 1}})) << "one write in flight";

  writer_.OnWriteDone(true);
  EXPECT_THAT(written_,
              ElementsAre(KeyedStates{{"a", 1}}, KeyedStates{{"b", 2}, {"a", 2}, {"c", 1}}))
      << "every key once, with its newest state";
  EXPECT_FALSE(writer_.has_pending());
  writer_.OnWriteDone(true);
  EXPECT_FALSE(writer_.write_in_flight());
  EXPECT_EQ(writer_.written(), 2);
}

TEST_F(MergingWriterTest, TheValuesMergedAwayAreFreed) {
  writer_.Offer(V({{"a", 1}}));
  std::weak_ptr<const KeyedStates> second;
  std::weak_ptr<const KeyedStates> third;
  {
    auto v2 = V({{"b", 1}});
    auto v3 = V({{"b", 2}});
    second = v2;
    third = v3;
    writer_.Offer(std::move(v2));
    writer_.Offer(std::move(v3));
  }
  EXPECT_TRUE(second.expired());
  EXPECT_TRUE(third.expired());
  EXPECT_TRUE(writer_.has_pending());
}

TEST_F(MergingWriterTest, FinishDropsTheMergedValue) {
  writer_.Offer(V({{"a", 1}}));
  writer_.Offer(V({{"b", 1}}));
  writer_.Offer(V({{"c", 1}}));
  writer_.Finish();
  writer_.OnWriteDone(true);
  EXPECT_EQ(finishes_, 1);
  EXPECT_THAT(written_, ElementsAre(KeyedStates{{"a", 1}}));
}

TEST(LatestOnlyWriterConcurrencyTest, ConcurrentOffersAndCompletionsKeepOneWriteInFlight) {
  std::atomic<int> in_flight{0};
  std::atomic<int> max_in_flight{0};
  std::atomic<int> finishes{0};
  std::atomic<int> writes{0};
  LatestOnlyWriter<int>* self = nullptr;
  std::vector<std::thread> completions;
  core::Mutex mu;
  LatestOnlyWriter<int> writer(
      [&](const int&) {
        const int now = in_flight.fetch_add(1) + 1;
        int seen = max_in_flight.load();
        while (now > seen && !max_in_flight.compare_exchange_weak(seen, now)) {
        }
        writes.fetch_add(1);
        // Complete on another thread, as gRPC does.
        core::MutexLock lock(&mu);
        completions.emplace_back([&] {
          in_flight.fetch_sub(1);
          self->OnWriteDone(true);
        });
      },
      [&] { finishes.fetch_add(1); });
  self = &writer;
  std::vector<std::thread> offerers;
  for (int t = 0; t < 4; ++t) {
    offerers.emplace_back([&writer, t] {
      for (int i = 0; i < 500; ++i) writer.Offer(std::make_shared<const int>(t * 1000 + i));
    });
  }
  for (std::thread& t : offerers) t.join();
  writer.Finish();
  // Completions may start further completions: join until none is left.
  for (;;) {
    std::vector<std::thread> batch;
    {
      core::MutexLock lock(&mu);
      batch.swap(completions);
    }
    if (batch.empty()) break;
    for (std::thread& t : batch) t.join();
  }
  EXPECT_EQ(max_in_flight.load(), 1);
  EXPECT_EQ(finishes.load(), 1);
  EXPECT_GE(writes.load(), 1);
  EXPECT_FALSE(writer.write_in_flight());
}

}  // namespace
}  // namespace sessionbroker::core
