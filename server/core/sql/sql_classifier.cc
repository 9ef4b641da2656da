#include "server/core/sql/sql_classifier.h"

#include <pg_query.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "nlohmann/json.hpp"
#include "server/core/base/mutex.h"

namespace sessionbroker::core {
namespace {

using Json = nlohmann::json;
using NameSet = absl::flat_hash_set<absl::string_view>;

// Built-in functions (in pg_catalog) that read or compute and keep nothing on
// the session. A call of anything else (a user function, or a built-in that
// locks, seeds, sets, prepares or runs SQL) makes a statement not provably
// stateless. Kept short and obvious on purpose: a name missing here costs a
// reset, a wrong name here would be a leak.
const NameSet& StatelessFunctions() {
  static const NameSet* const kNames = new NameSet({
      // time
      "now",
      "clock_timestamp",
      "statement_timestamp",
      "transaction_timestamp",
      "timeofday",
      "date_trunc",
      "date_part",
      "date_bin",
      "extract",
      "age",
      "make_date",
      "make_time",
      "make_timestamp",
      "make_timestamptz",
      "make_interval",
      "to_timestamp",
      "to_date",
      "to_char",
      "to_number",
      "isfinite",
      "justify_days",
      "justify_hours",
      "justify_interval",
      // session and server facts (read only)
      "version",
      "current_setting",
      "current_database",
      "current_schema",
      "current_schemas",
      "pg_backend_pid",
      "pg_postmaster_start_time",
      "pg_conf_load_time",
      "pg_is_in_recovery",
      "txid_current",
      "pg_current_xact_id",
      "inet_server_addr",
      "inet_server_port",
      "inet_client_addr",
      "inet_client_port",
      "pg_typeof",
      "to_regclass",
      "to_regtype",
      "to_regproc",
      "to_regnamespace",
      "to_regrole",
      "format_type",
      "pg_sleep",
      "pg_sleep_for",
      "pg_size_pretty",
      "pg_database_size",
      "pg_relation_size",
      "pg_total_relation_size",
      "has_table_privilege",
      "has_schema_privilege",
      "has_database_privilege",
      "pg_has_role",
      "obj_description",
      "col_description",
      "pg_get_userbyid",
      // text
      "length",
      "char_length",
      "character_length",
      "octet_length",
      "bit_length",
      "lower",
      "upper",
      "initcap",
      "substr",
      "substring",
      "concat",
      "concat_ws",
      "format",
      "replace",
      "btrim",
      "ltrim",
      "rtrim",
      "trim",
      "lpad",
      "rpad",
      "left",
      "right",
      "position",
      "strpos",
      "split_part",
      "repeat",
      "reverse",
      "md5",
      "sha224",
      "sha256",
      "sha384",
      "sha512",
      "encode",
      "decode",
      "quote_ident",
      "quote_literal",
      "quote_nullable",
      "regexp_replace",
      "regexp_match",
      "regexp_matches",
      "regexp_split_to_array",
      "regexp_split_to_table",
      "starts_with",
      "string_to_array",
      "array_to_string",
      "ascii",
      "chr",
      "translate",
      "to_hex",
      "convert_from",
      "convert_to",
      // numbers
      "abs",
      "round",
      "ceil",
      "ceiling",
      "floor",
      "trunc",
      "mod",
      "power",
      "sqrt",
      "cbrt",
      "exp",
      "ln",
      "log",
      "sign",
      "div",
      "gcd",
      "lcm",
      "pi",
      "random",
      "width_bucket",
      "numeric",
      // uuids, arrays, json
      "gen_random_uuid",
      "array_length",
      "array_lower",
      "array_upper",
      "array_ndims",
      "array_dims",
      "array_append",
      "array_prepend",
      "array_cat",
      "array_position",
      "array_positions",
      "array_remove",
      "array_replace",
      "cardinality",
      "unnest",
      "generate_series",
      "generate_subscripts",
      "to_json",
      "to_jsonb",
      "row_to_json",
      "array_to_json",
      "json_build_object",
      "jsonb_build_object",
      "json_build_array",
      "jsonb_build_array",
      "json_object",
      "jsonb_object",
      "jsonb_set",
      "jsonb_insert",
      "jsonb_pretty",
      "jsonb_typeof",
      "json_typeof",
      "jsonb_strip_nulls",
      "json_strip_nulls",
      "json_array_elements",
      "jsonb_array_elements",
      "json_array_elements_text",
      "jsonb_array_elements_text",
      "json_each",
      "jsonb_each",
      "json_each_text",
      "jsonb_each_text",
      "json_object_keys",
      "jsonb_object_keys",
      "json_array_length",
      "jsonb_array_length",
      "jsonb_path_query",
      "jsonb_path_exists",
      "jsonb_path_match",
      "json_extract_path",
      "jsonb_extract_path",
      "json_extract_path_text",
      "jsonb_extract_path_text",
      "num_nulls",
      "num_nonnulls",
      // aggregates and window functions
      "count",
      "sum",
      "avg",
      "min",
      "max",
      "array_agg",
      "string_agg",
      "json_agg",
      "jsonb_agg",
      "json_object_agg",
      "jsonb_object_agg",
      "bool_and",
      "bool_or",
      "every",
      "bit_and",
      "bit_or",
      "stddev",
      "variance",
      "percentile_cont",
      "percentile_disc",
      "mode",
      "row_number",
      "rank",
      "dense_rank",
      "lag",
      "lead",
      "first_value",
      "last_value",
      "nth_value",
      "ntile",
      "cume_dist",
      "percent_rank",
  });
  return *kNames;
}

// Built-ins that keep state on the session (beyond the statement's own
// transaction) or run SQL text: visibly stateful, whatever else the
// statement does.
const NameSet& StatefulFunctions() {
  static const NameSet* const kNames = new NameSet({
      "set_config",
      "setseed",
      "pg_advisory_lock",
      "pg_advisory_lock_shared",
      "pg_try_advisory_lock",
      "pg_try_advisory_lock_shared",
      "dblink_connect",
      "dblink_connect_u",
      "lo_open",
      "query_to_xml",
      "query_to_xml_and_xmlschema",
      "query_to_xmlschema",
      "ts_stat",
      "ts_rewrite",
  });
  return *kNames;
}

// Types in pg_catalog whose casts run no user code, as written without a
// schema (the grammar already qualifies its keyword types: int, varchar,
// ...). pg_catalog comes first on the broker's search_path, so these names
// resolve there.
const NameSet& BuiltinTypes() {
  static const NameSet* const kNames = new NameSet({
      "text",    "varchar",   "bpchar",    "char",        "name",      "int2",      "int4",
      "int8",    "float4",    "float8",    "numeric",     "bool",      "bytea",     "date",
      "time",    "timetz",    "timestamp", "timestamptz", "interval",  "uuid",      "json",
      "jsonb",   "oid",       "regclass",  "regtype",     "regproc",   "inet",      "cidr",
      "macaddr", "money",     "bit",       "varbit",      "xml",       "tsvector",  "tsquery",
      "record",  "void",      "unknown",   "point",       "int4range", "int8range", "numrange",
      "tsrange", "tstzrange", "daterange", "jsonpath",
  });
  return *kNames;
}

// Catalogs and system views in pg_catalog a statement may read and still be
// provably stateless (non-superusers cannot put triggers, rules or policies
// on them). pg_settings only for reading: its UPDATE rule runs set_config.
const NameSet& StatelessRelations() {
  static const NameSet* const kNames = new NameSet({
      "pg_class",
      "pg_namespace",
      "pg_attribute",
      "pg_type",
      "pg_proc",
      "pg_database",
      "pg_roles",
      "pg_settings",
      "pg_stat_activity",
      "pg_locks",
      "pg_stat_database",
      "pg_tables",
      "pg_views",
      "pg_indexes",
      "pg_index",
      "pg_constraint",
      "pg_extension",
      "pg_stat_user_tables",
      "pg_prepared_statements",
      "pg_cursors",
      "pg_am",
      "pg_description",
  });
  return *kNames;
}

// Node types a provably stateless statement may contain. Any other node
// (DML, DDL, a locking clause, a node this list does not know) makes the
// statement need a reset.
const NameSet& StatelessNodes() {
  static const NameSet* const kNames = new NameSet({
      "TransactionStmt",  // only savepoints get this far (Classify)
      "SelectStmt",      "ResTarget",      "A_Const",
      "ParamRef",        "TypeCast",       "FuncCall",
      "A_Expr",          "BoolExpr",       "NullTest",
      "BooleanTest",     "CaseExpr",       "CaseWhen",
      "CoalesceExpr",    "MinMaxExpr",     "SQLValueFunction",
      "RowExpr",         "A_ArrayExpr",    "A_Indirection",
      "A_Indices",       "A_Star",         "ColumnRef",
      "String",          "Integer",        "Float",
      "Boolean",         "BitString",      "List",
      "SubLink",         "RangeSubselect", "RangeFunction",
      "Alias",           "SortBy",         "WithClause",
      "CommonTableExpr", "GroupingSet",    "WindowDef",
      "JoinExpr",        "RangeVar",       "NamedArgExpr",
      "GroupingFunc",    "ExplainStmt",    "VariableShowStmt",
      "DefElem",         "XmlExpr",        "XmlSerialize",
      "CollateClause",   "SetToDefault",  // DEFAULT in INSERT VALUES / UPDATE SET
  });
  return *kNames;
}

std::string Lower(absl::string_view s) { return absl::AsciiStrToLower(s); }

// The sval of a {"String": {"sval": ...}} node ("" for anything else).
std::string StringNode(const Json& node) {
  if (!node.is_object()) return "";
  const auto s = node.find("String");
  if (s == node.end() || !s->is_object()) return "";
  const auto v = s->find("sval");
  return v != s->end() && v->is_string() ? v->get<std::string>() : "";
}

// A qualified name as the parser gives it (funcname, TypeName.names,
// A_Expr.name): schema ("" if none) and the last part.
struct QualifiedName {
  std::string schema;
  std::string name;
  bool ok = false;  // one or two parts
};

QualifiedName NameOf(const Json& list) {
  QualifiedName out;
  if (!list.is_array() || list.empty() || list.size() > 2) return out;
  out.name = StringNode(list.back());
  if (list.size() == 2) out.schema = StringNode(list.front());
  out.ok = !out.name.empty();
  return out;
}

bool IsCatalogSchema(const std::string& schema) { return schema.empty() || schema == "pg_catalog"; }

// An identifier double-quoted as PostgreSQL reads it back unchanged.
std::string Quoted(const std::string& name) {
  std::string out = "\"";
  for (const char c : name) {
    out += c;
    if (c == '"') out += '"';
  }
  out += '"';
  return out;
}

std::string QuotedQualified(const std::string& schema, const std::string& name) {
  return schema.empty() ? Quoted(name) : Quoted(schema) + "." + Quoted(name);
}

// An operator's name made only of the characters PostgreSQL allows in one.
bool IsOperatorSymbol(const std::string& name) {
  return !name.empty() && name.find_first_not_of("+-*/<>=~!@#%^&|`?") == std::string::npos;
}

void SortUnique(std::vector<std::string>* names) {
  std::sort(names->begin(), names->end());
  names->erase(std::unique(names->begin(), names->end()), names->end());
}

// The string literal a node is ('text'), if it is one.
bool StringLiteral(const Json& node, std::string* out) {
  if (!node.is_object()) return false;
  const auto c = node.find("A_Const");
  if (c == node.end() || !c->is_object()) return false;
  const auto s = c->find("sval");
  if (s == c->end() || !s->is_object()) return false;
  const auto v = s->find("sval");
  *out = v != s->end() && v->is_string() ? v->get<std::string>() : "";
  return true;
}

std::string StrField(const Json& body, const char* key) {
  const auto it = body.find(key);
  return it != body.end() && it->is_string() ? it->get<std::string>() : "";
}

bool BoolField(const Json& body, const char* key) {
  const auto it = body.find(key);
  return it != body.end() && it->is_boolean() && it->get<bool>();
}

// Nested SQL text (query_to_xml('...')) is classified in turn, to this depth.
constexpr int kMaxNestedSql = 4;
// Levels of the parse tree's JSON the walk descends (a parenthesised
// expression costs about three).
constexpr int kMaxTreeDepth = 3000;

SqlInfo Classify(absl::string_view sql, int depth);

// Collects the facts of one parse tree.
class Walker {
 public:
  explicit Walker(int depth) : depth_(depth) {}

