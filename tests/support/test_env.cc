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

RefusedPort::RefusedPort() {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd_ < 0) return;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;  // the kernel chooses
  socklen_t len = sizeof(addr);
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port_ = ntohs(addr.sin_port);
  }
}

RefusedPort::~RefusedPort() {
  if (fd_ >= 0) ::close(fd_);
}

std::string PgScript() { return std::string(SB_SOURCE_DIR) + "/scripts/pg"; }

std::string MakeTlsCertificates() {
  char dir_template[] = "/tmp/sb-tls-certs.XXXXXX";
  const char* dir = ::mkdtemp(dir_template);
  if (dir == nullptr) {
    ADD_FAILURE() << "mkdtemp failed";
    return "";
  }
  const std::string command = std::string("cd '") + SB_SOURCE_DIR +
                              "/tests/support' && /usr/bin/python3 -c 'import sys, tls_certs; "
                              "tls_certs.make_certs(sys.argv[1])' '" +
                              dir + "'";
  if (std::system(command.c_str()) != 0) {
    ADD_FAILURE() << "could not make the TLS test certificates: " << command;
    return "";
  }
  return dir;
}

}  // namespace sessionbroker::testing
