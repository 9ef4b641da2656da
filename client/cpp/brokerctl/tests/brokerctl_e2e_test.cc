// brokerctl against the real broker and PostgreSQL: what each command prints
// and the exit codes scripts rely on (docs/clients.md "## brokerctl").
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sessionbroker/client.h"
#include "tests/support/broker_process.h"
#include "tests/support/test_env.h"

namespace {

using sessionbroker::testing::BrokerProcess;
using sessionbroker::testing::RefusedPort;
using sessionbroker::testing::RunCommand;
using sessionbroker::testing::TestDatabaseUrl;
using testing::HasSubstr;
using testing::Not;
using testing::StartsWith;

struct Output {
  int code = -1;
  std::string out;
  std::string err;
};

// Single quotes for sh.
std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

class BrokerctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string url = TestDatabaseUrl();
    ASSERT_FALSE(url.empty());
    broker_ = std::make_unique<BrokerProcess>(url);
    ASSERT_TRUE(broker_->WaitUntilServing()) << broker_->Log();
    err_path_ = ::testing::TempDir() + "/brokerctl_stderr_" +
                ::testing::UnitTest::GetInstance()->current_test_info()->name();
    // Each test owns its table.
    table_ =
        absl::StrCat("brokerctl_", ::testing::UnitTest::GetInstance()->current_test_info()->name());
    for (char& c : table_) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    ASSERT_EQ(Run({"query", "DROP TABLE IF EXISTS " + table_}).code, 0);
  }

  // Runs brokerctl with `args` against the broker (--target first).
  // `input` is its stdin.
  Output Run(const std::vector<std::string>& args, const std::string& input = "") {
    std::string cmd = "printf '%s' " + Quote(input) + " | " + SB_BROKERCTL_BINARY + " --target " +
                      broker_->address();
    for (const std::string& a : args) cmd += " " + Quote(a);
    cmd += " 2>" + Quote(err_path_);
    Output o;
    o.code = RunCommand(cmd, &o.out);
    std::ifstream f(err_path_);
    std::stringstream ss;
    ss << f.rdbuf();
    o.err = ss.str();
    return o;
  }

  std::unique_ptr<BrokerProcess> broker_;
  std::string err_path_;
  std::string table_;
};

TEST_F(BrokerctlTest, QueryPrintsAPsqlTableWithRowCount) {
  Output o = Run({"query",
                  "SELECT 1 AS id, 'alice' AS name, NULL::text AS note UNION ALL "
                  "SELECT 22, '日本', 'x' ORDER BY 1"});
  EXPECT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.out,
            " id | name  | note\n"
            "----+-------+------\n"
            "  1 | alice |\n"
            " 22 | 日本  | x\n"
            "(2 rows)\n");
}

TEST_F(BrokerctlTest, QueryWithoutRowsPrintsTheCommandTag) {
  EXPECT_EQ(Run({"query", "CREATE TABLE " + table_ + " (id int PRIMARY KEY, v text)"}).out,
            "CREATE TABLE\n");
  Output o =
      Run({"query", "INSERT INTO " + table_ + " VALUES ($1, $2), (2, 'b')", "-p", "1", "-p", "a"});
  EXPECT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.out, "INSERT 0 2\n");
}

TEST_F(BrokerctlTest, QueryParametersAreBoundWithOptionalTypes) {
  Output o = Run({"query", "SELECT $1 + 1 AS next, pg_typeof($1)::text AS type, $2 AS s", "-p",
                  "41", "--type", "1=int2", "-p", "it's; DROP TABLE x", "--csv"});
  EXPECT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.out, "next,type,s\n42,smallint,it's; DROP TABLE x\n");
}

TEST_F(BrokerctlTest, QueryJsonKeepsTypes) {
  Output o = Run({"query",
                  "SELECT 7::int8 AS i, 1.5::float8 AS f, 12.50::numeric AS n, true AS b, "
                  "NULL::int AS z, '{\"k\":[1]}'::jsonb AS j, ARRAY[1,2] AS a",
                  "--json"});
  EXPECT_EQ(o.code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("\"rows\":[[7,1.5,\"12.50\",true,null,{\"k\": [1]},[1,2]]]"));
  EXPECT_THAT(o.out, StartsWith("{\"columns\":[{\"name\":\"i\",\"type\":\"int8\"},"));
  EXPECT_THAT(o.out, testing::EndsWith("],\"command\":\"SELECT 1\",\"rows_affected\":1}\n"));
}