  int max_placeholder = 0;
  // Provably stateless from the text alone.
  bool provable = true;
  // Provably stateless once `needs` resolve to no user code (false: never).
  bool conditional = true;
  CatalogDependencies needs;
  bool changes_state = false;
  bool changes_role = false;

  // Not provable whatever the catalog holds.
  void Unprovable() {
    provable = false;
    conditional = false;
  }

  void Walk(const Json& value) {
    // Bounds the recursion (and so the stack) on deeply nested text. What
    // lies deeper is not looked at, so it counts as everything it could be.
    if (++level_ > kMaxTreeDepth) {
      Unprovable();
      changes_state = true;
      changes_role = true;
      --level_;
      return;
    }
    WalkValue(value);
    --level_;
  }

 private:
  void WalkValue(const Json& value) {
    if (value.is_array()) {
      for (const Json& item : value) Walk(item);
      return;
    }
    if (!value.is_object()) return;
    // The parser's JSON writes some nodes without their type wrapper (a
    // RangeVar under "relation", a TypeName under "typeName"): recognise
    // them by their fields.
    if (value.contains("relname")) Relation(value);
    if (value.contains("names") && value.contains("typemod")) Type(value);
    const auto with = value.find("withClause");
    if (with != value.end() && with->is_object()) {
      WalkWithScope(value, *with);
      return;
    }
    WalkChildren(value);
  }

