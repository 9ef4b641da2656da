// Runs the real session-broker binary for end-to-end tests: ports the broker
// chooses itself (port 0) and reports in its port file, the test database,
// extra environment per test; waits until it serves; stops it (SIGKILL if
// need be) when the object goes away, so a failing test never leaves a
// broker behind. Also a private PostgreSQL cluster (scripts/pg) for tests
// that stop the database.
#ifndef SESSIONBROKER_TESTS_SUPPORT_BROKER_PROCESS_H_
#define SESSIONBROKER_TESTS_SUPPORT_BROKER_PROCESS_H_

#include <sys/types.h>

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"

namespace sessionbroker::testing {

class BrokerProcess final {
 public:
  // Starts the broker with DATABASE_URL=`database_url`,
  // BROKER_LISTEN_ADDR and BROKER_METRICS_ADDR on port 0 of 127.0.0.1, a
  // BROKER_PORT_FILE in a temporary directory of its own, no .env, and `env`
  // on top (BROKER_PORT_FILE may point elsewhere, but not be empty). Returns
  // once the port file names the addresses, or the broker exited first (then
  // address() is empty and WaitForExit says how it ended); a broker that does
  // neither within 30 s is a test failure that shows its log.
  BrokerProcess(const std::string& database_url, std::map<std::string, std::string> env = {});
  ~BrokerProcess();
  BrokerProcess(const BrokerProcess&) = delete;
  BrokerProcess& operator=(const BrokerProcess&) = delete;

  // Waits until the gRPC port accepts connections and health reports SERVING;
  // false at once if the broker exited.
  bool WaitUntilServing(absl::Duration timeout = absl::Seconds(20));

  // Sends `signal`; returns the exit code once it exits (nullopt on timeout or
  // if it died from a signal).
  std::optional<int> SignalAndWait(int signal, absl::Duration timeout);
  // Waits for exit without signalling.
  std::optional<int> WaitForExit(absl::Duration timeout);

  // The gRPC HOST:PORT from the port file.
  std::string address() const { return address_; }
  // HOST:PORT of /metrics, /livez, /readyz from the port file;
  // BROKER_METRICS_ADDR as passed when the broker serves no HTTP ("off").
  std::string metrics_address() const { return metrics_address_; }
  // The BROKER_PORT_FILE the broker was given.
  const std::string& port_file() const { return port_file_; }
  std::shared_ptr<grpc::Channel> NewChannel() const;
  // A channel to address(); null if the broker exited before reporting it.
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  // What the broker wrote to stdout/stderr so far.
  std::string Log() const;
  pid_t pid() const { return pid_; }

 private:
  // Reads the port file until it names the gRPC address, the broker exits,
  // or `timeout` passes.
  bool WaitForPortFile(absl::Duration timeout);

  pid_t pid_ = -1;
  std::string address_;
  std::string metrics_address_;
  std::string dir_;  // holds the log and the port file
  std::string log_path_;
  std::string port_file_;
  std::shared_ptr<grpc::Channel> channel_;
  std::optional<int> exit_code_;
  bool exited_ = false;
};

// The KEY=VALUE lines of a broker's port file ("grpc" and, unless metrics
// are off, "metrics", each HOST:PORT); empty if the file does not exist.
std::map<std::string, std::string> ReadPortFile(const std::string& path);

// A private PostgreSQL cluster in a temporary directory, via scripts/pg.
// Stopped and removed on destruction. `max_connections` > 0 starts it with
// that max_connections (PG_MAX_CONNECTIONS); 0 keeps scripts/pg's default.
class PrivateCluster final {
 public:
  explicit PrivateCluster(int max_connections = 0);
  ~PrivateCluster();
  bool Start();  // also restarts it after Stop(); url() is valid after
  bool Stop();
  const std::string& url() const { return url_; }

 private:
  std::string dir_;
  std::string url_;
  int max_connections_ = 0;
};

// Runs a shell command, returns its exit code and stdout.
int RunCommand(const std::string& command, std::string* output = nullptr);

}  // namespace sessionbroker::testing

#endif  // SESSIONBROKER_TESTS_SUPPORT_BROKER_PROCESS_H_
