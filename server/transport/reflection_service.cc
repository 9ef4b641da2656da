#include "server/transport/reflection_service.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"

namespace sessionbroker::transport {
namespace {

namespace pb = google::protobuf;

const pb::DescriptorPool& Pool() { return *pb::DescriptorPool::generated_pool(); }

// Appends `file` and, depth first, every file it imports, each once (`seen`
// is per response), as gRPC's reflection does.
template <typename Response>
void AddFileWithDependencies(const pb::FileDescriptor* file, absl::flat_hash_set<std::string>* seen,
                             Response* response) {
  if (!seen->insert(file->name()).second) return;
  pb::FileDescriptorProto proto;
  file->CopyTo(&proto);
  proto.SerializeToString(
      response->mutable_file_descriptor_response()->add_file_descriptor_proto());
  for (int i = 0; i < file->dependency_count(); ++i) {
    AddFileWithDependencies(file->dependency(i), seen, response);
  }
}

template <typename Response>
void NotFound(std::string message, Response* response) {
  response->mutable_error_response()->set_error_code(static_cast<int>(grpc::StatusCode::NOT_FOUND));
  response->mutable_error_response()->set_error_message(std::move(message));
}

template <typename Response>
void AnswerFile(const pb::FileDescriptor* file, std::string not_found, Response* response) {
  if (file == nullptr) return NotFound(std::move(not_found), response);
  absl::flat_hash_set<std::string> seen;
  AddFileWithDependencies(file, &seen, response);
}

}  // namespace

// One ServerReflectionInfo stream: read a request, write its answer, read
// the next; the client's half-close ends it with OK. Lives until OnDone.
// Only one operation is in flight at a time, so no state needs a lock.
template <typename Version>
class ReflectionService<Version>::Reactor final
    : public grpc::ServerBidiReactor<Request, Response> {
 public:
  explicit Reactor(const ReflectionService& service) : service_(service) {
    this->StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      this->Finish(grpc::Status::OK);  // half-closed, or cancelled
      return;
    }
    response_.Clear();
    service_.Answer(request_, &response_);
    this->StartWrite(&response_);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      this->Finish(grpc::Status::OK);  // the client is gone
      return;
    }
    this->StartRead(&request_);
  }

  void OnDone() override { delete this; }

 private:
  const ReflectionService& service_;
  Request request_;
  Response response_;
};

template <typename Version>
ReflectionService<Version>::ReflectionService(std::vector<std::string> services, CallGate gate)
    : services_(std::move(services)), gate_(std::move(gate)) {}

template <typename Version>
grpc::ServerBidiReactor<typename Version::Request, typename Version::Response>*
ReflectionService<Version>::ServerReflectionInfo(grpc::CallbackServerContext* context) {
  if (grpc::Status admitted = gate_.Admit(context); !admitted.ok()) {
    return new RefusedReactor<grpc::ServerBidiReactor<Request, Response>>(std::move(admitted));
  }
  return new Reactor(*this);
}

template <typename Version>
void ReflectionService<Version>::Answer(const Request& request, Response* response) const {
  response->set_valid_host(request.host());
  *response->mutable_original_request() = request;
  switch (request.message_request_case()) {
    case Request::kListServices:
      for (const std::string& name : services_) {
        response->mutable_list_services_response()->add_service()->set_name(name);
      }
      return;
    case Request::kFileByFilename:
      return AnswerFile(Pool().FindFileByName(request.file_by_filename()),
                        absl::StrCat("file not found: ", request.file_by_filename()), response);
    case Request::kFileContainingSymbol:
      return AnswerFile(Pool().FindFileContainingSymbol(request.file_containing_symbol()),
                        absl::StrCat("symbol not found: ", request.file_containing_symbol()),
                        response);
    case Request::kFileContainingExtension: {
      const auto& ask = request.file_containing_extension();
      const pb::Descriptor* type = Pool().FindMessageTypeByName(ask.containing_type());
      if (type == nullptr) {
        return NotFound(absl::StrCat("type not found: ", ask.containing_type()), response);
      }
      const pb::FieldDescriptor* extension =
          Pool().FindExtensionByNumber(type, ask.extension_number());
      return AnswerFile(extension == nullptr ? nullptr : extension->file(),
                        absl::StrCat("extension not found: ", ask.containing_type(), " field ",
                                     ask.extension_number()),
                        response);
    }
    case Request::kAllExtensionNumbersOfType: {
      const pb::Descriptor* type =
          Pool().FindMessageTypeByName(request.all_extension_numbers_of_type());
      if (type == nullptr) {
        return NotFound(absl::StrCat("type not found: ", request.all_extension_numbers_of_type()),
                        response);
      }
      std::vector<const pb::FieldDescriptor*> extensions;
      Pool().FindAllExtensions(type, &extensions);
      std::vector<int> numbers;
      for (const pb::FieldDescriptor* e : extensions) numbers.push_back(e->number());
      std::sort(numbers.begin(), numbers.end());
      auto* answer = response->mutable_all_extension_numbers_response();
      answer->set_base_type_name(type->full_name());
      for (int n : numbers) answer->add_extension_number(n);
      return;
    }
    case Request::MESSAGE_REQUEST_NOT_SET:
      break;
  }
  response->mutable_error_response()->set_error_code(
      static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  response->mutable_error_response()->set_error_message(
      "the request names nothing to look up: set one of list_services, file_by_filename, "
      "file_containing_symbol, file_containing_extension, all_extension_numbers_of_type");
}

template class ReflectionService<ReflectionV1>;
template class ReflectionService<ReflectionV1Alpha>;

}  // namespace sessionbroker::transport