  void WalkChildren(const Json& value, const Json* skip = nullptr) {
    for (const auto& [key, child] : value.items()) {
      if (skip != nullptr && &child == skip) continue;
      if (!key.empty() && std::isupper(static_cast<unsigned char>(key[0])) && child.is_object()) {
        Node(key, child);
      }
      Walk(child);
    }
  }

  // A statement with a WITH clause: an unqualified name in FROM may be one
  // of its common table expressions, which are not relations. A CTE's own
  // query sees the ones before it (all of them with RECURSIVE); the rest of
  // the statement sees all.
  void WalkWithScope(const Json& statement, const Json& with) {
    Node("WithClause", with);
    const size_t outer = ctes_.size();
    const Json ctes = with.value("ctes", Json::array());
    const bool recursive = BoolField(with, "recursive");
    if (recursive) {
      for (const Json& cte : ctes) ctes_.push_back(CteName(cte));
    }
    for (const Json& cte : ctes) {
      Walk(cte);
      if (!recursive) ctes_.push_back(CteName(cte));
    }
    WalkChildren(statement, &with);
    ctes_.resize(outer);
  }

  static std::string CteName(const Json& cte) {
    const auto body = cte.find("CommonTableExpr");
    return body != cte.end() && body->is_object() ? StrField(*body, "ctename") : "";
  }

