#include "server/storage/value_text.h"

#include <cmath>
#include <limits>
#include <ostream>
#include <string>
#include <utility>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sessionbroker::storage {

// Readable Values in failure messages.
void PrintTo(const Value& v, std::ostream* os) { *os << DebugString(v); }

namespace {

using ::testing::HasSubstr;

Value Decode(uint32_t oid, absl::string_view text) {
  absl::StatusOr<Value> v = ValueFromText(oid, text);
  EXPECT_TRUE(v.ok()) << "oid " << oid << " text " << text << ": " << v.status();
  return v.ok() ? *v : Value::String("<decode failed>");
}

std::string Param(const Value& v) {
  absl::StatusOr<std::optional<std::string>> text = ParameterText(v);
  EXPECT_TRUE(text.ok()) << text.status();
  if (!text.ok() || !text->has_value()) return "<null or error>";
  return **text;
}

Value Strings(std::initializer_list<const char*> items) {
  std::vector<Value> out;
  for (const char* s : items) out.push_back(s == nullptr ? Value::Null() : Value::String(s));
  return Value::Array(std::move(out));
}

Value Ints(std::initializer_list<int64_t> items) {
  std::vector<Value> out;
  for (int64_t i : items) out.push_back(Value::Int64(i));
  return Value::Array(std::move(out));
}

TEST(TypeNameTest, NamesBuiltinScalarAndArrayTypes) {
  EXPECT_EQ(TypeName(16), "bool");
  EXPECT_EQ(TypeName(23), "int4");
  EXPECT_EQ(TypeName(1184), "timestamptz");
  EXPECT_EQ(TypeName(2950), "uuid");
  EXPECT_EQ(TypeName(3802), "jsonb");
  EXPECT_EQ(TypeName(1007), "_int4");
  EXPECT_EQ(TypeName(1009), "_text");
  EXPECT_EQ(TypeName(199), "_json");
  EXPECT_EQ(TypeName(3807), "_jsonb");
  EXPECT_EQ(TypeName(271), "_xid8");
}

TEST(TypeNameTest, UnknownOidHasEmptyName) {
  EXPECT_EQ(TypeName(0), "");
  EXPECT_EQ(TypeName(16384), "");
  EXPECT_EQ(TypeName(999999), "");
}

TEST(ArrayElementTypeTest, MapsBuiltinArraysToTheirElements) {
  EXPECT_EQ(ArrayElementType(1000), 16u);
  EXPECT_EQ(ArrayElementType(1005), 21u);
  EXPECT_EQ(ArrayElementType(1007), 23u);
  EXPECT_EQ(ArrayElementType(1016), 20u);
  EXPECT_EQ(ArrayElementType(1021), 700u);
  EXPECT_EQ(ArrayElementType(1022), 701u);
  EXPECT_EQ(ArrayElementType(1231), 1700u);
  EXPECT_EQ(ArrayElementType(1009), 25u);
  EXPECT_EQ(ArrayElementType(1015), 1043u);
  EXPECT_EQ(ArrayElementType(1014), 1042u);
  EXPECT_EQ(ArrayElementType(1003), 19u);
  EXPECT_EQ(ArrayElementType(1001), 17u);
  EXPECT_EQ(ArrayElementType(2951), 2950u);
  EXPECT_EQ(ArrayElementType(1182), 1082u);
  EXPECT_EQ(ArrayElementType(1183), 1083u);
  EXPECT_EQ(ArrayElementType(1115), 1114u);
  EXPECT_EQ(ArrayElementType(1185), 1184u);
  EXPECT_EQ(ArrayElementType(1187), 1186u);
  EXPECT_EQ(ArrayElementType(199), 114u);
  EXPECT_EQ(ArrayElementType(3807), 3802u);
}

TEST(ArrayElementTypeTest, ScalarsAndUnknownOidsAreNotArrays) {
  EXPECT_EQ(ArrayElementType(23), 0u);
  EXPECT_EQ(ArrayElementType(0), 0u);
  EXPECT_EQ(ArrayElementType(16384), 0u);
}

TEST(ValueFromTextTest, DecodesBool) {
  EXPECT_EQ(Decode(16, "t"), Value::Bool(true));
  EXPECT_EQ(Decode(16, "f"), Value::Bool(false));
  EXPECT_FALSE(ValueFromText(16, "yes").ok());
}

TEST(ValueFromTextTest, DecodesIntegerTypesAndOidAsInt64) {
  EXPECT_EQ(Decode(21, "-32768"), Value::Int64(-32768));
  EXPECT_EQ(Decode(23, "2147483647"), Value::Int64(2147483647));
  EXPECT_EQ(Decode(20, "-9223372036854775808"), Value::Int64(std::numeric_limits<int64_t>::min()));
  EXPECT_EQ(Decode(20, "9223372036854775807"), Value::Int64(std::numeric_limits<int64_t>::max()));
  EXPECT_EQ(Decode(26, "4294967295"), Value::Int64(4294967295));
}

TEST(ValueFromTextTest, MalformedIntegerIsInternalError) {
  absl::StatusOr<Value> v = ValueFromText(23, "12x");
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(v.status().message(), HasSubstr("int4"));
}

TEST(ValueFromTextTest, DecodesFloatsExactly) {
  EXPECT_EQ(Decode(701, "0.1"), Value::Double(0.1));
  EXPECT_EQ(Decode(701, "1e+308"), Value::Double(1e308));
  EXPECT_EQ(Decode(701, "-0"), Value::Double(-0.0));
  EXPECT_EQ(Decode(701, "4.9406564584124654e-324"), Value::Double(4.9406564584124654e-324));
  EXPECT_EQ(Decode(701, "0.30000000000000004"), Value::Double(0.1 + 0.2));
  EXPECT_EQ(Decode(700, "3.4028235e+38"), Value::Double(3.4028235e+38));
}

TEST(ValueFromTextTest, DecodesFloatSpecialValues) {
  EXPECT_TRUE(std::isnan(Decode(701, "NaN").double_value));
  EXPECT_EQ(Decode(701, "Infinity"), Value::Double(std::numeric_limits<double>::infinity()));
  EXPECT_EQ(Decode(700, "-Infinity"), Value::Double(-std::numeric_limits<double>::infinity()));
  EXPECT_FALSE(ValueFromText(701, "1.5abc").ok());
  EXPECT_FALSE(ValueFromText(701, "").ok());
}

TEST(ValueFromTextTest, KeepsNumericTextExact) {
  EXPECT_EQ(Decode(1700, "12345678901234567890.123456789"),
            Value::Numeric("12345678901234567890.123456789"));
  EXPECT_EQ(Decode(1700, "NaN"), Value::Numeric("NaN"));
  EXPECT_EQ(Decode(1700, "-0.000"), Value::Numeric("-0.000"));
}

TEST(ValueFromTextTest, DecodesStringTypesAsString) {
  for (uint32_t oid : {25u, 1043u, 1042u, 19u, 18u}) {
    EXPECT_EQ(Decode(oid, "héllo, \"world\""), Value::String("héllo, \"world\"")) << oid;
  }
}

TEST(ValueFromTextTest, OtherTypesKeepTheServersText) {
  EXPECT_EQ(Decode(2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            Value::String("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
  EXPECT_EQ(Decode(1184, "2024-02-29 12:34:56.789+00"),
            Value::String("2024-02-29 12:34:56.789+00"));
  EXPECT_EQ(Decode(1186, "P1Y2M3DT4H5M6S"), Value::String("P1Y2M3DT4H5M6S"));
  EXPECT_EQ(Decode(16384, "happy"), Value::String("happy"));
}

TEST(ValueFromTextTest, DecodesJsonAndJsonb) {
  EXPECT_EQ(Decode(114, R"({"a": [1, 2]})"), Value::Json(R"({"a": [1, 2]})"));
  EXPECT_EQ(Decode(3802, R"({"a": [1, 2]})"), Value::Json(R"({"a": [1, 2]})"));
}

TEST(ValueFromTextTest, DecodesByteaHexFormat) {
  EXPECT_EQ(Decode(17, "\\x"), Value::Bytes(""));
  EXPECT_EQ(Decode(17, "\\x00ff7f80"), Value::Bytes(std::string("\x00\xff\x7f\x80", 4)));
  EXPECT_EQ(Decode(17, "\\xDEADbeef"), Value::Bytes("\xde\xad\xbe\xef"));
  EXPECT_FALSE(ValueFromText(17, "\\x0").ok());
  EXPECT_FALSE(ValueFromText(17, "\\xzz").ok());
}

TEST(ValueFromTextTest, DecodesByteaLegacyEscapeFormat) {
  EXPECT_EQ(Decode(17, "abc"), Value::Bytes("abc"));
  EXPECT_EQ(Decode(17, "a\\\\b"), Value::Bytes("a\\b"));
  EXPECT_EQ(Decode(17, "\\000\\377x"), Value::Bytes(std::string("\x00\xffx", 3)));
  EXPECT_FALSE(ValueFromText(17, "\\9").ok());
}

TEST(ValueFromTextTest, DecodesIntArray) { EXPECT_EQ(Decode(1007, "{1,-2,3}"), Ints({1, -2, 3})); }

TEST(ValueFromTextTest, DecodesEmptyArray) { EXPECT_EQ(Decode(1009, "{}"), Value::Array({})); }

TEST(ValueFromTextTest, ArrayNullElementsAreNullButQuotedNullIsAString) {
  EXPECT_EQ(Decode(1009, "{a,NULL,\"NULL\",null}"), Strings({"a", nullptr, "NULL", nullptr}));
}

TEST(ValueFromTextTest, DecodesQuotedArrayElementsWithEscapes) {
  EXPECT_EQ(Decode(1009, R"({"a,b","say \"hi\"","back\\slash","{braces}",""," x "})"),
            Strings({"a,b", "say \"hi\"", "back\\slash", "{braces}", "", " x "}));
}

TEST(ValueFromTextTest, DecodesMultiDimensionalArrayAsNestedArrays) {
  EXPECT_EQ(Decode(1007, "{{1,2},{3,4}}"), Value::Array({Ints({1, 2}), Ints({3, 4})}));
  EXPECT_EQ(Decode(1007, "{{{1}},{{2}}}"),
            Value::Array({Value::Array({Ints({1})}), Value::Array({Ints({2})})}));
}

TEST(ValueFromTextTest, DropsArrayDimensionBounds) {
  EXPECT_EQ(Decode(1007, "[0:2]={7,8,9}"), Ints({7, 8, 9}));
  EXPECT_EQ(Decode(1007, "[0:1][1:1]={{1},{2}}"), Value::Array({Ints({1}), Ints({2})}));
}

TEST(ValueFromTextTest, DecodesArrayElementsByElementType) {
  EXPECT_EQ(Decode(1000, "{t,f,NULL}"),
            Value::Array({Value::Bool(true), Value::Bool(false), Value::Null()}));
  EXPECT_EQ(Decode(1022, "{1.5,NaN,-Infinity}").elements[0], Value::Double(1.5));
  EXPECT_EQ(Decode(1231, "{1.10,NaN}"),
            Value::Array({Value::Numeric("1.10"), Value::Numeric("NaN")}));
  EXPECT_EQ(Decode(1001, R"({"\\x0001ff",NULL})"),
            Value::Array({Value::Bytes(std::string("\x00\x01\xff", 3)), Value::Null()}));
  EXPECT_EQ(Decode(3807, R"({"{\"a\": 1}","[]"})"),
            Value::Array({Value::Json(R"({"a": 1})"), Value::Json("[]")}));
  EXPECT_EQ(Decode(1185, R"({"2024-01-01 00:00:00+00"})"), Strings({"2024-01-01 00:00:00+00"}));
}

TEST(ValueFromTextTest, BoxArraysUseSemicolonDelimiter) {
  EXPECT_EQ(Decode(1020, "{(1,1),(0,0);(2,2),(1,1)}"), Strings({"(1,1),(0,0)", "(2,2),(1,1)"}));
}

TEST(ArrayFromTextTest, DecodesArraysOfUnknownElementTypesAsStrings) {
  absl::StatusOr<Value> v = ArrayFromText(16384, "{happy,\"very sad\",NULL}");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, Strings({"happy", "very sad", nullptr}));
}

TEST(ArrayFromTextTest, MalformedArraysAreInternalErrors) {
  for (absl::string_view text : {"", "{", "{1,2", "{1,}", "{\"a}", "1,2", "{1}x", "[1:2]{1,2}",
                                 "{{{{{{{1}}}}}}}", "{1\"2}"}) {
    absl::StatusOr<Value> v = ArrayFromText(23, text);
    EXPECT_FALSE(v.ok()) << text;
    if (!v.ok()) EXPECT_EQ(v.status().code(), absl::StatusCode::kInternal) << text;
  }
}

TEST(ParameterTextTest, NullIsSentAsSqlNull) {
  absl::StatusOr<std::optional<std::string>> text = ParameterText(Value::Null());
  ASSERT_TRUE(text.ok());
  EXPECT_FALSE(text->has_value());
}

TEST(ParameterTextTest, FormatsScalars) {
  EXPECT_EQ(Param(Value::Bool(true)), "true");
  EXPECT_EQ(Param(Value::Bool(false)), "false");
  EXPECT_EQ(Param(Value::Int64(-42)), "-42");
  EXPECT_EQ(Param(Value::Int64(std::numeric_limits<int64_t>::min())), "-9223372036854775808");
  EXPECT_EQ(Param(Value::String("it's")), "it's");
  EXPECT_EQ(Param(Value::Numeric("12345678901234567890.123456789")),
            "12345678901234567890.123456789");
  EXPECT_EQ(Param(Value::Json(R"({"a":1})")), R"({"a":1})");
}

TEST(ParameterTextTest, FormatsDoublesAsShortestRoundTripText) {
  EXPECT_EQ(Param(Value::Double(0.1)), "0.1");
  EXPECT_EQ(Param(Value::Double(0.1 + 0.2)), "0.30000000000000004");
  EXPECT_EQ(Param(Value::Double(1e300)), "1e+300");
  EXPECT_EQ(Param(Value::Double(-0.0)), "-0");
  EXPECT_EQ(Param(Value::Double(std::nan(""))), "NaN");
  EXPECT_EQ(Param(Value::Double(std::numeric_limits<double>::infinity())), "Infinity");
  EXPECT_EQ(Param(Value::Double(-std::numeric_limits<double>::infinity())), "-Infinity");
}

TEST(ParameterTextTest, DoublesRoundTripThroughDecoding) {
  for (double d : {0.1, 1.0 / 3, 123456.789e-200, std::numeric_limits<double>::max(),
                   std::numeric_limits<double>::denorm_min(), -2.5}) {
    EXPECT_EQ(Decode(701, Param(Value::Double(d))), Value::Double(d)) << d;
  }
}

TEST(ParameterTextTest, FormatsBytesAsLowercaseByteaHex) {
  EXPECT_EQ(Param(Value::Bytes("")), "\\x");
  EXPECT_EQ(Param(Value::Bytes(std::string("\x00\xff\x10\xAB", 4))), "\\x00ff10ab");
}

TEST(ParameterTextTest, RefusesNulInText) {
  for (const Value& v : {Value::String(std::string("a\0b", 3)), Value::Json(std::string("\0", 1)),
                         Value::Array({Value::String(std::string("\0", 1))})}) {
    absl::StatusOr<std::optional<std::string>> text = ParameterText(v);
    ASSERT_FALSE(text.ok()) << DebugString(v);
    EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(text.status().message(), HasSubstr("NUL"));
  }
}

TEST(ParameterTextTest, RefusesUnknownKind) {
  Value v;
  v.kind = static_cast<Value::Kind>(99);
  absl::StatusOr<std::optional<std::string>> text = ParameterText(v);
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ParameterTextTest, FormatsArrayWithEveryElementQuoted) {
  EXPECT_EQ(Param(Ints({1, 2, 3})), R"({"1","2","3"})");
  EXPECT_EQ(Param(Value::Array({})), "{}");
  EXPECT_EQ(Param(Strings({"a", nullptr, "NULL", ""})), R"({"a",NULL,"NULL",""})");
}

TEST(ParameterTextTest, EscapesQuotesAndBackslashesInArrayElements) {
  EXPECT_EQ(Param(Strings({"a,b", "say \"hi\"", "back\\slash", "{x}"})),
            R"({"a,b","say \"hi\"","back\\slash","{x}"})");
}

TEST(ParameterTextTest, FormatsNestedArrays) {
  EXPECT_EQ(Param(Value::Array({Ints({1, 2}), Ints({3, 4})})), R"({{"1","2"},{"3","4"}})");
}

TEST(ParameterTextTest, FormatsBytesArrayElementsWithEscapedBackslash) {
  EXPECT_EQ(Param(Value::Array({Value::Bytes(std::string("\x00\x01", 2)), Value::Null()})),
            R"({"\\x0001",NULL})");
}

TEST(ParameterTextTest, ArrayLiteralDecodesBackToTheSameValue) {
  const Value original = Strings({"a,b", "q\"uote", "b\\s", "{", "}", " ", "", nullptr, "NULL"});
  EXPECT_EQ(Decode(1009, Param(original)), original);
  const Value bytes = Value::Array({Value::Bytes(std::string("\x00\\\"\xff", 4))});
  EXPECT_EQ(Decode(1001, Param(bytes)), bytes);
}

TEST(ResultBytesTest, CountsPayloadPlusPerCellOverhead) {
  EXPECT_EQ(ResultBytes(Value::Null()), kResultCellOverheadBytes);
  EXPECT_EQ(ResultBytes(Value::Int64(1)), kResultCellOverheadBytes + 8);
  EXPECT_EQ(ResultBytes(Value::String("abcd")), kResultCellOverheadBytes + 4);
  EXPECT_EQ(ResultBytes(Ints({1, 2})), 3 * kResultCellOverheadBytes + 16);
}

// The worst case protobuf encodings the constants must cover (tag bytes,
// length varints of at most 5 bytes, int64 varints of up to 10).
TEST(ResultBytesTest, CoversTheLargestEncodingOfEachValue) {
  // Row entry (tag + length) + oneof tag + 10-byte varint of a negative int64.
  EXPECT_GE(ResultBytes(Value::Int64(-1)), 1u + 1u + 1u + 10u);
  // Row entry (tag + 5-byte length) + oneof tag + 5-byte length + payload.
  const std::string big(1 << 20, 'x');
  EXPECT_GE(ResultBytes(Value::String(big)), 6u + 6u + big.size());
  // Each element is framed like a value of its own.
  EXPECT_GE(ResultBytes(Value::Array({Value::Null(), Value::Null()})), 6u + 6u + 2 * (6u + 2u));
}

TEST(ResultHeaderBytesTest, CountsCommandTagAndEachColumnsNames) {
  QueryResult result;
  result.command_tag = "SELECT 2";
  EXPECT_EQ(ResultHeaderBytes(result), kResultOverheadBytes + 8);
  result.columns.push_back(Column{"name", 25, "text"});
  result.columns.push_back(Column{"", 1234, ""});
  EXPECT_EQ(ResultHeaderBytes(result),
            kResultOverheadBytes + 8 + 2 * kResultColumnOverheadBytes + 4 + 4);
  // Rows are not part of it.
  result.rows.push_back({Value::String("abc"), Value::Null()});
  EXPECT_EQ(ResultHeaderBytes(result),
            kResultOverheadBytes + 8 + 2 * kResultColumnOverheadBytes + 4 + 4);
}

TEST(ResultHeaderBytesTest, OverheadsCoverTheirLargestEncoding) {
  // A batch's result entry (6) + rows_affected (1 + 10) + command tag framing (6).
  EXPECT_GE(kResultOverheadBytes, 23u);
  // Column entry (6) + name framing (6) + type_oid (1 + 5) + type_name framing (6).
  EXPECT_GE(kResultColumnOverheadBytes, 24u);
  // A row entry (6), even for a row without columns.
  EXPECT_GE(kResultRowOverheadBytes, 6u);
}

TEST(ValueTest, EqualityTreatsNanAsEqualAndSignedZerosAsDifferent) {
  EXPECT_EQ(Value::Double(std::nan("")), Value::Double(std::nan("")));
  EXPECT_NE(Value::Double(0.0), Value::Double(-0.0));
  EXPECT_NE(Value::String("1"), Value::Numeric("1"));
  EXPECT_NE(Value::Int64(1), Value::Double(1));
  EXPECT_EQ(Value::Null(), Value::Null());
}

TEST(ValueTest, DebugStringIsReadable) {
  EXPECT_EQ(
      DebugString(Value::Array({Value::Null(), Value::Bool(true), Value::Int64(3),
                                Value::Double(0.5), Value::String("a\"b"), Value::Bytes("\x01\xff"),
                                Value::Numeric("1.0"), Value::Json("{}")})),
      R"([NULL, true, 3, 0.5, "a\"b", bytes(01ff), numeric(1.0), json({})])");
}

