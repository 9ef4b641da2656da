#include "server/core/exec/request_outcomes.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace sessionbroker::core {
namespace {

bool RequestIdChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ||
         c == ':' || c == '~';
}

// PostgreSQL reads this as timestamptz whatever the session's TimeZone or
// DateStyle.
std::string TimestampText(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E6S+00:00", t, absl::UTCTimeZone());
}

std::string QuoteQualified(const std::string& table) {
  std::vector<std::string> parts = absl::StrSplit(table, '.');
  std::string out;
  for (const std::string& p : parts) {
    if (!out.empty()) out += ".";
    // Config admits only lower-case identifiers: no quote to escape.
    absl::StrAppend(&out, "\"", p, "\"");
  }
  return out;
}

std::string IndexName(const std::string& table) {
  const size_t dot = table.rfind('.');
  return absl::StrCat("\"", table.substr(dot == std::string::npos ? 0 : dot + 1),
                      "_created_at_idx\"");
}

}  // namespace

absl::Status ValidateRequestId(absl::string_view request_id) {
  if (request_id.size() > kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat("request_id is ", request_id.size(),
                                                   " bytes; at most ", kMaxRequestIdBytes,
                                                   " are allowed (a UUID is 36)"));
  }
  for (char c : request_id) {
    if (!RequestIdChar(c)) {
      return absl::InvalidArgumentError(
          "request_id may hold only ASCII letters, digits and - _ . : ~ (e.g. a UUID)");
    }
  }
  return absl::OkStatus();
}

absl::Status RequestIdReusedError(absl::string_view request_id) {
  return absl::InvalidArgumentError(absl::StrCat(
      "request_id \"", request_id,
      "\" was already used for a different request (another method, SQL, parameters or "
      "session) within BROKER_REQUEST_ID_WINDOW; a retry must repeat the request exactly, and a "
      "new request needs a new request_id"));
}

absl::Status RequestIdRunningError(absl::string_view request_id) {
  return absl::AbortedError(absl::StrCat(
      "a call with request_id \"", request_id,
      "\" is still running; retry with the same request_id to get its outcome once it ends"));
}

absl::Status OutcomeOmittedError(absl::string_view request_id, size_t max_outcome_bytes) {
  return absl::AlreadyExistsError(absl::StrCat(
      "the call with request_id \"", request_id,
      "\" already succeeded (it committed), but its response was over ", max_outcome_bytes,
      " bytes (BROKER_REQUEST_OUTCOME_MAX_BYTES) and was not kept; read the rows back with a "
      "query instead of running it again"));
}

RequestOutcomes::RequestOutcomes(RequestOutcomesOptions options)
    : options_(std::move(options)),
      table_(QuoteQualified(options_.table)),
      index_(IndexName(options_.table)) {}

std::vector<storage::Statement> RequestOutcomes::CreateStatements() const {
  std::vector<storage::Statement> out(3);
  // Its own schema by default, so that nothing the broker keeps shows up
  // among the application's tables (ORMs reflect `public`).
  const std::string schema = options_.table.substr(0, options_.table.find('.'));
  out[0].sql = absl::StrCat("CREATE SCHEMA IF NOT EXISTS \"", schema, "\"");
  out[1].sql = (absl::StrCat(
      "CREATE TABLE IF NOT EXISTS ", table_,
      " (client_id text NOT NULL, request_id text NOT NULL, request_hash bytea NOT NULL, "
      "created_at timestamptz NOT NULL, response bytea, rows_omitted boolean NOT NULL DEFAULT "
      "false, PRIMARY KEY (client_id, request_id))"));
  out[2].sql = absl::StrCat("CREATE INDEX IF NOT EXISTS ", index_, " ON ", table_, " (created_at)");
  return out;
}

storage::Statement RequestOutcomes::Claim(const DurableRequest& request, absl::Time now) const {
  storage::Statement s;
  // ON CONFLICT waits for a concurrent attempt's transaction: if it commits,
  // its row is live and nothing is returned; if it rolls back, this claim
  // inserts. An expired row is taken over (the WHERE of DO UPDATE).
  s.sql = absl::StrCat(
      "INSERT INTO ", table_,
      " AS o (client_id, request_id, request_hash, created_at) VALUES ($1, $2, $3, "
      "$4::timestamptz) ON CONFLICT (client_id, request_id) DO UPDATE SET request_hash = "
      "EXCLUDED.request_hash, created_at = EXCLUDED.created_at, response = NULL, rows_omitted = "
      "false WHERE o.created_at < $5::timestamptz RETURNING 1");
  s.params = {storage::Value::String(request.client_id), storage::Value::String(request.request_id),
              storage::Value::Bytes(request.fingerprint),
              storage::Value::String(TimestampText(now)),
              storage::Value::String(TimestampText(now - options_.window))};
  return s;
}

storage::Statement RequestOutcomes::Store(const DurableRequest& request, std::string response,
                                          bool omitted) const {
  storage::Statement s;
  s.sql = absl::StrCat("UPDATE ", table_,
                       " SET response = $3, rows_omitted = $4 WHERE client_id = $1 AND "
                       "request_id = $2");
  s.params = {storage::Value::String(request.client_id), storage::Value::String(request.request_id),
              storage::Value::Bytes(std::move(response)), storage::Value::Bool(omitted)};
  return s;
}

storage::Statement RequestOutcomes::Lookup(const DurableRequest& request) const {
  storage::Statement s;
  s.sql = absl::StrCat("SELECT request_hash = $3 AS same_request, rows_omitted, response FROM ",
                       table_, " WHERE client_id = $1 AND request_id = $2");
  s.params = {storage::Value::String(request.client_id), storage::Value::String(request.request_id),
              storage::Value::Bytes(request.fingerprint)};
  return s;
}

storage::Statement RequestOutcomes::Prune(absl::Time now) const {
  storage::Statement s;
  s.sql = absl::StrCat("DELETE FROM ", table_, " WHERE created_at < $1::timestamptz");
  s.params = {storage::Value::String(TimestampText(now - options_.window))};
  return s;
}

}  // namespace sessionbroker::core