  void Node(const std::string& type, const Json& body) {
    if (!StatelessNodes().contains(type)) Unprovable();
    if (type == "ParamRef") {
      const auto n = body.find("number");
      if (n != body.end() && n->is_number_integer()) {
        const int64_t number =
            std::clamp<int64_t>(n->get<int64_t>(), 0, static_cast<int64_t>(INT_MAX));
        max_placeholder = std::max(max_placeholder, static_cast<int>(number));
      }
    } else if (type == "FuncCall") {
      Function(body);
    } else if (type == "A_Expr") {
      // Operators are found by name and argument types on the search_path,
      // and a user operator with other argument types than pg_catalog's
      // (CREATE OPERATOR + (int4, text)) wins for those types wherever its
      // schema is: only OPERATOR(pg_catalog.op) is provably a built-in. The
      // same holds for the operators IN, LIKE, BETWEEN, IS DISTINCT FROM
      // and NULLIF use.
      OperatorNamed(body.value("name", Json()));
    } else if (type == "JoinExpr") {
      // USING and NATURAL compare the joined columns with `=`, by name.
      if (body.contains("usingClause") || BoolField(body, "isNatural")) NeedOperator("=");
    } else if (type == "SubLink") {
      if (body.contains("operName")) OperatorNamed(body["operName"]);
    } else if (type == "SortBy") {
      if (body.contains("useOp")) OperatorNamed(body["useOp"]);
    } else if (type == "CaseExpr") {
      if (body.contains("arg")) NeedOperator("=");  // CASE x WHEN ...: x = ... by name
    } else if (type == "SelectStmt") {
      if (body.contains("intoClause") || body.contains("lockingClause")) Unprovable();
    } else if (type == "ExplainStmt") {
      for (const Json& option : body.value("options", Json::array())) {
        if (option.is_object() && option.contains("DefElem") &&
            Lower(StrField(option["DefElem"], "defname")) == "analyze") {
          Unprovable();
        }
      }
    } else if (type == "InsertStmt" || type == "UpdateStmt" || type == "DeleteStmt" ||
               type == "MergeStmt") {
      DmlTarget(body);
    } else if (type == "VariableSetStmt") {
      VariableSet(body);
    } else if (type == "DiscardStmt") {
      changes_state = true;
      if (StrField(body, "target") == "DISCARD_ALL") changes_role = true;
    } else if (type == "PrepareStmt" || type == "ExecuteStmt" || type == "DeallocateStmt" ||
               type == "ListenStmt" || type == "UnlistenStmt" || type == "DeclareCursorStmt" ||
               type == "FetchStmt" || type == "ClosePortalStmt" || type == "LoadStmt" ||
               type == "CallStmt") {
      changes_state = true;
    } else if (type == "DoStmt") {
      changes_state = true;
      changes_role = true;  // its body is code the classifier does not follow
    }
  }

