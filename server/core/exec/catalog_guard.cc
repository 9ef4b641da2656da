#include "server/core/exec/catalog_guard.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/core/base/mutex.h"

namespace sessionbroker::core {
namespace {

// One row, one boolean: true when every dependency resolves to something
// that runs no user code (see catalog_guard.h). $1 relations, $2 operator
// names, $3 function names, $4 cast-to types, $5 written relations, $6 the
// built-in function names a written table's stored expressions may call
// (StatelessBuiltinFunctionNames) (text[] each). Every name and operator is
// pg_catalog-qualified: the query runs on the engine's connections like a
// caller's statement and must not depend on their search_path or on user
// objects itself.
//
// For written relations (and their inheritance children and partitions:
// `wtree`), the objects that run when a row is written (`attached`: the
// table itself, for its partition key; its column defaults and generated
// columns; its constraints, and those of other tables referencing it; its
// indexes) may depend on nothing outside the built-ins but tables, indexes,
// types (checked as column types are), schemas, collations and constraints:
// no user function, operator, operator class, access method, extension, and
// no sequence (nextval leaves currval/lastval behind). PostgreSQL records no
// dependency on a built-in, so the built-in functions those objects call are
// read from their stored expressions (`exprs`: `:funcid n`) and must be in
// $6. No trigger but internal ones with built-in functions (foreign keys),
// no identity column, no foreign key referencing them with an action other
// than NO ACTION or RESTRICT (a cascade writes another table), no domain
// default, relkind r or p, outside pg_catalog, heap (or no) access method.
constexpr char kVerdictSql[] = R"SQL(WITH RECURSIVE rels AS (
  SELECT pg_catalog.to_regclass(n) AS oid FROM pg_catalog.unnest($1::pg_catalog.text[]) AS n
), tree AS (
  SELECT oid FROM rels WHERE oid IS NOT NULL
  UNION
  SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent OPERATOR(pg_catalog.=) tree.oid
), wrels AS (
  SELECT pg_catalog.to_regclass(n) AS oid FROM pg_catalog.unnest($5::pg_catalog.text[]) AS n
), wtree AS (
  SELECT oid FROM wrels WHERE oid IS NOT NULL
  UNION
  SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN wtree ON i.inhparent OPERATOR(pg_catalog.=) wtree.oid
), attached AS (
  SELECT 'pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid AS classid, w.oid AS objid FROM wtree w
  UNION ALL
  SELECT 'pg_catalog.pg_attrdef'::pg_catalog.regclass::pg_catalog.oid, d.oid
    FROM pg_catalog.pg_attrdef d JOIN wtree w ON d.adrelid OPERATOR(pg_catalog.=) w.oid
  UNION ALL
  SELECT 'pg_catalog.pg_constraint'::pg_catalog.regclass::pg_catalog.oid, k.oid
    FROM pg_catalog.pg_constraint k JOIN wtree w ON k.conrelid OPERATOR(pg_catalog.=) w.oid
                                                 OR k.confrelid OPERATOR(pg_catalog.=) w.oid
  UNION ALL
  SELECT 'pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid, x.indexrelid
    FROM pg_catalog.pg_index x JOIN wtree w ON x.indrelid OPERATOR(pg_catalog.=) w.oid
), deps AS (
  SELECT p.refclassid, p.refobjid FROM pg_catalog.pg_depend p
    JOIN attached a ON p.classid OPERATOR(pg_catalog.=) a.classid AND p.objid OPERATOR(pg_catalog.=) a.objid
), exprs AS (
  SELECT d.adbin::pg_catalog.text AS e
    FROM pg_catalog.pg_attrdef d JOIN wtree w ON d.adrelid OPERATOR(pg_catalog.=) w.oid
  UNION ALL
  SELECT k.conbin::pg_catalog.text
    FROM pg_catalog.pg_constraint k JOIN wtree w ON k.conrelid OPERATOR(pg_catalog.=) w.oid
   WHERE k.conbin IS NOT NULL
  UNION ALL
  SELECT pg_catalog.concat(x.indexprs::pg_catalog.text, ' ', x.indpred::pg_catalog.text)
    FROM pg_catalog.pg_index x JOIN wtree w ON x.indrelid OPERATOR(pg_catalog.=) w.oid
  UNION ALL
  SELECT t.partexprs::pg_catalog.text
    FROM pg_catalog.pg_partitioned_table t JOIN wtree w ON t.partrelid OPERATOR(pg_catalog.=) w.oid
   WHERE t.partexprs IS NOT NULL
), types AS (
  SELECT a.atttypid AS oid FROM pg_catalog.pg_attribute a JOIN tree ON a.attrelid OPERATOR(pg_catalog.=) tree.oid
   WHERE a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
  UNION
  SELECT y.oid FROM pg_catalog.unnest($4::pg_catalog.text[]) AS n
    LEFT JOIN pg_catalog.pg_type y ON y.oid OPERATOR(pg_catalog.=) pg_catalog.to_regtype(n)
  UNION
  SELECT refobjid FROM deps
   WHERE refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_type'::pg_catalog.regclass::pg_catalog.oid
  UNION
  SELECT CASE WHEN y.typtype OPERATOR(pg_catalog.=) 'd' THEN y.typbasetype ELSE e.oid END
    FROM types t JOIN pg_catalog.pg_type y ON y.oid OPERATOR(pg_catalog.=) t.oid
    LEFT JOIN pg_catalog.pg_type e ON e.typarray OPERATOR(pg_catalog.=) y.oid
   WHERE y.typtype OPERATOR(pg_catalog.=) 'd' OR e.oid IS NOT NULL
)
SELECT NOT EXISTS (SELECT FROM rels WHERE oid IS NULL)
  AND NOT EXISTS (
    SELECT FROM tree JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) tree.oid
     WHERE c.relkind OPERATOR(pg_catalog.<>) ALL ('{r,p,m}'::pg_catalog."char"[])
        OR c.relrowsecurity OR c.relhasrules)
  AND NOT EXISTS (
    SELECT FROM types t LEFT JOIN pg_catalog.pg_type y ON y.oid OPERATOR(pg_catalog.=) t.oid
     WHERE y.oid IS NULL
        OR (y.oid OPERATOR(pg_catalog.>=) 16384::pg_catalog.oid
            AND y.typtype OPERATOR(pg_catalog.<>) ALL ('{b,e,d}'::pg_catalog."char"[]))
        OR y.typinput::pg_catalog.oid OPERATOR(pg_catalog.>=) 16384::pg_catalog.oid
        OR y.typoutput::pg_catalog.oid OPERATOR(pg_catalog.>=) 16384::pg_catalog.oid
        OR y.typreceive::pg_catalog.oid OPERATOR(pg_catalog.>=) 16384::pg_catalog.oid
        OR y.typsend::pg_catalog.oid OPERATOR(pg_catalog.>=) 16384::pg_catalog.oid
        OR y.typmodin::pg_catalog.oid OPERATOR(pg_catalog.>=) 16384::pg_catalog.oid
        OR y.typmodout::pg_catalog.oid OPERATOR(pg_catalog.>=) 16384::pg_catalog.oid
        OR EXISTS (SELECT FROM pg_catalog.pg_constraint k
                    WHERE k.contypid OPERATOR(pg_catalog.=) y.oid)
        OR (pg_catalog.cardinality($5::pg_catalog.text[]) OPERATOR(pg_catalog.>) 0
            AND y.typdefaultbin IS NOT NULL))
  AND NOT EXISTS (
    SELECT FROM pg_catalog.pg_operator o
     WHERE o.oid OPERATOR(pg_catalog.>=) 16384::pg_catalog.oid
       AND o.oprname OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.name[]))
  AND NOT EXISTS (
    SELECT FROM pg_catalog.pg_proc p
     WHERE p.oid OPERATOR(pg_catalog.>=) 16384::pg_catalog.oid
       AND p.proname OPERATOR(pg_catalog.=) ANY ($3::pg_catalog.name[]))
  AND (pg_catalog.cardinality($2::pg_catalog.text[]) OPERATOR(pg_catalog.+)
         pg_catalog.cardinality($3::pg_catalog.text[]) OPERATOR(pg_catalog.+)
         pg_catalog.cardinality($4::pg_catalog.text[]) OPERATOR(pg_catalog.+)
         pg_catalog.cardinality($5::pg_catalog.text[]) OPERATOR(pg_catalog.=) 0
       OR NOT EXISTS (
         SELECT FROM pg_catalog.pg_cast k
          WHERE k.oid OPERATOR(pg_catalog.>=) 16384::pg_catalog.oid
            AND k.castfunc OPERATOR(pg_catalog.<>) 0::pg_catalog.oid))
  AND NOT EXISTS (SELECT FROM wrels WHERE oid IS NULL)
  AND NOT EXISTS (
    SELECT FROM wtree JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) wtree.oid
     WHERE c.relkind OPERATOR(pg_catalog.<>) ALL ('{r,p}'::pg_catalog."char"[])
        OR c.relrowsecurity OR c.relhasrules
        OR c.oid OPERATOR(pg_catalog.<) 16384::pg_catalog.oid
        OR c.relnamespace OPERATOR(pg_catalog.=) 'pg_catalog'::pg_catalog.regnamespace::pg_catalog.oid
        OR c.relam OPERATOR(pg_catalog.>=) 16384::pg_catalog.oid)
  AND NOT EXISTS (
    SELECT FROM pg_catalog.pg_trigger t JOIN wtree ON t.tgrelid OPERATOR(pg_catalog.=) wtree.oid
     WHERE NOT t.tgisinternal OR t.tgfoid OPERATOR(pg_catalog.>=) 16384::pg_catalog.oid)
  AND NOT EXISTS (
    SELECT FROM pg_catalog.pg_attribute a JOIN wtree ON a.attrelid OPERATOR(pg_catalog.=) wtree.oid
     WHERE a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
       AND a.attidentity OPERATOR(pg_catalog.<>) '')
  AND NOT EXISTS (
    SELECT FROM pg_catalog.pg_constraint k JOIN wtree ON k.confrelid OPERATOR(pg_catalog.=) wtree.oid
     WHERE k.contype OPERATOR(pg_catalog.=) 'f'
       AND (k.confupdtype OPERATOR(pg_catalog.<>) ALL ('{a,r}'::pg_catalog."char"[])
            OR k.confdeltype OPERATOR(pg_catalog.<>) ALL ('{a,r}'::pg_catalog."char"[])))
  AND NOT EXISTS (
    SELECT FROM deps d LEFT JOIN pg_catalog.pg_class c
        ON d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid
       AND c.oid OPERATOR(pg_catalog.=) d.refobjid
     WHERE d.refobjid OPERATOR(pg_catalog.>=) 16384::pg_catalog.oid
       AND (d.refclassid OPERATOR(pg_catalog.<>) ALL (ARRAY[
              'pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid,
              'pg_catalog.pg_type'::pg_catalog.regclass::pg_catalog.oid,
              'pg_catalog.pg_namespace'::pg_catalog.regclass::pg_catalog.oid,
              'pg_catalog.pg_collation'::pg_catalog.regclass::pg_catalog.oid,
              'pg_catalog.pg_constraint'::pg_catalog.regclass::pg_catalog.oid])
            OR (d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid
                AND (c.oid IS NULL
                     OR c.relkind OPERATOR(pg_catalog.<>) ALL ('{r,p,i,I}'::pg_catalog."char"[])))))
  AND NOT EXISTS (
    SELECT FROM exprs x,
           LATERAL pg_catalog.regexp_matches(x.e, ':funcid ([0-9]+)', 'g') AS m(f)
           LEFT JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) m.f[1]::pg_catalog.oid
     WHERE p.oid IS NULL OR p.oid OPERATOR(pg_catalog.>=) 16384::pg_catalog.oid
        OR NOT p.proname OPERATOR(pg_catalog.=) ANY ($6::pg_catalog.name[]))
)SQL";

