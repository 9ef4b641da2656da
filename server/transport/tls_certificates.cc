#include "server/transport/tls_certificates.h"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "spdlog/spdlog.h"

namespace sessionbroker::transport {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;

// Never prompts for a passphrase (OpenSSL's default would read the
// terminal): an encrypted key is refused instead.
int NoPassphrase(char*, int, int, void*) { return 0; }

absl::StatusOr<std::string> ReadFile(const char* variable, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(variable, ": cannot read ", path, ": ", std::strerror(errno)));
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Every PEM certificate in `pem`, in order.
std::vector<X509Ptr> ParseCertificates(const std::string& pem) {
  std::vector<X509Ptr> out;
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  while (bio != nullptr) {
    X509* cert = PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase, nullptr);
    if (cert == nullptr) break;
    out.emplace_back(cert);
  }
  ERR_clear_error();  // the end of the input reads as an error
  return out;
}

std::string ToPem(const std::vector<X509Ptr>& certs, EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  for (const X509Ptr& c : certs) PEM_write_bio_X509(bio.get(), c.get());
  if (key != nullptr) {
    PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  }
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  std::string out(data, static_cast<size_t>(size));
  OPENSSL_cleanse(data, static_cast<size_t>(size));
  return out;
}

std::string SubjectOf(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

absl::Time NotAfterOf(X509* cert) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) != 1) return absl::InfinitePast();
  return absl::FromTM(tm, absl::UTCTimeZone());
}

}  // namespace

struct ServerIdentity::Parsed {
  std::vector<X509Ptr> chain;  // leaf first
  EVP_PKEY* key = nullptr;
  STACK_OF(X509) * intermediates = nullptr;
  ~Parsed() {
    EVP_PKEY_free(key);
    sk_X509_free(intermediates);  // the certificates are owned by `chain`
  }
};

ServerIdentity::~ServerIdentity() { OPENSSL_cleanse(pem_.data(), pem_.size()); }

bool ServerIdentity::ApplyTo(ssl_st* ssl) const {
  return SSL_use_cert_and_key(ssl, parsed_->chain.front().get(), parsed_->key,
                              parsed_->intermediates, /*override=*/1) == 1;
}

absl::StatusOr<std::shared_ptr<const ServerIdentity>> LoadServerIdentity(
    const std::string& cert_path, const std::string& key_path) {
  absl::StatusOr<std::string> cert_text = ReadFile("BROKER_TLS_CERT", cert_path);
  if (!cert_text.ok()) return cert_text.status();
  absl::StatusOr<std::string> key_text = ReadFile("BROKER_TLS_KEY", key_path);
  if (!key_text.ok()) return key_text.status();
  std::shared_ptr<ServerIdentity> id(new ServerIdentity());
  id->parsed_ = std::make_unique<ServerIdentity::Parsed>();
  ServerIdentity::Parsed& p = *id->parsed_;
  p.chain = ParseCertificates(*cert_text);
  if (p.chain.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "BROKER_TLS_CERT: ", cert_path, " holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
  }
  {
    BioPtr bio(BIO_new_mem_buf(key_text->data(), static_cast<int>(key_text->size())));
    p.key = PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr);
    ERR_clear_error();
  }
  OPENSSL_cleanse(key_text->data(), key_text->size());
  if (p.key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("BROKER_TLS_KEY: ", key_path,
                     " holds no unencrypted PEM private key (-----BEGIN PRIVATE KEY-----)"));
  }
  X509* leaf = p.chain.front().get();
  if (X509_check_private_key(leaf, p.key) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(
        "BROKER_TLS_KEY: the private key in ", key_path,
        " does not belong to the first certificate of BROKER_TLS_CERT (", cert_path, ")"));
  }
  p.intermediates = sk_X509_new_null();
  for (size_t i = 1; i < p.chain.size(); ++i) sk_X509_push(p.intermediates, p.chain[i].get());
  id->pem_ = ToPem(p.chain, p.key);
  id->subject_ = SubjectOf(leaf);
  id->not_after_ = NotAfterOf(leaf);
  return std::shared_ptr<const ServerIdentity>(std::move(id));
}

