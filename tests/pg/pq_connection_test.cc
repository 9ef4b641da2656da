// The pooled connections (PqConnection, libpq in blocking mode) against a real PostgreSQL
// (SB_TEST_DATABASE_URL, a superuser connection: some tests create roles and types). Every test
// uses temporary tables or uniquely named objects, so tests can run in any order and in parallel
// processes.
#include "server/storage/pq_connection.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/storage/sql_error.h"
#include "tests/support/test_env.h"

namespace sessionbroker::storage {

void PrintTo(const Value& v, std::ostream* os) { *os << DebugString(v); }

namespace {

ExecuteOptions CappedAt(size_t max_result_bytes) {
  ExecuteOptions options;
  options.max_result_bytes = max_result_bytes;
  return options;
}

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;
using Clock = std::chrono::steady_clock;

constexpr double kInf = std::numeric_limits<double>::infinity();

// A name no other test (or test process) uses.
std::string UniqueName(absl::string_view prefix) {
  static std::atomic<int> counter{0};
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  return absl::StrCat(prefix, "_", getpid(), "_", counter++, "_",
                      std::chrono::duration_cast<std::chrono::microseconds>(now).count() % 1000000);
}

Value Ints(std::initializer_list<int64_t> items) {
  std::vector<Value> out;
  for (int64_t i : items) out.push_back(Value::Int64(i));
  return Value::Array(std::move(out));
}

Value Strings(std::initializer_list<const char*> items) {
  std::vector<Value> out;
  for (const char* s : items) out.push_back(s == nullptr ? Value::Null() : Value::String(s));
  return Value::Array(std::move(out));
}

std::string AllBytes() {
  std::string out;
  for (int i = 0; i < 256; ++i) out.push_back(static_cast<char>(i));
  return out;
}

class PqConnectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    url_ = testing::TestDatabaseUrl();
    ASSERT_FALSE(url_.empty());
    connector_ = std::make_unique<PqConnector>(url_);
    conn_ = Connect();
    ASSERT_NE(conn_, nullptr);
  }

  void TearDown() override {
    if (cleanup_.empty()) return;
    std::unique_ptr<DbConnection> admin = Connect();
    if (admin == nullptr) return;
    for (auto it = cleanup_.rbegin(); it != cleanup_.rend(); ++it) {
      absl::StatusOr<QueryResult> r = admin->Execute(Statement{*it, {}}, ExecuteOptions{});
      EXPECT_TRUE(r.ok()) << *it << ": " << r.status();
    }
  }

  std::unique_ptr<DbConnection> Connect() {
    absl::StatusOr<std::unique_ptr<DbConnection>> conn = connector_->Connect();
    EXPECT_TRUE(conn.ok()) << conn.status();
    return conn.ok() ? *std::move(conn) : nullptr;
  }

  // Runs `sql` on the test's admin connection at the end of the test.
  void CleanUpWith(std::string sql) { cleanup_.push_back(std::move(sql)); }

  static absl::StatusOr<QueryResult> Run(DbConnection& conn, const std::string& sql,
                                         std::vector<Value> params = {},
                                         ExecuteOptions options = {}) {
    return conn.Execute(Statement{sql, std::move(params)}, options);
  }

  static QueryResult Must(DbConnection& conn, const std::string& sql,
                          std::vector<Value> params = {}) {
    absl::StatusOr<QueryResult> r = Run(conn, sql, std::move(params));
    EXPECT_TRUE(r.ok()) << sql << ": " << r.status();
    return r.ok() ? *std::move(r) : QueryResult{};
  }

  // The first column of the first row.
  static Value Scalar(DbConnection& conn, const std::string& sql, std::vector<Value> params = {}) {
    QueryResult r = Must(conn, sql, std::move(params));
    if (r.rows.empty() || r.rows[0].empty()) {
      ADD_FAILURE() << sql << " returned no value";
      return Value::String("<no value>");
    }
    return r.rows[0][0];
  }

  static absl::Status RunStatus(DbConnection& conn, const std::string& sql,
                                std::vector<Value> params = {}) {
    return Run(conn, sql, std::move(params)).status();
  }

  std::string url_;
  std::unique_ptr<PqConnector> connector_;
  std::unique_ptr<DbConnection> conn_;
  std::vector<std::string> cleanup_;
};

// ---- connecting and baseline settings ----

TEST_F(PqConnectionTest, NewConnectionHasBaselineSettings) {
  EXPECT_EQ(Scalar(*conn_, "SHOW DateStyle"), Value::String("ISO, YMD"));
  EXPECT_EQ(Scalar(*conn_, "SHOW IntervalStyle"), Value::String("iso_8601"));
  EXPECT_EQ(Scalar(*conn_, "SHOW TimeZone"), Value::String("UTC"));
  EXPECT_EQ(Scalar(*conn_, "SHOW extra_float_digits"), Value::String("3"));
}

TEST_F(PqConnectionTest, BackendPidMatchesTheServer) {
  EXPECT_GT(conn_->BackendPid(), 0);
  EXPECT_EQ(Scalar(*conn_, "SELECT pg_backend_pid()"), Value::Int64(conn_->BackendPid()));
}

TEST_F(PqConnectionTest, UnreachableDatabaseIsUnavailableAndNeverShowsThePassword) {
  const testing::RefusedPort refused;
  ASSERT_NE(refused.port(), 0);
  const int port = refused.port();
  PqConnector connector(absl::StrCat("postgresql://bob:S3cretPw@127.0.0.1:", port, "/nodb"));
  const auto start = Clock::now();
  absl::StatusOr<std::unique_ptr<DbConnection>> conn = connector.Connect();
  ASSERT_FALSE(conn.ok());
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(15));
  EXPECT_EQ(conn.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(conn.status().message(),
              AllOf(HasSubstr("127.0.0.1"), HasSubstr(absl::StrCat(port)), HasSubstr("nodb"),
                    HasSubstr("bob"), HasSubstr("check that the server is running"),
                    Not(HasSubstr("S3cretPw"))));
}