// ---- the types parameters are sent as ----

TEST(ImpliedTypeOidTest, EachScalarKindImpliesItsType) {
  EXPECT_EQ(ImpliedTypeOid(Value::Bool(true)), 16u);
  EXPECT_EQ(ImpliedTypeOid(Value::Int64(41)), 20u);
  EXPECT_EQ(ImpliedTypeOid(Value::Double(0.5)), 701u);
  EXPECT_EQ(ImpliedTypeOid(Value::Bytes("x")), 17u);
  EXPECT_EQ(ImpliedTypeOid(Value::Numeric("1.5")), 1700u);
  EXPECT_EQ(ImpliedTypeOid(Value::Json("{}")), 3802u);
  // Left to the server.
  EXPECT_EQ(ImpliedTypeOid(Value::String("x")), 0u);
  EXPECT_EQ(ImpliedTypeOid(Value::Null()), 0u);
}

TEST(ImpliedTypeOidTest, AnArrayIsTheArrayOfItsElementsCommonKind) {
  EXPECT_EQ(ImpliedTypeOid(Value::Array({Value::Int64(1), Value::Null()})), 1016u);
  EXPECT_EQ(ImpliedTypeOid(Value::Array({Value::Double(1)})), 1022u);
  EXPECT_EQ(ImpliedTypeOid(Value::Array({Value::Bool(true)})), 1000u);
  EXPECT_EQ(ImpliedTypeOid(Value::Array({Value::Bytes("")})), 1001u);
  EXPECT_EQ(ImpliedTypeOid(Value::Array({Value::Numeric("1")})), 1231u);
  EXPECT_EQ(ImpliedTypeOid(Value::Array({Value::Json("1")})), 3807u);
  // Nested: the leaves decide, NULLs and empty rows aside.
  EXPECT_EQ(ImpliedTypeOid(Value::Array({Value::Array({Value::Int64(1)}), Value::Array({}),
                                         Value::Array({Value::Null(), Value::Int64(2)})})),
            1016u);
}

