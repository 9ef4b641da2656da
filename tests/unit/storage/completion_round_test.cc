// CompletionRound (server/storage/pipeline_engine.h): work deferred while a
// round is open on a thread runs when it closes, in order, on that thread;
// without a round nothing is deferred; an inner round is inert.
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "server/storage/pipeline_engine.h"

namespace sessionbroker::storage {
namespace {

TEST(CompletionRoundTest, WithoutARoundNothingIsDeferred) {
  EXPECT_FALSE(CompletionRound::Open());
  bool ran = false;
  CompletionRound::Action action = [&ran] { ran = true; };
  EXPECT_FALSE(CompletionRound::Defer(action));
  EXPECT_FALSE(ran);
  // The refused action is still the caller's to run.
  std::move(action)();
  EXPECT_TRUE(ran);
}

TEST(CompletionRoundTest, DeferredWorkRunsInOrderWhenTheRoundCloses) {
  std::vector<std::string> log;
  {
    CompletionRound round;
    EXPECT_TRUE(CompletionRound::Open());
    for (const char* name : {"first", "second"}) {
      CompletionRound::Action action = [&log, name] { log.push_back(name); };
      EXPECT_TRUE(CompletionRound::Defer(action));
    }
    log.push_back("round body ends");
  }
  EXPECT_EQ(log, (std::vector<std::string>{"round body ends", "first", "second"}));
  EXPECT_FALSE(CompletionRound::Open());
}

TEST(CompletionRoundTest, DeferredWorkRunsWithNoRoundOpenSoWhatItDefersRunsAtOnce) {
  std::vector<std::string> log;
  {
    CompletionRound round;
    CompletionRound::Action outer = [&log] {
      log.push_back(CompletionRound::Open() ? "open" : "closed");
      CompletionRound::Action inner = [&log] { log.push_back("inner"); };
      if (!CompletionRound::Defer(inner)) std::move(inner)();
    };
    ASSERT_TRUE(CompletionRound::Defer(outer));
  }
  EXPECT_EQ(log, (std::vector<std::string>{"closed", "inner"}));
}

TEST(CompletionRoundTest, InnerRoundLeavesItsWorkToTheOuterOne) {
  std::vector<std::string> log;
  {
    CompletionRound outer;
    {
      CompletionRound inner;
      CompletionRound::Action action = [&log] { log.push_back("deferred"); };
      ASSERT_TRUE(CompletionRound::Defer(action));
    }
    EXPECT_TRUE(log.empty());
    EXPECT_TRUE(CompletionRound::Open());
  }
  EXPECT_EQ(log, (std::vector<std::string>{"deferred"}));
}

TEST(CompletionRoundTest, ARoundIsOpenOnlyOnItsOwnThread) {
  CompletionRound round;
  bool open_elsewhere = true;
  std::thread other([&open_elsewhere] { open_elsewhere = CompletionRound::Open(); });
  other.join();
  EXPECT_FALSE(open_elsewhere);
  EXPECT_TRUE(CompletionRound::Open());
}

}  // namespace
}  // namespace sessionbroker::storage
