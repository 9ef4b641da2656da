// The broker's TLS material (LoadServerIdentity, LoadCaBundle,
// CertificateReloader) and the peer identity read from a real TLS handshake
// (ReadPeerIdentity), on an in-process gRPC server over loopback. The
// certificates are made at test time with openssl (tests/support/tls_certs.py).
#include "server/transport/tls_certificates.h"

#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "server/core/base/mutex.h"
#include "server/transport/peer_identity.h"
#include "tests/support/test_env.h"

namespace sessionbroker::transport {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kSpiffeId[] = "spiffe://example.org/ns/shop/sa/orders";

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void Write(const std::string& path, const std::string& text) {
  const std::string temp = path + ".new";
  std::ofstream(temp) << text;
  ASSERT_EQ(std::rename(temp.c_str(), path.c_str()), 0);
}

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { dir_ = sessionbroker::testing::MakeTlsCertificates(); }
  static void TearDownTestSuite() { std::system(absl::StrCat("rm -rf ", dir_).c_str()); }
  static std::string Path(const std::string& name) { return absl::StrCat(dir_, "/", name); }

  static std::string dir_;
};
std::string TlsTest::dir_;

TEST_F(TlsTest, LoadsAMatchingPairAndDescribesIt) {
  auto id = LoadServerIdentity(Path("server.pem"), Path("server.key"));
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ((*id)->subject(), "CN=localhost");
  EXPECT_GT((*id)->not_after(), absl::Now());
  EXPECT_THAT((*id)->pem(), HasSubstr("-----BEGIN CERTIFICATE-----"));
  EXPECT_THAT((*id)->pem(), HasSubstr("PRIVATE KEY-----"));
  auto expired = LoadServerIdentity(Path("expired.pem"), Path("expired.key"));
  ASSERT_TRUE(expired.ok()) << expired.status();
  EXPECT_LT((*expired)->not_after(), absl::Now());
}

TEST_F(TlsTest, RefusesBadFilesNamingVariableAndPathButNeverTheKey) {
  Write(Path("garbage.pem"), "not a certificate\n");
  const std::string key_line = Read(Path("server2.key")).substr(28, 40);
  struct Case {
    std::string cert, key, message;
  };
  const Case cases[] = {
      {Path("server.pem"), Path("server2.key"), "does not belong to the first certificate"},
      {Path("garbage.pem"), Path("server.key"), "holds no PEM certificate"},
      {Path("server.pem"), Path("garbage.pem"), "holds no unencrypted PEM private key"},
      {Path("absent.pem"), Path("server.key"), "cannot read"},
  };
  for (const Case& c : cases) {
    auto id = LoadServerIdentity(c.cert, c.key);
    ASSERT_FALSE(id.ok()) << c.message;
    EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(id.status().message(), HasSubstr(c.message));
    EXPECT_THAT(id.status().message(), HasSubstr("BROKER_TLS_"));
    EXPECT_THAT(id.status().message(), Not(HasSubstr(key_line)));
  }
  auto ca = LoadCaBundle(Path("garbage.pem"));
  ASSERT_FALSE(ca.ok());
  EXPECT_THAT(ca.status().message(), HasSubstr("BROKER_TLS_CLIENT_CA"));
  auto good_ca = LoadCaBundle(Path("ca.pem"));
  ASSERT_TRUE(good_ca.ok()) << good_ca.status();
  EXPECT_THAT(*good_ca, HasSubstr("-----BEGIN CERTIFICATE-----"));
}

TEST_F(TlsTest, ReloaderPublishesAValidRotationAndKeepsTheOldPairOverABrokenOne) {
  const std::string cert = Path("live.crt"), key = Path("live.key");
  Write(cert, Read(Path("server.pem")));
  Write(key, Read(Path("server.key")));
  CertificateReloader reloader({cert, key, ""}, absl::Hours(1));
  ASSERT_TRUE(reloader.Start().ok());
  const std::shared_ptr<const ServerIdentity> first = reloader.Current();
  EXPECT_FALSE(reloader.CheckNow());  // nothing changed

  Write(cert, "-----BEGIN CERTIFICATE-----\ntruncated\n");
  EXPECT_FALSE(reloader.CheckNow());
  EXPECT_EQ(reloader.Current(), first);

  Write(key, Read(Path("server2.key")));
  Write(cert, Read(Path("server2.pem")));
  EXPECT_TRUE(reloader.CheckNow());
  EXPECT_NE(reloader.Current()->pem(), first->pem());
  auto expected = LoadServerIdentity(Path("server2.pem"), Path("server2.key"));
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(reloader.Current()->pem(), (*expected)->pem());
  reloader.Stop();
}

TEST_F(TlsTest, StartRefusesABadPair) {
  CertificateReloader reloader({Path("server.pem"), Path("server2.key"), ""}, absl::Hours(1));
  const absl::Status status = reloader.Start();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(reloader.Current(), nullptr);
}

// --- The peer's identity over a real handshake --------------------------------

// Answers every method with an empty message, recording the caller's identity.
class IdentityRecorder final : public grpc::CallbackGenericService {
 public:
  std::vector<PeerIdentity> identities() {
    core::MutexLock lock(&mu_);
    return identities_;
  }

