// Specifications of how brokerctl turns a failed call into its stderr report
// and its exit code (commands.h: ExitCodeFor, ReportFor), from statuses as
// the client library returns them (payloads carrying the SQLSTATE, the
// session reason and PostgreSQL's fields).
#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "client/cpp/brokerctl/commands.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sessionbroker/status.h"
#include "sessionbroker/v1/broker.pb.h"

namespace brokerctl {
namespace {

absl::Status UniqueViolation() {
  absl::Status s = absl::AlreadyExistsError("23505: duplicate key value");
  s.SetPayload(sessionbroker::kSqlStatePayloadUrl, absl::Cord("23505"));
  sessionbroker::v1::SqlErrorDetail detail;
  detail.set_sqlstate("23505");
  detail.set_severity("ERROR");
  detail.set_message("duplicate key value violates unique constraint \"t_pkey\"");
  detail.set_detail("Key (id)=(1) already exists.");
  detail.set_hint("pick another id");
  sessionbroker::v1::RpcStatus rpc;
  rpc.set_code(6);
  rpc.add_details()->PackFrom(detail);
  s.SetPayload(sessionbroker::kRpcStatusPayloadUrl, absl::Cord(rpc.SerializeAsString()));
  return s;
}

TEST(ExitCodeFor, FollowsTheDocumentedTable) {
  EXPECT_EQ(ExitCodeFor(absl::OkStatus()), kExitOk);
  EXPECT_EQ(ExitCodeFor(UniqueViolation()), kExitSqlError);
  EXPECT_EQ(ExitCodeFor(absl::UnavailableError("connection refused")), kExitUnavailable);
  EXPECT_EQ(ExitCodeFor(absl::NotFoundError("session not found")), kExitBrokerError);
  EXPECT_EQ(ExitCodeFor(absl::DeadlineExceededError("Deadline Exceeded")), kExitBrokerError);
}

TEST(ExitCodeFor, UnavailableWinsOverASqlstate) {
  // A database connection failure (class 08) means "try again later", as
  // an unreachable broker does.
  absl::Status s = absl::UnavailableError("08006: connection failure");
  s.SetPayload(sessionbroker::kSqlStatePayloadUrl, absl::Cord("08006"));
  EXPECT_EQ(ExitCodeFor(s), kExitUnavailable);
}

TEST(ReportFor, ReadsPostgresFieldsFromTheStatus) {
  EXPECT_EQ(FormatError(ReportFor(UniqueViolation())),
            "ERROR:  duplicate key value violates unique constraint \"t_pkey\"\n"
            "DETAIL:  Key (id)=(1) already exists.\n"
            "HINT:  pick another id\n"
            "SQLSTATE:  23505\n"
            "gRPC status:  ALREADY_EXISTS\n");
}

TEST(ReportFor, ReadsTheSessionReason) {
  absl::Status s = absl::FailedPreconditionError("session X ended");
  s.SetPayload(sessionbroker::kReasonPayloadUrl, absl::Cord("SESSION_EXPIRED"));
  EXPECT_EQ(FormatError(ReportFor(s)),
            "error: FAILED_PRECONDITION: session X ended\nreason:  SESSION_EXPIRED\n");
}

TEST(QueryParams, SendsTextValuesWithTheTypesAsked) {
  ParsedFlags flags;
  flags.values["--param"] = {"41", "x"};
  flags.values["--type"] = {"1=int4"};
  auto params = QueryParams(flags);
  ASSERT_TRUE(params.ok()) << params.status();
  ASSERT_EQ(params->size(), 2u);
  EXPECT_EQ((*params)[0].proto().string_value(), "41");
  EXPECT_EQ((*params)[0].proto().type(), "int4");
  EXPECT_EQ((*params)[1].proto().string_value(), "x");
  EXPECT_EQ((*params)[1].proto().type(), "");
}

TEST(QueryParams, RefusesTypesForParametersNotGiven) {
  ParsedFlags flags;
  flags.values["--param"] = {"1"};
  flags.values["--type"] = {"2=int4"};
  EXPECT_THAT(QueryParams(flags).status().message(), testing::HasSubstr("there is no $2"));
  flags.values["--type"] = {"int4"};
  EXPECT_THAT(QueryParams(flags).status().message(), testing::HasSubstr("expected N=TYPE"));
}

// ---- listen's lines ----

TEST(ListenLines, NotificationsReadAsPsqlPrintsThemOrAsJson) {
  sessionbroker::Notification n{"orders", "42 \"big\"", 4811};
  EXPECT_EQ(FormatNotification(n, false),
            "Asynchronous notification \"orders\" with payload \"42 \"big\"\" received from "
            "server process with PID 4811.\n");
  EXPECT_EQ(FormatNotification(n, true),
            "{\"channel\":\"orders\",\"payload\":\"42 \\\"big\\\"\",\"sender_pid\":4811}\n");
  EXPECT_EQ(FormatNotification({"orders", "", 7}, false),
            "Asynchronous notification \"orders\" received from server process with PID 7.\n");
}

TEST(ListenLines, GapsSayWhyNotificationsMayBeMissing) {
  sessionbroker::NotificationGap reconnected;
  reconnected.reason = sessionbroker::NotificationGap::Reason::kReconnected;
  reconnected.listener_pid = 900;
  EXPECT_EQ(FormatGap(reconnected, true),
            "{\"gap\":\"reconnected\",\"dropped\":0,\"listener_pid\":900}\n");
  EXPECT_THAT(FormatGap(reconnected, false),
              testing::HasSubstr("listener connection was replaced"));
  sessionbroker::NotificationGap overflow;
  overflow.reason = sessionbroker::NotificationGap::Reason::kOverflow;
  overflow.dropped = 12;
  EXPECT_THAT(FormatGap(overflow, false), testing::HasSubstr("the oldest 12 were dropped"));
  EXPECT_EQ(FormatGap(overflow, true),
            "{\"gap\":\"overflow\",\"dropped\":12,\"listener_pid\":0}\n");
}

}  // namespace
}  // namespace brokerctl
