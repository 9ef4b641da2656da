// HealthService on a real grpc::Server (in-process channel): the two names
// and what each follows, NOT_FOUND and SERVICE_UNKNOWN for other names, Watch
// updates and its clean end on Shutdown; a closed CallGate
// (BROKER_AUTH_EXEMPT_SERVICES without the health service) refusing calls
// without credentials.
#include "server/transport/health_service.h"

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/core/auth/authenticator.h"
#include "server/core/auth/client_directory.h"
#include "server/core/auth/token_hash.h"
#include "server/transport/call_gate.h"
#include "server/transport/call_identity.h"

namespace sessionbroker::transport {
namespace {

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

constexpr char kReadiness[] = "sessionbroker.v1.SessionBroker";

class HealthServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    stub_ = Health::NewStub(server_->InProcessChannel(grpc::ChannelArguments()));
  }
  void TearDown() override {
    service_.Shutdown();
    server_->Shutdown();
  }

  // Check's answer, or the error code as a negative number.
  int Check(const std::string& name) {
    grpc::ClientContext context;
    HealthCheckRequest request;
    request.set_service(name);
    HealthCheckResponse response;
    grpc::Status status = stub_->Check(&context, request, &response);
    return status.ok() ? response.status() : -static_cast<int>(status.error_code());
  }

  std::unique_ptr<grpc::ClientReader<HealthCheckResponse>> Watch(grpc::ClientContext* context,
                                                                 const std::string& name) {
    HealthCheckRequest request;
    request.set_service(name);
    return stub_->Watch(context, request);
  }

  static HealthCheckResponse::ServingStatus Next(grpc::ClientReader<HealthCheckResponse>& reader) {
    HealthCheckResponse response;
    EXPECT_TRUE(reader.Read(&response)) << "the stream ended";
    return response.status();
  }

  HealthService service_{kReadiness};
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<Health::Stub> stub_;
};

TEST_F(HealthServiceTest, LivenessServesFromTheStartAndReadinessWaitsForTheDatabase) {
  EXPECT_EQ(Check(""), HealthCheckResponse::SERVING);
  EXPECT_EQ(Check(kReadiness), HealthCheckResponse::NOT_SERVING);
  service_.SetDatabaseReachable(true);
  EXPECT_EQ(Check(kReadiness), HealthCheckResponse::SERVING);
}