TEST_F(PqConnectionTest, UnreachableKeyValueConninfoNeverShowsThePassword) {
  const testing::RefusedPort refused;
  ASSERT_NE(refused.port(), 0);
  const int port = refused.port();
  PqConnector connector(
      absl::StrCat("host=127.0.0.1 port=", port, " dbname=nodb user=bob password='S3cret pw'"));
  absl::StatusOr<std::unique_ptr<DbConnection>> conn = connector.Connect();
  ASSERT_FALSE(conn.ok());
  EXPECT_EQ(conn.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(conn.status().message(),
              AllOf(HasSubstr("host=127.0.0.1"), HasSubstr(absl::StrCat("port=", port)),
                    HasSubstr("dbname=nodb"), Not(HasSubstr("S3cret"))));
}

TEST_F(PqConnectionTest, MalformedUrlNeverShowsThePassword) {
  PqConnector connector("postgresql://bob:Pass%zzword@127.0.0.1:1/db");
  absl::StatusOr<std::unique_ptr<DbConnection>> conn = connector.Connect();
  ASSERT_FALSE(conn.ok());
  EXPECT_EQ(conn.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(conn.status().message(), Not(HasSubstr("Pass%zzword")));
}

// BEGIN conninfo defaults
TEST(ConninfoWithDefaultsTest, AddsTimeoutAndKeepaliveDefaultsToAUrl) {
  const PqConnector::Options defaults;
  EXPECT_EQ(ConninfoWithDefaults("postgresql://bob:pw@db.example:5432/app", defaults),
            "postgresql://bob:pw@db.example:5432/app?connect_timeout=10&keepalives=1&"
            "keepalives_idle=30&keepalives_interval=10&keepalives_count=3&tcp_user_timeout=60000");
  // After the caller's own query parameters; the ones it sets stay as they are.
  EXPECT_EQ(ConninfoWithDefaults("postgres://h/app?sslmode=require&keepalives_idle=5&"
                                 "tcp_user_timeout=1000",
                                 defaults),
            "postgres://h/app?sslmode=require&keepalives_idle=5&tcp_user_timeout=1000&"
            "connect_timeout=10&keepalives=1&keepalives_interval=10&keepalives_count=3");
  EXPECT_EQ(ConninfoWithDefaults("postgresql://h/app?", defaults),
            "postgresql://h/app?connect_timeout=10&keepalives=1&keepalives_idle=30&"
            "keepalives_interval=10&keepalives_count=3&tcp_user_timeout=60000");
}

TEST(ConninfoWithDefaultsTest, AddsTimeoutAndKeepaliveDefaultsToKeyValuePairs) {
  const PqConnector::Options defaults;
  EXPECT_EQ(ConninfoWithDefaults("host=h dbname=app keepalives = 0 connect_timeout=3 "
                                 "password='a b'",
                                 defaults),
            "host=h dbname=app keepalives = 0 connect_timeout=3 password='a b' "
            "keepalives_idle=30 keepalives_interval=10 keepalives_count=3 tcp_user_timeout=60000");
  // libpq's defaults and PG* variables, plus ours.
  EXPECT_EQ(ConninfoWithDefaults("", defaults),
            "connect_timeout=10 keepalives=1 keepalives_idle=30 keepalives_interval=10 "
            "keepalives_count=3 tcp_user_timeout=60000");
}

TEST(ConninfoWithDefaultsTest, ZeroOptionsAddNothingButKeepalives) {
  PqConnector::Options none;
  none.connect_timeout_seconds = 0;
  none.keepalives_idle_seconds = 0;
  none.keepalives_interval_seconds = 0;
  none.keepalives_count = 0;
  none.tcp_user_timeout_ms = 0;
  EXPECT_EQ(ConninfoWithDefaults("host=h", none), "host=h keepalives=1");
  EXPECT_EQ(ConninfoWithDefaults("postgresql://h/db?keepalives=0", none),
            "postgresql://h/db?keepalives=0");
}
// END conninfo defaults

TEST_F(PqConnectionTest, ConnectionsOutliveTheirConnector) {
  auto connector = std::make_unique<PqConnector>(url_);
  absl::StatusOr<std::unique_ptr<DbConnection>> conn = connector->Connect();
  ASSERT_TRUE(conn.ok()) << conn.status();
  connector.reset();
  EXPECT_EQ(Scalar(**conn, "SELECT 41 + 1"), Value::Int64(42));
}

// ---- values out: kinds, OIDs and type names ----

TEST_F(PqConnectionTest, ReturnsColumnNamesTypeOidsAndTypeNames) {
  QueryResult r = Must(*conn_, "SELECT 1::int4 AS a, 'x'::text AS b, ARRAY[1]::int8[] AS c");
  ASSERT_EQ(r.columns.size(), 3u);
  EXPECT_EQ(r.columns[0].name, "a");
  EXPECT_EQ(r.columns[0].type_oid, 23u);
  EXPECT_EQ(r.columns[0].type_name, "int4");
  EXPECT_EQ(r.columns[1].name, "b");
  EXPECT_EQ(r.columns[1].type_oid, 25u);
  EXPECT_EQ(r.columns[1].type_name, "text");
  EXPECT_EQ(r.columns[2].type_oid, 1016u);
  EXPECT_EQ(r.columns[2].type_name, "_int8");
}

TEST_F(PqConnectionTest, DecodesScalarValuesWithTheirKinds) {
  QueryResult r =
      Must(*conn_,
           "SELECT true, (-32768)::int2, 2147483647::int4, (-9223372036854775808)::int8, "
           "4294967295::oid, 0.1::float8, 0.1::float4, "
           "12345678901234567890.123456789::numeric, 'héllo'::text, 'ab'::varchar(9), "
           "'ab'::char(4), 'nm'::name, 'x'::\"char\", '\\x00ff80'::bytea, "
           "'{\"a\": [1, 2]}'::json, '{\"b\":1, \"a\":2}'::jsonb");
  ASSERT_EQ(r.rows.size(), 1u);
  const std::vector<Value> expected = {
      Value::Bool(true),
      Value::Int64(-32768),
      Value::Int64(2147483647),
      Value::Int64(std::numeric_limits<int64_t>::min()),
      Value::Int64(4294967295),
      Value::Double(0.1),
      Value::Double(0.1),
      Value::Numeric("12345678901234567890.123456789"),
      Value::String("héllo"),
      Value::String("ab"),
      Value::String("ab  "),
      Value::String("nm"),
      Value::String("x"),
      Value::Bytes(std::string("\x00\xff\x80", 3)),
      Value::Json(R"({"a": [1, 2]})"),
      Value::Json(R"({"a": 2, "b": 1})"),
  };
  EXPECT_EQ(r.rows[0], expected);
}

TEST_F(PqConnectionTest, DecodesFloatSpecialValues) {
  QueryResult r = Must(*conn_,
                       "SELECT 'NaN'::float8, 'Infinity'::float8, '-Infinity'::float4, "
                       "'-0'::float8, 1e308::float8, 4.9e-324::float8");
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_TRUE(std::isnan(r.rows[0][0].double_value));
  EXPECT_EQ(r.rows[0][1], Value::Double(kInf));
  EXPECT_EQ(r.rows[0][2], Value::Double(-kInf));
  EXPECT_EQ(r.rows[0][3], Value::Double(-0.0));
  EXPECT_EQ(r.rows[0][4], Value::Double(1e308));
  EXPECT_EQ(r.rows[0][5], Value::Double(4.9e-324));
}

TEST_F(PqConnectionTest, RendersDateTimeTypesInUtcIsoForm) {
  QueryResult r = Must(*conn_,
                       "SELECT 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, '2024-02-29'::date, "
                       "'12:34:56.789'::time, '12:34:56+02'::timetz, "
                       "'2024-02-29 12:34:56.789'::timestamp, "
                       "'2024-02-29 12:34:56.789+02'::timestamptz, "
                       "'1 year 2 months 3 days 04:05:06'::interval");
  ASSERT_EQ(r.rows.size(), 1u);
  const std::vector<Value> expected = {
      Value::String("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
      Value::String("2024-02-29"),
      Value::String("12:34:56.789"),
      Value::String("12:34:56+02"),
      Value::String("2024-02-29 12:34:56.789"),
      Value::String("2024-02-29 10:34:56.789+00"),
      Value::String("P1Y2M3DT4H5M6S"),
  };
  EXPECT_EQ(r.rows[0], expected);
}

TEST_F(PqConnectionTest, NullOfEveryTypeIsNullWithTheColumnsType) {
  const std::vector<std::pair<std::string, uint32_t>> types = {
      {"bool", 16},          {"int2", 21},       {"int4", 23},      {"int8", 20},
      {"float4", 700},       {"float8", 701},    {"numeric", 1700}, {"text", 25},
      {"varchar", 1043},     {"bpchar", 1042},   {"name", 19},      {"bytea", 17},
      {"uuid", 2950},        {"date", 1082},     {"time", 1083},    {"timestamp", 1114},
      {"timestamptz", 1184}, {"interval", 1186}, {"json", 114},     {"jsonb", 3802},
      {"_int4", 1007},       {"_text", 1009},    {"_bytea", 1001},  {"_jsonb", 3807}};
  std::string sql = "SELECT ";
  for (size_t i = 0; i < types.size(); ++i) {
    absl::StrAppend(&sql, i > 0 ? ", " : "", "NULL::", types[i].first);
  }
  QueryResult r = Must(*conn_, sql);
  ASSERT_EQ(r.rows.size(), 1u);
  ASSERT_EQ(r.columns.size(), types.size());
  for (size_t i = 0; i < types.size(); ++i) {
    EXPECT_EQ(r.columns[i].type_oid, types[i].second) << types[i].first;
    EXPECT_EQ(r.columns[i].type_name, types[i].first);
    EXPECT_EQ(r.rows[0][i], Value::Null()) << types[i].first;
  }
}

// ---- parameters in, values out: SELECT $1::type ----

struct RoundTrip {
  std::string type;  // the cast
  Value param;
  Value expected;
  uint32_t oid;
  std::string type_name;
};

std::vector<RoundTrip> RoundTrips() {
  const Value all_bytes = Value::Bytes(AllBytes());
  const Value tricky_texts = Strings(
      {"a,b", "say \"hi\"", "back\\slash", "{braces}", "", " sp ", "NULL", nullptr, "héllo"});
  return {
      {"bool", Value::Bool(true), Value::Bool(true), 16, "bool"},
      {"bool", Value::Bool(false), Value::Bool(false), 16, "bool"},
      {"int2", Value::Int64(-32768), Value::Int64(-32768), 21, "int2"},
      {"int4", Value::Int64(2147483647), Value::Int64(2147483647), 23, "int4"},
      {"int8", Value::Int64(std::numeric_limits<int64_t>::min()),
       Value::Int64(std::numeric_limits<int64_t>::min()), 20, "int8"},
      {"float4", Value::Double(0.1), Value::Double(0.1), 700, "float4"},
      {"float4", Value::Double(-kInf), Value::Double(-kInf), 700, "float4"},
      {"float8", Value::Double(0.1 + 0.2), Value::Double(0.1 + 0.2), 701, "float8"},
      {"float8", Value::Double(std::numeric_limits<double>::denorm_min()),
       Value::Double(std::numeric_limits<double>::denorm_min()), 701, "float8"},
      {"float8", Value::Double(std::numeric_limits<double>::max()),
       Value::Double(std::numeric_limits<double>::max()), 701, "float8"},
      {"float8", Value::Double(-0.0), Value::Double(-0.0), 701, "float8"},
      {"float8", Value::Double(std::nan("")), Value::Double(std::nan("")), 701, "float8"},
      {"float8", Value::Double(kInf), Value::Double(kInf), 701, "float8"},
      {"numeric", Value::Numeric("12345678901234567890.123456789"),
       Value::Numeric("12345678901234567890.123456789"), 1700, "numeric"},
      {"numeric", Value::Numeric("-0.000100"), Value::Numeric("-0.000100"), 1700, "numeric"},
      {"text", Value::String("it's \"quoted\" \\ {x}, y"),
       Value::String("it's \"quoted\" \\ {x}, y"), 25, "text"},
      {"varchar(20)", Value::String("héllo"), Value::String("héllo"), 1043, "varchar"},
      {"char(5)", Value::String("ab"), Value::String("ab   "), 1042, "bpchar"},
      {"name", Value::String("some_name"), Value::String("some_name"), 19, "name"},
      {"bytea", all_bytes, all_bytes, 17, "bytea"},
      {"bytea", Value::Bytes(""), Value::Bytes(""), 17, "bytea"},
      {"uuid", Value::String("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
       Value::String("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), 2950, "uuid"},
      {"date", Value::String("2024-02-29"), Value::String("2024-02-29"), 1082, "date"},
      {"time", Value::String("23:59:59.999999"), Value::String("23:59:59.999999"), 1083, "time"},
      {"timestamp", Value::String("2024-02-29 12:34:56.789"),
       Value::String("2024-02-29 12:34:56.789"), 1114, "timestamp"},
      {"timestamptz", Value::String("2024-02-29 12:34:56.789+02"),
       Value::String("2024-02-29 10:34:56.789+00"), 1184, "timestamptz"},
      {"interval", Value::String("P1Y2M3DT4H5M6S"), Value::String("P1Y2M3DT4H5M6S"), 1186,
       "interval"},
      {"interval", Value::String("1 day 02:00:00"), Value::String("P1DT2H"), 1186, "interval"},
      // A json value is sent as jsonb (its implied type), so the cast to
      // json gives jsonb's normal form; Value.type "json" keeps the text
      // (ExplicitJsonTypeKeepsTheDocumentAsItIs).
      {"json", Value::Json(R"({"b": 1,  "a": [true, null]})"),
       Value::Json(R"({"a": [true, null], "b": 1})"), 114, "json"},
      {"jsonb", Value::Json(R"({"b":1,"a":[true,null]})"),
       Value::Json(R"({"a": [true, null], "b": 1})"), 3802, "jsonb"},
      // Arrays.
      {"bool[]", Value::Array({Value::Bool(true), Value::Null(), Value::Bool(false)}),
       Value::Array({Value::Bool(true), Value::Null(), Value::Bool(false)}), 1000, "_bool"},
      {"int2[]", Ints({1, -2}), Ints({1, -2}), 1005, "_int2"},
      {"int4[]", Value::Array({Value::Int64(1), Value::Null(), Value::Int64(3)}),
       Value::Array({Value::Int64(1), Value::Null(), Value::Int64(3)}), 1007, "_int4"},
      {"int8[]", Value::Array({Ints({1, 2}), Ints({3, 4})}),
       Value::Array({Ints({1, 2}), Ints({3, 4})}), 1016, "_int8"},
      {"int4[]", Value::Array({}), Value::Array({}), 1007, "_int4"},
      {"float4[]", Value::Array({Value::Double(0.5), Value::Double(kInf)}),
       Value::Array({Value::Double(0.5), Value::Double(kInf)}), 1021, "_float4"},
      {"float8[]",
       Value::Array({Value::Double(0.1), Value::Double(std::nan("")), Value::Double(-kInf)}),
       Value::Array({Value::Double(0.1), Value::Double(std::nan("")), Value::Double(-kInf)}), 1022,
       "_float8"},
      {"numeric[]", Value::Array({Value::Numeric("1.50"), Value::Null()}),
       Value::Array({Value::Numeric("1.50"), Value::Null()}), 1231, "_numeric"},
      {"text[]", tricky_texts, tricky_texts, 1009, "_text"},
      {"text[]", Strings({}), Strings({}), 1009, "_text"},
      {"text[]", Value::Array({Strings({"a", "b"}), Strings({"c,", nullptr})}),
       Value::Array({Strings({"a", "b"}), Strings({"c,", nullptr})}), 1009, "_text"},
      {"varchar[]", Strings({"x y", nullptr}), Strings({"x y", nullptr}), 1015, "_varchar"},
      {"char(2)[]", Strings({"a", "bc"}), Strings({"a ", "bc"}), 1014, "_bpchar"},
      {"name[]", Strings({"n1", "n 2"}), Strings({"n1", "n 2"}), 1003, "_name"},
      {"bytea[]", Value::Array({all_bytes, Value::Bytes(""), Value::Null()}),
       Value::Array({all_bytes, Value::Bytes(""), Value::Null()}), 1001, "_bytea"},
      {"uuid[]", Strings({"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}),
       Strings({"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}), 2951, "_uuid"},
      {"date[]", Strings({"2024-02-29", nullptr}), Strings({"2024-02-29", nullptr}), 1182, "_date"},
      {"time[]", Strings({"01:02:03"}), Strings({"01:02:03"}), 1183, "_time"},
      {"timestamp[]", Strings({"2024-02-29 12:34:56"}), Strings({"2024-02-29 12:34:56"}), 1115,
       "_timestamp"},
      {"timestamptz[]", Strings({"2024-02-29 12:34:56-01"}), Strings({"2024-02-29 13:34:56+00"}),
       1185, "_timestamptz"},
      {"interval[]", Strings({"PT1M", "1 day"}), Strings({"PT1M", "P1D"}), 1187, "_interval"},
      {"json[]", Value::Array({Value::Json(R"({"a": "x,\"y\""})"), Value::Null()}),
       Value::Array({Value::Json(R"({"a": "x,\"y\""})"), Value::Null()}), 199, "_json"},
      {"jsonb[]", Value::Array({Value::Json(R"([1,{"k":"v"}])")}),
       Value::Array({Value::Json(R"([1, {"k": "v"}])")}), 3807, "_jsonb"},
  };
}

TEST_F(PqConnectionTest, EveryTypeRoundTripsThroughATypedParameter) {
  for (const RoundTrip& t : RoundTrips()) {
    SCOPED_TRACE(absl::StrCat(t.type, " ", DebugString(t.param)));
    QueryResult r = Must(*conn_, absl::StrCat("SELECT $1::", t.type, " AS v"), {t.param});
    ASSERT_EQ(r.rows.size(), 1u);
    EXPECT_EQ(r.columns[0].type_oid, t.oid);
    EXPECT_EQ(r.columns[0].type_name, t.type_name);
    EXPECT_EQ(r.rows[0][0], t.expected);
  }
}

TEST_F(PqConnectionTest, NullParameterOfEveryTypeIsNull) {
  for (const RoundTrip& t : RoundTrips()) {
    SCOPED_TRACE(t.type);
    EXPECT_EQ(Scalar(*conn_, absl::StrCat("SELECT $1::", t.type), {Value::Null()}), Value::Null());
  }
}

TEST_F(PqConnectionTest, StringParametersTakeTheirTypeFromContext) {
  // Nothing says what $1 is: the server treats it as text.
  QueryResult r = Must(*conn_, "SELECT $1 AS v", {Value::String("5")});
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.columns[0].type_name, "text");
  EXPECT_EQ(r.rows[0][0], Value::String("5"));
  // Next to an int4, it is an int4.
  EXPECT_EQ(Scalar(*conn_, "SELECT $1 + 1", {Value::String("41")}), Value::Int64(42));
  // A cast forces the type.
  EXPECT_EQ(Scalar(*conn_, "SELECT $1::int8 * 2", {Value::String("4000000000")}),
            Value::Int64(8000000000));
  // A bytea context parses the hex form.
  EXPECT_EQ(Scalar(*conn_, "SELECT length($1::bytea)", {Value::Bytes(std::string(3, '\0'))}),
            Value::Int64(3));
}

TEST_F(PqConnectionTest, EveryTypeRoundTripsThroughATableWithImpliedParameterTypes) {
  Must(*conn_,
       "CREATE TEMP TABLE rt (b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, "
       "n numeric, t text, vc varchar(20), c char(5), nm name, by bytea, u uuid, d date, "
       "tm time, ts timestamp, tz timestamptz, iv interval, j json, jb jsonb, ai int4[], "
       "at text[], ab bytea[], a2 int8[], af float8[], atz timestamptz[], aj jsonb[])");
  const std::vector<Value> row = {
      Value::Bool(true),
      Value::Int64(-7),
      Value::Int64(123456),
      Value::Int64(std::numeric_limits<int64_t>::max()),
      Value::Double(1.5),
      Value::Double(std::nan("")),
      Value::Numeric("12345678901234567890.123456789"),
      Value::String("tab\there, \"quotes\" and \\"),
      Value::String("héllo"),
      Value::String("abc"),
      Value::String("nm"),
      Value::Bytes(AllBytes()),
      Value::String("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
      Value::String("2024-02-29"),
      Value::String("12:34:56.789"),
      Value::String("2024-02-29 12:34:56.789"),
      Value::String("2024-02-29 12:34:56.789+02"),
      Value::String("P1Y2M3DT4H5M6S"),
      Value::Json(R"({"a": [1, 2]})"),
      Value::Json(R"({"b":1,"a":2})"),
      Value::Array({Value::Int64(1), Value::Null()}),
      Strings({"a,b", "{}", "\"", "\\", "", nullptr}),
      Value::Array({Value::Bytes(std::string("\x00\xff", 2)), Value::Null()}),
      Value::Array({Ints({1, 2}), Ints({3, 4})}),
      Value::Array({Value::Double(kInf), Value::Double(-0.0)}),
      Strings({"2024-01-01 00:00:00+05"}),
      Value::Array({Value::Json(R"({"k": [1]})")}),
  };
  std::vector<std::string> placeholders;
  for (size_t i = 1; i <= row.size(); ++i) placeholders.push_back(absl::StrCat("$", i));
  const std::string insert =
      absl::StrCat("INSERT INTO rt VALUES (", absl::StrJoin(placeholders, ", "), ")");
  QueryResult inserted = Must(*conn_, insert, row);
  EXPECT_EQ(inserted.rows_affected, 1);
  EXPECT_EQ(inserted.command_tag, "INSERT 0 1");
  Must(*conn_, insert, std::vector<Value>(row.size(), Value::Null()));

  QueryResult r = Must(*conn_, "SELECT * FROM rt ORDER BY b NULLS LAST");
  ASSERT_EQ(r.rows.size(), 2u);
  std::vector<Value> expected = row;
  expected[9] = Value::String("abc  ");                        // char(5) pads
  expected[16] = Value::String("2024-02-29 10:34:56.789+00");  // UTC
  expected[19] = Value::Json(R"({"a": 2, "b": 1})");           // jsonb normalizes
  expected[25] = Strings({"2023-12-31 19:00:00+00"});
  EXPECT_EQ(r.rows[0], expected);
  EXPECT_EQ(r.rows[1], std::vector<Value>(row.size(), Value::Null()));
  ASSERT_EQ(r.columns.size(), row.size());
  EXPECT_EQ(r.columns[11].name, "by");
  EXPECT_EQ(r.columns[11].type_name, "bytea");
  EXPECT_EQ(r.columns[26].type_name, "_jsonb");
}

TEST_F(PqConnectionTest, NamesUserDefinedTypesAndDecodesTheirArrays) {
  const std::string mood = UniqueName("sb_mood");
  const std::string posint = UniqueName("sb_posint");
  Must(*conn_, absl::StrCat("CREATE TYPE ", mood, " AS ENUM ('sad', 'ok')"));
  CleanUpWith(absl::StrCat("DROP TYPE ", mood));
  Must(*conn_, absl::StrCat("CREATE DOMAIN ", posint, " AS int4 CHECK (VALUE > 0)"));
  CleanUpWith(absl::StrCat("DROP DOMAIN ", posint));

  QueryResult r = Must(*conn_, absl::StrCat("SELECT 'ok'::", mood, ", ARRAY['sad', NULL]::", mood,
                                            "[], 5::", posint, ", ARRAY[1, 2]::", posint, "[]"));
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.columns[0].type_name, mood);
  EXPECT_EQ(r.rows[0][0], Value::String("ok"));
  EXPECT_EQ(r.columns[1].type_name, "_" + mood);
  EXPECT_EQ(r.rows[0][1], Strings({"sad", nullptr}));
  // The server reports a domain's values with its base type.
  EXPECT_EQ(r.columns[2].type_name, "int4");
  EXPECT_EQ(r.rows[0][2], Value::Int64(5));
  EXPECT_EQ(r.columns[3].type_name, "_" + posint);
  EXPECT_EQ(r.rows[0][3], Ints({1, 2}));

  // Another connection of the same connector finds the names in the cache.
  std::unique_ptr<DbConnection> other = Connect();
  ASSERT_NE(other, nullptr);
  QueryResult again = Must(*other, absl::StrCat("SELECT ARRAY['ok']::", mood, "[]"));
  ASSERT_EQ(again.rows.size(), 1u);
  EXPECT_EQ(again.columns[0].type_name, "_" + mood);
  EXPECT_EQ(again.rows[0][0], Strings({"ok"}));
}

// ---- command tags and counts ----

TEST_F(PqConnectionTest, ReportsCommandTagAndRowsAffected) {
  QueryResult created = Must(*conn_, "CREATE TEMP TABLE tags (id int)");
  EXPECT_EQ(created.command_tag, "CREATE TABLE");
  EXPECT_EQ(created.rows_affected, 0);
  EXPECT_TRUE(created.columns.empty());

  QueryResult inserted = Must(*conn_, "INSERT INTO tags SELECT generate_series(1, 3)");
  EXPECT_EQ(inserted.command_tag, "INSERT 0 3");
  EXPECT_EQ(inserted.rows_affected, 3);

  QueryResult updated =
      Must(*conn_, "UPDATE tags SET id = id + 10 WHERE id > $1", {Value::Int64(1)});
  EXPECT_EQ(updated.command_tag, "UPDATE 2");
  EXPECT_EQ(updated.rows_affected, 2);

  QueryResult returning = Must(*conn_, "DELETE FROM tags WHERE id > 10 RETURNING id");
  EXPECT_EQ(returning.command_tag, "DELETE 2");
  EXPECT_EQ(returning.rows_affected, 2);
  EXPECT_EQ(returning.rows.size(), 2u);

  QueryResult selected = Must(*conn_, "SELECT * FROM tags");
  EXPECT_EQ(selected.command_tag, "SELECT 1");
  EXPECT_EQ(selected.rows_affected, 1);

  QueryResult set = Must(*conn_, "SET application_name = 'x'");
  EXPECT_EQ(set.command_tag, "SET");
}

TEST_F(PqConnectionTest, RefusesSeveralStatementsInOneString) {
  Must(*conn_, "CREATE TEMP TABLE multi (id int)");
  absl::Status s = RunStatus(*conn_, "INSERT INTO multi VALUES (1); DROP TABLE multi");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SqlStateOf(s), "42601");
  EXPECT_THAT(s.message(), HasSubstr("cannot insert multiple commands"));
  EXPECT_EQ(Scalar(*conn_, "SELECT count(*) FROM multi"), Value::Int64(0));
}

TEST_F(PqConnectionTest, CopyToStdoutIsRefusedAndTheConnectionIsNeverReused) {
  absl::Status out =
      RunStatus(*conn_,
                "COPY (SELECT g, repeat('x', 100) FROM generate_series(1, 100000) g) "
                "TO STDOUT");
  EXPECT_EQ(out.code(), absl::StatusCode::kUnimplemented) << out;
  EXPECT_THAT(out.message(), HasSubstr("COPY FROM STDIN / TO STDOUT is not supported"));
  // libpq is mid-COPY: the connection must not reach another caller.
  EXPECT_TRUE(conn_->IsBroken());
  EXPECT_EQ(RunStatus(*conn_, "SELECT 1").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(conn_->Ping().code(), absl::StatusCode::kUnavailable);
}

TEST_F(PqConnectionTest, CopyFromStdinIsRefusedEvenWithoutColumnsAndInABatch) {
  const std::string table = UniqueName("sb_copy_in");
  Must(*conn_, absl::StrCat("CREATE TABLE ", table, " (id int)"));
  CleanUpWith(absl::StrCat("DROP TABLE ", table));
  std::unique_ptr<DbConnection> watcher = Connect();
  ASSERT_NE(watcher, nullptr);

  // A table without columns gives a COPY result with neither columns nor tag.
  Must(*conn_, "CREATE TEMP TABLE no_columns ()");
  absl::Status in = RunStatus(*conn_, "COPY no_columns FROM STDIN");
  EXPECT_EQ(in.code(), absl::StatusCode::kUnimplemented) << in;
  EXPECT_TRUE(conn_->IsBroken());

  std::unique_ptr<DbConnection> conn = Connect();
  ASSERT_NE(conn, nullptr);
  absl::StatusOr<std::vector<QueryResult>> batch =
      conn->ExecuteBatch({Statement{absl::StrCat("INSERT INTO ", table, " VALUES (1)"), {}},
                          Statement{absl::StrCat("COPY ", table, " FROM STDIN"), {}}},
                         ExecuteOptions{});
  ASSERT_FALSE(batch.ok());
  EXPECT_EQ(batch.status().code(), absl::StatusCode::kUnimplemented) << batch.status();
  EXPECT_THAT(batch.status().message(), StartsWith("statement 2 of 2: "));
  EXPECT_TRUE(conn->IsBroken());
  EXPECT_EQ(Scalar(*watcher, absl::StrCat("SELECT count(*) FROM ", table)), Value::Int64(0));
}

// ---- errors ----

void ExpectSqlError(const absl::Status& s, absl::StatusCode code, const std::string& sqlstate) {
  EXPECT_EQ(s.code(), code) << s;
  EXPECT_EQ(SqlStateOf(s), sqlstate) << s;
  EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("[SQLSTATE ", sqlstate, "]")));
  // One readable line, without libpq's severity prefix or source location.
  EXPECT_THAT(s.message(), AllOf(Not(HasSubstr("\n")), Not(HasSubstr("ERROR:")),
                                 Not(HasSubstr("LOCATION")), Not(HasSubstr("SCHEMA NAME"))));
}

TEST_F(PqConnectionTest, SyntaxErrorIsInvalidArgument) {
  absl::Status s = RunStatus(*conn_, "SELEC 1");
  ExpectSqlError(s, absl::StatusCode::kInvalidArgument, "42601");
  EXPECT_THAT(s.message(), StartsWith("syntax error at or near \"SELEC\""));
}

TEST_F(PqConnectionTest, UndefinedTableIsInvalidArgument) {
  ExpectSqlError(RunStatus(*conn_, "SELECT * FROM no_such_table_sb"),
                 absl::StatusCode::kInvalidArgument, "42P01");
}

TEST_F(PqConnectionTest, DivisionByZeroIsInvalidArgument) {
  ExpectSqlError(RunStatus(*conn_, "SELECT 1 / $1::int", {Value::Int64(0)}),
                 absl::StatusCode::kInvalidArgument, "22012");
}

TEST_F(PqConnectionTest, UniqueViolationIsAlreadyExistsWithDetail) {
  Must(*conn_, "CREATE TEMP TABLE uniq (id int PRIMARY KEY)");
  Must(*conn_, "INSERT INTO uniq VALUES (1)");
  absl::Status s = RunStatus(*conn_, "INSERT INTO uniq VALUES ($1)", {Value::Int64(1)});
  ExpectSqlError(s, absl::StatusCode::kAlreadyExists, "23505");
  EXPECT_EQ(s.message(),
            "duplicate key value violates unique constraint \"uniq_pkey\"; DETAIL: Key (id)=(1) "
            "already exists. [SQLSTATE 23505]");
}

TEST_F(PqConnectionTest, ConstraintViolationsAreFailedPrecondition) {
  Must(*conn_, "CREATE TEMP TABLE parent (id int PRIMARY KEY)");
  Must(*conn_, "CREATE TEMP TABLE child (id int NOT NULL REFERENCES parent, n int CHECK (n > 0))");
  Must(*conn_, "INSERT INTO parent VALUES (1)");
  ExpectSqlError(RunStatus(*conn_, "INSERT INTO child VALUES (2, 1)"),
                 absl::StatusCode::kFailedPrecondition, "23503");
  ExpectSqlError(RunStatus(*conn_, "INSERT INTO child VALUES (1, -1)"),
                 absl::StatusCode::kFailedPrecondition, "23514");
  ExpectSqlError(RunStatus(*conn_, "INSERT INTO child VALUES (NULL, 1)"),
                 absl::StatusCode::kFailedPrecondition, "23502");
}

// The transaction-rollback class maps by its SQLSTATE: retryable ones are
// ABORTED, 40003 (the statement's outcome is unknown) UNKNOWN.
TEST_F(PqConnectionTest, RaisedRollbackStatesAreAborted) {
  absl::Status serialization =
      RunStatus(*conn_, "DO $$BEGIN RAISE EXCEPTION 'forced' USING ERRCODE = '40001'; END$$");
  ExpectSqlError(serialization, absl::StatusCode::kAborted, "40001");
  EXPECT_THAT(serialization.message(), StartsWith("forced"));
  ExpectSqlError(RunStatus(*conn_, "DO $$BEGIN RAISE EXCEPTION USING ERRCODE = '40P01'; END$$"),
                 absl::StatusCode::kAborted, "40P01");
  ExpectSqlError(RunStatus(*conn_, "DO $$BEGIN RAISE EXCEPTION USING ERRCODE = '40003'; END$$"),
                 absl::StatusCode::kUnknown, "40003");
  ExpectSqlError(RunStatus(*conn_, "DO $$BEGIN RAISE EXCEPTION 'plain'; END$$"),
                 absl::StatusCode::kFailedPrecondition, "P0001");
  EXPECT_FALSE(conn_->IsBroken());
}

// A class 08 SQLSTATE the server merely relays on a healthy connection is
// UNAVAILABLE like any 08 error, but it is not a lost connection: the
// connection stays usable. Only a connection libpq sees closed is broken.
TEST_F(PqConnectionTest, RaisedClass08ErrorOnALiveConnectionKeepsTheConnection) {
  absl::Status s =
      RunStatus(*conn_, "DO $$BEGIN RAISE EXCEPTION 'remote gone' USING ERRCODE = '08006'; END$$");
  ExpectSqlError(s, absl::StatusCode::kUnavailable, "08006");
  EXPECT_FALSE(conn_->IsBroken());
  EXPECT_EQ(Scalar(*conn_, "SELECT 1"), Value::Int64(1));
}

TEST_F(PqConnectionTest, RealSerializationFailureIsAborted) {
  const std::string table = UniqueName("sb_serial");
  Must(*conn_, absl::StrCat("CREATE TABLE ", table, " (id int PRIMARY KEY, v int)"));
  CleanUpWith(absl::StrCat("DROP TABLE ", table));
  Must(*conn_, absl::StrCat("INSERT INTO ", table, " VALUES (1, 0)"));
  std::unique_ptr<DbConnection> other = Connect();
  ASSERT_NE(other, nullptr);

  Must(*conn_, "BEGIN ISOLATION LEVEL REPEATABLE READ");
  Must(*conn_, absl::StrCat("SELECT v FROM ", table));  // takes the snapshot
  Must(*other, absl::StrCat("UPDATE ", table, " SET v = 1 WHERE id = 1"));
  ExpectSqlError(RunStatus(*conn_, absl::StrCat("UPDATE ", table, " SET v = 2 WHERE id = 1")),
                 absl::StatusCode::kAborted, "40001");
  Must(*conn_, "ROLLBACK");
}

TEST_F(PqConnectionTest, RealDeadlockIsAborted) {
  const std::string table = UniqueName("sb_deadlock");
  Must(*conn_, absl::StrCat("CREATE TABLE ", table, " (id int PRIMARY KEY, v int)"));
  CleanUpWith(absl::StrCat("DROP TABLE ", table));
  Must(*conn_, absl::StrCat("INSERT INTO ", table, " VALUES (1, 0), (2, 0)"));
  std::unique_ptr<DbConnection> a = Connect();
  std::unique_ptr<DbConnection> b = Connect();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  const std::string update = absl::StrCat("UPDATE ", table, " SET v = v + 1 WHERE id = $1");
  for (DbConnection* c : {a.get(), b.get()}) {
    Must(*c, "SET lock_timeout = '20s'");  // a bound, should detection ever fail
    Must(*c, "BEGIN");
  }
  Must(*a, update, {Value::Int64(1)});
  Must(*b, update, {Value::Int64(2)});

  absl::Status a_status;
  std::thread a_thread([&] {
    a_status = RunStatus(*a, update, {Value::Int64(2)});  // waits for b
    if (!a_status.ok()) Must(*a, "ROLLBACK");
  });
  // Let a start waiting for b's lock before b closes the cycle.
  std::unique_ptr<DbConnection> watcher = Connect();
  ASSERT_NE(watcher, nullptr);
  for (int i = 0; i < 200; ++i) {
    if (Scalar(*watcher, "SELECT count(*) FROM pg_locks WHERE pid = $1 AND NOT granted",
               {Value::Int64(a->BackendPid())}) != Value::Int64(0)) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const absl::Status b_status = RunStatus(*b, update, {Value::Int64(1)});
  if (!b_status.ok()) Must(*b, "ROLLBACK");
  a_thread.join();
  Must(*a, "ROLLBACK");
  Must(*b, "ROLLBACK");

  // Exactly one of them is the deadlock victim.
  ASSERT_NE(a_status.ok(), b_status.ok()) << a_status << " / " << b_status;
  ExpectSqlError(a_status.ok() ? b_status : a_status, absl::StatusCode::kAborted, "40P01");
  EXPECT_THAT((a_status.ok() ? b_status : a_status).message(), HasSubstr("deadlock detected"));
}

TEST_F(PqConnectionTest, InsufficientPrivilegeIsPermissionDenied) {
  const std::string role = UniqueName("sb_norights");
  const std::string table = UniqueName("sb_secret");
  Must(*conn_, absl::StrCat("CREATE ROLE ", role, " NOLOGIN"));
  CleanUpWith(absl::StrCat("DROP ROLE ", role));
  Must(*conn_, absl::StrCat("CREATE TABLE ", table, " (x int)"));
  CleanUpWith(absl::StrCat("DROP TABLE ", table));

  absl::StatusOr<std::vector<QueryResult>> batch =
      conn_->ExecuteBatch({Statement{absl::StrCat("SET ROLE ", role), {}},
                           Statement{absl::StrCat("SELECT * FROM ", table), {}}},
                          ExecuteOptions{});
  ASSERT_FALSE(batch.ok());
  ExpectSqlError(batch.status(), absl::StatusCode::kPermissionDenied, "42501");
  EXPECT_THAT(batch.status().message(), StartsWith("statement 2 of 2: permission denied"));
  // SET ROLE was rolled back with the batch.
  EXPECT_EQ(Scalar(*conn_, "SELECT current_user = session_user"), Value::Bool(true));
}

TEST_F(PqConnectionTest, WrongParameterCountIsInvalidArgumentAndKeepsTheConnection) {
  absl::Status too_few = RunStatus(*conn_, "SELECT $1::int + $2::int", {Value::Int64(1)});
  ExpectSqlError(too_few, absl::StatusCode::kInvalidArgument, "08P01");
  EXPECT_THAT(too_few.message(), HasSubstr("bind message supplies 1 parameters"));
  // An extra parameter the statement does not use: untyped, the server
  // cannot tell its type. (A typed one it accepts and ignores; the statement
  // runner refuses a count that does not match the placeholders anyway.)
  absl::Status too_many = RunStatus(*conn_, "SELECT 1", {Value::String("1")});
  ExpectSqlError(too_many, absl::StatusCode::kInvalidArgument, "42P18");
  EXPECT_FALSE(conn_->IsBroken());
  EXPECT_EQ(Scalar(*conn_, "SELECT 1"), Value::Int64(1));
}

// ---- parameter types (implied by the kind, or named by Statement::param_types) ----

// `sql` with one parameter sent as `type` ("" for its implied type).
absl::StatusOr<QueryResult> RunTyped(DbConnection& conn, const std::string& sql, Value param,
                                     std::string type, ExecuteOptions options = {}) {
  Statement s{sql, {std::move(param)}};
  s.param_types = {std::move(type)};
  return conn.Execute(s, options);
}

TEST_F(PqConnectionTest, AnInt64ParameterIsAnInt8) {
  QueryResult r = Must(*conn_, "SELECT $1 AS v", {Value::Int64(41)});
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.columns[0].type_oid, 20u);
  EXPECT_EQ(r.columns[0].type_name, "int8");
  EXPECT_EQ(r.rows[0][0], Value::Int64(41));
  // Untyped, $1 + 1 made $1 an int4, which 2^40 overflows.
  QueryResult sum = Must(*conn_, "SELECT $1 + 1", {Value::Int64(int64_t{1} << 40)});
  ASSERT_EQ(sum.rows.size(), 1u);
  EXPECT_EQ(sum.columns[0].type_name, "int8");
  EXPECT_EQ(sum.rows[0][0], Value::Int64((int64_t{1} << 40) + 1));
}

TEST_F(PqConnectionTest, EveryKindRoundTripsAsItsImpliedType) {
  struct Case {
    Value value;
    uint32_t oid;
    const char* type_name;
    Value expected;
  };
  const std::vector<Case> cases = {
      {Value::Bool(true), 16, "bool", Value::Bool(true)},
      {Value::Int64(std::numeric_limits<int64_t>::min()), 20, "int8",
       Value::Int64(std::numeric_limits<int64_t>::min())},
      {Value::Double(0.1), 701, "float8", Value::Double(0.1)},
      {Value::Double(-kInf), 701, "float8", Value::Double(-kInf)},
      {Value::Bytes(AllBytes()), 17, "bytea", Value::Bytes(AllBytes())},
      {Value::Numeric("-12345678901234567890.5"), 1700, "numeric",
       Value::Numeric("-12345678901234567890.5")},
      {Value::Json(R"({"b":1,"a":[true,null]})"), 3802, "jsonb",
       Value::Json(R"({"a": [true, null], "b": 1})")},
      {Value::Array({Ints({1, 2}), Ints({3, 4})}), 1016, "_int8",
       Value::Array({Ints({1, 2}), Ints({3, 4})})},
      {Value::Array({Value::Double(1.5), Value::Null()}), 1022, "_float8",
       Value::Array({Value::Double(1.5), Value::Null()})},
      {Value::Array({Value::Bool(false), Value::Bool(true)}), 1000, "_bool",
       Value::Array({Value::Bool(false), Value::Bool(true)})},
      {Value::Array({Value::Bytes(std::string("\0\\\"", 3)), Value::Bytes("")}), 1001, "_bytea",
       Value::Array({Value::Bytes(std::string("\0\\\"", 3)), Value::Bytes("")})},
      {Value::Array({Value::Numeric("1.50")}), 1231, "_numeric",
       Value::Array({Value::Numeric("1.50")})},
      {Value::Array({Value::Json(R"({"k": "a,\"b\""})")}), 3807, "_jsonb",
       Value::Array({Value::Json(R"({"k": "a,\"b\""})")})},
      // Strings, mixed kinds and NULLs only: the server infers (text here).
      {Value::String("x"), 25, "text", Value::String("x")},
      {Value::Array({Value::Int64(1), Value::String("x")}), 25, "text",
       Value::String(R"({"1","x"})")},
      {Value::Array({Value::Null()}), 25, "text", Value::String("{NULL}")},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(DebugString(c.value));
    QueryResult r = Must(*conn_, "SELECT $1 AS v", {c.value});
    ASSERT_EQ(r.rows.size(), 1u);
    EXPECT_EQ(r.columns[0].type_oid, c.oid);
    EXPECT_EQ(r.columns[0].type_name, c.type_name);
    EXPECT_EQ(r.rows[0][0], c.expected);
  }
}

TEST_F(PqConnectionTest, ANamedTypeIsSentAsThatType) {
  struct Case {
    const char* type;
    Value value;
    const char* type_name;
    Value expected;
  };
  const std::vector<Case> cases = {
      {"date", Value::String("2026-12-02"), "date", Value::String("2026-12-02")},
      {"timestamptz", Value::String("2026-12-02 10:00:00+02"), "timestamptz",
       Value::String("2026-12-02 08:00:00+00")},
      {"timestamp with time zone", Value::String("2026-12-02 10:00:00+02"), "timestamptz",
       Value::String("2026-12-02 08:00:00+00")},
      {"uuid", Value::String("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"), "uuid",
       Value::String("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")},
      {"int4", Value::Int64(7), "int4", Value::Int64(7)},
      {"INTEGER", Value::Int64(7), "int4", Value::Int64(7)},
      {"text[]", Strings({"a", nullptr}), "_text", Strings({"a", nullptr})},
      {"varchar(3)[]", Strings({"abcd"}), "_varchar", Strings({"abcd"})},
      {"pg_catalog.int2", Value::Int64(-3), "int2", Value::Int64(-3)},
      {"\"char\"", Value::String("x"), "char", Value::String("x")},
      // Explicitly json: the document stays as it was written.
      {"json", Value::Json(R"({"b": 1,  "a": 2})"), "json", Value::Json(R"({"b": 1,  "a": 2})")},
      {"interval", Value::Null(), "interval", Value::Null()},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.type);
    absl::StatusOr<QueryResult> r = RunTyped(*conn_, "SELECT $1 AS v", c.value, c.type);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->rows.size(), 1u);
    EXPECT_EQ(r->columns[0].type_name, c.type_name);
    EXPECT_EQ(r->rows[0][0], c.expected);
  }
}

TEST_F(PqConnectionTest, EnumsAndDomainsAreNamedByTheirNames) {
  const std::string mood = UniqueName("mood");
  const std::string posint = UniqueName("posint");
  Must(*conn_, absl::StrCat("CREATE TYPE ", mood, " AS ENUM ('sad', 'happy')"));
  CleanUpWith(absl::StrCat("DROP TYPE ", mood));
  Must(*conn_, absl::StrCat("CREATE DOMAIN ", posint, " AS int4 CHECK (VALUE > 0)"));
  CleanUpWith(absl::StrCat("DROP DOMAIN ", posint));

  for (const std::string& name : {mood, absl::StrCat("public.", mood)}) {
    absl::StatusOr<QueryResult> r =
        RunTyped(*conn_, "SELECT $1 AS v", Value::String("happy"), name);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->columns[0].type_name, mood);
    EXPECT_EQ(r->rows[0][0], Value::String("happy"));
  }
  absl::StatusOr<QueryResult> moods =
      RunTyped(*conn_, "SELECT $1 AS v", Strings({"sad", "happy"}), absl::StrCat(mood, "[]"));
  ASSERT_TRUE(moods.ok()) << moods.status();
  EXPECT_EQ(moods->columns[0].type_name, absl::StrCat("_", mood));
  EXPECT_EQ(moods->rows[0][0], Strings({"sad", "happy"}));
  // An enum's label that does not exist is the server's complaint.
  EXPECT_EQ(RunTyped(*conn_, "SELECT $1", Value::String("meh"), mood).status().code(),
            absl::StatusCode::kInvalidArgument);

  // A domain's values come back as its base type; its check applies.
  absl::StatusOr<QueryResult> one = RunTyped(*conn_, "SELECT $1 AS v", Value::Int64(1), posint);
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->columns[0].type_name, "int4");
  EXPECT_EQ(one->rows[0][0], Value::Int64(1));
  absl::Status negative = RunTyped(*conn_, "SELECT $1", Value::Int64(-1), posint).status();
  EXPECT_EQ(SqlStateOf(negative), "23514") << negative;
  const std::optional<SqlErrorFields> fields = SqlErrorFieldsOf(negative);
  ASSERT_TRUE(fields.has_value()) << negative;
  EXPECT_EQ(fields->data_type_name, posint);
  EXPECT_EQ(fields->schema_name, "public");
}

TEST_F(PqConnectionTest, AnUnknownTypeNameIsInvalidArgumentNamingTheParameterAndType) {
  for (const char* name : {"no_such_type_sb", "nosuchschema_sb.int4", "int4 int4"}) {
    SCOPED_TRACE(name);
    Statement s{"SELECT $1::text, $2", {Value::String("a"), Value::String("b")}};
    s.param_types = {"", name};
    absl::Status status = conn_->Execute(s, ExecuteOptions{}).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_THAT(status.message(), AllOf(StartsWith("parameter $2: "), HasSubstr(name)));
    EXPECT_FALSE(SqlErrorFieldsOf(status).has_value()) << "the broker's own error";
    EXPECT_FALSE(conn_->IsBroken());
  }
  EXPECT_EQ(Scalar(*conn_, "SELECT 1"), Value::Int64(1));
}

TEST_F(PqConnectionTest, AnUnknownTypeNameInsideATransactionLeavesItUsable) {
  Must(*conn_, "CREATE TEMP TABLE kept (id int)");
  ASSERT_TRUE(conn_->Begin(TransactionOptions{}).ok());
  ExecuteOptions in_tx;
  in_tx.in_transaction = true;
  ASSERT_TRUE(Run(*conn_, "INSERT INTO kept VALUES (1)", {}, in_tx).ok());
  for (const char* name : {"no_such_type_sb", "int4 int4"}) {
    absl::Status status = RunTyped(*conn_, "SELECT $1", Value::String("x"), name, in_tx).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  }
  ASSERT_TRUE(Run(*conn_, "INSERT INTO kept VALUES (2)", {}, in_tx).ok());
  ASSERT_TRUE(conn_->Commit().ok());
  EXPECT_EQ(Scalar(*conn_, "SELECT count(*) FROM kept"), Value::Int64(2));
}

TEST_F(PqConnectionTest, ATypeNamedInABatchIsLookedUpUnderTheBatchsSearchPath) {
  const std::string schema = UniqueName("sbschema");
  Must(*conn_, absl::StrCat("CREATE SCHEMA ", schema));
  CleanUpWith(absl::StrCat("DROP SCHEMA ", schema, " CASCADE"));
  Must(*conn_, absl::StrCat("CREATE TYPE ", schema, ".color AS ENUM ('red')"));
  Statement s{"SELECT $1 AS v", {Value::String("red")}};
  s.param_types = {"color"};
  // Not on the connection's search_path...
  absl::StatusOr<std::vector<QueryResult>> outside = conn_->ExecuteBatch({s}, ExecuteOptions{});
  EXPECT_EQ(outside.status().code(), absl::StatusCode::kInvalidArgument) << outside.status();
  // ...but on the batch's.
  ExecuteOptions options;
  options.transaction.settings = {{"search_path", schema}};
  absl::StatusOr<std::vector<QueryResult>> inside = conn_->ExecuteBatch({s}, options);
  ASSERT_TRUE(inside.ok()) << inside.status();
  EXPECT_EQ((*inside)[0].columns[0].type_name, "color");
}

// ---- the fields of PostgreSQL's errors (SqlErrorFields) ----

TEST_F(PqConnectionTest, AUniqueViolationCarriesItsConstraintTableSchemaAndDetail) {
  const std::string table = UniqueName("uniq_fields");
  Must(*conn_, absl::StrCat("CREATE TABLE ", table, " (id int8 PRIMARY KEY)"));
  CleanUpWith(absl::StrCat("DROP TABLE ", table));
  Must(*conn_, absl::StrCat("INSERT INTO ", table, " VALUES ($1)"), {Value::Int64(1)});
  absl::Status s =
      RunStatus(*conn_, absl::StrCat("INSERT INTO ", table, " VALUES ($1)"), {Value::Int64(1)});
  ExpectSqlError(s, absl::StatusCode::kAlreadyExists, "23505");
  const std::optional<SqlErrorFields> f = SqlErrorFieldsOf(s);
  ASSERT_TRUE(f.has_value()) << s;
  EXPECT_EQ(f->sqlstate, "23505");
  EXPECT_EQ(f->severity, "ERROR");
  EXPECT_EQ(f->message,
            absl::StrCat("duplicate key value violates unique constraint \"", table, "_pkey\""));
  EXPECT_EQ(f->detail, "Key (id)=(1) already exists.");
  EXPECT_EQ(f->schema_name, "public");
  EXPECT_EQ(f->table_name, table);
  EXPECT_EQ(f->constraint_name, absl::StrCat(table, "_pkey"));
  EXPECT_EQ(f->statement_index, 0u);
}

TEST_F(PqConnectionTest, ErrorFieldsNameTheColumnAndThePosition) {
  Must(*conn_, "CREATE TEMP TABLE nn_fields (id int, name text NOT NULL)");
  absl::Status missing = RunStatus(*conn_, "INSERT INTO nn_fields VALUES (1, NULL)");
  std::optional<SqlErrorFields> f = SqlErrorFieldsOf(missing);
  ASSERT_TRUE(f.has_value()) << missing;
  EXPECT_EQ(f->sqlstate, "23502");
  EXPECT_EQ(f->table_name, "nn_fields");
  EXPECT_EQ(f->column_name, "name");

  absl::Status syntax = RunStatus(*conn_, "SELECT 1 FROM");
  f = SqlErrorFieldsOf(syntax);
  ASSERT_TRUE(f.has_value()) << syntax;
  EXPECT_EQ(f->sqlstate, "42601");
  EXPECT_EQ(f->position, 14u);  // the end of the statement
  absl::Status undefined = RunStatus(*conn_, "SELECT no_such_column_sb");
  f = SqlErrorFieldsOf(undefined);
  ASSERT_TRUE(f.has_value()) << undefined;
  EXPECT_EQ(f->position, 8u);
  EXPECT_EQ(f->hint, "");
}

TEST_F(PqConnectionTest, ABatchFailureCarriesTheIndexOfTheStatement) {
  Must(*conn_, "CREATE TEMP TABLE batch_fields (id int PRIMARY KEY)");
  absl::StatusOr<std::vector<QueryResult>> batch =
      conn_->ExecuteBatch({Statement{"INSERT INTO batch_fields VALUES (1)", {}},
                           Statement{"INSERT INTO batch_fields VALUES (2)", {}},
                           Statement{"INSERT INTO batch_fields VALUES ($1)", {Value::Int64(1)}}},
                          ExecuteOptions{});
  ASSERT_FALSE(batch.ok());
  EXPECT_THAT(batch.status().message(), StartsWith("statement 3 of 3: duplicate key"));
  const std::optional<SqlErrorFields> f = SqlErrorFieldsOf(batch.status());
  ASSERT_TRUE(f.has_value()) << batch.status();
  EXPECT_EQ(f->statement_index, 3u);
  EXPECT_EQ(f->constraint_name, "batch_fields_pkey");
}

TEST_F(PqConnectionTest, AnErrorOfBeginCarriesTheServersFields) {
  TransactionOptions options;
  options.settings = {{"statement_timeout", "not a duration"}};
  absl::Status s = conn_->Begin(options);
  ASSERT_FALSE(s.ok());
  const std::optional<SqlErrorFields> f = SqlErrorFieldsOf(s);
  ASSERT_TRUE(f.has_value()) << s;
  EXPECT_EQ(f->sqlstate, "22023");
  EXPECT_EQ(f->severity, "ERROR");
  EXPECT_THAT(f->message, HasSubstr("statement_timeout"));
}

TEST_F(PqConnectionTest, TheBrokersOwnErrorsCarryNoFields) {
  conn_->Cancel();
  absl::Status cancelled = RunStatus(*conn_, "SELECT 1");
  conn_->ClearCancel();
  EXPECT_EQ(SqlStateOf(cancelled), "57014");
  EXPECT_FALSE(SqlErrorFieldsOf(cancelled).has_value());
}

TEST_F(PqConnectionTest, UnsendableParameterIsInvalidArgumentBeforeReachingTheServer) {
  absl::Status s = RunStatus(*conn_, "SELECT $1::int, $2::text",
                             {Value::Int64(1), Value::String(std::string("a\0b", 3))});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), StartsWith("parameter $2: "));
  EXPECT_FALSE(conn_->IsBroken());
}

// ---- cancellation and lost connections ----

// Polls until backend `pid`'s row in pg_stat_activity meets `condition` (the
// test waits for a state, not a time; ctest's timeout ends a wait that never
// ends).
void AwaitBackend(DbConnection& watcher, int pid, const std::string& condition) {
  for (;;) {
    absl::StatusOr<QueryResult> r = watcher.Execute(
        Statement{
            absl::StrCat("SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND ", condition),
            {Value::Int64(pid)}},
        ExecuteOptions{});
    ASSERT_TRUE(r.ok()) << r.status();
    if (r->rows.at(0).at(0) == Value::Int64(1)) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// Until backend `pid` runs pg_sleep itself. Not state = 'active': a statement
// shows as active from its Parse message on, and a cancel request that
// reaches the backend between Parse, Bind and Execute (while it reads the
// next message) is discarded by PostgreSQL, so the sleep would run on.
void AwaitSleeping(DbConnection& watcher, int pid) {
  AwaitBackend(watcher, pid, "wait_event = 'PgSleep'");
}

TEST_F(PqConnectionTest, CancelStopsARunningStatementAndKeepsTheConnection) {
  std::unique_ptr<DbConnection> watcher = Connect();
  ASSERT_NE(watcher, nullptr);
  std::thread canceller([&] {
    AwaitSleeping(*watcher, conn_->BackendPid());
    conn_->Cancel();
  });
  const auto start = Clock::now();
  absl::Status s = RunStatus(*conn_, "SELECT pg_sleep(30)");
  const auto elapsed = Clock::now() - start;
  canceller.join();
  ExpectSqlError(s, absl::StatusCode::kDeadlineExceeded, "57014");
  EXPECT_LT(elapsed, std::chrono::seconds(5));
  EXPECT_FALSE(conn_->IsBroken());
  conn_->ClearCancel();
  EXPECT_EQ(Scalar(*conn_, "SELECT 1"), Value::Int64(1));
}

TEST_F(PqConnectionTest, CancelRefusesEveryLaterCallUntilClearCancel) {
  const std::string table = UniqueName("sb_cancel_sticky");
  Must(*conn_, absl::StrCat("CREATE TABLE ", table, " (id int)"));
  CleanUpWith(absl::StrCat("DROP TABLE ", table));
  const std::string insert = absl::StrCat("INSERT INTO ", table, " VALUES ($1)");
  conn_->Cancel();
  conn_->Cancel();

  absl::Status s = RunStatus(*conn_, insert, {Value::Int64(1)});
  ExpectSqlError(s, absl::StatusCode::kDeadlineExceeded, "57014");
  absl::StatusOr<std::vector<QueryResult>> batch =
      conn_->ExecuteBatch({Statement{insert, {Value::Int64(2)}}}, ExecuteOptions{});
  ASSERT_FALSE(batch.ok());
  ExpectSqlError(batch.status(), absl::StatusCode::kDeadlineExceeded, "57014");
  EXPECT_THAT(batch.status().message(), StartsWith("statement 1 of 1: "));
  EXPECT_FALSE(conn_->IsBroken());

  conn_->ClearCancel();
  // Neither statement ran; now they do.
  EXPECT_EQ(Scalar(*conn_, absl::StrCat("SELECT count(*) FROM ", table)), Value::Int64(0));
  Must(*conn_, insert, {Value::Int64(3)});
  ASSERT_TRUE(conn_->ExecuteBatch({Statement{insert, {Value::Int64(4)}}}, ExecuteOptions{}).ok());
  EXPECT_EQ(Scalar(*conn_, absl::StrCat("SELECT count(*) FROM ", table)), Value::Int64(2));
}

// What a connection's session is doing, as the server sees it ("idle",
// "idle in transaction", "idle in transaction (aborted)", ...).
std::string SessionState(DbConnection& watcher, int pid) {
  absl::StatusOr<QueryResult> r = watcher.Execute(
      Statement{"SELECT state FROM pg_stat_activity WHERE pid = $1", {Value::Int64(pid)}},
      ExecuteOptions{});
  if (!r.ok() || r->rows.size() != 1) return absl::StrCat("<unknown: ", r.status().ToString(), ">");
  return r->rows[0][0].text;
}

TEST_F(PqConnectionTest, CancelStopsALongBatchBetweenStatementsAndCommitsNothing) {
  // PostgreSQL discards a cancel request that reaches a backend between two
  // statements (while it reads the next one); the flag Cancel() sets must stop
  // the batch before its next statement anyway. So that the request is
  // discarded every time, not only when it happens to arrive in a gap,
  // statement 2 waits for an advisory lock the watcher holds, in a function
  // that swallows the cancel (and says so through application_name); the
  // watcher lets it go only after that. The function swallows every
  // interrupt, not just one: the postmaster signals the backend and then its
  // process group, so one request can interrupt it twice (seen under load).
  const std::string table = UniqueName("sb_cancel_long");
  const std::string wait = UniqueName("sb_wait_ignoring_cancel");
  Must(*conn_, absl::StrCat("CREATE TABLE ", table, " (id int)"));
  CleanUpWith(absl::StrCat("DROP TABLE ", table));
  Must(*conn_, absl::StrCat("CREATE FUNCTION ", wait,
                            "(key bigint) RETURNS void LANGUAGE plpgsql AS $$ BEGIN LOOP "
                            "BEGIN PERFORM pg_advisory_xact_lock(key); RETURN; "
                            "EXCEPTION WHEN query_canceled THEN "
                            "PERFORM set_config('application_name', 'cancel swallowed', false); "
                            "END; END LOOP; END $$"));
  CleanUpWith(absl::StrCat("DROP FUNCTION ", wait));
  std::unique_ptr<DbConnection> watcher = Connect();
  ASSERT_NE(watcher, nullptr);
  const int pid = conn_->BackendPid();
  Must(*watcher, "SELECT pg_advisory_lock($1)", {Value::Int64(pid)});
  std::thread canceller([&] {
    AwaitBackend(*watcher, pid, "wait_event_type = 'Lock' AND wait_event = 'advisory'");
    conn_->Cancel();
    AwaitBackend(*watcher, pid, "application_name = 'cancel swallowed'");
    Must(*watcher, "SELECT pg_advisory_unlock($1)", {Value::Int64(pid)});
  });
  absl::StatusOr<std::vector<QueryResult>> batch =
      conn_->ExecuteBatch({Statement{absl::StrCat("INSERT INTO ", table, " VALUES (1)"), {}},
                           Statement{absl::StrCat("SELECT ", wait, "($1)"), {Value::Int64(pid)}},
                           Statement{absl::StrCat("INSERT INTO ", table, " VALUES (3)"), {}},
                           Statement{absl::StrCat("INSERT INTO ", table, " VALUES (4)"), {}}},
                          ExecuteOptions{});
  canceller.join();
  ASSERT_FALSE(batch.ok()) << "the batch ran past the cancel";
  ExpectSqlError(batch.status(), absl::StatusCode::kDeadlineExceeded, "57014");
  // Statement 2 ran to its end; statement 3 was never sent.
  EXPECT_THAT(batch.status().message(), StartsWith("statement 3 of 4: "));
  EXPECT_EQ(Scalar(*watcher, absl::StrCat("SELECT count(*) FROM ", table)), Value::Int64(0));
  EXPECT_FALSE(conn_->IsBroken());
  EXPECT_EQ(SessionState(*watcher, pid), "idle");
  conn_->ClearCancel();
  EXPECT_EQ(Scalar(*conn_, "SELECT 1"), Value::Int64(1));
}

TEST_F(PqConnectionTest, CancelInsideABatchRollsItBack) {
  const std::string table = UniqueName("sb_cancel_batch");
  Must(*conn_, absl::StrCat("CREATE TABLE ", table, " (id int)"));
  CleanUpWith(absl::StrCat("DROP TABLE ", table));
  std::unique_ptr<DbConnection> watcher = Connect();
  ASSERT_NE(watcher, nullptr);
  std::thread canceller([&] {
    AwaitSleeping(*watcher, conn_->BackendPid());
    conn_->Cancel();
  });
  absl::StatusOr<std::vector<QueryResult>> batch =
      conn_->ExecuteBatch({Statement{absl::StrCat("INSERT INTO ", table, " VALUES (1)"), {}},
                           Statement{"SELECT pg_sleep(30)", {}}},
                          ExecuteOptions{});
  canceller.join();
  ASSERT_FALSE(batch.ok());
  ExpectSqlError(batch.status(), absl::StatusCode::kDeadlineExceeded, "57014");
  EXPECT_THAT(batch.status().message(), StartsWith("statement 2 of 2: "));
  EXPECT_EQ(Scalar(*watcher, absl::StrCat("SELECT count(*) FROM ", table)), Value::Int64(0));
  EXPECT_FALSE(conn_->IsBroken());
}

TEST_F(PqConnectionTest, TerminatedIdleConnectionIsUnavailableAndBroken) {
  std::unique_ptr<DbConnection> admin = Connect();
  ASSERT_NE(admin, nullptr);
  // The timeout makes pg_terminate_backend wait until the backend is gone.
  EXPECT_EQ(Scalar(*admin, "SELECT pg_terminate_backend($1::int, 10000)",
                   {Value::Int64(conn_->BackendPid())}),
            Value::Bool(true));
  absl::Status s = RunStatus(*conn_, "SELECT 1");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(s.message(), StartsWith("lost the connection to PostgreSQL"));
  EXPECT_TRUE(conn_->IsBroken());
  // Everything afterwards fails fast, and nothing crashes.
  EXPECT_EQ(RunStatus(*conn_, "SELECT 1").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(conn_->Ping().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(conn_->ResetSession().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(conn_->ExecuteBatch({Statement{"SELECT 1", {}}}, ExecuteOptions{}).status().code(),
            absl::StatusCode::kUnavailable);
  conn_->Cancel();
}

TEST_F(PqConnectionTest, ConnectionTerminatedMidStatementIsUnavailableAndBroken) {
  std::unique_ptr<DbConnection> admin = Connect();
  ASSERT_NE(admin, nullptr);
  std::thread terminator([&] {
    AwaitSleeping(*admin, conn_->BackendPid());
    Must(*admin, "SELECT pg_terminate_backend($1::int)", {Value::Int64(conn_->BackendPid())});
  });
  const auto start = Clock::now();
  absl::Status s = RunStatus(*conn_, "SELECT pg_sleep(30)");
  terminator.join();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(10));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  // The server's farewell reaches the caller: its SQLSTATE (57P01,
  // admin_shutdown) travels with the status, which says the connection was
  // lost.
  EXPECT_EQ(SqlStateOf(s), "57P01") << s;
  EXPECT_THAT(s.message(), StartsWith("lost the connection to PostgreSQL"));
  EXPECT_TRUE(conn_->IsBroken());
}

// Transaction control, batches, pings, role changes and the reset run on the
// same libpq connection as statements: on a connection whose backend was
// terminated each one is UNAVAILABLE, says that the connection was lost, and
// leaves the connection broken.
TEST_F(PqConnectionTest, SessionCallsOnATerminatedConnectionAreUnavailableAndBreakIt) {
  std::unique_ptr<DbConnection> admin = Connect();
  ASSERT_NE(admin, nullptr);
  struct Call {
    std::string expected_prefix;
    std::function<absl::Status(DbConnection&)> run;
  };
  const std::string lost = "lost the connection to PostgreSQL";
  const std::vector<Call> calls = {
      {"BEGIN: " + lost, [](DbConnection& c) { return c.Begin({}); }},
      {"BEGIN: " + lost,
       [](DbConnection& c) {
         return c.ExecuteBatch({Statement{"SELECT 1", {}}}, ExecuteOptions{}).status();
       }},
      {"ping failed: " + lost, [](DbConnection& c) { return c.Ping(); }},
      {"SET ROLE pg_monitor failed: " + lost,
       [](DbConnection& c) { return c.UseRole("pg_monitor"); }},
      {"resetting the session failed: " + lost, [](DbConnection& c) { return c.ResetSession(); }},
      {"ROLLBACK failed and the connection was closed",
       [](DbConnection& c) { return c.Rollback(); }},
  };
  for (const Call& call : calls) {
    SCOPED_TRACE(call.expected_prefix);
    std::unique_ptr<DbConnection> conn = Connect();
    ASSERT_NE(conn, nullptr);
    // The timeout makes pg_terminate_backend wait until the backend is gone.
    ASSERT_EQ(Scalar(*admin, "SELECT pg_terminate_backend($1::int, 10000)",
                     {Value::Int64(conn->BackendPid())}),
              Value::Bool(true));
    const absl::Status s = call.run(*conn);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
    EXPECT_THAT(s.message(), StartsWith(call.expected_prefix));
    EXPECT_TRUE(conn->IsBroken());
  }
}

// Notices and warnings from the server (a reset's ROLLBACK outside any
// transaction warns "there is no transaction in progress"; RAISE) are
// discarded: libpq's default would write each one to the broker's stderr.
TEST_F(PqConnectionTest, NoticesAndWarningsNeverReachStderr) {
  ::testing::internal::CaptureStderr();
  const absl::Status reset = conn_->ResetSession();
  const absl::Status raised =
      RunStatus(*conn_, "DO $$BEGIN RAISE WARNING 'sb warning'; RAISE NOTICE 'sb notice'; END$$");
  const absl::Status rolled_back = conn_->Rollback();
  const std::string stderr_text = ::testing::internal::GetCapturedStderr();
  EXPECT_TRUE(reset.ok()) << reset;
  EXPECT_TRUE(raised.ok()) << raised;
  EXPECT_TRUE(rolled_back.ok()) << rolled_back;
  EXPECT_EQ(stderr_text, "");
}

TEST_F(PqConnectionTest, PingWorksOnAHealthySession) {
  EXPECT_TRUE(conn_->Ping().ok());
  EXPECT_TRUE(conn_->Ping().ok());
  EXPECT_FALSE(conn_->IsBroken());
  EXPECT_EQ(Scalar(*conn_, "SELECT 1"), Value::Int64(1));
}

TEST_F(PqConnectionTest, PingFailsInsideAFailedTransactionAndBreaksTheConnection) {
  Must(*conn_, "BEGIN");
  EXPECT_FALSE(RunStatus(*conn_, "SELECT 1 / 0").ok());
  const absl::Status ping = conn_->Ping();
  EXPECT_FALSE(ping.ok());
  EXPECT_THAT(ping.message(), StartsWith("ping failed: "));
  EXPECT_TRUE(conn_->IsBroken());
}

// ---- batches ----

TEST_F(PqConnectionTest, BatchAppliesAllStatementsAndReturnsEachResult) {
  const std::string table = UniqueName("sb_batch_ok");
  Must(*conn_, absl::StrCat("CREATE TABLE ", table, " (id int PRIMARY KEY, name text)"));
  CleanUpWith(absl::StrCat("DROP TABLE ", table));
  absl::StatusOr<std::vector<QueryResult>> batch = conn_->ExecuteBatch(
      {Statement{absl::StrCat("INSERT INTO ", table, " VALUES ($1, $2)"),
                 {Value::Int64(1), Value::String("one")}},
       Statement{absl::StrCat("INSERT INTO ", table, " VALUES ($1, $2), ($3, $4) RETURNING id"),
                 {Value::Int64(2), Value::String("two"), Value::Int64(3), Value::Null()}},
       Statement{absl::StrCat("SELECT count(*) FROM ", table), {}}},
      ExecuteOptions{});
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->size(), 3u);
  EXPECT_EQ((*batch)[0].command_tag, "INSERT 0 1");
  EXPECT_EQ((*batch)[1].rows_affected, 2);
  EXPECT_EQ((*batch)[1].rows,
            (std::vector<std::vector<Value>>{{Value::Int64(2)}, {Value::Int64(3)}}));
  EXPECT_EQ((*batch)[2].rows.at(0).at(0), Value::Int64(3));
  std::unique_ptr<DbConnection> other = Connect();
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(Scalar(*other, absl::StrCat("SELECT count(*) FROM ", table)), Value::Int64(3));
}

TEST_F(PqConnectionTest, BatchIsAllOrNothing) {
  const std::string table = UniqueName("sb_batch_fail");
  Must(*conn_, absl::StrCat("CREATE TABLE ", table, " (id int PRIMARY KEY)"));
  CleanUpWith(absl::StrCat("DROP TABLE ", table));
  const std::string insert = absl::StrCat("INSERT INTO ", table, " VALUES ($1)");
  absl::StatusOr<std::vector<QueryResult>> batch = conn_->ExecuteBatch(
      {Statement{insert, {Value::Int64(1)}}, Statement{insert, {Value::Int64(2)}},
       Statement{insert, {Value::Int64(1)}}},
      ExecuteOptions{});
  ASSERT_FALSE(batch.ok());
  ExpectSqlError(batch.status(), absl::StatusCode::kAlreadyExists, "23505");
  EXPECT_THAT(batch.status().message(), StartsWith("statement 3 of 3: duplicate key value"));
  std::unique_ptr<DbConnection> other = Connect();
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(Scalar(*other, absl::StrCat("SELECT count(*) FROM ", table)), Value::Int64(0));
  // The connection is back in autocommit and fine.
  EXPECT_FALSE(conn_->IsBroken());
  Must(*conn_, insert, {Value::Int64(7)});
  EXPECT_EQ(Scalar(*other, absl::StrCat("SELECT count(*) FROM ", table)), Value::Int64(1));
}

TEST_F(PqConnectionTest, FailedBatchLeavesTheSessionOutsideAnyTransaction) {
  std::unique_ptr<DbConnection> watcher = Connect();
  ASSERT_NE(watcher, nullptr);
  const Statement ok{"SELECT 1", {}};
  const std::vector<std::vector<Statement>> failing = {
      {ok, Statement{"SELECT 1 / 0", {}}},
      {ok, Statement{"SELECT repeat('x', 5000)", {}}},  // over the cap below
      {ok, Statement{"SELECT * FROM no_such_table_sb", {}}, ok},
  };
  for (const std::vector<Statement>& statements : failing) {
    SCOPED_TRACE(statements[1].sql);
    EXPECT_FALSE(conn_->ExecuteBatch(statements, CappedAt(1000)).ok());
    EXPECT_FALSE(conn_->IsBroken());
    EXPECT_EQ(SessionState(*watcher, conn_->BackendPid()), "idle");
    EXPECT_TRUE(conn_->Ping().ok());
  }
}

TEST_F(PqConnectionTest, BatchStatementThatEndsTheTransactionFailsTheBatch) {
  const std::string table = UniqueName("sb_batch_txctl");
  Must(*conn_, absl::StrCat("CREATE TABLE ", table, " (id int)"));
  CleanUpWith(absl::StrCat("DROP TABLE ", table));
  std::unique_ptr<DbConnection> watcher = Connect();
  ASSERT_NE(watcher, nullptr);
  const std::string count = absl::StrCat("SELECT count(*) FROM ", table);
  auto insert = [&](int id) {
    return Statement{absl::StrCat("INSERT INTO ", table, " VALUES (", id, ")"), {}};
  };

  // Without the check, the second INSERT would run in autocommit and the
  // batch would report success.
  absl::StatusOr<std::vector<QueryResult>> rolled_back =
      conn_->ExecuteBatch({insert(1), Statement{"ROLLBACK", {}}, insert(2)}, ExecuteOptions{});
  ASSERT_FALSE(rolled_back.ok());
  EXPECT_EQ(rolled_back.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(rolled_back.status().message(),
              StartsWith("statement 2 of 3: ROLLBACK is not allowed in a batch"));
  EXPECT_EQ(Scalar(*watcher, count), Value::Int64(0));

  absl::StatusOr<std::vector<QueryResult>> committed =
      conn_->ExecuteBatch({insert(1), Statement{"COMMIT", {}}, insert(2)}, ExecuteOptions{});
  ASSERT_FALSE(committed.ok());
  EXPECT_EQ(committed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(committed.status().message(),
              AllOf(StartsWith("statement 2 of 3: COMMIT is not allowed in a batch"),
                    HasSubstr("already been committed")));
  EXPECT_EQ(Scalar(*watcher, count), Value::Int64(1));
  EXPECT_FALSE(conn_->IsBroken());
  EXPECT_EQ(SessionState(*watcher, conn_->BackendPid()), "idle");
}

TEST_F(PqConnectionTest, BatchCommitsWhenNamingAResultTypeFails) {
  // The type's name cannot be sent in LATIN1, so looking it up fails after
  // the statement itself succeeded. That must neither abort the batch's
  // transaction (turning its COMMIT into a silent ROLLBACK) nor fail it.
  ASSERT_EQ(Scalar(*conn_, "SHOW server_encoding"), Value::String("UTF8"))
      << "this test needs a UTF8 database";
  const std::string type = UniqueName("sb_mood") + "_\u65e5\u672c";
  const std::string table = UniqueName("sb_lookup_fails");
  Must(*conn_, absl::StrCat("CREATE TYPE \"", type, "\" AS ENUM ('ok')"));
  CleanUpWith(absl::StrCat("DROP TYPE \"", type, "\""));
  Must(*conn_, absl::StrCat("CREATE TABLE ", table, " (id int, v \"", type, "\")"));
  CleanUpWith(absl::StrCat("DROP TABLE ", table));
  Must(*conn_, absl::StrCat("INSERT INTO ", table, " VALUES (0, 'ok')"));

  absl::StatusOr<std::vector<QueryResult>> batch =
      conn_->ExecuteBatch({Statement{"SET LOCAL client_encoding = 'LATIN1'", {}},
                           Statement{absl::StrCat("INSERT INTO ", table, " VALUES (1, 'ok')"), {}},
                           Statement{absl::StrCat("SELECT v FROM ", table, " WHERE id = 0"), {}}},
                          ExecuteOptions{});
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->size(), 3u);
  const QueryResult& selected = (*batch)[2];
  ASSERT_EQ(selected.columns.size(), 1u);
  EXPECT_EQ(selected.columns[0].type_name, "");  // unknown, but the values are there
  EXPECT_EQ(selected.rows, (std::vector<std::vector<Value>>{{Value::String("ok")}}));
  std::unique_ptr<DbConnection> other = Connect();
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(Scalar(*other, absl::StrCat("SELECT count(*) FROM ", table, " WHERE id = 1")),
            Value::Int64(1));
  // SET LOCAL ended with the batch, and the name is found now.
  EXPECT_EQ(Scalar(*conn_, "SHOW client_encoding"), Value::String("UTF8"));
  QueryResult again = Must(*conn_, absl::StrCat("SELECT v FROM ", table, " WHERE id = 0"));
  ASSERT_EQ(again.columns.size(), 1u);
  EXPECT_EQ(again.columns[0].type_name, type);
}

TEST_F(PqConnectionTest, BatchWithUnsendableParameterRunsNothing) {
  const std::string table = UniqueName("sb_batch_param");
  Must(*conn_, absl::StrCat("CREATE TABLE ", table, " (t text)"));
  CleanUpWith(absl::StrCat("DROP TABLE ", table));
  const std::string insert = absl::StrCat("INSERT INTO ", table, " VALUES ($1)");
  absl::StatusOr<std::vector<QueryResult>> batch =
      conn_->ExecuteBatch({Statement{insert, {Value::String("ok")}},
                           Statement{insert, {Value::String(std::string("\0", 1))}}},
                          ExecuteOptions{});
  ASSERT_FALSE(batch.ok());
  EXPECT_EQ(batch.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(batch.status().message(), StartsWith("statement 2 of 2: parameter $1: "));
  EXPECT_EQ(Scalar(*conn_, absl::StrCat("SELECT count(*) FROM ", table)), Value::Int64(0));
}

TEST_F(PqConnectionTest, EmptyBatchSucceeds) {
  absl::StatusOr<std::vector<QueryResult>> batch = conn_->ExecuteBatch({}, ExecuteOptions{});
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_TRUE(batch->empty());
}

// ---- result cap ----

TEST_F(PqConnectionTest, ResultOverTheCapIsResourceExhausted) {
  const std::string sql = "SELECT repeat('x', 1000) FROM generate_series(1, 100)";
  absl::Status s = Run(*conn_, sql, {}, CappedAt(10000)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(s.message(), AllOf(HasSubstr("result exceeds 10000 bytes"), HasSubstr("LIMIT")));
  EXPECT_FALSE(conn_->IsBroken());
  absl::StatusOr<QueryResult> under = Run(*conn_, sql, {}, CappedAt(200000));
  ASSERT_TRUE(under.ok()) << under.status();
  EXPECT_EQ(under->rows.size(), 100u);
  absl::StatusOr<QueryResult> unlimited = Run(*conn_, sql, {}, CappedAt(0));
  ASSERT_TRUE(unlimited.ok()) << unlimited.status();
}

// The storage layer runs what it is given; the runner sends statements that
// write and return rows as one-statement batches instead (see
// StatementRunner), so over the cap they are rolled back.
TEST_F(PqConnectionTest, OverCapAutocommitStatementIsStoppedAndSaysItRanInAutocommit) {
  const std::string table = UniqueName("sb_cap_returning");
  Must(*conn_, absl::StrCat("CREATE TABLE ", table, " (id int, t text)"));
  CleanUpWith(absl::StrCat("DROP TABLE ", table));
  absl::Status s = Run(*conn_,
                       absl::StrCat("INSERT INTO ", table,
                                    " SELECT g, repeat('x', 1000) FROM generate_series(1, 100) g "
                                    "RETURNING *"),
                       {}, CappedAt(10000))
                       .status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(s.message(), AllOf(HasSubstr("BROKER_MAX_RESULT_BYTES"), HasSubstr("LIMIT"),
                                 HasSubstr("the statement was stopped, in autocommit")));
  // The rows fit in the socket's buffers: the statement completed before
  // the broker read past the cap, and autocommit committed it.
  EXPECT_EQ(Scalar(*conn_, absl::StrCat("SELECT count(*) FROM ", table)), Value::Int64(100));
}

TEST_F(PqConnectionTest, BatchOverTheCapFailsBeforeCommitting) {
  const std::string table = UniqueName("sb_cap_batch");
  Must(*conn_, absl::StrCat("CREATE TABLE ", table, " (id int)"));
  CleanUpWith(absl::StrCat("DROP TABLE ", table));
  const Statement insert{absl::StrCat("INSERT INTO ", table, " VALUES (1)"), {}};
  // Big values, and rows without columns: 60000 of them take 120000 bytes in
  // the response even though they hold no value at all.
  const std::vector<std::pair<Statement, size_t>> over_cap = {
      {Statement{"SELECT repeat('x', 1000) FROM generate_series(1, 100)", {}}, 10000},
      {Statement{"SELECT FROM generate_series(1, 60000)", {}}, 100000},
  };
  for (const auto& [select, cap] : over_cap) {
    SCOPED_TRACE(select.sql);
    absl::StatusOr<std::vector<QueryResult>> batch =
        conn_->ExecuteBatch({insert, select}, CappedAt(cap));
    ASSERT_FALSE(batch.ok());
    EXPECT_EQ(batch.status().code(), absl::StatusCode::kResourceExhausted) << batch.status();
    EXPECT_THAT(batch.status().message(),
                AllOf(StartsWith(absl::StrCat("statement 2 of 2: result exceeds ", cap)),
                      HasSubstr("rolled back")));
    EXPECT_EQ(Scalar(*conn_, absl::StrCat("SELECT count(*) FROM ", table)), Value::Int64(0));
  }
}

TEST_F(PqConnectionTest, ResultCapCoversTheWholeBatch) {
  const Statement big{"SELECT repeat('x', 600)", {}};
  absl::StatusOr<std::vector<QueryResult>> batch = conn_->ExecuteBatch({big, big}, CappedAt(1000));
  ASSERT_FALSE(batch.ok());
  EXPECT_EQ(batch.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(batch.status().message(), StartsWith("statement 2 of 2: result exceeds 1000 bytes"));
}

// ---- ResetSession: nothing leaks to the next user ----

TEST_F(PqConnectionTest, ResetSessionRollsBackAnOpenTransaction) {
  const std::string table = UniqueName("sb_reset_tx");
  Must(*conn_, absl::StrCat("CREATE TABLE ", table, " (id int)"));
  CleanUpWith(absl::StrCat("DROP TABLE ", table));
  Must(*conn_, "BEGIN");
  Must(*conn_, absl::StrCat("INSERT INTO ", table, " VALUES (1)"));
  // The INSERT gave the open transaction an id.
  const std::string xid_assigned = "SELECT pg_current_xact_id_if_assigned() IS NOT NULL";
  EXPECT_EQ(Scalar(*conn_, xid_assigned), Value::Bool(true));
  ASSERT_TRUE(conn_->ResetSession().ok());
  // Now each statement is a transaction of its own, and a SELECT needs no id.
  EXPECT_EQ(Scalar(*conn_, xid_assigned), Value::Bool(false));
  EXPECT_EQ(Scalar(*conn_, absl::StrCat("SELECT count(*) FROM ", table)), Value::Int64(0));
  // A new BEGIN works as usual (no transaction was left behind).
  Must(*conn_, "BEGIN");
  Must(*conn_, "ROLLBACK");
}

TEST_F(PqConnectionTest, ResetSessionClearsSettingsTempTablesPreparedStatementsAndRole) {
  const Value search_path = Scalar(*conn_, "SHOW search_path");
  Must(*conn_, "SET search_path = pg_catalog");
  Must(*conn_, "SET TimeZone = 'America/New_York'");
  Must(*conn_, "SET IntervalStyle = 'postgres'");
  Must(*conn_, "SET DateStyle = 'SQL, DMY'");
  Must(*conn_, "SET extra_float_digits = 0");
  Must(*conn_, "SET statement_timeout = '1s'");
  Must(*conn_, "CREATE TEMP TABLE leaked (id int)");
  Must(*conn_, "PREPARE leaked_stmt AS SELECT 1");
  Must(*conn_, "SET ROLE pg_read_all_data");

  ASSERT_TRUE(conn_->ResetSession().ok());
  EXPECT_EQ(Scalar(*conn_, "SHOW search_path"), search_path);
  EXPECT_EQ(Scalar(*conn_, "SHOW statement_timeout"), Value::String("0"));
  EXPECT_EQ(Scalar(*conn_, "SELECT to_regclass('pg_temp.leaked') IS NULL"), Value::Bool(true));
  EXPECT_EQ(Scalar(*conn_, "SELECT count(*) FROM pg_prepared_statements"), Value::Int64(0));
  EXPECT_EQ(Scalar(*conn_, "SELECT current_user = session_user"), Value::Bool(true));
  // The baseline settings are back, not the server defaults.
  EXPECT_EQ(Scalar(*conn_, "SHOW TimeZone"), Value::String("UTC"));
  EXPECT_EQ(Scalar(*conn_, "SHOW IntervalStyle"), Value::String("iso_8601"));
  EXPECT_EQ(Scalar(*conn_, "SHOW DateStyle"), Value::String("ISO, YMD"));
  EXPECT_EQ(Scalar(*conn_, "SHOW extra_float_digits"), Value::String("3"));
}

TEST_F(PqConnectionTest, ResetSessionReleasesAdvisoryLocks) {
  std::unique_ptr<DbConnection> other = Connect();
  ASSERT_NE(other, nullptr);
  const std::string count_locks =
      "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1";
  const Value pid = Value::Int64(conn_->BackendPid());
  Must(*conn_, "SELECT pg_advisory_lock(4242)");
  EXPECT_EQ(Scalar(*other, count_locks, {pid}), Value::Int64(1));
  ASSERT_TRUE(conn_->ResetSession().ok());
  EXPECT_EQ(Scalar(*other, count_locks, {pid}), Value::Int64(0));
}

TEST_F(PqConnectionTest, ResetSessionOnACleanSessionSucceeds) {
  EXPECT_TRUE(conn_->ResetSession().ok());
  EXPECT_TRUE(conn_->ResetSession().ok());
  EXPECT_FALSE(conn_->IsBroken());
}

// ---- Transactions opened with Begin() (sessions) ----

TEST_F(PqConnectionTest, BeginAppliesIsolationReadOnlyAndSettingsUntilCommit) {
  TransactionOptions options;
  options.isolation = TransactionOptions::Isolation::kRepeatableRead;
  options.read_only = true;
  options.settings = {{"search_path", "pg_catalog, public"},
                      {"statement_timeout", "1234ms"},
                      {"app.tenant", "it's \"quoted\"; --"}};
  ASSERT_TRUE(conn_->Begin(options).ok());
  ExecuteOptions in_tx;
  in_tx.in_transaction = true;
  EXPECT_EQ(Scalar(*conn_, "SHOW transaction_isolation").text, "repeatable read");
  EXPECT_EQ(Scalar(*conn_, "SHOW transaction_read_only").text, "on");
  EXPECT_EQ(Scalar(*conn_, "SHOW search_path").text, "pg_catalog, public");
  EXPECT_EQ(Scalar(*conn_, "SHOW statement_timeout").text, "1234ms");
  EXPECT_EQ(Scalar(*conn_, "SELECT current_setting('app.tenant')").text, "it's \"quoted\"; --");
  const absl::Status write = RunStatus(*conn_, "CREATE TEMP TABLE sb_ro_probe (id int)");
  EXPECT_EQ(storage::SqlStateOf(write), "25006") << write;
  // The failed write aborted the transaction: COMMIT rolls back, and says so.
  const absl::Status commit = conn_->Commit();
  EXPECT_EQ(commit.code(), absl::StatusCode::kAborted) << commit.ToString();
  // Everything was SET LOCAL: gone with the transaction.
  EXPECT_EQ(Scalar(*conn_, "SHOW transaction_read_only").text, "off");
  EXPECT_EQ(Scalar(*conn_, "SHOW statement_timeout").text, "0");
  EXPECT_EQ(Scalar(*conn_, "SELECT current_setting('app.tenant', true)").text, "");
  EXPECT_FALSE(conn_->IsBroken());
}

TEST_F(PqConnectionTest, CommitMakesTheTransactionsWritesVisibleAndRollbackDiscardsThem) {
  const std::string table = UniqueName("sb_tx");
  Must(*conn_, absl::StrCat("CREATE TABLE ", table, " (id int)"));
  CleanUpWith(absl::StrCat("DROP TABLE ", table));
  std::unique_ptr<DbConnection> watcher = Connect();
  ASSERT_NE(watcher, nullptr);
  const std::string count = absl::StrCat("SELECT count(*) FROM ", table);

  ASSERT_TRUE(conn_->Begin({}).ok());
  Must(*conn_, absl::StrCat("INSERT INTO ", table, " VALUES (1)"));
  EXPECT_EQ(SessionState(*watcher, conn_->BackendPid()), "idle in transaction");
  EXPECT_EQ(Scalar(*watcher, count).int64_value, 0);
  ASSERT_TRUE(conn_->Commit().ok());
  EXPECT_EQ(Scalar(*watcher, count).int64_value, 1);

  ASSERT_TRUE(conn_->Begin({}).ok());
  Must(*conn_, absl::StrCat("INSERT INTO ", table, " VALUES (2)"));
  ASSERT_TRUE(conn_->Rollback().ok());
  EXPECT_EQ(Scalar(*watcher, count).int64_value, 1);
  EXPECT_EQ(SessionState(*watcher, conn_->BackendPid()), "idle");
}

TEST_F(PqConnectionTest, BeginWithABadSettingValueFailsAndLeavesNoTransactionOpen) {
  std::unique_ptr<DbConnection> watcher = Connect();
  ASSERT_NE(watcher, nullptr);
  TransactionOptions options;
  options.settings = {{"statement_timeout", "soon"}};
  const absl::Status begun = conn_->Begin(options);
  EXPECT_EQ(begun.code(), absl::StatusCode::kInvalidArgument) << begun;
  EXPECT_EQ(storage::SqlStateOf(begun), "22023");
  EXPECT_THAT(begun.message(), HasSubstr("statement_timeout"));
  EXPECT_FALSE(conn_->IsBroken());
  EXPECT_EQ(SessionState(*watcher, conn_->BackendPid()), "idle");
}

TEST_F(PqConnectionTest, CancelledCommitCommitsNothing) {
  const std::string table = UniqueName("sb_tx_cancel");
  Must(*conn_, absl::StrCat("CREATE TABLE ", table, " (id int)"));
  CleanUpWith(absl::StrCat("DROP TABLE ", table));
  ASSERT_TRUE(conn_->Begin({}).ok());
  Must(*conn_, absl::StrCat("INSERT INTO ", table, " VALUES (1)"));
  conn_->Cancel();
  EXPECT_EQ(storage::SqlStateOf(conn_->Commit()), "57014");
  conn_->ClearCancel();
  EXPECT_EQ(Scalar(*conn_, absl::StrCat("SELECT count(*) FROM ", table)).int64_value, 0);
}

// An idle transaction whose backend was terminated (an operator's
// pg_terminate_backend, idle_in_transaction_session_timeout, a database
// restart) was rolled back by PostgreSQL before COMMIT could be sent: the
// outcome is known, and "unknown, check before retrying" would send every
// client of an outage to look for rows that cannot be there.
TEST_F(PqConnectionTest, CommitOnAConnectionLostWhileIdleSaysNothingWasCommitted) {
  const std::string table = UniqueName("sb_tx_lost");
  Must(*conn_, absl::StrCat("CREATE TABLE ", table, " (id int)"));
  CleanUpWith(absl::StrCat("DROP TABLE ", table));
  std::unique_ptr<DbConnection> admin = Connect();
  ASSERT_NE(admin, nullptr);
  ASSERT_TRUE(conn_->Begin({}).ok());
  Must(*conn_, absl::StrCat("INSERT INTO ", table, " VALUES (1)"));
  // The timeout makes pg_terminate_backend wait until the backend is gone.
  ASSERT_EQ(Scalar(*admin, "SELECT pg_terminate_backend($1::int, 10000)",
                   {Value::Int64(conn_->BackendPid())}),
            Value::Bool(true));
  const absl::Status commit = conn_->Commit();
  EXPECT_EQ(commit.code(), absl::StatusCode::kAborted) << commit.ToString();
  EXPECT_THAT(commit.message(), HasSubstr("nothing of the transaction was applied"));
  EXPECT_THAT(commit.message(), Not(HasSubstr("unknown")));
  EXPECT_TRUE(conn_->IsBroken());
  EXPECT_EQ(Scalar(*admin, absl::StrCat("SELECT count(*) FROM ", table)).int64_value, 0);
}

TEST_F(PqConnectionTest, BatchBeginsWithItsTransactionOptions) {
  ExecuteOptions options;
  options.transaction.isolation = TransactionOptions::Isolation::kSerializable;
  options.transaction.settings = {{"TimeZone", "Asia/Tokyo"}};
  absl::StatusOr<std::vector<QueryResult>> r = conn_->ExecuteBatch(
      {Statement{"SHOW transaction_isolation", {}}, Statement{"SHOW TimeZone", {}}}, options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)[0].rows[0][0].text, "serializable");
  EXPECT_EQ((*r)[1].rows[0][0].text, "Asia/Tokyo");
  EXPECT_EQ(Scalar(*conn_, "SHOW TimeZone").text, "UTC");
}

// ---- the prepared statement cache (Options::statement_cache_size) ----

class StatementCacheTest : public PqConnectionTest {
 protected:
  // A connection of a connector with the given cache size.
  std::unique_ptr<DbConnection> ConnectWithCache(int size) {
    PqConnector::Options options;
    options.statement_cache_size = size;
    connector_ = std::make_unique<PqConnector>(url_, options);
    return Connect();
  }

  static absl::StatusOr<QueryResult> RunCached(DbConnection& conn, const std::string& sql,
                                               std::vector<Value> params = {},
                                               ExecuteOptions options = {}) {
    Statement s{sql, std::move(params)};
    s.cacheable = true;
    return conn.Execute(s, options);
  }

  // The broker's prepared statements on `conn`, as "name: statement" (asked
  // through an uncached statement, so asking does not change the answer).
  static std::vector<std::string> PreparedOn(DbConnection& conn) {
    QueryResult r = Must(conn,
                         "SELECT name || ': ' || statement FROM pg_prepared_statements "
                         "WHERE name LIKE 'sessionbroker\\_%' ORDER BY prepare_time, name");
    std::vector<std::string> out;
    for (const std::vector<Value>& row : r.rows) out.push_back(row[0].text);
    return out;
  }
};

TEST_F(StatementCacheTest, SqlRunTwiceIsPreparedOnceAndReusedWithNewParameters) {
  std::unique_ptr<DbConnection> conn = ConnectWithCache(10);
  const std::string sql = "SELECT $1::int8 * 2";
  ASSERT_TRUE(RunCached(*conn, sql, {Value::Int64(1)}).ok());
  EXPECT_THAT(PreparedOn(*conn), ::testing::IsEmpty()) << "a single run is not worth a PREPARE";
  for (int64_t i = 2; i <= 5; ++i) {
    absl::StatusOr<QueryResult> r = RunCached(*conn, sql, {Value::Int64(i)});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->rows[0][0], Value::Int64(2 * i));
  }
  EXPECT_THAT(PreparedOn(*conn), ::testing::ElementsAre(HasSubstr(sql)));
}

TEST_F(StatementCacheTest, StatementsNotMarkedCacheableAreNeverPrepared) {
  std::unique_ptr<DbConnection> conn = ConnectWithCache(10);
  for (int i = 0; i < 3; ++i) Must(*conn, "SELECT 42");
  EXPECT_THAT(PreparedOn(*conn), ::testing::IsEmpty());
}

TEST_F(StatementCacheTest, SizeZeroTurnsTheCacheOff) {
  std::unique_ptr<DbConnection> conn = ConnectWithCache(0);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(RunCached(*conn, "SELECT 42").ok());
  EXPECT_THAT(PreparedOn(*conn), ::testing::IsEmpty());
}

TEST_F(StatementCacheTest, AFullCacheDeallocatesTheLeastRecentlyUsedStatement) {
  std::unique_ptr<DbConnection> conn = ConnectWithCache(2);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(RunCached(*conn, "SELECT 1 AS a").ok());
    ASSERT_TRUE(RunCached(*conn, "SELECT 2 AS b").ok());
  }
  ASSERT_TRUE(RunCached(*conn, "SELECT 1 AS a").ok());  // "b" is now the oldest
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<QueryResult> r = RunCached(*conn, "SELECT 3 AS c");
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->rows[0][0], Value::Int64(3));
  }
  EXPECT_THAT(PreparedOn(*conn), ::testing::UnorderedElementsAre(HasSubstr("SELECT 1 AS a"),
                                                                 HasSubstr("SELECT 3 AS c")));
}

TEST_F(StatementCacheTest, AStatementWhoseResultTypeChangedIsRunAgainUnpreparedInAutocommit) {
  std::unique_ptr<DbConnection> conn = ConnectWithCache(10);
  const std::string table = UniqueName("cache_shape");
  Must(*conn_, absl::StrCat("CREATE TABLE ", table, " (a int)"));
  CleanUpWith(absl::StrCat("DROP TABLE IF EXISTS ", table));
  Must(*conn_, absl::StrCat("INSERT INTO ", table, " VALUES (1)"));
  const std::string sql = absl::StrCat("SELECT * FROM ", table);
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(RunCached(*conn, sql).ok());
  ASSERT_THAT(PreparedOn(*conn), ::testing::SizeIs(1));

  Must(*conn_, absl::StrCat("ALTER TABLE ", table, " ADD COLUMN b text DEFAULT 'x'"));
  absl::StatusOr<QueryResult> r = RunCached(*conn, sql);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->columns.size(), 2u);
  EXPECT_EQ(r->rows[0][1], Value::String("x"));
  // Used twice more, it is prepared afresh with the new shape.
  ASSERT_TRUE(RunCached(*conn, sql).ok());
  r = RunCached(*conn, sql);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->columns.size(), 2u);
}

TEST_F(StatementCacheTest, AStaleStatementInsideATransactionFailsAndTheNextTransactionWorks) {
  std::unique_ptr<DbConnection> conn = ConnectWithCache(10);
  const std::string table = UniqueName("cache_tx");
  Must(*conn_, absl::StrCat("CREATE TABLE ", table, " (a int)"));
  CleanUpWith(absl::StrCat("DROP TABLE IF EXISTS ", table));
  const std::string sql = absl::StrCat("SELECT * FROM ", table);
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(RunCached(*conn, sql).ok());
  Must(*conn_, absl::StrCat("ALTER TABLE ", table, " ADD COLUMN b int"));

  ExecuteOptions in_tx;
  in_tx.in_transaction = true;
  ASSERT_TRUE(conn->Begin(TransactionOptions{}).ok());
  absl::StatusOr<QueryResult> r = RunCached(*conn, sql, {}, in_tx);
  // Inside a transaction the failure aborted it: the caller must see it.
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(SqlStateOf(r.status()).value_or(""), "0A000");
  ASSERT_TRUE(conn->Rollback().ok());

  ASSERT_TRUE(conn->Begin(TransactionOptions{}).ok());
  r = RunCached(*conn, sql, {}, in_tx);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->columns.size(), 2u);
  ASSERT_TRUE(conn->Commit().ok());
}

TEST_F(StatementCacheTest, ABatchWithAStaleStatementIsRunAgainAndCommittedOnce) {
  std::unique_ptr<DbConnection> conn = ConnectWithCache(10);
  const std::string table = UniqueName("cache_batch");
  Must(*conn_, absl::StrCat("CREATE TABLE ", table, " (a int)"));
  CleanUpWith(absl::StrCat("DROP TABLE IF EXISTS ", table));
  Statement insert{absl::StrCat("INSERT INTO ", table, " (a) VALUES ($1)"), {Value::Int64(1)}};
  Statement select{absl::StrCat("SELECT * FROM ", table, " ORDER BY a"), {}};
  insert.cacheable = select.cacheable = true;
  const std::vector<Statement> batch = {insert, select};
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(conn->ExecuteBatch(batch, ExecuteOptions{}).ok());
  Must(*conn_, absl::StrCat("ALTER TABLE ", table, " ADD COLUMN b int"));

  absl::StatusOr<std::vector<QueryResult>> r = conn->ExecuteBatch(batch, ExecuteOptions{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)[1].columns.size(), 2u);
  // Two earlier batches and this one: the retried insert ran once.
  EXPECT_EQ((*r)[1].rows.size(), 3u);
}

TEST_F(StatementCacheTest, ResetSessionKeepsTheBrokersPreparedStatements) {
  std::unique_ptr<DbConnection> conn = ConnectWithCache(10);
  const std::string sql = "SELECT $1::text || '!'";
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(RunCached(*conn, sql, {Value::String("a")}).ok());
  ASSERT_THAT(PreparedOn(*conn), ::testing::SizeIs(1));
  ASSERT_TRUE(conn->ResetSession().ok());
  EXPECT_THAT(PreparedOn(*conn), ::testing::ElementsAre(HasSubstr(sql)));
  absl::StatusOr<QueryResult> r = RunCached(*conn, sql, {Value::String("b")});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rows[0][0], Value::String("b!"));
  EXPECT_THAT(PreparedOn(*conn), ::testing::ElementsAre(HasSubstr(sql)));
}

// The reset that follows a statement in its pipeline (reset_session_after).
ExecuteOptions WithReset() {
  ExecuteOptions options;
  options.reset_session_after = true;
  return options;
}

TEST_F(StatementCacheTest, APipelinedResetRestoresTheBaselineAndKeepsPreparedStatements) {
  std::unique_ptr<DbConnection> conn = ConnectWithCache(10);
  const std::string sql = "SELECT $1::text || '!'";
  ASSERT_TRUE(RunCached(*conn, sql, {Value::String("a")}).ok());
  // Prepared in the pipeline this time, then reset.
  absl::StatusOr<QueryResult> r = RunCached(*conn, sql, {Value::String("b")}, WithReset());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rows[0][0], Value::String("b!"));
  for (const char* state :
       {"SELECT set_config('search_path', 'evil', false)", "SET TimeZone = 'Asia/Tokyo'",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", "SELECT pg_advisory_lock(42)",
        "CREATE TEMP TABLE leak (a int)", "LISTEN leak", "PREPARE leak AS SELECT 1"}) {
    absl::StatusOr<QueryResult> set = conn->Execute(Statement{state, {}}, WithReset());
    ASSERT_TRUE(set.ok()) << state << ": " << set.status();
  }
  ASSERT_FALSE(conn->IsBroken());
  EXPECT_EQ(Scalar(*conn, "SHOW search_path").text, "\"$user\", public");
  EXPECT_EQ(Scalar(*conn, "SHOW TimeZone").text, "UTC");
  EXPECT_EQ(Scalar(*conn, "SHOW default_transaction_read_only").text, "off");
  EXPECT_EQ(Scalar(*conn,
                   "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = "
                   "pg_backend_pid()"),
            Value::Int64(0));
  EXPECT_EQ(Scalar(*conn, "SELECT count(*) FROM pg_listening_channels()"), Value::Int64(0));
  EXPECT_EQ(Scalar(*conn, "SELECT to_regclass('pg_temp.leak') IS NULL"), Value::Bool(true));
  EXPECT_EQ(Scalar(*conn, "SELECT count(*) FROM pg_prepared_statements WHERE from_sql"),
            Value::Int64(0));
  EXPECT_THAT(PreparedOn(*conn), ::testing::ElementsAre(HasSubstr(sql)));
}

TEST_F(StatementCacheTest, AFailedStatementIsStillFollowedByItsReset) {
  std::unique_ptr<DbConnection> conn = ConnectWithCache(10);
  absl::StatusOr<QueryResult> r = conn->Execute(
      Statement{"SELECT set_config('search_path', 'evil', false), 1/0", {}}, WithReset());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(SqlStateOf(r.status()).value_or(""), "22012");
  ASSERT_FALSE(conn->IsBroken());
  EXPECT_EQ(Scalar(*conn, "SHOW search_path").text, "\"$user\", public");
}

TEST_F(StatementCacheTest, APipelinedStatementIsReadRowByRowWithTypesNamedAfterTheReset) {
  std::unique_ptr<DbConnection> conn = ConnectWithCache(10);
  const std::string type = UniqueName("sb_pipe_mood");
  Must(*conn, absl::StrCat("CREATE TYPE ", type, " AS ENUM ('calm', 'busy')"));
  CleanUpWith(absl::StrCat("DROP TYPE ", type));
  for (int round = 0; round < 2; ++round) {  // unprepared, then prepared in the pipeline
    ExecuteOptions options = WithReset();
    options.max_result_bytes = 1 << 20;
    absl::StatusOr<QueryResult> r = RunCached(
        *conn,
        absl::StrCat("SELECT g, (CASE WHEN g % 2 = 0 THEN 'calm' ELSE 'busy' END)::", type,
                     " FROM generate_series(1, 1000) g"),
        {}, options);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->rows.size(), 1000u);
    EXPECT_EQ(r->rows[999][0], Value::Int64(1000));
    EXPECT_EQ(r->columns[1].type_name, type);
    EXPECT_EQ(r->rows[0][1].text, "busy");
    EXPECT_EQ(r->rows[1][1].text, "calm");
  }
  EXPECT_FALSE(conn->IsBroken());
}

TEST_F(StatementCacheTest, APipelinedStatementOverTheCapIsStoppedAndLeavesNoState) {
  std::unique_ptr<DbConnection> conn = ConnectWithCache(10);
  ExecuteOptions options = WithReset();
  options.max_result_bytes = 10000;
  absl::StatusOr<QueryResult> r =
      conn->Execute(Statement{"SELECT set_config('search_path', 'evil', false), repeat('x', 1000) "
                              "FROM generate_series(1, 1000000)",
                              {}},
                    options);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("BROKER_MAX_RESULT_BYTES"));
  // The cancel that stopped the statement may reach the reset behind it in
  // the pipeline; the connection is then closed rather than reused. Either
  // way no caller sees the statement's state.
  if (!conn->IsBroken()) {
    EXPECT_EQ(Scalar(*conn, "SHOW search_path").text, "\"$user\", public");
  }
  std::unique_ptr<DbConnection> fresh = ConnectWithCache(10);
  EXPECT_EQ(Scalar(*fresh, "SELECT 7"), Value::Int64(7));
}

TEST_F(StatementCacheTest, AStatementFailingToPrepareInThePipelineReportsTheServersError) {
  std::unique_ptr<DbConnection> conn = ConnectWithCache(10);
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<QueryResult> r =
        RunCached(*conn, "SELECT * FROM no_such_table_p", {}, WithReset());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(SqlStateOf(r.status()).value_or(""), "42P01");
  }
  EXPECT_FALSE(conn->IsBroken());
  EXPECT_EQ(Scalar(*conn, "SELECT 7"), Value::Int64(7));
}

TEST_F(StatementCacheTest, ACallerReplacingABrokerStatementGetsEveryStatementPreparedAgain) {
  std::unique_ptr<DbConnection> conn = ConnectWithCache(10);
  const std::string sql = "SELECT $1::text || '!'";
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(RunCached(*conn, sql, {Value::String("a")}).ok());
  const std::vector<std::string> prepared = PreparedOn(*conn);
  ASSERT_THAT(prepared, ::testing::SizeIs(1));
  const std::string name = prepared[0].substr(0, prepared[0].find(':'));
  ASSERT_TRUE(conn->Execute(Statement{"DEALLOCATE " + name, {}}, WithReset()).ok());
  ASSERT_TRUE(
      conn->Execute(Statement{"PREPARE " + name + "(text) AS SELECT 'evil'", {}}, WithReset())
          .ok());
  absl::StatusOr<QueryResult> r = RunCached(*conn, sql, {Value::String("b")});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rows[0][0], Value::String("b!"));
}

TEST_F(StatementCacheTest, AStatementThatFailsToPrepareReportsTheServersError) {
  std::unique_ptr<DbConnection> conn = ConnectWithCache(10);
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<QueryResult> r = RunCached(*conn, "SELECT * FROM no_such_table_for_cache");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(SqlStateOf(r.status()).value_or(""), "42P01");
    EXPECT_THAT(r.status().message(), HasSubstr("no_such_table_for_cache"));
  }
  // The connection is healthy.
  EXPECT_EQ(Scalar(*conn, "SELECT 7"), Value::Int64(7));
}

