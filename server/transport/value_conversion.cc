#include "server/transport/value_conversion.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace sessionbroker::transport {
namespace {

// PostgreSQL arrays have at most 6 dimensions (MAXDIM).
constexpr int kMaxArrayDepth = 6;

absl::StatusOr<storage::Value> Convert(const v1::Value& value, absl::string_view where, int depth) {
  using storage::Value;
  switch (value.kind_case()) {
    case v1::Value::kNullValue:
      return Value::Null();
    case v1::Value::kBoolValue:
      return Value::Bool(value.bool_value());
    case v1::Value::kInt64Value:
      return Value::Int64(value.int64_value());
    case v1::Value::kDoubleValue:
      return Value::Double(value.double_value());
    case v1::Value::kStringValue:
      return Value::String(value.string_value());
    case v1::Value::kBytesValue:
      return Value::Bytes(value.bytes_value());
    case v1::Value::kNumericValue:
      return Value::Numeric(value.numeric_value());
    case v1::Value::kJsonValue:
      return Value::Json(value.json_value());
    case v1::Value::kArrayValue: {
      if (depth >= kMaxArrayDepth) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": arrays nest deeper than PostgreSQL's ", kMaxArrayDepth, " dimensions"));
      }
      std::vector<Value> elements;
      elements.reserve(value.array_value().values_size());
      for (int i = 0; i < value.array_value().values_size(); ++i) {
        absl::StatusOr<Value> element =
            Convert(value.array_value().values(i), absl::StrCat(where, "[", i, "]"), depth + 1);
        if (!element.ok()) return element.status();
        elements.push_back(*std::move(element));
      }
      return Value::Array(std::move(elements));
    }
    case v1::Value::KIND_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(where, " has no value set; use null_value for SQL NULL"));
}

// The common path: fills `out` (a default Value) and returns true, or returns
// false, saying nothing, for a value Convert() refuses; the caller then asks
// Convert() why. Parameters are almost always valid, so no position string
// ("params[3][1]") and no Status is built for them, and each value is built
// in place instead of being moved out of a StatusOr.
bool ConvertInPlace(const v1::Value& value, int depth, storage::Value* out) {
  using Kind = storage::Value::Kind;
  switch (value.kind_case()) {
    case v1::Value::kNullValue:
      out->kind = Kind::kNull;
      return true;
    case v1::Value::kBoolValue:
      out->kind = Kind::kBool;
      out->bool_value = value.bool_value();
      return true;
    case v1::Value::kInt64Value:
      out->kind = Kind::kInt64;
      out->int64_value = value.int64_value();
      return true;
    case v1::Value::kDoubleValue:
      out->kind = Kind::kDouble;
      out->double_value = value.double_value();
      return true;
    case v1::Value::kStringValue:
      out->kind = Kind::kString;
      out->text = value.string_value();
      return true;
    case v1::Value::kBytesValue:
      out->kind = Kind::kBytes;
      out->text = value.bytes_value();
      return true;
    case v1::Value::kNumericValue:
      out->kind = Kind::kNumeric;
      out->text = value.numeric_value();
      return true;
    case v1::Value::kJsonValue:
      out->kind = Kind::kJson;
      out->text = value.json_value();
      return true;
    case v1::Value::kArrayValue: {
      if (depth >= kMaxArrayDepth) return false;
      const auto& values = value.array_value().values();
      out->kind = Kind::kArray;
      out->elements.resize(static_cast<size_t>(values.size()));
      for (int i = 0; i < values.size(); ++i) {
        if (!ConvertInPlace(values.Get(i), depth + 1, &out->elements[static_cast<size_t>(i)])) {
          return false;
        }
      }
      return true;
    }
    case v1::Value::KIND_NOT_SET:
      break;
  }
  return false;
}

}  // namespace

absl::StatusOr<storage::Value> ValueFromProto(const v1::Value& value, absl::string_view where) {
  storage::Value out;
  if (ConvertInPlace(value, 0, &out)) return out;
  return Convert(value, where, 0);
}

absl::StatusOr<std::vector<storage::Value>> ParamsFromProto(
    const google::protobuf::RepeatedPtrField<v1::Value>& params, absl::string_view where_prefix) {
  std::vector<storage::Value> out(static_cast<size_t>(params.size()));
  for (int i = 0; i < params.size(); ++i) {
    storage::Value& v = out[static_cast<size_t>(i)];
    if (ConvertInPlace(params.Get(i), 0, &v)) continue;
    absl::StatusOr<storage::Value> converted =
        Convert(params.Get(i), absl::StrCat(where_prefix, "params[", i, "]"), 0);
    if (!converted.ok()) return converted.status();
    v = *std::move(converted);  // not reached: both refuse the same values
  }
  return out;
}

void ValueToProto(storage::Value&& value, v1::Value* out) {
  using Kind = storage::Value::Kind;
  switch (value.kind) {
    case Kind::kNull:
      out->set_null_value(google::protobuf::NULL_VALUE);
      return;
    case Kind::kBool:
      out->set_bool_value(value.bool_value);
      return;
    case Kind::kInt64:
      out->set_int64_value(value.int64_value);
      return;
    case Kind::kDouble:
      out->set_double_value(value.double_value);
      return;
    case Kind::kString:
      out->set_string_value(std::move(value.text));
      return;
    case Kind::kBytes:
      out->set_bytes_value(std::move(value.text));
      return;
    case Kind::kNumeric:
      out->set_numeric_value(std::move(value.text));
      return;
    case Kind::kJson:
      out->set_json_value(std::move(value.text));
      return;
    case Kind::kArray: {
      v1::ArrayValue* array = out->mutable_array_value();
      array->mutable_values()->Reserve(static_cast<int>(value.elements.size()));
      for (storage::Value& element : value.elements) {
        ValueToProto(std::move(element), array->add_values());
      }
      return;
    }
  }
}

void ResultToProto(storage::QueryResult&& result, v1::ExecuteResponse* out) {
  out->mutable_columns()->Reserve(static_cast<int>(result.columns.size()));
  for (storage::Column& c : result.columns) {
    v1::Column* column = out->add_columns();
    column->set_name(std::move(c.name));
    column->set_type_oid(c.type_oid);
    column->set_type_name(std::move(c.type_name));
  }
  out->mutable_rows()->Reserve(static_cast<int>(result.rows.size()));
  for (std::vector<storage::Value>& r : result.rows) {
    v1::Row* row = out->add_rows();
    row->mutable_values()->Reserve(static_cast<int>(r.size()));
    for (storage::Value& v : r) ValueToProto(std::move(v), row->add_values());
  }
  out->set_rows_affected(result.rows_affected);
  out->set_command_tag(std::move(result.command_tag));
}

}  // namespace sessionbroker::transport
