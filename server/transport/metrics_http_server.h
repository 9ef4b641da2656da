// MetricsHttpServer: the broker's HTTP endpoint for Prometheus and
// Kubernetes, served with cpp-httplib on BROKER_METRICS_ADDR, plaintext or
// (BROKER_METRICS_TLS) HTTPS with the gRPC port's certificate, taken from
// the CertificateReloader at each handshake so that a rotation applies here
// too:
//
//   GET /metrics  the Prometheus text exposition (200)
//   GET /livez    200 "ok" while the process serves HTTP at all
//   GET /readyz   200 "ok" when `ready` says so (database reachable, not
//                 draining), else 503 with the reason: the same answer as
//                 grpc.health.v1
//
// Port 0 lets the kernel choose a free port; port() then says which one.
//
// Its own small thread pool serves requests; handlers take a snapshot (short
// locks) and never block on the database. The listening socket is opened
// without SO_REUSEPORT (cpp-httplib's default sets it), so a second broker on
// the same port fails to start instead of sharing it.
//
// Thread-safe. Stop() (or the destructor) before what the callbacks use goes
// away.
#ifndef SESSIONBROKER_SERVER_TRANSPORT_METRICS_HTTP_SERVER_H_
#define SESSIONBROKER_SERVER_TRANSPORT_METRICS_HTTP_SERVER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "server/transport/tls_certificates.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace sessionbroker::transport {

class MetricsHttpServer final {
 public:
  using MetricsFn = std::function<std::string()>;
  // OK when ready; otherwise a status whose message says why not.
  using ReadyFn = std::function<absl::Status()>;

  // The certificate and key for one HTTPS handshake; null refuses it.
  using IdentityFn = std::function<std::shared_ptr<const ServerIdentity>()>;

  // `tls` empty: plain HTTP.
  MetricsHttpServer(std::string host, int port, MetricsFn metrics, ReadyFn ready,
                    IdentityFn tls = nullptr);
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  // Binds and starts serving; UNAVAILABLE naming the address when it cannot
  // bind (in use, or not an address of this host).
  absl::Status Start();
  // Stops accepting and waits for the serving thread. Idempotent.
  void Stop();

  // The port bound by Start() (the one chosen when asked for port 0); 0
  // before Start() succeeded.
  int port() const { return bound_port_; }

 private:
  const std::string host_;
  const int port_;  // as asked for; 0 = any
  // Read by OpenSSL's certificate callback on the serving threads.
  const IdentityFn tls_;
  int bound_port_ = 0;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::atomic<bool> listen_returned_{false};
};

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_METRICS_HTTP_SERVER_H_
