// Tells the broker what a statement is before it reaches the database: how
// many $n placeholders it uses, whether it is empty, whether it controls
// transactions, what kinds of statement it holds, whether it changes the
// role, and whether it provably leaves no session state behind on the
// connection (see docs/design.md, "No state leaks between callers", and
// docs/security.md, "State isolation").
//
// It parses with PostgreSQL's own grammar (libpg_query, the server's parser
// compiled as a library, version 15), so identifiers are compared as
// PostgreSQL resolves them (U&"set\005fconfig" is set_config), and string
// literals, comments and dollar quotes never hide or fake anything. What it
// cannot see (the body of a user function, a view, a trigger, a DO block) is
// treated as possibly leaving state: `leaves_no_state` holds only when it is
// provable from the text alone.
//
// Text that does not parse is not refused here (PostgreSQL reports the syntax
// error with its SQLSTATE): it gets `parsed == false`, statement boundaries
// from PostgreSQL's scanner, and counts as not provably stateless.
//
// Pure function; thread-safe (libpg_query keeps its memory contexts in
// thread-local storage, so concurrent calls on different threads do not
// share state). Recent texts' answers are kept (bounded, under a mutex), so a
// statement sent again is not parsed again.
#ifndef SESSIONBROKER_SERVER_CORE_SQL_SQL_CLASSIFIER_H_
#define SESSIONBROKER_SERVER_CORE_SQL_SQL_CLASSIFIER_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace sessionbroker::core {

// What a SELECT's (or a simple INSERT, UPDATE or DELETE's) proof of
// statelessness depends on beyond its text: the catalog objects that its
// names resolve to. Each list is sorted and has no duplicates. CatalogGuard
// (catalog_guard.h) decides from the catalog whether they run no user code.
struct CatalogDependencies {
  // The relations read, as PostgreSQL identifiers always double-quoted
  // ("public"."t", or "t" when written without a schema), ready for
  // to_regclass, which resolves them with the connection's search_path. A
  // written relation is listed here too (it is read as well).
  std::vector<std::string> relations;
  // The relation written (INSERT, UPDATE or DELETE target), spelled as in
  // `relations`; empty for reads. Writing runs more of the table's code than
  // reading it does (triggers, defaults, constraints, index expressions):
  // the guard checks those for these relations.
  std::vector<std::string> written;
  // Operator names used without OPERATOR(pg_catalog.op), including the ones
  // IN, LIKE, BETWEEN, CASE x WHEN, NULLIF, IS DISTINCT FROM, JOIN ... USING
  // and NATURAL JOIN imply ("=", "<>", "~~", ...). The schema, if written,
  // is dropped: any operator of that name outside the built-ins counts.
  std::vector<std::string> operators;
  // Allow-listed built-in function names called with arguments but without
  // the pg_catalog schema: a user function of the same name could win.
  std::vector<std::string> functions;
  // Types cast to that are not known pg_catalog types, as double-quoted
  // identifiers for to_regtype.
  std::vector<std::string> types;

  bool operator==(const CatalogDependencies& other) const {
    return relations == other.relations && written == other.written &&
           operators == other.operators && functions == other.functions && types == other.types;
  }
};