// The cache key of a dependency set: its lists, each name ended by a NUL
// (no identifier or operator name contains one) and each list by a newline
// after its count, so different sets never share a key.
std::string KeyOf(const CatalogDependencies& needs) {
  std::string key;
  for (const std::vector<std::string>* list :
       {&needs.relations, &needs.written, &needs.operators, &needs.functions, &needs.types}) {
    absl::StrAppend(&key, list->size(), "\n");
    for (const std::string& name : *list) {
      key += name;
      key.push_back('\0');
    }
  }
  return key;
}

storage::Value TextArray(const std::vector<std::string>& names) {
  std::vector<storage::Value> elements;
  elements.reserve(names.size());
  for (const std::string& name : names) elements.push_back(storage::Value::String(name));
  return storage::Value::Array(std::move(elements));
}

// The lookup's statement for `needs`: one prepared statement on every
// connection, whatever the names.
storage::Statement VerdictStatement(const CatalogDependencies& needs) {
  storage::Statement statement;
  statement.sql = kVerdictSql;
  statement.params = {TextArray(needs.relations), TextArray(needs.operators),
                      TextArray(needs.functions), TextArray(needs.types), TextArray(needs.written),
                      // Only what a write needs: reads send an empty list.
                      TextArray(needs.written.empty() ? std::vector<std::string>{}
                                                      : StatelessBuiltinFunctionNames())};
  statement.cacheable = true;
  return statement;
}

