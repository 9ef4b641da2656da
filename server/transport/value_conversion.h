// Conversion between the wire types (sessionbroker.v1 protos) and the domain
// types the core and storage use. Pure functions; thread-safe.
#ifndef SESSIONBROKER_SERVER_TRANSPORT_VALUE_CONVERSION_H_
#define SESSIONBROKER_SERVER_TRANSPORT_VALUE_CONVERSION_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "server/storage/value.h"
#include "sessionbroker/v1/broker.pb.h"

namespace sessionbroker::transport {

// PostgreSQL arrays have at most 6 dimensions (MAXDIM); the operator's
// BROKER_MAX_ARRAY_DEPTH may lower it.
inline constexpr int kMaxArrayDepth = 6;

// INVALID_ARGUMENT, naming `where` (e.g. "params[2]"), when a value has no
// case set or arrays nest deeper than `max_array_depth` (at most
// kMaxArrayDepth) levels.
absl::StatusOr<storage::Value> ValueFromProto(const v1::Value& value, absl::string_view where,
                                              int max_array_depth = kMaxArrayDepth);

// `where_prefix` is prepended to each parameter's position (e.g.
// "statements[1].").
absl::StatusOr<std::vector<storage::Value>> ParamsFromProto(
    const google::protobuf::RepeatedPtrField<v1::Value>& params, absl::string_view where_prefix,
    int max_array_depth = kMaxArrayDepth);

// The longest Value.type accepted: a schema-qualified name of two
// PostgreSQL identifiers (63 bytes each) with room for quotes, a type
// modifier and array brackets.
inline constexpr size_t kMaxParamTypeNameBytes = 256;

// The parameters' `type` fields (storage::Statement::param_types): empty if
// no parameter sets one. INVALID_ARGUMENT, naming the parameter, for a name
// longer than kMaxParamTypeNameBytes or holding a NUL.
absl::StatusOr<std::vector<std::string>> ParamTypesFromProto(
    const google::protobuf::RepeatedPtrField<v1::Value>& params, absl::string_view where_prefix);

// Moves the value's strings into the proto.
void ValueToProto(storage::Value&& value, v1::Value* out);
void ResultToProto(storage::QueryResult&& result, v1::ExecuteResponse* out);

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_VALUE_CONVERSION_H_
