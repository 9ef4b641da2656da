// brokerctl query: one statement, its result in the chosen format.
#include <iostream>
#include <iterator>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/cpp/brokerctl/commands.h"

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
  };
  return *kFlags;
}

constexpr char kUsage[] = "brokerctl query SQL [-p VALUE ...] [--type N=TYPE ...] [--json|--csv]";
constexpr char kSummary[] =
    "Runs one statement in autocommit mode and prints its result: a psql-style table with\n"
    "\"(N rows)\", or the command tag of a statement without rows (INSERT 0 1). Parameters are\n"
    "sent as bind values, never spliced into the SQL. SQL \"-\" reads the statement from stdin.\n"
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
  std::string sql = flags->positional[0];
  if (sql == "-") {
    sql.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }

  auto client = MakeClient(global);
  if (!client.ok()) return PrintError(client.status());
  absl::StatusOr<sessionbroker::Result> result = (*client)->Execute(sql, *std::move(params));
  if (!result.ok()) return PrintError(result.status());
  std::cout << FormatResult(result->proto(), *format) << std::flush;
  return kExitOk;
}

}  // namespace brokerctl