// One row of one boolean: far below this.
constexpr size_t kVerdictMaxBytes = 4096;

absl::StatusOr<bool> VerdictOf(const absl::StatusOr<storage::QueryResult>& result) {
  if (!result.ok()) return result.status();
  if (result->rows.size() != 1 || result->rows[0].size() != 1 ||
      result->rows[0][0].kind != storage::Value::Kind::kBool) {
    return absl::InternalError("the catalog lookup did not answer with one boolean");
  }
  return result->rows[0][0].bool_value;
}

// ThroughPool's lookups waiting for its one connection request.
struct PoolLookups {
  struct Pending {
    CatalogDependencies needs;
    CatalogGuard::LookupDone done;
  };
  Mutex mu;
  std::vector<Pending> pending ABSL_GUARDED_BY(mu);
  bool acquiring ABSL_GUARDED_BY(mu) = false;  // a request is with the pool
};

}  // namespace

struct CatalogGuard::Shared {
  struct Entry {
    bool stateless = false;
    bool known = false;      // `stateless` holds an answer
    absl::Time asked;        // when the lookup behind the answer started
    bool in_flight = false;  // a lookup is running
  };
  mutable Mutex mu;
  absl::flat_hash_map<std::string, Entry> entries ABSL_GUARDED_BY(mu);
  Stats stats ABSL_GUARDED_BY(mu);
};

