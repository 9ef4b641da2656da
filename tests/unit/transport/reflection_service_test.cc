// ReflectionService v1 and v1alpha on a real grpc::Server (in-process
// channel), over this binary's generated descriptors: every kind of request,
// transitive dependencies, errors that keep the stream open; a closed
// CallGate (BROKER_AUTH_EXEMPT_SERVICES without reflection) ending the stream
// UNAUTHENTICATED without credentials.
#include "server/transport/reflection_service.h"

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/core/auth/authenticator.h"
#include "server/core/auth/client_directory.h"
#include "server/core/auth/token_hash.h"
#include "server/transport/call_gate.h"
#include "server/transport/call_identity.h"
#include "sessionbroker/v1/broker.grpc.pb.h"

namespace sessionbroker::transport {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;

const std::vector<std::string> kServices = {
    "sessionbroker.v1.SessionBroker", "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"};

template <typename Version>
class ReflectionServiceTest : public ::testing::Test {
 protected:
  using Request = typename Version::Request;
  using Response = typename Version::Response;

  void SetUp() override {
    // Reflection serves what is linked in; the broker links these with its
    // services, and this test must name them for the linker to keep them.
    ASSERT_NE(v1::ExecuteRequest::descriptor(), nullptr);
    ASSERT_NE(grpc::health::v1::HealthCheckRequest::descriptor(), nullptr);
    grpc::ServerBuilder builder;
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    stub_ = Version::Service::NewStub(server_->InProcessChannel(grpc::ChannelArguments()));
    stream_ = stub_->ServerReflectionInfo(&context_);
  }
  void TearDown() override {
    stream_->WritesDone();
    Response extra;
    EXPECT_FALSE(stream_->Read(&extra));
    EXPECT_TRUE(stream_->Finish().ok());
    server_->Shutdown();
  }

  // One exchange on the stream the test keeps open.
  Response Ask(const Request& request) {
    EXPECT_TRUE(stream_->Write(request));
    Response response;
    EXPECT_TRUE(stream_->Read(&response));
    return response;
  }

  // The file names of a file_descriptor_response, in order.
  static std::vector<std::string> FileNames(const Response& response) {
    std::vector<std::string> names;
    for (const std::string& bytes : response.file_descriptor_response().file_descriptor_proto()) {
      google::protobuf::FileDescriptorProto file;
      EXPECT_TRUE(file.ParseFromString(bytes));
      names.push_back(file.name());
    }
    return names;
  }

