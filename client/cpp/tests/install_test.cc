// The installed package as another project uses it: `cmake --install` of
// this build into a temporary prefix, a consumer project
// (client/cpp/tests/consumer) configured with find_package(SessionBroker)
// against it, and the docs' example (client/cpp/examples/quickstart.cc,
// which docs/clients.md shows verbatim) built there and run against the real
// broker and PostgreSQL.
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/broker_fixture.h"
#include "tests/support/broker_process.h"

namespace sessionbroker {
namespace {

using ::sessionbroker::testing::RunCommand;
using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string Quote(const std::string& s) { return absl::StrCat("'", s, "'"); }

TEST(DocsExampleTest, ClientsMdShowsTheExampleVerbatim) {
  std::string doc = ReadFile(SB_SOURCE_DIR "/docs/clients.md");
  std::string example = ReadFile(SB_SOURCE_DIR "/client/cpp/examples/quickstart.cc");
  ASSERT_FALSE(example.empty());
  EXPECT_THAT(doc, HasSubstr(absl::StrCat("```cpp\n", example, "```\n")))
      << "docs/clients.md must show client/cpp/examples/quickstart.cc as it is";
}

class InstallTest : public testing::BrokerFixture {};

TEST_F(InstallTest, AnotherProjectBuildsTheExampleAgainstTheInstalledPackageAndRunsIt) {
  char dir_template[] = "/tmp/sb-cpp-install.XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  const std::string prefix = dir + "/prefix";
  std::string out;
  ASSERT_EQ(RunCommand(absl::StrCat(SB_CMAKE, " --install ", Quote(SB_BINARY_DIR),
                                    " --component client --prefix ", Quote(prefix), " 2>&1"),
                       &out),
            0)
      << out;
  // Only the client's files: headers, libraries, the package config.
  ASSERT_EQ(RunCommand(absl::StrCat("cd ", Quote(prefix), " && find . -type f | sort"), &out), 0);
  EXPECT_THAT(out, HasSubstr("include/sessionbroker/client.h"));
  EXPECT_THAT(out, HasSubstr("include/sessionbroker/v1/broker.pb.h"));
  EXPECT_THAT(out, HasSubstr("cmake/SessionBroker/SessionBrokerConfig.cmake"));
  EXPECT_THAT(out, ::testing::Not(HasSubstr("session-broker")));

  ASSERT_EQ(
      RunCommand(absl::StrCat(SB_CMAKE, " -S ", Quote(SB_SOURCE_DIR "/client/cpp/tests/consumer"),
                              " -B ", Quote(dir + "/build"), " -G ", Quote(SB_GENERATOR),
                              " -DCMAKE_CXX_COMPILER=", Quote(SB_CXX_COMPILER),
                              " -DCMAKE_CXX_COMPILER_LAUNCHER=", Quote(SB_CXX_LAUNCHER),
                              " -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH=", Quote(prefix),
                              " -DEXAMPLE_SOURCE=",
                              Quote(SB_SOURCE_DIR "/client/cpp/examples/quickstart.cc"), " 2>&1"),
                 &out),
      0)
      << out;
  ASSERT_EQ(RunCommand(absl::StrCat(SB_CMAKE, " --build ", Quote(dir + "/build"), " 2>&1"), &out),
            0)
      << out;

  StartBroker();
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_EQ(RunCommand(absl::StrCat(Quote(dir + "/build/quickstart"), " ",
                                    Quote(broker_->address()), " 2>&1"),
                       &out),
            0)
      << out;
  EXPECT_EQ(out,
            "1 alice 70.00 -\n"
            "2 bob 50.00 new\n"
            "SELECT 100000 5000050000\n"
            "accounts changed\n"
            "ALREADY_EXISTS 23505 accounts_pkey\n");
  Admin("DROP TABLE IF EXISTS accounts");
  RunCommand(absl::StrCat("rm -rf ", Quote(dir)));
}

}  // namespace
}  // namespace sessionbroker
