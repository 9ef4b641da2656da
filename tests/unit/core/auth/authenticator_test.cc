#include "server/core/auth/authenticator.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/auth/directory_shares.h"
#include "server/core/auth/token_hash.h"

namespace sessionbroker::core {
namespace {

constexpr char kBillingToken[] = "billing-token-0123456789";
constexpr char kWebToken[] = "web-token-0123456789abcdef";

std::string HashOf(absl::string_view token) {
  absl::StatusOr<std::string> hash = HashToken(token);
  EXPECT_TRUE(hash.ok()) << hash.status();
  return *hash;
}

std::shared_ptr<const ClientDirectory> Directory(const std::string& text) {
  absl::StatusOr<std::shared_ptr<const ClientDirectory>> d = ClientDirectory::Parse(text);
  EXPECT_TRUE(d.ok()) << d.status();
  return *d;
}

std::string TwoClients(const std::string& billing_hash, const std::string& web_hash) {
  return absl::StrCat(R"(
clients:
  - id: billing
    token_hashes: [")",
                      billing_hash, R"("]
    spiffe_ids: ["spiffe://example.org/ns/prod/sa/billing"]
  - id: web
    token_hashes: [")",
                      web_hash, R"("]
    cert_subjects: ["CN=web,O=Example"]
)");
}

TEST(TokenHashTest, HashIsSaltedArgon2idAndVerifies) {
  const std::string a = HashOf(kBillingToken);
  const std::string b = HashOf(kBillingToken);
  EXPECT_TRUE(absl::StartsWith(a, "$argon2id$"));
  EXPECT_NE(a, b);  // a fresh salt each time
  EXPECT_TRUE(LooksLikeTokenHash(a));
  EXPECT_TRUE(TokenMatches(a, kBillingToken));
  EXPECT_TRUE(TokenMatches(b, kBillingToken));
  EXPECT_FALSE(TokenMatches(a, kWebToken));
  EXPECT_FALSE(TokenMatches("not a hash", kBillingToken));
}

TEST(TokenHashTest, RefusesShortTokensAndWhitespace) {
  EXPECT_EQ(HashToken("short").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(HashToken("has a space in the middle").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(HashToken("line\nbreak-0123456789").status().code(),
            absl::StatusCode::kInvalidArgument);
}

class AuthenticatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    billing_hash_ = HashOf(kBillingToken);
    web_hash_ = HashOf(kWebToken);
  }
  std::string billing_hash_;
  std::string web_hash_;
};

TEST_F(AuthenticatorTest, TokenNamesItsClient) {
  Authenticator auth(Directory(TwoClients(billing_hash_, web_hash_)));
  ASSERT_NE(auth.VerifyToken(kBillingToken), nullptr);
  EXPECT_EQ(auth.VerifyToken(kBillingToken)->id, "billing");
  EXPECT_EQ(auth.VerifyToken(kWebToken)->id, "web");
  EXPECT_EQ(auth.VerifyToken("wrong-token-0123456789"), nullptr);
  EXPECT_EQ(auth.VerifyToken(""), nullptr);
}

TEST_F(AuthenticatorTest, SuccessIsVerifiedSlowlyOnceThenCached) {
  Authenticator auth(Directory(TwoClients(billing_hash_, web_hash_)));
  ASSERT_NE(auth.VerifyToken(kWebToken, "web"), nullptr);
  const int64_t after_first = auth.slow_verifications();
  EXPECT_EQ(after_first, 1);  // the hint was tried first
  for (int i = 0; i < 100; ++i) ASSERT_EQ(auth.VerifyToken(kWebToken)->id, "web");
  EXPECT_EQ(auth.slow_verifications(), after_first);
}

TEST_F(AuthenticatorTest, FailureIsRememberedToo) {
  Authenticator auth(Directory(TwoClients(billing_hash_, web_hash_)));
  EXPECT_EQ(auth.VerifyToken("wrong-token-0123456789"), nullptr);
  const int64_t after_first = auth.slow_verifications();
  EXPECT_EQ(after_first, 2);  // every client's hash
  EXPECT_EQ(auth.VerifyToken("wrong-token-0123456789"), nullptr);
  EXPECT_EQ(auth.slow_verifications(), after_first);
}

TEST_F(AuthenticatorTest, ReplaceForgetsCachedVerifications) {
  Authenticator auth(Directory(TwoClients(billing_hash_, web_hash_)));
  ASSERT_NE(auth.VerifyToken(kWebToken), nullptr);
  // web's token is rotated: the old one must stop working at once.
  auth.Replace(Directory(TwoClients(billing_hash_, HashOf("web-token-rotated-0123456789"))));
  EXPECT_EQ(auth.VerifyToken(kWebToken), nullptr);
  EXPECT_EQ(auth.VerifyToken("web-token-rotated-0123456789")->id, "web");
}

TEST_F(AuthenticatorTest, PeerCertificateMapsBySpiffeIdThenSubject) {
  Authenticator auth(Directory(TwoClients(billing_hash_, web_hash_)));
  PeerCertificate spiffe{{"spiffe://example.org/ns/prod/sa/billing"}, {"CN=web,O=Example"}};
  EXPECT_EQ(auth.MatchPeer(spiffe)->id, "billing");
  PeerCertificate subject{{"spiffe://example.org/unknown"}, {"CN=web,O=Example"}};
  EXPECT_EQ(auth.MatchPeer(subject)->id, "web");
  PeerCertificate stranger{{"spiffe://other.org/billing"}, {"CN=billing,O=Example"}};
  EXPECT_EQ(auth.MatchPeer(stranger), nullptr);
  EXPECT_EQ(auth.MatchPeer(PeerCertificate{}), nullptr);
}

// ---- DirectoryShares: the clients file as the pool's shares ----

TEST(DirectorySharesTest, OnlyEntriesThatSetReservedConnectionsHaveTheirFloorHeld) {
  Authenticator auth(Directory(absl::StrCat(R"(
clients:
  - id: checkout
    token_hashes: [")",
                                            HashOf(kBillingToken), R"("]
    reserved_connections: 2
  - id: batch
    token_hashes: [")",
                                            HashOf(kWebToken), R"("]
    weight: 2
)")));
  ClientQuota defaults;
  defaults.reserved_connections = 1;  // BROKER_CLIENT_RESERVED_CONNECTIONS
  const DirectoryShares shares(auth, defaults);
  EXPECT_EQ(shares.ReservedClients(), std::vector<std::string>{"checkout"});
  EXPECT_EQ(shares.QuotaFor("checkout").reserved_connections, 2);
  EXPECT_EQ(shares.QuotaFor("batch").reserved_connections, 1) << "the default orders, holds not";
  EXPECT_EQ(shares.QuotaFor("unlisted").reserved_connections, 1);
  auth.Replace(Directory(
      absl::StrCat("clients:\n  - id: batch\n    token_hashes: [\"", HashOf(kWebToken), "\"]\n")));
  EXPECT_TRUE(shares.ReservedClients().empty()) << "a reload changes who is reserved";
}

}  // namespace
}  // namespace sessionbroker::core
