#include "server/core/sql/sql_classifier.h"

#include <algorithm>
#include <climits>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace sessionbroker::core {
namespace {

// ---------------------------------------------------------------------------
// Empty input and statement boundaries
// ---------------------------------------------------------------------------

TEST(SqlClassifierTest, EmptyStringIsEmpty) {
  const SqlInfo info = ClassifySql("");
  EXPECT_TRUE(info.empty);
  EXPECT_FALSE(info.multiple_statements);
  EXPECT_EQ(info.max_placeholder, 0);
  EXPECT_EQ(info.first_keyword, "");
  EXPECT_FALSE(info.transaction_control);
  EXPECT_FALSE(info.changes_session_state);
}

TEST(SqlClassifierTest, WhitespaceOnlyIsEmpty) { EXPECT_TRUE(ClassifySql(" \t\r\n\f ").empty); }

TEST(SqlClassifierTest, OnlyCommentsIsEmpty) {
  const SqlInfo info = ClassifySql("-- hello\n/* SELECT 1; */ -- bye");
  EXPECT_TRUE(info.empty);
  EXPECT_FALSE(info.multiple_statements);
  EXPECT_EQ(info.first_keyword, "");
}

TEST(SqlClassifierTest, OnlySemicolonIsEmpty) {
  const SqlInfo info = ClassifySql(";");
  EXPECT_TRUE(info.empty);
  EXPECT_FALSE(info.multiple_statements);
}

TEST(SqlClassifierTest, OnlySemicolonsAndCommentsIsEmpty) {
  const SqlInfo info = ClassifySql(";; /* x */ ; -- y\n;");
  EXPECT_TRUE(info.empty);
  EXPECT_FALSE(info.multiple_statements);
}

TEST(SqlClassifierTest, StatementIsNotEmpty) {
  const SqlInfo info = ClassifySql("SELECT 1");
  EXPECT_FALSE(info.empty);
  EXPECT_FALSE(info.multiple_statements);
}

TEST(SqlClassifierTest, TrailingSemicolonIsOneStatement) {
  const SqlInfo info = ClassifySql("SELECT 1;");
  EXPECT_FALSE(info.empty);
  EXPECT_FALSE(info.multiple_statements);
}

TEST(SqlClassifierTest, TrailingSemicolonsWhitespaceAndCommentsAreOneStatement) {
  EXPECT_FALSE(ClassifySql("SELECT 1 ;; \n -- done\n /* really */ ; \n").multiple_statements);
}

TEST(SqlClassifierTest, LeadingEmptyStatementsDoNotCount) {
  EXPECT_FALSE(ClassifySql(";; SELECT 1").multiple_statements);
}

TEST(SqlClassifierTest, TwoStatementsAreMultiple) {
  EXPECT_TRUE(ClassifySql("SELECT 1; SELECT 2").multiple_statements);
}

TEST(SqlClassifierTest, TwoStatementsWithoutSpaceAreMultiple) {
  EXPECT_TRUE(ClassifySql("SELECT 1;SELECT 2;").multiple_statements);
}

TEST(SqlClassifierTest, MultipleStatementsWithTrailingCommentsAreMultiple) {
  const SqlInfo info = ClassifySql("SELECT 1; -- one\nSELECT 2; /* two */ -- end");
  EXPECT_TRUE(info.multiple_statements);
  EXPECT_EQ(info.first_keyword, "SELECT");
}

TEST(SqlClassifierTest, SemicolonInsideStringDoesNotSplit) {
  EXPECT_FALSE(ClassifySql("SELECT ';' || 'a;b'").multiple_statements);
}

TEST(SqlClassifierTest, SemicolonInsideEscapeStringDoesNotSplit) {
  EXPECT_FALSE(ClassifySql(R"(SELECT E'\'; SELECT 2')").multiple_statements);
}

TEST(SqlClassifierTest, SemicolonInsideLineCommentDoesNotSplit) {
  EXPECT_FALSE(ClassifySql("SELECT 1 -- ; SELECT 2\n").multiple_statements);
}

TEST(SqlClassifierTest, SemicolonInsideBlockCommentDoesNotSplit) {
  EXPECT_FALSE(ClassifySql("SELECT 1 /* ; SELECT 2 */").multiple_statements);
}

TEST(SqlClassifierTest, SemicolonInsideQuotedIdentifierDoesNotSplit) {
  EXPECT_FALSE(ClassifySql(R"(SELECT 1 AS "a;b")").multiple_statements);
}

TEST(SqlClassifierTest, SemicolonInsideDollarQuoteDoesNotSplit) {
  EXPECT_FALSE(ClassifySql("SELECT $$a; SELECT 2$$").multiple_statements);
}

TEST(SqlClassifierTest, SemicolonInsideTaggedDollarQuoteDoesNotSplit) {
  EXPECT_FALSE(ClassifySql("SELECT $x$a; $$; SELECT 2$x$").multiple_statements);
}

TEST(SqlClassifierTest, LineCommentEndsAtNewline) {
  EXPECT_TRUE(ClassifySql("SELECT 1 -- c\n; SELECT 2").multiple_statements);
}

TEST(SqlClassifierTest, LineCommentEndsAtCarriageReturn) {
  EXPECT_TRUE(ClassifySql("SELECT 1 -- c\r; SELECT 2").multiple_statements);
}

TEST(SqlClassifierTest, LineCommentStartsRightAfterOperator) {
  EXPECT_EQ(ClassifySql("SELECT 1 +-- $2\n $1").max_placeholder, 1);
}

// ---------------------------------------------------------------------------
// Comments
// ---------------------------------------------------------------------------

TEST(SqlClassifierTest, NestedBlockCommentIsSkippedWhole) {
  const SqlInfo info = ClassifySql("/* a /* b */ SET x = 1; $9 */ SELECT $2");
  EXPECT_EQ(info.first_keyword, "SELECT");
  EXPECT_EQ(info.max_placeholder, 2);
  EXPECT_FALSE(info.multiple_statements);
  EXPECT_FALSE(info.changes_session_state);
}

TEST(SqlClassifierTest, DeeplyNestedBlockCommentIsSkippedWhole) {
  EXPECT_EQ(ClassifySql("/* /* /* */ $7 */ $8 */ SELECT $1").max_placeholder, 1);
}

TEST(SqlClassifierTest, SlashStarSlashDoesNotCloseComment) {
  EXPECT_EQ(ClassifySql("/*/ $5 */ SELECT $1").max_placeholder, 1);
}

TEST(SqlClassifierTest, StarsBeforeCommentCloseAreSkipped) {
  EXPECT_EQ(ClassifySql("/** $5 **/ SELECT $1").max_placeholder, 1);
}

TEST(SqlClassifierTest, UnclosedNestedCommentRunsToEnd) {
  const SqlInfo info = ClassifySql("SELECT 1 /* /* */ ; SET x = 1");
  EXPECT_FALSE(info.multiple_statements);
  EXPECT_FALSE(info.changes_session_state);
}

TEST(SqlClassifierTest, CommentBetweenTokensSeparatesThem) {
  EXPECT_EQ(ClassifySql("SELECT/**/1").first_keyword, "SELECT");
}

// ---------------------------------------------------------------------------
// Placeholders
// ---------------------------------------------------------------------------

TEST(SqlClassifierTest, NoPlaceholdersGivesZero) {
  EXPECT_EQ(ClassifySql("SELECT 1").max_placeholder, 0);
}

TEST(SqlClassifierTest, SinglePlaceholderIsCounted) {
  EXPECT_EQ(ClassifySql("SELECT $1").max_placeholder, 1);
}

TEST(SqlClassifierTest, DollarTenIsTenNotOne) {
  EXPECT_EQ(ClassifySql("SELECT $10").max_placeholder, 10);
}

TEST(SqlClassifierTest, MaxPlaceholderIsTheHighestNotTheLast) {
  EXPECT_EQ(ClassifySql("SELECT $2, $10, $3").max_placeholder, 10);
}

TEST(SqlClassifierTest, RepeatedPlaceholderCountsOnce) {
  EXPECT_EQ(ClassifySql("SELECT $1 + $1 + $1").max_placeholder, 1);
}

TEST(SqlClassifierTest, PlaceholderGapsReportTheHighest) {
  EXPECT_EQ(ClassifySql("SELECT $5").max_placeholder, 5);
}

TEST(SqlClassifierTest, PlaceholderWithLeadingZerosIsItsValue) {
  EXPECT_EQ(ClassifySql("SELECT $007").max_placeholder, 7);
}

TEST(SqlClassifierTest, PlaceholderZeroLeavesMaxAtZero) {
  EXPECT_EQ(ClassifySql("SELECT $0").max_placeholder, 0);
}

TEST(SqlClassifierTest, PlaceholderAfterOperatorsAndParenthesesIsCounted) {
  EXPECT_EQ(ClassifySql("SELECT f($1)+$2*-$3 WHERE x=$4::int").max_placeholder, 4);
}

TEST(SqlClassifierTest, PlaceholderAtIntMaxIsExact) {
  EXPECT_EQ(ClassifySql("SELECT $2147483647").max_placeholder, INT_MAX);
}

TEST(SqlClassifierTest, DollarInsideIdentifierIsNotPlaceholder) {
  EXPECT_EQ(ClassifySql("SELECT a$1 FROM t").max_placeholder, 0);
}

TEST(SqlClassifierTest, DoubleDollarInsideIdentifierIsNotDollarQuote) {
  // If `a$$` opened a dollar quote, $1 would be hidden inside it.
  EXPECT_EQ(ClassifySql("SELECT a$$, $1").max_placeholder, 1);
}

TEST(SqlClassifierTest, LoneDollarIsNotPlaceholder) {
  const SqlInfo info = ClassifySql("SELECT $");
  EXPECT_EQ(info.max_placeholder, 0);
  EXPECT_FALSE(info.empty);
}

TEST(SqlClassifierTest, NonAsciiBytesAreIdentifierCharacters) {
  // "café$1" is one identifier.
  EXPECT_EQ(ClassifySql("SELECT caf\xC3\xA9$1").max_placeholder, 0);
}

TEST(SqlClassifierTest, PlaceholderInsideStringIsIgnored) {
  EXPECT_EQ(ClassifySql("SELECT '$1', $2").max_placeholder, 2);
}

TEST(SqlClassifierTest, PlaceholderInsideLineCommentIsIgnored) {
  EXPECT_EQ(ClassifySql("SELECT $1 -- $2").max_placeholder, 1);
}

TEST(SqlClassifierTest, PlaceholderInsideBlockCommentIsIgnored) {
  EXPECT_EQ(ClassifySql("SELECT $1 /* $2 */").max_placeholder, 1);
}

TEST(SqlClassifierTest, PlaceholderInsideQuotedIdentifierIsIgnored) {
  EXPECT_EQ(ClassifySql(R"(SELECT 1 AS "$1")").max_placeholder, 0);
}

TEST(SqlClassifierTest, PlaceholderInsideDollarQuoteIsIgnored) {
  EXPECT_EQ(ClassifySql("SELECT $$ $1 $$, $2").max_placeholder, 2);
}

TEST(SqlClassifierTest, PlaceholderInsideTaggedDollarQuoteIsIgnored) {
  EXPECT_EQ(ClassifySql("SELECT $fn$ SELECT $3 $fn$, $1").max_placeholder, 1);
}

TEST(SqlClassifierTest, DollarQuoteEndsOnlyAtItsOwnTag) {
  EXPECT_EQ(ClassifySql("SELECT $a$ $$ $1 $b$ $2 $b $a$, $3").max_placeholder, 3);
}

TEST(SqlClassifierTest, DollarQuoteTagIsCaseSensitive) {
  EXPECT_EQ(ClassifySql("SELECT $a$ $A$ $5 $a$, $1").max_placeholder, 1);
}

TEST(SqlClassifierTest, DollarQuoteTagMayContainDigitsAndUnderscores) {
  EXPECT_EQ(ClassifySql("SELECT $_x1$ $5 $_x1$, $1").max_placeholder, 1);
}

TEST(SqlClassifierTest, DollarRightBeforeClosingDelimiterIsInBody) {
  // The body is `x$`; the closing `$a$` follows it directly.
  EXPECT_EQ(ClassifySql("SELECT $a$x$$a$, $1").max_placeholder, 1);
}

TEST(SqlClassifierTest, EmptyDollarQuoteIsAString) {
  EXPECT_EQ(ClassifySql("SELECT $$$$, $1").max_placeholder, 1);
}

TEST(SqlClassifierTest, UnterminatedDollarQuoteRunsToEnd) {
  const SqlInfo info = ClassifySql("SELECT $x$ $1; SET a = 1 $y$");
  EXPECT_EQ(info.max_placeholder, 0);
  EXPECT_FALSE(info.multiple_statements);
  EXPECT_FALSE(info.changes_session_state);
}

// ---------------------------------------------------------------------------
// String literals and quoted identifiers
// ---------------------------------------------------------------------------

TEST(SqlClassifierTest, DoubledQuoteDoesNotEndString) {
  EXPECT_EQ(ClassifySql("SELECT 'it''s $1', $2").max_placeholder, 2);
}

TEST(SqlClassifierTest, EmptyStringLiteralIsAToken) {
  const SqlInfo info = ClassifySql("SELECT '', $1");
  EXPECT_EQ(info.max_placeholder, 1);
}

TEST(SqlClassifierTest, BackslashIsLiteralInStandardString) {
  // '\' is a complete string: the $1 after it is real.
  EXPECT_EQ(ClassifySql(R"(SELECT '\', $1)").max_placeholder, 1);
}

TEST(SqlClassifierTest, BackslashEscapesQuoteInEscapeString) {
  // E'\'' is a string holding one quote: the $1 after it is real.
  EXPECT_EQ(ClassifySql(R"(SELECT E'\'', $1)").max_placeholder, 1);
}

TEST(SqlClassifierTest, EscapedQuoteDoesNotEndEscapeString) {
  EXPECT_EQ(ClassifySql(R"(SELECT E'\', $1')").max_placeholder, 0);
}

TEST(SqlClassifierTest, LowercaseEPrefixStartsEscapeString) {
  EXPECT_EQ(ClassifySql(R"(SELECT e'a\'b $1', $2)").max_placeholder, 2);
}

TEST(SqlClassifierTest, EscapedBackslashDoesNotEscapeClosingQuote) {
  EXPECT_EQ(ClassifySql(R"(SELECT E'\\', $1)").max_placeholder, 1);
}

TEST(SqlClassifierTest, DoubledQuoteDoesNotEndEscapeString) {
  EXPECT_EQ(ClassifySql("SELECT E'a''b $1', $2").max_placeholder, 2);
}

TEST(SqlClassifierTest, IdentifierEndingInEIsNotEscapePrefix) {
  // `type'\'` is the name `type` then the standard string '\'.
  EXPECT_EQ(ClassifySql(R"(SELECT type'\', $1)").max_placeholder, 1);
}

TEST(SqlClassifierTest, EPrefixSeparatedBySpaceIsAName) {
  // `E '\'` is the name E then the standard string '\'.
  EXPECT_EQ(ClassifySql(R"(SELECT E '\', $1)").max_placeholder, 1);
}

TEST(SqlClassifierTest, NationalStringIsSkipped) {
  EXPECT_EQ(ClassifySql("SELECT N'$1 it''s', n'$2', $3").max_placeholder, 3);
}

TEST(SqlClassifierTest, BitStringsAreSkipped) {
  EXPECT_EQ(ClassifySql("SELECT B'$1', b'0', X'$2', x'1F', $3").max_placeholder, 3);
}

TEST(SqlClassifierTest, UnicodeStringIsSkipped) {
  EXPECT_EQ(ClassifySql(R"(SELECT U&'d\0061t$1', u&'$2', $3)").max_placeholder, 3);
}

TEST(SqlClassifierTest, UnicodeStringWithUescapeIsSkipped) {
  EXPECT_EQ(ClassifySql("SELECT U&'d!0061t$1' UESCAPE '!', $2").max_placeholder, 2);
}

TEST(SqlClassifierTest, QuotedIdentifierWithDoubledQuotesIsSkipped) {
  EXPECT_EQ(ClassifySql(R"(SELECT 1 AS "my ""col"" $1", $2)").max_placeholder, 2);
}

TEST(SqlClassifierTest, UnicodeQuotedIdentifierIsSkipped) {
  EXPECT_EQ(ClassifySql(R"(SELECT 1 AS U&"d\0061t$1", $2)").max_placeholder, 2);
}

TEST(SqlClassifierTest, UnterminatedStringRunsToEnd) {
  const SqlInfo info = ClassifySql("SELECT 'abc; SET x = 1; $1");
  EXPECT_FALSE(info.empty);
  EXPECT_FALSE(info.multiple_statements);
  EXPECT_FALSE(info.changes_session_state);
  EXPECT_EQ(info.max_placeholder, 0);
}

TEST(SqlClassifierTest, UnterminatedEscapeStringEndingInBackslashRunsToEnd) {
  const SqlInfo info = ClassifySql(R"(SELECT E'abc\)");
  EXPECT_FALSE(info.empty);
  EXPECT_EQ(info.first_keyword, "SELECT");
}

TEST(SqlClassifierTest, UnterminatedQuotedIdentifierRunsToEnd) {
  const SqlInfo info = ClassifySql(R"(SELECT "abc; DISCARD ALL)");
  EXPECT_FALSE(info.multiple_statements);
  EXPECT_FALSE(info.changes_session_state);
}

TEST(SqlClassifierTest, TextEndingInPrefixLetterIsAName) {
  EXPECT_EQ(ClassifySql("SELECT 1 AS u").first_keyword, "SELECT");
  EXPECT_FALSE(ClassifySql("SELECT U&").empty);
}

// ---------------------------------------------------------------------------
// first_keyword
// ---------------------------------------------------------------------------

TEST(SqlClassifierTest, FirstKeywordIsUpperCased) {
  EXPECT_EQ(ClassifySql("select 1").first_keyword, "SELECT");
}

TEST(SqlClassifierTest, FirstKeywordIgnoresMixedCase) {
  EXPECT_EQ(ClassifySql("SeLeCt 1").first_keyword, "SELECT");
}

TEST(SqlClassifierTest, FirstKeywordSkipsWhitespaceAndComments) {
  EXPECT_EQ(ClassifySql("  -- c\n /* d */ insert INTO t VALUES (1)").first_keyword, "INSERT");
}

TEST(SqlClassifierTest, FirstKeywordSkipsLeadingParentheses) {
  EXPECT_EQ(ClassifySql("((SELECT 1))").first_keyword, "SELECT");
}

TEST(SqlClassifierTest, FirstKeywordOfWithQueryIsWith) {
  EXPECT_EQ(ClassifySql("WITH x AS (SELECT 1) SELECT * FROM x").first_keyword, "WITH");
}

TEST(SqlClassifierTest, FirstKeywordComesFromFirstStatement) {
  EXPECT_EQ(ClassifySql("SELECT 1; BEGIN").first_keyword, "SELECT");
}

TEST(SqlClassifierTest, FirstKeywordSkipsEmptyStatements) {
  EXPECT_EQ(ClassifySql("; ; vacuum").first_keyword, "VACUUM");
}

TEST(SqlClassifierTest, FirstKeywordIsEmptyWhenStatementStartsWithQuotedName) {
  EXPECT_EQ(ClassifySql(R"("select" 1)").first_keyword, "");
}

TEST(SqlClassifierTest, FirstKeywordIsEmptyWhenStatementStartsWithNumber) {
  EXPECT_EQ(ClassifySql("1").first_keyword, "");
}

TEST(SqlClassifierTest, FirstKeywordOfOnlyCommentsIsEmpty) {
  EXPECT_EQ(ClassifySql("/* SELECT */").first_keyword, "");
}

// ---------------------------------------------------------------------------
// transaction_control
// ---------------------------------------------------------------------------

struct NamedSql {
  const char* name;
  const char* sql;
};

std::string TestName(const testing::TestParamInfo<NamedSql>& info) { return info.param.name; }

class TransactionControlTest : public testing::TestWithParam<NamedSql> {};

TEST_P(TransactionControlTest, IsTransactionControl) {
  EXPECT_TRUE(ClassifySql(GetParam().sql).transaction_control);
}

INSTANTIATE_TEST_SUITE_P(
    SqlClassifierTest, TransactionControlTest,
    testing::Values(NamedSql{"Begin", "BEGIN"}, NamedSql{"BeginLowercase", "begin"},
                    NamedSql{"BeginIsolationLevel", "BEGIN ISOLATION LEVEL SERIALIZABLE"},
                    NamedSql{"BeginWithTrailingSemicolon", "BEGIN;"},
                    NamedSql{"StartTransaction", "START TRANSACTION READ ONLY"},
                    NamedSql{"Commit", "COMMIT"}, NamedSql{"CommitAndChain", "COMMIT AND CHAIN"},
                    NamedSql{"End", "END"}, NamedSql{"Rollback", "ROLLBACK"},
                    NamedSql{"RollbackToSavepoint", "ROLLBACK TO SAVEPOINT s"},
                    NamedSql{"Abort", "ABORT"}, NamedSql{"Savepoint", "SAVEPOINT s"},
                    NamedSql{"ReleaseSavepoint", "RELEASE SAVEPOINT s"},
                    NamedSql{"Release", "release s"},
                    NamedSql{"PrepareTransaction", "PREPARE TRANSACTION 'x'"},
                    NamedSql{"PrepareTransactionDollarQuotedGid", "prepare transaction $$x$$"},
                    NamedSql{"CommitPrepared", "COMMIT PREPARED 'x'"},
                    NamedSql{"RollbackPrepared", "ROLLBACK PREPARED 'x'"},
                    NamedSql{"AfterComment", "/* c */ -- d\nCOMMIT"}),
    TestName);

TEST(SqlClassifierTest, SelectIsNotTransactionControl) {
  EXPECT_FALSE(ClassifySql("SELECT 1").transaction_control);
}

TEST(SqlClassifierTest, TransactionKeywordAfterFirstWordIsNotTransactionControl) {
  EXPECT_FALSE(ClassifySql("SELECT begin, commit FROM t").transaction_control);
}

TEST(SqlClassifierTest, TransactionKeywordInStringIsNotTransactionControl) {
  EXPECT_FALSE(ClassifySql("SELECT $$BEGIN$$, 'COMMIT'").transaction_control);
}

TEST(SqlClassifierTest, TransactionControlInLaterStatementIsReported) {
  const SqlInfo info = ClassifySql("SELECT 1; COMMIT");
  EXPECT_TRUE(info.transaction_control);
  EXPECT_EQ(info.first_keyword, "SELECT");
}

TEST(SqlClassifierTest, PrepareTransactionIsNotSessionState) {
  const SqlInfo info = ClassifySql("PREPARE TRANSACTION 'x'");
  EXPECT_TRUE(info.transaction_control);
  EXPECT_FALSE(info.changes_session_state);
  EXPECT_EQ(info.first_keyword, "PREPARE");
}

TEST(SqlClassifierTest, PrepareStatementIsSessionStateNotTransactionControl) {
  const SqlInfo info = ClassifySql("PREPARE p AS SELECT 1");
  EXPECT_FALSE(info.transaction_control);
  EXPECT_TRUE(info.changes_session_state);
}

TEST(SqlClassifierTest, PrepareStatementNamedTransactionIsSessionState) {
  // TRANSACTION is an unreserved keyword, so it can name a statement.
  const SqlInfo info = ClassifySql("PREPARE transaction AS SELECT 1");
  EXPECT_FALSE(info.transaction_control);
  EXPECT_TRUE(info.changes_session_state);
}

TEST(SqlClassifierTest, CommitPreparedIsNotSessionState) {
  const SqlInfo info = ClassifySql("COMMIT PREPARED 'x'");
  EXPECT_TRUE(info.transaction_control);
  EXPECT_FALSE(info.changes_session_state);
}

// ---------------------------------------------------------------------------
// changes_session_state
// ---------------------------------------------------------------------------

class SessionStateTest : public testing::TestWithParam<NamedSql> {};

TEST_P(SessionStateTest, ChangesSessionState) {
  EXPECT_TRUE(ClassifySql(GetParam().sql).changes_session_state);
}

INSTANTIATE_TEST_SUITE_P(
    SqlClassifierTest, SessionStateTest,
    testing::Values(
        NamedSql{"Set", "SET search_path = app"},
        NamedSql{"SetLowercase", "set search_path to app"},
        NamedSql{"SetQuotedName", R"(SET "search_path" = app)"},
        NamedSql{"SetSession", "SET SESSION search_path = app"},
        NamedSql{"SetSessionAuthorization", "SET SESSION AUTHORIZATION bob"},
        NamedSql{"SetSessionCharacteristics",
                 "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"},
        NamedSql{"SetRole", "SET ROLE admin"}, NamedSql{"SetTimeZone", "SET TIME ZONE 'UTC'"},
        NamedSql{"SetVariableNamedLocalDotSomething", "SET local.x = 1"},
        NamedSql{"SetVariableNamedTransactionDotSomething", "SET transaction.x = 1"},
        NamedSql{"Reset", "RESET search_path"},
        NamedSql{"DoBlockCodeIsOpaque", "DO $$ BEGIN PERFORM 1; END $$"},
        NamedSql{"CallProcedureIsOpaque", "CALL my_proc(1)"},
        NamedSql{"SetseedSeedsTheSessionsRandom", "SELECT setseed(0.5)"},
        NamedSql{"UpdatePgSettingsRunsASessionSet",
                 "UPDATE pg_settings SET setting = 'x' WHERE name = 'search_path'"},
        NamedSql{"ResetAll", "reset all"}, NamedSql{"Prepare", "PREPARE p(int) AS SELECT $1"},
        NamedSql{"Deallocate", "DEALLOCATE p"}, NamedSql{"DeallocateAll", "DEALLOCATE ALL"},
        NamedSql{"Listen", "LISTEN chan"}, NamedSql{"Unlisten", "UNLISTEN *"},
        NamedSql{"Declare", "DECLARE c CURSOR WITH HOLD FOR SELECT 1"},
        NamedSql{"Discard", "DISCARD ALL"}, NamedSql{"Load", "LOAD 'auto_explain'"},
        NamedSql{"CreateTempTable", "CREATE TEMP TABLE t (a int)"},
        NamedSql{"CreateTempTableLowercase", "create temp table t (a int)"},
        NamedSql{"CreateTemporaryView", "CREATE TEMPORARY VIEW v AS SELECT 1"},
        NamedSql{"CreateLocalTemporaryTable", "CREATE LOCAL TEMPORARY TABLE t (a int)"},
        NamedSql{"CreateOrReplaceTempView", "CREATE OR REPLACE TEMP VIEW v AS SELECT 1"},
        NamedSql{"CreateTempSequence", "CREATE TEMP SEQUENCE s"},
        NamedSql{"SelectIntoTemp", "SELECT * INTO TEMP t FROM src"},
        NamedSql{"CreateTableAsTemp", "CREATE TEMPORARY TABLE t AS SELECT 1"},
        NamedSql{"PgTempSchema", "SELECT * FROM pg_temp.t"},
        NamedSql{"PgTempNumberedSchema", "SELECT * FROM pg_temp_3.t"},
        NamedSql{"PgTempUppercase", "CREATE TABLE PG_TEMP.t (a int)"},
        NamedSql{"PgTempQuoted", R"(SELECT * FROM "pg_temp".t)"},
        NamedSql{"SetConfig", "select set_config('a','b',false)"},
        NamedSql{"SetConfigUppercase", "SELECT SET_CONFIG('a', 'b', false)"},
        NamedSql{"SetConfigSchemaQualified", "SELECT pg_catalog.set_config('a', 'b', false)"},
        NamedSql{"SetConfigQuoted", R"(SELECT "set_config"('a', 'b', false))"},
        NamedSql{"SetConfigSpaceBeforeParen", "SELECT set_config ('a', 'b', false)"},
        NamedSql{"AdvisoryLock", "SELECT pg_advisory_lock(1)"},
        NamedSql{"AdvisoryLockShared", "SELECT pg_advisory_lock_shared(1)"},
        NamedSql{"TryAdvisoryLock", "SELECT pg_try_advisory_lock(1, 2)"},
        NamedSql{"TryAdvisoryLockShared", "SELECT pg_try_advisory_lock_shared(1)"},
        NamedSql{"DblinkConnect", "SELECT dblink_connect('c', 'dbname=x')"},
        NamedSql{"DblinkConnectU", "SELECT dblink_connect_u('c', 'dbname=x')"},
        NamedSql{"LoOpen", "SELECT lo_open(1234, 262144)"},
        NamedSql{"FunctionInWhereClause", "SELECT 1 FROM t WHERE pg_try_advisory_lock(t.id)"},
        NamedSql{"SetInSecondStatement", "SELECT 1; SET x = 1"},
        NamedSql{"TempInSecondStatement", "SELECT 1; CREATE TEMP TABLE t ()"},
        NamedSql{"SetAfterLeadingComment", "/* hi */ SET x = 1"},
        NamedSql{"UnicodeEscapedSetConfig",
                 R"(SELECT U&"set\005fconfig"('search_path','evil',false))"},
        NamedSql{"UnicodeEscapedAdvisoryLock", R"(SELECT U&"pg\005fadvisory\005flock"(42))"},
        NamedSql{"UnicodeEscapedPgTemp", R"(CREATE TABLE U&"pg\005ftemp".t (a int))"},
        NamedSql{"QueryToXmlRunsSql",
                 "SELECT query_to_xml('select set_config(''role'',''x'',false)',false,false,'')"},
        NamedSql{"TsStatRunsSql", "SELECT * FROM ts_stat('select to_tsvector(''a'')')"},
        NamedSql{"SetSessionCharacteristicsReadOnly",
                 "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"},
        NamedSql{"DeclareWithHold", "DECLARE c CURSOR WITH HOLD FOR SELECT 1"},
        NamedSql{"Execute", "EXECUTE p(1)"},
        NamedSql{"SetConfigInCte", "WITH x AS (SELECT set_config('a','b',false)) SELECT * FROM x"},
        NamedSql{"UpdatePgSettingsInCte",
                 "WITH u AS (UPDATE pg_catalog.pg_settings SET setting = 'x' RETURNING 1) "
                 "SELECT 1"}),
    TestName);

class NoSessionStateTest : public testing::TestWithParam<NamedSql> {};

TEST_P(NoSessionStateTest, DoesNotChangeSessionState) {
  EXPECT_FALSE(ClassifySql(GetParam().sql).changes_session_state);
}

INSTANTIATE_TEST_SUITE_P(
    SqlClassifierTest, NoSessionStateTest,
    testing::Values(
        NamedSql{"Empty", ""}, NamedSql{"Select", "SELECT * FROM t WHERE a = $1"},
        NamedSql{"Insert", "INSERT INTO t VALUES (1)"}, NamedSql{"UpdateSet", "UPDATE t SET a = 1"},
        NamedSql{"InsertOnConflictDoUpdateSet",
                 "INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2"},
        NamedSql{"SetLocal", "SET LOCAL search_path = app"},
        NamedSql{"SetLocalLowercase", "set local statement_timeout = 0"},
        NamedSql{"SetLocalQualifiedVariable", "SET LOCAL app.user_id = '7'"},
        NamedSql{"SetLocalWithCommentBetween", "SET /* c */ LOCAL x = 1"},
        NamedSql{"SetLocalRole", "SET LOCAL ROLE admin"},
        NamedSql{"SetTransactionIsolationLevel", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"},
        NamedSql{"SetTransactionSnapshot", "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'"},
        NamedSql{"SetConstraints", "SET CONSTRAINTS ALL DEFERRED"},
        NamedSql{"SetLocalAlone", "SET LOCAL"},
        NamedSql{"PrepareTransaction", "PREPARE TRANSACTION 'x'"},
        NamedSql{"PrepareTransactionEscapeGid", R"(PREPARE TRANSACTION E'x\'')"},
        NamedSql{"CommitPrepared", "COMMIT PREPARED 'x'"}, NamedSql{"Begin", "BEGIN"},
        NamedSql{"SelectInto", "SELECT * INTO new_table FROM t"},
        NamedSql{"CreateTableAs", "CREATE TABLE t2 AS SELECT 1"},
        NamedSql{"CreateUnloggedTable", "CREATE UNLOGGED TABLE t (a int)"},
        NamedSql{"AdvisoryXactLock", "select pg_advisory_xact_lock(1)"},
        NamedSql{"AdvisoryXactLockShared", "SELECT pg_advisory_xact_lock_shared(1)"},
        NamedSql{"TryAdvisoryXactLock", "SELECT pg_try_advisory_xact_lock(1)"},
        NamedSql{"CurrentSetting", "SELECT current_setting('search_path')"},
        NamedSql{"LongerNameContainingSetConfig", "SELECT my_set_config(1), set_config_x(2)"},
        NamedSql{"NameContainingTemp", "SELECT temperature, attempt FROM t"},
        NamedSql{"NameEndingInPgTemp", "SELECT not_pg_temp FROM t"},
        NamedSql{"FunctionNameInString", "SELECT 'pg_advisory_lock'"},
        NamedSql{"FunctionNameInEscapeString", R"(SELECT E'\'set_config(1)')"},
        NamedSql{"FunctionNameInDollarQuote", "SELECT $$ SELECT set_config('a', 'b', false) $$"},
        NamedSql{"FunctionNameInLineComment", "SELECT 1 -- pg_advisory_lock(1)"},
        NamedSql{"FunctionNameInBlockComment", "SELECT 1 /* lo_open(1, 2) */"},
        NamedSql{"PgTempInString", "SELECT 'pg_temp.t'"},
        NamedSql{"PgTempInComment", "SELECT 1 /* pg_temp.t */"},
        NamedSql{"TempInString", "SELECT 'CREATE TEMP TABLE t'"},
        NamedSql{"TempInComment", "SELECT 1 -- temp\n"},
        NamedSql{"TempInNestedComment", "SELECT 1 /* /* */ TEMP */"},
        NamedSql{"TempAsQuotedIdentifier", R"(SELECT "temp" FROM t)"},
        NamedSql{"TempInDollarQuote", "SELECT $tag$ TEMP $tag$"},
        NamedSql{"SetKeywordInString", "SELECT 'SET x = 1'"},
        NamedSql{"ListenAfterFirstWord", "SELECT listen, reset FROM t"},
        NamedSql{"DiscardInSecondStatementString", "SELECT 1; SELECT 'DISCARD ALL'"}),
    TestName);

TEST(SqlClassifierTest, SetLocalIsNotSessionStateButSetIs) {
  EXPECT_FALSE(ClassifySql("set local search_path = a").changes_session_state);
  EXPECT_TRUE(ClassifySql("set search_path = a").changes_session_state);
}

TEST(SqlClassifierTest, SetLocalFollowedBySetInNextStatementIsSessionState) {
  EXPECT_TRUE(ClassifySql("SET LOCAL x = 1; SET y = 2").changes_session_state);
}

TEST(SqlClassifierTest, SetIsNotTransactionControl) {
  const SqlInfo info = ClassifySql("SET x = 1");
  EXPECT_FALSE(info.transaction_control);
  EXPECT_EQ(info.first_keyword, "SET");
}

TEST(SqlClassifierTest, SelectSetConfigIsSessionStateWithKeywordSelect) {
  const SqlInfo info = ClassifySql("select set_config('a','b',false)");
  EXPECT_TRUE(info.changes_session_state);
  EXPECT_FALSE(info.transaction_control);
  EXPECT_EQ(info.first_keyword, "SELECT");
}

TEST(SqlClassifierTest, CreateTempTableHasKeywordCreate) {
  const SqlInfo info = ClassifySql("create temp table t (a int)");
  EXPECT_TRUE(info.changes_session_state);
  EXPECT_EQ(info.first_keyword, "CREATE");
}

TEST(SqlClassifierCopyTest, CopyToStdoutAndFromStdinAreFlagged) {
  EXPECT_TRUE(ClassifySql("COPY t TO STDOUT").copy_stdio);
  EXPECT_TRUE(ClassifySql("copy t (a, b) from stdin with (format csv)").copy_stdio);
  EXPECT_TRUE(ClassifySql("COPY (SELECT 1) TO STDOUT").copy_stdio);
}

TEST(SqlClassifierCopyTest, CopyToAFileOrAWordStdinElsewhereIsNotFlagged) {
  EXPECT_FALSE(ClassifySql("COPY t TO '/tmp/t.csv'").copy_stdio);
  EXPECT_FALSE(ClassifySql("SELECT stdin FROM t").copy_stdio);
  EXPECT_FALSE(ClassifySql("COPY t TO '/tmp/x'; SELECT stdout FROM t").copy_stdio);
  EXPECT_FALSE(ClassifySql("COPY t FROM 'stdin.csv'").copy_stdio);
}

// ---- Savepoint statements ----------------------------------------------------------

struct SavepointCase {
  std::string sql;
  SqlInfo::Savepoint kind;
  std::string name;
};

TEST(SqlClassifierTest, SavepointStatementsAreRecognizedWithTheirNameAsPostgresComparesIt) {
  using S = SqlInfo::Savepoint;
  const SavepointCase cases[] = {
      {"SAVEPOINT a", S::kSavepoint, "a"},
      {"savepoint MixedCase;", S::kSavepoint, "mixedcase"},
      {"SAVEPOINT \"Quoted \"\"x\"\"\"", S::kSavepoint, "Quoted \"x\""},
      {"RELEASE SAVEPOINT a", S::kRelease, "a"},
      {"release A", S::kRelease, "a"},
      {"ROLLBACK TO SAVEPOINT a", S::kRollbackTo, "a"},
      {"rollback to a", S::kRollbackTo, "a"},
      {"ROLLBACK WORK TO SAVEPOINT a", S::kRollbackTo, "a"},
      {"ROLLBACK TRANSACTION TO b -- comment", S::kRollbackTo, "b"},
      {"/* c */ SAVEPOINT a ;", S::kSavepoint, "a"},
      {std::string("SAVEPOINT ") + std::string(70, 'x'), S::kSavepoint, std::string(63, 'x')},
  };
  for (const SavepointCase& c : cases) {
    const SqlInfo info = ClassifySql(c.sql);
    EXPECT_EQ(info.savepoint, c.kind) << c.sql;
    EXPECT_EQ(info.savepoint_name, c.name) << c.sql;
    EXPECT_TRUE(info.transaction_control) << c.sql;
  }
}

TEST(SqlClassifierTest, ALongSavepointNameIsCutAtACharacterBoundary) {
  // 62 ASCII bytes, then a 2-byte character that would straddle byte 63.
  const std::string name = std::string(62, 'x') + "\xC3\xA9";
  EXPECT_EQ(ClassifySql("SAVEPOINT \"" + name + "\"").savepoint_name, std::string(62, 'x'));
}

TEST(SqlClassifierTest, OtherTransactionControlIsNotASavepointStatement) {
  for (const char* sql :
       {"ROLLBACK", "ROLLBACK WORK", "ROLLBACK AND CHAIN", "ROLLBACK PREPARED 'x'", "SAVEPOINT",
        "RELEASE", "ROLLBACK TO", "SAVEPOINT a b", "SAVEPOINT 'a'", "SAVEPOINT a; SELECT 1",
        "SELECT 1; SAVEPOINT a", "COMMIT", "BEGIN", "SELECT 'SAVEPOINT a'"}) {
    EXPECT_EQ(ClassifySql(sql).savepoint, SqlInfo::Savepoint::kNone) << sql;
  }
}

// ---------------------------------------------------------------------------
// Text PostgreSQL's parser refuses
// ---------------------------------------------------------------------------

TEST(SqlClassifierUnparsedTest, SyntaxErrorIsOneStatementOfUnknownKindThatNeedsAReset) {
  const SqlInfo info = ClassifySql("SELEC 1");
  EXPECT_FALSE(info.parsed);
  EXPECT_FALSE(info.parse_error.empty());
  EXPECT_FALSE(info.empty);
  EXPECT_FALSE(info.multiple_statements);
  EXPECT_FALSE(info.leaves_no_state);
  EXPECT_EQ(info.statement_kinds, std::vector<std::string>{"other"});
  EXPECT_EQ(info.first_keyword, "SELEC");
}

TEST(SqlClassifierUnparsedTest, UnterminatedCommentIsLeftToPostgres) {
  const SqlInfo info = ClassifySql("/* SELECT 1; SELECT 2");
  EXPECT_FALSE(info.parsed);
  EXPECT_FALSE(info.empty);
  EXPECT_EQ(info.first_keyword, "");
}

TEST(SqlClassifierUnparsedTest, PlaceholdersOfUnparsedTextAreNotCounted) {
  EXPECT_EQ(ClassifySql("SELECT $1 FROM").max_placeholder, 0);
}

TEST(SqlClassifierUnparsedTest, FirstKeywordOfUnparsedTextIsItsFirstWord) {
  EXPECT_EQ(ClassifySql("my_proc$2x").first_keyword, "MY_PROC$2X");
  EXPECT_EQ(ClassifySql("'abc'; SELECT 1").first_keyword, "");
  EXPECT_TRUE(ClassifySql("(").first_keyword.empty());
}

TEST(SqlClassifierTest, SemicolonsInsideARuleBodyDoNotSplitTheStatement) {
  EXPECT_FALSE(ClassifySql("CREATE RULE r AS ON INSERT TO t DO ALSO "
                           "(INSERT INTO a VALUES (1); INSERT INTO b VALUES (2))")
                   .multiple_statements);
}

TEST(SqlClassifierTest, PlaceholdersAreCountedWhereverTheyAppear) {
  EXPECT_EQ(ClassifySql("SELECT 1 FROM t WHERE a = ANY($3::int[]) LIMIT $2").max_placeholder, 3);
  EXPECT_EQ(ClassifySql("INSERT INTO t VALUES ($1, $2) RETURNING $4").max_placeholder, 4);
}

// ---------------------------------------------------------------------------
// leaves_no_state: only what is provable from the text
// ---------------------------------------------------------------------------

class ProvablyStatelessTest : public testing::TestWithParam<NamedSql> {};

TEST_P(ProvablyStatelessTest, LeavesNoState) {
  const SqlInfo info = ClassifySql(GetParam().sql);
  EXPECT_TRUE(info.parsed) << info.parse_error;
  EXPECT_TRUE(info.leaves_no_state);
  EXPECT_FALSE(info.changes_session_state);
  EXPECT_FALSE(info.changes_role);
}

INSTANTIATE_TEST_SUITE_P(
    SqlClassifierTest, ProvablyStatelessTest,
    testing::Values(
        NamedSql{"Empty", ""}, NamedSql{"SelectOne", "SELECT 1"},
        NamedSql{"Parameters", "SELECT $1::int8, $2::text"},
        NamedSql{"CatalogQualifiedOperator", "SELECT $1::int8 OPERATOR(pg_catalog.+) 1"},
        NamedSql{"Values", "VALUES (1, 'a'), (2, 'b')"}, NamedSql{"Show", "SHOW search_path"},
        NamedSql{"Explain", "EXPLAIN SELECT 1"},
        NamedSql{"AllowedBuiltins",
                 "SELECT now(), pg_catalog.length('abc'), pg_catalog.current_setting('TimeZone'), "
                 "pg_backend_pid(), coalesce(null, 1), greatest(1, 2)"},
        NamedSql{"CaseAndSubquery",
                 "SELECT CASE WHEN x IS NULL THEN 'a' ELSE 'b' END FROM (SELECT 2 AS x) s"},
        NamedSql{"SetReturningBuiltin", "SELECT g FROM pg_catalog.generate_series(1, 3) AS g"},
        NamedSql{"Aggregate",
                 "SELECT count(*), pg_catalog.sum(g) FROM pg_catalog.generate_series(1, 3) g"},
        NamedSql{"CatalogRead", "SELECT relname FROM pg_catalog.pg_class ORDER BY 1 LIMIT $1"},
        NamedSql{"UnqualifiedCatalogView", "SELECT count(*) FROM pg_stat_activity"},
        NamedSql{"SqlValueFunctions", "SELECT current_user, session_user, current_date"},
        NamedSql{"Cte", "WITH x AS (SELECT 1 AS a) SELECT a FROM x"},
        NamedSql{"CteSeesEarlierCte", "WITH x AS (SELECT 1 AS a), y AS (SELECT a FROM x) TABLE y"},
        NamedSql{
            "RecursiveCte",
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n OPERATOR(pg_catalog.+) 1 FROM r "
            "WHERE n OPERATOR(pg_catalog.<) 3) "
            "SELECT n FROM r"},
        NamedSql{"Savepoint", "SAVEPOINT a"}, NamedSql{"RollbackTo", "ROLLBACK TO SAVEPOINT a"},
        NamedSql{"Release", "RELEASE a"},
        NamedSql{"BuiltinCasts", "SELECT '1'::int4, '{}'::jsonb, '2020-01-01'::date"}),
    TestName);

class NeedsResetTest : public testing::TestWithParam<NamedSql> {};

TEST_P(NeedsResetTest, IsNotProvablyStateless) {
  EXPECT_FALSE(ClassifySql(GetParam().sql).leaves_no_state);
}

INSTANTIATE_TEST_SUITE_P(
    SqlClassifierTest, NeedsResetTest,
    testing::Values(
        // A relation can run user code: a view wrapping set_config, a rule,
        // a trigger, a row-level security policy, a column default.
        NamedSql{"UserTable", "SELECT * FROM t"}, NamedSql{"Insert", "INSERT INTO t VALUES (1)"},
        NamedSql{"Update", "UPDATE t SET a = 1"}, NamedSql{"Delete", "DELETE FROM t"},
        NamedSql{"QualifiedUserTable", "SELECT * FROM app.t"},
        NamedSql{"UserTableInSubquery", "SELECT (SELECT a FROM t LIMIT 1)"},
        NamedSql{"CteNameOutOfScopeIsATable", "SELECT * FROM (WITH x AS (SELECT 1) SELECT 1) s, x"},
        NamedSql{"LaterCteIsATableForAnEarlierOne",
                 "WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a"},
        NamedSql{"QualifiedNameIsNotACte", "WITH t AS (SELECT 1) SELECT * FROM public.t"},
        NamedSql{"DataModifyingCte", "WITH d AS (DELETE FROM t RETURNING 1) SELECT 1"},
        NamedSql{"UserFunction", "SELECT my_func(1)"},
        // A user overload with other argument types would win over these.
        NamedSql{"UnqualifiedBuiltinWithArguments", "SELECT length('abc')"},
        NamedSql{"UnqualifiedAggregateWithArgument", "SELECT sum(1)"},
        NamedSql{"Operator", "SELECT 1 + 1"}, NamedSql{"In", "SELECT 1 IN (1, 2)"},
        NamedSql{"Like", "SELECT 'a' LIKE 'b'"}, NamedSql{"Between", "SELECT 1 BETWEEN 0 AND 2"},
        NamedSql{"SimpleCase", "SELECT CASE 1 WHEN 1 THEN 2 END"},
        NamedSql{"AnySublink", "SELECT 1 = ANY (SELECT 1)"},
        NamedSql{"OrderByUsing", "SELECT 1 ORDER BY 1 USING <"},
        NamedSql{"QualifiedUserFunction", "SELECT app.length('x')"},
        NamedSql{"BuiltinNameInAnotherSchema", "SELECT public.now()"},
        NamedSql{"UserOperatorQualified", "SELECT 1 OPERATOR(app.+) 2"},
        NamedSql{"CastToUserType", "SELECT 1::my_domain"},
        NamedSql{"CastToQualifiedType", "SELECT 1::app.int4"},
        NamedSql{"SetConfig", "SELECT set_config('a', 'b', true)"},
        NamedSql{"Nextval", "SELECT nextval('s')"},
        NamedSql{"AdvisoryXactLockIsNotOnTheList", "SELECT pg_advisory_xact_lock(1)"},
        NamedSql{"SelectInto", "SELECT 1 INTO t2"},
        NamedSql{"ForUpdate", "SELECT 1 FROM pg_class FOR UPDATE"},
        NamedSql{"ExplainAnalyze", "EXPLAIN ANALYZE SELECT 1"},
        NamedSql{"ExplainOfUserFunction", "EXPLAIN SELECT my_func(1)"},
        NamedSql{"Set", "SET x.y = 1"}, NamedSql{"SetLocal", "SET LOCAL x.y = 1"},
        NamedSql{"Ddl", "CREATE TABLE t (a int)"}, NamedSql{"Call", "CALL p()"},
        NamedSql{"Do", "DO $$ BEGIN END $$"}, NamedSql{"Begin", "BEGIN"},
        NamedSql{"TempSchema", "SELECT * FROM pg_temp.t"},
        NamedSql{"CatalogNameInUserSchema", "SELECT * FROM app.pg_class"},
        NamedSql{"UpdatePgSettings", "UPDATE pg_settings SET setting = 'x' WHERE name = 'a'"},
        NamedSql{"QueryToXml", "SELECT query_to_xml('select 1', false, false, '')"},
        NamedSql{"SecondStatement", "SELECT 1; SELECT my_func()"}),
    TestName);

// ---------------------------------------------------------------------------
// statement_kinds
// ---------------------------------------------------------------------------

struct KindCase {
  const char* sql;
  const char* kind;
};

TEST(SqlClassifierKindsTest, EachStatementGetsItsKind) {
  const KindCase cases[] = {
      {"SELECT 1", "select"},
      {"WITH x AS (SELECT 1) SELECT * FROM x", "select"},
      {"TABLE t", "select"},
      {"VALUES (1)", "select"},
      {"SELECT 1 INTO t2", "ddl"},
      {"INSERT INTO t VALUES (1)", "insert"},
      {"WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", "insert"},
      {"UPDATE t SET a = 1", "update"},
      {"DELETE FROM t", "delete"},
      {"MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE", "merge"},
      {"CREATE TABLE t (a int)", "ddl"},
      {"ALTER TABLE t ADD COLUMN b int", "ddl"},
      {"DROP TABLE t", "ddl"},
      {"CREATE VIEW v AS SELECT 1", "ddl"},
      {"CREATE INDEX ON t (a)", "ddl"},
      {"GRANT SELECT ON t TO bob", "ddl"},
      {"TRUNCATE t", "ddl"},
      {"COMMENT ON TABLE t IS 'x'", "ddl"},
      {"BEGIN", "transaction"},
      {"SAVEPOINT a", "transaction"},
      {"SET x.y = 1", "set"},
      {"RESET ALL", "set"},
      {"SET CONSTRAINTS ALL DEFERRED", "set"},
      {"COPY t TO STDOUT", "copy"},
      {"CALL p()", "call"},
      {"DO $$ BEGIN END $$", "do"},
      {"EXPLAIN DELETE FROM t", "explain"},
      {"SHOW search_path", "show"},
      {"LOCK TABLE t", "lock"},
      {"VACUUM t", "maintenance"},
      {"ANALYZE t", "maintenance"},
      {"REINDEX TABLE t", "maintenance"},
      {"LISTEN c", "listen"},
      {"NOTIFY c", "listen"},
      {"UNLISTEN *", "listen"},
      {"PREPARE p AS SELECT 1", "prepare"},
      {"EXECUTE p", "prepare"},
      {"DEALLOCATE p", "prepare"},
      {"DECLARE c CURSOR FOR SELECT 1", "other"},
      {"DISCARD ALL", "other"},
  };
  for (const KindCase& c : cases) {
    const SqlInfo info = ClassifySql(c.sql);
    EXPECT_TRUE(info.parsed) << c.sql << ": " << info.parse_error;
    EXPECT_EQ(info.statement_kinds, std::vector<std::string>{c.kind}) << c.sql;
  }
}

TEST(SqlClassifierKindsTest, SeveralStatementsGetOneKindEachInOrder) {
  EXPECT_EQ(ClassifySql("SELECT 1; SET x.y = 1;; DROP TABLE t").statement_kinds,
            (std::vector<std::string>{"select", "set", "ddl"}));
}

TEST(SqlClassifierKindsTest, EmptyTextHasNoKinds) {
  EXPECT_TRUE(ClassifySql(" -- nothing\n;").statement_kinds.empty());
}

// ---------------------------------------------------------------------------
// changes_role
// ---------------------------------------------------------------------------

class ChangesRoleTest : public testing::TestWithParam<NamedSql> {};

TEST_P(ChangesRoleTest, ChangesRole) { EXPECT_TRUE(ClassifySql(GetParam().sql).changes_role); }

INSTANTIATE_TEST_SUITE_P(
    SqlClassifierTest, ChangesRoleTest,
    testing::Values(
        NamedSql{"SetRole", "SET ROLE admin"}, NamedSql{"SetLocalRole", "SET LOCAL ROLE admin"},
        NamedSql{"SetRoleNone", "SET ROLE NONE"}, NamedSql{"ResetRole", "RESET ROLE"},
        NamedSql{"SetSessionAuthorization", "SET SESSION AUTHORIZATION bob"},
        NamedSql{"SetSessionAuthorizationDefault", "SET SESSION AUTHORIZATION DEFAULT"},
        NamedSql{"ResetSessionAuthorization", "RESET SESSION AUTHORIZATION"},
        NamedSql{"ResetAll", "RESET ALL"}, NamedSql{"DiscardAll", "DISCARD ALL"},
        NamedSql{"SetConfigRole", "SELECT set_config('role', 'bob', false)"},
        NamedSql{"SetConfigRoleUppercase", "SELECT set_config('ROLE', 'bob', true)"},
        NamedSql{"SetConfigSessionAuthorization",
                 "SELECT pg_catalog.set_config('session_authorization', 'bob', false)"},
        NamedSql{"SetConfigUnicodeEscaped", R"(SELECT U&"set\005fconfig"('role', 'bob', false))"},
        NamedSql{"SetConfigParameterName", "SELECT set_config($1, 'bob', false)"},
        NamedSql{"SetConfigComputedName", "SELECT set_config('ro' || 'le', 'bob', false)"},
        NamedSql{"SetConfigNamedArguments",
                 "SELECT set_config(setting_name => 'role', new_value => 'b', is_local => false)"},
        NamedSql{"UpdatePgSettings", "UPDATE pg_settings SET setting = 'bob' WHERE name = 'role'"},
        NamedSql{"DoBlock", "DO $$ BEGIN SET ROLE bob; END $$"},
        NamedSql{"QueryToXmlWithSetRole",
                 "SELECT query_to_xml('select set_config(''role'',''lowpriv'',false)', false, "
                 "false, '')"},
        NamedSql{"QueryToXmlWithParameter", "SELECT query_to_xml($1, false, false, '')"},
        NamedSql{"RoleInSecondStatement", "SELECT 1; SET ROLE bob"}),
    TestName);

class KeepsRoleTest : public testing::TestWithParam<NamedSql> {};

TEST_P(KeepsRoleTest, DoesNotChangeRole) { EXPECT_FALSE(ClassifySql(GetParam().sql).changes_role); }

INSTANTIATE_TEST_SUITE_P(
    SqlClassifierTest, KeepsRoleTest,
    testing::Values(NamedSql{"Select", "SELECT * FROM t"},
                    NamedSql{"SetSearchPath", "SET search_path = app"},
                    NamedSql{"ResetSearchPath", "RESET search_path"},
                    NamedSql{"SetConfigOther", "SELECT set_config('search_path', 'a', false)"},
                    NamedSql{"CurrentRoleRead", "SELECT current_user, current_setting('role')"},
                    NamedSql{"DiscardTemp", "DISCARD TEMP"},
                    NamedSql{"QueryToXmlHarmless",
                             "SELECT query_to_xml('select 1', false, false, '')"},
                    NamedSql{"CreateRole", "CREATE ROLE bob"},
                    NamedSql{"RoleInString", "SELECT 'SET ROLE bob'"}),
    TestName);

TEST(SqlClassifierTest, DeeplyNestedTextIsClassifiedConservatively) {
  for (int depth : {10, 900, 5000, 50000}) {
    const std::string sql = "SELECT " + std::string(depth, '(') + "set_config('role', 'x', false)" +
                            std::string(depth, ')');
    const SqlInfo info = ClassifySql(sql);
    EXPECT_FALSE(info.leaves_no_state) << depth;
    if (info.parsed) {
      EXPECT_TRUE(info.changes_role) << depth;
      EXPECT_TRUE(info.changes_session_state) << depth;
    }
  }
}

// ---------------------------------------------------------------------------
// Recent texts' answers are kept
// ---------------------------------------------------------------------------

void ExpectSameInfo(const SqlInfo& a, const SqlInfo& b) {
  EXPECT_EQ(a.empty, b.empty);
  EXPECT_EQ(a.multiple_statements, b.multiple_statements);
  EXPECT_EQ(a.max_placeholder, b.max_placeholder);
  EXPECT_EQ(a.first_keyword, b.first_keyword);
  EXPECT_EQ(a.transaction_control, b.transaction_control);
  EXPECT_EQ(a.changes_session_state, b.changes_session_state);
  EXPECT_EQ(a.leaves_no_state, b.leaves_no_state);
  EXPECT_EQ(a.statement_kinds, b.statement_kinds);
  EXPECT_EQ(a.parsed, b.parsed);
}

TEST(SqlClassifierTest, TheSameTextAskedAgainGetsTheSameAnswer) {
  for (const char* sql : {"SELECT $1::int8", "SET search_path = x", "SELEC oops", "BEGIN"}) {
    const SqlInfo first = ClassifySql(sql);
    ExpectSameInfo(ClassifySql(sql), first);
  }
  EXPECT_TRUE(ClassifySql("SELECT $1::int8").leaves_no_state);
  EXPECT_FALSE(ClassifySql("SET search_path = x").leaves_no_state);
}

TEST(SqlClassifierTest, MoreDistinctTextsThanAreKeptStillEachGetTheirOwnAnswer) {
  // Beyond the kept texts' bound, with stateless and stateful texts mixed.
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 3000; ++i) {
      const std::string sql = i % 2 == 0 ? "SELECT " + std::to_string(i) + " + $1"
                                         : "SET application_name = 'a" + std::to_string(i) + "'";
      const SqlInfo info = ClassifySql(sql);
      ASSERT_TRUE(info.parsed) << sql;
      EXPECT_EQ(info.max_placeholder, i % 2 == 0 ? 1 : 0) << sql;
      EXPECT_EQ(info.changes_session_state, i % 2 == 1) << sql;
    }
  }
}

