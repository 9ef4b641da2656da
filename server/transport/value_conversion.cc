#include "server/transport/value_conversion.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace sessionbroker::transport {
namespace {

// Why Fill() refused a value.
enum class Refusal { kNone, kNoValue, kTooDeep };

// Fills `out` (a default Value) from `value`. On refusal, `path` holds the
// array indices that lead to the refused element, innermost first. Parameters
// are almost always valid, so no position string ("params[3][1]") and no
// Status is built unless one is refused, and values are built in place.
Refusal Fill(const v1::Value& value, int depth, int max_depth, storage::Value* out,
             std::vector<int>* path) {
  using Kind = storage::Value::Kind;
  switch (value.kind_case()) {
    case v1::Value::kNullValue:
      out->kind = Kind::kNull;
      return Refusal::kNone;
    case v1::Value::kBoolValue:
      out->kind = Kind::kBool;
      out->bool_value = value.bool_value();
      return Refusal::kNone;
    case v1::Value::kInt64Value:
      out->kind = Kind::kInt64;
      out->int64_value = value.int64_value();
      return Refusal::kNone;
    case v1::Value::kDoubleValue:
      out->kind = Kind::kDouble;
      out->double_value = value.double_value();
      return Refusal::kNone;
    case v1::Value::kStringValue:
      out->kind = Kind::kString;
      out->text = value.string_value();
      return Refusal::kNone;
    case v1::Value::kBytesValue:
      out->kind = Kind::kBytes;
      out->text = value.bytes_value();
      return Refusal::kNone;
    case v1::Value::kNumericValue:
      out->kind = Kind::kNumeric;
      out->text = value.numeric_value();
      return Refusal::kNone;
    case v1::Value::kJsonValue:
      out->kind = Kind::kJson;
      out->text = value.json_value();
      return Refusal::kNone;
    case v1::Value::kArrayValue: {
      if (depth >= max_depth) return Refusal::kTooDeep;
      const auto& values = value.array_value().values();
      out->kind = Kind::kArray;
      out->elements.resize(static_cast<size_t>(values.size()));
      for (int i = 0; i < values.size(); ++i) {
        const Refusal refused =
            Fill(values.Get(i), depth + 1, max_depth, &out->elements[static_cast<size_t>(i)], path);
        if (refused != Refusal::kNone) {
          path->push_back(i);
          return refused;
        }
      }
      return Refusal::kNone;
    }
    case v1::Value::KIND_NOT_SET:
      break;
  }
  return Refusal::kNoValue;
}

// The INVALID_ARGUMENT for a refused value at `where` + `path`.
absl::Status Refused(Refusal refusal, absl::string_view where, const std::vector<int>& path,
                     int max_depth) {
  std::string at(where);
  for (auto it = path.rbegin(); it != path.rend(); ++it) absl::StrAppend(&at, "[", *it, "]");
  if (refusal == Refusal::kTooDeep) {
    if (max_depth >= kMaxArrayDepth) {
      return absl::InvalidArgumentError(absl::StrCat(at, ": arrays nest deeper than PostgreSQL's ",
                                                     kMaxArrayDepth, " dimensions"));
    }
    return absl::InvalidArgumentError(
        absl::StrCat(at, ": arrays nest deeper than ", max_depth,
                     " levels, this broker's limit (BROKER_MAX_ARRAY_DEPTH)"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat(at, " has no value set; use null_value for SQL NULL"));
}

}  // namespace

absl::StatusOr<storage::Value> ValueFromProto(const v1::Value& value, absl::string_view where,
                                              int max_array_depth) {
  max_array_depth = std::min(max_array_depth, kMaxArrayDepth);
  storage::Value out;
  std::vector<int> path;
  const Refusal refused = Fill(value, 0, max_array_depth, &out, &path);
  if (refused != Refusal::kNone) return Refused(refused, where, path, max_array_depth);
  return out;
}

absl::StatusOr<std::vector<storage::Value>> ParamsFromProto(
    const google::protobuf::RepeatedPtrField<v1::Value>& params, absl::string_view where_prefix,
    int max_array_depth) {
  max_array_depth = std::min(max_array_depth, kMaxArrayDepth);
  std::vector<storage::Value> out(static_cast<size_t>(params.size()));
  std::vector<int> path;
  for (int i = 0; i < params.size(); ++i) {
    const Refusal refused =
        Fill(params.Get(i), 0, max_array_depth, &out[static_cast<size_t>(i)], &path);
    if (refused != Refusal::kNone) {
      return Refused(refused, absl::StrCat(where_prefix, "params[", i, "]"), path, max_array_depth);
    }
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> ParamTypesFromProto(
    const google::protobuf::RepeatedPtrField<v1::Value>& params, absl::string_view where_prefix) {
  std::vector<std::string> out;
  for (int i = 0; i < params.size(); ++i) {
    const std::string& type = params.Get(i).type();
    if (type.empty()) continue;
    if (type.size() > kMaxParamTypeNameBytes || type.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          where_prefix, "params[", i, "].type: not a type name (at most ", kMaxParamTypeNameBytes,
          " bytes, no NUL); name a PostgreSQL type as SQL spells it, e.g. \"uuid\" or "
          "\"myschema.mood\""));
    }
    // Only when some parameter names a type: most statements name none.
    if (out.empty()) out.resize(static_cast<size_t>(params.size()));
    out[static_cast<size_t>(i)] = type;
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
