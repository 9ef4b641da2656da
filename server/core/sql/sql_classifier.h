// A small SQL lexer that tells the broker what a statement is before it
// reaches the database: how many $n placeholders it uses, whether it is empty,
// whether it controls transactions, and whether it may leave session-level
// state behind on the connection (see docs/design.md, "No state leaks").
//
// It understands comments (-- and nested /* */), quoted identifiers (also
// U&"..."), string literals ('...', E'...' with backslash escapes, U&'...',
// N'...', B'...', X'...'), dollar-quoted strings ($$...$$, $tag$...$tag$), so
// placeholders, semicolons and keywords inside them are ignored. Standard
// strings follow standard_conforming_strings = on (the default): a backslash
// in '...' is an ordinary character. An unterminated literal or comment runs
// to the end of the text (PostgreSQL will report the syntax error).
//
// It is not a parser: it looks at keywords and names, and errs on the side of
// reporting session state (a false positive costs a connection reset; a false
// negative leaks state to the next caller). It cannot see inside function
// bodies, DO blocks or called user functions.
// Pure functions; thread-safe.
#ifndef SESSIONBROKER_SERVER_CORE_SQL_SQL_CLASSIFIER_H_
#define SESSIONBROKER_SERVER_CORE_SQL_SQL_CLASSIFIER_H_

#include <string>

#include "absl/strings/string_view.h"

namespace sessionbroker::core {

struct SqlInfo {
  // No tokens at all (only whitespace, comments and semicolons).
  bool empty = true;
  // More than one non-empty statement: a `;` followed by further tokens.
  // Empty statements do not count (`SELECT 1;;`, `;SELECT 1 -- x` are one
  // statement). Every `;` outside literals and comments separates statements,
  // even inside parentheses or a BEGIN ATOMIC body, so CREATE RULE ... DO
  // (a; b) and SQL-standard function bodies are reported as multiple.
  bool multiple_statements = false;
  // The highest n among $n placeholders (0 if none), saturating at INT_MAX.
  // `$` inside an identifier is not a placeholder (`a$1` is one name).
  int max_placeholder = 0;
  // The first word of the first statement, upper-cased ("SELECT", "BEGIN",
  // "WITH", ...). Leading `(` are skipped (`(SELECT 1)` gives "SELECT").
  // Empty if there are no tokens or the statement starts with something other
  // than an unquoted word (a quoted identifier, a literal, ...).
  std::string first_keyword;
  // Some statement (not only the first) starts with BEGIN, START, COMMIT,
  // END, ROLLBACK, ABORT, SAVEPOINT, RELEASE, or is PREPARE TRANSACTION 'gid'
  // (COMMIT PREPARED and ROLLBACK PREPARED start with COMMIT/ROLLBACK).
  bool transaction_control = false;
  // Some statement may change state that outlives it on the connection:
  // - statements starting with SET (including SET SESSION ...; but not SET
  //   LOCAL, SET TRANSACTION or SET CONSTRAINTS, which are transaction-scoped;
  //   `SET local.x = 1` sets a variable named local.x and does count), RESET,
  //   PREPARE (but not PREPARE TRANSACTION 'gid'), DEALLOCATE, LISTEN,
  //   UNLISTEN, DECLARE, DISCARD, LOAD, and DO and CALL (whose code the lexer
  //   cannot see into);
  // - the keyword TEMP/TEMPORARY anywhere outside literals, comments and
  //   quoted identifiers (so a column named temp is a false positive);
  // - any name, quoted or not, that starts with pg_temp (pg_temp.t,
  //   pg_temp_3.t) or is pg_settings (its UPDATE rule runs a SET),
  //   set_config, setseed, pg_advisory_lock, pg_advisory_lock_shared,
  //   pg_try_advisory_lock, pg_try_advisory_lock_shared, dblink_connect,
  //   dblink_connect_u, lo_open (schema-qualified or not, called or merely
  //   named).
  // Transaction-scoped variants (pg_advisory_xact_lock, SET LOCAL) are not
  // session state. Keywords and names compare case-insensitively.
  bool changes_session_state = false;
  // The text is one savepoint statement: SAVEPOINT name, RELEASE [SAVEPOINT]
  // name, or ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name (these also
  // count as transaction_control). kNone for anything else, also when the
  // statement is followed by another or by tokens after the name.
  enum class Savepoint { kNone, kSavepoint, kRelease, kRollbackTo };
  Savepoint savepoint = Savepoint::kNone;
  // With `savepoint`: the name as PostgreSQL compares it: an unquoted name
  // lower-cased (ASCII), a quoted one as written ("" unescaped), both cut to
  // 63 bytes (NAMEDATALEN - 1) at a UTF-8 character boundary.
  std::string savepoint_name;
  // A COPY ... FROM STDIN / TO STDOUT: it streams data over the connection's
  // copy sub-protocol, which the broker does not offer.
  bool copy_stdio = false;
};

SqlInfo ClassifySql(absl::string_view sql);

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_SQL_SQL_CLASSIFIER_H_
