// brokerctl: the session broker's command-line client (docs/clients.md,
// "## brokerctl"). Splits the global flags from the subcommand and runs it.
#include <cstdlib>
#include <iostream>
#include <map>

#include "client/cpp/brokerctl/args.h"
#include "client/cpp/brokerctl/commands.h"

int main(int argc, char** argv) {
  using brokerctl::Args;
  using brokerctl::GlobalOptions;
  const Args args(argv + 1, argv + argc);
  absl::StatusOr<brokerctl::Invocation> inv =
      brokerctl::SplitInvocation(args, std::getenv("BROKER_TARGET"));
  if (!inv.ok()) return brokerctl::UsageError("", std::string(inv.status().message()));
  if (inv->global_help) {
    std::cout << brokerctl::MainHelp();
    return brokerctl::kExitOk;
  }
  if (inv->command.empty()) {
    std::cerr << brokerctl::MainHelp();
    return brokerctl::kExitUsage;
  }
  static const std::map<std::string, int (*)(const GlobalOptions&, const Args&)> kCommands = {
      {"query", brokerctl::RunQuery},       {"tx", brokerctl::RunTx},
      {"status", brokerctl::RunStatus},     {"watch", brokerctl::RunWatch},
      {"sessions", brokerctl::RunSessions}, {"health", brokerctl::RunHealth},
      {"listen", brokerctl::RunListen},
  };
  auto it = kCommands.find(inv->command);
  if (it == kCommands.end()) {
    return brokerctl::UsageError("", "unknown command \"" + inv->command +
                                         "\" (query, tx, status, watch, sessions, health, listen)");
  }
  return it->second(inv->global, inv->args);
}