TEST_F(StatementCacheTest, TheSameSqlWithOtherParameterTypesIsAnotherPreparedStatement) {
  std::unique_ptr<DbConnection> conn = ConnectWithCache(10);
  const std::string sql = "SELECT $1 AS v";
  for (int round = 0; round < 3; ++round) {
    absl::StatusOr<QueryResult> ints = RunCached(*conn, sql, {Value::Int64(round)});
    ASSERT_TRUE(ints.ok()) << ints.status();
    EXPECT_EQ(ints->columns[0].type_name, "int8");
    EXPECT_EQ(ints->rows[0][0], Value::Int64(round));
    absl::StatusOr<QueryResult> doubles = RunCached(*conn, sql, {Value::Double(round + 0.5)});
    ASSERT_TRUE(doubles.ok()) << doubles.status();
    EXPECT_EQ(doubles->columns[0].type_name, "float8");
    EXPECT_EQ(doubles->rows[0][0], Value::Double(round + 0.5));
    Statement named{sql, {Value::String("2026-12-02")}};
    named.cacheable = true;
    named.param_types = {"date"};
    absl::StatusOr<QueryResult> dates = conn->Execute(named, ExecuteOptions{});
    ASSERT_TRUE(dates.ok()) << dates.status();
    EXPECT_EQ(dates->columns[0].type_name, "date");
  }
  // One prepared statement per set of parameter types, each reused.
  EXPECT_THAT(PreparedOn(*conn),
              ::testing::ElementsAre(HasSubstr(sql), HasSubstr(sql), HasSubstr(sql)));
  QueryResult types = Must(*conn,
                           "SELECT parameter_types::text FROM pg_prepared_statements "
                           "WHERE name LIKE 'sessionbroker\\_%' ORDER BY parameter_types::text");
  std::vector<std::string> names;
  for (const std::vector<Value>& row : types.rows) names.push_back(row[0].text);
  EXPECT_THAT(names,
              ::testing::UnorderedElementsAre("{bigint}", "{date}", "{\"double precision\"}"));
}

