// What libpq reports about a failed statement or connection, read into the
// SQLSTATE and one readable line, and from there (sql_error.h) into an
// absl::Status. Two sources, one result:
//  - the error text (PQerrorMessage, PQresultErrorMessage, or what libpqxx
//    puts in its exceptions), which carries the SQLSTATE only in verbose mode
//    (PQERRORS_VERBOSE); libpqxx 6.4 gives nothing else;
//  - the structured fields of a PGresult (PQresultErrorField), for a
//    connection on libpq itself.
// Either way the message is the primary message, then "; DETAIL: ..." and
// "; HINT: ..." when the server sent them; the other fields (schema, table,
// context, location) are for server developers and stay out.
//
// Pure functions, no libpq needed to call them; thread-safe.
#ifndef SESSIONBROKER_SERVER_STORAGE_PQ_ERROR_H_
#define SESSIONBROKER_SERVER_STORAGE_PQ_ERROR_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace sessionbroker::storage {

struct PqError {
  std::string sqlstate;  // five characters; empty if libpq gave none (its own errors)
  std::string message;   // one line
};

// Reads libpq's error text. Verbose text is
//   ERROR:  23505: duplicate key value violates unique constraint "t_pkey"
//   DETAIL:  Key (id)=(1) already exists.
//   SCHEMA NAME:  public
//   ...
//   LOCATION:  _bt_check_unique, nbtinsert.c:664
// and a field may continue on following lines; LINE/caret lines (the
// statement excerpt) are dropped. Text without a severity prefix (libpq's
// own messages) is kept whole, its lines joined.
PqError ParseErrorText(absl::string_view text);

// The fields of an error result as PQresultErrorField returns them
// (PG_DIAG_SQLSTATE, PG_DIAG_MESSAGE_PRIMARY, PG_DIAG_MESSAGE_DETAIL,
// PG_DIAG_MESSAGE_HINT); empty for a field the server did not send.
struct PqErrorFields {
  absl::string_view sqlstate;
  absl::string_view primary;
  absl::string_view detail;
  absl::string_view hint;
};
PqError FromErrorFields(const PqErrorFields& fields);

// SqlError(error.sqlstate, error.message): the status code the SQLSTATE
// maps to, the SQLSTATE as payload; UNKNOWN without a SQLSTATE.
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