absl::StatusOr<std::string> LoadCaBundle(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile("BROKER_TLS_CLIENT_CA", path);
  if (!text.ok()) return text.status();
  const std::vector<X509Ptr> certs = ParseCertificates(*text);
  if (certs.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "BROKER_TLS_CLIENT_CA: ", path, " holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
  }
  return ToPem(certs, nullptr);
}

// --- CertificateReloader ------------------------------------------------------

CertificateReloader::Published::~Published() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status CertificateReloader::Published::Replace(const std::string& contents) {
  const int fd = ::memfd_create("sb-tls", MFD_CLOEXEC);
  if (fd < 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "TLS: cannot create an in-memory file (memfd_create): ", std::strerror(errno)));
  }
  bool ok = true;
  for (size_t done = 0; ok && done < contents.size();) {
    const ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<size_t>(n);
  }
  // A later mtime than the file it replaces, even within one second: gRPC
  // compares whole seconds before and after reading to detect a swap.
  const int64_t now = ::time(nullptr);
  last_mtime_ = std::max<int64_t>(now, last_mtime_ + 1);
  const timespec times[2] = {{static_cast<time_t>(last_mtime_), 0},
                             {static_cast<time_t>(last_mtime_), 0}};
  ok = ok && ::futimens(fd, times) == 0;
  if (ok && fd_ >= 0) {
    ok = ::dup2(fd, fd_) == fd_;  // atomic: a reader opens the old or the new file
    ::close(fd);
  } else if (ok) {
    fd_ = fd;
  } else {
    ::close(fd);
  }
  if (!ok) {
    return absl::FailedPreconditionError(
        absl::StrCat("TLS: cannot write an in-memory file: ", std::strerror(errno)));
  }
  // gRPC opens it by name: make sure that works here (no /proc, no TLS).
  const int check = ::open(path().c_str(), O_RDONLY | O_CLOEXEC);
  if (check < 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "TLS: cannot open ", path(), " (", std::strerror(errno),
        "): the broker hands its certificates to gRPC through /proc, which must be mounted"));
  }
  ::close(check);
  return absl::OkStatus();
}

std::string CertificateReloader::Published::path() const {
  return absl::StrCat("/proc/self/fd/", fd_);
}

bool CertificateReloader::Stamp::operator==(const Stamp& o) const {
  return exists == o.exists && dev == o.dev && ino == o.ino && size == o.size &&
         mtime.tv_sec == o.mtime.tv_sec && mtime.tv_nsec == o.mtime.tv_nsec &&
         ctime.tv_sec == o.ctime.tv_sec && ctime.tv_nsec == o.ctime.tv_nsec;
}

CertificateReloader::CertificateReloader(Files files, absl::Duration interval)
    : files_(std::move(files)), interval_(interval) {}

CertificateReloader::~CertificateReloader() { Stop(); }

std::vector<CertificateReloader::Stamp> CertificateReloader::StampFiles() const {
  std::vector<Stamp> out;
  for (const std::string* path : {&files_.cert, &files_.key, &files_.client_ca}) {
    Stamp s;
    struct stat st;
    if (!path->empty() && ::stat(path->c_str(), &st) == 0) {
      s = {st.st_dev, st.st_ino, st.st_size, st.st_mtim, st.st_ctim, true};
    }
    out.push_back(s);
  }
  return out;
}