  // pg_settings' UPDATE rule runs set_config; any DML on it counts.
  void DmlTarget(const Json& body) {
    const Json relation = body.value("relation", Json());
    if (relation.is_object() && StrField(relation, "relname") == "pg_settings" &&
        IsCatalogSchema(StrField(relation, "schemaname"))) {
      changes_state = true;
      changes_role = true;
    }
  }

 public:
  // A top-level INSERT, UPDATE or DELETE (`type`): provable on the catalog's
  // word only in its simple forms, every part under the SELECT rules, its
  // target listed in needs.written. A clause outside the forms below (WITH,
  // ON CONFLICT, OVERRIDING, and any the parser may add) makes it
  // unprovable. DML nested anywhere else (a data-modifying WITH) reaches
  // Node() and is unprovable there.
  void WalkWrite(const std::string& type, const Json& body) {
    static const NameSet* const kInsert =
        new NameSet({"relation", "cols", "selectStmt", "returningList", "override"});
    static const NameSet* const kUpdate =
        new NameSet({"relation", "targetList", "whereClause", "fromClause", "returningList"});
    static const NameSet* const kDelete =
        new NameSet({"relation", "usingClause", "whereClause", "returningList"});
    const NameSet& allowed = type == "InsertStmt"   ? *kInsert
                             : type == "UpdateStmt" ? *kUpdate
                                                    : *kDelete;
    DmlTarget(body);
    for (const auto& [key, child] : body.items()) {
      if (!allowed.contains(key)) Unprovable();
    }
    if (StrField(body, "override") != "" && StrField(body, "override") != "OVERRIDING_NOT_SET") {
      Unprovable();
    }
    const Json relation = body.value("relation", Json());
    const std::string schema = StrField(relation, "schemaname");
    const std::string name = StrField(relation, "relname");
    // The catalogs (and anything PostgreSQL resolves in pg_catalog first)
    // are never a proved write's target; the guard also refuses built-in
    // relations by oid.
    if (!relation.is_object() || name.empty() || !StrField(relation, "catalogname").empty() ||
        schema == "pg_catalog" || schema == "information_schema" || schema == "pg_toast" ||
        (schema.empty() && absl::StartsWith(name, "pg_"))) {
      Unprovable();
    } else {
      needs.written.push_back(QuotedQualified(schema, name));
    }
    // The target (a RangeVar without its wrapper) lands in needs.relations
    // through the walk, like every relation read.
    for (const auto& [key, child] : body.items()) {
      if (key != "override") Walk(child);
    }
  }

 private:
  void VariableSet(const Json& body) {
    const std::string kind = StrField(body, "kind");
    const std::string name = StrField(body, "name");
    if (kind == "VAR_RESET_ALL" || name == "role" || name == "session_authorization") {
      changes_role = true;
    }
    const bool transaction_scoped =
        BoolField(body, "is_local") ||
        (kind == "VAR_SET_MULTI" && absl::StartsWith(name, "TRANSACTION"));
    if (!transaction_scoped) changes_state = true;
  }

  void Relation(const Json& rel) {
    const std::string schema = StrField(rel, "schemaname");
    const std::string name = StrField(rel, "relname");
    if (StrField(rel, "relpersistence") == "t" || absl::StartsWith(schema, "pg_temp")) {
      changes_state = true;
      Unprovable();
      return;
    }
    if (schema.empty() && std::find(ctes_.begin(), ctes_.end(), name) != ctes_.end()) return;
    if (IsCatalogSchema(schema) && StatelessRelations().contains(name)) return;
    provable = false;
    // database.schema.relation: not resolved by to_regclass the same way.
    if (name.empty() || !StrField(rel, "catalogname").empty()) {
      Unprovable();
      return;
    }
    needs.relations.push_back(QuotedQualified(schema, name));
  }

  void Type(const Json& type) {
    const QualifiedName name = NameOf(type["names"]);
    if (!name.ok) {
      Unprovable();
      return;
    }
    if (name.schema == "pg_catalog") return;
    if (name.schema.empty() && BuiltinTypes().contains(name.name)) return;
    provable = false;
    needs.types.push_back(QuotedQualified(name.schema, name.name));
  }

