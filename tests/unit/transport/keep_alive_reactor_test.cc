// Specification of the KeepAlive stream (KeepAliveReactor): the merge rule
// its writer uses for updates that wait behind a write, and, through a real
// in-process gRPC server over the fake database, what a client sees: held
// sessions outlive their lease, a held session that ends is reported, and the
// stream's end releases its sessions to the orphan grace; a request names at
// most kMaxKeepAliveNames sessions and costs work linear in them; a request
// that is too long or cannot be parsed ends the stream with INVALID_ARGUMENT.
#include "server/transport/keep_alive_reactor.h"

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "sessionbroker/v1/broker.grpc.pb.h"
#include "tests/support/grpc_wire.h"
#include "tests/support/in_process_broker.h"

namespace sessionbroker::transport {
namespace {

using ::sessionbroker::testing::InProcessBroker;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

v1::SessionState State(const std::string& name, v1::SessionState::State state,
                       const std::string& reason = "") {
  v1::SessionState s;
  s.set_name(name);
  s.set_state(state);
  s.set_reason(reason);
  return s;
}

std::shared_ptr<const v1::KeepAliveResponse> Response(std::vector<v1::SessionState> states) {
  auto r = std::make_shared<v1::KeepAliveResponse>();
  for (v1::SessionState& s : states) *r->add_sessions() = std::move(s);
  return r;
}

// "name:STATE" for each session of a response, in order.
std::vector<std::string> Summary(const v1::KeepAliveResponse& response) {
  std::vector<std::string> out;
  for (const v1::SessionState& s : response.sessions()) {
    out.push_back(s.name() + ":" + v1::SessionState::State_Name(s.state()));
  }
  return out;
}

TEST(KeepAliveMergeTest, TheWaitingUpdateKeepsTheNewestStateOfEachSessionInFirstNamedOrder) {
  std::shared_ptr<const v1::KeepAliveResponse> waiting =
      Response({State("a", v1::SessionState::HELD), State("b", v1::SessionState::HELD)});
  const std::shared_ptr<const v1::KeepAliveResponse> original = waiting;
  KeepAliveReactor::MergeUpdates{}(
      waiting, Response({State("c", v1::SessionState::NOT_FOUND),
                         State("a", v1::SessionState::ENDED, "its lease expired")}));
  EXPECT_THAT(Summary(*waiting), ElementsAre("a:ENDED", "b:HELD", "c:NOT_FOUND"));
  EXPECT_EQ(waiting->sessions(0).reason(), "its lease expired");
  EXPECT_THAT(Summary(*original), ElementsAre("a:HELD", "b:HELD"))
      << "a value may be shared: the merge builds a new one";
}

TEST(SessionStateListTest, EachStateAddedCostsAFewNameComparisonsHoweverManyAreListed) {
  // 48k names, then the newest state of every other one: a search of the
  // list per name compares about a billion times; a hash lookup about once.
  constexpr int kNames = 48'000;
  SessionStateList list;
  for (int i = 0; i < kNames; ++i) {
    list.Add(State(absl::StrCat("session-", i), v1::SessionState::HELD));
  }
  for (int i = 0; i < kNames; i += 2) {
    list.Add(State(absl::StrCat("session-", i), v1::SessionState::ENDED, "ended"));
  }
  const int64_t adds = kNames + kNames / 2;
  EXPECT_LE(list.name_comparisons(), 2 * adds);
  EXPECT_EQ(list.size(), kNames);
  std::shared_ptr<v1::KeepAliveResponse> response = list.Take();
  ASSERT_EQ(response->sessions_size(), kNames);
  EXPECT_EQ(response->sessions(0).name(), "session-0");
  EXPECT_EQ(response->sessions(0).state(), v1::SessionState::ENDED);
  EXPECT_EQ(response->sessions(1).name(), "session-1");
  EXPECT_EQ(response->sessions(1).state(), v1::SessionState::HELD);
  EXPECT_EQ(list.size(), 0) << "Take empties the list";
}

TEST(SessionStateListTest, StartingFromAResponseKeepsOneStatePerName) {
  SessionStateList list(
      *Response({State("a", v1::SessionState::HELD), State("a", v1::SessionState::RELEASED),
                 State("b", v1::SessionState::HELD)}));
  list.Add(State("b", v1::SessionState::NOT_FOUND));
  EXPECT_THAT(Summary(*list.Take()), ElementsAre("a:RELEASED", "b:NOT_FOUND"));
}

class KeepAliveStreamTest : public ::testing::Test {
 protected:
  using Stream = grpc::ClientReaderWriter<v1::KeepAliveRequest, v1::KeepAliveResponse>;

