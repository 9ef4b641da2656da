// Specifications of brokerctl's output formats: psql-style tables, CSV and
// JSON of query results, and the error report.
#include "client/cpp/brokerctl/format.h"

#include <string>

#include "client/cpp/brokerctl/stream_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace brokerctl {
namespace {

using sessionbroker::v1::ExecuteResponse;
using sessionbroker::v1::Value;

Value Int(int64_t v) {
  Value out;
  out.set_int64_value(v);
  return out;
}
Value Str(const std::string& v) {
  Value out;
  out.set_string_value(v);
  return out;
}
Value Null() {
  Value out;
  out.set_null_value(google::protobuf::NULL_VALUE);
  return out;
}

ExecuteResponse Result(std::vector<std::pair<std::string, std::string>> columns,
                       std::vector<std::vector<Value>> rows) {
  ExecuteResponse r;
  for (auto& [name, type] : columns) {
    auto* c = r.add_columns();
    c->set_name(name);
    c->set_type_name(type);
  }
  for (auto& row : rows) {
    auto* out = r.add_rows();
    for (auto& v : row) *out->add_values() = v;
  }
  r.set_command_tag("SELECT " + std::to_string(rows.size()));
  r.set_rows_affected(static_cast<int64_t>(rows.size()));
  return r;
}

TEST(FormatTable, AlignsLikePsqlWithNumbersRightAndNullsEmpty) {
  ExecuteResponse r =
      Result({{"id", "int4"}, {"name", "text"}}, {{Int(1), Str("alice")}, {Int(1234), Null()}});
  EXPECT_EQ(FormatTable(r),
            "  id  | name\n"
            "------+-------\n"
            "    1 | alice\n"
            " 1234 |\n"
            "(2 rows)\n");
}

TEST(FormatTable, SaysOneRowInTheSingular) {
  EXPECT_THAT(FormatTable(Result({{"x", "int4"}}, {{Int(1)}})), testing::EndsWith("(1 row)\n"));
}

TEST(FormatTable, EmptyResultKeepsHeaderAndCountsZeroRows) {
  EXPECT_EQ(FormatTable(Result({{"a", "text"}}, {})), " a\n---\n(0 rows)\n");
}

TEST(FormatTable, WideAndCombiningCharactersLineUpByDisplayColumns) {
  // "日本" is 4 columns wide; "é" written as e + U+0301 is one.
  ExecuteResponse r =
      Result({{"v", "text"}, {"n", "int4"}}, {{Str("日本"), Int(1)}, {Str("e\xcc\x81"), Int(2)}});
  EXPECT_EQ(FormatTable(r),
            "  v   | n\n"
            "------+---\n"
            " 日本 | 1\n"
            " e\xcc\x81    | 2\n"
            "(2 rows)\n");
}

TEST(FormatTable, NewlinesInAValueAreEscapedSoTheRowStaysOnOneLine) {
  EXPECT_THAT(FormatTable(Result({{"t", "text"}}, {{Str("a\nb\tc")}})),
              testing::HasSubstr(" a\\nb\\tc\n"));
}

TEST(FormatTable, StatementWithoutColumnsPrintsItsCommandTag) {
  ExecuteResponse r;
  r.set_command_tag("INSERT 0 3");
  r.set_rows_affected(3);
  EXPECT_EQ(FormatTable(r), "INSERT 0 3\n");
  EXPECT_EQ(FormatCsv(r), "");
}

TEST(DisplayWidth, CountsTerminalColumns) {
  EXPECT_EQ(DisplayWidth("abc"), 3);
  EXPECT_EQ(DisplayWidth("日本語"), 6);
  EXPECT_EQ(DisplayWidth("🎉"), 2);
  EXPECT_EQ(DisplayWidth("e\xcc\x81"), 1);
  EXPECT_EQ(DisplayWidth("\xff"), 1);  // an invalid byte
}

TEST(TruncateToWidth, CutsBetweenCodePoints) {
  EXPECT_EQ(TruncateToWidth("日本語", 5), "日本");
  EXPECT_EQ(TruncateToWidth("abc", 10), "abc");
  EXPECT_EQ(TruncateToWidth("abc", 0), "");
}

TEST(WrapText, BreaksAtSpacesWithinTheWidthAfterTheIndent) {
  EXPECT_EQ(WrapText("the quick brown fox jumps", 12, "  "), "  the quick\n  brown fox\n  jumps\n");
  EXPECT_EQ(WrapText("averyveryverylongword x", 8, ""), "averyveryverylongword\nx\n");
  EXPECT_EQ(WrapText("", 10, "  "), "");
}

TEST(FormatCsv, QuotesOnlyWhatNeedsItAndTellsNullFromEmpty) {
  ExecuteResponse r =
      Result({{"a", "text"}, {"b", "text"}}, {{Str("plain"), Str("has,comma")},
                                              {Str("say \"hi\""), Str("two\nlines")},
                                              {Str(""), Null()}});
  EXPECT_EQ(FormatCsv(r),
            "a,b\n"
            "plain,\"has,comma\"\n"
            "\"say \"\"hi\"\"\",\"two\nlines\"\n"
            "\"\",\n");
}

TEST(FormatJson, KeepsTypes) {
  Value b;
  b.set_bool_value(true);
  Value d;
  d.set_double_value(1.5);
  Value n;
  n.set_numeric_value("12.50");
  Value j;
  j.set_json_value("{\"k\": [1, 2]}");
  Value bytes;
  bytes.set_bytes_value(std::string("\x00\xff", 2));
  Value arr;
  *arr.mutable_array_value()->add_values() = Int(1);
  *arr.mutable_array_value()->add_values() = Null();
  ExecuteResponse r = Result({{"i", "int8"},
                              {"s", "text"},
                              {"n", "text"},
                              {"b", "bool"},
                              {"d", "float8"},
                              {"num", "numeric"},
                              {"j", "jsonb"},
                              {"by", "bytea"},
                              {"a", "_int8"}},
                             {{Int(-7), Str("q\"uote"), Null(), b, d, n, j, bytes, arr}});
  EXPECT_EQ(FormatJson(r),
            "{\"columns\":[{\"name\":\"i\",\"type\":"
            "\"int8\"},{\"name\":\"s\",\"type\":\"text\"},{\"name\":\"n\",\"type\":\"text\"},{"
            "\"name\":\"b\",\"type\":\"bool\"},{\"name\":\"d\",\"type\":\"float8\"},{\"name\":"
            "\"num\",\"type\":\"numeric\"},{\"name\":\"j\",\"type\":\"jsonb\"},{\"name\":\"by\","
            "\"type\":\"bytea\"},{\"name\":\"a\",\"type\":\"_int8\"}],\"rows\":[[-7,\"q\\\"uote\","
            "null,true,1.5,\"12.50\",{\"k\": [1, 2]},\"\\\\x00ff\",[1,null]]],\"command\":"
            "\"SELECT 1\",\"rows_affected\":1}\n");
}

TEST(ValueJson, NonFiniteFloatsAreStrings) {
  Value v;
  v.set_double_value(std::numeric_limits<double>::infinity());
  EXPECT_EQ(ValueJson(v), "\"Infinity\"");
  v.set_double_value(std::numeric_limits<double>::quiet_NaN());
  EXPECT_EQ(ValueJson(v), "\"NaN\"");
}

TEST(JsonEscape, EscapesControlCharacters) {
  EXPECT_EQ(JsonEscape(std::string("a\x01"
                                   "b\n",
                                   4)),
            "a\\u0001b\\n");
}

TEST(ValueText, UsesPostgresTextForms) {
  Value v;
  v.set_bool_value(false);
  EXPECT_EQ(ValueText(v), "f");
  v.set_double_value(0.1);
  EXPECT_EQ(ValueText(v), "0.1");
  v.set_bytes_value("AB");
  EXPECT_EQ(ValueText(v), "\\x4142");
  EXPECT_EQ(ValueText(Null()), std::nullopt);
  Value arr;
  *arr.mutable_array_value()->add_values() = Str("a b");
  *arr.mutable_array_value()->add_values() = Str("");
  *arr.mutable_array_value()->add_values() = Null();
  *arr.mutable_array_value()->add_values() = Str("x\"y");
  *arr.mutable_array_value()->add_values() = Str("plain");
  EXPECT_EQ(ValueText(arr), "{\"a b\",\"\",NULL,\"x\\\"y\",plain}");
}

TEST(FormatError, SqlErrorsShowPsqlFieldsSqlstateAndTheGrpcCode) {
  ErrorReport r;
  r.grpc_code = "ALREADY_EXISTS";
  r.message = "23505: duplicate key";
  r.sqlstate = "23505";
  r.severity = "ERROR";
  r.primary = "duplicate key value violates unique constraint \"t_pkey\"";
  r.detail = "Key (id)=(1) already exists.";
  r.hint = "pick another id";
  EXPECT_EQ(FormatError(r),
            "ERROR:  duplicate key value violates unique constraint \"t_pkey\"\n"
            "DETAIL:  Key (id)=(1) already exists.\n"
            "HINT:  pick another id\n"
            "SQLSTATE:  23505\n"
            "gRPC status:  ALREADY_EXISTS\n");
}

TEST(FormatError, BrokerErrorsShowCodeMessageAndReason) {
  ErrorReport r;
  r.grpc_code = "FAILED_PRECONDITION";
  r.message = "session X ended";
  r.reason = "SESSION_EXPIRED";
  EXPECT_EQ(FormatError(r),
            "error: FAILED_PRECONDITION: session X ended\nreason:  SESSION_EXPIRED\n");
}

// ---- StreamFormatter: results printed as they stream ----

// What StreamFormatter prints for `r` fed row by row.
std::string Streamed(const ExecuteResponse& r, OutputFormat format, size_t batch) {
  StreamFormatter f(format, batch);
  std::string out = f.Begin(r.columns());
  for (const auto& row : r.rows()) out += f.Add(row);
  return out + f.End(r.command_tag(), r.rows_affected());
}

ExecuteResponse Numbers(int n) {
  std::vector<std::vector<Value>> rows;
  for (int i = 1; i <= n; ++i) rows.push_back({Int(i * i * i), Str(i % 2 ? "odd" : "even")});
  ExecuteResponse r = Result({{"cube", "int8"}, {"parity", "text"}}, rows);
  r.set_command_tag("SELECT " + std::to_string(n));
  r.set_rows_affected(n);
  return r;
}

TEST(StreamFormatter, CsvAndJsonAreExactlyTheBufferedFormats) {
  for (int n : {0, 1, 5}) {
    ExecuteResponse r = Numbers(n);
    EXPECT_EQ(Streamed(r, OutputFormat::kCsv, 2), FormatCsv(r));
    EXPECT_EQ(Streamed(r, OutputFormat::kJson, 2), FormatJson(r));
  }
}

TEST(StreamFormatter, ATableWithinOneBatchIsExactlyFormatTable) {
  for (int n : {0, 1, 5}) {
    ExecuteResponse r = Numbers(n);
    EXPECT_EQ(Streamed(r, OutputFormat::kTable, 5), FormatTable(r));
  }
}

TEST(StreamFormatter, ALongerTableIsAlignedPerBatchWithOneHeaderAndTheTotalCount) {
  EXPECT_EQ(Streamed(Numbers(5), OutputFormat::kTable, 2),
            " cube | parity\n"
            "------+--------\n"
            "    1 | odd\n"
            "    8 | even\n"
            "   27 | odd\n"
            "   64 | even\n"
            "  125 | odd\n"
            "(5 rows)\n");
}

TEST(StreamFormatter, RowsArePrintedWhenTheirBatchIsFull) {
  ExecuteResponse r = Numbers(3);
  StreamFormatter table(OutputFormat::kTable, 2);
  EXPECT_EQ(table.Begin(r.columns()), "");
  EXPECT_EQ(table.Add(r.rows(0)), "");
  EXPECT_THAT(table.Add(r.rows(1)), testing::HasSubstr("    8 | even\n"));
  StreamFormatter csv(OutputFormat::kCsv, 2);
  EXPECT_EQ(csv.Begin(r.columns()), "cube,parity\n");
  EXPECT_EQ(csv.Add(r.rows(0)), "1,odd\n");
}

TEST(StreamFormatter, AStatementWithoutColumnsPrintsItsTagAsTheTableDoes) {
  ExecuteResponse r;
  r.set_command_tag("INSERT 0 2");
  r.set_rows_affected(2);
  EXPECT_EQ(Streamed(r, OutputFormat::kTable, 10), "INSERT 0 2\n");
  EXPECT_EQ(Streamed(r, OutputFormat::kCsv, 10), "");
  EXPECT_EQ(Streamed(r, OutputFormat::kJson, 10), FormatJson(r));
}

TEST(StreamFormatter, AbortPrintsTheHeldRowsWithoutACount) {
  ExecuteResponse r = Numbers(3);
  StreamFormatter f(OutputFormat::kTable, 10);
  std::string out = f.Begin(r.columns());
  for (const auto& row : r.rows()) out += f.Add(row);
  out += f.Abort();
  EXPECT_EQ(out,
            " cube | parity\n"
            "------+--------\n"
            "    1 | odd\n"
            "    8 | even\n"
            "   27 | odd\n");
  StreamFormatter json(OutputFormat::kJson, 10);
  (void)json.Begin(r.columns());
  EXPECT_EQ(json.Abort(), "");
}

}  // namespace
}  // namespace brokerctl
