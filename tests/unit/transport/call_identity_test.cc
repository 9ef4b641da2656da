#include "server/transport/call_identity.h"

#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/auth/token_hash.h"

namespace sessionbroker::transport {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kToken[] = "billing-token-0123456789";

// gRPC's iterator has only a protected default constructor.
struct NoProperties : grpc::AuthPropertyIterator {
  NoProperties() = default;
};

// An auth context as gRPC's TLS layer fills it, with made-up properties.
class FakeAuthContext final : public grpc::AuthContext {
 public:
  explicit FakeAuthContext(bool authenticated) : authenticated_(authenticated) {}
  bool IsPeerAuthenticated() const override { return authenticated_; }
  std::vector<grpc::string_ref> GetPeerIdentity() const override { return {}; }
  std::string GetPeerIdentityPropertyName() const override { return "x509_common_name"; }
  std::vector<grpc::string_ref> FindPropertyValues(const std::string& name) const override {
    std::vector<grpc::string_ref> out;
    auto range = properties_.equal_range(name);
    for (auto it = range.first; it != range.second; ++it) out.emplace_back(it->second);
    return out;
  }
  grpc::AuthPropertyIterator begin() const override { return NoProperties(); }
  grpc::AuthPropertyIterator end() const override { return NoProperties(); }
  void AddProperty(const std::string& key, const grpc::string_ref& value) override {
    properties_.emplace(key, std::string(value.data(), value.size()));
  }
  bool SetPeerIdentityPropertyName(const std::string&) override { return true; }

 private:
  const bool authenticated_;
  std::multimap<std::string, std::string> properties_;
};

class CallIdentityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::string> hash = core::HashToken(kToken);
    ASSERT_TRUE(hash.ok());
    absl::StatusOr<std::shared_ptr<const core::ClientDirectory>> d =
        core::ClientDirectory::Parse(absl::StrCat(R"(
clients:
  - id: billing
    token_hashes: [")",
                                                  *hash, R"("]
    roles: [admin]
  - id: web
    spiffe_ids: ["spiffe://example.org/ns/prod/sa/web"]
  - id: reports
    cert_subjects: ["CN=reports,O=Example"]
    roles: [monitor]
)"));
    ASSERT_TRUE(d.ok()) << d.status();
    auth_ = std::make_unique<core::Authenticator>(*d);
  }
  std::unique_ptr<core::Authenticator> auth_;
};

TEST_F(CallIdentityTest, WithoutAClientsFileTheDeclaredIdIsTakenAndSeesAll) {
  CallAuthenticator none;
  absl::StatusOr<CallIdentity> who = none.Identify(nullptr, "billing", {});
  ASSERT_TRUE(who.ok());
  EXPECT_EQ(who->client_id, "billing");
  EXPECT_TRUE(who->admin());
  EXPECT_TRUE(who->caller().sees_all);
}

TEST_F(CallIdentityTest, BearerTokenNamesTheClientWhateverIdIsDeclared) {
  CallAuthenticator auth(auth_.get());
  const std::string header = absl::StrCat("Bearer ", kToken);
  absl::StatusOr<CallIdentity> who = auth.Identify(&header, "web", {});
  ASSERT_TRUE(who.ok()) << who.status();
  EXPECT_EQ(who->client_id, "billing");
  EXPECT_TRUE(who->admin());
  const std::string lower = absl::StrCat("bearer  ", kToken);
  EXPECT_TRUE(auth.Identify(&lower, "", {}).ok());
}

TEST_F(CallIdentityTest, MissingOrWrongCredentialsAreUnauthenticatedSayingWhatToSend) {
  CallAuthenticator auth(auth_.get());
  absl::Status missing = auth.Identify(nullptr, "billing", {}).status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(missing.message(), HasSubstr("authorization: Bearer <token>"));
  const std::string wrong = "Bearer wrong-token-0123456789";
  absl::Status bad = auth.Identify(&wrong, "billing", {}).status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(bad.message(), HasSubstr("not valid"));
  EXPECT_THAT(bad.message(), Not(HasSubstr("wrong-token")));
  const std::string basic = absl::StrCat("Basic ", kToken);
  absl::Status scheme = auth.Identify(&basic, "", {}).status();
  EXPECT_EQ(scheme.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(scheme.message(), Not(HasSubstr(kToken)));
}

TEST_F(CallIdentityTest, VerifiedCertificateMapsBySpiffeIdOrSubject) {
  CallAuthenticator auth(auth_.get());
  FakeAuthContext spiffe(/*authenticated=*/true);
  spiffe.AddProperty("peer_spiffe_id", "spiffe://example.org/ns/prod/sa/web");
  spiffe.AddProperty("x509_subject", "CN=reports,O=Example");
  absl::StatusOr<CallIdentity> web = auth.Identify(nullptr, "", PeerCertificateOf(spiffe));
  ASSERT_TRUE(web.ok()) << web.status();
  EXPECT_EQ(web->client_id, "web");
  EXPECT_FALSE(web->admin());
  EXPECT_FALSE(web->may_monitor());
  EXPECT_FALSE(web->caller().sees_all);

  FakeAuthContext subject(/*authenticated=*/true);
  subject.AddProperty("x509_subject", "CN=reports,O=Example");
  absl::StatusOr<CallIdentity> reports = auth.Identify(nullptr, "", PeerCertificateOf(subject));
  ASSERT_TRUE(reports.ok()) << reports.status();
  EXPECT_EQ(reports->client_id, "reports");
  EXPECT_TRUE(reports->may_monitor());
  EXPECT_FALSE(reports->admin());

  FakeAuthContext stranger(/*authenticated=*/true);
  stranger.AddProperty("x509_subject", "CN=intruder,O=Elsewhere");
  absl::Status refused = auth.Identify(nullptr, "", PeerCertificateOf(stranger)).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(refused.message(), HasSubstr("CN=intruder,O=Elsewhere"));
}

TEST_F(CallIdentityTest, UnverifiedCertificateProvesNothing) {
  FakeAuthContext unverified(/*authenticated=*/false);
  unverified.AddProperty("peer_spiffe_id", "spiffe://example.org/ns/prod/sa/web");
  const core::PeerCertificate peer = PeerCertificateOf(unverified);
  EXPECT_TRUE(peer.spiffe_ids.empty());
  EXPECT_EQ(CallAuthenticator(auth_.get()).Identify(nullptr, "", peer).status().code(),
            absl::StatusCode::kUnauthenticated);
}

}  // namespace
}  // namespace sessionbroker::transport
