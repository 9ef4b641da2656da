#include "server/core/auth/clients_file_watcher.h"

#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/base/clock.h"
#include "server/core/base/timer_queue.h"

namespace sessionbroker::core {
namespace {

constexpr char kHashA[] = "$argon2id$v=19$m=65536,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNo";
constexpr char kHashB[] = "$argon2id$v=19$m=65536,t=2,p=1$c2FsdHNhbHRzYWx0$b3RoZXJoYXNo";

std::string OneClient(const std::string& id, const std::string& hash) {
  return absl::StrCat("clients:\n  - id: ", id, "\n    token_hashes: [\"", hash, "\"]\n");
}

class ClientsFileWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/sb-clients-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
    path_ = dir_ + "/clients.yaml";
  }
  void TearDown() override {
    std::remove(path_.c_str());
    std::remove((path_ + ".new").c_str());
    ::rmdir(dir_.c_str());
  }
  // Writes a new version by rename, as editors and ConfigMaps do.
  void Write(const std::string& text) {
    const std::string temp = path_ + ".new";
    std::ofstream(temp) << text;
    ASSERT_EQ(std::rename(temp.c_str(), path_.c_str()), 0);
  }

  std::string dir_;
  std::string path_;
  FakeClock clock_;
  TimerQueue timers_{clock_};
};

TEST_F(ClientsFileWatcherTest, LoadNamesThePathAndTheProblem) {
  absl::Status missing = ClientsFileWatcher::Load(path_).status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.message(), ::testing::HasSubstr("BROKER_CLIENTS_FILE"));
  Write("clients: [{id: a}]");
  absl::Status bad = ClientsFileWatcher::Load(path_).status();
  EXPECT_THAT(bad.message(), ::testing::HasSubstr(path_));
  EXPECT_THAT(bad.message(), ::testing::HasSubstr("has no credential"));
}

TEST_F(ClientsFileWatcherTest, ChangedFileReplacesTheDirectoryOnTheNextTick) {
  Write(OneClient("alpha", kHashA));
  ClientsFileWatcher::FileStamp stamp;
  absl::StatusOr<std::shared_ptr<const ClientDirectory>> first =
      ClientsFileWatcher::Load(path_, &stamp);
  ASSERT_TRUE(first.ok()) << first.status();
  Authenticator auth(*first);
  ClientsFileWatcher watcher(path_, stamp, auth, timers_, clock_, absl::Seconds(1));
  watcher.Start();
  clock_.Advance(absl::Seconds(1));
  timers_.RunDue();
  EXPECT_EQ(watcher.reloads(), 0);  // unchanged

  Write(OneClient("beta", kHashB));
  clock_.Advance(absl::Seconds(1));
  timers_.RunDue();
  EXPECT_EQ(watcher.reloads(), 1);
  EXPECT_EQ(auth.directory()->Find("alpha"), nullptr);
  EXPECT_NE(auth.directory()->Find("beta"), nullptr);
}

TEST_F(ClientsFileWatcherTest, BrokenFileKeepsThePreviousClients) {
  Write(OneClient("alpha", kHashA));
  ClientsFileWatcher::FileStamp stamp;
  Authenticator auth(*ClientsFileWatcher::Load(path_, &stamp));
  ClientsFileWatcher watcher(path_, stamp, auth, timers_, clock_, absl::Seconds(1));
  Write("clients: [ {id: alpha, token_hashes: [plain-text-token-xxxxxxxx]} ]");
  EXPECT_FALSE(watcher.CheckNow());
  EXPECT_EQ(watcher.failed_reloads(), 1);
  EXPECT_FALSE(watcher.CheckNow());  // the same broken version: not again
  EXPECT_EQ(watcher.failed_reloads(), 1);
  EXPECT_NE(auth.directory()->Find("alpha"), nullptr);
  std::remove(path_.c_str());
  EXPECT_FALSE(watcher.CheckNow());
  EXPECT_NE(auth.directory()->Find("alpha"), nullptr);
  Write(OneClient("gamma", kHashB));  // fixed: taken
  EXPECT_TRUE(watcher.CheckNow());
  EXPECT_NE(auth.directory()->Find("gamma"), nullptr);
}

}  // namespace
}  // namespace sessionbroker::core
