#include "tests/support/grpc_wire.h"

#include <future>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/unknown_field_set.h"
#include "grpcpp/generic/generic_stub.h"

namespace sessionbroker::testing {
namespace {

using google::protobuf::UnknownField;
using google::protobuf::UnknownFieldSet;

constexpr char kHealthCheck[] = "/grpc.health.v1.Health/Check";
constexpr char kHealthWatch[] = "/grpc.health.v1.Health/Watch";
constexpr char kReflection[] = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

grpc::ByteBuffer ToBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string FromBuffer(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  (void)buffer.Dump(&slices);
  std::string out;
  for (const grpc::Slice& s : slices)
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

std::string HealthRequest(const std::string& service) {
  UnknownFieldSet request;
  if (!service.empty()) request.AddLengthDelimited(1, service);  // HealthCheckRequest.service
  std::string bytes;
  request.SerializeToString(&bytes);
  return bytes;
}

ServingStatus ParseHealthResponse(const std::string& bytes) {
  UnknownFieldSet response;
  response.ParseFromString(bytes);
  for (int i = 0; i < response.field_count(); ++i) {
    if (response.field(i).number() == 1 && response.field(i).type() == UnknownField::TYPE_VARINT) {
      return static_cast<ServingStatus>(response.field(i).varint());
    }
  }
  return ServingStatus::kUnknown;  // proto3 default: field absent
}

void SetDeadline(grpc::ClientContext* context, absl::Duration timeout) {
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

// One request/response exchange on ServerReflectionInfo.
absl::Status ReflectionCall(const std::shared_ptr<grpc::Channel>& channel,
                            const UnknownFieldSet& request, UnknownFieldSet* parsed) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  SetDeadline(&context, absl::Seconds(10));
  grpc::CompletionQueue cq;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
      stub.PrepareCall(&context, kReflection, &cq);
  void* tag;
  bool ok = false;
  auto step = [&](int id) {
    return cq.Next(&tag, &ok) && ok && tag == reinterpret_cast<void*>(id);
  };
  call->StartCall(reinterpret_cast<void*>(1));
  if (!step(1)) return absl::UnavailableError("reflection: could not start the call");
  std::string bytes;
  request.SerializeToString(&bytes);
  call->Write(ToBuffer(bytes), reinterpret_cast<void*>(2));
  if (!step(2)) return absl::UnavailableError("reflection: write failed");
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(3));
  const bool read_ok = step(3);
  call->WritesDone(reinterpret_cast<void*>(4));
  step(4);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  step(5);
  if (!read_ok) {
    return absl::UnavailableError(
        absl::StrCat("reflection: no response: ", status.error_message()));
  }
  if (!parsed->ParseFromString(FromBuffer(response))) {
    return absl::InternalError("reflection: unparsable response");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ServingStatus> HealthCheck(const std::shared_ptr<grpc::Channel>& channel,
                                          const std::string& service, absl::Duration timeout) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  SetDeadline(&context, timeout);
  grpc::ByteBuffer request = ToBuffer(HealthRequest(service));
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, kHealthCheck, grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status s) { done.set_value(std::move(s)); });
  const grpc::Status status = done.get_future().get();
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  }
  return ParseHealthResponse(FromBuffer(response));
}

bool WaitForHealth(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                   ServingStatus want, absl::Duration timeout) {
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    absl::StatusOr<ServingStatus> s = HealthCheck(channel, service, absl::Seconds(2));
    if (s.ok() && *s == want) return true;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return false;
}

HealthWatch::HealthWatch(const std::shared_ptr<grpc::Channel>& channel,
                         const std::string& service) {
  grpc::GenericStub stub(channel);
  call_ = stub.PrepareCall(&context_, kHealthWatch, &cq_);
  call_->StartCall(reinterpret_cast<void*>(1));
  void* tag;
  bool ok = false;
  if (!cq_.Next(&tag, &ok) || !ok) return;
  call_->Write(ToBuffer(HealthRequest(service)), grpc::WriteOptions().set_last_message(),
               reinterpret_cast<void*>(2));
  started_ = cq_.Next(&tag, &ok) && ok;
}

HealthWatch::~HealthWatch() {
  context_.TryCancel();
  cq_.Shutdown();
  void* tag;
  bool ok;
  while (cq_.Next(&tag, &ok)) {
  }
}

