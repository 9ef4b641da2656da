#include "tests/support/test_env.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>

#include "gtest/gtest.h"

namespace sessionbroker::testing {

std::string TestDatabaseUrl() {
  const char* url = std::getenv("SB_TEST_DATABASE_URL");
  if (url == nullptr || *url == '\0') {
    ADD_FAILURE() << "SB_TEST_DATABASE_URL is not set: run the tests with ./scripts/dev test, "
                     "which starts a throwaway PostgreSQL for them";
    return "";
  }
  return url;
}

int FreePort() {
  // Bind port 0 and let the kernel choose; the socket closes before the port is
  // used, so a race is possible but rare (each caller gets a fresh ephemeral port).
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    socklen_t len = sizeof(addr);
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port = ntohs(addr.sin_port);
    }
  }
  ::close(fd);
  return port;
}

std::string PgScript() { return std::string(SB_SOURCE_DIR) + "/scripts/pg"; }

}  // namespace sessionbroker::testing