 private:
  class Reactor final : public grpc::ServerGenericBidiReactor {
   public:
    Reactor() : empty_(""), response_(&empty_, 1) { StartRead(&request_); }
    void OnReadDone(bool ok) override {
      if (!ok) return Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no request"));
      StartWriteAndFinish(&response_, grpc::WriteOptions(), grpc::Status::OK);
    }
    void OnDone() override { delete this; }

   private:
    grpc::ByteBuffer request_;
    grpc::Slice empty_;
    grpc::ByteBuffer response_;
  };

  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override {
    {
      core::MutexLock lock(&mu_);
      identities_.push_back(ReadPeerIdentity(*ctx->auth_context()));
    }
    return new Reactor();
  }

  core::Mutex mu_;
  std::vector<PeerIdentity> identities_ ABSL_GUARDED_BY(mu_);
};

class PeerIdentityTest : public TlsTest {
 protected:
  // Serves with `credentials` on 127.0.0.1, port chosen by the kernel.
  void Serve(std::shared_ptr<grpc::ServerCredentials> credentials) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", std::move(credentials), &port_);
    builder.RegisterCallbackGenericService(&recorder_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(port_, 0);
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
    server_.reset();
    reloader_.reset();  // after the server, which reads what it published
  }
  // One Check call on a new channel to localhost, with the test CA and
  // optionally client certificate NAME.
  grpc::Status Call(const std::string& client, bool tls = true) {
    std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
    if (tls) {
      grpc::SslCredentialsOptions options;
      options.pem_root_certs = Read(Path("ca.pem"));
      if (!client.empty()) {
        options.pem_private_key = Read(Path(client + ".key"));
        options.pem_cert_chain = Read(Path(client + ".pem"));
      }
      creds = grpc::SslCredentials(options);
    }
    grpc::ChannelArguments args;
    args.SetInt("grpc.use_local_subchannel_pool", 1);  // a new connection per call
    auto channel = grpc::CreateCustomChannel(absl::StrCat("localhost:", port_), creds, args);
    auto stub = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    grpc::health::v1::HealthCheckResponse response;
    return stub->Check(&context, grpc::health::v1::HealthCheckRequest(), &response);
  }

  CertificateReloader* Reloader(bool client_ca) {
    reloader_ = std::make_unique<CertificateReloader>(
        CertificateReloader::Files{Path("server.pem"), Path("server.key"),
                                   client_ca ? Path("ca.pem") : ""},
        absl::Hours(1));
    EXPECT_TRUE(reloader_->Start().ok());
    return reloader_.get();
  }

  IdentityRecorder recorder_;
  std::unique_ptr<CertificateReloader> reloader_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(PeerIdentityTest, AVerifiedClientCertificateGivesSubjectCommonNameAndSpiffeId) {
  CertificateReloader* reloader = Reloader(/*client_ca=*/true);
  Serve(reloader->GrpcCredentials(CertificateReloader::ClientAuth::kRequire));
  ASSERT_TRUE(Call("client").ok());
  const std::vector<PeerIdentity> ids = recorder_.identities();
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_TRUE(ids[0].tls);
  EXPECT_TRUE(ids[0].has_certificate);
  EXPECT_EQ(ids[0].common_name, "orders");
  EXPECT_THAT(ids[0].subject, HasSubstr("CN=orders"));
  EXPECT_THAT(ids[0].subject, HasSubstr("O=shop"));
  EXPECT_EQ(ids[0].spiffe_id, kSpiffeId);
  EXPECT_THAT(ids[0].uri_sans, ::testing::ElementsAre(kSpiffeId));
}

TEST_F(PeerIdentityTest, RequireRefusesClientsWithoutACertificateOrWithAForeignOne) {
  CertificateReloader* reloader = Reloader(/*client_ca=*/true);
  Serve(reloader->GrpcCredentials(CertificateReloader::ClientAuth::kRequire));
  EXPECT_EQ(Call("").error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Call("otherca_client").error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(recorder_.identities().empty());
}

TEST_F(PeerIdentityTest, OptionalLetsAClientWithoutACertificateInWithNoIdentity) {
  CertificateReloader* reloader = Reloader(/*client_ca=*/true);
  Serve(reloader->GrpcCredentials(CertificateReloader::ClientAuth::kOptional));
  ASSERT_TRUE(Call("").ok());
  EXPECT_EQ(Call("otherca_client").error_code(), grpc::StatusCode::UNAVAILABLE);
  const std::vector<PeerIdentity> ids = recorder_.identities();
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_TRUE(ids[0].tls);
  EXPECT_FALSE(ids[0].has_certificate);
  EXPECT_EQ(ids[0].common_name, "");
  EXPECT_EQ(ids[0].spiffe_id, "");
}

TEST_F(PeerIdentityTest, PlaintextCallsHaveNoTlsAndNoIdentity) {
  Serve(grpc::InsecureServerCredentials());
  ASSERT_TRUE(Call("", /*tls=*/false).ok());
  const std::vector<PeerIdentity> ids = recorder_.identities();
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_FALSE(ids[0].tls);
  EXPECT_FALSE(ids[0].has_certificate);
  EXPECT_EQ(ids[0].subject, "");
}

}  // namespace
}  // namespace sessionbroker::transport
