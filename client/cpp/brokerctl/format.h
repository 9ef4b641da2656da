// Output formatting of brokerctl: query results as psql-style aligned tables,
// CSV or JSON, values in PostgreSQL's text forms, terminal display widths of
// UTF-8 text, and the error report printed for a failed call. Pure functions
// over the generated sessionbroker.v1 messages; thread-safe.
#ifndef SESSIONBROKER_CLIENT_CPP_BROKERCTL_FORMAT_H_
#define SESSIONBROKER_CLIENT_CPP_BROKERCTL_FORMAT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "sessionbroker/v1/broker.pb.h"

namespace brokerctl {

enum class OutputFormat { kTable, kCsv, kJson };

// The columns a terminal uses to show `utf8`: 2 for East Asian wide and
// emoji code points, 0 for combining marks, 1 for the rest. Locale-free, so
// tables line up the same in every environment. Invalid bytes count 1 each.
int DisplayWidth(std::string_view utf8);

// The longest prefix of `utf8` that fits in `width` display columns, cut
// between code points.
std::string TruncateToWidth(std::string_view utf8, int width);

// `text` broken into lines of at most `width` display columns at spaces
// (a longer word stays whole), each line after `indent`, each ending "\n".
std::string WrapText(std::string_view text, int width, const std::string& indent);

// A value in PostgreSQL's text output form, as psql shows it: bool "t"/"f",
// bytea "\x..." hex, arrays "{1,2,NULL}" with elements quoted as PostgreSQL
// quotes them, float8 shortest round-trip ("Infinity", "NaN"). nullopt for
// SQL NULL (and for a Value with no case set).
std::optional<std::string> ValueText(const sessionbroker::v1::Value& value);

// A value as a JSON literal: null, true/false, integers and float8 as
// numbers (non-finite float8 as the strings "Infinity", "-Infinity", "NaN"),
// numeric as a string (exact: JSON readers parse numbers into doubles), json
// and jsonb as the embedded document, bytea as its "\x..." text, arrays as
// JSON arrays, everything else as a string.
std::string ValueJson(const sessionbroker::v1::Value& value);

// Escapes `text` as the contents of a JSON string (without the quotes).
std::string JsonEscape(std::string_view text);

// psql's aligned format: a centred header, a rule, text columns left- and
// number columns right-aligned, "|" between them, NULL as an empty cell,
// then "(N rows)". Newlines and other control characters inside a value are
// shown escaped ("\n", "\t", "\x01") so that each row stays on one line. A
// response without columns (INSERT, DDL) prints its command tag alone.
std::string FormatTable(const sessionbroker::v1::ExecuteResponse& response);

// RFC 4180 CSV with a header line of column names: a field is quoted when it
// holds a comma, a quote, CR or LF, or is the empty string; NULL is an
// unquoted empty field (as COPY ... CSV writes it). Lines end with "\n". A
// response without columns prints nothing.
std::string FormatCsv(const sessionbroker::v1::ExecuteResponse& response);

// The pieces of FormatCsv, for results printed as they stream
// (stream_format.h): the header line (nothing without columns), one row.
std::string CsvHeader(const google::protobuf::RepeatedPtrField<sessionbroker::v1::Column>& columns);
std::string CsvRow(const sessionbroker::v1::Row& row, int ncols);

// One JSON object on one line, then "\n":
// {"columns":[{"name":"id","type":"int4"},...],"rows":[[1,"a"],...],
//  "command":"SELECT 2","rows_affected":2}
// (rows are arrays in column order, so repeated column names are kept; the
// command tag comes last because a streamed result knows it last).
std::string FormatJson(const sessionbroker::v1::ExecuteResponse& response);
// Its pieces: up to the rows' "[", one row, and from the rows' "]" on.
std::string JsonOpening(
    const google::protobuf::RepeatedPtrField<sessionbroker::v1::Column>& columns);
std::string JsonRow(const sessionbroker::v1::Row& row);
std::string JsonClosing(const std::string& command_tag, int64_t rows_affected);

std::string FormatResult(const sessionbroker::v1::ExecuteResponse& response, OutputFormat format);

// What brokerctl prints to stderr when a call fails. Every field but
// grpc_code and message may be empty.
struct ErrorReport {
  std::string grpc_code;  // "ALREADY_EXISTS"
  std::string message;    // the status message
  std::string sqlstate;
  std::string severity;  // "ERROR", "FATAL"
  std::string primary;   // PostgreSQL's primary message (SqlErrorDetail.message)
  std::string detail;
  std::string hint;
  uint32_t position = 0;
  std::string reason;  // the "sessionbroker-reason" token
};

// psql's layout plus the gRPC code:
//   ERROR:  duplicate key value violates unique constraint "t_pkey"
//   DETAIL:  Key (id)=(1) already exists.
//   HINT:  ...
//   SQLSTATE:  23505
//   gRPC status:  ALREADY_EXISTS (reason ...)
// Without a SQL error (a broker error): "error: CODE: message".
std::string FormatError(const ErrorReport& report);

}  // namespace brokerctl

#endif  // SESSIONBROKER_CLIENT_CPP_BROKERCTL_FORMAT_H_
