// Conversions between Value and PostgreSQL's text format, the format the broker
// uses on the wire in both directions:
//  - decoding: the text output of a result column whose type OID is known
//    becomes a typed Value (see docs/types.md for the table);
//  - encoding: a parameter Value becomes the text PostgreSQL accepts as input
//    for the type the parameter is sent as (ImpliedTypeOid, or the caller's
//    explicit type), or for an untyped parameter ($n whose type the server
//    infers from context).
// Also the built-in type names (both ways), the type a parameter is sent as,
// and the result-size accounting used for the result cap. No libpq here: pure functions over
// strings, thread-safe.
#ifndef SESSIONBROKER_SERVER_STORAGE_VALUE_TEXT_H_
#define SESSIONBROKER_SERVER_STORAGE_VALUE_TEXT_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/storage/value.h"

namespace sessionbroker::storage {

// OIDs of the built-in types that decode to something other than kString
// (pg_type.oid; fixed by PostgreSQL's catalog, the same on every server).
namespace type_oid {
inline constexpr uint32_t kBool = 16;
inline constexpr uint32_t kBytea = 17;
inline constexpr uint32_t kChar = 18;
inline constexpr uint32_t kName = 19;
inline constexpr uint32_t kInt8 = 20;
inline constexpr uint32_t kInt2 = 21;
inline constexpr uint32_t kInt4 = 23;
inline constexpr uint32_t kText = 25;
inline constexpr uint32_t kOid = 26;
inline constexpr uint32_t kJson = 114;
inline constexpr uint32_t kFloat4 = 700;
inline constexpr uint32_t kFloat8 = 701;
inline constexpr uint32_t kBoolArray = 1000;
inline constexpr uint32_t kByteaArray = 1001;
inline constexpr uint32_t kInt8Array = 1016;
inline constexpr uint32_t kFloat8Array = 1022;
inline constexpr uint32_t kNumericArray = 1231;
inline constexpr uint32_t kJsonbArray = 3807;
inline constexpr uint32_t kBpchar = 1042;
inline constexpr uint32_t kVarchar = 1043;
inline constexpr uint32_t kNumeric = 1700;
inline constexpr uint32_t kJsonb = 3802;
}  // namespace type_oid

// pg_type.typname of a built-in type ("int4", "_text", "timestamptz"), or an
// empty view if this table does not know the OID (user-defined types, enums,
// domains' arrays, extension types: the adapter asks the server for those).
absl::string_view TypeName(uint32_t type_oid);

// The OID of the built-in type `name` spells as SQL or pg_type does: a
// pg_type.typname ("int4", "timestamptz", "_int4"), a standard SQL spelling
// ("integer", "double precision", "timestamp with time zone", "character
// varying"), either followed by "[]" (or "[n]", any number of times) for its
// array type. Case and runs of spaces do not matter, a type modifier
// ("varchar(20)", "numeric(10,2)") is ignored (parameters have none). 0 for
// anything else: quoted or schema-qualified names, enums, domains, extension
// types, which the adapter asks the server about (to_regtype).
uint32_t BuiltinTypeOid(absl::string_view name);

// The type a parameter is sent as when the caller names none (0: untyped,
// the server infers it): bool 16, int8 20, float8 701, bytea 17, numeric
// 1700, jsonb 3802 for those kinds; for an array, the array type of its
// elements' kind (int8[] 1016, float8[] 1022, bool[] 1000, bytea[] 1001,
// numeric[] 1231, jsonb[] 3807) when all its non-NULL elements, at any depth,
// are of that one kind; 0 for null, string, arrays of strings, of mixed
// kinds or of NULLs only (an empty array too).
uint32_t ImpliedTypeOid(const Value& value);

// The element type of a built-in array type (1007 int4[] -> 23), or 0 if
// `type_oid` is not a built-in array type.
uint32_t ArrayElementType(uint32_t type_oid);

// Decodes the text output of one non-NULL value of type `type_oid`: built-in
// arrays become kArray, everything else is decoded by ScalarFromText. INTERNAL
// if the text is not what the server prints for that type.
absl::StatusOr<Value> ValueFromText(uint32_t type_oid, absl::string_view text);

// Decodes one non-NULL value as a scalar of type `type_oid`: bool, the integer
// types and oid, float4/float8, numeric, the string types, bytea (hex or the
// legacy escape format) and json/jsonb get their own kinds; any other type
// (including unknown OIDs) becomes kString holding the server's text.
absl::StatusOr<Value> ScalarFromText(uint32_t type_oid, absl::string_view text);

// Decodes an array value ("{1,2,NULL}", "{{a,b},{c,d}}", "[0:1]={x,y}", "{}")
// whose elements have type `element_oid`: kArray of elements decoded by
// ScalarFromText, NULL elements as Null, one nested kArray per extra
// dimension (dimension bounds are dropped). Works for arrays of any element
// type, so the adapter can use it for arrays of user-defined types too.
absl::StatusOr<Value> ArrayFromText(uint32_t element_oid, absl::string_view text);

// The text to send for `value` as an untyped text-format parameter, or nullopt
// for Null (sent as SQL NULL). bool "true"/"false"; int64 decimal; double the
// shortest text that round-trips ("NaN", "Infinity", "-Infinity"); string,
// numeric and json as they are; bytes as bytea hex ("\x0aff"); arrays as an
// array literal with every element double-quoted. INVALID_ARGUMENT for a value
// PostgreSQL cannot receive as text: a NUL byte in a string, numeric or json
// (send binary data as bytes), or an unknown kind.
absl::StatusOr<std::optional<std::string>> ParameterText(const Value& value);

// Result-size accounting for ExecuteOptions::max_result_bytes. Each figure is
// an upper bound of what its part takes in the serialized response
// (protobuf): a length-delimited field costs at most 6 bytes of framing (a
// one-byte tag and a length varint of at most 5 bytes, protobuf messages being
// under 2 GiB) and a varint at most 10 bytes. So a result that passes the cap
// here never exceeds it on the wire, and one that would is refused while it is
// converted, before a batch commits. Summing a few integers per row and per
// value keeps the count cheap.

// One value, or one element of an array: its entry in a Row or ArrayValue and
// its oneof field (12 bytes of framing at most), with room for an int64's
// varint (up to 10 bytes, counted as 8 of payload).
inline constexpr size_t kResultCellOverheadBytes = 16;
// One row's entry in the response (6 bytes at most): a row without columns
// still costs this much.
inline constexpr size_t kResultRowOverheadBytes = 8;
// One column's entry, the framing of its name and type name, and its type OID
// (24 bytes at most), on top of the name and type name themselves.
inline constexpr size_t kResultColumnOverheadBytes = 32;
// One result's entry in a batch response, its rows_affected and the framing of
// its command tag (23 bytes at most), on top of the command tag itself.
inline constexpr size_t kResultOverheadBytes = 32;

// What one value costs: its payload (1 byte for bool, 8 for int64 and double,
// the text length for the string-like kinds, the sum of the elements for
// arrays) plus kResultCellOverheadBytes for the value itself and for every
// array element.
size_t ResultBytes(const Value& value);

// What a result costs apart from its rows (which it ignores):
// kResultOverheadBytes plus its command tag, and for each column
// kResultColumnOverheadBytes plus its name and type name.
size_t ResultHeaderBytes(const QueryResult& result);

}  // namespace sessionbroker::storage

#endif  // SESSIONBROKER_SERVER_STORAGE_VALUE_TEXT_H_
