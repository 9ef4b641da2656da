// What libpq reports about a failed statement or connection, read into the
// SQLSTATE, one readable line and the error's fields, and from there
// (sql_error.h) into an absl::Status. Two sources, one result:
//  - the error text (PQerrorMessage, PQresultErrorMessage), which carries
//    the SQLSTATE only in verbose mode (PQERRORS_VERBOSE): all there is for
//    a failed connection attempt or a connection lost without a result;
//  - the structured fields of a PGresult (PQresultErrorField), for a
//    connection on libpq itself.
// Either way the message is the primary message, then "; DETAIL: ..." and
// "; HINT: ..." when the server sent them; the fields (SqlErrorFields: also
// severity, position, schema, table, column, data type and constraint) travel
// as the status's payload. Context and location are for server developers
// and stay out. The error text has no position (libpq renders it as a
// statement excerpt with a caret), so errors read from text have none.
//
// Pure functions, no libpq needed to call them; thread-safe.
#ifndef SESSIONBROKER_SERVER_STORAGE_PQ_ERROR_H_
#define SESSIONBROKER_SERVER_STORAGE_PQ_ERROR_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/storage/sql_error.h"

namespace sessionbroker::storage {

struct PqError {
  std::string sqlstate;  // five characters; empty if libpq gave none (its own errors)
  std::string message;   // one line
  // What the server reported; fields.sqlstate is ignored (sqlstate above is
  // the one ToStatus uses).
  SqlErrorFields fields;
};

// Reads libpq's error text. Verbose text is
//   ERROR:  23505: duplicate key value violates unique constraint "t_pkey"
//   DETAIL:  Key (id)=(1) already exists.
//   SCHEMA NAME:  public
//   TABLE NAME:  t
//   CONSTRAINT NAME:  t_pkey
//   LOCATION:  _bt_check_unique, nbtinsert.c:664
// (also COLUMN NAME and DATATYPE NAME) and a field may continue on following
// lines; LINE/caret lines (the statement excerpt) are dropped. Text without a
// severity prefix (libpq's own messages) is kept whole, its lines joined.
PqError ParseErrorText(absl::string_view text);

// The fields of an error result as PQresultErrorField returns them
// (PG_DIAG_SQLSTATE, PG_DIAG_SEVERITY_NONLOCALIZED, PG_DIAG_MESSAGE_PRIMARY,
// PG_DIAG_MESSAGE_DETAIL, PG_DIAG_MESSAGE_HINT, PG_DIAG_STATEMENT_POSITION,
// PG_DIAG_SCHEMA_NAME, PG_DIAG_TABLE_NAME, PG_DIAG_COLUMN_NAME,
// PG_DIAG_DATATYPE_NAME, PG_DIAG_CONSTRAINT_NAME); empty for a field the
// server did not send.
struct PqErrorFields {
  absl::string_view sqlstate;
  absl::string_view severity;
  absl::string_view primary;
  absl::string_view detail;
  absl::string_view hint;
  absl::string_view position;  // decimal
  absl::string_view schema_name;
  absl::string_view table_name;
  absl::string_view column_name;
  absl::string_view data_type_name;
  absl::string_view constraint_name;
};
PqError FromErrorFields(const PqErrorFields& fields);

// SqlError(error.fields, error.message) with fields.sqlstate =
// error.sqlstate: the status code the SQLSTATE maps to, the SQLSTATE and the
// fields as payloads; UNKNOWN without a SQLSTATE (and without fields).
absl::Status ToStatus(const PqError& error);

// Whether an error says only that the connection's prepared copy of a
// statement is stale, the SQL itself being fine: 26000 (the prepared
// statement is gone) or 0A000 "cached plan must not change result type" (a
// table or view it reads changed shape).
bool IsStalePreparedStatement(absl::string_view sqlstate, absl::string_view message);

// Whether a failed connection attempt's message says the server has no
// connection slot left for it: PostgreSQL's 53300 refusals ("sorry, too many
// clients already", "remaining connection slots are reserved ...", "too
// many connections for role/database ...") and Supavisor's session-mode
// "max clients reached". libpq reports startup errors as text only, without
// the SQLSTATE, so the (English) text is what there is to go by; a server
// whose lc_messages is another language is not recognized (the connect then
// fails as unreachable).
bool IsOutOfConnectionSlots(absl::string_view message);

}  // namespace sessionbroker::storage

#endif  // SESSIONBROKER_SERVER_STORAGE_PQ_ERROR_H_