CatalogGuard::CatalogGuard(Options options, const Clock& clock, Lookup lookup)
    : options_(options),
      clock_(clock),
      lookup_(std::move(lookup)),
      shared_(std::make_shared<Shared>()) {}

CatalogGuard::~CatalogGuard() = default;

CatalogGuard::Verdict CatalogGuard::Check(const CatalogDependencies& needs) {
  std::string key = KeyOf(needs);
  const absl::Time now = clock_.Now();
  {
    MutexLock lock(&shared_->mu);
    auto it = shared_->entries.find(key);
    if (it != shared_->entries.end()) {
      Shared::Entry& entry = it->second;
      if (entry.known && now - entry.asked < options_.refresh) {
        if (entry.stateless) {
          ++shared_->stats.proved;
          return Verdict::kStateless;
        }
        ++shared_->stats.refused;
        return Verdict::kStateful;
      }
      ++shared_->stats.unknown;
      if (entry.in_flight) return Verdict::kUnknown;
      // Expired: the answer is forgotten so that nothing older than
      // `refresh` is ever used.
      entry.known = false;
      entry.in_flight = true;
    } else {
      ++shared_->stats.unknown;
      if (shared_->entries.size() >= options_.max_entries) shared_->entries.clear();
      shared_->entries[key].in_flight = true;
    }
    ++shared_->stats.lookups;
  }
  std::weak_ptr<Shared> weak = shared_;
  lookup_(needs, [weak, key = std::move(key), asked = now](absl::StatusOr<bool> answer) {
    const std::shared_ptr<Shared> shared = weak.lock();
    if (shared == nullptr) return;
    MutexLock lock(&shared->mu);
    if (!answer.ok()) ++shared->stats.lookup_failures;
    auto it = shared->entries.find(key);
    if (it == shared->entries.end()) {
      // The cache started over meanwhile.
      if (!answer.ok()) return;
      it = shared->entries.emplace(key, Shared::Entry{}).first;
    }
    it->second.in_flight = false;
    if (!answer.ok()) return;
    it->second.known = true;
    it->second.stateless = *answer;
    it->second.asked = asked;
  });
  return Verdict::kUnknown;
}

