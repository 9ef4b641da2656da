// Specification of ToGrpcStatus: the one place an absl::Status becomes a
// grpc::Status. The code carries over unchanged (absl codes are the
// google.rpc codes), the message is kept, and the SQLSTATE and the session
// layer's reason travel as trailing metadata when there is a call to carry
// them.
#include "server/transport/status_mapping.h"

#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "gmock/gmock.h"
#include "grpcpp/test/server_context_test_spouse.h"
#include "gtest/gtest.h"
#include "server/core/session/session_manager.h"
#include "server/storage/sql_error.h"

namespace sessionbroker::transport {
namespace {

using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

std::multimap<std::string, std::string> TrailersOf(grpc::ServerContext& context) {
  return grpc::testing::ServerContextTestSpouse(&context).GetTrailingMetadata();
}

TEST(StatusMappingTest, OkIsOkWithNoMetadata) {
  grpc::ServerContext context;
  grpc::Status status = ToGrpcStatus(absl::OkStatus(), &context);
  EXPECT_TRUE(status.ok());
  EXPECT_THAT(TrailersOf(context), IsEmpty());
}

TEST(StatusMappingTest, EveryCodeCarriesOverUnchangedWithItsMessage) {
  for (int code = 1; code <= 16; ++code) {
    const absl::Status in(static_cast<absl::StatusCode>(code), "what happened; what to do");
    grpc::Status out = ToGrpcStatus(in, nullptr);
    EXPECT_EQ(static_cast<int>(out.error_code()), code) << in;
    EXPECT_EQ(out.error_message(), "what happened; what to do") << in;
  }
}

TEST(StatusMappingTest, ADatabaseErrorSendsItsSqlStateAsATrailer) {
  grpc::ServerContext context;
  grpc::Status status = ToGrpcStatus(
      storage::SqlError("23505", "duplicate key value violates unique constraint"), &context);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(status.error_message(),
            "duplicate key value violates unique constraint [SQLSTATE 23505]");
  EXPECT_THAT(TrailersOf(context), UnorderedElementsAre(Pair(kSqlStateMetadataKey, "23505")));
}

TEST(StatusMappingTest, TheSessionLayersReasonTravelsAsATrailer) {
  absl::Status ended = absl::FailedPreconditionError("session s ended: its lease expired");
  ended.SetPayload(core::kSessionReasonPayloadUrl, absl::Cord("EXPIRED"));
  grpc::ServerContext context;
  grpc::Status status = ToGrpcStatus(ended, &context);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(status.error_message(), "session s ended: its lease expired");
  EXPECT_THAT(TrailersOf(context), UnorderedElementsAre(Pair(kReasonMetadataKey, "EXPIRED")));
}

TEST(StatusMappingTest, AnErrorWithNeitherSendsNoTrailer) {
  grpc::ServerContext context;
  grpc::Status status = ToGrpcStatus(absl::InvalidArgumentError("sql is empty"), &context);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(TrailersOf(context), IsEmpty());
}

TEST(StatusMappingTest, WithoutACallTheCodeAndMessageStillCarryOver) {
  grpc::Status status = ToGrpcStatus(storage::SqlError("40001", "could not serialize"), nullptr);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(status.error_message(), "could not serialize [SQLSTATE 40001]");
}

storage::SqlErrorFields UniqueViolation() {
  storage::SqlErrorFields f;
  f.sqlstate = "23505";
  f.severity = "ERROR";
  f.message = "duplicate key value violates unique constraint \"users_email_key\"";
  f.detail = "Key (email)=(a@b.c) already exists.";
  f.hint = "pick another";
  f.position = 9;
  f.schema_name = "public";
  f.table_name = "users";
  f.column_name = "email";
  f.data_type_name = "text";
  f.constraint_name = "users_email_key";
  f.statement_index = 2;
  return f;
}

TEST(StatusMappingTest, ADatabaseErrorSendsItsFieldsAsAnRpcStatusWithASqlErrorDetail) {
  const absl::Status in = storage::SqlError(UniqueViolation(), "duplicate key");
  grpc::ServerContext context;
  grpc::Status out = ToGrpcStatus(in, &context);
  EXPECT_EQ(out.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(out.error_message(), "duplicate key [SQLSTATE 23505]");
  // The sqlstate trailer stays, for grpcurl users.
  EXPECT_THAT(TrailersOf(context), UnorderedElementsAre(Pair(kSqlStateMetadataKey, "23505")));

  v1::RpcStatus rpc_status;
  ASSERT_TRUE(rpc_status.ParseFromString(out.error_details()));
  EXPECT_EQ(rpc_status.code(), static_cast<int>(grpc::StatusCode::ALREADY_EXISTS));
  EXPECT_EQ(rpc_status.message(), "duplicate key [SQLSTATE 23505]");
  ASSERT_EQ(rpc_status.details_size(), 1);
  v1::SqlErrorDetail detail;
  ASSERT_TRUE(rpc_status.details(0).UnpackTo(&detail));
  EXPECT_EQ(rpc_status.details(0).type_url(),
            "type.googleapis.com/sessionbroker.v1.SqlErrorDetail");
  EXPECT_EQ(detail.sqlstate(), "23505");
  EXPECT_EQ(detail.severity(), "ERROR");
  EXPECT_EQ(detail.message(), "duplicate key value violates unique constraint \"users_email_key\"");
  EXPECT_EQ(detail.detail(), "Key (email)=(a@b.c) already exists.");
  EXPECT_EQ(detail.hint(), "pick another");
  EXPECT_EQ(detail.position(), 9u);
  EXPECT_EQ(detail.schema_name(), "public");
  EXPECT_EQ(detail.table_name(), "users");
  EXPECT_EQ(detail.column_name(), "email");
  EXPECT_EQ(detail.data_type_name(), "text");
  EXPECT_EQ(detail.constraint_name(), "users_email_key");
  EXPECT_EQ(detail.statement_index(), 2u);
}

TEST(StatusMappingTest, TheDetailsGoWithTheStatusAlsoWithoutACall) {
  grpc::Status out = ToGrpcStatus(storage::SqlError(UniqueViolation(), "dup"), nullptr);
  v1::RpcStatus rpc_status;
  ASSERT_TRUE(rpc_status.ParseFromString(out.error_details()));
  EXPECT_EQ(rpc_status.details_size(), 1);
}

TEST(StatusMappingTest, TheBrokersOwnErrorsSendNoDetails) {
  EXPECT_EQ(ToGrpcStatus(absl::InvalidArgumentError("sql is empty"), nullptr).error_details(), "");
  // A SQLSTATE alone (an error the broker words like the server's) has none.
  EXPECT_EQ(
      ToGrpcStatus(storage::SqlError("57014", "canceling statement"), nullptr).error_details(), "");
}

}  // namespace
}  // namespace sessionbroker::transport
