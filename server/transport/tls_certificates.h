// TLS material of the broker's listeners: the server's certificate chain and
// private key (BROKER_TLS_CERT, BROKER_TLS_KEY) and the CA bundle client
// certificates are verified against (BROKER_TLS_CLIENT_CA), validated with
// OpenSSL at start and re-read from disk while the broker serves, since
// cert-manager rotates them in place (docs/security.md).
//
// gRPC reads its material through grpc::experimental::
// FileWatcherCertificateProvider, which on its own hands whatever the files
// hold to new handshakes: a half-written or mismatched file during a rotation
// would fail every new connection until the next good one. So the files gRPC
// watches are not the configured ones. CertificateReloader validates the
// configured files and publishes only a valid set, into anonymous in-memory
// files (memfd) that gRPC reads through /proc/self/fd/N: each publication is a
// new memfd, given a later mtime and swapped onto the same descriptor number
// with dup2 (atomic), so gRPC's before-and-after mtime check notices a swap
// during its read and retries. gRPC never sees an invalid or mixed pair, the
// key is never copied to disk, and a read-only root filesystem is fine.
// Connections already open keep the certificate they were made with; new ones
// get the new pair within two reload intervals.
//
// The HTTPS endpoint (MetricsHttpServer) takes Current() per handshake.
//
// Secrets: nothing here logs or returns the private key; errors name the
// variable and the path only.
//
// Thread-safety: Current() and the credentials from any thread; Start() and
// Stop() from one thread (BrokerServer).
#ifndef SESSIONBROKER_SERVER_TRANSPORT_TLS_CERTIFICATES_H_
#define SESSIONBROKER_SERVER_TRANSPORT_TLS_CERTIFICATES_H_

#include <sys/stat.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/security/server_credentials.h"
#include "server/core/base/mutex.h"

struct ssl_st;

namespace sessionbroker::transport {

// A certificate chain and the private key that belongs to its first
// certificate, both parsed and checked. Immutable.
class ServerIdentity {
 public:
  ~ServerIdentity();
  ServerIdentity(const ServerIdentity&) = delete;
  ServerIdentity& operator=(const ServerIdentity&) = delete;

  // The chain, then the key, re-encoded as PEM from what was parsed (so
  // nothing but them: no encrypted blocks, no stray text).
  const std::string& pem() const { return pem_; }
  // The leaf certificate's subject (RFC 2253) and end of validity, for logs.
  const std::string& subject() const { return subject_; }
  absl::Time not_after() const { return not_after_; }
  // Sets this chain and key on one OpenSSL connection; false if OpenSSL
  // refuses them.
  bool ApplyTo(ssl_st* ssl) const;

 private:
  friend absl::StatusOr<std::shared_ptr<const ServerIdentity>> LoadServerIdentity(
      const std::string&, const std::string&);
  struct Parsed;
  ServerIdentity() = default;

  std::unique_ptr<Parsed> parsed_;
  std::string pem_;
  std::string subject_;
  absl::Time not_after_;
};

// Reads and checks BROKER_TLS_CERT's chain (at least one PEM certificate) and
// BROKER_TLS_KEY's key (an unencrypted PEM private key that matches the
// chain's first certificate). INVALID_ARGUMENT naming the variable, the path
// and what is wrong; never the key's contents.
absl::StatusOr<std::shared_ptr<const ServerIdentity>> LoadServerIdentity(
    const std::string& cert_path, const std::string& key_path);

// Reads BROKER_TLS_CLIENT_CA: one or more PEM certificates, returned
// re-encoded as PEM. INVALID_ARGUMENT naming the path when there is none.
absl::StatusOr<std::string> LoadCaBundle(const std::string& path);

// Watches the configured files and keeps the last valid set published for
// gRPC and for Current(). See the file comment.
class CertificateReloader final {
 public:
  struct Files {
    std::string cert;       // BROKER_TLS_CERT
    std::string key;        // BROKER_TLS_KEY
    std::string client_ca;  // BROKER_TLS_CLIENT_CA; "" = no client certificates
  };
  enum class ClientAuth { kNone, kOptional, kRequire };

  CertificateReloader(Files files, absl::Duration interval);
  ~CertificateReloader();
  CertificateReloader(const CertificateReloader&) = delete;
  CertificateReloader& operator=(const CertificateReloader&) = delete;

  // Loads and validates the files, publishes them and starts watching.
  // INVALID_ARGUMENT (from the loaders) when a file is bad: the broker then
  // refuses to start; FAILED_PRECONDITION when the in-memory files cannot be
  // made (no /proc).
  absl::Status Start();
  // Stops watching. The published files stay readable until destruction,
  // so a server built on GrpcCredentials() must be destroyed first.
  void Stop();

  // Credentials for the gRPC port, reading what Start() published (and every
  // later publication). Only after Start() succeeded.
  std::shared_ptr<grpc::ServerCredentials> GrpcCredentials(ClientAuth client_auth) const;

  // The pair in use; null before Start().
  std::shared_ptr<const ServerIdentity> Current() const;

  // Checks the files once, as the watching thread does every interval:
  // publishes a changed valid set, or logs why a changed set is refused and
  // keeps the old one. True if a new set was published. Serialized with the
  // watching thread's checks; tests call it to avoid waiting an interval.
  bool CheckNow();

 private:
  // One anonymous in-memory file whose content is replaced atomically.
  class Published {
   public:
    ~Published();
    absl::Status Replace(const std::string& contents);
    std::string path() const;

   private:
    int fd_ = -1;
    int64_t last_mtime_ = 0;
  };
  // What stat says of each file: a rotation changes at least one of these
  // (Kubernetes swaps a symlink, so the target's inode changes).
  struct Stamp {
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = 0;
    timespec mtime{};
    timespec ctime{};
    bool exists = false;
    bool operator==(const Stamp& o) const;
  };
  std::vector<Stamp> StampFiles() const;
  void Loop();

  const Files files_;
  const absl::Duration interval_;
  Published identity_file_ ABSL_GUARDED_BY(check_mu_);
  Published ca_file_ ABSL_GUARDED_BY(check_mu_);
  std::string identity_path_;  // set by Start(), then constant
  std::string ca_path_;        // set by Start(), then constant
  // Held across one check (file reads, publication), never with mu_ inside.
  core::Mutex check_mu_;
  std::string ca_pem_ ABSL_GUARDED_BY(check_mu_);
  std::vector<Stamp> last_stamps_ ABSL_GUARDED_BY(check_mu_);
  mutable core::Mutex mu_;
  std::shared_ptr<const ServerIdentity> current_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  core::CondVar wake_;
  std::thread thread_;
};

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_TLS_CERTIFICATES_H_