TEST(ImpliedTypeOidTest, StringsMixedKindsAndNullsOnlyLeaveAnArrayUntyped) {
  EXPECT_EQ(ImpliedTypeOid(Value::Array({Value::String("a")})), 0u);
  EXPECT_EQ(ImpliedTypeOid(Value::Array({Value::Int64(1), Value::Double(2)})), 0u);
  EXPECT_EQ(ImpliedTypeOid(
                Value::Array({Value::Array({Value::Int64(1)}), Value::Array({Value::Bool(true)})})),
            0u);
  EXPECT_EQ(ImpliedTypeOid(Value::Array({Value::Null(), Value::Null()})), 0u);
  EXPECT_EQ(ImpliedTypeOid(Value::Array({})), 0u);
}

TEST(BuiltinTypeOidTest, TypeNamesAndSqlSpellingsAreKnown) {
  const std::pair<const char*, uint32_t> cases[] = {
      {"int4", 23},
      {"integer", 23},
      {"int", 23},
      {"INT4", 23},
      {"bigint", 20},
      {"smallint", 21},
      {"boolean", 16},
      {"bool", 16},
      {"real", 700},
      {"float", 701},
      {"double precision", 701},
      {"double   precision", 701},
      {"numeric", 1700},
      {"decimal", 1700},
      {"numeric(10, 2)", 1700},
      {"text", 25},
      {"varchar", 1043},
      {"character varying", 1043},
      {"varchar(20)", 1043},
      {"char", 1042},
      {"character(3)", 1042},
      {"bpchar", 1042},
      {"date", 1082},
      {"time", 1083},
      {"time without time zone", 1083},
      {"timetz", 1266},
      {"time with time zone", 1266},
      {"timestamp", 1114},
      {"timestamp without time zone", 1114},
      {"timestamptz", 1184},
      {"timestamp with time zone", 1184},
      {"Timestamp With Time Zone", 1184},
      {"interval", 1186},
      {"uuid", 2950},
      {"json", 114},
      {"jsonb", 3802},
      {"bytea", 17},
      {"inet", 869},
      {" uuid ", 2950},
  };
  for (const auto& [name, oid] : cases) EXPECT_EQ(BuiltinTypeOid(name), oid) << name;
}