  void NeedOperator(const std::string& name) {
    provable = false;
    needs.operators.push_back(name);
  }

  void OperatorNamed(const Json& list) {
    const QualifiedName name = NameOf(list);
    if (!name.ok) {
      Unprovable();
      return;
    }
    if (name.schema == "pg_catalog") return;
    if (IsOperatorSymbol(name.name)) {
      NeedOperator(name.name);
    } else if (name.schema.empty() && absl::StrContains(name.name, "BETWEEN")) {
      // [NOT] BETWEEN [SYMMETRIC] becomes comparisons by name.
      for (const char* op : {"<", "<=", ">", ">="}) NeedOperator(op);
    } else {
      Unprovable();
    }
  }

  void Function(const Json& body) {
    const QualifiedName f = NameOf(body.value("funcname", Json()));
    if (!f.ok || !IsCatalogSchema(f.schema)) {
      Unprovable();
      return;
    }
    if (!StatelessFunctions().contains(f.name)) Unprovable();
    // Like operators, a function is chosen by name and argument types on
    // the search_path: pg_catalog comes first, so it wins for identical
    // argument types only. A call without arguments has one signature (and
    // pg_catalog's wins); a call with arguments is provably the built-in
    // only as pg_catalog.f(...).
    const bool has_args = body.contains("args") || body.contains("agg_order");
    if (has_args && f.schema != "pg_catalog") {
      provable = false;
      needs.functions.push_back(f.name);
    }
    if (!StatefulFunctions().contains(f.name)) return;
    changes_state = true;
    const Json args = body.value("args", Json::array());
    std::string text;
    if (f.name == "set_config") {
      if (args.empty() || !StringLiteral(args[0], &text)) {
        changes_role = true;
      } else {
        const std::string setting = Lower(text);
        if (setting == "role" || setting == "session_authorization") changes_role = true;
      }
      return;
    }
    // Built-ins that run SQL given as text: the query argument.
    size_t query_arg = SIZE_MAX;
    if (absl::StartsWith(f.name, "query_to_xml") || f.name == "ts_stat") query_arg = 0;
    if (f.name == "ts_rewrite" && args.size() == 2) query_arg = 1;
    if (query_arg == SIZE_MAX) return;
    if (query_arg >= args.size() || !StringLiteral(args[query_arg], &text) ||
        depth_ >= kMaxNestedSql) {
      changes_role = true;
      return;
    }
    const SqlInfo inner = Classify(text, depth_ + 1);
    if (inner.changes_role || !inner.parsed) changes_role = true;
  }

