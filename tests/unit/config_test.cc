#include "server/config.h"

#include <cstdio>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
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
  EXPECT_EQ(c->drain, absl::Seconds(10));
  EXPECT_EQ(c->shutdown_grace, absl::Seconds(10));
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
                                                 {"BROKER_EXPECTED_REPLICAS", "4"},
                                                 {"DB_ECHO", "true"},
                                                 {"BROKER_MAX_RESULT_BYTES", "2048"},
                                                 {"BROKER_STATEMENT_CACHE_SIZE", "0"},
                                                 {"BROKER_MAX_STATEMENT_DURATION", "60"},
                                                 {"BROKER_HEALTH_CHECK_INTERVAL", "0.25"},
                                                 {"BROKER_DRAIN_SECONDS", "0"},
                                                 {"BROKER_SHUTDOWN_GRACE_SECONDS", "3"},
                                                 {"LOG_LEVEL", "DEBUG"},
                                                 {"LOG_FORMAT", "json"},
                                                 {"BROKER_TLS_CERT", "/tls/tls.crt"},
                                                 {"BROKER_TLS_KEY", "/tls/tls.key"},
                                                 {"BROKER_TLS_CLIENT_CA", "/tls/ca.crt"},
                                                 {"BROKER_TLS_CLIENT_AUTH", "Optional"},
                                                 {"BROKER_TLS_RELOAD_SECONDS", "2"},
                                                 {"BROKER_METRICS_TLS", "true"}}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->tls_cert, "/tls/tls.crt");
  EXPECT_EQ(c->tls_key, "/tls/tls.key");
  EXPECT_EQ(c->tls_client_ca, "/tls/ca.crt");
  EXPECT_EQ(c->tls_client_auth, "optional");
  EXPECT_EQ(c->tls_reload_seconds, 2);
  EXPECT_TRUE(c->metrics_tls);
  EXPECT_FALSE(c->allow_insecure);
  EXPECT_EQ(c->listen_addr, "0.0.0.0:6000");
  EXPECT_EQ(c->metrics_addr, "0.0.0.0:9100");
  EXPECT_EQ(c->pool.pool_size, 3);
  EXPECT_EQ(c->pool.max_overflow, 2);
  EXPECT_EQ(c->pool.timeout, absl::Milliseconds(500));
  EXPECT_EQ(c->pool.recycle, absl::Seconds(1800));
  EXPECT_FALSE(c->pool.pre_ping);
  EXPECT_EQ(c->pool.max_waiters, 7);
  EXPECT_EQ(c->pool.expected_replicas, 4);
  EXPECT_TRUE(c->echo);
  EXPECT_EQ(c->max_result_bytes, 2048u);
  EXPECT_EQ(c->statement_cache_size, 0);
  EXPECT_EQ(c->max_statement_duration, absl::Seconds(60));
  EXPECT_EQ(c->health_check_interval, absl::Milliseconds(250));
  EXPECT_EQ(c->drain, absl::ZeroDuration());
  EXPECT_EQ(c->shutdown_grace, absl::Seconds(3));
  EXPECT_EQ(c->log_level, "debug");
  EXPECT_EQ(c->log_format, "json");
}

TEST(ConfigTest, RequestLimitsDefaultToTheDocumentedOnesAndAreRead) {
  absl::StatusOr<Config> d = LoadConfig(WithUrl({}));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->max_request_bytes, 16u << 20);
  EXPECT_EQ(d->max_metadata_bytes, 16u << 10);
  EXPECT_EQ(d->request_limits.max_sql_bytes, 1u << 20);
  EXPECT_EQ(d->request_limits.max_statement_params, 65535u);
  EXPECT_EQ(d->request_limits.max_batch_statements, 1000u);
  EXPECT_EQ(d->max_array_depth, 6);
  absl::StatusOr<Config> c = LoadConfig(WithUrl({{"BROKER_MAX_REQUEST_BYTES", "65536"},
                                                 {"BROKER_MAX_METADATA_BYTES", "4096"},
                                                 {"BROKER_MAX_SQL_BYTES", "100"},
                                                 {"BROKER_MAX_STATEMENT_PARAMS", "10"},
                                                 {"BROKER_MAX_BATCH_STATEMENTS", "5"},
                                                 {"BROKER_MAX_ARRAY_DEPTH", "2"}}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->max_request_bytes, 65536u);
  EXPECT_EQ(c->max_metadata_bytes, 4096u);
  EXPECT_EQ(c->request_limits.max_sql_bytes, 100u);
  EXPECT_EQ(c->request_limits.max_statement_params, 10u);
  EXPECT_EQ(c->request_limits.max_batch_statements, 5u);
  EXPECT_EQ(c->max_array_depth, 2);
}