TEST_F(BrokerctlTest, SqlErrorExitsOneWithSqlstateDetailAndCodeOnStderr) {
  ASSERT_EQ(Run({"query", "CREATE TABLE " + table_ + " (id int PRIMARY KEY)"}).code, 0);
  ASSERT_EQ(Run({"query", "INSERT INTO " + table_ + " VALUES (1)"}).code, 0);
  Output o = Run({"query", "INSERT INTO " + table_ + " VALUES (1)"});
  EXPECT_EQ(o.code, 1);
  EXPECT_EQ(o.out, "");
  EXPECT_THAT(o.err, HasSubstr("ERROR:  duplicate key value violates unique constraint"));
  EXPECT_THAT(o.err, HasSubstr("DETAIL:  Key (id)=(1) already exists."));
  EXPECT_THAT(o.err, HasSubstr("SQLSTATE:  23505"));
  EXPECT_THAT(o.err, HasSubstr("gRPC status:  ALREADY_EXISTS"));
}

TEST_F(BrokerctlTest, SqlErrorShowsHintAndPosition) {
  Output o = Run({"query", "SELECT nosuchfunction(1)"});
  EXPECT_EQ(o.code, 1);
  EXPECT_THAT(o.err, HasSubstr("HINT:  No function matches"));
  EXPECT_THAT(o.err, HasSubstr("POSITION:  8"));
  EXPECT_THAT(o.err, HasSubstr("SQLSTATE:  42883"));
}

TEST_F(BrokerctlTest, UsageErrorsExitTwoAndSendNothing) {
  Output o = Run({"query"});
  EXPECT_EQ(o.code, 2);
  EXPECT_THAT(o.err, HasSubstr("no SQL given"));
  EXPECT_EQ(Run({"query", "SELECT 1", "--json", "--csv"}).code, 2);
  EXPECT_EQ(Run({"query", "SELECT $1", "--type", "2=int4", "-p", "1"}).code, 2);
  EXPECT_EQ(Run({"frobnicate"}).code, 2);
  EXPECT_EQ(Run({"sessions", "show"}).code, 2);
  EXPECT_EQ(Run({"status", "--bogus"}).code, 2);
}

TEST_F(BrokerctlTest, EveryCommandHasHelp) {
  for (const char* command : {"query", "tx", "status", "watch", "sessions", "health"}) {
    Output o = Run({command, "--help"});
    EXPECT_EQ(o.code, 0) << command;
    EXPECT_THAT(o.out, StartsWith(absl::StrCat("usage: brokerctl ", command))) << command;
    EXPECT_THAT(o.out, HasSubstr("--target HOST:PORT")) << command;
  }
  Output o = Run({"--help"});
  EXPECT_EQ(o.code, 0);
  EXPECT_THAT(o.out, HasSubstr("exit codes:"));
}

TEST_F(BrokerctlTest, UnreachableBrokerExitsThree) {
  RefusedPort refused;
  ASSERT_NE(refused.port(), 0);
  for (const char* command : {"query", "status", "health"}) {
    std::vector<std::string> args = {command};
    if (std::string(command) == "query") args.push_back("SELECT 1");
    args.push_back("--target");
    args.push_back(absl::StrCat("127.0.0.1:", refused.port()));
    Output o = Run(args);
    EXPECT_EQ(o.code, 3) << command << ": " << o.err;
    EXPECT_THAT(o.err, HasSubstr("UNAVAILABLE")) << command;
  }
}

TEST_F(BrokerctlTest, TargetComesFromTheEnvironment) {
  const std::string cmd = absl::StrCat("BROKER_TARGET=", broker_->address(), " ",
                                       SB_BROKERCTL_BINARY, " query 'SELECT 5 AS five' --csv");
  std::string out;
  EXPECT_EQ(RunCommand(cmd, &out), 0);
  EXPECT_EQ(out, "five\n5\n");
}

TEST_F(BrokerctlTest, TxReadsStatementsFromAPipeWithoutPrompts) {
  ASSERT_EQ(Run({"query", "CREATE TABLE " + table_ + " (id int)"}).code, 0);
  Output o =
      Run({"tx", "--csv"}, "INSERT INTO " + table_ + " VALUES (1)\nSELECT count(*) AS n FROM " +
                               table_ + ";\ncommit\nINSERT INTO " + table_ + " VALUES (2)\n");
  EXPECT_EQ(o.code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("transaction open"));
  EXPECT_THAT(o.out, HasSubstr("INSERT 0 1\nn\n1\nCOMMIT\nBEGIN\nINSERT 0 1\nROLLBACK (the open "
                               "transaction was rolled back on exit)\n"));
  EXPECT_THAT(o.out, testing::Not(HasSubstr("tx*>")));
  EXPECT_EQ(Run({"query", "SELECT count(*) FROM " + table_, "--csv"}).out, "count\n1\n");
}

