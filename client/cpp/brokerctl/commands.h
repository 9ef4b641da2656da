// The subcommands of brokerctl, each run from main.cc with the global
// options and its own arguments, each returning the process exit code
// (args.h's ExitCode). They print results to stdout and errors to stderr.
// Also what they share: the client for the global options, and the mapping
// of a failed call to an error report and an exit code. Each command runs
// on the main thread; `watch` and `tx` start helper threads of their own.
#ifndef SESSIONBROKER_CLIENT_CPP_BROKERCTL_COMMANDS_H_
#define SESSIONBROKER_CLIENT_CPP_BROKERCTL_COMMANDS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/cpp/brokerctl/args.h"
#include "client/cpp/brokerctl/format.h"
#include "sessionbroker/client.h"

namespace brokerctl {

using Args = std::vector<std::string>;

int RunQuery(const GlobalOptions& global, const Args& args);
int RunTx(const GlobalOptions& global, const Args& args);
int RunStatus(const GlobalOptions& global, const Args& args);
int RunWatch(const GlobalOptions& global, const Args& args);
int RunSessions(const GlobalOptions& global, const Args& args);
int RunHealth(const GlobalOptions& global, const Args& args);
int RunListen(const GlobalOptions& global, const Args& args);

// listen's lines (psql's wording, or one JSON object), each ending "\n".
std::string FormatNotification(const sessionbroker::Notification& n, bool json);
std::string FormatGap(const sessionbroker::NotificationGap& g, bool json);

// ---- shared by the commands ----

// A client for --target, --client-id and --timeout (the default deadline).
absl::StatusOr<std::unique_ptr<sessionbroker::Client>> MakeClient(const GlobalOptions& global);

// 0 for OK; 3 for UNAVAILABLE; 1 when PostgreSQL reported the error (a
// SQLSTATE); 4 for the rest.
int ExitCodeFor(const absl::Status& status);

// The status's code, message, SQLSTATE, PostgreSQL's fields and reason.
ErrorReport ReportFor(const absl::Status& status);

// Prints FormatError(ReportFor(status)) to stderr; returns ExitCodeFor.
int PrintError(const absl::Status& status);

// Prints "brokerctl COMMAND: MESSAGE" and the pointer to --help to stderr;
// returns kExitUsage.
int UsageError(const std::string& command, const std::string& message);

// Parses the command's flags; on --help prints the help to stdout and sets
// *exit_code to 0, on a usage error prints it and sets *exit_code to 2
// (then returns nullopt).
std::optional<ParsedFlags> ParseCommandFlags(const std::string& command, const std::string& usage,
                                             const std::string& summary,
                                             const std::vector<FlagSpec>& specs, const Args& args,
                                             int* exit_code);

// The parameters of `query`'s -p and --type flags (also used by tests);
// INVALID_ARGUMENT for a malformed --type or one naming no -p.
absl::StatusOr<std::vector<sessionbroker::Param>> QueryParams(const ParsedFlags& flags);

// --json / --csv (mutually exclusive; usage error if both).
absl::StatusOr<OutputFormat> OutputFormatOf(const ParsedFlags& flags);

}  // namespace brokerctl

#endif  // SESSIONBROKER_CLIENT_CPP_BROKERCTL_COMMANDS_H_