struct SqlInfo {
  // No statement at all (only whitespace, comments and semicolons).
  bool empty = true;
  // More than one non-empty statement (`SELECT 1;;` is one). Semicolons
  // inside a statement's own syntax (CREATE RULE ... DO (a; b), a BEGIN
  // ATOMIC body) do not separate statements.
  bool multiple_statements = false;
  // The highest n among $n placeholders (0 if none). 0 when the text does not
  // parse: the caller then leaves the count to PostgreSQL, which reports the
  // syntax error before it looks at parameters.
  int max_placeholder = 0;
  // The first word of the first statement, upper-cased ("SELECT", "BEGIN",
  // "WITH", ...), for messages. Leading `(` are skipped. Empty if the text
  // starts with something other than an unquoted word.
  std::string first_keyword;
  // Some statement is BEGIN, START TRANSACTION, COMMIT, END, ROLLBACK, ABORT,
  // SAVEPOINT, RELEASE, ROLLBACK TO, PREPARE TRANSACTION, COMMIT PREPARED or
  // ROLLBACK PREPARED.
  bool transaction_control = false;
  // Some statement visibly changes state that outlives it on the connection:
  // SET and RESET (not SET LOCAL, SET TRANSACTION or SET CONSTRAINTS, which
  // are transaction-scoped; SET SESSION CHARACTERISTICS is session state),
  // PREPARE, EXECUTE, DEALLOCATE, LISTEN, UNLISTEN, DECLARE, FETCH, CLOSE,
  // DISCARD, LOAD, DO, CALL, a temporary object (CREATE TEMP ..., SELECT INTO
  // TEMP, anything in a pg_temp schema), DML on pg_settings (its rule runs a
  // SET), and calls of built-ins known to keep session state (set_config,
  // setseed, session-level advisory locks, lo_open, dblink_connect, and the
  // built-ins that run SQL text: query_to_xml and its family, ts_stat,
  // ts_rewrite). Used to refuse such statements in read-only sessions and to
  // keep them out of the prepared-statement cache. This is what can be seen;
  // whether a reset is needed is `leaves_no_state`.
  bool changes_session_state = false;
  // Every statement provably leaves no session state behind, so the
  // connection needs no reset afterwards. True only for SELECT, VALUES, SHOW
  // and EXPLAIN (without ANALYZE) whose every function call is in an
  // allow-list of pg_catalog built-ins that cannot change session state
  // (called as pg_catalog.f(...), or unqualified without arguments: a user
  // overload with other argument types would win over the built-in), whose
  // every operator is written OPERATOR(pg_catalog.op) (so no IN, LIKE,
  // BETWEEN or CASE x WHEN either: they name operators too), whose every
  // type cast names a pg_catalog type, that read no relation other than an allow-listed
  // pg_catalog catalog or view, that have no SELECT INTO and no locking
  // clause. Any other relation could run user code (a view calling
  // set_config, a rule, a row-level security policy), so INSERT, UPDATE,
  // DELETE and reads of user tables are never provably stateless from the
  // text alone (see `stateless_if`). SAVEPOINT,
  // RELEASE and ROLLBACK TO are (they end with their transaction).
  // True for empty text (nothing runs).
  bool leaves_no_state = true;
  // Set only when `leaves_no_state` is false for no other reason than names
  // the catalog resolves: one SELECT (no locking clause, no INTO, no
  // data-modifying WITH, nothing visibly stateful), or one INSERT ... VALUES /
  // INSERT ... SELECT, UPDATE ... SET ... [FROM ...] [WHERE ...] or DELETE
  // [USING ...] [WHERE ...] with optional RETURNING, no WITH, no ON CONFLICT,
  // no OVERRIDING, no WHERE CURRENT OF and a target outside pg_catalog (its
  // expressions under the SELECT rules; the target in `written`), whose relations,
  // unqualified operators, unqualified function calls with arguments
  // (of allow-listed built-in names) and casts to types outside the known
  // pg_catalog ones are listed here. The statement leaves no state if every
  // one of them resolves to something that runs no user code
  // (CatalogGuard). Unset for everything else, which needs the reset
  // whatever the catalog holds.
  std::optional<CatalogDependencies> stateless_if;
  // One lower-case kind per statement, in order: select, insert, update,
  // delete, merge, ddl, transaction, set, copy, call, do, explain, show,
  // lock, maintenance, listen, prepare, other. SELECT INTO (it creates a
  // table) and TRUNCATE are ddl; SET, RESET and SET CONSTRAINTS are set;
  // LISTEN, UNLISTEN and NOTIFY are listen; PREPARE, EXECUTE and DEALLOCATE
  // are prepare; VACUUM, ANALYZE, CLUSTER, REINDEX, CHECKPOINT and REFRESH
  // MATERIALIZED VIEW are maintenance; EXPLAIN is explain whatever it
  // explains. Text that does not parse gives {"other"}.
  std::vector<std::string> statement_kinds;
  // Some statement may change the current or session role: SET [LOCAL] ROLE,
  // RESET ROLE, SET/RESET SESSION AUTHORIZATION, RESET ALL, DISCARD ALL,
  // set_config whose first argument is 'role' or 'session_authorization' (any
  // case) or not a literal, DML on pg_settings, a DO block (its body is not
  // followed), and a SQL-running built-in (query_to_xml, ts_stat, ...) whose
  // SQL text is not a literal or itself changes the role. A user function
  // that does it internally is not seen: the reset after the call restores
  // the role.
  bool changes_role = false;
  // The text parsed. When false, the boundaries above come from PostgreSQL's
  // scanner and `parse_error` says what the parser reported.
  bool parsed = true;
  std::string parse_error;
  // The text is one savepoint statement: SAVEPOINT name, RELEASE [SAVEPOINT]
  // name, or ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name (these also
  // count as transaction_control). kNone for anything else, also when the
  // statement is followed by another.
  enum class Savepoint { kNone, kSavepoint, kRelease, kRollbackTo };
  Savepoint savepoint = Savepoint::kNone;
  // With `savepoint`: the name as PostgreSQL compares it (unquoted names
  // lower-cased, cut to 63 bytes at a character boundary), as the parser
  // gives it.
  std::string savepoint_name;
  // A COPY ... FROM STDIN / TO STDOUT: it streams data over the connection's
  // copy sub-protocol, which the broker does not offer.
  bool copy_stdio = false;
};

SqlInfo ClassifySql(absl::string_view sql);

// The names of the pg_catalog built-in functions the classifier lets a
// provable statement call (they read or compute and keep nothing on the
// session), plus the built-in cast functions of the common types. The guard
// holds the expressions a write runs from the catalog (column defaults,
// check constraints, index expressions) to the same list: PostgreSQL records
// no dependency on built-ins, so their calls are read from the expression.
const std::vector<std::string>& StatelessBuiltinFunctionNames();

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_SQL_SQL_CLASSIFIER_H_
