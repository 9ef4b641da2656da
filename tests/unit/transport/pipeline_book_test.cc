// PipelineBook: a Pipeline stream's ids, limit and coalesced writes.
#include "server/transport/pipeline_book.h"

#include <optional>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/session/session_types.h"

namespace sessionbroker::transport {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

v1::PipelineLimits Limits(uint32_t per_stream) {
  v1::PipelineLimits limits;
  limits.set_max_in_flight_per_stream(per_stream);
  limits.set_max_in_flight_per_client(1000);
  return limits;
}

v1::PipelineResult Result(uint64_t id) {
  v1::PipelineResult result;
  result.set_id(id);
  result.mutable_execute()->set_command_tag("SELECT 1");
  return result;
}

std::vector<uint64_t> Ids(const v1::PipelineResponse& response) {
  std::vector<uint64_t> ids;
  for (const v1::PipelineResult& r : response.results()) ids.push_back(r.id());
  return ids;
}

TEST(PipelineBookTest, TheFirstMessageCarriesTheLimitsAndOnlyTheFirst) {
  PipelineBook book(Limits(8));
  std::optional<v1::PipelineResponse> first = book.TakeWrite();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->limits().max_in_flight_per_stream(), 8u);
  EXPECT_EQ(first->limits().max_in_flight_per_client(), 1000u);
  EXPECT_EQ(first->results_size(), 0);
  book.WriteDone();
  ASSERT_TRUE(book.Admit(1).ok());
  book.Complete(Result(1), {true, 0});
  std::optional<v1::PipelineResponse> second = book.TakeWrite();
  ASSERT_TRUE(second.has_value());
  EXPECT_FALSE(second->has_limits());
  EXPECT_THAT(Ids(*second), ElementsAre(1));
}

TEST(PipelineBookTest, ALoneResultIsWrittenAtOnce) {
  PipelineBook book(Limits(8));
  book.TakeWrite();
  book.WriteDone();
  EXPECT_FALSE(book.TakeWrite().has_value());  // nothing to write
  ASSERT_TRUE(book.Admit(5).ok());
  book.Complete(Result(5), {true, 0});
  std::optional<v1::PipelineResponse> message = book.TakeWrite();
  ASSERT_TRUE(message.has_value());
  EXPECT_THAT(Ids(*message), ElementsAre(5));
}

TEST(PipelineBookTest, ResultsCompletedDuringAWriteGoTogetherInCompletionOrder) {
  PipelineBook book(Limits(8));
  for (uint64_t id : {1, 2, 3, 4}) ASSERT_TRUE(book.Admit(id).ok());
  // The limits are being written; three calls complete meanwhile.
  ASSERT_TRUE(book.TakeWrite().has_value());
  book.Complete(Result(3), {true, 0});
  book.Complete(Result(1), {true, 0});
  book.Complete(Result(4), {true, 0});
  EXPECT_FALSE(book.TakeWrite().has_value());  // one write at a time
  book.WriteDone();
  std::optional<v1::PipelineResponse> message = book.TakeWrite();
  ASSERT_TRUE(message.has_value());
  EXPECT_THAT(Ids(*message), ElementsAre(3, 1, 4));
}

TEST(PipelineBookTest, AnIdIsRefusedUntilItsResultGoesIntoAWrite) {
  PipelineBook book(Limits(8));
  book.TakeWrite();
  book.WriteDone();
  ASSERT_TRUE(book.Admit(9).ok());
  absl::Status duplicate = book.Admit(9);
  EXPECT_EQ(duplicate.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(duplicate.message(), HasSubstr("already in flight"));
  book.Complete(Result(9), {true, 0});
  EXPECT_EQ(book.Admit(9).code(), absl::StatusCode::kInvalidArgument);  // queued, not sent
  // Once the result is on its way the client may have it, and may send the
  // id again before the broker sees the write complete.
  ASSERT_TRUE(book.TakeWrite().has_value());
  EXPECT_TRUE(book.Admit(9).ok());
  EXPECT_EQ(book.in_flight(), 2u);  // the written one counts until WriteDone
  book.WriteDone();
  EXPECT_EQ(book.in_flight(), 1u);
}

TEST(PipelineBookTest, AtTheLimitNoMoreIsReadAndFurtherCallsAreRefused) {
  PipelineBook book(Limits(2));
  book.TakeWrite();
  book.WriteDone();
  ASSERT_TRUE(book.Admit(1).ok());
  EXPECT_TRUE(book.may_read());
  ASSERT_TRUE(book.Admit(2).ok());
  EXPECT_FALSE(book.may_read());
  absl::Status over = book.Admit(3);
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(over.message(), HasSubstr("BROKER_PIPELINE_MAX_IN_FLIGHT"));
  // The token a client goes by (the call did not run), not the text.
  EXPECT_EQ(over.GetPayload(core::kSessionReasonPayloadUrl), absl::Cord("PIPELINE_LIMIT"));
  // A completed result still counts until it has been sent.
  book.Complete(Result(1), {true, 0});
  EXPECT_FALSE(book.may_read());
  ASSERT_TRUE(book.TakeWrite().has_value());
  book.WriteDone();
  EXPECT_TRUE(book.may_read());
  EXPECT_EQ(book.in_flight(), 1u);
}

TEST(PipelineBookTest, ARefusedCallsResultHoldsNoId) {
  PipelineBook book(Limits(2));
  book.TakeWrite();
  book.WriteDone();
  ASSERT_TRUE(book.Admit(1).ok());
  // A duplicate of 1 is answered under id 1; writing it must not free the
  // call still in flight.
  book.Complete(Result(1), {false, 0});
  ASSERT_TRUE(book.TakeWrite().has_value());
  std::vector<PipelineBook::Held> held = book.WriteDone();
  ASSERT_EQ(held.size(), 1u);
  EXPECT_FALSE(held[0].admitted);
  EXPECT_EQ(book.in_flight(), 1u);
  EXPECT_EQ(book.Admit(1).code(), absl::StatusCode::kInvalidArgument);
}

TEST(PipelineBookTest, ForgettingAnAbandonedCallFreesItsPlace) {
  PipelineBook book(Limits(1));
  ASSERT_TRUE(book.Admit(4).ok());
  EXPECT_FALSE(book.may_read());
  book.Forget(4);
  EXPECT_TRUE(book.may_read());
  EXPECT_TRUE(book.Admit(4).ok());
}

TEST(PipelineBookTest, WriteDoneAndDropQueuedGiveBackWhatResultsHeld) {
  PipelineBook book(Limits(8));
  for (uint64_t id : {1, 2, 3}) ASSERT_TRUE(book.Admit(id).ok());
  book.Complete(Result(1), {true, 100});
  ASSERT_TRUE(book.TakeWrite().has_value());
  book.Complete(Result(2), {true, 20});
  book.Complete(Result(3), {true, 3});
  std::vector<PipelineBook::Held> dropped = book.DropQueued();
  ASSERT_EQ(dropped.size(), 2u);
  EXPECT_EQ(dropped[0].bytes + dropped[1].bytes, 23u);
  std::vector<PipelineBook::Held> sent = book.WriteDone();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].bytes, 100u);
  EXPECT_EQ(book.in_flight(), 0u);
  EXPECT_FALSE(book.has_queued());
}

}  // namespace
}  // namespace sessionbroker::transport