absl::Status CertificateReloader::Start() {
  core::MutexLock check(&check_mu_);
  last_stamps_ = StampFiles();
  absl::StatusOr<std::shared_ptr<const ServerIdentity>> id =
      LoadServerIdentity(files_.cert, files_.key);
  if (!id.ok()) return id.status();
  if (!files_.client_ca.empty()) {
    absl::StatusOr<std::string> ca = LoadCaBundle(files_.client_ca);
    if (!ca.ok()) return ca.status();
    ca_pem_ = *std::move(ca);
    if (absl::Status s = ca_file_.Replace(ca_pem_); !s.ok()) return s;
    ca_path_ = ca_file_.path();
  }
  if (absl::Status s = identity_file_.Replace((*id)->pem()); !s.ok()) return s;
  identity_path_ = identity_file_.path();
  if ((*id)->not_after() < absl::Now()) {
    spdlog::warn(
        "TLS: the certificate of BROKER_TLS_CERT ({}) expired at {}; clients will refuse it",
        (*id)->subject(), absl::FormatTime((*id)->not_after()));
  }
  spdlog::info("TLS: serving the certificate {} (valid until {}) from {}", (*id)->subject(),
               absl::FormatTime((*id)->not_after()), files_.cert);
  {
    core::MutexLock lock(&mu_);
    current_ = *std::move(id);
  }
  thread_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

void CertificateReloader::Stop() {
  {
    core::MutexLock lock(&mu_);
    stop_ = true;
  }
  wake_.SignalAll();
  if (thread_.joinable()) thread_.join();
}

void CertificateReloader::Loop() {
  pthread_setname_np(pthread_self(), "sb-tls-reload");
  while (true) {
    {
      core::MutexLock lock(&mu_);
      const absl::Time until = absl::Now() + interval_;
      while (!stop_ && absl::Now() < until) wake_.WaitUntil(&mu_, until);
      if (stop_) return;
    }
    CheckNow();
  }
}

bool CertificateReloader::CheckNow() {
  core::MutexLock check(&check_mu_);
  std::vector<Stamp> stamps = StampFiles();
  if (stamps == last_stamps_) return false;
  // Remembered even when the new files are refused: the refusal is logged
  // once, and the next change is looked at again.
  last_stamps_ = stamps;
  const std::shared_ptr<const ServerIdentity> old = Current();
  auto refuse = [&](const absl::Status& why) {
    spdlog::error(
        "TLS: the changed certificate files are not valid, still serving the previous "
        "certificate {} (valid until {}): {}",
        old->subject(), absl::FormatTime(old->not_after()), std::string(why.message()));
    return false;
  };
  absl::StatusOr<std::shared_ptr<const ServerIdentity>> id =
      LoadServerIdentity(files_.cert, files_.key);
  if (!id.ok()) return refuse(id.status());
  std::string ca;
  if (!files_.client_ca.empty()) {
    absl::StatusOr<std::string> loaded = LoadCaBundle(files_.client_ca);
    if (!loaded.ok()) return refuse(loaded.status());
    ca = *std::move(loaded);
  }
  bool published = false;
  if (!files_.client_ca.empty() && ca != ca_pem_) {
    if (absl::Status s = ca_file_.Replace(ca); !s.ok()) return refuse(s);
    ca_pem_ = std::move(ca);
    spdlog::info("TLS: reloaded the client CA bundle {}", files_.client_ca);
    published = true;
  }
  if ((*id)->pem() != old->pem()) {
    if (absl::Status s = identity_file_.Replace((*id)->pem()); !s.ok()) return refuse(s);
    if ((*id)->not_after() < absl::Now()) {
      spdlog::warn("TLS: the new certificate ({}) expired at {}; clients will refuse it",
                   (*id)->subject(), absl::FormatTime((*id)->not_after()));
    }
    spdlog::info("TLS: reloaded the certificate: now {} (valid until {}), was valid until {}",
                 (*id)->subject(), absl::FormatTime((*id)->not_after()),
                 absl::FormatTime(old->not_after()));
    core::MutexLock lock(&mu_);
    current_ = *std::move(id);
    published = true;
  }
  return published;
}

std::shared_ptr<const ServerIdentity> CertificateReloader::Current() const {
  core::MutexLock lock(&mu_);
  return current_;
}

std::shared_ptr<grpc::ServerCredentials> CertificateReloader::GrpcCredentials(
    ClientAuth client_auth) const {
  const unsigned int refresh =
      static_cast<unsigned int>(std::max<int64_t>(1, absl::ToInt64Seconds(interval_)));
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      identity_path_, identity_path_, ca_path_, refresh);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (!ca_path_.empty()) {
    options.watch_root_certs();
    // A certificate a client presents is always verified against the CA;
    // "optional" only lets a client present none.
    options.set_cert_request_type(client_auth == ClientAuth::kOptional
                                      ? GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY
                                      : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

}  // namespace sessionbroker::transport