TEST(SqlClassifierTest, ConcurrentCallersGetTheSameAnswers) {
  const std::vector<std::string> texts = {"SELECT $1::int8", "SET search_path = x", "SELECT now()",
                                          "DISCARD ALL"};
  std::vector<SqlInfo> expected;
  for (const std::string& sql : texts) expected.push_back(ClassifySql(sql));
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i) {
        const size_t k = (i + t) % texts.size();
        const SqlInfo info = ClassifySql(texts[k]);
        if (info.leaves_no_state != expected[k].leaves_no_state ||
            info.first_keyword != expected[k].first_keyword) {
          ++mismatches[t];
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

// ---------------------------------------------------------------------------
// stateless_if: what a SELECT's proof depends on in the catalog
// ---------------------------------------------------------------------------

namespace deps {

using Names = std::vector<std::string>;

CatalogDependencies Needs(Names relations, Names operators = {}, Names functions = {},
                          Names types = {}) {
  CatalogDependencies d;
  d.relations = std::move(relations);
  d.operators = std::move(operators);
  d.functions = std::move(functions);
  d.types = std::move(types);
  return d;
}

// A write's: `written` besides the rest.
CatalogDependencies Writes(Names written, Names relations, Names operators = {},
                           Names functions = {}, Names types = {}) {
  CatalogDependencies d =
      Needs(std::move(relations), std::move(operators), std::move(functions), std::move(types));
  d.written = std::move(written);
  return d;
}

}  // namespace deps

TEST(SqlClassifierStatelessIfTest, PlainTableReadDependsOnTheTableAndItsOperator) {
  const SqlInfo info = ClassifySql("SELECT abalance FROM pgbench_accounts WHERE aid = $1");
  EXPECT_FALSE(info.leaves_no_state);
  ASSERT_TRUE(info.stateless_if.has_value());
  EXPECT_EQ(*info.stateless_if, deps::Needs({"\"pgbench_accounts\""}, {"="}));
}

TEST(SqlClassifierStatelessIfTest, ProvableStatementsNeedNoCatalog) {
  const SqlInfo info = ClassifySql("SELECT 1 OPERATOR(pg_catalog.+) 2");
  EXPECT_TRUE(info.leaves_no_state);
  EXPECT_FALSE(info.stateless_if.has_value());
}

TEST(SqlClassifierStatelessIfTest, SchemaAndQuotedNamesAreKeptAsWrittenAndQuoted) {
  const SqlInfo info = ClassifySql(R"(SELECT * FROM app."My ""T""" JOIN Other o ON true)");
  ASSERT_TRUE(info.stateless_if.has_value());
  EXPECT_EQ(info.stateless_if->relations, (deps::Names{"\"app\".\"My \"\"T\"\"\"", "\"other\""}));
}

TEST(SqlClassifierStatelessIfTest, ListsAreSortedWithoutDuplicates) {
  const SqlInfo info =
      ClassifySql("SELECT * FROM b, a, b AS b2 WHERE a.x = b.y AND b.y = b2.z AND a.x < 3");
  ASSERT_TRUE(info.stateless_if.has_value());
  EXPECT_EQ(*info.stateless_if, deps::Needs({"\"a\"", "\"b\""}, {"<", "="}));
}

TEST(SqlClassifierStatelessIfTest, ImpliedOperatorsAreListed) {
  struct Case {
    const char* sql;
    deps::Names operators;
  };
  const Case cases[] = {
      {"SELECT * FROM t WHERE x IN (1, 2)", {"="}},
      {"SELECT * FROM t WHERE x NOT IN (1, 2)", {"<>"}},
      {"SELECT * FROM t WHERE x LIKE 'a%'", {"~~"}},
      {"SELECT * FROM t WHERE x ILIKE 'a%'", {"~~*"}},
      {"SELECT * FROM t WHERE x BETWEEN 1 AND 2", {"<", "<=", ">", ">="}},
      {"SELECT * FROM t WHERE x NOT BETWEEN SYMMETRIC 1 AND 2", {"<", "<=", ">", ">="}},
      {"SELECT * FROM t WHERE x IS DISTINCT FROM 1", {"="}},
      {"SELECT NULLIF(x, 1) FROM t", {"="}},
      {"SELECT CASE x WHEN 1 THEN 2 END FROM t", {"="}},
      {"SELECT * FROM t JOIN u USING (id)", {"="}},
      {"SELECT * FROM t NATURAL JOIN u", {"="}},
      {"SELECT * FROM t WHERE x = ANY($1)", {"="}},
      {"SELECT * FROM t ORDER BY x USING >", {">"}},
      {"SELECT * FROM t WHERE x OPERATOR(app.===) 1", {"==="}},
  };
  for (const Case& c : cases) {
    const SqlInfo info = ClassifySql(c.sql);
    ASSERT_TRUE(info.stateless_if.has_value()) << c.sql;
    EXPECT_EQ(info.stateless_if->operators, c.operators) << c.sql;
  }
}

TEST(SqlClassifierStatelessIfTest, UnqualifiedAllowListedCallsWithArgumentsAreListed) {
  const SqlInfo info = ClassifySql("SELECT lower(name), count(*), now() FROM t");
  ASSERT_TRUE(info.stateless_if.has_value());
  EXPECT_EQ(*info.stateless_if, deps::Needs({"\"t\""}, {}, {"lower"}));
}

TEST(SqlClassifierStatelessIfTest, CastsToTypesOutsidePgCatalogAreListed) {
  const SqlInfo info = ClassifySql("SELECT $1::mood, $2::app.money2, $3::int4, $4::text");
  ASSERT_TRUE(info.stateless_if.has_value());
  EXPECT_EQ(*info.stateless_if, deps::Needs({}, {}, {}, {"\"app\".\"money2\"", "\"mood\""}));
}

TEST(SqlClassifierStatelessIfTest, CommonTableExpressionsAreNotRelations) {
  const SqlInfo info = ClassifySql("WITH w AS (SELECT * FROM t) SELECT * FROM w");
  ASSERT_TRUE(info.stateless_if.has_value());
  EXPECT_EQ(info.stateless_if->relations, deps::Names{"\"t\""});
}

TEST(SqlClassifierStatelessIfTest, StatefulOrNonSelectStatementsHaveNoCondition) {
  for (const char* sql : {
           "SELECT * FROM t FOR UPDATE",
           "SELECT * FROM t FOR SHARE SKIP LOCKED",
           "SELECT * INTO t2 FROM t",
           "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
           "WITH i AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM i",
           "SELECT set_config('a.b', 'c', false) FROM t",
           "SELECT pg_catalog.set_config('a.b', 'c', false), x FROM t",
           "SELECT pg_advisory_lock(1) FROM t",
           "SELECT my_function(x) FROM t",
           "SELECT app.lower(x) FROM t",
           "SELECT * FROM pg_temp.t",
           "SELECT * FROM pg_temp_3.t",
           "SELECT * FROM db.app.t",
           "SELECT * FROM t TABLESAMPLE SYSTEM (10)",
           "SELECT * FROM t; SELECT * FROM u",
           "EXPLAIN SELECT * FROM t",
           "DO $$ BEGIN PERFORM 1; END $$",
           "SET search_path = app",
           "SELECT * FROM t WHERE x = (SELECT setseed(0.5))",
           "SELECT query_to_xml('select 1', true, true, '') FROM t",
           "SELECT * FROM t WHERE x = 1 AND (SELECT 1 FROM u FOR UPDATE) = 1",
           "SELECT * FRM t",
       }) {
    const SqlInfo info = ClassifySql(sql);
    EXPECT_FALSE(info.leaves_no_state) << sql;
    EXPECT_FALSE(info.stateless_if.has_value()) << sql;
  }
}

TEST(SqlClassifierStatelessIfTest, TextThatOnlyLooksLikeARelationReadStaysProvable) {
  // Names in strings and comments are not relations.
  const SqlInfo info = ClassifySql("SELECT 'FROM t WHERE x = 1' /* FROM u */");
  EXPECT_TRUE(info.leaves_no_state);
  EXPECT_FALSE(info.stateless_if.has_value());
}

TEST(SqlClassifierStatelessIfTest, HiddenSetConfigInAReadIsStillStateful) {
  // U&"..." spells set_config; a literal or a comment does not hide the call.
  for (const char* sql : {
           R"(SELECT U&"set\005fconfig"('a.b', 'c', false) FROM t)",
           "SELECT x FROM t WHERE x = 1 -- ; SELECT 1\n AND set_config('a.b', 'c', false) = ''",
           "SELECT (SELECT set_config('a.b', x, false)) FROM t",
       }) {
    const SqlInfo info = ClassifySql(sql);
    EXPECT_TRUE(info.changes_session_state) << sql;
    EXPECT_FALSE(info.stateless_if.has_value()) << sql;
  }
}

TEST(SqlClassifierStatelessIfTest, CatalogReadsOutsideTheAllowListDependOnTheCatalog) {
  const SqlInfo info = ClassifySql("SELECT oprname FROM pg_catalog.pg_operator");
  ASSERT_TRUE(info.stateless_if.has_value());
  EXPECT_EQ(info.stateless_if->relations, deps::Names{"\"pg_catalog\".\"pg_operator\""});
}

// ---------------------------------------------------------------------------
// stateless_if for writes: simple INSERT, UPDATE and DELETE
// ---------------------------------------------------------------------------

TEST(SqlClassifierStatelessIfTest, PgbenchWritesDependOnTheirTableWrittenAndTheirOperators) {
  struct Case {
    const char* sql;
    CatalogDependencies needs;
  };
  const Case cases[] = {
      {"UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
       deps::Writes({"\"pgbench_accounts\""}, {"\"pgbench_accounts\""}, {"+", "="})},
      {"INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
       "VALUES ($3, $4, $2, $1, CURRENT_TIMESTAMP)",
       deps::Writes({"\"pgbench_history\""}, {"\"pgbench_history\""})},
      {"DELETE FROM app.t WHERE id = $1",
       deps::Writes({"\"app\".\"t\""}, {"\"app\".\"t\""}, {"="})},
  };
  for (const Case& c : cases) {
    const SqlInfo info = ClassifySql(c.sql);
    EXPECT_FALSE(info.leaves_no_state) << c.sql;
    EXPECT_FALSE(info.changes_session_state) << c.sql;
    ASSERT_TRUE(info.stateless_if.has_value()) << c.sql;
    EXPECT_EQ(*info.stateless_if, c.needs) << c.sql;
  }
}

TEST(SqlClassifierStatelessIfTest, WritesListTheRelationsTheyReadApartFromTheOneWritten) {
  struct Case {
    const char* sql;
    CatalogDependencies needs;
  };
  const Case cases[] = {
      {"UPDATE t SET x = u.x FROM u WHERE t.id = u.id",
       deps::Writes({"\"t\""}, {"\"t\"", "\"u\""}, {"="})},
      {"DELETE FROM t USING u WHERE t.id = u.id RETURNING t.*",
       deps::Writes({"\"t\""}, {"\"t\"", "\"u\""}, {"="})},
      {"INSERT INTO t (a, b) SELECT a, lower(b) FROM u WHERE a OPERATOR(pg_catalog.>) 0",
       deps::Writes({"\"t\""}, {"\"t\"", "\"u\""}, {}, {"lower"})},
      {"UPDATE t SET x = DEFAULT WHERE id = (SELECT max(id) FROM v)",
       deps::Writes({"\"t\""}, {"\"t\"", "\"v\""}, {"="}, {"max"})},
      {"INSERT INTO t VALUES ($1, DEFAULT) RETURNING id", deps::Writes({"\"t\""}, {"\"t\""})},
      {"INSERT INTO t DEFAULT VALUES", deps::Writes({"\"t\""}, {"\"t\""})},
      {"UPDATE ONLY t AS x SET v = $1::mood",
       deps::Writes({"\"t\""}, {"\"t\""}, {}, {}, {"\"mood\""})},
  };
  for (const Case& c : cases) {
    const SqlInfo info = ClassifySql(c.sql);
    ASSERT_TRUE(info.stateless_if.has_value()) << c.sql;
    EXPECT_EQ(*info.stateless_if, c.needs) << c.sql;
  }
}

TEST(SqlClassifierStatelessIfTest, WritesOutsideTheSimpleFormsHaveNoCondition) {
  for (const char* sql : {
           // WITH, ON CONFLICT, OVERRIDING, a cursor, MERGE
           "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
           "WITH d AS (DELETE FROM u RETURNING *) INSERT INTO t SELECT * FROM d",
           "INSERT INTO t SELECT * FROM (WITH d AS (DELETE FROM u RETURNING *) SELECT * FROM d) s",
           "INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING",
           "INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2",
           "INSERT INTO t OVERRIDING SYSTEM VALUE VALUES (1)",
           "UPDATE t SET x = 1 WHERE CURRENT OF c",
           "DELETE FROM t WHERE CURRENT OF c",
           "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE",
           // calls outside the allow-list, stateful built-ins, sequences
           "INSERT INTO t VALUES (nextval('s'))",
           "INSERT INTO t VALUES (my_function(1))",
           "UPDATE t SET x = set_config('a.b', 'c', false)",
           "DELETE FROM t WHERE pg_advisory_lock(1) IS NOT NULL",
           "UPDATE t SET x = (SELECT 1 FROM u FOR UPDATE)",
           "INSERT INTO t SELECT * FROM u FOR UPDATE",
           "INSERT INTO t SELECT * INTO z FROM u",
           // catalogs, temporary and remote tables
           "UPDATE pg_settings SET setting = 'x' WHERE name = 'search_path'",
           "UPDATE pg_catalog.pg_class SET relname = 'x' WHERE oid = 1",
           "DELETE FROM pg_description WHERE objoid = 1",
           "INSERT INTO information_schema.sql_features VALUES ('x')",
           "INSERT INTO pg_temp.t VALUES (1)",
           "INSERT INTO db.app.t VALUES (1)",
           // two statements
           "INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)",
       }) {
    const SqlInfo info = ClassifySql(sql);
    EXPECT_FALSE(info.leaves_no_state) << sql;
    EXPECT_FALSE(info.stateless_if.has_value()) << sql;
  }
}

TEST(SqlClassifierStatelessIfTest, WritesOnPgSettingsStillChangeSessionState) {
  for (const char* sql :
       {"UPDATE pg_settings SET setting = 'x' WHERE name = 'search_path'",
        "DELETE FROM pg_catalog.pg_settings", "INSERT INTO pg_settings VALUES (1)"}) {
    const SqlInfo info = ClassifySql(sql);
    EXPECT_TRUE(info.changes_session_state) << sql;
    EXPECT_TRUE(info.changes_role) << sql;
    EXPECT_FALSE(info.stateless_if.has_value()) << sql;
  }
}

TEST(SqlClassifierStatelessIfTest, ReadsNeverListAWrittenRelation) {
  const SqlInfo info = ClassifySql("SELECT * FROM t WHERE id = $1");
  ASSERT_TRUE(info.stateless_if.has_value());
  EXPECT_TRUE(info.stateless_if->written.empty());
}

TEST(SqlClassifierStatelessIfTest, WrittenRelationTellsDependencySetsApart) {
  // The same names, read or written, are different proofs.
  EXPECT_FALSE(deps::Needs({"\"t\""}) == deps::Writes({"\"t\""}, {"\"t\""}));
}

TEST(SqlClassifierTest, StatelessBuiltinFunctionNamesHoldTheReadAllowListAndCasts) {
  const std::vector<std::string>& names = StatelessBuiltinFunctionNames();
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  for (const char* name : {"now", "lower", "gen_random_uuid", "varchar", "int8"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
  }
  for (const char* name : {"nextval", "set_config", "setseed", "pg_advisory_lock", "currval",
                           "query_to_xml", "lastval"}) {
    EXPECT_EQ(std::find(names.begin(), names.end(), name), names.end()) << name;
  }
}

}  // namespace
}  // namespace sessionbroker::core
