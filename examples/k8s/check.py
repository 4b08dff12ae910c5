#!/usr/bin/python3
"""check.py -- offline checks of the manifests in this folder (no cluster).

  examples/k8s/check.py                 parse and check redis.yaml and job.yaml
  examples/k8s/check.py --pod INDEX     print what job.yaml's pod number INDEX
                                        runs: its environment (NAME=value lines,
                                        fieldRef values as @fieldPath) and then,
                                        after a line "--", its shell script

The checks are what a schema check cannot see as well as the basics a schema
check would: every document parses and has apiVersion/kind/metadata.name; the
Service selects the Deployment's pods and targets a port it names; the Job is
Indexed with completions == parallelism == TEST_INSTANCE_COUNT, backoffLimit 0,
restartPolicy Never, an activeDeadlineSeconds longer than tgrun's --timeout;
its env names are unique and include every TEST_* variable a Testground runner
sets except those its script sets from JOB_COMPLETION_INDEX; REDIS_HOST names
the Service; every volumeMount has a volume.  `tests/docker.sh` then runs the
pod script of every index in containers (the k8s-job case).
"""
import re
import sys

import yaml

HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
RUNNER_ENV = ["TEST_PLAN", "TEST_CASE", "TEST_RUN", "TEST_INSTANCE_COUNT", "TEST_GROUP_ID",
              "TEST_GROUP_INSTANCE_COUNT", "TEST_INSTANCE_PARAMS", "TEST_OUTPUTS_PATH",
              "TEST_TEMP_PATH", "TEST_SIDECAR", "TEST_SUBNET", "REDIS_HOST", "REDIS_PORT"]
failures = []
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        failures.append(what)


def load(name):
    with open(f"{HERE}/{name}") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    for d in docs:
        check(isinstance(d.get("apiVersion"), str) and d.get("kind") and d.get("metadata", {}).get("name"),
              f"{name}: a document without apiVersion, kind or metadata.name")
    return {d["kind"]: d for d in docs}


def job_parts(job):
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    return pod, c, {e["name"]: e for e in c.get("env", [])}


def main():
    redis = load("redis.yaml")
    job = load("job.yaml")["Job"]
    if len(sys.argv) == 3 and sys.argv[1] == "--pod":
        pod, c, env = job_parts(job)
        print(f"JOB_COMPLETION_INDEX={int(sys.argv[2])}")
        for name, e in env.items():
            if "value" in e:
                print(f"{name}={e['value']}")
            else:
                print(f"{name}=@{e['valueFrom']['fieldRef']['fieldPath']}")
        print("--")
        print(c["args"][0])
        return 0

    dep, svc = redis.get("Deployment"), redis.get("Service")
    check(dep is not None and svc is not None, "redis.yaml: needs a Deployment and a Service")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    check(all(labels.get(k) == v for k, v in dep["spec"]["selector"]["matchLabels"].items()),
          "redis.yaml: the Deployment's selector does not match its pod labels")
    check(all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()),
          "redis.yaml: the Service does not select the Deployment's pods")
    ports = {p["name"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
    check(all(p["targetPort"] in ports for p in svc["spec"]["ports"]),
          "redis.yaml: the Service targets a port the pod does not name")

    spec = job["spec"]
    pod, c, env = job_parts(job)
    n = int(env["TEST_INSTANCE_COUNT"]["value"])
    check(job["apiVersion"] == "batch/v1", "job.yaml: apiVersion must be batch/v1")
    check(spec.get("completionMode") == "Indexed", "job.yaml: completionMode must be Indexed")
    check(spec.get("completions") == n and spec.get("parallelism") == n,
          "job.yaml: completions and parallelism must equal TEST_INSTANCE_COUNT")
    check(spec.get("backoffLimit") == 0, "job.yaml: backoffLimit must be 0 (a retry would enter states twice)")
    check(pod.get("restartPolicy") == "Never", "job.yaml: restartPolicy must be Never")
    script = c["args"][0]
    m = re.search(r"--timeout (\d+)", script)
    check(m and spec.get("activeDeadlineSeconds", 0) > int(m.group(1)),
          "job.yaml: activeDeadlineSeconds must exceed tgrun's --timeout")
    check(len(env) == len(c.get("env", [])), "job.yaml: an env name appears twice")
    from_script = set(re.findall(r"export ([A-Z_]+)=", script)) | set(
        re.findall(r"export [A-Z_]+=\S+ ([A-Z_]+)=", script))
    missing = [v for v in RUNNER_ENV if v not in env and v not in from_script]
    check(not missing, f"job.yaml: missing runner variables {missing}")
    check("JOB_COMPLETION_INDEX" in script, "job.yaml: the script must use JOB_COMPLETION_INDEX")
    check(env.get("REDIS_HOST", {}).get("value") == svc["metadata"]["name"],
          "job.yaml: REDIS_HOST must name the Redis Service")
    vols = {v["name"] for v in pod.get("volumes", [])}
    check(all(m["name"] in vols for m in c.get("volumeMounts", [])), "job.yaml: a volumeMount has no volume")
    check(job["metadata"]["labels"].get("tgrun.run") == env["TEST_RUN"]["value"],
          "job.yaml: the tgrun.run label should be TEST_RUN")
    for f in failures:
        print("check.py: FAIL " + f, file=sys.stderr)
    print(f"check.py: {checks - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