TEST_F(BrokerctlTest, StatusPrintsTheSnapshotHumanOrJson) {
  Output human = Run({"status"});
  EXPECT_EQ(human.code, 0) << human.err;
  EXPECT_THAT(human.out, HasSubstr("database    reachable"));
  // The default broker: DB_POOL_SIZE 5, of which the pipelined engine takes
  // 2 (BROKER_PIPELINE_CONNECTIONS=auto), overflow 10.
  EXPECT_THAT(human.out, HasSubstr("pool        size 3 (+ 2 pipelined), overflow 10, limit 13"));
  Output json = Run({"status", "--json"});
  EXPECT_EQ(json.code, 0);
  EXPECT_THAT(json.out, HasSubstr("\"max_connections\":13"));
  EXPECT_THAT(json.out, HasSubstr("\"connections\":2"));
  EXPECT_THAT(json.out, HasSubstr("\"reachable\":true"));
}

TEST_F(BrokerctlTest, SessionsListShowAndEnd) {
  auto client = sessionbroker::Client::Create({.target = broker_->address(), .client_id = "ops"});
  ASSERT_TRUE(client.ok());
  sessionbroker::SessionOptions options;
  options.label = "nightly-report";
  auto session = (*client)->BeginSession(options);
  ASSERT_TRUE(session.ok()) << session.status();
  ASSERT_TRUE((*session)->Begin().ok());
  const std::string name = (*session)->name();

  Output ls = Run({"sessions", "ls", "--client", "ops"});
  EXPECT_EQ(ls.code, 0) << ls.err;
  EXPECT_THAT(ls.out, HasSubstr(name));
  EXPECT_THAT(ls.out, HasSubstr("nightly-report"));
  EXPECT_THAT(ls.out, HasSubstr("| open |"));
  EXPECT_THAT(ls.out, HasSubstr("(1 row)"));
  EXPECT_THAT(Run({"sessions", "--client", "someone-else"}).out, HasSubstr("(0 rows)"));
  EXPECT_THAT(Run({"sessions", "ls", "--json"}).out, HasSubstr("\"label\":\"nightly-report\""));

  Output show = Run({"sessions", "show", name});
  EXPECT_EQ(show.code, 0) << show.err;
  EXPECT_THAT(show.out, HasSubstr("client          ops"));
  EXPECT_THAT(show.out, HasSubstr("transaction     open"));

  Output end = Run({"sessions", "end", name});
  EXPECT_EQ(end.code, 0) << end.err;
  EXPECT_EQ(end.out, "session " + name + " ended; its open transaction was rolled back\n");
  Output again = Run({"sessions", "end", name});
  EXPECT_EQ(again.code, 4);
  EXPECT_THAT(again.err, HasSubstr("error: "));
}

TEST_F(BrokerctlTest, HealthReportsLivenessAndReadiness) {
  Output o = Run({"health"});
  EXPECT_EQ(o.code, 0) << o.err;
  EXPECT_THAT(o.out, HasSubstr("liveness   \"\""));
  EXPECT_THAT(o.out, HasSubstr("readiness  \"sessionbroker.v1.SessionBroker\""));
  EXPECT_THAT(o.out, testing::Not(HasSubstr("NOT_SERVING")));
  EXPECT_EQ(Run({"health", "--json"}).out,
            "{\"\":\"SERVING\",\"sessionbroker.v1.SessionBroker\":\"SERVING\"}\n");
  Output unknown = Run({"health", "--service", "no.such.Service"});
  EXPECT_EQ(unknown.code, 4);
  EXPECT_THAT(unknown.out, HasSubstr("SERVICE_UNKNOWN"));
}

TEST_F(BrokerctlTest, HealthIsNotServingWhileDraining) {
  // SIGTERM starts the drain: readiness goes NOT_SERVING at once (exit 3).
  ASSERT_EQ(kill(broker_->pid(), SIGTERM), 0);
  Output o;
  for (int i = 0; i < 100; ++i) {
    o = Run({"health", "--service", "sessionbroker.v1.SessionBroker"});
    if (o.code != 0) break;
  }
  EXPECT_EQ(o.code, 3) << o.out << o.err;
}

