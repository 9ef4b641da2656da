// Specification of PoolMonitorService through a real in-process gRPC server
// over the fake database: GetPoolStatus reports the pool as it is, a watch
// gets its first snapshot at once, and bad or late watches are refused with
// a status that says why.
#include "server/transport/pool_monitor_service.h"

#include <memory>

#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "sessionbroker/v1/broker.grpc.pb.h"
#include "sessionbroker/v1/monitor.grpc.pb.h"
#include "tests/support/grpc_wire.h"
#include "tests/support/in_process_broker.h"

namespace sessionbroker::transport {
namespace {

using ::sessionbroker::testing::InProcessBroker;
using ::testing::HasSubstr;

class PoolMonitorServiceTest : public ::testing::Test {
 protected:
  void MustExecute(const std::string& sql) {
    grpc::ClientContext context;
    v1::ExecuteRequest request;
    request.set_sql(sql);
    v1::ExecuteResponse response;
    grpc::Status status = broker_.broker().Execute(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }

  InProcessBroker broker_;
};

TEST_F(PoolMonitorServiceTest, GetPoolStatusReportsTheConfigurationAndWhatRan) {
  MustExecute("SELECT 1");
  MustExecute("SELECT 2");
  grpc::ClientContext context;
  v1::PoolStatus status;
  grpc::Status rpc = broker_.monitor().GetPoolStatus(&context, v1::GetPoolStatusRequest(), &status);
  ASSERT_TRUE(rpc.ok()) << rpc.error_message();
  EXPECT_EQ(status.config().pool_size(), 2);
  EXPECT_EQ(status.config().max_overflow(), 0);
  EXPECT_FALSE(status.config().has_recycle()) << "recycling is off";
  EXPECT_EQ(status.connections().open(), 1) << "one connection served both, one after the other";
  EXPECT_EQ(status.counters().connects(), 1);
  EXPECT_EQ(status.counters().checkouts(), 2);
  EXPECT_EQ(status.counters().statements(), 2);
  EXPECT_EQ(status.time().seconds(), absl::ToUnixSeconds(broker_.clock().Now()));
}

TEST_F(PoolMonitorServiceTest, AWatchGetsItsFirstSnapshotAtOnce) {
  MustExecute("SELECT 1");
  grpc::ClientContext context;
  v1::WatchPoolStatusRequest request;
  request.mutable_interval()->set_seconds(60);
  std::unique_ptr<grpc::ClientReader<v1::PoolStatus>> stream =
      broker_.monitor().WatchPoolStatus(&context, request);
  v1::PoolStatus first;
  ASSERT_TRUE(stream->Read(&first)) << "without the fake clock moving";
  EXPECT_EQ(first.config().pool_size(), 2);
  EXPECT_EQ(first.counters().statements(), 1);
  EXPECT_EQ(first.broker().watchers(), 1);
  context.TryCancel();
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(PoolMonitorServiceTest, AtShutdownAWatchEndsCleanly) {
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReader<v1::PoolStatus>> stream =
      broker_.monitor().WatchPoolStatus(&context, v1::WatchPoolStatusRequest());
  v1::PoolStatus status;
  ASSERT_TRUE(stream->Read(&status));
  broker_.monitor_service().EndAllStreams();
  while (stream->Read(&status)) {
  }
  EXPECT_TRUE(stream->Finish().ok()) << "OK, not a cancellation";
}

TEST_F(PoolMonitorServiceTest, AnIntervalOutOfRangeIsInvalidArgumentSayingTheRange) {
  grpc::ClientContext context;
  v1::WatchPoolStatusRequest request;
  request.mutable_interval()->set_nanos(50'000'000);
  std::unique_ptr<grpc::ClientReader<v1::PoolStatus>> stream =
      broker_.monitor().WatchPoolStatus(&context, request);
  v1::PoolStatus status;
  EXPECT_FALSE(stream->Read(&status));
  grpc::Status rpc = stream->Finish();
  EXPECT_EQ(rpc.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(rpc.error_message(),
            "interval=50ms is out of range: give from 100ms to 1h (unset means 1s)");
}

TEST_F(PoolMonitorServiceTest, AWatchOpenedAfterTheStreamsEndedIsUnavailable) {
  broker_.monitor_service().EndAllStreams();
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReader<v1::PoolStatus>> stream =
      broker_.monitor().WatchPoolStatus(&context, v1::WatchPoolStatusRequest());
  v1::PoolStatus status;
  EXPECT_FALSE(stream->Read(&status));
  grpc::Status rpc = stream->Finish();
  EXPECT_EQ(rpc.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(rpc.error_message(), "the broker is shutting down; watch another instance");
}

TEST_F(PoolMonitorServiceTest, AnUnparseableRequestIsInvalidArgumentNamingTheMessage) {
  // Field 1 with wire type 7, which does not exist: no message parses.
  const std::string garbage("\x0f\x01", 2);
  grpc::Status unary = sessionbroker::testing::RawUnaryCall(
      broker_.channel(), "/sessionbroker.v1.PoolMonitor/GetPoolStatus", garbage);
  EXPECT_EQ(unary.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(unary.error_message(),
              HasSubstr("sessionbroker.v1.GetPoolStatusRequest could not be parsed"));
  EXPECT_THAT(unary.error_message(), HasSubstr("monitor.proto"));
  grpc::Status stream = sessionbroker::testing::RawStreamCall(
      broker_.channel(), "/sessionbroker.v1.PoolMonitor/WatchPoolStatus", garbage);
  EXPECT_EQ(stream.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(stream.error_message(),
              HasSubstr("sessionbroker.v1.WatchPoolStatusRequest could not be parsed"));
  EXPECT_EQ(broker_.monitor_service().streams(), 0) << "no watch was registered";
}

TEST_F(PoolMonitorServiceTest, AParseableRequestStillReachesTheMethods) {
  grpc::Status unary = sessionbroker::testing::RawUnaryCall(
      broker_.channel(), "/sessionbroker.v1.PoolMonitor/GetPoolStatus", "");
  EXPECT_TRUE(unary.ok()) << unary.error_message();
}

}  // namespace
}  // namespace sessionbroker::transport
