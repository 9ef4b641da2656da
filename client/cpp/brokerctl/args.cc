#include "client/cpp/brokerctl/args.h"

#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace brokerctl {
namespace {

const FlagSpec* Find(const std::vector<FlagSpec>& specs, const std::string& name) {
  for (const FlagSpec& s : specs) {
    if (s.name == name || (!s.short_name.empty() && s.short_name == name)) return &s;
  }
  return nullptr;
}

}  // namespace

std::string ParsedFlags::Get(const std::string& name, const std::string& fallback) const {
  auto it = values.find(name);
  return it == values.end() || it->second.empty() ? fallback : it->second.back();
}

absl::StatusOr<ParsedFlags> ParseFlags(const std::vector<FlagSpec>& specs,
                                       const std::vector<std::string>& args) {
  ParsedFlags out;
  bool flags_done = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (flags_done || arg.size() < 2 || arg[0] != '-') {
      out.positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      flags_done = true;
      continue;
    }
    if (arg == "-h" || arg == "--help") {
      out.help = true;
      continue;
    }
    std::string name = arg;
    std::string value;
    bool inline_value = false;
    if (const size_t eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      inline_value = true;
    }
    const FlagSpec* spec = Find(specs, name);
    if (spec == nullptr) {
      // A negative number is an argument, not a flag ("sessions show -5").
      double unused;
      if (absl::SimpleAtod(arg, &unused)) {
        out.positional.push_back(arg);
        continue;
      }
      return absl::InvalidArgumentError(absl::StrCat("unknown flag ", name));
    }
    if (spec->value_name.empty()) {
      if (inline_value) {
        return absl::InvalidArgumentError(absl::StrCat(spec->name, " takes no value"));
      }
    } else if (!inline_value) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat(spec->name, " needs a value (", spec->name, " ", spec->value_name, ")"));
      }
      value = args[++i];
    }
    std::vector<std::string>& values = out.values[spec->name];
    if (!values.empty() && !spec->repeated) {
      return absl::InvalidArgumentError(absl::StrCat(spec->name, " given more than once"));
    }
    values.push_back(value);
  }
  return out;
}

const std::vector<FlagSpec>& GlobalFlagSpecs() {
  static const auto* const kSpecs = new std::vector<FlagSpec>{
      {"--target", "", "HOST:PORT",
       "the broker's gRPC address (default $BROKER_TARGET, else 127.0.0.1:50051)"},
      {"--client-id", "", "ID",
       "sent as x-client-id: the broker's per-client quotas and filters (a broker with a clients "
       "file knows the caller by its token instead: set $SB_TOKEN)"},
      {"--timeout", "", "DURATION",
       "deadline of each call, e.g. 5s, 500ms (default 30s); the broker makes it the "
       "statement timeout"},
      {"--tls-ca", "", "FILE",
       "TLS: the PEM CA bundle the broker's certificate must chain to (TLS is on when any "
       "--tls-* flag is given)"},
      {"--tls-cert", "", "FILE", "mutual TLS: this PEM client certificate (with --tls-key)"},
      {"--tls-key", "", "FILE", "mutual TLS: the PEM private key of --tls-cert"},
  };
  return *kSpecs;
}

absl::StatusOr<absl::Duration> ParseDurationFlag(const std::string& flag, const std::string& text) {
  absl::Duration d;
  double seconds;
  if (absl::SimpleAtod(text, &seconds)) {
    d = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(text, &d)) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": \"", text, "\" is not a duration (e.g. 5s, 500ms, 2m)"));
  }
  if (d <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " must be positive"));
  }
  return d;
}

