#include "server/config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sessionbroker {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

EnvMap WithUrl(EnvMap env) {
  env.emplace("DATABASE_URL", "postgresql://app:secret@db:5432/app");
  return env;
}

TEST(ConfigTest, DefaultsMatchTheDocumentedOnes) {
  absl::StatusOr<Config> c = LoadConfig(WithUrl({}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->listen_addr, "127.0.0.1:50051");
  EXPECT_EQ(c->metrics_addr, "127.0.0.1:9464");
  EXPECT_EQ(c->pool.pool_size, 5);
  EXPECT_EQ(c->pool.max_overflow, 10);
  EXPECT_EQ(c->pool.timeout, absl::Seconds(30));
  EXPECT_EQ(c->pool.recycle, absl::Seconds(3600));
  EXPECT_TRUE(c->pool.pre_ping);
  EXPECT_EQ(c->pool.max_waiters, 1000);
  EXPECT_FALSE(c->echo);
  EXPECT_EQ(c->max_result_bytes, 4u << 20);
  EXPECT_EQ(c->shutdown_grace, absl::Seconds(15));
  EXPECT_EQ(c->log_level, "info");
  EXPECT_EQ(c->log_format, "text");
}

TEST(ConfigTest, ReadsEveryKnob) {
  absl::StatusOr<Config> c = LoadConfig(WithUrl({{"BROKER_LISTEN_ADDR", "0.0.0.0:6000"},
                                                 {"BROKER_METRICS_ADDR", "0.0.0.0:9100"},
                                                 {"DB_POOL_SIZE", "3"},
                                                 {"DB_MAX_OVERFLOW", "2"},
                                                 {"DB_POOL_TIMEOUT", "0.5"},
                                                 {"DB_POOL_RECYCLE", "1800"},
                                                 {"DB_POOL_PRE_PING", "off"},
                                                 {"DB_POOL_MAX_WAITERS", "7"},
                                                 {"DB_ECHO", "true"},
                                                 {"BROKER_MAX_RESULT_BYTES", "2048"},
                                                 {"BROKER_STATEMENT_CACHE_SIZE", "0"},
                                                 {"BROKER_MAX_STATEMENT_DURATION", "60"},
                                                 {"BROKER_HEALTH_CHECK_INTERVAL", "0.25"},
                                                 {"BROKER_SHUTDOWN_GRACE_SECONDS", "3"},
                                                 {"LOG_LEVEL", "DEBUG"},
                                                 {"LOG_FORMAT", "json"}}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->listen_addr, "0.0.0.0:6000");
  EXPECT_EQ(c->metrics_addr, "0.0.0.0:9100");
  EXPECT_EQ(c->pool.pool_size, 3);
  EXPECT_EQ(c->pool.max_overflow, 2);
  EXPECT_EQ(c->pool.timeout, absl::Milliseconds(500));
  EXPECT_EQ(c->pool.recycle, absl::Seconds(1800));
  EXPECT_FALSE(c->pool.pre_ping);
  EXPECT_EQ(c->pool.max_waiters, 7);
  EXPECT_TRUE(c->echo);
  EXPECT_EQ(c->max_result_bytes, 2048u);
  EXPECT_EQ(c->statement_cache_size, 0);
  EXPECT_EQ(c->max_statement_duration, absl::Seconds(60));
  EXPECT_EQ(c->health_check_interval, absl::Milliseconds(250));
  EXPECT_EQ(c->shutdown_grace, absl::Seconds(3));
  EXPECT_EQ(c->log_level, "debug");
  EXPECT_EQ(c->log_format, "json");
}

TEST(ConfigTest, RecycleMinusOneDisablesRecycling) {
  absl::StatusOr<Config> c = LoadConfig(WithUrl({{"DB_POOL_RECYCLE", "-1"}}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->pool.recycle, absl::InfiniteDuration());
}

TEST(ConfigTest, MissingDatabaseUrlIsAnErrorThatSaysWhatToSet) {
  absl::StatusOr<Config> c = LoadConfig({});
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("DATABASE_URL"));
}

TEST(ConfigTest, BadValuesAreErrorsNamingTheVariable) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"DB_POOL_SIZE", "0"},
      {"DB_POOL_SIZE", "five"},
      {"DB_MAX_OVERFLOW", "-1"},
      {"DB_POOL_TIMEOUT", "0"},
      {"DB_POOL_TIMEOUT", "soon"},
      {"DB_POOL_RECYCLE", "-2"},
      {"DB_POOL_RECYCLE", "0"},
      {"DB_POOL_PRE_PING", "maybe"},
      {"DB_ECHO", "loud"},
      {"DB_POOL_MAX_WAITERS", "-5"},
      {"BROKER_MAX_RESULT_BYTES", "10"},
      {"BROKER_LISTEN_ADDR", "nowhere"},
      {"BROKER_LISTEN_ADDR", "host:99999"},
      {"LOG_LEVEL", "chatty"},
      {"BROKER_METRICS_ADDR", "9464"},
      {"BROKER_METRICS_ADDR", "localhost:http"},
      {"BROKER_METRICS_ADDR", ":9464"},
      {"BROKER_METRICS_ADDR", "[::1:9464"},
      {"BROKER_METRICS_ADDR", "on"},
      {"LOG_FORMAT", "xml"},
      {"BROKER_SHUTDOWN_GRACE_SECONDS", "-1"},
      {"BROKER_HEALTH_CHECK_INTERVAL", "0"},
      {"BROKER_STATEMENT_CACHE_SIZE", "-1"},
      {"BROKER_STATEMENT_CACHE_SIZE", "lots"}};
  for (const auto& [name, value] : bad) {
    absl::StatusOr<Config> c = LoadConfig(WithUrl({{name, value}}));
    EXPECT_FALSE(c.ok()) << name << "=" << value;
    EXPECT_THAT(c.status().message(), HasSubstr(name));
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(ConfigTest, MetricsAddrOffOrEmptyDisablesTheHttpEndpoint) {
  for (const std::string value : {"off", "OFF", "", "  "}) {
    absl::StatusOr<Config> c = LoadConfig(WithUrl({{"BROKER_METRICS_ADDR", value}}));
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->metrics_addr, "") << "'" << value << "'";
  }
}