// ---- streaming (ExecuteStream) and incremental reading ----

// Collects what a stream hands over; stops after `stop_after` rows when set.
class CollectingSink final : public RowSink {
 public:
  explicit CollectingSink(std::optional<size_t> stop_after = std::nullopt)
      : stop_after_(stop_after) {}

  absl::Status Columns(std::vector<Column> columns) override {
    ++column_calls;
    columns_ = std::move(columns);
    return absl::OkStatus();
  }
  absl::Status Row(std::vector<Value> row, size_t bytes) override {
    if (stop_after_.has_value() && rows.size() >= *stop_after_) {
      return absl::CancelledError("the reader went away");
    }
    rows.push_back(std::move(row));
    total_bytes += bytes;
    return absl::OkStatus();
  }

  int column_calls = 0;
  std::vector<Column> columns_;
  std::vector<std::vector<Value>> rows;
  size_t total_bytes = 0;

 private:
  std::optional<size_t> stop_after_;
};

TEST_F(PqConnectionTest, StreamHandsOverColumnsThenEveryRowWithTypesAndNulls) {
  CollectingSink sink;
  absl::StatusOr<QueryResult> end = conn_->ExecuteStream(
      Statement{"SELECT g AS n, CASE WHEN g % 2 = 0 THEN NULL ELSE 'v' || g END AS t "
                "FROM generate_series(1, $1::int) g",
                {Value::Int64(1000)}},
      ExecuteOptions{}, sink);
  ASSERT_TRUE(end.ok()) << end.status();
  EXPECT_EQ(end->command_tag, "SELECT 1000");
  EXPECT_EQ(end->rows_affected, 1000);
  EXPECT_TRUE(end->rows.empty());
  EXPECT_EQ(sink.column_calls, 1);
  ASSERT_EQ(sink.columns_.size(), 2u);
  EXPECT_EQ(sink.columns_[0].name, "n");
  EXPECT_EQ(sink.columns_[0].type_name, "int4");
  EXPECT_EQ(sink.columns_[1].type_name, "text");
  ASSERT_EQ(sink.rows.size(), 1000u);
  EXPECT_EQ(sink.rows[0][0], Value::Int64(1));
  EXPECT_EQ(sink.rows[0][1], Value::String("v1"));
  EXPECT_EQ(sink.rows[1][1], Value::Null());
  EXPECT_EQ(sink.rows[999][0], Value::Int64(1000));
  EXPECT_GT(sink.total_bytes, 0u);
}