TEST_F(BrokerctlTest, WatchPrintsPlainLinesWhenNotATerminal) {
  Output o = Run({"watch", "--interval", "100ms", "--count", "3"});
  EXPECT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(std::count(o.out.begin(), o.out.end(), '\n'), 3);
  EXPECT_THAT(o.out, HasSubstr("open="));
  // The default broker: DB_POOL_SIZE 5, 2 of them pipelined, overflow 10.
  EXPECT_THAT(o.out, HasSubstr("/13 in_use=0"));
  EXPECT_THAT(o.out, HasSubstr("db=up"));
}

// --tls-ca, --tls-cert, --tls-key against a broker that requires client
// certificates (made at test time).
TEST(BrokerctlTlsTest, MutualTlsFlagsConnectAndAMissingClientCertificateIsUnavailable) {
  const std::string certs = sessionbroker::testing::MakeTlsCertificates();
  ASSERT_FALSE(certs.empty());
  const std::string url = TestDatabaseUrl();
  ASSERT_FALSE(url.empty());
  BrokerProcess broker(url, {{"BROKER_TLS_CERT", certs + "/server.pem"},
                             {"BROKER_TLS_KEY", certs + "/server.key"},
                             {"BROKER_TLS_CLIENT_CA", certs + "/ca.pem"}});
  ASSERT_FALSE(broker.address().empty()) << broker.Log();
  const std::string target =
      "localhost:" + broker.address().substr(broker.address().rfind(':') + 1);
  const std::string base = std::string(SB_BROKERCTL_BINARY) + " --timeout 10s --target " + target +
                           " --tls-ca " + Quote(certs + "/ca.pem");
  const std::string mtls = base + " --tls-cert " + Quote(certs + "/client.pem") + " --tls-key " +
                           Quote(certs + "/client.key");
  std::string out;
  int code = 1;
  // The broker's readiness follows its first database probe.
  for (int i = 0; i < 100 && code != 0; ++i) {
    out.clear();
    code = RunCommand(mtls + " query 'SELECT 40 + 2 AS answer' 2>&1", &out);
    if (code != 0) absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("42"));
  out.clear();
  EXPECT_EQ(RunCommand(base + " query 'SELECT 1' 2>&1", &out), 3) << out;
  EXPECT_THAT(out, HasSubstr("UNAVAILABLE"));
  out.clear();
  EXPECT_EQ(
      RunCommand(base + " --tls-cert " + Quote(certs + "/client.pem") + " query 'SELECT 1' 2>&1",
                 &out),
      2)
      << out;
  EXPECT_THAT(out, HasSubstr("go together"));
  std::system(("rm -rf " + Quote(certs)).c_str());
}

// ---- query streams; listen ----

TEST_F(BrokerctlTest, QueryPrintsAResultOverExecutesCapInFull) {
  // 20,000 rows of 1,000 bytes: five times Execute's 4 MiB cap.
  std::string out;
  const int code = RunCommand(
      std::string(SB_BROKERCTL_BINARY) + " --target " + broker_->address() +
          " query \"SELECT n, repeat('x', 1000) AS body FROM (SELECT generate_series(1, 20000) AS "
          "n) s\" --csv 2>" +
          Quote(err_path_) + " | wc -l",
      &out);
  EXPECT_EQ(code, 0);
  EXPECT_EQ(out, "20001\n");
}

TEST_F(BrokerctlTest, QueryPrintsRowsBeforeTheResultEnds) {
  // A result that would take hours to end: its first rows are printed (and
  // `head` exits) while it runs.
  std::string out;
  const int code =
      RunCommand(std::string(SB_BROKERCTL_BINARY) + " --target " + broker_->address() +
                     " --timeout 10m query 'SELECT generate_series(1, 2000000000) AS n' --csv 2>" +
                     Quote(err_path_) + " | head -n 3",
                 &out);
  EXPECT_EQ(code, 0);
  EXPECT_EQ(out, "n\n1\n2\n");
}

TEST_F(BrokerctlTest, QueryFailingMidResultExitsOneWithTheSqlState) {
  Output o = Run({"query", "SELECT 1 / (3 - g) AS x FROM generate_series(1, 5) g", "--csv"});
  EXPECT_EQ(o.code, 1);
  EXPECT_THAT(o.err, HasSubstr("22012"));
  EXPECT_THAT(o.out, Not(HasSubstr("(5 rows)")));
}

