#!/usr/bin/python3
"""The Kubernetes manifests and the Dockerfile agree with the broker and the docs.

What the broker reads and where it listens comes from the binary itself
(``session-broker --print-config=env``), so these checks follow the broker as
it gains variables; the alerts come from docs/operations.md. Checked on what
``kubectl kustomize`` renders for deploy/k8s/base and the example overlay:
ConfigMap keys are variables the broker reads (and their values ones it
accepts), every variable of .env.example is in the ConfigMap or in
EXCLUDED below with its reason, probes point at the gRPC port with the
service names the broker serves, ports agree everywhere, the security
context is the one docs/deploy.md promises, the NetworkPolicy admits only
labelled namespaces to gRPC and the monitoring namespace to metrics, the
termination grace period covers the drain, and the PrometheusRule is
docs/operations.md's. (rootfs_test asks the running broker those probes.)

Usage: manifests_test.py PATH_TO_SESSION_BROKER (ctest label deploy).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import unittest
from typing import Any, Dict, List, Optional

import yaml

import deploy_support as ds

BROKER = ""

# Variables of .env.example that deliberately stay out of the ConfigMap.
EXCLUDED = {
    # A credential: it comes from the Secret session-broker-database.
    "DATABASE_URL": "from a Secret",
    # For tests and scripts that start brokers on port 0; in a pod the
    # ports are fixed and the Service and probes name them.
    "BROKER_PORT_FILE": "for tests on port 0",
    # Names a file from a Secret the operator mounts (docs/security.md).
    "BROKER_CLIENTS_FILE": "a file from a Secret",
    # Only the environment can set it, and the image has no .env to read.
    "BROKER_ENV_FILE": "the image has no .env",
    # Paths in a cert-manager Secret the base does not mount: the TLS patch
    # of docs/security.md ("Transport security") sets them.
    "BROKER_TLS_CERT": "set with the certificate's Secret (docs/security.md)",
    "BROKER_TLS_KEY": "set with the certificate's Secret (docs/security.md)",
    "BROKER_TLS_CLIENT_CA": "set with the certificate's Secret (docs/security.md)",
    "BROKER_TLS_CLIENT_AUTH": "only with BROKER_TLS_CLIENT_CA (docs/security.md)",
}
# Seconds docs/operations.md ("Drain, in Kubernetes' order") allows after the
# shutdown grace for ending sessions and exiting.
EXIT_MARGIN = 5
# The service name of the whole server in grpc.health.v1 (liveness).
SERVER_HEALTH_SERVICE = ""


def proto_service(path: str, service: str) -> str:
    """The fully qualified name of SERVICE in the .proto at PATH."""
    with open(os.path.join(ds.ROOT, path), encoding="utf-8") as f:
        text = f.read()
    package = re.search(r"^package\s+([\w.]+)\s*;", text, re.M).group(1)
    if not re.search(rf"^service\s+{service}\s*\{{", text, re.M):
        raise LookupError(f"{path} has no service {service}")
    return f"{package}.{service}"


def docs_alert_groups() -> List[Dict[str, Any]]:
    """The rule groups of docs/operations.md's "Alerts worth having" section."""
    with open(os.path.join(ds.ROOT, "docs", "operations.md"), encoding="utf-8") as f:
        text = f.read()
    section = re.search(r"^## Alerts worth having\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    if not section:
        raise LookupError("docs/operations.md has no '## Alerts worth having' section")
    block = re.search(r"^```yaml\n(.*?)^```", section.group(1), re.S | re.M)
    if not block:
        raise LookupError("docs/operations.md's alerts section has no yaml block")
    return yaml.safe_load(block.group(1))["groups"]


class Rendered:
    """One rendering (base or example overlay) and its main objects."""

    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.objects = ds.render(path)
        self.deployment = ds.find(self.objects, "Deployment", "session-broker")
        self.pod = self.deployment["spec"]["template"]
        self.container = self.pod["spec"]["containers"][0]
        self.configmap = ds.find(self.objects, "ConfigMap")
        self.service = ds.find(self.objects, "Service", "session-broker")

    def config(self) -> Dict[str, str]:
        """The ConfigMap's data."""
        return self.configmap["data"]

    def container_port(self, name_or_number: Any) -> int:
        """A container port by name (or a number, as it is)."""
        if isinstance(name_or_number, int):
            return name_or_number
        for port in self.container["ports"]:
            if port["name"] == name_or_number:
                return port["containerPort"]
        raise LookupError(f"{self.name}: no container port named {name_or_number}")


class ManifestsTest(unittest.TestCase):
    """deploy/k8s and deploy/docker against the broker and the docs."""

    broker_defaults: Dict[str, str]
    renderings: List[Rendered]

    @classmethod
    def setUpClass(cls) -> None:
        cls.broker_defaults = ds.broker_config(BROKER)
        cls.renderings = [Rendered(n, p) for n, p in ds.KUSTOMIZATIONS.items()]

    def each(self):
        """Each rendering, as a subTest."""
        for r in self.renderings:
            with self.subTest(kustomization=r.name):
                yield r

    def setting(self, r: Rendered, name: str) -> Optional[str]:
        """NAME as the pod sees it: the ConfigMap, else the broker's default."""
        return r.config().get(name, self.broker_defaults.get(name))

    # --- configuration --------------------------------------------------

    def test_configmap_keys_are_variables_the_broker_reads(self) -> None:
        for r in self.each():
            unknown = sorted(set(r.config()) - set(self.broker_defaults))
            self.assertEqual(unknown, [], "ConfigMap keys the broker does not read "
                             "(session-broker --print-config=env lists those it does)")

    def test_configmap_values_are_accepted_by_the_broker(self) -> None:
        for r in self.each():
            try:
                effective = ds.broker_config(BROKER, r.config())
            except subprocess.CalledProcessError as e:
                self.fail(f"the broker refuses the ConfigMap: {e.stderr}")
            self.assertEqual({k: effective.get(k) for k in r.config()}, r.config())

    def test_broker_refuses_a_bad_value_so_the_values_check_means_something(self) -> None:
        result = subprocess.run([BROKER, "--print-config=env"], cwd="/", capture_output=True,
                                text=True, env={"BROKER_ENV_FILE": "", "DB_POOL_SIZE": "many"})
        self.assertEqual(result.returncode, 2)
        self.assertIn("DB_POOL_SIZE", result.stderr)

    def test_every_env_example_variable_is_configured_or_excluded(self) -> None:
        documented = ds.env_example_variables()
        self.assertIn("DB_POOL_SIZE", documented)
        for r in self.each():
            missing = [v for v in documented if v not in r.config() and v not in EXCLUDED]
            self.assertEqual(missing, [], "variables of .env.example neither in "
                             "deploy/k8s/base/configmap.yaml nor in EXCLUDED (say why)")

    def test_exclusions_are_current(self) -> None:
        for name in EXCLUDED:
            self.assertIn(name, self.broker_defaults, f"{name} is excluded but the broker "
                          "does not read it: drop it from EXCLUDED")
            for r in self.renderings:
                self.assertNotIn(name, r.config(), f"{name} is both excluded and configured")

    def test_database_url_comes_from_the_secret(self) -> None:
        for r in self.each():
            env = {e["name"]: e for e in r.container.get("env", [])}
            ref = env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
            self.assertEqual(ref["key"], "DATABASE_URL")
            self.assertEqual([s["configMapRef"]["name"] for s in r.container["envFrom"]],
                             [r.configmap["metadata"]["name"]])
            if r.name == "example":
                secret = ds.find(r.objects, "Secret", ref["name"])
                url = secret["stringData"]["DATABASE_URL"]
                self.assertIn("CHANGE-ME", url, "the example Secret must hold no real password")
                self.assertIn(".invalid", url, "the example Secret must name no real host")

    # --- ports and probes -----------------------------------------------

    def test_ports_agree_between_broker_configmap_deployment_service_and_image(self) -> None:
        _, default_grpc = ds.host_port(self.broker_defaults["BROKER_LISTEN_ADDR"])
        _, default_metrics = ds.host_port(self.broker_defaults["BROKER_METRICS_ADDR"])
        image_env = {}
        exposed: List[int] = []
        for ins in ds.stage("runtime").instructions:
            if ins.keyword == "ENV":
                image_env.update(ds.parse_env_instruction(ins.args))
            if ins.keyword == "EXPOSE":
                exposed += [int(p.split("/")[0]) for p in ins.args.split()]
        self.assertEqual(sorted(exposed), sorted([default_grpc, default_metrics]))
        self.assertEqual(ds.host_port(image_env["BROKER_LISTEN_ADDR"]), ("0.0.0.0", default_grpc))
        self.assertEqual(ds.host_port(image_env["BROKER_METRICS_ADDR"]),
                         ("0.0.0.0", default_metrics))
        for r in self.each():
            self.assertEqual(ds.host_port(r.config()["BROKER_LISTEN_ADDR"]),
                             ("0.0.0.0", default_grpc), "listen on every interface of the pod")
            self.assertEqual(ds.host_port(r.config()["BROKER_METRICS_ADDR"]),
                             ("0.0.0.0", default_metrics))
            self.assertEqual(r.container_port("grpc"), default_grpc)
            self.assertEqual(r.container_port("metrics"), default_metrics)
            ports = {p["name"]: p for p in r.service["spec"]["ports"]}
            self.assertEqual(set(ports), {"grpc", "metrics"})
            self.assertEqual(ports["grpc"]["appProtocol"], "grpc")
            for name, expected in (("grpc", default_grpc), ("metrics", default_metrics)):
                self.assertEqual(ports[name]["port"], expected)
                self.assertEqual(r.container_port(ports[name]["targetPort"]), expected)
            annotations = r.pod["metadata"]["annotations"]
            self.assertEqual(annotations["prometheus.io/scrape"], "true")
            self.assertEqual(int(annotations["prometheus.io/port"]), default_metrics)
            self.assertEqual(annotations["prometheus.io/path"], "/metrics")
            monitor = ds.find(r.objects, "ServiceMonitor")
            self.assertEqual([e["port"] for e in monitor["spec"]["endpoints"]], ["metrics"])
            self.assertEqual(monitor["spec"]["endpoints"][0]["path"], "/metrics")

    def test_probes_ask_the_grpc_port_for_the_services_the_broker_serves(self) -> None:
        broker_service = proto_service("proto/sessionbroker/v1/broker.proto", "SessionBroker")
        _, grpc_port = ds.host_port(self.broker_defaults["BROKER_LISTEN_ADDR"])
        # Liveness must not follow the database, or a database outage restarts
        # every broker: the whole-server name "" (or /livez over HTTP).
        expected = {"startupProbe": SERVER_HEALTH_SERVICE, "livenessProbe": SERVER_HEALTH_SERVICE,
                    "readinessProbe": broker_service}
        for r in self.each():
            for kind, service in expected.items():
                probe = r.container[kind]
                if "httpGet" in probe and kind != "readinessProbe":
                    self.assertEqual(probe["httpGet"]["path"], "/livez")
                    self.assertEqual(r.container_port(probe["httpGet"]["port"]),
                                     r.container_port("metrics"))
                    continue
                self.assertEqual(probe["grpc"]["port"], grpc_port, kind)
                self.assertEqual(probe["grpc"].get("service", ""), service, kind)

    # --- shutdown -------------------------------------------------------

    def test_termination_grace_covers_prestop_drain_and_shutdown_grace(self) -> None:
        for r in self.each():
            command = r.container["lifecycle"]["preStop"]["exec"]["command"]
            self.assertEqual(command[0], "/bin/sleep", "preStop runs sleep directly")
            pre_stop = float(command[1])
            shutdown_grace = float(self.setting(r, "BROKER_SHUTDOWN_GRACE_SECONDS"))
            # BROKER_DRAIN_SECONDS (serving on after SIGTERM while readiness is
            # NOT_SERVING) counts once the broker reads it.
            drain = float(self.setting(r, "BROKER_DRAIN_SECONDS") or 0)
            grace = r.pod["spec"]["terminationGracePeriodSeconds"]
            self.assertGreater(grace, pre_stop + drain + shutdown_grace + EXIT_MARGIN,
                               f"preStop {pre_stop} + drain {drain} + shutdown grace "
                               f"{shutdown_grace} + {EXIT_MARGIN} s to end the sessions and "
                               "exit must fit before the kubelet kills the pod")

    def test_expected_replicas_covers_a_rolling_update(self) -> None:
        # Until the broker reads it, the keys test keeps it out of the ConfigMap.
        knows = "BROKER_EXPECTED_REPLICAS" in self.broker_defaults
        for r in self.each():
            if not knows:
                self.assertNotIn("BROKER_EXPECTED_REPLICAS", r.config())
                continue
            spec = r.deployment["spec"]
            rolling = spec["strategy"]["rollingUpdate"]
            peak = spec["replicas"] + rolling["maxSurge"] + rolling["maxUnavailable"]
            self.assertEqual(int(self.setting(r, "BROKER_EXPECTED_REPLICAS")), peak,
                             "pods that may hold pools at once during a rollout")

    # --- security -------------------------------------------------------

    def test_security_context_is_locked_down(self) -> None:
        runtime = ds.stage("runtime")
        user = [i.args for i in runtime.instructions if i.keyword == "USER"][-1]
        uid, _, gid = user.partition(":")
        self.assertTrue(uid.isdigit() and int(uid) != 0,
                        "USER must be numeric and not root: runAsNonRoot can only check a number")
        for r in self.each():
            ctx = r.container["securityContext"]
            pod_ctx = r.pod["spec"]["securityContext"]
            self.assertIs(ctx["runAsNonRoot"], True)
            self.assertIs(ctx["readOnlyRootFilesystem"], True)
            self.assertIs(ctx["allowPrivilegeEscalation"], False)
            self.assertEqual(ctx["capabilities"], {"drop": ["ALL"]})
            self.assertEqual(ctx.get("seccompProfile", pod_ctx.get("seccompProfile")),
                             {"type": "RuntimeDefault"})
            self.assertNotIn("privileged", ctx)
            self.assertEqual(pod_ctx["runAsUser"], int(uid))
            self.assertEqual(pod_ctx["runAsGroup"], int(gid or uid))
            self.assertIs(r.pod["spec"]["automountServiceAccountToken"], False)

    def test_network_policy_admits_clients_to_grpc_and_monitoring_to_metrics(self) -> None:
        for r in self.each():
            policy = ds.find(r.objects, "NetworkPolicy")["spec"]
            self.assertEqual(policy["podSelector"]["matchLabels"],
                             r.deployment["spec"]["selector"]["matchLabels"])
            self.assertIn("Ingress", policy["policyTypes"])
            admitted: Dict[int, List[Dict[str, Any]]] = {}
            for rule in policy["ingress"]:
                self.assertTrue(rule.get("from"), "a rule without 'from' admits everyone")
                self.assertTrue(rule.get("ports"), "a rule without 'ports' admits every port")
                for peer in rule["from"]:
                    self.assertEqual(set(peer), {"namespaceSelector"},
                                     "peers are namespaces only (no ipBlock, no podSelector)")
                    self.assertTrue(peer["namespaceSelector"].get("matchLabels"),
                                    "an empty namespaceSelector admits every namespace")
                for port in rule["ports"]:
                    admitted.setdefault(r.container_port(port["port"]), []).extend(rule["from"])
            grpc, metrics = r.container_port("grpc"), r.container_port("metrics")
            self.assertEqual(set(admitted), {grpc, metrics})
            self.assertEqual(admitted[grpc], [{"namespaceSelector": {
                "matchLabels": {"session-broker/client": "true"}}}])
            self.assertEqual(admitted[metrics], [{"namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}])

    # --- shape ----------------------------------------------------------

    def test_selectors_select_the_broker_pods(self) -> None:
        for r in self.each():
            labels = r.pod["metadata"]["labels"]

            def selects(selector: Dict[str, str], what: str) -> None:
                self.assertTrue(selector, f"{what}: empty selector")
                self.assertEqual({k: labels.get(k) for k in selector}, selector, what)

            selects(r.deployment["spec"]["selector"]["matchLabels"], "Deployment")
            selects(r.service["spec"]["selector"], "Service")
            selects(ds.find(r.objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
                    "PodDisruptionBudget")
            for spread in r.pod["spec"]["topologySpreadConstraints"]:
                selects(spread["labelSelector"]["matchLabels"], spread["topologyKey"])
            monitor = ds.find(r.objects, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
            service_labels = r.service["metadata"]["labels"]
            self.assertEqual({k: service_labels.get(k) for k in monitor}, monitor)

    def test_deployment_runs_two_spread_replicas_with_resources(self) -> None:
        for r in self.each():
            spec = r.deployment["spec"]
            self.assertEqual(spec["replicas"], 2)
            keys = {c["topologyKey"] for c in r.pod["spec"]["topologySpreadConstraints"]}
            self.assertEqual(keys, {"kubernetes.io/hostname", "topology.kubernetes.io/zone"})
            resources = r.container["resources"]
            self.assertIn("cpu", resources["requests"])
            self.assertIn("memory", resources["requests"])
            self.assertIn("memory", resources["limits"])
            pdb = ds.find(r.objects, "PodDisruptionBudget")["spec"]
            self.assertLess(pdb["maxUnavailable"], spec["replicas"])

    def test_example_overlay_sets_namespace_and_image(self) -> None:
        example = next(r for r in self.renderings if r.name == "example")
        for obj in example.objects:
            if obj["kind"] != "Namespace":
                self.assertEqual(obj["metadata"].get("namespace"), "session-broker",
                                 f"{obj['kind']} {obj['metadata']['name']}")
        self.assertTrue(example.container["image"].startswith("registry.example.com/"))

    def test_prometheus_rule_is_the_alerts_of_operations_md(self) -> None:
        expected = docs_alert_groups()
        self.assertGreater(len(expected[0]["rules"]), 0)
        for r in self.each():
            rule = ds.find(r.objects, "PrometheusRule")
            self.assertEqual(rule["spec"]["groups"], expected,
                             "deploy/k8s/base/prometheusrule.yaml and docs/operations.md "
                             "('Alerts worth having') differ: change both together")

    # --- the image ------------------------------------------------------

    def test_dockerfile_builds_as_ci_and_runs_as_the_image_should(self) -> None:
        stages = {s.name: s for s in ds.dockerfile_stages()}
        self.assertEqual(set(stages), {"build", "runtime"})
        self.assertEqual({s.image for s in stages.values()}, {"debian:bookworm-slim"})
        build_runs = " ".join(i.args for i in stages["build"].instructions if i.keyword == "RUN")
        self.assertIn("./scripts/install-deps", build_runs)
        # The configure flags of ./scripts/dev (configure + build_main).
        with open(os.path.join(ds.ROOT, "scripts", "dev"), encoding="utf-8") as f:
            dev = f.read()
        self.assertIn("-G Ninja -DCMAKE_CXX_COMPILER=clang++", dev)
        self.assertIn("configure build -DCMAKE_BUILD_TYPE=Release", dev)
        for flag in ("-G Ninja", "-DCMAKE_CXX_COMPILER=clang++", "-DCMAKE_BUILD_TYPE=Release"):
            self.assertIn(flag, build_runs)
        runtime = stages["runtime"].instructions
        keywords = [i.keyword for i in runtime]
        self.assertEqual([i.args for i in runtime if i.keyword == "STOPSIGNAL"], ["SIGTERM"])
        self.assertEqual(ds.exec_form([i.args for i in runtime if i.keyword == "ENTRYPOINT"][-1]),
                         ["/usr/local/bin/session-broker"])
        copies = [i for i in runtime if i.keyword == "COPY"]
        self.assertEqual([(c.flags.get("from"), c.args) for c in copies], [
            (None, "deploy/docker/runtime-packages.txt /tmp/runtime-packages.txt"),
            ("build", "/src/build/server/session-broker /usr/local/bin/session-broker")])
        install = [i.args for i in runtime if i.keyword == "RUN" and "apt-get install" in i.args]
        self.assertEqual(len(install), 1)
        self.assertIn("--no-install-recommends", install[0])
        self.assertIn("$(sed -e 's/#.*//' /tmp/runtime-packages.txt)", install[0])
        self.assertIn("rm -rf /var/lib/apt/lists/*", install[0])
        self.assertLess(keywords.index("USER"), keywords.index("ENTRYPOINT"))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: manifests_test.py PATH_TO_SESSION_BROKER")
    BROKER = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