TEST_F(PqConnectionTest, StreamOfAnEmptyResultHasColumnsAndNoRows) {
  CollectingSink sink;
  absl::StatusOr<QueryResult> end =
      conn_->ExecuteStream(Statement{"SELECT 1 AS one WHERE false", {}}, ExecuteOptions{}, sink);
  ASSERT_TRUE(end.ok()) << end.status();
  EXPECT_EQ(end->command_tag, "SELECT 0");
  ASSERT_EQ(sink.columns_.size(), 1u);
  EXPECT_EQ(sink.columns_[0].name, "one");
  EXPECT_TRUE(sink.rows.empty());
}

TEST_F(PqConnectionTest, StreamNamesEnumColumnsBeforeTheFirstRow) {
  const std::string mood = UniqueName("sb_stream_mood");
  Must(*conn_, absl::StrCat("CREATE TYPE ", mood, " AS ENUM ('sad', 'ok')"));
  CleanUpWith(absl::StrCat("DROP TYPE ", mood));
  // A fresh connector: its type cache has never seen the enum.
  PqConnector fresh(url_);
  absl::StatusOr<std::unique_ptr<DbConnection>> conn = fresh.Connect();
  ASSERT_TRUE(conn.ok()) << conn.status();
  CollectingSink sink;
  absl::StatusOr<QueryResult> end = (*conn)->ExecuteStream(
      Statement{absl::StrCat("SELECT 'ok'::", mood, " AS m, ARRAY['sad']::", mood, "[] AS a"), {}},
      ExecuteOptions{}, sink);
  ASSERT_TRUE(end.ok()) << end.status();
  ASSERT_EQ(sink.columns_.size(), 2u);
  EXPECT_EQ(sink.columns_[0].type_name, mood);
  ASSERT_EQ(sink.rows.size(), 1u);
  EXPECT_EQ(sink.rows[0][0], Value::String("ok"));
  EXPECT_EQ(sink.rows[0][1], Strings({"sad"}));
}