absl::StatusOr<ServingStatus> HealthWatch::Next(absl::Duration timeout) {
  if (!started_) return absl::UnavailableError("health watch did not start");
  grpc::ByteBuffer response;
  call_->Read(&response, reinterpret_cast<void*>(3));
  void* tag;
  bool ok = false;
  const auto status = cq_.AsyncNext(&tag, &ok, absl::ToChronoTime(absl::Now() + timeout));
  if (status != grpc::CompletionQueue::GOT_EVENT) {
    context_.TryCancel();
    cq_.Next(&tag, &ok);  // the cancelled read completes
    started_ = false;
    return absl::DeadlineExceededError("no health update in time");
  }
  if (!ok) {
    started_ = false;
    return absl::UnavailableError("health watch stream ended");
  }
  return ParseHealthResponse(FromBuffer(response));
}

absl::StatusOr<std::vector<std::string>> ReflectionListServices(
    const std::shared_ptr<grpc::Channel>& channel) {
  UnknownFieldSet request;
  request.AddLengthDelimited(7, "");  // ServerReflectionRequest.list_services
  UnknownFieldSet parsed;
  if (absl::Status s = ReflectionCall(channel, request, &parsed); !s.ok()) return s;
  const UnknownFieldSet* response = &parsed;
  std::vector<std::string> names;
  for (int i = 0; i < response->field_count(); ++i) {
    const UnknownField& f = response->field(i);
    if (f.number() != 6 || f.type() != UnknownField::TYPE_LENGTH_DELIMITED) continue;
    UnknownFieldSet list;  // ListServiceResponse
    list.ParseFromString(f.length_delimited());
    for (int j = 0; j < list.field_count(); ++j) {
      if (list.field(j).number() != 1) continue;
      UnknownFieldSet service;  // ServiceResponse
      service.ParseFromString(list.field(j).length_delimited());
      for (int k = 0; k < service.field_count(); ++k) {
        if (service.field(k).number() == 1) names.push_back(service.field(k).length_delimited());
      }
    }
  }
  return names;
}

absl::StatusOr<std::vector<std::string>> ReflectionDescribeService(
    const std::shared_ptr<grpc::Channel>& channel, const std::string& service) {
  UnknownFieldSet request;
  request.AddLengthDelimited(4, service);  // ServerReflectionRequest.file_containing_symbol
  UnknownFieldSet parsed;
  if (absl::Status s = ReflectionCall(channel, request, &parsed); !s.ok()) return s;
  const UnknownFieldSet* response = &parsed;
  std::vector<std::string> methods;
  for (int i = 0; i < response->field_count(); ++i) {
    const UnknownField& f = response->field(i);
    if (f.number() != 4 || f.type() != UnknownField::TYPE_LENGTH_DELIMITED) continue;
    UnknownFieldSet files;  // FileDescriptorResponse
    files.ParseFromString(f.length_delimited());
    for (int j = 0; j < files.field_count(); ++j) {
      if (files.field(j).number() != 1) continue;
      google::protobuf::FileDescriptorProto file;
      if (!file.ParseFromString(files.field(j).length_delimited())) continue;
      for (const auto& s : file.service()) {
        if (absl::StrCat(file.package(), ".", s.name()) != service) continue;
        for (const auto& m : s.method()) methods.push_back(m.name());
      }
    }
  }
  if (methods.empty())
    return absl::NotFoundError(absl::StrCat("reflection: ", service, " not described"));
  return methods;
}

grpc::Status RawUnaryCall(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                          const std::string& request_bytes, absl::Duration timeout) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  SetDeadline(&context, timeout);
  grpc::CompletionQueue cq;
  std::unique_ptr<grpc::ClientAsyncResponseReader<grpc::ByteBuffer>> call =
      stub.PrepareUnaryCall(&context, method, ToBuffer(request_bytes), &cq);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag;
  bool ok = false;
  if (!cq.Next(&tag, &ok)) return grpc::Status(grpc::StatusCode::INTERNAL, "queue shut down");
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

grpc::Status RawStreamCall(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                           const std::string& request_bytes, absl::Duration timeout) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  SetDeadline(&context, timeout);
  grpc::CompletionQueue cq;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
      stub.PrepareCall(&context, method, &cq);
  void* tag;
  bool ok = false;
  int64_t next = 1;
  // Runs one operation and waits for it; its `ok`.
  auto step = [&](auto&& start) {
    void* want = reinterpret_cast<void*>(next++);
    start(want);
    while (cq.Next(&tag, &ok)) {
      if (tag == want) return ok;
    }
    return false;
  };
  grpc::Status status;
  if (step([&](void* t) { call->StartCall(t); }) &&
      step([&](void* t) { call->Write(ToBuffer(request_bytes), t); })) {
    grpc::ByteBuffer response;
    while (step([&](void* t) { call->Read(&response, t); })) {
    }
  }
  step([&](void* t) { call->Finish(&status, t); });
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

}  // namespace sessionbroker::testing
