// brokerctl's interactive commands in a real terminal: tmux runs them in a
// detached session of its own server (its own socket), the test types with
// send-keys and reads the screen with capture-pane. Every test kills its
// tmux server on the way out, whatever happens.
#include <signal.h>
#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/broker_process.h"
#include "tests/support/test_env.h"

namespace {

using sessionbroker::testing::BrokerProcess;
using sessionbroker::testing::RunCommand;
using sessionbroker::testing::TestDatabaseUrl;
using testing::HasSubstr;

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

// A tmux server (its socket in the test's temporary directory, removed
// with it) with one window running `command` (then "brokerctl exited
// N" and a shell that keeps the pane open). Killed on destruction.
class Tmux {
 public:
  Tmux(const std::string& command, int width, int height)
      : socket_(absl::StrCat(::testing::TempDir(), "brokerctl-tmux-", getpid())) {
    const std::string shell =
        absl::StrCat(command, "; echo \"brokerctl exited $?\"; exec sleep 3600");
    EXPECT_EQ(Tmux::Run(absl::StrCat("new-session -d -s t -x ", width, " -y ", height, " ",
                                     Quote(shell))),
              0);
  }
  ~Tmux() {
    Run("kill-server");
    unlink(socket_.c_str());
  }

  int Run(const std::string& args) {
    return RunCommand(absl::StrCat("tmux -u -S ", socket_, " ", args, " 2>&1"));
  }
  // Types `text` literally, then Enter.
  void Type(const std::string& text) {
    EXPECT_EQ(Run(absl::StrCat("send-keys -t t -l ", Quote(text))), 0);
    EXPECT_EQ(Run("send-keys -t t Enter"), 0);
  }
  void Key(const std::string& key) { EXPECT_EQ(Run("send-keys -t t " + key), 0); }
  std::string Screen() {
    std::string out;
    RunCommand(absl::StrCat("tmux -u -S ", socket_, " capture-pane -p -t t"), &out);
    return out;
  }
  // Waits until the screen shows `text` (the bound only keeps a broken
  // program from hanging the test); returns the screen.
  std::string WaitFor(const std::string& text) {
    std::string screen;
    const absl::Time give_up = absl::Now() + absl::Seconds(30);
    while (absl::Now() < give_up) {
      screen = Screen();
      if (screen.find(text) != std::string::npos) return screen;
      absl::SleepFor(absl::Milliseconds(50));
    }
    ADD_FAILURE() << "the screen never showed \"" << text << "\"; it shows:\n" << screen;
    return screen;
  }

 private:
  std::string socket_;
};

class BrokerctlTerminalTest : public ::testing::Test {
 protected:
  void StartBroker(std::map<std::string, std::string> env = {}) {
    const std::string url = TestDatabaseUrl();
    ASSERT_FALSE(url.empty());
    broker_ = std::make_unique<BrokerProcess>(url, std::move(env));
    ASSERT_TRUE(broker_->WaitUntilServing()) << broker_->Log();
  }
  std::string Brokerctl(const std::string& args) {
    return absl::StrCat("env LANG=C.UTF-8 TERM=xterm-256color ", SB_BROKERCTL_BINARY, " --target ",
                        broker_->address(), " ", args);
  }
  std::string Query(const std::string& sql) {
    std::string out;
    EXPECT_EQ(RunCommand(Brokerctl("query --csv " + Quote(sql)), &out), 0) << sql;
    return out;
  }