CatalogGuard::Stats CatalogGuard::stats() const {
  MutexLock lock(&shared_->mu);
  return shared_->stats;
}

CatalogGuard::Lookup CatalogGuard::ThroughEngine(storage::PipelineEngine& engine) {
  return [&engine](const CatalogDependencies& needs, LookupDone done) {
    storage::PipelineCall call;
    call.statement = VerdictStatement(needs);
    call.max_result_bytes = kVerdictMaxBytes;
    call.deadline = absl::Now() + absl::Seconds(5);
    engine.Submit(std::move(call),
                  [done = std::move(done)](absl::StatusOr<storage::QueryResult> result) mutable {
                    std::move(done)(VerdictOf(result));
                  });
  };
}

CatalogGuard::Lookup CatalogGuard::ThroughPool(ConnectionPool& pool, const Clock& clock,
                                               absl::Duration wait) {
  auto waiting = std::make_shared<PoolLookups>();
  return [&pool, &clock, wait, waiting](const CatalogDependencies& needs, LookupDone done) {
    {
      MutexLock lock(&waiting->mu);
      waiting->pending.push_back(PoolLookups::Pending{needs, std::move(done)});
      if (waiting->acquiring) return;  // the acquire under way takes it along
      waiting->acquiring = true;
    }
    AcquireRequest request;
    request.deadline = clock.Now() + wait;
    pool.Acquire(request, [waiting](absl::StatusOr<PooledConnection> acquired) {
      std::vector<PoolLookups::Pending> batch;
      {
        MutexLock lock(&waiting->mu);
        batch.swap(waiting->pending);
        waiting->acquiring = false;
      }
      if (!acquired.ok()) {
        for (PoolLookups::Pending& lookup : batch) std::move(lookup.done)(acquired.status());
        return;
      }
      PooledConnection conn = *std::move(acquired);
      // The login role, with the search_path a caller's statement without
      // a database_role resolves its names with (an earlier caller's role
      // may still be set: UseRole is applied at checkout, not undone).
      absl::Status role = conn->UseRole("");
      for (PoolLookups::Pending& lookup : batch) {
        if (!role.ok()) {
          std::move(lookup.done)(role);
          continue;
        }
        storage::ExecuteOptions options;
        options.max_result_bytes = kVerdictMaxBytes;
        std::move(lookup.done)(VerdictOf(conn->Execute(VerdictStatement(lookup.needs), options)));
      }
      // A broken connection is discarded by the pool on its way back.
      conn.Release();
    });
  };
}

}  // namespace sessionbroker::core
