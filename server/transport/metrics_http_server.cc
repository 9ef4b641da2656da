#include "server/transport/metrics_http_server.h"

#include <pthread.h>
#include <sys/socket.h>

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "httplib.h"
#include "server/core/monitor/prometheus_text.h"
#include "spdlog/spdlog.h"

namespace sessionbroker::transport {
namespace {

constexpr int kThreads = 2;

// OpenSSL's certificate callback: the current pair for this handshake.
int UseCurrentIdentity(SSL* ssl, void* arg) {
  const auto* fn = static_cast<const MetricsHttpServer::IdentityFn*>(arg);
  const std::shared_ptr<const ServerIdentity> id = (*fn)();
  return id != nullptr && id->ApplyTo(ssl) ? 1 : 0;
}

std::unique_ptr<httplib::Server> MakeServer(const MetricsHttpServer::IdentityFn* tls) {
  if (!*tls) return std::make_unique<httplib::Server>();
  return std::make_unique<httplib::SSLServer>([tls](SSL_CTX& ctx) {
    SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
    SSL_CTX_set_cert_cb(&ctx, UseCurrentIdentity, const_cast<MetricsHttpServer::IdentityFn*>(tls));
    return true;
  });
}

}  // namespace

MetricsHttpServer::MetricsHttpServer(std::string host, int port, MetricsFn metrics, ReadyFn ready,
                                     IdentityFn tls)
    : host_(std::move(host)), port_(port), tls_(std::move(tls)), server_(MakeServer(&tls_)) {
  server_->new_task_queue = [] { return new httplib::ThreadPool(kThreads); };
  server_->set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  // One request per connection: a scrape every few seconds gains nothing
  // from keep-alive, and an idle kept-alive connection would hold one of
  // the few threads.
  server_->set_keep_alive_max_count(1);
  server_->set_read_timeout(5, 0);
  server_->set_write_timeout(5, 0);
  server_->Get("/metrics",
               [metrics = std::move(metrics)](const httplib::Request&, httplib::Response& res) {
                 res.set_content(metrics(), core::kPrometheusContentType);
               });
  server_->Get("/livez", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  server_->Get(
      "/readyz", [ready = std::move(ready)](const httplib::Request&, httplib::Response& res) {
        const absl::Status status = ready();
        if (status.ok()) {
          res.set_content("ok\n", "text/plain");
        } else {
          res.status = 503;
          res.set_content(absl::StrCat("not ready: ", status.message(), "\n"), "text/plain");
        }
      });
}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

absl::Status MetricsHttpServer::Start() {
  // bind_to_any_port returns the port the kernel chose, or -1;
  // bind_to_port only whether it bound.
  const int bound = port_ == 0 ? server_->bind_to_any_port(host_)
                               : (server_->bind_to_port(host_, port_) ? port_ : -1);
  if (bound <= 0) {
    return absl::UnavailableError(absl::StrCat(
        "could not listen on ", host_, ":", port_,
        " (BROKER_METRICS_ADDR): the address is in use or not available on this host; set "
        "another HOST:PORT, or BROKER_METRICS_ADDR=off to serve no metrics"));
  }
  bound_port_ = bound;
  thread_ = std::thread([this] {
    server_->listen_after_bind();
    listen_returned_.store(true);
  });
  pthread_setname_np(thread_.native_handle(), "sb-http");
  spdlog::info("metrics and probes on {}://{}:{}/metrics /livez /readyz", tls_ ? "https" : "http",
               host_, bound_port_);
  return absl::OkStatus();
}

void MetricsHttpServer::Stop() {
  if (!thread_.joinable()) return;
  // httplib's stop() does nothing until the listening loop has begun.
  while (!server_->is_running() && !listen_returned_.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  server_->stop();
  thread_.join();
}

}  // namespace sessionbroker::transport