  std::unique_ptr<BrokerProcess> broker_;
};

TEST_F(BrokerctlTerminalTest, TxRunsTypedStatementsAndCommits) {
  ASSERT_NO_FATAL_FAILURE(StartBroker());
  Query("DROP TABLE IF EXISTS brokerctl_tx_commit");
  Query("CREATE TABLE brokerctl_tx_commit (id int, v text)");
  Tmux tmux(Brokerctl("tx --idle-limit 60s"), 100, 30);
  tmux.WaitFor("tx*>");
  tmux.Type("INSERT INTO brokerctl_tx_commit VALUES (1, 'one'), (2, 'two')");
  tmux.WaitFor("INSERT 0 2");
  tmux.Type("SELECT count(*) AS n FROM brokerctl_tx_commit");
  std::string screen = tmux.WaitFor("(1 row)");
  EXPECT_THAT(screen, HasSubstr(" n\n---\n 2\n"));
  // Not visible to others before the commit.
  EXPECT_EQ(Query("SELECT count(*) FROM brokerctl_tx_commit"), "count\n0\n");
  tmux.Type("commit");
  tmux.WaitFor("COMMIT");
  tmux.Type("\\q");
  tmux.WaitFor("brokerctl exited 0");
  EXPECT_EQ(Query("SELECT id, v FROM brokerctl_tx_commit ORDER BY id"), "id,v\n1,one\n2,two\n");
}

TEST_F(BrokerctlTerminalTest, TxRollbackDiscardsAndQuitRollsBackAnOpenTransaction) {
  ASSERT_NO_FATAL_FAILURE(StartBroker());
  Query("DROP TABLE IF EXISTS brokerctl_tx_rollback");
  Query("CREATE TABLE brokerctl_tx_rollback (id int)");
  Tmux tmux(Brokerctl("tx --idle-limit 60s"), 100, 30);
  tmux.WaitFor("tx*>");
  tmux.Type("INSERT INTO brokerctl_tx_rollback VALUES (1)");
  tmux.WaitFor("INSERT 0 1");
  tmux.Type("rollback");
  tmux.WaitFor("ROLLBACK");
  // The next statement begins a new transaction; \q rolls it back.
  tmux.Type("INSERT INTO brokerctl_tx_rollback VALUES (2)");
  tmux.WaitFor("BEGIN");
  tmux.Type("\\q");
  tmux.WaitFor("ROLLBACK (the open transaction was rolled back on exit)");
  tmux.WaitFor("brokerctl exited 0");
  EXPECT_EQ(Query("SELECT count(*) FROM brokerctl_tx_rollback"), "count\n0\n");
}

TEST_F(BrokerctlTerminalTest, TxWarnsBeforeTheIdleLimitAndReportsTheBrokersRollback) {
  ASSERT_NO_FATAL_FAILURE(StartBroker({{"BROKER_TX_IDLE_TIMEOUT", "3"}}));
  Query("DROP TABLE IF EXISTS brokerctl_tx_idle");
  Query("CREATE TABLE brokerctl_tx_idle (id int)");
  Tmux tmux(Brokerctl("tx --idle-limit 3s --warn-before 2s"), 120, 30);
  tmux.WaitFor("tx*>");
  tmux.Type("INSERT INTO brokerctl_tx_idle VALUES (1)");
  tmux.WaitFor("INSERT 0 1");
  // Each message is waited for by its last line: the terminal may be read
  // while brokerctl is still writing the lines before it.
  std::string screen = tmux.WaitFor("Run a statement, commit or rollback within");
  EXPECT_THAT(screen, HasSubstr("warning: the transaction has been idle for"));
  EXPECT_THAT(screen, HasSubstr("the broker rolls it back after 3.0s idle"));
  screen = tmux.WaitFor("The next statement begins a new transaction.");
  EXPECT_THAT(screen, HasSubstr("The broker rolled back the transaction:"));
  EXPECT_THAT(screen, HasSubstr("BROKER_TX_IDLE_TIMEOUT"));
  EXPECT_THAT(screen, HasSubstr("Nothing of it was committed."));
  // Back to no transaction: commit has nothing to commit.
  tmux.Type("commit");
  tmux.WaitFor("no transaction is open");
  tmux.Type("\\q");
  tmux.WaitFor("brokerctl exited 0");
  EXPECT_EQ(Query("SELECT count(*) FROM brokerctl_tx_idle"), "count\n0\n");
}

TEST_F(BrokerctlTerminalTest, TxShowsSqlErrorsAndKeepsGoing) {
  ASSERT_NO_FATAL_FAILURE(StartBroker());
  Tmux tmux(Brokerctl("tx --idle-limit 60s"), 100, 30);
  tmux.WaitFor("tx*>");
  tmux.Type("SELECT 1/0");
  std::string screen = tmux.WaitFor("SQLSTATE:  22012");
  EXPECT_THAT(screen, HasSubstr("ERROR:  division by zero"));
  tmux.WaitFor("The transaction is aborted: type rollback.");
  tmux.Type("rollback");
  tmux.WaitFor("ROLLBACK");
  tmux.Type("SELECT 'still here' AS s");
  tmux.WaitFor("still here");
  tmux.Type("\\q");
  tmux.WaitFor("brokerctl exited 0");
}

TEST_F(BrokerctlTerminalTest, TxExitsFourWhenAnOperatorEndsItsSession) {
  ASSERT_NO_FATAL_FAILURE(StartBroker());
  Tmux tmux(Brokerctl("tx --idle-limit 60s"), 100, 30);
  const std::string screen = tmux.WaitFor("tx*>");
  const size_t at = screen.find("session ");
  ASSERT_NE(at, std::string::npos);
  const std::string name = screen.substr(at + 8, screen.find(':', at) - at - 8);
  std::string out;
  ASSERT_EQ(RunCommand(Brokerctl("sessions end " + name), &out), 0) << out;
  tmux.Type("SELECT 1");
  tmux.WaitFor("FAILED_PRECONDITION");
  tmux.WaitFor("brokerctl exited 4");
}

// The row of the watch screen that starts with "  [": the pool's bar.
std::string BarLine(const std::string& screen) {
  for (absl::string_view line : absl::StrSplit(screen, '\n')) {
    if (absl::StartsWith(line, "  [")) return std::string(line);
  }
  return "";
}

TEST_F(BrokerctlTerminalTest, WatchShowsThePoolFollowsResizesAndQuitsOnQ) {
  ASSERT_NO_FATAL_FAILURE(StartBroker());
  Query("SELECT 1");  // a checkout, so percentiles have a sample
  Tmux tmux(Brokerctl("--client-id watcher-test watch --interval 200ms"), 120, 40);
  // The last sparkline row: ncurses may be read mid-redraw, top to bottom.
  std::string screen = tmux.WaitFor("stmt p99 ms");
  EXPECT_THAT(screen, HasSubstr("Connections"));
  // The default broker: DB_POOL_SIZE 5, 2 of them pipelined (the line goes
  // on ", + 2 pipelined)" past 120 columns), overflow 10.
  EXPECT_THAT(screen, HasSubstr("effective limit 13 (pool 3 + overflow 10"));
  EXPECT_THAT(screen, HasSubstr("waiters 0  oldest wait 0s"));
  EXPECT_THAT(screen, HasSubstr("Checkout wait   p50"));
  EXPECT_THAT(screen, HasSubstr("statements/s"));
  EXPECT_THAT(screen, HasSubstr("▁"));  // sparklines in a UTF-8 terminal
  const std::string wide_bar = BarLine(screen);
  // 120 columns: a bar of 60 cells.
  EXPECT_EQ(wide_bar.find(']'), 3u + 60u) << wide_bar;

  ASSERT_EQ(tmux.Run("resize-window -t t -x 60 -y 20"), 0);
  // 60 columns: a bar of 10 cells.
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  std::string narrow;
  while (absl::Now() < give_up) {
    narrow = tmux.Screen();
    if (BarLine(narrow).find(']') == 3u + 10u) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(BarLine(narrow).find(']'), 3u + 10u) << narrow;
  EXPECT_THAT(narrow, HasSubstr("Connections"));

  tmux.Key("q");
  tmux.WaitFor("brokerctl exited 0");
}

TEST_F(BrokerctlTerminalTest, WatchAndStatusShowThePipelinedEngine) {
  ASSERT_NO_FATAL_FAILURE(
      StartBroker({{"BROKER_PIPELINE_CONNECTIONS", "2"}, {"BROKER_PIPELINE_LOOPS", "2"}}));
  Tmux tmux(Brokerctl("watch --interval 200ms"), 160, 40);
  std::string screen = tmux.WaitFor("connections up on 2 loops");
  EXPECT_THAT(screen, HasSubstr("Pipeline        "));
  EXPECT_THAT(screen, HasSubstr("(depth 16)"));
  tmux.Key("q");
  tmux.WaitFor("brokerctl exited 0");
  std::string out;
  ASSERT_EQ(RunCommand(Brokerctl("status"), &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("connections up on 2 loops, depth 16"));
  EXPECT_THAT(out, HasSubstr("statements per flush (recent)"));
}

TEST_F(BrokerctlTerminalTest, WatchPrintsLinesOnATerminalNcursesDoesNotKnow) {
  ASSERT_NO_FATAL_FAILURE(StartBroker({{"BROKER_DRAIN_SECONDS", "0"}}));
  Tmux tmux(absl::StrCat("env TERM=no-such-terminal ", SB_BROKERCTL_BINARY, " --target ",
                         broker_->address(), " watch --interval 100ms"),
            160, 20);
  std::string screen = tmux.WaitFor(" open=");
  EXPECT_THAT(screen, HasSubstr("unknown to ncurses; printing lines"));
  // The broker's shutdown ends the stream, and brokerctl with it.
  EXPECT_EQ(broker_->SignalAndWait(SIGTERM, absl::Seconds(30)), 0);
  tmux.WaitFor("brokerctl exited 0");
}

}  // namespace
