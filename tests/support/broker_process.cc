#include "tests/support/broker_process.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "tests/support/grpc_wire.h"
#include "tests/support/test_env.h"

extern char** environ;

namespace sessionbroker::testing {
namespace {

// ./scripts/dev test points TMPDIR at its own scratch directory, which it
// removes (stopping any cluster left there) even if a test is killed.
std::string TempDir() {
  const char* dir = std::getenv("TMPDIR");
  return dir != nullptr && *dir != '\0' ? dir : "/tmp";
}

}  // namespace

std::map<std::string, std::string> ReadPortFile(const std::string& path) {
  std::map<std::string, std::string> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const size_t eq = line.find('=');
    if (eq != std::string::npos) out[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return out;
}

BrokerProcess::BrokerProcess(const std::string& database_url,
                             std::map<std::string, std::string> env) {
  std::string dir_template = TempDir() + "/sb-broker.XXXXXX";
  if (mkdtemp(dir_template.data()) == nullptr) {
    ADD_FAILURE() << "cannot create a directory in " << TempDir() << ": " << std::strerror(errno);
  }
  dir_ = dir_template;
  log_path_ = dir_ + "/log";
  port_file_ = dir_ + "/ports";
  const int log_fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

  std::map<std::string, std::string> vars;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string entry(*e);
    const size_t eq = entry.find('=');
    if (eq != std::string::npos) vars[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  vars["DATABASE_URL"] = database_url;
  // Never a fixed port: tests run in parallel, and a developer's broker may
  // hold the default one. The broker binds port 0, so the kernel hands each
  // listener a port no one else holds, and reports them in the port file.
  vars["BROKER_LISTEN_ADDR"] = "127.0.0.1:0";
  vars["BROKER_METRICS_ADDR"] = "127.0.0.1:0";
  vars["BROKER_PORT_FILE"] = port_file_;
  vars["BROKER_ENV_FILE"] = "";  // tests never read a developer's .env
  vars["BROKER_HEALTH_CHECK_INTERVAL"] = "0.2";
  // No drain window unless a test asks for one (it would only add its length
  // to every test that stops a broker).
  vars["BROKER_DRAIN_SECONDS"] = "0";
  vars["BROKER_SHUTDOWN_GRACE_SECONDS"] = "5";
  for (auto& [k, v] : env) vars[k] = v;
  std::vector<std::string> entries;
  // A test may point the port file elsewhere (e.g. somewhere unwritable).
  port_file_ = vars["BROKER_PORT_FILE"];
  // Replaced by the port file's address when the broker serves HTTP.
  metrics_address_ = vars["BROKER_METRICS_ADDR"];
  for (auto& [k, v] : vars) entries.push_back(absl::StrCat(k, "=", v));
  std::vector<char*> envp;
  for (std::string& e : entries) envp.push_back(e.data());
  envp.push_back(nullptr);

  pid_ = fork();
  if (pid_ == 0) {
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    // The broker must die with the test process, even on a crash.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    char* argv[] = {const_cast<char*>(SB_BROKER_BINARY), nullptr};
    execve(SB_BROKER_BINARY, argv, envp.data());
    _exit(127);
  }
  close(log_fd);
  if (WaitForPortFile(absl::Seconds(30))) channel_ = NewChannel();
}

bool BrokerProcess::WaitForPortFile(absl::Duration timeout) {
  const absl::Time end = absl::Now() + timeout;
  for (;;) {
    // The broker renames the file into place complete: no partial reads.
    std::map<std::string, std::string> ports = ReadPortFile(port_file_);
    if (auto grpc = ports.find("grpc"); grpc != ports.end()) {
      address_ = grpc->second;
      if (auto metrics = ports.find("metrics"); metrics != ports.end()) {
        metrics_address_ = metrics->second;
      }
      return true;
    }
    // A broker that exits at start (a bad setting, a port in use) is what
    // some tests want: they ask WaitForExit.
    if (WaitForExit(absl::ZeroDuration()).has_value() || exited_) return false;
    if (absl::Now() >= end) {
      ADD_FAILURE() << "the broker wrote no port file (" << port_file_ << ") within "
                    << absl::FormatDuration(timeout) << "; its log:\n"
                    << Log();
      return false;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
}

BrokerProcess::~BrokerProcess() {
  if (pid_ > 0 && !exited_) {
    kill(pid_, SIGKILL);
    int status;
    waitpid(pid_, &status, 0);
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::shared_ptr<grpc::Channel> BrokerProcess::NewChannel() const {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, 64 << 20);
  // Distinct channels get distinct connections (no subchannel sharing).
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // The broker may not listen yet when the first call goes out: retry fast.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
  return grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), args);
}

bool BrokerProcess::WaitUntilServing(absl::Duration timeout) {
  if (channel_ == nullptr) return false;  // it exited before listening
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    if (WaitForExit(absl::ZeroDuration()).has_value() || exited_) return false;
    // Readiness: the service name ("" is liveness, SERVING without a database).
    absl::StatusOr<ServingStatus> s =
        HealthCheck(channel_, "sessionbroker.v1.SessionBroker", absl::Milliseconds(500));
    if (s.ok() && *s == ServingStatus::kServing) return true;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return false;
}

std::optional<int> BrokerProcess::WaitForExit(absl::Duration timeout) {
  if (exited_) return exit_code_;
  const absl::Time end = absl::Now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exited_ = true;
      if (WIFEXITED(status)) exit_code_ = WEXITSTATUS(status);
      return exit_code_;
    }
    if (absl::Now() >= end) return std::nullopt;
    absl::SleepFor(absl::Milliseconds(20));
  }
}

std::optional<int> BrokerProcess::SignalAndWait(int signal, absl::Duration timeout) {
  if (!exited_) kill(pid_, signal);
  return WaitForExit(timeout);
}

std::string BrokerProcess::Log() const {
  std::ifstream in(log_path_);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

int RunCommand(const std::string& command, std::string* output) {
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return -1;
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  const int status = pclose(pipe);
  if (output != nullptr) *output = out;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

PrivateCluster::PrivateCluster(int max_connections) : max_connections_(max_connections) {
  std::string dir_template = TempDir() + "/sb-e2e-pg.XXXXXX";
  dir_ = mkdtemp(dir_template.data());
  // The cluster runs as the postgres user when tests run as root: it must be
  // able to reach the directory.
  chmod(dir_.c_str(), 0755);
}

PrivateCluster::~PrivateCluster() {
  Stop();
  RunCommand(absl::StrCat("rm -rf '", dir_, "'"));
}

bool PrivateCluster::Start() {
  std::string out;
  const std::string env =
      max_connections_ > 0 ? absl::StrCat("PG_MAX_CONNECTIONS=", max_connections_, " ") : "";
  if (RunCommand(absl::StrCat(env, "'", PgScript(), "' start '", dir_, "/pg'"), &out) != 0) {
    return false;
  }
  url_ = std::string(absl::StripAsciiWhitespace(out));
  return !url_.empty();
}

bool PrivateCluster::Stop() {
  return RunCommand(absl::StrCat("'", PgScript(), "' stop '", dir_, "/pg' >/dev/null 2>&1")) == 0;
}

}  // namespace sessionbroker::testing