  KeepAliveStreamTest() : broker_(Options()) {}

  static InProcessBroker::Options Options() {
    InProcessBroker::Options o = InProcessBroker::DefaultOptions();
    o.sessions.default_ttl = absl::Seconds(30);
    o.sessions.orphan_grace = absl::Seconds(5);
    return o;
  }

  std::string MustBeginSession() {
    grpc::ClientContext context;
    v1::Session session;
    grpc::Status status =
        broker_.broker().BeginSession(&context, v1::BeginSessionRequest(), &session);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return session.name();
  }

  grpc::Status GetSession(const std::string& name, v1::Session* out = nullptr) {
    grpc::ClientContext context;
    v1::GetSessionRequest request;
    request.set_session(name);
    v1::Session ignored;
    return broker_.broker().GetSession(&context, request, out != nullptr ? out : &ignored);
  }

  // Sends one request and reads its answer.
  v1::KeepAliveResponse Send(Stream& stream, std::vector<std::string> hold,
                             std::vector<std::string> release = {}) {
    v1::KeepAliveRequest request;
    for (std::string& name : hold) request.add_hold(std::move(name));
    for (std::string& name : release) request.add_release(std::move(name));
    EXPECT_TRUE(stream.Write(request));
    v1::KeepAliveResponse response;
    EXPECT_TRUE(stream.Read(&response));
    return response;
  }