  const int depth_;
  int level_ = 0;
  // The names of the common table expressions in scope.
  std::vector<std::string> ctes_;
};

std::string KindOf(const std::string& type, const Json& body) {
  if (type == "SelectStmt") return body.contains("intoClause") ? "ddl" : "select";
  if (type == "InsertStmt") return "insert";
  if (type == "UpdateStmt") return "update";
  if (type == "DeleteStmt") return "delete";
  if (type == "MergeStmt") return "merge";
  if (type == "TransactionStmt") return "transaction";
  if (type == "VariableSetStmt" || type == "ConstraintsSetStmt") return "set";
  if (type == "VariableShowStmt") return "show";
  if (type == "CopyStmt") return "copy";
  if (type == "CallStmt") return "call";
  if (type == "DoStmt") return "do";
  if (type == "ExplainStmt") return "explain";
  if (type == "LockStmt") return "lock";
  if (type == "VacuumStmt" || type == "ClusterStmt" || type == "ReindexStmt" ||
      type == "CheckPointStmt" || type == "RefreshMatViewStmt") {
    return "maintenance";
  }
  if (type == "ListenStmt" || type == "UnlistenStmt" || type == "NotifyStmt") return "listen";
  if (type == "PrepareStmt" || type == "ExecuteStmt" || type == "DeallocateStmt") {
    return "prepare";
  }
  static const NameSet* const kDdl = new NameSet({
      "ViewStmt",
      "IndexStmt",
      "DefineStmt",
      "RenameStmt",
      "CommentStmt",
      "SecLabelStmt",
      "RuleStmt",
      "TruncateStmt",
      "CompositeTypeStmt",
      "ReassignOwnedStmt",
      "DropOwnedStmt",
      "ImportForeignSchemaStmt",
      "CreatedbStmt",
      "DropdbStmt",
      "GrantStmt",
      "GrantRoleStmt",
  });
  if (absl::StartsWith(type, "Create") || absl::StartsWith(type, "Alter") ||
      absl::StartsWith(type, "Drop") || kDdl->contains(type)) {
    return "ddl";
  }
  return "other";
}

// The index of the first character of `sql` from `i` on that is not
// whitespace, a comment or (with `parentheses`) an opening parenthesis.
size_t SkipNoise(absl::string_view sql, size_t i, bool parentheses) {
  while (i < sql.size()) {
    const char c = sql[i];
    if (absl::ascii_isspace(static_cast<unsigned char>(c)) || (parentheses && c == '(')) {
      ++i;
    } else if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
      while (i < sql.size() && sql[i] != '\n' && sql[i] != '\r') ++i;
    } else if (c == '/' && i + 1 < sql.size() && sql[i + 1] == '*') {
      int nesting = 1;
      i += 2;
      while (i < sql.size() && nesting > 0) {
        if (sql[i] == '/' && i + 1 < sql.size() && sql[i + 1] == '*') {
          ++nesting;
          i += 2;
        } else if (sql[i] == '*' && i + 1 < sql.size() && sql[i + 1] == '/') {
          --nesting;
          i += 2;
        } else {
          ++i;
        }
      }
    } else {
      break;
    }
  }
  return std::min(i, sql.size());
}

// The first word of `sql` from `offset`, upper-cased, skipping whitespace,
// comments and opening parentheses; "" if it starts with anything else.
std::string FirstWord(absl::string_view sql, size_t offset) {
  size_t i = SkipNoise(sql, std::min(offset, sql.size()), /*parentheses=*/true);
  auto is_start = [](unsigned char c) { return std::isalpha(c) || c == '_' || c >= 0x80; };
  auto is_part = [&](unsigned char c) { return is_start(c) || std::isdigit(c) || c == '$'; };
  if (i >= sql.size() || !is_start(static_cast<unsigned char>(sql[i]))) return "";
  const size_t start = i;
  while (i < sql.size() && is_part(static_cast<unsigned char>(sql[i]))) ++i;
  return absl::AsciiStrToUpper(sql.substr(start, i - start));
}

// Text the parser refused. It goes to PostgreSQL as it is, which reports the
// syntax error (with its SQLSTATE) before it runs anything, and refuses
// several statements in one extended-protocol message by itself; so it is
// one non-empty statement of unknown kind, never provably stateless.
SqlInfo Unparsed(const std::string& text, const char* message) {
  SqlInfo info;
  info.parsed = false;
  info.parse_error = message == nullptr ? "syntax error" : message;
  info.empty = false;
  info.leaves_no_state = false;
  info.first_keyword = FirstWord(text, 0);
  info.statement_kinds = {"other"};
  return info;
}

SqlInfo Classify(absl::string_view sql, int depth) {
  // libpg_query takes a C string.
  const std::string text(sql);
  PgQueryParseResult result = pg_query_parse(text.c_str());
  if (result.error != nullptr) {
    SqlInfo info = Unparsed(text, result.error->message);
    pg_query_free_parse_result(result);
    return info;
  }
  Json tree = Json::parse(result.parse_tree, nullptr, /*allow_exceptions=*/false);
  pg_query_free_parse_result(result);
  SqlInfo info;
  if (tree.is_discarded() || !tree.is_object()) return Unparsed(text, "unreadable parse tree");
  const Json stmts = tree.value("stmts", Json::array());
  info.empty = stmts.empty();
  info.multiple_statements = stmts.size() > 1;
  Walker walker(depth);
  for (const Json& raw : stmts) {
    const Json stmt = raw.value("stmt", Json::object());
    if (!stmt.is_object() || stmt.empty()) continue;
    const std::string& type = stmt.begin().key();
    const Json& body = stmt.begin().value();
    info.statement_kinds.push_back(KindOf(type, body));
    const std::string tx_kind = type == "TransactionStmt" ? StrField(body, "kind") : "";
    // Savepoints live and die with their transaction.
    const bool savepoint_statement = tx_kind == "TRANS_STMT_SAVEPOINT" ||
                                     tx_kind == "TRANS_STMT_RELEASE" ||
                                     tx_kind == "TRANS_STMT_ROLLBACK_TO";
    const bool write = type == "InsertStmt" || type == "UpdateStmt" || type == "DeleteStmt";
    if (write) {
      walker.provable = false;  // a table is written: the catalog decides
    } else if (type != "SelectStmt" && type != "VariableShowStmt" && type != "ExplainStmt" &&
               !savepoint_statement) {
      walker.Unprovable();
    }
    // The catalog's help is for plain reads and simple writes only.
    if (type != "SelectStmt" && !write) walker.conditional = false;
    if (type == "TransactionStmt") {
      info.transaction_control = true;
      SqlInfo::Savepoint savepoint = SqlInfo::Savepoint::kNone;
      if (tx_kind == "TRANS_STMT_SAVEPOINT") savepoint = SqlInfo::Savepoint::kSavepoint;
      if (tx_kind == "TRANS_STMT_RELEASE") savepoint = SqlInfo::Savepoint::kRelease;
      if (tx_kind == "TRANS_STMT_ROLLBACK_TO") savepoint = SqlInfo::Savepoint::kRollbackTo;
      if (stmts.size() == 1 && savepoint != SqlInfo::Savepoint::kNone) {
        info.savepoint = savepoint;
        info.savepoint_name = StrField(body, "savepoint_name");
      }
    } else if (type == "CopyStmt") {
      if (!body.contains("filename") && !BoolField(body, "is_program")) info.copy_stdio = true;
    }
    if (write) {
      walker.WalkWrite(type, body);
    } else {
      walker.Walk(stmt);
    }
  }
  info.max_placeholder = walker.max_placeholder;
  info.changes_session_state = walker.changes_state;
  info.changes_role = walker.changes_role;
  info.leaves_no_state = walker.provable && !walker.changes_state;
  if (!info.leaves_no_state && walker.conditional && !walker.changes_state && stmts.size() == 1) {
    CatalogDependencies needs = std::move(walker.needs);
    SortUnique(&needs.relations);
    SortUnique(&needs.written);
    SortUnique(&needs.operators);
    SortUnique(&needs.functions);
    SortUnique(&needs.types);
    info.stateless_if = std::move(needs);
  }
  if (!info.empty) {
    const int first = stmts[0].value("stmt_location", 0);
    info.first_keyword = FirstWord(text, static_cast<size_t>(std::max(first, 0)));
  }
  return info;
}

}  // namespace

