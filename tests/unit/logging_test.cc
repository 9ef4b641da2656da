#include "server/logging.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/base/log_fields.h"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"

namespace sessionbroker {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Logs one line through the formatter for `format` and returns it.
template <class... Args>
std::string LogLine(const std::string& format, spdlog::format_string_t<Args...> fmt,
                    Args&&... args) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_st>(out);
  spdlog::logger logger("test", sink);
  logger.set_formatter(MakeLogFormatter(format));
  logger.warn(fmt, std::forward<Args>(args)...);
  return out.str();
}

// core::Quoted in the style InitLogging sets for the format, restored after.
class LogFormatTest : public ::testing::Test {
 protected:
  explicit LogFormatTest(core::LogFieldStyle style) : previous_(core::GetLogFieldStyle()) {
    core::SetLogFieldStyle(style);
  }
  ~LogFormatTest() override { core::SetLogFieldStyle(previous_); }

 private:
  core::LogFieldStyle previous_;
};

class JsonLogTest : public LogFormatTest {
 protected:
  JsonLogTest() : LogFormatTest(core::LogFieldStyle::kMarked) {}
};

class TextLogTest : public LogFormatTest {
 protected:
  TextLogTest() : LogFormatTest(core::LogFieldStyle::kText) {}
};

// `expression` evaluated by python3 with `d` the JSON object parsed from
// `line` by its json module, printed with ascii() (repr with non-ASCII
// characters escaped) so the test sees exactly what the parser saw.
std::string ParsedByPython(const std::string& line, const std::string& expression) {
  // ctest runs test cases as concurrent processes: files of their own.
  const std::string dir = ::testing::TempDir() + "/logging_test." +
                          ::testing::UnitTest::GetInstance()->current_test_info()->name() + "." +
                          std::to_string(getpid());
  EXPECT_TRUE(mkdir(dir.c_str(), 0700) == 0 || errno == EEXIST) << dir;
  std::ofstream(dir + "/logging_test_line.json", std::ios::binary) << line;
  std::ofstream(dir + "/logging_test_expression.py") << expression;
  std::ofstream(dir + "/logging_test_parse.py")
      << "import json, sys\n"
         "d = json.loads(open(sys.argv[1], encoding='utf-8').read())\n"
         "print(ascii(eval(open(sys.argv[2]).read())), end='')\n";
  const std::string command = "python3 " + dir + "/logging_test_parse.py " + dir +
                              "/logging_test_line.json " + dir + "/logging_test_expression.py";
  FILE* pipe = popen(command.c_str(), "r");
  EXPECT_NE(pipe, nullptr);
  std::string result;
  char buffer[256];
  while (pipe != nullptr && std::fgets(buffer, sizeof(buffer), pipe) != nullptr) result += buffer;
  EXPECT_EQ(pipe == nullptr ? -1 : pclose(pipe), 0) << command;
  for (const char* file :
       {"/logging_test_line.json", "/logging_test_expression.py", "/logging_test_parse.py"}) {
    std::remove((dir + file).c_str());
  }
  rmdir(dir.c_str());
  return result;
}

TEST_F(JsonLogTest, AFieldWithAQuoteAndANewlineIsEscapedOnceAndRoundTrips) {
  const std::string line =
      LogLine("json", "pool: event=connect_failed failures_in_row={} error={} retry_in={}", 3,
              core::Quoted("could not connect to \"db\"\n\tis it running?"), "104ms");
  // Escaped once: no text escapes (\\\") inside the JSON escapes.
  EXPECT_THAT(line, HasSubstr(R"("error":"could not connect to \"db\"\n\tis it running?")"));
  EXPECT_THAT(line, Not(HasSubstr(R"(\\)")));
  EXPECT_EQ(line.back(), '\n');
  EXPECT_EQ(ParsedByPython(line, "d['error']"), R"('could not connect to "db"\n\tis it running?')");
  EXPECT_EQ(ParsedByPython(line, "d['msg']"),
            "'pool: event=connect_failed failures_in_row=3 retry_in=104ms'");
  EXPECT_EQ(ParsedByPython(line, "sorted(d)"), "['error', 'level', 'msg', 'thread', 'ts']");
  EXPECT_EQ(ParsedByPython(line, "d['level']"), "'warning'");
}

TEST_F(JsonLogTest, SeveralFieldsEachBecomeAMember) {
  const std::string line = LogLine("json", "pool: event=checkout_timeout client={} error={}",
                                   core::Quoted("billing \"eu\""), core::Quoted(""));
  EXPECT_EQ(ParsedByPython(line, "(d['msg'], d['client'], d['error'])"),
            R"(('pool: event=checkout_timeout', 'billing "eu"', ''))");
}

TEST_F(JsonLogTest, AFieldWithoutAUsableKeyStaysInTheMessageAsInTextLogs) {
  // No key before it, a key JSON logs already use, a repeated key.
  const std::string line = LogLine("json", "{} msg={} a={} a={}", core::Quoted("x\"y"),
                                   core::Quoted("m"), core::Quoted("1"), core::Quoted("2"));
  EXPECT_EQ(ParsedByPython(line, "(d['msg'], d['a'])"), R"(('"x\\"y" msg="m" a="2"', '1'))");
}

TEST_F(JsonLogTest, InvalidUtf8AndControlCharactersStillMakeValidJson) {
  const std::string line =
      LogLine("json", "event=x error={} note={}", core::Quoted(std::string("\xFF\x01\x1e", 3)),
              std::string("\x02 raw"));
  EXPECT_EQ(ParsedByPython(line, "(d['msg'], d['error'])"),
            R"(('event=x note=\x02 raw', '\ufffd\x01?'))");
}

TEST_F(TextLogTest, OrdinaryFieldsReadAsBefore) {
  const std::string line = LogLine("text", "pool: event=checkout_timeout client={} code={}",
                                   core::Quoted("billing"), "RESOURCE_EXHAUSTED");
  EXPECT_TRUE(std::regex_match(
      line,
      std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z warning \[\d+\] )"
                 R"(pool: event=checkout_timeout client="billing" code=RESOURCE_EXHAUSTED\n)")))
      << line;
}

TEST_F(TextLogTest, FieldsAreTextEscaped) {
  const std::string line = LogLine("text", "error={}", core::Quoted("a \"b\"\nc"));
  EXPECT_THAT(line, HasSubstr(R"(error="a \"b\"\nc")"));
}

TEST_F(TextLogTest, ANewlineInARawFieldCannotForgeALogLine) {
  // A session label as a caller sent it, logged without Quoted.
  const std::string label =
      "x\n2026-12-02T00:00:00.000000Z info  [1] session admin: role granted\r\x01";
  const std::string line = LogLine("text", "session {} ({}) ended: {}", "s1", label, "why");
  EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1) << line;
  EXPECT_EQ(line.back(), '\n');
  EXPECT_THAT(line,
              HasSubstr(R"(session s1 (x\n2026-12-02T00:00:00.000000Z info  [1] session admin: )"
                        R"(role granted\r?) ended: why)"));
}

}  // namespace
}  // namespace sessionbroker