TEST_F(HealthServiceTest, ReadinessWaitsForTheStartupWorkToo) {
  service_.SetStarting();
  service_.SetDatabaseReachable(true);
  EXPECT_TRUE(service_.starting());
  EXPECT_EQ(Check(kReadiness), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(Check(""), HealthCheckResponse::SERVING);
  service_.SetStartupDone();
  EXPECT_FALSE(service_.starting());
  EXPECT_EQ(Check(kReadiness), HealthCheckResponse::SERVING);
}

TEST_F(HealthServiceTest, StartupWorkDoneBeforeItWasAnnouncedDoesNotHoldReadiness) {
  service_.SetStartupDone();
  service_.SetStarting();
  service_.SetDatabaseReachable(true);
  EXPECT_FALSE(service_.starting());
  EXPECT_EQ(Check(kReadiness), HealthCheckResponse::SERVING);
}

TEST_F(HealthServiceTest, WatchHearsServingOnceTheStartupWorkIsDone) {
  service_.SetStarting();
  service_.SetDatabaseReachable(true);
  grpc::ClientContext context;
  auto reader = Watch(&context, kReadiness);
  EXPECT_EQ(Next(*reader), HealthCheckResponse::NOT_SERVING);
  service_.SetStartupDone();
  EXPECT_EQ(Next(*reader), HealthCheckResponse::SERVING);
  service_.Shutdown();
  EXPECT_EQ(Next(*reader), HealthCheckResponse::NOT_SERVING);
  EXPECT_TRUE(reader->Finish().ok());
}

TEST_F(HealthServiceTest, DatabaseOutageTurnsOnlyReadinessNotServing) {
  service_.SetDatabaseReachable(true);
  service_.SetDatabaseReachable(false);
  EXPECT_EQ(Check(kReadiness), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(Check(""), HealthCheckResponse::SERVING);
}

TEST_F(HealthServiceTest, DrainingTurnsReadinessNotServingForGoodAndLeavesLiveness) {
  service_.SetDatabaseReachable(true);
  service_.SetDraining();
  service_.SetDatabaseReachable(true);
  EXPECT_EQ(Check(kReadiness), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(Check(""), HealthCheckResponse::SERVING);
}

TEST_F(HealthServiceTest, ShutdownTurnsEveryNameNotServing) {
  service_.SetDatabaseReachable(true);
  service_.Shutdown();
  EXPECT_EQ(Check(""), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(Check(kReadiness), HealthCheckResponse::NOT_SERVING);
}

TEST_F(HealthServiceTest, CheckOfAnUnknownNameIsNotFoundNamingTheKnownOnes) {
  grpc::ClientContext context;
  HealthCheckRequest request;
  request.set_service("sessionbroker.v1.Nothing");
  HealthCheckResponse response;
  grpc::Status status = stub_->Check(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), ::testing::HasSubstr(kReadiness));
}

TEST_F(HealthServiceTest, WatchSendsTheStatusThenEachChangeAndEndsWithOkOnShutdown) {
  grpc::ClientContext context;
  auto reader = Watch(&context, kReadiness);
  EXPECT_EQ(Next(*reader), HealthCheckResponse::NOT_SERVING);
  service_.SetDatabaseReachable(true);
  EXPECT_EQ(Next(*reader), HealthCheckResponse::SERVING);
  service_.SetDatabaseReachable(true);  // no change, nothing sent
  service_.SetDraining();
  EXPECT_EQ(Next(*reader), HealthCheckResponse::NOT_SERVING);
  service_.Shutdown();
  HealthCheckResponse extra;
  EXPECT_FALSE(reader->Read(&extra)) << "got " << extra.status();
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(service_.WaitForStreamsDone(absl::InfiniteFuture()));
}

TEST_F(HealthServiceTest, LivenessWatchHearsNotServingBeforeTheShutdownEndsIt) {
  grpc::ClientContext context;
  auto reader = Watch(&context, "");
  EXPECT_EQ(Next(*reader), HealthCheckResponse::SERVING);
  service_.SetDatabaseReachable(false);
  service_.Shutdown();
  EXPECT_EQ(Next(*reader), HealthCheckResponse::NOT_SERVING);
  HealthCheckResponse extra;
  EXPECT_FALSE(reader->Read(&extra));
  EXPECT_TRUE(reader->Finish().ok());
}

TEST_F(HealthServiceTest, WatchOfAnUnknownNameSaysServiceUnknownAndStaysOpen) {
  grpc::ClientContext context;
  auto reader = Watch(&context, "no.such.Service");
  EXPECT_EQ(Next(*reader), HealthCheckResponse::SERVICE_UNKNOWN);
  service_.SetDatabaseReachable(true);  // nothing changes for it
  service_.Shutdown();                  // the stream ends, cleanly
  HealthCheckResponse extra;
  EXPECT_FALSE(reader->Read(&extra)) << "got " << extra.status();
  EXPECT_TRUE(reader->Finish().ok());
}

TEST_F(HealthServiceTest, WatchStartedAfterShutdownGetsNotServingAndEnds) {
  service_.Shutdown();
  grpc::ClientContext context;
  auto reader = Watch(&context, "");
  EXPECT_EQ(Next(*reader), HealthCheckResponse::NOT_SERVING);
  HealthCheckResponse extra;
  EXPECT_FALSE(reader->Read(&extra));
  EXPECT_TRUE(reader->Finish().ok());
}

TEST_F(HealthServiceTest, CancelledWatchIsDoneAndForgotten) {
  {
    grpc::ClientContext context;
    auto reader = Watch(&context, "");
    EXPECT_EQ(Next(*reader), HealthCheckResponse::SERVING);
    context.TryCancel();
    HealthCheckResponse extra;
    while (reader->Read(&extra)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  EXPECT_TRUE(service_.WaitForStreamsDone(absl::InfiniteFuture()));
}

TEST(HealthServiceGateTest, WhenNotExemptCheckAndWatchNeedCredentials) {
  constexpr char kToken[] = "probe-token-0123456789abcdef";
  absl::StatusOr<std::string> hash = core::HashToken(kToken);
  ASSERT_TRUE(hash.ok()) << hash.status();
  absl::StatusOr<std::shared_ptr<const core::ClientDirectory>> directory =
      core::ClientDirectory::Parse(
          absl::StrCat("clients:\n  - id: probe\n    token_hashes: [\"", *hash, "\"]\n"));
  ASSERT_TRUE(directory.ok()) << directory.status();
  core::Authenticator authenticator(*directory);
  HealthService service(kReadiness, CallGate(CallAuthenticator(&authenticator)));
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  std::unique_ptr<Health::Stub> stub =
      Health::NewStub(server->InProcessChannel(grpc::ChannelArguments()));
  HealthCheckRequest request;
  HealthCheckResponse response;
  {
    grpc::ClientContext context;
    const grpc::Status status = stub->Check(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_THAT(status.error_message(), ::testing::HasSubstr("authorization: Bearer"));
  }
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", absl::StrCat("Bearer ", kToken));
    const grpc::Status status = stub->Check(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);
  }
  {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReader<HealthCheckResponse>> reader =
        stub->Watch(&context, request);
    EXPECT_FALSE(reader->Read(&response)) << "nothing is sent to an unauthenticated watcher";
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  service.Shutdown();
  server->Shutdown();
}

}  // namespace
}  // namespace sessionbroker::transport