TEST(ConfigTest, RequestLimitsPastWhatPostgresOrGrpcTakeAreRefused) {
  for (const auto& [name, value] :
       std::vector<std::pair<std::string, std::string>>{{"BROKER_MAX_STATEMENT_PARAMS", "65536"},
                                                        {"BROKER_MAX_ARRAY_DEPTH", "7"},
                                                        {"BROKER_MAX_ARRAY_DEPTH", "0"},
                                                        {"BROKER_MAX_BATCH_STATEMENTS", "0"},
                                                        {"BROKER_MAX_SQL_BYTES", "0"},
                                                        {"BROKER_MAX_REQUEST_BYTES", "2147483648"},
                                                        {"BROKER_MAX_METADATA_BYTES", "100"}}) {
    absl::StatusOr<Config> c = LoadConfig(WithUrl({{name, value}}));
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << name << "=" << value;
    EXPECT_THAT(c.status().message(), HasSubstr(name));
  }
}

TEST(ConfigTest, RecycleMinusOneDisablesRecycling) {
  absl::StatusOr<Config> c = LoadConfig(WithUrl({{"DB_POOL_RECYCLE", "-1"}}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->pool.recycle, absl::InfiniteDuration());
}

TEST(ConfigTest, RequireAuthWithoutAClientsFileIsAnError) {
  absl::StatusOr<Config> c = LoadConfig(WithUrl({{"BROKER_REQUIRE_AUTH", "true"}}));
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("BROKER_CLIENTS_FILE is not set"));
  c = LoadConfig(
      WithUrl({{"BROKER_REQUIRE_AUTH", "true"}, {"BROKER_CLIENTS_FILE", "/etc/sb/clients.yaml"}}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->clients_file, "/etc/sb/clients.yaml");
  EXPECT_TRUE(c->require_auth);
}

TEST(ConfigTest, HealthAndReflectionAreExemptFromAuthenticationByDefault) {
  absl::StatusOr<Config> c = LoadConfig(WithUrl({}));
  ASSERT_TRUE(c.ok()) << c.status();
  absl::StatusOr<std::vector<std::string>> exempt = AuthExemptServices(*c);
  ASSERT_TRUE(exempt.ok()) << exempt.status();
  EXPECT_THAT(*exempt,
              ::testing::ElementsAre("grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                                     "grpc.reflection.v1alpha.ServerReflection"));
}

TEST(ConfigTest, AnEmptyExemptListMakesEveryServiceAuthenticate) {
  absl::StatusOr<Config> c = LoadConfig(WithUrl({{"BROKER_AUTH_EXEMPT_SERVICES", ""}}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(*AuthExemptServices(*c), ::testing::IsEmpty());
  c = LoadConfig(WithUrl({{"BROKER_AUTH_EXEMPT_SERVICES", " grpc.health.v1.Health , "}}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(*AuthExemptServices(*c), ::testing::ElementsAre("grpc.health.v1.Health"));
}

TEST(ConfigTest, AnUnknownOrOwnServiceInTheExemptListIsRefusedAtStart) {
  absl::StatusOr<Config> c =
      LoadConfig(WithUrl({{"BROKER_AUTH_EXEMPT_SERVICES", "grpc.health.v1.Helth"}}));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("BROKER_AUTH_EXEMPT_SERVICES"));
  EXPECT_THAT(c.status().message(), HasSubstr("\"grpc.health.v1.Helth\""));
  EXPECT_THAT(c.status().message(), HasSubstr("grpc.reflection.v1.ServerReflection"));
  c = LoadConfig(WithUrl({{"BROKER_AUTH_EXEMPT_SERVICES", "sessionbroker.v1.SessionBroker"}}));
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("always authenticate"));
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
      {"BROKER_EXPECTED_REPLICAS", "0"},
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
      {"BROKER_STATEMENT_CACHE_SIZE", "lots"},
      {"BROKER_PIPELINE_CONNECTIONS", "-1"},
      {"BROKER_PIPELINE_CONNECTIONS", "65"},
      {"BROKER_PIPELINE_CONNECTIONS", "automatic"}};
  for (const auto& [name, value] : bad) {
    absl::StatusOr<Config> c = LoadConfig(WithUrl({{name, value}}));
    EXPECT_FALSE(c.ok()) << name << "=" << value;
    EXPECT_THAT(c.status().message(), HasSubstr(name));
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(ConfigTest, PipelinedEngineIsOnByDefaultWithAQuarterOfThePoolFromTwoToFour) {
  // DB_POOL_SIZE -> hot connections with BROKER_PIPELINE_CONNECTIONS=auto:
  // never a lone one (nothing to route a slow statement around to).
  const std::vector<std::pair<int, int>> expected = {{1, 0},  {3, 0},  {4, 2},  {5, 2},  {11, 2},
                                                     {12, 3}, {15, 3}, {16, 4}, {100, 4}};
  for (const auto& [pool, hot] : expected) {
    absl::StatusOr<Config> c = LoadConfig(WithUrl({{"DB_POOL_SIZE", std::to_string(pool)}}));
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->pipeline_connections, Config::kPipelineConnectionsAuto);
    EXPECT_EQ(PipelineHotConnections(*c), hot) << "DB_POOL_SIZE=" << pool;
  }
  absl::StatusOr<Config> c = LoadConfig(WithUrl({{"BROKER_PIPELINE_CONNECTIONS", " AUTO "}}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(PipelineHotConnections(*c), 2);
}

TEST(ConfigTest, PipelinedEngineTakesAGivenNumberButLeavesThePoolOneConnection) {
  const auto hot = [](const std::string& pool, const std::string& wanted) {
    absl::StatusOr<Config> c =
        LoadConfig(WithUrl({{"DB_POOL_SIZE", pool}, {"BROKER_PIPELINE_CONNECTIONS", wanted}}));
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? PipelineHotConnections(*c) : -100;
  };
  EXPECT_EQ(hot("10", "0"), 0);  // off
  EXPECT_EQ(hot("10", "3"), 3);  // more than auto's 2
  EXPECT_EQ(hot("10", "1"), 1);  // a lone one, when asked for
  EXPECT_EQ(hot("10", "64"), 9);
  EXPECT_EQ(hot("2", "1"), 1);  // below auto's threshold, when asked for
  EXPECT_EQ(hot("1", "4"), 0);
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

TEST(ConfigTest, PortFileIsOffByDefaultAndReadWhenSet) {
  absl::StatusOr<Config> c = LoadConfig(WithUrl({}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->port_file, "");
  c = LoadConfig(WithUrl({{"BROKER_PORT_FILE", "/run/broker/ports"}}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->port_file, "/run/broker/ports");
}

TEST(ConfigTest, ErrorsKeepTheirWording) {
  EXPECT_EQ(LoadConfig(WithUrl({{"DB_POOL_SIZE", "0"}})).status().message(),
            "DB_POOL_SIZE='0' is not valid: expected an integer from 1 to 10000");
  EXPECT_EQ(LoadConfig(WithUrl({{"DB_POOL_TIMEOUT", "x"}})).status().message(),
            "DB_POOL_TIMEOUT='x' is not valid: expected a number of seconds from 0.001 to 86400");
  EXPECT_EQ(LoadConfig(WithUrl({{"DB_POOL_RECYCLE", "0"}})).status().message(),
            "DB_POOL_RECYCLE='0' is not valid: expected a number of seconds > 0, or -1 to never "
            "recycle");
  EXPECT_EQ(LoadConfig(WithUrl({{"DB_ECHO", "loud"}})).status().message(),
            "DB_ECHO='loud' is not valid: expected true or false (also 1/0, yes/no, on/off)");
  EXPECT_EQ(LoadConfig(WithUrl({{"LOG_FORMAT", "xml"}})).status().message(),
            "LOG_FORMAT='xml' is not valid: expected one of text, json");
  EXPECT_EQ(LoadConfig(WithUrl({{"BROKER_LISTEN_ADDR", "nowhere"}})).status().message(),
            "BROKER_LISTEN_ADDR='nowhere' is not valid: expected HOST:PORT, e.g. 127.0.0.1:50051 "
            "or 0.0.0.0:50051");
}

// DATABASE_URL is checked by libpq's own parser at start; the message gives
// libpq's reason and never repeats the value, which may hold a password.
TEST(ConfigTest, ADatabaseUrlLibpqCannotParseStopsTheStartWithLibpqsReason) {
  for (const char* url : {"db.example.com", "postgresql://app:s3cret@db/app?nosuchoption=1",
                          "host=db password=s3cret port"}) {
    const absl::Status s = LoadConfig({{"DATABASE_URL", url}}).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << url;
    EXPECT_THAT(s.message(), HasSubstr("DATABASE_URL is not valid: not a valid PostgreSQL "
                                       "connection string (a postgresql:// URL or libpq "
                                       "key=value pairs): "))
        << url;
    EXPECT_THAT(s.message(), Not(HasSubstr("s3cret"))) << s.message();
  }
}

TEST(ConfigTest, EverySettingHasADescriptionAndDefaultsThatLoadBack) {
  EnvMap defaults;
  for (const SettingInfo& s : DescribeSettings()) {
    EXPECT_FALSE(s.description.empty()) << s.name;
    EXPECT_EQ(s.description.find('\n'), std::string::npos) << s.name;
    if (!s.required) defaults[s.name] = s.default_value;
  }
  // Writing every documented default out explicitly changes nothing.
  absl::StatusOr<std::string> implicit =
      RenderConfig(EnvSources{WithUrl({}), "", false, {}}, ConfigFormat::kEnv);
  absl::StatusOr<std::string> explicit_defaults =
      RenderConfig(EnvSources{WithUrl(defaults), "", false, {}}, ConfigFormat::kEnv);
  ASSERT_TRUE(implicit.ok()) << implicit.status();
  ASSERT_TRUE(explicit_defaults.ok()) << explicit_defaults.status();
  EXPECT_EQ(*implicit, *explicit_defaults);
}

std::string ReadSourceFile(const std::string& relative) {
  std::ifstream in(std::string(SB_SOURCE_DIR) + "/" + relative);
  EXPECT_TRUE(in.good()) << relative;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// README.md's configuration table: "| `NAME` | default | meaning |".
std::map<std::string, std::string> ReadmeSettings() {
  std::map<std::string, std::string> out;
  const std::regex row(R"(^\| `([A-Z][A-Z0-9_]*)` \| ([^|]*) \|)");
  for (const std::string& line :
       std::vector<std::string>(absl::StrSplit(ReadSourceFile("README.md"), '\n'))) {
    std::smatch m;
    if (std::regex_search(line, m, row)) out[m[1]] = m[2];
  }
  return out;
}

TEST(ConfigTest, ReadmeDocumentsExactlyTheSettingsWithTheirDefaults) {
  const std::map<std::string, std::string> readme = ReadmeSettings();
  std::set<std::string> table;
  for (const SettingInfo& s : DescribeSettings()) {
    table.insert(s.name);
    auto it = readme.find(s.name);
    if (it == readme.end()) {
      ADD_FAILURE() << s.name << " is missing from README.md's configuration table";
      continue;
    }
    const std::string expected = s.required                ? "(required)"
                                 : s.default_value.empty() ? "(empty)"
                                                           : "`" + s.default_value + "`";
    EXPECT_EQ(it->second, expected) << s.name << "'s default in README.md";
  }
  for (const auto& [name, unused] : readme) {
    EXPECT_TRUE(table.count(name) != 0) << name << " is in README.md but is no setting";
  }
}

TEST(ConfigTest, EnvExampleListsExactlyTheSettingsWithTheirDefaults) {
  // "NAME=value" sets a value; "# NAME=value" shows one (a required or
  // environment-only setting, or the Supabase profile).
  const std::regex listed(R"(^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$)");
  std::set<std::string> example;
  const std::string text = ReadSourceFile(".env.example");
  for (const std::string& line : std::vector<std::string>(absl::StrSplit(text, '\n'))) {
    std::smatch m;
    if (std::regex_match(line, m, listed)) example.insert(m[2]);
  }
  std::set<std::string> table;
  for (const SettingInfo& s : DescribeSettings()) table.insert(s.name);
  EXPECT_EQ(example, table);

  // Its uncommented values are the defaults, as the file says, and the file
  // parses as the broker parses .env files.
  absl::StatusOr<EnvMap> parsed = ParseEnvFile(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  for (const SettingInfo& s : DescribeSettings()) {
    auto it = parsed->find(s.name);
    if (it != parsed->end()) EXPECT_EQ(it->second, s.default_value) << s.name;
  }
}

TEST(RenderConfigTest, SaysWhereEachValueCameFrom) {
  EnvSources sources;
  sources.process = {{"DB_POOL_SIZE", "7"}, {"LOG_LEVEL", "DEBUG"}, {"DB_MAX_OVERFLOW", ""}};
  sources.file_path = "/srv/broker/.env";
  sources.file_read = true;
  sources.file = {{"DATABASE_URL", "postgresql://app:s3cret@db/app"},
                  {"DB_POOL_SIZE", "3"},
                  {"DB_MAX_OVERFLOW", "4"},
                  {"BROKER_METRICS_ADDR", ""}};
  absl::StatusOr<std::string> text = RenderConfig(sources, ConfigFormat::kHuman);
  ASSERT_TRUE(text.ok()) << text.status();
  std::map<std::string, std::pair<std::string, std::string>> rows;
  for (const std::string& line : std::vector<std::string>(absl::StrSplit(*text, '\n'))) {
    if (line.empty() || line[0] == '#') continue;
    // Columns are separated by at least two spaces.
    std::vector<std::string> cells = absl::StrSplit(line, "  ", absl::SkipWhitespace());
    ASSERT_EQ(cells.size(), 3u) << line;
    for (std::string& cell : cells) cell = std::string(absl::StripAsciiWhitespace(cell));
    rows[cells[0]] = {cells[1], cells[2]};
  }
  EXPECT_EQ(rows.size(), DescribeSettings().size());
  using Row = std::pair<std::string, std::string>;
  EXPECT_EQ(rows["DATABASE_URL"],
            Row(RedactUrl("postgresql://app:s3cret@db/app"), "/srv/broker/.env"));
  EXPECT_EQ(rows["DB_POOL_SIZE"], Row("7", "environment"));
  EXPECT_EQ(rows["LOG_LEVEL"], Row("debug", "environment"));
  // Set but empty in the environment: empty counts as unset, and the
  // environment still wins over the file.
  EXPECT_EQ(rows["DB_MAX_OVERFLOW"], Row("10", "default"));
  // Set but empty means off for this one.
  EXPECT_EQ(rows["BROKER_METRICS_ADDR"], Row("off", "/srv/broker/.env"));
  EXPECT_EQ(rows["DB_POOL_TIMEOUT"], Row("30", "default"));
  EXPECT_EQ(rows["BROKER_ENV_FILE"], Row("/srv/broker/.env", "default"));
  EXPECT_THAT(*text, Not(HasSubstr("s3cret")));
}

TEST(RenderConfigTest, MissingDatabaseUrlIsShownAsUnset) {
  absl::StatusOr<std::string> text = RenderConfig(EnvSources{}, ConfigFormat::kHuman);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(*text, testing::ContainsRegex("DATABASE_URL +\\(empty\\) +unset \\(required\\)"));
  text = RenderConfig(EnvSources{}, ConfigFormat::kEnv);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(*text, HasSubstr("DATABASE_URL=''\n"));
}

TEST(TransportSecurityTest, PlaintextBeyondLoopbackIsRefusedSayingWhatToSet) {
  for (const char* addr : {"0.0.0.0:50051", "[::]:50051", "10.1.2.3:50051", "broker.example:1",
                           "[::ffff:10.0.0.1]:50051"}) {
    absl::StatusOr<Config> c = LoadConfig(WithUrl({{"BROKER_LISTEN_ADDR", addr}}));
    ASSERT_FALSE(c.ok()) << addr;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(c.status().message(), HasSubstr(absl::StrCat("BROKER_LISTEN_ADDR=", addr)));
    EXPECT_THAT(c.status().message(), HasSubstr("plaintext"));
    EXPECT_THAT(c.status().message(), HasSubstr("BROKER_TLS_CERT"));
    EXPECT_THAT(c.status().message(), HasSubstr("BROKER_ALLOW_INSECURE=true"));
  }
  absl::StatusOr<Config> metrics = LoadConfig(WithUrl({{"BROKER_METRICS_ADDR", "0.0.0.0:9464"}}));
  ASSERT_FALSE(metrics.ok());
  EXPECT_THAT(metrics.status().message(), HasSubstr("BROKER_METRICS_ADDR=0.0.0.0:9464"));
  EXPECT_THAT(metrics.status().message(), HasSubstr("BROKER_METRICS_TLS=true"));
}

TEST(TransportSecurityTest, LoopbackTlsOrAnExplicitOptInMayListenAnywhere) {
  for (const char* addr : {"127.0.0.1:1", "127.9.8.7:1", "[::1]:1", "localhost:1", "LocalHost:1",
                           "[::ffff:127.0.0.1]:1"}) {
    absl::StatusOr<Config> c =
        LoadConfig(WithUrl({{"BROKER_LISTEN_ADDR", addr}, {"BROKER_METRICS_ADDR", addr}}));
    EXPECT_TRUE(c.ok()) << addr << ": " << c.status();
  }
  EXPECT_TRUE(LoadConfig(WithUrl({{"BROKER_LISTEN_ADDR", "0.0.0.0:1"},
                                  {"BROKER_METRICS_ADDR", "0.0.0.0:2"},
                                  {"BROKER_ALLOW_INSECURE", "true"}}))
                  .ok());
  EXPECT_TRUE(LoadConfig(WithUrl({{"BROKER_LISTEN_ADDR", "0.0.0.0:1"},
                                  {"BROKER_METRICS_ADDR", "0.0.0.0:2"},
                                  {"BROKER_TLS_CERT", "/c"},
                                  {"BROKER_TLS_KEY", "/k"},
                                  {"BROKER_METRICS_TLS", "true"}}))
                  .ok());
  // TLS on gRPC only: the plaintext metrics port must stay on loopback.
  absl::StatusOr<Config> c = LoadConfig(WithUrl(
      {{"BROKER_LISTEN_ADDR", "0.0.0.0:1"}, {"BROKER_TLS_CERT", "/c"}, {"BROKER_TLS_KEY", "/k"}}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->metrics_addr, "127.0.0.1:9464");
}

TEST(TransportSecurityTest, TlsSettingsThatCannotWorkTogetherAreRefused) {
  struct Case {
    EnvMap env;
    const char* names;
  };
  const Case cases[] = {
      {{{"BROKER_TLS_CERT", "/c"}}, "BROKER_TLS_KEY"},
      {{{"BROKER_TLS_KEY", "/k"}}, "BROKER_TLS_CERT"},
      {{{"BROKER_TLS_CLIENT_CA", "/ca"}}, "BROKER_TLS_CLIENT_CA"},
      {{{"BROKER_TLS_CERT", "/c"}, {"BROKER_TLS_KEY", "/k"}, {"BROKER_TLS_CLIENT_AUTH", "require"}},
       "BROKER_TLS_CLIENT_AUTH=require needs BROKER_TLS_CLIENT_CA"},
      {{{"BROKER_METRICS_TLS", "true"}}, "BROKER_METRICS_TLS=true needs BROKER_TLS_CERT"},
      {{{"BROKER_TLS_CERT", "/c"}, {"BROKER_TLS_KEY", "/k"}, {"BROKER_TLS_CLIENT_AUTH", "maybe"}},
       "BROKER_TLS_CLIENT_AUTH"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<Config> config = LoadConfig(WithUrl(c.env));
    ASSERT_FALSE(config.ok()) << c.names;
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(config.status().message(), HasSubstr(c.names));
  }
}

TEST(TransportSecurityTest, AClientCaRequiresClientCertificatesUnlessSaidOtherwise) {
  absl::StatusOr<Config> c = LoadConfig(WithUrl(
      {{"BROKER_TLS_CERT", "/c"}, {"BROKER_TLS_KEY", "/k"}, {"BROKER_TLS_CLIENT_CA", "/ca"}}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->tls_client_auth, "require");
  c = LoadConfig(WithUrl({{"BROKER_TLS_CERT", "/c"}, {"BROKER_TLS_KEY", "/k"}}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->tls_client_auth, "");
}

TEST(TransportSecurityTest, IsLoopbackHostKnowsOnlyLoopback) {
  EXPECT_TRUE(IsLoopbackHost("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackHost("127.255.0.1"));
  EXPECT_TRUE(IsLoopbackHost("::1"));
  EXPECT_TRUE(IsLoopbackHost("localhost"));
  EXPECT_FALSE(IsLoopbackHost("0.0.0.0"));
  EXPECT_FALSE(IsLoopbackHost("::"));
  EXPECT_FALSE(IsLoopbackHost("128.0.0.1"));
  EXPECT_FALSE(IsLoopbackHost("localhost.example"));
  EXPECT_FALSE(IsLoopbackHost(""));
}

TEST(RenderConfigTest, BadValueIsTheErrorLoadConfigGives) {
  EnvSources sources;
  sources.process = {{"DB_POOL_SIZE", "0"}};
  absl::StatusOr<std::string> text = RenderConfig(sources, ConfigFormat::kEnv);
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status(), LoadConfig(WithUrl(sources.process)).status());
}

TEST(RenderConfigTest, EnvFormIsOneShellQuotedLinePerSetting) {
  EnvSources sources;
  sources.process = WithUrl({{"BROKER_PORT_FILE", "/tmp/it's here"}, {"DB_POOL_SIZE", "3"}});
  absl::StatusOr<std::string> text = RenderConfig(sources, ConfigFormat::kEnv);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(*text, HasSubstr("\nDB_POOL_SIZE=3\n"));
  EXPECT_THAT(*text, HasSubstr("\nBROKER_PORT_FILE='/tmp/it'\\''s here'\n"));
  // The redacted URL has a '*' at least, so it is quoted.
  EXPECT_THAT(*text, HasSubstr("DATABASE_URL='" + RedactUrl("postgresql://app:secret@db:5432/app") +
                               "'\n"));
  EXPECT_THAT(*text, Not(HasSubstr("secret")));
  EXPECT_THAT(*text, HasSubstr("\nLOG_LEVEL=info\n"));
  EXPECT_EQ(std::count(text->begin(), text->end(), '\n'),
            static_cast<long>(DescribeSettings().size()));
}

TEST(ReadEnvSourcesTest, ReadsTheFileTheEnvironmentNames) {
  const std::string path = ::testing::TempDir() + "/config_test.env";
  std::ofstream(path) << "DB_POOL_SIZE=3\nLOG_LEVEL=debug\n";
  absl::StatusOr<EnvSources> sources =
      ReadEnvSources({{"BROKER_ENV_FILE", path}, {"LOG_LEVEL", "warn"}});
  ASSERT_TRUE(sources.ok()) << sources.status();
  EXPECT_TRUE(sources->file_read);
  EXPECT_EQ(sources->file_path, path);
  const EnvMap merged = MergeEnv(*sources);
  EXPECT_EQ(merged.at("DB_POOL_SIZE"), "3");
  EXPECT_EQ(merged.at("LOG_LEVEL"), "warn");  // the environment wins
  std::remove(path.c_str());
}

TEST(ReadEnvSourcesTest, MissingFileIsFineAndEmptyNameReadsNone) {
  absl::StatusOr<EnvSources> sources =
      ReadEnvSources({{"BROKER_ENV_FILE", ::testing::TempDir() + "/no-such.env"}});
  ASSERT_TRUE(sources.ok()) << sources.status();
  EXPECT_FALSE(sources->file_read);
  sources = ReadEnvSources({{"BROKER_ENV_FILE", ""}});
  ASSERT_TRUE(sources.ok()) << sources.status();
  EXPECT_EQ(sources->file_path, "");
  EXPECT_FALSE(sources->file_read);
}

TEST(ReadEnvSourcesTest, MalformedFileIsAnErrorNamingTheFile) {
  const std::string path = ::testing::TempDir() + "/config_test_bad.env";
  std::ofstream(path) << "not a setting\n";
  absl::StatusOr<EnvSources> sources = ReadEnvSources({{"BROKER_ENV_FILE", path}});
  ASSERT_FALSE(sources.ok());
  EXPECT_THAT(sources.status().message(), HasSubstr(path));
  EXPECT_THAT(sources.status().message(), HasSubstr("line 1"));
  std::remove(path.c_str());
}

}  // namespace
}  // namespace sessionbroker