TEST_F(PqConnectionTest, StreamErrorAfterRowsComesAfterThemWithItsSqlstate) {
  CollectingSink sink;
  absl::StatusOr<QueryResult> end =
      conn_->ExecuteStream(Statement{"SELECT 1 / (5000 - g) FROM generate_series(1, 10000) g", {}},
                           ExecuteOptions{}, sink);
  ASSERT_FALSE(end.ok());
  EXPECT_EQ(SqlStateOf(end.status()), "22012") << end.status();
  EXPECT_EQ(sink.rows.size(), 4999u);
  EXPECT_FALSE(conn_->IsBroken());
  EXPECT_EQ(Scalar(*conn_, "SELECT 7"), Value::Int64(7));
}

TEST_F(PqConnectionTest, SinkThatStopsCancelsTheStatementAndTheConnectionStaysUsable) {
  CollectingSink sink(/*stop_after=*/3);
  // Endless without the cancel.
  absl::StatusOr<QueryResult> end = conn_->ExecuteStream(
      Statement{"SELECT generate_series(1, 1000000000)", {}}, ExecuteOptions{}, sink);
  EXPECT_EQ(end.status().code(), absl::StatusCode::kCancelled) << end.status();
  EXPECT_THAT(end.status().message(), HasSubstr("the reader went away"));
  EXPECT_EQ(sink.rows.size(), 3u);
  EXPECT_FALSE(conn_->IsBroken());
  EXPECT_EQ(Scalar(*conn_, "SELECT 8"), Value::Int64(8));
}

