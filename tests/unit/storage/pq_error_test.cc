#include "server/storage/pq_error.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/storage/sql_error.h"

namespace sessionbroker::storage {
namespace {

using ::testing::Optional;

TEST(PqErrorTest, VerboseTextGivesTheSqlStateThePrimaryMessageDetailAndHint) {
  const PqError e = ParseErrorText(
      "ERROR:  23505: duplicate key value violates unique constraint \"t_pkey\"\n"
      "DETAIL:  Key (id)=(1) already exists.\n"
      "SCHEMA NAME:  public\n"
      "TABLE NAME:  t\n"
      "CONSTRAINT NAME:  t_pkey\n"
      "LOCATION:  _bt_check_unique, nbtinsert.c:664\n");
  EXPECT_EQ(e.sqlstate, "23505");
  EXPECT_EQ(e.message,
            "duplicate key value violates unique constraint \"t_pkey\"; DETAIL: Key (id)=(1) "
            "already exists.");
}

TEST(PqErrorTest, TheStatementExcerptAndItsCaretAreDropped) {
  const PqError e = ParseErrorText(
      "ERROR:  42601: syntax error at or near \"FORM\"\n"
      "LINE 1: SELECT 1 FORM t\n"
      "                 ^\n"
      "HINT:  Did you mean FROM?\n"
      "LOCATION:  scanner_yyerror, scan.l:1176\n");
  EXPECT_EQ(e.sqlstate, "42601");
  EXPECT_EQ(e.message, "syntax error at or near \"FORM\"; HINT: Did you mean FROM?");
}

TEST(PqErrorTest, AFieldContinuedOnTheNextLinesBecomesOneLine) {
  const PqError e = ParseErrorText(
      "ERROR:  P0001: first line\n"
      "  second line\n"
      "DETAIL:  detail one\n"
      "  detail two\n"
      "CONTEXT:  PL/pgSQL function f() line 3 at RAISE\n"
      "  more context\n");
  EXPECT_EQ(e.sqlstate, "P0001");
  EXPECT_EQ(e.message, "first line second line; DETAIL: detail one detail two");
}

TEST(PqErrorTest, TextWithoutASqlStateKeepsItsMessage) {
  const PqError terse = ParseErrorText("ERROR:  relation \"t\" does not exist\n");
  EXPECT_EQ(terse.sqlstate, "");
  EXPECT_EQ(terse.message, "relation \"t\" does not exist");
  // libpq's own messages have no severity prefix: kept whole, lines joined.
  const PqError own = ParseErrorText(
      "connection to server at \"127.0.0.1\", port 1 failed: Connection refused\n"
      "\tIs the server running on that host and accepting TCP/IP connections?\n");
  EXPECT_EQ(own.sqlstate, "");
  EXPECT_EQ(own.message,
            "connection to server at \"127.0.0.1\", port 1 failed: Connection refused Is the "
            "server running on that host and accepting TCP/IP connections?");
}

TEST(PqErrorTest, ATranslatedSeverityIsRecognised) {
  const PqError e = ParseErrorText("FEHLER:  42P01: Relation »t« existiert nicht\n");
  EXPECT_EQ(e.sqlstate, "42P01");
  EXPECT_EQ(e.message, "Relation »t« existiert nicht");
}

TEST(PqErrorTest, SomethingThatIsNotASqlStateStaysInTheMessage) {
  const PqError e = ParseErrorText("ERROR:  abcde: not a state\n");
  EXPECT_EQ(e.sqlstate, "");
  EXPECT_EQ(e.message, "abcde: not a state");
  EXPECT_EQ(ParseErrorText("").message, "");
}

TEST(PqErrorTest, FieldsGiveTheSameMessageAsVerboseText) {
  const PqError from_fields =
      FromErrorFields({"23505", "duplicate key value violates unique constraint \"t_pkey\"",
                       "Key (id)=(1) already exists.", "Try another id."});
  const PqError from_text = ParseErrorText(
      "ERROR:  23505: duplicate key value violates unique constraint \"t_pkey\"\n"
      "DETAIL:  Key (id)=(1) already exists.\n"
      "HINT:  Try another id.\n");
  EXPECT_EQ(from_fields.sqlstate, from_text.sqlstate);
  EXPECT_EQ(from_fields.message, from_text.message);
  EXPECT_EQ(from_fields.message,
            "duplicate key value violates unique constraint \"t_pkey\"; DETAIL: Key (id)=(1) "
            "already exists.; HINT: Try another id.");
}

TEST(PqErrorTest, FieldsThatSpanLinesBecomeOneLineAndMissingOnesAreLeftOut) {
  const PqError e = FromErrorFields({"P0001", "first\nsecond", "", ""});
  EXPECT_EQ(e.sqlstate, "P0001");
  EXPECT_EQ(e.message, "first second");
  EXPECT_EQ(FromErrorFields({"", "no state", "", ""}).sqlstate, "");
  EXPECT_EQ(FromErrorFields({"bad", "malformed state", "", ""}).sqlstate, "");
}

TEST(PqErrorTest, ToStatusMapsTheSqlStateAndCarriesIt) {
  const absl::Status unique = ToStatus({"23505", "duplicate key"});
  EXPECT_EQ(unique.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(unique.message(), "duplicate key [SQLSTATE 23505]");
  EXPECT_THAT(SqlStateOf(unique), Optional(std::string("23505")));
  const absl::Status none = ToStatus({"", "libpq says no"});
  EXPECT_EQ(none.code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(none.message(), "libpq says no");
  EXPECT_EQ(SqlStateOf(none), std::nullopt);
}

TEST(PqErrorTest, StalePreparedStatementsAreToldFromOtherErrors) {
  EXPECT_TRUE(IsStalePreparedStatement("26000", "prepared statement \"s1\" does not exist"));
  EXPECT_TRUE(IsStalePreparedStatement("0A000",
                                       "ERROR:  0A000: cached plan must not change "
                                       "result type\n"));
  EXPECT_FALSE(IsStalePreparedStatement("0A000", "COPY FROM STDIN is not supported"));
  EXPECT_FALSE(IsStalePreparedStatement("42P01", "relation \"t\" does not exist"));
  EXPECT_FALSE(IsStalePreparedStatement("", "cached plan must not change result type"));
}

TEST(PqErrorTest, RefusalsForLackOfConnectionSlotsAreRecognized) {
  // As libpq reports them when a connection attempt fails.
  EXPECT_TRUE(IsOutOfConnectionSlots(
      "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  sorry, too many "
      "clients already"));
  EXPECT_TRUE(IsOutOfConnectionSlots(
      "FATAL:  remaining connection slots are reserved for non-replication superuser "
      "connections"));
  EXPECT_TRUE(IsOutOfConnectionSlots(
      "FATAL:  remaining connection slots are reserved for roles with the SUPERUSER attribute"));
  EXPECT_TRUE(IsOutOfConnectionSlots("FATAL:  too many connections for role \"app\""));
  EXPECT_TRUE(IsOutOfConnectionSlots(
      "FATAL:  Max client connections reached - max clients reached in session mode"));
  EXPECT_FALSE(IsOutOfConnectionSlots(
      "connection to server at \"127.0.0.1\", port 5432 failed: Connection refused"));
  EXPECT_FALSE(IsOutOfConnectionSlots("FATAL:  password authentication failed for user \"app\""));
}

}  // namespace
}  // namespace sessionbroker::storage