TEST(ConfigTest, MetricsAddrAcceptsIpv6InBrackets) {
  absl::StatusOr<Config> c = LoadConfig(WithUrl({{"BROKER_METRICS_ADDR", "[::1]:9464"}}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->metrics_addr, "[::1]:9464");
  std::string host;
  int port = 0;
  ASSERT_TRUE(ParseHostPort(c->metrics_addr, &host, &port));
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 9464);
}

TEST(ConfigTest, EmptyValuesCountAsUnset) {
  absl::StatusOr<Config> c = LoadConfig(WithUrl({{"DB_POOL_SIZE", ""}}));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->pool.pool_size, 5);
}

TEST(ConfigTest, EnvFileParsesCommentsQuotesAndExport) {
  absl::StatusOr<EnvMap> env = ParseEnvFile(
      "# a comment\n"
      "\n"
      "DB_POOL_SIZE=3\n"
      "export DB_MAX_OVERFLOW = 2\n"
      "DATABASE_URL=\"postgresql://u:p@h/db\"\n"
      "LOG_LEVEL='debug'\n"
      "DB_ECHO=true # trailing comment\n");
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->at("DB_POOL_SIZE"), "3");
  EXPECT_EQ(env->at("DB_MAX_OVERFLOW"), "2");
  EXPECT_EQ(env->at("DATABASE_URL"), "postgresql://u:p@h/db");
  EXPECT_EQ(env->at("LOG_LEVEL"), "debug");
  EXPECT_EQ(env->at("DB_ECHO"), "true");
}

TEST(ConfigTest, MalformedEnvFileLineIsAnErrorWithItsLineNumber) {
  absl::StatusOr<EnvMap> env = ParseEnvFile("DB_POOL_SIZE=3\nnot a setting\n");
  ASSERT_FALSE(env.ok());
  EXPECT_THAT(env.status().message(), HasSubstr("line 2"));
}

