// Command-line parsing of brokerctl: the global flags (--target,
// --client-id, --timeout), the subcommand, and each subcommand's own flags
// from a table of FlagSpecs, with the --help text generated from the same
// table. Pure functions; thread-safe. Exit codes live here too, so that
// every command and the docs agree on them.
#ifndef SESSIONBROKER_CLIENT_CPP_BROKERCTL_ARGS_H_
#define SESSIONBROKER_CLIENT_CPP_BROKERCTL_ARGS_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace brokerctl {

// What scripts can rely on (docs/clients.md "## brokerctl").
enum ExitCode : int {
  kExitOk = 0,
  // PostgreSQL reported an error (the call carried a SQLSTATE).
  kExitSqlError = 1,
  // Bad flags or arguments; nothing was sent.
  kExitUsage = 2,
  // The broker could not be reached, is shutting down, or is not serving
  // (UNAVAILABLE; health NOT_SERVING).
  kExitUnavailable = 3,
  // Any other error from the broker (a session that ended, a quota, a
  // deadline, a bad argument the broker refused).
  kExitBrokerError = 4,
};

struct FlagSpec {
  std::string name;        // "--json"
  std::string short_name;  // "-p" or ""
  std::string value_name;  // "VALUE"; empty for a boolean flag
  std::string help;
  bool repeated = false;  // may be given several times
};

struct ParsedFlags {
  // Flag name ("--json") -> its values in order ("" for a boolean flag).
  std::map<std::string, std::vector<std::string>> values;
  std::vector<std::string> positional;
  bool help = false;

  bool Has(const std::string& name) const { return values.count(name) > 0; }
  // The last value given, or `fallback`.
  std::string Get(const std::string& name, const std::string& fallback = "") const;
};

// Parses `args` against `specs` (plus -h/--help): "--flag VALUE",
// "--flag=VALUE", "-p VALUE"; "--" ends the flags. A flag's value is the
// next argument whatever it looks like ("-p -5"). INVALID_ARGUMENT naming
// the problem for an unknown flag, a missing value, a value given to a
// boolean flag, or a non-repeated flag given twice.
absl::StatusOr<ParsedFlags> ParseFlags(const std::vector<FlagSpec>& specs,
                                       const std::vector<std::string>& args);

struct GlobalOptions {
  std::string target = "127.0.0.1:50051";
  std::string client_id;
  // The deadline of each call (not of a whole `watch` or `tx`).
  absl::Duration timeout = absl::Seconds(30);
  // --tls-ca, --tls-cert, --tls-key: TLS (mutual with a cert) when any is
  // set (sessionbroker::TlsFiles, kept apart so parsing needs no gRPC).
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
};

// The global flags, accepted before or after the subcommand.
const std::vector<FlagSpec>& GlobalFlagSpecs();

// A duration flag: "1.5s", "200ms", "2m" or plain seconds ("10").
absl::StatusOr<absl::Duration> ParseDurationFlag(const std::string& flag, const std::string& text);

// Splits argv into the global options and the subcommand with its own
// arguments: global flags are taken out wherever they appear (before the
// first "--" only). `env_target` is $BROKER_TARGET (may be null). The
// command is "" when none was given; `global_help` is set by a --help
// before any command.
struct Invocation {
  GlobalOptions global;
  std::string command;
  std::vector<std::string> args;
  bool global_help = false;
};
absl::StatusOr<Invocation> SplitInvocation(const std::vector<std::string>& argv,
                                           const char* env_target);

// "usage: brokerctl query SQL [flags]\n\n<summary>\n\nflags:\n  ..." with
// the global flags listed after the command's own.
std::string HelpText(const std::string& usage, const std::string& summary,
                     const std::vector<FlagSpec>& specs);

// The top-level help: commands, global flags, exit codes.
std::string MainHelp();

}  // namespace brokerctl

#endif  // SESSIONBROKER_CLIENT_CPP_BROKERCTL_ARGS_H_
