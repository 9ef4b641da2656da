#include "server/storage/sql_error.h"

#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sessionbroker::storage {
namespace {

using absl::StatusCode;

struct Case {
  const char* sqlstate;
  StatusCode code;
};

void ExpectCodes(const std::vector<Case>& cases) {
  for (const Case& c : cases) {
    EXPECT_EQ(CodeForSqlState(c.sqlstate), c.code) << "SQLSTATE " << c.sqlstate;
  }
}

TEST(CodeForSqlStateTest, UniqueViolationIsAlreadyExists) {
  ExpectCodes({{"23505", StatusCode::kAlreadyExists}});
}

TEST(CodeForSqlStateTest, OtherIntegrityViolationsAreFailedPrecondition) {
  ExpectCodes({{"23000", StatusCode::kFailedPrecondition},
               {"23502", StatusCode::kFailedPrecondition},    // not_null_violation
               {"23503", StatusCode::kFailedPrecondition},    // foreign_key_violation
               {"23514", StatusCode::kFailedPrecondition},    // check_violation
               {"23P01", StatusCode::kFailedPrecondition}});  // exclusion_violation
}

TEST(CodeForSqlStateTest, TransactionRollbacksAreAbortedExceptCompletionUnknown) {
  ExpectCodes({{"40000", StatusCode::kAborted},
               {"40001", StatusCode::kAborted},    // serialization_failure
               {"40002", StatusCode::kAborted},    // integrity_constraint_violation at commit
               {"40P01", StatusCode::kAborted},    // deadlock_detected
               {"40003", StatusCode::kUnknown}});  // statement_completion_unknown
}

TEST(CodeForSqlStateTest, LockNotAvailableIsAbortedButRestOfClass55IsFailedPrecondition) {
  ExpectCodes({{"55P03", StatusCode::kAborted},
               {"55000", StatusCode::kFailedPrecondition},
               {"55006", StatusCode::kFailedPrecondition}});
}

TEST(CodeForSqlStateTest, QueryCanceledIsDeadlineExceeded) {
  ExpectCodes({{"57014", StatusCode::kDeadlineExceeded}});
}

TEST(CodeForSqlStateTest, ServerShutdownAndConnectionExceptionsAreUnavailable) {
  ExpectCodes({{"57P01", StatusCode::kUnavailable},
               {"57P02", StatusCode::kUnavailable},
               {"57P03", StatusCode::kUnavailable},
               {"08000", StatusCode::kUnavailable},
               {"08003", StatusCode::kUnavailable},
               {"08006", StatusCode::kUnavailable},
               {"08001", StatusCode::kUnavailable}});
}

TEST(CodeForSqlStateTest, ProtocolViolationOnALiveConnectionIsInvalidArgument) {
  // The server's answer to a parameter-count mismatch.
  ExpectCodes({{"08P01", StatusCode::kInvalidArgument}});
}

TEST(CodeForSqlStateTest, OtherClass57IsUnknown) {
  ExpectCodes({{"57000", StatusCode::kUnknown}, {"57P04", StatusCode::kUnknown}});
}

TEST(CodeForSqlStateTest, PrivilegeAndAuthorizationErrorsArePermissionDenied) {
  ExpectCodes({{"42501", StatusCode::kPermissionDenied},
               {"28000", StatusCode::kPermissionDenied},
               {"28P01", StatusCode::kPermissionDenied}});
}

TEST(CodeForSqlStateTest, SyntaxAndDataErrorsAreInvalidArgument) {
  ExpectCodes({{"42601", StatusCode::kInvalidArgument},    // syntax_error
               {"42P01", StatusCode::kInvalidArgument},    // undefined_table
               {"42703", StatusCode::kInvalidArgument},    // undefined_column
               {"42P02", StatusCode::kInvalidArgument},    // undefined_parameter
               {"22012", StatusCode::kInvalidArgument},    // division_by_zero
               {"22P02", StatusCode::kInvalidArgument},    // invalid_text_representation
               {"3D000", StatusCode::kInvalidArgument},    // invalid_catalog_name
               {"3F000", StatusCode::kInvalidArgument}});  // invalid_schema_name
}

TEST(CodeForSqlStateTest, StateErrorsAreFailedPrecondition) {
  ExpectCodes({{"21000", StatusCode::kFailedPrecondition},    // cardinality_violation
               {"25006", StatusCode::kFailedPrecondition},    // read_only_sql_transaction
               {"25P02", StatusCode::kFailedPrecondition},    // in_failed_sql_transaction
               {"P0001", StatusCode::kFailedPrecondition},    // raise_exception
               {"P0002", StatusCode::kFailedPrecondition}});  // no_data_found
}

TEST(CodeForSqlStateTest, FeatureNotSupportedIsUnimplemented) {
  ExpectCodes({{"0A000", StatusCode::kUnimplemented}});
}

TEST(CodeForSqlStateTest, ResourceAndLimitErrorsAreResourceExhausted) {
  ExpectCodes({{"53000", StatusCode::kResourceExhausted},
               {"53100", StatusCode::kResourceExhausted},
               {"53200", StatusCode::kResourceExhausted},
               {"53300", StatusCode::kResourceExhausted},
               {"54000", StatusCode::kResourceExhausted},
               {"54001", StatusCode::kResourceExhausted}});
}

TEST(CodeForSqlStateTest, InternalErrorsAreInternal) {
  ExpectCodes({{"XX000", StatusCode::kInternal}, {"XX001", StatusCode::kInternal}});
}

TEST(CodeForSqlStateTest, AnythingElseIsUnknown) {
  ExpectCodes({{"HV000", StatusCode::kUnknown},
               {"F0000", StatusCode::kUnknown},
               {"38000", StatusCode::kUnknown},
               {"", StatusCode::kUnknown},
               {"4", StatusCode::kUnknown},
               {"235050", StatusCode::kUnknown}});
}

TEST(SqlErrorTest, MessageEndsWithSqlStateAndCodeFollowsTheTable) {
  const absl::Status s =
      SqlError("23505", "duplicate key value violates unique constraint \"t_pkey\"");
  EXPECT_EQ(s.code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(s.message(),
            "duplicate key value violates unique constraint \"t_pkey\" [SQLSTATE 23505]");
}

TEST(SqlErrorTest, CarriesSqlStateAsPayload) {
  const absl::Status s = SqlError("40P01", "deadlock detected");
  const absl::optional<absl::Cord> payload = s.GetPayload(kSqlStatePayloadUrl);
  ASSERT_TRUE(payload.has_value());
  EXPECT_EQ(std::string(*payload), "40P01");
  EXPECT_EQ(SqlStateOf(s), "40P01");
}

TEST(SqlErrorTest, TrimsTrailingNewlinesOfTheServerMessage) {
  EXPECT_EQ(SqlError("22012", "ERROR:  division by zero\n\n").message(),
            "ERROR:  division by zero [SQLSTATE 22012]");
}

TEST(SqlErrorTest, EmptySqlStateGivesUnknownWithoutPayload) {
  const absl::Status s = SqlError("", "something odd\n");
  EXPECT_EQ(s.code(), StatusCode::kUnknown);
  EXPECT_EQ(s.message(), "something odd");
  EXPECT_EQ(SqlStateOf(s), std::nullopt);
}

TEST(SqlStateOfTest, StatusWithoutPayloadHasNoSqlState) {
  EXPECT_EQ(SqlStateOf(absl::OkStatus()), std::nullopt);
  EXPECT_EQ(SqlStateOf(absl::UnavailableError("down")), std::nullopt);
}

TEST(SqlStateOfTest, SurvivesCopyingTheStatus) {
  absl::Status original = SqlError("57014", "canceling statement due to user request");
  absl::Status copy = original;
  EXPECT_EQ(copy.code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(SqlStateOf(copy), "57014");
}

SqlErrorFields UniqueViolation() {
  SqlErrorFields f;
  f.sqlstate = "23505";
  f.severity = "ERROR";
  f.message = "duplicate key value violates unique constraint \"t_pkey\"";
  f.detail = "Key (id)=(1) already exists.";
  f.hint = "a hint: with colons, 12:34 and digits";
  f.position = 17;
  f.schema_name = "public";
  f.table_name = "t";
  f.column_name = "id";
  f.data_type_name = "int8";
  f.constraint_name = "t_pkey";
  return f;
}

TEST(SqlErrorFieldsTest, EncodingRoundTripsEveryField) {
  SqlErrorFields f = UniqueViolation();
  f.statement_index = 3;
  EXPECT_THAT(DecodeSqlErrorFields(EncodeSqlErrorFields(f)), ::testing::Optional(f));
  const SqlErrorFields empty;
  EXPECT_THAT(DecodeSqlErrorFields(EncodeSqlErrorFields(empty)), ::testing::Optional(empty));
}

TEST(SqlErrorFieldsTest, BytesThatAreNoEncodingDecodeToNothing) {
  const std::string good = EncodeSqlErrorFields(UniqueViolation());
  EXPECT_EQ(DecodeSqlErrorFields(""), std::nullopt);
  EXPECT_EQ(DecodeSqlErrorFields("23505"), std::nullopt);
  EXPECT_EQ(DecodeSqlErrorFields(good.substr(0, good.size() - 1)), std::nullopt);
  EXPECT_EQ(DecodeSqlErrorFields(good + "x"), std::nullopt);
  EXPECT_EQ(DecodeSqlErrorFields("99:x"), std::nullopt);
}

TEST(SqlErrorFieldsTest, ASqlErrorWithFieldsCarriesThemAndItsSqlState) {
  const absl::Status s = SqlError(UniqueViolation(), "duplicate key; DETAIL: Key (id)=(1)");
  EXPECT_EQ(s.code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(s.message(), "duplicate key; DETAIL: Key (id)=(1) [SQLSTATE 23505]");
  EXPECT_EQ(SqlStateOf(s), "23505");
  EXPECT_THAT(SqlErrorFieldsOf(s), ::testing::Optional(UniqueViolation()));
  // Without a SQLSTATE nothing is carried.
  EXPECT_EQ(SqlErrorFieldsOf(SqlError(SqlErrorFields(), "odd")), std::nullopt);
  // The broker's own errors have none.
  EXPECT_EQ(SqlErrorFieldsOf(SqlError("57014", "canceling statement")), std::nullopt);
  EXPECT_EQ(SqlErrorFieldsOf(absl::InvalidArgumentError("bad")), std::nullopt);
}

TEST(SqlErrorFieldsTest, RecodingAndPrefixingKeepTheFields) {
  const absl::Status s = SqlError(UniqueViolation(), "duplicate key");
  const absl::Status prefixed = WithPrefix(s, "statement 2 of 3: ");
  EXPECT_THAT(SqlErrorFieldsOf(prefixed), ::testing::Optional(UniqueViolation()));
  const absl::Status recoded = Recode(s, StatusCode::kUnavailable, "lost: ");
  EXPECT_EQ(recoded.code(), StatusCode::kUnavailable);
  EXPECT_THAT(SqlErrorFieldsOf(recoded), ::testing::Optional(UniqueViolation()));
  EXPECT_EQ(SqlStateOf(recoded), "23505");
}

TEST(SqlErrorFieldsTest, ForStatementNamesTheStatementAndSetsItsIndex) {
  const absl::Status s = ForStatement(SqlError(UniqueViolation(), "duplicate key"), 1, 3);
  EXPECT_EQ(s.code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(s.message(), "statement 2 of 3: duplicate key [SQLSTATE 23505]");
  SqlErrorFields want = UniqueViolation();
  want.statement_index = 2;
  EXPECT_THAT(SqlErrorFieldsOf(s), ::testing::Optional(want));
  // A status without fields only gets the prefix.
  const absl::Status own = ForStatement(absl::InvalidArgumentError("bad parameter"), 0, 2);
  EXPECT_EQ(own.message(), "statement 1 of 2: bad parameter");
  EXPECT_EQ(SqlErrorFieldsOf(own), std::nullopt);
}

}  // namespace
}  // namespace sessionbroker::storage
