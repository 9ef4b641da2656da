// Specification of SB_DCHECK (server/core/base/invariant.h): checked where
// invariants are on (debug and sanitizer builds), not even evaluated where
// they are off (release builds).
#include "server/core/base/invariant.h"

#include <memory>

#include "gtest/gtest.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace sessionbroker::core {
namespace {

TEST(InvariantTest, ATrueConditionLetsTheProgramContinue) {
  bool reached = false;
  SB_DCHECK(1 + 1 == 2);
  reached = true;
  EXPECT_TRUE(reached);
}

TEST(InvariantTest, TheConditionIsEvaluatedOnlyWhereInvariantsAreOn) {
  int evaluated = 0;
  SB_DCHECK(++evaluated > 0);
  EXPECT_EQ(evaluated, SB_INVARIANTS_ON ? 1 : 0);
}

#if SB_INVARIANTS_ON
TEST(InvariantDeathTest, AFalseConditionIsLoggedWithItsPlaceAndAborts) {
  // Re-executes the test binary for the dying statement rather than forking
  // this (ThreadSanitizer's) multi-threaded process.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // The broker's logger writes to stderr (server/logging.cc); so does this
  // one, where the death test looks.
  spdlog::set_default_logger(std::make_shared<spdlog::logger>(
      "invariant_test", std::make_shared<spdlog::sinks::stderr_sink_mt>()));
  const int open = 3;
  const int max = 2;
  EXPECT_DEATH(SB_DCHECK(open <= max),
               "invariant failed: open <= max at .*invariant_test\\.cc:[0-9]+");
}
#endif

}  // namespace
}  // namespace sessionbroker::core