// brokerctl listen run in the background: its stdout read line by line.
class ListenProcess {
 public:
  ListenProcess(const std::string& command, const std::string& err_path) : err_path_(err_path) {
    // A previous run's "Listening on" must not be taken for this one's.
    std::remove(err_path.c_str());
    // The shell prints its pid and becomes brokerctl (exec keeps the pid),
    // so that a test that fails half-way can stop it.
    pipe_ = popen(("echo $$; exec " + command + " 2>" + Quote(err_path)).c_str(), "r");
    if (pipe_ != nullptr) {
      const std::string pid = Line();
      if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(pid), &pid_)) pid_ = 0;
    }
  }
  ~ListenProcess() {
    if (pipe_ == nullptr) return;
    // Still running: the test ended before it did (a failed assertion). A
    // listener runs until stopped, so pclose alone would wait forever.
    if (pid_ > 0) kill(pid_, SIGTERM);
    pclose(pipe_);
  }
  // Waits until it printed the whole "Listening on ...\n" line to stderr;
  // returns that line ("" if it never did).
  std::string AwaitListening() {
    for (int i = 0; i < 1000; ++i) {
      std::ifstream f(err_path_);
      const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      // Only a complete line: the file can be read between two writes.
      if (const size_t end = text.find('\n');
          end != std::string::npos && text.rfind("Listening on", 0) == 0) {
        return text.substr(0, end);
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    return "";
  }
  // The next line of its stdout ("" at its end).
  std::string Line() {
    char buf[4096];
    return fgets(buf, sizeof buf, pipe_) != nullptr ? std::string(buf) : std::string();
  }
  // Its exit code, once it ended.
  int Wait() {
    const int status = pclose(pipe_);
    pipe_ = nullptr;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  std::string err_path_;
  FILE* pipe_ = nullptr;
  int pid_ = 0;
};

TEST_F(BrokerctlTest, ListenPrintsEachNotificationAndGapAsItArrives) {
  const std::string channel = table_;
  ListenProcess listen(std::string(SB_BROKERCTL_BINARY) + " --target " + broker_->address() +
                           " listen " + channel + " --json --count 2",
                       err_path_ + ".listen");
  const std::string listening = listen.AwaitListening();
  ASSERT_THAT(listening, HasSubstr("\"" + channel + "\""));
  const std::string listener_pid = listening.substr(listening.find("PID ") + 4);

  Output sent = Run(
      {"query", "SELECT pg_notify($1, 'first') IS NULL, pg_backend_pid()", "-p", channel, "--csv"});
  ASSERT_EQ(sent.code, 0) << sent.err;
  std::string sender = sent.out.substr(sent.out.rfind(',') + 1);
  sender.pop_back();  // "\n"
  EXPECT_EQ(listen.Line(), "{\"channel\":\"" + channel +
                               "\",\"payload\":\"first\",\"sender_pid\":" + sender + "}\n");

  // The broker's listener connection is killed: it listens again and says so.
  ASSERT_EQ(Run({"query", "SELECT pg_terminate_backend(" +
                              listener_pid.substr(0, listener_pid.find(')')) + ")"})
                .code,
            0);
  EXPECT_THAT(listen.Line(), StartsWith("{\"gap\":\"reconnected\",\"dropped\":0,"));
  ASSERT_EQ(Run({"query", "NOTIFY " + channel}).code, 0);
  EXPECT_THAT(listen.Line(), StartsWith("{\"channel\":\"" + channel + "\",\"payload\":\"\","));
  EXPECT_EQ(listen.Line(), "");
  EXPECT_EQ(listen.Wait(), 0);
}

TEST_F(BrokerctlTest, ListenPrintsPsqlsLineAndExitsThreeWhenTheBrokerStops) {
  const std::string channel = table_;
  ListenProcess listen(
      std::string(SB_BROKERCTL_BINARY) + " --target " + broker_->address() + " listen " + channel,
      err_path_ + ".listen");
  ASSERT_THAT(listen.AwaitListening(), HasSubstr(channel));
  ASSERT_EQ(Run({"query", "NOTIFY " + channel + ", 'hello'"}).code, 0);
  EXPECT_THAT(listen.Line(), StartsWith("Asynchronous notification \"" + channel +
                                        "\" with payload \"hello\" received from server "
                                        "process with PID "));
  ASSERT_EQ(broker_->SignalAndWait(SIGTERM, absl::Seconds(30)), 0);
  EXPECT_EQ(listen.Line(), "");
  EXPECT_EQ(listen.Wait(), 3);
}

TEST_F(BrokerctlTest, ListenWithoutChannelsIsAUsageErrorAndABadOneABrokerError) {
  EXPECT_EQ(Run({"listen"}).code, 2);
  Output o = Run({"listen", std::string(64, 'c')});
  EXPECT_EQ(o.code, 4);
  EXPECT_THAT(o.err, HasSubstr("INVALID_ARGUMENT"));
}

}  // namespace