namespace {

// Classifications of recent texts: services send the same few statements
// over and over, and parsing one (PostgreSQL's grammar, then its JSON parse
// tree) measured 15-20 % of the broker's CPU per pipelined call
// (docs/benchmarks.md). A pure function of the text, so an entry never goes
// stale. Bounded in entries and in the bytes of each text; when full it
// starts over (cheaper to keep right than an LRU, and a working set larger
// than the bound only costs the parse it would cost anyway).
constexpr size_t kCacheEntries = 1024;
constexpr size_t kCacheMaxSqlBytes = 4096;

struct ClassifyCache {
  Mutex mu;
  absl::flat_hash_map<std::string, SqlInfo> infos ABSL_GUARDED_BY(mu);
};

ClassifyCache& Cache() {
  static ClassifyCache* const cache = new ClassifyCache();
  return *cache;
}

}  // namespace

const std::vector<std::string>& StatelessBuiltinFunctionNames() {
  static const std::vector<std::string>* const kNames = [] {
    auto* names =
        new std::vector<std::string>(StatelessFunctions().begin(), StatelessFunctions().end());
    // Casts and length coercions the parser puts into stored expressions
    // (a default 'x' on a varchar(10) column calls varchar(varchar, int4,
    // bool)): pure conversions.
    for (const char* cast :
         {"int2", "int4", "int8", "float4", "float8", "text", "varchar", "bpchar", "bool", "date",
          "timestamp", "timestamptz", "time", "timetz", "interval", "bit", "varbit"}) {
      names->push_back(cast);
    }
    SortUnique(names);
    return names;
  }();
  return *kNames;
}

SqlInfo ClassifySql(absl::string_view sql) {
  if (sql.size() > kCacheMaxSqlBytes) return Classify(sql, 0);
  ClassifyCache& cache = Cache();
  {
    MutexLock lock(&cache.mu);
    if (auto it = cache.infos.find(sql); it != cache.infos.end()) return it->second;
  }
  SqlInfo info = Classify(sql, 0);
  MutexLock lock(&cache.mu);
  if (cache.infos.size() >= kCacheEntries) cache.infos.clear();
  cache.infos.emplace(std::string(sql), info);
  return info;
}

}  // namespace sessionbroker::core
