// RequestLedger (the in-memory memory of session calls' request ids) and the
// request id rules of request_outcomes.h, on a fake clock.
#include "server/core/exec/request_ledger.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/base/clock.h"
#include "server/core/exec/request_outcomes.h"

namespace sessionbroker::core {
namespace {

using Kind = RequestLedger::Claim::Kind;
using ::testing::HasSubstr;

RequestLedgerOptions Options() {
  RequestLedgerOptions o;
  o.window = absl::Minutes(10);
  o.max_bytes = 1 << 20;
  o.max_outcome_bytes = 100;
  return o;
}

TEST(RequestLedgerTest, AFirstClaimRunsAndItsRetryGetsTheOutcome) {
  FakeClock clock;
  RequestLedger ledger(clock, Options());
  EXPECT_EQ(ledger.Begin("svc", "id-1", "hash").kind, Kind::kRun);
  ledger.Complete("svc", "id-1", "response");
  const RequestLedger::Claim retry = ledger.Begin("svc", "id-1", "hash");
  EXPECT_EQ(retry.kind, Kind::kReplay);
  EXPECT_EQ(retry.outcome, "response");
}

TEST(RequestLedgerTest, ARetryWhileTheFirstRunsIsToldSo) {
  FakeClock clock;
  RequestLedger ledger(clock, Options());
  ASSERT_EQ(ledger.Begin("svc", "id-1", "hash").kind, Kind::kRun);
  EXPECT_EQ(ledger.Begin("svc", "id-1", "hash").kind, Kind::kRunning);
}

TEST(RequestLedgerTest, AnotherBodyWithTheSameIdIsAMismatch) {
  FakeClock clock;
  RequestLedger ledger(clock, Options());
  ASSERT_EQ(ledger.Begin("svc", "id-1", "hash").kind, Kind::kRun);
  ledger.Complete("svc", "id-1", "response");
  EXPECT_EQ(ledger.Begin("svc", "id-1", "other").kind, Kind::kMismatch);
}

TEST(RequestLedgerTest, ScopesDoNotShareIds) {
  FakeClock clock;
  RequestLedger ledger(clock, Options());
  ASSERT_EQ(ledger.Begin("svc-a", "id-1", "hash").kind, Kind::kRun);
  ledger.Complete("svc-a", "id-1", "a's response");
  EXPECT_EQ(ledger.Begin("svc-b", "id-1", "other").kind, Kind::kRun);
  // A scope that is a prefix of another plus the id does not collide.
  EXPECT_EQ(ledger.Begin("svc-a/id", "-1", "hash").kind, Kind::kRun);
}

TEST(RequestLedgerTest, AFailedCallIsForgottenSoItsRetryRunsAgain) {
  FakeClock clock;
  RequestLedger ledger(clock, Options());
  ASSERT_EQ(ledger.Begin("svc", "id-1", "hash").kind, Kind::kRun);
  ledger.Abandon("svc", "id-1");
  EXPECT_EQ(ledger.Begin("svc", "id-1", "hash").kind, Kind::kRun);
}

TEST(RequestLedgerTest, OutcomesExpireAfterTheWindow) {
  FakeClock clock;
  RequestLedger ledger(clock, Options());
  ASSERT_EQ(ledger.Begin("svc", "id-1", "hash").kind, Kind::kRun);
  ledger.Complete("svc", "id-1", "response");
  clock.Advance(absl::Minutes(9));
  EXPECT_EQ(ledger.Begin("svc", "id-1", "hash").kind, Kind::kReplay);
  clock.Advance(absl::Minutes(1));
  EXPECT_EQ(ledger.Begin("svc", "id-1", "other").kind, Kind::kRun);
}

TEST(RequestLedgerTest, AnOutcomeOverTheLimitIsRememberedWithoutItsBytes) {
  FakeClock clock;
  RequestLedger ledger(clock, Options());
  ASSERT_EQ(ledger.Begin("svc", "id-1", "hash").kind, Kind::kRun);
  ledger.Complete("svc", "id-1", std::string(101, 'x'));
  const RequestLedger::Claim retry = ledger.Begin("svc", "id-1", "hash");
  EXPECT_EQ(retry.kind, Kind::kOmitted);
  EXPECT_TRUE(retry.outcome.empty());
}

TEST(RequestLedgerTest, OverItsMemoryTheOldestOutcomesAreForgottenFirst) {
  FakeClock clock;
  RequestLedgerOptions options = Options();
  options.max_bytes = 2000;
  RequestLedger ledger(clock, options);
  for (int i = 0; i < 100; ++i) {
    const std::string id = "id-" + std::to_string(i);
    ASSERT_EQ(ledger.Begin("svc", id, "hash").kind, Kind::kRun);
    ledger.Complete("svc", id, std::string(50, 'x'));
    clock.Advance(absl::Seconds(1));
  }
  EXPECT_LE(ledger.bytes(), options.max_bytes);
  EXPECT_LT(ledger.entries(), 100u);
  EXPECT_EQ(ledger.Begin("svc", "id-99", "hash").kind, Kind::kReplay);
  EXPECT_EQ(ledger.Begin("svc", "id-0", "hash").kind, Kind::kRun);
}

TEST(RequestIdTest, ValidIdsPass) {
  EXPECT_TRUE(ValidateRequestId("").ok());
  EXPECT_TRUE(ValidateRequestId("0b7c6f1e-3a57-4f0e-9d0c-2f4d2b1e9a10").ok());
  EXPECT_TRUE(ValidateRequestId("job-42:attempt_1.v~2").ok());
  EXPECT_TRUE(ValidateRequestId(std::string(kMaxRequestIdBytes, 'a')).ok());
}

TEST(RequestIdTest, TooLongOrOddCharactersAreInvalidArgumentNamingTheLimit) {
  const absl::Status long_id = ValidateRequestId(std::string(kMaxRequestIdBytes + 1, 'a'));
  EXPECT_EQ(long_id.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(long_id.message(), HasSubstr("at most 128"));
  for (const char* bad : {"a b", "a/b", "a\nb", "é", "a\"b"}) {
    EXPECT_EQ(ValidateRequestId(bad).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(RequestOutcomesTest, StatementsNameTheConfiguredTableQuoted) {
  RequestOutcomesOptions options;
  options.table = "app.outcomes";
  RequestOutcomes outcomes(options);
  const std::vector<storage::Statement> create = outcomes.CreateStatements();
  ASSERT_EQ(create.size(), 3u);
  EXPECT_EQ(create[0].sql, "CREATE SCHEMA IF NOT EXISTS \"app\"");
  EXPECT_THAT(create[1].sql, HasSubstr("\"app\".\"outcomes\""));
  EXPECT_THAT(create[2].sql, HasSubstr("\"app\".\"outcomes\""));
  EXPECT_THAT(create[2].sql, HasSubstr("\"outcomes_created_at_idx\""));
  DurableRequest request;
  request.client_id = "svc";
  request.request_id = "id";
  request.fingerprint = "hash";
  const storage::Statement claim = outcomes.Claim(request, absl::FromUnixSeconds(0));
  EXPECT_THAT(claim.sql, HasSubstr("ON CONFLICT (client_id, request_id)"));
  ASSERT_EQ(claim.params.size(), 5u);
  EXPECT_EQ(claim.params[3].text, "1970-01-01T00:00:00.000000+00:00");
  EXPECT_FALSE(outcomes.created());
  outcomes.MarkCreated();
  EXPECT_TRUE(outcomes.created());
}

}  // namespace
}  // namespace sessionbroker::core