TEST_F(PqConnectionTest, StreamedRowOverTheCapFailsNamingTheLimit) {
  CollectingSink sink;
  absl::StatusOr<QueryResult> end =
      conn_->ExecuteStream(Statement{"SELECT repeat('x', 100000) FROM generate_series(1, 3)", {}},
                           CappedAt(10000), sink);
  EXPECT_EQ(end.status().code(), absl::StatusCode::kResourceExhausted) << end.status();
  EXPECT_THAT(end.status().message(), HasSubstr("BROKER_MAX_RESULT_BYTES"));
  EXPECT_TRUE(sink.rows.empty());
  EXPECT_EQ(Scalar(*conn_, "SELECT 9"), Value::Int64(9));
}

TEST_F(PqConnectionTest, StreamInsideATransactionJoinsIt) {
  const std::string table = UniqueName("sb_stream_tx");
  Must(*conn_, absl::StrCat("CREATE TABLE ", table, " (id int)"));
  CleanUpWith(absl::StrCat("DROP TABLE ", table));
  ASSERT_TRUE(conn_->Begin(TransactionOptions{}).ok());
  ExecuteOptions in_tx;
  in_tx.in_transaction = true;
  CollectingSink sink;
  absl::StatusOr<QueryResult> end = conn_->ExecuteStream(
      Statement{absl::StrCat("INSERT INTO ", table, " SELECT generate_series(1, 5) RETURNING id"),
                {}},
      in_tx, sink);
  ASSERT_TRUE(end.ok()) << end.status();
  EXPECT_EQ(end->command_tag, "INSERT 0 5");
  EXPECT_EQ(sink.rows.size(), 5u);
  ASSERT_TRUE(conn_->Rollback().ok());
  EXPECT_EQ(Scalar(*conn_, absl::StrCat("SELECT count(*) FROM ", table)), Value::Int64(0));
}

