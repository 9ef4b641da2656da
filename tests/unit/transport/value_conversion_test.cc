// Request parameters from the wire to domain values: every kind, nested
// arrays, and refusals that name the exact position.
#include "server/transport/value_conversion.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sessionbroker::transport {
namespace {

using ::testing::HasSubstr;

v1::Value Int(int64_t i) {
  v1::Value v;
  v.set_int64_value(i);
  return v;
}

v1::Value ArrayOf(std::vector<v1::Value> items) {
  v1::Value v;
  for (v1::Value& item : items) *v.mutable_array_value()->add_values() = std::move(item);
  return v;
}

TEST(ValueConversionTest, EveryKindConvertsToItsDomainValue) {
  google::protobuf::RepeatedPtrField<v1::Value> params;
  params.Add()->set_null_value(google::protobuf::NULL_VALUE);
  params.Add()->set_bool_value(true);
  *params.Add() = Int(-7);
  params.Add()->set_double_value(2.5);
  params.Add()->set_string_value("text");
  params.Add()->set_bytes_value(std::string("\0\xff", 2));
  params.Add()->set_numeric_value("12.50");
  params.Add()->set_json_value("{\"a\":1}");
  *params.Add() = ArrayOf({Int(1), ArrayOf({Int(2), Int(3)})});
  absl::StatusOr<std::vector<storage::Value>> out = ParamsFromProto(params, "");
  ASSERT_TRUE(out.ok()) << out.status();
  const std::vector<storage::Value> expected = {
      storage::Value::Null(),
      storage::Value::Bool(true),
      storage::Value::Int64(-7),
      storage::Value::Double(2.5),
      storage::Value::String("text"),
      storage::Value::Bytes(std::string("\0\xff", 2)),
      storage::Value::Numeric("12.50"),
      storage::Value::Json("{\"a\":1}"),
      storage::Value::Array(
          {storage::Value::Int64(1),
           storage::Value::Array({storage::Value::Int64(2), storage::Value::Int64(3)})}),
  };
  EXPECT_EQ(*out, expected);
}

TEST(ValueConversionTest, AValueWithNothingSetIsRefusedNamingItsPosition) {
  google::protobuf::RepeatedPtrField<v1::Value> params;
  *params.Add() = Int(1);
  *params.Add() = ArrayOf({Int(1), ArrayOf({Int(2), v1::Value()})});
  absl::StatusOr<std::vector<storage::Value>> out = ParamsFromProto(params, "statements[2].");
  ASSERT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(out.status().message(),
            "statements[2].params[1][1][1] has no value set; use null_value for SQL NULL");
}

TEST(ValueConversionTest, ArraysDeeperThanPostgresAllowsAreRefused) {
  v1::Value v = Int(1);
  for (int i = 0; i < 7; ++i) v = ArrayOf({std::move(v)});
  absl::StatusOr<storage::Value> out = ValueFromProto(v, "value");
  ASSERT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(out.status().message(),
              HasSubstr("value[0][0][0][0][0][0]: arrays nest deeper than PostgreSQL's 6"));
  v1::Value six = Int(1);
  for (int i = 0; i < 6; ++i) six = ArrayOf({std::move(six)});
  EXPECT_TRUE(ValueFromProto(six, "value").ok());
}

TEST(ValueConversionTest, ArraysDeeperThanTheOperatorsLimitAreRefusedNamingTheSetting) {
  google::protobuf::RepeatedPtrField<v1::Value> params;
  *params.Add() = ArrayOf({ArrayOf({Int(1)})});
  *params.Add() = ArrayOf({ArrayOf({ArrayOf({Int(1)})})});
  absl::StatusOr<std::vector<storage::Value>> out = ParamsFromProto(params, "", 2);
  ASSERT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(out.status().message(),
            "params[1][0][0]: arrays nest deeper than 2 levels, this broker's limit "
            "(BROKER_MAX_ARRAY_DEPTH)");
  params.RemoveLast();
  EXPECT_TRUE(ParamsFromProto(params, "", 2).ok()) << "two levels are within the limit";
}

TEST(ValueConversionTest, ALimitAbovePostgresOwnIsPostgresOwn) {
  v1::Value v = Int(1);
  for (int i = 0; i < 7; ++i) v = ArrayOf({std::move(v)});
  absl::StatusOr<storage::Value> out = ValueFromProto(v, "value", 100);
  ASSERT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(out.status().message(), HasSubstr("deeper than PostgreSQL's 6"));
}

TEST(ValueConversionTest, ParamTypesAreEmptyUnlessAParameterNamesOne) {
  v1::ExecuteRequest request;
  request.add_params()->set_int64_value(1);
  request.add_params()->set_string_value("x");
  absl::StatusOr<std::vector<std::string>> none = ParamTypesFromProto(request.params(), "");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());
  request.mutable_params(1)->set_type("uuid");
  absl::StatusOr<std::vector<std::string>> one = ParamTypesFromProto(request.params(), "");
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_THAT(*one, ::testing::ElementsAre("", "uuid"));
}

TEST(ValueConversionTest, AnOverlongOrNulHoldingTypeIsRefusedNamingItsPosition) {
  v1::ExecuteRequest request;
  request.add_params()->set_type(std::string(kMaxParamTypeNameBytes + 1, 'a'));
  absl::Status s = ParamTypesFromProto(request.params(), "statements[1].").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), ::testing::StartsWith("statements[1].params[0].type: "));
  request.mutable_params(0)->set_type(std::string("in\0t4", 5));
  EXPECT_EQ(ParamTypesFromProto(request.params(), "").status().code(),
            absl::StatusCode::kInvalidArgument);
  request.mutable_params(0)->set_type(std::string(kMaxParamTypeNameBytes, 'a'));
  EXPECT_TRUE(ParamTypesFromProto(request.params(), "").ok());
}

}  // namespace
}  // namespace sessionbroker::transport