  InProcessBroker broker_;
};

TEST_F(KeepAliveStreamTest, HoldingAnswersEachSessionsStateAndKeepsItPastItsLease) {
  const std::string name = MustBeginSession();
  grpc::ClientContext context;
  std::unique_ptr<Stream> stream = broker_.broker().KeepAlive(&context);
  v1::KeepAliveResponse response = Send(*stream, {name, "no-such-session"});
  EXPECT_THAT(Summary(response), ElementsAre(name + ":HELD", "no-such-session:NOT_FOUND"));

  broker_.Advance(absl::Minutes(10));  // well past the 30 s lease
  v1::Session session;
  grpc::Status status = GetSession(name, &session);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(session.held_by_stream());

  EXPECT_TRUE(stream->WritesDone());
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(KeepAliveStreamTest, ReleasingASessionAnswersReleased) {
  const std::string name = MustBeginSession();
  grpc::ClientContext context;
  std::unique_ptr<Stream> stream = broker_.broker().KeepAlive(&context);
  Send(*stream, {name});
  v1::KeepAliveResponse response = Send(*stream, {}, {name});
  EXPECT_THAT(Summary(response), ElementsAre(name + ":RELEASED"));
  v1::Session session;
  ASSERT_TRUE(GetSession(name, &session).ok());
  EXPECT_FALSE(session.held_by_stream());
  EXPECT_TRUE(stream->WritesDone());
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(KeepAliveStreamTest, AHeldSessionThatEndsIsReportedOnTheStream) {
  const std::string name = MustBeginSession();
  grpc::ClientContext context;
  std::unique_ptr<Stream> stream = broker_.broker().KeepAlive(&context);
  Send(*stream, {name});

  grpc::ClientContext end_context;
  v1::EndSessionRequest end;
  end.set_session(name);
  v1::EndSessionResponse ended;
  ASSERT_TRUE(broker_.broker().EndSession(&end_context, end, &ended).ok());

  v1::KeepAliveResponse response;
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_THAT(Summary(response), ElementsAre(name + ":ENDED"));
  EXPECT_THAT(response.sessions(0).reason(), HasSubstr("EndSession was called"));
  EXPECT_TRUE(stream->WritesDone());
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(KeepAliveStreamTest, TheStreamsEndReleasesItsSessionsToTheOrphanGrace) {
  const std::string name = MustBeginSession();
  {
    grpc::ClientContext context;
    std::unique_ptr<Stream> stream = broker_.broker().KeepAlive(&context);
    Send(*stream, {name});
    broker_.Advance(absl::Minutes(10));
    EXPECT_TRUE(stream->WritesDone());
    EXPECT_TRUE(stream->Finish().ok()) << "the client closed its side: a clean end";
  }
  v1::Session session;
  ASSERT_TRUE(GetSession(name, &session).ok()) << "the grace has only begun";
  EXPECT_FALSE(session.held_by_stream());

  broker_.Advance(absl::Seconds(5) - absl::Nanoseconds(1));
  EXPECT_TRUE(GetSession(name).ok()) << "still within the grace";
  broker_.Advance(absl::Nanoseconds(1));
  grpc::Status status = GetSession(name);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("the KeepAlive stream holding it went away"));
  EXPECT_EQ(broker_.sessions().Stats().orphaned, 1);
}

TEST_F(KeepAliveStreamTest, AStreamTheClientCancelsAlsoReleasesItsSessions) {
  const std::string name = MustBeginSession();
  {
    grpc::ClientContext context;
    std::unique_ptr<Stream> stream = broker_.broker().KeepAlive(&context);
    Send(*stream, {name});
    context.TryCancel();
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  // The server learns of the cancellation on its own schedule; the session
  // is released once it has, and then ends after the grace.
  for (;;) {
    v1::Session session;
    ASSERT_TRUE(GetSession(name, &session).ok());
    if (!session.held_by_stream()) break;
  }
  broker_.Advance(absl::Seconds(5));
  EXPECT_EQ(GetSession(name).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(KeepAliveStreamTest, AStreamOpenedWhileDrainingIsRefused) {
  broker_.broker_service().StartDraining();
  grpc::ClientContext context;
  std::unique_ptr<Stream> stream = broker_.broker().KeepAlive(&context);
  v1::KeepAliveResponse response;
  EXPECT_FALSE(stream->Read(&response));
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(status.error_message(), "the broker is shutting down; retry on another instance");
}

TEST_F(KeepAliveStreamTest, AtShutdownAHeldSessionIsReportedEnded) {
  const std::string name = MustBeginSession();
  grpc::ClientContext context;
  std::unique_ptr<Stream> stream = broker_.broker().KeepAlive(&context);
  Send(*stream, {name});
  broker_.sessions().Shutdown(absl::Now() + absl::Seconds(30));
  v1::KeepAliveResponse response;
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_THAT(Summary(response), ElementsAre(name + ":ENDED"));
  EXPECT_TRUE(stream->WritesDone());
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(KeepAliveStreamTest, ARequestOfAsManyNamesAsTheLimitIsAnsweredForEachName) {
  grpc::ClientContext context;
  std::unique_ptr<Stream> stream = broker_.broker().KeepAlive(&context);
  std::vector<std::string> hold;
  for (int i = 0; i < kMaxKeepAliveNames - 1; ++i) hold.push_back(absl::StrCat("unknown-", i));
  v1::KeepAliveResponse response = Send(*stream, hold, {"unknown-0"});
  EXPECT_EQ(response.sessions_size(), kMaxKeepAliveNames - 1) << "one state per name";
  EXPECT_TRUE(stream->WritesDone());
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(KeepAliveStreamTest, ARequestOfMoreNamesThanTheLimitEndsTheStreamWithInvalidArgument) {
  const std::string name = MustBeginSession();
  grpc::ClientContext context;
  std::unique_ptr<Stream> stream = broker_.broker().KeepAlive(&context);
  v1::KeepAliveRequest request;
  request.add_hold(name);
  for (int i = 0; i < kMaxKeepAliveNames; ++i) request.add_release(absl::StrCat("unknown-", i));
  EXPECT_TRUE(stream->Write(request));
  v1::KeepAliveResponse response;
  EXPECT_FALSE(stream->Read(&response)) << "nothing is answered";
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("10001 session names"));
  EXPECT_THAT(status.error_message(), HasSubstr("at most 10000"));
  v1::Session session;
  ASSERT_TRUE(GetSession(name, &session).ok());
  EXPECT_FALSE(session.held_by_stream()) << "nothing of the request was applied";
}

// The in-process transport delivers a message only to a pending read, so
// the client's writes show when the reactor reads: while an answer waits
// behind the one in flight (the client does not read), the next request is
// not read, and a client that keeps writing is held back instead of growing
// what waits for it; reading an answer resumes the reads.
TEST_F(KeepAliveStreamTest, ReadsPauseWhileTheClientDoesNotReadItsAnswers) {
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  auto tag = [](intptr_t i) { return reinterpret_cast<void*>(i); };
  // The next event, or nullptr when none comes within `wait`.
  auto next = [&cq](absl::Duration wait) -> void* {
    void* got = nullptr;
    bool ok = false;
    const grpc::CompletionQueue::NextStatus status =
        cq.AsyncNext(&got, &ok, absl::ToChronoTime(absl::Now() + wait));
    if (status != grpc::CompletionQueue::GOT_EVENT) return nullptr;
    EXPECT_TRUE(ok) << "event " << reinterpret_cast<intptr_t>(got);
    return got;
  };
  auto request = [](const std::string& name) {
    v1::KeepAliveRequest r;
    r.add_hold(name);
    return r;
  };
  std::unique_ptr<grpc::ClientAsyncReaderWriter<v1::KeepAliveRequest, v1::KeepAliveResponse>>
      stream = broker_.broker().AsyncKeepAlive(&context, &cq, tag(1));
  ASSERT_EQ(next(absl::Seconds(10)), tag(1));
  // The first request is read and answered (the answer is in flight); the
  // second is read while it is, and its answer waits behind it.
  const v1::KeepAliveRequest first = request("unknown-1");
  stream->Write(first, tag(2));
  ASSERT_EQ(next(absl::Seconds(10)), tag(2));
  const v1::KeepAliveRequest second = request("unknown-2");
  stream->Write(second, tag(3));
  ASSERT_EQ(next(absl::Seconds(10)), tag(3));
  // The third is not read while the client reads nothing.
  const v1::KeepAliveRequest third = request("unknown-3");
  stream->Write(third, tag(4));
  EXPECT_EQ(next(absl::Milliseconds(300)), nullptr) << "the reactor read while an answer waited";
  // Reading the first answer lets the waiting one go out and the reads resume.
  v1::KeepAliveResponse answer;
  stream->Read(&answer, tag(5));
  std::vector<void*> events = {next(absl::Seconds(10)), next(absl::Seconds(10))};
  EXPECT_THAT(events, ::testing::UnorderedElementsAre(tag(4), tag(5)));
  EXPECT_THAT(Summary(answer), ElementsAre(::testing::StartsWith("unknown-1:")));
  context.TryCancel();
  grpc::Status status;
  stream->Finish(&status, tag(6));
  while (next(absl::Seconds(10)) != tag(6)) {
  }
}

TEST_F(KeepAliveStreamTest, AGarbageFrameEndsTheStreamWithInvalidArgument) {
  // Field 1 with wire type 7, which does not exist: no message parses.
  grpc::Status status = sessionbroker::testing::RawStreamCall(
      broker_.channel(), "/sessionbroker.v1.SessionBroker/KeepAlive", std::string("\x0f\x01", 2));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("KeepAliveRequest"));
}

TEST_F(KeepAliveStreamTest, AStreamStillHoldsAfterAnEmptyFrame) {
  // An empty message is a valid (empty) request: it is not answered and the
  // stream stays open.
  const std::string name = MustBeginSession();
  grpc::ClientContext context;
  std::unique_ptr<Stream> stream = broker_.broker().KeepAlive(&context);
  EXPECT_TRUE(stream->Write(v1::KeepAliveRequest()));
  v1::KeepAliveResponse response = Send(*stream, {name});
  EXPECT_THAT(Summary(response), ElementsAre(name + ":HELD"));
  EXPECT_TRUE(stream->WritesDone());
  EXPECT_TRUE(stream->Finish().ok());
}

}  // namespace
}  // namespace sessionbroker::transport