TEST_F(PqConnectionTest, ExecuteOverTheCapStopsALongQueryInsteadOfReadingItAll) {
  // A billion rows: reading them whole would never end; the cap stops the
  // query after its first few kilobytes.
  absl::Status s =
      Run(*conn_, "SELECT generate_series(1, 1000000000)", {}, CappedAt(10000)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_FALSE(conn_->IsBroken());
  EXPECT_EQ(Scalar(*conn_, "SELECT 10"), Value::Int64(10));
}

TEST_F(PqConnectionTest, ExecuteDecodesEnumRowsOnceTheirTypeIsNamed) {
  const std::string mood = UniqueName("sb_rows_mood");
  Must(*conn_, absl::StrCat("CREATE TYPE ", mood, " AS ENUM ('sad', 'ok')"));
  CleanUpWith(absl::StrCat("DROP TYPE ", mood));
  PqConnector fresh(url_);
  absl::StatusOr<std::unique_ptr<DbConnection>> conn = fresh.Connect();
  ASSERT_TRUE(conn.ok()) << conn.status();
  QueryResult r = Must(
      **conn, absl::StrCat("SELECT ARRAY['sad', 'ok']::", mood, "[] FROM generate_series(1, 3)"));
  ASSERT_EQ(r.rows.size(), 3u);
  EXPECT_EQ(r.columns[0].type_name, absl::StrCat("_", mood));
  EXPECT_EQ(r.rows[2][0], Strings({"sad", "ok"}));
}

}  // namespace
}  // namespace sessionbroker::storage
