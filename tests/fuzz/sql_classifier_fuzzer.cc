// libFuzzer target: the SQL classifier (server/core/sql) through its public
// entry point ClassifySql, whatever its inside (a lexer today, PostgreSQL's
// parser on the sql-parser branch), and the session settings' normaliser.
// Any input must classify without crashing, reading out of bounds or
// undefined behaviour, and the answer must be consistent with itself.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"
#include "server/core/sql/session_settings.h"
#include "server/core/sql/sql_classifier.h"

namespace {

void Check(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using sessionbroker::core::ClassifySql;
  using sessionbroker::core::SqlInfo;
  const absl::string_view sql(reinterpret_cast<const char*>(data), size);
  const SqlInfo info = ClassifySql(sql);
  Check(info.max_placeholder >= 0);
  if (info.savepoint != SqlInfo::Savepoint::kNone) {
    Check(info.transaction_control);
    Check(info.savepoint_name.size() <= 63);
  }
  // The same text classifies the same way (no hidden state).
  const SqlInfo again = ClassifySql(sql);
  Check(again.empty == info.empty && again.max_placeholder == info.max_placeholder &&
        again.changes_session_state == info.changes_session_state &&
        again.multiple_statements == info.multiple_statements);

  // The input split at its first '=' as one session setting name = value.
  const size_t eq = sql.find('=');
  if (eq != absl::string_view::npos) {
    sessionbroker::core::SessionSettings settings = {
        {std::string(sql.substr(0, eq)), std::string(sql.substr(eq + 1))}};
    (void)sessionbroker::core::NormalizeSessionSettings(std::move(settings));
  }
  return 0;
}