TEST(BuiltinTypeOidTest, ArraysAreSpelledWithBracketsOrAnUnderscore) {
  EXPECT_EQ(BuiltinTypeOid("text[]"), 1009u);
  EXPECT_EQ(BuiltinTypeOid("int4[][]"), 1007u);
  EXPECT_EQ(BuiltinTypeOid("integer[3]"), 1007u);
  EXPECT_EQ(BuiltinTypeOid("int8 []"), 1016u);
  EXPECT_EQ(BuiltinTypeOid("timestamp with time zone[]"), 1185u);
  EXPECT_EQ(BuiltinTypeOid("varchar(10)[]"), 1015u);
  EXPECT_EQ(BuiltinTypeOid("_int4"), 1007u);
  EXPECT_EQ(BuiltinTypeOid("uuid[]"), 2951u);
  EXPECT_EQ(BuiltinTypeOid("jsonb[]"), 3807u);
}

TEST(BuiltinTypeOidTest, EverythingElseIsLeftToTheServer) {
  for (const char* name :
       {"", "mood", "public.mood", "pg_catalog.int4", "\"char\"", "\"Int4\"", "int4 int4",
        "_int4[]", "int4[x]", "int4]", "numeric(10", "numeric)", "varchar(abc)", "int4;"}) {
    EXPECT_EQ(BuiltinTypeOid(name), 0u) << name;
  }
}

}  // namespace
}  // namespace sessionbroker::storage
