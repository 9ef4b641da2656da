// What tests learn from their environment. `./scripts/dev test` starts a
// throwaway PostgreSQL and exports SB_TEST_DATABASE_URL; a pg or e2e test that
// runs without it fails (it never skips silently).
#ifndef SESSIONBROKER_TESTS_SUPPORT_TEST_ENV_H_
#define SESSIONBROKER_TESTS_SUPPORT_TEST_ENV_H_

#include <string>

namespace sessionbroker::testing {

// The test database URL; records a fatal failure in the current test if unset.
std::string TestDatabaseUrl();

// A TCP port on 127.0.0.1 where connections are refused for as long as the
// object lives: it holds a socket bound to the port without listening on it,
// so the kernel refuses connections to it and no one else can bind it in the
// meantime (a port merely found free could be taken by another test before
// use). port() is 0 if no socket could be bound.
class RefusedPort final {
 public:
  RefusedPort();
  ~RefusedPort();
  RefusedPort(const RefusedPort&) = delete;
  RefusedPort& operator=(const RefusedPort&) = delete;

  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// Path of scripts/pg in the source tree.
std::string PgScript();

// Makes the TLS test certificates of tests/support/tls_certs.py (two CAs, a
// server certificate for localhost and 127.0.0.1, a client certificate with
// a SPIFFE ID, expired, wrong-host and foreign ones: NAME.pem and NAME.key)
// with openssl in a new temporary directory and returns its path; records a
// fatal failure and returns "" if that fails. The caller removes it.
std::string MakeTlsCertificates();

}  // namespace sessionbroker::testing

#endif  // SESSIONBROKER_TESTS_SUPPORT_TEST_ENV_H_