absl::StatusOr<Invocation> SplitInvocation(const std::vector<std::string>& argv,
                                           const char* env_target) {
  Invocation inv;
  if (env_target != nullptr && *env_target != '\0') inv.global.target = env_target;
  bool flags_done = false;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& arg = argv[i];
    if (!flags_done && arg == "--") {
      flags_done = true;
      inv.args.push_back(arg);
      continue;
    }
    std::string name = arg;
    std::string value;
    bool inline_value = false;
    if (const size_t eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      inline_value = true;
    }
    const FlagSpec* spec = flags_done ? nullptr : Find(GlobalFlagSpecs(), name);
    if (spec != nullptr) {
      if (!inline_value) {
        if (i + 1 >= argv.size()) {
          return absl::InvalidArgumentError(
              absl::StrCat(name, " needs a value (", name, " ", spec->value_name, ")"));
        }
        value = argv[++i];
      }
      if (spec->name == "--target") {
        if (value.empty()) return absl::InvalidArgumentError("--target is empty");
        inv.global.target = value;
      } else if (spec->name == "--client-id") {
        inv.global.client_id = value;
      } else if (spec->name == "--tls-ca") {
        inv.global.tls_ca = value;
      } else if (spec->name == "--tls-cert") {
        inv.global.tls_cert = value;
      } else if (spec->name == "--tls-key") {
        inv.global.tls_key = value;
      } else {
        absl::StatusOr<absl::Duration> d = ParseDurationFlag("--timeout", value);
        if (!d.ok()) return d.status();
        inv.global.timeout = *d;
      }
      continue;
    }
    if (inv.command.empty() && !flags_done) {
      if (arg == "-h" || arg == "--help") {
        inv.global_help = true;
        continue;
      }
      if (arg == "help") {
        // "brokerctl help query" is "brokerctl query --help".
        inv.global_help = i + 1 >= argv.size();
        if (i + 1 < argv.size()) {
          inv.command = argv[++i];
          inv.args.push_back("--help");
        }
        continue;
      }
      if (!arg.empty() && arg[0] == '-') {
        return absl::InvalidArgumentError(
            absl::StrCat("unknown flag ", name, " (before the command)"));
      }
      inv.command = arg;
      continue;
    }
    inv.args.push_back(arg);
  }
  if (inv.global.tls_cert.empty() != inv.global.tls_key.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert and --tls-key go together: a client certificate needs its key");
  }
  return inv;
}

std::string HelpText(const std::string& usage, const std::string& summary,
                     const std::vector<FlagSpec>& specs) {
  std::string out = absl::StrCat("usage: ", usage, "\n\n", summary, "\n");
  // Flag names in a column of 27, their help wrapped at 80 columns.
  auto list = [&out](const std::vector<FlagSpec>& flags) {
    for (const FlagSpec& f : flags) {
      std::string left = f.short_name.empty() ? f.name : absl::StrCat(f.short_name, ", ", f.name);
      if (!f.value_name.empty()) absl::StrAppend(&left, " ", f.value_name);
      std::string line = absl::StrFormat("  %-24s", left);
      if (line.size() > 26) {
        absl::StrAppend(&out, line, "\n");
        line = std::string(26, ' ');
      }
      for (absl::string_view word : absl::StrSplit(f.help, ' ', absl::SkipEmpty())) {
        if (line.size() + 1 + word.size() > 80 && line.size() > 27) {
          absl::StrAppend(&out, line, "\n");
          line = std::string(26, ' ');
        }
        absl::StrAppend(&line, " ", word);
      }
      absl::StrAppend(&out, line, "\n");
    }
  };
  if (!specs.empty()) {
    out += "\nflags:\n";
    list(specs);
  }
  out += "\nglobal flags:\n";
  list(GlobalFlagSpecs());
  list({{"--help", "-h", "", "this help"}});
  return out;
}

std::string MainHelp() {
  return HelpText(
      "brokerctl [global flags] COMMAND [flags] [args]",
      "The session broker's command-line client.\n\n"
      "commands:\n"
      "  query SQL     run one statement, print its result (table, --csv, --json)\n"
      "  tx            an interactive transaction: statements line by line, commit/rollback\n"
      "  status        one snapshot of the pool (human or --json)\n"
      "  watch         a live view of the pool (q quits)\n"
      "  sessions      list, show or end sessions (ls | show NAME | end NAME)\n"
      "  health        readiness and liveness (grpc.health.v1)\n"
      "  listen CHAN.. print LISTEN/NOTIFY notifications as they arrive (--json)\n\n"
      "\"brokerctl COMMAND --help\" describes each.\n\n"
      "exit codes:\n"
      "  0  success\n"
      "  1  PostgreSQL reported an error (SQLSTATE printed)\n"
      "  2  usage error: bad flags or arguments, nothing sent\n"
      "  3  the broker is unreachable, shutting down or not serving\n"
      "  4  another error from the broker",
      {});
}

}  // namespace brokerctl