  ReflectionService<Version> service_{kServices};
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<typename Version::Service::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<Request, Response>> stream_;
};

using Versions = ::testing::Types<ReflectionV1, ReflectionV1Alpha>;
TYPED_TEST_SUITE(ReflectionServiceTest, Versions);

TYPED_TEST(ReflectionServiceTest, ListsTheServicesItWasGivenAndEchoesTheRequest) {
  typename TestFixture::Request request;
  request.set_host("broker:50051");
  request.set_list_services("");
  const auto response = this->Ask(request);
  std::vector<std::string> names;
  for (const auto& s : response.list_services_response().service()) names.push_back(s.name());
  EXPECT_EQ(names, kServices);
  EXPECT_EQ(response.valid_host(), "broker:50051");
  EXPECT_TRUE(response.original_request().has_list_services());
}

TYPED_TEST(ReflectionServiceTest, ResolvesEveryServedServiceWithItsDependencies) {
  for (const std::string& name : kServices) {
    typename TestFixture::Request request;
    request.set_file_containing_symbol(name);
    const auto response = this->Ask(request);
    EXPECT_FALSE(response.has_error_response())
        << name << ": " << response.error_response().error_message();
    EXPECT_FALSE(this->FileNames(response).empty()) << name;
  }
  typename TestFixture::Request request;
  request.set_file_containing_symbol("sessionbroker.v1.SessionBroker");
  const std::vector<std::string> files = this->FileNames(this->Ask(request));
  ASSERT_FALSE(files.empty());
  EXPECT_EQ(files.front(), "sessionbroker/v1/broker.proto");
  // Its imports come along, each once, so a client can build every type.
  EXPECT_THAT(files, Contains("google/protobuf/timestamp.proto"));
  EXPECT_THAT(files, Contains("google/protobuf/duration.proto"));
  EXPECT_EQ(std::set<std::string>(files.begin(), files.end()).size(), files.size());
}

TYPED_TEST(ReflectionServiceTest, ResolvesMethodsMessagesAndFilesByName) {
  typename TestFixture::Request method;
  method.set_file_containing_symbol("grpc.health.v1.Health.Watch");
  EXPECT_THAT(this->FileNames(this->Ask(method)), ElementsAre("grpc/health/v1/health.proto"));
  typename TestFixture::Request message;
  message.set_file_containing_symbol("sessionbroker.v1.Value");
  EXPECT_THAT(this->FileNames(this->Ask(message)), Contains("sessionbroker/v1/broker.proto"));
  typename TestFixture::Request file;
  file.set_file_by_filename("google/protobuf/duration.proto");
  EXPECT_THAT(this->FileNames(this->Ask(file)), ElementsAre("google/protobuf/duration.proto"));
}

TYPED_TEST(ReflectionServiceTest, ExtensionsOfATypeAreListedAndResolved) {
  // descriptor.proto's options messages are extendable; this binary defines
  // no extensions of them, so the list is empty and a lookup is NOT_FOUND.
  typename TestFixture::Request all;
  all.set_all_extension_numbers_of_type("google.protobuf.FieldOptions");
  const auto numbers = this->Ask(all);
  EXPECT_FALSE(numbers.has_error_response());
  EXPECT_EQ(numbers.all_extension_numbers_response().base_type_name(),
            "google.protobuf.FieldOptions");
  typename TestFixture::Request one;
  one.mutable_file_containing_extension()->set_containing_type("google.protobuf.FieldOptions");
  one.mutable_file_containing_extension()->set_extension_number(50000);
  EXPECT_EQ(this->Ask(one).error_response().error_code(),
            static_cast<int>(grpc::StatusCode::NOT_FOUND));
}

TYPED_TEST(ReflectionServiceTest, UnknownNamesAreNotFoundAndTheStreamGoesOn) {
  typename TestFixture::Request symbol;
  symbol.set_file_containing_symbol("no.such.Symbol");
  const auto missing = this->Ask(symbol);
  EXPECT_EQ(missing.error_response().error_code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
  EXPECT_THAT(missing.error_response().error_message(), ::testing::HasSubstr("no.such.Symbol"));
  typename TestFixture::Request file;
  file.set_file_by_filename("no/such.proto");
  EXPECT_EQ(this->Ask(file).error_response().error_code(),
            static_cast<int>(grpc::StatusCode::NOT_FOUND));
  typename TestFixture::Request type;
  type.set_all_extension_numbers_of_type("no.such.Type");
  EXPECT_EQ(this->Ask(type).error_response().error_code(),
            static_cast<int>(grpc::StatusCode::NOT_FOUND));
  typename TestFixture::Request empty;
  EXPECT_EQ(this->Ask(empty).error_response().error_code(),
            static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  typename TestFixture::Request list;
  list.set_list_services("");
  EXPECT_EQ(this->Ask(list).list_services_response().service_size(), 4);
}

TEST(ReflectionServiceGateTest, WhenNotExemptTheStreamNeedsCredentials) {
  constexpr char kToken[] = "operator-token-0123456789abcdef";
  absl::StatusOr<std::string> hash = core::HashToken(kToken);
  ASSERT_TRUE(hash.ok()) << hash.status();
  absl::StatusOr<std::shared_ptr<const core::ClientDirectory>> directory =
      core::ClientDirectory::Parse(
          absl::StrCat("clients:\n  - id: operator\n    token_hashes: [\"", *hash, "\"]\n"));
  ASSERT_TRUE(directory.ok()) << directory.status();
  core::Authenticator authenticator(*directory);
  ReflectionV1Service service(kServices, CallGate(CallAuthenticator(&authenticator)));
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  auto stub = ReflectionV1::Service::NewStub(server->InProcessChannel(grpc::ChannelArguments()));
  ReflectionV1::Request request;
  request.set_list_services("");
  ReflectionV1::Response response;
  {
    grpc::ClientContext context;
    auto stream = stub->ServerReflectionInfo(&context);
    stream->Write(request);
    EXPECT_FALSE(stream->Read(&response)) << "nothing is described to an unauthenticated caller";
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", absl::StrCat("Bearer ", kToken));
    auto stream = stub->ServerReflectionInfo(&context);
    ASSERT_TRUE(stream->Write(request));
    ASSERT_TRUE(stream->Read(&response));
    EXPECT_EQ(response.list_services_response().service_size(), static_cast<int>(kServices.size()));
    stream->WritesDone();
    EXPECT_TRUE(stream->Finish().ok());
  }
  server->Shutdown();
}

}  // namespace
}  // namespace sessionbroker::transport
