// Specification of the KeepAlive stream (KeepAliveReactor): the merge rule
// its writer uses for updates that wait behind a write, and, through a real
// in-process gRPC server over the fake database, what a client sees: held
// sessions outlive their lease, a held session that ends is reported, and the
// stream's end releases its sessions to the orphan grace.
#include "server/transport/keep_alive_reactor.h"

#include <memory>
#include <string>

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "sessionbroker/v1/broker.grpc.pb.h"
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

}  // namespace
}  // namespace sessionbroker::transport