TEST(ConfigTest, SessionDefaultsMatchTheDocumentedOnes) {
  absl::StatusOr<Config> c = LoadConfig(WithUrl({}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->sessions.default_ttl, absl::Seconds(60));
  EXPECT_EQ(c->sessions.max_ttl, absl::Hours(1));
  EXPECT_EQ(c->sessions.max_lifetime, absl::Hours(24));
  EXPECT_EQ(c->sessions.tx_idle_timeout, absl::Seconds(10));
  EXPECT_EQ(c->sessions.tx_max_duration, absl::Minutes(5));
  EXPECT_EQ(c->sessions.orphan_grace, absl::Seconds(5));
  EXPECT_EQ(c->sessions.max_sessions, 10000);
  EXPECT_EQ(c->sessions.max_sessions_per_client, 5000);
  EXPECT_EQ(c->sessions.max_queued_calls, 16);
}

TEST(ConfigTest, ReadsEverySessionKnob) {
  absl::StatusOr<Config> c = LoadConfig(WithUrl({{"BROKER_SESSION_DEFAULT_TTL", "30"},
                                                 {"BROKER_SESSION_MAX_TTL", "120"},
                                                 {"BROKER_SESSION_MAX_LIFETIME", "3600"},
                                                 {"BROKER_TX_IDLE_TIMEOUT", "0.5"},
                                                 {"BROKER_TX_MAX_DURATION", "60"},
                                                 {"BROKER_SESSION_ORPHAN_GRACE", "0"},
                                                 {"BROKER_MAX_SESSIONS", "100"},
                                                 {"BROKER_MAX_SESSIONS_PER_CLIENT", "0"},
                                                 {"BROKER_SESSION_MAX_QUEUED_CALLS", "4"}}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->sessions.default_ttl, absl::Seconds(30));
  EXPECT_EQ(c->sessions.max_ttl, absl::Seconds(120));
  EXPECT_EQ(c->sessions.max_lifetime, absl::Hours(1));
  EXPECT_EQ(c->sessions.tx_idle_timeout, absl::Milliseconds(500));
  EXPECT_EQ(c->sessions.tx_max_duration, absl::Minutes(1));
  EXPECT_EQ(c->sessions.orphan_grace, absl::ZeroDuration());
  EXPECT_EQ(c->sessions.max_sessions, 100);
  EXPECT_EQ(c->sessions.max_sessions_per_client, 0);
  EXPECT_EQ(c->sessions.max_queued_calls, 4);
}

TEST(ConfigTest, BadSessionValuesAreErrorsNamingTheVariable) {
  for (const auto& [name, value] : std::vector<std::pair<std::string, std::string>>{
           {"BROKER_SESSION_DEFAULT_TTL", "0"},
           {"BROKER_TX_IDLE_TIMEOUT", "soon"},
           {"BROKER_MAX_SESSIONS", "0"},
           {"BROKER_SESSION_MAX_QUEUED_CALLS", "-1"}}) {
    absl::StatusOr<Config> c = LoadConfig(WithUrl({{name, value}}));
    ASSERT_FALSE(c.ok()) << name;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(c.status().message(), HasSubstr(name));
  }
  absl::StatusOr<Config> c = LoadConfig(
      WithUrl({{"BROKER_SESSION_DEFAULT_TTL", "600"}, {"BROKER_SESSION_MAX_TTL", "60"}}));
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("BROKER_SESSION_MAX_TTL"));
}

TEST(ConfigTest, RedactUrlHidesPasswords) {
  // libpq parses the string; the redacted form is key=value pairs.
  EXPECT_EQ(RedactUrl("postgresql://app:secret@db:5432/app"),
            "host=db port=5432 dbname=app user=app password=***");
  EXPECT_EQ(RedactUrl("postgresql://app@db/app"), "host=db dbname=app user=app");
  EXPECT_EQ(RedactUrl("host=db user=app password=secret"), "host=db user=app password=***");
  EXPECT_EQ(RedactUrl("postgresql://db/app?user=app&password=secret&sslmode=require"),
            "host=db dbname=app user=app password=*** sslmode=require");
  EXPECT_EQ(RedactUrl("host=db password = s3cretpw user=app"), "host=db user=app password=***");
  EXPECT_EQ(RedactUrl("host=db password='a b\\'c' user=app"), "host=db user=app password=***");
  EXPECT_EQ(RedactUrl("postgresql://app:p@ss@db/app"),
            "host=***@db dbname=app user=app password=***");
  EXPECT_THAT(RedactUrl("postgresql://app:Pa%zzss@db/app"), Not(HasSubstr("Pa")));
}

}  // namespace
}  // namespace sessionbroker
