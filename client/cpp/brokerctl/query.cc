// brokerctl query: one statement, its result in the chosen format, printed
// as it streams (StreamExecute: a result of any size in bounded memory).
#include <iostream>
#include <iterator>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/cpp/brokerctl/commands.h"
#include "client/cpp/brokerctl/stream_format.h"

namespace brokerctl {
namespace {

const std::vector<FlagSpec>& QueryFlags() {
  static const auto* const kFlags = new std::vector<FlagSpec>{
      {"--param", "-p", "VALUE",
       "the value of the next $n, in order; sent as text that PostgreSQL reads as the type "
       "$n has in the statement",
       true},
      {"--type", "", "N=TYPE",
       "send $N as the PostgreSQL type TYPE (e.g. --type 1=int4, --type 2=uuid)", true},
      {"--json", "", "", "print the result as one JSON object"},
      {"--csv", "", "", "print the result as CSV with a header line"},
      {"--fetch-count", "", "N",
       "align the table per N rows, as psql's FETCH_COUNT (default 1000); CSV and JSON print "
       "row by row"},
  };
  return *kFlags;
}

constexpr char kUsage[] =
    "brokerctl query SQL [-p VALUE ...] [--type N=TYPE ...] [--json|--csv] [--fetch-count N]";
constexpr size_t kDefaultFetchCount = 1000;
constexpr char kSummary[] =
    "Runs one statement in autocommit mode and prints its result: a psql-style table with\n"
    "\"(N rows)\", or the command tag of a statement without rows (INSERT 0 1). Parameters are\n"
    "sent as bind values, never spliced into the SQL. SQL \"-\" reads the statement from stdin.\n"
    "Rows are printed as they arrive (the table aligned per --fetch-count rows), so results of\n"
    "any size print in bounded memory; --timeout bounds the whole statement. After an error\n"
    "mid-result the output stops where it came.\n"
    "On error prints PostgreSQL's message, DETAIL, HINT, SQLSTATE and the gRPC status to\n"
    "stderr. Exit codes: 0 ok, 1 SQL error, 2 usage, 3 broker unavailable, 4 other error.";

}  // namespace

// The parameters of -p and --type; INVALID_ARGUMENT for a bad --type.
absl::StatusOr<std::vector<sessionbroker::Param>> QueryParams(const ParsedFlags& flags) {
  std::vector<std::string> values;
  if (auto it = flags.values.find("--param"); it != flags.values.end()) values = it->second;
  std::vector<std::string> types(values.size());
  if (auto it = flags.values.find("--type"); it != flags.values.end()) {
    for (const std::string& spec : it->second) {
      const size_t eq = spec.find('=');
      int n = 0;
      if (eq == std::string::npos || !absl::SimpleAtoi(spec.substr(0, eq), &n) ||
          eq + 1 == spec.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--type ", spec, ": expected N=TYPE, e.g. --type 1=int4"));
      }
      if (n < 1 || n > static_cast<int>(values.size())) {
        return absl::InvalidArgumentError(absl::StrCat("--type ", spec, ": there is no $", n,
                                                       " among the ", values.size(),
                                                       " parameters given with -p"));
      }
      types[n - 1] = spec.substr(eq + 1);
    }
  }
  std::vector<sessionbroker::Param> params;
  for (size_t i = 0; i < values.size(); ++i) {
    sessionbroker::Param p(values[i]);
    params.push_back(types[i].empty() ? p : sessionbroker::Param::Typed(p, types[i]));
  }
  return params;
}

int RunQuery(const GlobalOptions& global, const Args& args) {
  int exit_code = 0;
  std::optional<ParsedFlags> flags =
      ParseCommandFlags("query", kUsage, kSummary, QueryFlags(), args, &exit_code);
  if (!flags) return exit_code;
  if (flags->positional.empty()) return UsageError("query", "no SQL given");
  if (flags->positional.size() > 1) {
    return UsageError("query",
                      absl::StrCat("one SQL argument expected, got ", flags->positional.size(),
                                   " (quote the statement; parameters go with -p)"));
  }
  absl::StatusOr<OutputFormat> format = OutputFormatOf(*flags);
  if (!format.ok()) return UsageError("query", std::string(format.status().message()));
  absl::StatusOr<std::vector<sessionbroker::Param>> params = QueryParams(*flags);
  if (!params.ok()) return UsageError("query", std::string(params.status().message()));
  size_t fetch_count = kDefaultFetchCount;
  if (auto it = flags->values.find("--fetch-count"); it != flags->values.end()) {
    if (!absl::SimpleAtoi(it->second.back(), &fetch_count) || fetch_count == 0) {
      return UsageError("query", "--fetch-count " + it->second.back() + ": expected a count > 0");
    }
  }
  std::string sql = flags->positional[0];
  if (sql == "-") {
    sql.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }

  auto client = MakeClient(global);
  if (!client.ok()) return PrintError(client.status());
  sessionbroker::CallOptions call;
  call.deadline = global.timeout;
  absl::StatusOr<std::unique_ptr<sessionbroker::RowStream>> rows =
      (*client)->Stream(sql, *std::move(params), call);
  if (!rows.ok()) return PrintError(rows.status());
  StreamFormatter formatter(*format, fetch_count);
  google::protobuf::RepeatedPtrField<sessionbroker::v1::Column> columns;
  for (const sessionbroker::Column& c : (*rows)->columns()) {
    sessionbroker::v1::Column* out = columns.Add();
    out->set_name(c.name);
    out->set_type_oid(c.type_oid);
    out->set_type_name(c.type_name);
  }
  std::cout << formatter.Begin(columns);
  while (std::optional<sessionbroker::Row> row = (*rows)->Next()) {
    const std::string text = formatter.Add(row->proto());
    // Flushed as it comes: a pipe or terminal sees rows before the end.
    if (!text.empty()) std::cout << text << std::flush;
  }
  if (!(*rows)->status().ok()) {
    std::cout << formatter.Abort() << std::flush;
    return PrintError((*rows)->status());
  }
  std::cout << formatter.End((*rows)->command_tag(), (*rows)->rows_affected()) << std::flush;
  return kExitOk;
}

}  // namespace brokerctl
